import CheckpointImage
import LinuxKernel
import ProcessState
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The descriptor table (issue #13 point 3): every descriptor is classified once,
/// by the first kind that recognises it, and every handle type has one kind
/// that restores it.
@Suite struct DescriptorTableTests {
    static func probe(_ link: String, mode: mode_t = 0, rdev: UInt64 = 0) -> DescriptorProbe {
        let status = FileStatus(mode: mode, rdev: rdev)
        return DescriptorProbe(fd: 3, link: link, fdinfo: [("pos", "0"), ("flags", "02")], status: mode == 0 ? nil : status)
    }

    @Test func descriptorsAreClassifiedByLinkModeAndDevice() {
        let cases: [(DescriptorProbe, Ccimg_V1_HandleType)] = [
            (Self.probe("pipe:[4242]", mode: S_IFIFO), .pipe),
            (Self.probe("/tmp/fifo", mode: S_IFIFO), .fifo),
            (Self.probe("socket:[99]", mode: S_IFSOCK), .socket),
            (Self.probe("anon_inode:[eventfd]"), .eventfd),
            (Self.probe("anon_inode:[timerfd]"), .timerfd),
            (Self.probe("anon_inode:[signalfd]"), .signalfd),
            (Self.probe("anon_inode:[eventpoll]"), .epoll),
            (Self.probe("anon_inode:inotify"), .inotify),
            (Self.probe("anon_inode:[userfaultfd]"), .other),
            (Self.probe("/memfd:cache (deleted)", mode: S_IFREG), .memfd),
            (Self.probe("/dev/pts/3", mode: S_IFCHR, rdev: 136 << 8 | 3), .tty),
            (Self.probe("/dev/null", mode: S_IFCHR, rdev: 1 << 8 | 3), .device),
            (Self.probe("/home", mode: S_IFDIR), .directory),
            (Self.probe("/etc/passwd", mode: S_IFREG), .regular),
            (Self.probe("/tmp/gone (deleted)", mode: S_IFREG), .regular),
            (Self.probe("anon_inode:[io_uring]"), .other),
        ]
        for (probe, type) in cases {
            let (kind, got) = DescriptorTable.classify(probe)
            #expect(got == type, "\(probe.link)")
            #expect(kind.types.contains(type), "\(probe.link): \(kind)")
        }
    }

    @Test func everyHandleTypeHasOneKind() {
        for type in Ccimg_V1_HandleType.allCases {
            let owners = DescriptorTable.kinds.filter { $0.types.contains(type) }
            #expect(owners.count == 1, "\(type): \(owners)")
            #expect(DescriptorTable.kind(for: type).types.contains(type))
        }
    }
}

import CheckpointImage
import LinuxKernel
@testable import ProcessState
import Testing

/// What the descriptors' capture takes from one probe (``DescriptorProbe``: fdinfo
/// fields, stat through ``FileStatus``), and the inotify watches read back from the
/// fdinfo text an image keeps — on samples, without a process.
@Suite struct DescriptorProbeTests {
    static func probe(_ link: String, fdinfo: [(String, String)], status: FileStatus?) -> DescriptorProbe {
        DescriptorProbe(fd: 5, link: link, fdinfo: fdinfo, status: status)
    }

    @Test("flags are octal, close-on-exec included; mode, inode and rdev come from stat")
    func probeFields() {
        let status = FileStatus(mode: FileType.characterDevice | 0o620, device: 0x17, inode: 42, rdev: 136 << 8 | 3)
        let p = Self.probe("/dev/pts/3", fdinfo: [("pos", "0"), ("flags", "02004002")], status: status)
        #expect(p.flags == 0o2004002)
        #expect(p.flags & DescriptorFlags.O_CLOEXEC != 0)
        #expect(p.flags & DescriptorFlags.O_NONBLOCK != 0)
        #expect(p.flags & DescriptorFlags.O_ACCMODE == 2)
        #expect(p.mode == FileType.characterDevice)
        #expect(p.inode == 42)
        #expect(p.rdevMajor == 136)
        #expect(p.sharingKey == "23:42")
    }

    @Test("without stat: mode and inode are 0, and descriptors share by link text")
    func probeWithoutStatus() {
        let p = Self.probe("anon_inode:[eventfd]", fdinfo: [("eventfd-count", "ff")], status: nil)
        #expect(p.mode == 0 && p.inode == 0 && p.rdev == 0)
        #expect(p.flags == 0)
        #expect(p.sharingKey == "link:anon_inode:[eventfd]")
        #expect(p.field("eventfd-count") == "ff")
        #expect(p.field("missing") == nil)
    }

    @Test("a file's identity: st_dev, st_ino, st_size, st_mtim in nanoseconds")
    func identity() {
        let id = FileIdentity.of(status: FileStatus(mode: FileType.regular, device: 7, inode: 9, size: 4096,
                                                    modificationNanoseconds: 1_700_000_000_123_456_789))
        #expect(id.dev == 7 && id.inode == 9 && id.size == 4096 && id.mtimeNs == 1_700_000_000_123_456_789)
    }

    @Test("inotify watches from the saved fdinfo text (key cut at its first colon), in wd order")
    func inotifySavedWatches() {
        let saved = [
            "pos:\t0", "flags:\t04000",
            "inotify wd:\t2 ino:2 sdev:fe00000 mask:8 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200000000000000",
            "inotify wd:\t1 ino:3df9d sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:9ddf030000000000",
        ].joined(separator: "\n")
        let watches = InotifyDescriptor.watches(inFdinfo: saved)
        #expect(watches.map { $0["wd"] } == ["1", "2"])
        #expect(watches[0]["mask"] == "300" && watches[0]["f_handle"] == "9ddf030000000000")
        #expect(watches[1]["fhandle-type"] == "1" && watches[1]["sdev"] == "fe00000")
        // The kernel's own form reads the same.
        let kernel = "inotify wd:1 ino:3df9d sdev:fe00000 mask:300 fhandle-type:1 f_handle:9ddf030000000000"
        #expect(InotifyDescriptor.watches(inFdinfo: kernel).first?["ino"] == "3df9d")
    }

    @Test("anonymous-inode kinds recognise exactly their link texts")
    func anonymousInodes() {
        for (link, type) in [("anon_inode:[eventfd]", Ccimg_V1_HandleType.eventfd), ("anon_inode:[timerfd]", .timerfd),
                             ("anon_inode:[signalfd]", .signalfd), ("anon_inode:[eventpoll]", .epoll),
                             ("anon_inode:inotify", .inotify), ("anon_inode:[inotify]", .inotify)] {
            #expect(DescriptorTable.classify(Self.probe(link, fdinfo: [], status: nil)).type == type, "\(link)")
        }
        #expect(EventFdDescriptor.classify(Self.probe("anon_inode:[eventfd]x", fdinfo: [], status: nil)) == nil)
    }
}

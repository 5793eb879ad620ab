import CheckpointImage
import LinuxKernel

/// An epoll instance (`anon_inode:[eventpoll]`): its targets (`tfd:` lines of
/// fdinfo: fd, events, data). Made with epoll_create1(2); the targets are added
/// by the table once every descriptor is at its number.
package enum EpollDescriptor: AnonymousInodeKind {
    package static let types: [Ccimg_V1_HandleType] = [.epoll]
    package static let links = ["anon_inode:[eventpoll]"]

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        h.epollTargets = probe.fdinfo.filter { $0.0 == "tfd" }.compactMap { _, value in
            let t = ProcFS.tokens("tfd:" + value)
            guard let target = Int32(t["tfd"] ?? "") else { return nil }
            var e = Ccimg_V1_EpollTarget()
            e.fd = target
            e.events = UInt32(t["events"] ?? "0", radix: 16) ?? 0
            e.data = UInt64(t["data"] ?? "0", radix: 16) ?? 0
            return e
        }
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        try context.call("epoll_create1", X86Syscall.epollCreate1, [0])
    }
}

import CheckpointImage
import LinuxKernel

/// A signalfd (`anon_inode:[signalfd]`): its signal mask from fdinfo, kept in
/// sync-objects by object id; made again with signalfd4(2).
package enum SignalFdDescriptor: AnonymousInodeKind {
    package static let types: [Ccimg_V1_HandleType] = [.signalfd]
    package static let links = ["anon_inode:[signalfd]"]

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        var s = Ccimg_V1_SignalFd()
        s.fd = h.fd
        s.objectID = h.objectID
        s.mask = UInt64(probe.field("sigmask") ?? "0", radix: 16) ?? 0
        context.result.table.attach(s)
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        var sigset: [UInt8] = []
        sigset.appendLE(context.table.signalfds[h.objectID]?.mask ?? 0)
        let address = try context.put(sigset)
        return try context.call("signalfd4", X86Syscall.signalfd4, [UInt64.max, address, 8, UInt64(h.openFlags & DescriptorFlags.O_NONBLOCK)])
    }
}

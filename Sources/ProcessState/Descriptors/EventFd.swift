import CheckpointImage
import LinuxKernel

/// An eventfd (`anon_inode:[eventfd]`): its counter and semaphore mode from
/// fdinfo, kept in sync-objects by object id; made again with eventfd2(2).
package enum EventFdDescriptor: AnonymousInodeKind {
    package static let types: [Ccimg_V1_HandleType] = [.eventfd]
    package static let links = ["anon_inode:[eventfd]"]

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        var e = Ccimg_V1_EventFd()
        e.fd = h.fd
        e.objectID = h.objectID
        e.counter = UInt64(probe.field("eventfd-count") ?? "0", radix: 16) ?? 0
        e.semaphore = probe.field("eventfd-semaphore") == "1"
        context.result.table.attach(e)
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        let e = context.table.eventfds[h.objectID]
        let flags = (e?.semaphore == true ? DescriptorFlags.EFD_SEMAPHORE : 0) | UInt64(h.openFlags & DescriptorFlags.O_NONBLOCK)
        return try context.call("eventfd2", X86Syscall.eventfd2, [e?.counter ?? 0, flags])
    }
}

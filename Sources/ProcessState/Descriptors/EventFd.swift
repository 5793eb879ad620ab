#if canImport(Glibc)
import Glibc
#endif
import CheckpointImage
import LinuxKernel

/// An eventfd (`anon_inode:[eventfd]`): its counter and semaphore mode from
/// fdinfo, kept in sync-objects by object id; made again with eventfd2(2).
package enum EventFdDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.eventfd]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.link == "anon_inode:[eventfd]" ? .eventfd : nil
    }

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        var e = Ccimg_V1_EventFd()
        e.fd = h.fd
        e.objectID = h.objectID
        e.counter = UInt64(probe.field("eventfd-count") ?? "0", radix: 16) ?? 0
        e.semaphore = probe.field("eventfd-semaphore") == "1"
        context.result.table.attach(e)
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws -> UInt64? {
        let e = context.table.eventfds[h.objectID]
        let flags = (e?.semaphore == true ? 1 : 0) | UInt64(h.openFlags & UInt32(O_NONBLOCK))
        return try context.remote.call("eventfd2", X86Syscall.eventfd2, [e?.counter ?? 0, flags])
    }
}

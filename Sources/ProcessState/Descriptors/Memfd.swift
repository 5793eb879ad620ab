import CheckpointImage
import LinuxKernel

/// A memfd (`/memfd:NAME (deleted)`): captured with its contents, made again
/// with memfd_create(2) under its name and filled.
package enum MemfdDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.memfd]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.link.hasPrefix("/memfd:") ? .memfd : nil
    }

    package static func capture(_ probe: DescriptorProbe, into object: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        object.deleted = true
        try FileContents.copy(into: &object, size: Int(probe.status?.size ?? 0), &context)
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        let name = h.path.hasPrefix("/memfd:") ? String(h.path.dropFirst(7).prefix { $0 != " " }) : "restored"
        return try context.memfd(named: name, contents: h.contents, offset: h.offset)
    }
}

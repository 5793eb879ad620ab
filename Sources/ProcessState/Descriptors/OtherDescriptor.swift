import CheckpointImage
import LinuxKernel

/// A userfaultfd (`anon_inode:[userfaultfd]`, as ccpm --track leaves), and every
/// descriptor no other kind recognises: recorded by path, not restored.
package enum OtherDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.other, .unspecified]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.link == "anon_inode:[userfaultfd]" ? .other : nil     // ccpm's own dirty-page tracker (--track), or the program's
    }

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        if probe.link != "anon_inode:[userfaultfd]" {
            context.warn("fd \(h.fd) (\(probe.link)) is of a kind this version records by path only")
        }
    }

    /// Only ccpm's own userfaultfd may go missing: the next --track starts anew.
    package static func cannotRestore(_ object: Ccimg_V1_Handle) -> String? {
        object.path == "anon_inode:[userfaultfd]" ? nil : "fd \(object.fd) (\(object.path)) is of a kind this version cannot restore"
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        if h.path == "anon_inode:[userfaultfd]" {
            context.warn("fd \(h.fd) (a userfaultfd, as ccpm --track leaves) is not restored; the next --track starts tracking anew")
        } else {
            context.warn("fd \(h.fd) (\(h.path)) is not restored")
        }
        return nil
    }
}

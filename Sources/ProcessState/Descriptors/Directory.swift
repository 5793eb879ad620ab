import CheckpointImage
import LinuxKernel

/// A directory (S_IFDIR): reopened by path (openat).
package enum DirectoryDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.directory]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.mode == FileType.directory ? .directory : nil
    }

    package static func restore(_ object: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        try PathReopen.open(object, &context)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CheckpointImage

/// A directory (S_IFDIR): reopened by path (openat).
package enum DirectoryDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.directory]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.mode == S_IFDIR ? .directory : nil
    }

    package static func restore(_ object: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws -> UInt64? {
        try PathReopen.open(object, &context)
    }
}

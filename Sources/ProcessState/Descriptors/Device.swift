import CheckpointImage
import LinuxKernel

/// A character device other than a terminal (S_IFCHR): its rdev recorded,
/// reopened by path (openat).
package enum DeviceDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.device]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.mode == FileType.characterDevice ? .device : nil
    }

    package static func capture(_ probe: DescriptorProbe, into object: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        object.deviceRdev = probe.rdev
    }

    package static func restore(_ object: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        try PathReopen.open(object, &context)
    }
}

import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A terminal (a character device of major 136 pty, 4 or 5 tty, or a /dev/pts,
/// /dev/tty path): termios (tcgetattr), window size (TIOCGWINSZ) and foreground
/// group (tcgetpgrp). At fds 0–2 it stays ccpm's own; elsewhere it is reopened
/// by path with O_NOCTTY.
package enum TtyDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.tty]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        guard probe.mode == FileType.characterDevice else { return nil }
        let major = probe.rdevMajor
        let terminal = major == 136 || major == 4 || major == 5 || probe.link.hasPrefix("/dev/pts/") || probe.link.hasPrefix("/dev/tty")
        return terminal ? .tty : nil
    }

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        h.deviceRdev = probe.rdev
        let ours = try context.borrow(h.fd)
        var tty = Ccimg_V1_TtyState()
        if let attributes = try? ours.terminalAttributes() { tty.termios = Data(attributes) }
        if let size = try? ours.windowSize() {
            tty.rows = UInt32(size.rows)
            tty.cols = UInt32(size.columns)
        }
        tty.foregroundPgid = ours.foregroundProcessGroup()
        tty.name = h.path
        h.tty = tty
    }

    package static func inheritsStandardDescriptor(_ object: Ccimg_V1_Handle, _ context: DescriptorRestoreContext) -> Bool { true }

    package static func restore(_ object: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        try PathReopen.open(object, &context)
    }
}

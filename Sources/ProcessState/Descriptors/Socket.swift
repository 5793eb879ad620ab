import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A socket (`socket:[ino]`), for now: family, type, protocol (SO_DOMAIN, SO_TYPE,
/// SO_PROTOCOL), addresses (getsockname, getpeername) and TCP state (TCP_INFO)
/// into §5.3 sockets. Restored only at fds 0–2, as ccpm's own.
package enum SocketDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.socket]

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.link.hasPrefix("socket:[") ? .socket : nil
    }

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        h.socketInode = probe.inode
        let ours = try context.borrow(h.fd)
        var s = Ccimg_V1_Socket()
        s.inode = h.socketInode
        // Each field the kernel refuses stays unset (-1 for the options).
        s.family = (try? ours.socketOption(SocketOption.domain)) ?? -1
        s.type = (try? ours.socketOption(SocketOption.type)) ?? -1
        s.protocol = (try? ours.socketOption(SocketOption.protocol)) ?? -1
        if let address = try? ours.localAddress() { s.localAddress = Data(address) }
        if let address = try? ours.peerAddress() { s.peerAddress = Data(address) }
        if s.protocol == SocketOption.tcpProtocol, let state = try? ours.tcpState() { s.state = Int32(state) }
        context.result.sockets.append(s)
        context.warn("fd \(h.fd) is a socket: recorded with its type and addresses only (full socket capture comes later)")
    }

    /// A socket comes back only at fds 0–2, as ccpm's own (``inheritsStandardDescriptor(_:_:)``).
    package static func cannotRestore(_ object: Ccimg_V1_Handle) -> String? {
        object.fd <= 2 ? nil : "fd \(object.fd) is a socket, which this version cannot restore"
    }

    package static func inheritsStandardDescriptor(_ object: Ccimg_V1_Handle, _ context: DescriptorRestoreContext) -> Bool { true }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        throw .state(StateError(.unsupported, "fd \(h.fd) is a socket; this version restores sockets only as fds 0-2 connected outside the process"))
    }
}

#if canImport(Glibc)
import Glibc
#endif
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
        defer { close(ours) }
        var s = Ccimg_V1_Socket()
        s.inode = h.socketInode
        func option(_ name: Int32) -> Int32 {
            var v: Int32 = 0
            var len = socklen_t(4)
            return getsockopt(ours, SOL_SOCKET, name, &v, &len) == 0 ? v : -1
        }
        s.family = option(SO_DOMAIN)
        s.type = option(SO_TYPE)
        s.protocol = option(SO_PROTOCOL)
        var addr = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        if withUnsafeMutablePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(ours, $0, &len) } }) == 0 {
            s.localAddress = withUnsafeBytes(of: addr) { Data($0.prefix(Int(len))) }
        }
        len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        if withUnsafeMutablePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(ours, $0, &len) } }) == 0 {
            s.peerAddress = withUnsafeBytes(of: addr) { Data($0.prefix(Int(len))) }
        }
        if s.protocol == IPPROTO_TCP {
            var info = [UInt8](repeating: 0, count: 256)
            var infoLen = socklen_t(256)
            if getsockopt(ours, Int32(IPPROTO_TCP), TCP_INFO, &info, &infoLen) == 0 { s.state = Int32(info[0]) }
        }
        context.result.sockets.append(s)
        context.warn("fd \(h.fd) is a socket: recorded with its type and addresses only (full socket capture comes later)")
    }

    package static func inheritsStandardDescriptor(_ object: Ccimg_V1_Handle, _ context: DescriptorRestoreContext) -> Bool { true }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws -> UInt64? {
        throw StateError(.unsupported, "fd \(h.fd) is a socket; this version restores sockets only as fds 0-2 connected outside the process")
    }
}

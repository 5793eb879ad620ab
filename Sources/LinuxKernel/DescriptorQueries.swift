#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

// What a capture asks of a descriptor it borrowed from the process (pidfd_getfd(2)):
// socket options and addresses, terminal settings, a pipe's queued bytes. Each call
// is one system call and throws its ``SystemCallError``; the callers decide which
// failures leave a field unset.

extension OwnedDescriptor {
    /// A descriptor of ours for descriptor `fd` of the process of `pidfd`
    /// (pidfd_getfd(2)): the same open file description, the target untouched.
    /// Throws `'pidfd_getfd(N)' failed: …`.
    package init(borrowing fd: Int32, fromProcess pidfd: Int32) throws(SystemCallError) {
        self.init(adopting: Int32(try kernelCall("pidfd_getfd(\(fd))", cc_pidfd_getfd(pidfd, fd))))
    }

    /// readlink(2) of /proc/self/fd/N: the path (or `pipe:[ino]`, …) this descriptor names.
    package func linkedPath() throws(SystemCallError) -> String {
        try ProcFS.readLink("/proc/self/fd/\(raw)")
    }

    // MARK: Sockets (socket(7), tcp(7))

    /// getsockopt(2) of an int option at SOL_SOCKET (SO_DOMAIN, SO_TYPE, SO_PROTOCOL:
    /// ``SocketOption``).
    package func socketOption(_ name: Int32) throws(SystemCallError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(4)
        try libcCall("getsockopt", Int(getsockopt(raw, SOL_SOCKET, name, &value, &length)))
        return value
    }

    /// getsockname(2): the socket's own address, as the kernel's sockaddr bytes.
    package func localAddress() throws(SystemCallError) -> [UInt8] {
        try address("getsockname") { getsockname($0, $1, $2) }
    }

    /// getpeername(2): the connected peer's address, as the kernel's sockaddr bytes.
    package func peerAddress() throws(SystemCallError) -> [UInt8] {
        try address("getpeername") { getpeername($0, $1, $2) }
    }

    private func address(_ call: String, _ body: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32)
        throws(SystemCallError) -> [UInt8] {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = raw
        let result = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, &length) } }
        try libcCall(call, Int(result))
        return withUnsafeBytes(of: storage) { Array($0.prefix(Int(length))) }
    }

    /// getsockopt(2) TCP_INFO: tcpi_state, the first byte of struct tcp_info (TCP_ESTABLISHED, …).
    package func tcpState() throws(SystemCallError) -> UInt8 {
        var info = [UInt8](repeating: 0, count: 256)
        var length = socklen_t(256)
        try libcCall("getsockopt(TCP_INFO)", Int(getsockopt(raw, Int32(IPPROTO_TCP), TCP_INFO, &info, &length)))
        return info[0]
    }

    // MARK: Terminals (termios(3), tty_ioctl(4))

    /// tcgetattr(3): the terminal's struct termios, as its bytes.
    package func terminalAttributes() throws(SystemCallError) -> [UInt8] {
        var t = termios()
        try libcCall("tcgetattr", Int(tcgetattr(raw, &t)))
        return withUnsafeBytes(of: t) { Array($0) }
    }

    /// ioctl(2) TIOCGWINSZ: the terminal's rows and columns.
    package func windowSize() throws(SystemCallError) -> (rows: UInt16, columns: UInt16) {
        var ws = winsize()
        try libcCall("ioctl(TIOCGWINSZ)", Int(ioctl(raw, UInt(TIOCGWINSZ), &ws)))
        return (ws.ws_row, ws.ws_col)
    }

    /// tcgetpgrp(3): the terminal's foreground process group, -1 when it has none or
    /// the call fails (as tcgetpgrp returns it).
    package func foregroundProcessGroup() -> Int32 { tcgetpgrp(raw) }

    // MARK: Pipes (pipe(7), tee(2))

    /// ioctl(2) FIONREAD: the bytes queued in a pipe.
    package func queuedBytes() throws(SystemCallError) -> Int {
        var queued: Int32 = 0
        try kernelCall("ioctl(FIONREAD)", cc_fionread(raw, &queued))
        return Int(queued)
    }

    /// A copy of up to `count` queued bytes of a pipe, left in it for the process
    /// (tee(2) into a pipe of the shim's, read back). Throws `'tee' failed: …`.
    package func peekPipe(count: Int) throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let fd = raw
        let n = bytes.withUnsafeMutableBytes { cc_pipe_peek(fd, $0.baseAddress, $0.count) }
        return Array(bytes.prefix(try kernelCall("tee", n)))
    }
}

/// getsockopt(2) option names at SOL_SOCKET (uapi asm-generic/socket.h).
package enum SocketOption {
    /// SO_TYPE: SOCK_STREAM, SOCK_DGRAM, …
    package static let type: Int32 = 3
    /// SO_PROTOCOL.
    package static let `protocol`: Int32 = 38
    /// SO_DOMAIN: AF_UNIX, AF_INET, …
    package static let domain: Int32 = 39
    /// IPPROTO_TCP (uapi linux/in.h), as SO_PROTOCOL gives it.
    package static let tcpProtocol: Int32 = 6
}

/// Finding files by handle (open_by_handle_at(2), name_to_handle_at(2)), as inotify's
/// fdinfo names its watched files.
package enum FileHandles {
    /// The path of the file whose handle is `handle` (of type `type`) on the file system
    /// mounted at `mountPoint`: open_by_handle_at(2) O_PATH, then readlink of
    /// /proc/self/fd/N. Nil when it cannot be opened or is deleted.
    package static func path(ofHandle handle: [UInt8], type: Int32, mountPoint: String) -> String? {
        guard let mount = try? OwnedDescriptor(opening: mountPoint, .directory) else { return nil }
        let fd = handle.withUnsafeBytes {
            cc_open_by_handle(mount.raw, type, $0.baseAddress, UInt32($0.count), Linux.O_PATH | O_CLOEXEC)
        }
        guard fd >= 0 else { return nil }
        let file = OwnedDescriptor(adopting: Int32(fd))
        guard let path = try? file.linkedPath(), !path.hasSuffix(" (deleted)") else { return nil }
        return path
    }
}

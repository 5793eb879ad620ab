#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCheckpointKernel

/// SIGINT and SIGTERM, blocked in the calling thread (and the threads it creates
/// later) and read from a signalfd(2) instead, with standard input optionally watched
/// beside them (poll(2)): how a resident command waits between its captures without a
/// signal interrupting one halfway. The signalfd is closed when dropped.
package struct SignalWatch: ~Copyable {
    /// What ended a ``wait(timeoutMilliseconds:input:)``.
    package enum Wake: Equatable, Sendable {
        /// The timeout passed.
        case timeout
        /// SIGINT or SIGTERM is pending, or poll failed other than by EINTR.
        case signal
        /// Standard input is readable (data, end of input or an error).
        case input
    }

    private let file: OwnedDescriptor

    /// Blocks SIGINT and SIGTERM (sigprocmask) and opens a signalfd for them.
    /// Throws `'signalfd' failed: …`.
    package init() throws(SystemCallError) {
        let fd = Int32(cc_signalfd_blocking(SIGINT, SIGTERM))
        guard fd >= 0 else { throw SystemCallError("signalfd", errno: -fd) }
        file = OwnedDescriptor(adopting: fd)
    }

    /// poll(2) on the signalfd, and on descriptor 0 with `input`, for up to
    /// `timeoutMilliseconds` (-1: no limit); again after EINTR. A pending signal wins.
    package func wait(timeoutMilliseconds timeout: Int32, input: Bool) -> Wake {
        while true {
            var fds = [pollfd(fd: file.raw, events: Int16(POLLIN), revents: 0)]
            if input { fds.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 {
                if SystemCallError.lastErrno == EINTR { continue }
                return .signal
            }
            if fds[0].revents != 0 { return .signal }
            if input && fds[1].revents != 0 { return .input }
            return .timeout
        }
    }

    /// What one read(2) of standard input gave: a line's end among the bytes, nothing
    /// for now (no newline yet, EINTR or EAGAIN), or the end of input (0 or an error).
    package enum InputRead: Equatable, Sendable {
        case newline
        case partial
        case end
    }

    /// Reads up to 4 KiB of standard input (read(2) of descriptor 0).
    package static func readInput() -> InputRead {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        let error = n < 0 ? SystemCallError.lastErrno : 0
        if n == 0 || (n < 0 && error != EINTR && error != EAGAIN) { return .end }
        if n > 0 && buffer[..<n].contains(UInt8(ascii: "\n")) { return .newline }
        return .partial
    }
}

extension FileSystem {
    /// mkdir(2) of `path` with `permissions` (less the umask); an existing one is fine.
    /// Throws `'mkdir(PATH)' failed: …`.
    package static func makeDirectory(_ path: String, permissions: UInt32) throws(SystemCallError) {
        if mkdir(path, mode_t(permissions)) != 0 && SystemCallError.lastErrno != EEXIST {
            throw SystemCallError("mkdir(\(path))", errno: SystemCallError.lastErrno)
        }
    }
}

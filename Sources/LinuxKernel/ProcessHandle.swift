#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// A pidfd of another process (pidfd_open(2)), closed when dropped: it names that very
/// process even if its PID is reused, and lends its descriptors (pidfd_getfd(2)).
package struct ProcessHandle: ~Copyable {
    /// The pidfd, in this process.
    package let descriptor: Int32

    /// pidfd_open(`pid`, 0).
    package init(pid: Int32) throws(SystemCallError) {
        let fd = cc_pidfd_open(pid)
        guard fd >= 0 else { throw SystemCallError("pidfd_open", errno: Int32(-fd)) }
        descriptor = Int32(fd)
    }

    deinit { close(descriptor) }

    /// kill(`pid`, 0): nil when the process exists and may be signalled, else the errno.
    package static func probe(pid: Int32) -> Errno? {
        Glibc.kill(pid, 0) == 0 ? nil : Errno(rawValue: Glibc.errno)
    }

    /// Whether /proc/`pid` exists here (access(2)): the PID is taken by a process or thread.
    package static func pidInUse(_ pid: Int32) -> Bool { access("/proc/\(pid)", F_OK) == 0 }

    /// getpid(2): this process.
    package static var ownPID: Int32 { getpid() }

    /// realpath(3) of `path`: absolute, without symbolic links; nil when it cannot be resolved.
    package static func resolvedPath(_ path: String) -> String? {
        realpath(path, nil).map { resolved in
            defer { free(resolved) }
            return String(cString: resolved)
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Facts about the machine and this process that the tools read once, with
/// plain libc calls (ProcessInfo reads far more than it is asked for, which a
/// 10 ms capture notices).
package enum Host {
    /// Online processors, sysconf(_SC_NPROCESSORS_ONLN); at least 1.
    package static let onlineProcessors = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))

    /// An environment variable, getenv(3).
    package static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// The directory for temporary files: $TMPDIR, else /tmp.
    package static var temporaryDirectory: String { environment("TMPDIR") ?? "/tmp" }
}

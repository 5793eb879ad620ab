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

    /// This process's id, getpid(2).
    package static var processID: Int32 { getpid() }

    /// The time of day, clock_gettime(CLOCK_REALTIME), in nanoseconds since the Unix epoch.
    package static func realtimeNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Clock ticks per second of /proc's CPU times, sysconf(_SC_CLK_TCK).
    package static var clockTicksPerSecond: Int { sysconf(Int32(_SC_CLK_TCK)) }

    /// Seconds of CPU (user and system) this process and its waited-for children
    /// used, getrusage(2) RUSAGE_SELF + RUSAGE_CHILDREN.
    package static func processorSeconds() -> Double {
        var total = 0.0
        for who in [RUSAGE_SELF, RUSAGE_CHILDREN].map({ __rusage_who_t($0.rawValue) }) {
            var usage = rusage()
            getrusage(who, &usage)
            total += Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
                + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        }
        return total
    }

    /// Ends the process with `status`, exit(3).
    package static func exit(_ status: Int32) -> Never { Glibc.exit(status) }
}

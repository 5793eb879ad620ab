#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// A typed errno value (swift-system's), for `SystemCallError.errno`.
public typealias Errno = SystemPackage.Errno

/// A failed system call: its name as written in the source, and errno.
/// Prints as `'ptrace(PTRACE_SEIZE)' failed: (1) Operation not permitted`.
public struct SystemCallError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The call as the source names it, with what it was called on (`open(/proc/1/maps)`).
    public var call: String
    /// Why it failed.
    public var errno: Errno

    /// A failure of `call` with `errno`.
    public init(_ call: String, errno: Errno) {
        self.call = call
        self.errno = errno
    }

    /// A failure of `call` with the raw errno value `code` (from a `cc_*` result or libc's errno).
    public init(_ call: String, errno code: Int32) {
        self.init(call, errno: Errno(rawValue: code))
    }

    /// `'call' failed: (N) text`, strerror(3)'s text.
    public var description: String { "'\(call)' failed: \(Self.text(of: errno.rawValue))" }

    /// `(N) text` for an errno value, as strerror(3) gives it.
    public static func text(of code: Int32) -> String { "(\(code)) \(String(cString: strerror(code)))" }

    /// The calling thread's errno now (after a libc call returned -1).
    public static var lastErrno: Int32 { Glibc.errno }
}

/// Checks a `cc_*` result (>= 0, or -errno).
@discardableResult
package func kernelCall(_ call: @autoclosure () -> String, _ result: Int) throws(SystemCallError) -> Int {
    if result < 0 { throw SystemCallError(call(), errno: Int32(-result)) }
    return result
}

/// Checks a libc result (-1 and errno on failure).
@discardableResult
package func libcCall(_ call: @autoclosure () -> String, _ result: Int) throws(SystemCallError) -> Int {
    if result == -1 { throw SystemCallError(call(), errno: Glibc.errno) }
    return result
}

/// Runs `body` (a libc call returning -1 with errno, or a `cc_*` call returning -errno)
/// again while it fails with EINTR: the one retry-on-interrupt loop of the code base.
@inlinable
package func retryingOnInterrupt<T: SignedInteger>(_ body: () -> T) -> T {
    while true {
        let result = body()
        if result == -1 && Glibc.errno == EINTR { continue }
        if result == -T(EINTR) && result != -1 { continue }
        return result
    }
}

/// The monotonic clock, clock_gettime(CLOCK_MONOTONIC), in nanoseconds.
package enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point (boot).
    package static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

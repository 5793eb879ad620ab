/// `struct itimerspec` of x86-64 (uapi linux/time_types.h): it_interval then it_value,
/// each a `struct timespec` {tv_sec, tv_nsec} of 8-byte fields. Read by the capture
/// (timer_gettime(2)) and written by the restore (timer_settime(2)); one parse, one
/// encode. The times are kept in nanoseconds, as the image holds them (§5.3 PosixTimer).
package struct TimerSpec: Equatable, Sendable {
    /// Bytes of the struct.
    package static let size = 32
    /// `it_interval` in nanoseconds: the period, 0 for a one-shot timer.
    package var intervalNanoseconds: Int64
    /// `it_value` in nanoseconds: the time to the next expiry, 0 when disarmed.
    package var valueNanoseconds: Int64

    /// A timer value from its two times.
    package init(intervalNanoseconds: Int64, valueNanoseconds: Int64) {
        self.intervalNanoseconds = intervalNanoseconds
        self.valueNanoseconds = valueNanoseconds
    }

    /// Parses the struct from the first ``size`` bytes of `bytes`.
    package init(parsing bytes: [UInt8]) {
        func time(_ at: Int) -> Int64 { bytes.loadLE(Int64.self, at: at) * 1_000_000_000 + bytes.loadLE(Int64.self, at: at + 8) }
        self.init(intervalNanoseconds: time(0), valueNanoseconds: time(16))
    }

    /// The struct's bytes, as timer_settime reads them.
    package var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        for ns in [intervalNanoseconds, valueNanoseconds] { bytes.appendLE(ns / 1_000_000_000); bytes.appendLE(ns % 1_000_000_000) }
        return bytes
    }
}

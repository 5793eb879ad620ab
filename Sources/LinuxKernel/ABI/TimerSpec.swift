/// `struct itimerspec` of x86-64 (uapi linux/time_types.h): it_interval then it_value,
/// each a `struct timespec` {tv_sec, tv_nsec} of 8-byte fields. Read by the capture
/// (timer_gettime(2)) and written by the restore (timer_settime(2)); one parse, one
/// encode. The times are kept in nanoseconds, as the image holds them (§5.3 PosixTimer).
package struct TimerSpec: Equatable, Sendable {
    /// Bytes of the struct.
    package static let size = TimerPair.size
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
        let times = TimerPair.parse(bytes, unitsPerSecond: 1_000_000_000)
        self.init(intervalNanoseconds: times.interval, valueNanoseconds: times.value)
    }

    /// The struct's bytes, as the kernel reads them.
    package var encoded: [UInt8] { TimerPair.encode(interval: intervalNanoseconds, value: valueNanoseconds, unitsPerSecond: 1_000_000_000) }
}

/// `struct itimerval` of x86-64 (uapi linux/time.h): it_interval then it_value, each a
/// `struct timeval` {tv_sec, tv_usec} of 8-byte fields. Read by the capture
/// (getitimer(2)) and written by the restore (setitimer(2)); one parse, one encode.
/// The times are kept in microseconds, as the image holds them (§5.3 IntervalTimer).
package struct IntervalTimerValue: Equatable, Sendable {
    /// Bytes of the struct.
    package static let size = TimerPair.size
    /// `it_interval` in microseconds: the period, 0 for a one-shot timer.
    package var intervalMicroseconds: Int64
    /// `it_value` in microseconds: the time to the next expiry, 0 when disarmed.
    package var valueMicroseconds: Int64

    /// A timer value from its two times.
    package init(intervalMicroseconds: Int64, valueMicroseconds: Int64) {
        self.intervalMicroseconds = intervalMicroseconds
        self.valueMicroseconds = valueMicroseconds
    }

    /// Parses the struct from the first ``size`` bytes of `bytes`.
    package init(parsing bytes: [UInt8]) {
        let times = TimerPair.parse(bytes, unitsPerSecond: 1_000_000)
        self.init(intervalMicroseconds: times.interval, valueMicroseconds: times.value)
    }

    /// The struct's bytes, as the kernel reads them.
    package var encoded: [UInt8] { TimerPair.encode(interval: intervalMicroseconds, value: valueMicroseconds, unitsPerSecond: 1_000_000) }
}

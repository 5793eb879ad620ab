/// The layout itimerval and itimerspec share (uapi linux/time.h, linux/time_types.h):
/// it_interval then it_value, each {seconds, fraction} of 8-byte fields, the fraction in
/// microseconds (timeval) or nanoseconds (timespec). ``IntervalTimerValue`` and
/// ``TimerSpec`` parse and encode through it.
enum TimerPair {
    /// Bytes of either struct.
    static let size = 32

    /// The two times of `bytes`, in units of 1 / `unitsPerSecond` s.
    static func parse(_ bytes: [UInt8], unitsPerSecond: Int64) -> (interval: Int64, value: Int64) {
        func time(_ at: Int) -> Int64 { bytes.loadLE(Int64.self, at: at) * unitsPerSecond + bytes.loadLE(Int64.self, at: at + 8) }
        return (time(0), time(16))
    }

    /// The struct's bytes for `interval` and `value`, in units of 1 / `unitsPerSecond` s.
    static func encode(interval: Int64, value: Int64, unitsPerSecond: Int64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        for t in [interval, value] { bytes.appendLE(t / unitsPerSecond); bytes.appendLE(t % unitsPerSecond) }
        return bytes
    }
}

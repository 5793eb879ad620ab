import CheckpointImage
import LinuxKernel

/// Interval timers (setitimer(2): ITIMER_REAL, _VIRTUAL, _PROF) and POSIX timers
/// (timer_create(2)), in the image's sync objects (spec/image-format.md §5.3
/// IntervalTimer, PosixTimer). Captured by injected getitimer and timer_gettime, with
/// /proc/PID/timers naming the POSIX timers; restored by setitimer, and timer_create
/// with the saved IDs then timer_settime. The kernel structs have one layout each:
/// ``IntervalTimerValue``, ``TimerSpec``, ``SignalEvent``.
package enum TimersKind: StateKind {
    package static let name = "timers"
    package static let sections: [SectionKind] = [.syncObjects]

    // MARK: Capture

    /// getitimer for each interval timer and timer_gettime for each POSIX timer, results
    /// in allocations of the data area.
    package static func captureInjected(_ target: CaptureTarget, _ remote: inout RemoteCalls?, into records: inout CapturedRecords) throws(SystemCallError) {
        guard var parked = remote else { return }
        defer { remote = parked }
        let mark = parked.scratchMark
        defer { parked.release(to: mark) }
        let itimer = try parked.reserve(IntervalTimerValue.size)
        for which in 0..<3 {
            guard try parked.rawCall(X86Syscall.getitimer, [UInt64(which), itimer]) == 0 else { continue }
            let value = IntervalTimerValue(parsing: try parked.get(IntervalTimerValue.size, at: itimer))
            guard value.intervalMicroseconds != 0 || value.valueMicroseconds != 0 else { continue }
            var t = Ccimg_V1_IntervalTimer()
            t.which = Int32(which)
            t.intervalUs = value.intervalMicroseconds
            t.valueUs = value.valueMicroseconds
            records.sync.intervalTimers.append(t)
        }
        let current = try parked.reserve(TimerSpec.size)
        for var timer in posixTimers(pid: target.pid) {
            guard try parked.rawCall(X86Syscall.timerGettime, [UInt64(timer.id), current]) == 0 else { continue }
            let spec = TimerSpec(parsing: try parked.get(TimerSpec.size, at: current))
            timer.intervalNs = spec.intervalNanoseconds
            timer.valueNs = spec.valueNanoseconds
            records.sync.posixTimers.append(timer)
        }
    }

    /// /proc/PID/timers: `ID:`, `signal: N/ptr`, `notify: signal/pid.T`, `ClockID:` blocks.
    package static func posixTimers(pid: Int32) -> [Ccimg_V1_PosixTimer] {
        guard let text = try? ProcFS.read("/proc/\(pid)/timers") else { return [] }
        return parsePosixTimers(text)
    }

    /// The timers of a /proc/PID/timers text.
    package static func parsePosixTimers(_ text: String) -> [Ccimg_V1_PosixTimer] {
        var timers: [Ccimg_V1_PosixTimer] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmed() }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "ID":
                var t = Ccimg_V1_PosixTimer()
                t.id = Int32(parts[1]) ?? 0
                timers.append(t)
            case "signal" where !timers.isEmpty:
                let s = parts[1].split(separator: "/")
                timers[timers.count - 1].signo = Int32(s.first ?? "") ?? 0
                if s.count > 1 { timers[timers.count - 1].sigval = UInt64(s[1], radix: 16) ?? 0 }
            case "notify" where !timers.isEmpty:
                let n = parts[1].split(separator: "/")
                timers[timers.count - 1].notify = n.first == "thread" ? SignalEvent.threadID : n.first == "none" ? 1 : 0
                if n.count > 1, let dot = n[1].firstIndex(of: ".") { timers[timers.count - 1].notifyTid = Int32(n[1][n[1].index(after: dot)...]) ?? 0 }
            case "ClockID" where !timers.isEmpty:
                timers[timers.count - 1].clockID = Int32(parts[1]) ?? 0
            default: break
            }
        }
        return timers
    }

    // MARK: Restore

    package static func restoreProcessWide(into context: inout RestoreContext) throws(StateFailure) {
        do throws(SystemCallError) {
            for timer in context.sync.intervalTimers where timer.valueUs > 0 {
                let value = IntervalTimerValue(intervalMicroseconds: timer.intervalUs, valueMicroseconds: timer.valueUs)
                let address = try context.remote.put(value.encoded)
                try context.remote.call("setitimer(\(timer.which))", X86Syscall.setitimer, [UInt64(timer.which), address, 0])
            }
        } catch {
            throw .system(error)
        }
        try restorePosixTimers(into: &context)
    }

    /// POSIX timers (timer_create) with their IDs, signals and remaining times. The kernel
    /// gives a new timer the ID asked for after prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)
    /// (Linux 6.15); without it, timers are created and dropped until the ID comes up.
    static func restorePosixTimers(into context: inout RestoreContext) throws(StateFailure) {
        let timers = context.sync.posixTimers.sorted { $0.id < $1.id }
        guard !timers.isEmpty else { return }
        let byRequest = (try? context.remote.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", X86Syscall.prctl,
                                                  [UInt64(Linux.PR_TIMER_CREATE_RESTORE_IDS), 1, 0, 0, 0])) != nil
        var spares: [UInt64] = []
        var mismatch: (id: Int32, got: Int32)? = nil
        do throws(SystemCallError) {
            timers: for timer in timers {
                let notifyTID = context.traced.keys.contains(timer.notifyTid) ? timer.notifyTid : context.process.pid
                let event = SignalEvent(value: timer.sigval, signo: timer.signo, notify: timer.notify,
                                        tid: timer.notify & SignalEvent.threadID != 0 ? notifyTID : 0)
                let eventAddress = try context.remote.put(event.encoded)
                var created: UInt64 = 0
                for _ in 0..<65536 {
                    let mark = context.remote.scratchMark
                    defer { context.remote.release(to: mark) }
                    var id: [UInt8] = []
                    id.appendLE(timer.id)
                    let idAddress = try context.remote.put(id)
                    try context.remote.call("timer_create", X86Syscall.timerCreate, [UInt64(timer.clockID), eventAddress, idAddress])
                    let got = try context.remote.get(4, at: idAddress).loadLE(Int32.self, at: 0)
                    created = UInt64(got)
                    if got == timer.id { break }
                    guard !byRequest, got < timer.id else {
                        mismatch = (timer.id, got)
                        break timers
                    }
                    spares.append(created)
                }
                if timer.valueNs > 0 {
                    let spec = TimerSpec(intervalNanoseconds: timer.intervalNs, valueNanoseconds: timer.valueNs)
                    let address = try context.remote.put(spec.encoded)
                    try context.remote.call("timer_settime(\(timer.id))", X86Syscall.timerSettime, [created, 0, address, 0])
                }
            }
            if mismatch == nil {
                for spare in spares { try context.remote.call("timer_delete", Linux.SYS_timer_delete, [spare]) }
                if byRequest {
                    try context.remote.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", X86Syscall.prctl, [UInt64(Linux.PR_TIMER_CREATE_RESTORE_IDS), 0, 0, 0, 0])
                }
            }
        } catch {
            throw .system(error)
        }
        if let mismatch { throw .state(StateError(.kernel, "POSIX timer \(mismatch.id) came back as \(mismatch.got)")) }
    }
}

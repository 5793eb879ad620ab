import Glibc
import CCheckpointKernel
import CheckpointImage
import LinuxKernel
import ProcessState

/// State only the process itself can ask the kernel for, read by injected
/// system calls (``SyscallInjector``): signal dispositions (rt_sigaction),
/// each thread's alternate stack (sigaltstack) and clear-child-tid address
/// (prctl PR_GET_TID_ADDRESS), the program break (brk(0)), interval timers (getitimer) and POSIX timers
/// (timer_gettime, with /proc/PID/timers naming them).
enum InjectedCapture {
    struct Result {
        var signals = Ccimg_V1_SignalDispositions()
        var intervalTimers: [Ccimg_V1_IntervalTimer] = []
        var posixTimers: [Ccimg_V1_PosixTimer] = []
        var warnings: [String] = []
        var interceptedSignals: [Int32: [Int32]] = [:]
        var altStacks: [Int32: Ccimg_V1_AltStack] = [:]
        /// The program break, from brk(0); nil when it could not be asked.
        var brk: UInt64?
        /// The userfaultfd created in the process for `--track`, as its descriptor number there.
        var userfaultfd: Int32?
        var tidAddresses: [Int32: UInt64] = [:]
    }

    static func little(_ bytes: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (UInt64($1) * 8) }
    }

    /// Runs the injected reads. Each thread used is stopped again afterwards
    /// (``SyscallInjector/finish()``) with the registers, signal mask and memory it
    /// had before, without having run an instruction of its own: a capture may read
    /// them before or after this.
    static func capture(pid: Int32, stopped: [TracedProcess.StoppedThread], createUserfaultfd: Bool = false) throws -> Result {
        var result = Result()
        let status = ProcFS.parseStatus(try ProcFS.read("/proc/\(pid)/status"))
        let ignored = UInt64(status["SigIgn"] ?? "0", radix: 16) ?? 0
        let caught = UInt64(status["SigCgt"] ?? "0", radix: 16) ?? 0
        for signo in 1...64 where (ignored | caught) & (UInt64(1) << UInt64(signo - 1)) != 0 {
            var action = Ccimg_V1_SignalAction()
            action.signo = Int32(signo)
            action.handler = 1   // SIG_IGN, until rt_sigaction says more
            result.signals.actions.append(action)
        }
        // The vdso's `syscall` instruction, found once for every thread.
        let maps = ProcFS.parseMaps((try? ProcFS.read("/proc/\(pid)/maps")) ?? "")
        guard let first = stopped.first(where: { !$0.groupStopped }),
              let syscallAddress = SyscallInjector.vdsoSyscallAddress(pid: pid, maps: maps) else {
            result.warnings.append("the process is stopped by a signal: handler addresses, alternate stacks and timers are not captured")
            return result
        }
        var injector = SyscallInjector(pid: pid, tid: first.tid, syscallAddress: syscallAddress)
        // Every thread that takes calls is parked first (SyscallInjector): a kill -9 of ccpm
        // in the middle leaves them where they were.
        let injected = stopped.filter { !$0.groupStopped }
        try injector.withParking(threads: injected, maps: maps) { injector, scratch, parkOther in
            let currentBreak = try injector.call(X86Syscall.brk, [0])
            if currentBreak > 0 { result.brk = UInt64(currentBreak) }
            if createUserfaultfd {
                // userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY), for DirtyTracking.start
                let fd = try injector.call(X86Syscall.userfaultfd, [UInt64(O_CLOEXEC | O_NONBLOCK | 1)])
                guard fd >= 0 else { throw SystemCallError("userfaultfd (injected)", errno: Int32(-fd)) }
                result.userfaultfd = Int32(fd)
            }
            for i in result.signals.actions.indices {
                let signo = result.signals.actions[i].signo
                let r = try injector.call(X86Syscall.rtSigaction, [UInt64(signo), 0, scratch, 8])
                guard r == 0 else { continue }
                let raw = try injector.read(32, at: scratch)   // struct kernel_sigaction: handler, flags, restorer, mask
                result.signals.actions[i].handler = little(raw, 0)
                result.signals.actions[i].flags = little(raw, 8)
                result.signals.actions[i].restorer = little(raw, 16)
                result.signals.actions[i].mask = little(raw, 24)
            }
            for which in 0..<3 {
                guard try injector.call(X86Syscall.getitimer, [UInt64(which), scratch]) == 0 else { continue }
                let raw = try injector.read(32, at: scratch)   // itimerval: interval {sec, usec}, value {sec, usec}
                let interval = Int64(bitPattern: little(raw, 0)) * 1_000_000 + Int64(bitPattern: little(raw, 8))
                let value = Int64(bitPattern: little(raw, 16)) * 1_000_000 + Int64(bitPattern: little(raw, 24))
                guard interval != 0 || value != 0 else { continue }
                var t = Ccimg_V1_IntervalTimer()
                t.which = Int32(which)
                t.intervalUs = interval
                t.valueUs = value
                result.intervalTimers.append(t)
            }
            for var timer in posixTimers(pid: pid) {
                guard try injector.call(X86Syscall.timerGettime, [UInt64(timer.id), scratch]) == 0 else { continue }
                let raw = try injector.read(32, at: scratch)   // itimerspec: interval {sec, nsec}, value {sec, nsec}
                timer.intervalNs = Int64(bitPattern: little(raw, 0)) * 1_000_000_000 + Int64(bitPattern: little(raw, 8))
                timer.valueNs = Int64(bitPattern: little(raw, 16)) * 1_000_000_000 + Int64(bitPattern: little(raw, 24))
                result.posixTimers.append(timer)
            }
            // Per-thread state: each thread asks for its own.
            for (k, thread) in injected.enumerated() where thread.tid != injector.tid {
                var own = SyscallInjector(pid: pid, tid: thread.tid, syscallAddress: syscallAddress)
                try parkOther(&own, k)
                do { try perThread(&own, scratch: scratch, into: &result) } catch {
                    try? own.unpark()    // before its stub is unmapped
                    throw error
                }
                try own.finish()
                result.interceptedSignals[thread.tid] = own.interceptedSignals
            }
            try perThread(&injector, scratch: scratch, into: &result)
        }
        try injector.finish()
        result.interceptedSignals[injector.tid, default: []] += injector.interceptedSignals
        return result
    }

    /// sigaltstack(NULL, &old) and prctl(PR_GET_TID_ADDRESS) in the thread itself.
    static func perThread(_ own: inout SyscallInjector, scratch: UInt64, into result: inout Result) throws {
        if try own.call(X86Syscall.sigaltstack, [0, scratch]) == 0 {
            let raw = try own.read(24, at: scratch)    // stack_t: ss_sp, ss_flags, ss_size
            var alt = Ccimg_V1_AltStack()
            alt.sp = little(raw, 0)
            alt.flags = Int32(truncatingIfNeeded: little(raw, 8))
            alt.size = little(raw, 16)
            if alt.sp != 0 || alt.size != 0 { result.altStacks[own.tid] = alt }
        }
        if try own.call(X86Syscall.prctl, [40 /* PR_GET_TID_ADDRESS */, scratch]) == 0 {
            result.tidAddresses[own.tid] = little(try own.read(8, at: scratch), 0)
        }
    }

    /// /proc/PID/timers: `ID:`, `signal: N/ptr`, `notify: signal/pid.T`, `ClockID:` blocks.
    static func posixTimers(pid: Int32) -> [Ccimg_V1_PosixTimer] {
        guard let text = try? ProcFS.read("/proc/\(pid)/timers") else { return [] }
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
                timers[timers.count - 1].notify = n.first == "thread" ? 4 : n.first == "none" ? 1 : 0
                if n.count > 1, let dot = n[1].firstIndex(of: ".") { timers[timers.count - 1].notifyTid = Int32(n[1][n[1].index(after: dot)...]) ?? 0 }
            case "ClockID" where !timers.isEmpty:
                timers[timers.count - 1].clockID = Int32(parts[1]) ?? 0
            default: break
            }
        }
        return timers
    }
}

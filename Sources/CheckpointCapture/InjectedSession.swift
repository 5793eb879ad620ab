import CheckpointImage
import LinuxKernel
import ProcessState

/// The injected stage of a capture (decisions 0010, 0014): what only the process itself
/// can ask the kernel, asked by system calls run inside its parked threads
/// (``SyscallInjector/withParking(threads:maps:_:)``). Every kind of ``StateKinds/all``
/// runs its process-wide calls in the first thread that can take calls, then its
/// per-thread calls in each thread; `--track`'s userfaultfd is created in the same session.
enum InjectedSession {
    /// What the session leaves besides the records.
    struct Outcome {
        /// Signals that arrived during injection, by thread, to hand back on detach.
        var interceptedSignals: [Int32: [Int32]] = [:]
        /// The userfaultfd created in the process for `--track`, as its descriptor number there.
        var userfaultfd: Int32?
    }

    /// Runs the injected stage. Each thread used is stopped again afterwards
    /// (``SyscallInjector/finish()``) with the registers, signal mask and memory it had
    /// before, without having run an instruction of its own: a capture may read them
    /// before or after this.
    static func run(_ target: CaptureTarget, into records: inout CapturedRecords,
                    createUserfaultfd: Bool) throws(SystemCallError) -> Outcome {
        var outcome = Outcome()
        let pid = target.pid
        // The vdso's `syscall` instruction, found once for every thread.
        let maps = ProcFS.parseMaps((try? ProcFS.read("/proc/\(pid)/maps")) ?? "")
        guard let first = target.threads.first(where: { !$0.groupStopped }),
              let syscallAddress = SyscallInjector.vdsoSyscallAddress(pid: pid, maps: maps) else {
            var none: RemoteCalls? = nil
            for kind in StateKinds.all { try kind.captureInjected(target, &none, into: &records) }
            records.warnings.append("the process is stopped by a signal: handler addresses, alternate stacks and timers are not captured")
            return outcome
        }
        var injector = SyscallInjector(pid: pid, tid: first.tid, syscallAddress: syscallAddress)
        // Every thread that takes calls is parked first (SyscallInjector): a kill -9 of ccpm
        // in the middle leaves them where they were.
        let injected = target.threads.filter { !$0.groupStopped }
        try injector.withParking(threads: injected, maps: maps) { injector, data, parkOther throws(SystemCallError) in
            // One remote-call machinery for capture and restore (decision 0020): the
            // kinds allocate their results in the parked data area.
            var calls: RemoteCalls? = RemoteCalls(parked: injector, data: data)
            defer { injector = calls!.injector(of: injector.tid)! }
            if createUserfaultfd {
                // userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY), for DirtyTracking.start
                let flags = Linux.O_CLOEXEC | Linux.O_NONBLOCK | Int32(Linux.UFFD_USER_MODE_ONLY)
                let fd = try calls!.rawCall(X86Syscall.userfaultfd, [UInt64(flags)])
                guard fd >= 0 else { throw SystemCallError("userfaultfd (injected)", errno: Int32(-fd)) }
                outcome.userfaultfd = Int32(fd)
            }
            for kind in StateKinds.all { try kind.captureInjected(target, &calls, into: &records) }
            // Per-thread state: each thread asks for its own.
            for (k, thread) in injected.enumerated() where thread.tid != first.tid {
                var own = SyscallInjector(pid: pid, tid: thread.tid, syscallAddress: syscallAddress)
                try parkOther(&own, k)
                var ownCalls = RemoteCalls(parked: own, data: data)
                do throws(SystemCallError) {
                    for kind in StateKinds.all { try kind.captureInThread(&ownCalls, into: &records) }
                } catch {
                    own = ownCalls.injector(of: thread.tid)!
                    try? own.unpark()    // before its stub is unmapped
                    throw error
                }
                own = ownCalls.injector(of: thread.tid)!
                try own.finish()
                outcome.interceptedSignals[thread.tid] = own.interceptedSignals
            }
            for kind in StateKinds.all { try kind.captureInThread(&calls!, into: &records) }
        }
        try injector.finish()
        outcome.interceptedSignals[injector.tid, default: []] += injector.interceptedSignals
        return outcome
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// A process whose every thread is seized and stopped with ptrace
/// (PTRACE_SEIZE + PTRACE_INTERRUPT). Dropping it detaches every thread, so
/// no failure path can leave the process stopped; a thread that was stopped
/// by a signal before (group-stop) stays stopped, as it was.
///
/// All ptrace requests must come from the thread that seized (the kernel
/// answers ESRCH to any other): use a `TracedProcess` on one thread only.
public struct TracedProcess: ~Copyable {
    public let pid: Int32
    /// The stopped threads, main thread first.
    public private(set) var threads: [StoppedThread] = []
    private var detached = false

    /// How a thread was found when it stopped for us.
    public struct StoppedThread: Sendable {
        public var tid: Int32
        /// It was in group-stop (stopped by SIGSTOP, SIGTSTP, …) before we came.
        public var groupStopped: Bool
        /// A signal it was about to handle when it stopped (signal-delivery-stop);
        /// it is handed back on detach, and recorded as pending.
        public var interceptedSignal: Int32
        /// Its /proc state letter before the seize (R, S, D, T, …).
        public var procState: Character
    }

    /// Seizes and stops every thread of `pid`. Threads created meanwhile are
    /// caught too: the task list is read again until it is stable. On failure every
    /// thread seized so far is let go.
    public init(seizing pid: Int32) throws(SystemCallError) {
        self.pid = pid
        var seized = Set<Int32>()
        do throws(SystemCallError) {
            var rounds = 0
            while true {
                rounds += 1
                let tids = try ProcFS.threadIDs(pid)
                let fresh = tids.filter { !seized.contains($0) }
                if fresh.isEmpty { break }
                for tid in fresh {
                    let procState = TracedProcess.procState(pid: pid, tid: tid)
                    // TRACESYSGOOD: syscall stops of parked injection (SyscallInjector.park) are told
                    // apart from signals, and are no signal to deliver if ccpm dies in one.
                    let r = cc_ptrace_seize(tid, cc_PTRACE_O_TRACESYSGOOD)
                    if r == -Int(ESRCH) && tid != pid { continue }  // the thread exited
                    try kernelCall("ptrace(PTRACE_SEIZE)", r)
                    Tracer.adopt(tid)
                    seized.insert(tid)
                    threads.append(StoppedThread(tid: tid, groupStopped: false, interceptedSignal: 0, procState: procState))
                    try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
                }
                if rounds > 1000 { throw SystemCallError("seize: threads keep appearing", errno: EAGAIN) }
            }
            var waited = threads
            for i in waited.indices {
                try TracedProcess.waitForStop(&waited[i])
            }
            threads = waited
            threads.sort { ($0.tid == pid ? 0 : 1, $0.tid) < ($1.tid == pid ? 0 : 1, $1.tid) }
        } catch {
            detachAll()
            detached = true
            throw error
        }
    }

    private static func procState(pid: Int32, tid: Int32) -> Character {
        guard let text = try? ProcFS.read("/proc/\(pid)/task/\(tid)/stat"), let stat = ProcFS.parseStat(text),
              let c = stat.fields[3].first else { return "?" }
        return c
    }

    /// Waits until `thread` is in a ptrace stop, noting group-stop and intercepted signals.
    private static func waitForStop(_ thread: inout StoppedThread) throws(SystemCallError) {
        while true {
            let status = try Wait.next(thread.tid).status
            if status.ended {
                throw SystemCallError("waitpid(\(thread.tid)): thread exited", errno: ESRCH)
            }
            guard status.stopped else { continue }
            let signal = status.stopSignal
            if status.ptraceEvent == cc_PTRACE_EVENT_STOP {
                // PTRACE_EVENT_STOP: SIGTRAP for our interrupt; a stop signal means group-stop.
                if [SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU].contains(signal) { thread.groupStopped = true }
                return
            }
            // A signal-delivery-stop came first: keep the signal for later, and interrupt again.
            thread.interceptedSignal = signal
            return
        }
    }

    /// Records signals that arrived while injecting, to hand back on detach.
    package mutating func noteIntercepted(_ signals: [Int32: [Int32]]) {
        for i in threads.indices {
            if let s = signals[threads[i].tid]?.last, threads[i].interceptedSignal == 0 { threads[i].interceptedSignal = s }
        }
    }

    /// Detaches every thread, handing back intercepted signals. Idempotent.
    public mutating func detach() {
        guard !detached else { return }
        detachAll()
        detached = true
    }

    private func detachAll() {
        for thread in threads {
            Tracer.check(thread.tid, "ptrace(PTRACE_DETACH)")
            _ = cc_ptrace_detach(thread.tid, thread.interceptedSignal)
            Tracer.release(thread.tid)
        }
    }

    /// Kills the process (SIGKILL) — used after its image is safely written,
    /// when the process migrates — and collects every thread's exit report.
    /// Other threads first: the kernel reports the leader's exit only after theirs.
    public consuming func kill() {
        _ = Glibc.kill(pid, SIGKILL)
        let order = threads.filter { $0.tid != pid } + threads.filter { $0.tid == pid }
        defer { for thread in order { Tracer.release(thread.tid) } }
        let deadline = MonotonicClock.now() + 5_000_000_000
        for thread in order {
            while MonotonicClock.now() < deadline {
                let status: WaitStatus?
                do { status = try Wait.poll(thread.tid) } catch { break }   // nothing (more) to wait for
                if status?.ended == true { break }
                usleep(1000)
            }
        }
        detached = true
    }

    deinit {
        if !detached { detachAll() }
    }
}

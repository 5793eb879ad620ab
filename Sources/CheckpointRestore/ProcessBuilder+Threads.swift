import LinuxKernel
import ProcessState
import CheckpointImage
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Process-wide state, then the threads: each created with its TID, given its
/// per-thread kernel state from inside, then its registers, and let go.
extension ProcessBuilder {
    /// Process-wide state of every kind (``StateKinds``): personality, cwd, umask and
    /// rlimits, signal dispositions, timers.
    mutating func restoreProcessState() throws(StateFailure) {
        for kind in StateKinds.all { try kind.restoreProcessWide(into: &context) }
    }

    /// Creates every thread but the main one with its TID (``ThreadStateKind/createThread(_:in:)``).
    mutating func createThreads() throws(StateFailure) {
        for thread in image.threads.dropFirst() { _ = try ThreadStateKind.createThread(thread, in: &context) }
    }

    /// Per-thread state of every kind: each thread's own kernel state and pending
    /// signals, then the credentials.
    mutating func restoreThreads() throws(StateFailure) {
        for kind in StateKinds.all { try kind.restoreThreads(into: &context) }
    }

    /// Unmaps the scratch area, sets every thread's registers, XSAVE state and signal
    /// mask, and detaches. A thread inside an interrupted system call goes back into it,
    /// as the paper re-runs the wait.
    mutating func resume() throws(StepFailure) {
        try systemCalls { () throws(SystemCallError) in try remote.unmapScratch() }
        for thread in image.threads {
            let tid = traced[thread.tid]!
            let regs: UserRegisters
            do throws(StateFailure) { regs = try ThreadStateKind.resumeRegisters(of: thread) } catch { throw StepFailure(error) }
            try systemCalls { () throws(SystemCallError) in try Ptrace.setRegisters(tid, regs) }
            let fitted: (area: Data, dropped: Bool)
            do throws(RestoreError) { fitted = try image.xsaveArea(of: thread) } catch { throw .failed(error) }
            if fitted.dropped {
                warn("thread \(thread.tid): its protection-key register held Linux's default, and this CPU has no protection keys; it is left out")
            }
            try systemCalls { () throws(SystemCallError) in
                if !fitted.area.isEmpty { try Ptrace.setXstate(tid, Array(fitted.area)) }
                try Ptrace.setSignalMask(tid, thread.signalMask)
            }
        }
        // Let go: other threads first; the main thread last, with SIGSTOP when the process was stopped.
        let stopped = image.threads.first?.state == .stopped
        let others = image.threads.dropFirst().map { traced[$0.tid]! }
        let pid = pid
        try systemCalls { () throws(SystemCallError) in
            for tid in others { try Ptrace.detach(tid) }
            try Ptrace.detach(pid, signal: stopped ? Signal.stop : 0)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
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

    /// Unmaps the scratch area, sets every thread's
    /// registers, XSAVE state and signal mask, and detaches. A thread inside an
    /// interrupted system call goes back into it, as the paper re-runs the wait.
    mutating func resume() throws {
        try remote.unmapScratch()
        for thread in image.threads {
            let tid = traced[thread.tid]!
            let regs = try ThreadStateKind.resumeRegisters(of: thread)
            try Ptrace.setRegisters(tid, regs)
            let (xsave, droppedPKRU) = try image.xsaveArea(of: thread)
            if droppedPKRU {
                warn("thread \(thread.tid): its protection-key register held Linux's default, and this CPU has no protection keys; it is left out")
            }
            if !xsave.isEmpty {
                try kernelCall("ptrace(PTRACE_SETREGSET, NT_X86_XSTATE)",
                               xsave.withUnsafeBytes { cc_ptrace_setregset(tid, cc_NT_X86_XSTATE, $0.baseAddress, $0.count) })
            }
            try kernelCall("ptrace(PTRACE_SETSIGMASK)", cc_ptrace_setsigmask(tid, thread.signalMask))
        }
        // Let go: other threads first; the main thread last, with SIGSTOP when the process was stopped.
        for thread in image.threads.dropFirst() {
            try kernelCall("ptrace(PTRACE_DETACH)", cc_ptrace_detach(traced[thread.tid]!, 0))
        }
        let stopped = image.threads.first?.state == .stopped
        try kernelCall("ptrace(PTRACE_DETACH)", cc_ptrace_detach(pid, stopped ? SIGSTOP : 0))
    }

}

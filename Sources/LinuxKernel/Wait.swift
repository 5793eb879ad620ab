import CCheckpointKernel

/// A status waitpid(2) reported, decoded (the W* macros of sys/wait.h, and the ptrace
/// event in bits 16-23 of a stop: ptrace(2) "PTRACE_EVENT stops").
package struct WaitStatus: Equatable, Sendable {
    /// The raw status word.
    package let raw: Int32

    /// A status word as waitpid stored it.
    package init(raw: Int32) { self.raw = raw }

    /// WIFEXITED: the task ended by exit; ``exitCode`` is its status.
    package var exited: Bool { cc_wifexited(raw) != 0 }
    /// WEXITSTATUS.
    package var exitCode: Int32 { cc_wexitstatus(raw) }
    /// WIFSIGNALED: the task was killed by ``terminatingSignal``.
    package var signaled: Bool { cc_wifsignaled(raw) != 0 }
    /// WTERMSIG.
    package var terminatingSignal: Int32 { cc_wtermsig(raw) }
    /// WIFSTOPPED: the task is in a stop (signal-delivery, group, ptrace event or syscall stop).
    package var stopped: Bool { cc_wifstopped(raw) != 0 }
    /// WSTOPSIG (SIGTRAP | 0x80 for a syscall stop under PTRACE_O_TRACESYSGOOD).
    package var stopSignal: Int32 { cc_wstopsig(raw) }
    /// The PTRACE_EVENT_* of a ptrace event stop, else 0.
    package var ptraceEvent: Int32 { cc_wptrace_event(raw) }
    /// The task is gone (exited or killed).
    package var ended: Bool { exited || signaled }
}

/// The one waitpid of the code base: waitpid(2) again after EINTR, throwing
/// ``SystemCallError`` on any other failure.
package enum Wait {
    /// Blocks until `pid` (a TID under ptrace, or -1: any child) reports; returns who
    /// reported and how.
    package static func next(_ pid: Int32) throws(SystemCallError) -> (pid: Int32, status: WaitStatus) {
        var status: Int32 = 0
        let r = try kernelCall("waitpid(\(pid))", retryingOnInterrupt { cc_waitpid(pid, &status, 0) })
        return (Int32(r), WaitStatus(raw: status))
    }

    /// WNOHANG: the status `pid` has to report now, or nil.
    package static func poll(_ pid: Int32) throws(SystemCallError) -> WaitStatus? {
        var status: Int32 = 0
        let r = try kernelCall("waitpid(\(pid), WNOHANG)", retryingOnInterrupt { cc_waitpid(pid, &status, cc_WNOHANG) })
        return r == 0 ? nil : WaitStatus(raw: status)
    }
}

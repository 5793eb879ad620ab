#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// The one statement of how a thread stopped inside a system call goes back into it
/// (include/linux/errno.h; arch/x86/kernel/signal.c, `handle_signal` and
/// `arch_do_signal_or_restart`). A signal or a ptrace stop that interrupts a call leaves
/// its number in orig_rax and one of four restart codes in rax; the kernel then backs
/// rip onto the `syscall` instruction (2 bytes) and reloads rax. Three users follow it:
/// the capture records the call (``interrupted(origRax:rax:)``), parking writes a frame
/// that resumes as the kernel would (``resumeRegisters(_:)``), and the restore makes the
/// call anew in a new process (``reenter(_:number:)``).
package enum SyscallRestart: Equatable, Sendable {
    /// ERESTARTSYS (-512) or ERESTARTNOINTR (-513): the call is made again.
    case automatic
    /// ERESTARTNOHAND (-514): made again unless a handler ran.
    case noHandler
    /// ERESTART_RESTARTBLOCK (-516): continued through restart_syscall(2).
    case block

    /// The restart code in rax of an interrupted call, or nil for a result.
    package init?(code rax: Int64) {
        switch rax {
        case KernelErrno.restartSys, KernelErrno.restartNoIntr: self = .automatic
        case KernelErrno.restartNoHand: self = .noHandler
        case KernelErrno.restartRestartBlock: self = .block
        default: return nil
        }
    }

    /// What a capture records of a stopped thread: the call it is inside (orig_rax ≥ 0
    /// and a restart code in rax), with how the kernel would restart it; nil otherwise.
    package static func interrupted(origRax: UInt64, rax: UInt64) -> (number: UInt64, restart: SyscallRestart)? {
        let number = Int64(bitPattern: origRax)
        guard number >= 0, let restart = SyscallRestart(code: Int64(bitPattern: rax)) else { return nil }
        return (UInt64(number), restart)
    }

    /// The registers a thread resumed through rt_sigreturn needs to do what resuming
    /// from the stop would (rt_sigreturn does not restart): rip back onto the `syscall`,
    /// rax the call's number — or restart_syscall for ERESTART_RESTARTBLOCK, which
    /// continues the call from the kernel's restart block (decision 0010, point 3).
    package static func resumeRegisters(_ regs: user_regs_struct) -> user_regs_struct {
        var resume = regs
        guard let (number, restart) = interrupted(origRax: regs.orig_rax, rax: regs.rax) else { return regs }
        resume.rax = restart == .block ? UInt64(X86Syscall.restartSyscall) : number
        resume.rip -= 2
        return resume
    }

    /// Sets up a restored thread that was inside call `number` to make it again: rip back
    /// onto the `syscall` instruction, rax the call's number (§5.3 SyscallState). A call the
    /// kernel would have continued with restart_syscall (a relative sleep) is made anew with
    /// its first arguments; restart_syscall itself has nothing to continue in a new process,
    /// so it returns EINTR (decision 0009).
    package static func reenter(_ regs: inout user_regs_struct, number: UInt64) {
        if number == UInt64(X86Syscall.restartSyscall) {
            regs.rax = UInt64(bitPattern: Int64(-EINTR))
        } else {
            regs.rax = number
            regs.rip -= 2
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointImage
import LinuxKernel
import ProcessState
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads one stopped thread's state (§5.3 threads): registers
/// (PTRACE_GETREGS), XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE), signal mask
/// (PTRACE_GETSIGMASK), pending signals (PTRACE_PEEKSIGINFO), robust list
/// (get_robust_list) and, for a thread interrupted in a system call, that
/// call and how the kernel will restart it.
enum ThreadCapture {
    /// Restart codes the kernel leaves in rax when a signal interrupts a syscall (include/linux/errno.h).
    static let restartCodes: [Int64: Ccimg_V1_SyscallRestart] = [-512: .auto, -513: .auto, -514: .nohand, -516: .block]

    static func capture(_ thread: TracedProcess.StoppedThread, pid: Int32, readShared: Bool) throws(SystemCallError) -> Ccimg_V1_ThreadState {
        var state = Ccimg_V1_ThreadState()
        state.tid = thread.tid
        state.name = ((try? ProcFS.read("/proc/\(pid)/task/\(thread.tid)/comm")) ?? "").trimmed("\n")

        var regs = user_regs_struct()
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(thread.tid, &regs))
        state.generalRegisters = withUnsafeBytes(of: regs) { Data($0) }
        state.fsBase = regs.fs_base
        state.gsBase = regs.gs_base

        var xsave = [UInt8](repeating: 0, count: 16384)
        let n = try kernelCall("ptrace(PTRACE_GETREGSET, NT_X86_XSTATE)",
                               xsave.withUnsafeMutableBytes { cc_ptrace_getregset(thread.tid, cc_NT_X86_XSTATE, $0.baseAddress, $0.count) })
        state.xsave = Data(xsave[0..<n])
        if n >= 520 {
            state.xsaveFeatures = (0..<8).reduce(UInt64(0)) { $0 | UInt64(xsave[512 + $1]) << (UInt64($1) * 8) }  // XSTATE_BV
        }

        var mask: UInt64 = 0
        try kernelCall("ptrace(PTRACE_GETSIGMASK)", cc_ptrace_getsigmask(thread.tid, &mask))
        state.signalMask = mask
        state.pendingSignals = try pendingSignals(thread.tid, shared: false)
        if readShared { state.pendingSignals += try pendingSignals(thread.tid, shared: true) }
        if thread.interceptedSignal != 0 {
            var s = Ccimg_V1_SignalInfo()
            s.signo = thread.interceptedSignal
            state.pendingSignals.append(s)
        }

        var head: UInt64 = 0, length: UInt64 = 0
        try kernelCall("get_robust_list", cc_get_robust_list(thread.tid, &head, &length))
        state.robustList = head
        state.robustListLength = length

        // In a syscall: orig_rax holds its number, rax the restart code.
        let origRax = Int64(bitPattern: regs.orig_rax)
        let rax = Int64(bitPattern: regs.rax)
        if thread.groupStopped || thread.procState == "T" {
            state.state = .stopped
        } else if origRax >= 0, restartCodes[rax] != nil {
            state.state = .inSyscall
        } else {
            state.state = .running
        }
        // Inside a syscall (also while stopped): keep the call so the restorer can re-enter it.
        if origRax >= 0, let restart = restartCodes[rax] {
            var call = Ccimg_V1_SyscallState()
            call.number = UInt64(origRax)
            call.args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9]
            call.restart = restart
            call.result = rax
            state.syscall = call
        }
        return state
    }

    /// PTRACE_PEEKSIGINFO, 32 at a time.
    static func pendingSignals(_ tid: Int32, shared: Bool) throws(SystemCallError) -> [Ccimg_V1_SignalInfo] {
        var result: [Ccimg_V1_SignalInfo] = []
        var infos = [siginfo_t](repeating: siginfo_t(), count: 32)
        while result.count < 4096 {
            let n = try kernelCall("ptrace(PTRACE_PEEKSIGINFO)",
                                   infos.withUnsafeMutableBufferPointer { cc_ptrace_peeksiginfo(tid, UInt64(result.count), shared ? 1 : 0, 32, $0.baseAddress) })
            for info in infos.prefix(n) {
                var s = Ccimg_V1_SignalInfo()
                s.signo = info.si_signo
                s.code = info.si_code
                s.siginfo = withUnsafeBytes(of: info) { Data($0) }
                s.shared = shared
                result.append(s)
            }
            if n < 32 { break }
        }
        return result
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// `struct user_regs_struct` of x86-64 (arch/x86/include/asm/user_64.h), as
/// PTRACE_GETREGS and PTRACE_SETREGS move it; the image keeps its 27 words as they are.
package typealias UserRegisters = user_regs_struct

extension user_regs_struct {
    /// Bytes of the struct (27 words).
    package static var size: Int { MemoryLayout<user_regs_struct>.size }

    /// The registers as the image keeps them (§5.3 ThreadState.general_registers).
    package var bytes: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }

    /// Registers from the image's bytes; nil unless they are exactly ``size`` bytes.
    package init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == Self.size else { return nil }
        self.init()
        withUnsafeMutableBytes(of: &self) { out in _ = out.copyBytes(from: bytes) }
    }

    /// The stack pointer of a saved register block (rsp, word 19 of user_regs_struct),
    /// without decoding the rest; 0 when the block is short.
    package static func stackPointer<Bytes: Collection>(of bytes: Bytes) -> UInt64 where Bytes.Element == UInt8, Bytes.Index == Int {
        bytes.count >= 20 * 8 ? bytes.loadLE(UInt64.self, at: bytes.startIndex + 19 * 8) : 0
    }
}

/// The ptrace requests a capture or a restore makes of one stopped thread (ptrace(2)),
/// through the C shim, each throwing ``SystemCallError``. They must come from the thread
/// that seized the process (the kernel answers ESRCH to any other).
package enum Ptrace {
    /// PTRACE_GETREGS.
    package static func registers(_ tid: Int32) throws(SystemCallError) -> UserRegisters {
        Tracer.check(tid, "ptrace(PTRACE_GETREGS)")
        var regs = UserRegisters()
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &regs))
        return regs
    }

    /// PTRACE_SETREGS.
    package static func setRegisters(_ tid: Int32, _ regs: UserRegisters) throws(SystemCallError) {
        Tracer.check(tid, "ptrace(PTRACE_SETREGS)")
        var regs = regs
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
    }

    /// PTRACE_GETREGSET NT_X86_XSTATE: the XSAVE area, in its standard format.
    package static func xstate(_ tid: Int32, capacity: Int = 16384) throws(SystemCallError) -> [UInt8] {
        Tracer.check(tid, "ptrace(PTRACE_GETREGSET)")
        var xsave = [UInt8](repeating: 0, count: capacity)
        let n = try kernelCall("ptrace(PTRACE_GETREGSET, NT_X86_XSTATE)",
                               xsave.withUnsafeMutableBytes { cc_ptrace_getregset(tid, cc_NT_X86_XSTATE, $0.baseAddress, $0.count) })
        xsave.removeSubrange(n...)
        return xsave
    }

    /// PTRACE_SETREGSET NT_X86_XSTATE.
    package static func setXstate(_ tid: Int32, _ area: [UInt8]) throws(SystemCallError) {
        Tracer.check(tid, "ptrace(PTRACE_SETREGSET)")
        try kernelCall("ptrace(PTRACE_SETREGSET, NT_X86_XSTATE)",
                       area.withUnsafeBytes { cc_ptrace_setregset(tid, cc_NT_X86_XSTATE, $0.baseAddress, $0.count) })
    }

    /// PTRACE_GETSIGMASK.
    package static func signalMask(_ tid: Int32) throws(SystemCallError) -> UInt64 {
        Tracer.check(tid, "ptrace(PTRACE_GETSIGMASK)")
        var mask: UInt64 = 0
        try kernelCall("ptrace(PTRACE_GETSIGMASK)", cc_ptrace_getsigmask(tid, &mask))
        return mask
    }

    /// PTRACE_SETSIGMASK.
    package static func setSignalMask(_ tid: Int32, _ mask: UInt64) throws(SystemCallError) {
        Tracer.check(tid, "ptrace(PTRACE_SETSIGMASK)")
        try kernelCall("ptrace(PTRACE_SETSIGMASK)", cc_ptrace_setsigmask(tid, mask))
    }

    /// One pending signal as PTRACE_PEEKSIGINFO gives it: its number, code and the
    /// whole 128-byte siginfo_t.
    package struct PendingSignal: Sendable {
        package var signo: Int32
        package var code: Int32
        package var siginfo: [UInt8]
    }

    /// PTRACE_PEEKSIGINFO, 32 at a time, up to 4096: the thread's own queue, or with
    /// `shared` the process's.
    package static func pendingSignals(_ tid: Int32, shared: Bool) throws(SystemCallError) -> [PendingSignal] {
        Tracer.check(tid, "ptrace(PTRACE_PEEKSIGINFO)")
        var result: [PendingSignal] = []
        var infos = [siginfo_t](repeating: siginfo_t(), count: 32)
        while result.count < 4096 {
            let n = try kernelCall("ptrace(PTRACE_PEEKSIGINFO)",
                                   infos.withUnsafeMutableBufferPointer { cc_ptrace_peeksiginfo(tid, UInt64(result.count), shared ? 1 : 0, 32, $0.baseAddress) })
            for info in infos.prefix(n) {
                result.append(PendingSignal(signo: info.si_signo, code: info.si_code, siginfo: withUnsafeBytes(of: info) { Array($0) }))
            }
            if n < 32 { break }
        }
        return result
    }

    /// get_robust_list(2) of a thread: the list head and its length.
    package static func robustList(_ tid: Int32) throws(SystemCallError) -> (head: UInt64, length: UInt64) {
        var head: UInt64 = 0, length: UInt64 = 0
        try kernelCall("get_robust_list", cc_get_robust_list(tid, &head, &length))
        return (head, length)
    }

    /// PTRACE_DETACH, delivering `signal` (0: none).
    package static func detach(_ tid: Int32, signal: Int32 = 0) throws(SystemCallError) {
        Tracer.check(tid, "ptrace(PTRACE_DETACH)")
        try kernelCall("ptrace(PTRACE_DETACH)", cc_ptrace_detach(tid, signal))
        Tracer.release(tid)
    }
}

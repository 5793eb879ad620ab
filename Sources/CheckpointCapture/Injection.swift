#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import Foundation

/// Runs system calls inside a stopped thread of the target — the Linux form
/// of the paper's injected DLL, for what only the process itself can ask the
/// kernel (its signal handlers, its alternate stack, a userfaultfd of its own).
///
/// The thread executes one `syscall` instruction of the vdso with registers
/// we set (PTRACE_SETREGS, PTRACE_SINGLESTEP), then gets its own registers
/// back; orig_rax is set to -1 so the kernel does not treat the injected call
/// as a syscall to restart. Nothing is written into the process's code.
struct SyscallInjector {
    let pid: Int32
    let tid: Int32
    /// Address of a `syscall` instruction (0f 05) in the vdso.
    let syscallAddress: UInt64
    private var saved = user_regs_struct()
    /// Signals that arrived during injection, to hand back on detach.
    private(set) var interceptedSignals: [Int32] = []

    /// Prepares to inject into `tid`; nil when no vdso `syscall` instruction is found.
    init?(pid: Int32, tid: Int32) {
        self.pid = pid
        self.tid = tid
        guard let maps = try? ProcFS.read("/proc/\(pid)/maps"),
              let vdso = ProcFS.parseMaps(maps).first(where: { $0.path == "[vdso]" }) else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(vdso.end - vdso.start))
        guard bytes.withUnsafeMutableBytes({ cc_process_vm_read(pid, $0.baseAddress, $0.count, vdso.start) }) == bytes.count else { return nil }
        guard let at = zip(bytes, bytes.dropFirst()).enumerated().first(where: { $0.element == (0x0f, 0x05) })?.offset else { return nil }
        syscallAddress = vdso.start + UInt64(at)
    }

    /// Runs `number(args)` in the thread and returns rax (negative errno on failure).
    mutating func call(_ number: Int, _ args: [UInt64] = []) throws(SystemCallError) -> Int64 {
        precondition(args.count <= 6)
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &saved))
        var regs = saved
        let a = args + [UInt64](repeating: 0, count: 6 - args.count)
        regs.rax = UInt64(number)
        regs.orig_rax = UInt64.max          // -1: not in a syscall, nothing to restart
        regs.rdi = a[0]; regs.rsi = a[1]; regs.rdx = a[2]; regs.r10 = a[3]; regs.r8 = a[4]; regs.r9 = a[5]
        regs.rip = syscallAddress
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
        defer { _ = cc_ptrace_setregs(tid, &saved) }
        var result = user_regs_struct()
        while true {
            try kernelCall("ptrace(PTRACE_SINGLESTEP)", cc_ptrace_singlestep(tid, 0))
            var status: Int32 = 0
            var r = cc_waitpid(tid, &status, 0)
            while r == -Int(EINTR) { r = cc_waitpid(tid, &status, 0) }
            try kernelCall("waitpid(\(tid))", r)
            guard cc_wifstopped(status) != 0 else { throw SystemCallError("injected syscall: thread \(tid) exited", errno: ESRCH) }
            try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &result))
            if cc_wstopsig(status) == SIGTRAP && result.rip == syscallAddress + 2 { break }
            if cc_wstopsig(status) != SIGTRAP { interceptedSignals.append(cc_wstopsig(status)) }
            if result.rip != syscallAddress { break }
        }
        return Int64(bitPattern: result.rax)
    }

    /// Ends injection into this thread. PTRACE_SINGLESTEP leaves the thread's
    /// single-step flag set, which only a resume clears; were ccpm to die with
    /// it set, the thread would die of SIGTRAP at its next instruction. So the
    /// thread is resumed (PTRACE_CONT clears the flag) and at once stopped
    /// again (PTRACE_INTERRUPT): it goes back into whatever call it was in,
    /// exactly as after any stop. Its registers are read after this.
    mutating func finish() throws(SystemCallError) {
        try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
        while true {
            var status: Int32 = 0
            let r = cc_waitpid(tid, &status, 0)
            if r == -Int(EINTR) { continue }
            try kernelCall("waitpid(\(tid))", r)
            guard cc_wifstopped(status) != 0 else { throw SystemCallError("waitpid(\(tid)): thread exited", errno: ESRCH) }
            if cc_wptrace_event(status) == cc_PTRACE_EVENT_STOP { return }
            // A signal arrived first: keep it for detach, resume and wait for the interrupt.
            interceptedSignals.append(cc_wstopsig(status))
            try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        }
    }

    /// Writes bytes into the process (process_vm_writev).
    func write(_ bytes: [UInt8], at address: UInt64) throws(SystemCallError) {
        try kernelCall("process_vm_writev", bytes.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, address) })
    }

    /// Reads bytes from the process (process_vm_readv).
    func read(_ count: Int, at address: UInt64) throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try kernelCall("process_vm_readv", bytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, address) })
        return bytes
    }

    /// Runs `body` with a private scratch page mapped in the process (mmap), unmapped after.
    mutating func withScratchPage<R>(_ body: (inout SyscallInjector, UInt64) throws -> R) throws -> R {
        let address = try call(X86Syscall.mmap, [0, 4096, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0])
        guard address > 0 else { throw SystemCallError("mmap (injected)", errno: Int32(-address)) }
        defer { _ = try? call(X86Syscall.munmap, [UInt64(address), 4096]) }
        return try body(&self, UInt64(address))
    }
}

/// x86-64 system call numbers used by injection (arch/x86/entry/syscalls/syscall_64.tbl).
enum X86Syscall {
    static let mmap = 9
    static let munmap = 11
    static let brk = 12
    static let rtSigaction = 13
    static let getitimer = 36
    static let sigaltstack = 131
    static let prctl = 157
    static let timerGettime = 224
    static let userfaultfd = 323
}

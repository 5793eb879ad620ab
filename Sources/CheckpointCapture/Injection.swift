#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Runs system calls inside a stopped thread of the target — the Linux form
/// of the paper's injected DLL, for what only the process itself can ask the
/// kernel (its signal handlers, its alternate stack, a userfaultfd of its own).
///
/// The thread executes one `syscall` instruction of the vdso with registers
/// we set (PTRACE_SETREGS, PTRACE_SINGLESTEP), then gets its own registers
/// back; orig_rax is set to -1 so the kernel does not treat the injected call
/// as a syscall to restart. Nothing is written into the process's code.
package struct SyscallInjector {
    package let pid: Int32
    package let tid: Int32
    /// Address of a `syscall` instruction (0f 05) in the vdso.
    package let syscallAddress: UInt64
    private var saved = user_regs_struct()
    /// Signals that arrived during injection, to hand back on detach.
    package private(set) var interceptedSignals: [Int32] = []
    /// Threads an injected clone created (PTRACE_EVENT_CLONE), as the tracer sees their TIDs.
    package private(set) var createdThreads: [Int32] = []

    /// Prepares to inject into `tid`; nil when no vdso `syscall` instruction is found.
    package init?(pid: Int32, tid: Int32) {
        guard let address = SyscallInjector.vdsoSyscallAddress(pid: pid) else { return nil }
        self.init(pid: pid, tid: tid, syscallAddress: address)
    }

    /// The address of a `syscall` instruction (0f 05) in the vdso of `pid`, if it has one.
    package static func vdsoSyscallAddress(pid: Int32) -> UInt64? {
        guard let maps = try? ProcFS.read("/proc/\(pid)/maps"),
              let vdso = ProcFS.parseMaps(maps).first(where: { $0.path == "[vdso]" }) else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(vdso.end - vdso.start))
        guard bytes.withUnsafeMutableBytes({ cc_process_vm_read(pid, $0.baseAddress, $0.count, vdso.start) }) == bytes.count else { return nil }
        guard let at = zip(bytes, bytes.dropFirst()).enumerated().first(where: { $0.element == (0x0f, 0x05) })?.offset else { return nil }
        return vdso.start + UInt64(at)
    }

    /// Injects into `tid` through the `syscall` instruction at `syscallAddress`.
    package init(pid: Int32, tid: Int32, syscallAddress: UInt64) {
        self.pid = pid
        self.tid = tid
        self.syscallAddress = syscallAddress
    }

    /// Runs `number(args)` in the thread and returns rax (negative errno on failure).
    package mutating func call(_ number: Int, _ args: [UInt64] = []) throws(SystemCallError) -> Int64 {
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
            let event = cc_wptrace_event(status)
            if event != 0 {
                // An event stop inside the call (a thread the call created): note it, step on.
                if event == cc_PTRACE_EVENT_CLONE {
                    var message: UInt = 0
                    try kernelCall("ptrace(PTRACE_GETEVENTMSG)", cc_ptrace_geteventmsg(tid, &message))
                    createdThreads.append(Int32(truncatingIfNeeded: message))
                }
                continue
            }
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
    package mutating func finish() throws(SystemCallError) {
        try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
        interceptedSignals += try SyscallInjector.waitForInterruptStop(tid)
    }

    /// Waits until `tid` is in a PTRACE_EVENT_STOP (after PTRACE_INTERRUPT, or a new
    /// thread's first stop); signals that stop it first are returned, not delivered.
    package static func waitForInterruptStop(_ tid: Int32) throws(SystemCallError) -> [Int32] {
        var signals: [Int32] = []
        while true {
            var status: Int32 = 0
            let r = cc_waitpid(tid, &status, 0)
            if r == -Int(EINTR) { continue }
            try kernelCall("waitpid(\(tid))", r)
            guard cc_wifstopped(status) != 0 else { throw SystemCallError("waitpid(\(tid)): thread exited", errno: ESRCH) }
            if cc_wptrace_event(status) == cc_PTRACE_EVENT_STOP { return signals }
            // A signal arrived first: keep it, resume and wait for the stop.
            signals.append(cc_wstopsig(status))
            try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        }
    }

    /// Writes bytes into the process (process_vm_writev).
    package func write(_ bytes: [UInt8], at address: UInt64) throws(SystemCallError) {
        try kernelCall("process_vm_writev", bytes.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, address) })
    }

    /// Reads bytes from the process (process_vm_readv).
    package func read(_ count: Int, at address: UInt64) throws(SystemCallError) -> [UInt8] {
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
package enum X86Syscall {
    package static let write = 1
    package static let close = 3
    package static let lseek = 8
    package static let mmap = 9
    package static let mprotect = 10
    package static let munmap = 11
    package static let brk = 12
    package static let rtSigaction = 13
    package static let ioctl = 16
    package static let mremap = 25
    package static let getitimer = 36
    package static let setitimer = 38
    package static let fcntl = 72
    package static let chdir = 80
    package static let umask = 95
    package static let setgroups = 116
    package static let setresuid = 117
    package static let setresgid = 119
    package static let rtSigqueueinfo = 129
    package static let sigaltstack = 131
    package static let personality = 135
    package static let prctl = 157
    package static let setTidAddress = 218
    package static let timerCreate = 222
    package static let timerSettime = 223
    package static let timerGettime = 224
    package static let epollCtl = 233
    package static let inotifyAddWatch = 254
    package static let openat = 257
    package static let setRobustList = 273
    package static let timerfdCreate = 283
    package static let timerfdSettime = 286
    package static let signalfd4 = 289
    package static let eventfd2 = 290
    package static let epollCreate1 = 291
    package static let dup3 = 292
    package static let pipe2 = 293
    package static let inotifyInit1 = 294
    package static let rtTgsigqueueinfo = 297
    package static let memfdCreate = 319
    package static let userfaultfd = 323
    package static let clone3 = 435
}

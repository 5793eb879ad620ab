#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointImage

/// Runs system calls inside a stopped thread of the target — the Linux form
/// of the paper's injected DLL, for what only the process itself can ask the
/// kernel (its signal handlers, its alternate stack, a userfaultfd of its own).
///
/// The thread executes one `syscall` instruction of the vdso with registers
/// we set (PTRACE_SETREGS, PTRACE_SINGLESTEP), then gets its own registers
/// back; orig_rax is set to -1 so the kernel does not treat the injected call
/// as a syscall to restart. Nothing is written into the process's code.
///
/// A thread left in that state when ccpm dies (kill -9) would die too: it would
/// run on from the vdso with our registers, or take the SIGTRAP of a single-step
/// stop. So a capture *parks* each thread first (``park(stub:frame:)``): from
/// then on every call runs a stub in a page of its own — the call, then
/// rt_sigreturn from a frame holding the thread's own registers and signal mask —
/// with syscall stops (PTRACE_SYSCALL, TRACESYSGOOD) instead of single steps.
/// Whenever ccpm disappears, the thread finishes at most the call in flight and
/// returns to exactly where it was, re-entering the system call it was in, as
/// CRIU's parasite does when its controller goes away.
package struct SyscallInjector {
    package let pid: Int32
    package let tid: Int32
    /// Address of a `syscall` instruction (0f 05) in the vdso.
    package let syscallAddress: UInt64
    private var saved = user_regs_struct()
    /// While the thread is parked: its own registers, and where its stub and frame are.
    private var parking: (original: user_regs_struct, stub: UInt64, frame: UInt64)? = nil
    /// Signals that arrived during injection, to hand back on detach.
    package private(set) var interceptedSignals: [Int32] = []
    /// Threads an injected clone created (PTRACE_EVENT_CLONE), as the tracer sees their TIDs.
    package private(set) var createdThreads: [Int32] = []

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
        if parking != nil { return try parkedCall(number, args) }
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &saved))
        var regs = saved
        SyscallInjector.load(&regs, number, args)
        regs.rip = syscallAddress
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
        defer { _ = cc_ptrace_setregs(tid, &saved) }
        var result = user_regs_struct()
        while true {
            try kernelCall("ptrace(PTRACE_SINGLESTEP)", cc_ptrace_singlestep(tid, 0))
            let status = try waitForStop()
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

    /// Puts a call's number and arguments in the x86-64 syscall registers; orig_rax is -1
    /// so the kernel does not treat it as a system call to restart.
    private static func load(_ regs: inout user_regs_struct, _ number: Int, _ args: [UInt64]) {
        let a = args + [UInt64](repeating: 0, count: 6 - args.count)
        regs.rax = UInt64(number)
        regs.orig_rax = UInt64.max
        regs.rdi = a[0]; regs.rsi = a[1]; regs.rdx = a[2]; regs.r10 = a[3]; regs.r8 = a[4]; regs.r9 = a[5]
    }

    /// The next stop of the thread (waitpid); its exit is an error.
    private func waitForStop() throws(SystemCallError) -> Int32 {
        var status: Int32 = 0
        var r = cc_waitpid(tid, &status, 0)
        while r == -Int(EINTR) { r = cc_waitpid(tid, &status, 0) }
        try kernelCall("waitpid(\(tid))", r)
        guard cc_wifstopped(status) != 0 else { throw SystemCallError("injected syscall: thread \(tid) exited", errno: ESRCH) }
        return status
    }

    // MARK: Parking

    /// The stub a parked thread runs (x86-64): `syscall` (the injected call), then
    /// `mov $15, %eax; syscall` (rt_sigreturn), then `ud2`, never reached.
    package static let parkingStub: [UInt8] = [0x0f, 0x05, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x0b]
    /// Bytes of one parking frame, at a 64-byte-aligned address.
    package static let parkingFrameBytes = 1024

    /// Parks the thread: writes an rt_sigframe at `frame` (in a page mapped by an
    /// earlier call, whose first bytes are ``parkingStub`` at `stub`) that brings back
    /// its registers, signal mask and x87/SSE state; from then on every call runs from
    /// the stub. The frame follows the kernel's x86-64 layout (arch/x86/include/asm/sigframe.h,
    /// uapi sigcontext.h): return address, ucontext, siginfo, then the FXSAVE area.
    package mutating func park(stub: UInt64, frame: UInt64) throws(SystemCallError) {
        precondition(parking == nil && frame % 64 == 0)
        var regs = user_regs_struct()
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &regs))
        var mask: UInt64 = 0
        try kernelCall("ptrace(PTRACE_GETSIGMASK)", cc_ptrace_getsigmask(tid, &mask))
        var xstate = [UInt8](repeating: 0, count: 4096)
        let n = try kernelCall("ptrace(PTRACE_GETREGSET, NT_X86_XSTATE)",
                               xstate.withUnsafeMutableBytes { cc_ptrace_getregset(tid, cc_NT_X86_XSTATE, $0.baseAddress, $0.count) })
        guard n >= 512 else { throw SystemCallError("ptrace(PTRACE_GETREGSET, NT_X86_XSTATE): short", errno: EIO) }
        // Resuming from the frame must do what resuming from the stop would: re-enter an
        // interrupted system call (the kernel's restart, which rt_sigreturn does not do).
        var resume = regs
        if Int64(bitPattern: regs.orig_rax) >= 0 {
            switch Int64(bitPattern: regs.rax) {
            case -512, -513, -514: resume.rax = regs.orig_rax; resume.rip -= 2          // ERESTARTSYS, NOINTR, NOHAND
            case -516: resume.rax = UInt64(X86Syscall.restartSyscall); resume.rip -= 2  // ERESTART_RESTARTBLOCK
            default: break
            }
        }
        var bytes = [UInt8](repeating: 0, count: SyscallInjector.parkingFrameBytes)
        func put(_ value: UInt64, at offset: Int) {
            for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        let uc = 8                   // after the return address
        put(0, at: uc)               // uc_flags
        put(0, at: uc + 8)           // uc_link
        put(0, at: uc + 16)          // uc_stack.ss_sp
        put(3, at: uc + 24)          // uc_stack.ss_flags: invalid, so the alternate stack is left as it is
        put(0, at: uc + 32)          // uc_stack.ss_size
        let sc = uc + 40             // struct sigcontext
        for (i, value) in [resume.r8, resume.r9, resume.r10, resume.r11, resume.r12, resume.r13, resume.r14, resume.r15,
                           resume.rdi, resume.rsi, resume.rbp, resume.rbx, resume.rdx, resume.rax, resume.rcx, resume.rsp,
                           resume.rip, resume.eflags].enumerated() {
            put(value, at: sc + 8 * i)
        }
        put(resume.cs | (resume.ss << 48), at: sc + 144)    // cs, gs, fs, ss (16 bits each)
        let fpstate = 448            // 64-byte aligned, after ucontext (304 bytes) and siginfo (128)
        put(frame + UInt64(fpstate), at: sc + 184)
        put(mask, at: uc + 296)      // uc_sigmask
        // The FXSAVE area; its software-reserved bytes zeroed, so the kernel restores it as
        // a plain FXSAVE image (x87, SSE, MXCSR) without the extended state.
        bytes.replaceSubrange(fpstate..<(fpstate + 512), with: xstate[0..<512])
        for i in (fpstate + 464)..<(fpstate + 512) { bytes[i] = 0 }
        try writeForced(bytes, at: frame)
        parking = (regs, stub, frame)
    }

    /// Brings a parked thread back to an interrupt stop like the one the seize left it
    /// in. The interrupt is asked for first, so that from the moment it has its own
    /// registers again it can only run on through the signal path — where the kernel
    /// restarts the system call it was interrupted in — even if ccpm dies right there.
    package mutating func unpark() throws(SystemCallError) {
        guard let park = parking else { return }
        parking = nil
        try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
        var regs = park.original
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
        try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        interceptedSignals += try SyscallInjector.waitForInterruptStop(tid)
    }

    /// A call from the parking stub: syscall-entry and syscall-exit stops, after which the
    /// thread sits at the stub's rt_sigreturn with its frame on the stack pointer.
    private mutating func parkedCall(_ number: Int, _ args: [UInt64]) throws(SystemCallError) -> Int64 {
        let park = parking!
        var regs = park.original
        SyscallInjector.load(&regs, number, args)
        regs.rip = park.stub
        regs.rsp = park.frame + 8    // rt_sigreturn finds its frame at rsp - 8
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
        var syscallStops = 0
        while syscallStops < 2 {
            try kernelCall("ptrace(PTRACE_SYSCALL)", cc_ptrace_syscall(tid, 0))
            let status = try waitForStop()
            let signal = cc_wstopsig(status)
            if signal == SIGTRAP | 0x80 {
                syscallStops += 1
            } else if cc_wptrace_event(status) == 0 && signal != SIGTRAP {
                interceptedSignals.append(signal)    // kept for the detach, not delivered now
            }
        }
        var result = user_regs_struct()
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &result))
        SyscallInjector.parkedCalls += 1
        if SyscallInjector.parkedCalls == SyscallInjector.stopAfterParkedCall { raise(SIGSTOP) }
        return Int64(bitPattern: result.rax)
    }

    /// Fault injection for tests, as CRIU's CRIU_FAULT: with CCPM_FAULT=stop-parked:N,
    /// ccpm stops itself (SIGSTOP) after its N-th parked call, for a test to kill it there.
    private static let stopAfterParkedCall: Int? = Host.environment("CCPM_FAULT").flatMap { fault in
        fault.hasPrefix("stop-parked:") ? Int(fault.dropFirst("stop-parked:".count)) : nil
    }
    nonisolated(unsafe) private static var parkedCalls = 0

    /// Writes into the process through /proc/PID/mem, which may write pages the
    /// process cannot (the parking page is read and execute only).
    package func writeForced(_ bytes: [UInt8], at address: UInt64) throws(SystemCallError) {
        let fd = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open(/proc/\(pid)/mem)", errno: errno) }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(Int64(bitPattern: address))) }
        guard n == bytes.count else { throw SystemCallError("pwrite(/proc/\(pid)/mem)", errno: n < 0 ? errno : EIO) }
    }

    /// Ends injection into this thread. PTRACE_SINGLESTEP leaves the thread's
    /// single-step flag set, which only a resume clears; were ccpm to die with
    /// it set, the thread would die of SIGTRAP at its next instruction. So the
    /// thread is resumed (PTRACE_CONT clears the flag) with an interrupt already
    /// asked for (PTRACE_INTERRUPT first): it stops again in the signal path,
    /// before a single instruction of its own — going back into whatever call it
    /// was in, exactly as after any stop — so the memory a capture read before
    /// injection is still what the thread sees. A parked thread is unparked
    /// instead (``unpark()``).
    package mutating func finish() throws(SystemCallError) {
        if parking != nil { return try unpark() }
        try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
        try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
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

    /// Maps a parking page (stub and one frame per thread, read and execute only) and a
    /// data page for results, parks this thread, and runs `body` with the data page's
    /// address and the parking page's (for other threads' ``park(stub:frame:)``: frame
    /// *k* is at stub + 64 + k × ``parkingFrameBytes``). Both pages are unmapped after.
    /// Only the first mmap and the last munmap run unparked.
    mutating func withScratchPage<R>(threads: Int, _ body: (inout SyscallInjector, _ data: UInt64, _ parking: UInt64) throws -> R) throws -> R {
        let parkingBytes = (64 + max(1, threads) * SyscallInjector.parkingFrameBytes + 4095) / 4096 * 4096
        let code = try call(X86Syscall.mmap, [0, UInt64(parkingBytes), UInt64(PROT_READ | PROT_EXEC), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0])
        guard code > 0 else { throw SystemCallError("mmap (injected)", errno: Int32(-code)) }
        defer {
            try? unpark()
            _ = try? call(X86Syscall.munmap, [UInt64(code), UInt64(parkingBytes)])
        }
        try writeForced(SyscallInjector.parkingStub, at: UInt64(code))
        try park(stub: UInt64(code), frame: UInt64(code) + 64)
        let data = try call(X86Syscall.mmap, [0, 4096, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0])
        guard data > 0 else { throw SystemCallError("mmap (injected)", errno: Int32(-data)) }
        defer { _ = try? call(X86Syscall.munmap, [UInt64(data), 4096]) }
        return try body(&self, UInt64(data), UInt64(code))
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
    package static let restartSyscall = 219
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

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import Synchronization

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
/// stop. So a capture *parks* each thread first (``park(gadgets:frame:reserve:)``):
/// from then on every call runs at a `syscall; ret` with the stack pointer at a
/// frame holding the thread's own registers, signal mask and XSAVE state, whose
/// return address is a signal-return trampoline — on the thread's own stack, with
/// gadgets of the process's own code (decision 0014), or in a page of its own —
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
    /// While the thread is parked: its own registers, where its calls run and its frame
    /// is, and — for a frame on its own stack — the bytes the frame covered there.
    private var parking: (original: user_regs_struct, gadgets: ParkingGadgets, frame: UInt64, covered: (at: UInt64, bytes: [UInt8])?)? = nil
    /// Signals that arrived during injection, to hand back on detach.
    package private(set) var interceptedSignals: [Int32] = []
    /// Threads an injected clone created (PTRACE_EVENT_CLONE), as the tracer sees their TIDs.
    package private(set) var createdThreads: [Int32] = []

    /// The address of a `syscall` instruction (0f 05) in the vdso of `pid`, if it has one.
    package static func vdsoSyscallAddress(pid: Int32) -> UInt64? {
        guard let maps = try? ProcFS.read("/proc/\(pid)/maps") else { return nil }
        return vdsoSyscallAddress(pid: pid, maps: ProcFS.parseMaps(maps))
    }

    /// The same, from the process's memory map already read.
    package static func vdsoSyscallAddress(pid: Int32, maps: [ProcFS.MapsEntry]) -> UInt64? {
        guard let vdso = maps.first(where: { $0.path == "[vdso]" }) else { return nil }
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
        Tracer.check(tid, "injected system call")
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
            let event = status.ptraceEvent
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
            if status.stopSignal == SIGTRAP && result.rip == syscallAddress + 2 { break }
            if status.stopSignal != SIGTRAP { interceptedSignals.append(status.stopSignal) }
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
    private func waitForStop() throws(SystemCallError) -> WaitStatus {
        let status = try Wait.next(tid).status
        guard status.stopped else { throw SystemCallError("injected syscall: thread \(tid) exited", errno: ESRCH) }
        return status
    }

    // MARK: Parking

    /// The stub of a parking page (x86-64): `syscall; ret` (the injected call, then a
    /// return through the frame's first word), then at +3 `mov $15, %eax; syscall`
    /// (rt_sigreturn), then `ud2`, never reached.
    package static let parkingStub: [UInt8] = [0x0f, 0x05, 0xc3, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x0b]
    /// Bytes of one parking frame, at a 64-byte-aligned address.
    package static let parkingFrameBytes = 4096
    /// Bytes kept free below a thread's stack pointer (the x86-64 ABI's red zone, which a
    /// function may use without moving the stack pointer).
    package static let redZone: UInt64 = 128

    /// Parks the thread: writes an rt_sigframe that brings back its registers, signal mask
    /// and XSAVE state, and from then on runs every call at `gadgets.syscallReturn` with
    /// the stack pointer at the frame, whose first word (the return address) is
    /// `gadgets.restorer`. The frame is at `frame` (a parking page mapped by an earlier
    /// call), or with nil on the thread's own stack, below its red zone, where the bytes
    /// it covers are kept and put back on ``unpark()``. The frame follows the kernel's
    /// x86-64 layout (arch/x86/include/asm/sigframe.h, uapi sigcontext.h): return address,
    /// ucontext, siginfo, then the XSAVE area. On the stack, `reserve` bytes more are kept
    /// free below the frame (see ``parkedFrame``), and put back with it.
    package mutating func park(gadgets: ParkingGadgets, frame given: UInt64?, reserve: Int = 0) throws(SystemCallError) {
        precondition(parking == nil && (given ?? 0) % 64 == 0)
        let regs = try Ptrace.registers(tid)
        let mask = try Ptrace.signalMask(tid)
        let xstate = try Ptrace.xstate(tid, capacity: 4096)
        guard xstate.count >= XSaveHeader.legacySize else { throw SystemCallError("ptrace(PTRACE_GETREGSET, NT_X86_XSTATE): short", errno: EIO) }
        // The thread's whole XSAVE state goes in the frame, as the kernel writes it into a
        // signal frame: ptrace gives it in the same (standard) format, with the same
        // software-reserved bytes at 464 (FP_XSTATE_MAGIC1, extended size, features, XSAVE
        // size); the frame adds FP_XSTATE_MAGIC2 after it (uapi sigcontext.h). rt_sigreturn
        // then restores AVX and AVX-512 registers too, which a thread may be using wherever it
        // was stopped (a frame of FXSAVE only lost their upper halves: a libc routine stopped
        // midway went on with wrong data; decision 0014). If the state does not fit or does
        // not look like that, only the FXSAVE part goes in, its software-reserved bytes zeroed.
        let fp = SignalFrame.fpState(of: xstate, capacity: SyscallInjector.parkingFrameBytes)
        // On the stack, only as many bytes as the frame needs.
        let frameBytes = given != nil ? SyscallInjector.parkingFrameBytes : SignalFrame.size(for: fp)
        let frame = given ?? SyscallInjector.stackFrame(below: regs.rsp, bytes: frameBytes)
        // Resuming from the frame must do what resuming from the stop would: re-enter an
        // interrupted system call (the kernel's restart, which rt_sigreturn does not do).
        let bytes = SignalFrame.encode(registers: SyscallRestart.resumeRegisters(regs), mask: mask, xstate: xstate, fp: fp,
                                       restorer: gadgets.restorer, address: frame, bytes: frameBytes)
        let covered = given == nil ? (frame - UInt64(reserve), try read(reserve + bytes.count, at: frame - UInt64(reserve))) : nil
        try writeForced(bytes, at: frame)
        parking = (regs, gadgets, frame, covered)
    }

    /// The parked thread's frame (below it, on its stack, the `reserve` bytes of ``park``).
    package var parkedFrame: UInt64? { parking?.frame }

    /// Where a frame of `bytes` goes on a thread's own stack: below its red zone, 64-byte aligned.
    package static func stackFrame(below sp: UInt64, bytes: Int = parkingFrameBytes) -> UInt64 {
        (sp - redZone - UInt64(bytes)) & ~63
    }

    /// Brings a parked thread back to an interrupt stop like the one the seize left it
    /// in. The interrupt is asked for first, so that from the moment it has its own
    /// registers again it can only run on through the signal path — where the kernel
    /// restarts the system call it was interrupted in — even if ccpm dies right there.
    package mutating func unpark() throws(SystemCallError) {
        guard let park = parking else { return }
        Tracer.check(tid, "unpark")
        parking = nil
        try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
        var regs = park.original
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
        try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        interceptedSignals += try SyscallInjector.waitForInterruptStop(tid)
        // Below the red zone the bytes are free by the ABI; they are put back all the same.
        if let covered = park.covered { try write(covered.bytes, at: covered.at) }
    }

    /// A parked call: syscall-entry and syscall-exit stops, after which the thread sits at
    /// the gadget's `ret`, which would take it to rt_sigreturn and its frame.
    private mutating func parkedCall(_ number: Int, _ args: [UInt64]) throws(SystemCallError) -> Int64 {
        let park = parking!
        var regs = park.original
        SyscallInjector.load(&regs, number, args)
        regs.rip = park.gadgets.syscallReturn
        regs.rsp = park.frame        // `ret` pops the restorer; rt_sigreturn finds its frame at rsp - 8
        try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
        var syscallStops = 0
        while syscallStops < 2 {
            try kernelCall("ptrace(PTRACE_SYSCALL)", cc_ptrace_syscall(tid, 0))
            let status = try waitForStop()
            let signal = status.stopSignal
            if signal == SIGTRAP | 0x80 {
                syscallStops += 1
            } else if status.ptraceEvent == 0 && signal != SIGTRAP {
                interceptedSignals.append(signal)    // kept for the detach, not delivered now
            }
        }
        var result = user_regs_struct()
        try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(tid, &result))
        let count = SyscallInjector.parkedCalls.withLock { count in
            count += 1
            return count
        }
        if count == SyscallInjector.stopAfterParkedCall { raise(SIGSTOP) }
        return Int64(bitPattern: result.rax)
    }

    /// Fault injection for tests, as CRIU's CRIU_FAULT: with CCPM_FAULT=stop-parked:N,
    /// ccpm stops itself (SIGSTOP) after its N-th parked call, for a test to kill it there.
    private static let stopAfterParkedCall: Int? = Host.environment("CCPM_FAULT").flatMap { fault in
        fault.hasPrefix("stop-parked:") ? Int(fault.dropFirst("stop-parked:".count)) : nil
    }
    /// Parked calls made so far by this ccpm, on any thread (for ``stopAfterParkedCall``).
    private static let parkedCalls = Mutex(0)

    /// Writes into the process through /proc/PID/mem, which may write pages the
    /// process cannot (the parking page is read and execute only).
    package func writeForced(_ bytes: [UInt8], at address: UInt64) throws(SystemCallError) {
        let fd = Int32(try libcCall("open(/proc/\(pid)/mem)", Int(open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC))))
        defer { close(fd) }
        let n = try libcCall("pwrite(/proc/\(pid)/mem)", retryingOnInterrupt {
            bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(Int64(bitPattern: address))) }
        })
        guard n == bytes.count else { throw SystemCallError("pwrite(/proc/\(pid)/mem): short", errno: EIO) }
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
        Tracer.check(tid, "ptrace(PTRACE_INTERRUPT)")
        try kernelCall("ptrace(PTRACE_INTERRUPT)", cc_ptrace_interrupt(tid))
        try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(tid, 0))
        interceptedSignals += try SyscallInjector.waitForInterruptStop(tid)
    }

    /// Waits until `tid` is in a PTRACE_EVENT_STOP (after PTRACE_INTERRUPT, or a new
    /// thread's first stop); signals that stop it first are returned, not delivered.
    package static func waitForInterruptStop(_ tid: Int32) throws(SystemCallError) -> [Int32] {
        Tracer.check(tid, "waitpid of a traced task")
        var signals: [Int32] = []
        while true {
            let status = try Wait.next(tid).status
            guard status.stopped else { throw SystemCallError("waitpid(\(tid)): thread exited", errno: ESRCH) }
            if status.ptraceEvent == cc_PTRACE_EVENT_STOP { return signals }
            // A signal arrived first: keep it, resume and wait for the stop.
            signals.append(status.stopSignal)
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

    /// Bytes of the data area parked calls get for their results.
    package static let dataBytes = 512
    /// Bytes of the data page mapped when the threads park in a parking page.
    package static let dataPageBytes = 4096
    /// For tests: CCPM_PARKING=page makes captures use the parking page even where the
    /// threads' stacks would do.
    package static let parkOnStacks = Host.environment("CCPM_PARKING") != "page"

    /// Parks this thread (the first of `threads`, the threads that take calls) and runs
    /// `body` with the data area for results (to allocate in through ``RemoteCalls``,
    /// decision 0020) and a function that parks the other threads by their index in
    /// `threads`; unparks this thread after, and unmaps what it mapped, on every path
    /// (the others are the caller's to unpark, before `body` returns or throws).
    ///
    /// Where the process's own code has the gadgets (``ParkingGadgets/find(pid:maps:)``)
    /// and every thread's stack has room below its red zone, each frame goes on its
    /// thread's stack and the data area below the first one: no call ever runs unparked,
    /// so a kill -9 of ccpm at any moment leaves every thread able to return where it was.
    /// Otherwise a parking page (stub and one frame per thread, read and execute only) and
    /// a data page are mapped, the first by an ordinary call, and unmapped after, the last
    /// by an ordinary call (decision 0010): two short windows where a kill -9 of ccpm
    /// would leave the thread with the call's registers.
    package mutating func withParking<R>(threads: [TracedProcess.StoppedThread], maps: [ProcFS.MapsEntry],
                                 _ body: (inout SyscallInjector, _ data: ScratchArea,
                                          _ parkOther: (inout SyscallInjector, Int) throws(SystemCallError) -> Void) throws(SystemCallError) -> R) throws(SystemCallError) -> R {
        if SyscallInjector.parkOnStacks, let gadgets = ParkingGadgets.find(pid: pid, maps: maps),
           try SyscallInjector.stacksHaveRoom(threads, maps: maps, first: tid) {
            try park(gadgets: gadgets, frame: nil, reserve: SyscallInjector.dataBytes)
            defer { try? unpark() }
            let data = ScratchArea(address: parkedFrame! - UInt64(SyscallInjector.dataBytes), size: UInt64(SyscallInjector.dataBytes))
            return try body(&self, data) { other, _ throws(SystemCallError) in
                try other.park(gadgets: gadgets, frame: nil)
            }
        }
        let parkingBytes = (64 + max(1, threads.count) * SyscallInjector.parkingFrameBytes + 4095) / 4096 * 4096
        let code = try call(X86Syscall.mmap, [0, UInt64(parkingBytes), UInt64(PROT_READ | PROT_EXEC), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0])
        guard code > 0 else { throw SystemCallError("mmap (injected)", errno: Int32(-code)) }
        defer {
            try? unpark()
            _ = try? call(X86Syscall.munmap, [UInt64(code), UInt64(parkingBytes)])
        }
        try writeForced(SyscallInjector.parkingStub, at: UInt64(code))
        let gadgets = ParkingGadgets(syscallReturn: UInt64(code), restorer: UInt64(code) + 3)
        try park(gadgets: gadgets, frame: UInt64(code) + 64)
        let dataPage = UInt64(SyscallInjector.dataPageBytes)
        let data = try call(X86Syscall.mmap, [0, dataPage, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0])
        guard data > 0 else { throw SystemCallError("mmap (injected)", errno: Int32(-data)) }
        defer { _ = try? call(X86Syscall.munmap, [UInt64(data), dataPage]) }
        return try body(&self, ScratchArea(address: UInt64(data), size: dataPage)) { other, k throws(SystemCallError) in
            try other.park(gadgets: gadgets, frame: UInt64(code) + 64 + UInt64(k * SyscallInjector.parkingFrameBytes))
        }
    }

    /// Whether every thread's stack pointer lies in a writable mapping with room below it
    /// for the red zone and a frame (and the data area, below the `first` thread's frame).
    package static func stacksHaveRoom(_ threads: [TracedProcess.StoppedThread], maps: [ProcFS.MapsEntry], first: Int32) throws(SystemCallError) -> Bool {
        for thread in threads {
            var regs = user_regs_struct()
            try kernelCall("ptrace(PTRACE_GETREGS)", cc_ptrace_getregs(thread.tid, &regs))
            guard regs.rsp > redZone + UInt64(parkingFrameBytes + dataBytes) + 64 else { return false }
            let low = stackFrame(below: regs.rsp) - (thread.tid == first ? UInt64(dataBytes) : 0)
            guard maps.contains(where: { $0.write && $0.start <= low && regs.rsp <= $0.end }) else { return false }
        }
        return true
    }
}


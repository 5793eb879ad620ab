#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CheckpointImage
import LinuxKernel

/// Each thread's own state (spec/image-format.md §5.3 threads), captured and restored.
///
/// Capture, from outside: registers (PTRACE_GETREGS), XSAVE area (PTRACE_GETREGSET
/// NT_X86_XSTATE), signal mask (PTRACE_GETSIGMASK), pending signals
/// (PTRACE_PEEKSIGINFO), robust list (get_robust_list) and, for a thread interrupted in
/// a system call, that call and how the kernel will restart it (``SyscallRestart``);
/// from inside each thread: its alternate stack (sigaltstack) and clear-child-tid
/// address (prctl PR_GET_TID_ADDRESS).
///
/// Restore, from inside each thread: set_tid_address, set_robust_list, sigaltstack, its
/// name (prctl PR_SET_NAME), then the pending signals (rt_sigqueueinfo,
/// rt_tgsigqueueinfo, tgkill). Creating the threads (clone3 set_tid) and setting their
/// registers are restore steps of their own (``createThread(_:in:)``, ``resumeRegisters(of:)``).
package enum ThreadStateKind: StateKind {
    package static let name = "thread state"
    package static let sections: [SectionKind] = [.threads]

    /// The image's restart class of a call interrupted with `restart` (§5.3 SyscallRestart).
    package static func imageRestart(_ restart: SyscallRestart) -> Ccimg_V1_SyscallRestart {
        switch restart {
        case .automatic: .auto
        case .noHandler: .nohand
        case .block: .block
        }
    }

    // MARK: Capture

    package static func captureStopped(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure) {
        do throws(SystemCallError) {
            for thread in target.threads {
                records.threads.threads.append(try capture(thread, pid: target.pid, readShared: thread.tid == target.pid))
            }
        } catch {
            throw .system(error)
        }
    }

    /// One stopped thread's state, read from outside.
    package static func capture(_ thread: TracedProcess.StoppedThread, pid: Int32, readShared: Bool) throws(SystemCallError) -> Ccimg_V1_ThreadState {
        var state = Ccimg_V1_ThreadState()
        state.tid = thread.tid
        state.name = ((try? ProcFS.read("/proc/\(pid)/task/\(thread.tid)/comm")) ?? "").trimmed("\n")

        let regs = try Ptrace.registers(thread.tid)
        state.generalRegisters = Data(regs.bytes)
        state.fsBase = regs.fs_base
        state.gsBase = regs.gs_base

        let xsave = try Ptrace.xstate(thread.tid)
        state.xsave = Data(xsave)
        if let header = XSaveHeader(area: xsave) { state.xsaveFeatures = header.xstateBV }

        state.signalMask = try Ptrace.signalMask(thread.tid)
        state.pendingSignals = try pendingSignals(thread.tid, shared: false)
        if readShared { state.pendingSignals += try pendingSignals(thread.tid, shared: true) }
        if thread.interceptedSignal != 0 {
            var s = Ccimg_V1_SignalInfo()
            s.signo = thread.interceptedSignal
            state.pendingSignals.append(s)
        }

        let robust = try Ptrace.robustList(thread.tid)
        state.robustList = robust.head
        state.robustListLength = robust.length

        // Inside a syscall (also while stopped): keep the call so the restorer can re-enter it.
        let interrupted = SyscallRestart.interrupted(origRax: regs.orig_rax, rax: regs.rax)
        if thread.groupStopped || thread.procState == "T" {
            state.state = .stopped
        } else if interrupted != nil {
            state.state = .inSyscall
        } else {
            state.state = .running
        }
        if let (number, restart) = interrupted {
            var call = Ccimg_V1_SyscallState()
            call.number = number
            call.args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9]
            call.restart = imageRestart(restart)
            call.result = Int64(bitPattern: regs.rax)
            state.syscall = call
        }
        return state
    }

    /// The thread's (or with `shared` the process's) queued signals, as the image keeps them.
    static func pendingSignals(_ tid: Int32, shared: Bool) throws(SystemCallError) -> [Ccimg_V1_SignalInfo] {
        try Ptrace.pendingSignals(tid, shared: shared).map { pending in
            var s = Ccimg_V1_SignalInfo()
            s.signo = pending.signo
            s.code = pending.code
            s.siginfo = Data(pending.siginfo)
            s.shared = shared
            return s
        }
    }

    /// sigaltstack(NULL, &old) and prctl(PR_GET_TID_ADDRESS) in the thread itself, each
    /// result in an allocation of the data area.
    package static func captureInThread(_ remote: inout RemoteCalls, into records: inout CapturedRecords) throws(SystemCallError) {
        let tid = remote.defaultThread
        guard let index = records.threads.threads.firstIndex(where: { $0.tid == tid }) else { return }
        try remote.withScratch { remote throws(SystemCallError) in
            let old = try remote.reserve(SignalStack.size)
            guard try remote.rawCall(X86Syscall.sigaltstack, [0, old]) == 0 else { return }
            let stack = SignalStack(parsing: try remote.get(SignalStack.size, at: old))
            if stack.sp != 0 || stack.size != 0 {
                var alt = Ccimg_V1_AltStack()
                alt.sp = stack.sp
                alt.flags = stack.flags
                alt.size = stack.size
                records.threads.threads[index].altStack = alt
            }
        }
        try remote.withScratch { remote throws(SystemCallError) in
            let address = try remote.reserve(8)
            guard try remote.rawCall(X86Syscall.prctl, [UInt64(Linux.PR_GET_TID_ADDRESS), address]) == 0 else { return }
            records.threads.threads[index].tidAddress = try remote.get(8, at: address).loadLE(UInt64.self, at: 0)
        }
    }

    // MARK: Restore

    package static func restoreThreads(into context: inout RestoreContext) throws(StateFailure) {
        do throws(SystemCallError) {
            try restoreOwnState(into: &context)
            try queuePendingSignals(into: &context)
        } catch {
            throw .system(error)
        }
    }

    /// Per-thread kernel state, set from inside each thread: clear-tid address, robust
    /// list, alternate stack, name. Nothing is delivered while the thread runs injected calls.
    static func restoreOwnState(into context: inout RestoreContext) throws(SystemCallError) {
        let blockAll = ~UInt64(0) & ~(1 << UInt64(Signal.kill - 1)) & ~(1 << UInt64(Signal.stop - 1))
        for thread in context.threads {
            let tid = context.traced[thread.tid]!
            try Ptrace.setSignalMask(tid, blockAll)
            try context.remote.call("set_tid_address", X86Syscall.setTidAddress, [thread.tidAddress], in: tid)
            if thread.robustList != 0 {
                try context.remote.call("set_robust_list", X86Syscall.setRobustList, [thread.robustList, thread.robustListLength], in: tid)
            }
            if thread.altStack.sp != 0 && thread.altStack.flags & SignalStack.disable == 0 {
                let stack = SignalStack(sp: thread.altStack.sp, flags: 0, size: thread.altStack.size)
                let address = try context.remote.put(stack.encoded)
                try context.remote.call("sigaltstack", X86Syscall.sigaltstack, [address, 0], in: tid)
            }
            if !thread.name.isEmpty {
                // prctl(PR_SET_NAME) from the thread itself: the kernel lets only the same
                // thread group write /proc/PID/task/TID/comm.
                let mark = context.remote.scratchMark
                defer { context.remote.release(to: mark) }
                let name = try context.remote.put(Array(thread.name.utf8.prefix(15)) + [0])
                try context.remote.call("prctl(PR_SET_NAME)", X86Syscall.prctl, [UInt64(Linux.PR_SET_NAME), name], in: tid)
            }
        }
    }

    /// Pending signals, queued from inside (the queue is the thread's own or the process's).
    static func queuePendingSignals(into context: inout RestoreContext) throws(SystemCallError) {
        let imagePID = UInt64(context.process.pid)
        var sharedQueued = Set<Data>()
        for thread in context.threads {
            let tid = context.traced[thread.tid]!
            for signal in thread.pendingSignals {
                let mark = context.remote.scratchMark
                defer { context.remote.release(to: mark) }
                if signal.siginfo.count >= 128 {
                    let address = try context.remote.put(Array(signal.siginfo.prefix(128)))
                    if signal.shared {
                        guard sharedQueued.insert(signal.siginfo).inserted else { continue }
                        try context.remote.call("rt_sigqueueinfo(\(signal.signo))", X86Syscall.rtSigqueueinfo,
                                                [imagePID, UInt64(signal.signo), address], in: tid)
                    } else {
                        try context.remote.call("rt_tgsigqueueinfo(\(signal.signo))", X86Syscall.rtTgsigqueueinfo,
                                                [imagePID, UInt64(thread.tid), UInt64(signal.signo), address], in: tid)
                    }
                } else {
                    try context.remote.call("tgkill(\(signal.signo))", Linux.SYS_tgkill, [imagePID, UInt64(thread.tid), UInt64(signal.signo)], in: tid)
                }
            }
        }
    }

    /// Creates the thread `thread` at its TID (clone3 set_tid, injected into the main
    /// thread) and waits for its first stop (PTRACE_O_TRACECLONE); returns its traced TID.
    package static func createThread(_ thread: Ccimg_V1_ThreadState, in context: inout RestoreContext) throws(StateFailure) -> Int32 {
        let flags = Linux.CLONE_VM | Linux.CLONE_FS | Linux.CLONE_FILES | Linux.CLONE_SIGHAND | Linux.CLONE_THREAD | Linux.CLONE_SYSVSEM
        var created: Int32? = nil
        do throws(SystemCallError) {
            var tid: [UInt8] = []
            tid.appendLE(thread.tid)
            let tidAddress = try context.remote.put(tid)
            let args = CloneArgs(flags: flags, setTID: tidAddress, setTIDSize: 1).encoded
            let address = try context.remote.put(args)
            try context.remote.call("clone3(set_tid \(thread.tid))", X86Syscall.clone3, [address, UInt64(args.count)])
            created = context.remote.createdThreads(by: context.pid).last
        } catch {
            throw .system(error)
        }
        guard let created, !context.traced.values.contains(created) else {
            throw .state(StateError(.kernel, "thread \(thread.tid) was created but not reported to the tracer"))
        }
        // Its first stop; all signals are blocked in the process until its registers are set.
        Tracer.adopt(created)
        do throws(SystemCallError) { _ = try SyscallInjector.waitForInterruptStop(created) } catch { throw .system(error) }
        context.traced[thread.tid] = created
        return created
    }

    /// The registers a restored thread starts from: the saved ones, with a thread that
    /// was inside an interrupted system call set to make it again (``SyscallRestart``)
    /// and orig_rax -1 (the kernel has nothing of its own to restart).
    package static func resumeRegisters(of thread: Ccimg_V1_ThreadState) throws(StateFailure) -> UserRegisters {
        guard var regs = UserRegisters(bytes: thread.generalRegisters) else {
            throw .state(StateError(.unsupported, "thread \(thread.tid): registers of \(thread.generalRegisters.count) bytes; this machine's are \(UserRegisters.size)"))
        }
        reenterSyscall(&regs, thread)
        regs.orig_rax = UInt64.max
        return regs
    }

    /// Sets up `regs` of a thread interrupted inside a system call to make it again,
    /// by the image's record of the call (§5.3 SyscallState; ``SyscallRestart/reenter(_:number:)``).
    package static func reenterSyscall(_ regs: inout UserRegisters, _ thread: Ccimg_V1_ThreadState) {
        guard thread.hasSyscall else { return }
        switch thread.syscall.restart {
        case .auto, .nohand, .block: SyscallRestart.reenter(&regs, number: thread.syscall.number)
        default: break
        }
    }
}

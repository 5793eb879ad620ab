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
    mutating func restoreProcessState() throws {
        let p = image.process
        try remote.call("personality", X86Syscall.personality, [UInt64(p.personality)])
        if !p.cwd.isEmpty {
            let path = try remote.put(string: p.cwd)
            do { try remote.call("chdir(\(p.cwd))", X86Syscall.chdir, [path]) } catch {
                warn("the working directory \(p.cwd) is gone here; the process stays in /")
            }
        }
        if !p.root.isEmpty && p.root != "/" { warn("the process ran chrooted in \(p.root); it is restored unchrooted") }
        try remote.call("umask", X86Syscall.umask, [UInt64(p.umask)])
        for limit in p.rlimits {
            let r = cc_prlimit_set(pid, Int32(limit.resource), limit.soft, limit.hard)
            if r < 0 { warn("rlimit \(limit.resource): \(SystemCallError("prlimit", errno: Int32(-r)))") }
        }
        for action in image.signals.actions where action.signo != SIGKILL && action.signo != SIGSTOP {
            let mark = remote.scratchMark
            defer { remote.release(to: mark) }
            var act: [UInt8] = []       // struct kernel_sigaction on x86-64
            act.appendLE(action.handler); act.appendLE(action.flags); act.appendLE(action.restorer); act.appendLE(action.mask)
            let address = try remote.put(act)
            try remote.call("rt_sigaction(\(action.signo))", X86Syscall.rtSigaction, [UInt64(action.signo), address, 0, 8])
        }
        for timer in image.sync.intervalTimers where timer.valueUs > 0 {
            var value: [UInt8] = []
            value.appendTimeval(timer.intervalUs)
            value.appendTimeval(timer.valueUs)
            let address = try remote.put(value)
            try remote.call("setitimer(\(timer.which))", X86Syscall.setitimer, [UInt64(timer.which), address, 0])
        }
        try restorePosixTimers()
    }

    /// POSIX timers (timer_create) with their IDs, signals and remaining times. The kernel
    /// gives a new timer the ID asked for after prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)
    /// (Linux 6.15); without it, timers are created and dropped until the ID comes up.
    mutating func restorePosixTimers() throws {
        let timers = image.sync.posixTimers.sorted { $0.id < $1.id }
        guard !timers.isEmpty else { return }
        let byRequest = (try? remote.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", X86Syscall.prctl,
                                          [UInt64(Linux.PR_TIMER_CREATE_RESTORE_IDS), 1, 0, 0, 0])) != nil
        var spares: [UInt64] = []
        for timer in timers {
            var event: [UInt8] = []         // struct sigevent: value, signo, notify, tid, padding to 64
            event.appendLE(timer.sigval); event.appendLE(timer.signo); event.appendLE(timer.notify)
            let notifyTID = traced.keys.contains(timer.notifyTid) ? timer.notifyTid : image.process.pid
            event.appendLE(timer.notify & 4 != 0 ? notifyTID : 0)
            while event.count < 64 { event.appendLE(UInt32(0)) }
            let eventAddress = try remote.put(event)
            var created: UInt64 = 0
            for _ in 0..<65536 {
                let mark = remote.scratchMark
                defer { remote.release(to: mark) }
                var id: [UInt8] = []
                id.appendLE(timer.id)
                let idAddress = try remote.put(id)
                try remote.call("timer_create", X86Syscall.timerCreate, [UInt64(timer.clockID), eventAddress, idAddress])
                let got = try remote.get(4, at: idAddress).withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                created = UInt64(got)
                if got == timer.id { break }
                guard !byRequest, got < timer.id else {
                    throw RestoreError(.kernel, "POSIX timer \(timer.id) came back as \(got)")
                }
                spares.append(created)
            }
            if timer.valueNs > 0 {
                var spec: [UInt8] = []
                spec.appendTimespec(timer.intervalNs)
                spec.appendTimespec(timer.valueNs)
                let address = try remote.put(spec)
                try remote.call("timer_settime(\(timer.id))", X86Syscall.timerSettime, [created, 0, address, 0])
            }
        }
        for spare in spares { try remote.call("timer_delete", Linux.SYS_timer_delete, [spare]) }
        if byRequest {
            try remote.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", X86Syscall.prctl, [UInt64(Linux.PR_TIMER_CREATE_RESTORE_IDS), 0, 0, 0, 0])
        }
    }

    /// Creates every thread but the main one with its TID (clone3 set_tid, injected
    /// into the main thread); each is caught at its first stop (PTRACE_O_TRACECLONE).
    mutating func createThreads() throws {
        let flags = Linux.CLONE_VM | Linux.CLONE_FS | Linux.CLONE_FILES | Linux.CLONE_SIGHAND | Linux.CLONE_THREAD | Linux.CLONE_SYSVSEM
        for thread in image.threads.dropFirst() {
            var tid: [UInt8] = []
            tid.appendLE(thread.tid)
            let tidAddress = try remote.put(tid)
            var args: [UInt8] = []      // struct clone_args
            for field in [flags, 0, 0, 0, 0, 0, 0, 0, tidAddress, 1, 0] as [UInt64] { args.appendLE(field) }
            let address = try remote.put(args)
            try remote.call("clone3(set_tid \(thread.tid))", X86Syscall.clone3, [address, UInt64(args.count)])
            guard let created = remote.createdThreads(by: pid).last, !traced.values.contains(created) else {
                throw RestoreError(.kernel, "thread \(thread.tid) was created but not reported to the tracer")
            }
            // Its first stop; all signals are blocked in the process until its registers are set.
            _ = try SyscallInjector.waitForInterruptStop(created)
            traced[thread.tid] = created
        }
    }

    /// Per-thread kernel state, set from inside each thread: clear-tid address,
    /// robust list, alternate stack, name; then its pending signals and credentials.
    mutating func restoreThreads() throws {
        let blockAll = ~UInt64(0) & ~(1 << UInt64(SIGKILL - 1)) & ~(1 << UInt64(SIGSTOP - 1))
        for thread in image.threads {
            let tid = traced[thread.tid]!
            // Nothing is delivered while the thread runs injected calls.
            try kernelCall("ptrace(PTRACE_SETSIGMASK)", cc_ptrace_setsigmask(tid, blockAll))
            try remote.call("set_tid_address", X86Syscall.setTidAddress, [thread.tidAddress], in: tid)
            if thread.robustList != 0 {
                try remote.call("set_robust_list", X86Syscall.setRobustList, [thread.robustList, thread.robustListLength], in: tid)
            }
            if thread.altStack.sp != 0 && Int(thread.altStack.flags) & SS_DISABLE == 0 {
                var stack: [UInt8] = []     // stack_t
                stack.appendLE(thread.altStack.sp); stack.appendLE(Int32(0)); stack.appendLE(UInt32(0)); stack.appendLE(thread.altStack.size)
                let address = try remote.put(stack)
                try remote.call("sigaltstack", X86Syscall.sigaltstack, [address, 0], in: tid)
            }
            if !thread.name.isEmpty {
                _ = try? Data((thread.name + "\n").utf8).write(to: URL(fileURLWithPath: "/proc/\(pid)/task/\(tid)/comm"))
            }
        }
        // Pending signals, queued from inside (the queue is the thread's own or the process's).
        let imagePID = UInt64(image.process.pid)
        var sharedQueued = Set<Data>()
        for thread in image.threads {
            let tid = traced[thread.tid]!
            for signal in thread.pendingSignals {
                let mark = remote.scratchMark
                defer { remote.release(to: mark) }
                if signal.siginfo.count >= 128 {
                    let address = try remote.put(Array(signal.siginfo.prefix(128)))
                    if signal.shared {
                        guard sharedQueued.insert(signal.siginfo).inserted else { continue }
                        try remote.call("rt_sigqueueinfo(\(signal.signo))", X86Syscall.rtSigqueueinfo, [imagePID, UInt64(signal.signo), address], in: tid)
                    } else {
                        try remote.call("rt_tgsigqueueinfo(\(signal.signo))", X86Syscall.rtTgsigqueueinfo,
                                        [imagePID, UInt64(thread.tid), UInt64(signal.signo), address], in: tid)
                    }
                } else {
                    try remote.call("tgkill(\(signal.signo))", Linux.SYS_tgkill, [imagePID, UInt64(thread.tid), UInt64(signal.signo)], in: tid)
                }
            }
        }
        // Credentials last: the process runs as the image's user, not as root.
        let c = image.process.credentials
        let isRoot = c.uid == 0 && c.euid == 0 && c.suid == 0 && c.gid == 0 && c.egid == 0 && c.sgid == 0
        if !isRoot {
            var groups: [UInt8] = []
            for g in c.groups.prefix(65536) { groups.appendLE(g) }
            let groupsAddress = try remote.put(groups)
            for thread in image.threads {
                let tid = traced[thread.tid]!
                try remote.call("setgroups", X86Syscall.setgroups, [UInt64(c.groups.count), groupsAddress], in: tid)
                try remote.call("setresgid", X86Syscall.setresgid, [UInt64(c.gid), UInt64(c.egid), UInt64(c.sgid)], in: tid)
                try remote.call("setresuid", X86Syscall.setresuid, [UInt64(c.uid), UInt64(c.euid), UInt64(c.suid)], in: tid)
            }
        }
    }

    /// Unmaps the scratch area, sets every thread's
    /// registers, XSAVE state and signal mask, and detaches. A thread inside an
    /// interrupted system call goes back into it, as the paper re-runs the wait.
    mutating func resume() throws {
        try remote.unmapScratch()
        for thread in image.threads {
            let tid = traced[thread.tid]!
            var regs = user_regs_struct()
            guard thread.generalRegisters.count == MemoryLayout<user_regs_struct>.size else {
                throw RestoreError(.unsupported, "thread \(thread.tid): registers of \(thread.generalRegisters.count) bytes; this machine's are \(MemoryLayout<user_regs_struct>.size)")
            }
            withUnsafeMutableBytes(of: &regs) { out in thread.generalRegisters.withUnsafeBytes { out.copyMemory(from: $0) } }
            Self.reenterSyscall(&regs, thread)
            regs.orig_rax = UInt64.max        // the kernel has nothing of its own to restart
            try kernelCall("ptrace(PTRACE_SETREGS)", cc_ptrace_setregs(tid, &regs))
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

    /// Sets up a thread that was interrupted inside a system call to make it again:
    /// rip back onto the `syscall` instruction, rax the call's number (§5.3 SyscallState).
    /// A call the kernel would have continued with restart_syscall (a relative
    /// sleep) is made anew with its first arguments; restart_syscall itself has
    /// nothing to continue in a new process, so it returns EINTR.
    static func reenterSyscall(_ regs: inout user_regs_struct, _ thread: Ccimg_V1_ThreadState) {
        guard thread.hasSyscall else { return }
        switch thread.syscall.restart {
        case .auto, .nohand, .block:
            if thread.syscall.number == 219 {             // restart_syscall
                regs.rax = UInt64(bitPattern: Int64(-EINTR))
            } else {
                regs.rax = thread.syscall.number
                regs.rip -= 2
            }
        default:
            break
        }
    }
}

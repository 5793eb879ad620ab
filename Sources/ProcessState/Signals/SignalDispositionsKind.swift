import CheckpointImage
import LinuxKernel

/// Signal dispositions (spec/image-format.md §5.3 signals): which signals are ignored
/// or caught (SigIgn, SigCgt of /proc/PID/status) and, for each, its handler, flags,
/// restorer and mask, asked by an injected rt_sigaction(signo, NULL, &old) — only the
/// process can ask — and set again in the restored process by rt_sigaction(signo, &act,
/// NULL). Both sides go through one layout, ``KernelSigaction``.
package enum SignalDispositionsKind: StateKind {
    package static let name = "signal dispositions"
    package static let sections: [SectionKind] = [.signals]

    /// The signals the process ignores or catches, each SIG_IGN until rt_sigaction says
    /// more; then, when a thread can take calls, each one's disposition.
    package static func captureInjected(_ target: CaptureTarget, _ remote: inout RemoteCalls?, into records: inout CapturedRecords) throws(SystemCallError) {
        let status = ProcFS.parseStatus(try ProcFS.read("/proc/\(target.pid)/status"))
        let ignored = UInt64(status["SigIgn"] ?? "0", radix: 16) ?? 0
        let caught = UInt64(status["SigCgt"] ?? "0", radix: 16) ?? 0
        for signo in 1...Linux.signalCount where (ignored | caught) & (UInt64(1) << UInt64(signo - 1)) != 0 {
            var action = Ccimg_V1_SignalAction()
            action.signo = Int32(signo)
            action.handler = 1   // SIG_IGN, until rt_sigaction says more
            records.signals.actions.append(action)
        }
        guard var parked = remote else { return }
        defer { remote = parked }
        let mark = parked.scratchMark
        defer { parked.release(to: mark) }
        let old = try parked.reserve(KernelSigaction.size)
        for i in records.signals.actions.indices {
            let signo = records.signals.actions[i].signo
            let r = try parked.rawCall(X86Syscall.rtSigaction, [UInt64(signo), 0, old, 8])
            guard r == 0 else { continue }
            let action = KernelSigaction(parsing: try parked.get(KernelSigaction.size, at: old))
            records.signals.actions[i].handler = action.handler
            records.signals.actions[i].flags = action.flags
            records.signals.actions[i].restorer = action.restorer
            records.signals.actions[i].mask = action.mask
        }
    }

    /// rt_sigaction for every saved disposition but SIGKILL's and SIGSTOP's (which cannot change).
    package static func restoreProcessWide(into context: inout RestoreContext) throws(StateFailure) {
        do throws(SystemCallError) {
            for action in context.signals.actions where action.signo != Signal.kill && action.signo != Signal.stop {
                let mark = context.remote.scratchMark
                defer { context.remote.release(to: mark) }
                let act = KernelSigaction(handler: action.handler, flags: action.flags, restorer: action.restorer, mask: action.mask)
                let address = try context.remote.put(act.encoded)
                try context.remote.call("rt_sigaction(\(action.signo))", X86Syscall.rtSigaction, [UInt64(action.signo), address, 0, 8])
            }
        } catch {
            throw .system(error)
        }
    }
}

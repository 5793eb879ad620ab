#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import LinuxKernel
import ProcessState

/// The task a restore fills in: created stopped with clone3 (set_tid for the
/// image's PID), seized with ptrace, and stopped again right after it executed
/// the image's program — before that program's first instruction.
///
/// Until ``release()`` hands it over, dropping it kills the task (and the PID
/// namespace's init, if one was made) and reaps it: a failed restore leaves
/// nothing behind.
public struct RestoredProcess: ~Copyable {
    /// The task as this process sees it (the ptrace target).
    public let pid: Int32
    /// Our direct child: the task itself, or the init of its new PID namespace.
    public let child: Int32
    /// Whether the task lives in a new PID namespace.
    public let inNewNamespace: Bool
    private var released = false

    /// Starts `executable` as the image's process `imagePID` (clone3 set_tid), in a
    /// new PID namespace when asked, and stops it at its exec (PTRACE_O_TRACEEXEC).
    init(executable: String, imagePID: Int32, newNamespace: Bool) throws(RestoreError) {
        (child, pid) = try Self.start(executable: executable, imagePID: imagePID, newNamespace: newNamespace)
        inNewNamespace = newNamespace
    }

    /// Spawns and seizes the task; returns our child and the task. Kills both on failure.
    private static func start(executable: String, imagePID: Int32, newNamespace: Bool) throws(RestoreError) -> (child: Int32, task: Int32) {
        var status: Int32 = 0
        let spawned: Int = executable.withCString { path in
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
            let envp: [UnsafeMutablePointer<CChar>?] = [nil]
            defer { free(argv[0]) }
            return argv.withUnsafeBufferPointer { a in
                envp.withUnsafeBufferPointer { e in
                    var request = cc_spawn_request(pid: imagePID, new_pid_namespace: newNamespace ? 1 : 0, path: path,
                                                   argv: a.baseAddress, envp: e.baseAddress)
                    return cc_spawn_stopped(&request)
                }
            }
        }
        guard spawned > 0 else {
            let errno = Int32(-spawned)
            if errno == EEXIST {
                throw RestoreError(.kernel, "pid \(imagePID) is taken on this machine; restore with --pidns",
                                   cause: .system(SystemCallError("clone3(set_tid)", errno: errno)))
            }
            throw RestoreError.from(SystemCallError("clone3", errno: errno), doing: "create the process")
        }
        let child = Int32(spawned)
        var task = child
        if newNamespace {
            // The init's only child is the task: /proc/INIT/task/INIT/children names it in our namespace.
            task = 0
            for _ in 0..<5000 {
                if let text = try? ProcFS.read("/proc/\(child)/task/\(child)/children"),
                   let first = text.split(separator: " ").first, let p = Int32(first) { task = p; break }
                if let reported = try? Wait.poll(child) { status = reported.raw; break }
                usleep(1000)
            }
        }
        guard task > 0 else {
            Self.kill(child: child, task: 0)
            throw RestoreError(.kernel, "the new PID namespace's init did not start the process (status \(status))")
        }
        do throws(SystemCallError) {
            try Self.waitUntilStopped(task)
            try kernelCall("ptrace(PTRACE_SEIZE)", cc_ptrace_seize(task, cc_PTRACE_O_TRACEEXEC | cc_PTRACE_O_TRACECLONE | cc_PTRACE_O_EXITKILL))
            Tracer.adopt(task)
            try libcCall("kill(SIGCONT)", Int(Glibc.kill(task, SIGCONT)))
            while true {
                let s = try Wait.next(task).status
                guard s.stopped else {
                    throw SystemCallError("execve(\(executable)) in the new process", errno: ENOEXEC)
                }
                if s.ptraceEvent == cc_PTRACE_EVENT_EXEC {
                    // Still inside execve, which would overwrite rax on its way out: step
                    // once so the task is out of the system call before anything is injected.
                    try kernelCall("ptrace(PTRACE_SINGLESTEP)", cc_ptrace_singlestep(task, 0))
                    guard try Wait.next(task).status.stopped else { throw SystemCallError("execve(\(executable)) in the new process", errno: ENOEXEC) }
                    break
                }
                // The SIGSTOP it sent itself, then SIGCONT: resume without them until the exec.
                try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(task, 0))
            }
        } catch {
            Self.kill(child: child, task: task)
            throw RestoreError.from(error, doing: "start \(executable) for the restore")
        }
        return (child, task)
    }

    /// Waits (up to 5 s) until `task` is in group-stop: its /proc state is `T`.
    private static func waitUntilStopped(_ task: Int32) throws(SystemCallError) {
        for _ in 0..<5000 {
            let stat = try ProcFS.read("/proc/\(task)/stat")
            if let parsed = ProcFS.parseStat(stat), parsed.fields.count > 3, parsed.fields[3] == "T" { return }
            usleep(1000)
        }
        throw SystemCallError("waiting for the new process to stop", errno: ETIMEDOUT)
    }

    /// Hands the process over (it is restored and detached): no kill on drop.
    consuming func release() -> (pid: Int32, child: Int32) {
        released = true
        return (pid, child)
    }

    private static func kill(child: Int32, task: Int32) {
        if task > 0 {
            // A traced thread's exit is reported to its tracer first: every traced thread
            // is reaped here, the task's leader last, before the namespace's init (which
            // waits for every task in it as it dies) can end.
            _ = Glibc.kill(task, SIGKILL)
            while let (reported, _) = try? Wait.next(-1), reported != task {}
        }
        guard child != task else { return }
        _ = Glibc.kill(child, SIGKILL)
        _ = try? Wait.next(child)
    }

    deinit {
        if !released { Self.kill(child: child, task: pid) }
    }
}

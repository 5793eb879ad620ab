#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// A process this one created stopped — clone3(2) with `set_tid` through the shim's
/// `cc_spawn_stopped`, optionally as the init of a new PID namespace — and then seizes
/// with ptrace(PTRACE_SEIZE) and runs to its execve(2) (PTRACE_O_TRACEEXEC).
///
/// It owns what it spawned: until ``release()`` hands it over, dropping it sends
/// SIGKILL (kill(2)) to the task and to our child and reaps both (waitpid(2)), so no
/// failure path leaves them behind (decision 0016).
package struct SpawnedProcess: ~Copyable {
    /// Our direct child: the task itself, or the init of its new PID namespace.
    package let child: Int32
    /// The task as this process sees it (the ptrace target); 0 until a new
    /// namespace's init has been seen to start it.
    package private(set) var task: Int32

    /// clone3(2) (with `set_tid` = `pid`, and CLONE_NEWPID when `newNamespace`) of a child
    /// that stops itself (SIGSTOP) and then executes `executable` with no arguments or
    /// environment. Throws `'clone3' failed: …` (EEXIST: `pid` is taken).
    package init(executable: String, pid: Int32, newNamespace: Bool) throws(SystemCallError) {
        let spawned: Int = executable.withCString { path in
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
            let envp: [UnsafeMutablePointer<CChar>?] = [nil]
            defer { free(argv[0]) }
            return argv.withUnsafeBufferPointer { a in
                envp.withUnsafeBufferPointer { e in
                    var request = cc_spawn_request(pid: pid, new_pid_namespace: newNamespace ? 1 : 0, path: path,
                                                   argv: a.baseAddress, envp: e.baseAddress)
                    return cc_spawn_stopped(&request)
                }
            }
        }
        guard spawned > 0 else { throw SystemCallError("clone3", errno: Int32(-spawned)) }
        child = Int32(spawned)
        task = newNamespace ? 0 : child
    }

    /// For a new PID namespace: polls (up to 5 s, 1 ms apart) the init's
    /// /proc/INIT/task/INIT/children for the task it starts, and records it as ``task``.
    /// Returns nil when found, else the init's wait status if it ended (0 if not).
    package mutating func awaitNamespaceTask() -> Int32? {
        var status: Int32 = 0
        for _ in 0..<5000 {
            if let text = try? ProcFS.read("/proc/\(child)/task/\(child)/children"),
               let first = text.split(separator: " ").first, let p = Int32(first) {
                task = p
                return nil
            }
            if let reported = try? Wait.poll(child) { status = reported.raw; break }
            usleep(1000)
        }
        return status
    }

    /// Waits for the task's group-stop, seizes it (PTRACE_SEIZE with TRACEEXEC,
    /// TRACECLONE and EXITKILL), sends SIGCONT and resumes it until its execve event,
    /// then single-steps it out of execve (which would overwrite rax on its way out), so
    /// it stands before the program's first instruction. Failures name the call; an
    /// exec that does not happen is `'execve(PATH) in the new process' failed: ENOEXEC`.
    package func runToExec(_ executable: String) throws(SystemCallError) {
        try waitUntilStopped()
        try kernelCall("ptrace(PTRACE_SEIZE)", cc_ptrace_seize(task, cc_PTRACE_O_TRACEEXEC | cc_PTRACE_O_TRACECLONE | cc_PTRACE_O_EXITKILL))
        Tracer.adopt(task)
        try libcCall("kill(SIGCONT)", Int(Glibc.kill(task, SIGCONT)))
        while true {
            let s = try Wait.next(task).status
            guard s.stopped else { throw SystemCallError("execve(\(executable)) in the new process", errno: ENOEXEC) }
            if s.ptraceEvent == cc_PTRACE_EVENT_EXEC {
                try kernelCall("ptrace(PTRACE_SINGLESTEP)", cc_ptrace_singlestep(task, 0))
                guard try Wait.next(task).status.stopped else {
                    throw SystemCallError("execve(\(executable)) in the new process", errno: ENOEXEC)
                }
                return
            }
            // The SIGSTOP it sent itself, then SIGCONT: resume without them until the exec.
            try kernelCall("ptrace(PTRACE_CONT)", cc_ptrace_cont(task, 0))
        }
    }

    /// Waits (up to 5 s) until the task is in group-stop: its /proc state is `T`.
    private func waitUntilStopped() throws(SystemCallError) {
        for _ in 0..<5000 {
            let stat = try ProcFS.read("/proc/\(task)/stat")
            if let parsed = ProcFS.parseStat(stat), parsed.fields.count > 3, parsed.fields[3] == "T" { return }
            usleep(1000)
        }
        throw SystemCallError("waiting for the new process to stop", errno: ETIMEDOUT)
    }

    /// Hands the process over: no kill on drop.
    package consuming func release() -> (task: Int32, child: Int32) {
        let result = (task, child)
        discard self
        return result
    }

    /// SIGKILLs and reaps the task and our child.
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

    deinit { Self.kill(child: child, task: task) }
}

extension SystemCallError {
    /// Whether this is ``SpawnedProcess``'s clone3(2) refusing `set_tid` because the PID is taken (EEXIST).
    package var isPIDTaken: Bool { call == "clone3" && errno.rawValue == EEXIST }
}

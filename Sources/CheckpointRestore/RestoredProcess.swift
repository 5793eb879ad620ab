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
    /// The spawned task and our child; dropping it kills and reaps both.
    private var process: SpawnedProcess
    /// The task as this process sees it (the ptrace target).
    public var pid: Int32 { process.task }
    /// Our direct child: the task itself, or the init of its new PID namespace.
    public var child: Int32 { process.child }
    /// Whether the task lives in a new PID namespace.
    public let inNewNamespace: Bool

    /// Starts `executable` as the image's process `imagePID` (clone3 set_tid), in a
    /// new PID namespace when asked, and stops it at its exec (PTRACE_O_TRACEEXEC).
    init(executable: String, imagePID: Int32, newNamespace: Bool) throws(RestoreError) {
        var process: SpawnedProcess
        do throws(SystemCallError) {
            process = try SpawnedProcess(executable: executable, pid: imagePID, newNamespace: newNamespace)
        } catch {
            if error.isPIDTaken {
                throw RestoreError(.kernel, "pid \(imagePID) is taken on this machine; restore with --pidns",
                                   cause: .system(SystemCallError("clone3(set_tid)", errno: error.errno)))
            }
            throw RestoreError.from(error, doing: "create the process")
        }
        if newNamespace, let status = process.awaitNamespaceTask() {
            // Dropping `process` kills the init.
            throw RestoreError(.kernel, "the new PID namespace's init did not start the process (status \(status))")
        }
        do throws(SystemCallError) {
            try process.runToExec(executable)
        } catch {
            throw RestoreError.from(error, doing: "start \(executable) for the restore")
        }
        self.process = process
        inNewNamespace = newNamespace
    }

    /// Hands the process over (it is restored and detached): no kill on drop.
    consuming func release() -> (pid: Int32, child: Int32) {
        let (task, child) = process.release()
        return (task, child)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Which thread of ccpm traces each task. The kernel takes ptrace requests only from the
/// thread that attached (ptrace(2): "a tracee is attached to a thread, not a process";
/// any other thread gets ESRCH, which reads like a vanished task). So the thread that
/// seizes a task (``TracedProcess``, the restore's seize and the threads it creates)
/// adopts it here, and every ptrace request (``Ptrace``, ``SyscallInjector``) checks that
/// it comes from that thread, and traps (a precondition) when it does not: a programming
/// error, not a failure of the target.
package enum Tracer {
    /// The tracing thread of each adopted task (decision 0017).
    private static let owners = Mutex<[Int32: pthread_t]>([:])

    /// The calling thread now traces `tid`.
    package static func adopt(_ tid: Int32) {
        let me = pthread_self()
        owners.withLock { $0[tid] = me }
    }

    /// `tid` is traced no more (detached, or dead).
    package static func release(_ tid: Int32) {
        owners.withLock { _ = $0.removeValue(forKey: tid) }
    }

    /// Traps unless the calling thread is the one that adopted `tid` (a task not adopted
    /// here passes: the kernel answers for it).
    package static func check(_ tid: Int32, _ request: @autoclosure () -> String) {
        let owner = owners.withLock { $0[tid] }
        if let owner {
            precondition(pthread_equal(owner, pthread_self()) != 0,
                         "\(request()) on task \(tid) from a thread that does not trace it (ptrace(2): only the tracer thread may)")
        }
    }
}

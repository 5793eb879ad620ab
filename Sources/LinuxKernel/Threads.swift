#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// State shared between threads that some of them must wait on: a mutex and a
/// condition variable (pthread_mutex_t, pthread_cond_t) guarding `Value`.
///
/// `Synchronization.Mutex` is the lock of new code (spec/decisions/0017-threading-model.md),
/// but it cannot wait: it has no condition variable, and waiting for another thread's
/// change by spinning or sleeping on a Mutex would burn a core or add latency. So the few
/// places that wait — the frame pool's compression workers and its writer, the restore's
/// prefetcher — use this one type, whose value can only be reached with the lock held.
package final class ConditionMutex<Value: ~Copyable>: @unchecked Sendable {
    /// The mutex and condition variable (``Condition``), guarding `value`.
    private let condition = Condition()
    private var value: Value

    /// A lock guarding `value`.
    package init(_ value: consuming Value) {
        self.value = value
    }

    /// Runs `body` on the value with the lock held (pthread_mutex_lock).
    package func withLock<R: ~Copyable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        condition.lock()
        defer { condition.unlock() }
        return try body(&value)
    }

    /// Waits, lock released (pthread_cond_wait), until `ready` holds of the value;
    /// then runs `body` on it with the lock held.
    package func withLock<R: ~Copyable, E: Error>(when ready: (borrowing Value) -> Bool,
                                                   _ body: (inout Value) throws(E) -> R) throws(E) -> R {
        condition.lock()
        defer { condition.unlock() }
        while !ready(value) { condition.wait() }
        return try body(&value)
    }

    /// Wakes every waiting thread (pthread_cond_broadcast) to check its condition again;
    /// call it after changing the value, with or without the lock.
    package func broadcast() { condition.broadcast() }
}

/// Scheduling policy of the calling thread.
package enum ThreadScheduling {
    /// SCHED_BATCH (<linux/sched.h>); glibc defines it only for _GNU_SOURCE.
    private static let schedBatch: Int32 = 3

    /// Switches the calling thread to SCHED_BATCH (sched_setscheduler(2)): a fair share
    /// of the CPU, but a batch thread woken does not preempt the thread that woke it.
    /// Any thread may: it keeps its nice value and needs no privilege. Advice only.
    package static func becomeBatch() {
        var parameters = sched_param()
        _ = sched_setscheduler(0, schedBatch, &parameters)
    }
}

/// A lock with a condition variable (pthread_cond_t): `wait` releases the
/// lock until another thread calls `broadcast`. The storage of ``ConditionMutex``, which
/// owns the state it guards (decision 0017).
final class Condition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }
    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// pthread_mutex_lock.
    func lock() { pthread_mutex_lock(mutex) }
    /// pthread_mutex_unlock.
    func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a `broadcast` (pthread_cond_wait); the caller holds the lock.
    func wait() { pthread_cond_wait(condition, mutex) }
    /// Wakes every waiter (pthread_cond_broadcast).
    func broadcast() { pthread_cond_broadcast(condition) }
}

/// A thread of our own (pthread_create), joined when released: for work that
/// must start at once on every core, which libdispatch's pool does not promise.
/// (A class rather than a ~Copyable struct so that a pool can keep an array of them.)
package final class JoinableThread {
    private let thread: pthread_t

    /// Starts `body` on a new thread. Failing to create one is running out of resources: it traps.
    package init(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed: \(result)")
        self.thread = thread
    }

    /// Waits for the thread to end (pthread_join).
    deinit { pthread_join(thread, nil) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A mutual-exclusion lock (pthread_mutex_t) for state shared between threads.
///
/// Kept for the code that still uses it (the parking gadgets, the tracer);
/// new code uses `Synchronization.Mutex`, or ``ConditionMutex``
/// where a thread must wait (spec/decisions/0017-threading-model.md).
package final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    package init() { pthread_mutex_init(mutex, nil) }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    package func lock() { pthread_mutex_lock(mutex) }
    package func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` holding the lock.
    package func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A lock with a condition variable (pthread_cond_t): `wait` releases the
/// lock until another thread calls `broadcast`. The storage of ``ConditionMutex``, and
/// kept for the restore's prefetcher; new code uses ``ConditionMutex``, which owns the
/// state it guards (decision 0017).
package final class Condition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    package init() {
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
    package func lock() { pthread_mutex_lock(mutex) }
    /// pthread_mutex_unlock.
    package func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a `broadcast` (pthread_cond_wait); the caller holds the lock.
    package func wait() { pthread_cond_wait(condition, mutex) }
    /// Wakes every waiter (pthread_cond_broadcast).
    package func broadcast() { pthread_cond_broadcast(condition) }
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

import CCheckpointKernel

/// A process's resource limits, read and set from outside with prlimit(2).
package enum ResourceLimits {
    /// The number of resources (RLIM_NLIMITS on x86-64: RLIMIT_CPU 0 ... RLIMIT_RTTIME 15).
    package static let count = 16

    /// prlimit(pid, resource, NULL, &old): the soft and hard limits.
    package static func get(pid: Int32, resource: Int32) throws(SystemCallError) -> (soft: UInt64, hard: UInt64) {
        var soft: UInt64 = 0, hard: UInt64 = 0
        try kernelCall("prlimit", cc_prlimit_get(pid, resource, &soft, &hard))
        return (soft, hard)
    }

    /// prlimit(pid, resource, &new, NULL).
    package static func set(pid: Int32, resource: Int32, soft: UInt64, hard: UInt64) throws(SystemCallError) {
        try kernelCall("prlimit", cc_prlimit_set(pid, resource, soft, hard))
    }
}

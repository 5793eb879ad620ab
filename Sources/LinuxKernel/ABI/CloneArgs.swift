/// `struct clone_args` (uapi linux/sched.h), as clone3(2) takes it, up to `cgroup`
/// (CLONE_ARGS_SIZE_VER2, 88 bytes): eleven 8-byte fields. Written by the restore to
/// create each thread at its TID (`set_tid`).
package struct CloneArgs: Equatable, Sendable {
    /// Bytes of the struct (CLONE_ARGS_SIZE_VER2).
    package static let size = 88
    /// `flags` (CLONE_VM, CLONE_THREAD, ...).
    package var flags: UInt64 = 0
    /// `pidfd`: where a CLONE_PIDFD descriptor goes.
    package var pidfd: UInt64 = 0
    /// `child_tid`: CLONE_CHILD_SETTID/CLEARTID address.
    package var childTID: UInt64 = 0
    /// `parent_tid`: CLONE_PARENT_SETTID address.
    package var parentTID: UInt64 = 0
    /// `exit_signal`: the signal sent to the parent at exit (0 for a thread).
    package var exitSignal: UInt64 = 0
    /// `stack`, `stack_size`: the new task's stack (0: the caller's).
    package var stack: UInt64 = 0
    package var stackSize: UInt64 = 0
    /// `tls`: CLONE_SETTLS value.
    package var tls: UInt64 = 0
    /// `set_tid`: address of an array of TIDs, one per PID namespace level.
    package var setTID: UInt64 = 0
    /// `set_tid_size`: elements in that array.
    package var setTIDSize: UInt64 = 0
    /// `cgroup`: CLONE_INTO_CGROUP descriptor.
    package var cgroup: UInt64 = 0

    /// Arguments with every field zero but those given.
    package init(flags: UInt64 = 0, setTID: UInt64 = 0, setTIDSize: UInt64 = 0) {
        self.flags = flags
        self.setTID = setTID
        self.setTIDSize = setTIDSize
    }

    /// Parses the struct from the first ``size`` bytes of `bytes`.
    package init(parsing bytes: [UInt8]) {
        let f = (0..<11).map { bytes.loadLE(UInt64.self, at: $0 * 8) }
        flags = f[0]; pidfd = f[1]; childTID = f[2]; parentTID = f[3]; exitSignal = f[4]
        stack = f[5]; stackSize = f[6]; tls = f[7]; setTID = f[8]; setTIDSize = f[9]; cgroup = f[10]
    }

    /// The struct's bytes, as clone3 reads them.
    package var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        for field in [flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup] {
            bytes.appendLE(field)
        }
        return bytes
    }
}

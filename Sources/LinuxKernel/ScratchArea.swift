#if canImport(Glibc)
import Glibc
#endif

/// The allocator of a data area in a traced process, for the arguments and results of
/// the system calls run there (``RemoteCalls``; decision 0020). The area is the parked
/// data area of a capture (below the first thread's frame, or a data page) or the
/// scratch mapping of a restore. Allocations are 16-byte aligned, one after another,
/// never at hand-picked offsets, and given back in bulk to a mark; a full area is ENOMEM.
/// The bytes live in the process: this is only the bookkeeping.
package struct ScratchArea: Sendable {
    /// Alignment of every allocation (enough for any kernel struct).
    package static let alignment: UInt64 = 16
    /// The area's first address in the process.
    package let address: UInt64
    /// Its size in bytes.
    package let size: UInt64
    /// Bytes allocated so far (the offset of the next free byte).
    package private(set) var used: UInt64 = 0

    /// An empty allocator for `size` bytes at `address`.
    package init(address: UInt64, size: UInt64) {
        self.address = address
        self.size = size
    }

    /// Allocates `count` bytes and returns their address in the process; an allocation
    /// of nothing still takes one byte, so that no two allocations share an address.
    /// ENOMEM when they do not fit.
    package mutating func reserve(_ count: Int) throws(SystemCallError) -> UInt64 {
        precondition(count >= 0, "a negative allocation")
        let start = (used + ScratchArea.alignment - 1) & ~(ScratchArea.alignment - 1)
        guard UInt64(count) <= size, start <= size - UInt64(count) else {
            throw SystemCallError("scratch area of \(size) bytes: \(count) more do not fit", errno: ENOMEM)
        }
        used = start + UInt64(max(count, 1))
        return address + start
    }

    /// The allocation mark now: ``release(to:)`` gives back everything allocated after it.
    package var mark: UInt64 { used }

    /// Gives back every allocation made after `mark`.
    package mutating func release(to mark: UInt64) {
        precondition(mark <= used, "a scratch mark from the future")
        used = mark
    }
}

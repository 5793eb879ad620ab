#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCheckpointKernel

/// Reads another process's memory for a capture: process_vm_readv(2), falling back to
/// /proc/PID/mem (proc(5)) for what it cannot read (PROT_NONE, some special mappings).
/// The /proc/PID/mem descriptor is closed when dropped.
package struct ProcessMemoryReader: ~Copyable {
    /// The process.
    package let pid: Int32
    private let mem: OwnedDescriptor

    /// Opens /proc/`pid`/mem (O_RDONLY | O_CLOEXEC). Throws `'open(/proc/PID/mem)' failed: …`.
    package init(pid: Int32) throws(SystemCallError) {
        self.pid = pid
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open(/proc/\(pid)/mem)", errno: SystemCallError.lastErrno) }
        mem = OwnedDescriptor(adopting: fd)
    }

    /// Fills `dest` with the memory at `address`: process_vm_readv, then pread of
    /// /proc/PID/mem (again after EINTR) for the rest.
    package func read(into dest: UnsafeMutableRawBufferPointer, at address: UInt64) throws(SystemCallError) {
        let n = cc_process_vm_read(pid, dest.baseAddress, dest.count, address)
        if n == dest.count { return }
        var done = max(0, n)
        let fd = mem.raw
        while done < dest.count {
            let r = Glibc.pread(fd, dest.baseAddress! + done, dest.count - done, off_t(Int64(bitPattern: address &+ UInt64(done))))
            if r < 0 && SystemCallError.lastErrno == EINTR { continue }
            guard r > 0 else {
                throw SystemCallError("pread(/proc/\(pid)/mem @0x\(String(address + UInt64(done), radix: 16)))",
                                      errno: r < 0 ? SystemCallError.lastErrno : EIO)
            }
            done += r
        }
    }

    /// One piece of a scattered read: `count` bytes at `address` into `offset` of the buffer.
    package struct Piece: Sendable {
        package var offset: Int
        package var address: UInt64
        package var count: Int

        /// `count` bytes at `address`, to go at `offset`.
        package init(offset: Int, address: UInt64, count: Int) {
            self.offset = offset
            self.address = address
            self.count = count
        }
    }

    /// Reads every piece into `buffer` with one process_vm_readv (an iovec a piece,
    /// at most IOV_MAX of them, decision 0013); when that reads less, piece by piece
    /// through ``read(into:at:)``.
    package func read(_ pieces: [Piece], into buffer: UnsafeMutableRawBufferPointer) throws(SystemCallError) {
        let base = buffer.baseAddress!
        var local: [iovec] = []
        var remote: [iovec] = []
        local.reserveCapacity(pieces.count)
        remote.reserveCapacity(pieces.count)
        var total = 0
        for piece in pieces {
            local.append(iovec(iov_base: base + piece.offset, iov_len: piece.count))
            remote.append(iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(piece.address)), iov_len: piece.count))
            total += piece.count
        }
        guard cc_process_vm_readv(pid, local, UInt(local.count), remote, UInt(remote.count)) != total else { return }
        for piece in pieces {
            try read(into: UnsafeMutableRawBufferPointer(start: base + piece.offset, count: piece.count), at: piece.address)
        }
    }

    /// IOV_MAX: the most iovecs one process_vm_readv takes.
    package static let maxPieces = 1024
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// Another process's memory: process_vm_readv(2) and process_vm_writev(2), which obey
/// its protections, and /proc/PID/mem (proc(5)), which a tracer may use to write
/// read-only private mappings too (FOLL_FORCE).
package enum ProcessMemory {
    /// Reads `count` bytes at `address` of `pid` (process_vm_readv).
    package static func read(pid: Int32, count: Int, at address: UInt64, call: @autoclosure () -> String = "process_vm_readv") throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try kernelCall(call(), bytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, address) })
        return bytes
    }

    /// Writes `bytes` at `address` of `pid` (process_vm_writev); returns the bytes
    /// written, which may be fewer (a read-only page on the way).
    package static func write(pid: Int32, _ bytes: UnsafeRawBufferPointer, at address: UInt64) -> Int {
        cc_process_vm_write(pid, bytes.baseAddress, bytes.count, address)
    }
}

/// /proc/PID/mem, open for reading and writing; closed when dropped.
package struct ProcessMemoryFile: ~Copyable {
    /// The process.
    package let pid: Int32
    private let fd: Int32

    /// Opens /proc/`pid`/mem (O_RDWR | O_CLOEXEC).
    package init(pid: Int32) throws(SystemCallError) {
        self.pid = pid
        let fd = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open(/proc/\(pid)/mem)", errno: Glibc.errno) }
        self.fd = fd
    }

    /// Writes all of `bytes` at `address` (pwrite, again after EINTR and short writes);
    /// a write that makes no progress is EIO. `call` names the write in an error.
    package func write(_ bytes: UnsafeRawBufferPointer, at address: UInt64, call: (UInt64) -> String) throws(SystemCallError) {
        var done = 0
        while done < bytes.count {
            let n = retryingOnInterrupt { pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(Int64(bitPattern: address + UInt64(done)))) }
            guard n > 0 else { throw SystemCallError(call(address + UInt64(done)), errno: n < 0 ? Glibc.errno : EIO) }
            done += n
        }
    }

    /// Writes `bytes` at `address` in one pwrite; anything short is an error named `call`.
    package func writeOnce(_ bytes: [UInt8], at address: UInt64, call: @autoclosure () -> String) throws(SystemCallError) {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(Int64(bitPattern: address))) }
        guard n == bytes.count else { throw SystemCallError(call(), errno: n < 0 ? Glibc.errno : EIO) }
    }

    deinit { close(fd) }
}

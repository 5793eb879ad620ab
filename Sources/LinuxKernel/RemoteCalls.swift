#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// System calls run inside the process being restored, each from the thread
/// that must make it, with a scratch area in its memory for the arguments that
/// are pointers (paths, structs, bytes to write into a pipe).
package struct RemoteCalls {
    package let pid: Int32
    /// The `syscall` instruction every injection runs (in the vdso).
    package var syscallAddress: UInt64
    /// The scratch area in the process: its address and size (0 until mapped).
    package var scratch: UInt64 = 0
    package var scratchSize: UInt64 = 0
    /// Injectors by traced TID.
    private var injectors: [Int32: SyscallInjector] = [:]

    package init(pid: Int32, syscallAddress: UInt64) {
        self.pid = pid
        self.syscallAddress = syscallAddress
    }

    /// Runs `number(args)` in thread `tid` (default: the main thread); throws on a negative result.
    @discardableResult
    package mutating func call(_ name: String, _ number: Int, _ args: [UInt64] = [], in tid: Int32? = nil) throws(SystemCallError) -> UInt64 {
        let tid = tid ?? pid
        var injector = injectors[tid] ?? SyscallInjector(pid: pid, tid: tid, syscallAddress: syscallAddress)
        if injector.syscallAddress != syscallAddress { injector = SyscallInjector(pid: pid, tid: tid, syscallAddress: syscallAddress) }
        let result = try injector.call(number, args)
        injectors[tid] = injector
        if result < 0 && result > -4096 { throw SystemCallError("\(name) (in the restored process)", errno: Int32(-result)) }
        return UInt64(bitPattern: result)
    }

    /// Threads created by injected clone3 calls in `tid`, as traced TIDs, oldest first.
    package func createdThreads(by tid: Int32) -> [Int32] { injectors[tid]?.createdThreads ?? [] }

    /// Copies bytes into the scratch area at `offset` and returns their remote address.
    package func put(_ bytes: [UInt8], at offset: UInt64 = 0) throws(SystemCallError) -> UInt64 {
        precondition(offset + UInt64(bytes.count) <= scratchSize, "scratch area overflow")
        let address = scratch + offset
        try kernelCall("process_vm_writev", bytes.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, address) })
        return address
    }

    /// Copies a NUL-terminated string into the scratch area.
    package func put(string: String, at offset: UInt64 = 0) throws(SystemCallError) -> UInt64 {
        try put(Array(string.utf8) + [0], at: offset)
    }

    /// Reads bytes back from the scratch area.
    package func get(_ count: Int, at offset: UInt64 = 0) throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try kernelCall("process_vm_readv", bytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, scratch + offset) })
        return bytes
    }
}

/// Kernel structs for injected calls are built with the image writer's
/// little-endian encoding (`appendLE`); these add the time structs.
extension Array where Element == UInt8 {
    /// A struct timespec for `nanoseconds`.
    package mutating func appendTimespec(_ nanoseconds: Int64) {
        appendLE(nanoseconds / 1_000_000_000)
        appendLE(nanoseconds % 1_000_000_000)
    }

    /// A struct timeval for `microseconds`.
    package mutating func appendTimeval(_ microseconds: Int64) {
        appendLE(microseconds / 1_000_000)
        appendLE(microseconds % 1_000_000)
    }
}


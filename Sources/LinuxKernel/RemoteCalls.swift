#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// System calls run inside the process being restored, each from the thread
/// that must make it, with a scratch area in its memory for the arguments that
/// are pointers (paths, structs, bytes to write into a pipe).
///
/// The scratch area is a mapping this type makes in the process (``mapScratch(near:avoiding:)``)
/// and unmaps (``unmapScratch()``); arguments are allocated in it one after another
/// (``put(_:)``), never at hand-picked offsets, and given back in bulk to a mark
/// (``scratchMark`` and ``release(to:)``), so a step's arguments never overlap.
package struct RemoteCalls {
    package let pid: Int32
    /// The `syscall` instruction every injection runs (in the vdso).
    package var syscallAddress: UInt64
    /// The scratch area in the process, while mapped.
    package private(set) var scratch: (address: UInt64, size: UInt64)? = nil
    /// Bytes of the scratch area allocated so far.
    private var scratchUsed: UInt64 = 0
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

    // MARK: Scratch area

    /// Maps `size` bytes of scratch memory at `address` in the process (injected mmap,
    /// MAP_FIXED_NOREPLACE: it never replaces a mapping).
    package mutating func mapScratch(at address: UInt64, size: UInt64) throws(SystemCallError) {
        precondition(scratch == nil, "the scratch area is mapped already")
        let mapped = try call("mmap(scratch)", X86Syscall.mmap,
                              [address, size, UInt64(PROT_READ | PROT_WRITE),
                               UInt64(MAP_PRIVATE | MAP_ANONYMOUS | Linux.MAP_FIXED_NOREPLACE), UInt64.max, 0])
        scratch = (mapped, size)
        scratchUsed = 0
    }

    /// Unmaps the scratch area (injected munmap); nothing when none is mapped.
    package mutating func unmapScratch() throws(SystemCallError) {
        guard let area = scratch else { return }
        try call("munmap(scratch)", X86Syscall.munmap, [area.address, area.size])
        scratch = nil
        scratchUsed = 0
    }

    /// How many bytes one allocation may take at most (the whole area).
    package var scratchCapacity: Int { Int(scratch?.size ?? 0) }

    /// The allocation mark now: ``release(to:)`` gives back everything allocated after it.
    package var scratchMark: UInt64 { scratchUsed }

    /// Gives back every allocation made after `mark`.
    package mutating func release(to mark: UInt64) {
        precondition(mark <= scratchUsed, "a scratch mark from the future")
        scratchUsed = mark
    }

    /// Copies bytes into a new allocation of the scratch area (16-byte aligned) and
    /// returns their address in the process. A full area is ENOMEM.
    package mutating func put(_ bytes: [UInt8]) throws(SystemCallError) -> UInt64 {
        guard let area = scratch else { preconditionFailure("no scratch area mapped") }
        let start = (scratchUsed + 15) & ~15
        guard UInt64(bytes.count) <= area.size, start <= area.size - UInt64(bytes.count) else {
            throw SystemCallError("scratch area of \(area.size) bytes: \(bytes.count) more do not fit", errno: ENOMEM)
        }
        let address = area.address + start
        if !bytes.isEmpty {
            try kernelCall("process_vm_writev", bytes.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, address) })
        }
        scratchUsed = start + UInt64(max(bytes.count, 1))
        return address
    }

    /// Copies a NUL-terminated string into a new allocation of the scratch area.
    package mutating func put(string: String) throws(SystemCallError) -> UInt64 {
        try put(Array(string.utf8) + [0])
    }

    /// Reads `count` bytes back from the process at `address` (an allocation of ``put(_:)``).
    package func get(_ count: Int, at address: UInt64) throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try kernelCall("process_vm_readv", bytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, address) })
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


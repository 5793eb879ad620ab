#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// System calls run inside a traced process, each from the thread that must make it,
/// with a data area in its memory for the arguments that are pointers (paths, structs,
/// bytes to write into a pipe) and for results: the one remote-call machinery of the
/// capture and the restore (decision 0020).
///
/// In a restore the area is a mapping this type makes in the process
/// (``mapScratch(at:size:)``) and unmaps (``unmapScratch()``). In a capture it is the
/// data area of the parked threads (``SyscallInjector/withParking(threads:maps:_:)``,
/// which owns it and the parking page, and undoes both on every path), given with the
/// parked injector (``init(parked:data:)``). Either way, arguments and results are
/// allocated in it one after another (``reserve(_:)``, ``put(_:)``), never at
/// hand-picked offsets, and given back in bulk to a mark (``scratchMark`` and
/// ``release(to:)``), so a step's arguments never overlap.
package struct RemoteCalls {
    package let pid: Int32
    /// The `syscall` instruction every injection runs (in the vdso).
    package var syscallAddress: UInt64
    /// The thread calls run in when none is named (the main thread, or the parked one).
    package let defaultThread: Int32
    /// The data area's allocator, while there is one.
    private var area: ScratchArea? = nil
    /// Whether this value mapped the area (restore) and so unmaps it.
    private var mapsArea = false
    /// Injectors by traced TID.
    private var injectors: [Int32: SyscallInjector] = [:]

    /// Calls into `pid`, through the `syscall` at `syscallAddress`, without a data area yet.
    package init(pid: Int32, syscallAddress: UInt64) {
        self.pid = pid
        self.syscallAddress = syscallAddress
        defaultThread = pid
    }

    /// Calls into the thread of the parked `injector`, with the parked data area `data`
    /// (owned by ``SyscallInjector/withParking(threads:maps:_:)``, not by this value).
    package init(parked injector: SyscallInjector, data: ScratchArea) {
        pid = injector.pid
        syscallAddress = injector.syscallAddress
        defaultThread = injector.tid
        injectors[injector.tid] = injector
        area = data
    }

    /// The scratch area in the process, while there is one.
    package var scratch: (address: UInt64, size: UInt64)? { area.map { ($0.address, $0.size) } }

    /// The injector of `tid` as it is now (its intercepted signals, its parking).
    package func injector(of tid: Int32) -> SyscallInjector? { injectors[tid] }

    /// Runs `number(args)` in thread `tid` (default: ``defaultThread``) and returns rax
    /// (a negative errno on failure): for calls whose failure is an answer.
    package mutating func rawCall(_ number: Int, _ args: [UInt64] = [], in tid: Int32? = nil) throws(SystemCallError) -> Int64 {
        let tid = tid ?? defaultThread
        var injector = injectors[tid] ?? SyscallInjector(pid: pid, tid: tid, syscallAddress: syscallAddress)
        if injector.syscallAddress != syscallAddress { injector = SyscallInjector(pid: pid, tid: tid, syscallAddress: syscallAddress) }
        defer { injectors[tid] = injector }
        return try injector.call(number, args)
    }

    /// Runs `number(args)` in thread `tid` (default: ``defaultThread``); throws on a negative result.
    @discardableResult
    package mutating func call(_ name: String, _ number: Int, _ args: [UInt64] = [], in tid: Int32? = nil) throws(SystemCallError) -> UInt64 {
        let result = try rawCall(number, args, in: tid)
        if result < 0 && result > -4096 { throw SystemCallError("\(name) (in the restored process)", errno: Int32(-result)) }
        return UInt64(bitPattern: result)
    }

    /// Threads created by injected clone3 calls in `tid`, as traced TIDs, oldest first.
    package func createdThreads(by tid: Int32) -> [Int32] { injectors[tid]?.createdThreads ?? [] }

    // MARK: Scratch area

    /// Maps `size` bytes of scratch memory at `address` in the process (injected mmap,
    /// MAP_FIXED_NOREPLACE: it never replaces a mapping).
    package mutating func mapScratch(at address: UInt64, size: UInt64) throws(SystemCallError) {
        precondition(area == nil, "the scratch area is mapped already")
        let mapped = try call("mmap(scratch)", X86Syscall.mmap,
                              [address, size, UInt64(PROT_READ | PROT_WRITE),
                               UInt64(MAP_PRIVATE | MAP_ANONYMOUS | Linux.MAP_FIXED_NOREPLACE), UInt64.max, 0])
        area = ScratchArea(address: mapped, size: size)
        mapsArea = true
    }

    /// Unmaps the scratch area (injected munmap); nothing when none is mapped here.
    package mutating func unmapScratch() throws(SystemCallError) {
        guard let mapped = area, mapsArea else { return }
        try call("munmap(scratch)", X86Syscall.munmap, [mapped.address, mapped.size])
        area = nil
        mapsArea = false
    }

    /// How many bytes one allocation may take at most (the whole area).
    package var scratchCapacity: Int { Int(area?.size ?? 0) }

    /// The allocation mark now: ``release(to:)`` gives back everything allocated after it.
    package var scratchMark: UInt64 { area?.mark ?? 0 }

    /// Gives back every allocation made after `mark`.
    package mutating func release(to mark: UInt64) {
        guard area != nil else { precondition(mark == 0, "a scratch mark from the future"); return }
        area!.release(to: mark)
    }

    /// Allocates `count` bytes of the area (16-byte aligned) for a result, and returns
    /// their address in the process. A full area is ENOMEM.
    package mutating func reserve(_ count: Int) throws(SystemCallError) -> UInt64 {
        guard area != nil else { preconditionFailure("no scratch area") }
        return try area!.reserve(count)
    }

    /// Copies bytes into a new allocation of the scratch area (16-byte aligned) and
    /// returns their address in the process. A full area is ENOMEM.
    package mutating func put(_ bytes: [UInt8]) throws(SystemCallError) -> UInt64 {
        let address = try reserve(bytes.count)
        if !bytes.isEmpty {
            try kernelCall("process_vm_writev", bytes.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, address) })
        }
        return address
    }

    /// Copies a NUL-terminated string into a new allocation of the scratch area.
    package mutating func put(string: String) throws(SystemCallError) -> UInt64 {
        try put(Array(string.utf8) + [0])
    }

    /// Reads `count` bytes back from the process at `address` (an allocation of ``put(_:)``
    /// or ``reserve(_:)``).
    package func get(_ count: Int, at address: UInt64) throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try kernelCall("process_vm_readv", bytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, address) })
        return bytes
    }

    /// Runs `body` and gives back the allocations it made, on every path.
    package mutating func withScratch<R, E: Error>(_ body: (inout RemoteCalls) throws(E) -> R) throws(E) -> R {
        let mark = scratchMark
        defer { release(to: mark) }
        return try body(&self)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointCapture

/// System calls run inside the process being restored, each from the thread
/// that must make it, with a scratch area in its memory for the arguments that
/// are pointers (paths, structs, bytes to write into a pipe).
struct RemoteCalls {
    let pid: Int32
    /// The `syscall` instruction every injection runs (in the vdso).
    var syscallAddress: UInt64
    /// The scratch area in the process: its address and size (0 until mapped).
    var scratch: UInt64 = 0
    var scratchSize: UInt64 = 0
    /// Injectors by traced TID.
    private var injectors: [Int32: SyscallInjector] = [:]

    init(pid: Int32, syscallAddress: UInt64) {
        self.pid = pid
        self.syscallAddress = syscallAddress
    }

    /// Runs `number(args)` in thread `tid` (default: the main thread); throws on a negative result.
    @discardableResult
    mutating func call(_ name: String, _ number: Int, _ args: [UInt64] = [], in tid: Int32? = nil) throws(SystemCallError) -> UInt64 {
        let tid = tid ?? pid
        var injector = injectors[tid] ?? SyscallInjector(pid: pid, tid: tid, syscallAddress: syscallAddress)
        if injector.syscallAddress != syscallAddress { injector = SyscallInjector(pid: pid, tid: tid, syscallAddress: syscallAddress) }
        let result = try injector.call(number, args)
        injectors[tid] = injector
        if result < 0 && result > -4096 { throw SystemCallError("\(name) (in the restored process)", errno: Int32(-result)) }
        return UInt64(bitPattern: result)
    }

    /// Threads created by injected clone3 calls in `tid`, as traced TIDs, oldest first.
    func createdThreads(by tid: Int32) -> [Int32] { injectors[tid]?.createdThreads ?? [] }

    /// Copies bytes into the scratch area at `offset` and returns their remote address.
    func put(_ bytes: [UInt8], at offset: UInt64 = 0) throws(SystemCallError) -> UInt64 {
        precondition(offset + UInt64(bytes.count) <= scratchSize, "scratch area overflow")
        let address = scratch + offset
        try kernelCall("process_vm_writev", bytes.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, address) })
        return address
    }

    /// Copies a NUL-terminated string into the scratch area.
    func put(string: String, at offset: UInt64 = 0) throws(SystemCallError) -> UInt64 {
        try put(Array(string.utf8) + [0], at: offset)
    }

    /// Reads bytes back from the scratch area.
    func get(_ count: Int, at offset: UInt64 = 0) throws(SystemCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try kernelCall("process_vm_readv", bytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, scratch + offset) })
        return bytes
    }
}

/// Kernel structs for injected calls are built with the image writer's
/// little-endian encoding (`appendLE`); these add the time structs.
extension Array where Element == UInt8 {
    /// A struct timespec for `nanoseconds`.
    mutating func appendTimespec(_ nanoseconds: Int64) {
        appendLE(nanoseconds / 1_000_000_000)
        appendLE(nanoseconds % 1_000_000_000)
    }

    /// A struct timeval for `microseconds`.
    mutating func appendTimeval(_ microseconds: Int64) {
        appendLE(microseconds / 1_000_000)
        appendLE(microseconds % 1_000_000)
    }
}

/// Linux constants Swift's Glibc module leaves out (they need _GNU_SOURCE):
/// values from the kernel's uapi headers, x86-64.
enum Linux {
    static let MREMAP_MAYMOVE = 1                 // linux/mman.h
    static let MREMAP_FIXED = 2
    static let MAP_FIXED_NOREPLACE: Int32 = 0x100000
    static let O_DIRECT: Int32 = 0o40000          // asm-generic/fcntl.h
    static let O_NOATIME: Int32 = 0o1000000
    static let O_PATH: Int32 = 0o10000000
    static let CLONE_VM: UInt64 = 0x100           // linux/sched.h
    static let CLONE_FS: UInt64 = 0x200
    static let CLONE_FILES: UInt64 = 0x400
    static let CLONE_SIGHAND: UInt64 = 0x800
    static let CLONE_THREAD: UInt64 = 0x10000
    static let CLONE_SYSVSEM: UInt64 = 0x40000
    static let F_SETPIPE_SZ = 1031                // linux/fcntl.h
    static let TFD_IOC_SET_TICKS: UInt64 = 0x4008_5400
    static let PR_SET_MM = 35                     // linux/prctl.h
    static let PR_SET_MM_MAP = 14
    static let SYS_tgkill = 234
    static let SYS_timer_delete = 226
    static let PR_TIMER_CREATE_RESTORE_IDS = 77   // Linux 6.15
}

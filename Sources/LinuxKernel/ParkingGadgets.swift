#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import Synchronization

/// Where parked calls run (decision 0014): a `syscall; ret` (0f 05 c3) for the call, and
/// a signal-return trampoline (`mov $15, %rax; syscall`) that the `ret` reaches through
/// the frame's first word if ccpm is gone, so the thread returns through rt_sigreturn to
/// where it was.
package struct ParkingGadgets: Sendable {
    package var syscallReturn: UInt64
    package var restorer: UInt64

    package init(syscallReturn: UInt64, restorer: UInt64) {
        self.syscallReturn = syscallReturn
        self.restorer = restorer
    }

    static let syscallReturnBytes: [UInt8] = [0x0f, 0x05, 0xc3]
    /// glibc's and musl's __restore_rt (`mov $15, %rax; syscall`), and the same with `%eax`.
    static let restorerBytes: [[UInt8]] = [[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
                                           [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]]

    /// Both, in the process's executable file mappings; nil if either is missing. At the
    /// offsets where they are in the file of the process's C library (``libraryOffsets(_:)``),
    /// checked in the process's memory; else searched there — the C library's text first,
    /// as its __restore_rt is near its start — through process_vm_readv in 256 KiB pieces,
    /// at most 64 MiB in all (about 1 ms for glibc).
    package static func find(pid: Int32, maps: [ProcFS.MapsEntry]) -> ParkingGadgets? {
        for entry in maps where entry.execute && entry.read && isCLibrary(entry) {
            guard let offsets = libraryOffsets(entry),
                  entry.offset <= min(offsets.syscallReturn, offsets.restorer),
                  max(offsets.syscallReturn, offsets.restorer) < entry.offset + (entry.end - entry.start) else { continue }
            let found = ParkingGadgets(syscallReturn: entry.start + (offsets.syscallReturn - entry.offset),
                                       restorer: entry.start + (offsets.restorer - entry.offset))
            if found.holds(pid: pid) { return found }
        }
        return search(pid: pid, maps: maps)
    }

    /// Whether the process has the gadgets' bytes at their addresses.
    func holds(pid: Int32) -> Bool {
        var call = [UInt8](repeating: 0, count: ParkingGadgets.syscallReturnBytes.count)
        guard call.withUnsafeMutableBytes({ cc_process_vm_read(pid, $0.baseAddress, $0.count, syscallReturn) }) == call.count,
              call == ParkingGadgets.syscallReturnBytes else { return false }
        return ParkingGadgets.restorerBytes.contains { pattern in
            var bytes = [UInt8](repeating: 0, count: pattern.count)
            return bytes.withUnsafeMutableBytes({ cc_process_vm_read(pid, $0.baseAddress, $0.count, restorer) }) == bytes.count && bytes == pattern
        }
    }

    /// Where in `bytes` the two gadgets first appear, each if it does.
    static func locate(in bytes: UnsafeRawBufferPointer) -> (syscallReturn: Int?, restorer: Int?) {
        (firstIndex(of: syscallReturnBytes, in: bytes), restorerBytes.lazy.compactMap { firstIndex(of: $0, in: bytes) }.first)
    }

    static func isCLibrary(_ entry: ProcFS.MapsEntry) -> Bool {
        let name = entry.path.split(separator: "/").last.map(String.init) ?? ""
        return name.hasPrefix("libc.so") || name.hasPrefix("libc-")
    }

    /// Finds, before a capture stops the process, the gadgets in the file of the C library
    /// it maps (its /proc/PID/maps), so that ``find(pid:maps:)`` need not look for them
    /// while the process is stopped.
    package static func prepare(pid: Int32) {
        guard let text = try? ProcFS.read("/proc/\(pid)/maps") else { return }
        for entry in ProcFS.parseMaps(text) where entry.execute && entry.read && isCLibrary(entry) {
            _ = libraryOffsets(entry)
        }
    }

    /// A C library file: its device and inode.
    private struct LibraryFile: Hashable {
        var major: UInt32
        var minor: UInt32
        var inode: UInt64
    }
    /// The gadgets' file offsets in each C library file read so far (nil: not in it;
    /// decision 0017).
    private static let libraries = Mutex<[LibraryFile: LibraryOffsets?]>([:])
    /// The gadgets' offsets in one library file.
    typealias LibraryOffsets = (syscallReturn: UInt64, restorer: UInt64)

    /// The gadgets' offsets in the file that `entry` maps, read from that file (its text up
    /// to both, 0.4 MiB of glibc's 1.4) once per file and ccpm; nil when the file cannot
    /// be read here (another mount namespace), is not the very file mapped (device and
    /// inode), or lacks either gadget in the mapped range.
    static func libraryOffsets(_ entry: ProcFS.MapsEntry) -> (syscallReturn: UInt64, restorer: UInt64)? {
        let file = LibraryFile(major: entry.device.major, minor: entry.device.minor, inode: entry.inode)
        if let known = libraries.withLock({ $0[file] }) { return known }
        let found = readOffsets(entry)
        libraries.withLock { $0[file] = found }
        return found
    }

    private static func readOffsets(_ entry: ProcFS.MapsEntry) -> (syscallReturn: UInt64, restorer: UInt64)? {
        let fd = open(entry.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, UInt64(st.st_ino) == entry.inode else { return nil }
        // glibc's encoding of a device number (gnu_dev_major, gnu_dev_minor).
        let dev = UInt64(st.st_dev)
        let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff))
        let minor = UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff))
        guard major == entry.device.major, minor == entry.device.minor else { return nil }
        var scan = Scan()
        scan.scan(from: entry.offset, to: entry.offset + (entry.end - entry.start)) { buffer, count, at in
            var filled = 0
            while filled < count {
                let n = pread(fd, buffer + filled, count - filled, off_t(at) + off_t(filled))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                filled += n
            }
            return filled
        }
        guard let call = scan.syscallReturn, let restore = scan.restorer else { return nil }
        return (call, restore)
    }

    /// Searches the process's executable file mappings, the C library's first.
    static func search(pid: Int32, maps: [ProcFS.MapsEntry]) -> ParkingGadgets? {
        let code = maps.filter { $0.execute && $0.read && !$0.path.isEmpty && !$0.path.hasPrefix("[") }
        let ordered = code.filter(isCLibrary) + code.filter { !isCLibrary($0) }
        var scan = Scan()
        for entry in ordered where !scan.done {
            scan.scan(from: entry.start, to: entry.end) { buffer, count, at in cc_process_vm_read(pid, buffer, count, at) }
        }
        guard let syscallReturn = scan.syscallReturn, let restorer = scan.restorer else { return nil }
        return ParkingGadgets(syscallReturn: syscallReturn, restorer: restorer)
    }

    /// A search for both gadgets through bytes read in 256 KiB pieces (overlapping by 16
    /// bytes, so that none is missed across a boundary), at most 64 MiB in all.
    struct Scan {
        static let piece = 256 << 10, overlap = 16
        var syscallReturn: UInt64?
        var restorer: UInt64?
        private var budget = 64 << 20
        private var buffer = [UInt8](repeating: 0, count: piece)
        var done: Bool { syscallReturn != nil && restorer != nil }

        /// Scans addresses `start..<end` of whatever `read(into, count, at)` reads from
        /// (it returns the bytes read); stops once both are found, or at a short read.
        mutating func scan(from start: UInt64, to end: UInt64, read: (UnsafeMutableRawPointer, Int, UInt64) -> Int) {
            var at = start
            while at < end && budget > 0 && !done {
                let count = Int(min(UInt64(Scan.piece), end - at))
                guard buffer.withUnsafeMutableBytes({ read($0.baseAddress!, count, at) }) == count else { return }
                budget -= count
                let found = buffer.withUnsafeBytes { ParkingGadgets.locate(in: UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
                syscallReturn = syscallReturn ?? found.syscallReturn.map { at + UInt64($0) }
                restorer = restorer ?? found.restorer.map { at + UInt64($0) }
                at += UInt64(count < Scan.piece ? count : count - Scan.overlap)
            }
        }
    }

    static func firstIndex(of pattern: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        let i = cc_find_bytes(bytes.baseAddress, bytes.count, pattern, pattern.count)
        return i < 0 ? nil : i
    }
}


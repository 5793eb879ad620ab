#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// An open file descriptor that this code owns, over swift-system's `FileDescriptor`;
/// `deinit` closes it (close(2)), so no failure path can leak it.
///
/// Each call makes one system call (retried once per EINTR through
/// ``retryingOnInterrupt(_:)``) and throws a ``SystemCallError`` named as the
/// call (`'pread' failed: (5) Input/output error`): callers map it to their own
/// errors. Loops over short reads and writes belong to the callers, which know
/// what a short count means (a truncated image, the end of a pipe).
package struct OwnedDescriptor: ~Copyable, @unchecked Sendable {
    /// swift-system's descriptor, for calls it wraps.
    package let descriptor: FileDescriptor

    /// The raw descriptor number.
    package var raw: Int32 { descriptor.rawValue }

    /// How ``init(opening:_:)`` opens a file: open(2) flags, always with O_CLOEXEC.
    package enum Access: Sendable {
        /// O_RDONLY.
        case readOnly
        /// O_RDONLY | O_NONBLOCK: opening a FIFO does not wait for a writer.
        case readOnlyNonBlocking
        /// O_RDONLY | O_DIRECTORY: a directory, to fsync it.
        case directory
        /// O_WRONLY | O_CREAT | O_EXCL with `permissions`: a new file, or EEXIST.
        case createExclusive(permissions: UInt32)
        /// O_WRONLY | O_CREAT | O_TRUNC with `permissions`.
        case createTruncating(permissions: UInt32)

        var flags: Int32 {
            switch self {
            case .readOnly: O_RDONLY
            case .readOnlyNonBlocking: O_RDONLY | O_NONBLOCK
            case .directory: O_RDONLY | O_DIRECTORY
            case .createExclusive: O_WRONLY | O_CREAT | O_EXCL
            case .createTruncating: O_WRONLY | O_CREAT | O_TRUNC
            }
        }

        var mode: mode_t {
            switch self {
            case .createExclusive(let p), .createTruncating(let p): mode_t(p)
            default: 0
            }
        }
    }

    /// Takes ownership of `raw`, an open descriptor.
    package init(adopting raw: Int32) { descriptor = FileDescriptor(rawValue: raw) }

    /// Opens `path` (open(2), O_CLOEXEC). Throws `'open' failed: …`.
    package init(opening path: String, _ access: Access) throws(SystemCallError) {
        let fd = retryingOnInterrupt { open(path, access.flags | O_CLOEXEC, access.mode) }
        if fd < 0 { throw SystemCallError("open", errno: SystemCallError.lastErrno) }
        descriptor = FileDescriptor(rawValue: fd)
    }

    /// A descriptor of its own for the open file behind `fd` (dup(2)), which stays
    /// the caller's. Should dup fail, every later call fails with EBADF.
    package init(duplicating fd: Int32) {
        descriptor = FileDescriptor(rawValue: dup(fd))
    }

    deinit { if raw >= 0 { try? descriptor.close() } }

    /// One pread(2) of up to `buffer.count` bytes at `offset`; returns the bytes read, 0 at end of file.
    package func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(SystemCallError) -> Int {
        let fd = raw
        let n = retryingOnInterrupt { Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
        if n < 0 { throw SystemCallError("pread", errno: SystemCallError.lastErrno) }
        return n
    }

    /// One read(2) of up to `buffer.count` bytes from the current position; 0 at end of input.
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemCallError) -> Int {
        let fd = raw
        let n = retryingOnInterrupt { Glibc.read(fd, buffer.baseAddress, buffer.count) }
        if n < 0 { throw SystemCallError("read", errno: SystemCallError.lastErrno) }
        return n
    }

    /// One write(2) of up to `bytes.count` bytes; returns the bytes written.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(SystemCallError) -> Int {
        let fd = raw
        let n = retryingOnInterrupt { Glibc.write(fd, bytes.baseAddress, bytes.count) }
        if n < 0 { throw SystemCallError("write", errno: SystemCallError.lastErrno) }
        return n
    }

    /// Writes all of `bytes`, write(2) after write(2).
    package func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemCallError) {
        var done = 0
        while done < bytes.count {
            done += try write(UnsafeRawBufferPointer(rebasing: bytes[done...]))
        }
    }

    /// What fstat(2) says of the open file.
    package struct Status: Sendable {
        /// st_size.
        package var size: UInt64
        /// S_ISREG(st_mode): the file can be read at random.
        package var isRegularFile: Bool
    }

    /// fstat(2). Throws `'fstat' failed: …`.
    package func status() throws(SystemCallError) -> Status {
        var st = stat()
        guard fstat(raw, &st) == 0 else { throw SystemCallError("fstat", errno: SystemCallError.lastErrno) }
        return Status(size: UInt64(st.st_size), isRegularFile: (st.st_mode & S_IFMT) == S_IFREG)
    }

    /// fsync(2): the file's data and metadata on disk. Throws `'fsync' failed: …`.
    package func sync() throws(SystemCallError) {
        let fd = raw
        guard retryingOnInterrupt({ fsync(fd) }) == 0 else { throw SystemCallError("fsync", errno: SystemCallError.lastErrno) }
    }

    /// sync_file_range(SYNC_FILE_RANGE_WRITE) of `length` bytes from `offset`
    /// (``FileWriteback/start(_:offset:length:)``): advice, it cannot fail.
    package func startWriteback(offset: UInt64, length: UInt64) {
        FileWriteback.start(raw, offset: offset, length: length)
    }
}

/// Calls on paths rather than open files.
package enum FileSystem {
    /// rename(2) `from` over `to`. Throws `'rename' failed: …`.
    package static func rename(_ from: String, to: String) throws(SystemCallError) {
        guard Glibc.rename(from, to) == 0 else { throw SystemCallError("rename", errno: SystemCallError.lastErrno) }
    }

    /// unlink(2). Throws `'unlink' failed: …`.
    package static func unlink(_ path: String) throws(SystemCallError) {
        guard Glibc.unlink(path) == 0 else { throw SystemCallError("unlink", errno: SystemCallError.lastErrno) }
    }

    /// fsync(2) of a directory (opened O_DIRECTORY), so that a rename in it is durable.
    /// Best effort, as a rename's durability is: a failure is ignored.
    package static func syncDirectory(_ path: String) {
        guard let directory = try? OwnedDescriptor(opening: path, .directory) else { return }
        try? directory.sync()
    }

    /// mkstemp(3): a new file `prefix` + six random characters, created exclusively
    /// with mode 0600; returns its path and descriptor. Throws `'mkstemp' failed: …`.
    package static func makeTemporaryFile(prefix: String) throws(SystemCallError) -> TemporaryFile {
        var template = Array("\(prefix)XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw SystemCallError("mkstemp", errno: SystemCallError.lastErrno) }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return TemporaryFile(path: path, descriptor: OwnedDescriptor(adopting: fd))
    }

    /// A file made by ``makeTemporaryFile(prefix:)``: where it is, and its open descriptor.
    package struct TemporaryFile: ~Copyable {
        package let path: String
        package let descriptor: OwnedDescriptor
    }

    /// mkdir(2) of `path` and every missing directory above it (mode 0777 less the
    /// umask), as `mkdir -p`. Throws `'mkdir' failed: …`.
    package static func createDirectory(_ path: String) throws(SystemCallError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o777) != 0 && SystemCallError.lastErrno != EEXIST {
                throw SystemCallError("mkdir", errno: SystemCallError.lastErrno)
            }
        }
    }

    /// The names in directory `path` but "." and "..", in no particular order
    /// (opendir(3), readdir(3)). Throws `'opendir' failed: …`.
    package static func contentsOfDirectory(_ path: String) throws(SystemCallError) -> [String] {
        guard let directory = opendir(path) else { throw SystemCallError("opendir", errno: SystemCallError.lastErrno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The whole file at `path` (open(2), read(2) to the end).
    package static func readFile(_ path: String) throws(SystemCallError) -> [UInt8] {
        let file = try OwnedDescriptor(opening: path, .readOnly)
        var bytes: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { chunk.deallocate() }
        while true {
            let n = try file.read(into: chunk)
            if n == 0 { return bytes }
            bytes += UnsafeRawBufferPointer(rebasing: chunk[0..<n])
        }
    }

    /// sync(2): every file system's dirty data on its way to disk.
    package static func syncAll() { sync() }

    /// access(2) F_OK: whether something is at `path` (a dangling symbolic link is not).
    package static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// stat(2) of `path`: its size, or nil when nothing is there.
    package static func size(of path: String) -> UInt64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return UInt64(st.st_size)
    }
}

/// Standard input copied into a temporary file, so that it can be read at random.
package enum StandardInputFile {
    /// What failed, for the caller's message.
    package enum Failure: Error {
        /// mkstemp failed in `directory`.
        case create(directory: String, SystemCallError)
        /// read(2) of standard input failed.
        case read(SystemCallError)
        /// write(2) of the spooled copy at `path` failed.
        case write(path: String, SystemCallError)
    }

    /// Copies standard input (descriptor 0) into a new file `prefix-XXXXXX` under
    /// ``Host/temporaryDirectory``, made with mkstemp(3), and returns its path.
    /// On failure the file is removed.
    package static func spool(prefix: String) throws(Failure) -> String {
        let directory = Host.temporaryDirectory
        let file: FileSystem.TemporaryFile
        do throws(SystemCallError) { file = try FileSystem.makeTemporaryFile(prefix: "\(directory)/\(prefix)-") } catch {
            throw .create(directory: directory, error)
        }
        let input = OwnedDescriptor(duplicating: 0)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n: Int
            do throws(SystemCallError) {
                n = try input.read(into: buffer)
            } catch {
                try? FileSystem.unlink(file.path)
                throw .read(error)
            }
            if n == 0 { return file.path }
            do throws(SystemCallError) {
                try file.descriptor.writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            } catch {
                try? FileSystem.unlink(file.path)
                throw .write(path: file.path, error)
            }
        }
    }
}

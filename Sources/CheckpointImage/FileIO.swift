import LinuxKernel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The text of an errno value, as `strerror(3)` gives it.
func errnoText(_ code: Int32) -> String {
    "(\(code)) \(String(cString: strerror(code)))"
}

/// An open file descriptor that this code owns; `deinit` closes it, so no
/// failure path can leak it.
struct OwnedDescriptor: ~Copyable {
    let raw: Int32

    init(raw: Int32) { self.raw = raw }

    /// Opens `path` with `open(2)`.
    init(path: String, flags: Int32, mode: mode_t = 0) throws(ImageError) {
        let fd = open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else {
            let e = errno
            let hint = e == ENOENT ? "no such file" : e == EACCES ? "permission denied" : "cannot open"
            throw ImageError(.io, "\(hint)", path: path, cause: "'open' failed: \(errnoText(e))")
        }
        raw = fd
    }

    deinit { close(raw) }

    /// Reads exactly `count` bytes at `offset` with `pread(2)`; fewer means the file is truncated.
    func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        // Not zero-filled first: pread fills every byte, or the read throws.
        var failure: ImageError? = nil
        let buffer = [UInt8](unsafeUninitializedCapacity: count) { raw, initialized in
            var done = 0
            while done < count {
                let n = pread(self.raw, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = ImageError(.io, "read failed", offset: offset, cause: "'pread' failed: \(errnoText(errno))")
                    break
                }
                if n == 0 {
                    failure = ImageError(.truncated, "file ends \(count - done) bytes early", offset: offset + UInt64(done))
                    break
                }
                done += n
            }
            initialized = failure == nil ? count : 0
        }
        if let failure { throw failure }
        return buffer
    }

    /// Reads up to `count` bytes from the current position with `read(2)`;
    /// returns fewer only at end of input. Memory grows with what arrives, so
    /// a huge `count` read from a damaged image cannot allocate it up front.
    func readSome(count: Int) throws(ImageError) -> [UInt8] {
        var buffer: [UInt8] = []
        while buffer.count < count {
            let chunk = min(count - buffer.count, 1 << 20)
            let start = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: chunk))
            var done = 0
            while done < chunk {
                let n = buffer.withUnsafeMutableBytes { raw in
                    Glibc.read(self.raw, raw.baseAddress! + start + done, chunk - done)
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ImageError(.io, "read failed", cause: "'read' failed: \(errnoText(errno))")
                }
                if n == 0 {
                    buffer.removeSubrange((start + done)...)
                    return buffer
                }
                done += n
            }
        }
        return buffer
    }

    /// Writes all of `bytes` with `write(2)`.
    func writeAll(_ bytes: UnsafeRawBufferPointer) throws(ImageError) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(raw, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                let hint = e == ENOSPC ? "the disk is full" : e == EPIPE ? "the reader went away" : "write failed"
                throw ImageError(.io, hint, cause: "'write' failed: \(errnoText(e))")
            }
            done += n
        }
    }

    /// The file's size, from `fstat(2)`.
    func size() throws(ImageError) -> UInt64 {
        var st = stat()
        guard fstat(raw, &st) == 0 else {
            throw ImageError(.io, "cannot stat", cause: "'fstat' failed: \(errnoText(errno))")
        }
        return UInt64(st.st_size)
    }

    /// Whether this descriptor is a regular file (so it can be read at random).
    func isRegularFile() -> Bool {
        var st = stat()
        guard fstat(raw, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFREG
    }
}

/// Where an image is written (§2): a file, made atomically, or a stream.
///
/// A file is written to a temporary name in the target's directory, then
/// `fsync`ed, renamed over the target and the directory `fsync`ed. Until
/// ``commit()`` succeeds, nothing exists at the target path, and an output
/// dropped uncommitted removes its temporary file.
public struct ImageOutput: ~Copyable {
    let descriptor: OwnedDescriptor
    let targetPath: String?
    let temporaryPath: String?
    private var committed = false

    /// Writes to `path` atomically.
    public init(path: String) throws(ImageError) {
        let directory = ImageOutput.directory(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var tmp = ""
        var attempt = 0
        while true {
            tmp = "\(directory)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 {
                descriptor = OwnedDescriptor(raw: fd)
                break
            }
            let e = errno
            attempt += 1
            if e != EEXIST || attempt > 8 {
                let hint = e == EACCES ? "no permission to write in \(directory)"
                    : e == ENOENT ? "directory \(directory) does not exist" : "cannot create the image"
                throw ImageError(.io, hint, path: path, cause: "'open' failed: \(errnoText(e))")
            }
        }
        targetPath = path
        temporaryPath = tmp
    }

    /// Writes to an already open stream (a pipe or standard output), which it does not close.
    public init(streamingTo fd: Int32) {
        descriptor = OwnedDescriptor(raw: dup(fd))
        targetPath = nil
        temporaryPath = nil
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }

    /// Starts writing `length` bytes from `offset` back to disk without waiting
    /// (sync_file_range), so the fsync at ``commit()`` has only the tail left.
    /// Nothing for a stream.
    func startWriteback(offset: UInt64, length: UInt64) {
        guard temporaryPath != nil else { return }
        FileWriteback.start(descriptor.raw, offset: offset, length: length)
    }

    /// Writes bytes that are not an image (such as extracted memory) through the same atomic path.
    public func writeRaw(_ bytes: [UInt8]) throws(ImageError) {
        try bytes.withBytes { (raw) throws(ImageError) in try descriptor.writeAll(raw) }
    }

    /// Makes the written image durable and visible at the target path.
    public mutating func commit() throws(ImageError) {
        guard let targetPath, let temporaryPath else {
            committed = true
            return
        }
        guard fsync(descriptor.raw) == 0 else {
            throw ImageError(.io, "cannot flush the image to disk", path: targetPath, cause: "'fsync' failed: \(errnoText(errno))")
        }
        guard rename(temporaryPath, targetPath) == 0 else {
            throw ImageError(.io, "cannot move the image into place", path: targetPath, cause: "'rename' failed: \(errnoText(errno))")
        }
        committed = true
        let dirfd = open(ImageOutput.directory(of: targetPath), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            _ = fsync(dirfd)
            close(dirfd)
        }
    }

    deinit {
        if !committed, let temporaryPath { unlink(temporaryPath) }
    }
}

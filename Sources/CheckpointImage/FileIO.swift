import LinuxKernel

/// The image library's file calls: LinuxKernel's ``OwnedDescriptor`` with its
/// ``SystemCallError``s mapped to ``ImageError``s (§11: class `io`, or
/// `truncated` for a file that ends early), the messages `ccimg` prints.
extension OwnedDescriptor {
    /// Opens `path` for reading (open(2)); a failure names the path and why.
    init(readingImageAt path: String, nonBlocking: Bool = false) throws(ImageError) {
        do { self = try OwnedDescriptor(opening: path, nonBlocking ? .readOnlyNonBlocking : .readOnly) } catch {
            let hint = error.errno == .noSuchFileOrDirectory ? "no such file"
                : error.errno == .permissionDenied ? "permission denied" : "cannot open"
            throw ImageError(.io, hint, path: path, cause: error.description)
        }
    }

    /// Reads exactly `count` bytes at `offset` with pread(2); fewer means the file is truncated.
    func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        // Not zero-filled first: pread fills every byte, or the read throws.
        var failure: ImageError? = nil
        let buffer = [UInt8](unsafeUninitializedCapacity: count) { raw, initialized in
            var done = 0
            while done < count {
                let n: Int
                do throws(SystemCallError) {
                    n = try pread(into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: raw[done...])), at: offset + UInt64(done))
                } catch {
                    failure = ImageError(.io, "read failed", offset: offset, cause: error.description)
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

    /// Reads up to `count` bytes from the current position with read(2);
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
                var failure: SystemCallError? = nil
                let n = buffer.withUnsafeMutableBytes { raw in
                    do throws(SystemCallError) {
                        return try read(into: UnsafeMutableRawBufferPointer(rebasing: raw[(start + done)..<(start + chunk)]))
                    } catch {
                        failure = error
                        return 0
                    }
                }
                if let failure { throw ImageError(.io, "read failed", cause: failure.description) }
                if n == 0 {
                    buffer.removeSubrange((start + done)...)
                    return buffer
                }
                done += n
            }
        }
        return buffer
    }

    /// Writes all of `bytes` with write(2).
    func writeAllBytes(_ bytes: UnsafeRawBufferPointer) throws(ImageError) {
        do { try writeAll(bytes) } catch {
            let hint = error.errno == .noSpace ? "the disk is full" : error.errno == .brokenPipe ? "the reader went away" : "write failed"
            throw ImageError(.io, hint, cause: error.description)
        }
    }

    /// The file's size, from fstat(2).
    func size() throws(ImageError) -> UInt64 {
        do { return try status().size } catch {
            throw ImageError(.io, "cannot stat", cause: error.description)
        }
    }

    /// Whether this descriptor is a regular file (so it can be read at random), from fstat(2).
    func isRegularFile() -> Bool {
        (try? status().isRegularFile) ?? false
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

    /// Writes to `path` atomically: open(2) O_CREAT|O_EXCL of a hidden temporary name beside it.
    public init(path: String) throws(ImageError) {
        let directory = ImageOutput.directory(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var attempt = 0
        while true {
            let tmp = "\(directory)/.\(base).tmp-\(Host.processID)-\(UInt32.random(in: 0...UInt32.max))"
            do {
                descriptor = try OwnedDescriptor(opening: tmp, .createExclusive(permissions: 0o644))
                temporaryPath = tmp
                break
            } catch {
                attempt += 1
                if error.errno != .fileExists || attempt > 8 {
                    let hint = error.errno == .permissionDenied ? "no permission to write in \(directory)"
                        : error.errno == .noSuchFileOrDirectory ? "directory \(directory) does not exist" : "cannot create the image"
                    throw ImageError(.io, hint, path: path, cause: error.description)
                }
            }
        }
        targetPath = path
    }

    /// Writes to an already open stream (a pipe or standard output), which it does not close (dup(2)).
    public init(streamingTo fd: Int32) {
        descriptor = OwnedDescriptor(duplicating: fd)
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
        descriptor.startWriteback(offset: offset, length: length)
    }

    /// Writes bytes that are not an image (such as extracted memory) through the same atomic path.
    public func writeRaw(_ bytes: [UInt8]) throws(ImageError) {
        try bytes.withBytes { (raw) throws(ImageError) in try descriptor.writeAllBytes(raw) }
    }

    /// Makes the written image durable and visible at the target path: fsync(2),
    /// rename(2), then fsync(2) of the directory.
    public mutating func commit() throws(ImageError) {
        guard let targetPath, let temporaryPath else {
            committed = true
            return
        }
        do { try descriptor.sync() } catch {
            throw ImageError(.io, "cannot flush the image to disk", path: targetPath, cause: error.description)
        }
        do { try FileSystem.rename(temporaryPath, to: targetPath) } catch {
            throw ImageError(.io, "cannot move the image into place", path: targetPath, cause: error.description)
        }
        committed = true
        FileSystem.syncDirectory(ImageOutput.directory(of: targetPath))
    }

    deinit {
        if !committed, let temporaryPath { try? FileSystem.unlink(temporaryPath) }
    }
}

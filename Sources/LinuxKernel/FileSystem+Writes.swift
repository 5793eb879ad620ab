#if canImport(Glibc)
import Glibc
#endif

extension FileSystem {
    /// mkdir(2) of `path` with mode 0700 (EEXIST is fine), then access(2) W_OK: whether
    /// the directory is there and writable here.
    package static func makeWritableDirectory(_ path: String) -> Bool {
        (mkdir(path, 0o700) == 0 || SystemCallError.lastErrno == EEXIST) && access(path, W_OK) == 0
    }

    /// Writes `bytes` over the start of the file at `path` (created with `permissions`
    /// when missing) in one pwrite(2), then cuts it to their length (ftruncate(2)): no
    /// rename, no fsync. Throws `'open(PATH)'`, `'pwrite(PATH)'` or `'ftruncate(PATH)' failed: …`.
    package static func writeInPlace(_ bytes: [UInt8], to path: String, permissions: UInt32) throws(SystemCallError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, mode_t(permissions))
        guard fd >= 0 else { throw SystemCallError("open(\(path))", errno: SystemCallError.lastErrno) }
        let file = OwnedDescriptor(adopting: fd)
        let written = bytes.withUnsafeBytes { pwrite(file.raw, $0.baseAddress, $0.count, 0) }
        guard written == bytes.count else { throw SystemCallError("pwrite(\(path))", errno: written < 0 ? SystemCallError.lastErrno : EIO) }
        guard ftruncate(file.raw, off_t(bytes.count)) == 0 else { throw SystemCallError("ftruncate(\(path))", errno: SystemCallError.lastErrno) }
    }
}

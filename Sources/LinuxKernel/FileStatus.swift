#if canImport(Glibc)
import Glibc
#endif

/// What stat(2) says of a file (struct stat, the fields the code reads), with the
/// file type bits of st_mode as ``FileType`` values.
package struct FileStatus: Sendable, Equatable {
    /// st_mode: the file type bits (``FileType``) and the permissions.
    package var mode: UInt32
    /// st_dev: the device of the file system holding the file.
    package var device: UInt64
    /// st_ino.
    package var inode: UInt64
    /// st_rdev: the device a character or block special file is.
    package var rdev: UInt64
    /// st_size, in bytes.
    package var size: Int64
    /// st_mtim, in nanoseconds since the epoch.
    package var modificationNanoseconds: Int64

    /// A status from parts (tests, and files whose status is known).
    package init(mode: UInt32 = 0, device: UInt64 = 0, inode: UInt64 = 0, rdev: UInt64 = 0,
                 size: Int64 = 0, modificationNanoseconds: Int64 = 0) {
        self.mode = mode
        self.device = device
        self.inode = inode
        self.rdev = rdev
        self.size = size
        self.modificationNanoseconds = modificationNanoseconds
    }

    init(_ st: stat) {
        self.init(mode: st.st_mode, device: UInt64(st.st_dev), inode: UInt64(st.st_ino), rdev: UInt64(st.st_rdev),
                  size: Int64(st.st_size),
                  modificationNanoseconds: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }

    /// stat(2) of `path`, following symbolic links (and /proc/PID/fd/N links to the
    /// open file). Throws `'stat(path)' failed: …`.
    package init(path: String) throws(SystemCallError) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw SystemCallError("stat(\(path))", errno: SystemCallError.lastErrno) }
        self.init(st)
    }

    /// stat(2) of `path`, or nil when it fails.
    package static func of(path: String) -> FileStatus? { try? FileStatus(path: path) }

    /// The file type bits of st_mode (`mode & S_IFMT`): one of ``FileType``.
    package var fileType: UInt32 { mode & FileType.mask }
}

/// The file type bits of st_mode (inode(7), uapi linux/stat.h).
package enum FileType {
    /// S_IFMT: the bits that hold the type.
    package static let mask: UInt32 = 0o170000
    /// S_IFSOCK.
    package static let socket: UInt32 = 0o140000
    /// S_IFLNK.
    package static let symbolicLink: UInt32 = 0o120000
    /// S_IFREG.
    package static let regular: UInt32 = 0o100000
    /// S_IFBLK.
    package static let blockDevice: UInt32 = 0o060000
    /// S_IFDIR.
    package static let directory: UInt32 = 0o040000
    /// S_IFCHR.
    package static let characterDevice: UInt32 = 0o020000
    /// S_IFIFO.
    package static let fifo: UInt32 = 0o010000
}

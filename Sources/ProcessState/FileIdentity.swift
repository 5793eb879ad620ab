import CheckpointImage
import LinuxKernel

/// A file's identity (§5.3 FileIdentity) from stat(2) (``FileStatus``).
package enum FileIdentity {
    /// The identity of the file at `path`, nil when stat(2) fails.
    package static func of(path: String) -> Ccimg_V1_FileIdentity? {
        (try? FileStatus(path: path)).map(of(status:))
    }

    /// The identity a stat(2) gave: st_dev, st_ino, st_size, st_mtim.
    package static func of(status: FileStatus) -> Ccimg_V1_FileIdentity {
        var id = Ccimg_V1_FileIdentity()
        id.dev = status.device
        id.inode = status.inode
        id.size = UInt64(status.size)
        id.mtimeNs = status.modificationNanoseconds
        return id
    }
}

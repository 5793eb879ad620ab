#if canImport(Glibc)
import Glibc
#endif
import CheckpointImage

/// A file's identity (§5.3 FileIdentity) from stat(2).
package enum FileIdentity {
    package static func of(path: String) -> Ccimg_V1_FileIdentity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        var id = Ccimg_V1_FileIdentity()
        id.dev = UInt64(st.st_dev)
        id.inode = UInt64(st.st_ino)
        id.size = UInt64(st.st_size)
        id.mtimeNs = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return id
    }
}

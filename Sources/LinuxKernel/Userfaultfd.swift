#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCheckpointKernel

/// A userfaultfd (userfaultfd(2), Documentation/admin-guide/mm/userfaultfd.rst) that
/// the tracked process holds, borrowed here through its pidfd: the write-protect
/// *async* mode in which the kernel notes every write without stopping the writer
/// (decision 0012). The borrowed descriptor is closed when dropped.
package struct Userfaultfd: ~Copyable {
    private let file: OwnedDescriptor

    /// A descriptor of ours for the target's `fd` (pidfd_getfd(2)). Throws
    /// `'pidfd_getfd(userfaultfd)' failed: …`.
    package init(pidfd: Int32, targetDescriptor fd: Int32) throws(SystemCallError) {
        let ours = Int32(try kernelCall("pidfd_getfd(userfaultfd)", cc_pidfd_getfd(pidfd, fd)))
        file = OwnedDescriptor(adopting: ours)
    }

    /// UFFDIO_API with UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED; returns the features granted.
    @discardableResult
    package func enableAsyncWriteProtect() throws(SystemCallError) -> UInt64 {
        var granted: UInt64 = 0
        try kernelCall("ioctl(UFFDIO_API, WP_ASYNC)", cc_uffdio_api(file.raw, CC_UFFD_FEATURE_WP_ASYNC | CC_UFFD_FEATURE_WP_UNPOPULATED, &granted))
        return granted
    }

    /// UFFDIO_REGISTER (MODE_WP), then UFFDIO_WRITEPROTECT of [start, start + length).
    package func writeProtect(start: UInt64, length: UInt64) throws(SystemCallError) {
        try kernelCall("ioctl(UFFDIO_REGISTER, MODE_WP)", cc_uffdio_register_wp(file.raw, start, length))
        try kernelCall("ioctl(UFFDIO_WRITEPROTECT)", cc_uffdio_writeprotect(file.raw, start, length, 1))
    }

    /// The inode of the userfaultfd's anonymous file (fstat(2)); 0 when fstat fails.
    package var inode: UInt64 {
        var st = stat()
        _ = fstat(file.raw, &st)
        return UInt64(st.st_ino)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCheckpointKernel

/// /proc/PID/pagemap, open for reading (Documentation/admin-guide/mm/pagemap.rst):
/// one 64-bit entry per virtual page, and the PAGEMAP_SCAN ioctl that lists and
/// write-protects the pages written since they were last protected (decision 0012).
/// Closed when dropped.
package struct PagemapFile: ~Copyable {
    /// Entry bit 63: the page is present in RAM.
    package static let present: UInt64 = 1 << 63
    /// Entry bit 62: the page is swapped out.
    package static let swapped: UInt64 = 1 << 62
    /// Entry bit 61: the page is file-mapped or shared anonymous (not a private written copy).
    package static let filePage: UInt64 = 1 << 61

    /// The process.
    package let pid: Int32
    private let file: OwnedDescriptor

    /// Opens /proc/`pid`/pagemap (O_RDONLY | O_CLOEXEC). Throws `'open(/proc/PID/pagemap)' failed: …`.
    package init(pid: Int32) throws(SystemCallError) {
        self.pid = pid
        let fd = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open(/proc/\(pid)/pagemap)", errno: SystemCallError.lastErrno) }
        file = OwnedDescriptor(adopting: fd)
    }

    /// Reads the entries of `count` pages from the page at `address` into the start of
    /// `entries` (one pread); anything short is `'pread(/proc/PID/pagemap)' failed`.
    package func entries(_ entries: inout [UInt64], count: Int, at address: UInt64, pageSize: UInt64) throws(SystemCallError) {
        let want = count * 8
        let fd = file.raw
        let got = entries.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, want, off_t(address / pageSize * 8)) }
        guard got == want else { throw SystemCallError("pread(/proc/\(pid)/pagemap)", errno: got < 0 ? SystemCallError.lastErrno : EIO) }
    }

    /// PAGEMAP_SCAN with PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC: the pages of
    /// [start, end) written since they were last protected, as page indices relative to
    /// `start`; protects them again. Nil when the range is not tracked (EPERM).
    package func writtenPages(start: UInt64, end: UInt64) throws(SystemCallError) -> [Range<UInt64>]? {
        var result: [Range<UInt64>] = []
        var regions = [cc_page_region](repeating: cc_page_region(), count: 512)
        var cursor = start
        let fd = file.raw
        while cursor < end {
            var arg = cc_pm_scan_arg()
            arg.size = UInt64(MemoryLayout<cc_pm_scan_arg>.size)
            arg.flags = CC_PM_SCAN_WP_MATCHING | CC_PM_SCAN_CHECK_WPASYNC
            arg.start = cursor
            arg.end = end
            arg.category_mask = CC_PAGE_IS_WRITTEN
            arg.return_mask = CC_PAGE_IS_WRITTEN
            arg.vec_len = UInt64(regions.count)
            let n = regions.withUnsafeMutableBufferPointer { buffer -> Int in
                arg.vec = UInt64(UInt(bitPattern: buffer.baseAddress))
                return cc_pagemap_scan(fd, &arg)
            }
            if n == -Int(EPERM) { return nil }
            try kernelCall("ioctl(PAGEMAP_SCAN)", n)
            for region in regions.prefix(n) {
                result.append(((region.start - start) / 4096)..<((region.end - start) / 4096))
            }
            guard arg.walk_end > cursor else { break }
            cursor = arg.walk_end
        }
        return result
    }
}

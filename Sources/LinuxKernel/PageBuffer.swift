#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Page-aligned anonymous memory for bulk page data (frames being filled and
/// compressed, pages read from a process), from mmap(2) and given back with
/// munmap(2) in `deinit`.
///
/// The memory is advised MADV_HUGEPAGE and aligned to 2 MiB, so the kernel
/// backs it with transparent huge pages where it can: touching it costs one
/// fault per 2 MiB instead of one per 4 KiB page. A capture lives for one
/// process run, so every buffer is touched for the first time; those faults
/// were most of a small or incremental capture's memory phase.
package struct PageBuffer: ~Copyable, @unchecked Sendable {
    /// The transparent huge page size on x86-64.
    package static let hugePage = 2 << 20
    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    /// The usable bytes: `count` of them from `base`, 2 MiB aligned.
    package let base: UnsafeMutableRawPointer
    package let count: Int

    /// Maps `bytes` (at least one byte). Failing to map is running out of memory: it traps.
    package init(bytes: Int) {
        precondition(bytes > 0, "a page buffer needs at least one byte")
        let rounded = (bytes + PageBuffer.hugePage - 1) / PageBuffer.hugePage * PageBuffer.hugePage
        mappingLength = rounded + PageBuffer.hugePage
        guard let mapped = mmap(nil, mappingLength, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapped != MAP_FAILED else {
            fatalError("mmap of \(mappingLength) bytes failed: (\(errno)) \(String(cString: strerror(errno)))")
        }
        mapping = mapped
        let aligned = (UInt(bitPattern: mapped) + UInt(PageBuffer.hugePage - 1)) & ~UInt(PageBuffer.hugePage - 1)
        base = UnsafeMutableRawPointer(bitPattern: aligned)!
        count = bytes
        // Advice only: without transparent huge pages the memory works the same, page by page.
        _ = madvise(base, rounded, MADV_HUGEPAGE)
    }

    deinit { munmap(mapping, mappingLength) }

    /// The bytes `range` of the buffer.
    package func slice(_ range: Range<Int>) -> UnsafeMutableRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "slice beyond the buffer")
        return UnsafeMutableRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Faults the pages in for writing without changing their bytes
    /// (madvise MADV_POPULATE_WRITE, Linux 5.14). Advice only: on an older
    /// kernel the pages are faulted in when first written, as before.
    package func populate() {
        guard let base = baseAddress, count > 0 else { return }
        _ = madvise(base, count, MADV_POPULATE_WRITE)
    }
}

/// Zero-filled memory from calloc(3), freed in `deinit`. Large blocks come
/// straight from mmap, so until written they read from the kernel's shared zero
/// page: nothing is faulted in for reading them.
package struct ZeroedMemory: ~Copyable {
    /// The `count` zero bytes.
    package let base: UnsafeMutableRawPointer
    package let count: Int

    /// Allocates `bytes` zeros. Failing to is running out of memory: it traps.
    package init(bytes: Int) {
        guard let memory = calloc(1, max(1, bytes)) else { fatalError("calloc of \(bytes) bytes failed") }
        base = memory
        count = bytes
    }

    deinit { free(base) }
}

/// Byte comparisons of raw memory, with libc's vectorized memcmp(3).
package enum RawMemory {
    /// Whether the `count` bytes at `a` and `b` are equal (memcmp(3) == 0).
    @inlinable
    package static func equal(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
        memcmp(a, b, count) == 0
    }
}

import LinuxKernel
import CZstd
import Synchronization

/// zstd compression of page frames and large sections (§6.1), over libzstd.
enum Zstd {
    /// Contexts kept for reuse. A fresh context per call costs its allocation and
    /// page faults every time (spec/decisions/0017-threading-model.md); sections are compressed and
    /// frames decompressed on many threads, so a context is borrowed from here for
    /// the length of one call. (Frame compression uses its workers' own contexts.)
    private static let compressors = ContextPool(make: { ZSTD_createCCtx() })
    private static let decompressors = ContextPool(make: { ZSTD_createDCtx() })

    /// Compresses `input` as one zstd frame at `level`, with the content size
    /// in the frame header and no zstd checksum (the block checksum covers it).
    static func compress(_ input: UnsafeRawBufferPointer, level: Int32) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        // The output is written by zstd before it is read: no need to zero it first.
        return [UInt8](unsafeUninitializedCapacity: bound) { out, count in
            let written = compressors.borrow { context in
                ZSTD_compressCCtx(context, out.baseAddress, bound, input.baseAddress, input.count, level)
            }
            // ZSTD_compress only fails on a too-small buffer or a bad level: programmer errors.
            precondition(ZSTD_isError(written) == 0, "ZSTD_compress: \(String(cString: ZSTD_getErrorName(written)))")
            count = written
        }
    }

    /// The most bytes compressing `count` bytes can produce (ZSTD_compressBound).
    static func compressBound(_ count: Int) -> Int { ZSTD_compressBound(count) }

    /// Compresses `input` as one zstd frame at `level` into `output`, which must hold
    /// ``compressBound(_:)`` bytes, with a compression thread's own `context`;
    /// returns the compressed length.
    static func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, level: Int32,
                         context: borrowing ZstdCompressor) -> Int {
        precondition(output.count >= ZSTD_compressBound(input.count), "zstd output buffer too small")
        let written = ZSTD_compressCCtx(context.context, output.baseAddress, output.count, input.baseAddress, input.count, level)
        precondition(ZSTD_isError(written) == 0, "ZSTD_compress: \(String(cString: ZSTD_getErrorName(written)))")
        return written
    }

    /// Decompresses one zstd frame whose content must be exactly `expected`
    /// bytes (§10: the size comes from the block header, checked against the
    /// limits, so a decompression bomb cannot allocate more).
    static func decompress(_ input: ArraySlice<UInt8>, expected: Int) throws(ImageError) -> [UInt8] {
        // zstd writes every byte it reports; the length is checked against `expected` below.
        var result: Result<Int, ImageError> = .success(0)
        let output = [UInt8](unsafeUninitializedCapacity: expected) { buffer, count in
            result = input.withUnsafeBytes { inp in decompressInto(inp, UnsafeMutableRawBufferPointer(buffer)) }
            if case .success(let n) = result, n == expected { count = n } else { count = 0 }
        }
        switch result {
        case .success(let n) where n == expected: return output
        case .success(let n):
            throw ImageError(.structural, "zstd frame holds \(n) bytes, block header says \(expected)")
        case .failure(let error): throw error
        }
    }

    static func decompressInto(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) -> Result<Int, ImageError> {
        let size = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        if size == ZSTD_CONTENTSIZE_ERROR {
            return .failure(ImageError(.structural, "payload is not a zstd frame"))
        }
        if size != ZSTD_CONTENTSIZE_UNKNOWN && size > UInt64(output.count) {
            return .failure(ImageError(.limitExceeded, "zstd frame claims \(size) bytes, more than the \(output.count) its block allows"))
        }
        let n = decompressors.borrow { context in
            ZSTD_decompressDCtx(context, output.baseAddress, output.count, input.baseAddress, input.count)
        }
        if ZSTD_isError(n) != 0 {
            let name = String(cString: ZSTD_getErrorName(n))
            return .failure(ImageError(.structural, "zstd frame does not decompress", cause: name))
        }
        return .success(n)
    }
}

/// A stack of zstd contexts shared by the compression threads; each is used by one thread at a time.
/// (A zstd context is used by one thread at a time, so handing the pointers between
/// threads under the Mutex is sound although OpaquePointer is not Sendable.)
private final class ContextPool: Sendable {
    private struct Context: @unchecked Sendable { let pointer: OpaquePointer }
    private let free = Mutex<[Context]>([])
    private let make: @Sendable () -> OpaquePointer?

    init(make: @escaping @Sendable () -> OpaquePointer?) { self.make = make }

    func borrow<R>(_ body: (OpaquePointer) -> R) -> R {
        let reused = free.withLock { $0.popLast()?.pointer }
        // Failing to allocate a zstd context is running out of memory: not recoverable here.
        guard let context = reused ?? make() else { fatalError("zstd: cannot allocate a context") }
        let result = body(context)
        free.withLock { $0.append(Context(pointer: context)) }
        return result
    }
}

/// One thread's zstd compression context (ZSTD_createCCtx), freed with it.
struct ZstdCompressor: ~Copyable {
    fileprivate let context: OpaquePointer

    /// Allocates the context and, with `frameBytes`, sizes its tables for frames of
    /// that length at `level` now, by compressing that many zeros: a context's first
    /// use at a size allocates and faults in its tables (spec/decisions/0017-threading-model.md).
    init(warmFor frameBytes: Int, level: Int32) {
        // Failing to allocate a zstd context is running out of memory: not recoverable here.
        guard let context = ZSTD_createCCtx() else { fatalError("zstd: cannot allocate a context") }
        self.context = context
        // calloc'd zeros are read from the shared zero page: nothing is faulted in for them.
        let bound = ZSTD_compressBound(frameBytes)
        let zeros = ZeroedMemory(bytes: frameBytes)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: bound, alignment: 16)
        defer { scratch.deallocate() }
        _ = ZSTD_compressCCtx(context, scratch, bound, zeros.base, frameBytes, level)
    }

    deinit { ZSTD_freeCCtx(context) }
}

import CZstd

/// zstd compression of page frames and large sections (§6.1), over libzstd.
enum Zstd {
    /// Compresses `input` as one zstd frame at `level`, with the content size
    /// in the frame header and no zstd checksum (the block checksum covers it).
    static func compress(_ input: UnsafeRawBufferPointer, level: Int32) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        // The output is written by zstd before it is read: no need to zero it first.
        return [UInt8](unsafeUninitializedCapacity: bound) { out, count in
            let written = ZSTD_compress(out.baseAddress, bound, input.baseAddress, input.count, level)
            // ZSTD_compress only fails on a too-small buffer or a bad level: programmer errors.
            precondition(ZSTD_isError(written) == 0, "ZSTD_compress: \(String(cString: ZSTD_getErrorName(written)))")
            count = written
        }
    }

    /// Decompresses one zstd frame whose content must be exactly `expected`
    /// bytes (§10: the size comes from the block header, checked against the
    /// limits, so a decompression bomb cannot allocate more).
    static func decompress(_ input: ArraySlice<UInt8>, expected: Int) throws(ImageError) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: expected)
        let result = input.withUnsafeBytes { inp in
            output.withUnsafeMutableBytes { out in
                decompressInto(inp, out)
            }
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
        let n = ZSTD_decompress(output.baseAddress, output.count, input.baseAddress, input.count)
        if ZSTD_isError(n) != 0 {
            let name = String(cString: ZSTD_getErrorName(n))
            return .failure(ImageError(.structural, "zstd frame does not decompress", cause: name))
        }
        return .success(n)
    }
}

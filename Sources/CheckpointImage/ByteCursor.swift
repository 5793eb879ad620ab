import LinuxKernel
/// The one reader of untrusted bytes (§1): every length, count and offset read
/// from an image goes through its checked arithmetic before it indexes or
/// allocates anything.
package struct ByteCursor {
    let bytes: [UInt8]
    package private(set) var position: Int
    /// What the bytes are, for error messages (e.g. "header").
    let what: String
    /// Where `bytes[0]` is in the file.
    let base: UInt64

    package init(_ bytes: [UInt8], what: String, base: UInt64 = 0) {
        self.bytes = bytes
        self.position = 0
        self.what = what
        self.base = base
    }

    var remaining: Int { bytes.count - position }
    var isAtEnd: Bool { position >= bytes.count }

    private func fail(_ code: ImageError.Code, _ message: String) -> ImageError {
        ImageError(code, message, location: what, offset: base &+ UInt64(position))
    }

    /// Moves to `offset` from the start, for formats addressed by offsets (ELF);
    /// an offset past the end is a truncation.
    package mutating func seek(to offset: UInt64) throws(ImageError) {
        guard offset <= UInt64(bytes.count) else {
            throw fail(.truncated, "offset \(offset) is past the end (\(bytes.count) bytes)")
        }
        position = Int(offset)
    }

    package mutating func readBytes(_ count: Int) throws(ImageError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw fail(.truncated, "needs \(count) bytes, \(remaining) left")
        }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    package mutating func readLE<T: FixedWidthInteger>(_: T.Type) throws(ImageError) -> T {
        let size = MemoryLayout<T>.size
        let slice = try readBytes(size)
        var value: T = 0
        for (shift, byte) in slice.enumerated() {
            value |= T(truncatingIfNeeded: byte) << (shift * 8)
        }
        return value
    }

    /// §6.2 An unsigned LEB128 varint of at most 10 bytes.
    mutating func readVarint() throws(ImageError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else { throw fail(.truncated, "varint runs past the end") }
            let byte = bytes[position]
            position += 1
            if shift == 63 && byte > 1 { throw fail(.structural, "varint overflows 64 bits") }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 { throw fail(.structural, "varint longer than 10 bytes") }
        }
    }
}

/// Varint encoding for the writer (little-endian integers: `appendLE`, LinuxKernel).
extension Array where Element == UInt8 {
    mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        append(UInt8(v))
    }
}

/// Checked arithmetic for sizes read from files: overflow is an input error, not a trap.
package func checkedAdd(_ a: UInt64, _ b: UInt64, _ what: @autoclosure () -> String) throws(ImageError) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    if overflow { throw ImageError(.structural, "\(what()) overflows 64 bits") }
    return sum
}

func checkedMultiply(_ a: UInt64, _ b: UInt64, _ what: @autoclosure () -> String) throws(ImageError) -> UInt64 {
    let (product, overflow) = a.multipliedReportingOverflow(by: b)
    if overflow { throw ImageError(.structural, "\(what()) overflows 64 bits") }
    return product
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws ``ImageError`` (the standard one rethrows untyped).
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(ImageError) -> R) throws(ImageError) -> R {
        let result: Result<R, ImageError> = withUnsafeBytes { raw in
            Result { () throws(ImageError) in try body(raw) }
        }
        return try result.get()
    }
}

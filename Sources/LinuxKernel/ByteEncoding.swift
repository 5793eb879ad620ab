/// Little-endian encoding and decoding of integers, for kernel ABI structs and the
/// image writer alike (x86-64 and the image format are both little-endian).
extension Array where Element == UInt8 {
    /// Appends `value` in little-endian byte order.
    package mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { append(contentsOf: $0) }
    }
}

extension Collection where Element == UInt8, Index == Int {
    /// The little-endian `T` at byte `offset`; the caller checks that it fits.
    package func loadLE<T: FixedWidthInteger>(_: T.Type = T.self, at offset: Int) -> T {
        precondition(offset >= startIndex && offset + MemoryLayout<T>.size <= endIndex, "read beyond the bytes")
        var value = T.zero
        for i in 0..<MemoryLayout<T>.size { value |= T(self[offset + i]) << (8 * i) }
        return value
    }
}

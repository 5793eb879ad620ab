import CXxhash

/// An XXH3-128 digest (§6.3), stored in the canonical big-endian form of
/// `XXH128_canonicalFromHash`: the high 64 bits first.
public struct PageHash: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// XXH3-128 of `bytes` (`XXH3_128bits`).
    public init(of bytes: UnsafeRawBufferPointer) {
        let h = XXH3_128bits(bytes.baseAddress, bytes.count)
        self.init(high: h.high64, low: h.low64)
    }

    public init(of bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { PageHash(of: $0) }
    }

    /// Reads the 16-byte canonical form.
    init(canonical bytes: ArraySlice<UInt8>) {
        precondition(bytes.count == 16)
        var high: UInt64 = 0
        var low: UInt64 = 0
        let start = bytes.startIndex
        for i in 0..<8 {
            high = high << 8 | UInt64(bytes[start + i])
            low = low << 8 | UInt64(bytes[start + 8 + i])
        }
        self.init(high: high, low: low)
    }

    /// The 16-byte canonical form.
    public var canonical: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for i in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: high >> (UInt64(i) * 8))) }
        for i in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: low >> (UInt64(i) * 8))) }
        return out
    }

    /// 32 lowercase hex digits.
    public var description: String {
        canonical.map { byte in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
    }

    /// The hash of an all-zero page of `pageSize` bytes.
    public static func zeroPage(pageSize: Int) -> PageHash {
        [UInt8](repeating: 0, count: pageSize).withUnsafeBytes { PageHash(of: $0) }
    }
}

extension Array where Element == UInt8 {
    /// Appends the 16-byte canonical form of `hash` (§6.3) without a temporary array.
    mutating func appendCanonical(_ hash: PageHash) {
        var high = hash.high.bigEndian, low = hash.low.bigEndian
        Swift.withUnsafeBytes(of: &high) { append(contentsOf: $0) }
        Swift.withUnsafeBytes(of: &low) { append(contentsOf: $0) }
    }
}

/// XXH3-64 over several pieces, as every block checksum is computed (§4): the
/// block header's first 32 bytes, then the payload.
func xxh3Checksum(_ pieces: UnsafeRawBufferPointer...) -> UInt64 {
    guard let state = XXH3_createState() else { fatalError("XXH3_createState: out of memory") }
    defer { XXH3_freeState(state) }
    XXH3_64bits_reset(state)
    for piece in pieces where piece.count > 0 {
        XXH3_64bits_update(state, piece.baseAddress, piece.count)
    }
    return XXH3_64bits_digest(state)
}

func xxh3Checksum(_ bytes: [UInt8]) -> UInt64 {
    bytes.withUnsafeBytes { XXH3_64bits($0.baseAddress, $0.count) }
}

func xxh3Checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
    bytes.withUnsafeBytes { XXH3_64bits($0.baseAddress, $0.count) }
}

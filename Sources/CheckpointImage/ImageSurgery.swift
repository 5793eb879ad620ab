import LinuxKernel
/// Byte-level tools for building the damaged-image corpus (fixtures only):
/// they reseal checksums after a deliberate change so a test can reach the
/// checks that lie behind the checksum.
@_spi(Fixtures) public enum ImageSurgery {
    /// Recomputes the header checksum (§3.1) of an image in `bytes`.
    public static func resealHeader(_ bytes: inout [UInt8]) {
        let bodyLength = Int(bytes[12]) | Int(bytes[13]) << 8 | Int(bytes[14]) << 16 | Int(bytes[15]) << 24
        let end = ImageFormat.headerPrefixLength + bodyLength
        var sum: [UInt8] = []
        sum.appendLE(xxh3Checksum(bytes[0..<end]))
        bytes.replaceSubrange(end..<(end + 8), with: sum)
    }

    /// Recomputes the checksum of the block at `offset` (§4), trusting its payload length.
    public static func resealBlock(_ bytes: inout [UInt8], at offset: Int) {
        var header = try! BlockHeader.decode(Array(bytes[offset..<(offset + ImageFormat.blockHeaderLength)]), offset: UInt64(offset))
        let start = offset + ImageFormat.blockHeaderLength
        let payload = Array(bytes[start..<min(bytes.count, start + Int(min(header.payloadLength, UInt64(bytes.count))))])
        header.checksum = payload.withUnsafeBytes { header.computeChecksum(payload: $0) }
        bytes.replaceSubrange(offset..<(offset + ImageFormat.blockHeaderLength), with: header.encoded)
    }

    /// Replaces the index payload with `index` and rewrites the footer (§7).
    public static func replaceIndex(_ bytes: inout [UInt8], indexOffset: Int, with index: Ccimg_V1_Index) throws {
        let payload: [UInt8] = try index.serializedBytes()
        var header = BlockHeader(typeTag: BlockType.index.rawValue, kind: 0, version: 1, flags: [], aux: 0,
                                 payloadLength: UInt64(payload.count), aux64: UInt64(payload.count))
        header.checksum = payload.withUnsafeBytes { header.computeChecksum(payload: $0) }
        bytes.removeSubrange(indexOffset...)
        bytes += header.encoded + payload
        bytes += Footer(indexOffset: UInt64(indexOffset), indexLength: UInt64(bytes.count - indexOffset)).encoded
    }

    /// Sets a block header's payload length field (offset 16) without resealing.
    public static func setPayloadLength(_ bytes: inout [UInt8], blockAt offset: Int, to length: UInt64) {
        var out: [UInt8] = []
        out.appendLE(length)
        bytes.replaceSubrange((offset + 16)..<(offset + 24), with: out)
    }
}

/// zstd as frames use it (§6.1), for fixture tools that rebuild frames.
@_spi(Fixtures) public enum FrameCodec {
    public static func compress(_ raw: UnsafeRawBufferPointer) -> [UInt8] {
        Zstd.compress(raw, level: ImageFormat.frameCompressionLevel)
    }

    /// Decompresses a frame of unknown size, up to 64 MiB.
    public static func decompress(_ compressed: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 64 << 20)
        let n = try compressed.withUnsafeBytes { inp in
            try out.withUnsafeMutableBytes { o in try Zstd.decompressInto(inp, o).get() }
        }
        return Array(out.prefix(n))
    }
}

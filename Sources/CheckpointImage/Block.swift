import LinuxKernel
/// §4 The 40-byte header that opens every block after the image header.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | type tag (``BlockType``) |
/// | 4 | 4 | kind: the section kind; 0 for frames and the index |
/// | 8 | 2 | version of the block's content |
/// | 10 | 2 | flags (``BlockFlags``) |
/// | 12 | 4 | aux: pages in a frame; 0 otherwise |
/// | 16 | 8 | payload length in bytes, as stored |
/// | 24 | 8 | aux64: first page ordinal of a frame; decompressed length otherwise |
/// | 32 | 8 | XXH3-64 of header bytes 0..<32 followed by the payload |
struct BlockHeader: Equatable {
    var typeTag: UInt32
    var kind: UInt32
    var version: UInt16
    var flags: BlockFlags
    var aux: UInt32
    var payloadLength: UInt64
    var aux64: UInt64
    var checksum: UInt64 = 0

    var type: BlockType? { BlockType(rawValue: typeTag) }

    /// The first 32 bytes: everything the checksum covers.
    var checkedPrefix: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(ImageFormat.blockHeaderLength)
        out.appendLE(typeTag)
        out.appendLE(kind)
        out.appendLE(version)
        out.appendLE(flags.rawValue)
        out.appendLE(aux)
        out.appendLE(payloadLength)
        out.appendLE(aux64)
        return out
    }

    /// Computes the checksum over this header and `payload`.
    func computeChecksum(payload: UnsafeRawBufferPointer) -> UInt64 {
        let prefix = checkedPrefix
        return prefix.withUnsafeBytes { xxh3Checksum($0, payload) }
    }

    /// The 40 encoded bytes.
    var encoded: [UInt8] {
        var out = checkedPrefix
        out.appendLE(checksum)
        return out
    }

    /// Decodes a block header; checks only its shape, not its checksum.
    static func decode(_ bytes: [UInt8], offset: UInt64) throws(ImageError) -> BlockHeader {
        var cursor = ByteCursor(bytes, what: "block header", base: offset)
        return BlockHeader(
            typeTag: try cursor.readLE(UInt32.self),
            kind: try cursor.readLE(UInt32.self),
            version: try cursor.readLE(UInt16.self),
            flags: BlockFlags(rawValue: try cursor.readLE(UInt16.self)),
            aux: try cursor.readLE(UInt32.self),
            payloadLength: try cursor.readLE(UInt64.self),
            aux64: try cursor.readLE(UInt64.self),
            checksum: try cursor.readLE(UInt64.self))
    }

    /// Human name of the block for error messages: "section threads", "frame 3", "index".
    func name(frameNumber: Int? = nil) -> String {
        switch type {
        case .section:
            let k = SectionKind(rawValue: kind).map(\.name) ?? "kind \(kind)"
            return "section \(k)"
        case .frame: return frameNumber.map { "frame \($0)" } ?? "frame at page \(aux64)"
        case .index: return "index"
        case nil: return "block with unknown type 0x\(String(typeTag, radix: 16))"
        }
    }

    /// §10 The largest payload this block type may have.
    func payloadLimit(pageSize: UInt32, pagesPerFrame: UInt32) -> UInt64 {
        switch type {
        case .frame:
            // A zstd frame never exceeds its compress bound; allow that plus a margin.
            let raw = UInt64(pageSize) * UInt64(pagesPerFrame)
            return raw + raw / 128 + 1024
        case .index: return UInt64(ImageLimits.maxIndexPayload)
        default: return UInt64(ImageLimits.maxSectionPayload)
        }
    }
}

/// §7.2 The 32-byte footer at the end of every image.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `CCIMGEND` |
/// | 8 | 8 | file offset of the index block |
/// | 16 | 8 | length of the index block, header included |
/// | 24 | 8 | XXH3-64 of footer bytes 0..<24 |
struct Footer: Equatable {
    var indexOffset: UInt64
    var indexLength: UInt64

    var encoded: [UInt8] {
        var out = ImageFormat.footerMagic
        out.appendLE(indexOffset)
        out.appendLE(indexLength)
        out.appendLE(xxh3Checksum(out))
        return out
    }

    static func decode(_ bytes: [UInt8], offset: UInt64) throws(ImageError) -> Footer {
        var cursor = ByteCursor(bytes, what: "footer", base: offset)
        let magic = try cursor.readBytes(8)
        guard Array(magic) == ImageFormat.footerMagic else {
            throw ImageError(.badMagic, "footer magic is not CCIMGEND (the file is truncated or not a complete image)",
                             location: "footer", offset: offset)
        }
        let indexOffset = try cursor.readLE(UInt64.self)
        let indexLength = try cursor.readLE(UInt64.self)
        let stored = try cursor.readLE(UInt64.self)
        guard stored == xxh3Checksum(bytes[0..<24]) else {
            throw ImageError(.checksumMismatch, "footer checksum does not match", location: "footer", offset: offset)
        }
        return Footer(indexOffset: indexOffset, indexLength: indexLength)
    }
}

import LinuxKernel
import SwiftProtobuf

/// §3 The image header: the fixed prefix and the protobuf body.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `89 43 43 49 4D 47 0D 0A` |
/// | 8 | 2 | format major |
/// | 10 | 2 | format minor |
/// | 12 | 4 | body length N |
/// | 16 | 8 | compatible features |
/// | 24 | 8 | read-only-compatible features |
/// | 32 | 8 | incompatible features |
/// | 40 | 8 | reserved, zero |
/// | 48 | N | body: `ImageHeader` message (spec/ccimg.proto) |
/// | 48+N | 8 | XXH3-64 of bytes 0..<48+N |
public struct ImageHeaderInfo: Sendable {
    public var major: UInt16
    public var minor: UInt16
    public var features: FeatureFlags
    public var body: Ccimg_V1_ImageHeader
    /// Bytes the header occupies in the file.
    public var encodedLength: Int

    public var pageSize: Int { Int(body.pageSize) }
    public var pagesPerFrame: Int { Int(body.pagesPerFrame) }
    public var uuid: ImageUUID { ImageUUID(bytes: body.imageUuid) }
    public var hasParent: Bool { body.hasParent }

    init(features: FeatureFlags, body: Ccimg_V1_ImageHeader) {
        major = ImageFormat.major
        minor = ImageFormat.minor(for: features)
        self.features = features
        self.body = body
        encodedLength = 0
    }

    /// Encodes the header for writing.
    func encode() throws(ImageError) -> [UInt8] {
        let bodyBytes: [UInt8]
        do { bodyBytes = try body.serializedBytes() } catch {
            throw ImageError(.io, "cannot encode the header", cause: "\(error)")
        }
        var out = ImageFormat.magic
        out.appendLE(major)
        out.appendLE(minor)
        out.appendLE(UInt32(bodyBytes.count))
        out.appendLE(features.compatible)
        out.appendLE(features.readOnlyCompatible)
        out.appendLE(features.incompatible)
        out.appendLE(UInt64(0))
        out += bodyBytes
        out.appendLE(xxh3Checksum(out))
        return out
    }

    /// Decodes and checks a header from the start of an image. `read` returns
    /// the next `n` bytes of the file (fewer at its end).
    static func decode(read: (Int) throws(ImageError) -> [UInt8]) throws(ImageError) -> ImageHeaderInfo {
        let prefix = try read(ImageFormat.headerPrefixLength)
        if prefix.count < ImageFormat.magic.count || Array(prefix[0..<8]) != ImageFormat.magic {
            if prefix.count < ImageFormat.magic.count && ImageFormat.magic.starts(with: prefix) {
                throw ImageError(.truncated, "file ends inside the magic", location: "header", offset: 0)
            }
            throw ImageError(.badMagic, "not a checkpoint image (no CCIMG magic at offset 0)", location: "header", offset: 0)
        }
        guard prefix.count == ImageFormat.headerPrefixLength else {
            throw ImageError(.truncated, "file ends inside the header", location: "header", offset: UInt64(prefix.count))
        }
        var cursor = ByteCursor(prefix, what: "header")
        _ = try cursor.readBytes(8)
        let major = try cursor.readLE(UInt16.self)
        let minor = try cursor.readLE(UInt16.self)
        let bodyLength = try cursor.readLE(UInt32.self)
        let features = FeatureFlags(
            compatible: try cursor.readLE(UInt64.self),
            readOnlyCompatible: try cursor.readLE(UInt64.self),
            incompatible: try cursor.readLE(UInt64.self))
        guard Int(bodyLength) <= ImageLimits.maxHeaderBody else {
            throw ImageError(.limitExceeded, "header body of \(bodyLength) bytes exceeds \(ImageLimits.maxHeaderBody)",
                             location: "header", offset: 12)
        }
        let rest = try read(Int(bodyLength) + 8)
        guard rest.count == Int(bodyLength) + 8 else {
            throw ImageError(.truncated, "file ends inside the header", location: "header",
                             offset: UInt64(ImageFormat.headerPrefixLength + rest.count))
        }
        let covered = prefix + rest[0..<Int(bodyLength)]
        var tail = ByteCursor(Array(rest[Int(bodyLength)...]), what: "header", base: UInt64(covered.count))
        let stored = try tail.readLE(UInt64.self)
        guard stored == xxh3Checksum(covered) else {
            throw ImageError(.checksumMismatch, "header checksum does not match", location: "header",
                             offset: UInt64(covered.count))
        }
        // §9 Version and feature checks come after the checksum, so a flipped bit reads as damage.
        guard major == ImageFormat.major else {
            throw ImageError(.unsupported, "format version \(major).\(minor) is not supported by this reader (reads \(ImageFormat.major).x)",
                             location: "header", offset: 8)
        }
        let unknownIncompatible = features.incompatible & ~FeatureFlags.knownIncompatible
        guard unknownIncompatible == 0 else {
            throw ImageError(.unsupported, "image uses incompatible features 0x\(String(unknownIncompatible, radix: 16)) unknown to this reader",
                             location: "header", offset: 32)
        }
        let body: Ccimg_V1_ImageHeader
        do {
            body = try Ccimg_V1_ImageHeader(serializedBytes: Array(rest[0..<Int(bodyLength)]))
        } catch {
            throw ImageError(.structural, "header body is not a valid ImageHeader record", location: "header",
                             offset: UInt64(ImageFormat.headerPrefixLength), cause: "\(error)")
        }
        guard body.pageSize >= ImageLimits.minPageSize, body.pageSize <= ImageLimits.maxPageSize,
              body.pageSize & (body.pageSize - 1) == 0 else {
            throw ImageError(.limitExceeded, "page size \(body.pageSize) is not a power of two in 4096...65536", location: "header")
        }
        guard body.pagesPerFrame >= 1, body.pagesPerFrame <= ImageLimits.maxPagesPerFrame else {
            throw ImageError(.limitExceeded, "pages per frame \(body.pagesPerFrame) is not in 1...\(ImageLimits.maxPagesPerFrame)", location: "header")
        }
        guard body.imageUuid.count == 16 else {
            throw ImageError(.structural, "image UUID is \(body.imageUuid.count) bytes, not 16", location: "header")
        }
        if body.hasParent {
            guard body.parent.parentUuid.count == 16, body.parent.parentIndexDigest.count == 16 else {
                throw ImageError(.structural, "parent link must hold a 16-byte UUID and a 16-byte digest", location: "header")
            }
            guard features.incompatible & FeatureFlags.incompatibleParent != 0 else {
                throw ImageError(.structural, "image names a parent but lacks the parent feature bit", location: "header")
            }
        }
        var info = ImageHeaderInfo(features: features, body: body)
        info.major = major
        info.minor = minor
        info.encodedLength = covered.count + 8
        return info
    }
}

/// A 16-byte image identity (§3.2).
public struct ImageUUID: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(bytes: some Sequence<UInt8>) { self.bytes = Array(bytes) }

    /// A new random (version 4) UUID.
    public static func random() -> ImageUUID {
        // Two draws of 64 bits: two getrandom(2) calls rather than sixteen.
        var g = SystemRandomNumberGenerator()
        var b = withUnsafeBytes(of: (g.next(), g.next())) { Array($0) }
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        return ImageUUID(bytes: b)
    }

    /// A version-4 UUID drawn from `generator` (fixtures use a seeded one).
    public static func deterministic<G: RandomNumberGenerator>(using generator: inout G) -> ImageUUID {
        var b = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        return ImageUUID(bytes: b)
    }

    /// Parses the form ``description`` prints (8-4-4-4-12 hex digits); nil for anything else.
    public init?(parsing text: String) {
        let digits = Array(text.utf8.filter { $0 != UInt8(ascii: "-") })
        guard digits.count == 32, text.utf8.count == 36 else { return nil }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: 32, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    public var description: String {
        let hex = bytes.map { $0.hex(width: 2) }
        guard hex.count == 16 else { return hex.joined() }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }
}

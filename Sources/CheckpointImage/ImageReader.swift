import LinuxKernel
import Synchronization
import SwiftProtobuf

/// Reads an image file at random (§7): footer → index → any section or page
/// frame, each checked against its checksum as it is read.
///
/// Opening checks the header, footer and index, and decodes and validates the
/// memory map and page map; page contents are read lazily, one frame at a time.
public final class ImageReader: Sendable {
    public let path: String
    public let header: ImageHeaderInfo
    public let fileSize: UInt64
    /// §7.1 The decoded index.
    public let index: Ccimg_V1_Index
    /// §8 XXH3-128 of the index block's payload, as a child records it.
    public let indexDigest: PageHash
    public let indexOffset: UInt64
    /// §5.3 The VMAs, ascending.
    public let memoryMap: [Ccimg_V1_Vma]
    /// §6.2 The page states of each VMA, parallel to ``memoryMap``.
    public let pageTables: [VmaPageTable]

    let descriptor: OwnedDescriptor
    /// The last frame read by ``frame(_:)``, for callers reading page after page of one frame.
    private let cachedFrame = Mutex<(number: Int, bytes: [UInt8])?>(nil)

    /// Opens and checks `path`.
    public init(path: String) throws(ImageError) {
        self.path = path
        do throws(ImageError) {
            let descriptor = try OwnedDescriptor(readingImageAt: path)
            let size = try descriptor.size()
            var position: UInt64 = 0
            let header = try ImageHeaderInfo.decode { (n) throws(ImageError) in
                let available = Int(min(UInt64(n), size - min(size, position)))
                let bytes = try descriptor.read(at: position, count: available)
                position += UInt64(available)
                return bytes
            }
            let headerLength = UInt64(header.encodedLength)
            guard size >= headerLength + UInt64(ImageFormat.blockHeaderLength + ImageFormat.footerLength) else {
                throw ImageError(.truncated, "file ends before an index and footer (\(size) bytes)", offset: size)
            }
            let footerOffset = size - UInt64(ImageFormat.footerLength)
            let footer = try Footer.decode(try descriptor.read(at: footerOffset, count: ImageFormat.footerLength), offset: footerOffset)
            guard footer.indexOffset >= headerLength,
                  footer.indexLength >= UInt64(ImageFormat.blockHeaderLength),
                  footer.indexOffset <= footerOffset,
                  footer.indexLength == footerOffset - footer.indexOffset else {
                throw ImageError(.structural, "footer points at an index (\(footer.indexOffset)+\(footer.indexLength)) that does not end at the footer",
                                 location: "footer", offset: footerOffset)
            }
            let (indexBlock, indexPayload) = try ImageReader.readBlock(
                descriptor, at: footer.indexOffset, expect: .index, limit: UInt64(ImageLimits.maxIndexPayload),
                fileSize: size, name: "index")
            guard UInt64(ImageFormat.blockHeaderLength) + indexBlock.payloadLength == footer.indexLength else {
                throw ImageError(.structural, "index block length disagrees with the footer", location: "index", offset: footer.indexOffset)
            }
            let index = try ImageReader.parseIndex(indexPayload, header: header, offset: footer.indexOffset)
            (memoryMap, pageTables) = try ImageReader.loadMemory(
                map: try ImageReader.section(.memoryMap, as: Ccimg_V1_MemoryMap.self, of: index, descriptor, fileSize: size, path: path),
                pages: try ImageReader.section(.pageMap, as: Ccimg_V1_PageMap.self, of: index, descriptor, fileSize: size, path: path),
                header: header, storedPages: index.storedPages)
            self.descriptor = descriptor
            self.header = header
            self.fileSize = size
            self.index = index
            self.indexOffset = footer.indexOffset
            self.indexDigest = indexPayload.withUnsafeBytes { PageHash(of: $0) }
        } catch {
            throw error.at(path: path)
        }
    }

    // MARK: Sections

    /// The index entry of `kind`, if the image has that section.
    public func sectionEntry(_ kind: SectionKind) -> Ccimg_V1_SectionEntry? {
        index.sections.first { $0.kind == kind.rawValue }
    }

    /// The payload of a section, checked and decompressed.
    public func sectionPayload(_ entry: Ccimg_V1_SectionEntry) throws(ImageError) -> [UInt8] {
        try ImageReader.sectionPayload(entry, descriptor: descriptor, fileSize: fileSize, path: path)
    }

    static func sectionPayload(_ entry: Ccimg_V1_SectionEntry, descriptor: borrowing OwnedDescriptor, fileSize: UInt64,
                               path: String) throws(ImageError) -> [UInt8] {
        let name = SectionKind(rawValue: entry.kind).map { "section \($0.name)" } ?? "section kind \(entry.kind)"
        do throws(ImageError) {
            let (header, payload) = try ImageReader.readBlock(
                descriptor, at: entry.offset, expect: .section, limit: UInt64(ImageLimits.maxSectionPayload),
                fileSize: fileSize, name: name)
            guard header.kind == entry.kind, UInt64(ImageFormat.blockHeaderLength) + header.payloadLength == entry.length else {
                throw ImageError(.structural, "block disagrees with its index entry", location: name, offset: entry.offset)
            }
            return payload
        } catch {
            throw error.at(path: path)
        }
    }

    /// Decodes section `kind` as `type`; nil when the image has no such section.
    public func section<M: SwiftProtobuf.Message>(_ kind: SectionKind, as type: M.Type) throws(ImageError) -> M? {
        guard let entry = sectionEntry(kind) else { return nil }
        let message = try ImageReader.decodeSection(try sectionPayload(entry), as: M.self, kind: kind, offset: entry.offset, path: path)
        if let table = message as? Ccimg_V1_HandleTable { try OpenFileTable.check(table, features: header.features, path: path, offset: entry.offset) }
        return message
    }

    /// Section `kind` of the image behind `descriptor` decoded as `type`; empty when `index` lists none.
    static func section<M: SwiftProtobuf.Message>(_ kind: SectionKind, as type: M.Type, of index: Ccimg_V1_Index,
                                                  _ descriptor: borrowing OwnedDescriptor, fileSize: UInt64,
                                                  path: String) throws(ImageError) -> M {
        guard let entry = index.sections.first(where: { $0.kind == kind.rawValue }) else { return M() }
        let payload = try ImageReader.sectionPayload(entry, descriptor: descriptor, fileSize: fileSize, path: path)
        return try ImageReader.decodeSection(payload, as: M.self, kind: kind, offset: entry.offset, path: path)
    }

    /// §5.3 A section's payload decoded as its record.
    static func decodeSection<M: SwiftProtobuf.Message>(_ payload: [UInt8], as type: M.Type, kind: SectionKind, offset: UInt64,
                                                        path: String?) throws(ImageError) -> M {
        do {
            return try M(serializedBytes: payload)
        } catch {
            throw ImageError(.structural, "section is not a valid \(M.protoMessageName) record", path: path,
                             location: "section \(kind.name)", offset: offset, cause: "\(error)")
        }
    }

    // MARK: Memory

    /// The index in ``memoryMap`` of the VMA containing `address`.
    public func vmaIndex(containing address: UInt64) -> Int? {
        var lo = 0
        var hi = memoryMap.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if memoryMap[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo < memoryMap.count, memoryMap[lo].start <= address else { return nil }
        return lo
    }

    /// §6.3 The XXH3-128 hash of stored page `ordinal`, from the index.
    public func storedPageHash(_ ordinal: UInt64) -> PageHash {
        precondition(ordinal < index.storedPages)
        let start = index.pageHashes.startIndex + Int(ordinal) * 16
        return PageHash(canonical: ArraySlice(index.pageHashes[start..<(start + 16)]))
    }

    /// Frame number holding stored page `ordinal` (§6.1).
    public func frameNumber(of ordinal: UInt64) -> Int { Int(ordinal / UInt64(header.pagesPerFrame)) }

    /// The decompressed pages of frame `number`, checked against its block checksum.
    public func frame(_ number: Int) throws(ImageError) -> [UInt8] {
        try cachedFrame.withLock { (cached) throws(ImageError) in
            if let cached, cached.number == number { return cached.bytes }
            let bytes = try readFrame(number)
            cached = (number, bytes)
            return bytes
        }
    }

    /// The decompressed pages of frame `number`, read and checked anew without the
    /// reader's cache or lock (positional reads): for decompressing many frames at once.
    public func decompressedFrame(_ number: Int) throws(ImageError) -> [UInt8] {
        try readFrame(number)
    }

    private func readFrame(_ number: Int) throws(ImageError) -> [UInt8] {
        precondition(number < index.frameOffsets.count)
        let ppf = UInt64(header.pagesPerFrame)
        let first = UInt64(number) * ppf
        let count = min(ppf, index.storedPages - first)
        let name = "frame \(number)"
        let offset = index.frameOffsets[number]
        do throws(ImageError) {
            let (block, payload) = try ImageReader.readBlock(
                descriptor, at: offset, expect: .frame,
                limit: BlockHeader(typeTag: BlockType.frame.rawValue, kind: 0, version: 1, flags: [], aux: 0, payloadLength: 0, aux64: 0)
                    .payloadLimit(pageSize: UInt32(header.pageSize), pagesPerFrame: UInt32(header.pagesPerFrame)),
                fileSize: indexOffset, name: name)
            guard UInt64(block.aux) == count, block.aux64 == first, block.flags.contains(.zstd) else {
                throw ImageError(.structural, "frame header says \(block.aux) pages from \(block.aux64); index says \(count) from \(first)",
                                 location: name, offset: offset)
            }
            do throws(ImageError) {
                return try Zstd.decompress(payload[...], expected: Int(count) * header.pageSize)
            } catch {
                var e = error
                e.location = name
                e.offset = offset
                throw e
            }
        } catch {
            throw error.at(path: path)
        }
    }

    /// The bytes of stored page `ordinal`.
    public func storedPage(_ ordinal: UInt64) throws(ImageError) -> [UInt8] {
        let frame = try self.frame(frameNumber(of: ordinal))
        let within = Int(ordinal % UInt64(header.pagesPerFrame)) * header.pageSize
        return Array(frame[within..<(within + header.pageSize)])
    }
}

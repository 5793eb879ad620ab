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
            let index: Ccimg_V1_Index
            do { index = try Ccimg_V1_Index(serializedBytes: indexPayload) } catch {
                throw ImageError(.structural, "index is not a valid Index record", location: "index",
                                 offset: footer.indexOffset, cause: "\(error)")
            }
            try ImageReader.checkIndex(index, header: header, indexOffset: footer.indexOffset)
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

    // MARK: Index checks

    static func checkIndex(_ index: Ccimg_V1_Index, header: ImageHeaderInfo, indexOffset: UInt64) throws(ImageError) {
        guard index.sections.count <= ImageLimits.maxSections else {
            throw ImageError(.limitExceeded, "\(index.sections.count) sections exceed \(ImageLimits.maxSections)", location: "index")
        }
        guard index.storedPages <= ImageLimits.maxPages else {
            throw ImageError(.limitExceeded, "\(index.storedPages) stored pages exceed \(ImageLimits.maxPages)", location: "index")
        }
        guard UInt64(index.pageHashes.count) == index.storedPages * 16 else {
            throw ImageError(.structural, "index holds \(index.pageHashes.count / 16) page hashes for \(index.storedPages) stored pages",
                             location: "index")
        }
        let ppf = UInt64(header.pagesPerFrame)
        let expectedFrames = (index.storedPages + ppf - 1) / ppf
        guard UInt64(index.frameOffsets.count) == expectedFrames else {
            throw ImageError(.structural, "index lists \(index.frameOffsets.count) frames; \(index.storedPages) stored pages need \(expectedFrames)",
                             location: "index")
        }
        let first = UInt64(header.encodedLength)
        var blocks: [(start: UInt64, end: UInt64, name: String)] = []
        var kinds = Set<UInt32>()
        for entry in index.sections {
            let name = SectionKind(rawValue: entry.kind).map { "section \($0.name)" } ?? "section kind \(entry.kind)"
            guard entry.length >= UInt64(ImageFormat.blockHeaderLength), entry.offset >= first,
                  entry.offset <= indexOffset, entry.length <= indexOffset - entry.offset else {
                throw ImageError(.structural, "\(name) lies outside the image body (\(entry.offset)+\(entry.length))", location: "index")
            }
            if SectionKind(rawValue: entry.kind) == nil && BlockFlags(rawValue: UInt16(truncatingIfNeeded: entry.flags)).contains(.critical) {
                throw ImageError(.unsupported, "image has a critical section of kind \(entry.kind) unknown to this reader; a newer ccimg is needed",
                                 location: name, offset: entry.offset)
            }
            if SectionKind(rawValue: entry.kind) != nil {
                guard kinds.insert(entry.kind).inserted else {
                    throw ImageError(.structural, "\(name) appears twice", location: "index")
                }
            }
            blocks.append((entry.offset, entry.offset + entry.length, name))
        }
        for (n, offset) in index.frameOffsets.enumerated() {
            guard offset >= first, offset <= indexOffset - UInt64(ImageFormat.blockHeaderLength) else {
                throw ImageError(.structural, "frame \(n) offset \(offset) lies outside the image body", location: "index")
            }
            blocks.append((offset, offset + UInt64(ImageFormat.blockHeaderLength), "frame \(n)"))
        }
        blocks.sort { $0.start < $1.start }
        for (a, b) in zip(blocks, blocks.dropFirst()) where b.start < a.end {
            throw ImageError(.structural, "\(a.name) and \(b.name) overlap", location: "index", offset: b.start)
        }
        for required in [SectionKind.process, .memoryMap, .pageMap] where !kinds.contains(required.rawValue) {
            throw ImageError(.structural, "critical section \(required.name) is missing", location: "index")
        }
    }

    // MARK: Blocks

    /// Reads one block at `offset`, checks its type, bounds and checksum, and
    /// returns its header and payload (decompressed when flagged zstd).
    static func readBlock(_ descriptor: borrowing OwnedDescriptor, at offset: UInt64, expect: BlockType, limit: UInt64,
                          fileSize: UInt64, name: String) throws(ImageError) -> (BlockHeader, [UInt8]) {
        guard offset <= fileSize, fileSize - offset >= UInt64(ImageFormat.blockHeaderLength) else {
            throw ImageError(.truncated, "\(name) header runs past the end of the file", location: name, offset: offset)
        }
        let header = try BlockHeader.decode(try descriptor.read(at: offset, count: ImageFormat.blockHeaderLength), offset: offset)
        guard header.type == expect else {
            throw ImageError(.structural, "expected a \(expect) block, found \(header.name())", location: name, offset: offset)
        }
        guard header.payloadLength <= limit else {
            throw ImageError(.limitExceeded, "payload of \(header.payloadLength) bytes exceeds the limit of \(limit)", location: name, offset: offset)
        }
        let payloadStart = offset + UInt64(ImageFormat.blockHeaderLength)
        guard header.payloadLength <= fileSize - payloadStart else {
            throw ImageError(.truncated, "payload runs past the end of the file", location: name, offset: payloadStart)
        }
        let stored = try descriptor.read(at: payloadStart, count: Int(header.payloadLength))
        guard stored.withUnsafeBytes({ header.computeChecksum(payload: $0) }) == header.checksum else {
            throw ImageError(.checksumMismatch, "checksum does not match", location: name, offset: offset)
        }
        guard header.flags.isSubset(of: BlockFlags.known) else {
            throw ImageError(.unsupported, "unknown block flags 0x\(String(header.flags.rawValue, radix: 16))", location: name, offset: offset)
        }
        return (header, try decodePayload(header, stored, limit: limit, name: name, offset: offset))
    }

    /// §4 Undoes a block's compression, refusing sizes over `limit`.
    static func decodePayload(_ header: BlockHeader, _ stored: [UInt8], limit: UInt64, name: String,
                              offset: UInt64) throws(ImageError) -> [UInt8] {
        guard header.type != .frame else { return stored }
        guard header.flags.contains(.zstd) else {
            guard header.aux64 == header.payloadLength else {
                throw ImageError(.structural, "uncompressed payload length disagrees with its header", location: name, offset: offset)
            }
            return stored
        }
        guard header.aux64 <= limit else {
            throw ImageError(.limitExceeded, "decompressed length \(header.aux64) exceeds the limit of \(limit)", location: name, offset: offset)
        }
        do throws(ImageError) { return try Zstd.decompress(stored[...], expected: Int(header.aux64)) } catch {
            var e = error
            e.location = name
            e.offset = offset
            throw e
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
        return try ImageReader.decodeSection(try sectionPayload(entry), as: M.self, kind: kind, offset: entry.offset, path: path)
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

    /// §5.3, §6.2 Checks the memory map and decodes the page map against it: the one
    /// decoder of both, for the random-access reader and the verifier.
    static func loadMemory(map: Ccimg_V1_MemoryMap, pages: Ccimg_V1_PageMap, header: ImageHeaderInfo,
                           storedPages: UInt64) throws(ImageError) -> ([Ccimg_V1_Vma], [VmaPageTable]) {
        try ImageReader.checkVmas(map.vmas, pageSize: UInt64(header.pageSize))
        guard pages.vmas.count == map.vmas.count else {
            throw ImageError(.structural, "page map describes \(pages.vmas.count) VMAs, memory map has \(map.vmas.count)",
                             location: "section page-map")
        }
        var ordinal: UInt64 = 0
        var tables: [VmaPageTable] = []
        tables.reserveCapacity(map.vmas.count)
        for (i, (vma, runs)) in zip(map.vmas, pages.vmas).enumerated() {
            let count = (vma.end - vma.start) / UInt64(header.pageSize)
            tables.append(try VmaPageTable.decode(Array(runs.runs), pageCount: count, nextOrdinal: &ordinal,
                                                  allowInherited: header.hasParent, vmaNumber: i))
        }
        guard ordinal == storedPages else {
            throw ImageError(.structural, "page map stores \(ordinal) pages, index has \(storedPages)", location: "section page-map")
        }
        return (map.vmas, tables)
    }

    /// §5.3 VMAs ascend, do not overlap, are page aligned and below the address limit.
    static func checkVmas(_ vmas: [Ccimg_V1_Vma], pageSize: UInt64) throws(ImageError) {
        guard vmas.count <= ImageLimits.maxVmas else {
            throw ImageError(.limitExceeded, "\(vmas.count) VMAs exceed \(ImageLimits.maxVmas)", location: "section memory-map")
        }
        var previousEnd: UInt64 = 0
        for (i, vma) in vmas.enumerated() {
            let where_ = "section memory-map, VMA \(i)"
            guard vma.start % pageSize == 0, vma.end % pageSize == 0, vma.end > vma.start, vma.end <= ImageLimits.maxAddress else {
                throw ImageError(.structural, "VMA 0x\(String(vma.start, radix: 16))-0x\(String(vma.end, radix: 16)) is empty, unaligned or beyond the address limit",
                                 location: where_)
            }
            guard vma.start >= previousEnd else {
                throw ImageError(.structural, "VMA at 0x\(String(vma.start, radix: 16)) overlaps the one before it", location: where_)
            }
            previousEnd = vma.end
        }
    }

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

import LinuxKernel
import SwiftProtobuf

/// The decoders of the image's structures (§4 blocks, §5.3 memory map, §6.2 page map,
/// §7.1 index), shared by ``ImageReader``, ``ImageStreamReader`` and ``ImageVerifier``:
/// each structure is decoded and checked in one place. (The header prefix and body are
/// ``ImageHeaderInfo/decode(_:)``'s, block headers ``BlockHeader/decode(_:offset:)``'s,
/// the footer ``Footer/decode(_:offset:)``'s.)
extension ImageReader {
    /// §7.1 The index record decoded from its block's (decompressed) payload and checked
    /// against the header: the one decoder of the index, for all three readers.
    static func parseIndex(_ payload: [UInt8], header: ImageHeaderInfo, offset: UInt64,
                           withCause: Bool = true) throws(ImageError) -> Ccimg_V1_Index {
        let index: Ccimg_V1_Index
        do { index = try Ccimg_V1_Index(serializedBytes: payload) } catch {
            throw ImageError(.structural, "index is not a valid Index record", location: "index", offset: offset,
                             cause: withCause ? "\(error)" : nil)
        }
        try checkIndex(index, header: header, indexOffset: offset)
        return index
    }


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
        let checksumOK = stored.withUnsafeBytes({ header.computeChecksum(payload: $0) }) == header.checksum
        if let problem = header.problems(checksumOK: checksumOK, name: name, offset: offset).first { throw problem }
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
}

extension BlockHeader {
    /// §4 What is wrong with a block as read: its checksum, then unknown flags. The
    /// random-access and stream readers throw the first; the verifier reports all.
    func problems(checksumOK: Bool, name: String, offset: UInt64) -> [ImageError] {
        var found: [ImageError] = []
        if !checksumOK { found.append(ImageError(.checksumMismatch, "checksum does not match", location: name, offset: offset)) }
        if !flags.isSubset(of: BlockFlags.known) {
            found.append(ImageError(.unsupported, "unknown block flags 0x\(String(flags.rawValue, radix: 16))", location: name, offset: offset))
        }
        return found
    }
}

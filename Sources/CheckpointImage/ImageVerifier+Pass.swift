import SwiftProtobuf

/// One sequential pass of ``ImageVerifier`` over an image (§11): the header, every
/// block as ``BlockScanner`` reads it, the footer, then the index, the memory
/// sections and (deep) the page hashes checked against what was scanned. Every
/// problem is recorded; the pass stops only where the damage leaves no way on.
struct VerifierPass: ~Copyable {
    var scanner: BlockScanner
    var report: VerifyReport
    /// Sections as scanned, with their payloads decoded when their checksum held.
    private var sections: [(header: BlockHeader, offset: UInt64, payload: [UInt8]?)] = []
    private var frameOffsets: [UInt64] = []
    private var nextOrdinal: UInt64 = 0
    /// Deep: the hash of every stored page, nil where its frame could not be decompressed.
    private var computedHashes: [PageHash?] = []
    private var indexBlock: (header: BlockHeader, offset: UInt64, payload: [UInt8])?

    init(scanner: consuming BlockScanner, report: VerifyReport) {
        self.scanner = scanner
        self.report = report
    }

    /// Records `error`, with the report's path when it has none.
    private mutating func problem(_ error: ImageError) {
        var e = error
        if e.path == nil && report.path != "-" { e.path = report.path }
        report.problems.append(e)
    }

    /// Runs the pass; returns the header when it could be read.
    mutating func run() -> ImageHeaderInfo? {
        let header: ImageHeaderInfo
        do { header = try scanner.readHeader() } catch {
            problem(error)
            return nil
        }
        guard scanBlocks(header) else { return header }
        // §7.2 The footer, and nothing after it.
        do { try scanner.readFooter(indexOffset: indexBlock!.offset) } catch { problem(error) }
        guard let index = checkedIndex(header) else { return header }
        checkIndexAgainstScan(index)
        checkSections(header, index)
        if report.deep { checkPageHashes(index, pagesPerFrame: UInt64(header.pagesPerFrame)) }
        return header
    }

    /// §4 Every block up to the index; false when the pass cannot go on.
    private mutating func scanBlocks(_ header: ImageHeaderInfo) -> Bool {
        while true {
            let raw: BlockScanner.RawBlock
            do {
                raw = try scanner.nextBlock(header: header) { [frameOffsets] b in b.type == .frame ? "frame \(frameOffsets.count)" : b.name() }
            } catch {
                problem(error)
                return false
            }
            let name = raw.header.type == .frame ? "frame \(frameOffsets.count)" : raw.header.name()
            for error in raw.header.problems(checksumOK: raw.checksumOK, name: name, offset: raw.offset) { problem(error) }
            switch raw.header.type! {
            case .section:
                guard scanSection(raw, name: name) else { return false }
            case .frame:
                guard scanFrame(raw, name: name, header: header) else { return false }
            case .index:
                indexBlock = (raw.header, raw.offset, raw.payload)
                return true
            }
        }
    }

    /// §5 A section: its payload decoded (when its checksum held) for the checks after the index.
    private mutating func scanSection(_ raw: BlockScanner.RawBlock, name: String) -> Bool {
        var decoded: [UInt8]? = nil
        if raw.checksumOK {
            do {
                decoded = try ImageReader.decodePayload(raw.header, raw.payload, limit: UInt64(ImageLimits.maxSectionPayload),
                                                        name: name, offset: raw.offset)
            } catch { problem(error) }
        }
        sections.append((raw.header, raw.offset, decoded))
        report.sections += 1
        if sections.count > ImageLimits.maxSections {
            problem(ImageError(.limitExceeded, "more than \(ImageLimits.maxSections) sections; cannot go on", location: name, offset: raw.offset))
            return false
        }
        return true
    }

    /// §6.1 A frame: its page count and first ordinal, and (deep) the hash of each page.
    private mutating func scanFrame(_ raw: BlockScanner.RawBlock, name: String, header: ImageHeaderInfo) -> Bool {
        let block = raw.header, offset = raw.offset
        let ppf = UInt64(header.pagesPerFrame)
        let number = frameOffsets.count
        frameOffsets.append(offset)
        report.frames += 1
        guard block.aux >= 1, UInt64(block.aux) <= ppf else {
            // The page count decides every later ordinal: with it wrong there is no way on.
            problem(ImageError(.structural, "frame holds \(block.aux) pages; a frame holds 1 to \(ppf); cannot go on",
                               location: name, offset: offset))
            return false
        }
        if block.aux64 != nextOrdinal {
            problem(ImageError(.structural, "frame starts at page ordinal \(block.aux64); expected \(nextOrdinal)",
                               location: name, offset: offset))
        }
        let count = UInt64(block.aux)
        if UInt64(ImageLimits.maxPages) - nextOrdinal < count {
            problem(ImageError(.limitExceeded, "too many pages", location: name, offset: offset))
            return false
        }
        if report.deep { hashPages(raw, count: Int(count), number: number, pageSize: header.pageSize) }
        nextOrdinal += count
        return true
    }

    /// §6.3 Deep: decompresses a frame whose checksum held and hashes each of its `count` pages.
    private mutating func hashPages(_ raw: BlockScanner.RawBlock, count: Int, number: Int, pageSize: Int) {
        var hashes = [PageHash?](repeating: nil, count: count)
        if raw.checksumOK {
            do {
                let pages = try Zstd.decompress(raw.payload[...], expected: count * pageSize)
                pages.withUnsafeBytes { buffer in
                    for i in 0..<count {
                        hashes[i] = PageHash(of: UnsafeRawBufferPointer(rebasing: buffer[(i * pageSize)..<((i + 1) * pageSize)]))
                    }
                }
                report.pagesHashed += UInt64(count)
            } catch {
                var e = error
                e.location = "frame \(number)"
                e.offset = raw.offset
                problem(e)
            }
        }
        computedHashes += hashes
    }

    /// §7.1 The index, decoded and checked; nil when it cannot be (a bad checksum is reported already).
    private mutating func checkedIndex(_ header: ImageHeaderInfo) -> Ccimg_V1_Index? {
        guard let indexBlock, indexBlock.header.checksum == indexBlock.payload.withUnsafeBytes({ indexBlock.header.computeChecksum(payload: $0) }) else {
            return nil
        }
        do throws(ImageError) {
            let payload = try ImageReader.decodePayload(indexBlock.header, indexBlock.payload, limit: UInt64(ImageLimits.maxIndexPayload),
                                                        name: "index", offset: indexBlock.offset)
            return try ImageReader.parseIndex(payload, header: header, offset: indexBlock.offset, withCause: false)
        } catch {
            problem(error)
            return nil
        }
    }

    /// §7.1 The index lists exactly the frames and sections scanned.
    private mutating func checkIndexAgainstScan(_ index: Ccimg_V1_Index) {
        let indexOffset = indexBlock!.offset
        report.storedPages = index.storedPages
        if index.frameOffsets != frameOffsets {
            problem(ImageError(.structural, "index lists frames at other offsets than the file holds", location: "index", offset: indexOffset))
        }
        if index.storedPages != nextOrdinal {
            problem(ImageError(.structural, "index counts \(index.storedPages) stored pages, frames hold \(nextOrdinal)", location: "index"))
        }
        let scanned = sections.map { ($0.header.kind, UInt32($0.header.flags.rawValue), $0.offset, UInt64(ImageFormat.blockHeaderLength) + $0.header.payloadLength) }
        let listed = index.sections.map { ($0.kind, $0.flags, $0.offset, $0.length) }
        if !scanned.elementsEqual(listed, by: { $0 == $1 }) {
            problem(ImageError(.structural, "index lists other sections (kinds, flags, offsets or lengths) than the file holds", location: "index", offset: indexOffset))
        }
    }

    /// Section `kind` decoded as `type`, if it was scanned with a sound payload; a record that does not decode is a problem.
    private mutating func decoded<M: SwiftProtobuf.Message>(_ kind: SectionKind, _ type: M.Type) -> M? {
        guard let s = sections.first(where: { $0.header.kind == kind.rawValue }), let payload = s.payload else { return nil }
        do { return try M(serializedBytes: payload) } catch {
            problem(ImageError(.structural, "section is not a valid \(M.protoMessageName) record", location: "section \(kind.name)", offset: s.offset))
            return nil
        }
    }

    /// §5.3 Every known section decodes as its record; §6.2 the memory map and page map
    /// agree, through the reader's own decoder of them.
    private mutating func checkSections(_ header: ImageHeaderInfo, _ index: Ccimg_V1_Index) {
        for kind in SectionKind.allCases where kind != .memoryMap && kind != .pageMap {
            let section = sections.first(where: { $0.header.kind == kind.rawValue }).map { ($0.offset, $0.payload) }
            var found: [ImageError] = []
            _ = ImageVerifier.decodedAny(kind, section, problem: { found.append($0) })
            for error in found { problem(error) }
        }
        func payload(_ kind: SectionKind) -> [UInt8]? { sections.first { $0.header.kind == kind.rawValue }?.payload }
        do throws(ImageError) { try OpenFileTable.verify(handles: payload(.handles), sync: payload(.syncObjects), features: header.features) } catch { problem(error) }
        guard let map = decoded(.memoryMap, Ccimg_V1_MemoryMap.self), let pages = decoded(.pageMap, Ccimg_V1_PageMap.self) else { return }
        do { _ = try ImageReader.loadMemory(map: map, pages: pages, header: header, storedPages: index.storedPages) } catch {
            problem(error)
        }
    }

    /// §6.3 Deep: every stored page's bytes against its hash in the index.
    private mutating func checkPageHashes(_ index: Ccimg_V1_Index, pagesPerFrame ppf: UInt64) {
        guard computedHashes.count == Int(index.storedPages) else { return }
        for (ordinal, computed) in computedHashes.enumerated() {
            guard let computed else { continue }
            let start = index.pageHashes.startIndex + ordinal * 16
            let stored = PageHash(canonical: ArraySlice(index.pageHashes[start..<(start + 16)]))
            if stored != computed {
                let frame = ordinal / Int(ppf)
                problem(ImageError(.checksumMismatch, "page \(ordinal) does not match its hash in the index",
                                   location: "frame \(frame)", offset: frameOffsets[frame]))
            }
        }
    }
}

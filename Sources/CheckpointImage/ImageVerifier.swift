import LinuxKernel
import SwiftProtobuf

/// What `ccimg verify` found (§11).
public struct VerifyReport: Sendable {
    /// The file verified, or "-" for a stream.
    public var path: String
    public var deep: Bool
    /// Every problem found, in file order; empty when the image is sound.
    public var problems: [ImageError] = []
    public var sections = 0
    public var frames = 0
    public var storedPages: UInt64 = 0
    /// Pages whose hash was recomputed (`--deep`).
    public var pagesHashed: UInt64 = 0
    /// Parent images checked, nearest first.
    public var parents: [String] = []

    public var isValid: Bool { problems.isEmpty }

    /// §11 The exit status for this report: 0 when sound, else that of the first problem's class.
    public var exitStatus: Int32 { problems.first?.code.exitStatus ?? 0 }
}

/// Checks an image front to back (§11), from a file or a pipe, reporting
/// every problem with its block and offset instead of stopping at the first
/// where the damage allows going on.
public enum ImageVerifier {
    /// Verifies the file at `path`, and its parent chain (§8) when it is incremental.
    public static func verify(path: String, deep: Bool, storeDirectories: [String] = []) -> VerifyReport {
        var report = VerifyReport(path: path, deep: deep)
        let descriptor: OwnedDescriptor
        do { descriptor = try OwnedDescriptor(readingImageAt: path) } catch {
            report.problems.append(error)
            return report
        }
        let header = scan(descriptor, into: &report)
        guard report.isValid, let header, header.hasParent else { return report }
        // §8 The chain: every parent must be found, match its digest, and verify itself —
        // each image once, against the chain below it. (Verifying each parent with its own
        // chain again takes time exponential in the depth: spec/decisions/0017-threading-model.md.)
        do throws(ImageError) {
            let chain = try ImageChain.open(path: path, storeDirectories: storeDirectories)
            for (level, parent) in chain.images.enumerated().dropFirst() {
                report.parents.append(parent.path)
                var parentReport = VerifyReport(path: parent.path, deep: deep)
                do {
                    _ = scan(try OwnedDescriptor(readingImageAt: parent.path), into: &parentReport)
                } catch {
                    parentReport.problems.append(error)
                }
                if parentReport.isValid && level + 1 < chain.images.count {
                    checkInheritedPages(of: parent, in: chain, level: level, into: &parentReport)
                }
                report.problems += parentReport.problems.map { problem in
                    var p = problem
                    p.message = "in parent image: " + p.message
                    return p
                }
                if !parentReport.isValid { return report }
            }
            checkInheritedPages(of: chain.top, in: chain, level: 0, into: &report)
        } catch {
            report.problems.append(error.at(path: path))
        }
        return report
    }

    /// Verifies an image read from a stream (a pipe); its parents, if any, are not checked.
    public static func verify(streamFrom fd: Int32, deep: Bool) -> VerifyReport {
        var report = VerifyReport(path: "-", deep: deep)
        let descriptor = OwnedDescriptor(duplicating: fd)
        _ = scan(descriptor, into: &report)
        return report
    }

    /// §8 Every inherited page of `image` must land in a VMA of its `parent`. (That page of
    /// the parent is checked in turn when the parent is: each image of a chain is verified.)
    static func checkInheritedPages(of image: ImageReader, in chain: ImageChain, level: Int, into report: inout VerifyReport) {
        let parent = chain.images[level + 1]
        let ps = UInt64(image.header.pageSize)
        for v in image.memoryMap.indices {
            // An inherited page resolves to no content only where some image below lacks its VMA;
            // this image is at fault only where its own parent does.
            for run in chain.resolvedRuns(ofVma: v, level: level) where run.state == .unmapped {
                for k in 0..<run.count {
                    let address = run.address + k * ps
                    if parent.vmaIndex(containing: address) == nil {
                        report.problems.append(ImageError(
                            .structural, "inherited page at 0x\(String(address, radix: 16)) has no VMA in the parent chain",
                            path: image.path, location: "section page-map, VMA \(v)"))
                        return
                    }
                }
            }
        }
    }

    /// The sequential pass: header, every block, index, footer, cross-checks.
    static func scan(_ descriptor: consuming OwnedDescriptor, into report: inout VerifyReport) -> ImageHeaderInfo? {
        var scanner = BlockScanner(descriptor: descriptor)
        func problem(_ error: ImageError) {
            var e = error
            if e.path == nil && report.path != "-" { e.path = report.path }
            report.problems.append(e)
        }

        let header: ImageHeaderInfo
        do { header = try scanner.readHeader() } catch {
            problem(error)
            return nil
        }
        let pageSize = header.pageSize
        let ppf = UInt64(header.pagesPerFrame)
        var sections: [(header: BlockHeader, offset: UInt64, payload: [UInt8]?)] = []
        var frameOffsets: [UInt64] = []
        var nextOrdinal: UInt64 = 0
        var computedHashes: [PageHash?] = []
        var indexBlock: (header: BlockHeader, offset: UInt64, payload: [UInt8])?

        scanning: while true {
            let raw: BlockScanner.RawBlock
            do {
                raw = try scanner.nextBlock(header: header) { [frameOffsets] b in b.type == .frame ? "frame \(frameOffsets.count)" : b.name() }
            } catch {
                problem(error)
                return header
            }
            let block = raw.header, offset = raw.offset, payload = raw.payload
            let type = block.type!
            let name = type == .frame ? "frame \(frameOffsets.count)" : block.name()
            let checksumOK = raw.checksumOK
            if !checksumOK {
                problem(ImageError(.checksumMismatch, "checksum does not match", location: name, offset: offset))
            }
            if !block.flags.isSubset(of: BlockFlags.known) {
                problem(ImageError(.unsupported, "unknown block flags 0x\(String(block.flags.rawValue, radix: 16))", location: name, offset: offset))
            }
            switch type {
            case .section:
                var decoded: [UInt8]? = nil
                if checksumOK {
                    do { decoded = try ImageReader.decodePayload(block, payload, limit: UInt64(ImageLimits.maxSectionPayload), name: name, offset: offset) } catch { problem(error) }
                }
                sections.append((block, offset, decoded))
                report.sections += 1
                if sections.count > ImageLimits.maxSections {
                    problem(ImageError(.limitExceeded, "more than \(ImageLimits.maxSections) sections; cannot go on", location: name, offset: offset))
                    return header
                }
            case .frame:
                let number = frameOffsets.count
                frameOffsets.append(offset)
                report.frames += 1
                guard block.aux >= 1, UInt64(block.aux) <= ppf else {
                    // The page count decides every later ordinal: with it wrong there is no way on.
                    problem(ImageError(.structural, "frame holds \(block.aux) pages; a frame holds 1 to \(ppf); cannot go on",
                                       location: name, offset: offset))
                    return header
                }
                if block.aux64 != nextOrdinal {
                    problem(ImageError(.structural, "frame starts at page ordinal \(block.aux64); expected \(nextOrdinal)",
                                       location: name, offset: offset))
                }
                let count = UInt64(block.aux)
                if UInt64(ImageLimits.maxPages) - nextOrdinal < count {
                    problem(ImageError(.limitExceeded, "too many pages", location: name, offset: offset))
                    return header
                }
                if report.deep {
                    var hashes = [PageHash?](repeating: nil, count: Int(count))
                    if checksumOK && count <= ppf {
                        do {
                            let raw = try Zstd.decompress(payload[...], expected: Int(count) * pageSize)
                            raw.withUnsafeBytes { buffer in
                                for i in 0..<Int(count) {
                                    hashes[i] = PageHash(of: UnsafeRawBufferPointer(rebasing: buffer[(i * pageSize)..<((i + 1) * pageSize)]))
                                }
                            }
                            report.pagesHashed += count
                        } catch {
                            var e = error
                            e.location = "frame \(number)"
                            e.offset = offset
                            problem(e)
                        }
                    }
                    computedHashes += hashes
                }
                nextOrdinal += count
            case .index:
                indexBlock = (block, offset, payload)
                break scanning
            }
        }

        // §7.2 The footer, and nothing after it.
        do { try scanner.readFooter(indexOffset: indexBlock!.offset) } catch { problem(error) }

        // §7.1 The index against what was scanned.
        guard let indexBlock, indexBlock.header.checksum == indexBlock.payload.withUnsafeBytes({ indexBlock.header.computeChecksum(payload: $0) }) else {
            return header
        }
        let index: Ccimg_V1_Index
        do throws(ImageError) {
            let payload = try ImageReader.decodePayload(indexBlock.header, indexBlock.payload, limit: UInt64(ImageLimits.maxIndexPayload),
                                                        name: "index", offset: indexBlock.offset)
            do { index = try Ccimg_V1_Index(serializedBytes: payload) } catch {
                throw ImageError(.structural, "index is not a valid Index record", location: "index", offset: indexBlock.offset)
            }
            try ImageReader.checkIndex(index, header: header, indexOffset: indexBlock.offset)
        } catch {
            problem(error)
            return header
        }
        report.storedPages = index.storedPages
        if index.frameOffsets != frameOffsets {
            problem(ImageError(.structural, "index lists frames at other offsets than the file holds", location: "index", offset: indexBlock.offset))
        }
        if index.storedPages != nextOrdinal {
            problem(ImageError(.structural, "index counts \(index.storedPages) stored pages, frames hold \(nextOrdinal)", location: "index"))
        }
        let scanned = sections.map { ($0.header.kind, UInt32($0.header.flags.rawValue), $0.offset, UInt64(ImageFormat.blockHeaderLength) + $0.header.payloadLength) }
        let listed = index.sections.map { ($0.kind, $0.flags, $0.offset, $0.length) }
        if !scanned.elementsEqual(listed, by: { $0 == $1 }) {
            problem(ImageError(.structural, "index lists other sections (kinds, flags, offsets or lengths) than the file holds", location: "index", offset: indexBlock.offset))
        }

        // §5.3 / §6.2 Memory map and page map.
        func decoded<M: SwiftProtobuf.Message>(_ kind: SectionKind, _ type: M.Type) -> M? {
            guard let s = sections.first(where: { $0.header.kind == kind.rawValue }), let payload = s.payload else { return nil }
            do { return try M(serializedBytes: payload) } catch {
                problem(ImageError(.structural, "section is not a valid \(M.protoMessageName) record", location: "section \(kind.name)", offset: s.offset))
                return nil
            }
        }
        for kind in SectionKind.allCases where kind != .memoryMap && kind != .pageMap {
            _ = decodedAny(kind, sections.first(where: { $0.header.kind == kind.rawValue }).map { ($0.offset, $0.payload) }, problem: problem)
        }
        if let map = decoded(.memoryMap, Ccimg_V1_MemoryMap.self), let pages = decoded(.pageMap, Ccimg_V1_PageMap.self) {
            do throws(ImageError) {
                try ImageReader.checkVmas(map.vmas, pageSize: UInt64(pageSize))
                guard pages.vmas.count == map.vmas.count else {
                    throw ImageError(.structural, "page map describes \(pages.vmas.count) VMAs, memory map has \(map.vmas.count)", location: "section page-map")
                }
                var ordinal: UInt64 = 0
                for (i, (vma, runs)) in zip(map.vmas, pages.vmas).enumerated() {
                    _ = try VmaPageTable.decode(Array(runs.runs), pageCount: (vma.end - vma.start) / UInt64(pageSize),
                                                nextOrdinal: &ordinal, allowInherited: header.hasParent, vmaNumber: i)
                }
                guard ordinal == index.storedPages else {
                    throw ImageError(.structural, "page map stores \(ordinal) pages, index has \(index.storedPages)", location: "section page-map")
                }
            } catch {
                problem(error)
            }
        }

        // §6.3 Deep: every stored page's bytes against its hash in the index.
        if report.deep && computedHashes.count == Int(index.storedPages) {
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
        return header
    }

    /// Checks that a known section decodes as its message.
    private static func decodedAny(_ kind: SectionKind, _ section: (offset: UInt64, payload: [UInt8]?)?, problem: (ImageError) -> Void) -> Bool {
        guard let section, let payload = section.payload else { return false }
        do {
            _ = try SectionCatalog.decode(kind, payload)
            return true
        } catch {
            problem(ImageError(.structural, "section does not decode as its record", location: "section \(kind.name)", offset: section.offset,
                               cause: "\(error)"))
            return false
        }
    }
}

/// The protobuf message of each section kind (§5.3).
public enum SectionCatalog {
    /// The message type that section `kind` holds.
    public static func messageType(_ kind: SectionKind) -> any SwiftProtobuf.Message.Type {
        switch kind {
        case .process: Ccimg_V1_ProcessInfo.self
        case .memoryMap: Ccimg_V1_MemoryMap.self
        case .pageMap: Ccimg_V1_PageMap.self
        case .threads: Ccimg_V1_ThreadList.self
        case .syncObjects: Ccimg_V1_SyncObjects.self
        case .handles: Ccimg_V1_HandleTable.self
        case .sockets: Ccimg_V1_SocketTable.self
        case .console: Ccimg_V1_Console.self
        case .signals: Ccimg_V1_SignalDispositions.self
        case .metadata: Ccimg_V1_Metadata.self
        }
    }

    /// Decodes a section payload as the message of its kind.
    public static func decode(_ kind: SectionKind, _ payload: [UInt8]) throws -> any SwiftProtobuf.Message {
        try messageType(kind).init(serializedBytes: payload)
    }
}

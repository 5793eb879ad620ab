#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@_spi(Fixtures) import CheckpointImage

/// The committed conformance fixtures (§9): golden images under
/// `fixtures/images/1.0/` with their golden `ccimg dump --json`, and the
/// damaged corpus under `fixtures/images/damaged/` with its manifest.
public enum FixtureSet {
    /// Golden images, in the order they are written (parents first).
    public static let goldenNames = ["full", "chain-1", "chain-2", "chain-3", "chain-3-flat", "unknown-optional"]

    /// Deterministic writer options: the UUID comes from `seed`, the rest is fixed.
    public static func options(seed: UInt64) -> ImageWriterOptions {
        var o = ImageWriterOptions()
        var g = SeededGenerator(seed: seed)
        o.uuid = ImageUUID.deterministic(using: &g)
        o.producerName = "gen-fixtures"
        o.producerVersion = "1.0"
        o.createdUnixNanoseconds = 1_764_000_000_000_000_000 + Int64(seed) * 1_000_000_000
        var m = Ccimg_V1_MachineFacts()
        m.arch = "x86_64"
        m.kernelRelease = "6.18.0-fixture"
        m.hostname = "fixture-host"
        m.xsaveFeatures = 0x2e7
        m.cpuCount = 2
        o.machine = m
        o.pagesPerFrame = 8  // small frames so the fixtures have several
        o.compressionBatch = 4
        return o
    }

    /// An optional section kind no 1.x version defines, for the skip rule (§5.2).
    public static let unknownOptionalKind: UInt32 = 900
    /// A critical section kind no 1.x version defines (§5.2).
    public static let unknownCriticalKind: UInt32 = 901

    /// The bytes of golden image `name`, encoded now; `directory` must hold its parents.
    public static func encodeGolden(_ name: String, parentsIn directory: String) throws -> [UInt8] {
        let tmp = directory + "/.encode-\(name)-\(FixtureFiles.processID).ccimg"
        defer { FixtureFiles.remove(tmp) }
        try writeGolden(name, to: tmp, parentsIn: directory)
        return try FixtureFiles.read(tmp)
    }

    static func writeGolden(_ name: String, to path: String, parentsIn directory: String) throws {
        let output = try ImageOutput(path: path)
        switch name {
        case "full":
            try SyntheticProcess(version: 1).write(to: output, options: options(seed: 1))
        case "chain-1":
            try SyntheticProcess(version: 1).write(to: output, options: options(seed: 11))
        case "chain-2":
            try SyntheticProcess(version: 2).write(to: output, options: options(seed: 12),
                                                   parent: try ImageChain.open(path: directory + "/chain-1.ccimg"))
        case "chain-3":
            try SyntheticProcess(version: 3).write(to: output, options: options(seed: 13),
                                                   parent: try ImageChain.open(path: directory + "/chain-2.ccimg"))
        case "chain-3-flat":
            var o = options(seed: 14)
            o.createdUnixNanoseconds = options(seed: 13).createdUnixNanoseconds
            try ImageFlattener.flatten(try ImageChain.open(path: directory + "/chain-3.ccimg"), to: output, options: o)
        case "unknown-optional":
            try SyntheticProcess(version: 1).write(to: output, options: options(seed: 15),
                                                   extraSections: [(unknownOptionalKind, false, Array("a section from format 1.9".utf8))])
        default:
            preconditionFailure("unknown golden fixture \(name)")
        }
    }

    /// The golden `ccimg dump --json` text of the image at `path`.
    public static func goldenDump(of path: String) throws -> String {
        try ImageInspector.dump(try ImageChain.open(path: path)).rendered()
    }

    /// Writes every golden image and its dump into `directory`.
    public static func writeGolden(into directory: String) throws {
        try FixtureFiles.createDirectory(directory)
        for name in goldenNames {
            let path = "\(directory)/\(name).ccimg"
            try writeGolden(name, to: path, parentsIn: directory)
            try FixtureFiles.write(try goldenDump(of: path), to: "\(directory)/\(name).dump.json")
        }
    }

    // MARK: Damaged corpus

    /// One damaged image and what `ccimg verify` must say of it: an error
    /// class name (ImageError.Code raw value) or "ok".
    public struct DamagedCase: Codable, Sendable {
        public var file: String
        public var description: String
        public var verify: String
        public var verifyDeep: String
    }

    /// Writes the damaged corpus into `directory`, built from the golden
    /// images in `goldenDirectory`, and its `manifest.json`.
    public static func writeDamaged(into directory: String, goldenDirectory: String) throws {
        try FixtureFiles.createDirectory(directory)
        var cases: [DamagedCase] = []
        func save(_ name: String, _ bytes: [UInt8], _ description: String, _ verify: String, deep: String? = nil) throws {
            try FixtureFiles.write(bytes, to: "\(directory)/\(name).ccimg")
            cases.append(DamagedCase(file: "\(name).ccimg", description: description, verify: verify, verifyDeep: deep ?? verify))
        }
        let fullPath = "\(goldenDirectory)/full.ccimg"
        let full = try FixtureFiles.read(fullPath)
        let reader = try ImageReader(path: fullPath)
        let process = Int(reader.sectionEntry(.process)!.offset)
        let frame0 = Int(reader.index.frameOffsets[0])
        let frame1 = Int(reader.index.frameOffsets[1])
        let indexOffset = Int(reader.indexOffset)
        let headerEnd = reader.header.encodedLength
        let block = ImageFormat.blockHeaderLength

        // Truncations.
        for (name, length, what) in [("truncated-empty", 0, "an empty file"), ("truncated-in-magic", 4, "cut inside the magic"),
                                     ("truncated-in-header", 30, "cut inside the fixed header"),
                                     ("truncated-in-section", process + block + 5, "cut inside the process section"),
                                     ("truncated-in-frame", frame1 + block + 3, "cut inside frame 1"),
                                     ("truncated-before-index", indexOffset, "cut where the index begins"),
                                     ("truncated-before-footer", full.count - ImageFormat.footerLength, "the footer is missing"),
                                     ("truncated-in-footer", full.count - 5, "cut inside the footer")] {
            try save(name, Array(full.prefix(length)), what, "truncated")
        }
        // Bit flips.
        func flipped(_ offset: Int, _ bit: UInt8 = 0x10) -> [UInt8] { var b = full; b[offset] ^= bit; return b }
        try save("flip-magic", flipped(1), "a bit flipped in the magic", "bad-magic")
        try save("flip-header-body", flipped(ImageFormat.headerPrefixLength + 3), "a bit flipped in the header body", "checksum-mismatch")
        try save("flip-section-header", flipped(process + 8), "a bit flipped in the process section's block header", "checksum-mismatch")
        try save("flip-section-payload", flipped(process + block + 2), "a bit flipped in the process section's payload", "checksum-mismatch")
        try save("flip-frame-payload", flipped(frame0 + block + 20), "a bit flipped in frame 0's compressed bytes", "checksum-mismatch")
        try save("flip-index", flipped(indexOffset + block + 7), "a bit flipped in the index payload", "checksum-mismatch")
        try save("flip-footer", flipped(full.count - 12), "a bit flipped in the footer's index offset", "checksum-mismatch")
        // Version and features (checksums resealed so the checks behind them are reached).
        var v = full; v[8] = 2; ImageSurgery.resealHeader(&v)
        try save("version-2.0", v, "format major version 2", "unsupported")
        var f = full; f[32] |= 0x20; ImageSurgery.resealHeader(&f)
        try save("unknown-incompatible-feature", f, "an incompatible feature bit this reader does not know", "unsupported")
        var c = full; c[16] |= 0x40; ImageSurgery.resealHeader(&c)
        try save("unknown-compatible-feature", c, "a compatible feature bit this reader does not know (must be ignored)", "ok")
        // Sections a reader does not know.
        let tmp = "\(directory)/.tmp-\(FixtureFiles.processID).ccimg"
        defer { FixtureFiles.remove(tmp) }
        func written(_ body: (consuming ImageOutput) throws -> Void) throws -> [UInt8] {
            try body(try ImageOutput(path: tmp))
            return try FixtureFiles.read(tmp)
        }
        try save("unknown-critical-section", try written { (output: consuming ImageOutput) in
            try SyntheticProcess().write(to: output, options: options(seed: 21), extraSections: [(unknownCriticalKind, true, [1, 2, 3])])
        }, "a critical section of a kind this reader does not know", "unsupported")
        try save("unknown-optional-section", try written { (output: consuming ImageOutput) in
            try SyntheticProcess().write(to: output, options: options(seed: 22), extraSections: [(unknownOptionalKind, false, [1, 2, 3])])
        }, "an optional section of a kind this reader does not know (must be skipped)", "ok")
        try save("missing-process-section", try written { (output: consuming ImageOutput) in
            let w = try ImageWriter(output: output, options: options(seed: 23))
            try w.finish()
        }, "no process section", "structural")
        // Page data changed and its frame resealed: only --deep sees it.
        try save("page-data-resealed", try written { (output: consuming ImageOutput) in
            let process = SyntheticProcess()
            let w = try ImageWriter(output: output, options: options(seed: 24))
            w.frameOverride = { number, compressed in
                guard number == 0 else { return compressed }
                var raw = try! decompressFrame(compressed)
                raw[100] ^= 0xFF
                return raw.withUnsafeBytes { recompressFrame($0) }
            }
            try process.writeBody(to: w)
            try w.finish()
        }, "a stored page changed after hashing, its frame checksum made to match", "ok", deep: "checksum-mismatch")
        // A decompression bomb: frame 0 claims 16 MiB where 8 pages fit.
        try save("decompression-bomb", try written { (output: consuming ImageOutput) in
            let w = try ImageWriter(output: output, options: options(seed: 25))
            w.frameOverride = { number, compressed in
                number == 0 ? [UInt8](repeating: 0, count: 16 << 20).withUnsafeBytes { recompressFrame($0) } : compressed
            }
            try SyntheticProcess().writeBody(to: w)
            try w.finish()
        }, "frame 0 decompresses to 16 MiB, far past the 8 pages its block holds", "ok", deep: "limit-exceeded")
        // Absurd counts.
        var ps = full
        // Field 7 (page_size), varint 4096: tag 0x38, then 0x80 0x20.
        let bodyStart = ImageFormat.headerPrefixLength
        let pageSizeField = Array(ps[bodyStart..<(headerEnd - 8)]).firstRange(of: [0x38, 0x80, 0x20])
        precondition(pageSizeField != nil, "page size field not found in the header body")
        let at = bodyStart + pageSizeField!.lowerBound
        ps[at + 1] = 0xff; ps[at + 2] = 0x7f
        ImageSurgery.resealHeader(&ps)
        try save("absurd-page-size", ps, "a page size of 16383 bytes", "limit-exceeded")
        var bl = full
        ImageSurgery.setPayloadLength(&bl, blockAt: process, to: 1 << 62)
        ImageSurgery.resealBlock(&bl, at: process)
        try save("absurd-block-length", bl, "a section claiming 2^62 bytes", "limit-exceeded")
        var sp = full
        var index = reader.index
        index.storedPages = 1 << 40
        try ImageSurgery.replaceIndex(&sp, indexOffset: indexOffset, with: index)
        try save("absurd-stored-pages", sp, "an index claiming 2^40 stored pages", "limit-exceeded")
        try save("trailing-bytes", full + [0, 1, 2, 3], "four bytes after the footer", "structural")

        // Chains: the good parent, a wrong digest, a missing parent, a cycle.
        let chain1 = try FixtureFiles.read("\(goldenDirectory)/chain-1.ccimg")
        try save("chain-parent", chain1, "a sound full image, parent of the chain cases", "ok")
        let chain2Path = "\(goldenDirectory)/chain-2.ccimg"
        let chain2 = try FixtureFiles.read(chain2Path)
        let link = try ImageReader(path: chain2Path).header.body.parent
        let digestAt = chain2.firstRange(of: Array(link.parentIndexDigest))!.lowerBound
        var wd = chain2; wd[digestAt] ^= 0x01; ImageSurgery.resealHeader(&wd)
        try save("wrong-parent-digest", wd, "an incremental image whose parent digest does not match its parent", "broken-chain")
        let uuidAt = chain2.firstRange(of: Array(link.parentUuid))!.lowerBound
        var mp = chain2; mp[uuidAt + 15] ^= 0x01; ImageSurgery.resealHeader(&mp)
        try save("missing-parent", mp, "an incremental image whose parent is nowhere to be found", "broken-chain")
        // Cycle: A names B and B names A, each with the other's true index digest.
        let a = options(seed: 31), b = options(seed: 32)
        func cycleMember(_ me: ImageWriterOptions, parent: ImageUUID, digest: [UInt8]) throws -> ImageWriteSummary {
            var o = me
            var l = Ccimg_V1_ParentLink()
            l.parentUuid = Data(parent.bytes); l.parentIndexDigest = Data(digest); l.depth = 1
            o.parentLinkOverride = l
            return try SyntheticProcess().write(to: try ImageOutput(path: "\(directory)/cycle-\(me.uuid == a.uuid ? "a" : "b").ccimg"), options: o)
        }
        let first = try cycleMember(a, parent: b.uuid, digest: [UInt8](repeating: 0, count: 16))
        let second = try cycleMember(b, parent: a.uuid, digest: first.indexDigest.canonical)
        _ = try cycleMember(a, parent: b.uuid, digest: second.indexDigest.canonical)
        cases.append(DamagedCase(file: "cycle-a.ccimg", description: "two images that name each other as parent", verify: "broken-chain", verifyDeep: "broken-chain"))
        cases.append(DamagedCase(file: "cycle-b.ccimg", description: "two images that name each other as parent", verify: "broken-chain", verifyDeep: "broken-chain"))

        cases += try OpenFilesFixtures.writeDamaged(into: directory)   // format 1.1 fd tables (decision 0018)

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FixtureFiles.write(Array(try encoder.encode(cases)), to: "\(directory)/manifest.json")
    }

    static func decompressFrame(_ compressed: [UInt8]) throws -> [UInt8] {
        try FrameCodec.decompress(compressed)
    }

    static func recompressFrame(_ raw: UnsafeRawBufferPointer) -> [UInt8] {
        FrameCodec.compress(raw)
    }
}

extension SyntheticProcess {
    /// Writes the sections and memory to an open writer (without finishing it).
    func writeBody(to writer: ImageWriter) throws {
        try writer.addSection(.process, process)
        try writer.addSection(.threads, threads)
        for (vma, pages) in memory {
            try writer.beginVma(vma)
            for page in pages {
                if let page { try writer.appendPages(page) } else { writer.appendNotPopulated(count: 1) }
            }
        }
    }
}

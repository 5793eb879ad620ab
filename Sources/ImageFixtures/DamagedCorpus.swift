@_spi(Fixtures) import CheckpointImage
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The damaged corpus (fixtures/images/damaged), built case by case from the golden
/// images: each case is a file and what `ccimg verify` (and `--deep`) must say of it.
struct DamagedCorpus {
    let directory: String
    /// The golden full image, its bytes and its reader.
    let full: [UInt8]
    let reader: ImageReader
    let goldenDirectory: String
    /// Offsets in the golden image the cases damage.
    let process: Int, frame0: Int, frame1: Int, indexOffset: Int, headerEnd: Int
    let block = ImageFormat.blockHeaderLength
    /// The cases so far, for the manifest.
    var cases: [FixtureSet.DamagedCase] = []

    /// A corpus for `directory`, from the golden images in `goldenDirectory`.
    init(directory: String, goldenDirectory: String) throws {
        self.directory = directory
        self.goldenDirectory = goldenDirectory
        let fullPath = "\(goldenDirectory)/full.ccimg"
        full = try FixtureFiles.read(fullPath)
        reader = try ImageReader(path: fullPath)
        process = Int(reader.sectionEntry(.process)!.offset)
        frame0 = Int(reader.index.frameOffsets[0])
        frame1 = Int(reader.index.frameOffsets[1])
        indexOffset = Int(reader.indexOffset)
        headerEnd = reader.header.encodedLength
    }

    /// Writes one case and notes what verify must say of it.
    mutating func save(_ name: String, _ bytes: [UInt8], _ description: String, _ verify: String, deep: String? = nil) throws {
        try FixtureFiles.write(bytes, to: "\(directory)/\(name).ccimg")
        cases.append(FixtureSet.DamagedCase(file: "\(name).ccimg", description: description, verify: verify, verifyDeep: deep ?? verify))
    }

    /// The golden image with one bit flipped.
    func flipped(_ offset: Int, _ bit: UInt8 = 0x10) -> [UInt8] { var b = full; b[offset] ^= bit; return b }

    /// Files cut short at every structure.
    mutating func addTruncations() throws {
        for (name, length, what) in [("truncated-empty", 0, "an empty file"), ("truncated-in-magic", 4, "cut inside the magic"),
                                     ("truncated-in-header", 30, "cut inside the fixed header"),
                                     ("truncated-in-section", process + block + 5, "cut inside the process section"),
                                     ("truncated-in-frame", frame1 + block + 3, "cut inside frame 1"),
                                     ("truncated-before-index", indexOffset, "cut where the index begins"),
                                     ("truncated-before-footer", full.count - ImageFormat.footerLength, "the footer is missing"),
                                     ("truncated-in-footer", full.count - 5, "cut inside the footer")] {
            try save(name, Array(full.prefix(length)), what, "truncated")
        }
    }

    /// One bit flipped in each structure: the checksums catch them.
    mutating func addBitFlips() throws {
        try save("flip-magic", flipped(1), "a bit flipped in the magic", "bad-magic")
        try save("flip-header-body", flipped(ImageFormat.headerPrefixLength + 3), "a bit flipped in the header body", "checksum-mismatch")
        try save("flip-section-header", flipped(process + 8), "a bit flipped in the process section's block header", "checksum-mismatch")
        try save("flip-section-payload", flipped(process + block + 2), "a bit flipped in the process section's payload", "checksum-mismatch")
        try save("flip-frame-payload", flipped(frame0 + block + 20), "a bit flipped in frame 0's compressed bytes", "checksum-mismatch")
        try save("flip-index", flipped(indexOffset + block + 7), "a bit flipped in the index payload", "checksum-mismatch")
        try save("flip-footer", flipped(full.count - 12), "a bit flipped in the footer's index offset", "checksum-mismatch")
    }

    /// Versions and feature bits this reader does not know (checksums resealed so the
    /// checks behind them are reached).
    mutating func addVersionsAndFeatures() throws {
        var v = full; v[8] = 2; ImageSurgery.resealHeader(&v)
        try save("version-2.0", v, "format major version 2", "unsupported")
        var f = full; f[32] |= 0x20; ImageSurgery.resealHeader(&f)
        try save("unknown-incompatible-feature", f, "an incompatible feature bit this reader does not know", "unsupported")
        var c = full; c[16] |= 0x40; ImageSurgery.resealHeader(&c)
        try save("unknown-compatible-feature", c, "a compatible feature bit this reader does not know (must be ignored)", "ok")
    }

    /// Images written for the case: sections a reader does not know, a missing section,
    /// page data changed under its hash, a decompression bomb.
    mutating func addWrittenCases() throws {
        let tmp = "\(directory)/.tmp-\(FixtureFiles.processID).ccimg"
        defer { FixtureFiles.remove(tmp) }
        func written(_ body: (consuming ImageOutput) throws -> Void) throws -> [UInt8] {
            try body(try ImageOutput(path: tmp))
            return try FixtureFiles.read(tmp)
        }
        try save("unknown-critical-section", try written { (output: consuming ImageOutput) in
            try SyntheticProcess().write(to: output, options: FixtureSet.options(seed: 21), extraSections: [(FixtureSet.unknownCriticalKind, true, [1, 2, 3])])
        }, "a critical section of a kind this reader does not know", "unsupported")
        try save("unknown-optional-section", try written { (output: consuming ImageOutput) in
            try SyntheticProcess().write(to: output, options: FixtureSet.options(seed: 22), extraSections: [(FixtureSet.unknownOptionalKind, false, [1, 2, 3])])
        }, "an optional section of a kind this reader does not know (must be skipped)", "ok")
        try save("missing-process-section", try written { (output: consuming ImageOutput) in
            let w = try ImageWriter(output: output, options: FixtureSet.options(seed: 23))
            try w.finish()
        }, "no process section", "structural")
        // Page data changed and its frame resealed: only --deep sees it.
        try save("page-data-resealed", try written { (output: consuming ImageOutput) in
            let process = SyntheticProcess()
            let w = try ImageWriter(output: output, options: FixtureSet.options(seed: 24))
            w.frameOverride = { number, compressed in
                guard number == 0 else { return compressed }
                var raw = try! FixtureSet.decompressFrame(compressed)
                raw[100] ^= 0xFF
                return raw.withUnsafeBytes { FixtureSet.recompressFrame($0) }
            }
            try process.writeBody(to: w)
            try w.finish()
        }, "a stored page changed after hashing, its frame checksum made to match", "ok", deep: "checksum-mismatch")
        // A decompression bomb: frame 0 claims 16 MiB where 8 pages fit.
        try save("decompression-bomb", try written { (output: consuming ImageOutput) in
            let w = try ImageWriter(output: output, options: FixtureSet.options(seed: 25))
            w.frameOverride = { number, compressed in
                number == 0 ? [UInt8](repeating: 0, count: 16 << 20).withUnsafeBytes { FixtureSet.recompressFrame($0) } : compressed
            }
            try SyntheticProcess().writeBody(to: w)
            try w.finish()
        }, "frame 0 decompresses to 16 MiB, far past the 8 pages its block holds", "ok", deep: "limit-exceeded")
    }

    /// Counts and lengths past every limit.
    mutating func addAbsurdCounts() throws {
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

    }

    /// Chains: the good parent, a wrong digest, a missing parent, a cycle.
    mutating func addChains() throws {
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
        let a = FixtureSet.options(seed: 31), b = FixtureSet.options(seed: 32)
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
        cases.append(FixtureSet.DamagedCase(file: "cycle-a.ccimg", description: "two images that name each other as parent", verify: "broken-chain", verifyDeep: "broken-chain"))
        cases.append(FixtureSet.DamagedCase(file: "cycle-b.ccimg", description: "two images that name each other as parent", verify: "broken-chain", verifyDeep: "broken-chain"))

    }
}

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
        var corpus = try DamagedCorpus(directory: directory, goldenDirectory: goldenDirectory)
        try corpus.addTruncations()
        try corpus.addBitFlips()
        try corpus.addVersionsAndFeatures()
        try corpus.addWrittenCases()
        try corpus.addAbsurdCounts()
        try corpus.addChains()
        corpus.cases += try OpenFilesFixtures.writeDamaged(into: directory)   // format 1.1 fd tables (decision 0018)

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FixtureFiles.write(Array(try encoder.encode(corpus.cases)), to: "\(directory)/manifest.json")
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

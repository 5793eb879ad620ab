import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// §2/§11 Every byte of an image is under a checksum: flipping any bit, or
/// cutting the file anywhere, must make it invalid — never valid, never a crash.
@Suite struct CorruptionSweepTests {
    /// A small image: a process section, one VMA of six pages (zero, text,
    /// random, a duplicate, not populated, text) in frames of two pages.
    static func smallImage(in dir: TempDir) throws -> [UInt8] {
        let path = dir.file("small.ccimg")
        var options = ImageWriterOptions()
        options.pagesPerFrame = 2
        var g = SeededGenerator(seed: 0x5EED)
        options.uuid = ImageUUID.deterministic(using: &g)
        options.createdUnixNanoseconds = 1_700_000_000_000_000_000
        let writer = try ImageWriter(output: try ImageOutput(path: path), options: options)
        var p = Ccimg_V1_ProcessInfo()
        p.pid = 31337
        p.comm = "sweep"
        p.cmdline = ["sweep", "--all"]
        try writer.addSection(.process, p)
        var t = Ccimg_V1_ThreadList()
        var thread = Ccimg_V1_ThreadState(); thread.tid = 31337; thread.generalRegisters = Data(g.bytes(64))
        t.threads = [thread]
        try writer.addSection(.threads, t)
        try writer.beginVma(makeVma(start: 0x40_0000, pages: 6, pageSize: 4096, role: .heap))
        let text = textPage(1, pageSize: 4096)
        var random = [UInt8](repeating: 0, count: 4096)
        for i in 0..<512 { random[i] = UInt8.random(in: 0...255, using: &g) }  // mostly compressible: keeps the file small
        random[0] |= 1
        try writer.appendPages([UInt8](repeating: 0, count: 4096) + text + random + text)
        writer.appendNotPopulated(count: 1)
        try writer.appendPages(textPage(2, pageSize: 4096))
        let summary = try writer.finish()
        #expect(summary.pages == [.zero: 1, .stored: 3, .dedup: 1, .notPopulated: 1])
        return try readBytes(path)
    }

    /// The class a flip at `offset` must be reported as first, where the format
    /// fixes it: magic → bad-magic; the rest of the header, every block but its
    /// type and length fields, and the footer → checksum-mismatch (§3.1, §4, §7.2).
    static func expectedClass(forFlipAt offset: Int, in l: ImageLayout) -> ImageError.Code? {
        if offset < 8 { return .badMagic }
        if offset < l.headerEnd { return (12..<16).contains(offset) ? nil : .checksumMismatch }
        if offset >= l.footerOffset { return offset < l.footerOffset + 8 ? .badMagic : .checksumMismatch }
        guard let block = l.blocks.first(where: { $0.offset <= offset && offset < $0.end }) else { return nil }
        let within = offset - block.offset
        if within < 4 || (16..<24).contains(within) { return nil }  // type tag, payload length: framing changes
        return .checksumMismatch
    }

    @Test func everySingleBitFlipIsDetected() throws {
        let dir = try TempDir("sweep-flip")
        defer { dir.remove() }
        let original = try Self.smallImage(in: dir)
        #expect(original.count < 8192, "the sweep image should be a few KB")
        let l = try #require(layout(of: original))
        #expect(ImageVerifier.verify(path: dir.file("small.ccimg"), deep: true).isValid)
        try readEverything(dir.file("small.ccimg"))

        let path = dir.file("variant.ccimg")
        var undetected: [Int] = [], wrongClass: [String] = [], readable: [Int] = []
        for offset in 0..<original.count {
            var bytes = original
            bytes[offset] ^= UInt8(1) << UInt8(offset % 8)
            try writeBytes(bytes, to: path)
            // A flip in a frame's page count (block header bytes 12..<16) makes the deep verifier
            // allocate a hash slot per claimed page before it looks at the checksum — up to 2^32 of
            // them (see verifierDoesNotAllocateFromADamagedFrameCount). Those few offsets are checked
            // shallow here, so the sweep cannot exhaust the machine's memory.
            let inFrameCount = l.blocks.contains { $0.typeTag == BlockType.frame.rawValue && (12..<16).contains(offset - $0.offset) }
            let report = ImageVerifier.verify(path: path, deep: !inFrameCount)
            if report.isValid { undetected.append(offset) }
            if let expected = Self.expectedClass(forFlipAt: offset, in: l), report.problems.first?.code != expected {
                wrongClass.append("\(offset): \(report.problems.first.map { "\($0)" } ?? "valid"), expected \(expected.rawValue)")
            }
            // The random-access reader, reading everything, meets a checksum too.
            if thrown({ try readEverything(path) }) == nil { readable.append(offset) }
        }
        #expect(undetected.isEmpty, "flips verify says are valid: \(undetected.prefix(20)) (\(undetected.count) in all)")
        #expect(wrongClass.isEmpty, "\(wrongClass.count) flips with an unexpected first class: \(wrongClass.prefix(10))")
        #expect(readable.isEmpty, "flips the reader reads without error: \(readable.prefix(20)) (\(readable.count) in all)")
    }

    @Test func everyTruncationIsDetectedAsTruncated() throws {
        let dir = try TempDir("sweep-cut")
        defer { dir.remove() }
        let original = try Self.smallImage(in: dir)
        let path = dir.file("variant.ccimg")
        var failures: [String] = [], readable: [Int] = []
        for length in 0..<original.count {
            try writeBytes(Array(original.prefix(length)), to: path)
            let report = ImageVerifier.verify(path: path, deep: true)
            // §11: a cut file "ends before a structure it promises".
            if report.problems.first?.code != .truncated {
                failures.append("\(length): \(report.problems.first.map { "\($0)" } ?? "valid")")
            }
            if thrown({ try readEverything(path) }) == nil { readable.append(length) }
        }
        #expect(failures.isEmpty, "\(failures.count) cuts not reported as truncated first: \(failures.prefix(10))")
        #expect(readable.isEmpty, "cuts the reader reads without error: \(readable.prefix(20))")
    }

    @Test func everyTruncationFromAStreamIsDetected() throws {
        // The same through verify(streamFrom:), on a sample of cut points (a pipe per cut).
        let dir = try TempDir("sweep-stream")
        defer { dir.remove() }
        let original = try Self.smallImage(in: dir)
        let path = dir.file("variant.ccimg")
        var failures: [String] = []
        for length in stride(from: 0, to: original.count, by: 7) {
            try writeBytes(Array(original.prefix(length)), to: path)
            let fd = open(path, O_RDONLY)
            try #require(fd >= 0)
            defer { close(fd) }
            let report = ImageVerifier.verify(streamFrom: fd, deep: true)
            if report.problems.first?.code != .truncated {
                failures.append("\(length): \(report.problems.first.map { "\($0)" } ?? "valid")")
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(10))")
    }

    /// §1/§10: no input may make a reader allocate beyond the limits. A frame whose
    /// page count (aux) is damaged must be reported, not trusted: the deep verifier
    /// must not size anything by it. Run in a child process with its address space
    /// capped, so the bug, when present, kills only that process.
    @Test(arguments: [(resealed: false, aux: UInt32(2) | 1 << 31), (resealed: true, aux: UInt32.max)])
    func verifierDoesNotAllocateFromADamagedFrameCount(resealed: Bool, aux: UInt32) throws {
        let dir = try TempDir("frame-aux")
        defer { dir.remove() }
        var bytes = try Self.smallImage(in: dir)
        let l = try #require(layout(of: bytes))
        let frame = try #require(l.blocks.first { $0.typeTag == BlockType.frame.rawValue })
        for i in 0..<4 { bytes[frame.offset + 12 + i] = UInt8(truncatingIfNeeded: aux >> (8 * UInt32(i))) }
        if resealed { ImageSurgery.resealBlock(&bytes, at: frame.offset) }
        let path = dir.file("aux.ccimg")
        try writeBytes(bytes, to: path)
        // Shallow verify never sizes by aux.
        let shallow = ImageVerifier.verify(path: path, deep: false)
        #expect(firstClass(shallow) == (resealed ? "structural" : "checksum-mismatch"), "\(shallow.problems)")
        let exe = try #require(CCImg.executable)
        let result = try Shell.run("ulimit -v 4000000; SWIFT_BACKTRACE=enable=no exec \"$0\" verify --deep \"$1\"",
                                   arguments: [exe, path])
        #expect(result.signaled == false, "ccimg verify --deep was killed by signal \(result.status) on a frame claiming \(aux) pages: \(result.stderr.suffix(400))")
        #expect(result.status == (resealed ? 14 : 13), "\(result.stderr)")
    }
}

import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures
import SwiftProtobuf
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Paths

enum Paths {
    /// …/Tests/CheckpointImageTests/TestSupport.swift → up three levels.
    static let repoRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .path

    static let goldenDirectory = repoRoot + "/fixtures/images/1.0"
    static let damagedDirectory = repoRoot + "/fixtures/images/damaged"

    static func golden(_ name: String) -> String { "\(goldenDirectory)/\(name).ccimg" }
    static func damaged(_ file: String) -> String { "\(damagedDirectory)/\(file)" }
}

// MARK: - Temporary directories

/// A unique temporary directory; callers remove it with `defer { dir.remove() }`.
final class TempDir: Sendable {
    let path: String

    init(_ label: String = "t") throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("ccimg-tests-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Names in the directory, hidden ones included, sorted.
    func contents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func readBytes(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

/// Runs `body` and returns what it threw (nil when it did not throw).
func thrown(_ body: () throws -> Void) -> (any Error)? {
    do {
        try body()
        return nil
    } catch {
        return error
    }
}

/// The ``ImageError/Code`` of what `body` threw; nil if it did not throw or threw something else.
func imageErrorCode(_ body: () throws -> Void) -> ImageError.Code? {
    (thrown(body) as? ImageError)?.code
}

/// The class `ccimg verify` would report first: a code's raw value, or "ok".
func firstClass(_ report: VerifyReport) -> String {
    report.problems.first?.code.rawValue ?? "ok"
}

// MARK: - Reading everything

/// Opens `path` with its chain and reads every section of every image (decoded
/// as its message for known kinds), every frame, and every page of the top
/// image's memory map. A sound image reads without error; any damage a
/// checksum covers must make this throw an ``ImageError``.
func readEverything(_ path: String, storeDirectories: [String] = []) throws(ImageError) {
    let chain = try ImageChain.open(path: path, storeDirectories: storeDirectories)
    for image in chain.images {
        for entry in image.index.sections {
            if let kind = SectionKind(rawValue: entry.kind) {
                try decodeSection(image, kind, SectionCatalog.messageType(kind))
            } else {
                _ = try image.sectionPayload(entry)
            }
        }
        for frame in 0..<image.index.frameOffsets.count {
            _ = try image.frame(frame)
        }
        for ordinal in 0..<image.index.storedPages {
            _ = try image.storedPage(ordinal)
        }
    }
    let ps = UInt64(chain.pageSize)
    for vma in chain.top.memoryMap {
        var address = vma.start
        while address < vma.end {
            _ = try chain.pageBytes(at: address)
            address += ps
        }
    }
}

private func decodeSection<M: SwiftProtobuf.Message>(_ image: ImageReader, _ kind: SectionKind, _ type: M.Type) throws(ImageError) {
    _ = try image.section(kind, as: type)
}

// MARK: - Block layout (an independent walk of §2/§4, for tests)

struct BlockExtent {
    var typeTag: UInt32
    var offset: Int
    var payloadLength: Int
    var end: Int { offset + ImageFormat.blockHeaderLength + payloadLength }
}

struct ImageLayout {
    var headerEnd: Int
    var blocks: [BlockExtent]
    var footerOffset: Int
}

func le<T: FixedWidthInteger>(_ bytes: [UInt8], _ at: Int, _: T.Type) -> T {
    var v: T = 0
    for i in 0..<MemoryLayout<T>.size { v |= T(bytes[at + i]) << (8 * i) }
    return v
}

/// Walks a sound image block by block; returns nil if it does not tile.
func layout(of bytes: [UInt8]) -> ImageLayout? {
    guard bytes.count >= 56 else { return nil }
    let bodyLength = Int(le(bytes, 12, UInt32.self))
    let headerEnd = ImageFormat.headerPrefixLength + bodyLength + 8
    var blocks: [BlockExtent] = []
    var offset = headerEnd
    while offset + ImageFormat.blockHeaderLength <= bytes.count {
        let tag = le(bytes, offset, UInt32.self)
        let length = Int(le(bytes, offset + 16, UInt64.self))
        let block = BlockExtent(typeTag: tag, offset: offset, payloadLength: length)
        guard block.end <= bytes.count else { return nil }
        blocks.append(block)
        offset = block.end
        if tag == BlockType.index.rawValue { break }
    }
    guard blocks.last?.typeTag == BlockType.index.rawValue, offset + ImageFormat.footerLength == bytes.count else { return nil }
    return ImageLayout(headerEnd: headerEnd, blocks: blocks, footerOffset: offset)
}

// MARK: - Random content

extension SeededGenerator {
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) } }
    mutating func string(_ maxLength: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789-_=/. äé✓")
        return String((0..<int(0...maxLength)).map { _ in alphabet[int(0...(alphabet.count - 1))] })
    }
}

/// A page of random bytes (never all zero in practice), fast even in debug builds.
func randomPage(_ g: inout SeededGenerator, pageSize: Int) -> [UInt8] {
    var page = [UInt8](repeating: 0, count: pageSize)
    page.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for i in words.indices { words[i] = g.next() }
    }
    page[0] |= 1
    return page
}

/// A compressible page of words, the same for the same `seed`.
func textPage(_ seed: Int, pageSize: Int) -> [UInt8] {
    let words = ["checkpoint", "restore", "migrate", "process", "thread", "memory", "handle", "socket"]
    var out: [UInt8] = []
    out.reserveCapacity(pageSize + 16)
    var i = UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1
    while out.count < pageSize {
        out += Array(words[Int(i % UInt64(words.count))].utf8)
        out.append(UInt8(ascii: " "))
        i = i &* 6364136223846793005 &+ 1442695040888963407
        i ^= i >> 29
    }
    var page = Array(out.prefix(pageSize))
    // Make the seed visible so distinct seeds give distinct pages.
    let tag = Array("#\(seed)#".utf8)
    page.replaceSubrange(0..<tag.count, with: tag)
    return page
}

func makeVma(start: UInt64, pages: Int, pageSize: Int, role: Ccimg_V1_VmaRole = .anonymous, prot: UInt32 = 3,
             path: String = "") -> Ccimg_V1_Vma {
    var v = Ccimg_V1_Vma()
    v.start = start
    v.end = start + UInt64(pages * pageSize)
    v.prot = prot
    v.role = role
    v.path = path
    return v
}

// MARK: - A memory model written with ImageWriter

/// Memory as a test describes it: each VMA with its pages; nil = never populated.
struct MemoryModel {
    var pageSize: Int
    var vmas: [(vma: Ccimg_V1_Vma, pages: [[UInt8]?])]

    var zeroPage: [UInt8] { [UInt8](repeating: 0, count: pageSize) }

    /// Every page with its address.
    var allPages: [(address: UInt64, page: [UInt8]?)] {
        vmas.flatMap { vma, pages in
            pages.enumerated().map { (vma.start + UInt64($0.offset * pageSize), $0.element) }
        }
    }

    /// Random memory: `vmaCount` VMAs of 1…`maxPages` pages with random gaps; each page
    /// not populated, zero, random, a copy of an earlier page, or a text page.
    static func random(_ g: inout SeededGenerator, pageSize: Int, vmaCount: Int, maxPages: Int,
                       notPopulatedWeight: Int = 2) -> MemoryModel {
        var vmas: [(vma: Ccimg_V1_Vma, pages: [[UInt8]?])] = []
        var earlier: [[UInt8]] = []
        var address = UInt64(g.int(1...64) * pageSize) + 0x10_0000_0000
        let roles: [Ccimg_V1_VmaRole] = [.anonymous, .heap, .elfData, .threadStack, .sharedMemory, .filePrivate]
        for _ in 0..<vmaCount {
            let count = g.int(1...maxPages)
            var pages: [[UInt8]?] = []
            for _ in 0..<count {
                let weights = [notPopulatedWeight, 2, 3, 2, 2]
                var pick = g.int(0...(weights.reduce(0, +) - 1))
                var kind = 0
                while pick >= weights[kind] { pick -= weights[kind]; kind += 1 }
                switch kind {
                case 0: pages.append(nil)
                case 1: pages.append([UInt8](repeating: 0, count: pageSize))
                case 2:
                    let p = randomPage(&g, pageSize: pageSize)
                    earlier.append(p)
                    pages.append(p)
                case 3 where !earlier.isEmpty:
                    pages.append(earlier[g.int(0...(earlier.count - 1))])
                default:
                    let p = textPage(g.int(0...12), pageSize: pageSize)
                    earlier.append(p)
                    pages.append(p)
                }
            }
            var vma = makeVma(start: address, pages: count, pageSize: pageSize, role: roles[g.int(0...(roles.count - 1))],
                              prot: UInt32(g.int(0...7)))
            vma.shared = g.chance(0.2)
            vma.fileOffset = g.chance(0.3) ? UInt64(g.int(0...100) * pageSize) : 0
            if g.chance(0.3) { vma.path = "/lib/" + g.string(12) }
            vmas.append((vma, pages))
            // Adjacent VMAs are allowed; usually leave a gap.
            address = vma.end + UInt64(g.int(0...3) * g.int(0...9) * pageSize)
        }
        return MemoryModel(pageSize: pageSize, vmas: vmas)
    }

    /// Writes the memory: runs of populated pages go in one appendPages call,
    /// zero pages sometimes through appendZero, and never-populated pages
    /// through appendNotPopulated.
    /// With `inPlace`, runs go through ``ImageWriter/appendPages(count:reading:)``
    /// (pages copied into the frame by the callback, as a capture reads them).
    func write(to writer: ImageWriter, zeroViaAppendZero: Bool = false, inPlace: Bool = false) throws {
        for (vma, pages) in vmas {
            try writer.beginVma(vma)
            var pending: [UInt8] = []
            func flush() throws {
                guard !pending.isEmpty else { return }
                if inPlace {
                    try writer.appendPages(count: pending.count / pageSize) { dest, first in
                        pending.withUnsafeBytes { src in
                            dest.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(first * pageSize)..<(first * pageSize + dest.count)]))
                        }
                    }
                } else {
                    try writer.appendPages(pending)
                }
                pending.removeAll()
            }
            for page in pages {
                if let page {
                    if zeroViaAppendZero && page.allSatisfy({ $0 == 0 }) {
                        try flush()
                        writer.appendZero(count: 1)
                    } else {
                        pending += page
                    }
                } else {
                    try flush()
                    writer.appendNotPopulated(count: 1)
                }
            }
            try flush()
        }
    }

    /// Distinct non-zero page contents, in first-seen order (the order ordinals are assigned without a parent).
    var distinctNonZeroPages: [[UInt8]] {
        var seen = Set<[UInt8]>()
        var out: [[UInt8]] = []
        for (_, page) in allPages {
            guard let page, page.contains(where: { $0 != 0 }) else { continue }
            if seen.insert(page).inserted { out.append(page) }
        }
        return out
    }
}

/// Writes `model` with a process section to `path`.
@discardableResult
func writeImage(_ model: MemoryModel, to path: String, options: ImageWriterOptions = ImageWriterOptions(),
                parent: ImageChain? = nil, process: Ccimg_V1_ProcessInfo? = nil, inPlace: Bool = false) throws -> ImageWriteSummary {
    var opts = options
    opts.pageSize = UInt32(model.pageSize)
    let writer = try ImageWriter(output: try ImageOutput(path: path), options: opts, parent: parent)
    var p = process ?? Ccimg_V1_ProcessInfo()
    if process == nil {
        p.pid = 777
        p.comm = "test"
        p.cmdline = ["test", "--run"]
    }
    try writer.addSection(.process, p)
    try model.write(to: writer, inPlace: inPlace)
    return try writer.finish()
}

// MARK: - The ccimg executable

struct CLIResult {
    var status: Int32
    var stdoutData: Data
    var stderr: String
    var stdout: String { String(decoding: stdoutData, as: UTF8.self) }

    /// stdout parsed as a JSON object.
    func json() throws -> [String: Any] {
        let any = try JSONSerialization.jsonObject(with: stdoutData)
        return try #require(any as? [String: Any], "stdout is not a JSON object: \(stdout)")
    }
}

enum CCImg {
    /// The built `ccimg`, a sibling of the test bundle.
    static let executable: String? = {
        var directories: [URL] = []
        let arg0 = URL(fileURLWithPath: CommandLine.arguments[0])
        directories.append(arg0.deletingLastPathComponent())
        directories.append(arg0.resolvingSymlinksInPath().deletingLastPathComponent())
        directories.append(Bundle.main.bundleURL.deletingLastPathComponent())
        directories.append(Bundle.main.bundleURL)
        if let exe = Bundle.main.executableURL { directories.append(exe.deletingLastPathComponent()) }
        for directory in directories {
            let candidate = directory.appendingPathComponent("ccimg").path
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
               FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }()

    /// Runs `ccimg ARGS`, optionally with `stdinFile` as standard input; waits for it to exit.
    static func run(_ arguments: [String], stdinFile: String? = nil) throws -> CLIResult {
        let exe = try #require(executable, "ccimg not found beside the test bundle (\(CommandLine.arguments[0]))")
        let r = try runCapturingOutput(exe, arguments, stdinFile: stdinFile)
        #expect(r.reason == .exit, "ccimg \(arguments) was killed by a signal")
        return CLIResult(status: r.status, stdoutData: r.stdout, stderr: String(decoding: r.stderr, as: UTF8.self))
    }
}

/// Runs a program to completion with its standard output and error in files (no pipe to fill up).
func runCapturingOutput(_ executable: String, _ arguments: [String], stdinFile: String? = nil) throws
    -> (status: Int32, reason: Process.TerminationReason, stdout: Data, stderr: Data) {
    let scratch = try TempDir("run-io")
    defer { scratch.remove() }
    let outPath = scratch.file("stdout"), errPath = scratch.file("stderr")
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    let out = try #require(FileHandle(forWritingAtPath: outPath))
    let err = try #require(FileHandle(forWritingAtPath: errPath))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = out
    process.standardError = err
    if let stdinFile {
        guard let input = FileHandle(forReadingAtPath: stdinFile) else { throw CocoaError(.fileNoSuchFile) }
        process.standardInput = input
    } else {
        process.standardInput = FileHandle.nullDevice
    }
    try process.run()
    process.waitUntilExit()
    try out.close()
    try err.close()
    return (process.terminationStatus, process.terminationReason,
            try Data(contentsOf: URL(fileURLWithPath: outPath)), try Data(contentsOf: URL(fileURLWithPath: errPath)))
}

/// Runs a `/bin/sh -c` script (for resource limits around a child); `$0`, `$1`… are `arguments`.
enum Shell {
    struct Result {
        var status: Int32
        var signaled: Bool
        var stdout: String
        var stderr: String
    }

    static func run(_ script: String, arguments: [String]) throws -> Result {
        let r = try runCapturingOutput("/bin/sh", ["-c", script] + arguments)
        // A shell that `exec`s reports the child's signal as its own termination reason.
        return Result(status: r.status, signaled: r.reason == .uncaughtSignal,
                      stdout: String(decoding: r.stdout, as: UTF8.self), stderr: String(decoding: r.stderr, as: UTF8.self))
    }
}

/// bench-image: how fast CheckpointImage writes and reads a memory image,
/// next to the `zstd` command line tool on the same bytes, in the same run.
///
/// What is measured
/// - The input is synthetic process memory, generated deterministically
///   (SplitMix64, fixed seed) and held in RAM: 4 KiB pages, 40% all-zero,
///   40% text-like (lines of words from a small vocabulary in varying order,
///   half of them starting like a recent line; ~3.6x alone with zstd -1),
///   20% random, interleaved in runs of 1-128 pages as in a heap.
///   Generating it is not timed. The same bytes are written to `DIR/raw.bin`,
///   which is what `zstd` compresses.
/// - write: `zstd -1 -T0 raw.bin -o raw.zst` against an ``ImageWriter`` that
///   writes a process section and one heap VMA covering all the pages
///   (``ImageWriter/appendPages(_:)`` in 16 MiB slices), then `finish()`.
///   The image is timed twice: to a file made atomically (`ImageOutput(path:)`,
///   whose commit fsyncs the file and its directory: what the library does)
///   and streamed to an already open file with no fsync (what zstd does).
/// - read: `zstd -d -T0 raw.zst -o raw.out` against restoring all the memory
///   from the image into a buffer of the full size: open an ``ImageReader``,
///   decompress every frame with ``ImageReader/frame(_:)``, copy each stored
///   page to its address, copy dedup pages and clear zero pages, as the page
///   map says. Once on one thread (the library's read path as it is), once
///   with the frames split across `activeProcessorCount` threads, each with
///   its own reader. The restored buffer is compared with the source after
///   each variant (not timed). zstd -d writes its output to a file (sparse
///   over zeros, into the page cache), so it is also timed writing to
///   /dev/null: decompression alone, a harder reference, reported for
///   information.
/// - size: the image file against `raw.zst`.
///
/// The measurements run round-robin, so that load from other processes on a
/// shared machine hits them alike: a warm-up round, then `--runs` rounds
/// (default 3); each one's best time counts. `sync` runs before each, so that
/// dirty pages left by an earlier step are not flushed inside a timed one.
/// The page cache is warm for every read (the machine's RAM holds all files).
/// Times are wall clock, including process start-up for zstd. MB/s is raw
/// (uncompressed) bytes, 10^6 per MB, over the time. The report says how much
/// CPU other processes took meanwhile (from /proc/stat): above a few percent,
/// the numbers are noisy.
///
/// The ratios are reported against the targets (write and read time ≤ 1.20×
/// zstd's, size ≤ 1.05× zstd -1's) as PASS or MISS; a miss does not fail the
/// program: it exits 0 unless something breaks (an error, a restore that
/// differs from the source).
///
/// Usage: bench-image --dir DIR [--size MiB] [--runs N] [--mix ZERO,TEXT,RANDOM] [--keep]
import CheckpointImage
import LinuxKernel
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: Options

struct Options {
    var sizeMiB = 1024
    var directory = ""
    var runs = 3
    /// Percentages of zero, text-like and random pages.
    var mix = (zero: 40, text: 40, random: 20)
    /// Leaves the files in the directory (for looking at them with zstd or ccimg).
    var keep = false
    var seed: UInt64 = 0xC0FF_EE00_BE7C_4A9E

    static let usage = "usage: bench-image --dir DIR [--size MiB] [--runs N] [--mix ZERO,TEXT,RANDOM] [--keep]"

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ name: String) throws -> String {
            guard let v = rest.popFirst() else { throw BenchError("\(name) needs a value\n\(usage)") }
            return v
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--size":
                guard let n = Int(try value(argument)), n > 0 else { throw BenchError("--size needs a positive number of MiB") }
                options.sizeMiB = n
            case "--dir": options.directory = try value(argument)
            case "--runs":
                guard let n = Int(try value(argument)), n > 0 else { throw BenchError("--runs needs a positive number") }
                options.runs = n
            case "--mix":
                let parts = try value(argument).split(separator: ",").compactMap { Int($0) }
                guard parts.count == 3, parts.allSatisfy({ $0 >= 0 }), parts.reduce(0, +) == 100 else {
                    throw BenchError("--mix needs three percentages adding up to 100, such as 40,40,20")
                }
                options.mix = (parts[0], parts[1], parts[2])
            case "--keep": options.keep = true
            case "-h", "--help":
                print(usage)
                exit(0)
            default: throw BenchError("unknown argument \(argument)\n\(usage)")
            }
        }
        guard !options.directory.isEmpty else { throw BenchError("--dir is required\n\(usage)") }
        return options
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: Synthetic memory

/// SplitMix64: small, fast and the same on every machine.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A number in 0..<n (n small; the modulo bias does not matter here).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

enum PageKind: Int, CaseIterable {
    case zero, text, random
    var name: String { ["zero", "text", "random"][rawValue] }
}

/// Process memory held in RAM, page aligned; freed by ``deallocate()``.
struct SyntheticMemory {
    static let pageSize = 4096
    let bytes: UnsafeMutableRawBufferPointer
    var pageCounts: [PageKind: Int] = [:]
    var pageCount: Int { bytes.count / SyntheticMemory.pageSize }

    /// Tokens of the text-like pages: English, identifiers, paths, JSON keys.
    /// Picked with a skew towards the front, as word frequencies are.
    static let vocabulary: [[UInt8]] = """
    the of and to in is for that on with as by it this be are from at or an not was process thread memory \
    checkpoint restore image page frame section index error return value size count offset length buffer \
    result status request response user name id type data key time file path config server client socket \
    handle signal state true false null self let var func struct class enum case default if else while \
    guard throw try catch import public private static final override init deinit async await Int UInt64 \
    String Array Dictionary Optional http://example.com/api/v1 /usr/lib/x86_64-linux-gnu/libc.so.6 \
    "timestamp": "level": "message": "trace_id": INFO WARN DEBUG {"id": [], {}, (), ->, ==, !=, &&, ||, \
    += 0x7ffd4a3c 0x55555555 connection established closed timeout retry attempt payload header footer \
    compress decompress checksum verify mismatch allocate release lock unlock wait notify queue worker
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { Array($0.utf8) }

    /// Generates `sizeMiB` of memory: page kinds in runs of 1 to 128 pages,
    /// chosen with weights equal to the pages of each kind still to place, so
    /// the mix comes out exact.
    static func generate(sizeMiB: Int, mix: (zero: Int, text: Int, random: Int), seed: UInt64) -> SyntheticMemory {
        let pages = sizeMiB * (1 << 20) / pageSize
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: pages * pageSize, alignment: pageSize)
        var memory = SyntheticMemory(bytes: bytes)
        var rng = SplitMix64(seed: seed)
        var left = [pages * mix.zero / 100, pages * mix.text / 100, 0]
        left[2] = pages - left[0] - left[1]
        var text = TextStream()
        var page = 0
        while page < pages {
            let total = left.reduce(0, +)
            var pick = rng.below(total)
            var kind = 0
            while pick >= left[kind] {
                pick -= left[kind]
                kind += 1
            }
            // Run lengths spread over 1...128, short runs the most common.
            let span = 1 << rng.below(8)
            let run = min(left[kind], 1 + rng.below(span))
            for _ in 0..<run {
                let target = UnsafeMutableRawBufferPointer(rebasing: bytes[(page * pageSize)..<((page + 1) * pageSize)])
                switch PageKind(rawValue: kind)! {
                case .zero: target.initializeMemory(as: UInt8.self, repeating: 0)
                case .text: text.fill(target, &rng)
                case .random:
                    for i in stride(from: 0, to: pageSize, by: 8) { target.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self) }
                }
                page += 1
            }
            left[kind] -= run
            memory.pageCounts[PageKind(rawValue: kind)!, default: 0] += run
        }
        return memory
    }

    func deallocate() { bytes.deallocate() }
}

/// Text like a log or source file: indented lines of tokens and numbers,
/// half of them starting like one of the last few lines (as log lines and
/// code do) and ending differently. One stream runs through all text pages,
/// cut at page boundaries.
struct TextStream {
    private var pending: [UInt8] = []
    private var recent: [[UInt8]] = []

    mutating func fill(_ page: UnsafeMutableRawBufferPointer, _ rng: inout SplitMix64) {
        var filled = 0
        while filled < page.count {
            if pending.isEmpty { pending = nextLine(&rng) }
            let n = min(pending.count, page.count - filled)
            pending.withUnsafeBytes { page.baseAddress!.advanced(by: filled).copyMemory(from: $0.baseAddress!, byteCount: n) }
            pending.removeFirst(n)
            filled += n
        }
    }

    private mutating func nextLine(_ rng: inout SplitMix64) -> [UInt8] {
        var line: [UInt8]
        if recent.count == 32 && rng.below(2) == 0 {
            // The start of a recent line, up to one of its spaces, then new tokens.
            let model = recent[rng.below(recent.count)]
            let spaces = model.indices.filter { model[$0] == 0x20 }.suffix(3)
            let cut = spaces.isEmpty ? 0 : spaces[spaces.startIndex + rng.below(spaces.count)]
            line = Array(model[..<cut])
            TextStream.appendTokens(&line, count: 1 + rng.below(3), &rng)
        } else {
            line = [UInt8](repeating: 0x20, count: 2 * rng.below(6))
            TextStream.appendTokens(&line, count: 3 + rng.below(10), &rng)
        }
        line.append(0x0A)
        if recent.count < 32 { recent.append(line) } else { recent[rng.below(32)] = line }
        return line
    }

    static func appendTokens(_ out: inout [UInt8], count: Int, _ rng: inout SplitMix64) {
        let words = SyntheticMemory.vocabulary
        let n = words.count
        for _ in 0..<count {
            if !out.isEmpty && out.last != 0x20 { out.append(rng.below(8) == 0 ? 0x2C : 0x20) }
            if rng.below(12) == 0 {
                out += Array(String(rng.below(1000)).utf8)
            } else {
                // Product of uniform picks: small indices (common words) come up most.
                out += words[rng.below(n) * (1 + rng.below(n)) / n]
            }
        }
    }
}

// MARK: Timing

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// One thing timed: `prepare` and `check` run before and after `body`, untimed.
final class Measurement {
    let name: String
    let prepare: () throws -> Void
    let body: () throws -> Void
    let check: () throws -> Void
    var times: [Double] = []
    var best: Double { times.min()! }

    init(_ name: String, prepare: @escaping () throws -> Void = {}, check: @escaping () throws -> Void = {},
         _ body: @escaping () throws -> Void) {
        self.name = name
        self.prepare = prepare
        self.body = body
        self.check = check
    }
}

/// Runs the measurements round-robin: a warm-up round, then `runs` rounds of
/// each measurement once, with `sync` before each. Interleaving them means
/// that load from other processes on the machine hits them all alike.
func runRounds(_ measurements: [Measurement], runs: Int) throws {
    for round in 0...runs {
        log(round == 0 ? "  warm-up:" : "  round \(round):", newline: false)
        for m in measurements {
            try m.prepare()
            sync()
            let start = now()
            try m.body()
            let elapsed = now() - start
            try m.check()
            if round > 0 { m.times.append(elapsed) }
            log(" \(f(elapsed, 3))", newline: false)
        }
        log("")
    }
}

/// CPU time of the whole machine (from /proc/stat) and of this process with
/// its children, to tell how busy other processes kept the machine.
struct CPUSample {
    /// Seconds all CPUs spent busy, and stolen by the hypervisor.
    var busy = 0.0, steal = 0.0
    /// Seconds this process and its waited-for children (zstd) used.
    var own = 0.0
    var wall = now()

    static func take() -> CPUSample {
        var sample = CPUSample()
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
           let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) {
            // cpu user nice system idle iowait irq softirq steal ...
            let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if ticks.count >= 8 {
                sample.busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hz
                sample.steal = ticks[7] / hz
            }
        }
        for who in [RUSAGE_SELF, RUSAGE_CHILDREN].map({ __rusage_who_t($0.rawValue) }) {
            var usage = rusage()
            getrusage(who, &usage)
            sample.own += Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
                + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        }
        return sample
    }
}

/// Progress, on standard error.
func log(_ message: String, newline: Bool = true) {
    fflush(nil)  // the report so far, on standard output, comes first
    FileHandle.standardError.write(Data((message + (newline ? "\n" : "")).utf8))
}

// MARK: zstd

/// Runs the zstd command line tool and waits for it; with `discardOutput`,
/// its standard output goes to /dev/null.
func zstd(_ arguments: [String], discardOutput: Bool = false) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["zstd"] + arguments
    if discardOutput { process.standardOutput = FileHandle.nullDevice }
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw BenchError("zstd \(arguments.joined(separator: " ")) exited with status \(process.terminationStatus)")
    }
}

// MARK: Image write

enum WriteTarget {
    /// `ImageOutput(path:)`: temporary file, fsync, rename, directory fsync.
    case atomicFile
    /// `ImageOutput(streamingTo:)` on a file opened here: no fsync, like zstd.
    case stream
}

/// Writes `memory` as an image with one heap VMA.
func writeImage(_ memory: UnsafeRawBufferPointer, to path: String, target: WriteTarget) throws -> ImageWriteSummary {
    let writer: ImageWriter
    var streamDescriptor: Int32 = -1
    switch target {
    case .atomicFile:
        writer = try ImageWriter(output: ImageOutput(path: path))
    case .stream:
        streamDescriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard streamDescriptor >= 0 else { throw BenchError("cannot create \(path): \(String(cString: strerror(errno)))") }
        writer = try ImageWriter(output: ImageOutput(streamingTo: streamDescriptor))
    }
    defer { if streamDescriptor >= 0 { close(streamDescriptor) } }

    var process = Ccimg_V1_ProcessInfo()
    process.pid = 4242
    try writer.addSection(.process, process)
    var vma = Ccimg_V1_Vma()
    vma.start = benchHeapStart
    vma.end = benchHeapStart + UInt64(memory.count)
    vma.prot = 3
    vma.role = .heap
    vma.path = "[heap]"
    try writer.beginVma(vma)
    let slice = 16 << 20
    for start in stride(from: 0, to: memory.count, by: slice) {
        try writer.appendPages(UnsafeRawBufferPointer(rebasing: memory[start..<min(start + slice, memory.count)]))
    }
    return try writer.finish()
}

let benchHeapStart: UInt64 = 0x5555_5600_0000

// MARK: Image read

/// Where each page of the image goes in the restored buffer, from the page map.
struct RestorePlan {
    let pageSize: Int
    let pagesPerFrame: Int
    let frameCount: Int
    /// Page index in the buffer of each stored page, by ordinal.
    var storedPage: [Int] = []
    /// (buffer page, stored ordinal) of each dedup page.
    var dedupPages: [(page: Int, ordinal: Int)] = []
    /// (first buffer page, count) of each run of zero or never-populated pages.
    var zeroRuns: [(first: Int, count: Int)] = []

    init(_ reader: ImageReader, base: UInt64) throws {
        pageSize = reader.header.pageSize
        pagesPerFrame = Int(reader.header.pagesPerFrame)
        frameCount = reader.index.frameOffsets.count
        storedPage.reserveCapacity(Int(reader.index.storedPages))
        for (vma, table) in zip(reader.memoryMap, reader.pageTables) {
            var page = Int((vma.start - base) / UInt64(pageSize))
            for run in table.runs {
                let count = Int(run.count)
                switch run.state {
                case .zero, .notPopulated: zeroRuns.append((page, count))
                case .stored: storedPage.append(contentsOf: page..<(page + count))
                case .dedup:
                    for (i, target) in run.dedupTargets.enumerated() { dedupPages.append((page + i, Int(target))) }
                case .inherited: throw BenchError("the benchmark image has no parent; inherited pages are unexpected")
                }
                page += count
            }
        }
    }

    /// Decompresses frames `frames` with `reader` and copies their pages into `memory`.
    func restoreFrames(_ frames: Range<Int>, from reader: ImageReader, into memory: UnsafeMutableRawBufferPointer) throws {
        for n in frames {
            let bytes = try reader.frame(n)
            bytes.withUnsafeBytes { frame in
                let first = n * pagesPerFrame
                for i in 0..<(frame.count / pageSize) {
                    let destination = memory.baseAddress! + storedPage[first + i] * pageSize
                    destination.copyMemory(from: frame.baseAddress! + i * pageSize, byteCount: pageSize)
                }
            }
        }
    }

    /// Copies dedup pages from their stored pages (already restored) and clears zero pages.
    func restoreRest(into memory: UnsafeMutableRawBufferPointer) {
        for (page, ordinal) in dedupPages {
            (memory.baseAddress! + page * pageSize).copyMemory(from: memory.baseAddress! + storedPage[ordinal] * pageSize,
                                                               byteCount: pageSize)
        }
        for (first, count) in zeroRuns {
            memset(memory.baseAddress! + first * pageSize, 0, count * pageSize)
        }
    }
}

/// Lets `concurrentPerform` workers write disjoint pages of one buffer.
struct SharedBuffer: @unchecked Sendable {
    let memory: UnsafeMutableRawBufferPointer
}

/// Restores all memory from the image on one thread, through one reader.
func restoreSerial(_ path: String, into memory: UnsafeMutableRawBufferPointer) throws {
    let reader = try ImageReader(path: path)
    let plan = try RestorePlan(reader, base: benchHeapStart)
    try plan.restoreFrames(0..<plan.frameCount, from: reader, into: memory)
    plan.restoreRest(into: memory)
}

/// Restores all memory with the frames split in contiguous ranges across
/// `threads` threads, each with its own reader (a reader locks around its
/// frame cache, so sharing one would serialize them).
func restoreParallel(_ path: String, into memory: UnsafeMutableRawBufferPointer, threads: Int) throws {
    let reader = try ImageReader(path: path)
    let plan = try RestorePlan(reader, base: benchHeapStart)
    let shared = SharedBuffer(memory: memory)
    let failures = Locked<[Error]>([])
    DispatchQueue.concurrentPerform(iterations: threads) { t in
        let frames = (plan.frameCount * t / threads)..<(plan.frameCount * (t + 1) / threads)
        do {
            let own = t == 0 ? reader : try ImageReader(path: path)
            try plan.restoreFrames(frames, from: own, into: shared.memory)
        } catch {
            failures.withLock { $0.append(error) }
        }
    }
    if let error = failures.withLock({ $0.first }) { throw error }
    plan.restoreRest(into: memory)
}

/// A value behind a lock, shared by `concurrentPerform` workers.
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

// MARK: Files and formatting

/// Writes `bytes` to a new file at `path` (no fsync).
func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw BenchError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, min(bytes.count - done, 64 << 20))
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw BenchError("cannot write \(path): \(String(cString: strerror(errno)))") }
        done += n
    }
}

func fileSize(_ path: String) throws -> UInt64 {
    var st = stat()
    guard stat(path, &st) == 0 else { throw BenchError("cannot stat \(path): \(String(cString: strerror(errno)))") }
    return UInt64(st.st_size)
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

func f(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }

// MARK: Main

func runBenchmark(_ options: Options) throws {
    let dir = options.directory
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let rawPath = "\(dir)/raw.bin", zstPath = "\(dir)/raw.zst", outPath = "\(dir)/raw.out"
    let imagePath = "\(dir)/bench.ccimg", streamPath = "\(dir)/bench-stream.ccimg"
    defer {
        if !options.keep {
            for path in [rawPath, zstPath, outPath, imagePath, streamPath] { unlink(path) }
        }
    }

    // 1. The memory, in RAM and in raw.bin.
    let start = now()
    let memory = SyntheticMemory.generate(sizeMiB: options.sizeMiB, mix: options.mix, seed: options.seed)
    defer { memory.deallocate() }
    let source = UnsafeRawBufferPointer(memory.bytes)
    let rawBytes = Double(source.count)
    let generateTime = now() - start
    try writeFile(rawPath, source)

    print("bench-image: \(options.sizeMiB) MiB of synthetic memory, \(memory.pageCount) pages of \(SyntheticMemory.pageSize) bytes (seed 0x\(String(options.seed, radix: 16)))")
    print("  pages: " + PageKind.allCases.map { kind in
        let n = memory.pageCounts[kind, default: 0]
        return "\(kind.name) \(n) (\(f(100 * Double(n) / Double(memory.pageCount), 1))%)"
    }.joined(separator: ", ") + "; generated in \(f(generateTime, 1)) s (not timed)")
    print("  each time below is the best of \(options.runs) rounds after a warm-up round, with sync before each; page cache warm")
    print("")

    // 2-4. zstd, image write, image read (restoring all memory into `restored`).
    let restored = UnsafeMutableRawBufferPointer.allocate(byteCount: source.count, alignment: SyntheticMemory.pageSize)
    defer { restored.deallocate() }
    let poison = { _ = restored.initializeMemory(as: UInt8.self, repeating: 0xA5) }
    let checkRestored = {
        guard memcmp(restored.baseAddress!, source.baseAddress!, source.count) == 0 else {
            throw BenchError("the memory restored from the image differs from the source")
        }
    }
    let threads = ProcessInfo.processInfo.activeProcessorCount
    var summary: ImageWriteSummary?

    let zstdWrite = Measurement("zstd -1 -T0", prepare: { unlink(zstPath) }) {
        try zstd(["-1", "-T0", "-q", "-f", rawPath, "-o", zstPath])
    }
    let imageWrite = Measurement("image, atomic file + fsync", prepare: { unlink(imagePath) }) {
        summary = try writeImage(source, to: imagePath, target: .atomicFile)
    }
    let streamWrite = Measurement("image, streamed to a file, no fsync", prepare: { unlink(streamPath) }) {
        _ = try writeImage(source, to: streamPath, target: .stream)
    }
    let zstdRead = Measurement("zstd -d -T0", prepare: { unlink(outPath) }) {
        try zstd(["-d", "-T0", "-q", "-f", zstPath, "-o", outPath])
    }
    let zstdReadNull = Measurement("zstd -d -T0 -c > /dev/null") {
        try zstd(["-d", "-T0", "-q", "-c", zstPath], discardOutput: true)
    }
    let serialRead = Measurement("image, 1 thread", prepare: poison, check: checkRestored) {
        try restoreSerial(imagePath, into: restored)
    }
    let parallelRead = Measurement("image, \(threads) threads, 1 reader each", prepare: poison, check: checkRestored) {
        try restoreParallel(imagePath, into: restored, threads: threads)
    }
    let measurements = [zstdWrite, imageWrite, streamWrite, zstdRead, zstdReadNull, serialRead, parallelRead]

    log("timing, seconds (each round in this order: " + measurements.map(\.name).joined(separator: "; ") + "):")
    let before = CPUSample.take()
    try runRounds(measurements, runs: options.runs)
    let after = CPUSample.take()
    let zstBytes = try fileSize(zstPath)
    guard try fileSize(outPath) == UInt64(source.count) else { throw BenchError("zstd -d did not give back \(source.count) bytes") }
    let imageBytes = try fileSize(imagePath)
    guard let summary else { throw BenchError("no image was written") }

    // 5. Report.
    print("")
    func row(_ what: String, _ m: Measurement) {
        let times = m.times.map { f($0, 3) }.joined(separator: " ")
        print(pad(what + m.name, 44) + pad(f(m.best, 3), 9, right: true) + pad(f(rawBytes / m.best / 1e6, 1), 10, right: true) + "   " + times)
    }
    print(pad("", 44) + pad("best s", 9, right: true) + pad("MB/s", 10, right: true) + "   all rounds (s)")
    for m in [zstdWrite, imageWrite, streamWrite] { row("write  ", m) }
    for m in [zstdRead, zstdReadNull, serialRead, parallelRead] { row("read   ", m) }
    print("")
    print(pad("size   raw.zst (zstd -1 -T0)", 44) + pad("\(zstBytes)", 14, right: true) + " bytes  " + f(rawBytes / Double(zstBytes), 2) + "x")
    print(pad("size   bench.ccimg", 44) + pad("\(imageBytes)", 14, right: true) + " bytes  " + f(rawBytes / Double(imageBytes), 2) + "x")
    print("")
    let states = [PageState.zero, .stored, .dedup, .notPopulated, .inherited]
        .compactMap { s in summary.pages[s].map { "\(s) \($0)" } }.joined(separator: ", ")
    print("writer summary: pages \(states)")
    print("  stored \(summary.storedRawBytes) raw bytes in frames of \(summary.storedFrameBytes) bytes (\(f(Double(summary.storedRawBytes) / Double(summary.storedFrameBytes), 2))x); file \(summary.fileBytes) bytes")
    let wall = after.wall - before.wall
    let others = max(0, (after.busy - before.busy) - (after.own - before.own))
    let capacity = wall * Double(threads)
    print("machine load during the \(f(wall, 0)) s of rounds: other processes (and kernel writeback) \(f(100 * others / capacity, 0))% of \(threads) cores, "
          + "hypervisor steal \(f(100 * (after.steal - before.steal) / capacity, 0))%\(others / capacity > 0.10 ? " (busy: the times are noisy)" : "")")
    print("")

    // The read target uses the faster of the two restores.
    let (fastRead, slowRead) = parallelRead.best < serialRead.best ? (parallelRead, serialRead) : (serialRead, parallelRead)
    let targets: [(label: String, ratio: Double, goal: Double?)] = [
        ("write  image, atomic + fsync / zstd -1 -T0", imageWrite.best / zstdWrite.best, 1.20),
        ("write  image, no fsync / zstd -1 -T0", streamWrite.best / zstdWrite.best, nil),
        ("read   \(fastRead.name) (faster) / zstd -d -T0", fastRead.best / zstdRead.best, 1.20),
        ("read   \(slowRead.name) / zstd -d -T0", slowRead.best / zstdRead.best, nil),
        ("read   \(fastRead.name) / zstd -d -c > /dev/null", fastRead.best / zstdReadNull.best, nil),
        ("size   image / raw.zst", Double(imageBytes) / Double(zstBytes), 1.05),
    ]
    print(pad("target", 64) + pad("ratio", 7, right: true) + pad("goal", 9, right: true) + "  result")
    for (label, ratio, goal) in targets {
        let goalText = goal.map { "≤ " + f($0, 2) } ?? "(info)"
        let result = goal.map { ratio <= $0 ? "PASS" : "MISS (\(f((ratio / $0 - 1) * 100, 0))% over)" } ?? ""
        print(pad(label, 64) + pad(f(ratio, 2), 7, right: true) + pad(goalText, 9, right: true) + "  " + result)
    }
}

do {
    try runBenchmark(try Options.parse(Array(CommandLine.arguments.dropFirst())))
} catch {
    log("bench-image: error: \(error)")
    exit(1)
}

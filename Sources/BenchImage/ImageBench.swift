import CheckpointImage
import LinuxKernel
import Dispatch
import Synchronization

// MARK: zstd

/// Runs the zstd command line tool and waits for it; with `discardOutput`,
/// its standard output goes to /dev/null.
func zstd(_ arguments: [String], discardOutput: Bool = false) throws {
    let status = try ChildProcess.run(["zstd"] + arguments, discardOutput: discardOutput)
    guard status == 0 else {
        throw BenchError("zstd \(arguments.joined(separator: " ")) exited with status \(status)")
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
    switch target {
    case .atomicFile:
        writer = try ImageWriter(output: ImageOutput(path: path))
    case .stream:
        let file: OwnedDescriptor
        do { file = try OwnedDescriptor(opening: path, .createTruncating(permissions: 0o644)) } catch {
            throw BenchError("cannot create \(path): \(error)")
        }
        // The output writes through its own duplicate of the descriptor.
        writer = try ImageWriter(output: ImageOutput(streamingTo: file.raw))
    }

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
            UnsafeMutableRawBufferPointer(rebasing: memory[(first * pageSize)..<((first + count) * pageSize)])
                .initializeMemory(as: UInt8.self, repeating: 0)
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
    let failures = Mutex(Failures())
    DispatchQueue.concurrentPerform(iterations: threads) { t in
        let frames = (plan.frameCount * t / threads)..<(plan.frameCount * (t + 1) / threads)
        do {
            let own = t == 0 ? reader : try ImageReader(path: path)
            try plan.restoreFrames(frames, from: own, into: shared.memory)
        } catch {
            failures.withLock { $0.errors.append(error) }
        }
    }
    if let error = failures.withLock({ $0.errors.first }) { throw error }
    plan.restoreRest(into: memory)
}

/// Failures of `concurrentPerform` workers, under a Mutex (spec/decisions/0017-threading-model.md).
/// (An `Error` is not Sendable; each is only appended, then read after the workers end.)
struct Failures: @unchecked Sendable {
    var errors: [Error] = []
}


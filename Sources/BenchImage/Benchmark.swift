import CheckpointImage
import LinuxKernel

// MARK: Main

func runBenchmark(_ options: Options) throws {
    let dir = options.directory
    try FileSystem.createDirectory(dir)
    let rawPath = "\(dir)/raw.bin", zstPath = "\(dir)/raw.zst", outPath = "\(dir)/raw.out"
    let imagePath = "\(dir)/bench.ccimg", streamPath = "\(dir)/bench-stream.ccimg"
    defer {
        if !options.keep {
            for path in [rawPath, zstPath, outPath, imagePath, streamPath] { try? FileSystem.unlink(path) }
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

    out("bench-image: \(options.sizeMiB) MiB of synthetic memory, \(memory.pageCount) pages of \(SyntheticMemory.pageSize) bytes (seed 0x\(String(options.seed, radix: 16)))")
    out("  pages: " + PageKind.allCases.map { kind in
        let n = memory.pageCounts[kind, default: 0]
        return "\(kind.name) \(n) (\(f(100 * Double(n) / Double(memory.pageCount), 1))%)"
    }.joined(separator: ", ") + "; generated in \(f(generateTime, 1)) s (not timed)")
    out("  each time below is the best of \(options.runs) rounds after a warm-up round, with sync before each; page cache warm")
    out("")

    // 2-4. zstd, image write, image read (restoring all memory into `restored`).
    let restored = UnsafeMutableRawBufferPointer.allocate(byteCount: source.count, alignment: SyntheticMemory.pageSize)
    defer { restored.deallocate() }
    let poison = { _ = restored.initializeMemory(as: UInt8.self, repeating: 0xA5) }
    let checkRestored = {
        guard RawMemory.equal(restored.baseAddress!, source.baseAddress!, count: source.count) else {
            throw BenchError("the memory restored from the image differs from the source")
        }
    }
    let threads = Host.onlineProcessors
    var summary: ImageWriteSummary?

    let zstdWrite = Measurement("zstd -1 -T0", prepare: { try? FileSystem.unlink(zstPath) }) {
        try zstd(["-1", "-T0", "-q", "-f", rawPath, "-o", zstPath])
    }
    let imageWrite = Measurement("image, atomic file + fsync", prepare: { try? FileSystem.unlink(imagePath) }) {
        summary = try writeImage(source, to: imagePath, target: .atomicFile)
    }
    let streamWrite = Measurement("image, streamed to a file, no fsync", prepare: { try? FileSystem.unlink(streamPath) }) {
        _ = try writeImage(source, to: streamPath, target: .stream)
    }
    let zstdRead = Measurement("zstd -d -T0", prepare: { try? FileSystem.unlink(outPath) }) {
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

    let run = BenchmarkRun(rawBytes: rawBytes, threads: threads, zstBytes: zstBytes, imageBytes: imageBytes,
                           summary: summary, before: before, after: after)
    printTimes(run, write: [zstdWrite, imageWrite, streamWrite], read: [zstdRead, zstdReadNull, serialRead, parallelRead])
    printTargets(run, zstdWrite: zstdWrite, imageWrite: imageWrite, streamWrite: streamWrite, zstdRead: zstdRead,
                 zstdReadNull: zstdReadNull, serialRead: serialRead, parallelRead: parallelRead)
}

/// What a run measured besides its times, for the report.
struct BenchmarkRun {
    var rawBytes: Double
    var threads: Int
    var zstBytes: UInt64
    var imageBytes: UInt64
    var summary: ImageWriteSummary
    var before: CPUSample
    var after: CPUSample
}

/// The report's times, sizes, writer summary and machine load.
func printTimes(_ run: BenchmarkRun, write: [Measurement], read: [Measurement]) {
    let rawBytes = run.rawBytes, summary = run.summary, threads = run.threads
    let zstBytes = run.zstBytes, imageBytes = run.imageBytes, before = run.before, after = run.after
    // 5. Report.
    out("")
    func row(_ what: String, _ m: Measurement) {
        let times = m.times.map { f($0, 3) }.joined(separator: " ")
        out(pad(what + m.name, 44) + pad(f(m.best, 3), 9, right: true) + pad(f(rawBytes / m.best / 1e6, 1), 10, right: true) + "   " + times)
    }
    out(pad("", 44) + pad("best s", 9, right: true) + pad("MB/s", 10, right: true) + "   all rounds (s)")
    for m in write { row("write  ", m) }
    for m in read { row("read   ", m) }
    out("")
    out(pad("size   raw.zst (zstd -1 -T0)", 44) + pad("\(zstBytes)", 14, right: true) + " bytes  " + f(rawBytes / Double(zstBytes), 2) + "x")
    out(pad("size   bench.ccimg", 44) + pad("\(imageBytes)", 14, right: true) + " bytes  " + f(rawBytes / Double(imageBytes), 2) + "x")
    out("")
    let states = [PageState.zero, .stored, .dedup, .notPopulated, .inherited]
        .compactMap { s in summary.pages[s].map { "\(s) \($0)" } }.joined(separator: ", ")
    out("writer summary: pages \(states)")
    out("  stored \(summary.storedRawBytes) raw bytes in frames of \(summary.storedFrameBytes) bytes (\(f(Double(summary.storedRawBytes) / Double(summary.storedFrameBytes), 2))x); file \(summary.fileBytes) bytes")
    let wall = after.wall - before.wall
    let others = max(0, (after.busy - before.busy) - (after.own - before.own))
    let capacity = wall * Double(threads)
    out("machine load during the \(f(wall, 0)) s of rounds: other processes (and kernel writeback) \(f(100 * others / capacity, 0))% of \(threads) cores, "
          + "hypervisor steal \(f(100 * (after.steal - before.steal) / capacity, 0))%\(others / capacity > 0.10 ? " (busy: the times are noisy)" : "")")
    out("")

}

/// The ratios against the targets, PASS or MISS.
func printTargets(_ run: BenchmarkRun, zstdWrite: Measurement, imageWrite: Measurement, streamWrite: Measurement,
                  zstdRead: Measurement, zstdReadNull: Measurement, serialRead: Measurement, parallelRead: Measurement) {
    let imageBytes = run.imageBytes, zstBytes = run.zstBytes
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
    out(pad("target", 64) + pad("ratio", 7, right: true) + pad("goal", 9, right: true) + "  result")
    for (label, ratio, goal) in targets {
        let goalText = goal.map { "≤ " + f($0, 2) } ?? "(info)"
        let result = goal.map { ratio <= $0 ? "PASS" : "MISS (\(f((ratio / $0 - 1) * 100, 0))% over)" } ?? ""
        out(pad(label, 64) + pad(f(ratio, 2), 7, right: true) + pad(goalText, 9, right: true) + "  " + result)
    }
}


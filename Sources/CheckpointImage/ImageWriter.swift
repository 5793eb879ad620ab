import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SwiftProtobuf

/// How an ``ImageWriter`` labels and lays out an image.
public struct ImageWriterOptions: Sendable {
    /// §3.2 Who wrote the image.
    public var producerName = "ccimg"
    public var producerVersion = CheckpointImageVersion.current
    /// §3.2 The image's identity; random unless a caller (fixtures) fixes it.
    public var uuid = ImageUUID.random()
    /// §3.2 Creation time in nanoseconds since the Unix epoch.
    public var createdUnixNanoseconds = Host.realtimeNanoseconds()
    public var machine = Ccimg_V1_MachineFacts()
    public var pageSize: UInt32 = 4096
    public var pagesPerFrame: UInt32 = ImageFormat.defaultPagesPerFrame
    public var compressionLevel: Int32 = ImageFormat.frameCompressionLevel
    /// Frames compressed at once, at least; defaults to four per core. (The
    /// writer keeps at least 16 MiB of pages in flight whatever the frame size.)
    public var compressionBatch = max(2, Host.onlineProcessors * 4)
    /// §6.4 Store identical pages once.
    public var deduplicate = true
    /// Frame buffers and compression threads to use instead of new ones, when they fit
    /// this image's frame size and level (``ImageWriter/framePool(for:)``): a resident
    /// capture reuses them from image to image, buffers faulted in and threads warm.
    public var framePool: FramePool?
    /// Writes this parent link instead of the real one (fixtures build broken chains with it).
    @_spi(Fixtures) public var parentLinkOverride: Ccimg_V1_ParentLink?

    public init() {}
}

/// The version of this library, written as the producer version.
public enum CheckpointImageVersion {
    public static let current = "0.1.0"
}

/// What an ``ImageWriter`` wrote.
public struct ImageWriteSummary: Sendable {
    public var uuid: ImageUUID
    public var fileBytes: UInt64
    /// Pages per state, over all VMAs.
    public var pages: [PageState: UInt64]
    /// Raw bytes of the stored pages, and what their frames take in the file.
    public var storedRawBytes: UInt64
    public var storedFrameBytes: UInt64
    /// §8 XXH3-128 of the index payload: what a child image records as its parent digest.
    public var indexDigest: PageHash
    /// The file written, when the output was a file.
    public var path: String?
}

/// Writes an image front to back with no seeks (§2), to a file (atomically)
/// or a pipe.
///
/// Order of calls: ``addSection(_:_:)`` for structured sections, then for
/// each VMA in address order ``beginVma(_:)`` followed by page calls that
/// cover it exactly, then optionally ``endPages()`` and more sections, then
/// ``finish()`` (§2.4: any order of sections and frames is valid). Memory map
/// and page map sections, the index and the footer are written by `finish`.
public final class ImageWriter {
    private var output: ImageOutput
    private let options: ImageWriterOptions
    private let parent: ImageChain?
    private let pageSize: Int
    private var offset: UInt64 = 0
    /// How far writeback of the output has been started (``startWriteback()``).
    private var writebackStarted: UInt64 = 0
    /// Small blocks and block headers waiting to be written, gathered into one write(2);
    /// frame payloads are written straight from the compression slots, never copied here.
    private var staging: [UInt8] = []
    private static let stagingBytes = 1 << 20

    private var sectionEntries: [Ccimg_V1_SectionEntry] = []
    private var frameOffsets: [UInt64] = []
    private var pageHashes: [UInt8] = []
    private var nextOrdinal: UInt64 = 0
    private var dedupTable: [PageHash: UInt64] = [:]

    private var vmas: [Ccimg_V1_Vma] = []
    private var finishedRuns: [[PageRun]] = []
    private var currentRuns = PageRunBuilder()
    private var currentPagesLeft: UInt64 = 0
    private var currentAddress: UInt64 = 0
    private var inVma = false
    private var pagesEnded = false

    /// Frame buffers, reused: the slot being filled holds `frameFill` bytes of pages so far.
    private let pool: FramePool
    private var fillingSlot = 0
    private var frameFill = 0
    private var frameFirstOrdinal: UInt64 = 0
    private var framesSubmitted = 0
    private var framesWritten = 0
    private var stateCounts: [PageState: UInt64] = [:]
    private var storedFrameBytes: UInt64 = 0
    private let zeroPage: [UInt8]
    private var finished = false

    /// Runs `body` with no compression starting on the pool's threads (those under way
    /// finish). A capture runs its injected calls so: they resume and re-stop the frozen
    /// threads many times, and each wakeup that has to preempt a compression waits for an
    /// interrupt between cores, costly in a VM (figures: spec/decisions/0017-threading-model.md).
    public func withCompressionPaused<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pool.setPaused(true)
        defer { pool.setPaused(false) }
        return try body()
    }

    /// Lets fixture tools replace a frame's compressed bytes (to build damaged images).
    @_spi(Fixtures) public var frameOverride: ((_ frameNumber: Int, _ compressed: [UInt8]) -> [UInt8])?

    /// Starts an image and writes its header. With `parent`, the image is
    /// incremental (§8): pages whose content equals the parent's at the same
    /// address are recorded as inherited.
    public init(output: consuming ImageOutput, options: ImageWriterOptions = ImageWriterOptions(),
                parent: ImageChain? = nil) throws(ImageError) {
        precondition(options.pageSize >= ImageLimits.minPageSize && options.pageSize <= ImageLimits.maxPageSize
                     && options.pageSize & (options.pageSize - 1) == 0, "page size must be a power of two in 4096...65536")
        precondition(options.pagesPerFrame >= 1 && options.pagesPerFrame <= ImageLimits.maxPagesPerFrame)
        self.output = output
        self.options = options
        self.parent = parent
        self.pageSize = Int(options.pageSize)
        self.zeroPage = [UInt8](repeating: 0, count: Int(options.pageSize))
        let frameBytes = Int(options.pageSize) * Int(options.pagesPerFrame)
        if let given = options.framePool, given.frameBytes == frameBytes, given.level == options.compressionLevel {
            given.adopt()
            self.pool = given
        } else {
            self.pool = ImageWriter.framePool(for: options)
            pool.adopt()
        }
        if let parent { precondition(parent.pageSize == pageSize, "parent page size differs") }

        var body = Ccimg_V1_ImageHeader()
        body.producerName = options.producerName
        body.producerVersion = options.producerVersion
        body.imageUuid = Data(options.uuid.bytes)
        body.createdUnixNs = options.createdUnixNanoseconds
        body.machine = options.machine
        body.pageSize = options.pageSize
        body.pagesPerFrame = options.pagesPerFrame
        var features = FeatureFlags()
        if let link = options.parentLinkOverride {
            body.parent = link
            features.incompatible |= FeatureFlags.incompatibleParent
        } else if let parent {
            var link = Ccimg_V1_ParentLink()
            link.parentUuid = Data(parent.top.header.uuid.bytes)
            link.parentIndexDigest = Data(parent.top.indexDigest.canonical)
            link.depth = UInt32(parent.images.count)
            body.parent = link
            features.incompatible |= FeatureFlags.incompatibleParent
        }
        let header = try ImageHeaderInfo(features: features, body: body).encode()
        try emit(header)
        fillingSlot = pool.takeFree()!
    }

    /// Every slot goes back to the pool, whatever state this writer left it in.
    deinit { pool.reclaim() }

    /// Frame buffers and compression threads for images written with `options`: one
    /// slot is filled while the others are compressed or wait to be written — at least
    /// `compressionBatch` frames, and 16 MiB of pages, so that an increment of a few MiB
    /// is read (and its process thawed) without waiting for compression.
    public static func framePool(for options: ImageWriterOptions) -> FramePool {
        let frameBytes = Int(options.pageSize) * Int(options.pagesPerFrame)
        return FramePool(slots: max(1, options.compressionBatch, (16 << 20) / frameBytes) + 1, frameBytes: frameBytes,
                         level: options.compressionLevel)
    }

    // MARK: Sections

    /// Writes a structured section (§5) of a kind defined by this format.
    public func addSection(_ kind: SectionKind, _ message: some SwiftProtobuf.Message) throws(ImageError) {
        let payload: [UInt8]
        do { payload = try message.serializedBytes() } catch {
            throw ImageError(.io, "cannot encode section \(kind.name)", cause: "\(error)")
        }
        try addRawSection(kind: kind.rawValue, version: kind.currentVersion, critical: kind.isCritical, payload: payload)
    }

    /// Writes a section with the given kind and payload bytes; payloads over
    /// 4 KiB are zstd-compressed when that makes them smaller (§5.1).
    public func addRawSection(kind: UInt32, version: UInt16, critical: Bool, payload: [UInt8]) throws(ImageError) {
        precondition(!finished && !inVma, "sections come before the pages, or after endPages()")
        var flags: BlockFlags = critical ? [.critical] : []
        var stored = payload
        if payload.count > 4096 {
            let packed = payload.withUnsafeBytes { Zstd.compress($0, level: 3) }
            if packed.count < payload.count {
                stored = packed
                flags.insert(.zstd)
            }
        }
        var header = BlockHeader(typeTag: BlockType.section.rawValue, kind: kind, version: version, flags: flags,
                                 aux: 0, payloadLength: UInt64(stored.count), aux64: UInt64(payload.count))
        try writeBlock(&header, payload: stored) { entry in
            entry.kind = kind
            entry.version = UInt32(version)
            entry.flags = UInt32(flags.rawValue)
        }
    }

    // MARK: Memory

    /// Starts the pages of `vma`; VMAs must come in ascending, non-overlapping order.
    public func beginVma(_ vma: Ccimg_V1_Vma) throws(ImageError) {
        precondition(!finished && !pagesEnded, "VMAs come before endPages()")
        precondition(!inVma || currentPagesLeft == 0, "previous VMA is missing \(currentPagesLeft) pages")
        closeVma()
        precondition(vma.start % UInt64(pageSize) == 0 && vma.end % UInt64(pageSize) == 0 && vma.end > vma.start,
                     "VMA bounds must be page aligned and non-empty")
        if let last = vmas.last { precondition(vma.start >= last.end, "VMAs must ascend without overlap") }
        vmas.append(vma)
        currentRuns = PageRunBuilder()
        currentPagesLeft = (vma.end - vma.start) / UInt64(pageSize)
        currentAddress = vma.start
        inVma = true
    }

    /// Ends the pages: closes the last VMA and hands its partly filled frame to
    /// compression now rather than in ``finish()``, so that it is compressed while
    /// the caller does other work. Sections may follow (§2 allows any order); VMAs
    /// may not.
    public func endPages() throws(ImageError) {
        precondition(!finished && (!inVma || currentPagesLeft == 0), "last VMA is missing \(currentPagesLeft) pages")
        closeVma()
        pagesEnded = true
        try sealFrame()
    }

    /// Records the next `count` pages of the current VMA as never populated.
    public func appendNotPopulated(count: UInt64) {
        precondition(inVma && count <= currentPagesLeft, "more pages than the VMA holds")
        guard count > 0 else { return }
        currentRuns.append(.notPopulated, count: count)
        stateCounts[.notPopulated, default: 0] += count
        advance(count)
    }

    /// Records the next `count` pages of the current VMA as unchanged since the
    /// parent (§8): a caller that knows which pages were written (kernel dirty
    /// tracking) skips reading the rest. Needs a parent image.
    public func appendInherited(count: UInt64) {
        precondition(parent != nil, "inherited pages need a parent image")
        precondition(inVma && count <= currentPagesLeft, "more pages than the VMA holds")
        guard count > 0 else { return }
        currentRuns.append(.inherited, count: count)
        stateCounts[.inherited, default: 0] += count
        advance(count)
    }

    /// Records the next `count` pages of the current VMA as all-zero.
    public func appendZero(count: UInt64) {
        precondition(inVma && count <= currentPagesLeft, "more pages than the VMA holds")
        guard count > 0 else { return }
        currentRuns.append(.zero, count: count)
        stateCounts[.zero, default: 0] += count
        advance(count)
    }

    /// Records the next pages of the current VMA from their bytes (a whole
    /// number of pages). Each is classified: zero, inherited from the parent,
    /// a duplicate of a page already stored, or stored (§6).
    public func appendPages(_ bytes: UnsafeRawBufferPointer) throws(ImageError) {
        precondition(bytes.count % pageSize == 0, "appendPages needs whole pages")
        let count = bytes.count / pageSize
        precondition(inVma && UInt64(count) <= currentPagesLeft, "more pages than the VMA holds")
        for i in 0..<count {
            let page = UnsafeRawBufferPointer(rebasing: bytes[(i * pageSize)..<((i + 1) * pageSize)])
            try appendOnePage(page)
        }
    }

    /// Convenience for ``appendPages(_:)`` from an array.
    public func appendPages(_ bytes: [UInt8]) throws(ImageError) {
        try bytes.withBytes { (raw) throws(ImageError) in try appendPages(raw) }
    }

    /// Records the next `count` pages of the current VMA, read by `fill` straight
    /// into frame memory (no copy through another buffer): `fill(buffer, first)` gets
    /// room for pages `first ..< first + buffer.count / page size` of the run — a
    /// whole number of pages, as many as the frame being filled has room for — and
    /// must fill all of it. Each page is then classified as ``appendPages(_:)`` does.
    public func appendPages<E: Error>(count: Int, reading fill: (UnsafeMutableRawBufferPointer, Int) throws(E) -> Void) throws {
        precondition(inVma && UInt64(count) <= currentPagesLeft, "more pages than the VMA holds")
        var done = 0
        while done < count {
            let start = frameFill
            let pages = min((pool.frameBytes - start) / pageSize, count - done)
            let frame = pool.raw(fillingSlot).baseAddress!
            try fill(UnsafeMutableRawBufferPointer(start: frame + start, count: pages * pageSize), done)
            for k in 0..<pages { keepInFrame(frame + start + k * pageSize, frame: frame) }
            if frameFill == pool.frameBytes { try sealFrame() }
            done += pages
        }
    }

    /// A run of ``appendScatteredPages(_:reading:)``: `gap` pages inherited from the
    /// parent, then `count` (at least one) pages to read.
    public struct ScatteredRun: Sendable {
        public var gap: UInt64
        public var count: Int
        public init(gap: UInt64, count: Int) {
            precondition(count > 0, "a scattered run reads at least one page")
            self.gap = gap
            self.count = count
        }
    }

    /// The part of run `run` that one read fills: `count` pages from its page `first`.
    public struct ScatteredPiece: Sendable {
        public var run: Int
        public var first: Int
        public var count: Int
    }

    /// Records the next pages of the current VMA as `runs` — each a gap inherited from the
    /// parent, then pages read — with the pages read straight into frame memory, many runs
    /// at a time: `fill(buffer, pieces)` gets room for every piece, laid end to end in
    /// order, as many as the frame being filled has room for and at most `maxPieces` (so one
    /// process_vm_readv with an iovec a piece can fill it), and must fill all of it. Each
    /// page is then classified as ``appendPages(_:)`` does. This is how the few pages a
    /// process wrote since its parent image, scattered through its memory, are read.
    public func appendScatteredPages<E: Error>(_ runs: [ScatteredRun], maxPieces: Int = 1024,
                                               reading fill: (UnsafeMutableRawBufferPointer, [ScatteredPiece]) throws(E) -> Void) throws {
        precondition(parent != nil, "inherited pages need a parent image")
        precondition(maxPieces > 0, "a read needs room for a piece")
        var run = 0, within = 0
        var pieces: [ScatteredPiece] = []
        while run < runs.count {
            let room = (pool.frameBytes - frameFill) / pageSize
            pieces.removeAll(keepingCapacity: true)
            var pages = 0
            while run < runs.count && pages < room && pieces.count < maxPieces {
                let count = min(runs[run].count - within, room - pages)
                pieces.append(ScatteredPiece(run: run, first: within, count: count))
                pages += count
                within += count
                if within == runs[run].count { run += 1; within = 0 }
            }
            let frame = pool.raw(fillingSlot).baseAddress!
            var page = frame + frameFill
            try fill(UnsafeMutableRawBufferPointer(start: page, count: pages * pageSize), pieces)
            for piece in pieces {
                if piece.first == 0 { appendInherited(count: runs[piece.run].gap) }
                precondition(UInt64(piece.count) <= currentPagesLeft, "more pages than the VMA holds")
                for _ in 0..<piece.count {
                    keepInFrame(page, frame: frame)
                    page += pageSize
                }
            }
            if frameFill == pool.frameBytes { try sealFrame() }
        }
    }

    /// Classifies a page read into the frame being filled, at or after `frameFill`; a
    /// stored page moves down over the pages before it that were not (zero, inherited,
    /// dedup).
    private func keepInFrame(_ page: UnsafeMutableRawPointer, frame: UnsafeMutableRawPointer) {
        guard record(UnsafeRawBufferPointer(start: page, count: pageSize)) else { return }
        if frame + frameFill != page { (frame + frameFill).copyMemory(from: page, byteCount: pageSize) }
        frameFill += pageSize
    }

    private func appendOnePage(_ page: UnsafeRawBufferPointer) throws(ImageError) {
        guard record(page) else { return }
        (pool.raw(fillingSlot).baseAddress! + frameFill).copyMemory(from: page.baseAddress!, byteCount: pageSize)
        frameFill += pageSize
        if frameFill == pool.frameBytes { try sealFrame() }
    }

    /// Classifies the next page of the current VMA by its content (§6): zero, the
    /// parent's page at this address, a duplicate of a stored page, or stored. For a
    /// stored page (true) the caller puts its bytes at `frameFill` of the frame.
    private func record(_ page: UnsafeRawBufferPointer) -> Bool {
        defer { advance(1) }
        let isZero = zeroPage.withUnsafeBytes { RawMemory.equal($0.baseAddress!, page.baseAddress!, count: pageSize) }
        if isZero {
            currentRuns.append(.zero)
            stateCounts[.zero, default: 0] += 1
            return false
        }
        let hash = PageHash(of: page)
        if let parent, parent.pageHash(at: currentAddress) == hash {
            currentRuns.append(.inherited)
            stateCounts[.inherited, default: 0] += 1
            return false
        }
        if options.deduplicate, let target = dedupTable[hash] {
            currentRuns.append(.dedup, dedupTarget: target)
            stateCounts[.dedup, default: 0] += 1
            return false
        }
        let ordinal = nextOrdinal
        nextOrdinal += 1
        if options.deduplicate { dedupTable[hash] = ordinal }
        pageHashes.appendCanonical(hash)
        currentRuns.append(.stored, ordinal: ordinal)
        stateCounts[.stored, default: 0] += 1
        if frameFill == 0 { frameFirstOrdinal = ordinal }
        return true
    }

    private func advance(_ count: UInt64) {
        currentPagesLeft -= count
        currentAddress += count * UInt64(pageSize)
    }

    private func closeVma() {
        if inVma {
            finishedRuns.append(currentRuns.runs)
            inVma = false
        }
    }

    // MARK: Frames

    /// Hands the filled frame to the compression threads (§6.1): frames are
    /// compressed in the background on every core while pages keep coming,
    /// and written in order as they complete. Frame buffers come from a
    /// fixed pool, so memory stays bounded and is not faulted in anew per frame.
    private func sealFrame() throws(ImageError) {
        guard frameFill > 0 else { return }
        let slot = fillingSlot, length = frameFill, first = frameFirstOrdinal
        let sequence = framesSubmitted
        framesSubmitted += 1
        frameFill = 0
        let pages = UInt32(length / pageSize)
        pool.submit(FramePool.Frame(slot: slot, length: length, first: first, count: pages), sequence: sequence)
        try writeCompletedFrames()
        // Every slot busy: the oldest frame is written as soon as it is compressed, which frees its slot.
        while true {
            if let free = pool.takeFree() {
                fillingSlot = free
                return
            }
            try writeFrame(pool.waitCompressing(for: framesWritten))
        }
    }

    /// Writes, in order, every frame whose compression has finished.
    private func writeCompletedFrames() throws(ImageError) {
        while let frame = pool.take(framesWritten) { try writeFrame(frame) }
    }

    /// Writes the next frame in order and gives its slot back.
    private func writeFrame(_ frame: FramePool.Frame) throws(ImageError) {
        framesWritten += 1
        defer { pool.release(frame.slot) }
        let compressed = UnsafeRawBufferPointer(rebasing: pool.output(frame.slot).prefix(frame.length))
        frameOffsets.append(offset)
        if let frameOverride {
            let payload = frameOverride(frameOffsets.count - 1, [UInt8](compressed))
            try payload.withBytes { (raw) throws(ImageError) in try writeFrameBlock(frame, payload: raw) }
        } else {
            try writeFrameBlock(frame, payload: compressed)
        }
    }

    private func writeFrameBlock(_ frame: FramePool.Frame, payload: UnsafeRawBufferPointer) throws(ImageError) {
        var header = BlockHeader(typeTag: BlockType.frame.rawValue, kind: 0, version: 1, flags: [.zstd],
                                 aux: frame.count, payloadLength: UInt64(payload.count), aux64: frame.first)
        storedFrameBytes += UInt64(ImageFormat.blockHeaderLength + payload.count)
        try writeBlock(&header, payload: payload, entry: nil)
    }

    /// Waits for every frame in flight and writes them all.
    private func flushFrames() throws(ImageError) {
        while framesWritten < framesSubmitted { try writeFrame(pool.waitCompressing(for: framesWritten)) }
    }

    // MARK: Finishing

    /// Writes the memory map, page map, index and footer, and commits the
    /// output (§2). Nothing is visible at a file target before this returns.
    @discardableResult
    public func finish() throws(ImageError) -> ImageWriteSummary {
        precondition(!finished, "finish called twice")
        precondition(!inVma || currentPagesLeft == 0, "last VMA is missing \(currentPagesLeft) pages")
        closeVma()
        try sealFrame()
        try flushFrames()
        finished = true

        var map = Ccimg_V1_MemoryMap()
        map.vmas = vmas
        try addSectionAfterMemory(.memoryMap, map)
        var pageMap = Ccimg_V1_PageMap()
        pageMap.vmas = finishedRuns.map { runs in
            var v = Ccimg_V1_VmaPages()
            v.runs = Data(VmaPageTable.encode(runs))
            return v
        }
        try addSectionAfterMemory(.pageMap, pageMap)

        var index = Ccimg_V1_Index()
        index.sections = sectionEntries
        index.frameOffsets = frameOffsets
        index.pageHashes = Data(pageHashes)
        index.storedPages = nextOrdinal
        let indexPayload: [UInt8]
        do { indexPayload = try index.serializedBytes() } catch {
            throw ImageError(.io, "cannot encode the index", cause: "\(error)")
        }
        let indexOffset = offset
        var header = BlockHeader(typeTag: BlockType.index.rawValue, kind: 0, version: 1, flags: [],
                                 aux: 0, payloadLength: UInt64(indexPayload.count), aux64: UInt64(indexPayload.count))
        try writeBlock(&header, payload: indexPayload, entry: nil)
        let footer = Footer(indexOffset: indexOffset, indexLength: offset - indexOffset)
        try emit(footer.encoded)
        try flushBuffer()
        try output.commit()
        return ImageWriteSummary(
            uuid: options.uuid, fileBytes: offset, pages: stateCounts,
            storedRawBytes: nextOrdinal * UInt64(pageSize), storedFrameBytes: storedFrameBytes,
            indexDigest: indexPayload.withUnsafeBytes { PageHash(of: $0) }, path: output.targetPath)
    }

    private func addSectionAfterMemory(_ kind: SectionKind, _ message: some SwiftProtobuf.Message) throws(ImageError) {
        let wasFinished = finished
        finished = false
        defer { finished = wasFinished }
        try addSection(kind, message)
    }

    // MARK: Output

    private func writeBlock(_ header: inout BlockHeader, payload: [UInt8],
                            entry fill: ((inout Ccimg_V1_SectionEntry) -> Void)?) throws(ImageError) {
        try payload.withBytes { (raw) throws(ImageError) in try writeBlock(&header, payload: raw, entry: fill) }
    }

    private func writeBlock(_ header: inout BlockHeader, payload: UnsafeRawBufferPointer,
                            entry fill: ((inout Ccimg_V1_SectionEntry) -> Void)?) throws(ImageError) {
        header.checksum = header.computeChecksum(payload: payload)
        let start = offset
        try header.encoded.withBytes { (raw) throws(ImageError) in try emit(raw) }
        try emit(payload)
        if let fill {
            var entry = Ccimg_V1_SectionEntry()
            fill(&entry)
            entry.offset = start
            entry.length = offset - start
            sectionEntries.append(entry)
        }
    }

    private func emit(_ bytes: [UInt8]) throws(ImageError) {
        try bytes.withBytes { (raw) throws(ImageError) in try emit(raw) }
    }

    private func emit(_ bytes: UnsafeRawBufferPointer) throws(ImageError) {
        offset += UInt64(bytes.count)
        if bytes.count >= 16 << 10 {
            try flushBuffer()
            try output.descriptor.writeAllBytes(bytes)
            startWriteback()
            return
        }
        if staging.count + bytes.count > ImageWriter.stagingBytes { try flushBuffer() }
        staging.append(contentsOf: bytes)
    }

    private func flushBuffer() throws(ImageError) {
        guard !staging.isEmpty else { return }
        try staging.withBytes { (raw) throws(ImageError) in try output.descriptor.writeAllBytes(raw) }
        staging.removeAll(keepingCapacity: true)
        startWriteback()
    }

    /// Every 8 MiB written, writeback of those bytes starts (sync_file_range), so the
    /// disk works while the image is still being made and the final fsync waits only
    /// for the tail (figures: spec/decisions/0017-threading-model.md).
    private func startWriteback() {
        guard offset - writebackStarted >= 8 << 20 else { return }
        output.startWriteback(offset: writebackStarted, length: offset - writebackStarted)
        writebackStarted = offset
    }
}

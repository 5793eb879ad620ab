import Dispatch
import Glibc
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
    public var createdUnixNanoseconds = Int64(Date().timeIntervalSince1970 * 1_000_000_000)
    public var machine = Ccimg_V1_MachineFacts()
    public var pageSize: UInt32 = 4096
    public var pagesPerFrame: UInt32 = ImageFormat.defaultPagesPerFrame
    public var compressionLevel: Int32 = ImageFormat.frameCompressionLevel
    /// Frames compressed at once; defaults to four per core.
    public var compressionBatch = max(2, Host.onlineProcessors * 4)
    /// §6.4 Store identical pages once.
    public var deduplicate = true
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
/// Order of calls: ``addSection(_:_:)`` for each structured section, then for
/// each VMA in address order ``beginVma(_:)`` followed by page calls that
/// cover it exactly, then ``finish()``. Memory map and page map sections, the
/// index and the footer are written by `finish`.
public final class ImageWriter {
    private var output: ImageOutput
    private let options: ImageWriterOptions
    private let parent: ImageChain?
    private let pageSize: Int
    private var offset: UInt64 = 0
    /// How far writeback of the output has been started (``startWriteback()``).
    private var writebackStarted: UInt64 = 0
    private var buffer: [UInt8] = []

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

    /// The frame being filled: a full frame's bytes, of which `frameFill` are pages so far.
    private var frameRaw: [UInt8] = []
    private var frameFill = 0
    private var frameFirstOrdinal: UInt64 = 0
    private let pipeline: CompressionPipeline
    private var framesSubmitted = 0
    private var framesWritten = 0
    private var stateCounts: [PageState: UInt64] = [:]
    private var storedFrameBytes: UInt64 = 0
    private let zeroPage: [UInt8]
    private var finished = false

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
        self.pipeline = CompressionPipeline(slots: max(1, options.compressionBatch))
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
        frameRaw = ImageWriter.frameBuffer(bytes: pageSize * Int(options.pagesPerFrame))
    }

    /// A frame buffer whose bytes are written before they are read, so it is not zero-filled.
    static func frameBuffer(bytes: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: bytes) { _, count in count = bytes }
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
        precondition(!finished && !inVma, "sections come before memory")
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
        precondition(!finished)
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

    private func appendOnePage(_ page: UnsafeRawBufferPointer) throws(ImageError) {
        let isZero = zeroPage.withUnsafeBytes { memcmp($0.baseAddress!, page.baseAddress!, pageSize) == 0 }
        if isZero {
            currentRuns.append(.zero)
            stateCounts[.zero, default: 0] += 1
            advance(1)
            return
        }
        let hash = PageHash(of: page)
        if let parent, parent.pageHash(at: currentAddress) == hash {
            currentRuns.append(.inherited)
            stateCounts[.inherited, default: 0] += 1
            advance(1)
            return
        }
        if options.deduplicate, let target = dedupTable[hash] {
            currentRuns.append(.dedup, dedupTarget: target)
            stateCounts[.dedup, default: 0] += 1
            advance(1)
            return
        }
        let ordinal = nextOrdinal
        nextOrdinal += 1
        if options.deduplicate { dedupTable[hash] = ordinal }
        pageHashes.appendCanonical(hash)
        currentRuns.append(.stored, ordinal: ordinal)
        stateCounts[.stored, default: 0] += 1
        if frameFill == 0 { frameFirstOrdinal = ordinal }
        frameRaw.withUnsafeMutableBytes { raw in
            (raw.baseAddress! + frameFill).copyMemory(from: page.baseAddress!, byteCount: pageSize)
        }
        frameFill += pageSize
        if frameFill == frameRaw.count { try sealFrame() }
        advance(1)
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

    /// Hands the filled frame to the compression pipeline (§6.1): frames are
    /// compressed in the background on every core while pages keep coming,
    /// and written in order as they complete. At most `compressionBatch`
    /// frames are in flight, which bounds memory.
    private func sealFrame() throws(ImageError) {
        guard frameFill > 0 else { return }
        if frameFill < frameRaw.count { frameRaw.removeSubrange(frameFill...) }
        let frame = (raw: frameRaw, first: frameFirstOrdinal, count: UInt32(frameFill / pageSize))
        frameRaw = ImageWriter.frameBuffer(bytes: pageSize * Int(options.pagesPerFrame))
        frameFill = 0
        pipeline.slots.wait()
        try writeCompletedFrames()
        let sequence = framesSubmitted
        framesSubmitted += 1
        let level = options.compressionLevel
        let pipeline = self.pipeline
        pipeline.group.enter()
        DispatchQueue.global().async {
            let payload = frame.raw.withUnsafeBytes { Zstd.compress($0, level: level) }
            pipeline.complete(sequence, (payload, frame.first, frame.count))
        }
    }

    /// Writes, in order, every frame whose compression has finished.
    private func writeCompletedFrames() throws(ImageError) {
        while let frame = pipeline.take(framesWritten) {
            framesWritten += 1
            var payload = frame.payload
            if let frameOverride { payload = frameOverride(frameOffsets.count, payload) }
            var header = BlockHeader(typeTag: BlockType.frame.rawValue, kind: 0, version: 1, flags: [.zstd],
                                     aux: frame.count, payloadLength: UInt64(payload.count), aux64: frame.first)
            frameOffsets.append(offset)
            storedFrameBytes += UInt64(ImageFormat.blockHeaderLength + payload.count)
            try writeBlock(&header, payload: payload, entry: nil)
        }
    }

    /// Waits for every frame in flight and writes them all.
    private func flushFrames() throws(ImageError) {
        pipeline.group.wait()
        try writeCompletedFrames()
        precondition(framesWritten == framesSubmitted, "a compressed frame went missing")
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
        header.checksum = payload.withUnsafeBytes { header.computeChecksum(payload: $0) }
        let start = offset
        try emit(header.encoded)
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
        offset += UInt64(bytes.count)
        if bytes.count >= 1 << 20 {
            try flushBuffer()
            try bytes.withBytes { (raw) throws(ImageError) in try output.descriptor.writeAll(raw) }
            startWriteback()
            return
        }
        buffer += bytes
        if buffer.count >= 4 << 20 { try flushBuffer() }
    }

    private func flushBuffer() throws(ImageError) {
        guard !buffer.isEmpty else { return }
        try buffer.withBytes { (raw) throws(ImageError) in try output.descriptor.writeAll(raw) }
        buffer.removeAll(keepingCapacity: true)
        startWriteback()
    }

    /// Every 8 MiB written, writeback of those bytes starts (sync_file_range), so the
    /// disk works while the image is still being made and the final fsync waits only
    /// for the tail: for a 27 MB image, that fsync alone took 40-100 ms.
    private func startWriteback() {
        guard offset - writebackStarted >= 8 << 20 else { return }
        output.startWriteback(offset: writebackStarted, length: offset - writebackStarted)
        writebackStarted = offset
    }
}

/// Frames being compressed in the background, and the finished ones waiting to be written in order.
final class CompressionPipeline: @unchecked Sendable {
    typealias Frame = (payload: [UInt8], first: UInt64, count: UInt32)
    /// Free places for frames being compressed; the producer drains finished ones after each wait.
    let slots: DispatchSemaphore
    let group = DispatchGroup()
    private let lock = Lock()
    private var done: [Int: Frame] = [:]

    init(slots: Int) { self.slots = DispatchSemaphore(value: slots) }

    func complete(_ sequence: Int, _ frame: Frame) {
        lock.lock()
        done[sequence] = frame
        lock.unlock()
        slots.signal()
        group.leave()
    }

    /// Frame `sequence`, if its compression has finished.
    func take(_ sequence: Int) -> Frame? {
        lock.lock()
        defer { lock.unlock() }
        return done.removeValue(forKey: sequence)
    }
}

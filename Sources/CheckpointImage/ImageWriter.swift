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
    /// §3.3 incompatible bit 1 (open-files, format 1.1): the handles section will be an
    /// object table and an fd table (``OpenFileTable/handleTable``). The header says so
    /// and carries minor 1; without it the image is a 1.0 image.
    public var openFiles = false

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
    var output: ImageOutput
    let options: ImageWriterOptions
    let parent: ImageChain?
    let pageSize: Int
    var offset: UInt64 = 0
    /// How far writeback of the output has been started (``startWriteback()``).
    var writebackStarted: UInt64 = 0
    /// Small blocks and block headers waiting to be written, gathered into one write(2);
    /// frame payloads are written straight from the compression slots, never copied here.
    var staging: [UInt8] = []
    private static let stagingBytes = 1 << 20

    var sectionEntries: [Ccimg_V1_SectionEntry] = []
    var frameOffsets: [UInt64] = []
    var pageHashes: [UInt8] = []
    var nextOrdinal: UInt64 = 0
    var dedupTable: [PageHash: UInt64] = [:]

    var vmas: [Ccimg_V1_Vma] = []
    var finishedRuns: [[PageRun]] = []
    var currentRuns = PageRunBuilder()
    var currentPagesLeft: UInt64 = 0
    var currentAddress: UInt64 = 0
    var inVma = false
    var pagesEnded = false

    /// Frame buffers, reused: the slot being filled holds `frameFill` bytes of pages so far.
    let pool: FramePool
    var fillingSlot = 0
    var frameFill = 0
    var frameFirstOrdinal: UInt64 = 0
    var framesSubmitted = 0
    var framesWritten = 0
    var stateCounts: [PageState: UInt64] = [:]
    var storedFrameBytes: UInt64 = 0
    let zeroPage: [UInt8]
    var finished = false

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
        if options.openFiles { features.incompatible |= FeatureFlags.incompatibleOpenFiles }
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

    func addSectionAfterMemory(_ kind: SectionKind, _ message: some SwiftProtobuf.Message) throws(ImageError) {
        let wasFinished = finished
        finished = false
        defer { finished = wasFinished }
        try addSection(kind, message)
    }

    // MARK: Output

    func writeBlock(_ header: inout BlockHeader, payload: [UInt8],
                            entry fill: ((inout Ccimg_V1_SectionEntry) -> Void)?) throws(ImageError) {
        try payload.withBytes { (raw) throws(ImageError) in try writeBlock(&header, payload: raw, entry: fill) }
    }

    func writeBlock(_ header: inout BlockHeader, payload: UnsafeRawBufferPointer,
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

    func emit(_ bytes: [UInt8]) throws(ImageError) {
        try bytes.withBytes { (raw) throws(ImageError) in try emit(raw) }
    }

    func emit(_ bytes: UnsafeRawBufferPointer) throws(ImageError) {
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

    func flushBuffer() throws(ImageError) {
        guard !staging.isEmpty else { return }
        try staging.withBytes { (raw) throws(ImageError) in try output.descriptor.writeAllBytes(raw) }
        staging.removeAll(keepingCapacity: true)
        startWriteback()
    }

    /// Every 8 MiB written, writeback of those bytes starts (sync_file_range), so the
    /// disk works while the image is still being made and the final fsync waits only
    /// for the tail (figures: spec/decisions/0017-threading-model.md).
    func startWriteback() {
        guard offset - writebackStarted >= 8 << 20 else { return }
        output.startWriteback(offset: writebackStarted, length: offset - writebackStarted)
        writebackStarted = offset
    }
}

import LinuxKernel

/// The memory part of an ``ImageWriter`` (§6): VMAs and their pages, each page
/// classified (zero, inherited, dedup, stored) and stored pages packed into frames
/// that the ``FramePool`` compresses and the writer writes in order.
extension ImageWriter {
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
    func keepInFrame(_ page: UnsafeMutableRawPointer, frame: UnsafeMutableRawPointer) {
        guard record(UnsafeRawBufferPointer(start: page, count: pageSize)) else { return }
        if frame + frameFill != page { (frame + frameFill).copyMemory(from: page, byteCount: pageSize) }
        frameFill += pageSize
    }

    func appendOnePage(_ page: UnsafeRawBufferPointer) throws(ImageError) {
        guard record(page) else { return }
        (pool.raw(fillingSlot).baseAddress! + frameFill).copyMemory(from: page.baseAddress!, byteCount: pageSize)
        frameFill += pageSize
        if frameFill == pool.frameBytes { try sealFrame() }
    }

    /// Classifies the next page of the current VMA by its content (§6): zero, the
    /// parent's page at this address, a duplicate of a stored page, or stored. For a
    /// stored page (true) the caller puts its bytes at `frameFill` of the frame.
    func record(_ page: UnsafeRawBufferPointer) -> Bool {
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

    func advance(_ count: UInt64) {
        currentPagesLeft -= count
        currentAddress += count * UInt64(pageSize)
    }

    func closeVma() {
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
    func sealFrame() throws(ImageError) {
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
    func writeCompletedFrames() throws(ImageError) {
        while let frame = pool.take(framesWritten) { try writeFrame(frame) }
    }

    /// Writes the next frame in order and gives its slot back.
    func writeFrame(_ frame: FramePool.Frame) throws(ImageError) {
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

    func writeFrameBlock(_ frame: FramePool.Frame, payload: UnsafeRawBufferPointer) throws(ImageError) {
        var header = BlockHeader(typeTag: BlockType.frame.rawValue, kind: 0, version: 1, flags: [.zstd],
                                 aux: frame.count, payloadLength: UInt64(payload.count), aux64: frame.first)
        storedFrameBytes += UInt64(ImageFormat.blockHeaderLength + payload.count)
        try writeBlock(&header, payload: payload, entry: nil)
    }

    /// Waits for every frame in flight and writes them all.
    func flushFrames() throws(ImageError) {
        while framesWritten < framesSubmitted { try writeFrame(pool.waitCompressing(for: framesWritten)) }
    }
}

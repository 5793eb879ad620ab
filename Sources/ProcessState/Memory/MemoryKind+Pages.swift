import CheckpointImage
import LinuxKernel

/// The memory's pages (§6): which to store comes from /proc/PID/pagemap — present or
/// swapped pages, except clean pages of private file mappings (their file holds them)
/// and pages of shared file mappings whose file still exists — or, for an increment on
/// a tracked parent, from the kernel's dirty tracking (decision 0012).
extension MemoryKind {
    private enum PageAction { case read, skip, inherit }

    /// Pages per pagemap read (16 MiB of memory).
    private static let chunkPages = 4096

    /// Writes every region's pages to the context's writer. Returns bytes read from the process.
    ///
    /// With tracking masks (``MemoryCaptureContext/written``), a region they answer for is
    /// read only where pages were written; the rest is inherited from the parent wherever
    /// the parent maps it. Regions they return nil for are read whole.
    static func capturePages(_ regions: [MemoryRegion], pid: Int32, _ memory: MemoryCaptureContext) throws(StateFailure) -> UInt64 {
        let pagemap = try system { () throws(SystemCallError) in try PagemapFile(pid: pid) }
        let reader = try system { () throws(SystemCallError) in try ProcessMemoryReader(pid: pid) }
        let total = regions.reduce(UInt64(0)) { $0 + ($1.skip ? 0 : $1.vma.end - $1.vma.start) }
        var entries = [UInt64](repeating: 0, count: chunkPages)
        var read: UInt64 = 0
        for region in regions {
            try writeRegion(region, memory, pagemap: pagemap, reader: reader, entries: &entries, read: &read, total: total)
        }
        return read
    }

    /// One region's pages: skipped, tracked (``writeTracked``) or read by pagemap chunks.
    private static func writeRegion(_ region: MemoryRegion, _ memory: MemoryCaptureContext, pagemap: borrowing PagemapFile,
                                    reader: borrowing ProcessMemoryReader, entries: inout [UInt64],
                                    read total: inout UInt64, total spanned: UInt64) throws(StateFailure) {
        let writer = memory.writer, parent = memory.parent
        do throws(ImageError) { try writer.beginVma(region.vma) } catch { throw .image(error) }
        let pages = (region.vma.end - region.vma.start) / pageSize
        if region.skip {
            writer.appendNotPopulated(count: pages)
            return
        }
        // Which pages the kernel saw written, when it tracks this region.
        var writtenMask: [Bool]? = nil
        if let written = memory.written, let parent, let ranges = try system({ () throws(SystemCallError) in try written(region) }) {
            var mask = [Bool](repeating: false, count: Int(pages))
            for r in ranges { for p in r where p < pages { mask[Int(p)] = true } }
            // Unwritten pages are inherited where the parent maps them, read otherwise.
            if let v = parent.top.vmaIndex(containing: region.vma.start), parent.top.memoryMap[v].end >= region.vma.end {
                try writeTracked(region, written: mask, to: writer, reader: reader, total: &total)
                return
            }
            writtenMask = mask
        }
        var page: UInt64 = 0
        while page < pages {
            let count = Int(min(UInt64(chunkPages), pages - page))
            let start = region.vma.start + page * pageSize
            try system { () throws(SystemCallError) in try pagemap.entries(&entries, count: count, at: start, pageSize: pageSize) }
            // Each page is read, skipped (not populated) or inherited; runs of the same go together.
            func action(_ i: Int) -> PageAction {
                if let mask = writtenMask, !mask[Int(page) + i],
                   parent?.top.vmaIndex(containing: start + UInt64(i) * pageSize) != nil {
                    return .inherit
                }
                return shouldStore(entries[i], region) ? .read : .skip
            }
            var i = 0
            while i < count {
                let kind = action(i)
                var j = i + 1
                while j < count && action(j) == kind { j += 1 }
                let runStart = start + UInt64(i) * pageSize
                let runBytes = (j - i) * Int(pageSize)
                switch kind {
                case .read:
                    try pageCall {
                        try writer.appendPages(count: j - i) { (dest, first) throws(SystemCallError) in
                            try reader.read(into: dest, at: runStart + UInt64(first) * pageSize)
                        }
                    }
                    total += UInt64(runBytes)
                    memory.progress?(total, spanned)
                case .skip:
                    writer.appendNotPopulated(count: UInt64(j - i))
                case .inherit:
                    writer.appendInherited(count: UInt64(j - i))
                }
                i = j
            }
            page += UInt64(count)
        }
    }

    /// A tracked region the parent maps whole: written pages are read, the rest
    /// inherited — no pagemap needed, as a written page is present by definition.
    /// Written pages are scattered (a few here and there), so a frame's worth of their
    /// runs is read by one process_vm_readv, an iovec a run, straight into the frame.
    /// That is faster than a call a run or batches copied through a buffer of their own
    /// (decision 0013; figures in decision 0019, "Figures").
    private static func writeTracked(_ region: MemoryRegion, written mask: [Bool], to writer: ImageWriter,
                                     reader: borrowing ProcessMemoryReader, total: inout UInt64) throws(StateFailure) {
        var runs: [ImageWriter.ScatteredRun] = []
        var firstPages: [Int] = []
        var end = 0   // where the last written run ended
        var i = 0
        while i < mask.count {
            guard mask[i] else {
                i += 1
                continue
            }
            var j = i + 1
            while j < mask.count && mask[j] { j += 1 }
            runs.append(ImageWriter.ScatteredRun(gap: UInt64(i - end), count: j - i))
            firstPages.append(i)
            total += UInt64(j - i) * pageSize
            end = j
            i = j
        }
        try pageCall {
            try writer.appendScatteredPages(runs, maxPieces: ProcessMemoryReader.maxPieces) { (buffer, pieces) throws(SystemCallError) in
                var reads: [ProcessMemoryReader.Piece] = []
                reads.reserveCapacity(pieces.count)
                var offset = 0
                for piece in pieces {
                    let bytes = piece.count * Int(pageSize)
                    let address = region.vma.start + UInt64(firstPages[piece.run] + piece.first) * pageSize
                    reads.append(ProcessMemoryReader.Piece(offset: offset, address: address, count: bytes))
                    offset += bytes
                }
                try reader.read(reads, into: buffer)
            }
        }
        writer.appendInherited(count: UInt64(mask.count - end))
    }

    private static func shouldStore(_ entry: UInt64, _ region: MemoryRegion) -> Bool {
        // The vdso is stored whole, touched or not: a restore on a kernel whose vdso differs
        // reads its ELF symbols from the image (decision 0009).
        if region.vma.role == .vdso { return true }
        guard entry & (PagemapFile.present | PagemapFile.swapped) != 0 else { return false }
        if region.anonymousPagesOnly && entry & PagemapFile.filePage != 0 { return false }
        return true
    }

    /// Runs system calls of the capture: their failure is the kind's.
    private static func system<R: ~Copyable>(_ body: () throws(SystemCallError) -> R) throws(StateFailure) -> R {
        do { return try body() } catch { throw .system(error) }
    }

    /// The writer's page calls, untyped: their fill throws ``SystemCallError``, the writer
    /// ``ImageError``; nothing else can come out of them.
    private static func pageCall(_ body: () throws -> Void) throws(StateFailure) {
        do { try body() } catch let error as SystemCallError { throw .system(error) } catch let error as ImageError {
            throw .image(error)
        } catch {
            preconditionFailure("the page writer threw \(type(of: error)), neither an image nor a system call error")
        }
    }
}

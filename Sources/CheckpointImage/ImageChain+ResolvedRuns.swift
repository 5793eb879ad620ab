/// A run of consecutive pages, as of the newest image of a chain, with inherited
/// pages resolved through the chain (§8) and dedup pages to the page they repeat
/// (§6.4): where `count` pages from `address` get their content.
public struct ResolvedRun: Equatable, Sendable {
    /// Where a run's content is.
    public enum State: Equatable, Sendable {
        /// Inherited pages that no VMA of the parent chain holds (a damaged chain; §8.3).
        case unmapped
        /// §6.2 Never populated: the process never touched them.
        case notPopulated
        /// §6.2 All-zero pages.
        case zero
        /// Stored pages `firstOrdinal ..< firstOrdinal + count` of `images[level]`, in order (§6.1).
        case stored(level: Int, firstOrdinal: UInt64)
    }

    /// The first page's address (page aligned).
    public var address: UInt64
    /// Pages in the run, at least one.
    public var count: UInt64
    public var state: State

    /// A run of `count` pages from `address` whose content is `state` (§6.2, §8).
    public init(address: UInt64, count: UInt64, state: State) {
        self.address = address
        self.count = count
        self.state = state
    }
}

/// The resolved runs of an address range of a chain, in address order: a
/// `Sequence` that allocates nothing as it goes (each step is two binary searches
/// per image it looks through). See ``ImageChain/resolvedRuns(ofVma:level:)``.
public struct ResolvedRuns: Sequence, IteratorProtocol, Sendable {
    private let chain: ImageChain
    private let level: Int
    private var address: UInt64
    private let end: UInt64

    init(chain: ImageChain, level: Int, from start: UInt64, to end: UInt64) {
        self.chain = chain
        self.level = level
        self.address = start
        self.end = end
    }

    /// The next run in address order, nil after the range's last page.
    public mutating func next() -> ResolvedRun? {
        guard address < end else { return nil }
        let run = chain.resolvedRun(at: address, level: level, maxPages: (end - address) / UInt64(chain.pageSize))
        address += run.count * UInt64(chain.pageSize)
        return run
    }
}

extension ImageChain {
    /// The pages of VMA `vma` of `images[level]` (the newest image by default), in
    /// address order and in runs (§6.2, §8): each run's content is nowhere (not populated),
    /// zero, or consecutive stored pages of one image of the chain — inherited pages
    /// resolved through the parents, dedup pages to the stored page they repeat.
    ///
    /// This is the one place that walks a chain's pages: flatten, diff, verify and the
    /// restore read memory through it, and so will lazy restore and migration. Runs are
    /// as long as the chain allows (a stored run ends where its ordinals stop being
    /// consecutive), never empty, and cover the VMA exactly; over a page each run
    /// agrees with ``resolve(address:)``. A page of a stored run is read with
    /// `images[level].storedPage(firstOrdinal + k)` or by frame
    /// (`frameNumber(of:)`, `decompressedFrame(_:)`).
    public func resolvedRuns(ofVma vma: Int, level: Int = 0) -> ResolvedRuns {
        let range = images[level].memoryMap[vma]
        return ResolvedRuns(chain: self, level: level, from: range.start, to: range.end)
    }

    /// The resolved runs of the pages `start ..< end` (page aligned) as of `images[level]`;
    /// addresses no VMA holds come as ``ResolvedRun/State/unmapped`` runs.
    public func resolvedRuns(from start: UInt64, to end: UInt64, level: Int = 0) -> ResolvedRuns {
        precondition(start % UInt64(pageSize) == 0 && end % UInt64(pageSize) == 0, "page-aligned range")
        return ResolvedRuns(chain: self, level: level, from: start, to: max(start, end))
    }

    /// The longest run (of at most `maxPages`, at least 1) of pages from `address` whose
    /// content is in one place, as of `images[level]`.
    func resolvedRun(at address: UInt64, level: Int, maxPages: UInt64) -> ResolvedRun {
        let ps = UInt64(pageSize)
        var limit = maxPages
        var level = level
        while level < images.count {
            let image = images[level]
            guard let v = image.vmaIndex(containing: address) else {
                // Up to the next VMA of this image: no page before it is mapped here.
                let next = image.memoryMap.first { $0.start > address }.map { ($0.start - address) / ps } ?? limit
                return ResolvedRun(address: address, count: max(1, min(limit, next)), state: .unmapped)
            }
            let table = image.pageTables[v]
            let (run, offset) = table.run(containing: (address - image.memoryMap[v].start) / ps)
            let count = min(limit, run.count - offset)
            switch run.state {
            case .notPopulated: return ResolvedRun(address: address, count: count, state: .notPopulated)
            case .zero: return ResolvedRun(address: address, count: count, state: .zero)
            case .stored:
                return ResolvedRun(address: address, count: count, state: .stored(level: level, firstOrdinal: run.firstOrdinal + offset))
            case .dedup:
                let first = run.dedupTargets[Int(offset)]
                var k: UInt64 = 1
                while k < count && run.dedupTargets[Int(offset + k)] == first + k { k += 1 }
                return ResolvedRun(address: address, count: k, state: .stored(level: level, firstOrdinal: first))
            case .inherited:
                limit = count
                level += 1
            }
        }
        return ResolvedRun(address: address, count: max(1, limit), state: .unmapped)
    }
}

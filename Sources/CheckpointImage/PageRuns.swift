/// §6.2 One run of pages in the same state.
public struct PageRun: Equatable, Sendable {
    public var state: PageState
    public var count: UInt64
    /// For ``PageState/stored``: the ordinal of the run's first page (§6.1).
    public var firstOrdinal: UInt64
    /// For ``PageState/dedup``: the stored ordinal each page repeats, one per page.
    public var dedupTargets: [UInt64]

    public init(state: PageState, count: UInt64, firstOrdinal: UInt64 = 0, dedupTargets: [UInt64] = []) {
        self.state = state
        self.count = count
        self.firstOrdinal = firstOrdinal
        self.dedupTargets = dedupTargets
    }
}

/// The page states of one VMA, decoded from its `runs` bytes (§6.2), with
/// each run's first page index so a page is found by binary search.
public struct VmaPageTable: Sendable {
    public let runs: [PageRun]
    /// `runStarts[i]` is the page index (within the VMA) where `runs[i]` begins.
    let runStarts: [UInt64]
    public let pageCount: UInt64

    /// What one page of a VMA is, in this image alone.
    public enum Entry: Equatable, Sendable {
        case notPopulated
        case zero
        case stored(ordinal: UInt64)
        case inherited
    }

    init(runs: [PageRun]) {
        self.runs = runs
        var starts: [UInt64] = []
        starts.reserveCapacity(runs.count)
        var total: UInt64 = 0
        for run in runs {
            starts.append(total)
            total += run.count
        }
        runStarts = starts
        pageCount = total
    }

    /// The run holding page `page` and the page's offset in it.
    public func run(containing page: UInt64) -> (run: PageRun, offset: UInt64) {
        precondition(page < pageCount, "page \(page) outside a VMA of \(pageCount) pages")
        var lo = 0
        var hi = runs.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if runStarts[mid] <= page { lo = mid } else { hi = mid - 1 }
        }
        return (runs[lo], page - runStarts[lo])
    }

    /// The entry for page `page` (0-based within the VMA); dedup resolves to its stored ordinal.
    public func entry(at page: UInt64) -> Entry {
        let (run, offset) = self.run(containing: page)
        switch run.state {
        case .notPopulated: return .notPopulated
        case .zero: return .zero
        case .inherited: return .inherited
        case .stored: return .stored(ordinal: run.firstOrdinal + offset)
        case .dedup: return .stored(ordinal: run.dedupTargets[Int(offset)])
        }
    }

    /// Number of pages in each state.
    public func counts() -> [PageState: UInt64] {
        var result: [PageState: UInt64] = [:]
        for run in runs { result[run.state, default: 0] += run.count }
        return result
    }

    /// §6.2 Encodes runs: per run a varint `count << 3 | state`, and for a dedup
    /// run one varint target ordinal per page.
    static func encode(_ runs: [PageRun]) -> [UInt8] {
        var out: [UInt8] = []
        for run in runs {
            out.appendVarint(run.count << 3 | UInt64(run.state.rawValue))
            if run.state == .dedup {
                for target in run.dedupTargets { out.appendVarint(target) }
            }
        }
        return out
    }

    /// §6.2 Decodes and checks the runs of a VMA of `pageCount` pages whose
    /// stored pages begin at `nextOrdinal`, which it advances.
    static func decode(_ bytes: [UInt8], pageCount: UInt64, nextOrdinal: inout UInt64, allowInherited: Bool,
                       vmaNumber: Int) throws(ImageError) -> VmaPageTable {
        var cursor = ByteCursor(bytes, what: "section page-map, VMA \(vmaNumber)")
        var runs: [PageRun] = []
        var covered: UInt64 = 0
        while !cursor.isAtEnd {
            let word = try cursor.readVarint()
            let count = word >> 3
            guard let state = PageState(rawValue: UInt8(word & 7)) else {
                throw ImageError(.structural, "unknown page state \(word & 7)", location: cursor.what)
            }
            guard count > 0 else { throw ImageError(.structural, "empty page run", location: cursor.what) }
            guard count <= pageCount - covered else {
                throw ImageError(.structural, "page runs cover more than the VMA's \(pageCount) pages", location: cursor.what)
            }
            if state == .inherited && !allowInherited {
                throw ImageError(.structural, "inherited pages in an image without a parent", location: cursor.what)
            }
            var run = PageRun(state: state, count: count)
            switch state {
            case .stored:
                run.firstOrdinal = nextOrdinal
                nextOrdinal = try checkedAdd(nextOrdinal, count, "stored page count")
            case .dedup:
                // Each target is a varint of at least one byte, so the count is bounded by the bytes left.
                guard count <= UInt64(cursor.remaining) else {
                    throw ImageError(.truncated, "dedup run of \(count) pages has too few targets", location: cursor.what)
                }
                var targets: [UInt64] = []
                targets.reserveCapacity(Int(count))
                for _ in 0..<count {
                    let target = try cursor.readVarint()
                    guard target < nextOrdinal else {
                        throw ImageError(.structural, "dedup page refers to stored page \(target), not yet stored (next is \(nextOrdinal))",
                                         location: cursor.what)
                    }
                    targets.append(target)
                }
                run.dedupTargets = targets
            default: break
            }
            covered += count
            runs.append(run)
        }
        guard covered == pageCount else {
            throw ImageError(.structural, "page runs cover \(covered) of the VMA's \(pageCount) pages", location: cursor.what)
        }
        return VmaPageTable(runs: runs)
    }
}

/// Builds canonical runs page by page (§6.2: adjacent pages in the same state share a run).
struct PageRunBuilder {
    private(set) var runs: [PageRun] = []

    mutating func append(_ state: PageState, count: UInt64 = 1, ordinal: UInt64 = 0, dedupTarget: UInt64 = 0) {
        let last = runs.count - 1
        // Extend the last run in place (no copy of its dedup targets).
        if last >= 0, runs[last].state == state,
           state != .stored || runs[last].firstOrdinal + runs[last].count == ordinal {
            runs[last].count += count
            if state == .dedup { runs[last].dedupTargets.append(dedupTarget) }
            return
        }
        runs.append(PageRun(state: state, count: count, firstOrdinal: ordinal,
                            dedupTargets: state == .dedup ? [dedupTarget] : []))
    }
}

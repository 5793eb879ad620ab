#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SwiftProtobuf

/// `ccimg diff`: what changed between two images of one process, compared by
/// content — pages by their XXH3-128 hashes (§6.3), records field by field —
/// so two encodings of the same state (a chain and its flattened image) are equal.
public enum ImageDiff {
    public static let schema = "ccimg.diff/1"

    /// The result: a JSON report (spec/ccimg-json.md) and whether anything differs.
    public struct Result: Sendable {
        public var report: JSONValue
        public var different: Bool
    }

    /// Most changed-page ranges listed per VMA; the count is always exact.
    public static let maxRangesPerVma = 4096

    public static func compare(_ a: ImageChain, _ b: ImageChain) throws(ImageError) -> Result {
        var different = false
        var pairs: [(String, JSONValue)] = [
            ("schema", .string(schema)),
            ("a", .string(ImageInspector.fileName(a.top.path))),
            ("b", .string(ImageInspector.fileName(b.top.path))),
        ]
        // Process fields.
        let pa = try json(a, .process), pb = try json(b, .process)
        let processChanges = fieldChanges(pa, pb).map { field, x, y in
            JSONValue.object([("field", .string(field)), ("a", x ?? .null), ("b", y ?? .null)])
        }
        different = different || !processChanges.isEmpty
        pairs.append(("process", .array(processChanges)))

        let memory = try memoryDiff(a, b)
        different = different || memory.different
        pairs.append(("memory", memory.report))

        for (kind, list, key) in [(SectionKind.threads, "threads", "tid"), (.handles, "handles", "fd"),
                                  (.sockets, "sockets", "inode"), (.signals, "actions", "signo"),
                                  (.metadata, "entries", "key")] {
            let d = keyedDiff(items(try json(a, kind), list), items(try json(b, kind), list), key: key)
            different = different || d.different
            pairs.append((kind.name, d.report))
        }

        // The fd table of open-files images (format 1.1, decision 0018), matched by fd; only when either has one.
        let fdsA = items(try json(a, .handles), "fds"), fdsB = items(try json(b, .handles), "fds")
        if !fdsA.isEmpty || !fdsB.isEmpty {
            let d = keyedDiff(fdsA, fdsB, key: "fd")
            different = different || d.different
            pairs.append(("fds", d.report))
        }

        // Synchronization objects: each list compared as a set of records.
        let sa = try json(a, .syncObjects), sb = try json(b, .syncObjects)
        var syncPairs: [(String, JSONValue)] = []
        let lists = Set(objectKeys(sa) + objectKeys(sb)).sorted()
        for list in lists {
            let x = items(sa, list), y = items(sb, list)
            let added = y.filter { !x.contains($0) }, removed = x.filter { !y.contains($0) }
            if added.isEmpty && removed.isEmpty { continue }
            syncPairs.append((list, .object([("added", .array(added)), ("removed", .array(removed))])))
        }
        different = different || !syncPairs.isEmpty
        pairs.append((SectionKind.syncObjects.name, .object(syncPairs)))

        let console = consoleDiff(try json(a, .console), try json(b, .console))
        different = different || console.different
        pairs.append(("console", console.report))

        pairs.insert(("same", .bool(!different)), at: 3)
        return Result(report: .object(pairs), different: different)
    }

    // MARK: Records

    static func json(_ chain: ImageChain, _ kind: SectionKind) throws(ImageError) -> JSONValue {
        guard let entry = chain.top.sectionEntry(kind) else { return .object([]) }
        let payload = try chain.top.sectionPayload(entry)
        do { return .message(try SectionCatalog.decode(kind, payload)) } catch {
            throw ImageError(.structural, "section does not decode as its record", path: chain.top.path,
                             location: "section \(kind.name)", offset: entry.offset, cause: "\(error)")
        }
    }

    static func objectKeys(_ v: JSONValue) -> [String] {
        if case .object(let p) = v { return p.map(\.0) }
        return []
    }

    static func items(_ v: JSONValue, _ key: String) -> [JSONValue] {
        if case .array(let a)? = v[key] { return a }
        return []
    }

    /// Top-level fields that differ, with both values (nil where absent).
    static func fieldChanges(_ a: JSONValue, _ b: JSONValue) -> [(String, JSONValue?, JSONValue?)] {
        let keys = Set(objectKeys(a) + objectKeys(b)).sorted()
        return keys.compactMap { k in a[k] == b[k] ? nil : (k, a[k], b[k]) }
    }

    /// Records matched by `key` (proto JSON omits zero values, so a missing key is 0).
    static func keyedDiff(_ a: [JSONValue], _ b: [JSONValue], key: String) -> (report: JSONValue, different: Bool) {
        func id(_ v: JSONValue) -> JSONValue { v[key] ?? .int(0) }
        let ids = { (list: [JSONValue]) in list.map(id) }
        let aIDs = ids(a), bIDs = ids(b)
        let added = bIDs.filter { !aIDs.contains($0) }
        let removed = aIDs.filter { !bIDs.contains($0) }
        var changed: [JSONValue] = []
        for x in a {
            guard let y = b.first(where: { id($0) == id(x) }), x != y else { continue }
            changed.append(.object([(key, id(x)), ("fields", .array(fieldChanges(x, y).map { .string($0.0) }))]))
        }
        let report = JSONValue.object([("added", .array(added)), ("removed", .array(removed)), ("changed", .array(changed))])
        return (report, !(added.isEmpty && removed.isEmpty && changed.isEmpty))
    }

    /// §5.3 console: history appended, or rewritten.
    static func consoleDiff(_ a: JSONValue, _ b: JSONValue) -> (report: JSONValue, different: Bool) {
        let ha = items(a, "history"), hb = items(b, "history")
        let settings = fieldChanges(a, b).map(\.0).filter { $0 != "history" }
        var pairs: [(String, JSONValue)] = [("settingsChanged", .array(settings.map { .string($0) }))]
        var different = !settings.isEmpty
        if hb.count >= ha.count && Array(hb.prefix(ha.count)) == ha {
            let appended = hb.dropFirst(ha.count)
            let bytes = appended.reduce(0) { total, record -> Int in
                if case .string(let b64)? = record["data"] { return total + (Data(base64Encoded: b64)?.count ?? 0) }
                return total
            }
            pairs.append(("appendedRecords", .count(appended.count)))
            pairs.append(("appendedBytes", .count(bytes)))
            pairs.append(("rewritten", .bool(false)))
            different = different || !appended.isEmpty
        } else {
            pairs.append(("appendedRecords", .int(0)))
            pairs.append(("appendedBytes", .int(0)))
            pairs.append(("rewritten", .bool(true)))
            different = true
        }
        return (.object(pairs), different)
    }

    // MARK: Memory

    static func memoryDiff(_ a: ImageChain, _ b: ImageChain) throws(ImageError) -> (report: JSONValue, different: Bool) {
        let ma = a.top.memoryMap, mb = b.top.memoryMap
        let byStartA = Dictionary(ma.map { ($0.start, $0) }, uniquingKeysWith: { x, _ in x })
        let byStartB = Dictionary(mb.map { ($0.start, $0) }, uniquingKeysWith: { x, _ in x })
        let added = mb.filter { byStartA[$0.start] == nil }
        let removed = ma.filter { byStartB[$0.start] == nil }
        var resized: [JSONValue] = [], reprotected: [JSONValue] = [], changedVmas: [JSONValue] = [], pages: [JSONValue] = []
        var totalChanged: UInt64 = 0
        guard a.pageSize == b.pageSize else {
            throw ImageError(.structural, "images have different page sizes (\(a.pageSize) and \(b.pageSize)); they cannot be compared")
        }
        for x in ma {
            guard let y = byStartB[x.start] else { continue }
            if x.end != y.end {
                resized.append(.object([("start", .hex(x.start)), ("aEnd", .hex(x.end)), ("bEnd", .hex(y.end))]))
            }
            if x.prot != y.prot || x.shared != y.shared {
                reprotected.append(.object([("start", .hex(x.start)), ("a", .string(ImageInspector.protString(x))),
                                            ("b", .string(ImageInspector.protString(y)))]))
            }
            if x.path != y.path || x.role != y.role || x.fileOffset != y.fileOffset || x.fileIdentity != y.fileIdentity {
                changedVmas.append(.object([("start", .hex(x.start)), ("fields", .array(
                    fieldChanges(.message(x), .message(y)).map(\.0).filter { !["end", "prot", "shared"].contains($0) }.map { .string($0) }))]))
            }
            // Pages over the common range, by hash.
            let end = min(x.end, y.end)
            let (changed, ranges, truncated) = changedPages(a, b, from: x.start, to: end)
            if changed > 0 {
                totalChanged += changed
                pages.append(.object([
                    ("start", .hex(x.start)), ("end", .hex(end)), ("role", .string(ImageInspector.roleName(y.role))),
                    ("changedPages", .count(changed)), ("ranges", .array(ranges)),
                    ("rangesTruncated", .bool(truncated)),
                ]))
            }
        }
        func vmaList(_ list: [Ccimg_V1_Vma]) -> JSONValue { .array(list.map { .object(ImageInspector.vmaJSON($0)) }) }
        let different = !(added.isEmpty && removed.isEmpty && resized.isEmpty && reprotected.isEmpty && changedVmas.isEmpty && totalChanged == 0)
        return (.object([
            ("added", vmaList(added)), ("removed", vmaList(removed)), ("resized", .array(resized)),
            ("reprotected", .array(reprotected)), ("changed", .array(changedVmas)),
            ("changedPages", .count(totalChanged)), ("pages", .array(pages)),
        ]), different)
    }

    /// The pages of `start ..< end` whose content differs between `a` and `b`: how many,
    /// and their ranges (at most ``maxRangesPerVma``; `truncated` when there were more).
    /// Both sides' resolved runs go in step: where both are empty alike (no content, or
    /// zero), the pages are equal without a look; elsewhere page hashes are compared.
    static func changedPages(_ a: ImageChain, _ b: ImageChain, from start: UInt64,
                             to end: UInt64) -> (changed: UInt64, ranges: [JSONValue], truncated: Bool) {
        let ps = UInt64(a.pageSize)
        var ranges: [JSONValue] = []
        var changed: UInt64 = 0
        var runStart: UInt64? = nil
        var runCount: UInt64 = 0
        var truncated = false
        func closeRun() {
            if let s = runStart {
                if ranges.count < maxRangesPerVma {
                    ranges.append(.object([("start", .hex(s)), ("pages", .count(runCount))]))
                } else {
                    truncated = true
                }
                runStart = nil
                runCount = 0
            }
        }
        var runsA = a.resolvedRuns(from: start, to: end), runsB = b.resolvedRuns(from: start, to: end)
        var ra = runsA.next(), rb = runsB.next()
        while let runA = ra, let runB = rb {
            let address = max(runA.address, runB.address)
            let pages = min(runA.address + runA.count * ps, runB.address + runB.count * ps) / ps - address / ps
            if runA.state.isEmptyAlike(runB.state) {
                closeRun()
            } else {
                for k in 0..<pages {
                    let at = address + k * ps
                    if a.hash(of: runA.page(at, pageSize: ps)) != b.hash(of: runB.page(at, pageSize: ps)) {
                        changed += 1
                        if runStart == nil { runStart = at }
                        runCount += 1
                    } else {
                        closeRun()
                    }
                }
            }
            let next = address + pages * ps
            if next >= runA.address + runA.count * ps { ra = runsA.next() }
            if next >= runB.address + runB.count * ps { rb = runsB.next() }
        }
        closeRun()
        return (changed, ranges, truncated)
    }
}

extension ResolvedRun {
    /// The page at `address` of this run, as ``ImageChain/resolve(address:)`` gives it.
    func page(_ address: UInt64, pageSize: UInt64) -> ImageChain.ResolvedPage {
        switch state {
        case .unmapped: .unmapped
        case .notPopulated: .notPopulated
        case .zero: .zero
        case .stored(let level, let first): .stored(level: level, ordinal: first + (address - self.address) / pageSize)
        }
    }
}

extension ResolvedRun.State {
    /// Whether every page of both is equal by hash without a look: both without
    /// content (not populated or unmapped: no hash), or both zero.
    func isEmptyAlike(_ other: Self) -> Bool {
        switch (self, other) {
        case (.zero, .zero): true
        case (.notPopulated, .notPopulated), (.notPopulated, .unmapped), (.unmapped, .notPopulated), (.unmapped, .unmapped): true
        default: false
        }
    }
}

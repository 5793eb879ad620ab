import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// `ccimg diff` (spec/ccimg-json.md, ccimg.diff/1): content comparison by hash.
@Suite struct DiffTests {
    func chain(_ name: String) throws -> ImageChain { try ImageChain.open(path: Paths.golden(name)) }

    func ranges(_ vma: JSONValue?) -> [String] {
        guard case .array(let list)? = vma?["ranges"] else { return [] }
        return list.map { r in
            if case .string(let s)? = r["start"], case .int(let n)? = r["pages"] { return "\(s)+\(n)" }
            return "?"
        }
    }

    /// Version 1 → 3 of the synthetic process, as `SyntheticProcess.advance` changes it.
    @Test func syntheticProcessVersionOneToThree() throws {
        let result = try ImageDiff.compare(try chain("chain-1"), try chain("chain-3"))
        let r = result.report
        #expect(result.different)
        #expect(r["schema"] == .string("ccimg.diff/1"))
        #expect(r["a"] == .string("chain-1.ccimg"))
        #expect(r["b"] == .string("chain-3.ccimg"))
        #expect(r["same"] == .bool(false))
        #expect(r["process"] == .array([]))

        let memory = try #require(r["memory"])
        #expect(memory["changedPages"] == .int(4))
        guard case .array(let added)? = memory["added"], case .array(let removed)? = memory["removed"] else {
            Issue.record("no added/removed"); return
        }
        #expect(added.map { $0["start"] } == [.string("0x7f0040100000"), .string("0x7f0040200000")])
        #expect(removed.map { $0["start"] } == [.string("0x7f0020000000")])
        #expect(removed.first?["role"] == .string("thread-stack"))
        #expect(memory["resized"] == .array([]))
        #expect(memory["reprotected"] == .array([]))
        guard case .array(let pages)? = memory["pages"] else { Issue.record("no pages"); return }
        #expect(pages.count == 2)
        let heap = pages.first { $0["role"] == .string("heap") }
        #expect(heap?["changedPages"] == .int(3))
        #expect(ranges(heap) == ["0x555555562000+2", "0x555555574000+1"])
        #expect(heap?["rangesTruncated"] == .bool(false))
        let stack = pages.first { $0["role"] == .string("main-stack") }
        #expect(stack?["changedPages"] == .int(1))
        #expect(ranges(stack) == ["0x7ffd0000f000+1"])

        #expect(r["threads"]?["changed"] == .array([.object([("tid", .int(4242)), ("fields", .array([.string("generalRegisters")]))])]))
        #expect(r["threads"]?["added"] == .array([]))
        #expect(r["handles"]?["changed"] == .array([.object([("fd", .int(3)), ("fields", .array([.string("offset")]))])]))
        #expect(r["sockets"]?["changed"] == .array([]))
        #expect(r["metadata"]?["changed"] == .array([]))
        guard case .object(let sync)? = r["sync-objects"] else { Issue.record("no sync-objects"); return }
        #expect(sync.map(\.0) == ["eventfds"])
        let console = try #require(r["console"])
        #expect(console["appendedRecords"] == .int(2))
        #expect(console["appendedBytes"] == .int(Int64("checkpoint 1 reached\n".utf8.count + "checkpoint 2 reached\n".utf8.count)))
        #expect(console["rewritten"] == .bool(false))
        #expect(console["settingsChanged"] == .array([]))

        // Backwards: what was added is removed, and the console history was rewritten.
        let back = try ImageDiff.compare(try chain("chain-3"), try chain("chain-1")).report
        #expect(back["memory"]?["changedPages"] == .int(4))
        guard case .array(let backRemoved)? = back["memory"]?["removed"] else { Issue.record("no removed"); return }
        #expect(backRemoved.count == 2)
        #expect(back["console"]?["rewritten"] == .bool(true))
    }

    @Test func aChainAndItsFlatImageAreTheSame() throws {
        let result = try ImageDiff.compare(try chain("chain-3"), try chain("chain-3-flat"))
        #expect(!result.different)
        #expect(result.report["same"] == .bool(true))
        #expect(result.report["memory"]?["changedPages"] == .int(0))
        // Header fields are not compared: two images of one state written apart are the same.
        #expect(try ImageDiff.compare(try chain("full"), try chain("chain-1")).different == false)
        // Unknown optional sections are not content either.
        #expect(try ImageDiff.compare(try chain("full"), try chain("unknown-optional")).different == false)
    }

    func write(_ pages: [[UInt8]?], to path: String, vmaStart: UInt64 = 0x10_0000) throws {
        let model = MemoryModel(pageSize: 4096, vmas: [(makeVma(start: vmaStart, pages: pages.count, pageSize: 4096), pages)])
        try writeImage(model, to: path)
    }

    @Test func notPopulatedDiffersFromZero() throws {
        let dir = try TempDir("diff-np")
        defer { dir.remove() }
        let zero = [UInt8](repeating: 0, count: 4096), text = textPage(1, pageSize: 4096)
        try write([text, nil, zero], to: dir.file("a.ccimg"))
        try write([text, zero, zero], to: dir.file("b.ccimg"))
        try write([text, nil, zero], to: dir.file("c.ccimg"))
        let a = try ImageChain.open(path: dir.file("a.ccimg")), b = try ImageChain.open(path: dir.file("b.ccimg"))
        let d = try ImageDiff.compare(a, b)
        #expect(d.different)
        #expect(d.report["memory"]?["changedPages"] == .int(1))
        guard case .array(let pages)? = d.report["memory"]?["pages"] else { Issue.record("no pages"); return }
        #expect(ranges(pages.first) == ["0x101000+1"])
        #expect(try ImageDiff.compare(a, try ImageChain.open(path: dir.file("c.ccimg"))).different == false)
    }

    /// At most 4096 ranges are listed per VMA; `rangesTruncated` says whether any were left out.
    @Test(arguments: [4095, 4096, 4097])
    func rangesAreCappedAndTheCapIsReported(changedRanges: Int) throws {
        let dir = try TempDir("diff-ranges")
        defer { dir.remove() }
        let count = changedRanges * 2 + 1
        let text = textPage(7, pageSize: 4096)
        let zero = [UInt8](repeating: 0, count: 4096)
        try write((0..<count).map { _ in zero }, to: dir.file("a.ccimg"))
        try write((0..<count).map { $0 % 2 == 1 ? text : zero }, to: dir.file("b.ccimg"))
        let d = try ImageDiff.compare(try ImageChain.open(path: dir.file("a.ccimg")), try ImageChain.open(path: dir.file("b.ccimg")))
        #expect(d.report["memory"]?["changedPages"] == .int(Int64(changedRanges)))
        guard case .array(let pages)? = d.report["memory"]?["pages"], let vma = pages.first else { Issue.record("no pages"); return }
        #expect(vma["changedPages"] == .int(Int64(changedRanges)))
        let listed = ranges(vma)
        #expect(listed.count == min(changedRanges, ImageDiff.maxRangesPerVma))
        #expect(listed.first == "0x101000+1")
        #expect(vma["rangesTruncated"] == .bool(changedRanges > ImageDiff.maxRangesPerVma),
                "\(listed.count) of \(changedRanges) ranges listed")
    }

    @Test func imagesWithDifferentPageSizesCannotBeCompared() throws {
        let dir = try TempDir("diff-ps")
        defer { dir.remove() }
        var g = SeededGenerator(seed: 3)
        try writeImage(MemoryModel.random(&g, pageSize: 4096, vmaCount: 1, maxPages: 2), to: dir.file("a.ccimg"))
        try writeImage(MemoryModel.random(&g, pageSize: 8192, vmaCount: 1, maxPages: 2), to: dir.file("b.ccimg"))
        let e = thrown {
            _ = try ImageDiff.compare(try ImageChain.open(path: dir.file("a.ccimg")), try ImageChain.open(path: dir.file("b.ccimg")))
        } as? ImageError
        #expect(e?.code == .structural)
        let cli = try CCImg.run(["diff", dir.file("a.ccimg"), dir.file("b.ccimg")])
        #expect(cli.status == 2)
    }
}

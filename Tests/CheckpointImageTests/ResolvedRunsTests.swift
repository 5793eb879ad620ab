import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// §8 `ImageChain.resolvedRuns`: the one walk of a chain's pages agrees, page by
/// page, with `ImageChain.resolve(address:)`, and covers each VMA exactly.
@Suite struct ResolvedRunsTests {
    /// Expands the runs of every VMA of `images[level]` and checks them against `resolve`.
    static func expectRunsAgreeWithResolve(_ chain: ImageChain, level: Int = 0, _ label: String) {
        let image = chain.images[level]
        let ps = UInt64(chain.pageSize)
        for (v, vma) in image.memoryMap.enumerated() {
            var address = vma.start
            for run in chain.resolvedRuns(ofVma: v, level: level) {
                #expect(run.count > 0, "\(label): empty run")
                #expect(run.address == address, "\(label): runs leave a gap or overlap at 0x\(String(address, radix: 16))")
                for k in 0..<run.count {
                    let at = run.address + k * ps
                    let expected = chain.resolve(address: at, level: level)
                    let got: ImageChain.ResolvedPage = switch run.state {
                    case .unmapped: .unmapped
                    case .notPopulated: .notPopulated
                    case .zero: .zero
                    case .stored(let l, let first): .stored(level: l, ordinal: first + k)
                    }
                    #expect(got == expected, "\(label): page 0x\(String(at, radix: 16))")
                }
                address += run.count * ps
            }
            #expect(address == vma.end, "\(label): runs end at 0x\(String(address, radix: 16)), the VMA at 0x\(String(vma.end, radix: 16))")
        }
    }

    @Test(arguments: FixtureSet.goldenNames)
    func goldenChainsResolveAsPageByPage(name: String) throws {
        let chain = try ImageChain.open(path: Paths.golden(name))
        for level in chain.images.indices {
            Self.expectRunsAgreeWithResolve(chain, level: level, "\(name) level \(level)")
        }
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6])
    func randomChainsResolveAsPageByPage(seed: Int) throws {
        var g = SeededGenerator(seed: 0x5E50 &+ UInt64(seed))
        let m0 = MemoryModel.random(&g, pageSize: 4096, vmaCount: 5, maxPages: 60, notPopulatedWeight: 1)
        let (m1, _) = ChainTests.mutate(m0, fraction: 0.1, oneToZero: false, &g)
        let (m2, _) = ChainTests.mutate(m1, fraction: 0.1, oneToZero: true, &g)
        let dir = try TempDir("resolved")
        defer { dir.remove() }
        var options = ImageWriterOptions()
        options.pagesPerFrame = [1, 3, 16][seed % 3]
        options.deduplicate = seed % 2 == 0
        try writeImage(m0, to: dir.file("0.ccimg"), options: options)
        options.uuid = .random()
        try writeImage(m1, to: dir.file("1.ccimg"), options: options, parent: try ImageChain.open(path: dir.file("0.ccimg")))
        options.uuid = .random()
        try writeImage(m2, to: dir.file("2.ccimg"), options: options, parent: try ImageChain.open(path: dir.file("1.ccimg")))
        let chain = try ImageChain.open(path: dir.file("2.ccimg"))
        #expect(chain.images.count == 3)
        for level in chain.images.indices {
            Self.expectRunsAgreeWithResolve(chain, level: level, "seed \(seed) level \(level)")
        }
        // Content read through the runs is the model's memory.
        let ps = UInt64(chain.pageSize)
        for (v, entry) in m2.vmas.enumerated() {
            for run in chain.resolvedRuns(ofVma: v) {
                for k in 0..<run.count {
                    let index = Int((run.address - entry.vma.start) / ps + k)
                    let expected = entry.pages[index] ?? m2.zeroPage
                    let bytes: [UInt8] = switch run.state {
                    case .stored(let level, let first): try chain.images[level].storedPage(first + k)
                    default: m2.zeroPage
                    }
                    #expect(bytes == expected, "seed \(seed): page at 0x\(String(run.address + k * ps, radix: 16))")
                }
            }
        }
    }

    @Test func rangesOutsideEveryVmaAreUnmappedRuns() throws {
        let chain = try ImageChain.open(path: Paths.golden("full"))
        let vmas = chain.top.memoryMap
        let ps = UInt64(chain.pageSize)
        let start = vmas[0].start >= 4 * ps ? vmas[0].start - 4 * ps : 0
        let runs = Array(chain.resolvedRuns(from: start, to: vmas[0].start + ps))
        #expect(runs.first?.state == .unmapped)
        #expect(runs.first?.count == (vmas[0].start - start) / ps)
        #expect(runs.map(\.count).reduce(0, +) == (vmas[0].start + ps - start) / ps)
    }
}

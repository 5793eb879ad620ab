import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures
#if canImport(Glibc)
import Glibc
#endif

/// §8 Incremental images: delta encoding, resolving through a chain,
/// flattening, diffing, and finding parents by UUID.
@Suite struct ChainTests {
    /// `model` with about `fraction` of its non-zero pages rewritten with fresh
    /// random bytes (one of them, when `oneToZero`, with zeros instead).
    static func mutate(_ model: MemoryModel, fraction: Double, oneToZero: Bool,
                       _ g: inout SeededGenerator) -> (model: MemoryModel, changed: [UInt64: [UInt8]]) {
        var out = model
        var candidates: [(v: Int, p: Int)] = []
        for (v, entry) in model.vmas.enumerated() {
            for (p, page) in entry.pages.enumerated() where page?.contains(where: { $0 != 0 }) == true {
                candidates.append((v, p))
            }
        }
        candidates.shuffle(using: &g)
        let n = max(2, Int((Double(candidates.count) * fraction).rounded()))
        var changed: [UInt64: [UInt8]] = [:]
        for (i, c) in candidates.prefix(n).enumerated() {
            let page = (oneToZero && i == 0) ? model.zeroPage : randomPage(&g, pageSize: model.pageSize)
            out.vmas[c.v].pages[c.p] = page
            changed[out.vmas[c.v].vma.start + UInt64(c.p * model.pageSize)] = page
        }
        return (out, changed)
    }

    static func nonZeroCount(_ m: MemoryModel) -> Int {
        m.allPages.filter { $0.page?.contains(where: { $0 != 0 }) == true }.count
    }

    static func expectMemory(_ chain: ImageChain, equals model: MemoryModel, _ label: String) throws {
        for (vma, pages) in model.vmas {
            let expected = pages.flatMap { $0 ?? model.zeroPage }
            #expect(try chain.readMemory(address: vma.start, length: vma.end - vma.start) == expected, "\(label) VMA 0x\(String(vma.start, radix: 16))")
        }
        for (address, page) in model.allPages {
            #expect(chain.pageHash(at: address) == page.map { PageHash(of: $0) }, "\(label) 0x\(String(address, radix: 16))")
        }
    }

    /// The addresses a diff report lists as changed, from its ranges.
    static func changedAddresses(_ report: JSONValue, pageSize: Int) throws -> (count: Int64, addresses: Set<UInt64>) {
        let memory = try #require(report["memory"])
        guard case .int(let count)? = memory["changedPages"] else { Issue.record("no changedPages"); return (0, []) }
        var addresses = Set<UInt64>()
        guard case .array(let vmas)? = memory["pages"] else { return (count, addresses) }
        for v in vmas {
            guard case .array(let ranges)? = v["ranges"] else { continue }
            for r in ranges {
                guard case .string(let s)? = r["start"], s.hasPrefix("0x"), let start = UInt64(s.dropFirst(2), radix: 16),
                      case .int(let pages)? = r["pages"] else { Issue.record("bad range \(r)"); continue }
                for i in 0..<UInt64(pages) { addresses.insert(start + i * UInt64(pageSize)) }
            }
        }
        return (count, addresses)
    }

    @Test(arguments: [1, 2, 3, 4])
    func threeGenerationChain(seed: Int) throws {
        var g = SeededGenerator(seed: 0xC4A1 &+ UInt64(seed))
        let m0 = MemoryModel.random(&g, pageSize: 4096, vmaCount: 4, maxPages: 40, notPopulatedWeight: 1)
        let (m1, changes1) = Self.mutate(m0, fraction: 0.05, oneToZero: false, &g)
        let (m2, changes2) = Self.mutate(m1, fraction: 0.05, oneToZero: true, &g)
        let dir = try TempDir("chain")
        defer { dir.remove() }
        var options = ImageWriterOptions()
        options.pagesPerFrame = [1, 4, 256][seed % 3]

        var process = Ccimg_V1_ProcessInfo(); process.pid = 1000 + Int32(seed); process.comm = "chain"
        let baseSummary = try writeImage(m0, to: dir.file("base.ccimg"), options: options, process: process)
        let baseChain = try ImageChain.open(path: dir.file("base.ccimg"))

        options.uuid = .random()
        let childSummary = try writeImage(m1, to: dir.file("child.ccimg"), options: options, parent: baseChain, process: process)
        let childChain = try ImageChain.open(path: dir.file("child.ccimg"))

        options.uuid = .random()
        options.pagesPerFrame = 3  // may differ along a chain (§8.1)
        let grandSummary = try writeImage(m2, to: dir.file("grandchild.ccimg"), options: options, parent: childChain, process: process)
        let grandChain = try ImageChain.open(path: dir.file("grandchild.ccimg"))

        // Delta encoding (§8.5): unchanged non-zero pages inherited, changed ones stored, zero stays zero.
        let storedChanges1 = changes1.values.filter { $0.contains { $0 != 0 } }.count
        #expect(childSummary.pages[.stored] == UInt64(storedChanges1))
        #expect(childSummary.pages[.inherited] == UInt64(Self.nonZeroCount(m1) - storedChanges1))
        #expect(childSummary.pages[.dedup] == nil)
        let storedChanges2 = changes2.values.filter { $0.contains { $0 != 0 } }.count
        #expect(storedChanges2 == changes2.count - 1)
        #expect(grandSummary.pages[.stored] == UInt64(storedChanges2))
        #expect(grandSummary.pages[.inherited] == UInt64(Self.nonZeroCount(m2) - storedChanges2))
        let zeros = { (m: MemoryModel) in m.allPages.filter { $0.page?.allSatisfy { $0 == 0 } == true }.count }
        #expect(grandSummary.pages[.zero] == UInt64(zeros(m2)))
        #expect(zeros(m2) == zeros(m1) + 1)
        #expect(ImageInspector.stateCounts(grandChain.top) == grandSummary.pages)

        // Links by UUID and index digest (§8.1).
        #expect(grandChain.images.count == 3)
        #expect(grandChain.images.map(\.header.uuid) == [grandSummary.uuid, childSummary.uuid, baseSummary.uuid])
        let link = grandChain.top.header.body.parent
        #expect(link.depth == 2)
        #expect(childChain.top.header.body.parent.depth == 1)
        #expect(Array(link.parentUuid) == childSummary.uuid.bytes)
        #expect(Array(link.parentIndexDigest) == childSummary.indexDigest.canonical)
        #expect(grandChain.top.header.features.incompatible == FeatureFlags.incompatibleParent)

        // Resolving through the chain gives the newest state.
        try Self.expectMemory(childChain, equals: m1, "child")
        try Self.expectMemory(grandChain, equals: m2, "grandchild")
        try Self.expectMemory(baseChain, equals: m0, "base")
        for (address, page) in changes2 where page.contains(where: { $0 != 0 }) {
            guard case .stored(level: 0, _) = grandChain.resolve(address: address) else {
                Issue.record("changed page 0x\(String(address, radix: 16)) not stored in the grandchild"); continue
            }
        }
        for (address, page) in m2.allPages where page != nil && changes2[address] == nil && changes1[address] == nil
            && page!.contains(where: { $0 != 0 }) {
            guard case .stored(level: 2, _) = grandChain.resolve(address: address) else {
                Issue.record("unchanged page 0x\(String(address, radix: 16)) does not resolve to the base"); continue
            }
        }

        // Verify follows the chain.
        let report = ImageVerifier.verify(path: dir.file("grandchild.ccimg"), deep: true)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.parents == [dir.file("child.ccimg"), dir.file("base.ccimg")])

        // Diff by content: exactly the changed pages.
        let d01 = try ImageDiff.compare(baseChain, childChain)
        #expect(d01.different)
        let (count01, addresses01) = try Self.changedAddresses(d01.report, pageSize: 4096)
        #expect(count01 == Int64(changes1.count))
        #expect(addresses01 == Set(changes1.keys))
        let d02 = try ImageDiff.compare(baseChain, grandChain)
        let (count02, addresses02) = try Self.changedAddresses(d02.report, pageSize: 4096)
        let union = Set(changes1.keys).union(changes2.keys)
        #expect(count02 == Int64(union.count))
        #expect(addresses02 == union)
        #expect(try ImageDiff.compare(childChain, childChain).different == false)
        #expect(d01.report["same"] == .bool(false))
        #expect(d01.report["process"] == .array([]))

        // Flattening (§8.6): standalone, same content, new identity.
        let flatSummary = try ImageFlattener.flatten(grandChain, to: try ImageOutput(path: dir.file("flat.ccimg")))
        let flat = try ImageChain.open(path: dir.file("flat.ccimg"))
        #expect(flat.images.count == 1)
        #expect(!flat.top.header.hasParent)
        #expect(flat.top.header.features.incompatible == 0)
        #expect(flatSummary.pages[.inherited] == nil)
        #expect(flat.top.header.uuid != grandSummary.uuid)
        #expect(try flat.top.section(.process, as: Ccimg_V1_ProcessInfo.self) == process)
        #expect(flat.top.memoryMap == m2.vmas.map(\.vma))
        try Self.expectMemory(flat, equals: m2, "flat")
        #expect(try ImageDiff.compare(grandChain, flat).different == false)
        #expect(try ImageDiff.compare(flat, grandChain).report["same"] == .bool(true))
        #expect(flatSummary.pages[.stored] == UInt64(m2.distinctNonZeroPages.count))
        #expect(ImageVerifier.verify(path: dir.file("flat.ccimg"), deep: true).isValid)
        // The flat image stands alone: it opens with every other image gone.
        try FileManager.default.removeItem(atPath: dir.file("base.ccimg"))
        try Self.expectMemory(try ImageChain.open(path: dir.file("flat.ccimg")), equals: m2, "flat alone")
        #expect(imageErrorCode { _ = try ImageChain.open(path: dir.file("grandchild.ccimg")) } == .brokenChain)
    }

    /// A base and a child in `dir`; returns the memory of both.
    static func writeBaseAndChild(in dir: TempDir, seed: UInt64) throws -> (MemoryModel, MemoryModel) {
        var g = SeededGenerator(seed: seed)
        let m0 = MemoryModel.random(&g, pageSize: 4096, vmaCount: 2, maxPages: 12, notPopulatedWeight: 1)
        let (m1, _) = mutate(m0, fraction: 0.2, oneToZero: false, &g)
        try writeImage(m0, to: dir.file("base.ccimg"))
        try writeImage(m1, to: dir.file("child.ccimg"), parent: try ImageChain.open(path: dir.file("base.ccimg")))
        return (m0, m1)
    }

    @Test func parentMovedToAStoreDirectoryIsFound() throws {
        let dir = try TempDir("moved"), store = try TempDir("store")
        defer { dir.remove(); store.remove() }
        let (_, m1) = try Self.writeBaseAndChild(in: dir, seed: 1)
        try FileManager.default.moveItem(atPath: dir.file("base.ccimg"), toPath: store.file("renamed-parent.img"))

        let error = thrown { _ = try ImageChain.open(path: dir.file("child.ccimg")) } as? ImageError
        #expect(error?.code == .brokenChain)
        #expect(error?.path == dir.file("child.ccimg"))
        #expect(firstClass(ImageVerifier.verify(path: dir.file("child.ccimg"), deep: false)) == "broken-chain")

        let chain = try ImageChain.open(path: dir.file("child.ccimg"), storeDirectories: [store.path])
        #expect(chain.images.map(\.path) == [dir.file("child.ccimg"), store.file("renamed-parent.img")])
        try Self.expectMemory(chain, equals: m1, "child via store")
        let report = ImageVerifier.verify(path: dir.file("child.ccimg"), deep: true, storeDirectories: [store.path])
        #expect(report.isValid, "\(report.problems)")
    }

    @Test func knownPathsAreTriedFirstAndCheckedByUUID() throws {
        let dir = try TempDir("hinted"), elsewhere = try TempDir("hinted-elsewhere")
        defer { dir.remove(); elsewhere.remove() }
        let (_, m1) = try Self.writeBaseAndChild(in: dir, seed: 5)
        try FileManager.default.moveItem(atPath: dir.file("base.ccimg"), toPath: elsewhere.file("base.ccimg"))
        let base = try ImageReader(path: elsewhere.file("base.ccimg"))
        // A right hint is used; a hint to a file with another UUID is not, and the chain is broken as without it.
        let chain = try ImageChain.open(path: dir.file("child.ccimg"), knownPaths: [base.header.uuid: elsewhere.file("base.ccimg")])
        try Self.expectMemory(chain, equals: m1, "child via a known path")
        let wrong = ImageUUID.random()
        #expect(imageErrorCode { _ = try ImageChain.open(path: dir.file("child.ccimg"), knownPaths: [wrong: elsewhere.file("base.ccimg")]) } == .brokenChain)
        #expect(imageErrorCode { _ = try ImageChain.open(path: dir.file("child.ccimg"), knownPaths: [base.header.uuid: dir.file("child.ccimg")]) } == .brokenChain)
    }

    @Test func uuidTextRoundTrips() {
        for _ in 0..<100 {
            let uuid = ImageUUID.random()
            #expect(ImageUUID(parsing: uuid.description) == uuid)
        }
        #expect(ImageUUID(parsing: "not-a-uuid") == nil)
        #expect(ImageUUID(parsing: "c1675e0b-b980-4575-a896-61fec08aa83") == nil)
        #expect(ImageUUID(parsing: "g1675e0b-b980-4575-a896-61fec08aa83b") == nil)
    }

    @Test func deletedParentIsABrokenChain() throws {
        let dir = try TempDir("deleted")
        defer { dir.remove() }
        _ = try Self.writeBaseAndChild(in: dir, seed: 2)
        try FileManager.default.removeItem(atPath: dir.file("base.ccimg"))
        #expect(imageErrorCode { _ = try ImageChain.open(path: dir.file("child.ccimg")) } == .brokenChain)
        #expect(imageErrorCode { try readEverything(dir.file("child.ccimg")) } == .brokenChain)
        // The child alone still opens as a file; only its chain is broken.
        let child = try ImageReader(path: dir.file("child.ccimg"))
        #expect(child.header.hasParent)
        #expect(imageErrorCode { _ = try ImageChain(images: [child]) } == .brokenChain)
        let report = ImageVerifier.verify(path: dir.file("child.ccimg"), deep: true)
        #expect(firstClass(report) == "broken-chain")
        #expect(report.exitStatus == 15)
    }

    @Test func storeSearchSkipsFilesThatAreNotImages() throws {
        let dir = try TempDir("junk"), store = try TempDir("junk-store")
        defer { dir.remove(); store.remove() }
        let (m0, m1) = try Self.writeBaseAndChild(in: dir, seed: 3)
        let parentBytes = try readBytes(dir.file("base.ccimg"))
        let parentUUID = try ImageReader(path: dir.file("base.ccimg")).header.uuid
        try FileManager.default.removeItem(atPath: dir.file("base.ccimg"))

        // Things that are not the parent, most sorting before it.
        try writeBytes(Array("just some text\n".utf8), to: store.file("0-notes.txt"))
        try writeBytes([], to: store.file("1-empty"))
        try writeBytes(Array(parentBytes.prefix(30)), to: store.file("2-truncated.ccimg"))
        try writeBytes(Array(parentBytes.prefix(8)) + [UInt8](repeating: 0xFF, count: 100), to: store.file("3-magic-only.ccimg"))
        try FileManager.default.createDirectory(atPath: store.file("4-subdir.ccimg"), withIntermediateDirectories: false)
        #expect(mkfifo(store.file("5-fifo.ccimg"), 0o644) == 0)
        try writeImage(m0, to: store.file("6-unrelated.ccimg"))
        // A hidden impostor with the parent's UUID but other content: names beginning with "." are skipped (§2, §8.3).
        var impostor = ImageWriterOptions()
        impostor.uuid = parentUUID
        try writeImage(m1, to: store.file(".0-impostor.ccimg"), options: impostor)
        try writeBytes(parentBytes, to: store.file("z-parent.ccimg"))

        let chain = try ImageChain.open(path: dir.file("child.ccimg"), storeDirectories: [store.path])
        #expect(chain.images.count == 2)
        #expect(chain.images[1].path == store.file("z-parent.ccimg"))
        try Self.expectMemory(chain, equals: m1, "child")

        // The same through the CLI's --store.
        let verify = try CCImg.run(["verify", "--deep", "--store", store.path, dir.file("child.ccimg")])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.contains("chain of 2 images"), "\(verify.stdout)")
        let missing = try CCImg.run(["verify", dir.file("child.ccimg")])
        #expect(missing.status == 15, "\(missing.stderr)")

        // A visible impostor (same UUID, other index digest) is taken and refused (§8.4).
        try FileManager.default.moveItem(atPath: store.file(".0-impostor.ccimg"), toPath: store.file("0-impostor.ccimg"))
        let e = thrown { _ = try ImageChain.open(path: dir.file("child.ccimg"), storeDirectories: [store.path]) } as? ImageError
        #expect(e?.code == .brokenChain)
        #expect(e?.message.contains("digest") == true, "\(String(describing: e))")
    }

    @Test func explicitChainsAreChecked() throws {
        let dir = try TempDir("explicit")
        defer { dir.remove() }
        var g = SeededGenerator(seed: 4)
        _ = try Self.writeBaseAndChild(in: dir, seed: 4)
        try writeImage(MemoryModel.random(&g, pageSize: 4096, vmaCount: 1, maxPages: 3), to: dir.file("other.ccimg"))
        let child = try ImageReader(path: dir.file("child.ccimg"))
        let base = try ImageReader(path: dir.file("base.ccimg"))
        let other = try ImageReader(path: dir.file("other.ccimg"))
        _ = try ImageChain(images: [child, base])
        #expect(imageErrorCode { _ = try ImageChain(images: [child]) } == .brokenChain)
        #expect(imageErrorCode { _ = try ImageChain(images: [child, other]) } == .brokenChain)
        #expect(imageErrorCode { _ = try ImageChain(images: [base, other]) } == .brokenChain)
    }

    @Test func parentWithAnotherPageSizeIsABrokenChain() throws {
        let dir = try TempDir("pagesize")
        defer { dir.remove() }
        var g = SeededGenerator(seed: 6)
        let m = MemoryModel.random(&g, pageSize: 4096, vmaCount: 1, maxPages: 4)
        let baseSummary = try writeImage(m, to: dir.file("base.ccimg"))
        // A child claiming that parent but written with 8 KiB pages (link forged through the fixture SPI).
        var options = ImageWriterOptions()
        var link = Ccimg_V1_ParentLink()
        link.parentUuid = Data(baseSummary.uuid.bytes)
        link.parentIndexDigest = Data(baseSummary.indexDigest.canonical)
        link.depth = 1
        options.parentLinkOverride = link
        let m8 = MemoryModel.random(&g, pageSize: 8192, vmaCount: 1, maxPages: 4)
        try writeImage(m8, to: dir.file("child.ccimg"), options: options)
        let e = thrown { _ = try ImageChain.open(path: dir.file("child.ccimg")) } as? ImageError
        #expect(e?.code == .brokenChain)
        #expect(e?.message.contains("page size") == true, "\(String(describing: e))")
    }

    /// §10: at most 64 images below the top.
    @Test func chainDepthIsLimitedTo64() throws {
        let dir = try TempDir("depth")
        defer { dir.remove() }
        var g = SeededGenerator(seed: 64)
        let model = MemoryModel(pageSize: 4096, vmas: [(makeVma(start: 0x1000, pages: 1, pageSize: 4096), [textPage(1, pageSize: 4096)])])
        var previous: ImageWriteSummary? = nil
        for i in 0...65 {
            var options = ImageWriterOptions()
            options.uuid = ImageUUID.deterministic(using: &g)
            if let previous {
                var link = Ccimg_V1_ParentLink()
                link.parentUuid = Data(previous.uuid.bytes)
                link.parentIndexDigest = Data(previous.indexDigest.canonical)
                link.depth = UInt32(i)
                options.parentLinkOverride = link
            }
            previous = try writeImage(model, to: dir.file(String(format: "img-%02d.ccimg", i)), options: options)
        }
        let ok = try ImageChain.open(path: dir.file("img-64.ccimg"))
        #expect(ok.images.count == 65)
        // Verify reads each image of the deepest chain once (it used to verify every parent's
        // own chain again: time exponential in the depth, never ending at 64).
        let report = ImageVerifier.verify(path: dir.file("img-64.ccimg"), deep: true)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.parents.count == 64)
        let e = thrown { _ = try ImageChain.open(path: dir.file("img-65.ccimg")) } as? ImageError
        #expect(e?.code == .limitExceeded, "\(String(describing: e))")
    }

    /// Base, child and grandchild in three directories: the chain opens with both
    /// store directories given, so verifying it with them must succeed too (§8.3, §11).
    @Test func chainSpreadOverStoreDirectoriesVerifies() throws {
        let top = try TempDir("spread-top"), middle = try TempDir("spread-mid"), bottom = try TempDir("spread-base")
        defer { top.remove(); middle.remove(); bottom.remove() }
        var g = SeededGenerator(seed: 8)
        let m0 = MemoryModel.random(&g, pageSize: 4096, vmaCount: 2, maxPages: 10, notPopulatedWeight: 1)
        let (m1, _) = Self.mutate(m0, fraction: 0.2, oneToZero: false, &g)
        let (m2, _) = Self.mutate(m1, fraction: 0.2, oneToZero: false, &g)
        try writeImage(m0, to: bottom.file("base.ccimg"))
        try writeImage(m1, to: middle.file("child.ccimg"), parent: try ImageChain.open(path: bottom.file("base.ccimg")))
        try writeImage(m2, to: top.file("grandchild.ccimg"),
                       parent: try ImageChain.open(path: middle.file("child.ccimg"), storeDirectories: [bottom.path]))
        let stores = [middle.path, bottom.path]
        let chain = try ImageChain.open(path: top.file("grandchild.ccimg"), storeDirectories: stores)
        #expect(chain.images.count == 3)
        try Self.expectMemory(chain, equals: m2, "spread chain")

        let report = ImageVerifier.verify(path: top.file("grandchild.ccimg"), deep: true, storeDirectories: stores)
        #expect(report.isValid, "\(report.problems)")
        let cli = try CCImg.run(["verify", "--store", middle.path, "--store", bottom.path, top.file("grandchild.ccimg")])
        #expect(cli.status == 0, "\(cli.stderr)")
    }

    @Test func damagedParentFailsTheChildsVerify() throws {
        let dir = try TempDir("damaged-parent")
        defer { dir.remove() }
        _ = try Self.writeBaseAndChild(in: dir, seed: 9)
        // Damage a frame of the parent: its index, and so its digest, stay the same.
        var bytes = try readBytes(dir.file("base.ccimg"))
        let l = try #require(layout(of: bytes))
        let frame = try #require(l.blocks.first { $0.typeTag == BlockType.frame.rawValue })
        bytes[frame.offset + ImageFormat.blockHeaderLength + 3] ^= 0x40
        try writeBytes(bytes, to: dir.file("base.ccimg"))

        _ = try ImageChain.open(path: dir.file("child.ccimg"))
        let report = ImageVerifier.verify(path: dir.file("child.ccimg"), deep: false)
        let first = try #require(report.problems.first)
        #expect(first.code == .checksumMismatch)
        #expect(first.path == dir.file("base.ccimg"))
        #expect(first.message.hasPrefix("in parent image: "))
        #expect(report.parents == [dir.file("base.ccimg")])
        let cli = try CCImg.run(["verify", dir.file("child.ccimg")])
        #expect(cli.status == 13)
    }

    /// §8.2: an inherited page must resolve to a VMA of the parent chain; one that
    /// does not is a structural error — from verify, when read, and when flattened.
    @Test func inheritedPageWithoutAParentVmaIsStructural() throws {
        let dir = try TempDir("orphan")
        defer { dir.remove() }
        let text = textPage(3, pageSize: 4096), other = textPage(4, pageSize: 4096)
        let vma = makeVma(start: 0x20_0000, pages: 2, pageSize: 4096)
        // P1 maps 0x200000; P2 maps only 0x900000.
        try writeImage(MemoryModel(pageSize: 4096, vmas: [(vma, [text, text])]), to: dir.file("p1.ccimg"))
        let p2 = try writeImage(MemoryModel(pageSize: 4096, vmas: [(makeVma(start: 0x90_0000, pages: 1, pageSize: 4096), [text])]),
                                to: dir.file("p2.ccimg"))
        // The child's pages are delta-encoded against P1, but its link names P2.
        var options = ImageWriterOptions()
        var link = Ccimg_V1_ParentLink()
        link.parentUuid = Data(p2.uuid.bytes)
        link.parentIndexDigest = Data(p2.indexDigest.canonical)
        link.depth = 1
        options.parentLinkOverride = link
        let child = try writeImage(MemoryModel(pageSize: 4096, vmas: [(vma, [text, other])]), to: dir.file("child.ccimg"),
                                   options: options, parent: try ImageChain.open(path: dir.file("p1.ccimg")))
        #expect(child.pages[.inherited] == 1)
        try FileManager.default.removeItem(atPath: dir.file("p1.ccimg"))

        let chain = try ImageChain.open(path: dir.file("child.ccimg"))
        #expect(chain.images.map(\.header.uuid) == [child.uuid, p2.uuid])
        #expect(chain.resolve(address: 0x20_0000) == .unmapped)
        #expect(imageErrorCode { _ = try chain.readMemory(address: 0x20_0000, length: 16) } == .structural)
        #expect(try chain.readMemory(address: 0x20_1000, length: 4096) == other)
        #expect(firstClass(ImageVerifier.verify(path: dir.file("child.ccimg"), deep: true)) == "structural")
        let e = thrown { try ImageFlattener.flatten(chain, to: try ImageOutput(path: dir.file("flat.ccimg"))) } as? ImageError
        #expect(e?.code == .structural, "flatten: \(String(describing: e))")
        #expect(!fileExists(dir.file("flat.ccimg")))
    }
}

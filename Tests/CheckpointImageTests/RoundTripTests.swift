import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// Property tests: random process states and random memory, written and read
/// back, must come back exactly (§5, §6).
@Suite struct RoundTripTests {
    struct RandomState {
        var process = Ccimg_V1_ProcessInfo()
        var threads = Ccimg_V1_ThreadList()
        var handles = Ccimg_V1_HandleTable()
        var metadata = Ccimg_V1_Metadata()
        var memory: MemoryModel
        var pagesPerFrame: UInt32
    }

    static func randomState(seed: UInt64) -> RandomState {
        var g = SeededGenerator(seed: seed)
        var p = Ccimg_V1_ProcessInfo()
        p.pid = Int32(g.int(1...4_194_304))
        p.ppid = Int32(g.int(0...4_194_304))
        p.comm = g.string(15)
        p.exePath = "/usr/bin/" + g.string(20)
        p.cmdline = (0..<g.int(0...6)).map { _ in g.string(30) }
        p.environ = (0..<g.int(0...8)).map { _ in "\(g.string(8))=\(g.string(40))" }
        p.cwd = "/" + g.string(20)
        p.umask = UInt32(g.int(0...0o777))
        var cred = Ccimg_V1_Credentials()
        cred.uid = UInt32(g.int(0...65535)); cred.gid = UInt32(g.int(0...65535))
        cred.groups = (0..<g.int(0...4)).map { _ in UInt32(g.int(0...65535)) }
        cred.capEffective = g.next()
        p.credentials = cred
        p.auxv = (0..<g.int(0...5)).map { _ in var a = Ccimg_V1_AuxvEntry(); a.type = UInt64(g.int(0...50)); a.value = g.next(); return a }

        var threads = Ccimg_V1_ThreadList()
        threads.threads = (0..<g.int(1...6)).map { i in
            var t = Ccimg_V1_ThreadState()
            t.tid = p.pid + Int32(i)
            t.state = [.running, .stopped, .inSyscall, .zombie][g.int(0...3)]
            t.name = g.string(15)
            t.generalRegisters = Data(g.bytes(27 * 8))
            t.xsave = Data(g.bytes(g.int(0...1200)))
            t.xsaveFeatures = g.next()
            t.fsBase = g.next()
            t.signalMask = g.next()
            if t.state == .inSyscall {
                var sc = Ccimg_V1_SyscallState()
                sc.number = UInt64(g.int(0...450))
                sc.args = (0..<6).map { _ in g.next() }
                sc.restart = [.none, .auto, .block, .nohand][g.int(0...3)]
                sc.result = Int64(bitPattern: g.next())
                t.syscall = sc
            }
            return t
        }

        var handles = Ccimg_V1_HandleTable()
        handles.handles = (0..<g.int(0...12)).map { i in
            var h = Ccimg_V1_Handle()
            h.fd = Int32(i)
            h.type = Ccimg_V1_HandleType(rawValue: g.int(1...14)) ?? .other
            h.path = g.chance(0.7) ? "/" + g.string(30) : ""
            h.offset = Int64(g.int(0...1 << 40))
            h.openFlags = UInt32(g.int(0...0o4000))
            h.fdFlags = UInt32(g.int(0...1))
            if g.chance(0.3) { h.deleted = true; h.contents = Data(g.bytes(g.int(0...300))) }
            if h.type == .pipe { h.pipeID = g.next(); h.unread = Data(g.bytes(g.int(0...64))) }
            if h.type == .epoll {
                h.epollTargets = (0..<g.int(1...3)).map { _ in
                    var e = Ccimg_V1_EpollTarget(); e.fd = Int32(g.int(0...20)); e.events = UInt32(g.int(0...31)); e.data = g.next(); return e
                }
            }
            return h
        }

        // Sometimes large and compressible, so the zstd path of §5.1 is used.
        var metadata = Ccimg_V1_Metadata()
        metadata.entries = (0..<(g.chance(0.5) ? g.int(100...400) : g.int(0...3))).map { i in
            var e = Ccimg_V1_MetadataEntry(); e.key = "key-\(i % 7)"; e.value = "value repeated value repeated \(i % 3)"; return e
        }

        let pageSize = g.chance(0.15) ? 8192 : 4096
        let memory = MemoryModel.random(&g, pageSize: pageSize, vmaCount: g.int(1...5), maxPages: 40)
        let ppf: UInt32 = [1, 3, 8, 256][g.int(0...3)]
        return RandomState(process: p, threads: threads, handles: handles, metadata: metadata, memory: memory, pagesPerFrame: ppf)
    }

    @Test(arguments: 1...30)
    func randomImageRoundTrips(seed: Int) throws {
        let state = Self.randomState(seed: UInt64(seed) &* 7919)
        let dir = try TempDir("roundtrip")
        defer { dir.remove() }
        let path = dir.file("image.ccimg")
        var options = ImageWriterOptions()
        options.pagesPerFrame = state.pagesPerFrame
        options.pageSize = UInt32(state.memory.pageSize)
        let writer = try ImageWriter(output: try ImageOutput(path: path), options: options)
        // Every third image has its sections after the pages, as ccpm writes them (§2.4).
        let sectionsLast = seed % 3 == 0
        func addSections() throws {
            try writer.addSection(.process, state.process)
            try writer.addSection(.threads, state.threads)
            try writer.addSection(.handles, state.handles)
            try writer.addSection(.metadata, state.metadata)
        }
        if !sectionsLast { try addSections() }
        try state.memory.write(to: writer, zeroViaAppendZero: seed % 2 == 0)
        if sectionsLast {
            try writer.endPages()
            try addSections()
        }
        let summary = try writer.finish()

        let model = state.memory
        let ps = model.pageSize
        let all = model.allPages
        let distinct = model.distinctNonZeroPages
        let populated = all.filter { $0.page != nil }
        let nonZero = populated.filter { $0.page!.contains { $0 != 0 } }
        let expectedCounts: [PageState: UInt64] = [
            .notPopulated: UInt64(all.count - populated.count),
            .zero: UInt64(populated.count - nonZero.count),
            .stored: UInt64(distinct.count),
            .dedup: UInt64(nonZero.count - distinct.count),
        ].filter { $0.value > 0 }

        // What the writer says it wrote.
        #expect(summary.pages == expectedCounts)
        #expect(summary.storedRawBytes == UInt64(distinct.count * ps))
        #expect(summary.fileBytes == UInt64(try readBytes(path).count))
        #expect(summary.uuid == options.uuid)

        // Sections decode to exactly what was written.
        let reader = try ImageReader(path: path)
        #expect(reader.header.pageSize == ps)
        #expect(reader.header.pagesPerFrame == Int(state.pagesPerFrame))
        #expect(reader.header.uuid == options.uuid)
        #expect(!reader.header.hasParent)
        #expect(reader.indexDigest == summary.indexDigest)
        #expect(try reader.section(.process, as: Ccimg_V1_ProcessInfo.self) == state.process)
        #expect(try reader.section(.threads, as: Ccimg_V1_ThreadList.self) == state.threads)
        #expect(try reader.section(.handles, as: Ccimg_V1_HandleTable.self) == state.handles)
        #expect(try reader.section(.metadata, as: Ccimg_V1_Metadata.self) == state.metadata)
        #expect(try reader.section(.sockets, as: Ccimg_V1_SocketTable.self) == nil)
        #expect(try reader.section(.memoryMap, as: Ccimg_V1_MemoryMap.self)?.vmas == model.vmas.map(\.vma))
        for kind in [SectionKind.process, .threads, .handles, .metadata, .memoryMap, .pageMap] {
            let entry = try #require(reader.sectionEntry(kind))
            let flags = BlockFlags(rawValue: UInt16(entry.flags))
            #expect(flags.contains(.critical) == kind.isCritical, "\(kind)")
            let payload = try reader.sectionPayload(entry)
            if payload.count > 4096 && kind == .metadata {
                #expect(flags.contains(.zstd), "a large repetitive section is compressed (§5.1)")
                #expect(entry.length < UInt64(payload.count))
            }
            if payload.count <= 4096 { #expect(!flags.contains(.zstd), "\(kind): small sections are stored plain") }
        }

        // The memory map, the page tables, and the frames.
        #expect(reader.memoryMap == model.vmas.map(\.vma))
        #expect(reader.index.storedPages == UInt64(distinct.count))
        let ppf = Int(state.pagesPerFrame)
        #expect(reader.index.frameOffsets.count == (distinct.count + ppf - 1) / ppf)
        #expect(ImageInspector.stateCounts(reader) == expectedCounts)
        for (o, page) in distinct.enumerated() {
            #expect(reader.storedPageHash(UInt64(o)) == PageHash(of: page))
            #expect(try reader.storedPage(UInt64(o)) == page)
        }

        // Every page through the chain API.
        let chain = try ImageChain(images: [reader])
        let ordinalOf = Dictionary(distinct.enumerated().map { ($0.element, UInt64($0.offset)) }, uniquingKeysWith: { a, _ in a })
        let zero = model.zeroPage
        for (address, page) in all {
            let expectedBytes = page ?? zero
            #expect(try chain.pageBytes(at: address) == expectedBytes)
            #expect(try chain.readMemory(address: address, length: UInt64(ps)) == expectedBytes)
            switch page {
            case nil:
                #expect(chain.resolve(address: address) == .notPopulated)
                #expect(chain.pageHash(at: address) == nil)
            case let p? where !p.contains(where: { $0 != 0 }):
                #expect(chain.resolve(address: address) == .zero)
                #expect(chain.pageHash(at: address) == PageHash.zeroPage(pageSize: ps))
            case let p?:
                #expect(chain.resolve(address: address) == .stored(level: 0, ordinal: ordinalOf[p]!))
                #expect(chain.pageHash(at: address) == PageHash(of: p))
            }
        }

        // Whole VMAs and unaligned ranges across page boundaries in one read.
        var g = SeededGenerator(seed: UInt64(seed))
        for (vma, pages) in model.vmas {
            let expected = pages.flatMap { $0 ?? zero }
            #expect(try chain.readMemory(address: vma.start, length: vma.end - vma.start) == expected)
            let from = g.int(0...(expected.count - 1))
            let length = g.int(1...(expected.count - from))
            #expect(try chain.readMemory(address: vma.start + UInt64(from), length: UInt64(length)) == Array(expected[from..<(from + length)]))
        }
        // Addresses in no VMA.
        for (a, b) in zip(model.vmas, model.vmas.dropFirst()) where b.vma.start > a.vma.end {
            #expect(chain.resolve(address: a.vma.end) == .unmapped)
            #expect(try chain.pageBytes(at: a.vma.end) == nil)
            #expect(imageErrorCode { _ = try chain.readMemory(address: a.vma.end - 1, length: 2) } == .structural)
        }
        #expect(chain.resolve(address: 0) == .unmapped)

        // Deep verify accepts it; the layout tiles (§2).
        let report = ImageVerifier.verify(path: path, deep: true)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.storedPages == UInt64(distinct.count))
        #expect(report.pagesHashed == UInt64(distinct.count))
        #expect(report.frames == reader.index.frameOffsets.count)
        #expect(layout(of: try readBytes(path)) != nil)

        // Front to back, the stream reader finds every section and frame, wherever the
        // writer put them (after endPages, sections and the frames still being
        // compressed interleave).
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        let stream = try ImageStreamReader(fd: fd)
        var kinds: [UInt32] = []
        var frames = 0
        var processFromStream: Ccimg_V1_ProcessInfo?
        loop: while true {
            switch try stream.next() {
            case .section(let kind, _, let payload):
                kinds.append(kind)
                if kind == SectionKind.process.rawValue { processFromStream = try Ccimg_V1_ProcessInfo(serializedBytes: payload) }
            case .frame: frames += 1
            case .end: break loop
            }
        }
        #expect(processFromStream == state.process)
        #expect(Set(kinds) == Set([SectionKind.process, .threads, .handles, .metadata, .memoryMap, .pageMap].map(\.rawValue)))
        #expect(frames == reader.index.frameOffsets.count)
    }

    @Test func writingWithoutDedupStoresEveryNonZeroPage() throws {
        var g = SeededGenerator(seed: 99)
        let model = MemoryModel.random(&g, pageSize: 4096, vmaCount: 3, maxPages: 20)
        let dir = try TempDir("nodedup")
        defer { dir.remove() }
        var options = ImageWriterOptions()
        options.deduplicate = false
        options.pagesPerFrame = 4
        let summary = try writeImage(model, to: dir.file("a.ccimg"), options: options)
        let nonZero = model.allPages.filter { $0.page.map { $0.contains { $0 != 0 } } ?? false }
        #expect(summary.pages[.stored] == UInt64(nonZero.count))
        #expect(summary.pages[.dedup] == nil)
        let chain = try ImageChain.open(path: dir.file("a.ccimg"))
        for (address, page) in model.allPages {
            #expect(try chain.pageBytes(at: address) == (page ?? model.zeroPage))
        }
        #expect(ImageVerifier.verify(path: dir.file("a.ccimg"), deep: true).isValid)
    }

    /// The same input gives the same bytes, whatever the compression batch (§6.1).
    @Test func outputDoesNotDependOnParallelism() throws {
        var g = SeededGenerator(seed: 5)
        let model = MemoryModel.random(&g, pageSize: 4096, vmaCount: 4, maxPages: 40)
        let dir = try TempDir("batch")
        defer { dir.remove() }
        var options = ImageWriterOptions()
        options.pagesPerFrame = 3
        options.compressionBatch = 1
        try writeImage(model, to: dir.file("a.ccimg"), options: options)
        options.compressionBatch = 64
        try writeImage(model, to: dir.file("b.ccimg"), options: options)
        #expect(try readBytes(dir.file("a.ccimg")) == readBytes(dir.file("b.ccimg")))
    }

    /// Pages read straight into frames (as a capture does) give the same bytes as pages
    /// appended from a buffer: zero, duplicate and inherited pages are taken out in place.
    @Test(arguments: 1...8)
    func pagesReadInPlaceGiveTheSameBytes(seed: UInt64) throws {
        let changed = try ChangedMemory(seed: seed, name: "in-place", maxPages: 40, fraction: 0.3)
        let (model, dir, options) = (changed.model, changed.dir, changed.options)
        defer { dir.remove() }
        for (name, parent) in [("full", nil), ("child", changed.chain)] as [(String, ImageChain?)] {
            try writeImage(model, to: dir.file("\(name)-a.ccimg"), options: options, parent: parent)
            try writeImage(model, to: dir.file("\(name)-b.ccimg"), options: options, parent: parent, inPlace: true)
            #expect(try readBytes(dir.file("\(name)-a.ccimg")) == readBytes(dir.file("\(name)-b.ccimg")), "\(name), seed \(seed)")
        }
    }

    /// An increment whose written pages are read scattered (as a tracked capture reads
    /// them: runs with inherited gaps, several runs a read, straight into the frames)
    /// holds the same memory as one that appended every page, whatever the frame size
    /// and the number of runs a read may take.
    @Test(arguments: 1...8)
    func scatteredReadsGiveTheSameMemory(seed: UInt64) throws {
        var changed = try ChangedMemory(seed: seed, name: "scattered", maxPages: 60, fraction: 0.2)
        let (base, model, dir, chain) = (changed.base, changed.model, changed.dir, changed.chain)
        var options = changed.options
        defer { dir.remove() }
        let path = dir.file("child.ccimg")
        options.uuid = ImageUUID.random()
        let writer = try ImageWriter(output: try ImageOutput(path: path), options: options, parent: chain)
        var process = Ccimg_V1_ProcessInfo()
        process.pid = 777
        try writer.addSection(.process, process)
        let maxPieces = changed.generator.int(1...4)
        var reads = 0
        for ((vma, pages), (_, before)) in zip(model.vmas, base.vmas) {
            try writer.beginVma(vma)
            // Written: every changed page and some others; never a page that is not populated.
            let written = pages.indices.map { i in pages[i] != nil && (pages[i] != before[i] || changed.generator.chance(0.2)) }
            var runs: [ImageWriter.ScatteredRun] = []
            var firstPages: [Int] = []
            var end = 0
            var i = 0
            while i < written.count {
                guard written[i] else { i += 1; continue }
                var j = i + 1
                while j < written.count && written[j] { j += 1 }
                runs.append(ImageWriter.ScatteredRun(gap: UInt64(i - end), count: j - i))
                firstPages.append(i)
                end = j
                i = j
            }
            try writer.appendScatteredPages(runs, maxPieces: maxPieces) { buffer, pieces in
                #expect(pieces.count <= maxPieces)
                reads += 1
                var offset = 0
                for piece in pieces {
                    for k in 0..<piece.count {
                        let page = pages[firstPages[piece.run] + piece.first + k]!
                        page.withUnsafeBytes { (buffer.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: 4096) }
                        offset += 4096
                    }
                }
                #expect(offset == buffer.count)
            }
            writer.appendInherited(count: UInt64(written.count - end))
        }
        try writer.finish()
        try ChainTests.expectMemory(try ImageChain.open(path: path), equals: model, "seed \(seed)")
        #expect(ImageVerifier.verify(path: path, deep: true).isValid)
    }

    /// The smoke test that used to be Placeholder.swift: 600 pages, 300 of them zero.
    @Test func largeVmaRoundTrip() throws {
        let dir = try TempDir("smoke")
        defer { dir.remove() }
        let path = dir.file("a.ccimg")
        let writer = try ImageWriter(output: try ImageOutput(path: path))
        var p = Ccimg_V1_ProcessInfo(); p.pid = 42; p.cmdline = ["demo"]
        try writer.addSection(.process, p)
        var vma = Ccimg_V1_Vma(); vma.start = 0x10000; vma.end = 0x10000 + 4096 * 600; vma.prot = 3; vma.role = .heap
        try writer.beginVma(vma)
        var bytes = [UInt8](repeating: 0, count: 4096 * 600)
        for i in 0..<300 * 4096 { bytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ i / 4096) }
        try writer.appendPages(bytes)
        let summary = try writer.finish()
        // Page i (i < 300) repeats page i mod 256: 256 stored, 44 dedup, 300 zero.
        #expect(summary.pages == [.stored: 256, .dedup: 44, .zero: 300])
        let r = try ImageReader(path: path)
        #expect(r.memoryMap.count == 1)
        #expect(r.index.frameOffsets.count == 1)
        let chain = try ImageChain(images: [r])
        #expect(try chain.readMemory(address: 0x10000, length: UInt64(bytes.count)) == bytes)
        let report = ImageVerifier.verify(path: path, deep: true)
        #expect(report.isValid, "\(report.problems)")
    }

    @Test func readMemoryLimits() throws {
        let chain = try ImageChain.open(path: Paths.golden("full"))
        #expect(try chain.readMemory(address: SyntheticProcess.markerAddress, length: 0) == [])
        #expect(imageErrorCode { _ = try chain.readMemory(address: UInt64.max - 1, length: 4) } == .structural)
        #expect(imageErrorCode { _ = try chain.readMemory(address: 0x5555_5555_8000, length: (1 << 32) + 1) } == .limitExceeded)
        // A read running off the end of a VMA into a gap fails, naming the first unmapped address.
        let data = try #require(chain.top.memoryMap.first { $0.role == .elfData })
        let e = thrown { _ = try chain.readMemory(address: data.end - 8, length: 16) } as? ImageError
        #expect(e?.code == .structural)
        #expect(e?.message.contains("0x\(String(data.end, radix: 16))") == true, "\(String(describing: e))")
        // Adjacent pages of one VMA read across their boundary.
        let heap = try #require(chain.top.memoryMap.first { $0.role == .heap })
        let across = try chain.readMemory(address: heap.start + 4096 - 10, length: 20)
        #expect(across == Array(try chain.pageBytes(at: heap.start)!.suffix(10)) + Array(try chain.pageBytes(at: heap.start + 4096)!.prefix(10)))
    }
}

/// The set-up of the tests of pages read straight into frames: a seeded random memory,
/// written as a base image (opened as a chain), and a copy with a fraction of its pages
/// changed; `generator` goes on from there.
struct ChangedMemory {
    var generator: SeededGenerator
    let base: MemoryModel
    let model: MemoryModel
    let dir: TempDir
    let options: ImageWriterOptions
    let chain: ImageChain

    init(seed: UInt64, name: String, maxPages: Int, fraction: Double) throws {
        generator = SeededGenerator(seed: seed)
        base = MemoryModel.random(&generator, pageSize: 4096, vmaCount: 4, maxPages: maxPages)
        model = ChainTests.mutate(base, fraction: fraction, oneToZero: true, &generator).model
        dir = try TempDir(name)
        var options = ImageWriterOptions()
        options.pagesPerFrame = UInt32(1 + seed % 5)
        options.pageSize = 4096
        self.options = options
        try writeImage(base, to: dir.file("base.ccimg"), options: options)
        chain = try ImageChain.open(path: dir.file("base.ccimg"))
    }
}

import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// §9 The committed golden 1.0 images: every later reader must read them with
/// the same results, and this writer must still produce them byte for byte.
@Suite struct GoldenFixtureTests {
    @Test(arguments: FixtureSet.goldenNames)
    func goldenImageDumpsAsCommitted(name: String) throws {
        let path = Paths.golden(name)
        let expected = try String(contentsOfFile: "\(Paths.goldenDirectory)/\(name).dump.json", encoding: .utf8)
        let dump = try FixtureSet.goldenDump(of: path)
        #expect(dump == expected)
    }

    @Test(arguments: FixtureSet.goldenNames)
    func goldenImageVerifiesDeep(name: String) throws {
        let report = ImageVerifier.verify(path: Paths.golden(name), deep: true)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.exitStatus == 0)
        #expect(report.pagesHashed == report.storedPages)
        let shallow = ImageVerifier.verify(path: Paths.golden(name), deep: false)
        #expect(shallow.isValid, "\(shallow.problems)")
        #expect(shallow.pagesHashed == 0)
    }

    @Test(arguments: FixtureSet.goldenNames)
    func goldenImageTilesTheFile(name: String) throws {
        // §2: header, blocks back to back, the index last, then a 32-byte footer.
        let bytes = try readBytes(Paths.golden(name))
        let l = try #require(layout(of: bytes))
        let reader = try ImageReader(path: Paths.golden(name))
        #expect(l.headerEnd == reader.header.encodedLength)
        #expect(UInt64(l.blocks.last!.offset) == reader.indexOffset)
        let frames = l.blocks.filter { $0.typeTag == BlockType.frame.rawValue }.map { UInt64($0.offset) }
        #expect(frames == reader.index.frameOffsets)
        let sections = l.blocks.filter { $0.typeTag == BlockType.section.rawValue }.map { UInt64($0.offset) }
        #expect(sections == reader.index.sections.map(\.offset))
        #expect(Array(bytes[0..<8]) == ImageFormat.magic)
        #expect(Array(bytes[(bytes.count - 32)..<(bytes.count - 24)]) == Array("CCIMGEND".utf8))
    }

    @Test func reencodingReproducesEveryGoldenImageByteForByte() throws {
        let dir = try TempDir("golden")
        defer { dir.remove() }
        for name in FixtureSet.goldenNames {
            try FileManager.default.copyItem(atPath: Paths.golden(name), toPath: dir.file("\(name).ccimg"))
        }
        for name in FixtureSet.goldenNames {
            let committed = try readBytes(Paths.golden(name))
            let encoded = try FixtureSet.encodeGolden(name, parentsIn: dir.path)
            #expect(encoded.count == committed.count, "\(name): size")
            if encoded != committed {
                let first = zip(encoded, committed).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(encoded.count, committed.count)
                Issue.record("\(name): re-encoded image differs from the committed one, first at byte \(first)")
            }
        }
        // encodeGolden leaves nothing behind.
        #expect(dir.contents() == FixtureSet.goldenNames.map { "\($0).ccimg" }.sorted())
    }

    @Test func markerReadsBackFromFullImage() throws {
        let chain = try ImageChain.open(path: Paths.golden("full"))
        let marker = SyntheticProcess.marker
        let bytes = try chain.readMemory(address: SyntheticProcess.markerAddress, length: UInt64(marker.utf8.count))
        #expect(bytes == Array(marker.utf8))
        #expect(String(decoding: bytes, as: UTF8.self) == marker)
    }

    /// Every image's content is exactly the synthetic process it was written from.
    @Test(arguments: [("full", 1), ("chain-1", 1), ("chain-2", 2), ("chain-3", 3), ("chain-3-flat", 3), ("unknown-optional", 1)])
    func goldenImageHoldsTheSyntheticProcess(name: String, version: Int) throws {
        let state = SyntheticProcess(version: version)
        let chain = try ImageChain.open(path: Paths.golden(name))
        let top = chain.top
        #expect(try top.section(.process, as: Ccimg_V1_ProcessInfo.self) == state.process)
        #expect(try top.section(.threads, as: Ccimg_V1_ThreadList.self) == state.threads)
        #expect(try top.section(.syncObjects, as: Ccimg_V1_SyncObjects.self) == state.sync)
        #expect(try top.section(.handles, as: Ccimg_V1_HandleTable.self) == state.handles)
        #expect(try top.section(.sockets, as: Ccimg_V1_SocketTable.self) == state.sockets)
        #expect(try top.section(.console, as: Ccimg_V1_Console.self) == state.console)
        #expect(try top.section(.signals, as: Ccimg_V1_SignalDispositions.self) == state.signals)
        #expect(try top.section(.metadata, as: Ccimg_V1_Metadata.self) == state.metadata)
        #expect(top.memoryMap == state.memory.map(\.vma))
        let ps = UInt64(chain.pageSize)
        for (vma, pages) in state.memory {
            for (i, page) in pages.enumerated() {
                let address = vma.start + UInt64(i) * ps
                let got = try chain.pageBytes(at: address)
                if let page {
                    #expect(got == page, "\(name): page at 0x\(String(address, radix: 16))")
                    #expect(chain.pageHash(at: address) == PageHash(of: page))
                } else {
                    #expect(chain.resolve(address: address) == .notPopulated)
                    #expect(got == [UInt8](repeating: 0, count: Int(ps)))
                    #expect(chain.pageHash(at: address) == nil)
                }
            }
        }
    }

    @Test func chainFixturesLinkByUUIDAndDigest() throws {
        let chain = try ImageChain.open(path: Paths.golden("chain-3"))
        #expect(chain.images.map { ImageInspector.fileName($0.path) } == ["chain-3.ccimg", "chain-2.ccimg", "chain-1.ccimg"])
        #expect(chain.images[0].header.body.parent.depth == 2)
        #expect(chain.images[1].header.body.parent.depth == 1)
        #expect(!chain.images[2].header.hasParent)
        for (child, parent) in zip(chain.images, chain.images.dropFirst()) {
            #expect(Array(child.header.body.parent.parentUuid) == parent.header.uuid.bytes)
            #expect(Array(child.header.body.parent.parentIndexDigest) == parent.indexDigest.canonical)
            #expect(child.header.features.incompatible == FeatureFlags.incompatibleParent)
        }
        let flat = try ImageChain.open(path: Paths.golden("chain-3-flat"))
        #expect(flat.images.count == 1)
        #expect(flat.top.header.features.incompatible == 0)
        #expect(ImageInspector.stateCounts(flat.top)[.inherited] == nil)
        #expect(try ImageDiff.compare(chain, flat).different == false)
    }

    @Test func unknownOptionalSectionIsSkippedAndKept() throws {
        let reader = try ImageReader(path: Paths.golden("unknown-optional"))
        let entry = try #require(reader.index.sections.first { $0.kind == FixtureSet.unknownOptionalKind })
        #expect(BlockFlags(rawValue: UInt16(entry.flags)).contains(.critical) == false)
        #expect(try reader.sectionPayload(entry) == Array("a section from format 1.9".utf8))
    }
}

/// §9 The committed golden 1.1 images (open-files, decision 0018): read as
/// committed, written byte for byte, and holding the descriptors they were written from.
extension GoldenFixtureTests {
    static let goldenDirectory11 = Paths.repoRoot + "/fixtures/images/1.1"
    static func golden11(_ name: String) -> String { "\(goldenDirectory11)/\(name).ccimg" }

    @Test(arguments: OpenFilesFixtures.goldenNames)
    func golden11DumpsAsCommittedAndVerifiesDeep(name: String) throws {
        let expected = try String(contentsOfFile: "\(Self.goldenDirectory11)/\(name).dump.json", encoding: .utf8)
        #expect(try FixtureSet.goldenDump(of: Self.golden11(name)) == expected)
        let report = ImageVerifier.verify(path: Self.golden11(name), deep: true)
        #expect(report.isValid, "\(report.problems)")
        let reader = try ImageReader(path: Self.golden11(name))
        #expect(reader.header.major == 1 && reader.header.minor == 1)
        #expect(reader.header.features.incompatible == FeatureFlags.incompatibleOpenFiles)
    }

    @Test func reencodingReproducesEveryGolden11ImageByteForByte() throws {
        let dir = try TempDir("golden11")
        defer { dir.remove() }
        for name in OpenFilesFixtures.goldenNames {
            try FileManager.default.copyItem(atPath: Self.golden11(name), toPath: dir.file("\(name).ccimg"))
        }
        for name in OpenFilesFixtures.goldenNames {
            #expect(try OpenFilesFixtures.encodeGolden(name, in: dir.path) == readBytes(Self.golden11(name)), "\(name)")
        }
    }

    @Test func golden11HoldsSharedDescriptions() throws {
        let state = OpenFilesFixtures.process()
        let reader = try ImageReader(path: Self.golden11("open-files"))
        #expect(try reader.section(.handles, as: Ccimg_V1_HandleTable.self) == state.handles)
        #expect(try reader.section(.syncObjects, as: Ccimg_V1_SyncObjects.self) == state.sync)
        let table = try reader.openFiles()
        #expect(table.objects.count == 12 && table.descriptors.count == 16)
        let tty = try #require(table.objects.first { $0.type == .tty })
        #expect(table.descriptors(of: tty.objectID).map(\.fd) == [0, 1, 2])
        let file = try #require(table.objects.first { $0.path == "/work/data.txt" })
        #expect(table.descriptors(of: file.objectID).map(\.fd) == [3, 14] && file.offset == 1234)
        let eventfd = try #require(table.objects.first { $0.type == .eventfd })
        #expect(table.descriptors(of: eventfd.objectID) == [.init(fd: 5, fdFlags: 1, objectID: eventfd.objectID),
                                                            .init(fd: 15, fdFlags: 0, objectID: eventfd.objectID)])
        #expect(table.eventfds[eventfd.objectID]?.counter == 7)
        // The flattened copy keeps the open-files layout, and reads the same.
        let flat = try ImageReader(path: Self.golden11("open-files-flat"))
        #expect(try flat.openFiles() == table)
    }
}

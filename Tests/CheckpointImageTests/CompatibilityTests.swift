import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures
import SwiftProtobuf

/// §3.3, §5.2, §9: feature classes, critical and optional sections, and what
/// a reader may re-encode (flatten).
@Suite struct CompatibilityTests {
    /// The golden full image with `mask` or-ed into the feature word at `offset` (§3.1), resealed.
    static func withFeature(at offset: Int, mask: UInt8) throws -> [UInt8] {
        var bytes = try readBytes(Paths.golden("full"))
        bytes[offset] |= mask
        ImageSurgery.resealHeader(&bytes)
        return bytes
    }

    @Test func unknownReadOnlyCompatibleFeatureReadsButDoesNotFlatten() throws {
        let dir = try TempDir("rocompat")
        defer { dir.remove() }
        let path = dir.file("ro.ccimg")
        try writeBytes(try Self.withFeature(at: 24, mask: 0x04), to: path)
        // A reader may read it …
        try readEverything(path)
        let chain = try ImageChain.open(path: path)
        #expect(chain.top.header.features.readOnlyCompatible == 0x04)
        #expect(ImageVerifier.verify(path: path, deep: true).isValid)
        // … but must not re-encode it.
        let e = thrown { try ImageFlattener.flatten(chain, to: try ImageOutput(path: dir.file("flat.ccimg"))) } as? ImageError
        #expect(e?.code == .unsupported)
        #expect(dir.contents() == ["ro.ccimg"])
        let cli = try CCImg.run(["flatten", path, "-o", dir.file("flat.ccimg")])
        #expect(cli.status == 12, "\(cli.stderr)")
        #expect(dir.contents() == ["ro.ccimg"])
    }

    @Test func unknownCompatibleFeatureIsIgnored() throws {
        let dir = try TempDir("compat")
        defer { dir.remove() }
        let path = Paths.damaged("unknown-compatible-feature.ccimg")
        try readEverything(path)
        try ImageFlattener.flatten(try ImageChain.open(path: path), to: try ImageOutput(path: dir.file("flat.ccimg")))
        #expect(ImageVerifier.verify(path: dir.file("flat.ccimg"), deep: true).isValid)
        #expect(try ImageDiff.compare(try ImageChain.open(path: path), try ImageChain.open(path: dir.file("flat.ccimg"))).different == false)
    }

    @Test func flattenKeepsUnknownOptionalSections() throws {
        let dir = try TempDir("flat-optional")
        defer { dir.remove() }
        try ImageFlattener.flatten(try ImageChain.open(path: Paths.golden("unknown-optional")), to: try ImageOutput(path: dir.file("flat.ccimg")))
        let flat = try ImageReader(path: dir.file("flat.ccimg"))
        let entry = try #require(flat.index.sections.first { $0.kind == FixtureSet.unknownOptionalKind })
        #expect(try flat.sectionPayload(entry) == Array("a section from format 1.9".utf8))
        #expect(BlockFlags(rawValue: UInt16(entry.flags)).contains(.critical) == false)
        let original = try ImageReader(path: Paths.golden("unknown-optional"))
        #expect(flat.index.sections.map(\.kind) == original.index.sections.map(\.kind))
    }

    /// The index entry of each section repeats its block's flags (§5.2, §7.1). An
    /// index that calls a critical section of an unknown kind optional must not let
    /// the image pass as sound: the front-to-back reader refuses it, so verify must
    /// report the disagreement.
    @Test func indexMustRepeatTheBlockCriticalFlag() throws {
        let dir = try TempDir("index-flags")
        defer { dir.remove() }
        var bytes = try readBytes(Paths.damaged("unknown-critical-section.ccimg"))
        let l = try #require(layout(of: bytes))
        let indexBlock = l.blocks.last!
        let payload = Array(bytes[(indexBlock.offset + ImageFormat.blockHeaderLength)..<indexBlock.end])
        var index = try Ccimg_V1_Index(serializedBytes: payload)
        let i = try #require(index.sections.firstIndex { $0.kind == FixtureSet.unknownCriticalKind })
        #expect(index.sections[i].flags & UInt32(BlockFlags.critical.rawValue) != 0)
        index.sections[i].flags = 0
        try ImageSurgery.replaceIndex(&bytes, indexOffset: indexBlock.offset, with: index)
        let path = dir.file("lying-index.ccimg")
        try writeBytes(bytes, to: path)

        // The stream reader goes by the block and refuses the image.
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let streamError = thrown {
            let stream = try ImageStreamReader(fd: fd)
            while true { if case .end = try stream.next() { break } }
        } as? ImageError
        #expect(streamError?.code == .unsupported)
        // The verifier must not call it sound.
        let report = ImageVerifier.verify(path: path, deep: false)
        #expect(!report.isValid, "verify accepts an index whose flags contradict a critical block of unknown kind \(FixtureSet.unknownCriticalKind)")
    }
}

/// §9 for format 1.1's open-files (incompatible bit 1, decision 0018).
extension CompatibilityTests {
    @Test func a10ImageIsReadAsOneObjectPerDescriptor() throws {
        let reader = try ImageReader(path: Paths.golden("full"))
        #expect(reader.header.minor == 0 && reader.header.features.incompatible & FeatureFlags.incompatibleOpenFiles == 0)
        let handles = try #require(try reader.section(.handles, as: Ccimg_V1_HandleTable.self)).handles
        let table = try reader.openFiles()
        #expect(table.objects.count == handles.count && table.descriptors.count == handles.count)
        for (i, h) in handles.enumerated() {
            #expect(table.descriptors(of: UInt32(i + 1)) == [.init(fd: h.fd, fdFlags: h.fdFlags, objectID: UInt32(i + 1))])
            #expect(table.object(UInt32(i + 1))?.path == h.path)
        }
        let eventfd = try #require(table.objects.first { $0.type == .eventfd })
        #expect(table.eventfds[eventfd.objectID]?.counter == 7)
        #expect(table.timerfds.count == 1 && table.signalfds.count == 1)
    }

    @Test func a11ImageIsRefusedByAReaderThatKnowsOnly10() throws {
        let reader = try ImageReader(path: GoldenFixtureTests.golden11("open-files"))
        // 1.0 knew incompatible 0x1 only: the open-files bit makes it refuse, never misread (§3.1 check 7).
        #expect(reader.header.features.incompatible & ~FeatureFlags.incompatibleParent != 0)
        #expect(FeatureFlags.knownIncompatible == FeatureFlags.incompatibleParent | FeatureFlags.incompatibleOpenFiles)
        // And a bit 1.1 does not know is still refused.
        var bytes = try readBytes(GoldenFixtureTests.golden11("open-files"))
        bytes[32] |= 0x20
        ImageSurgery.resealHeader(&bytes)
        let dir = try TempDir("open-files-unknown")
        defer { dir.remove() }
        try Data(bytes).write(to: URL(fileURLWithPath: dir.file("x.ccimg")))
        #expect((thrown { _ = try ImageReader(path: dir.file("x.ccimg")) } as? ImageError)?.code == .unsupported)
    }

    @Test func theWriterLabels10Images10And11Images11() throws {
        #expect(ImageFormat.minor(for: FeatureFlags()) == 0)
        #expect(ImageFormat.minor(for: FeatureFlags(incompatible: FeatureFlags.incompatibleParent)) == 0)
        #expect(ImageFormat.minor(for: FeatureFlags(incompatible: FeatureFlags.incompatibleOpenFiles)) == 1)
        #expect(ImageFormat.minor == 1)
    }

    @Test func diffComparesA10AndA11Image() throws {
        let a = try ImageChain.open(path: Paths.golden("full"))
        let b = try ImageChain.open(path: GoldenFixtureTests.golden11("open-files"))
        let result = try ImageDiff.compare(a, b)
        #expect(result.different)
        #expect(try ImageDiff.compare(b, b).different == false)
    }
}

extension CompatibilityTests {
    @Test func diffReportsChangesOfTheFdTable() throws {
        let dir = try TempDir("open-files-diff")
        defer { dir.remove() }
        var p = OpenFilesFixtures.process()
        var dup = Ccimg_V1_FdEntry()
        dup.fd = 30
        dup.objectID = p.handles.handles[2].objectID
        p.handles.fds.append(dup)
        try p.write(to: try ImageOutput(path: dir.file("b.ccimg")), options: OpenFilesFixtures.options(seed: 61))
        let a = try ImageChain.open(path: GoldenFixtureTests.golden11("open-files"))
        let result = try ImageDiff.compare(a, try ImageChain.open(path: dir.file("b.ccimg")))
        #expect(result.different)
        #expect(result.report["fds"]?["added"] == .array([.int(30)]))
        #expect(result.report["handles"]?["changed"] == .array([]))
        // The text output names the new descriptor too.
        let text = try CCImg.run(["diff", GoldenFixtureTests.golden11("open-files"), dir.file("b.ccimg")])
        #expect(text.status == 1)
        #expect(text.stdout.contains("fds added: 30"))
        // 1.0 images have no fd table, and no fds member.
        let full = try ImageChain.open(path: Paths.golden("full"))
        #expect(try ImageDiff.compare(full, full).report["fds"] == nil)
    }
}

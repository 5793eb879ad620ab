import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// §11 The committed damaged corpus and its manifest: each file's first problem
/// class, shallow and deep, through the library and through `ccimg verify`.
@Suite struct DamagedCorpusTests {
    static let cases: [FixtureSet.DamagedCase] = {
        let url = URL(fileURLWithPath: Paths.damagedDirectory + "/manifest.json")
        guard let data = try? Data(contentsOf: url),
              let cases = try? JSONDecoder().decode([FixtureSet.DamagedCase].self, from: data) else { return [] }
        return cases
    }()

    @Test func manifestListsEveryDamagedFile() throws {
        #expect(Self.cases.count == 36)
        let files = try FileManager.default.contentsOfDirectory(atPath: Paths.damagedDirectory)
            .filter { $0.hasSuffix(".ccimg") }.sorted()
        #expect(Self.cases.map(\.file).sorted() == files)
        let known = Set(ImageError.Code.allCases.map(\.rawValue) + ["ok"])
        for c in Self.cases {
            #expect(known.contains(c.verify), "\(c.file): \(c.verify)")
            #expect(known.contains(c.verifyDeep), "\(c.file): \(c.verifyDeep)")
        }
    }

    @Test(arguments: cases)
    func verifyReportsTheExpectedFirstProblem(_ c: FixtureSet.DamagedCase) {
        let path = Paths.damaged(c.file)
        let shallow = ImageVerifier.verify(path: path, deep: false)
        #expect(firstClass(shallow) == c.verify, "\(c.file) (\(c.description)): \(shallow.problems)")
        #expect(shallow.isValid == (c.verify == "ok"))
        let deep = ImageVerifier.verify(path: path, deep: true)
        #expect(firstClass(deep) == c.verifyDeep, "\(c.file) (\(c.description)) --deep: \(deep.problems)")
        let expectedStatus = c.verifyDeep == "ok" ? 0 : ImageError.Code(rawValue: c.verifyDeep)!.exitStatus
        #expect(deep.exitStatus == expectedStatus)
        // Every problem names the file (or its parent) it is in.
        for problem in shallow.problems + deep.problems {
            #expect(problem.path != nil, "\(c.file): \(problem)")
        }
    }

    @Test(arguments: cases.filter { $0.verify != "ok" })
    func readingDamagedImageThrowsInsteadOfCrashing(_ c: FixtureSet.DamagedCase) {
        let error = thrown { try readEverything(Paths.damaged(c.file)) }
        let imageError = error as? ImageError
        #expect(imageError != nil, "\(c.file) (\(c.description)): read without error")
        // The file exists and is readable: whatever is wrong is the image, never I/O.
        #expect(imageError?.code != .io, "\(c.file): \(String(describing: imageError))")
    }

    @Test(arguments: cases.filter { $0.verify == "ok" })
    func soundOrDeepOnlyDamagedImageOpens(_ c: FixtureSet.DamagedCase) throws {
        let chain = try ImageChain.open(path: Paths.damaged(c.file))
        #expect(!chain.top.memoryMap.isEmpty)
        if c.verifyDeep == "ok" {
            try readEverything(Paths.damaged(c.file))
        }
    }

    @Test func decompressionBombIsRefusedBeforeAllocating() throws {
        let reader = try ImageReader(path: Paths.damaged("decompression-bomb.ccimg"))
        #expect(imageErrorCode { _ = try reader.frame(0) } == .limitExceeded)
        // The other frames are intact.
        #expect(reader.index.frameOffsets.count > 1)
        _ = try reader.frame(1)
    }

    @Test func resealedPageDataReadsWithoutErrorButDeepVerifyLocatesIt() throws {
        let path = Paths.damaged("page-data-resealed.ccimg")
        let reader = try ImageReader(path: path)
        let page0 = try reader.storedPage(0)
        #expect(PageHash(of: page0) != reader.storedPageHash(0))
        let deep = ImageVerifier.verify(path: path, deep: true)
        #expect(deep.problems.count == 1, "\(deep.problems)")
        #expect(deep.problems.first?.location == "frame 0")
        #expect(deep.problems.first?.offset == reader.index.frameOffsets[0])
    }

    @Test func unknownSectionKindsAreRefusedOrSkippedAsMarked() throws {
        let critical = thrown { _ = try ImageReader(path: Paths.damaged("unknown-critical-section.ccimg")) } as? ImageError
        #expect(critical?.code == .unsupported)
        #expect(critical?.message.contains("\(FixtureSet.unknownCriticalKind)") == true, "\(String(describing: critical))")
        let optional = try ImageReader(path: Paths.damaged("unknown-optional-section.ccimg"))
        #expect(optional.index.sections.contains { $0.kind == FixtureSet.unknownOptionalKind })
    }

    @Test(arguments: cases)
    func ccimgVerifyDeepExitStatus(_ c: FixtureSet.DamagedCase) throws {
        let result = try CCImg.run(["verify", "--deep", Paths.damaged(c.file)])
        let expected = c.verifyDeep == "ok" ? 0 : ImageError.Code(rawValue: c.verifyDeep)!.exitStatus
        #expect(result.status == expected, "\(c.file): \(result.stderr)")
        if expected == 0 {
            #expect(result.stdout.contains(": OK ("), "\(result.stdout)")
            #expect(result.stderr.isEmpty)
        } else {
            #expect(result.stdout.contains(": FAILED ("), "\(result.stdout)")
            #expect(result.stderr.contains("ccimg: "))
            #expect(result.stderr.contains(c.verifyDeep), "\(c.file): \(result.stderr)")
        }
    }

    @Test(arguments: cases)
    func ccimgVerifyJSONAgreesWithTheManifest(_ c: FixtureSet.DamagedCase) throws {
        let result = try CCImg.run(["verify", "--json", Paths.damaged(c.file)])
        let json = try result.json()
        #expect(json["schema"] as? String == "ccimg.verify/1")
        #expect(json["valid"] as? Bool == (c.verify == "ok"))
        let problems = try #require(json["problems"] as? [[String: Any]])
        #expect((problems.first?["class"] as? String ?? "ok") == c.verify)
        let expected = c.verify == "ok" ? 0 : ImageError.Code(rawValue: c.verify)!.exitStatus
        #expect(json["exitStatus"] as? Int == Int(expected))
        #expect(result.status == expected)
    }
}

extension DamagedCorpusTests {
    /// Reads a file front to back with ``ImageStreamReader``; returns what it threw.
    static func streamRead(_ path: String) -> ImageError? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return ImageError(.io, "cannot open \(path)") }
        defer { close(fd) }
        return thrown {
            let stream = try ImageStreamReader(fd: fd)
            while true { if case .end = try stream.next() { return } }
        } as? ImageError
    }

    /// The front-to-back reader shares the verifier's block scanner: it fails with
    /// the class deep verify reports first. It does not follow parents (chain
    /// cases read as sound) and cannot check page hashes before handing frames out,
    /// nor the records inside the sections it hands out (the open-files cases:
    /// their blocks are sound, their fd tables are checked where they are decoded).
    @Test(arguments: cases.filter { $0.file != "page-data-resealed.ccimg" && !$0.file.hasPrefix("open-files-") })
    func streamReaderFailsWithTheVerifierClass(_ c: FixtureSet.DamagedCase) {
        let error = Self.streamRead(Paths.damaged(c.file))
        let expected = c.verifyDeep == "broken-chain" ? "ok" : c.verifyDeep
        #expect((error?.code.rawValue ?? "ok") == expected, "\(c.file): \(String(describing: error))")
    }
}

extension FixtureSet.DamagedCase: CustomTestStringConvertible {
    public var testDescription: String { file }
}

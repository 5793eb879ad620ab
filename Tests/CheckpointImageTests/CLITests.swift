import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures

/// The real `ccimg` binary, run as a user would.
@Suite struct CLITests {
    let full = Paths.golden("full")
    let markerArgument = "0x\(String(SyntheticProcess.markerAddress, radix: 16))+\(SyntheticProcess.marker.utf8.count)"

    @Test func executableIsFound() throws {
        let exe = try #require(CCImg.executable)
        #expect(exe.hasSuffix("/ccimg"))
        let r = try CCImg.run(["--version"])
        #expect(r.status == 0)
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == CheckpointImageVersion.current)
    }

    @Test func info() throws {
        let r = try CCImg.run(["info", full])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.isEmpty)
        let uuid = try ImageReader(path: full).header.uuid.description
        #expect(r.stdout.contains("image:     full.ccimg ("))
        #expect(r.stdout.contains("uuid:      \(uuid)"))
        #expect(r.stdout.contains("pid 4242 fixture"))
        #expect(r.stdout.contains("chain:     1 image\n"))

        let j = try CCImg.run(["info", "--json", Paths.golden("chain-3")]).json()
        #expect(j["schema"] as? String == "ccimg.info/1")
        #expect(j["file"] as? String == "chain-3.ccimg")
        #expect((j["chain"] as? [[String: Any]])?.count == 3)
        #expect((j["process"] as? [String: Any])?["pid"] as? Int == 4242)
        #expect((j["process"] as? [String: Any])?["threads"] as? Int == 3)
    }

    @Test func dumpJSONIsTheGoldenDump() throws {
        let r = try CCImg.run(["dump", "--json", full])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try r.json()
        #expect(j["schema"] as? String == "ccimg.dump/1")
        #expect(j["file"] as? String == "full.ccimg")
        let process = try #require(j["process"] as? [String: Any])
        #expect(process["pid"] as? Int == 4242)
        #expect(process["cmdline"] as? [String] == ["/usr/local/bin/fixture", "--work", "42"])
        let header = try #require(j["header"] as? [String: Any])
        #expect(header["format"] as? String == "1.0")
        #expect(header["pageSize"] as? Int == 4096)
        #expect(header["parent"] is NSNull)
        // Byte for byte the committed golden dump.
        #expect(r.stdout == (try String(contentsOfFile: "\(Paths.goldenDirectory)/full.dump.json", encoding: .utf8)))
    }

    @Test func dumpOneSection() throws {
        let text = try CCImg.run(["dump", "--section", "threads", full])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.hasPrefix("file: full.ccimg\nthreads:\n"), "\(text.stdout.prefix(200))")
        for needle in ["4242", "4243", "4244", "fixture", "reader", "stopped", "RUN_STATE_IN_SYSCALL"] {
            #expect(text.stdout.contains(needle), "\(needle)")
        }
        #expect(!text.stdout.contains("cmdline"))
        #expect(!text.stdout.contains("handles:"))

        let j = try CCImg.run(["dump", "--json", "--section", "threads", full]).json()
        #expect(Set(j.keys) == ["schema", "file", "threads"])
        let threads = try #require((j["threads"] as? [String: Any])?["threads"] as? [[String: Any]])
        #expect(threads.map { $0["tid"] as? Int } == [4242, 4243, 4244])
        #expect(threads.map { $0["name"] as? String } == ["fixture", "reader", "stopped"])

        let unknown = try CCImg.run(["dump", "--section", "nonsense", full])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("unknown section 'nonsense'"), "\(unknown.stderr)")
    }

    @Test func dumpMemoryShowsTheMarker() throws {
        let r = try CCImg.run(["dump", "--memory", "0x555555558010+40", full])
        #expect(r.status == 0, "\(r.stderr)")
        // The ASCII column, line after line, spells the marker.
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.first?.hasPrefix("0000555555558010  43 43 2d 46") == true, "\(r.stdout)")
        let ascii = lines.compactMap { line -> String? in
            guard let open = line.firstIndex(of: "|"), let close = line.lastIndex(of: "|"), open < close else { return nil }
            return String(line[line.index(after: open)..<close])
        }.joined()
        #expect(ascii == SyntheticProcess.marker)

        let j = try CCImg.run(["dump", "--json", "--memory", markerArgument, full]).json()
        #expect(j["schema"] as? String == "ccimg.memory/1")
        #expect(j["address"] as? String == "0x555555558010")
        #expect(j["length"] as? Int == 40)
        let hex = try #require(j["hex"] as? String)
        let bytes = stride(from: 0, to: hex.count, by: 2).map { i -> UInt8 in
            let start = hex.index(hex.startIndex, offsetBy: i)
            return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)!
        }
        #expect(bytes == Array(SyntheticProcess.marker.utf8))

        // Through a chain: chain-3 inherits the .data page from chain-1.
        let chained = try CCImg.run(["dump", "--json", "--memory", markerArgument, Paths.golden("chain-3")]).json()
        #expect(chained["hex"] as? String == hex)

        // Unmapped memory is a structural error (exit 14).
        let unmapped = try CCImg.run(["dump", "--memory", "0x1000+16", full])
        #expect(unmapped.status == 14, "\(unmapped.stderr)")
        #expect(unmapped.stderr.hasPrefix("ccimg: error: "))
        #expect(unmapped.stderr.contains("0x1000"))
    }

    @Test func extractWritesExactlyTheMarker() throws {
        let dir = try TempDir("extract")
        defer { dir.remove() }
        let out = dir.file("marker.bin")
        let r = try CCImg.run(["extract", full, "--memory", markerArgument, "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try readBytes(out) == Array(SyntheticProcess.marker.utf8))
        #expect(r.stdout == "\(out): 40 bytes from 0x555555558010\n")
        #expect(dir.contents() == ["marker.bin"])

        // A whole page that was never populated extracts as zeros.
        let vvar = "0x7ffff7fbb000+4096"
        let z = try CCImg.run(["extract", full, "--memory", vvar, "-o", dir.file("vvar.bin")])
        #expect(z.status == 0, "\(z.stderr)")
        #expect(try readBytes(dir.file("vvar.bin")) == [UInt8](repeating: 0, count: 4096))

        // Extract needs a length.
        let noLength = try CCImg.run(["extract", full, "--memory", "0x555555558010", "-o", dir.file("x.bin")])
        #expect(noLength.status == 64, "\(noLength.stderr)")
        #expect(!fileExists(dir.file("x.bin")))
    }

    @Test func statJSON() throws {
        let r = try CCImg.run(["stat", "--json", full])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try r.json()
        #expect(j["schema"] as? String == "ccimg.stat/1")
        #expect(j["file"] as? String == "full.ccimg")
        #expect(j["fileBytes"] as? Int == (try readBytes(full).count))
        let reader = try ImageReader(path: full)
        #expect((j["frames"] as? [String: Any])?["count"] as? Int == reader.index.frameOffsets.count)
        let pages = try #require(j["pages"] as? [String: Any])
        let counts = ImageInspector.stateCounts(reader)
        for state in PageState.allCases {
            #expect(pages[state.description] as? Int == Int(counts[state] ?? 0), "\(state)")
        }
        // The same document the library builds.
        #expect(r.stdout == (try ImageInspector.stat(try ImageChain.open(path: full)).rendered()))
        let text = try CCImg.run(["stat", full])
        #expect(text.status == 0)
        #expect(text.stdout.contains("compressionRatio: "))
    }

    @Test func diffExitStatuses() throws {
        let same = try CCImg.run(["diff", Paths.golden("chain-3"), Paths.golden("chain-3-flat")])
        #expect(same.status == 0, "\(same.stderr)")
        #expect(same.stdout == "chain-3.ccimg and chain-3-flat.ccimg have the same content\n")

        let differ = try CCImg.run(["diff", Paths.golden("chain-1"), Paths.golden("chain-3")])
        #expect(differ.status == 1, "\(differ.stderr)")
        #expect(differ.stdout.contains("pages changed: "))

        let j = try CCImg.run(["diff", "--json", Paths.golden("chain-1"), Paths.golden("chain-3")])
        #expect(j.status == 1)
        let json = try j.json()
        #expect(json["schema"] as? String == "ccimg.diff/1")
        #expect(json["same"] as? Bool == false)
        let memory = try #require(json["memory"] as? [String: Any])
        // Heap pages 2, 3 and 20 and stack page 3 changed between version 1 and 3 of the synthetic process.
        #expect(memory["changedPages"] as? Int == 4)
        let perVma = try #require(memory["pages"] as? [[String: Any]])
        #expect(perVma.compactMap { $0["changedPages"] as? Int }.reduce(0, +) == 4)
        #expect(perVma.compactMap { $0["role"] as? String }.sorted() == ["heap", "main-stack"])
        #expect((memory["added"] as? [Any])?.count == 2)
        #expect((memory["removed"] as? [Any])?.count == 1)
        // The library agrees.
        let library = try ImageDiff.compare(try ImageChain.open(path: Paths.golden("chain-1")), try ImageChain.open(path: Paths.golden("chain-3")))
        #expect(j.stdout == library.report.rendered())
    }

    @Test func diffWithAMissingFileIsTrouble() throws {
        let dir = try TempDir("diff-missing")
        defer { dir.remove() }
        let r = try CCImg.run(["diff", full, dir.file("nope.ccimg")])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 2 && lines[1].isEmpty, "one line: \(r.stderr)")
        #expect(r.stderr.hasPrefix("ccimg: error: \(dir.file("nope.ccimg"))"), "\(r.stderr)")
        #expect(r.stderr.contains("io: no such file"))
        // Damage is trouble for diff too (2), not an image-class status.
        let damaged = try CCImg.run(["diff", full, Paths.damaged("flip-index.ccimg")])
        #expect(damaged.status == 2, "\(damaged.stderr)")
    }

    @Test func verifyStatuses() throws {
        let dir = try TempDir("verify")
        defer { dir.remove() }
        let missing = try CCImg.run(["verify", dir.file("nope.ccimg")])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("no such file"), "\(missing.stderr)")

        // A directory is not an image file: trouble reading it (2), not a class of damage.
        let directory = try CCImg.run(["verify", dir.path])
        #expect(directory.status == 2, "\(directory.stderr)")

        let ok = try CCImg.run(["verify", "--deep", full])
        #expect(ok.status == 0, "\(ok.stderr)")
        let reader = try ImageReader(path: full)
        #expect(ok.stdout == "\(full): OK (10 sections, \(reader.index.frameOffsets.count) frames, \(reader.index.storedPages) stored pages, \(reader.index.storedPages) pages hashed)\n")

        let chain = try CCImg.run(["verify", Paths.golden("chain-3")])
        #expect(chain.status == 0)
        #expect(chain.stdout.hasSuffix(", chain of 3 images)\n"), "\(chain.stdout)")
    }

    @Test func verifyFromStandardInput() throws {
        let r = try CCImg.run(["verify", "--deep", "-"], stdinFile: full)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("-: OK ("), "\(r.stdout)")
        let bad = try CCImg.run(["verify", "-"], stdinFile: Paths.damaged("truncated-in-frame.ccimg"))
        #expect(bad.status == 10, "\(bad.stderr)")
        let j = try CCImg.run(["verify", "--json", "-"], stdinFile: Paths.damaged("flip-frame-payload.ccimg"))
        #expect(j.status == 13)
        #expect(try j.json()["file"] as? String == "-")
    }

    @Test func readCommandsTakeStandardInput() throws {
        let info = try CCImg.run(["info", "--json", "-"], stdinFile: full)
        #expect(info.status == 0, "\(info.stderr)")
        #expect((try info.json()["process"] as? [String: Any])?["pid"] as? Int == 4242)
        let dump = try CCImg.run(["dump", "--memory", markerArgument, "--json", "-"], stdinFile: full)
        #expect(dump.status == 0, "\(dump.stderr)")
        // An incremental image from standard input finds its parents only through --store.
        let chained = try CCImg.run(["info", "--json", "--store", Paths.goldenDirectory, "-"], stdinFile: Paths.golden("chain-3"))
        #expect(chained.status == 0, "\(chained.stderr)")
        #expect((try chained.json()["chain"] as? [Any])?.count == 3)
    }

    @Test func flattenWritesAVerifiableStandaloneImage() throws {
        let dir = try TempDir("flatten")
        defer { dir.remove() }
        let out = dir.file("flat.ccimg")
        let r = try CCImg.run(["flatten", Paths.golden("chain-3"), "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("\(out): "))
        #expect(r.stdout.hasSuffix("flattened from 3 images\n"), "\(r.stdout)")
        #expect(dir.contents() == ["flat.ccimg"])
        let v = try CCImg.run(["verify", "--deep", out])
        #expect(v.status == 0, "\(v.stderr)")
        let flat = try ImageChain.open(path: out)
        #expect(flat.images.count == 1)
        #expect(!flat.top.header.hasParent)
        let d = try CCImg.run(["diff", Paths.golden("chain-3"), out])
        #expect(d.status == 0, "\(d.stdout)")
        // Same content as the committed flat image (its UUID and file differ).
        #expect(try ImageDiff.compare(flat, try ImageChain.open(path: Paths.golden("chain-3-flat"))).different == false)

        // Into a directory that does not exist: trouble, nothing written.
        let bad = try CCImg.run(["flatten", Paths.golden("chain-3"), "-o", dir.file("no/such/flat.ccimg")])
        #expect(bad.status == 2, "\(bad.stderr)")
    }

    @Test func badUsageExitsNonZeroWithAMessage() throws {
        let r = try CCImg.run(["dump", "--memory", "1234", full])
        #expect(r.status == 64)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.contains("must be hex with 0x"), "\(r.stderr)")
        let badLength = try CCImg.run(["dump", "--memory", "0x1000+ten", full])
        #expect(badLength.status == 64)
        #expect(badLength.stderr.contains("length 'ten'"), "\(badLength.stderr)")
        let noCommand = try CCImg.run(["frobnicate"])
        #expect(noCommand.status == 64)
        #expect(!noCommand.stderr.isEmpty)
        let noArgument = try CCImg.run(["verify"])
        #expect(noArgument.status == 64)
        #expect(noArgument.stderr.contains("Missing expected argument"), "\(noArgument.stderr)")
    }

    @Test func damagedImageErrorsCarryTheirClassStatus() throws {
        // Commands other than diff exit with the class status (§11) and one line on stderr.
        let r = try CCImg.run(["info", Paths.damaged("flip-index.ccimg")])
        #expect(r.status == 13)
        #expect(r.stderr.hasPrefix("ccimg: error: "))
        #expect(r.stderr.contains("checksum-mismatch"))
        #expect(r.stderr.filter { $0 == "\n" }.count == 1)
        let cut = try CCImg.run(["dump", Paths.damaged("truncated-in-header.ccimg")])
        #expect(cut.status == 10)
        let unsupported = try CCImg.run(["stat", Paths.damaged("version-2.0.ccimg")])
        #expect(unsupported.status == 12)
        let chain = try CCImg.run(["info", Paths.damaged("missing-parent.ccimg")])
        #expect(chain.status == 15)
    }
}

import CheckpointCapture
import CheckpointImage
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `ccpm track`: one resident ccpm takes a full tracked image, then increments on it
/// (issue #3: incremental images; the resident mode of DMTCP's interval checkpoints).
@Suite(.enabled(if: Gate.tracing, "needs root, or kernel.yama.ptrace_scope 0, to trace processes that are not ours"))
struct TrackTests {
    let ccpm = CaptureSupport.tool("ccpm")

    @Test("ccpm track writes a full image, then increments of the written pages, on each line of input; SIGTERM ends it with the process running")
    func residentIncrements() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("dirty"), ["64"], in: dir)
        let buffer = UInt64(target.ready[2].dropFirst(2), radix: 16)!
        try #require(mkfifo("\(dir)/control", 0o600) == 0)
        let images = "\(dir)/images"
        let track = try CaptureSupport.spawn("/bin/sh", ["-c", "exec '\(ccpm)' track \(target.pid) -o '\(images)' --on-input < '\(dir)/control'"],
                                             stdout: nil, stderr: "\(dir)/track.err")
        let control = open("\(dir)/control", O_WRONLY | O_CLOEXEC)
        try #require(control >= 0)
        defer { close(control) }
        func image(_ n: Int) -> String { "\(images)/image-000\(n).ccimg" }
        #expect(CaptureSupport.waitUntil(seconds: 20) { FileManager.default.fileExists(atPath: image(0)) })
        for round in 1...2 {
            kill(target.pid, SIGUSR1)
            try #require(target.waitFor("TOUCHED \(round)"))
            #expect(write(control, "now\n", 4) == 4)
            #expect(CaptureSupport.waitUntil(seconds: 20) { FileManager.default.fileExists(atPath: image(round)) })
        }
        kill(track, SIGTERM)
        let ended = try CaptureSupport.wait(track)
        #expect(ended.status == 0, "\(ended.stderr)")
        let log = (try? String(contentsOfFile: "\(dir)/track.err", encoding: .utf8)) ?? ""
        let lines = log.split(separator: "\n")
        #expect(lines.count == 3, "\(log)")
        #expect(lines.enumerated().allSatisfy { $0.element.contains("-> \(image($0.offset)):") }, "each line names its image: \(log)")
        #expect(lines.first?.contains("tracking full") == true && lines.dropFirst().allSatisfy { $0.contains("tracking uffd-wp") }, "\(log)")

        // Each increment is a chain on the one before, valid, and holds the touched 1%.
        let chain = try ImageChain.open(path: image(2))
        #expect(chain.images.count == 3)
        #expect(ImageVerifier.verify(path: image(2), deep: true).isValid)
        let diff = try ImageDiff.compare(try ImageChain.open(path: image(1)), chain)
        guard case .array(let pages)? = diff.report["memory"]?["pages"],
              let entry = pages.first(where: { $0["start"] == .hex(buffer) }) else {
            Issue.record("diff does not name the buffer")
            return
        }
        #expect(entry["changedPages"] == .count((0..<16384).filter { $0 % 100 == 0 }.count))

        // The process runs on, untraced; a one-shot checkpoint goes on from the last image.
        #expect(target.state != nil && target.state != "t" && target.state != "T")
        kill(target.pid, SIGUSR1)
        try #require(target.waitFor("TOUCHED 3"))
        let next = try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", "\(dir)/next.ccimg", "--parent", image(2), "--track"])
        #expect(next.status == 0 && next.stderr.contains("tracking uffd-wp"), "\(next.stderr)")

        // A second session may not take the first one's image names.
        let again = try CaptureSupport.run(ccpm, ["track", "\(target.pid)", "-o", images, "--every", "1"])
        #expect(again.status == 5 && again.stderr.contains("already holds images"), "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: image(3)))
    }
}

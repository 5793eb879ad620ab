import CheckpointImage
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Open file descriptions keep their identity (issue #13, zdtm's dup tests): a
/// file and an eventfd, each with dups, are captured once each (kcmp) into a 1.1
/// image and come back after checkpoint, kill and restore still shared.
@Suite(.serialized, .enabled(if: Gate.tracing, "needs root, or kernel.yama.ptrace_scope 0, to trace processes that are not ours"))
struct SharedDescriptionTests {
    let ccpm = CaptureSupport.tool("ccpm")
    let ccimg = CaptureSupport.tool("ccimg")

    @Test("dup'ed descriptors of a file and an eventfd come back sharing one open file description each")
    func dupsComeBackShared() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let program = try CaptureSupport.program("shared-fds")
        let output = "\(dir)/out.txt"
        let pid = try CaptureSupport.spawn(program, [dir], stdout: output, stderr: output)
        func text() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        guard CaptureSupport.waitUntil(seconds: 20, { text().contains("READY") }) else {
            _ = Glibc.kill(pid, SIGKILL); _ = try? CaptureSupport.wait(pid)
            Issue.record("no READY: \(text())"); return
        }
        let image = "\(dir)/shared.ccimg"
        let checkpoint = try CaptureSupport.run(ccpm, ["checkpoint", String(pid), "-o", image])
        _ = try CaptureSupport.wait(pid)     // killed by the checkpoint: its PID is free again
        try #require(checkpoint.status == 0, "ccpm checkpoint: \(checkpoint.stderr)")

        // The image: format 1.1 with open-files; file and eventfd are one object each.
        let reader = try ImageReader(path: image)
        #expect(reader.header.minor == 1)
        #expect(reader.header.features.incompatible & FeatureFlags.incompatibleOpenFiles != 0)
        let table = try reader.openFiles()
        let file = try #require(table.objects.first { $0.path == "\(dir)/shared.txt" })
        #expect(table.descriptors(of: file.objectID).map(\.fd) == [3, 20, 22])
        #expect(table.descriptors(of: file.objectID).map(\.fdFlags) == [0, 0, 1])
        let eventfd = try #require(table.objects.first { $0.type == .eventfd })
        #expect(table.descriptors(of: eventfd.objectID).map(\.fd) == [4, 21])
        #expect(table.eventfds[eventfd.objectID]?.counter == 5)
        #expect(table.objects.filter { $0.path == "\(dir)/shared.txt" }.count == 1)
        // Four eventfds on one anonymous inode: kcmp tells them apart, and finds fd 23's.
        let eventfds = table.objects.filter { $0.type == .eventfd }
        #expect(eventfds.count == 4)
        let second = try #require(table.descriptors.first { $0.fd == 23 })
        #expect(table.descriptors(of: second.objectID).count == 2)
        #expect(table.eventfds[second.objectID]?.counter == 2)
        let verify = try CaptureSupport.run(ccimg, ["verify", image])
        #expect(verify.status == 0, "ccimg verify: \(verify.stdout) \(verify.stderr)")

        let detached = try CaptureSupport.run(ccpm, ["restore", "--detach", image])
        try #require(detached.status == 0, "ccpm restore --detach: \(detached.stderr)")
        let restored = try #require(Int32(detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(restored == pid)
        _ = Glibc.kill(restored, SIGUSR2)
        let finished = CaptureSupport.waitUntil(seconds: 20) { text().contains("PASS") || text().contains("FAIL") }
        if !finished { _ = Glibc.kill(restored, SIGKILL) }
        #expect(finished && text().contains("PASS"), "\(text())")
    }
}

import CheckpointCapture
import CheckpointImage
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Every failure leaves the target running as it was and nothing at the
/// output path, with a one-line error and its own exit status (issue #3).
@Suite(.serialized, .enabled(if: Gate.tracing, "needs root, or kernel.yama.ptrace_scope 0, to trace processes that are not ours"))
struct FailureTests {
    let ccpm = CaptureSupport.tool("ccpm")

    func expectUnharmed(_ target: CaptureSupport.Target, _ output: String) {
        usleep(30_000)
        let state = target.state
        #expect(state != nil && state != "t" && state != "T", "target must run on, state \(String(describing: state))")
        #expect(!FileManager.default.fileExists(atPath: output), "nothing at \(output)")
        #expect(!(try? String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8))!.contains("TracerPid:\t\(getpid())"))
    }

    @Test func badPID() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CaptureSupport.run(ccpm, ["checkpoint", "999999", "-o", "\(dir)/x.ccimg"])
        #expect(r.status == 3)
        #expect(r.stderr.contains("no such process") && r.stderr.split(separator: "\n").count == 1)
        #expect(CaptureSupport.files(in: dir).isEmpty)
    }

    @Test func unwritablePath() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("state"), ["400", "\(dir)/f.txt"], in: dir)
        let output = "\(dir)/no/such/dir/x.ccimg"
        let r = try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", output])
        #expect(r.status == 5, "\(r.stderr)")
        expectUnharmed(target, output)
    }

    @Test func damagedParent() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("state"), ["400", "\(dir)/f.txt"], in: dir)
        let parent = "\(dir)/parent.ccimg"
        #expect(try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", parent, "--leave-running"]).status == 0)
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: parent)))
        bytes[bytes.count / 2] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: parent))
        let output = "\(dir)/child.ccimg"
        let r = try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", output, "--parent", parent, "--leave-running"])
        #expect(r.status == 6, "\(r.stderr)")
        expectUnharmed(target, output)
    }

    /// Run as root, so that the unprivileged user below is refused.
    @Test(.enabled(if: Gate.root, "needs root: the target must belong to another user than ccpm"),
          .enabled(if: Gate.setpriv, "needs /usr/bin/setpriv"))
    func noPermission() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o777)
        let target = try CaptureSupport.Target(try CaptureSupport.program("state"), ["400", "\(dir)/f.txt"], in: dir)
        let output = "\(dir)/x.ccimg"
        // An unprivileged user may not trace root's process.
        let r = try CaptureSupport.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", ccpm, "checkpoint", "\(target.pid)", "-o", output])
        #expect(r.status == 4, "\(r.stderr)")
        expectUnharmed(target, output)
    }

    @Test(.enabled(if: Gate.root, "needs root to mount a small tmpfs"))
    func fullDisk() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer {
            _ = try? CaptureSupport.run("/bin/umount", ["\(dir)/small"])
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: "\(dir)/small", withIntermediateDirectories: true)
        let mount = try CaptureSupport.run("/bin/mount", ["-t", "tmpfs", "-o", "size=16k", "tmpfs", "\(dir)/small"])
        try #require(mount.status == 0, "mount -t tmpfs: \(mount.stderr)")
        let target = try CaptureSupport.Target(try CaptureSupport.program("state"), ["400", "\(dir)/f.txt"], in: dir)
        let output = "\(dir)/small/x.ccimg"
        let r = try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", output])
        #expect(r.status == 5, "\(r.stderr)")
        #expect(r.stderr.contains("disk is full"))
        expectUnharmed(target, output)
        #expect(CaptureSupport.files(in: "\(dir)/small").isEmpty, "no temporary file left either")
    }

    /// kill -9 while system calls are being injected: each thread is parked on a frame that
    /// brings it back to its own registers, signal mask and interrupted system call — on its
    /// own stack, or (CCPM_PARKING=page) in a parking page.
    @Test(arguments: [(1, "stack"), (10, "stack"), (12, "stack"), (14, "stack"), (16, "stack"), (19, "stack"),
                      (1, "page"), (12, "page"), (19, "page")])
    func killNineWhileThreadsAreParked(afterCall: Int, parking: String) throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let program = try CaptureSupport.program("state")
        // 30 ticks (1.5 s): on a loaded machine ccpm may take most of a second to reach its
        // N-th call, and the target must still be running when the test looks at it.
        let reference = try CaptureSupport.Target(program, ["30", "\(dir)/ref.txt"], in: dir)
        let target = try CaptureSupport.Target(program, ["30", "\(dir)/file.txt"], in: dir)
        let output = "\(dir)/parked.ccimg"
        let p = try CaptureSupport.spawn("/usr/bin/env", ["CCPM_FAULT=stop-parked:\(afterCall)", "CCPM_PARKING=\(parking)",
                                                           ccpm, "checkpoint", "\(target.pid)", "-o", output],
                                         stdout: nil, stderr: nil)
        let stoppedThere = CaptureSupport.waitUntil(seconds: 10) {
            let stat = (try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8)) ?? ""
            return stat.split(separator: ")").last?.dropFirst().first == "T"
        }
        #expect(stoppedThere, "ccpm stops itself after parked call \(afterCall)")
        kill(p, SIGKILL)
        _ = try CaptureSupport.wait(p)
        expectUnharmed(target, output)
        // Every thread went back to what it was doing: the run ends as an undisturbed one does.
        #expect(target.waitFor("DONE") && reference.waitFor("DONE"))
        let strip = { (text: String) in text.split(separator: "\n").filter { !$0.hasPrefix("READY") }.joined(separator: "\n") }
        #expect(strip(target.output) == strip(reference.output))
    }

    /// An increment that dies after it read the written pages (which re-arms the kernel's
    /// tracking) must not make the next increment on the same parent miss them: the
    /// tracking note stops vouching for the parent before the pages are read.
    @Test func incrementKilledAfterReadingWrittenPages() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("dirty"), ["64"], in: dir)
        let full = try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", "\(dir)/full.ccimg", "--track"])
        try #require(full.status == 0, "\(full.stderr)")
        kill(target.pid, SIGUSR1)
        try #require(target.waitFor("TOUCHED 1"))
        // Killed at its first injected call, which now comes after the pages are read.
        let p = try CaptureSupport.spawn("/usr/bin/env", ["CCPM_FAULT=stop-parked:1", ccpm, "checkpoint", "\(target.pid)", "-o", "\(dir)/lost.ccimg",
                                                           "--parent", "\(dir)/full.ccimg", "--track"], stdout: nil, stderr: nil)
        #expect(CaptureSupport.waitUntil(seconds: 10) {
            ((try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8)) ?? "").split(separator: ")").last?.dropFirst().first == "T"
        })
        kill(p, SIGKILL)
        _ = try CaptureSupport.wait(p)
        expectUnharmed(target, "\(dir)/lost.ccimg")
        let next = try CaptureSupport.run(ccpm, ["checkpoint", "\(target.pid)", "-o", "\(dir)/inc.ccimg", "--parent", "\(dir)/full.ccimg", "--track"])
        try #require(next.status == 0, "ccpm: \(next.stderr)")
        #expect(next.stderr.contains("tracking hash-compare"), "\(next.stderr)")
        let diff = try ImageDiff.compare(try ImageChain.open(path: "\(dir)/full.ccimg"), try ImageChain.open(path: "\(dir)/inc.ccimg"))
        guard case .array(let pages)? = diff.report["memory"]?["pages"] else {
            Issue.record("no memory diff")
            return
        }
        let changed = pages.compactMap { entry -> Int64? in if case .int(let n)? = entry["changedPages"] { n } else { nil } }.reduce(0, +)
        #expect(changed >= 16384 / 100, "the pages written before the lost increment are in the next: \(changed)")
    }

    @Test func killNineOfCcpmMidCapture() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("dirty"), ["512"], in: dir)
        for delay in [20_000, 60_000, 150_000] as [useconds_t] {
            let output = "\(dir)/k\(delay).ccimg"
            let p = try CaptureSupport.spawn(ccpm, ["checkpoint", "\(target.pid)", "-o", output], stdout: nil, stderr: nil)
            usleep(delay)
            kill(p, SIGKILL)
            _ = try CaptureSupport.wait(p)
            expectUnharmed(target, output)
        }
        kill(target.pid, SIGUSR1)
        #expect(target.waitFor("TOUCHED 1"), "the target still works")
    }
}

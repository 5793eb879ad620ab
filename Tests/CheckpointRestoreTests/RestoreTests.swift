import CheckpointImage
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// End-to-end restores (issue #4): run a workload undisturbed and record its
/// output; run it again, checkpoint it midway (which kills it), restore it,
/// and require the same output.
@Suite(.serialized, .enabled(if: Gate.root, "restoring needs root (clone3 with set_tid)"))
struct RestoreTests {
    let ccpm = CaptureSupport.tool("ccpm")
    let ccimg = CaptureSupport.tool("ccimg")

    /// A workload started as our child (so we reap it and its PID is free again),
    /// its standard output and error going to `output`.
    struct Workload {
        let pid: Int32
        let output: String
        var text: String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }

        init(_ program: String, _ arguments: [String], output: String) throws {
            self.output = output
            pid = try CaptureSupport.spawn(program, arguments, stdout: output, stderr: output)
        }

        func waitFor(_ needle: String, seconds: Double = 20) -> Bool {
            CaptureSupport.waitUntil(seconds: seconds) { text.contains(needle) }
        }

        /// Reaps the killed workload, so that its PID is free for the restore.
        func reap() throws { _ = try CaptureSupport.wait(pid) }
    }

    /// A python3 computation whose output depends only on its steps; time.monotonic()
    /// and time.time() go through the vdso (clock_gettime), which glibc resolved at start.
    static let pythonScript = """
        import time
        print("READY", flush=True)
        total = 0
        for step in range(1, 31):
            start = time.monotonic()
            total += sum(i * i % 7919 for i in range(step * 2500))
            assert time.monotonic() >= start and time.time() > 1.6e9
            print("step", step, total, flush=True)
            time.sleep(0.03)
        print("DONE", total, flush=True)
        """

    /// The lines of an output with the READY line (pid, addresses) dropped.
    static func body(_ text: String) -> [String] { text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("READY") } }

    /// Runs `program` undisturbed, then again until its output holds `mark`, where it is
    /// checkpointed (which ends it) into `image` and reaped. Returns the undisturbed
    /// output's lines (READY left out) and the checkpointed workload.
    func midway(_ program: String, _ arguments: [String], at mark: String, image: String, in dir: String) throws -> (undisturbed: [String], workload: Workload) {
        let undisturbed = try CaptureSupport.run(program, arguments)
        #expect(undisturbed.status == 0)
        let workload = try Workload(program, arguments, output: "\(dir)/out.txt")
        try #require(workload.waitFor(mark))
        try checkpoint(workload.pid, image)
        try workload.reap()
        return (Self.body(undisturbed.stdout), workload)
    }

    /// `ccpm restore IMAGE` to the end; requires exit 0 and the undisturbed run's
    /// lines in the workload's output file. Returns what ccpm printed on stderr.
    @discardableResult
    func restoreAndCompare(_ image: String, _ workload: Workload, _ undisturbed: [String]) throws -> String {
        let restored = try CaptureSupport.run(ccpm, ["restore", image])
        #expect(restored.status == 0, "ccpm restore \(image): \(restored.stderr)")
        #expect(Self.body(workload.text) == undisturbed, "\(workload.text)")
        return restored.stderr
    }

    /// `ccpm restore --detach` (and `extra` options): the restored process's PID.
    func restoreDetached(_ image: String, _ extra: [String] = []) throws -> Int32 {
        let detached = try CaptureSupport.run(ccpm, ["restore", "--detach"] + extra + [image])
        try #require(detached.status == 0, "ccpm restore --detach: \(detached.stderr)")
        return try #require(Int32(detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    func checkpoint(_ pid: Int32, _ image: String, _ extra: [String] = []) throws {
        let r = try CaptureSupport.run(ccpm, ["checkpoint", String(pid), "-o", image] + extra)
        try #require(r.status == 0, "ccpm checkpoint: \(r.stderr)")
    }

    @Test("a multithreaded process with files, pipes, eventfd, timerfd, inotify and a pending signal finishes as if undisturbed")
    func stateProgramContinues() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (undisturbed, workload) = try midway(try CaptureSupport.program("state"), ["16", "\(dir)/file.txt"],
                                                 at: "tick 4", image: "\(dir)/s.ccimg", in: dir)
        let log = try restoreAndCompare("\(dir)/s.ccimg", workload, undisturbed)
        #expect(log.contains("restored pid \(workload.pid), 5 threads"), "\(log)")
        #expect(workload.text.contains("offset=1234 usr2-pending=1 epoll=1/c0ffee memfd=contents signalfd=12"), "\(workload.text)")
    }

    @Test("threads contending on a mutex and a condition variable, checkpointed while they contend")
    func contendingThreads() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (undisturbed, workload) = try midway(try CaptureSupport.program("contend"), ["20"],
                                                 at: "round 6 ", image: "\(dir)/c.ccimg", in: dir)
        try restoreAndCompare("\(dir)/c.ccimg", workload, undisturbed)
        #expect(workload.text.hasSuffix("DONE rounds=20\n"))
    }

    @Test("python3 running a computation", .enabled(if: Gate.python3, "needs /usr/bin/python3"))
    func python() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.pythonScript.write(toFile: "\(dir)/compute.py", atomically: true, encoding: .utf8)
        let (undisturbed, workload) = try midway("/usr/bin/python3", ["\(dir)/compute.py"],
                                                 at: "step 10 ", image: "\(dir)/p.ccimg", in: dir)
        try restoreAndCompare("\(dir)/p.ccimg", workload, undisturbed)
    }

    /// A process that does nothing but write is caught at one instant: its memory, registers
    /// and file offset agree, so the restored run neither repeats a line nor skips one. (A
    /// thread let run for a moment while ccpm injects its calls, after its memory was read,
    /// shows here as a repeated line.)
    @Test("a process writing without pause: after restore its output neither repeats nor skips a line", .enabled(if: Gate.python3, "needs /usr/bin/python3"))
    func writerCaughtAtOneInstant() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = "print('READY', flush=True)\nfor i in range(1, 300001): print(i, flush=True)\nprint('DONE', flush=True)\n"
        try script.write(toFile: "\(dir)/lines.py", atomically: true, encoding: .utf8)
        let expected = (1...300_000).map(String.init) + ["DONE"]
        for round in 1...3 {
            let workload = try Workload("/usr/bin/python3", ["\(dir)/lines.py"], output: "\(dir)/out-\(round).txt")
            try #require(workload.waitFor("\n2000\n"))
            try checkpoint(workload.pid, "\(dir)/w.ccimg")
            try workload.reap()
            try restoreAndCompare("\(dir)/w.ccimg", workload, expected)
        }
    }

    @Test("a chain of three incremental images restores from the last; its flattened form too, and twice in separate PID namespaces")
    func chainFlattenedAndNamespaces() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try CaptureSupport.program("state")
        let undisturbed = try CaptureSupport.run(state, ["30", "\(dir)/file-a.txt"])
        let workload = try Workload(state, ["30", "\(dir)/file.txt"], output: "\(dir)/out.txt")
        try #require(workload.waitFor("tick 2"))
        try checkpoint(workload.pid, "\(dir)/1.ccimg", ["--track"])
        try #require(workload.waitFor("tick 4"))
        try checkpoint(workload.pid, "\(dir)/2.ccimg", ["--parent", "\(dir)/1.ccimg", "--track"])
        try #require(workload.waitFor("tick 6"))
        try checkpoint(workload.pid, "\(dir)/3.ccimg", ["--parent", "\(dir)/2.ccimg"])
        try workload.reap()
        let cut = workload.text

        try restoreAndCompare("\(dir)/3.ccimg", workload, Self.body(undisturbed.stdout))

        let flat = try CaptureSupport.run(ccimg, ["flatten", "\(dir)/3.ccimg", "-o", "\(dir)/flat.ccimg"])
        try #require(flat.status == 0, "ccimg flatten: \(flat.stderr)")
        // The same image, twice at once, each in a PID namespace of its own (both write
        // the same bytes at the same offsets of the output file).
        try cut.write(toFile: workload.output, atomically: false, encoding: .utf8)
        let first = try CaptureSupport.spawn(ccpm, ["restore", "--pidns", "\(dir)/flat.ccimg"], stdout: "\(dir)/r1.txt", stderr: "\(dir)/r1.txt")
        let second = try CaptureSupport.spawn(ccpm, ["restore", "--pidns", "\(dir)/flat.ccimg"], stdout: "\(dir)/r2.txt", stderr: "\(dir)/r2.txt")
        let r1 = try CaptureSupport.wait(first), r2 = try CaptureSupport.wait(second)
        let log1 = (try? String(contentsOfFile: "\(dir)/r1.txt", encoding: .utf8)) ?? ""
        let log2 = (try? String(contentsOfFile: "\(dir)/r2.txt", encoding: .utf8)) ?? ""
        #expect(r1.status == 0 && r2.status == 0, "\(log1)\n\(log2)")
        #expect(log1.contains("in a new PID namespace") && log2.contains("in a new PID namespace"))
        #expect(Self.body(workload.text) == Self.body(undisturbed.stdout))
    }

    @Test("a restored process is checkpointed and restored again")
    func restoreCheckpointRestore() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try CaptureSupport.program("state")
        let undisturbed = try CaptureSupport.run(state, ["24", "\(dir)/file-a.txt"])
        let workload = try Workload(state, ["24", "\(dir)/file.txt"], output: "\(dir)/out.txt")
        try #require(workload.waitFor("tick 3"))
        try checkpoint(workload.pid, "\(dir)/a.ccimg")
        try workload.reap()
        let pid = try restoreDetached("\(dir)/a.ccimg")
        #expect(pid == workload.pid)
        try #require(workload.waitFor("tick 10"))
        try checkpoint(pid, "\(dir)/b.ccimg")
        // The restored process was reparented to init, which reaps it in its own time:
        // the second restore takes a new PID namespace when the PID is still taken.
        try restoreAndCompare("\(dir)/b.ccimg", workload, Self.body(undisturbed.stdout))
    }

    @Test("a damaged image or a changed executable is refused before anything runs")
    func refusals() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A private copy of the program, changed after the checkpoint.
        let program = "\(dir)/state-copy"
        try FileManager.default.copyItem(atPath: try CaptureSupport.program("state"), toPath: program)
        let workload = try Workload(program, ["200", "\(dir)/file.txt"], output: "\(dir)/out.txt")
        try #require(workload.waitFor("tick 1"))
        try checkpoint(workload.pid, "\(dir)/s.ccimg")
        try workload.reap()

        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(dir)/s.ccimg")))
        bytes[bytes.count / 2] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/damaged.ccimg"))
        let damaged = try CaptureSupport.run(ccpm, ["restore", "\(dir)/damaged.ccimg"])
        #expect((10...16).contains(damaged.status), "status \(damaged.status): \(damaged.stderr)")
        #expect(damaged.stderr.hasPrefix("ccpm: error:") && damaged.stderr.split(separator: "\n").count == 1, "\(damaged.stderr)")
        #expect(access("/proc/\(workload.pid)", F_OK) != 0, "nothing runs under the image's pid")

        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: program))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("changed".utf8))
        try handle.close()
        let changed = try CaptureSupport.run(ccpm, ["restore", "\(dir)/s.ccimg"])
        #expect(changed.status == 20, "status \(changed.status): \(changed.stderr)")
        #expect(changed.stderr.contains("\(program) changed since the checkpoint"), "\(changed.stderr)")
        #expect(access("/proc/\(workload.pid)", F_OK) != 0)
        #expect(workload.text.contains("DONE") == false)
    }

    @Test("the archived image under fixtures/ (a static program, captured once) restores and finishes here")
    func archivedImage() throws {
        let root = CaptureSupport.repoRoot.path
        // The image names its executable at this fixed path; the committed binary is that file.
        try FileManager.default.createDirectory(atPath: "/tmp/ccpm-archive", withIntermediateDirectories: true)
        let target = "/tmp/ccpm-archive/counter-static"
        try? FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: "\(root)/fixtures/programs/bin/counter-static", toPath: target)
        let before = try String(contentsOfFile: "\(root)/fixtures/images/restore/counter-static.before.txt", encoding: .utf8)
        let last = try #require(before.split(separator: "\n").last.flatMap { Int($0.split(separator: " ").last ?? "") })
        let restored = try CaptureSupport.run(ccpm, ["restore", "\(root)/fixtures/images/restore/counter-static.ccimg"])
        #expect(restored.status == 3, "ccpm restore: \(restored.stderr)")
        let expected = ((last + 1)...40).map { "count \($0)" } + ["END sum=79540 marker=archived .data marker"]
        #expect(restored.stdout.split(separator: "\n").map(String.init) == expected)
        // The same image read from a pipe.
        let piped = try CaptureSupport.run("/bin/sh", ["-c", "'\(ccpm)' restore - < '\(root)/fixtures/images/restore/counter-static.ccimg'"])
        #expect(piped.status == 3, "ccpm restore -: \(piped.stderr)")
        #expect(piped.stdout.split(separator: "\n").map(String.init) == expected)
    }

    @Test("POSIX and interval timers are re-armed with their IDs and signals")
    func timers() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (undisturbed, workload) = try midway(try CaptureSupport.program("timer"), ["40"],
                                                 at: "tick 10", image: "\(dir)/t.ccimg", in: dir)
        let sync = try #require(try ImageReader(path: "\(dir)/t.ccimg").section(.syncObjects, as: Ccimg_V1_SyncObjects.self))
        #expect(sync.posixTimers.map(\.id).sorted() == [0, 1] && sync.intervalTimers.count == 1)
        try restoreAndCompare("\(dir)/t.ccimg", workload, undisturbed)
    }

    @Test("a process stopped by SIGSTOP comes back stopped, and goes on after SIGCONT")
    func stoppedStaysStopped() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try CaptureSupport.program("state")
        let workload = try Workload(state, ["12", "\(dir)/file.txt"], output: "\(dir)/out.txt")
        try #require(workload.waitFor("tick 2"))
        kill(workload.pid, SIGSTOP)
        usleep(100_000)
        try checkpoint(workload.pid, "\(dir)/s.ccimg")
        try workload.reap()
        let restored = try CaptureSupport.spawn(ccpm, ["restore", "\(dir)/s.ccimg"], stdout: "\(dir)/r.txt", stderr: "\(dir)/r.txt")
        var state_: Character? = nil
        for _ in 0..<300 {
            if let text = try? String(contentsOfFile: "/proc/\(workload.pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") {
                state_ = text[text.index(close, offsetBy: 2)]
                if state_ == "T" { break }
            }
            usleep(10_000)
        }
        #expect(state_ == "T", "the restored process is stopped")
        let ticks = workload.text.components(separatedBy: "tick").count
        usleep(300_000)
        #expect(workload.text.components(separatedBy: "tick").count == ticks, "a stopped process prints nothing")
        kill(workload.pid, SIGCONT)
        let result = try CaptureSupport.wait(restored)
        #expect(result.status == 0)
        #expect(workload.text.contains("DONE"))
    }

    @Test("credentials come last: a process of an ordinary user runs as that user again", .enabled(if: Gate.setpriv, "needs /usr/bin/setpriv"))
    func credentials() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o777)
        let state = try CaptureSupport.program("state")
        chmod(CaptureSupport.buildDirectory, 0o755)
        let workload = try Workload("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", state, "14", "\(dir)/file.txt"],
                                    output: "\(dir)/out.txt")
        try #require(workload.waitFor("tick 2"))
        try checkpoint(workload.pid, "\(dir)/u.ccimg")
        try workload.reap()
        let pid = try restoreDetached("\(dir)/u.ccimg")
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        #expect(status.contains("Uid:\t65534\t65534\t65534\t65534") && status.contains("Gid:\t65534\t65534\t65534\t65534"), "\(status)")
        #expect(workload.waitFor("DONE"))
    }

    @Test("a socket: a killing capture refuses and leaves the process running; a restore that fails midway kills the half-made process and says why", .enabled(if: Gate.python3, "needs /usr/bin/python3"))
    func failureMidway() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let workload = try Workload("/usr/bin/python3", ["-c", "import socket, time\ns = socket.socket()\nprint('READY', flush=True)\ntime.sleep(30)"],
                                    output: "\(dir)/out.txt")
        try #require(workload.waitFor("READY"))
        // A capture that would end the process refuses first: the socket could not come
        // back. The process runs on, and no image is written.
        let refused = try CaptureSupport.run(ccpm, ["checkpoint", String(workload.pid), "-o", "\(dir)/k.ccimg"])
        #expect(refused.status == 8, "\(refused.stderr)")
        #expect(refused.stderr.contains("is a socket, which this version cannot restore"))
        #expect(refused.stderr.contains("the process is left running"))
        #expect(access("\(dir)/k.ccimg", F_OK) != 0, "no image is written")
        #expect(try String(contentsOfFile: "/proc/\(workload.pid)/stat", encoding: .utf8).split(separator: " ")[2] == "S",
                "the process runs on (sleeping, not stopped or dead)")
        // --leave-running keeps an image anyway, and says it cannot be restored.
        let kept = try CaptureSupport.run(ccpm, ["checkpoint", String(workload.pid), "-o", "\(dir)/k.ccimg", "--leave-running"])
        #expect(kept.status == 0, "\(kept.stderr)")
        #expect(kept.stderr.contains("this image cannot be restored: fd"))
        _ = kill(workload.pid, SIGKILL)
        try workload.reap()
        for extra in [[], ["--pidns"]] {
            let r = try CaptureSupport.run(ccpm, ["restore"] + extra + ["\(dir)/k.ccimg"])
            #expect(r.status == 8, "\(r.stderr)")
            #expect(r.stderr.contains("is a socket"))
            #expect(access("/proc/\(workload.pid)", F_OK) != 0, "no half-restored process is left")
        }
    }

    @Test("--vdso-proxy: the image's vdso comes back at its address as a jump table into this kernel's vdso", .enabled(if: Gate.python3, "needs /usr/bin/python3"))
    func vdsoProxy() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.pythonScript.write(toFile: "\(dir)/clock.py", atomically: true, encoding: .utf8)
        let (undisturbed, workload) = try midway("/usr/bin/python3", ["\(dir)/clock.py"],
                                                 at: "step 6 ", image: "\(dir)/v.ccimg", in: dir)
        let savedVdso = try #require(try ImageReader(path: "\(dir)/v.ccimg").memoryMap.first { $0.role == .vdso })
        let pid = try restoreDetached("\(dir)/v.ccimg", ["--vdso-proxy"])
        let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
        let at = String(savedVdso.start, radix: 16)
        #expect(maps.split(separator: "\n").contains { $0.hasPrefix(at) && !$0.contains("[vdso]") }, "the old vdso is ordinary memory now")
        #expect(maps.contains("[vdso]"), "this kernel's vdso is mapped too")
        #expect(workload.waitFor("DONE"))
        #expect(Self.body(workload.text) == undisturbed, "\(workload.text)")
    }

    @Test("a tracked chain is not read through again while unchanged; a damaged ancestor is still found")
    func damagedAncestorOfTrackedChain() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let workload = try Workload(try CaptureSupport.program("state"), ["200", "\(dir)/file.txt"], output: "\(dir)/out.txt")
        defer { kill(workload.pid, SIGKILL); try? workload.reap() }
        try #require(workload.waitFor("tick 1"))
        try checkpoint(workload.pid, "\(dir)/1.ccimg", ["--track"])
        try checkpoint(workload.pid, "\(dir)/2.ccimg", ["--parent", "\(dir)/1.ccimg", "--track"])
        try checkpoint(workload.pid, "\(dir)/3.ccimg", ["--parent", "\(dir)/2.ccimg", "--track"])
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(dir)/1.ccimg")))
        bytes[bytes.count / 2] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/1.ccimg"))
        let refused = try CaptureSupport.run(ccpm, ["checkpoint", String(workload.pid), "-o", "\(dir)/4.ccimg", "--parent", "\(dir)/3.ccimg"])
        #expect(refused.status == 6, "\(refused.stderr)")
        #expect(refused.stderr.contains("1.ccimg"), "the error names the damaged ancestor: \(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/4.ccimg"))
        #expect(CaptureSupport.waitUntil(seconds: 5) { workload.text.contains("tick 3") }, "the process runs on")
    }

    @Test("a tracked process's increments find its earlier images where they were written, in any directory")
    func trackedChainAcrossDirectories() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for sub in ["a", "b", "c"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        let workload = try Workload(try CaptureSupport.program("state"), ["200", "\(dir)/file.txt"], output: "\(dir)/out.txt")
        defer { kill(workload.pid, SIGKILL); try? workload.reap() }
        try #require(workload.waitFor("tick 1"))
        try checkpoint(workload.pid, "\(dir)/a/full.ccimg", ["--track"])
        try checkpoint(workload.pid, "\(dir)/b/inc1.ccimg", ["--parent", "\(dir)/a/full.ccimg", "--track"])
        // The grandparent is neither beside the parent nor in a --store directory: the tracking note knows where it is.
        try checkpoint(workload.pid, "\(dir)/c/inc2.ccimg", ["--parent", "\(dir)/b/inc1.ccimg", "--track"])
        let chain = try ImageChain.open(path: "\(dir)/c/inc2.ccimg", storeDirectories: ["\(dir)/a", "\(dir)/b"])
        #expect(chain.images.count == 3)
        // Without the note (an untracked checkpoint of another process would not have one), the search is the spec's.
        let report = ImageVerifier.verify(path: "\(dir)/c/inc2.ccimg", deep: false)
        #expect(report.problems.first?.code == .brokenChain, "\(report.problems)")
    }
}

import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// One program of fixtures/programs/zdtm: it sets up one feature's state, prints
/// `READY <pid>`, waits for SIGUSR2, checks its state and prints `PASS` or
/// `FAIL: <what differed>` (fixtures/programs/zdtm/harness.h).
struct ZdtmProgram: Sendable, CustomTestStringConvertible {
    let name: String
    /// Why its run through `ccpm restore` is known to fail today, if it is.
    let restoreIssue: String?

    init(_ name: String, restoreIssue: String? = nil) {
        self.name = name
        self.restoreIssue = restoreIssue
    }

    var testDescription: String { name }
}

/// Tests in the shape of the work (issue #13 point 8), as CRIU's zdtm: for each program an
/// undisturbed run, a run snapshotted with `--leave-running`, and a run checkpointed (which
/// ends it), restored with `--detach` and then signalled; each must print PASS.
@Suite(.serialized, .enabled(if: Gate.root, "restoring needs root (clone3 with set_tid)"))
struct ZdtmTests {
    static let programs: [ZdtmProgram] = [
        ZdtmProgram("file_offset"),
        ZdtmProgram("file_deleted"),
        ZdtmProgram("directory_fd"),
        ZdtmProgram("pipe_unread"),
        ZdtmProgram("fifo"),
        ZdtmProgram("eventfd"),
        ZdtmProgram("timerfd"),
        ZdtmProgram("sigaction"),
        ZdtmProgram("sigpending"),
        ZdtmProgram("sigaltstack"),
        ZdtmProgram("signalfd"),
        ZdtmProgram("epoll"),
        ZdtmProgram("inotify"),
        ZdtmProgram("memfd"),
        ZdtmProgram("threads"),
        ZdtmProgram("names"),
        ZdtmProgram("memory"),
        ZdtmProgram("process_attributes"),
        ZdtmProgram("posix_timer"),
        ZdtmProgram("clock"),
    ]

    let ccpm = CaptureSupport.tool("ccpm")

    @Test("a one-feature program passes its own check undisturbed, after a --leave-running snapshot, and after checkpoint and restore",
          arguments: programs)
    func feature(_ program: ZdtmProgram) throws {
        let binary = try Self.build(program.name)
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try undisturbed(program.name, binary, in: dir)
        try leftRunning(program.name, binary, in: dir)
        if let issue = program.restoreIssue {
            withKnownIssue(Comment(rawValue: issue)) { try restored(program.name, binary, in: dir) }
        } else {
            try restored(program.name, binary, in: dir)
        }
    }

    /// Two descriptors of one open file description (dup of a file, of an eventfd) are
    /// one description again after a restore: one offset, one counter.
    @Test
    func sharedOpenFileDescriptionsAfterRestore() throws {
        let binary = try Self.build("shared_fd")
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try restored("shared_fd", binary, in: dir)
    }

    @Test("shared open file descriptions: the program passes undisturbed and after a --leave-running snapshot")
    func sharedOpenFileDescriptionsWithoutRestore() throws {
        let binary = try Self.build("shared_fd")
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try undisturbed("shared_fd", binary, in: dir)
        try leftRunning("shared_fd", binary, in: dir)
    }

    // MARK: the three runs

    static func build(_ name: String) throws -> String {
        try CaptureSupport.program("zdtm/\(name)", with: ["zdtm/harness.c"])
    }

    /// Started, signalled once ready, and it must pass.
    func undisturbed(_ name: String, _ binary: String, in dir: String) throws {
        let run = try Run(name, binary, mode: "undisturbed", in: dir)
        defer { run.end() }
        try run.waitReady()
        kill(run.pid, SIGUSR2)
        try run.expectPass(status: run.reap())
    }

    /// Snapshotted with `ccpm checkpoint --leave-running` once ready, then signalled.
    func leftRunning(_ name: String, _ binary: String, in dir: String) throws {
        let run = try Run(name, binary, mode: "left-running", in: dir)
        defer { run.end() }
        try run.waitReady()
        let image = "\(run.work).ccimg"
        let r = try CaptureSupport.run(ccpm, ["checkpoint", String(run.pid), "-o", image, "--leave-running"])
        try #require(r.status == 0, "\(name): ccpm checkpoint --leave-running exited \(r.status): \(r.stderr)")
        kill(run.pid, SIGUSR2)
        try run.expectPass(status: run.reap())
    }

    /// Checkpointed once ready (which kills it), reaped, restored with `--detach`, then
    /// signalled: the restored process writes on in the same output file.
    func restored(_ name: String, _ binary: String, in dir: String) throws {
        let run = try Run(name, binary, mode: "restored", in: dir)
        defer { run.end() }
        try run.waitReady()
        let image = "\(run.work).ccimg"
        let checkpoint = try CaptureSupport.run(ccpm, ["checkpoint", String(run.pid), "-o", image])
        try #require(checkpoint.status == 0, "\(name): ccpm checkpoint exited \(checkpoint.status): \(checkpoint.stderr)")
        let killed = try run.reap()
        #expect(killed == 128 + SIGKILL, "\(name): the checkpointed process ended with \(killed), not by SIGKILL: \(run.output)")
        let restore = try CaptureSupport.run(ccpm, ["restore", "--detach", image])
        try #require(restore.status == 0, "\(name): ccpm restore --detach exited \(restore.status): \(restore.stderr)")
        let pid = try #require(Int32(restore.stdout.trimmingCharacters(in: .whitespacesAndNewlines)),
                               "\(name): ccpm restore --detach printed no PID: '\(restore.stdout)' \(restore.stderr)")
        let restoredProcess = Restored(pid: pid, binary: binary)
        defer { restoredProcess.end() }
        #expect(pid == run.pid, "\(name): restored as pid \(pid), not at its own pid \(run.pid): \(restore.stderr)")
        kill(pid, SIGUSR2)
        // Not our child: its verdict is in the output file, its end in /proc.
        let ended = CaptureSupport.waitUntil(seconds: Run.seconds) { run.verdict != nil && !restoredProcess.isRunning }
        #expect(ended, "\(name) restored: no PASS or FAIL and exit within \(Int(Run.seconds)) s; output: \(run.output)\(run.errors)")
        if ended { run.expectVerdict(context: "after checkpoint and restore (\(restore.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))") }
    }

    // MARK: processes

    /// One run of a program as our child, its output in files of its own.
    final class Run {
        /// The bound on every wait.
        static let seconds = 15.0

        let name: String
        let mode: String
        let work: String
        let outputPath: String
        let errorPath: String
        let pid: pid_t
        private var reaped = false

        init(_ name: String, _ binary: String, mode: String, in dir: String) throws {
            self.name = name
            self.mode = mode
            work = "\(dir)/\(mode)"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            outputPath = "\(work).out"
            errorPath = "\(work).err"
            pid = try CaptureSupport.spawn(binary, [work], stdout: outputPath, stderr: errorPath)
        }

        var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
        var errors: String {
            let text = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            return text.isEmpty ? "" : "; stderr: \(text)"
        }

        /// The lines after READY: PASS, or the FAIL lines; nil while there is neither.
        var verdict: (pass: Bool, failures: [String])? {
            let lines = output.split(separator: "\n").map(String.init)
            let failures = lines.filter { $0.hasPrefix("FAIL") }
            if !failures.isEmpty { return (false, failures) }
            return lines.contains("PASS") ? (true, []) : nil
        }

        func waitReady() throws {
            let ready = CaptureSupport.waitUntil(seconds: Self.seconds) {
                output.contains("READY \(pid)\n") || !Self.alive(pid)
            }
            try #require(ready && output.contains("READY \(pid)\n"),
                         "\(name) (\(mode)): no 'READY \(pid)' within \(Int(Self.seconds)) s; output: \(output)\(errors)")
        }

        /// Waits (bounded) for the process to end and reaps it: its exit status.
        func reap() throws -> Int32 {
            let ended = CaptureSupport.waitUntil(seconds: Self.seconds) { !Self.alive(pid) }
            if !ended { kill(pid, SIGKILL) }
            let result = try CaptureSupport.wait(pid)
            reaped = true
            try #require(ended, "\(name) (\(mode)): still running after \(Int(Self.seconds)) s; output: \(output)\(errors)")
            return result.status
        }

        /// Requires PASS and exit status 0.
        func expectPass(status: Int32) {
            expectVerdict(context: mode == "undisturbed" ? "undisturbed" : "after ccpm checkpoint --leave-running")
            #expect(status == 0, "\(name) \(mode): exit status \(status); output: \(output)\(errors)")
        }

        func expectVerdict(context: String) {
            switch verdict {
            case nil:
                Issue.record("\(name) \(context): neither PASS nor FAIL; output: \(output)\(errors)")
            case let (pass, failures)?:
                #expect(pass, "\(name) \(context): \(failures.joined(separator: "; "))\(errors)")
            }
        }

        /// Kills and reaps the process if it is still ours.
        func end() {
            guard !reaped else { return }
            kill(pid, SIGKILL)
            _ = try? CaptureSupport.wait(pid)
            reaped = true
        }

        /// Whether `pid` runs (a zombie or a missing entry does not).
        static func alive(_ pid: pid_t) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let state = stat[stat.index(close, offsetBy: 2)]
            return state != "Z" && state != "X"
        }
    }

    /// A restored process: not our child, killed at the end if it still runs the program.
    struct Restored {
        let pid: pid_t
        let binary: String

        var isRunning: Bool { Run.alive(pid) && isOurs }

        /// Whether `pid` still runs `binary` (and not some later process with its number).
        var isOurs: Bool { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) == binary }

        func end() {
            if isRunning { kill(pid, SIGKILL) }
        }
    }
}

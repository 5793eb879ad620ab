import Foundation
import CCheckpointKernel
#if canImport(Glibc)
import Glibc
#endif

/// Helpers for end-to-end tests on real processes built from fixtures/programs, shared by
/// the capture and the restore test targets (a library target of its own: Tests/TestSupport).
package enum CaptureSupport {
    package static let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    package static let lock = NSLock()
    package static let spawnLock = NSLock()
    package nonisolated(unsafe) static var built: [String: String] = [:]
    package static let buildDirectory: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cc-capture-programs-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }()

    /// Compiles fixtures/programs/NAME.c (with `sources`, other files under fixtures/programs
    /// such as "zdtm/harness.c") once per test run with the system C compiler.
    package static func program(_ name: String, with sources: [String] = []) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let path = built[name] { return path }
        let output = "\(buildDirectory)/\(name.replacingOccurrences(of: "/", with: "-"))"
        let files = ["\(name).c"] + sources
        let result = try run("/usr/bin/env", ["cc", "-O1", "-g", "-pthread", "-Wall", "-o", output]
                                              + files.map { repoRoot.appendingPathComponent("fixtures/programs/\($0)").path })
        guard result.status == 0 else { throw TestFailure("cc \(files.joined(separator: " ")) failed: \(result.stderr)") }
        built[name] = output
        return output
    }

    package struct TestFailure: Error, CustomStringConvertible {
        package var description: String
        package init(_ d: String) { description = d }
    }

    package struct Result {
        package var status: Int32
        package var stdout: String
        package var stderr: String
        package init(status: Int32, stdout: String, stderr: String) { self.status = status; self.stdout = stdout; self.stderr = stderr }
    }

    /// Runs a command to completion with posix_spawn, output to temporary
    /// files, reaped by its own pid — not Foundation's Process, whose SIGCHLD
    /// bookkeeping does not mix with a test process that also uses ptrace.
    @discardableResult
    package static func run(_ executable: String, _ arguments: [String]) throws -> Result {
        let pid = try spawn(executable, arguments, stdout: nil, stderr: nil)
        return try wait(pid)
    }

    package final class Spawned {
        package let pid: pid_t
        package let out: String
        package let err: String
        /// The output files are ours to delete (the caller named none).
        package let ownsFiles: Bool
        package init(pid: pid_t, out: String, err: String, ownsFiles: Bool) { self.pid = pid; self.out = out; self.err = err; self.ownsFiles = ownsFiles }
    }

    package nonisolated(unsafe) static var spawned: [pid_t: Spawned] = [:]

    /// Starts a command; its output goes to temporary files read by ``wait(_:)``.
    package static func spawn(_ executable: String, _ arguments: [String], stdout: String?, stderr: String?) throws -> pid_t {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("cc-run-\(UUID().uuidString)").path
        let out = stdout ?? base + ".out", err = stderr ?? base + ".err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // Only 0-2: the test runner's own descriptors (sockets to its parent) stay out of the workload.
        _ = cc_spawn_actions_closefrom(&actions, 3)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // A clean signal state: test-runner threads block signals, and a child inherits that mask.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw TestFailure("posix_spawn \(executable): \(String(cString: strerror(rc)))") }
        spawnLock.lock()
        spawned[pid] = Spawned(pid: pid, out: out, err: err, ownsFiles: stdout == nil && stderr == nil)
        spawnLock.unlock()
        return pid
    }

    /// Waits for a spawned command and collects its output.
    package static func wait(_ pid: pid_t) throws -> Result {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw TestFailure("waitpid \(pid): \(String(cString: strerror(errno)))") }
        }
        spawnLock.lock()
        let s = spawned.removeValue(forKey: pid)
        spawnLock.unlock()
        let out = s.flatMap { try? String(contentsOfFile: $0.out, encoding: .utf8) } ?? ""
        let err = s.flatMap { try? String(contentsOfFile: $0.err, encoding: .utf8) } ?? ""
        if let s, s.ownsFiles { unlink(s.out); unlink(s.err) }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: code, stdout: out, stderr: err)
    }

    /// A built tool (ccpm, ccimg) beside the test bundle.
    package static func tool(_ name: String) -> String {
        var candidates: [URL] = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
        candidates.append(Bundle.main.bundleURL)
        for dir in candidates {
            let path = dir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return candidates[0].appendingPathComponent(name).path
    }

    /// A program started detached (not our child: its parent is gone), its output in a file.
    package final class Target {
        package let pid: Int32
        package let outputPath: String
        package let ready: [String]

        package init(_ program: String, _ arguments: [String], in directory: String, readyPrefix: String = "READY") throws {
            outputPath = "\(directory)/target-\(UUID().uuidString).out"
            let quoted = ([program] + arguments).map { "'\($0)'" }.joined(separator: " ")
            let r = try CaptureSupport.run("/bin/sh", ["-c", "\(quoted) > '\(outputPath)' 2>&1 < /dev/null & echo $!"])
            guard let pid = Int32(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw TestFailure("no pid from sh: \(r.stdout)") }
            self.pid = pid
            var line: [String]? = nil
            for _ in 0..<500 {
                if let text = try? String(contentsOfFile: outputPath, encoding: .utf8),
                   let l = text.split(separator: "\n").first(where: { $0.hasPrefix(readyPrefix) }) {
                    line = l.split(separator: " ").map(String.init)
                    break
                }
                usleep(10_000)
            }
            guard let line else { throw TestFailure("\(program) never printed \(readyPrefix)") }
            ready = line
        }

        package var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

        /// The /proc state letter, or nil when the process is gone (or a zombie).
        package var state: Character? {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = text.lastIndex(of: ")") else { return nil }
            let c = text[text.index(close, offsetBy: 2)]
            return c == "Z" || c == "X" ? nil : c
        }

        /// Waits until the output holds `text`, up to `seconds`.
        package func waitFor(_ text: String, seconds: Double = 20) -> Bool {
            CaptureSupport.waitUntil(seconds: seconds) { output.contains(text) }
        }

        package func kill() { _ = Glibc.kill(pid, SIGKILL) }
        deinit { kill() }
    }

    /// Polls `condition` every 10 ms for up to `seconds`; whether it came true.
    package static func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return false
    }

    package static func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cc-capture-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Files in `directory` (hidden ones included).
    package static func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }
}

/// What some tests need of this machine, for `.enabled(if:)` traits: a test whose need is
/// not met shows as skipped, with the reason, instead of passing without running.
package enum Gate {
    /// /usr/bin/python3, for the tests whose workload is a Python program.
    package static let python3 = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
    /// /usr/bin/setpriv (util-linux), to run a command as another user.
    package static let setpriv = FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
    /// Root: mounting, changing user, and restoring (clone3 with set_tid needs
    /// CAP_CHECKPOINT_RESTORE, which tests do not grant otherwise).
    package static let root = geteuid() == 0
    /// Tracing a process that is not our child, as `ccpm checkpoint` does its targets (a
    /// shell starts them): root, or Yama's kernel.yama.ptrace_scope at 0 (or no Yama).
    package static let tracing = root || (firstLine("/proc/sys/kernel/yama/ptrace_scope") ?? "0") == "0"

    /// The first line of a small file (of /proc, whose files have no size to go by).
    static func firstLine(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
    }
}

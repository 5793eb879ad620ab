import ArgumentParser
import CheckpointCapture
import CheckpointImage
import LinuxKernel
import CheckpointRestore
import Synchronization

/// `ccpm`: checkpoint (and later restore) live processes.
@main
struct CCPM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ccpm",
        abstract: "Checkpoint running Linux processes into ccimg images, and restore them.",
        discussion: """
        Exit status of 'checkpoint' (and 'track'): 0 the image is written; 3 no such process; 4 not permitted;
        5 the image cannot be written; 6 the parent image is missing or damaged; 7 the kernel refused;
        8 unsupported process state, or state this version could not restore (a capture that would end
        the process refuses then; --leave-running keeps an image anyway). On every failure the process is
        left running as it was.

        Exit status of 'restore': the restored process's own (128 + signal if a signal ended it),
        or with --detach 0. When the restore itself fails, a line 'ccpm: error: ...' says why and the
        status is 10-16 for a damaged image (as 'ccimg verify'), 20 an image that cannot run here,
        4 not permitted, 7 the kernel refused, 8 something this version cannot restore.
        """,
        version: CheckpointImageVersion.current,
        subcommands: [Checkpoint.self, Track.self, Restore.self]
    )
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoint", abstract: "Write an image of a running process.")

    @Argument(help: "The process to checkpoint.") var pid: Int32
    @Option(name: .shortAndLong, help: "The image to write ('-' for standard output); written atomically.") var output: String
    @Flag(help: "Keep the process running after the image is written (default: it is killed once the image is safe).")
    var leaveRunning = false
    @Option(help: "Write an incremental image against this parent image.") var parent: String?
    @Flag(help: "Start kernel dirty-page tracking (userfaultfd write-protect) for later --parent checkpoints; implies --leave-running.")
    var track = false
    @Option(help: ArgumentHelp("Directory to search for parent images by UUID (repeatable).", valueName: "DIR")) var store: [String] = []

    func run() throws {
        var options = CheckpointOptions()
        options.leaveRunning = leaveRunning
        options.parentPath = parent
        options.track = track
        options.storeDirectories = store
        if StandardStream.error.isTerminal { options.progress = ProgressBar.show }
        do {
            let out: ImageOutput
            do {
                out = output == "-" ? ImageOutput(streamingTo: 1) : try ImageOutput(path: output)
            } catch {
                throw CaptureError(.output, "cannot create the image", pid: pid, cause: .image(error))
            }
            Summary.report(try Checkpointer.checkpoint(pid: pid, to: out, options: options), output: output)
        } catch let error as CaptureError {
            throw Summary.failure(error)
        }
    }
}

struct Track: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "track",
        abstract: "Stay resident and write a tracked image of a running process, then increments on it.",
        discussion: """
        The first image (DIR/image-0000.ccimg) is full and starts kernel dirty-page tracking; each
        later one (image-0001.ccimg, ...) is an increment on the one before, read from the pages
        written since. The chain stays open in ccpm, so an increment costs only its own work. An
        image is taken every --every seconds, and with --on-input each time a line arrives on
        standard input (lines that arrive during a capture ask for one more image, not one each).
        The session ends after --count images, at the end of input, on SIGINT or SIGTERM, or when
        the process exits; the process runs on, tracked, and 'checkpoint --parent' can go on from
        the last image. A failed capture ends the session with its exit status.
        """)

    @Argument(help: "The process to track.") var pid: Int32
    @Option(name: .shortAndLong, help: ArgumentHelp("Directory for the images; created if missing, it must hold no images yet.", valueName: "DIR"))
    var output: String
    @Option(help: ArgumentHelp("Take an image every this many seconds.", valueName: "SECONDS")) var every: Double?
    @Flag(help: "Take an image each time a line arrives on standard input.") var onInput = false
    @Option(help: "End after this many images, the full one included.") var count: Int?

    func validate() throws {
        guard every != nil || onInput else { throw ValidationError("give --every SECONDS, --on-input, or both") }
        if let every, !(every > 0) { throw ValidationError("--every must be more than 0 seconds") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        do {
            // Made first: SIGINT and SIGTERM are blocked from here on, for every thread.
            let triggers = try SessionTriggers(every: every, onInput: onInput)
            let session = try TrackingSession(pid: pid, directory: output)
            let progress: (@Sendable (UInt64, UInt64) -> Void)? = StandardStream.error.isTerminal ? ProgressBar.show : nil
            while true {
                let summary = try session.takeImage(progress: progress)
                Summary.report(summary, output: session.path(ofImage: session.imagesWritten - 1))
                if let count, session.imagesWritten >= count { return }
                guard triggers.wait() == .due else { return }
                guard session.processIsAlive else {
                    StandardStream.error.write("ccpm: pid \(pid) has exited; the session ends with \(session.imagesWritten) images\n")
                    return
                }
            }
        } catch {
            throw Summary.failure(error)
        }
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Bring a process back from an image or the newest image of a chain.",
        discussion: "Without --detach ccpm stays the process's parent and exits with its exit status, as 'criu restore' does.")

    @Argument(help: "The image ('-' reads it from standard input).") var image: String
    @Flag(help: "Print the restored process's PID and exit; the process goes on without ccpm.") var detach = false
    @Flag(help: "Restore in a new PID namespace (chosen by itself when the image's PIDs are taken here).") var pidns = false
    @Option(help: ArgumentHelp("Directory to search for parent images by UUID (repeatable).", valueName: "DIR")) var store: [String] = []
    @Flag(help: "Redirect the image's vdso functions to this kernel's vdso even when their layouts match (done by itself across kernels).")
    var vdsoProxy = false

    func run() throws {
        var options = RestoreOptions()
        options.vdsoProxy = vdsoProxy
        options.storeDirectories = store
        options.newPIDNamespace = pidns
        options.notice = { StandardStream.error.write("ccpm: \($0)\n") }
        do {
            let spooled: String?
            do { spooled = image == "-" ? try StandardInputSpool.spool(prefix: "ccpm-restore") : nil } catch {
                throw RestoreError(error)
            }
            defer { if let spooled { try? FileSystem.unlink(spooled) } }
            let summary = try Restorer.restore(path: spooled ?? image, options: options)
            for warning in summary.warnings { StandardStream.error.write("ccpm: warning: \(warning)\n") }
            let namespace = summary.inNewNamespace ? " (pid \(summary.imagePID) in a new PID namespace)" : ""
            StandardStream.error.write(("ccpm: restored pid \(summary.pid)\(namespace), \(summary.threads) thread\(summary.threads == 1 ? "" : "s"), "
                + "\(summary.pagesWritten) pages, in \((Double(summary.nanoseconds) / 1e6).fixed(1)) ms\n"))
            if detach {
                print(summary.pid)
                return
            }
            throw ExitCode(Restorer.waitForExit(summary))
        } catch let error as RestoreError {
            StandardStream.error.write("ccpm: error: \(error)\n")
            throw ExitCode(error.exitStatus)
        }
    }
}

enum Summary {
    /// Prints a capture's warnings and its summary line on standard error.
    static func report(_ s: CheckpointSummary, output: String) {
        ProgressBar.clear()
        for warning in s.warnings { StandardStream.error.write("ccpm: warning: \(warning)\n") }
        StandardStream.error.write(line(s, output: output) + "\n")
    }

    /// Prints a failed capture's one-line error; the exit status to leave with.
    static func failure(_ error: CaptureError) -> ExitCode {
        ProgressBar.clear()
        StandardStream.error.write("ccpm: error: \(error)\n")
        return ExitCode(error.code.exitStatus)
    }

    static func line(_ s: CheckpointSummary, output: String) -> String {
        let pages = s.image.pages
        let stored = pages[.stored] ?? 0, zero = pages[.zero] ?? 0, dedup = pages[.dedup] ?? 0, inherited = pages[.inherited] ?? 0
        let ratio = s.image.storedFrameBytes == 0 ? 0 : Double(s.image.storedRawBytes) / Double(s.image.storedFrameBytes)
        let freeze = Double(s.freezeNanoseconds) / 1e6, total = Double(s.totalNanoseconds) / 1e6
        return "ccpm: pid \(s.pid) (\(s.threads) thread\(s.threads == 1 ? "" : "s")) -> \(output): "
            + "\(stored) stored, \(zero) zero, \(dedup) dedup, \(inherited) inherited pages; "
            + "\(s.image.fileBytes) bytes, ratio \(ratio.fixed(2)); "
            + "freeze \(freeze.fixed(1)) ms, total \(total.fixed(1)) ms; "
            + "tracking \(s.trackingMode); process \(s.leftRunning ? "left running" : "killed")"
    }
}

/// A one-line progress bar on standard error, shown only on a terminal.
enum ProgressBar {
    /// The percentage last shown, -1 when none is: the capture's reader threads report
    /// progress, so it is behind a `Mutex` (spec/decisions/0017-threading-model.md).
    private static let last = Mutex(-1)

    @Sendable static func show(done: UInt64, total: UInt64) {
        guard total >= 64 << 20 else { return }
        let percent = Int(done * 100 / max(total, 1))
        let changed = last.withLock { last in
            defer { last = percent }
            return last != percent
        }
        guard changed else { return }
        let width = 30
        let filled = width * percent / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        StandardStream.error.write("\r[\(bar)] \(percent)% of \(total >> 20) MiB")
    }

    static func clear() {
        let shown = last.withLock { last in
            defer { last = -1 }
            return last >= 0
        }
        if shown { StandardStream.error.write("\r\u{1b}[K") }
    }
}

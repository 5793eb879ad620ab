import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Everything a capture checks and prepares before it touches the process (issue #13,
/// point 5): the PID, that it may be signalled and is not ccpm itself, the parent chain
/// (opened and verified, or vouched for by the tracking note), the pidfd, the image
/// writer on its output, and the tracking mode. Whatever fails here leaves the process
/// untouched, and nothing at the output path.
struct CapturePlan: ~Copyable {
    let pid: Int32
    let options: CheckpointOptions
    /// A pidfd of the process, for its descriptors (pidfd_getfd).
    let process: ProcessHandle
    /// The image being written.
    let writer: ImageWriter
    /// The chain the image is an increment on.
    let parent: ImageChain?
    /// This process's tracking note (from an earlier --track), read once.
    let savedNote: DirtyTracking.Note?
    /// Whether the note's record of the parent chain (identities, paths) still holds.
    let noteHoldsChain: Bool
    /// Tracking already running in the process (its note, the process alive).
    let existing: DirtyTracking.Note?
    /// The note whose tracking this increment reads: the parent is the last tracked image
    /// of this very process.
    let note: DirtyTracking.Note?
    /// How the image's pages are chosen.
    let mode: TrackingMode

    /// Whether the process runs on after its image (a snapshot, or tracked); else it
    /// migrates and is killed once its image is safe.
    var keepsRunning: Bool { options.leaveRunning || options.track }
    /// Whether this capture starts a tracker (its userfaultfd is created by injection).
    var startsTracker: Bool { options.track && note == nil && existing == nil }

    /// Checks `pid` and prepares the capture into `output`.
    init(pid: Int32, output: consuming ImageOutput, options: CheckpointOptions) throws(CaptureError) {
        guard pid > 0 else { throw CaptureError(.noSuchProcess, "\(pid) is not a process ID", pid: pid) }
        if let e = ProcessHandle.probe(pid: pid) {
            throw e == .noSuchProcess ? CaptureError(.noSuchProcess, "no such process", pid: pid)
                : CaptureError.from(SystemCallError("kill(0)", errno: e), pid: pid, doing: "signal the process")
        }
        guard pid != ProcessHandle.ownPID else { throw CaptureError(.unsupported, "ccpm cannot checkpoint itself", pid: pid) }
        Checkpointer.startWarmUp(pid: pid)
        let savedNote = DirtyTracking.Note.load(pid: pid)
        let (parent, noteHoldsChain) = try Self.openParent(pid: pid, options: options, savedNote: savedNote)
        let process: ProcessHandle
        do throws(SystemCallError) { process = try ProcessHandle(pid: pid) } catch {
            throw CaptureError.from(error, pid: pid, doing: "open the process")
        }
        var writerOptions = options.writer
        writerOptions.uuid = ImageUUID.random()     // every image its own identity
        writerOptions.createdUnixNanoseconds = Int64(Date().timeIntervalSince1970 * 1_000_000_000)
        writerOptions.machine = Checkpointer.machineFacts()
        if writerOptions.producerName == "ccimg" { writerOptions.producerName = "ccpm" }
        writerOptions.pagesPerFrame = Checkpointer.pagesPerFrame(pid: pid, incremental: parent != nil)
        writerOptions.openFiles = true     // the handles section is DescriptorTable's object and fd tables (format 1.1)
        let writer: ImageWriter
        do throws(ImageError) { writer = try ImageWriter(output: output, options: writerOptions, parent: parent) } catch {
            throw CaptureError.from(error, pid: pid)
        }
        // Kernel tracking applies when the parent is the last tracked image of this very process.
        let existing = savedNote.flatMap { $0.isLive(pid: pid) ? $0 : nil }
        let note = existing.flatMap { n in parent.map { $0.top.header.uuid.description == n.imageUUID } == true ? n : nil }
        self.pid = pid
        self.options = options
        self.savedNote = savedNote
        self.parent = parent
        self.noteHoldsChain = noteHoldsChain
        self.process = process
        self.writer = writer
        self.existing = existing
        self.note = note
        mode = parent == nil ? .full : note != nil ? .uffdWP : .hashCompare
    }

    /// The parent chain, open (`options.openParent`, or opened from `options.parentPath`
    /// and verified), and whether the tracking note vouches for it.
    private static func openParent(pid: Int32, options: CheckpointOptions,
                                   savedNote: DirtyTracking.Note?) throws(CaptureError) -> (ImageChain?, Bool) {
        if let open = options.openParent { return (open, true) }
        guard let parentPath = options.parentPath else { return (nil, false) }
        do throws(ImageError) {
            // The tracking note, if any, says where this process's earlier images are.
            let hints = savedNote.map { Dictionary(uniqueKeysWithValues: $0.paths.compactMap { uuid, path in
                ImageUUID(parsing: uuid).map { ($0, path) }
            }) } ?? [:]
            let parent = try ImageChain.open(path: parentPath, storeDirectories: options.storeDirectories, knownPaths: hints)
            // Every block of the chain is checked — unless the chain ends in this process's last
            // tracked image and every image of it was verified before and is unchanged since.
            let unchanged = savedNote.map { $0.imageUUID == parent.top.header.uuid.description && $0.vouchesFor(parent) } ?? false
            if !unchanged {
                let report = ImageVerifier.verify(path: parentPath, deep: false, storeDirectories: options.storeDirectories)
                if let problem = report.problems.first { throw problem }
            }
            return (parent, unchanged)
        } catch {
            throw CaptureError(.parent, "the parent image cannot be used; checkpoint without --parent or repair it", pid: pid,
                               cause: .image(error))
        }
    }
}

/// The process, every thread seized and stopped (PTRACE_SEIZE, PTRACE_INTERRUPT), owned
/// by the capture. Dropping it thaws the process as it was (every thread detached, the
/// signals it was about to take handed back); ``end(killing:)`` kills it instead, after a
/// migration's image is safe.
struct FrozenProcess: ~Copyable {
    private var traced: TracedProcess
    /// When the last thread stopped (MonotonicClock).
    let frozenAt: UInt64

    /// Seizes every thread of `pid`, refusing a zombie and a thread that is not a process.
    init(seizing pid: Int32) throws(CaptureError) {
        let status: [String: String]
        do throws(SystemCallError) { status = ProcFS.parseStatus(try ProcFS.read("/proc/\(pid)/status")) } catch {
            throw CaptureError.from(error, pid: pid, doing: "read /proc/\(pid)")
        }
        if let state = status["State"], state.hasPrefix("Z") || state.hasPrefix("X") {
            throw CaptureError(.noSuchProcess, "process is a zombie (it has exited; its parent has not reaped it)", pid: pid)
        }
        if let tgid = status["Tgid"], Int32(tgid) != pid {
            throw CaptureError(.unsupported, "\(pid) is a thread of process \(tgid); checkpoint the process", pid: pid)
        }
        do throws(SystemCallError) { traced = try TracedProcess(seizing: pid) } catch {
            throw CaptureError.from(error, pid: pid, doing: "trace the process")
        }
        frozenAt = MonotonicClock.now()
    }

    /// The stopped threads, main thread first.
    var threads: [TracedProcess.StoppedThread] { traced.threads }

    /// Records signals that arrived while injecting, to hand back on detach.
    mutating func noteIntercepted(_ signals: [Int32: [Int32]]) { traced.noteIntercepted(signals) }

    /// Lets the process run on (every thread detached); idempotent.
    mutating func thaw() { traced.detach() }

    /// Ends the freeze: with `killing`, the process is killed (SIGKILL) and its threads'
    /// exits collected; otherwise it is thawed.
    consuming func end(killing: Bool) {
        if killing { traced.kill() } else { traced.detach() }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointImage
import LinuxKernel
import ProcessState
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How to take a checkpoint.
public struct CheckpointOptions: Sendable {
    /// Keep the process running after the image is written (snapshots,
    /// "active versioning"); by default it is killed once its image is safe,
    /// as migration needs.
    public var leaveRunning = false
    /// Write an incremental image against this parent (§8).
    public var parentPath: String?
    /// Or against this chain, already open and trusted: images this process wrote
    /// in a ``TrackingSession``, not verified again. Takes precedence over `parentPath`.
    public var openParent: ImageChain?
    /// Start kernel dirty-page tracking (userfaultfd write-protect, async) so a
    /// later `--parent` checkpoint reads only written pages. Implies leaveRunning.
    public var track = false
    /// Where else to look for the parent's own parents.
    public var storeDirectories: [String] = []
    /// Called with bytes of memory read so far and the total to read.
    public var progress: (@Sendable (UInt64, UInt64) -> Void)?
    /// Writer settings (UUID, producer, frame size).
    public var writer = ImageWriterOptions()

    public init() {}
}

/// What a checkpoint did.
public struct CheckpointSummary: Sendable {
    public var pid: Int32
    public var threads: Int
    public var image: ImageWriteSummary
    /// Bytes of memory read from the process.
    public var memoryRead: UInt64
    /// How long the process was stopped, and the whole capture, in nanoseconds.
    public var freezeNanoseconds: UInt64
    public var totalNanoseconds: UInt64
    /// "full", or for an incremental image how changed pages were found.
    public var trackingMode: String
    public var leftRunning: Bool
    public var warnings: [String]
}

/// Captures a live, unmodified process into an image (issue #3): every
/// thread stopped together with ptrace, memory read with process_vm_readv,
/// the rest from /proc and pidfd_getfd — from outside, so any PID works.
public enum Checkpointer {
    static func now() -> UInt64 { MonotonicClock.now() }

    /// With CCPM_PHASES set, prints how long each phase took (for tuning).
    static let tracePhases = Host.environment("CCPM_PHASES") != nil
    static func phase(_ name: String, since start: UInt64) {
        if tracePhases { StandardStream.error.write("ccpm: phase \(name) at \((Double(now() - start) / 1e6).fixed(2)) ms\n") }
    }

    /// Frame size for this capture (decision 0006): small frames when little will be
    /// stored — an increment, or a process with under 32 MiB of anonymous and shared
    /// memory resident (RssAnon + RssShmem of /proc/PID/status) — else 1 MiB frames.
    static func pagesPerFrame(pid: Int32, incremental: Bool) -> UInt32 {
        if incremental { return ImageFormat.smallImagePagesPerFrame }
        guard let status = try? ProcFS.parseStatus(ProcFS.read("/proc/\(pid)/status")) else {
            return ImageFormat.defaultPagesPerFrame
        }
        let kib = ["RssAnon", "RssShmem"].compactMap { status[$0]?.split(separator: " ").first.flatMap { UInt64($0) } }.reduce(0, +)
        return kib < 32 << 10 ? ImageFormat.smallImagePagesPerFrame : ImageFormat.defaultPagesPerFrame
    }

    /// Pays, on another core, costs that a capture's first use of some code has in a fresh
    /// ccpm — the Swift runtime instantiating metadata and looking up conformances (for
    /// protobuf encoding of repeated records, for dictionaries keyed by page states), the
    /// tables and parsers of /proc files, the parking gadgets in the target's C library
    /// file — while the capture's own thread opens the parent chain and seizes the
    /// process. Of the target, it reads only /proc/PID/maps. (Small process, 30-40
    /// alternating rounds: freeze median 4.4 → 3.6-3.95 ms, total 11.45-12.45 → 11.0-11.15
    /// ms; a 64 MiB one-shot increment, 15.5 → 14.4 ms in ccpm.)
    private static func warmUp(pid: Int32) {
        ParkingGadgets.prepare(pid: pid)
        _ = SyscallRestart(code: KernelErrno.restartSys)
        if let status = try? ProcFS.read("/proc/self/status") { _ = ProcFS.parseStatus(status) }
        if let stat = try? ProcFS.read("/proc/self/stat") { _ = ProcFS.parseStat(stat) }
        if let fdinfo = try? ProcFS.read("/proc/self/fdinfo/0") { _ = ProcFS.parseFdinfo(fdinfo) }
        var counts: [PageState: UInt64] = [:]
        for state in PageState.allCases { counts[state, default: 0] += 1 }
        // Each section's record, with one element in its repeated fields.
        var threads = Ccimg_V1_ThreadList()
        threads.threads = [Ccimg_V1_ThreadState()]
        var handles = Ccimg_V1_HandleTable()
        handles.handles = [Ccimg_V1_Handle()]
        var map = Ccimg_V1_MemoryMap()
        map.vmas = [Ccimg_V1_Vma()]
        var signals = Ccimg_V1_SignalDispositions()
        signals.actions = [Ccimg_V1_SignalAction()]
        var metadata = Ccimg_V1_Metadata()
        metadata.entries = [Ccimg_V1_MetadataEntry()]
        _ = try? threads.serializedBytes() as [UInt8]
        _ = try? handles.serializedBytes() as [UInt8]
        _ = try? map.serializedBytes() as [UInt8]
        _ = try? signals.serializedBytes() as [UInt8]
        _ = try? metadata.serializedBytes() as [UInt8]
        _ = try? Ccimg_V1_ProcessInfo().serializedBytes() as [UInt8]
        _ = try? Ccimg_V1_SyncObjects().serializedBytes() as [UInt8]
        _ = try? Ccimg_V1_SocketTable().serializedBytes() as [UInt8]
    }

    /// The warm-up, started by the first capture of this ccpm (for its process): later ones
    /// (a `ccpm track` session's) find that code warm already, and the gadgets of a C library
    /// file already found. Never joined: it ends in a few milliseconds, and nothing waits for it.
    nonisolated(unsafe) private static var warmingUp: JoinableThread? = nil
    private static let warmingUpLock = Lock()
    private static func startWarmUp(pid: Int32) {
        warmingUpLock.withLock { if warmingUp == nil { warmingUp = JoinableThread { warmUp(pid: pid) } } }
    }

    /// This machine (§3.2 MachineFacts): uname(2), XCR0, CPU count.
    static func machineFacts() -> Ccimg_V1_MachineFacts {
        let names = Machine.names()
        var m = Ccimg_V1_MachineFacts()
        m.arch = names.machine
        m.kernelRelease = names.release
        m.hostname = names.nodename
        m.xsaveFeatures = Machine.xsaveFeatures
        m.cpuCount = UInt32(Host.onlineProcessors)
        return m
    }

    /// Seizes every thread of `pid`, refusing a zombie and a thread that is not a process.
    static func seize(_ pid: Int32) throws(CaptureError) -> TracedProcess {
        do {
            let status = ProcFS.parseStatus(try ProcFS.read("/proc/\(pid)/status"))
            if let state = status["State"], state.hasPrefix("Z") || state.hasPrefix("X") {
                throw CaptureError(.noSuchProcess, "process is a zombie (it has exited; its parent has not reaped it)", pid: pid)
            }
            if let tgid = status["Tgid"], Int32(tgid) != pid {
                throw CaptureError(.unsupported, "\(pid) is a thread of process \(tgid); checkpoint the process", pid: pid)
            }
        } catch let error as SystemCallError {
            throw CaptureError.from(error, pid: pid, doing: "read /proc/\(pid)")
        } catch let error as CaptureError {
            throw error
        } catch {
            throw CaptureError(.kernel, "\(error)", pid: pid)
        }
        do { return try TracedProcess(seizing: pid) } catch {
            throw CaptureError.from(error, pid: pid, doing: "trace the process")
        }
    }

    /// Checkpoints `pid` into `output`. On any failure the process is left
    /// running as it was (detached, nothing injected) and nothing appears at
    /// a file output's path.
    public static func checkpoint(pid: Int32, to output: consuming ImageOutput,
                                  options: CheckpointOptions = CheckpointOptions()) throws(CaptureError) -> CheckpointSummary {
        let start = now()
        guard pid > 0 else { throw CaptureError(.noSuchProcess, "\(pid) is not a process ID", pid: pid) }
        if Glibc.kill(pid, 0) != 0 {
            let e = errno
            throw e == ESRCH ? CaptureError(.noSuchProcess, "no such process", pid: pid)
                : CaptureError.from(SystemCallError("kill(0)", errno: e), pid: pid, doing: "signal the process")
        }
        guard pid != getpid() else { throw CaptureError(.unsupported, "ccpm cannot checkpoint itself", pid: pid) }
        startWarmUp(pid: pid)

        // Everything that can fail without touching the process comes first.
        // This process's tracking note (from an earlier --track), read once.
        let savedNote = DirtyTracking.Note.load(pid: pid)
        var parent: ImageChain? = options.openParent
        // Whether the note's record of the parent chain (identities, paths) still holds.
        var noteHoldsChain = options.openParent != nil
        if parent == nil, let parentPath = options.parentPath {
            do throws(ImageError) {
                // The tracking note, if any, says where this process's earlier images are.
                let hints = savedNote.map { Dictionary(uniqueKeysWithValues: $0.paths.compactMap { uuid, path in
                    ImageUUID(parsing: uuid).map { ($0, path) }
                }) } ?? [:]
                parent = try ImageChain.open(path: parentPath, storeDirectories: options.storeDirectories, knownPaths: hints)
                // Every block of the chain is checked — unless the chain ends in this process's last
                // tracked image and every image of it was verified before and is unchanged since.
                let unchanged = savedNote.map { $0.imageUUID == parent!.top.header.uuid.description && $0.vouchesFor(parent!) } ?? false
                noteHoldsChain = unchanged
                if !unchanged {
                    let report = ImageVerifier.verify(path: parentPath, deep: false, storeDirectories: options.storeDirectories)
                    if let problem = report.problems.first { throw problem }
                }
            } catch {
                throw CaptureError(.parent, "the parent image cannot be used; checkpoint without --parent or repair it", pid: pid,
                                   cause: error.description)
            }
        }
        let pidfd = Int32(cc_pidfd_open(pid))
        guard pidfd >= 0 else {
            throw CaptureError.from(SystemCallError("pidfd_open", errno: -pidfd), pid: pid, doing: "open the process")
        }
        defer { close(pidfd) }
        var writerOptions = options.writer
        writerOptions.uuid = ImageUUID.random()     // every image its own identity
        writerOptions.createdUnixNanoseconds = Int64(Date().timeIntervalSince1970 * 1_000_000_000)
        writerOptions.machine = machineFacts()
        if writerOptions.producerName == "ccimg" { writerOptions.producerName = "ccpm" }
        writerOptions.pagesPerFrame = pagesPerFrame(pid: pid, incremental: parent != nil)
        let writer: ImageWriter
        do { writer = try ImageWriter(output: output, options: writerOptions, parent: parent) } catch {
            throw CaptureError.from(error, pid: pid)
        }

        // Kernel tracking applies when the parent is the last tracked image of this very process.
        let existing = savedNote.flatMap { $0.isLive(pid: pid) ? $0 : nil }
        let note = existing.flatMap { n in parent.map { $0.top.header.uuid.description == n.imageUUID } == true ? n : nil }
        let mode = parent == nil ? "full" : note != nil ? "uffd-wp" : "hash-compare"

        // Freeze.
        phase("prepared", since: start)
        var traced = try seize(pid)
        let frozenAt = now()
        phase("seized", since: start)
        var warnings: [String] = []
        do {
            // Memory first, so that its frames are compressed on the other cores while the rest
            // of the state is read; the stacks are found from the threads' stack pointers.
            let target = CaptureTarget(pid: pid, threads: traced.threads)
            var records = CapturedRecords()
            for kind in StateKinds.all { try kind.captureStopped(target, into: &records) }
            var stackPointers: [Int32: UInt64] = [:]
            for state in records.threads.threads { stackPointers[state.tid] = UserRegisters.stackPointer(of: state.generalRegisters) }
            phase("threads", since: start)
            var memory = MemoryCapture(pid: pid)
            let regions = try memory.regions(stackPointers: stackPointers, mainThread: pid)
            phase("regions", since: start)
            let total = regions.reduce(UInt64(0)) { $0 + ($1.skip ? 0 : $1.vma.end - $1.vma.start) }
            let progress = options.progress
            var untracked: [(UInt64, UInt64)] = []
            let pagemap = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
            defer { if pagemap >= 0 { close(pagemap) } }
            if var spent = note {
                // Reading the written pages re-arms the tracker (PAGEMAP_SCAN with WP): were this
                // capture to fail after it, an increment on the parent would miss those pages. So
                // the note stops vouching for the parent first; it names the new image on success.
                spent.imageUUID = ""
                try spent.save(pid: pid, pruning: false)
            }
            let written: ((MemoryCapture.Region) throws -> [Range<UInt64>]?)? = note == nil ? nil : { region in
                guard DirtyTracking.isTrackable(region) else { return nil }
                let pages = try DirtyTracking.writtenPages(pagemap: pagemap, start: region.vma.start, end: region.vma.end)
                if pages == nil { untracked.append((region.vma.start, region.vma.end - region.vma.start)) }
                return pages
            }
            let read = try memory.writePages(regions, to: writer, parent: parent, written: written,
                                             progress: progress.map { p in { p($0, total) } })
            try writer.endPages()
            phase("memory", since: start)

            // Injected reads: they resume and re-stop the threads they use, many times over,
            // so no compression starts meanwhile. A new tracker's userfaultfd is created
            // with the other injected calls.
            let newTracker = options.track && note == nil && existing == nil
            let injected = try writer.withCompressionPaused { () throws(SystemCallError) -> InjectedSession.Outcome in
                try InjectedSession.run(target, into: &records, createUserfaultfd: newTracker)
            }
            traced.noteIntercepted(injected.interceptedSignals)
            phase("injected", since: start)
            for kind in StateKinds.all { try kind.captureAfterInjection(target, into: &records) }
            phase("process", since: start)
            var handles = HandleCapture(pid: pid, pidfd: pidfd)
            try handles.captureAll()
            records.warnings += handles.warnings
            var sync = handles.sync
            sync.intervalTimers = records.sync.intervalTimers
            sync.posixTimers = records.sync.posixTimers
            records.sync = sync
            records.handles = handles.handles
            records.sockets = handles.sockets
            records.console = handles.console()
            phase("handles", since: start)
            warnings += records.warnings

            // Tracking for the next increment: new VMAs join an existing tracker, or a tracker starts.
            var newNote: DirtyTracking.Note? = nil
            if options.track {
                if let note {
                    try DirtyTracking.protectNew(pid: pid, pidfd: pidfd, note: note, ranges: untracked)
                    newNote = note
                } else if let existing {
                    // Tracking already runs in this process: start its count afresh from this image.
                    let all = regions.filter(DirtyTracking.isTrackable).map { ($0.vma.start, $0.vma.end - $0.vma.start) }
                    try DirtyTracking.protectNew(pid: pid, pidfd: pidfd, note: existing, ranges: all)
                    newNote = existing
                } else {
                    newNote = try DirtyTracking.start(pid: pid, pidfd: pidfd, userfaultfd: injected.userfaultfd, regions: regions)
                }
            }
            // A process that lives on is thawed as soon as its state is read: every page is
            // already copied into the writer, and a failure from here on leaves it running as
            // it was. A migrating process stays frozen until its image is safely on disk.
            let threadCount = traced.threads.count
            let keep = options.leaveRunning || options.track
            var thawedAt: UInt64? = nil
            if keep {
                traced.detach()
                thawedAt = now()
                phase("thawed", since: start)
            }
            // The sections follow the frames (any order is valid, §2).
            for section in CapturedRecords.sections { try section.write(records, writer) }
            var metadata = Ccimg_V1_Metadata()
            metadata.entries = [("tracking-mode", mode),
                                ("captured-by", "ccpm checkpoint")].map { key, value in
                var e = Ccimg_V1_MetadataEntry()
                e.key = key
                e.value = value
                return e
            }
            try writer.addSection(.metadata, metadata)
            let image = try writer.finish()
            phase("finished", since: start)
            if var newNote {
                newNote.imageUUID = image.uuid.description
                // The parent chain was verified (or vouched for) above; the new image as it was written.
                // Where the note already recorded a parent as verified, that record stands (as it was
                // when verified, and without a stat and a realpath per image at every increment).
                let known = noteHoldsChain ? savedNote : nil
                let written = (parent?.images ?? []).map { ($0.header.uuid.description, $0.path) }
                    + [(newNote.imageUUID, image.path ?? "")]
                newNote.verified = Dictionary(uniqueKeysWithValues: written.map { uuid, path in
                    (uuid, known?.verified[uuid] ?? DirtyTracking.Note.identity(ofFile: path))
                })
                newNote.paths = Dictionary(uniqueKeysWithValues: written.compactMap { uuid, path in
                    if let recorded = known?.paths[uuid] { return (uuid, recorded) }
                    return realpath(path, nil).map { resolved in
                        defer { free(resolved) }
                        return (uuid, String(cString: resolved))
                    }
                })
                // Notes of processes that are gone are swept when a tracker starts, not at every increment.
                try newNote.save(pid: pid, pruning: note == nil)
            }
            if !keep {
                traced.kill()
                thawedAt = now()
            }
            let end = now()
            return CheckpointSummary(pid: pid, threads: threadCount, image: image, memoryRead: read,
                                     freezeNanoseconds: thawedAt! - frozenAt, totalNanoseconds: end - start,
                                     trackingMode: mode, leftRunning: keep, warnings: warnings)
        } catch let error as CaptureError {
            throw error
        } catch let error as StateFailure {
            switch error {
            case .system(let e): throw CaptureError.from(e, pid: pid, doing: "read the process state")
            case .image(let e): throw CaptureError.from(e, pid: pid)
            case .state(let e): throw CaptureError(.unsupported, e.message, pid: pid)
            }
        } catch let error as SystemCallError {
            throw CaptureError.from(error, pid: pid, doing: "read the process state")
        } catch let error as ImageError {
            throw CaptureError.from(error, pid: pid)
        } catch {
            throw CaptureError(.kernel, "capture failed", pid: pid, cause: "\(error)")
        }
        // `traced` detaches in its deinit on every path that did not kill or detach it.
    }
}

import CheckpointImage
import LinuxKernel
import ProcessState
import Synchronization
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

/// How an image's pages were chosen: its `tracking-mode` metadata entry and the
/// `ccpm` summary's "tracking" (spec/image-format.md §5.3 metadata).
public enum TrackingMode: String, Sendable, CaseIterable {
    /// A full image: every populated page is read.
    case full
    /// An increment whose changed pages were found by comparing page hashes with the parent.
    case hashCompare = "hash-compare"
    /// An increment whose changed pages the kernel reported (userfaultfd write-protect, async).
    case uffdWP = "uffd-wp"
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
    /// Full, or for an incremental image how changed pages were found.
    public var tracking: TrackingMode
    /// The tracking mode as the image's metadata and `ccpm` print it.
    public var trackingMode: String { tracking.rawValue }
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
    /// process. Of the target, it reads only /proc/PID/maps. It shortens the freeze and the
    /// whole capture (measured: spec/decisions/0019-kinds-and-steps.md, "Figures").
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
    /// Guarded by a `Mutex` (spec/decisions/0017-threading-model.md): concurrent captures
    /// (tests) start it once.
    private static let warmingUp = Mutex<JoinableThread?>(nil)
    static func startWarmUp(pid: Int32) {
        warmingUp.withLock { thread in if thread == nil { thread = JoinableThread { warmUp(pid: pid) } } }
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

    /// Checkpoints `pid` into `output`. On any failure the process is left
    /// running as it was (detached, nothing injected) and nothing appears at
    /// a file output's path.
    ///
    /// The capture is a plan (``CapturePlan``: every check made before the process is
    /// touched), a frozen process (``FrozenProcess``: dropping it thaws the process), the
    /// state read by every kind of ``StateKinds`` with the memory, and the sections of
    /// ``CapturedRecords/sections`` (spec/decisions/0019-kinds-and-steps.md).
    public static func checkpoint(pid: Int32, to output: consuming ImageOutput,
                                  options: CheckpointOptions = CheckpointOptions()) throws(CaptureError) -> CheckpointSummary {
        let start = now()
        let plan = try CapturePlan(pid: pid, output: output, options: options)
        phase("prepared", since: start)
        let frozen = try FrozenProcess(seizing: pid)
        phase("seized", since: start)
        do throws(StateFailure) {
            return try capture(plan, frozen, start: start)
        } catch {
            throw CaptureError.from(error, pid: pid, doing: "read the process state")
        }
    }

    /// The capture of a frozen process: its state, tracking for the next increment, the
    /// thaw (as soon as the state is read, for a process that lives on), the sections, the
    /// tracking note; then a migrating process is killed. `frozen` thaws on every failure.
    static func capture(_ plan: borrowing CapturePlan, _ frozen: consuming FrozenProcess, start: UInt64) throws(StateFailure) -> CheckpointSummary {
        var state = try readState(plan, &frozen, start: start)
        // State this version cannot bring back: a capture that ends the process refuses
        // (the process thaws, nothing is written); one that leaves it running says so.
        if !state.records.unrestorable.isEmpty {
            let reasons = state.records.unrestorable.joined(separator: "; ")
            guard plan.keepsRunning else {
                throw .state(StateError(.unsupported, "\(reasons): the process is left running and no image is written "
                                        + "(--leave-running captures what can be saved)"))
            }
            state.records.warnings.append("this image cannot be restored: \(reasons)")
        }
        // Tracking for the next increment: new VMAs join an existing tracker, or a tracker starts.
        let newNote = try startTracking(plan, state)
        // A process that lives on is thawed as soon as its state is read: every page is
        // already copied into the writer, and a failure from here on leaves it running as
        // it was. A migrating process stays frozen until its image is safely on disk.
        let threadCount = frozen.threads.count
        let keep = plan.keepsRunning
        var thawedAt: UInt64? = nil
        if keep {
            frozen.thaw()
            thawedAt = now()
            phase("thawed", since: start)
        }
        // The sections follow the frames (any order is valid, §2).
        state.records.metadata = [("tracking-mode", plan.mode.rawValue), ("captured-by", "ccpm checkpoint")]
        let image: ImageWriteSummary
        do throws(ImageError) {
            for section in CapturedRecords.sections { try section.write(state.records, plan.writer) }
            image = try plan.writer.finish()
        } catch { throw .image(error) }
        phase("finished", since: start)
        if let newNote { try record(newNote, of: image, plan) }
        let frozenAt = frozen.frozenAt
        frozen.end(killing: !keep)
        if !keep { thawedAt = now() }
        let end = now()
        return CheckpointSummary(pid: plan.pid, threads: threadCount, image: image, memoryRead: state.memoryRead,
                                 freezeNanoseconds: thawedAt! - frozenAt, totalNanoseconds: end - start,
                                 tracking: plan.mode, leftRunning: keep, warnings: state.records.warnings)
    }
}

import CheckpointImage
import LinuxKernel
import ProcessState

/// What the state stages of a capture read: the records of every kind, and the
/// memory's regions (for tracking) and totals.
struct CapturedState {
    var records = CapturedRecords()
    var regions: [MemoryRegion] = []
    /// Tracked regions the kernel did not track (new VMAs): they join the tracker.
    var untracked: [(UInt64, UInt64)] = []
    /// Bytes of memory read from the process.
    var memoryRead: UInt64 = 0
    /// The userfaultfd created in the process for a new tracker, as its descriptor there.
    var userfaultfd: Int32?
}

extension Checkpointer {
    /// The stages that read the frozen process, in the order of the CCPM_PHASES phases:
    /// threads, regions, memory (first, so that its frames are compressed on the other cores
    /// while the rest is read; the stacks are found from the threads' stack pointers),
    /// injected, process, handles.
    static func readState(_ plan: borrowing CapturePlan, _ frozen: inout FrozenProcess, start: UInt64) throws(StateFailure) -> CapturedState {
        let pid = plan.pid
        let target = CaptureTarget(pid: pid, threads: frozen.threads, pidfd: plan.process.descriptor)
        var state = CapturedState()
        for kind in StateKinds.all { try kind.captureStopped(target, into: &state.records) }
        phase("threads", since: start)
        try readMemory(plan, &state, start: start)

        // Injected reads: they resume and re-stop the threads they use, many times over,
        // so no compression starts meanwhile. A new tracker's userfaultfd is created
        // with the other injected calls.
        let startsTracker = plan.startsTracker
        let injected: InjectedSession.Outcome
        do throws(SystemCallError) {
            injected = try plan.writer.withCompressionPaused { () throws(SystemCallError) -> InjectedSession.Outcome in
                try InjectedSession.run(target, into: &state.records, createUserfaultfd: startsTracker)
            }
        } catch { throw .system(error) }
        state.userfaultfd = injected.userfaultfd
        frozen.noteIntercepted(injected.interceptedSignals)
        phase("injected", since: start)
        // The process facts, then the descriptors (``DescriptorsKind``, last in the table):
        // the phase "process" ends where the descriptors' ("handles") begins.
        for kind in StateKinds.all {
            if ObjectIdentifier(kind) == ObjectIdentifier(DescriptorsKind.self) { phase("process", since: start) }
            try kind.captureAfterInjection(target, into: &state.records)
        }
        phase("handles", since: start)
        return state
    }

    /// The memory map and pages (``MemoryKind``, through the kinds' table), written into
    /// the image's frames; for an increment on a tracked parent, only the pages the kernel
    /// saw written (``DirtyTracking/WrittenPages``).
    static func readMemory(_ plan: borrowing CapturePlan, _ state: inout CapturedState, start: UInt64) throws(StateFailure) {
        let pid = plan.pid
        let target = CaptureTarget(pid: pid, threads: [])
        let note = plan.note
        var scanner: DirtyTracking.WrittenPages? = nil
        if note != nil {
            do throws(SystemCallError) { scanner = try DirtyTracking.WrittenPages(pid: pid) } catch { throw .system(error) }
        }
        var written: ((MemoryRegion) throws(SystemCallError) -> [Range<UInt64>]?)? = nil
        if let scanner {
            written = { (region: MemoryRegion) throws(SystemCallError) -> [Range<UInt64>]? in try scanner.of(region) }
        }
        var memory = MemoryCaptureContext(
            writer: plan.writer, parent: plan.parent,
            written: written,
            progress: plan.options.progress,
            afterRegions: { (_) throws(StateFailure) in
                phase("regions", since: start)
                if var spent = note {
                    // Reading the written pages re-arms the tracker (PAGEMAP_SCAN with WP): were this
                    // capture to fail after it, an increment on the parent would miss those pages. So
                    // the note stops vouching for the parent first; it names the new image on success.
                    spent.imageUUID = ""
                    do throws(SystemCallError) { try spent.save(pid: pid, pruning: false) } catch { throw .system(error) }
                }
            })
        for kind in StateKinds.all { try kind.captureMemory(target, &memory, into: &state.records) }
        state.memoryRead = memory.bytesRead
        state.regions = memory.regions
        state.untracked = scanner?.untracked ?? []
        phase("memory", since: start)
    }

    /// With `--track`: new VMAs join the tracker this increment read, or the tracker
    /// already in the process starts its count afresh, or a tracker starts (on the
    /// userfaultfd injection created). The note to save once the image is written.
    static func startTracking(_ plan: borrowing CapturePlan, _ state: CapturedState) throws(StateFailure) -> DirtyTracking.Note? {
        guard plan.options.track else { return nil }
        let pid = plan.pid, pidfd = plan.process.descriptor
        if let note = plan.note {
            do throws(SystemCallError) { try DirtyTracking.protectNew(pid: pid, pidfd: pidfd, note: note, ranges: state.untracked) } catch { throw .system(error) }
            return note
        }
        if let existing = plan.existing {
            // Tracking already runs in this process: start its count afresh from this image.
            let all = state.regions.filter(DirtyTracking.isTrackable).map { ($0.vma.start, $0.vma.end - $0.vma.start) }
            do throws(SystemCallError) { try DirtyTracking.protectNew(pid: pid, pidfd: pidfd, note: existing, ranges: all) } catch { throw .system(error) }
            return existing
        }
        let userfaultfd = state.userfaultfd, regions = state.regions
        return try DirtyTracking.start(pid: pid, pidfd: pidfd, userfaultfd: userfaultfd, regions: regions)
    }

    /// Saves the tracking note naming the new image, with where each image of its chain is
    /// and how it looked when verified.
    static func record(_ note: DirtyTracking.Note, of image: ImageWriteSummary, _ plan: borrowing CapturePlan) throws(StateFailure) {
        var newNote = note
        newNote.imageUUID = image.uuid.description
        // The parent chain was verified (or vouched for) above; the new image as it was written.
        // Where the note already recorded a parent as verified, that record stands (as it was
        // when verified, and without a stat and a realpath per image at every increment).
        let known = plan.noteHoldsChain ? plan.savedNote : nil
        let written = (plan.parent?.images ?? []).map { ($0.header.uuid.description, $0.path) }
            + [(newNote.imageUUID, image.path ?? "")]
        newNote.verified = Dictionary(uniqueKeysWithValues: written.map { uuid, path in
            (uuid, known?.verified[uuid] ?? DirtyTracking.Note.identity(ofFile: path))
        })
        newNote.paths = Dictionary(uniqueKeysWithValues: written.compactMap { uuid, path in
            if let recorded = known?.paths[uuid] { return (uuid, recorded) }
            return ProcessHandle.resolvedPath(path).map { (uuid, $0) }
        })
        // Notes of processes that are gone are swept when a tracker starts, not at every increment.
        let pid = plan.pid, pruning = plan.note == nil
        do throws(SystemCallError) { try newNote.save(pid: pid, pruning: pruning) } catch { throw .system(error) }
    }
}

import CheckpointImage
import LinuxKernel

/// Why a kind of state could not be captured or restored, with its cause as a typed
/// value (a system call, the image, or the state itself), never as text. It is also
/// the `Cause` of a capture's and a restore's error (`CaptureError.Cause`,
/// `RestoreError.Cause`): one classification of causes (issue #13, point 5).
public enum StateFailure: Error, Sendable, CustomStringConvertible {
    /// A system call failed (its errno classifies the failure).
    case system(SystemCallError)
    /// The image is damaged or lacks what the state needs.
    case image(ImageError)
    /// The state itself cannot be captured or brought back (``StateError``).
    case state(StateError)

    /// The cause's own description.
    public var description: String {
        switch self {
        case .system(let e): e.description
        case .image(let e): e.description
        case .state(let e): e.description
        }
    }
}

/// The records a capture collects, section by section (spec/image-format.md §5.3),
/// filled by the kinds of ``StateKinds/all`` and written by ``sections``.
package struct CapturedRecords: Sendable {
    /// §5.3 process: identity, credentials, mm fields, auxv, rlimits.
    package var process = Ccimg_V1_ProcessInfo()
    /// §5.3 threads: registers, masks, pending signals, alternate stacks.
    package var threads = Ccimg_V1_ThreadList()
    /// §5.3 signals: dispositions.
    package var signals = Ccimg_V1_SignalDispositions()
    /// §5.3 sync objects: timers, and the descriptors' objects.
    package var sync = Ccimg_V1_SyncObjects()
    /// §5.3 handles and sockets, and the console history (the descriptors' records).
    package var handles = Ccimg_V1_HandleTable()
    package var sockets: [Ccimg_V1_Socket] = []
    package var console: Ccimg_V1_Console? = nil
    /// §5.3 metadata: key and value of each entry, in order.
    package var metadata: [(key: String, value: String)] = []
    /// What was captured only in part, for the summary.
    package var warnings: [String] = []
    /// What was captured but cannot be restored by this version, one reason each: a
    /// capture that would end the process refuses and leaves it running instead.
    package var unrestorable: [String] = []

    /// Empty records.
    package init() {}
}

/// One section of the image and how it comes out of the records. The capture writes
/// every producer of ``CapturedRecords/sections`` in order after the page frames;
/// adding a section is one entry there, nothing in the orchestrator.
package struct SectionProducer: Sendable {
    /// The section (spec/image-format.md §5).
    package let kind: SectionKind
    /// Writes the section, or nothing when the records have none of it.
    package let write: @Sendable (CapturedRecords, ImageWriter) throws(ImageError) -> Void
}

extension CapturedRecords {
    /// The sections of a capture, in the order they go into the image (any order is
    /// valid, §2; this one is kept so images stay byte-identical).
    package static let sections: [SectionProducer] = [
        SectionProducer(kind: .process) { records, writer throws(ImageError) in try writer.addSection(.process, records.process) },
        SectionProducer(kind: .threads) { records, writer throws(ImageError) in try writer.addSection(.threads, records.threads) },
        SectionProducer(kind: .syncObjects) { records, writer throws(ImageError) in try writer.addSection(.syncObjects, records.sync) },
        SectionProducer(kind: .handles) { records, writer throws(ImageError) in
            try writer.addSection(.handles, records.handles)
        },
        SectionProducer(kind: .sockets) { records, writer throws(ImageError) in
            var table = Ccimg_V1_SocketTable()
            table.sockets = records.sockets
            try writer.addSection(.sockets, table)
        },
        SectionProducer(kind: .signals) { records, writer throws(ImageError) in try writer.addSection(.signals, records.signals) },
        SectionProducer(kind: .console) { records, writer throws(ImageError) in
            if let console = records.console { try writer.addSection(.console, console) }
        },
        SectionProducer(kind: .metadata) { records, writer throws(ImageError) in
            var metadata = Ccimg_V1_Metadata()
            metadata.entries = records.metadata.map { key, value in
                var e = Ccimg_V1_MetadataEntry()
                e.key = key
                e.value = value
                return e
            }
            try writer.addSection(.metadata, metadata)
        },
    ]
}

/// The stopped process a kind's capture reads from outside (ptrace, /proc).
package struct CaptureTarget: Sendable {
    /// The process.
    package let pid: Int32
    /// Its threads as the seize found them, main thread first.
    package let threads: [TracedProcess.StoppedThread]
    /// Its pidfd (pidfd_open(2), the capture plan's), for pidfd_getfd(2); -1 when none.
    package let pidfd: Int32

    /// The target `pid` with its stopped `threads` and its `pidfd`.
    package init(pid: Int32, threads: [TracedProcess.StoppedThread], pidfd: Int32 = -1) {
        self.pid = pid
        self.threads = threads
        self.pidfd = pidfd
    }
}

/// What a kind's restore works on: the new process, traced, with the remote calls
/// into it, and the image's records.
package struct RestoreContext {
    /// The process as traced here.
    package let pid: Int32
    /// System calls into the process, with their scratch area.
    package var remote: RemoteCalls
    /// Image TID → traced TID, for the threads created so far.
    package var traced: [Int32: Int32]
    /// The image's records (§5.3).
    package let process: Ccimg_V1_ProcessInfo
    package let threads: [Ccimg_V1_ThreadState]
    package let signals: Ccimg_V1_SignalDispositions
    package let sync: Ccimg_V1_SyncObjects
    /// What was restored only in part, for the summary.
    package var warnings: [String] = []

    /// A context for the process `pid`, traced, restoring those records.
    package init(pid: Int32, remote: RemoteCalls, process: Ccimg_V1_ProcessInfo, threads: [Ccimg_V1_ThreadState],
                 signals: Ccimg_V1_SignalDispositions, sync: Ccimg_V1_SyncObjects) {
        self.pid = pid
        self.remote = remote
        self.process = process
        self.threads = threads
        self.signals = signals
        self.sync = sync
        traced = [process.pid: pid]
    }

    /// Notes what was restored only in part.
    package mutating func warn(_ text: String) { warnings.append(text) }

    /// Runs `body` and gives back the scratch arguments it allocated, on every path.
    package mutating func withScratch<R, E: Error>(_ body: (inout RestoreContext) throws(E) -> R) throws(E) -> R {
        let mark = remote.scratchMark
        defer { remote.release(to: mark) }
        return try body(&self)
    }
}

/// One kind of process state: its capture and its restore side by side, in one file
/// under Sources/ProcessState (issue #13, point 3; spec/decisions/0019-kinds-and-steps.md).
/// The orchestrators run each stage over every kind of ``StateKinds/all``, in table
/// order; a kind implements the stages it has (the others do nothing).
///
/// Capture stages, in order: ``captureStopped(_:into:)`` (the "threads" phase), then the
/// memory, then ``captureInjected(_:_:into:)`` and ``captureInThread(_:into:)`` (the
/// "injected" phase), then ``captureAfterInjection(_:into:)`` (the "process" phase).
/// Restore stages: ``restoreProcessWide(into:)`` (the step "restore signal dispositions,
/// timers, cwd, umask and rlimits") and ``restoreThreads(into:)`` (the step "restore the
/// threads' state").
package protocol StateKind: Sendable {
    /// What the kind is, for documentation and messages ("signal dispositions").
    static var name: String { get }
    /// The image sections its records go into.
    static var sections: [SectionKind] { get }
    /// Reads from outside, every thread stopped, before memory.
    static func captureStopped(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure)
    /// Runs calls in the first parked thread (`remote`'s ``RemoteCalls/defaultThread``,
    /// results in allocations of its data area, decision 0020); `remote` is nil when no
    /// thread can take calls (the process is stopped by a signal).
    static func captureInjected(_ target: CaptureTarget, _ remote: inout RemoteCalls?, into records: inout CapturedRecords) throws(SystemCallError)
    /// Runs calls in each parked thread (`remote`'s ``RemoteCalls/defaultThread``), for
    /// what a thread can only ask of its own.
    static func captureInThread(_ remote: inout RemoteCalls, into records: inout CapturedRecords) throws(SystemCallError)
    /// Reads from outside, after injection.
    static func captureAfterInjection(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure)
    /// Restores process-wide state, from the main thread, before other threads exist.
    static func restoreProcessWide(into context: inout RestoreContext) throws(StateFailure)
    /// Restores per-thread state, every thread created, before registers are set.
    static func restoreThreads(into context: inout RestoreContext) throws(StateFailure)
    /// Recreates file descriptors from the image's open file table `files`, after the
    /// memory and mm fields, before the process-wide state (the step "recreate the
    /// file descriptors").
    static func restoreDescriptors(_ files: OpenFileTable, into context: inout RestoreContext) throws(StateFailure)
    /// Reads the memory map and pages into the image, after ``captureStopped(_:into:)``
    /// and before the injected stages (the "regions" and "memory" phases, decision 0011).
    static func captureMemory(_ target: CaptureTarget, _ memory: inout MemoryCaptureContext,
                              into records: inout CapturedRecords) throws(StateFailure)
    /// Maps the image's memory into the new process (the step "map the memory").
    static func mapMemory(_ memory: MemoryRestoreContext, into context: inout RestoreContext) throws(StateFailure)
    /// Writes the chain's pages into the mapped memory (the step "write the pages").
    static func writePages(_ memory: inout MemoryRestoreContext, into context: inout RestoreContext) throws(StateFailure)
}

extension StateKind {
    package static func captureStopped(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure) {}
    package static func captureInjected(_ target: CaptureTarget, _ remote: inout RemoteCalls?, into records: inout CapturedRecords) throws(SystemCallError) {}
    package static func captureInThread(_ remote: inout RemoteCalls, into records: inout CapturedRecords) throws(SystemCallError) {}
    package static func captureAfterInjection(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure) {}
    package static func restoreProcessWide(into context: inout RestoreContext) throws(StateFailure) {}
    package static func restoreThreads(into context: inout RestoreContext) throws(StateFailure) {}
    package static func restoreDescriptors(_ files: OpenFileTable, into context: inout RestoreContext) throws(StateFailure) {}
    package static func captureMemory(_ target: CaptureTarget, _ memory: inout MemoryCaptureContext,
                                      into records: inout CapturedRecords) throws(StateFailure) {}
    package static func mapMemory(_ memory: MemoryRestoreContext, into context: inout RestoreContext) throws(StateFailure) {}
    package static func writePages(_ memory: inout MemoryRestoreContext, into context: inout RestoreContext) throws(StateFailure) {}
}

/// The table of kinds: the orchestrators find every kind of state here. Adding a kind
/// is one file and one entry; the order is the order of every stage.
package enum StateKinds {
    /// Every kind, in stage order (threads first: their registers name the stacks; the
    /// process's credentials are set after the threads' own state).
    package static let all: [any StateKind.Type] = [
        ThreadStateKind.self, ProcessFactsKind.self, SignalDispositionsKind.self, TimersKind.self,
        MemoryKind.self,
        DescriptorsKind.self,
    ]
}

import LinuxKernel
import Synchronization

/// The writer's frame buffers (§6.1) and the threads that compress them: a fixed
/// set of slots, each with room for one frame's pages and its compressed form. A
/// slot is filled by the writer, compressed by a worker, then written in order and
/// given back.
///
/// Threads (spec/decisions/0017-threading-model.md): the writer's thread and one
/// worker per core but the writer's. They share ``State``, guarded by one
/// ``ConditionMutex`` (workers wait for jobs, the writer for a compressed frame);
/// a slot's bytes belong to whoever holds the slot number — the writer while it
/// fills or writes it, one worker while it compresses it — so they need no lock.
public final class FramePool: Sendable {
    /// A frame in a slot: `count` pages from ordinal `first`. Queued for compression,
    /// `length` is the bytes of its pages; once compressed, the bytes in the slot's output.
    struct Frame {
        var slot: Int
        var length: Int
        var first: UInt64
        var count: UInt32
    }

    /// A frame queued for compression, with its sequence number in the image.
    private struct Job {
        var sequence: Int
        var frame: Frame
    }

    /// One thread's zstd context, shareable so the writer's can be made by a worker.
    private final class CompressorBox: @unchecked Sendable {
        let compressor: ZstdCompressor
        init(_ compressor: consuming ZstdCompressor) { self.compressor = compressor }
    }

    /// What the writer and the workers share, under ``state``'s lock.
    private struct State {
        /// Whether a writer uses the pool now (one at a time).
        var inUse = false
        var free: [Int]
        /// Frames waiting for a worker, in order.
        var jobs: [Job] = []
        /// Compressed frames by sequence number, until the writer takes them.
        var done: [Int: Frame] = [:]
        var stopping = false
        /// Workers compressing now: at most one per core but the writer's. The writer's thread
        /// reads pages, and during a capture the process is frozen meanwhile, so compression
        /// never crowds it out; when it waits for a frame, it compresses queued frames itself
        /// (``waitCompressing(for:)``).
        var running = 0
        /// While set, workers start no compression; see ``ImageWriter/withCompressionPaused(_:)``.
        var paused = false
        /// The writer's own zstd context, made by the first worker as it starts (or by the
        /// writer, if it needs it first).
        var writerCompressor: CompressorBox?
    }

    let frameBytes: Int
    let level: Int32
    private let slots: Int
    private let outputBytes: Int
    /// Pages of every slot, then compressed frames of every slot: two regions, so that
    /// the huge pages touched hold only bytes in use.
    private let pages: PageBuffer
    private let outputs: PageBuffer
    private let state: ConditionMutex<State>
    /// The workers, one per core but the writer's, each with its own zstd context,
    /// started with the pool and joined when it ends.
    private let workers = Mutex(Workers())
    /// The worker threads; only set once and joined (a JoinableThread is not used otherwise).
    private struct Workers: @unchecked Sendable { var threads: [JoinableThread] = [] }
    private let workerLimit = max(1, Host.onlineProcessors - 1)

    init(slots: Int, frameBytes: Int, level: Int32) {
        self.frameBytes = frameBytes
        self.level = level
        self.slots = slots
        outputBytes = (Zstd.compressBound(frameBytes) + 4095) / 4096 * 4096
        pages = PageBuffer(bytes: slots * frameBytes)
        outputs = PageBuffer(bytes: slots * outputBytes)
        state = ConditionMutex(State(free: Array((0..<slots).reversed())))
        // The workers start now, so that their threads exist, their contexts are sized
        // and the first slots are faulted in (figures: spec/decisions/0017-threading-model.md)
        // before the first frame: in a capture, while the process is being seized
        // rather than inside its freeze.
        let unowned = Unmanaged.passUnretained(self)
        let started = (0..<workerLimit).map { worker in
            JoinableThread { unowned.takeUnretainedValue().work(first: worker == 0) }
        }
        workers.withLock { $0 = Workers(threads: started) }
    }

    deinit {
        state.withLock { $0.stopping = true }
        state.broadcast()
        workers.withLock { $0.threads.removeAll() }    // joins them
    }

    /// A writer starts using the pool.
    func adopt() {
        state.withLock { s in
            precondition(!s.inUse, "a frame pool serves one writer at a time")
            s.inUse = true
        }
    }

    /// A writer is done with the pool: frames it left queued are dropped, the ones being
    /// compressed are waited for, and every slot is free again.
    func reclaim() {
        let slots = slots
        state.withLock { $0.jobs.removeAll() }
        state.withLock(when: { $0.running == 0 }) { s in
            s.done.removeAll()
            s.free = Array((0..<slots).reversed())
            s.paused = false
            s.inUse = false
        }
    }

    /// A worker: compresses jobs in order of submission until the pool ends. The first
    /// also faults in the first slots and makes the writer's context.
    private func work(first: Bool) {
        if first {
            pages.slice(0..<min(pages.count, PageBuffer.hugePage)).populate()
            outputs.slice(0..<min(outputs.count, PageBuffer.hugePage)).populate()
            let box = CompressorBox(ZstdCompressor(warmFor: frameBytes, level: level))
            state.withLock { s in if s.writerCompressor == nil { s.writerCompressor = box } }
        }
        // SCHED_BATCH: a worker woken for a new frame does not preempt the thread that woke
        // it. Woken on the writer's core, a worker used to take it over while the other core
        // idled (spec/decisions/0017-threading-model.md has the measurements).
        ThreadScheduling.becomeBatch()
        let compressor = ZstdCompressor(warmFor: frameBytes, level: level)
        let limit = workerLimit
        while true {
            let next: Job? = state.withLock(when: { s in
                s.stopping || (!s.jobs.isEmpty && s.running < limit && !s.paused)
            }) { s in
                if s.stopping { return nil }
                s.running += 1
                return s.jobs.removeFirst()
            }
            guard let job = next else { return }
            let frame = compress(job.frame, with: compressor)
            state.withLock { s in
                s.running -= 1
                s.done[job.sequence] = frame
            }
            state.broadcast()
        }
    }

    /// Compresses `frame`'s pages into its slot's output; the frame's length becomes the compressed length.
    private func compress(_ frame: Frame, with compressor: borrowing ZstdCompressor) -> Frame {
        var frame = frame
        let input = UnsafeRawBufferPointer(rebasing: raw(frame.slot).prefix(frame.length))
        frame.length = Zstd.compress(input, into: output(frame.slot), level: level, context: compressor)
        return frame
    }

    /// Sets whether workers may start compressions.
    func setPaused(_ value: Bool) {
        state.withLock { $0.paused = value }
        state.broadcast()
    }

    /// Queues `frame`, number `sequence` in the image, for compression.
    func submit(_ frame: Frame, sequence: Int) {
        state.withLock { $0.jobs.append(Job(sequence: sequence, frame: frame)) }
        state.broadcast()
    }

    /// Where slot `slot`'s pages go.
    func raw(_ slot: Int) -> UnsafeMutableRawBufferPointer {
        pages.slice(slot * frameBytes ..< (slot + 1) * frameBytes)
    }

    /// Where slot `slot`'s compressed frame goes.
    func output(_ slot: Int) -> UnsafeMutableRawBufferPointer {
        outputs.slice(slot * outputBytes ..< (slot + 1) * outputBytes)
    }

    /// A slot nobody uses, if there is one.
    func takeFree() -> Int? {
        state.withLock { $0.free.popLast() }
    }

    func release(_ slot: Int) {
        state.withLock { $0.free.append(slot) }
    }

    /// Frame `sequence`, if its compression has finished.
    func take(_ sequence: Int) -> Frame? {
        state.withLock { $0.done.removeValue(forKey: sequence) }
    }

    /// What the writer does next while it waits for a frame.
    private enum WriterStep {
        case ready(Frame)
        case compress(Job, CompressorBox)
    }

    /// Frame `sequence`, once its compression has finished. Meanwhile the calling (writer's)
    /// thread compresses queued frames itself, oldest first, paused or not: its core is
    /// awake already, where handing it to one more worker would wait for that thread to be
    /// woken and placed (traced after a thaw: often it was not, and the last frames were
    /// compressed one at a time).
    func waitCompressing(for sequence: Int) -> Frame {
        let frameBytes = frameBytes, level = level
        while true {
            let step: WriterStep = state.withLock(when: { s in s.done[sequence] != nil || !s.jobs.isEmpty }) { s in
                if let ready = s.done.removeValue(forKey: sequence) { return .ready(ready) }
                // Made by the first worker as it starts; made here if the writer comes first.
                let box = s.writerCompressor ?? CompressorBox(ZstdCompressor(warmFor: frameBytes, level: level))
                s.writerCompressor = box
                return .compress(s.jobs.removeFirst(), box)
            }
            switch step {
            case .ready(let frame):
                return frame
            case .compress(let job, let box):
                let frame = compress(job.frame, with: box.compressor)
                state.withLock { $0.done[job.sequence] = frame }
            }
        }
    }
}

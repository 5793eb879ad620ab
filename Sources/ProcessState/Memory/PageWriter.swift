import Dispatch
import LinuxKernel
import CheckpointImage

/// Copies pages into the process in large contiguous writes, decompressing
/// each frame once (the chain's readers cache their last frame): the memory's
/// restore (``MemoryKind/writePages(_:into:)``).
struct PageWriter: ~Copyable {
    let pid: Int32
    let mem: ProcessMemoryFile
    /// The pages go into a writable mapping: process_vm_writev copies them straight in.
    /// /proc/PID/mem (which may write read-only mappings too) copies each page twice.
    var writable = false
    let chain: ImageChain
    private var start: UInt64 = 0
    private var buffer: [UInt8] = []
    private(set) var pages: UInt64 = 0
    private var frames: [Int: (number: Int, bytes: [UInt8])] = [:]

    /// The newest image's frames, decompressed ahead on other cores while pages are written.
    private let prefetcher: FramePrefetcher

    init(pid: Int32, mem: consuming ProcessMemoryFile, chain: ImageChain) {
        self.pid = pid
        self.mem = mem
        self.chain = chain
        prefetcher = FramePrefetcher(reader: chain.top, depth: max(2, Host.onlineProcessors))
        buffer.reserveCapacity(8 << 20)
    }

    mutating func stored(level: Int, ordinal: UInt64, at address: UInt64) throws(StateFailure) {
        let reader = chain.images[level]
        let number = reader.frameNumber(of: ordinal)
        if frames[level]?.number != number {
            let prefetcher = prefetcher
            do throws(ImageError) {
                frames[level] = (number, level == 0 ? try prefetcher.frame(number) : try reader.frame(number))
            } catch {
                throw .image(error)
            }
        }
        let pageSize = chain.pageSize
        let within = Int(ordinal % UInt64(reader.header.pagesPerFrame)) * pageSize
        let frame = frames[level]!.bytes
        try append(at: address) { $0 += frame[within..<(within + pageSize)] }
    }

    mutating func zeros(at address: UInt64, pages count: UInt64) throws(StateFailure) {
        let pageSize = chain.pageSize
        for k in 0..<count {
            try append(at: address + k * UInt64(pageSize)) { $0 += repeatElement(0, count: pageSize) }
        }
    }

    private mutating func append(at address: UInt64, _ fill: (inout [UInt8]) -> Void) throws(StateFailure) {
        if !buffer.isEmpty && (address != start + UInt64(buffer.count) || buffer.count >= 8 << 20) { try flush() }
        if buffer.isEmpty { start = address }
        fill(&buffer)
        pages += 1
    }

    mutating func flush() throws(StateFailure) {
        if writable && !buffer.isEmpty {
            let n = buffer.withUnsafeBytes { ProcessMemory.write(pid: pid, $0, at: start) }
            if n == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                return
            }
        }
        let failure: SystemCallError? = buffer.withUnsafeBytes { bytes in
            do throws(SystemCallError) {
                try mem.write(bytes, at: start) { "pwrite(/proc/PID/mem at 0x\(String($0, radix: 16)))" }
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw .system(failure) }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Decompresses the frames of one image ahead of their use, in order, on other
/// threads (`ImageReader.decompressedFrame` takes no lock). A frame asked for
/// again after it was handed out is decompressed on the spot. Its state is behind a
/// ``ConditionMutex``, as the asking thread waits for the workers
/// (spec/decisions/0017-threading-model.md).
final class FramePrefetcher: Sendable {
    private let reader: ImageReader
    private let depth: Int
    private let state = ConditionMutex(Schedule())

    /// What is decompressed, under way, and asked for so far.
    private struct Schedule {
        var ready: [Int: Result<[UInt8], ImageError>] = [:]
        var inFlight = Set<Int>()
        var scheduledUpTo = -1
    }

    init(reader: ImageReader, depth: Int) {
        self.reader = reader
        self.depth = depth
    }

    func frame(_ number: Int) throws(ImageError) -> [UInt8] {
        let frameCount = reader.index.frameOffsets.count
        let wanted = state.withLock { s in
            let wanted = number > s.scheduledUpTo || s.inFlight.contains(number) || s.ready[number] != nil
            guard wanted else { return false }
            // Keep `depth` frames in flight beyond the one asked for.
            var next = max(s.scheduledUpTo + 1, number)
            while next <= min(number + depth, frameCount - 1) {
                schedule(next, &s)
                next += 1
            }
            s.scheduledUpTo = max(s.scheduledUpTo, next - 1)
            return true
        }
        if !wanted { return try reader.decompressedFrame(number) }
        let result = state.withLock(when: { $0.ready[number] != nil }) { s in
            let result = s.ready.removeValue(forKey: number)!
            // Frames passed over (their pages were not needed) are dropped.
            for stale in s.ready.keys where stale < number { s.ready.removeValue(forKey: stale) }
            return result
        }
        return try result.get()
    }

    /// Starts decompressing `number`; the caller holds the lock on `s`.
    private func schedule(_ number: Int, _ s: inout Schedule) {
        s.inFlight.insert(number)
        let reader = self.reader
        DispatchQueue.global().async {
            let result: Result<[UInt8], ImageError>
            do throws(ImageError) { result = .success(try reader.decompressedFrame(number)) } catch { result = .failure(error) }
            self.state.withLock { s in
                s.inFlight.remove(number)
                s.ready[number] = result
            }
            self.state.broadcast()
        }
    }
}

import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import LinuxKernel
import ProcessState
import CheckpointImage

/// Fills the stopped, freshly executed process with the image's state, from
/// outside (ptrace, /proc/PID/mem, prlimit) and from inside (injected calls).
struct ProcessBuilder {
    let image: RestoreImage
    /// The process as traced here.
    let pid: Int32
    /// What the kinds of state restore into: the remote calls, the traced TIDs, the warnings.
    var context: RestoreContext
    /// System calls into the process (the context's).
    var remote: RemoteCalls {
        get { context.remote }
        _modify { yield &context.remote }
    }
    /// Image TID → traced TID.
    var traced: [Int32: Int32] {
        get { context.traced }
        _modify { yield &context.traced }
    }
    private(set) var pagesWritten: UInt64 = 0
    var warnings: [String] { context.warnings }
    /// What the builder is doing, for the error message.
    private var step = "prepare the address space"

    var threadCount: Int { traced.count }
    /// This kernel's vdso in the process (start, size), when the image's is redirected to it.
    var newVdso: (start: UInt64, size: UInt64)? = nil

    static let scratchSize: UInt64 = 1 << 20
    static let specialRoles: [Ccimg_V1_VmaRole] = [.vdso, .vvar, .vvarVclock, .vsyscall]

    /// Redirect the image's vdso to this kernel's instead of moving this kernel's into place.
    let vdsoProxy: Bool
    /// Roles whose VMAs the restore does not map from the image.
    var skippedRoles: [Ccimg_V1_VmaRole] { vdsoProxy ? [.vvar, .vvarVclock, .vsyscall] : Self.specialRoles }

    init(image: RestoreImage, pid: Int32, vdsoProxy: Bool) throws(RestoreError) {
        self.image = image
        self.pid = pid
        self.vdsoProxy = vdsoProxy
        guard let address = SyscallInjector.vdsoSyscallAddress(pid: pid) else {
            throw RestoreError(.kernel, "the new process has no vdso to run system calls through")
        }
        context = RestoreContext(pid: pid, remote: RemoteCalls(pid: pid, syscallAddress: address), process: image.process,
                                 threads: image.threads, signals: image.signals, sync: image.sync)
    }

    mutating func warn(_ text: String) { context.warn(text) }

    /// File descriptors and the objects behind them (``DescriptorRestore``).
    mutating func restoreHandles() throws {
        var descriptors = DescriptorRestore(handles: image.handles, sync: image.sync, remote: remote)
        defer {
            remote = descriptors.remote
            context.warnings += descriptors.warnings
        }
        try descriptors.restore()
    }

    /// Runs every step; the first failure is thrown, naming its step. Each step's
    /// scratch arguments are given back after it.
    mutating func build() throws(RestoreError) {
        do {
            step = "prepare the address space"
            try prepareAddressSpace()
            step = "map the memory"
            try mapMemory()
            step = "write the pages"
            try writePages()
            if vdsoProxy {
                step = "redirect the image's vdso to this kernel's"
                try redirectVdso()
            }
            step = "set the mm fields (PR_SET_MM_MAP)"
            try setMmFields()
            step = "recreate the file descriptors"
            try restoreHandles()
            step = "restore signal dispositions, timers, cwd, umask and rlimits"
            try restoreProcessState()
            step = "create the threads"
            try createThreads()
            step = "restore the threads' state"
            try restoreThreads()
            step = "resume the process"
            try resume()
        } catch let error as RestoreError {
            throw error
        } catch let error as StateFailure {
            switch error {
            case .system(let e): throw RestoreError.from(e, doing: step)
            case .image(let e): throw RestoreError(e)
            case .state(let e): throw RestoreError(e)
            }
        } catch let error as ImageError {
            throw RestoreError(error)
        } catch let error as StateError {
            throw RestoreError(error)
        } catch let error as SystemCallError {
            throw RestoreError.from(error, doing: step)
        } catch {
            throw RestoreError(.kernel, "cannot \(step)", cause: "\(error)")
        }
    }

    // MARK: Address space

    /// Unmaps what exec mapped, moves vdso/vvar to their saved addresses and maps the scratch area.
    mutating func prepareAddressSpace() throws {
        let current = ProcFS.parseMaps(try ProcFS.read("/proc/\(pid)/maps"))
        let specials = current.filter { $0.path == "[vdso]" || $0.path == "[vvar]" || $0.path == "[vvar_vclock]" }
        for entry in current where entry.path != "[vsyscall]" && !specials.contains(entry) {
            try remote.call("munmap", X86Syscall.munmap, [entry.start, entry.end - entry.start])
        }
        let saved = image.vmas.filter { [.vdso, .vvar, .vvarVclock].contains($0.role) }
        var taken = image.vmas.map { ($0.start, $0.end) }
        let low = specials.map(\.start).min() ?? 0
        let span = (specials.map(\.end).max() ?? 0) - low
        if vdsoProxy {
            // This kernel's vdso and vvar stay, out of the way of every saved VMA.
            let overlaps = specials.contains { s in taken.contains { $0.0 < s.end && s.start < $0.1 } }
            var base = low
            if overlaps {
                base = try Self.gap(size: span, avoiding: taken + specials.map { ($0.start, $0.end) })
                for entry in specials {
                    let to = base + (entry.start - low)
                    try remote.call("mremap(\(entry.path))", X86Syscall.mremap,
                                    [entry.start, entry.end - entry.start, entry.end - entry.start, UInt64(Linux.MREMAP_MAYMOVE | Linux.MREMAP_FIXED), to])
                    if entry.path == "[vdso]" { remote.syscallAddress = remote.syscallAddress - entry.start + to }
                }
            }
            newVdso = specials.first { $0.path == "[vdso]" }.map { (base + ($0.start - low), $0.end - $0.start) }
            taken += specials.map { (base + ($0.start - low), base + ($0.end - low)) }
        } else if !saved.isEmpty {
            // Two moves, through a free area, so the final places may overlap the current ones.
            let temporary = try Self.gap(size: span, avoiding: taken + specials.map { ($0.start, $0.end) })
            var moved: [(ProcFS.MapsEntry, UInt64)] = []
            for entry in specials {
                let to = temporary + (entry.start - low)
                try remote.call("mremap(\(entry.path))", X86Syscall.mremap,
                                [entry.start, entry.end - entry.start, entry.end - entry.start, UInt64(Linux.MREMAP_MAYMOVE | Linux.MREMAP_FIXED), to])
                moved.append((entry, to))
                if entry.path == "[vdso]" { remote.syscallAddress = remote.syscallAddress - entry.start + to }
            }
            for (entry, at) in moved {
                guard let target = saved.first(where: { $0.path == entry.path }) else {
                    throw RestoreError(.incompatible, "the image has no \(entry.path), which this kernel maps")
                }
                try remote.call("mremap(\(entry.path))", X86Syscall.mremap,
                                [at, entry.end - entry.start, entry.end - entry.start, UInt64(Linux.MREMAP_MAYMOVE | Linux.MREMAP_FIXED), target.start])
                if entry.path == "[vdso]" { remote.syscallAddress = remote.syscallAddress - at + target.start }
            }
        }
        let scratch = try Self.gap(size: Self.scratchSize, avoiding: taken)
        try remote.mapScratch(at: scratch, size: Self.scratchSize)
    }

    /// A page-aligned free range of `size` bytes between 4 GiB and the top of user space.
    static func gap(size: UInt64, avoiding ranges: [(UInt64, UInt64)]) throws -> UInt64 {
        let sorted = ranges.sorted { $0.0 < $1.0 }
        var candidate: UInt64 = 1 << 32
        for (start, end) in sorted {
            if end <= candidate { continue }
            if start >= candidate + size + 0x10000 { break }
            candidate = (end + 0x10000 + 0xfff) & ~0xfff
        }
        guard candidate + size < 0x7ff0_0000_0000 else { throw RestoreError(.kernel, "no free address range for the restore's scratch area") }
        return candidate
    }

    /// Whether a VMA is mapped from its file (rather than anonymous memory).
    static func isFileBacked(_ vma: Ccimg_V1_Vma) -> Bool {
        vma.path.hasPrefix("/") && vma.role != .sharedMemory && !vma.path.hasSuffix(" (deleted)")
    }

    /// Maps every saved VMA at its address with its protection (mmap MAP_FIXED, injected).
    mutating func mapMemory() throws {
        var mappingDescriptors: [String: UInt64] = [:]
        for vma in image.vmas where !skippedRoles.contains(vma.role) {
            let mark = remote.scratchMark
            defer { remote.release(to: mark) }
            var flags = MAP_FIXED | (vma.shared ? MAP_SHARED : MAP_PRIVATE)
            var fd = UInt64.max
            if Self.isFileBacked(vma) {
                let writable = vma.shared && vma.prot & UInt32(PROT_WRITE) != 0
                let key = vma.path + (writable ? "\u{0}rw" : "")
                if let open = mappingDescriptors[key] {
                    fd = open
                } else {
                    let path = try remote.put(string: vma.path)
                    fd = try remote.call("openat(\(vma.path))", X86Syscall.openat,
                                         [UInt64(bitPattern: Int64(AT_FDCWD)), path, UInt64(writable ? O_RDWR : O_RDONLY) | UInt64(O_CLOEXEC)])
                    mappingDescriptors[key] = fd
                }
            } else {
                flags |= MAP_ANONYMOUS
                if vma.role == .mainStack { flags |= MAP_GROWSDOWN }
                if vma.path.hasPrefix("/") { warn("\(vma.path) at 0x\(String(vma.start, radix: 16)) is restored as private memory, no longer shared with the file") }
            }
            try remote.call("mmap(0x\(String(vma.start, radix: 16)))", X86Syscall.mmap,
                            [vma.start, vma.end - vma.start, UInt64(vma.prot), UInt64(flags), fd, Self.isFileBacked(vma) ? vma.fileOffset : 0])
        }
        // The mappings hold their files; the fds would take numbers the saved ones need.
        for fd in Set(mappingDescriptors.values) { try remote.call("close", X86Syscall.close, [fd]) }
    }

    /// Writes every page the chain holds into the process: with process_vm_writev
    /// into writable mappings, through /proc/PID/mem into the others (it may write
    /// read-only private mappings: FOLL_FORCE, as a tracer).
    mutating func writePages() throws {
        let mem = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        guard mem >= 0 else { throw SystemCallError("open(/proc/\(pid)/mem)", errno: errno) }
        defer { close(mem) }
        var writer = PageWriter(pid: pid, mem: mem, chain: image.chain)
        let top = image.chain.top
        let pageSize = UInt64(image.chain.pageSize)
        for (v, vma) in top.memoryMap.enumerated() where !skippedRoles.contains(vma.role) {
            // A shared file's pages are the file's; writing them would change the file.
            if vma.role == .fileShared && Self.isFileBacked(vma) { continue }
            let zeroMatters = Self.isFileBacked(vma)
            try writer.flush()
            writer.writable = vma.prot & UInt32(PROT_WRITE) != 0
            var page: UInt64 = 0
            for run in top.pageTables[v].runs {
                defer { page += run.count }
                let address = vma.start + page * pageSize
                switch run.state {
                case .notPopulated: continue
                case .zero: if zeroMatters { try writer.zeros(at: address, pages: run.count) }
                case .stored:
                    for k in 0..<run.count { try writer.stored(level: 0, ordinal: run.firstOrdinal + k, at: address + k * pageSize) }
                case .dedup:
                    for (k, ordinal) in run.dedupTargets.enumerated() { try writer.stored(level: 0, ordinal: ordinal, at: address + UInt64(k) * pageSize) }
                case .inherited:
                    for k in 0..<run.count {
                        let at = address + k * pageSize
                        switch image.chain.resolve(address: at) {
                        case .stored(let level, let ordinal): try writer.stored(level: level, ordinal: ordinal, at: at)
                        case .zero: if zeroMatters { try writer.zeros(at: at, pages: 1) }
                        case .notPopulated, .unmapped: continue
                        }
                    }
                }
            }
        }
        try writer.flush()
        pagesWritten = writer.pages
    }

    /// Overwrites each function of the image's vdso (restored at its address) with a
    /// jump to the same function of this kernel's vdso (`VdsoProxy`).
    mutating func redirectVdso() throws {
        guard let old = image.vmas.first(where: { $0.role == .vdso }), let new = newVdso else {
            throw RestoreError(.incompatible, "the image has no vdso to redirect")
        }
        let oldBytes = try image.chain.readMemory(address: old.start, length: old.end - old.start)
        var newBytes = [UInt8](repeating: 0, count: Int(new.size))
        try kernelCall("process_vm_readv([vdso])", newBytes.withUnsafeMutableBytes { cc_process_vm_read(pid, $0.baseAddress, $0.count, new.start) })
        let mem = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        guard mem >= 0 else { throw SystemCallError("open(/proc/\(pid)/mem)", errno: errno) }
        defer { close(mem) }
        for patch in try VdsoProxy.patches(old: oldBytes, oldBase: old.start, new: newBytes, newBase: new.start) {
            let n = patch.bytes.withUnsafeBytes { pwrite(mem, $0.baseAddress, $0.count, off_t(Int64(bitPattern: patch.address))) }
            guard n == patch.bytes.count else { throw SystemCallError("pwrite(/proc/\(pid)/mem, vdso)", errno: n < 0 ? errno : EIO) }
        }
    }

    /// Sets code/data/brk/stack/arg/env bounds and the auxv (prctl PR_SET_MM, PR_SET_MM_MAP).
    mutating func setMmFields() throws {
        var mm = image.process.mm
        guard mm.startCode != 0 else { return }
        if mm.brk < mm.startBrk {
            // brk is read by an injected brk(0), which a capture of a stopped process
            // skips: the end of the heap VMA is the break to page precision.
            mm.brk = image.vmas.first { $0.role == .heap }?.end ?? mm.startBrk
        }
        var auxv: [UInt8] = []
        for entry in image.process.auxv where entry.type != 0 { auxv.appendLE(entry.type); auxv.appendLE(entry.value) }
        auxv.appendLE(0); auxv.appendLE(0)
        let auxvAddress = try remote.put(auxv)
        var map: [UInt8] = []
        for field in [mm.startCode, mm.endCode, mm.startData, mm.endData, mm.startBrk, mm.brk, mm.startStack,
                      mm.argStart, mm.argEnd, mm.envStart, mm.envEnd] { map.appendLE(field) }
        map.appendLE(auxvAddress)
        map.appendLE(UInt32(auxv.count))
        map.appendLE(UInt32.max)     // exe_fd -1: the executable is already the one exec ran
        let address = try remote.put(map)
        try remote.call("prctl(PR_SET_MM, PR_SET_MM_MAP)", X86Syscall.prctl, [UInt64(Linux.PR_SET_MM), UInt64(Linux.PR_SET_MM_MAP), address, UInt64(map.count), 0])
    }
}

/// Copies pages into the process in large contiguous writes, decompressing
/// each frame once (the chain's readers cache their last frame).
struct PageWriter {
    let pid: Int32
    let mem: Int32
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

    init(pid: Int32, mem: Int32, chain: ImageChain) {
        self.pid = pid
        self.mem = mem
        self.chain = chain
        prefetcher = FramePrefetcher(reader: chain.top, depth: max(2, Host.onlineProcessors))
        buffer.reserveCapacity(8 << 20)
    }

    mutating func stored(level: Int, ordinal: UInt64, at address: UInt64) throws {
        let reader = chain.images[level]
        let number = reader.frameNumber(of: ordinal)
        if frames[level]?.number != number {
            frames[level] = (number, level == 0 ? try prefetcher.frame(number) : try reader.frame(number))
        }
        let pageSize = chain.pageSize
        let within = Int(ordinal % UInt64(reader.header.pagesPerFrame)) * pageSize
        let frame = frames[level]!.bytes
        try append(at: address) { $0 += frame[within..<(within + pageSize)] }
    }

    mutating func zeros(at address: UInt64, pages count: UInt64) throws {
        let pageSize = chain.pageSize
        for k in 0..<count {
            try append(at: address + k * UInt64(pageSize)) { $0 += repeatElement(0, count: pageSize) }
        }
    }

    private mutating func append(at address: UInt64, _ fill: (inout [UInt8]) -> Void) throws {
        if !buffer.isEmpty && (address != start + UInt64(buffer.count) || buffer.count >= 8 << 20) { try flush() }
        if buffer.isEmpty { start = address }
        fill(&buffer)
        pages += 1
    }

    mutating func flush() throws {
        if writable && !buffer.isEmpty {
            let n = buffer.withUnsafeBytes { cc_process_vm_write(pid, $0.baseAddress, $0.count, start) }
            if n == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                return
            }
        }
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeBytes { pwrite(mem, $0.baseAddress! + done, $0.count - done, off_t(Int64(bitPattern: start + UInt64(done)))) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw SystemCallError("pwrite(/proc/PID/mem at 0x\(String(start + UInt64(done), radix: 16)))", errno: n < 0 ? errno : EIO)
            }
            done += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Decompresses the frames of one image ahead of their use, in order, on other
/// threads (`ImageReader.decompressedFrame` takes no lock). A frame asked for
/// again after it was handed out is decompressed on the spot.
final class FramePrefetcher: @unchecked Sendable {
    private let reader: ImageReader
    private let depth: Int
    private let condition = Condition()
    private var ready: [Int: Result<[UInt8], ImageError>] = [:]
    private var inFlight = Set<Int>()
    private var scheduledUpTo = -1

    init(reader: ImageReader, depth: Int) {
        self.reader = reader
        self.depth = depth
    }

    func frame(_ number: Int) throws(ImageError) -> [UInt8] {
        condition.lock()
        let frameCount = reader.index.frameOffsets.count
        let wanted = number > scheduledUpTo || inFlight.contains(number) || ready[number] != nil
        if !wanted {
            condition.unlock()
            return try reader.decompressedFrame(number)
        }
        // Keep `depth` frames in flight beyond the one asked for.
        var next = max(scheduledUpTo + 1, number)
        while next <= min(number + depth, frameCount - 1) {
            schedule(next)
            next += 1
        }
        scheduledUpTo = max(scheduledUpTo, next - 1)
        while ready[number] == nil { condition.wait() }
        let result = ready.removeValue(forKey: number)!
        // Frames passed over (their pages were not needed) are dropped.
        for stale in ready.keys where stale < number { ready.removeValue(forKey: stale) }
        condition.unlock()
        return try result.get()
    }

    /// Starts decompressing `number`; the caller holds the lock.
    private func schedule(_ number: Int) {
        inFlight.insert(number)
        let reader = self.reader
        DispatchQueue.global().async {
            let result: Result<[UInt8], ImageError>
            do throws(ImageError) { result = .success(try reader.decompressedFrame(number)) } catch { result = .failure(error) }
            self.condition.lock()
            self.inFlight.remove(number)
            self.ready[number] = result
            self.condition.broadcast()
            self.condition.unlock()
        }
    }
}

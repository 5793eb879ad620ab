import Dispatch
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

    /// One named step of a restore (issue #13, point 5): the name is what an error
    /// says could not be done (`cannot <name>`), and what CCPM_PHASES-like tracing would print.
    struct Step {
        /// What the step does, as an error names it ("map the memory").
        let name: String
        /// The step itself.
        let run: (inout ProcessBuilder) throws(StepFailure) -> Void
    }

    /// The steps of a restore, in order (spec/decisions/0009-restore-from-outside.md).
    /// A kind of state's restore runs in the step of its stage (``StateKind``).
    var steps: [Step] {
        var steps: [Step] = [
            Step(name: "prepare the address space") { b throws(StepFailure) in try b.prepareAddressSpace() },
            Step(name: "map the memory") { b throws(StepFailure) in try b.mapMemory() },
            Step(name: "write the pages") { b throws(StepFailure) in try b.writePages() },
        ]
        if vdsoProxy {
            steps.append(Step(name: "redirect the image's vdso to this kernel's") { b throws(StepFailure) in try b.redirectVdso() })
        }
        steps += [
            Step(name: "set the mm fields (PR_SET_MM_MAP)") { b throws(StepFailure) in try b.setMmFields() },
            Step(name: "recreate the file descriptors") { b throws(StepFailure) in
                let files = b.image.openFiles
                do throws(StateFailure) {
                    for kind in StateKinds.all { try kind.restoreDescriptors(files, into: &b.context) }
                } catch { throw StepFailure(error) }
            },
            Step(name: "restore signal dispositions, timers, cwd, umask and rlimits") { b throws(StepFailure) in
                do throws(StateFailure) { try b.restoreProcessState() } catch { throw StepFailure(error) }
            },
            Step(name: "create the threads") { b throws(StepFailure) in
                do throws(StateFailure) { try b.createThreads() } catch { throw StepFailure(error) }
            },
            Step(name: "restore the threads' state") { b throws(StepFailure) in
                do throws(StateFailure) { try b.restoreThreads() } catch { throw StepFailure(error) }
            },
            Step(name: "resume the process") { b throws(StepFailure) in try b.resume() },
        ]
        return steps
    }

    /// Runs every step; the first failure is thrown, naming its step.
    mutating func build() throws(RestoreError) {
        for step in steps {
            do throws(StepFailure) { try step.run(&self) } catch { throw error.error(doing: step.name) }
        }
    }

    // MARK: Address space

    /// Unmaps what exec mapped, moves vdso/vvar to their saved addresses and maps the scratch area.
    mutating func prepareAddressSpace() throws(StepFailure) {
        let pid = pid
        let current = ProcFS.parseMaps(try systemCalls { () throws(SystemCallError) in try ProcFS.read("/proc/\(pid)/maps") })
        let specials = current.filter { $0.path == "[vdso]" || $0.path == "[vvar]" || $0.path == "[vvar_vclock]" }
        for entry in current where entry.path != "[vsyscall]" && !specials.contains(entry) {
            try systemCalls { () throws(SystemCallError) in try remote.call("munmap", X86Syscall.munmap, [entry.start, entry.end - entry.start]) }
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
                    try move(entry, from: entry.start, to: to)
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
                try move(entry, from: entry.start, to: to)
                moved.append((entry, to))
            }
            for (entry, at) in moved {
                guard let target = saved.first(where: { $0.path == entry.path }) else {
                    throw .failed(RestoreError(.incompatible, "the image has no \(entry.path), which this kernel maps"))
                }
                try move(entry, from: at, to: target.start)
            }
        }
        let scratch = try Self.gap(size: Self.scratchSize, avoiding: taken)
        try systemCalls { () throws(SystemCallError) in try remote.mapScratch(at: scratch, size: Self.scratchSize) }
    }

    /// Moves the special mapping `entry`, now at `from`, to `to` (injected mremap
    /// MREMAP_MAYMOVE | MREMAP_FIXED); the vdso's `syscall` moves with it.
    private mutating func move(_ entry: ProcFS.MapsEntry, from: UInt64, to: UInt64) throws(StepFailure) {
        let size = entry.end - entry.start
        try systemCalls { () throws(SystemCallError) in
            try remote.call("mremap(\(entry.path))", X86Syscall.mremap,
                            [from, size, size, UInt64(Linux.MREMAP_MAYMOVE | Linux.MREMAP_FIXED), to])
        }
        if entry.path == "[vdso]" { remote.syscallAddress = remote.syscallAddress - from + to }
    }

    /// A page-aligned free range of `size` bytes between 4 GiB and the top of user space.
    static func gap(size: UInt64, avoiding ranges: [(UInt64, UInt64)]) throws(StepFailure) -> UInt64 {
        let sorted = ranges.sorted { $0.0 < $1.0 }
        var candidate: UInt64 = 1 << 32
        for (start, end) in sorted {
            if end <= candidate { continue }
            if start >= candidate + size + 0x10000 { break }
            candidate = (end + 0x10000 + 0xfff) & ~0xfff
        }
        guard candidate + size < 0x7ff0_0000_0000 else { throw .failed(RestoreError(.kernel, "no free address range for the restore's scratch area")) }
        return candidate
    }

    /// Whether a VMA is mapped from its file (``MemoryKind/isFileBacked(_:)``).
    static func isFileBacked(_ vma: Ccimg_V1_Vma) -> Bool { MemoryKind.isFileBacked(vma) }

    /// What the memory's restore reads: the chain, the saved VMAs, the roles not mapped.
    var memory: MemoryRestoreContext {
        MemoryRestoreContext(chain: image.chain, vmas: image.vmas, skippedRoles: skippedRoles)
    }

    /// Maps every saved VMA at its address (``StateKind/mapMemory(_:into:)``, ``MemoryKind``).
    mutating func mapMemory() throws(StepFailure) {
        let memory = memory
        do throws(StateFailure) {
            for kind in StateKinds.all { try kind.mapMemory(memory, into: &context) }
        } catch {
            throw StepFailure(error)
        }
    }

    /// Writes every page the chain holds into the process (``StateKind/writePages(_:into:)``).
    mutating func writePages() throws(StepFailure) {
        var memory = memory
        do throws(StateFailure) {
            for kind in StateKinds.all { try kind.writePages(&memory, into: &context) }
        } catch {
            throw StepFailure(error)
        }
        pagesWritten = memory.pagesWritten
    }

    /// Overwrites each function of the image's vdso (restored at its address) with a
    /// jump to the same function of this kernel's vdso (`VdsoProxy`).
    mutating func redirectVdso() throws(StepFailure) {
        guard let old = image.vmas.first(where: { $0.role == .vdso }), let new = newVdso else {
            throw .failed(RestoreError(.incompatible, "the image has no vdso to redirect"))
        }
        let chain = image.chain, pid = pid
        let oldBytes = try imageReads { () throws(ImageError) in try chain.readMemory(address: old.start, length: old.end - old.start) }
        let newBytes = try systemCalls { () throws(SystemCallError) in
            try ProcessMemory.read(pid: pid, count: Int(new.size), at: new.start, call: "process_vm_readv([vdso])")
        }
        let mem: ProcessMemoryFile
        do throws(SystemCallError) { mem = try ProcessMemoryFile(pid: pid) } catch { throw .cause(.system(error)) }
        let patches: [(address: UInt64, bytes: [UInt8])]
        do throws(RestoreError) { patches = try VdsoProxy.patches(old: oldBytes, oldBase: old.start, new: newBytes, newBase: new.start) } catch {
            throw .failed(error)
        }
        do throws(SystemCallError) {
            for patch in patches { try mem.writeOnce(patch.bytes, at: patch.address, call: "pwrite(/proc/\(pid)/mem, vdso)") }
        } catch {
            throw .cause(.system(error))
        }
    }

    /// Sets code/data/brk/stack/arg/env bounds and the auxv (prctl PR_SET_MM, PR_SET_MM_MAP).
    mutating func setMmFields() throws(StepFailure) {
        try systemCalls { () throws(SystemCallError) in try setMmMap() }
    }

    private mutating func setMmMap() throws(SystemCallError) {
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

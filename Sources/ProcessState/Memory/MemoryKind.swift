import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One VMA of a capture with what to store of it (§5.3 memory map).
package struct MemoryRegion: Sendable {
    /// The VMA's record, role included.
    package var vma: Ccimg_V1_Vma
    /// Store populated pages that are anonymous (written copies) only.
    package var anonymousPagesOnly: Bool
    /// Store nothing (kernel-provided or unreadable mappings).
    package var skip: Bool
}

/// What the memory's capture needs of the capture engine, and what it hands back:
/// the image writer, the parent chain, the tracking masks (``written``, from the
/// kernel's dirty tracking, decision 0012), and the map it read.
package struct MemoryCaptureContext {
    /// The image the pages go into (§6).
    package let writer: ImageWriter
    /// The parent chain of an increment.
    package let parent: ImageChain?
    /// The pages the kernel saw written in a region since the parent (page indices in
    /// it), nil for a region it does not track; no closure when nothing is tracked.
    package let written: ((MemoryRegion) throws(SystemCallError) -> [Range<UInt64>]?)?
    /// Called with the bytes read so far and the bytes the regions span.
    package let progress: ((UInt64, UInt64) -> Void)?
    /// Runs once the map is read, before any page is (the "regions" phase; the
    /// tracking note stops vouching for the parent there).
    package let afterRegions: ([MemoryRegion]) throws(StateFailure) -> Void
    /// The regions read (for tracking).
    package var regions: [MemoryRegion] = []
    /// Bytes of memory read from the process.
    package var bytesRead: UInt64 = 0

    /// A context writing into `writer`, on `parent`, with the tracking masks of `written`.
    package init(writer: ImageWriter, parent: ImageChain?,
                 written: ((MemoryRegion) throws(SystemCallError) -> [Range<UInt64>]?)?,
                 progress: ((UInt64, UInt64) -> Void)?,
                 afterRegions: @escaping ([MemoryRegion]) throws(StateFailure) -> Void) {
        self.writer = writer
        self.parent = parent
        self.written = written
        self.progress = progress
        self.afterRegions = afterRegions
    }
}

/// What the memory's restore reads: the chain (its resolved runs, decision 0019 and
/// issue #13 point 6), the VMAs, the roles it does not map; and the pages it wrote.
package struct MemoryRestoreContext {
    /// The image chain whose newest image is restored.
    package let chain: ImageChain
    /// The newest image's VMAs (§5.3 memory map).
    package let vmas: [Ccimg_V1_Vma]
    /// Roles whose VMAs are not mapped from the image (the kernel's own mappings).
    package let skippedRoles: [Ccimg_V1_VmaRole]
    /// Pages written into the process.
    package var pagesWritten: UInt64 = 0

    /// A restore of `vmas` from `chain`, but for `skippedRoles`.
    package init(chain: ImageChain, vmas: [Ccimg_V1_Vma], skippedRoles: [Ccimg_V1_VmaRole]) {
        self.chain = chain
        self.vmas = vmas
        self.skippedRoles = skippedRoles
    }
}

/// The process's memory (§5.3 memory map, §6 pages), capture and restore side by side
/// (spec/decisions/0011-memory-first-capture.md, 0009-restore-from-outside.md, 0019).
///
/// Capture: roles come from /proc/PID/maps and, for mapped ELF files, from their program
/// headers: a private mapping of a writable PT_LOAD segment is that object's .data, and
/// the anonymous mapping right after it its .bss. Which pages to store comes from
/// /proc/PID/pagemap (`MemoryKind+Pages.swift`). Restore: every VMA is mapped at its
/// address by an injected mmap(MAP_FIXED), then the chain's pages are written (``PageWriter``).
package enum MemoryKind: StateKind {
    package static let name = "memory"
    /// The pages go into the writer's frames and the memory map, not into a section.
    package static let sections: [SectionKind] = []
    static let pageSize: UInt64 = 4096

    /// Reads the memory map, then writes every region's pages into the writer's frames
    /// and ends the pages (§6).
    package static func captureMemory(_ target: CaptureTarget, _ memory: inout MemoryCaptureContext,
                                      into records: inout CapturedRecords) throws(StateFailure) {
        var stackPointers: [Int32: UInt64] = [:]
        for thread in records.threads.threads { stackPointers[thread.tid] = UserRegisters.stackPointer(of: thread.generalRegisters) }
        var map = MemoryMapReader(pid: target.pid)
        let regions: [MemoryRegion]
        do throws(SystemCallError) { regions = try map.regions(stackPointers: stackPointers, mainThread: target.pid) } catch {
            throw .system(error)
        }
        try memory.afterRegions(regions)
        memory.bytesRead = try capturePages(regions, pid: target.pid, memory)
        do throws(ImageError) { try memory.writer.endPages() } catch { throw .image(error) }
        memory.regions = regions
    }

    /// Whether a VMA is mapped from its file (rather than anonymous memory).
    package static func isFileBacked(_ vma: Ccimg_V1_Vma) -> Bool {
        vma.path.hasPrefix("/") && vma.role != .sharedMemory && !vma.path.hasSuffix(" (deleted)")
    }

    /// Maps every saved VMA at its address with its protection (mmap MAP_FIXED, injected).
    package static func mapMemory(_ memory: MemoryRestoreContext, into context: inout RestoreContext) throws(StateFailure) {
        do throws(SystemCallError) { try mapEveryVma(memory, &context) } catch { throw .system(error) }
    }

    private static func mapEveryVma(_ memory: MemoryRestoreContext, _ context: inout RestoreContext) throws(SystemCallError) {
        var mappingDescriptors: [String: UInt64] = [:]
        for vma in memory.vmas where !memory.skippedRoles.contains(vma.role) {
            let mark = context.remote.scratchMark
            defer { context.remote.release(to: mark) }
            var flags = Linux.MAP_FIXED | (vma.shared ? Linux.MAP_SHARED : Linux.MAP_PRIVATE)
            var fd = UInt64.max
            if isFileBacked(vma) {
                let writable = vma.shared && vma.prot & Linux.PROT_WRITE != 0
                let key = vma.path + (writable ? "\u{0}rw" : "")
                if let open = mappingDescriptors[key] {
                    fd = open
                } else {
                    let path = try context.remote.put(string: vma.path)
                    fd = try context.remote.call("openat(\(vma.path))", X86Syscall.openat,
                                                 [UInt64(bitPattern: DescriptorFlags.AT_FDCWD), path,
                                                  UInt64(writable ? DescriptorFlags.O_RDWR : DescriptorFlags.O_RDONLY) | UInt64(DescriptorFlags.O_CLOEXEC)])
                    mappingDescriptors[key] = fd
                }
            } else {
                flags |= Linux.MAP_ANONYMOUS
                if vma.role == .mainStack { flags |= Linux.MAP_GROWSDOWN }
                if vma.path.hasPrefix("/") { context.warn("\(vma.path) at 0x\(String(vma.start, radix: 16)) is restored as private memory, no longer shared with the file") }
            }
            try context.remote.call("mmap(0x\(String(vma.start, radix: 16)))", X86Syscall.mmap,
                                    [vma.start, vma.end - vma.start, UInt64(vma.prot), UInt64(flags), fd, isFileBacked(vma) ? vma.fileOffset : 0])
        }
        // The mappings hold their files; the fds would take numbers the saved ones need.
        for fd in Set(mappingDescriptors.values) { try context.remote.call("close", X86Syscall.close, [fd]) }
    }

    /// Writes every page the chain holds into the process: with process_vm_writev
    /// into writable mappings, through /proc/PID/mem into the others (it may write
    /// read-only private mappings: FOLL_FORCE, as a tracer).
    package static func writePages(_ memory: inout MemoryRestoreContext, into context: inout RestoreContext) throws(StateFailure) {
        let mem: ProcessMemoryFile
        do throws(SystemCallError) { mem = try ProcessMemoryFile(pid: context.pid) } catch { throw .system(error) }
        let chain = memory.chain
        var writer = PageWriter(pid: context.pid, mem: mem, chain: chain)
        let pageSize = UInt64(chain.pageSize)
        for (v, vma) in chain.top.memoryMap.enumerated() where !memory.skippedRoles.contains(vma.role) {
            // A shared file's pages are the file's; writing them would change the file.
            if vma.role == .fileShared && isFileBacked(vma) { continue }
            let zeroMatters = isFileBacked(vma)
            try writer.flush()
            writer.writable = vma.prot & Linux.PROT_WRITE != 0
            // The chain's pages, resolved in one place (inherited through the parents, dedup to targets).
            for run in chain.resolvedRuns(ofVma: v) {
                switch run.state {
                case .notPopulated, .unmapped: continue
                case .zero: if zeroMatters { try writer.zeros(at: run.address, pages: run.count) }
                case .stored(let level, let first):
                    for k in 0..<run.count { try writer.stored(level: level, ordinal: first + k, at: run.address + k * pageSize) }
                }
            }
        }
        try writer.flush()
        memory.pagesWritten = writer.pages
    }
}

/// Reads /proc/PID/maps into regions with roles, caching each file's ELF and identity.
struct MemoryMapReader {
    let pid: Int32
    var elfCache: [String: ElfFile?] = [:]
    var identityCache: [String: Ccimg_V1_FileIdentity] = [:]

    init(pid: Int32) { self.pid = pid }

    /// The VMAs with roles; `stackPointers` are the threads' rsp values.
    mutating func regions(stackPointers: [Int32: UInt64], mainThread: Int32) throws(SystemCallError) -> [MemoryRegion] {
        let entries = ProcFS.parseMaps(try ProcFS.read("/proc/\(pid)/maps"))
        var regions: [MemoryRegion] = []
        var previousData: (end: UInt64, object: String)? = nil
        // [vsyscall] is a fixed kernel page above user space: not part of the process's memory.
        for entry in entries where entry.path != "[vsyscall]" {
            var vma = Ccimg_V1_Vma()
            vma.start = entry.start
            vma.end = entry.end
            vma.prot = entry.prot
            vma.shared = entry.shared
            vma.fileOffset = entry.offset
            vma.path = entry.path
            var anonymousOnly = false
            var skip = false
            switch entry.path {
            case "[heap]": vma.role = .heap
            case "[stack]": vma.role = .mainStack
            case "[vdso]": vma.role = .vdso
            case "[vvar]": vma.role = .vvar; skip = true
            case "[vvar_vclock]": vma.role = .vvarVclock; skip = true
            case _ where entry.inode == 0 && !entry.path.hasPrefix("/"):
                if entry.shared {
                    vma.role = .sharedMemory
                } else if stackPointers.contains(where: { $0.key != mainThread && $0.value >= entry.start && $0.value < entry.end }) {
                    vma.role = .threadStack
                } else if let data = previousData, data.end == entry.start {
                    vma.role = .elfData   // .bss right after .data
                    vma.object = data.object
                } else {
                    vma.role = .anonymous
                }
            default:
                let identity = fileIdentity(entry)
                if let identity { vma.fileIdentity = identity }
                if entry.shared {
                    vma.role = entry.path.hasPrefix("/dev/shm/") || entry.path.hasPrefix("/memfd:") || entry.path.hasPrefix("/SYSV")
                        ? .sharedMemory : .fileShared
                    // A shared file's pages are in the file, unless the file is gone or is memory.
                    skip = !(entry.isDeleted || vma.role == .sharedMemory)
                } else {
                    anonymousOnly = true
                    vma.role = .filePrivate
                    if let elf = elf(entry), let segment = elf.segment(containingFileOffset: entry.offset) {
                        vma.object = entry.path
                        vma.role = segment.writable ? .elfData : .elfText
                    }
                }
            }
            previousData = vma.role == .elfData ? (entry.end, vma.object) : nil
            regions.append(MemoryRegion(vma: vma, anonymousPagesOnly: anonymousOnly, skip: skip))
        }
        return regions
    }

    private mutating func elf(_ entry: ProcFS.MapsEntry) -> ElfFile? {
        if let cached = elfCache[entry.path] { return cached }
        let path = "/proc/\(pid)/map_files/\(String(entry.start, radix: 16))-\(String(entry.end, radix: 16))"
        let file = ElfFile(path: path)
        elfCache[entry.path] = file
        return file
    }

    private mutating func fileIdentity(_ entry: ProcFS.MapsEntry) -> Ccimg_V1_FileIdentity? {
        if let cached = identityCache[entry.path] { return cached }
        let path = "/proc/\(pid)/map_files/\(String(entry.start, radix: 16))-\(String(entry.end, radix: 16))"
        guard var identity = FileIdentity.of(path: path) else { return nil }
        if let elf = elf(entry) { identity.elfBuildID = Data(elf.buildID) }
        identityCache[entry.path] = identity
        return identity
    }
}

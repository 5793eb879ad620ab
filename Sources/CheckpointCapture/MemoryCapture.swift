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

/// Reads a stopped process's memory map and pages (§5.3 memory map, §6 pages).
///
/// Roles come from /proc/PID/maps and, for mapped ELF files, from their
/// program headers (libelf): a private mapping of a writable PT_LOAD segment is
/// that object's .data, and the anonymous mapping right after it its .bss.
/// Which pages to store comes from /proc/PID/pagemap: present or swapped
/// pages, except clean pages of private file mappings (their file holds them)
/// and pages of shared file mappings whose file still exists.
struct MemoryCapture {
    let pid: Int32
    let pageSize: UInt64 = 4096
    var elfCache: [String: ElfFile?] = [:]
    var identityCache: [String: Ccimg_V1_FileIdentity] = [:]

    /// One VMA with what to store of it.
    struct Region {
        var vma: Ccimg_V1_Vma
        /// Store populated pages that are anonymous (written copies) only.
        var anonymousPagesOnly: Bool
        /// Store nothing (kernel-provided or unreadable mappings).
        var skip: Bool
    }

    init(pid: Int32) { self.pid = pid }

    /// The VMAs with roles; `stackPointers` are the threads' rsp values.
    mutating func regions(stackPointers: [Int32: UInt64], mainThread: Int32) throws(SystemCallError) -> [Region] {
        let entries = ProcFS.parseMaps(try ProcFS.read("/proc/\(pid)/maps"))
        var regions: [Region] = []
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
            regions.append(Region(vma: vma, anonymousPagesOnly: anonymousOnly, skip: skip))
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

    // MARK: Pages

    /// pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
    static let present: UInt64 = 1 << 63
    static let swapped: UInt64 = 1 << 62
    static let filePage: UInt64 = 1 << 61

    /// Writes every region's pages to `writer`. Returns bytes read from the process.
    ///
    /// With `written` (kernel dirty tracking), a region it answers for is read
    /// only where pages were written; the rest is inherited from `parent`
    /// wherever the parent maps it. Regions it returns nil for are read whole.
    func writePages(_ regions: [Region], to writer: ImageWriter, parent: ImageChain? = nil,
                    written: ((Region) throws -> [Range<UInt64>]?)? = nil,
                    progress: ((UInt64) -> Void)? = nil) throws -> UInt64 {
        let pagemap = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        guard pagemap >= 0 else { throw SystemCallError("open(/proc/\(pid)/pagemap)", errno: errno) }
        defer { close(pagemap) }
        let mem = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard mem >= 0 else { throw SystemCallError("open(/proc/\(pid)/mem)", errno: errno) }
        defer { close(mem) }

        let chunkPages = 4096   // 16 MiB of pages per read
        // Pages are read straight into the writer's frames.
        var entries = [UInt64](repeating: 0, count: chunkPages)
        var total: UInt64 = 0
        for region in regions {
            try writer.beginVma(region.vma)
            let pages = (region.vma.end - region.vma.start) / pageSize
            if region.skip {
                writer.appendNotPopulated(count: pages)
                continue
            }
            // Which pages the kernel saw written, when it tracks this region.
            var writtenMask: [Bool]? = nil
            if let written, let parent, let ranges = try written(region) {
                var mask = [Bool](repeating: false, count: Int(pages))
                for r in ranges { for p in r where p < pages { mask[Int(p)] = true } }
                // Unwritten pages are inherited where the parent maps them, read otherwise.
                if let v = parent.top.vmaIndex(containing: region.vma.start), parent.top.memoryMap[v].end >= region.vma.end {
                    try writeTracked(region, written: mask, to: writer, mem: mem, total: &total)
                    continue
                }
                writtenMask = mask
            }
            var page: UInt64 = 0
            while page < pages {
                let count = Int(min(UInt64(chunkPages), pages - page))
                let start = region.vma.start + page * pageSize
                let want = count * 8
                let got = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, want, off_t(start / pageSize * 8)) }
                guard got == want else { throw SystemCallError("pread(/proc/\(pid)/pagemap)", errno: got < 0 ? errno : EIO) }
                // Each page is read, skipped (not populated) or inherited; runs of the same go together.
                func action(_ i: Int) -> PageAction {
                    if let mask = writtenMask, !mask[Int(page) + i],
                       parent?.top.vmaIndex(containing: start + UInt64(i) * pageSize) != nil {
                        return .inherit
                    }
                    return shouldStore(entries[i], region) ? .read : .skip
                }
                var i = 0
                while i < count {
                    let kind = action(i)
                    var j = i + 1
                    while j < count && action(j) == kind { j += 1 }
                    let runStart = start + UInt64(i) * pageSize
                    let runBytes = (j - i) * Int(pageSize)
                    switch kind {
                    case .read:
                        try writer.appendPages(count: j - i) { dest, first in
                            try readMemory(into: dest, at: runStart + UInt64(first) * pageSize, mem: mem)
                        }
                        total += UInt64(runBytes)
                        progress?(total)
                    case .skip:
                        writer.appendNotPopulated(count: UInt64(j - i))
                    case .inherit:
                        writer.appendInherited(count: UInt64(j - i))
                    }
                    i = j
                }
                page += UInt64(count)
            }
        }
        return total
    }

    enum PageAction { case read, skip, inherit }

    /// A tracked region the parent maps whole: written pages are read, the rest
    /// inherited — no pagemap needed, as a written page is present by definition.
    /// Written pages are scattered (a few here and there), so a frame's worth of their
    /// runs is read by one process_vm_readv, an iovec a run, straight into the frame.
    /// That is faster than a call a run or batches copied through a buffer of their own
    /// (decision 0013; figures in decision 0019, "Figures").
    private func writeTracked(_ region: Region, written mask: [Bool], to writer: ImageWriter, mem: Int32,
                              total: inout UInt64) throws {
        var runs: [ImageWriter.ScatteredRun] = []
        var firstPages: [Int] = []
        var end = 0   // where the last written run ended
        var i = 0
        while i < mask.count {
            guard mask[i] else {
                i += 1
                continue
            }
            var j = i + 1
            while j < mask.count && mask[j] { j += 1 }
            runs.append(ImageWriter.ScatteredRun(gap: UInt64(i - end), count: j - i))
            firstPages.append(i)
            total += UInt64(j - i) * pageSize
            end = j
            i = j
        }
        let iovMax = 1024   // IOV_MAX
        try writer.appendScatteredPages(runs, maxPieces: iovMax) { buffer, pieces in
            let base = buffer.baseAddress!
            var local: [iovec] = []
            var remote: [iovec] = []
            local.reserveCapacity(pieces.count)
            remote.reserveCapacity(pieces.count)
            var offset = 0
            for piece in pieces {
                let bytes = piece.count * Int(pageSize)
                let address = region.vma.start + UInt64(firstPages[piece.run] + piece.first) * pageSize
                local.append(iovec(iov_base: base + offset, iov_len: bytes))
                remote.append(iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: bytes))
                offset += bytes
            }
            guard cc_process_vm_readv(pid, local, UInt(local.count), remote, UInt(remote.count)) != offset else { return }
            // Something in the batch cannot be read that way: piece by piece, with the fallback.
            for (l, r) in zip(local, remote) {
                try readMemory(into: UnsafeMutableRawBufferPointer(start: l.iov_base, count: l.iov_len),
                               at: UInt64(UInt(bitPattern: r.iov_base)), mem: mem)
            }
        }
        writer.appendInherited(count: UInt64(mask.count - end))
    }

    private func shouldStore(_ entry: UInt64, _ region: Region) -> Bool {
        // The vdso is stored whole, touched or not: a restore on a kernel whose vdso differs
        // reads its ELF symbols from the image (decision 0009).
        if region.vma.role == .vdso { return true }
        guard entry & (MemoryCapture.present | MemoryCapture.swapped) != 0 else { return false }
        if region.anonymousPagesOnly && entry & MemoryCapture.filePage != 0 { return false }
        return true
    }

    /// process_vm_readv, falling back to /proc/PID/mem for what it cannot read (PROT_NONE, some special mappings).
    private func readMemory(into dest: UnsafeMutableRawBufferPointer, at address: UInt64, mem: Int32) throws {
        let n = cc_process_vm_read(pid, dest.baseAddress, dest.count, address)
        if n == dest.count { return }
        var done = max(0, n)
        while done < dest.count {
            let r = pread(mem, dest.baseAddress! + done, dest.count - done, off_t(Int64(bitPattern: address &+ UInt64(done))))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else {
                throw SystemCallError("pread(/proc/\(pid)/mem @0x\(String(address + UInt64(done), radix: 16)))", errno: r < 0 ? errno : EIO)
            }
            done += r
        }
    }
}


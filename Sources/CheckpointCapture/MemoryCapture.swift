#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointImage
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
        // Pages are read straight into the writer's frames; the batched reads of scattered
        // written pages (writeTracked) go through the writer's scratch buffer.
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
                    let written = mask.lazy.filter { $0 }.count
                    let buffer = writer.scratch(bytes: Int(min(UInt64(chunkPages), UInt64(max(1, written)))) * Int(pageSize))
                    try writeTracked(region, written: mask, to: writer, mem: mem, buffer: buffer, total: &total)
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
    /// Written pages are scattered (a few here and there), so their runs are
    /// read together: up to 1024 runs (IOV_MAX) or a buffer's worth per
    /// process_vm_readv, instead of one system call each — into the writer's
    /// scratch buffer, which a resident session reuses already faulted in. (Read
    /// run by run straight into the frames, one call a run, a 512 MiB increment's
    /// 1,300 runs were no faster: 12-22 ms for the memory phase, against 12-18.)
    private func writeTracked(_ region: Region, written mask: [Bool], to writer: ImageWriter, mem: Int32,
                              buffer: UnsafeMutableRawBufferPointer, total: inout UInt64) throws {
        let pages = mask.count
        let bufferPages = buffer.count / Int(pageSize)
        // The runs in VMA order: (first page, page count, written).
        var runs: [(first: Int, count: Int, written: Bool)] = []
        var i = 0
        while i < pages {
            var j = i + 1
            while j < pages && mask[j] == mask[i] && (!mask[i] || j - i < bufferPages) { j += 1 }
            runs.append((i, j - i, mask[i]))
            i = j
        }
        var next = 0
        while next < runs.count {
            guard runs[next].written else {
                writer.appendInherited(count: UInt64(runs[next].count))
                next += 1
                continue
            }
            // A batch: written runs (and the unwritten ones between them) while they fit.
            var batch: [Int] = []
            var batchPages = 0
            var end = next
            while end < runs.count, batch.count < 1024 {
                if runs[end].written {
                    guard batchPages + runs[end].count <= bufferPages else { break }
                    batch.append(end)
                    batchPages += runs[end].count
                }
                end += 1
            }
            do {
                let base = buffer.baseAddress!
                var local: [iovec] = []
                var remote: [iovec] = []
                var offset = 0
                for r in batch {
                    let bytes = runs[r].count * Int(pageSize)
                    local.append(iovec(iov_base: base + offset, iov_len: bytes))
                    remote.append(iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(region.vma.start) + UInt(runs[r].first) * UInt(pageSize)),
                                        iov_len: bytes))
                    offset += bytes
                }
                let n = cc_process_vm_readv(pid, local, UInt(local.count), remote, UInt(remote.count))
                if n != offset {
                    // Something in the batch cannot be read that way: run by run, with the fallback.
                    offset = 0
                    for r in batch {
                        let bytes = runs[r].count * Int(pageSize)
                        try readMemory(into: UnsafeMutableRawBufferPointer(start: base + offset, count: bytes),
                                       at: region.vma.start + UInt64(runs[r].first) * pageSize, mem: mem)
                        offset += bytes
                    }
                }
                offset = 0
                for r in next..<end {
                    if runs[r].written {
                        let bytes = runs[r].count * Int(pageSize)
                        try writer.appendPages(UnsafeRawBufferPointer(start: base + offset, count: bytes))
                        offset += bytes
                    } else {
                        writer.appendInherited(count: UInt64(runs[r].count))
                    }
                }
            }
            total += UInt64(batchPages) * pageSize
            next = end
        }
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

/// A file's identity (§5.3 FileIdentity) from stat(2).
package enum FileIdentity {
    package static func of(path: String) -> Ccimg_V1_FileIdentity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        var id = Ccimg_V1_FileIdentity()
        id.dev = UInt64(st.st_dev)
        id.inode = UInt64(st.st_ino)
        id.size = UInt64(st.st_size)
        id.mtimeNs = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return id
    }
}

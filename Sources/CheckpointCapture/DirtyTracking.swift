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

/// Kernel-tracked dirty pages for incremental images (issue #3): a
/// userfaultfd in write-protect *async* mode (UFFD_FEATURE_WP_ASYNC) makes the
/// kernel note every write without stopping the writer, and PAGEMAP_SCAN on
/// /proc/PID/pagemap lists the written pages and protects them again in one
/// call. The userfaultfd is created inside the target by an injected
/// userfaultfd(2) and stays open there — the one descriptor `--track` leaves
/// behind, by design; ccpm keeps a note of it in a state file.
///
/// Soft-dirty bits are not used: on this kernel clear_refs is accepted but
/// the bit never sets (see shared/notes/anchors.md).
enum DirtyTracking {
    /// Where tracking notes live: /run/ccpm, or the temporary directory.
    static var stateDirectory: String {
        let run = "/run/ccpm"
        if mkdir(run, 0o700) == 0 || errno == EEXIST, access(run, W_OK) == 0 { return run }
        return Host.temporaryDirectory
    }

    /// The note for one process incarnation (pid and start time, so a reused PID never matches).
    struct Note: Equatable {
        var uffdDescriptor: Int32
        var uffdInode: UInt64
        var imageUUID: String
        /// dev:inode:size:mtime of every image file of the chain ending in that image
        /// (UUID → identity), each verified when it was written or last used: an unchanged
        /// chain need not be read through again before the next increment.
        var verified: [String: String] = [:]
        /// Where each image of that chain was (UUID → path): where to look for a parent
        /// first, before reading the headers of every file in its directory.
        var paths: [String: String] = [:]

        /// Whether every image of `chain` is one this note has seen verified and its file is unchanged.
        func vouchesFor(_ chain: ImageChain) -> Bool {
            chain.images.allSatisfy { image in
                guard let known = verified[image.header.uuid.description], !known.isEmpty else { return false }
                return known == Note.identity(ofFile: image.path)
            }
        }

        static func identity(ofFile path: String) -> String {
            var st = stat()
            guard stat(path, &st) == 0 else { return "" }
            return "\(st.st_dev):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        }

        static func path(pid: Int32) -> String? {
            guard let stat = try? ProcFS.read("/proc/\(pid)/stat"), let fields = ProcFS.parseStat(stat)?.fields, fields.count > 22 else { return nil }
            return "\(DirtyTracking.stateDirectory)/track-\(pid)-\(fields[22]).txt"
        }

        static func load(pid: Int32) -> Note? {
            guard let path = path(pid: pid), let text = try? ProcFS.read(path) else { return nil }
            var values: [String: String] = [:]
            for line in text.split(separator: "\n") {
                // "image " with nothing after it: a note that vouches for no image (yet).
                let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                if parts.count == 2 { values[parts[0]] = parts[1] }
            }
            guard let fd = Int32(values["uffd-fd"] ?? ""), let inode = UInt64(values["uffd-inode"] ?? ""), let uuid = values["image"] else { return nil }
            var verified: [String: String] = [:]
            var paths: [String: String] = [:]
            // "verified UUID IDENTITY PATH", the path last as it may hold spaces.
            for line in text.split(separator: "\n") where line.hasPrefix("verified ") {
                let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
                guard parts.count >= 3 else { continue }
                verified[parts[1]] = parts[2]
                if parts.count == 4 { paths[parts[1]] = parts[3] }
            }
            return Note(uffdDescriptor: fd, uffdInode: inode, imageUUID: uuid, verified: verified, paths: paths)
        }

        /// Writes the note; with `pruning`, notes of processes that are gone are removed first.
        func save(pid: Int32, pruning: Bool = true) throws {
            guard let path = Note.path(pid: pid) else { throw SystemCallError("read /proc/\(pid)/stat", errno: ESRCH) }
            if pruning { Note.pruneStale() }
            let chain = verified.sorted { $0.key < $1.key }.map { uuid, identity in
                "verified \(uuid) \(identity)" + (paths[uuid].map { " " + $0 } ?? "") + "\n"
            }.joined()
            let text = "uffd-fd \(uffdDescriptor)\nuffd-inode \(uffdInode)\nimage \(imageUUID)\n" + chain
            // Written in place, whole in one pwrite, then cut to length: no rename, which on
            // ext4 (where /run is not a tmpfs) flushes the file it replaces (decision 0019, "Figures").
            // A ccpm killed between the two leaves the new note with at most a stale tail of
            // "verified" lines, each still true of its image; a torn last line is skipped.
            // Not fsync'd: a note speaks of a live process, which a machine crash ends too.
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemCallError("open(\(path))", errno: errno) }
            defer { close(fd) }
            let bytes = Array(text.utf8)
            let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            guard written == bytes.count else { throw SystemCallError("pwrite(\(path))", errno: written < 0 ? errno : EIO) }
            guard ftruncate(fd, off_t(bytes.count)) == 0 else { throw SystemCallError("ftruncate(\(path))", errno: errno) }
        }

        /// Removes notes of processes that are gone (their pid is free or reused).
        static func pruneStale() {
            let directory = DirtyTracking.stateDirectory
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix("track-") {
                let parts = name.dropFirst(6).split(separator: "-")
                guard parts.count == 2, let pid = Int32(parts[0]) else { continue }
                if path(pid: pid) != "\(directory)/\(name)" { unlink("\(directory)/\(name)") }
            }
        }

        /// Whether the target still holds this userfaultfd.
        func isLive(pid: Int32) -> Bool {
            guard (try? ProcFS.readLink("/proc/\(pid)/fd/\(uffdDescriptor)")) == "anon_inode:[userfaultfd]" else { return false }
            var st = stat()
            return stat("/proc/\(pid)/fd/\(uffdDescriptor)", &st) == 0 && UInt64(st.st_ino) == uffdInode
        }
    }

    /// VMAs worth tracking: private, writable, ordinary memory.
    static func isTrackable(_ region: MemoryCapture.Region) -> Bool {
        !region.skip && !region.vma.shared && region.vma.prot & 2 != 0 && region.vma.role != .vdso
    }

    /// Write-protects every trackable VMA through `userfaultfd`, a descriptor the capture
    /// created in the target (InjectedCapture, parked like its other calls).
    static func start(pid: Int32, pidfd: Int32, userfaultfd fd: Int32?, regions: [MemoryCapture.Region]) throws -> Note {
        guard let fd else {
            throw CaptureError(.unsupported, "cannot start tracking: the process is stopped by a signal", pid: pid)
        }
        let ours = Int32(try kernelCall("pidfd_getfd(userfaultfd)", cc_pidfd_getfd(pidfd, Int32(fd))))
        defer { close(ours) }
        var granted: UInt64 = 0
        try kernelCall("ioctl(UFFDIO_API, WP_ASYNC)", cc_uffdio_api(ours, CC_UFFD_FEATURE_WP_ASYNC | CC_UFFD_FEATURE_WP_UNPOPULATED, &granted))
        for region in regions where isTrackable(region) {
            try protect(ours, region.vma.start, region.vma.end - region.vma.start)
        }
        var st = stat()
        fstat(ours, &st)
        return Note(uffdDescriptor: Int32(fd), uffdInode: UInt64(st.st_ino), imageUUID: "")
    }

    static func protect(_ uffd: Int32, _ start: UInt64, _ length: UInt64) throws(SystemCallError) {
        try kernelCall("ioctl(UFFDIO_REGISTER, MODE_WP)", cc_uffdio_register_wp(uffd, start, length))
        try kernelCall("ioctl(UFFDIO_WRITEPROTECT)", cc_uffdio_writeprotect(uffd, start, length, 1))
    }

    /// Registers VMAs that appeared since tracking began (their scan said EPERM).
    static func protectNew(pid: Int32, pidfd: Int32, note: Note, ranges: [(UInt64, UInt64)]) throws {
        guard !ranges.isEmpty else { return }
        let ours = Int32(try kernelCall("pidfd_getfd(userfaultfd)", cc_pidfd_getfd(pidfd, note.uffdDescriptor)))
        defer { close(ours) }
        for (start, length) in ranges { try protect(ours, start, length) }
    }

    /// PAGEMAP_SCAN with PM_SCAN_WP_MATCHING: the pages of [start, end) written
    /// since they were last protected, as page indices relative to `start`;
    /// protects them again. Nil when the range is not tracked (EPERM).
    static func writtenPages(pagemap: Int32, start: UInt64, end: UInt64) throws(SystemCallError) -> [Range<UInt64>]? {
        var result: [Range<UInt64>] = []
        var regions = [cc_page_region](repeating: cc_page_region(), count: 512)
        var cursor = start
        while cursor < end {
            var arg = cc_pm_scan_arg()
            arg.size = UInt64(MemoryLayout<cc_pm_scan_arg>.size)
            arg.flags = CC_PM_SCAN_WP_MATCHING | CC_PM_SCAN_CHECK_WPASYNC
            arg.start = cursor
            arg.end = end
            arg.category_mask = CC_PAGE_IS_WRITTEN
            arg.return_mask = CC_PAGE_IS_WRITTEN
            arg.vec_len = UInt64(regions.count)
            let n = regions.withUnsafeMutableBufferPointer { buffer -> Int in
                arg.vec = UInt64(UInt(bitPattern: buffer.baseAddress))
                return cc_pagemap_scan(pagemap, &arg)
            }
            if n == -Int(EPERM) { return nil }
            try kernelCall("ioctl(PAGEMAP_SCAN)", n)
            for region in regions.prefix(n) {
                result.append(((region.start - start) / 4096)..<((region.end - start) / 4096))
            }
            guard arg.walk_end > cursor else { break }
            cursor = arg.walk_end
        }
        return result
    }
}

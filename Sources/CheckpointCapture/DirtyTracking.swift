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
        if FileSystem.makeWritableDirectory(run) { return run }
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
            guard let st = FileStatus.of(path: path) else { return "" }
            return "\(st.device):\(st.inode):\(st.size):\(st.modificationNanoseconds / 1_000_000_000).\(st.modificationNanoseconds % 1_000_000_000)"
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
        func save(pid: Int32, pruning: Bool = true) throws(SystemCallError) {
            guard let path = Note.path(pid: pid) else { throw SystemCallError("read /proc/\(pid)/stat", errno: .noSuchProcess) }
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
            try FileSystem.writeInPlace(Array(text.utf8), to: path, permissions: 0o600)
        }

        /// Removes notes of processes that are gone (their pid is free or reused).
        static func pruneStale() {
            let directory = DirtyTracking.stateDirectory
            for name in (try? FileSystem.contentsOfDirectory(directory)) ?? [] where name.hasPrefix("track-") {
                let parts = name.dropFirst(6).split(separator: "-")
                guard parts.count == 2, let pid = Int32(parts[0]) else { continue }
                if path(pid: pid) != "\(directory)/\(name)" { try? FileSystem.unlink("\(directory)/\(name)") }
            }
        }

        /// Whether the target still holds this userfaultfd.
        func isLive(pid: Int32) -> Bool {
            guard (try? ProcFS.readLink("/proc/\(pid)/fd/\(uffdDescriptor)")) == "anon_inode:[userfaultfd]" else { return false }
            return FileStatus.of(path: "/proc/\(pid)/fd/\(uffdDescriptor)")?.inode == uffdInode
        }
    }

    /// VMAs worth tracking: private, writable, ordinary memory.
    static func isTrackable(_ region: MemoryRegion) -> Bool {
        !region.skip && !region.vma.shared && region.vma.prot & 2 != 0 && region.vma.role != .vdso
    }

    /// Write-protects every trackable VMA through `userfaultfd`, a descriptor the capture
    /// created in the target (InjectedCapture, parked like its other calls).
    static func start(pid: Int32, pidfd: Int32, userfaultfd fd: Int32?, regions: [MemoryRegion]) throws(StateFailure) -> Note {
        guard let fd else {
            throw .state(StateError(.unsupported, "cannot start tracking: the process is stopped by a signal"))
        }
        do throws(SystemCallError) {
            let ours = try Userfaultfd(pidfd: pidfd, targetDescriptor: fd)
            try ours.enableAsyncWriteProtect()
            for region in regions where isTrackable(region) {
                try ours.writeProtect(start: region.vma.start, length: region.vma.end - region.vma.start)
            }
            return Note(uffdDescriptor: fd, uffdInode: ours.inode, imageUUID: "")
        } catch {
            throw .system(error)
        }
    }

    /// Registers VMAs that appeared since tracking began (their scan said EPERM).
    static func protectNew(pid: Int32, pidfd: Int32, note: Note, ranges: [(UInt64, UInt64)]) throws(SystemCallError) {
        guard !ranges.isEmpty else { return }
        let ours = try Userfaultfd(pidfd: pidfd, targetDescriptor: note.uffdDescriptor)
        for (start, length) in ranges { try ours.writeProtect(start: start, length: length) }
    }

    /// The pages written since the parent, region by region (PAGEMAP_SCAN, which protects
    /// them again: ``PagemapFile/writtenPages(start:end:)``), for the memory's capture;
    /// the regions the kernel does not track (new VMAs) are noted to join the tracker.
    final class WrittenPages {
        private let pagemap: PagemapFile
        /// Trackable regions the kernel did not track, as (start, length).
        private(set) var untracked: [(UInt64, UInt64)] = []

        /// Scans the pagemap of `pid`.
        init(pid: Int32) throws(SystemCallError) { pagemap = try PagemapFile(pid: pid) }

        /// The written pages of `region`, or nil when it is not tracked (read it whole).
        func of(_ region: MemoryRegion) throws(SystemCallError) -> [Range<UInt64>]? {
            guard DirtyTracking.isTrackable(region) else { return nil }
            let pages = try pagemap.writtenPages(start: region.vma.start, end: region.vma.end)
            if pages == nil { untracked.append((region.vma.start, region.vma.end - region.vma.start)) }
            return pages
        }
    }
}

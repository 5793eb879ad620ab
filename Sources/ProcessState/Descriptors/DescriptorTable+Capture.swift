import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The descriptors of a process as a checkpoint writes them (§5.3 handles in the
/// 1.1 open-files layout, sync-objects, sockets, console).
package struct CapturedDescriptors {
    /// Open file descriptions and the descriptors naming them.
    package var table = OpenFileTable()
    /// §5.3 sync-objects: the eventfd, timerfd and signalfd entries (by object id);
    /// the caller adds the timers.
    package var sync = Ccimg_V1_SyncObjects()
    /// §5.3 sockets, one per socket object.
    package var sockets: [Ccimg_V1_Socket] = []
    /// What was captured only in part.
    package var warnings: [String] = []

    /// §5.3 handles, 1.1 layout: write it with `ImageWriterOptions.openFiles` set.
    package var handleTable: Ccimg_V1_HandleTable { table.handleTable }

    /// §5.3 console: the terminal of fd 1 (or 0, 2). Its history is only
    /// visible to an interposer; a capture from outside records the settings.
    package func console() -> Ccimg_V1_Console? {
        let ttys = [Int32(1), 0, 2].lazy.compactMap { fd -> Ccimg_V1_Handle? in
            guard let d = self.table.descriptors.first(where: { $0.fd == fd }), let o = self.table.object(d.objectID), o.type == .tty else { return nil }
            return o
        }
        guard let tty = ttys.first else { return nil }
        var c = Ccimg_V1_Console()
        c.termios = tty.tty.termios
        c.rows = tty.tty.rows
        c.cols = tty.tty.cols
        return c
    }
}

/// What a kind's capture may use and add to: the process, a way to borrow its
/// descriptors (pidfd_getfd), and the sync-objects, sockets and warnings so far.
package struct DescriptorCaptureContext {
    /// The process whose descriptors are read.
    package let pid: Int32
    /// Its pidfd (pidfd_open(2)), for pidfd_getfd(2).
    package let pidfd: Int32
    /// Largest file content copied into an image (a deleted file or a memfd).
    package static let maxContents = 256 << 20
    /// What the capture found so far.
    package var result = CapturedDescriptors()
    /// Pipes whose unread bytes were copied already (by pipe inode).
    package var pipesRead = Set<UInt64>()

    /// A descriptor of ours for the target's `fd` (pidfd_getfd(2)): the same open file,
    /// without touching the target. Closed when it goes out of scope.
    package func borrow(_ fd: Int32) throws(SystemCallError) -> OwnedDescriptor {
        try OwnedDescriptor(borrowing: fd, fromProcess: pidfd)
    }

    /// Adds a warning (a descriptor captured only in part).
    package mutating func warn(_ text: String) { result.warnings.append(text) }
}

extension DescriptorTable {
    /// Reads every descriptor of process `pid` from /proc/PID/fd and fdinfo; the
    /// descriptors that share one open file description (kcmp(2) KCMP_FILE, asked
    /// only of descriptors of the same file) become one object, captured once.
    package static func capture(pid: Int32, pidfd: Int32) throws(SystemCallError) -> CapturedDescriptors {
        var context = DescriptorCaptureContext(pid: pid, pidfd: pidfd)
        for group in try sharedDescriptions(pid: pid, context: &context) {
            do { try capture(group, &context) } catch {
                // Closed meanwhile (only possible for a running capture): skip it.
                if error.errno == .noSuchFileOrDirectory || error.errno == .badFileDescriptor { continue }
                throw error
            }
        }
        context.result.table.syncEntries(into: &context.result.sync)
        return context.result
    }

    /// The descriptors of `pid`, in ascending number, grouped by open file description.
    static func sharedDescriptions(pid: Int32, context: inout DescriptorCaptureContext) throws(SystemCallError)
        -> [(probe: DescriptorProbe, fds: [(fd: Int32, fdFlags: UInt32)])] {
        var groups: [(probe: DescriptorProbe, fds: [(fd: Int32, fdFlags: UInt32)])] = []
        var candidates: [String: [Int]] = [:]     // per file, its groups in kcmp order
        var kcmpWorks = true
        for fd in try ProcFS.descriptors(pid).sorted() {
            let probe: DescriptorProbe
            do { probe = try DescriptorProbe(pid: pid, fd: fd) } catch {
                if error.errno == .noSuchFileOrDirectory || error.errno == .badFileDescriptor { continue }
                throw error
            }
            let fdFlags = probe.flags & DescriptorFlags.O_CLOEXEC != 0 ? DescriptorFlags.FD_CLOEXEC : 0
            let key = probe.sharingKey
            var bucket = candidates[key, default: []]
            var found: (group: Int?, insertAt: Int?) = (nil, bucket.count)
            if kcmpWorks && !bucket.isEmpty {
                do throws(SystemCallError) {
                    let hit = try search(bucket, for: fd, pid: pid) { groups[$0].probe.fd }
                    found = (hit.group, hit.insertAt)
                } catch {
                    found = (nil, nil)      // closed meanwhile: its own object, kept out of the order
                    if error.errno != .badFileDescriptor {
                        kcmpWorks = false
                        context.warn("kcmp(KCMP_FILE) is not available (\(error)); descriptors sharing an open file description are captured as separate ones")
                    }
                }
            }
            if let g = found.group {
                groups[g].fds.append((fd, fdFlags))
            } else {
                if let at = found.insertAt {
                    bucket.insert(groups.count, at: at)
                    candidates[key] = bucket
                }
                groups.append((probe, [(fd, fdFlags)]))
            }
        }
        return groups
    }

    /// The group among `bucket` (kept in kcmp order) whose description `fd` shares, or
    /// where a new group goes: a binary search of kcmp(KCMP_FILE) comparisons, so many
    /// descriptors of one anonymous inode (eventfds, timerfds) stay cheap; a linear one
    /// when the kernel gives no order.
    static func search(_ bucket: [Int], for fd: Int32, pid: Int32, representative: (Int) -> Int32) throws(SystemCallError)
        -> (group: Int?, insertAt: Int) {
        var low = 0, high = bucket.count
        while low < high {
            let mid = (low + high) / 2
            switch try Kcmp.compareFiles(pid1: pid, representative(bucket[mid]), pid2: pid, fd) {
            case .same: return (bucket[mid], mid)
            case .less: low = mid + 1
            case .greater: high = mid
            case .unordered:
                for g in bucket {
                    if try Kcmp.sameFile(pid1: pid, representative(g), pid2: pid, fd) { return (g, 0) }
                }
                return (nil, bucket.count)
            }
        }
        return (nil, low)
    }

    /// One open file description: the fields every kind has, then the kind's own.
    static func capture(_ group: (probe: DescriptorProbe, fds: [(fd: Int32, fdFlags: UInt32)]),
                        _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        let probe = group.probe
        let (kind, type) = classify(probe)
        var h = Ccimg_V1_Handle()
        h.objectID = context.result.table.nextObjectID
        h.fd = probe.fd
        h.type = type
        h.path = probe.link
        h.offset = Int64(probe.field("pos") ?? "0") ?? 0
        h.openFlags = probe.flags & ~DescriptorFlags.O_CLOEXEC
        h.fdinfo = probe.fdinfo.map { "\($0.0):\t\($0.1)" }.joined(separator: "\n")
        if let status = probe.status { h.identity = FileIdentity.of(status: status) }
        try kind.capture(probe, into: &h, &context)
        context.result.table.add(h, descriptors: group.fds)
    }
}

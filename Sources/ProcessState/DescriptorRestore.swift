#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import LinuxKernel
import CheckpointImage
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// File descriptors (§5.3 handles, sync objects): each object is created in
/// the process at a free number, then moved to its saved number (dup3), then
/// epoll sets are refilled once every target exists.
package struct DescriptorRestore {
    /// The image's handles section and sync objects.
    let handles: [Ccimg_V1_Handle]
    let sync: Ccimg_V1_SyncObjects
    /// Injected calls into the process being restored.
    package var remote: RemoteCalls
    /// What was restored only in part.
    package private(set) var warnings: [String] = []

    /// Restores `handles` and `sync` through `remote`.
    package init(handles: [Ccimg_V1_Handle], sync: Ccimg_V1_SyncObjects, remote: RemoteCalls) {
        self.handles = handles
        self.sync = sync
        self.remote = remote
    }

    mutating func warn(_ text: String) { warnings.append(text) }

    /// Whether saved fd 0–2 is connected outside the process (a pipe whose other
    /// end it does not hold, a tty, a socket): then the process keeps ccpm's own
    /// fd there, as a shell job would (CRIU's --shell-job / --inherit-fd).
    func inheritsStandardDescriptor(_ h: Ccimg_V1_Handle) -> Bool {
        guard h.fd <= 2 else { return false }
        switch h.type {
        case .tty, .socket, .fifo: return true
        case .pipe: return !holdsOtherEnd(h)
        default: return false
        }
    }

    /// Whether the process also holds the other end of pipe `h` (a read end for a write end).
    func holdsOtherEnd(_ h: Ccimg_V1_Handle) -> Bool {
        let mode = h.openFlags & UInt32(O_ACCMODE)
        return self.handles.contains { $0.type == .pipe && $0.pipeID == h.pipeID && $0.openFlags & UInt32(O_ACCMODE) != mode }
    }

    package mutating func restore() throws {
        let handles = self.handles.sorted { $0.fd < $1.fd }
        let inherited = Set(handles.filter(inheritsStandardDescriptor).map(\.fd))
        for fd in Int32(0)...2 where !handles.contains(where: { $0.fd == fd }) {
            try remote.call("close(\(fd))", X86Syscall.close, [UInt64(fd)])
        }
        var parked = ParkedDescriptors(next: UInt64((handles.map(\.fd).max() ?? 2) + 1))
        var pipeEnds: [UInt64: (read: UInt64, write: UInt64)] = [:]

        for h in handles where !inherited.contains(h.fd) {
            let mark = remote.scratchMark
            defer { remote.release(to: mark) }
            let accessMode = h.openFlags & UInt32(O_ACCMODE)
            let nonblock = UInt64(h.openFlags & UInt32(O_NONBLOCK))
            switch h.type {
            case .regular, .directory, .device, .tty, .fifo:
                if h.deleted {
                    let fd = try memfd(named: h.path, contents: h.contents, offset: h.offset)
                    try parked.park(&remote, fd, h)
                    warn("fd \(h.fd): \(h.path) was deleted; it is restored as a memfd with its contents")
                    continue
                }
                var flags = h.openFlags & ~UInt32(O_CREAT | O_EXCL | O_TRUNC)
                if h.type == .tty { flags |= UInt32(O_NOCTTY) }
                if h.type == .fifo { flags |= UInt32(O_NONBLOCK) }     // no waiting for a peer
                let path = try remote.put(string: h.path)
                guard access(h.path, F_OK) == 0 else {
                    throw StateError(.incompatible, "fd \(h.fd): \(h.path) is missing here; the process had it open")
                }
                let fd = try remote.call("openat(\(h.path))", X86Syscall.openat, [UInt64(bitPattern: Int64(AT_FDCWD)), path, UInt64(flags)])
                if h.type == .regular && h.offset != 0 {
                    try remote.call("lseek", X86Syscall.lseek, [fd, UInt64(bitPattern: h.offset), UInt64(SEEK_SET)])
                }
                try parked.park(&remote, fd, h)
            case .memfd:
                let name = h.path.hasPrefix("/memfd:") ? String(h.path.dropFirst(7).prefix { $0 != " " }) : "restored"
                let fd = try memfd(named: name, contents: h.contents, offset: h.offset)
                try parked.park(&remote, fd, h)
            case .pipe:
                var ends = pipeEnds[h.pipeID]
                if ends == nil {
                    let fdsAddress = try remote.put([UInt8](repeating: 0, count: 8))
                    try remote.call("pipe2", X86Syscall.pipe2, [fdsAddress, 0])
                    let fds = try remote.get(8, at: fdsAddress)
                    let read = UInt64(fds[0..<4].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
                    let write = UInt64(fds[4..<8].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
                    // The unread bytes go back into the pipe (raised to fit, F_SETPIPE_SZ).
                    let unread = self.handles.first { $0.pipeID == h.pipeID && !$0.unread.isEmpty }?.unread ?? Data()
                    if unread.count > 65536 { try remote.call("fcntl(F_SETPIPE_SZ)", X86Syscall.fcntl, [write, UInt64(Linux.F_SETPIPE_SZ), UInt64(unread.count)]) }
                    try writeAll(Array(unread), to: write)
                    ends = (read, write)
                    pipeEnds[h.pipeID] = ends
                    if !holdsOtherEnd(h) {
                        warn("fd \(h.fd): the other end of its pipe was outside the process; that end is restored closed")
                    }
                }
                let end = accessMode == UInt32(O_WRONLY) ? ends!.write : ends!.read
                let copy = try remote.call("fcntl(F_DUPFD)", X86Syscall.fcntl, [end, UInt64(F_DUPFD), 0])
                try parked.park(&remote, copy, h)
            case .eventfd:
                let e = self.sync.eventfds.first { $0.fd == h.fd }
                let flags = (e?.semaphore == true ? 1 : 0) | nonblock
                let fd = try remote.call("eventfd2", X86Syscall.eventfd2, [e?.counter ?? 0, flags])
                try parked.park(&remote, fd, h)
            case .timerfd:
                guard let t = self.sync.timerfds.first(where: { $0.fd == h.fd }) else { throw StateError(.unsupported, "fd \(h.fd): timerfd without its state") }
                let fd = try remote.call("timerfd_create", X86Syscall.timerfdCreate, [UInt64(t.clockID), nonblock])
                if t.valueNs > 0 {
                    var spec: [UInt8] = []
                    spec.appendTimespec(t.intervalNs)
                    spec.appendTimespec(t.valueNs)
                    let address = try remote.put(spec)
                    try remote.call("timerfd_settime", X86Syscall.timerfdSettime, [fd, 0, address, 0])
                }
                if t.ticks > 0 {
                    // TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE); without it the expirations are lost.
                    var ticks: [UInt8] = []
                    ticks.appendLE(t.ticks)
                    let address = try remote.put(ticks)
                    if (try? remote.call("ioctl(TFD_IOC_SET_TICKS)", X86Syscall.ioctl, [fd, Linux.TFD_IOC_SET_TICKS, address])) == nil {
                        warn("fd \(h.fd): \(t.ticks) timerfd expirations not yet read are lost")
                    }
                }
                try parked.park(&remote, fd, h)
            case .signalfd:
                let mask = self.sync.signalfds.first { $0.fd == h.fd }?.mask ?? 0
                var sigset: [UInt8] = []
                sigset.appendLE(mask)
                let address = try remote.put(sigset)
                let fd = try remote.call("signalfd4", X86Syscall.signalfd4, [UInt64.max, address, 8, nonblock])
                try parked.park(&remote, fd, h)
            case .epoll:
                let fd = try remote.call("epoll_create1", X86Syscall.epollCreate1, [0])
                try parked.park(&remote, fd, h)
            case .inotify:
                let fd = try remote.call("inotify_init1", X86Syscall.inotifyInit1, [nonblock])
                try addInotifyWatches(fd: fd, fdinfo: h.fdinfo, savedFD: h.fd)
                try parked.park(&remote, fd, h)
            case .socket:
                throw StateError(.unsupported, "fd \(h.fd) is a socket; this version restores sockets only as fds 0-2 connected outside the process")
            case .other, .unspecified, .UNRECOGNIZED:
                if h.path == "anon_inode:[userfaultfd]" {
                    warn("fd \(h.fd) (a userfaultfd, as ccpm --track leaves) is not restored; the next --track starts tracking anew")
                } else {
                    warn("fd \(h.fd) (\(h.path)) is not restored")
                }
            }
        }
        for end in pipeEnds.values {
            try remote.call("close", X86Syscall.close, [end.read])
            try remote.call("close", X86Syscall.close, [end.write])
        }
        // Every object to its saved number, with its close-on-exec flag and status flags.
        let statusFlags = UInt32(O_APPEND | O_NONBLOCK | O_ASYNC | Linux.O_DIRECT | Linux.O_NOATIME)
        for (temporary, h) in parked.placed {
            try remote.call("dup3(\(h.fd))", X86Syscall.dup3, [temporary, UInt64(h.fd), h.fdFlags & UInt32(FD_CLOEXEC) != 0 ? UInt64(O_CLOEXEC) : 0])
            try remote.call("close", X86Syscall.close, [temporary])
            if h.type == .fifo || h.type == .regular || h.type == .pipe {
                try remote.call("fcntl(F_SETFL)", X86Syscall.fcntl, [UInt64(h.fd), UInt64(F_SETFL), UInt64(h.openFlags & statusFlags)])
            }
        }
        // epoll sets, now that every target is at its number.
        for h in handles where h.type == .epoll {
            for target in h.epollTargets {
                let mark = remote.scratchMark
                defer { remote.release(to: mark) }
                var event: [UInt8] = []
                event.appendLE(target.events)
                event.appendLE(target.data)      // struct epoll_event is packed on x86-64: 12 bytes
                let address = try remote.put(event)
                try remote.call("epoll_ctl(\(h.fd), ADD \(target.fd))", X86Syscall.epollCtl, [UInt64(h.fd), 1, UInt64(target.fd), address])
            }
        }
    }

    /// A memfd in the process holding `contents`, positioned at `offset`.
    mutating func memfd(named name: String, contents: Data, offset: Int64) throws -> UInt64 {
        let address = try remote.put(string: String(name.suffix(200)))
        let fd = try remote.call("memfd_create", X86Syscall.memfdCreate, [address, 0])
        try writeAll(Array(contents), to: fd)
        try remote.call("lseek", X86Syscall.lseek, [fd, UInt64(bitPattern: offset), UInt64(SEEK_SET)])
        return fd
    }

    /// write(2) of `bytes` to `fd` in the process, through the scratch area.
    mutating func writeAll(_ bytes: [UInt8], to fd: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let mark = remote.scratchMark
            defer { remote.release(to: mark) }
            let room = remote.scratchCapacity - Int(mark) - 16
            guard room > 0 else { throw SystemCallError("write (in the restored process): no scratch room", errno: ENOMEM) }
            let chunk = Array(bytes[done..<min(bytes.count, done + room)])
            let address = try remote.put(chunk)
            let n = try remote.call("write", X86Syscall.write, [fd, address, UInt64(chunk.count)])
            guard n > 0 else { throw SystemCallError("write (in the restored process)", errno: EIO) }
            done += Int(n)
        }
    }

    /// inotify watches from the saved fdinfo lines (`inotify wd:1 ino:… sdev:… mask:…
    /// f_handle:…`): each file is found again by its handle (open_by_handle_at) and
    /// watched in watch-descriptor order, so the numbers come out the same.
    mutating func addInotifyWatches(fd: UInt64, fdinfo: String, savedFD: Int32) throws {
        let lines = fdinfo.split(separator: "\n").filter { $0.hasPrefix("inotify:") }
        let watches = lines.map { ProcFS.tokens(String($0.dropFirst("inotify:".count))) }
            .sorted { Int($0["wd"] ?? "0") ?? 0 < Int($1["wd"] ?? "0") ?? 0 }
        for w in watches {
            guard let handleHex = w["f_handle"], let type = Int32(w["fhandle-type"] ?? "", radix: 16),
                  let mask = UInt32(w["mask"] ?? "", radix: 16), let sdev = UInt64(w["sdev"] ?? "", radix: 16) else { continue }
            let handle = stride(from: 0, to: handleHex.count - 1, by: 2).compactMap { i -> UInt8? in
                let a = handleHex.index(handleHex.startIndex, offsetBy: i)
                return UInt8(handleHex[a...handleHex.index(after: a)], radix: 16)
            }
            guard let path = Self.path(ofHandle: handle, type: type, device: sdev) else {
                warn("fd \(savedFD): an inotify watch (inode \(w["ino"] ?? "?")) names a file that is gone; not restored")
                continue
            }
            let address = try remote.put(string: path)
            try remote.call("inotify_add_watch(\(path))", X86Syscall.inotifyAddWatch, [fd, address, UInt64(mask)])
        }
    }

    /// The path of the file with handle `handle` on the file system of kernel device `device`.
    static func path(ofHandle handle: [UInt8], type: Int32, device: UInt64) -> String? {
        // The kernel's dev_t in fdinfo is major << 20 | minor; find a mount of that device.
        let major = device >> 20, minor = device & 0xfffff
        let mountinfo = (try? ProcFS.read("/proc/self/mountinfo")) ?? ""
        let mounts = mountinfo.split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: " ")
            return f.count > 4 && f[2] == "\(major):\(minor)" ? String(f[4]) : nil
        }
        for mount in mounts + ["/"] {
            let mountFD = open(mount, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard mountFD >= 0 else { continue }
            defer { close(mountFD) }
            let fd = handle.withUnsafeBytes { cc_open_by_handle(mountFD, type, $0.baseAddress, UInt32($0.count), Linux.O_PATH | O_CLOEXEC) }
            guard fd >= 0 else { continue }
            defer { close(Int32(fd)) }
            if let path = try? ProcFS.readLink("/proc/self/fd/\(fd)"), !path.hasSuffix(" (deleted)") { return path }
        }
        return nil
    }
}

/// New fds moved out of the way of every saved number until all exist.
struct ParkedDescriptors {
    var next: UInt64
    var placed: [(temporary: UInt64, handle: Ccimg_V1_Handle)] = []

    mutating func park(_ remote: inout RemoteCalls, _ fd: UInt64, _ h: Ccimg_V1_Handle) throws {
        let temporary = next
        next += 1
        if fd != temporary {
            try remote.call("dup3", X86Syscall.dup3, [fd, temporary, 0])
            try remote.call("close", X86Syscall.close, [fd])
        }
        placed.append((temporary, h))
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads a process's file descriptors (§5.3 handles) from /proc/PID/fd and
/// /proc/PID/fdinfo, and — through pidfd_getfd(2), which hands us the same
/// open file without touching the target — what fdinfo does not show: a
/// pipe's unread bytes (copied with tee(2), not consumed), a memfd's or a
/// deleted file's contents, a terminal's settings, a socket's addresses.
package struct HandleCapture {
    let pid: Int32
    let pidfd: Int32
    /// Largest file content copied into an image (a deleted file or a memfd).
    static let maxContents = 256 << 20

    package var handles: [Ccimg_V1_Handle] = []
    package var sync = Ccimg_V1_SyncObjects()
    package var sockets: [Ccimg_V1_Socket] = []
    package var warnings: [String] = []
    private var pipesRead = Set<UInt64>()

    package init(pid: Int32, pidfd: Int32) {
        self.pid = pid
        self.pidfd = pidfd
    }

    package mutating func captureAll() throws(SystemCallError) {
        for fd in try ProcFS.descriptors(pid) {
            do { try capture(fd) } catch {
                // The descriptor was closed meanwhile (only possible for a running capture): skip it.
                if error.errno == .noSuchFileOrDirectory || error.errno == .badFileDescriptor { continue }
                throw error
            }
        }
    }

    /// A descriptor of ours for the target's `fd` (pidfd_getfd).
    private func borrow(_ fd: Int32) throws(SystemCallError) -> Int32 {
        Int32(try kernelCall("pidfd_getfd(\(fd))", cc_pidfd_getfd(pidfd, fd)))
    }

    private mutating func capture(_ fd: Int32) throws(SystemCallError) {
        let link = try ProcFS.readLink("/proc/\(pid)/fd/\(fd)")
        let info = ProcFS.parseFdinfo(try ProcFS.read("/proc/\(pid)/fdinfo/\(fd)"))
        func field(_ key: String) -> String? { info.first { $0.0 == key }?.1 }
        var h = Ccimg_V1_Handle()
        h.fd = fd
        h.path = link
        h.offset = Int64(field("pos") ?? "0") ?? 0
        h.openFlags = UInt32(field("flags") ?? "0", radix: 8) ?? 0
        h.fdFlags = h.openFlags & UInt32(O_CLOEXEC) != 0 ? UInt32(FD_CLOEXEC) : 0
        h.openFlags &= ~UInt32(O_CLOEXEC)
        h.fdinfo = info.map { "\($0.0):\t\($0.1)" }.joined(separator: "\n")

        var st = stat()
        let statOK = stat("/proc/\(pid)/fd/\(fd)", &st) == 0
        let mode = statOK ? st.st_mode & S_IFMT : 0
        if statOK {
            var id = Ccimg_V1_FileIdentity()
            id.dev = UInt64(st.st_dev)
            id.inode = UInt64(st.st_ino)
            id.size = UInt64(st.st_size)
            id.mtimeNs = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            h.identity = id
        }

        if link.hasPrefix("pipe:[") || (mode == S_IFIFO && !link.hasPrefix("/")) {
            h.type = .pipe
            h.pipeID = UInt64(st.st_ino)
            try readPipe(&h)
        } else if mode == S_IFIFO {
            h.type = .fifo
            h.pipeID = UInt64(st.st_ino)
            try readPipe(&h)
        } else if link.hasPrefix("socket:[") {
            h.type = .socket
            h.socketInode = UInt64(st.st_ino)
            try captureSocket(&h)
        } else if link == "anon_inode:[eventfd]" {
            h.type = .eventfd
            var e = Ccimg_V1_EventFd()
            e.fd = fd
            e.counter = UInt64(field("eventfd-count") ?? "0", radix: 16) ?? 0
            e.semaphore = field("eventfd-semaphore") == "1"
            sync.eventfds.append(e)
        } else if link == "anon_inode:[timerfd]" {
            h.type = .timerfd
            var t = Ccimg_V1_TimerFd()
            t.fd = fd
            t.clockID = Int32(field("clockid") ?? "0") ?? 0
            t.ticks = UInt64(field("ticks") ?? "0") ?? 0
            t.settimeFlags = Int32(field("settime flags") ?? "0", radix: 8) ?? 0
            t.valueNs = ProcFS.parseTimespecPair(field("it_value") ?? "") ?? 0
            t.intervalNs = ProcFS.parseTimespecPair(field("it_interval") ?? "") ?? 0
            sync.timerfds.append(t)
        } else if link == "anon_inode:[signalfd]" {
            h.type = .signalfd
            var s = Ccimg_V1_SignalFd()
            s.fd = fd
            s.mask = UInt64(field("sigmask") ?? "0", radix: 16) ?? 0
            sync.signalfds.append(s)
        } else if link == "anon_inode:[eventpoll]" {
            h.type = .epoll
            h.epollTargets = info.filter { $0.0 == "tfd" }.compactMap { _, value in
                let t = ProcFS.tokens("tfd:" + value)
                guard let target = Int32(t["tfd"] ?? "") else { return nil }
                var e = Ccimg_V1_EpollTarget()
                e.fd = target
                e.events = UInt32(t["events"] ?? "0", radix: 16) ?? 0
                e.data = UInt64(t["data"] ?? "0", radix: 16) ?? 0
                return e
            }
        } else if link == "anon_inode:inotify" || link == "anon_inode:[inotify]" {
            h.type = .inotify
        } else if link == "anon_inode:[userfaultfd]" {
            h.type = .other     // ccpm's own dirty-page tracker (--track), or the program's
        } else if link.hasPrefix("/memfd:") {
            h.type = .memfd
            h.deleted = true
            try copyContents(&h, size: Int(st.st_size))
        } else if mode == S_IFCHR {
            let major = (UInt32(st.st_rdev) >> 8) & 0xfff
            h.deviceRdev = UInt32(truncatingIfNeeded: st.st_rdev)
            if major == 136 || major == 4 || major == 5 || link.hasPrefix("/dev/pts/") || link.hasPrefix("/dev/tty") {
                h.type = .tty
                try captureTty(&h)
            } else {
                h.type = .device
            }
        } else if mode == S_IFDIR {
            h.type = .directory
        } else if mode == S_IFREG {
            h.type = .regular
            if link.hasSuffix(" (deleted)") {
                h.deleted = true
                try copyContents(&h, size: Int(st.st_size))
            }
        } else {
            h.type = .other
            warnings.append("fd \(fd) (\(link)) is of a kind this version records by path only")
        }
        handles.append(h)
    }

    /// Unread bytes of a pipe, copied with tee(2) so the target still reads them.
    private mutating func readPipe(_ h: inout Ccimg_V1_Handle) throws(SystemCallError) {
        guard !pipesRead.contains(h.pipeID) else { return }
        let ours = try borrow(h.fd)
        defer { close(ours) }
        var queued: Int32 = 0
        guard cc_fionread(ours, &queued) >= 0, queued > 0 else { return }
        pipesRead.insert(h.pipeID)
        var bytes = [UInt8](repeating: 0, count: Int(queued))
        let n = try kernelCall("tee", bytes.withUnsafeMutableBytes { cc_pipe_peek(ours, $0.baseAddress, $0.count) })
        h.unread = Data(bytes.prefix(n))
    }

    private mutating func copyContents(_ h: inout Ccimg_V1_Handle, size: Int) throws(SystemCallError) {
        guard size <= HandleCapture.maxContents else {
            warnings.append("fd \(h.fd): contents of \(size) bytes exceed \(HandleCapture.maxContents); not stored")
            return
        }
        let ours = try borrow(h.fd)
        defer { close(ours) }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { pread(ours, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        h.contents = Data(bytes.prefix(done))
    }

    private func captureTty(_ h: inout Ccimg_V1_Handle) throws(SystemCallError) {
        let ours = try borrow(h.fd)
        defer { close(ours) }
        var tty = Ccimg_V1_TtyState()
        var t = termios()
        if tcgetattr(ours, &t) == 0 { tty.termios = withUnsafeBytes(of: t) { Data($0) } }
        var ws = winsize()
        if ioctl(ours, UInt(TIOCGWINSZ), &ws) == 0 {
            tty.rows = UInt32(ws.ws_row)
            tty.cols = UInt32(ws.ws_col)
        }
        tty.foregroundPgid = tcgetpgrp(ours)
        tty.name = h.path
        h.tty = tty
    }

    /// §5.3 console: the terminal of fd 1 (or 0, 2). Its history is only
    /// visible to an interposer; a capture from outside records the settings.
    package func console() -> Ccimg_V1_Console? {
        guard let tty = [1, 0, 2].lazy.compactMap({ fd in self.handles.first { $0.fd == fd && $0.type == .tty } }).first else { return nil }
        var c = Ccimg_V1_Console()
        c.termios = tty.tty.termios
        c.rows = tty.tty.rows
        c.cols = tty.tty.cols
        return c
    }

    /// §5.3 sockets, for now: family, type, protocol, addresses, TCP state.
    private mutating func captureSocket(_ h: inout Ccimg_V1_Handle) throws(SystemCallError) {
        let ours = try borrow(h.fd)
        defer { close(ours) }
        var s = Ccimg_V1_Socket()
        s.inode = h.socketInode
        func option(_ name: Int32) -> Int32 {
            var v: Int32 = 0
            var len = socklen_t(4)
            return getsockopt(ours, SOL_SOCKET, name, &v, &len) == 0 ? v : -1
        }
        s.family = option(SO_DOMAIN)
        s.type = option(SO_TYPE)
        s.protocol = option(SO_PROTOCOL)
        var addr = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        if withUnsafeMutablePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(ours, $0, &len) } }) == 0 {
            s.localAddress = withUnsafeBytes(of: addr) { Data($0.prefix(Int(len))) }
        }
        len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        if withUnsafeMutablePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(ours, $0, &len) } }) == 0 {
            s.peerAddress = withUnsafeBytes(of: addr) { Data($0.prefix(Int(len))) }
        }
        if s.protocol == IPPROTO_TCP {
            var info = [UInt8](repeating: 0, count: 256)
            var infoLen = socklen_t(256)
            if getsockopt(ours, Int32(IPPROTO_TCP), TCP_INFO, &info, &infoLen) == 0 { s.state = Int32(info[0]) }
        }
        sockets.append(s)
        warnings.append("fd \(h.fd) is a socket: recorded with its type and addresses only (full socket capture comes later)")
    }
}

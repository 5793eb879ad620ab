#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@_spi(Fixtures) import CheckpointImage

/// A seeded generator (SplitMix64), so fixtures are the same bytes on every machine.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A made-up but complete process state: every section kind filled, VMAs of
/// every role, pages in every state. `version` steps it forward the way a
/// running process moves between checkpoints.
public struct SyntheticProcess {
    public static let pageSize = 4096
    public var process = Ccimg_V1_ProcessInfo()
    public var threads = Ccimg_V1_ThreadList()
    public var sync = Ccimg_V1_SyncObjects()
    public var handles = Ccimg_V1_HandleTable()
    public var sockets = Ccimg_V1_SocketTable()
    public var console = Ccimg_V1_Console()
    public var signals = Ccimg_V1_SignalDispositions()
    public var metadata = Ccimg_V1_Metadata()
    /// Each VMA with its pages: nil = not populated.
    public var memory: [(vma: Ccimg_V1_Vma, pages: [[UInt8]?])] = []

    /// The marker string placed in the .data VMA, at ``markerAddress``.
    public static let marker = "CC-FIXTURE-MARKER: computing communities"
    public static let markerAddress: UInt64 = 0x5555_5555_8000 + 0x10

    static func page(_ fill: (Int) -> UInt8) -> [UInt8] { (0..<pageSize).map(fill) }

    static func textPage(_ seed: Int) -> [UInt8] {
        let words = ["checkpoint", "restore", "migrate", "process", "thread", "memory", "handle", "socket", "console", "image"]
        var out: [UInt8] = []
        var i = UInt64(seed)
        while out.count < pageSize {
            out += Array(words[Int(i % UInt64(words.count))].utf8) + [0x20]
            i = i &* 6364136223846793005 &+ 1442695040888963407
            i ^= i >> 29
        }
        return Array(out.prefix(pageSize))
    }

    static func randomPage<G: RandomNumberGenerator>(_ g: inout G) -> [UInt8] {
        (0..<pageSize).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    static func vma(_ start: UInt64, pages: Int, prot: UInt32, role: Ccimg_V1_VmaRole, path: String = "", object: String = "",
                    shared: Bool = false, offset: UInt64 = 0) -> Ccimg_V1_Vma {
        var v = Ccimg_V1_Vma()
        v.start = start
        v.end = start + UInt64(pages * pageSize)
        v.prot = prot
        v.role = role
        v.path = path
        v.object = object
        v.shared = shared
        v.fileOffset = offset
        if !path.isEmpty && !path.hasPrefix("[") {
            var id = Ccimg_V1_FileIdentity()
            id.dev = 0x803
            id.inode = UInt64(path.utf8.count * 1000 + 17)
            id.size = 0x4_2000
            id.mtimeNs = 1_700_000_000_000_000_000
            id.elfBuildID = Data((0..<20).map { UInt8(($0 * 13 + path.utf8.count) & 0xff) })
            v.fileIdentity = id
        }
        return v
    }

    /// Version 1: the first checkpoint.
    public init(version: Int = 1) {
        var g = SeededGenerator(seed: 0xC0FFEE)
        process = SyntheticProcess.processInfo()
        memory = SyntheticProcess.memoryMap(&g)
        threads.threads = [
            SyntheticProcess.thread(tid: 4242, state: .running, rip: 0x5555_5555_4100, name: "fixture"),
            SyntheticProcess.thread(tid: 4243, state: .inSyscall, rip: 0x7f00_1000_0abc, name: "reader"),
            SyntheticProcess.thread(tid: 4244, state: .stopped, rip: 0x7f00_1000_0def, name: "stopped"),
        ]

        sync = SyntheticProcess.syncObjects()
        handles.handles = SyntheticProcess.handleTable()
        sockets.sockets = SyntheticProcess.socketList()
        console = SyntheticProcess.consoleState()
        signals.actions = [(2, 0x5555_5555_4200, 0x0400_0000), (10, 0x5555_5555_4300, 0x1400_0000), (13, 1, 0)].map { s, h, f in
            var a = Ccimg_V1_SignalAction(); a.signo = Int32(s); a.handler = UInt64(h); a.flags = UInt64(f); a.restorer = 0x7f00_1000_0100
            a.mask = s == 10 ? 1 << 1 : 0; return a
        }
        metadata.entries = [("fixture", "synthetic"), ("purpose", "format conformance")].map { k, v in
            var e = Ccimg_V1_MetadataEntry(); e.key = k; e.value = v; return e
        }
        for step in 1..<max(1, version) { advance(step: step) }
    }

    /// Version 1's process facts (§5.3 process).
    static func processInfo() -> Ccimg_V1_ProcessInfo {
        var process = Ccimg_V1_ProcessInfo()
        process.pid = 4242
        process.ppid = 1
        process.sid = 4242
        process.pgid = 4242
        process.comm = "fixture"
        process.exePath = "/usr/local/bin/fixture"
        process.exeIdentity = SyntheticProcess.vma(0, pages: 1, prot: 0, role: .elfText, path: process.exePath).fileIdentity
        process.cmdline = ["/usr/local/bin/fixture", "--work", "42"]
        process.environ = ["HOME=/root", "LANG=C.UTF-8", "PATH=/usr/bin:/bin"]
        process.cwd = "/work"
        process.root = "/"
        process.umask = 0o022
        var cred = Ccimg_V1_Credentials()
        cred.uid = 1000; cred.euid = 1000; cred.suid = 1000; cred.fsuid = 1000
        cred.gid = 1000; cred.egid = 1000; cred.sgid = 1000; cred.fsgid = 1000
        cred.groups = [1000, 27]
        cred.capBounding = 0x1ff_ffff_ffff
        process.credentials = cred
        process.auxv = [(6, 4096), (25, 0x7ffd_0000_1000), (33, 0x7fff_f7fc_1000)].map { t, v in
            var a = Ccimg_V1_AuxvEntry(); a.type = UInt64(t); a.value = UInt64(v); return a
        }
        process.rlimits = [(3, 8 << 20, UInt64.max), (7, 1024, 4096)].map { r, s, h in
            var l = Ccimg_V1_Rlimit(); l.resource = UInt32(r); l.soft = UInt64(s); l.hard = h; return l
        }
        var mm = Ccimg_V1_MmFields()
        mm.startCode = 0x5555_5555_4000; mm.endCode = 0x5555_5555_6000
        mm.startData = 0x5555_5555_8000; mm.endData = 0x5555_5555_a000
        mm.startBrk = 0x5555_5556_0000; mm.brk = 0x5555_5556_0000 + UInt64(24 * 4096)
        mm.startStack = 0x7ffd_0000_ff00
        mm.argStart = 0x7ffd_0000_f000; mm.argEnd = 0x7ffd_0000_f020
        mm.envStart = 0x7ffd_0000_f020; mm.envEnd = 0x7ffd_0000_f080
        process.mm = mm

        return process
    }

    /// Version 1's memory map and pages: every role, zero, text-like, random and duplicate pages.
    static func memoryMap(_ g: inout SeededGenerator) -> [(vma: Ccimg_V1_Vma, pages: [[UInt8]?])] {
        let ps = SyntheticProcess.pageSize
        var data = SyntheticProcess.page { UInt8(truncatingIfNeeded: $0 &* 3) }
        let marker = Array(SyntheticProcess.marker.utf8)
        data.replaceSubrange(0x10..<(0x10 + marker.count), with: marker)
        var heap: [[UInt8]?] = []
        for i in 0..<24 {
            switch i % 6 {
            case 0: heap.append([UInt8](repeating: 0, count: ps))
            case 1, 2: heap.append(SyntheticProcess.textPage(i))
            case 3: heap.append(SyntheticProcess.randomPage(&g))
            case 4: heap.append(SyntheticProcess.textPage(1))   // duplicate of page 1: dedup
            default: heap.append(nil)
            }
        }
        let stack: [[UInt8]?] = [nil, nil, SyntheticProcess.page { _ in 0 }, SyntheticProcess.textPage(99)]
        return [
            (SyntheticProcess.vma(0x5555_5555_4000, pages: 2, prot: 5, role: .elfText, path: "/usr/local/bin/fixture", object: "/usr/local/bin/fixture"), [nil, nil]),
            (SyntheticProcess.vma(0x5555_5555_8000, pages: 2, prot: 3, role: .elfData, path: "/usr/local/bin/fixture", object: "/usr/local/bin/fixture", offset: 0x3000),
             [data, SyntheticProcess.page { _ in 0 }]),
            (SyntheticProcess.vma(0x5555_5556_0000, pages: 24, prot: 3, role: .heap, path: "[heap]"), heap),
            (SyntheticProcess.vma(0x7f00_0000_0000, pages: 8, prot: 3, role: .anonymous), (0..<8).map { $0 < 3 ? SyntheticProcess.randomPage(&g) : nil }),
            (SyntheticProcess.vma(0x7f00_1000_0000, pages: 2, prot: 1, role: .filePrivate, path: "/usr/lib/x86_64-linux-gnu/libc.so.6", object: "/usr/lib/x86_64-linux-gnu/libc.so.6", offset: 0x1d000),
             [SyntheticProcess.textPage(7), nil]),
            (SyntheticProcess.vma(0x7f00_2000_0000, pages: 4, prot: 3, role: .threadStack), [nil, nil, SyntheticProcess.textPage(55), SyntheticProcess.textPage(56)]),
            (SyntheticProcess.vma(0x7f00_3000_0000, pages: 1, prot: 3, role: .sharedMemory, path: "/dev/shm/fixture", shared: true), [SyntheticProcess.textPage(3)]),
            (SyntheticProcess.vma(0x7ffd_0000_c000, pages: 4, prot: 3, role: .mainStack, path: "[stack]"), stack),
            (SyntheticProcess.vma(0x7fff_f7fb_b000, pages: 4, prot: 1, role: .vvar, path: "[vvar]"), [nil, nil, nil, nil]),
            (SyntheticProcess.vma(0x7fff_f7fb_f000, pages: 2, prot: 1, role: .vvarVclock, path: "[vvar_vclock]"), [nil, nil]),
            (SyntheticProcess.vma(0x7fff_f7fc_1000, pages: 2, prot: 5, role: .vdso, path: "[vdso]"), [SyntheticProcess.textPage(8), SyntheticProcess.textPage(9)]),
        ]

    }

    /// Version 1's synchronization objects (§5.3 sync objects).
    static func syncObjects() -> Ccimg_V1_SyncObjects {
        var sync = Ccimg_V1_SyncObjects()
        var efd = Ccimg_V1_EventFd(); efd.fd = 5; efd.counter = 7
        var tfd = Ccimg_V1_TimerFd(); tfd.fd = 6; tfd.clockID = 1; tfd.valueNs = 250_000_000; tfd.intervalNs = 500_000_000
        var sfd = Ccimg_V1_SignalFd(); sfd.fd = 9; sfd.mask = 1 << 9
        var fw = Ccimg_V1_FutexWaiter(); fw.tid = 4243; fw.address = 0x5555_5555_8100; fw.expected = 2; fw.bitset = 0xffff_ffff; fw.private = true
        var pt = Ccimg_V1_PosixTimer(); pt.id = 0; pt.clockID = 1; pt.notify = 0; pt.signo = 14; pt.valueNs = 1_000_000_000
        var it = Ccimg_V1_IntervalTimer(); it.which = 0; it.valueUs = 300_000; it.intervalUs = 300_000
        var sem = Ccimg_V1_SysvSemaphore(); sem.id = 3; sem.key = 0x1234; sem.mode = 0o600; sem.values = [1, 0, 5]
        var mq = Ccimg_V1_SysvMessageQueue(); mq.id = 4; mq.key = 0x2345; mq.mode = 0o600
        var msg = Ccimg_V1_SysvMessage(); msg.type = 1; msg.body = Data("hello queue".utf8); mq.messages = [msg]
        var shm = Ccimg_V1_SysvSharedMemory(); shm.id = 5; shm.key = 0x3456; shm.mode = 0o600; shm.size = 4096
        shm.contents = Data(SyntheticProcess.textPage(12).prefix(64))
        sync.futexWaiters = [fw]; sync.eventfds = [efd]; sync.timerfds = [tfd]; sync.signalfds = [sfd]
        sync.posixTimers = [pt]; sync.intervalTimers = [it]; sync.sysvSemaphores = [sem]
        sync.sysvMessageQueues = [mq]; sync.sysvSharedMemory = [shm]

        return sync
    }

    /// Version 1's sockets: a TCP connection in repair mode and a Unix stream socket.
    static func socketList() -> [Ccimg_V1_Socket] {
        var s1 = Ccimg_V1_Socket(); s1.inode = 90001; s1.family = 2; s1.type = 1; s1.protocol = 6; s1.state = 1
        s1.localAddress = Data([2, 0, 0x1f, 0x90, 127, 0, 0, 1] + [UInt8](repeating: 0, count: 8))
        s1.peerAddress = Data([2, 0, 0xc3, 0x50, 127, 0, 0, 1] + [UInt8](repeating: 0, count: 8))
        var opt = Ccimg_V1_SocketOption(); opt.level = 6; opt.name = 1; opt.value = Data([1, 0, 0, 0]); s1.options = [opt]
        var rep = Ccimg_V1_TcpRepair(); rep.sendSeq = 1000; rep.recvSeq = 2000; rep.sndWnd = 65535; rep.rcvWnd = 65535
        rep.mss = 1460; rep.sndWscale = 7; rep.rcvWscale = 7; s1.tcpRepair = rep
        s1.receiveQueue = Data("GET / HTTP/1.0\r\n".utf8)
        var s2 = Ccimg_V1_Socket(); s2.inode = 90002; s2.family = 1; s2.type = 1; s2.peerInode = 90003
        s2.localAddress = Data([1, 0] + Array("/run/fixture.sock".utf8))
        return [s1, s2]

    }

    /// Version 1's console: termios, size and three records of history.
    static func consoleState() -> Ccimg_V1_Console {
        var console = Ccimg_V1_Console()
        console.termios = Data((0..<60).map { UInt8($0) })
        console.rows = 24
        console.cols = 80
        console.history = (0..<3).map { i in
            var r = Ccimg_V1_ConsoleRecord(); r.timeNs = 1_700_000_000_000_000_000 + Int64(i) * 1_000_000; r.fd = 1
            r.data = Data("step \(i) done\n".utf8); return r
        }

        return console
    }

    static func thread(tid: Int32, state: Ccimg_V1_RunState, rip: UInt64, name: String) -> Ccimg_V1_ThreadState {
        var t = Ccimg_V1_ThreadState()
        t.tid = tid
        t.state = state
        t.name = name
        var regs = [UInt8](repeating: 0, count: 27 * 8)
        func put(_ slot: Int, _ value: UInt64) { for b in 0..<8 { regs[slot * 8 + b] = UInt8(truncatingIfNeeded: value >> (UInt64(b) * 8)) } }
        put(16, rip)           // rip
        put(19, 0x7ffd_0000_e000 - UInt64(tid - 4242) * 0x1000) // rsp
        put(15, 202)           // orig_rax
        t.generalRegisters = Data(regs)
        t.xsave = Data((0..<832).map { UInt8(truncatingIfNeeded: $0 &+ Int(tid)) })
        t.xsaveFeatures = 0x7
        t.fsBase = 0x7f00_1000_0740 + UInt64(tid - 4242) * 0x100
        t.signalMask = tid == 4243 ? 1 << 9 : 0
        t.tidAddress = t.fsBase + 0x2d0
        t.robustList = t.fsBase + 0x2e0
        t.robustListLength = 24
        if state == .inSyscall {
            var sc = Ccimg_V1_SyscallState()
            sc.number = 0            // read
            sc.args = [3, 0x5555_5556_1000, 4096, 0, 0, 0]
            sc.restart = .auto
            sc.result = -512         // -ERESTARTSYS
            t.syscall = sc
        }
        if tid == 4242 {
            var sig = Ccimg_V1_SignalInfo(); sig.signo = 10; sig.code = 0; sig.siginfo = Data([10, 0, 0, 0] + [UInt8](repeating: 0, count: 124))
            t.pendingSignals = [sig]
            var alt = Ccimg_V1_AltStack(); alt.sp = 0x7f00_0000_4000; alt.size = 8192; t.altStack = alt
        }
        return t
    }

    static func handleTable() -> [Ccimg_V1_Handle] {
        var tty = Ccimg_V1_Handle(); tty.type = .tty; tty.path = "/dev/pts/3"; tty.openFlags = 2
        var ts = Ccimg_V1_TtyState(); ts.rows = 24; ts.cols = 80; ts.name = "pts/3"; ts.foregroundPgid = 4242; tty.tty = ts
        var out = tty; out.fd = 1
        var err = tty; err.fd = 2
        var inp = tty; inp.fd = 0
        var file = Ccimg_V1_Handle(); file.fd = 3; file.type = .regular; file.path = "/work/data.txt"; file.offset = 1234; file.openFlags = 0
        file.identity = SyntheticProcess.vma(0, pages: 1, prot: 0, role: .filePrivate, path: "/work/data.txt").fileIdentity
        var gone = Ccimg_V1_Handle(); gone.fd = 4; gone.type = .regular; gone.path = "/tmp/scratch (deleted)"; gone.deleted = true
        gone.contents = Data("scratch contents that only live in the image\n".utf8); gone.offset = 10; gone.openFlags = 2
        var efd = Ccimg_V1_Handle(); efd.fd = 5; efd.type = .eventfd; efd.fdFlags = 1
        var tfd = Ccimg_V1_Handle(); tfd.fd = 6; tfd.type = .timerfd
        var pr = Ccimg_V1_Handle(); pr.fd = 7; pr.type = .pipe; pr.pipeID = 77001; pr.unread = Data("unread pipe bytes".utf8)
        var pw = Ccimg_V1_Handle(); pw.fd = 8; pw.type = .pipe; pw.pipeID = 77001; pw.openFlags = 1
        var sfd = Ccimg_V1_Handle(); sfd.fd = 9; sfd.type = .signalfd
        var ep = Ccimg_V1_Handle(); ep.fd = 10; ep.type = .epoll
        var target = Ccimg_V1_EpollTarget(); target.fd = 7; target.events = 1; target.data = 7; ep.epollTargets = [target]
        var mem = Ccimg_V1_Handle(); mem.fd = 11; mem.type = .memfd; mem.path = "/memfd:fixture (deleted)"; mem.contents = Data(repeating: 0x41, count: 100)
        var sock = Ccimg_V1_Handle(); sock.fd = 12; sock.type = .socket; sock.socketInode = 90001
        var null = Ccimg_V1_Handle(); null.fd = 13; null.type = .device; null.path = "/dev/null"; null.deviceRdev = 0x103
        return [inp, out, err, file, gone, efd, tfd, pr, pw, sfd, ep, mem, sock, null]
    }

    /// One step of "the process ran a while": pages written, a VMA added and one
    /// removed, registers moved, a file offset advanced, console output appended.
    public mutating func advance(step: Int) {
        var g = SeededGenerator(seed: 0xBEEF &+ UInt64(step))
        // Heap: rewrite two pages, keep the rest.
        let heapIndex = memory.firstIndex { $0.vma.role == .heap }!
        memory[heapIndex].pages[1 + step] = SyntheticProcess.randomPage(&g)
        memory[heapIndex].pages[20] = SyntheticProcess.textPage(1000 + step)
        // Stack page changes.
        let stackIndex = memory.firstIndex { $0.vma.role == .mainStack }!
        memory[stackIndex].pages[3] = SyntheticProcess.textPage(200 + step)
        // A new anonymous mapping per step; the thread stack goes away at step 2.
        let start = 0x7f00_4000_0000 + UInt64(step) * 0x10_0000
        memory.append((SyntheticProcess.vma(start, pages: 3, prot: 3, role: .anonymous), [SyntheticProcess.randomPage(&g), nil, SyntheticProcess.page { _ in 0 }]))
        if step == 2 { memory.removeAll { $0.vma.role == .threadStack } }
        memory.sort { $0.vma.start < $1.vma.start }
        // Threads and files move on.
        var regs = Array(threads.threads[0].generalRegisters)
        regs[16 * 8] &+= UInt8(0x10 * step)
        threads.threads[0].generalRegisters = Data(regs)
        handles.handles[3].offset += 4096
        var r = Ccimg_V1_ConsoleRecord(); r.timeNs = 1_700_000_100_000_000_000 + Int64(step); r.fd = 1
        r.data = Data("checkpoint \(step) reached\n".utf8)
        console.history.append(r)
        sync.eventfds[0].counter += 1
    }

    /// Writes this state as an image.
    @discardableResult
    public func write(to output: consuming ImageOutput, options: ImageWriterOptions,
                      parent: ImageChain? = nil, extraSections: [(kind: UInt32, critical: Bool, payload: [UInt8])] = []) throws -> ImageWriteSummary {
        let writer = try ImageWriter(output: output, options: options, parent: parent)
        try writer.addSection(.process, process)
        try writer.addSection(.threads, threads)
        try writer.addSection(.syncObjects, sync)
        try writer.addSection(.handles, handles)
        try writer.addSection(.sockets, sockets)
        try writer.addSection(.console, console)
        try writer.addSection(.signals, signals)
        try writer.addSection(.metadata, metadata)
        for extra in extraSections {
            try writer.addRawSection(kind: extra.kind, version: 1, critical: extra.critical, payload: extra.payload)
        }
        for (vma, pages) in memory {
            try writer.beginVma(vma)
            for page in pages {
                if let page { try writer.appendPages(page) } else { writer.appendNotPopulated(count: 1) }
            }
        }
        return try writer.finish()
    }
}

@testable import LinuxKernel
import Testing

/// The fdinfo, stat and token parsers (``ProcFS``) on texts captured from this kernel (6.18)
/// for each kind of descriptor the capture reads: what the capture takes from them.
@Suite struct FdinfoTests {
    static let eventfd = """
        pos:\t0
        flags:\t04002
        mnt_id:\t17
        ino:\t1038
        eventfd-count:                7
        eventfd-id: 14
        eventfd-semaphore: 1

        """
    static let timerfd = """
        pos:\t0
        flags:\t02
        mnt_id:\t17
        ino:\t1038
        clockid: 1
        ticks: 0
        settime flags: 00
        it_value: (3599, 997094833)
        it_interval: (0, 500000000)

        """
    static let epoll = """
        pos:\t0
        flags:\t02
        mnt_id:\t17
        ino:\t1038
        tfd:        3 events:       19 data:           c0ffee  pos:0 ino:40e sdev:10
        tfd:        6 events: 80000019 data:             beef  pos:0 ino:14e76 sdev:f
        tfd:        7 events:       1c data:             feed  pos:0 ino:14e76 sdev:f

        """
    static let inotify = """
        pos:\t0
        flags:\t04000
        mnt_id:\t17
        ino:\t1038
        inotify wd:2 ino:2 sdev:fe00000 mask:8 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200000000000000
        inotify wd:1 ino:3df9d sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:9ddf030000000000

        """
    static let signalfd = """
        pos:\t0
        flags:\t04002
        mnt_id:\t17
        ino:\t1038
        sigmask:\t0000000400000200

        """

    static func field(_ info: [(String, String)], _ key: String) -> String? { info.first { $0.0 == key }?.1 }

    @Test("eventfd: every line a key and its trimmed value, in order; the counter is hex")
    func eventfdLines() {
        let info = ProcFS.parseFdinfo(Self.eventfd)
        #expect(info.map(\.0) == ["pos", "flags", "mnt_id", "ino", "eventfd-count", "eventfd-id", "eventfd-semaphore"])
        #expect(info.map(\.1) == ["0", "04002", "17", "1038", "7", "14", "1"])
        #expect(UInt32(Self.field(info, "flags")!, radix: 8) == 0o4002)
        // The kernel prints the count with %16llx.
        #expect(UInt64(Self.field(ProcFS.parseFdinfo("eventfd-count:               ff\n"), "eventfd-count")!, radix: 16) == 255)
    }

    @Test("timerfd: a key with a space, and it_value / it_interval as (seconds, nanoseconds)")
    func timerfdLines() {
        let info = ProcFS.parseFdinfo(Self.timerfd)
        #expect(Self.field(info, "clockid") == "1")
        #expect(Self.field(info, "ticks") == "0")
        #expect(Self.field(info, "settime flags") == "00")
        #expect(Self.field(info, "it_value") == "(3599, 997094833)")
        #expect(ProcFS.parseTimespecPair(Self.field(info, "it_value")!) == 3_599_997_094_833)
        #expect(ProcFS.parseTimespecPair(Self.field(info, "it_interval")!) == 500_000_000)
    }

    @Test("parseTimespecPair: blanks and parentheses around it; anything but two integers is nil")
    func timespecPairs() {
        #expect(ProcFS.parseTimespecPair("(0, 0)") == 0)
        #expect(ProcFS.parseTimespecPair(" (12,3) ") == 12_000_000_003)
        #expect(ProcFS.parseTimespecPair("(9223372036, 854775807)") == Int64.max)
        for bad in ["", "()", "(1)", "(1, 2, 3)", "(a, 5)", "(5, b)", "(1.5, 2)"] {
            #expect(ProcFS.parseTimespecPair(bad) == nil, "'\(bad)'")
        }
    }

    @Test("epoll: one tfd line per target, each read as tokens of target, events and data")
    func epollTargets() {
        let info = ProcFS.parseFdinfo(Self.epoll)
        let targets = info.filter { $0.0 == "tfd" }.map { ProcFS.tokens("tfd:" + $0.1) }
        #expect(targets.count == 3)
        #expect(targets.map { $0["tfd"] } == ["3", "6", "7"])
        #expect(targets.map { $0["events"] } == ["19", "80000019", "1c"])
        #expect(targets.map { $0["data"] } == ["c0ffee", "beef", "feed"])
        #expect(targets.map { $0["ino"] } == ["40e", "14e76", "14e76"])
        #expect(targets.allSatisfy { $0["pos"] == "0" })
        // EPOLLIN | EPOLLET, as the restore gives them back to epoll_ctl.
        #expect(UInt32(targets[1]["events"]!, radix: 16) == 0x8000_0019)
        #expect(UInt64(targets[0]["data"]!, radix: 16) == 0xC0FFEE)
    }

    @Test("inotify: both watch lines are kept whole, and their fields read as tokens")
    func inotifyWatches() {
        let lines = Self.inotify.split(separator: "\n").filter { $0.hasPrefix("inotify") }.map(String.init)
        let info = ProcFS.parseFdinfo(Self.inotify)
        #expect(info.count == 6)
        // Each line comes back from its key and value (the key ends at the first colon).
        let watches = info.filter { $0.0.hasPrefix("inotify") }
        #expect(watches.map { "\($0.0):\($0.1)" } == lines)
        let tokens = lines.map { ProcFS.tokens(String($0.dropFirst("inotify".count))) }
        #expect(tokens.map { $0["wd"] } == ["2", "1"])
        #expect(tokens.map { $0["ino"] } == ["2", "3df9d"])
        #expect(tokens.map { $0["mask"] } == ["8", "300"])
        #expect(tokens[1]["sdev"] == "fe00000" && tokens[1]["fhandle-bytes"] == "8" && tokens[1]["fhandle-type"] == "1")
        #expect(tokens[1]["f_handle"] == "9ddf030000000000")
        #expect(tokens[0]["ignored_mask"] == "0")
    }

    @Test("signalfd: the mask in hex, bit N-1 for signal N")
    func signalfdMask() throws {
        let info = ProcFS.parseFdinfo(Self.signalfd)
        let text = try #require(Self.field(info, "sigmask"))
        let mask = try #require(UInt64(text, radix: 16))
        #expect(mask == (1 << 9) | (1 << 34))    // SIGUSR1 (10) and SIGRTMIN+1 (35)
    }

    @Test("tokens: a value after the blank that follows its colon; values may hold colons; words without one are skipped")
    func tokenForms() {
        #expect(ProcFS.tokens("a:1 b: 2 c:3:4 plain d:") == ["a": "1", "b": "2", "c": "3:4", "d": ""])
        #expect(ProcFS.tokens("") == [:])
        #expect(ProcFS.tokens("   x:    y   ") == ["x": "y"])
    }

    @Test("parseFdinfo: lines without a colon are skipped, an empty value is kept")
    func fdinfoEdges() {
        let info = ProcFS.parseFdinfo("pos:\t0\nno colon here\nempty:\n\n")
        #expect(info.map(\.0) == ["pos", "empty"])
        #expect(info.map(\.1) == ["0", ""])
    }

    @Test("parseStat: comm holding spaces and parentheses is cut at the last ')'; fields numbered as in proc(5)")
    func statWithAwkwardComm() throws {
        let text = "25060 (a (b) c) S 25052 25052 8416 0 -1 4194304 83 704 0 0 0 0 0 0 20 0 1 0 577595 2535424 345 "
            + "18446744073709551615 94497404567552 94497404568841 140725529602256 0 0 0 65536 6 0 1 0 0 17 0 0 0 0 0 0 "
            + "94497404579280 94497404580000 94497615921152 140725529610978 140725529610987 140725529610987 140725529612271 0\n"
        let stat = try #require(ProcFS.parseStat(text))
        #expect(stat.comm == "a (b) c")
        #expect(stat.fields[3] == "S")               // state
        #expect(stat.fields[4] == "25052")           // ppid
        #expect(stat.fields[20] == "1")              // num_threads
        #expect(stat.fields[22] == "577595")         // starttime
        #expect(stat.fields.count == 53)             // 52 fields; the last is exit_code
        #expect(stat.fields[52].trimmed() == "0")
        #expect(ProcFS.parseStat("no parentheses") == nil)
    }

    @Test("splitNul and trimmed, as cmdline and padded fields need them")
    func nulAndTrim() {
        #expect(ProcFS.splitNul(Array("a\0bc\0".utf8)) == ["a", "bc"])
        #expect(ProcFS.splitNul(Array("a\0\0b".utf8)) == ["a", "", "b"])
        #expect(ProcFS.splitNul([]) == [])
        #expect(" \t x y \n".trimmed() == "x y")
        #expect("((1, 2))".trimmed("() ") == "1, 2")
    }
}

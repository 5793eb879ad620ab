@testable import CheckpointCapture
@testable import LinuxKernel
import Foundation
import Testing

/// The /proc parsers on samples, and on this machine's own files against an independent split.
@Suite struct ProcFSTests {
    @Test func mapsLinesWithEveryKindOfPath() {
        let text = """
        55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1835012                    /usr/bin/cat
        7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
        7f1c2b400000-7f1c2b401000 rw-s 00000000 00:01 4711                       /memfd:buffer (deleted)
        7ffd5e5f0000-7ffd5e611000 rw-p 00000000 00:00 0                          [stack]
        7ffd5e7d4000-7ffd5e7d6000 r-xp 00000000 00:00 0                          [vdso]
        7f00aa000000-7f00aa001000 r--p 0000a000 103:02 99                         /tmp/a file with  spaces
        not a maps line
        ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
        """
        let entries = ProcFS.parseMaps(text)
        #expect(entries.count == 7)
        #expect(entries[0] == ProcFS.MapsEntry(start: 0x55d0c0a00000, end: 0x55d0c0a02000, read: true, write: false, execute: false,
                                               shared: false, offset: 0, device: (0xfd, 1), inode: 1835012, path: "/usr/bin/cat"))
        #expect(entries[1].path == "" && entries[1].write && entries[1].inode == 0)
        #expect(entries[2].shared && entries[2].isDeleted && entries[2].path == "/memfd:buffer (deleted)")
        #expect(entries[3].path == "[stack]" && entries[4].execute && entries[4].path == "[vdso]")
        #expect(entries[5].offset == 0xa000 && entries[5].device == (0x103, 2) && entries[5].path == "/tmp/a file with  spaces")
        #expect(entries[6].start == 0xffffffffff600000 && entries[6].prot == 4)
    }

    @Test func ownMapsMatchASplitByFields() throws {
        let text = try String(contentsOfFile: "/proc/self/maps", encoding: .utf8)
        let lines = text.split(separator: "\n")
        let entries = ProcFS.parseMaps(text)
        #expect(entries.count == lines.count)
        for (line, entry) in zip(lines, entries) {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            #expect(String(entry.start, radix: 16) + "-" + String(entry.end, radix: 16) == fields[0].replacing(/^0+(?=[0-9a-f])/, with: "").replacing(/-0+(?=[0-9a-f])/, with: "-"))
            #expect(UInt64(fields[4]) == entry.inode)
            #expect(entry.path == (fields.count > 5 ? fields[5].trimmingCharacters(in: .whitespaces) : ""))
        }
    }

    @Test func statusKeysAndValues() throws {
        let status = ProcFS.parseStatus("Name:\tcat\nUid:\t0\t0\t0\t0\nVmRSS:\t    1234 kB\nSigCgt:\t0000000000004a02\nnot a field\nEmpty:\n")
        #expect(status["Name"] == "cat")
        #expect(status["Uid"] == "0\t0\t0\t0")
        #expect(status["VmRSS"] == "1234 kB")
        #expect(status["SigCgt"] == "0000000000004a02")
        #expect(status["Empty"] == "")
        #expect(status.count == 5)
        let own = ProcFS.parseStatus(try String(contentsOfFile: "/proc/self/status", encoding: .utf8))
        #expect(own["Pid"] == String(getpid()))
        #expect(own["Tgid"] == String(getpid()))
        #expect(own["Name"]?.isEmpty == false)
    }
}

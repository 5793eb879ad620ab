import Glibc

/// Reading /proc/PID (proc(5)). Every parser takes text and returns values,
/// so it can be tested on samples; `ProcFS.read` fetches the text.
package enum ProcFS {
    /// Reads a whole /proc file as text.
    package static func read(_ path: String) throws(SystemCallError) -> String {
        String(decoding: try readRaw(path), as: UTF8.self)
    }

    /// Raw bytes of a /proc file, which may hold NULs (cmdline, environ, auxv).
    package static func readRaw(_ path: String) throws(SystemCallError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open(\(path))", errno: errno) }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 65536) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemCallError("read(\(path))", errno: errno)
            }
            if n == 0 { break }
            data += chunk[0..<n]
        }
        return data
    }

    package static func readLink(_ path: String) throws(SystemCallError) -> String {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buffer, 4096)
        guard n >= 0 else { throw SystemCallError("readlink(\(path))", errno: errno) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Thread IDs in /proc/PID/task, ascending.
    package static func threadIDs(_ pid: Int32) throws(SystemCallError) -> [Int32] {
        try numericEntries("/proc/\(pid)/task")
    }

    /// Open descriptor numbers in /proc/PID/fd, ascending.
    package static func descriptors(_ pid: Int32) throws(SystemCallError) -> [Int32] {
        try numericEntries("/proc/\(pid)/fd")
    }

    /// The names of a directory that are numbers, ascending.
    private static func numericEntries(_ path: String) throws(SystemCallError) -> [Int32] {
        guard let dir = opendir(path) else { throw SystemCallError("opendir(\(path))", errno: errno) }
        defer { closedir(dir) }
        var numbers: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if let n = Int32(name) { numbers.append(n) }
        }
        return numbers.sorted()
    }

    // MARK: maps

    /// One line of /proc/PID/maps.
    package struct MapsEntry: Equatable {
        package var start: UInt64
        package var end: UInt64
        package var read: Bool
        package var write: Bool
        package var execute: Bool
        package var shared: Bool
        package var offset: UInt64
        package var device: (major: UInt32, minor: UInt32)
        package var inode: UInt64
        package var path: String

        package static func == (a: MapsEntry, b: MapsEntry) -> Bool {
            a.start == b.start && a.end == b.end && a.read == b.read && a.write == b.write && a.execute == b.execute
                && a.shared == b.shared && a.offset == b.offset && a.device == b.device && a.inode == b.inode && a.path == b.path
        }

        package var prot: UInt32 { (read ? 1 : 0) | (write ? 2 : 0) | (execute ? 4 : 0) }
        package var isDeleted: Bool { path.hasSuffix(" (deleted)") }
    }

    /// Parses /proc/PID/maps: `start-end perms offset major:minor inode   path`.
    /// (Byte by byte: it runs several times in every capture, on hundreds of lines.)
    package static func parseMaps(_ text: String) -> [MapsEntry] {
        var entries: [MapsEntry] = []
        var text = text
        text.withUTF8 { bytes in
            var line = ByteLine(bytes: bytes, at: 0)
            while line.at < bytes.count {
                if let entry = line.mapsEntry() { entries.append(entry) }
                line.nextLine()
            }
        }
        return entries
    }

    // MARK: status, stat

    /// `Key:\tvalue` lines of /proc/PID/status.
    package static func parseStatus(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        var text = text
        text.withUTF8 { bytes in
            var line = ByteLine(bytes: bytes, at: 0)
            while line.at < bytes.count {
                if let (key, value) = line.keyValue() { result[key] = value }
                line.nextLine()
            }
        }
        return result
    }

    /// The fields of /proc/PID/stat after `comm`, numbered as in proc(5)
    /// (field 3, `state`, is `fields[3]`). `comm` may hold spaces and parentheses,
    /// so it is cut at the last ')'.
    package static func parseStat(_ text: String) -> (comm: String, fields: [String])? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { return nil }
        let comm = String(text[text.index(after: open)..<close])
        let rest = text[text.index(after: close)...].split(separator: " ").map(String.init)
        return (comm, ["", "", ""] + rest)
    }

    /// Splits NUL-separated strings (cmdline, environ).
    package static func splitNul(_ bytes: [UInt8]) -> [String] {
        var out = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if out.last == "" { out.removeLast() }
        return out
    }

    /// `key:\tvalue` lines of /proc/PID/fdinfo/FD; repeated keys (tfd, inotify) keep every line.
    package static func parseFdinfo(_ text: String) -> [(String, String)] {
        text.split(separator: "\n").compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmed())
        }
    }

    /// Space-separated `key:value` tokens (epoll `tfd:` lines, timerfd `it_value: (s, ns)`).
    package static func tokens(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        var i = 0
        while i < parts.count {
            let part = parts[i]
            if let colon = part.firstIndex(of: ":") {
                let key = String(part[..<colon])
                var value = String(part[part.index(after: colon)...])
                if value.isEmpty, i + 1 < parts.count { i += 1; value = String(parts[i]) }
                out[key] = value
            }
            i += 1
        }
        return out
    }

    /// `(sec, nsec)` as timerfd fdinfo prints it, in nanoseconds.
    package static func parseTimespecPair(_ text: String) -> Int64? {
        let digits = text.trimmed("() ").split(separator: ",").map { $0.trimmed() }
        guard digits.count == 2, let s = Int64(digits[0]), let ns = Int64(digits[1]) else { return nil }
        return s * 1_000_000_000 + ns
    }
}

extension StringProtocol {
    /// The text without the leading and trailing `characters` (by default the
    /// blanks /proc pads its fields with).
    package func trimmed(_ characters: String = " \t\n") -> String {
        var scalars = Substring(self).unicodeScalars
        while let first = scalars.first, characters.unicodeScalars.contains(first) { scalars.removeFirst() }
        while let last = scalars.last, characters.unicodeScalars.contains(last) { scalars.removeLast() }
        return String(scalars)
    }
}

/// A position in /proc text, read one field at a time; every reader stops at the
/// end of the line and returns nil for what does not match.
private struct ByteLine {
    let bytes: UnsafeBufferPointer<UInt8>
    var at: Int

    private var current: UInt8? { at < bytes.count && bytes[at] != 0x0a ? bytes[at] : nil }

    mutating func nextLine() {
        while at < bytes.count && bytes[at] != 0x0a { at += 1 }
        at += 1
    }

    mutating func skip(_ byte: UInt8) -> Bool {
        guard current == byte else { return false }
        at += 1
        return true
    }

    mutating func skipBlanks() {
        while let c = current, c == 0x20 || c == 0x09 { at += 1 }
    }

    /// Digits in `radix` (10 or 16), at least one; nil on overflow.
    mutating func number(radix: UInt64) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        while let c = current {
            let digit: UInt64
            switch c {
            case 0x30...0x39: digit = UInt64(c - 0x30)
            case 0x61...0x66 where radix == 16: digit = UInt64(c - 0x61 + 10)
            case 0x41...0x46 where radix == 16: digit = UInt64(c - 0x41 + 10)
            default: return digits > 0 ? value : nil
            }
            let (scaled, o1) = value.multipliedReportingOverflow(by: radix)
            let (sum, o2) = scaled.addingReportingOverflow(digit)
            guard !o1 && !o2 else { return nil }
            value = sum
            digits += 1
            at += 1
        }
        return digits > 0 ? value : nil
    }

    /// The rest of the line without trailing blanks.
    mutating func rest() -> String {
        let start = at
        while current != nil { at += 1 }
        var end = at
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    /// `start-end perms offset major:minor inode   path`.
    mutating func mapsEntry() -> ProcFS.MapsEntry? {
        guard let start = number(radix: 16), skip(0x2d), let end = number(radix: 16), skip(0x20) else { return nil }
        var perms: [UInt8] = []
        while let c = current, c != 0x20, perms.count < 4 { perms.append(c); at += 1 }
        guard perms.count == 4, skip(0x20), let offset = number(radix: 16), skip(0x20),
              let major = number(radix: 16), skip(0x3a), let minor = number(radix: 16), skip(0x20),
              let inode = number(radix: 10), major <= UInt32.max, minor <= UInt32.max else { return nil }
        skipBlanks()
        return ProcFS.MapsEntry(start: start, end: end, read: perms[0] == 0x72, write: perms[1] == 0x77, execute: perms[2] == 0x78,
                                shared: perms[3] == 0x73, offset: offset, device: (UInt32(major), UInt32(minor)), inode: inode,
                                path: rest())
    }

    /// `Key:   value`.
    mutating func keyValue() -> (String, String)? {
        let start = at
        while let c = current, c != 0x3a { at += 1 }
        guard current == 0x3a else { return nil }
        let key = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
        at += 1
        skipBlanks()
        return (key, rest())
    }
}

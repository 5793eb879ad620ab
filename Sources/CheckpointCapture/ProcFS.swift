import Glibc
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
    package static func parseMaps(_ text: String) -> [MapsEntry] {
        text.split(separator: "\n").compactMap { line -> MapsEntry? in
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { return nil }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { return nil }
            let perms = Array(fields[1])
            guard perms.count == 4, let offset = UInt64(fields[2], radix: 16) else { return nil }
            let dev = fields[3].split(separator: ":")
            guard dev.count == 2, let major = UInt32(dev[0], radix: 16), let minor = UInt32(dev[1], radix: 16),
                  let inode = UInt64(fields[4]) else { return nil }
            let path = fields.count > 5 ? fields[5].trimmed() : ""
            return MapsEntry(start: start, end: end, read: perms[0] == "r", write: perms[1] == "w", execute: perms[2] == "x",
                             shared: perms[3] == "s", offset: offset, device: (major, minor), inode: inode, path: path)
        }
    }

    // MARK: status, stat

    /// `Key:\tvalue` lines of /proc/PID/status.
    package static func parseStatus(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            result[String(line[..<colon])] = line[line.index(after: colon)...].trimmed()
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
        let set = Set(characters.unicodeScalars)
        while let first = scalars.first, set.contains(first) { scalars.removeFirst() }
        while let last = scalars.last, set.contains(last) { scalars.removeLast() }
        return String(scalars)
    }
}

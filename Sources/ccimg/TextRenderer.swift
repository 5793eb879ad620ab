import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Human-readable forms of the JSON models (the `--json` forms are the stable ones).
enum TextRenderer {
    /// An indented outline of any model: `key: value`, lists as `- item`.
    static func tree(_ value: JSONValue) -> String {
        var out = ""
        render(humanize(value, key: ""), indent: 0, into: &out)
        return out
    }

    /// x86-64 `struct user_regs_struct`, in order (the layout of ThreadState.general_registers).
    static let registerNames = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
                                "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
                                "ds", "es", "fs", "gs"]

    static let bytesKeys: Set<String> = ["xsave", "siginfo", "termios", "contents", "unread", "data", "body", "localAddress",
                                         "peerAddress", "value", "receiveQueue", "sendQueue", "elfBuildId", "runs"]
    static let hexKeys: Set<String> = ["fsBase", "gsBase", "tidAddress", "robustList", "handler", "restorer", "sp", "address",
                                       "startCode", "endCode", "startData", "endData", "startBrk", "brk", "startStack", "argStart",
                                       "argEnd", "envStart", "envEnd", "signalMask", "mask", "xsaveFeatures", "capEffective",
                                       "capPermitted", "capInheritable", "capBounding", "capAmbient", "flags", "sigval", "dev"]

    /// Text-mode readability: registers by name, addresses in hex, bytes as text or a size.
    static func humanize(_ value: JSONValue, key: String) -> JSONValue {
        switch value {
        case .object(let pairs):
            return .object(pairs.map { ($0.0, humanize($0.1, key: $0.0)) })
        case .array(let items):
            return .array(items.map { humanize($0, key: key) })
        case .string(let s) where key == "generalRegisters":
            guard let data = Data(base64Encoded: s), data.count == registerNames.count * 8 else { return value }
            let bytes = [UInt8](data)
            return .object(registerNames.enumerated().map { i, name in
                let word = bytes.loadLE(UInt64.self, at: i * 8)
                return (name, .hex(word))
            })
        case .string(let s) where bytesKeys.contains(key):
            guard let data = Data(base64Encoded: s) else { return value }
            let bytes = [UInt8](data)
            if !bytes.isEmpty, bytes.allSatisfy({ (0x20...0x7e).contains($0) || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) {
                return .string("\"" + bytes.map { $0 == 0x0a ? "\\n" : $0 == 0x0d ? "\\r" : String(UnicodeScalar($0)) }.joined() + "\"")
            }
            if bytes.count <= 32 { return .string(bytes.map { $0.hex(width: 2) }.joined()) }
            return .string("<\(bytes.count) bytes>")
        case .string(let s) where hexKeys.contains(key):
            if let v = UInt64(s) { return .hex(v) }
            if let v = Int64(s) { return .hex(UInt64(bitPattern: v)) }
            return value
        case .int(let i) where hexKeys.contains(key):
            return .hex(UInt64(bitPattern: i))
        default:
            return value
        }
    }

    private static func scalar(_ v: JSONValue) -> String? {
        switch v {
        case .null: "-"
        case .bool(let b): b ? "yes" : "no"
        case .int(let i): String(i)
        case .string(let s): s
        case .array(let a) where a.isEmpty: "[]"
        case .array(let a) where a.allSatisfy({ if case .int = $0 { true } else { false } }):
            a.compactMap(scalar).joined(separator: " ")
        case .object(let o) where o.isEmpty: "{}"
        default: nil
        }
    }

    private static func render(_ value: JSONValue, indent: Int, into out: inout String) {
        let pad = String(repeating: "  ", count: indent)
        switch value {
        case .object(let pairs):
            for (key, v) in pairs where key != "schema" {
                if let s = scalar(v) {
                    out += "\(pad)\(key): \(s)\n"
                } else {
                    out += "\(pad)\(key):\n"
                    render(v, indent: indent + 1, into: &out)
                }
            }
        case .array(let items):
            for item in items {
                if let s = scalar(item) {
                    out += "\(pad)- \(s)\n"
                } else if case .object(let pairs) = item, pairs.allSatisfy({ scalar($0.1) != nil }) {
                    out += "\(pad)- " + pairs.map { "\($0.0)=\(scalar($0.1)!)" }.joined(separator: " ") + "\n"
                } else {
                    out += "\(pad)-\n"
                    render(item, indent: indent + 1, into: &out)
                }
            }
        default:
            out += "\(pad)\(scalar(value) ?? "")\n"
        }
    }

    static func info(_ m: JSONValue) -> String {
        func s(_ v: JSONValue?) -> String { v.flatMap(scalar) ?? "-" }
        let h = m["header"], p = m["process"], mem = m["memory"]
        var out = ""
        out += "image:     \(s(m["file"])) (\(s(m["fileBytes"])) bytes)\n"
        out += "format:    \(s(h?["format"])), producer \(s(h?["producer"]?["name"])) \(s(h?["producer"]?["version"]))\n"
        out += "uuid:      \(s(h?["uuid"]))\n"
        out += "created:   \(s(h?["created"])) on \(s(h?["machine"]?["arch"])) \(s(h?["machine"]?["kernelRelease"]))\n"
        var cmd = ""
        if case .array(let parts)? = p?["cmdline"] { cmd = parts.compactMap(scalar).joined(separator: " ") }
        out += "process:   pid \(s(p?["pid"])) \(s(p?["comm"])) — \(cmd.isEmpty ? s(p?["exe"]) : cmd)\n"
        out += "threads:   \(s(p?["threads"]))\n"
        let pages = mem?["pages"]
        out += "memory:    \(s(mem?["vmas"])) VMAs, \(s(mem?["mappedBytes"])) bytes mapped; pages: stored \(s(pages?["stored"])), zero \(s(pages?["zero"])), dedup \(s(pages?["dedup"])), inherited \(s(pages?["inherited"])), not populated \(s(pages?["not-populated"]))\n"
        if case .array(let chain)? = m["chain"] {
            out += "chain:     \(chain.count) image\(chain.count == 1 ? "" : "s")\n"
            for (i, c) in chain.enumerated() {
                out += "  \(i == 0 ? "this  " : "parent") \(s(c["uuid"])) \(s(c["file"]))\n"
            }
        }
        return out
    }

    static func hexdump(_ bytes: [UInt8], address: UInt64) -> String {
        var out = ""
        var i = 0
        while i < bytes.count {
            let line = bytes[i..<min(i + 16, bytes.count)]
            let hex = line.map { $0.hex(width: 2) }
            let left = hex.prefix(8).joined(separator: " ")
            let right = hex.dropFirst(8).joined(separator: " ")
            let ascii = String(line.map { (0x20...0x7e).contains($0) ? Character(UnicodeScalar($0)) : "." })
            var hexPart = left + (right.isEmpty ? "" : "  " + right)
            hexPart += String(repeating: " ", count: max(0, 49 - hexPart.count))
            out += (address + UInt64(i)).hex(width: 16) + "  " + hexPart + " |\(ascii)|\n"
            i += 16
        }
        return out
    }

    static func diff(_ m: JSONValue) -> String {
        func s(_ v: JSONValue?) -> String { v.flatMap(scalar) ?? "-" }
        var out = ""
        if case .bool(true)? = m["same"] { return "\(s(m["a"])) and \(s(m["b"])) have the same content\n" }
        if case .array(let changes)? = m["process"] {
            for c in changes { out += "process: \(s(c["field"])) changed\n" }
        }
        if let mem = m["memory"] {
            for (key, label) in [("added", "added"), ("removed", "removed")] {
                if case .array(let l)? = mem[key] { for v in l { out += "vma \(label): \(s(v["start"]))-\(s(v["end"])) \(s(v["prot"])) \(s(v["role"])) \(v["path"].flatMap(scalar) ?? "")\n" } }
            }
            if case .array(let l)? = mem["resized"] { for v in l { out += "vma resized: \(s(v["start"])) end \(s(v["aEnd"])) -> \(s(v["bEnd"]))\n" } }
            if case .array(let l)? = mem["reprotected"] { for v in l { out += "vma reprotected: \(s(v["start"])) \(s(v["a"])) -> \(s(v["b"]))\n" } }
            if case .array(let l)? = mem["pages"] {
                for v in l {
                    out += "pages changed: \(s(v["changedPages"])) in \(s(v["start"]))-\(s(v["end"])) (\(s(v["role"])))\n"
                    if case .array(let ranges)? = v["ranges"] {
                        for r in ranges.prefix(20) { out += "  \(s(r["start"])) +\(s(r["pages"])) page(s)\n" }
                        if ranges.count > 20 { out += "  … \(ranges.count - 20) more ranges (--json lists them)\n" }
                    }
                }
            }
        }
        for kind in ["threads", "handles", "fds", "sockets", "signals", "metadata"] {
            guard let d = m[kind] else { continue }
            if case .array(let l)? = d["added"], !l.isEmpty { out += "\(kind) added: \(l.compactMap(scalar).joined(separator: " "))\n" }
            if case .array(let l)? = d["removed"], !l.isEmpty { out += "\(kind) removed: \(l.compactMap(scalar).joined(separator: " "))\n" }
            if case .array(let l)? = d["changed"] {
                for c in l {
                    if case .object(let pairs) = c, let id = pairs.first {
                        var fields = ""
                        if case .array(let f)? = c["fields"] { fields = f.compactMap(scalar).joined(separator: ", ") }
                        out += "\(kind) changed: \(id.0) \(scalar(id.1) ?? "") (\(fields))\n"
                    }
                }
            }
        }
        if case .object(let lists)? = m["sync-objects"] {
            for (name, v) in lists {
                var a = 0, r = 0
                if case .array(let l)? = v["added"] { a = l.count }
                if case .array(let l)? = v["removed"] { r = l.count }
                out += "sync-objects \(name): \(a) added, \(r) removed\n"
            }
        }
        if let c = m["console"] {
            if case .bool(true)? = c["rewritten"] { out += "console: history rewritten\n" }
            else if case .int(let n)? = c["appendedRecords"], n > 0 { out += "console: \(n) records (\(s(c["appendedBytes"])) bytes) appended\n" }
            if case .array(let l)? = c["settingsChanged"], !l.isEmpty { out += "console: \(l.compactMap(scalar).joined(separator: ", ")) changed\n" }
        }
        return out
    }
}

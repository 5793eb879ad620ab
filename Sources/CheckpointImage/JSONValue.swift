#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SwiftProtobuf

/// A JSON value with ordered object keys, printed deterministically — the
/// model behind every `--json` output (documented in spec/ccimg-json.md).
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.int(let x), .int(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    /// An unsigned count; values beyond Int64 become strings (never lost).
    public static func count<T: BinaryInteger>(_ value: T) -> JSONValue {
        if let v = Int64(exactly: value) { return .int(v) }
        return .string(String(value))
    }

    /// An address or mask as "0x…" hex.
    public static func hex(_ value: UInt64) -> JSONValue { .string("0x" + String(value, radix: 16)) }

    /// A protobuf message in the proto3 JSON mapping, keys sorted.
    public static func message(_ message: some SwiftProtobuf.Message) -> JSONValue {
        guard let text = try? message.jsonString(),
              let decoded = try? JSONDecoder().decode(DecodedJSON.self, from: Data(text.utf8)) else {
            return .null
        }
        return decoded.value
    }

    /// Member `key` of an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }

    /// The printed form: two-space indentation, keys in their order, a trailing newline.
    public func rendered() -> String {
        var out = ""
        render(into: &out, indent: 0)
        out += "\n"
        return out
    }

    private func render(into out: inout String, indent: Int) {
        let pad = String(repeating: "  ", count: indent + 1)
        let closePad = String(repeating: "  ", count: indent)
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .string(let s): JSONValue.quote(s, into: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            if items.allSatisfy({ if case .int = $0 { true } else { false } }) {
                out += "[" + items.map { v in if case .int(let i) = v { String(i) } else { "" } }.joined(separator: ", ") + "]"
                return
            }
            out += "[\n"
            for (i, item) in items.enumerated() {
                out += pad
                item.render(into: &out, indent: indent + 1)
                out += i + 1 < items.count ? ",\n" : "\n"
            }
            out += closePad + "]"
        case .object(let pairs):
            if pairs.isEmpty { out += "{}"; return }
            out += "{\n"
            for (i, (key, value)) in pairs.enumerated() {
                out += pad
                JSONValue.quote(key, into: &out)
                out += ": "
                value.render(into: &out, indent: indent + 1)
                out += i + 1 < pairs.count ? ",\n" : "\n"
            }
            out += closePad + "}"
        }
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let h = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// Reads any JSON text into a ``JSONValue``: objects with their keys sorted,
/// integers as integers, other numbers as their text.
private struct DecodedJSON: Decodable {
    let value: JSONValue

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Swift.Decoder) throws {
        if let object = try? decoder.container(keyedBy: Key.self) {
            value = .object(try object.allKeys.map(\.stringValue).sorted().map { key in
                (key, try object.decode(DecodedJSON.self, forKey: Key(stringValue: key)).value)
            })
        } else if var array = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !array.isAtEnd { items.append(try array.decode(DecodedJSON.self).value) }
            value = .array(items)
        } else {
            let single = try decoder.singleValueContainer()
            if single.decodeNil() {
                value = .null
            } else if let b = try? single.decode(Bool.self) {
                value = .bool(b)
            } else if let i = try? single.decode(Int64.self) {
                value = .int(i)
            } else if let d = try? single.decode(Double.self) {
                value = .string("\(d)")
            } else {
                value = .string(try single.decode(String.self))
            }
        }
    }
}

/// An error reading, writing or checking an image (§11).
///
/// Each carries a ``Code`` — the class of the problem, which `ccimg verify`
/// maps to its exit status — and the context: the file, the section or block,
/// and the byte offset where it was found.
public struct ImageError: Error, CustomStringConvertible, Sendable {
    /// §11 The classes of image errors.
    public enum Code: String, Sendable, CaseIterable {
        /// The file ends before a structure it promises.
        case truncated
        /// The file does not start with the image magic (§3.1), or the footer magic is wrong.
        case badMagic = "bad-magic"
        /// The major version, an incompatible feature, or a critical section is unknown.
        case unsupported
        /// A checksum or page hash does not match.
        case checksumMismatch = "checksum-mismatch"
        /// The bytes are well-formed but violate a rule (overlap, bad reference, missing section).
        case structural
        /// A parent image is missing, does not match its digest, or the chain loops.
        case brokenChain = "broken-chain"
        /// A count or size exceeds the limits of §10.
        case limitExceeded = "limit-exceeded"
        /// The file system or the output failed (not a property of the image).
        case io

        /// The exit status `ccimg verify` uses for this class.
        public var exitStatus: Int32 {
            switch self {
            case .truncated: 10
            case .badMagic: 11
            case .unsupported: 12
            case .checksumMismatch: 13
            case .structural: 14
            case .brokenChain: 15
            case .limitExceeded: 16
            case .io: 2
            }
        }
    }

    public var code: Code
    public var message: String
    /// The image file, when known.
    public var path: String?
    /// The section or block where the problem is, e.g. "section threads" or "frame 12".
    public var location: String?
    /// The byte offset in the file, when known.
    public var offset: UInt64?
    /// The underlying error, when there is one.
    public var cause: String?

    public init(_ code: Code, _ message: String, path: String? = nil, location: String? = nil,
                offset: UInt64? = nil, cause: String? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.location = location
        self.offset = offset
        self.cause = cause
    }

    public var description: String {
        var parts: [String] = []
        if let path { parts.append(path) }
        if let location { parts.append(location) }
        if let offset { parts.append("offset \(offset)") }
        let prefix = parts.isEmpty ? "" : parts.joined(separator: ", ") + ": "
        var text = "\(prefix)\(code.rawValue): \(message)"
        if let cause { text += " (\(cause))" }
        return text
    }

    /// A copy with the path filled in when it was not known where the error arose.
    func at(path: String) -> ImageError {
        var copy = self
        if copy.path == nil { copy.path = path }
        return copy
    }
}

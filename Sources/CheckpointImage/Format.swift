/// Constants of the checkpoint image format, version 1.0.
///
/// Every value here is normative in `spec/image-format.md`; the comment on each
/// names the section that defines it. Changing one changes the format.
public enum ImageFormat {
    /// §3.1 The eight magic bytes that open every image: `89 43 43 49 4D 47 0D 0A`.
    public static let magic: [UInt8] = [0x89, 0x43, 0x43, 0x49, 0x4D, 0x47, 0x0D, 0x0A]
    /// §3.1 Format major version this library writes and reads.
    public static let major: UInt16 = 1
    /// §3.1 Newest format minor version this library writes (``minor(for:)``); it reads every minor ≤ this.
    public static let minor: UInt16 = 1
    /// §3.1 Length of the fixed header prefix, before the header body.
    public static let headerPrefixLength = 48
    /// §4 Length of the common block header.
    public static let blockHeaderLength = 40
    /// §7.2 Length of the footer.
    public static let footerLength = 32
    /// §7.2 The eight magic bytes that open the footer: `CCIMGEND`.
    public static let footerMagic: [UInt8] = Array("CCIMGEND".utf8)
    /// §6.1 Pages in a full frame, as written by this library.
    public static let defaultPagesPerFrame: UInt32 = 256
    /// Pages per frame for images expected to store little (small processes,
    /// increments): 128 KiB frames, so that a capture of a few MiB still spreads
    /// its compression over every core while pages are read; they cost ~1.5% in
    /// size against 1 MiB frames (decision 0006).
    public static let smallImagePagesPerFrame: UInt32 = 32
    /// §6.1 zstd level this library uses for frames.
    public static let frameCompressionLevel: Int32 = 1
}

/// §4 The type tag that opens a block header.
public enum BlockType: UInt32, Sendable, CustomStringConvertible {
    /// "SECT": a section (§5).
    case section = 0x5443_4553
    /// "FRAM": a page frame (§6.1).
    case frame = 0x4D41_5246
    /// "INDX": the index (§7.1).
    case index = 0x5844_4E49

    public var description: String {
        switch self {
        case .section: "section"
        case .frame: "frame"
        case .index: "index"
        }
    }
}

/// §4 Block flag bits.
public struct BlockFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// §5.2 A reader that does not know this section's kind must refuse the image.
    public static let critical = BlockFlags(rawValue: 1 << 0)
    /// §4 The payload is one zstd frame; the decompressed length is in `aux`.
    public static let zstd = BlockFlags(rawValue: 1 << 1)
    /// §4 Every bit this version defines.
    public static let known: BlockFlags = [.critical, .zstd]
}

/// §3.3 Feature flags of the header, in three classes.
public struct FeatureFlags: Sendable, Hashable {
    /// Features a reader may ignore when it does not know them.
    public var compatible: UInt64
    /// Features a reader that does not know them may read, but must not re-encode.
    public var readOnlyCompatible: UInt64
    /// Features a reader must refuse when it does not know them.
    public var incompatible: UInt64

    /// §3.3 incompatible bit 0: pages may be inherited from a parent image (§8).
    public static let incompatibleParent: UInt64 = 1 << 0
    /// §3.3 compatible bit 0: some pages are stored once and referenced (§6.4).
    public static let compatibleDedup: UInt64 = 1 << 0

    /// Bits of each class that this version knows.
    public static let knownCompatible: UInt64 = compatibleDedup
    public static let knownReadOnlyCompatible: UInt64 = 0
    public static let knownIncompatible: UInt64 = incompatibleParent | incompatibleOpenFiles

    public init(compatible: UInt64 = 0, readOnlyCompatible: UInt64 = 0, incompatible: UInt64 = 0) {
        self.compatible = compatible
        self.readOnlyCompatible = readOnlyCompatible
        self.incompatible = incompatible
    }
}

/// §5.3 Section kinds defined by format 1.0.
public enum SectionKind: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case process = 1
    case memoryMap = 2
    case pageMap = 3
    case threads = 4
    case syncObjects = 5
    case handles = 6
    case sockets = 7
    case console = 8
    case signals = 9
    case metadata = 10

    /// The name used on the command line and in JSON output.
    public var name: String {
        switch self {
        case .process: "process"
        case .memoryMap: "memory-map"
        case .pageMap: "page-map"
        case .threads: "threads"
        case .syncObjects: "sync-objects"
        case .handles: "handles"
        case .sockets: "sockets"
        case .console: "console"
        case .signals: "signals"
        case .metadata: "metadata"
        }
    }

    public var description: String { name }

    /// §5.3 Whether the writer marks this kind critical.
    public var isCritical: Bool {
        switch self {
        case .process, .memoryMap, .pageMap, .threads: true
        default: false
        }
    }

    /// §5.3 The section version this library writes.
    public var currentVersion: UInt16 { 1 }

    /// Finds a kind by its `name`.
    public init?(name: String) {
        guard let kind = SectionKind.allCases.first(where: { $0.name == name }) else { return nil }
        self = kind
    }
}

/// §6.2 The state of one page of a VMA.
public enum PageState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The page was never touched; reading it gives zeros (anonymous) or the file (file-backed).
    case notPopulated = 0
    /// The page is populated and all zero bytes.
    case zero = 1
    /// The page's bytes are stored in a frame of this image.
    case stored = 2
    /// The page is as it is in the parent image (§8).
    case inherited = 3
    /// The page has the same bytes as an earlier stored page of this image (§6.4).
    case dedup = 4

    public var description: String {
        switch self {
        case .notPopulated: "not-populated"
        case .zero: "zero"
        case .stored: "stored"
        case .inherited: "inherited"
        case .dedup: "dedup"
        }
    }
}

/// §10 Limits on every count and size read from an image. A reader refuses an
/// image that exceeds one, before it allocates or loops.
public enum ImageLimits {
    /// Largest header body.
    public static let maxHeaderBody = 64 * 1024
    /// Largest section payload (stored or decompressed).
    public static let maxSectionPayload = 256 * 1024 * 1024
    /// Largest index payload.
    public static let maxIndexPayload = 512 * 1024 * 1024
    /// Page size bounds.
    public static let minPageSize: UInt32 = 4096
    public static let maxPageSize: UInt32 = 65536
    /// Largest number of pages in one frame.
    public static let maxPagesPerFrame: UInt32 = 1024
    /// Most VMAs in a memory map.
    public static let maxVmas = 1 << 20
    /// Most pages in one image (2^36 pages is 256 TiB of 4 KiB pages).
    public static let maxPages: UInt64 = 1 << 36
    /// Most sections in one image.
    public static let maxSections = 4096
    /// Deepest parent chain.
    public static let maxChainDepth = 64
    /// Highest user-space address (x86-64 5-level paging).
    public static let maxAddress: UInt64 = 1 << 57
}

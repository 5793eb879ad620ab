import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An image and its parents (§8), newest first, with pages resolved through
/// the chain: an inherited page is looked up at the same address in the parent.
public final class ImageChain: Sendable {
    /// `images[0]` is the image itself, `images[1]` its parent, and so on to a full image.
    public let images: [ImageReader]

    public var top: ImageReader { images[0] }
    public var pageSize: Int { top.header.pageSize }

    /// A chain of already opened images; checks that each names the next.
    public init(images: [ImageReader]) throws(ImageError) {
        precondition(!images.isEmpty)
        for (child, parent) in zip(images, images.dropFirst()) {
            try ImageChain.checkLink(child: child, parent: parent)
        }
        guard !images.last!.header.hasParent else {
            throw ImageError(.brokenChain, "chain ends at an incremental image whose parent is not given", path: images.last!.path)
        }
        self.images = images
        self.zeroHash = PageHash.zeroPage(pageSize: images[0].header.pageSize)
    }

    /// Opens `path` and finds its parents by UUID (§8): first beside it, then
    /// in each of `storeDirectories`. A missing parent, a digest mismatch, a
    /// cycle or a chain deeper than §10 allows is a ``ImageError/Code/brokenChain`` error.
    /// `knownPaths` are where a caller last saw images of the chain: each is tried
    /// first, and used when the file there still has that UUID (the digest is checked
    /// as for any parent), which spares reading every header in the directories.
    public static func open(path: String, storeDirectories: [String] = [],
                            knownPaths: [ImageUUID: String] = [:]) throws(ImageError) -> ImageChain {
        var images = [try ImageReader(path: path)]
        var seen: Set<ImageUUID> = [images[0].header.uuid]
        var finder = ParentFinder(directories: [ImageOutput.directory(of: path)] + storeDirectories, knownPaths: knownPaths)
        while let link = images.last!.header.hasParent ? images.last!.header.body.parent : nil {
            guard images.count <= ImageLimits.maxChainDepth else {
                throw ImageError(.limitExceeded, "parent chain is deeper than \(ImageLimits.maxChainDepth)", path: path)
            }
            let uuid = ImageUUID(bytes: link.parentUuid)
            guard !seen.contains(uuid) else {
                throw ImageError(.brokenChain, "parent chain loops back to image \(uuid)", path: images.last!.path)
            }
            seen.insert(uuid)
            guard let parentPath = finder.path(of: uuid) else {
                throw ImageError(.brokenChain, "parent image \(uuid) not found in \(finder.directories.joined(separator: ", ")); pass --store DIR where it is",
                                 path: images.last!.path)
            }
            let parent = try ImageReader(path: parentPath)
            try checkLink(child: images.last!, parent: parent)
            images.append(parent)
        }
        return try ImageChain(images: images)
    }

    static func checkLink(child: ImageReader, parent: ImageReader) throws(ImageError) {
        guard child.header.hasParent else {
            throw ImageError(.brokenChain, "image has no parent link", path: child.path)
        }
        let link = child.header.body.parent
        guard Array(link.parentUuid) == parent.header.uuid.bytes else {
            throw ImageError(.brokenChain, "parent is \(ImageUUID(bytes: link.parentUuid)), not \(parent.header.uuid)", path: child.path)
        }
        guard Array(link.parentIndexDigest) == parent.indexDigest.canonical else {
            throw ImageError(.brokenChain, "parent \(parent.path) has the right UUID but its index digest differs: it was changed after this image was written",
                             path: child.path, location: "header")
        }
        guard parent.header.pageSize == child.header.pageSize else {
            throw ImageError(.brokenChain, "parent page size \(parent.header.pageSize) differs from \(child.header.pageSize)", path: child.path)
        }
    }

    // MARK: Resolving pages

    /// Where a page's content is, after following inherited pages down the chain.
    public enum ResolvedPage: Equatable, Sendable {
        /// No VMA holds the address (in the image, or in the parent an inherited page points to).
        case unmapped
        case notPopulated
        case zero
        /// Stored page `ordinal` of `images[level]`.
        case stored(level: Int, ordinal: UInt64)
    }

    /// Resolves the page at `address` (page aligned).
    public func resolve(address: UInt64) -> ResolvedPage {
        resolve(address: address, level: 0)
    }

    func resolve(address: UInt64, level: Int) -> ResolvedPage {
        var level = level
        while level < images.count {
            let image = images[level]
            guard let v = image.vmaIndex(containing: address) else { return .unmapped }
            let page = (address - image.memoryMap[v].start) / UInt64(pageSize)
            switch image.pageTables[v].entry(at: page) {
            case .notPopulated: return .notPopulated
            case .zero: return .zero
            case .stored(let ordinal): return .stored(level: level, ordinal: ordinal)
            case .inherited: level += 1
            }
        }
        return .unmapped
    }

    /// When the page at `address` begins or sits in a run of not-populated or
    /// zero pages of the newest image, that state and how many pages of the
    /// run remain from `address` — so callers can skip huge reservations in
    /// one step instead of page by page.
    public func uniformRun(at address: UInt64) -> (state: PageState, pages: UInt64)? {
        let image = top
        guard let v = image.vmaIndex(containing: address) else { return nil }
        let table = image.pageTables[v]
        let page = (address - image.memoryMap[v].start) / UInt64(pageSize)
        let (run, offset) = table.run(containing: page)
        guard run.state == .notPopulated || run.state == .zero else { return nil }
        return (run.state, run.count - offset)
    }

    /// The XXH3-128 of the page at `address`: nil when it is unmapped or not
    /// populated, the zero-page hash for a zero page. Needs no decompression.
    public func pageHash(at address: UInt64) -> PageHash? {
        hash(of: resolve(address: address))
    }

    public func hash(of page: ResolvedPage) -> PageHash? {
        switch page {
        case .unmapped, .notPopulated: return nil
        case .zero: return zeroHash
        case .stored(let level, let ordinal): return images[level].storedPageHash(ordinal)
        }
    }

    /// The hash of an all-zero page of this chain's page size.
    private let zeroHash: PageHash

    /// The bytes of the page at `address`; nil when unmapped. A page never
    /// populated reads as zeros here.
    public func pageBytes(at address: UInt64) throws(ImageError) -> [UInt8]? {
        switch resolve(address: address) {
        case .unmapped: return nil
        case .notPopulated, .zero: return [UInt8](repeating: 0, count: pageSize)
        case .stored(let level, let ordinal): return try images[level].storedPage(ordinal)
        }
    }

    /// Reads `length` bytes of memory from `address`, as of this image. Fails
    /// naming the first address no VMA holds.
    public func readMemory(address: UInt64, length: UInt64) throws(ImageError) -> [UInt8] {
        guard length <= 1 << 32 else { throw ImageError(.limitExceeded, "cannot read more than 4 GiB at once") }
        let (end, overflow) = address.addingReportingOverflow(length)
        guard !overflow else { throw ImageError(.structural, "address range overflows") }
        var out: [UInt8] = []
        out.reserveCapacity(Int(length))
        let ps = UInt64(pageSize)
        var cursor = address
        while cursor < end {
            let pageStart = cursor - cursor % ps
            guard let page = try pageBytes(at: pageStart) else {
                throw ImageError(.structural, "address 0x\(String(cursor, radix: 16)) is not mapped in this image", path: top.path)
            }
            let from = Int(cursor - pageStart)
            let to = Int(min(end - pageStart, ps))
            out += page[from..<to]
            cursor = pageStart + UInt64(to)
        }
        return out
    }
}

/// Finds images by UUID in a list of directories, reading only their headers.
struct ParentFinder {
    let directories: [String]
    private let hints: [ImageUUID: String]
    private var known: [ImageUUID: String]?

    init(directories: [String], knownPaths: [ImageUUID: String] = [:]) {
        var unique: [String] = []
        for d in directories where !unique.contains(d) { unique.append(d) }
        self.directories = unique
        self.hints = knownPaths
    }

    mutating func path(of uuid: ImageUUID) -> String? {
        if let hint = hints[uuid], ParentFinder.uuid(ofImageAt: hint) == uuid { return hint }
        if known == nil { known = scan() }
        return known?[uuid]
    }

    private func scan() -> [ImageUUID: String] {
        var result: [ImageUUID: String] = [:]
        for directory in directories {
            guard let names = try? FileSystem.contentsOfDirectory(directory) else { continue }
            for name in names.sorted().prefix(100_000) where !name.hasPrefix(".") {
                let path = directory + "/" + name
                guard let uuid = ParentFinder.uuid(ofImageAt: path), result[uuid] == nil else { continue }
                result[uuid] = path
            }
        }
        return result
    }

    static func uuid(ofImageAt path: String) -> ImageUUID? {
        guard let descriptor = try? OwnedDescriptor(readingImageAt: path, nonBlocking: true),
              descriptor.isRegularFile() else { return nil }
        var position: UInt64 = 0
        let header = try? ImageHeaderInfo.decode { (n) throws(ImageError) in
            let bytes = try descriptor.readSome(count: n)
            position += UInt64(bytes.count)
            return bytes
        }
        return header?.uuid
    }
}

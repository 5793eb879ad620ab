import LinuxKernel
import SwiftProtobuf

/// Reads an image front to back from a stream — a pipe, a socket, standard
/// input — with no seeks (§2). Every block is checked before it is handed
/// out; damage of any kind is thrown, never passed on.
///
/// Sections and frames come in any order (§2.4) — `ccpm` writes the frames
/// before the other sections — and the memory-map and page-map sections come
/// after the frames, then the index. A consumer that places pages must
/// therefore hold (or spool) the frames until the page map arrives; frames are
/// numbered by ordinal so that is a plain append.
public final class ImageStreamReader {
    public let header: ImageHeaderInfo
    private var scanner: BlockScanner
    private var nextOrdinal: UInt64 = 0
    private var frameNumber = 0
    private var finished = false

    /// One thing read from the stream, in file order.
    public enum Item {
        /// A section (§5) of a kind this reader knows, or an optional one it does not.
        case section(kind: UInt32, version: UInt16, payload: [UInt8])
        /// A frame's pages (§6.1), decompressed: `pages.count / pageSize` pages from `firstOrdinal`.
        case frame(firstOrdinal: UInt64, pages: [UInt8])
        /// The index (§7.1); the footer after it has been checked. Nothing follows.
        case end(index: Ccimg_V1_Index)
    }

    /// Reads and checks the header from `fd`, which stays open and owned by the caller.
    public init(fd: Int32) throws(ImageError) {
        scanner = BlockScanner(descriptor: OwnedDescriptor(duplicating: fd))
        header = try scanner.readHeader()
    }

    /// The next item; call again until it returns ``Item/end(index:)``.
    public func next() throws(ImageError) -> Item {
        precondition(!finished, "next() called after the end of the image")
        let number = frameNumber
        let raw = try scanner.nextBlock(header: header) { b in b.type == .frame ? "frame \(number)" : b.name() }
        let block = raw.header
        let name = block.type == .frame ? "frame \(number)" : block.name()
        if let problem = block.problems(checksumOK: raw.checksumOK, name: name, offset: raw.offset).first { throw problem }
        switch block.type! {
        case .section:
            if SectionKind(rawValue: block.kind) == nil && block.flags.contains(.critical) {
                throw ImageError(.unsupported, "critical section of kind \(block.kind) unknown to this reader", location: name, offset: raw.offset)
            }
            let payload = try ImageReader.decodePayload(block, raw.payload, limit: UInt64(ImageLimits.maxSectionPayload), name: name, offset: raw.offset)
            return .section(kind: block.kind, version: block.version, payload: payload)
        case .frame:
            let ppf = UInt32(header.pagesPerFrame)
            guard block.aux64 == nextOrdinal, block.aux >= 1, block.aux <= ppf, block.flags.contains(.zstd) else {
                throw ImageError(.structural, "frame holds \(block.aux) pages from ordinal \(block.aux64); expected up to \(ppf) from \(nextOrdinal)",
                                 location: name, offset: raw.offset)
            }
            let pages: [UInt8]
            do { pages = try Zstd.decompress(raw.payload[...], expected: Int(block.aux) * header.pageSize) } catch {
                var e = error
                e.location = name
                e.offset = raw.offset
                throw e
            }
            let first = nextOrdinal
            nextOrdinal += UInt64(block.aux)
            frameNumber += 1
            return .frame(firstOrdinal: first, pages: pages)
        case .index:
            let payload = try ImageReader.decodePayload(block, raw.payload, limit: UInt64(ImageLimits.maxIndexPayload), name: "index", offset: raw.offset)
            let index = try ImageReader.parseIndex(payload, header: header, offset: raw.offset)
            guard index.storedPages == nextOrdinal else {
                throw ImageError(.structural, "index counts \(index.storedPages) stored pages, the frames held \(nextOrdinal)", location: "index")
            }
            try scanner.readFooter(indexOffset: raw.offset)
            finished = true
            return .end(index: index)
        }
    }
}

import LinuxKernel

/// Reads an image front to back (§2), from a file or a pipe: the header, then
/// one block at a time, then the footer. The verifier and the streaming
/// reader share it, so there is one sequential parser.
struct BlockScanner: ~Copyable {
    private let descriptor: OwnedDescriptor
    /// The file's size when the input is a regular file: lengths are checked against it before reading.
    let fileSize: UInt64?
    private(set) var position: UInt64 = 0

    /// One block as read: its checksum already compared.
    struct RawBlock {
        var header: BlockHeader
        var offset: UInt64
        var payload: [UInt8]
        var checksumOK: Bool
    }

    init(descriptor: consuming OwnedDescriptor) {
        fileSize = descriptor.isRegularFile() ? (try? descriptor.size()) : nil
        self.descriptor = descriptor
    }

    mutating func read(_ n: Int) throws(ImageError) -> [UInt8] {
        let bytes = try descriptor.readSome(count: n)
        position += UInt64(bytes.count)
        return bytes
    }

    /// §3 The header.
    mutating func readHeader() throws(ImageError) -> ImageHeaderInfo {
        try ImageHeaderInfo.decode { (n) throws(ImageError) in try read(n) }
    }

    /// §4 The next block. Throws when the damage leaves no way to find the
    /// block after it: a cut file, an unknown block type, a length over its limit.
    mutating func nextBlock(header: ImageHeaderInfo, name: (BlockHeader) -> String) throws(ImageError) -> RawBlock {
        let offset = position
        let headerBytes = try read(ImageFormat.blockHeaderLength)
        guard headerBytes.count == ImageFormat.blockHeaderLength else {
            throw ImageError(.truncated, headerBytes.isEmpty ? "file ends before the index and footer" : "file ends inside a block header",
                             offset: offset)
        }
        let block = try BlockHeader.decode(headerBytes, offset: offset)
        guard block.type != nil else {
            throw ImageError(.structural, "unknown block type 0x\(String(block.typeTag, radix: 16)); cannot go on", location: name(block), offset: offset)
        }
        let limit = block.payloadLimit(pageSize: UInt32(header.pageSize), pagesPerFrame: UInt32(header.pagesPerFrame))
        guard block.payloadLength <= limit else {
            throw ImageError(.limitExceeded, "payload of \(block.payloadLength) bytes exceeds the limit of \(limit); cannot go on",
                             location: name(block), offset: offset)
        }
        if let fileSize, block.payloadLength > fileSize - min(fileSize, position) {
            throw ImageError(.truncated, "payload of \(block.payloadLength) bytes runs past the end of the file", location: name(block), offset: offset)
        }
        let payload = try read(Int(block.payloadLength))
        guard payload.count == Int(block.payloadLength) else {
            throw ImageError(.truncated, "file ends inside the payload (\(payload.count) of \(block.payloadLength) bytes)",
                             location: name(block), offset: offset)
        }
        let checksumOK = payload.withUnsafeBytes { block.computeChecksum(payload: $0) } == block.checksum
        return RawBlock(header: block, offset: offset, payload: payload, checksumOK: checksumOK)
    }

    /// §7.2 The footer after the index at `indexOffset`, and nothing after it.
    mutating func readFooter(indexOffset: UInt64) throws(ImageError) {
        let footerOffset = position
        let bytes = try read(ImageFormat.footerLength)
        guard bytes.count == ImageFormat.footerLength else {
            throw ImageError(.truncated, "file ends inside the footer", location: "footer", offset: footerOffset)
        }
        let footer = try Footer.decode(bytes, offset: footerOffset)
        guard footer.indexOffset == indexOffset, footer.indexLength == footerOffset - indexOffset else {
            throw ImageError(.structural, "footer points at \(footer.indexOffset)+\(footer.indexLength), the index is at \(indexOffset)",
                             location: "footer", offset: footerOffset)
        }
        guard try read(1).isEmpty else {
            throw ImageError(.structural, "bytes follow the footer", offset: position - 1)
        }
    }
}

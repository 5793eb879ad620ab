/// `ccimg flatten`: turns an image and its parents (§8) into one standalone
/// image with identical content — every inherited page resolved, no parent link.
public enum ImageFlattener {
    /// Writes the flattened form of `chain` to `output`. Sections other than
    /// memory are copied from the newest image, unknown optional ones included.
    @discardableResult
    public static func flatten(_ chain: ImageChain, to output: consuming ImageOutput,
                               options: ImageWriterOptions? = nil) throws(ImageError) -> ImageWriteSummary {
        let top = chain.top
        for image in chain.images where image.header.features.readOnlyCompatible & ~FeatureFlags.knownReadOnlyCompatible != 0 {
            throw ImageError(.unsupported, "image uses read-only-compatible features this version cannot re-encode", path: image.path)
        }
        var opts = options ?? ImageWriterOptions()
        if options == nil {
            opts.createdUnixNanoseconds = top.header.body.createdUnixNs
            opts.machine = top.header.body.machine
        }
        opts.pageSize = UInt32(top.header.pageSize)
        opts.openFiles = top.header.features.incompatible & FeatureFlags.incompatibleOpenFiles != 0   // its handles are copied as they are
        let writer = try ImageWriter(output: output, options: opts)
        for entry in top.index.sections where entry.kind != SectionKind.memoryMap.rawValue && entry.kind != SectionKind.pageMap.rawValue {
            let flags = BlockFlags(rawValue: UInt16(truncatingIfNeeded: entry.flags))
            try writer.addRawSection(kind: entry.kind, version: UInt16(truncatingIfNeeded: entry.version),
                                     critical: flags.contains(.critical), payload: try top.sectionPayload(entry))
        }
        for (v, vma) in top.memoryMap.enumerated() {
            try writer.beginVma(vma)
            for run in chain.resolvedRuns(ofVma: v) {
                switch run.state {
                case .unmapped:
                    throw ImageError(.structural, "inherited page at 0x\(String(run.address, radix: 16)) has no VMA in the parent chain", path: top.path)
                case .notPopulated: writer.appendNotPopulated(count: run.count)
                case .zero: writer.appendZero(count: run.count)
                case .stored(let level, let first):
                    // Re-classified as they are appended (§6: zero, dedup, stored), as from a process.
                    for k in 0..<run.count { try writer.appendPages(try chain.images[level].storedPage(first + k)) }
                }
            }
        }
        return try writer.finish()
    }
}

import LinuxKernel
import SwiftProtobuf

/// What `ccimg verify` found (§11).
public struct VerifyReport: Sendable {
    /// The file verified, or "-" for a stream.
    public var path: String
    public var deep: Bool
    /// Every problem found, in file order; empty when the image is sound.
    public var problems: [ImageError] = []
    public var sections = 0
    public var frames = 0
    public var storedPages: UInt64 = 0
    /// Pages whose hash was recomputed (`--deep`).
    public var pagesHashed: UInt64 = 0
    /// Parent images checked, nearest first.
    public var parents: [String] = []

    public var isValid: Bool { problems.isEmpty }

    /// §11 The exit status for this report: 0 when sound, else that of the first problem's class.
    public var exitStatus: Int32 { problems.first?.code.exitStatus ?? 0 }
}

/// Checks an image front to back (§11), from a file or a pipe, reporting
/// every problem with its block and offset instead of stopping at the first
/// where the damage allows going on.
public enum ImageVerifier {
    /// Verifies the file at `path`, and its parent chain (§8) when it is incremental.
    public static func verify(path: String, deep: Bool, storeDirectories: [String] = []) -> VerifyReport {
        var report = VerifyReport(path: path, deep: deep)
        let descriptor: OwnedDescriptor
        do { descriptor = try OwnedDescriptor(readingImageAt: path) } catch {
            report.problems.append(error)
            return report
        }
        let header = scan(descriptor, into: &report)
        guard report.isValid, let header, header.hasParent else { return report }
        // §8 The chain: every parent must be found, match its digest, and verify itself —
        // each image once, against the chain below it. (Verifying each parent with its own
        // chain again takes time exponential in the depth: spec/decisions/0017-threading-model.md.)
        do throws(ImageError) {
            let chain = try ImageChain.open(path: path, storeDirectories: storeDirectories)
            for (level, parent) in chain.images.enumerated().dropFirst() {
                report.parents.append(parent.path)
                var parentReport = VerifyReport(path: parent.path, deep: deep)
                do {
                    _ = scan(try OwnedDescriptor(readingImageAt: parent.path), into: &parentReport)
                } catch {
                    parentReport.problems.append(error)
                }
                if parentReport.isValid && level + 1 < chain.images.count {
                    checkInheritedPages(of: parent, in: chain, level: level, into: &parentReport)
                }
                report.problems += parentReport.problems.map { problem in
                    var p = problem
                    p.message = "in parent image: " + p.message
                    return p
                }
                if !parentReport.isValid { return report }
            }
            checkInheritedPages(of: chain.top, in: chain, level: 0, into: &report)
        } catch {
            report.problems.append(error.at(path: path))
        }
        return report
    }

    /// Verifies an image read from a stream (a pipe); its parents, if any, are not checked.
    public static func verify(streamFrom fd: Int32, deep: Bool) -> VerifyReport {
        var report = VerifyReport(path: "-", deep: deep)
        let descriptor = OwnedDescriptor(duplicating: fd)
        _ = scan(descriptor, into: &report)
        return report
    }

    /// §8 Every inherited page of `image` must land in a VMA of its `parent`. (That page of
    /// the parent is checked in turn when the parent is: each image of a chain is verified.)
    static func checkInheritedPages(of image: ImageReader, in chain: ImageChain, level: Int, into report: inout VerifyReport) {
        let parent = chain.images[level + 1]
        let ps = UInt64(image.header.pageSize)
        for v in image.memoryMap.indices {
            // An inherited page resolves to no content only where some image below lacks its VMA;
            // this image is at fault only where its own parent does.
            for run in chain.resolvedRuns(ofVma: v, level: level) where run.state == .unmapped {
                for k in 0..<run.count {
                    let address = run.address + k * ps
                    if parent.vmaIndex(containing: address) == nil {
                        report.problems.append(ImageError(
                            .structural, "inherited page at 0x\(String(address, radix: 16)) has no VMA in the parent chain",
                            path: image.path, location: "section page-map, VMA \(v)"))
                        return
                    }
                }
            }
        }
    }

    /// The sequential pass: header, every block, index, footer, cross-checks.
    static func scan(_ descriptor: consuming OwnedDescriptor, into report: inout VerifyReport) -> ImageHeaderInfo? {
        var pass = VerifierPass(scanner: BlockScanner(descriptor: descriptor), report: report)
        let header = pass.run()
        report = pass.report
        return header
    }

    /// Checks that a known section decodes as its message.
    static func decodedAny(_ kind: SectionKind, _ section: (offset: UInt64, payload: [UInt8]?)?, problem: (ImageError) -> Void) -> Bool {
        guard let section, let payload = section.payload else { return false }
        do {
            _ = try SectionCatalog.decode(kind, payload)
            return true
        } catch {
            problem(ImageError(.structural, "section does not decode as its record", location: "section \(kind.name)", offset: section.offset,
                               cause: "\(error)"))
            return false
        }
    }
}

/// The protobuf message of each section kind (§5.3).
public enum SectionCatalog {
    /// The message type that section `kind` holds.
    public static func messageType(_ kind: SectionKind) -> any SwiftProtobuf.Message.Type {
        switch kind {
        case .process: Ccimg_V1_ProcessInfo.self
        case .memoryMap: Ccimg_V1_MemoryMap.self
        case .pageMap: Ccimg_V1_PageMap.self
        case .threads: Ccimg_V1_ThreadList.self
        case .syncObjects: Ccimg_V1_SyncObjects.self
        case .handles: Ccimg_V1_HandleTable.self
        case .sockets: Ccimg_V1_SocketTable.self
        case .console: Ccimg_V1_Console.self
        case .signals: Ccimg_V1_SignalDispositions.self
        case .metadata: Ccimg_V1_Metadata.self
        }
    }

    /// Decodes a section payload as the message of its kind.
    public static func decode(_ kind: SectionKind, _ payload: [UInt8]) throws -> any SwiftProtobuf.Message {
        try messageType(kind).init(serializedBytes: payload)
    }
}

import SwiftProtobuf

/// Builds the models behind `ccimg info`, `dump` and `stat` (spec/ccimg-json.md).
public enum ImageInspector {
    /// The `schema` value of each JSON document.
    public static let infoSchema = "ccimg.info/1"
    public static let dumpSchema = "ccimg.dump/1"
    public static let statSchema = "ccimg.stat/1"
    public static let verifySchema = "ccimg.verify/1"

    // MARK: Shared pieces

    static func fileName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// "rw-p" style protection, as in /proc/PID/maps.
    public static func protString(_ vma: Ccimg_V1_Vma) -> String {
        (vma.prot & 1 != 0 ? "r" : "-") + (vma.prot & 2 != 0 ? "w" : "-") + (vma.prot & 4 != 0 ? "x" : "-") + (vma.shared ? "s" : "p")
    }

    /// The role's short name: "heap", "elf-data", ...
    public static func roleName(_ role: Ccimg_V1_VmaRole) -> String {
        switch role {
        case .unspecified: "unspecified"
        case .anonymous: "anonymous"
        case .heap: "heap"
        case .mainStack: "main-stack"
        case .threadStack: "thread-stack"
        case .elfData: "elf-data"
        case .filePrivate: "file-private"
        case .fileShared: "file-shared"
        case .sharedMemory: "shared-memory"
        case .vdso: "vdso"
        case .vvar: "vvar"
        case .vvarVclock: "vvar-vclock"
        case .elfText: "elf-text"
        case .vsyscall: "vsyscall"
        case .UNRECOGNIZED(let n): "role-\(n)"
        }
    }

    /// RFC 3339 in UTC with nanoseconds, e.g. 2026-11-25T19:08:36.123456789Z: the proleptic
    /// Gregorian calendar, as gmtime_r(3) gives it, computed here (days to civil date,
    /// H. Hinnant's algorithm) so that the format library makes no libc call.
    static func timestamp(_ ns: Int64) -> String {
        var seconds = ns / 1_000_000_000
        var fraction = ns % 1_000_000_000
        if fraction < 0 {
            seconds -= 1
            fraction += 1_000_000_000
        }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            days -= 1
            secondOfDay += 86_400
        }
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let hour = secondOfDay / 3600, minute = secondOfDay / 60 % 60, second = secondOfDay % 60
        return "\(year.decimal(width: 4))-\(month.decimal(width: 2))-\(day.decimal(width: 2))T"
            + "\(hour.decimal(width: 2)):\(minute.decimal(width: 2)):\(second.decimal(width: 2)).\(fraction.decimal(width: 9))Z"
    }

    static func headerJSON(_ image: ImageReader) -> JSONValue {
        let h = image.header
        var pairs: [(String, JSONValue)] = [
            ("format", .string("\(h.major).\(h.minor)")),
            ("features", .object([
                ("compatible", .hex(h.features.compatible)),
                ("readOnlyCompatible", .hex(h.features.readOnlyCompatible)),
                ("incompatible", .hex(h.features.incompatible)),
            ])),
            ("producer", .object([("name", .string(h.body.producerName)), ("version", .string(h.body.producerVersion))])),
            ("uuid", .string(h.uuid.description)),
            ("created", .string(timestamp(h.body.createdUnixNs))),
            ("machine", .message(h.body.machine)),
            ("pageSize", .count(h.body.pageSize)),
            ("pagesPerFrame", .count(h.body.pagesPerFrame)),
        ]
        if h.hasParent {
            pairs.append(("parent", .object([
                ("uuid", .string(ImageUUID(bytes: h.body.parent.parentUuid).description)),
                ("indexDigest", .string(PageHash(canonical: ArraySlice(h.body.parent.parentIndexDigest)).description)),
                ("depth", .count(h.body.parent.depth)),
            ])))
        } else {
            pairs.append(("parent", .null))
        }
        return .object(pairs)
    }

    /// Page counts per state over the whole image.
    static func stateCounts(_ image: ImageReader) -> [PageState: UInt64] {
        var total: [PageState: UInt64] = [:]
        for table in image.pageTables {
            for (state, n) in table.counts() { total[state, default: 0] += n }
        }
        return total
    }

    static func statesJSON(_ counts: [PageState: UInt64]) -> JSONValue {
        .object(PageState.allCases.map { ($0.description, .count(counts[$0] ?? 0)) })
    }

    // MARK: info

    /// `ccimg info`: one screen about an image and its chain.
    public static func info(_ chain: ImageChain) throws(ImageError) -> JSONValue {
        let image = chain.top
        let process = try image.section(.process, as: Ccimg_V1_ProcessInfo.self) ?? Ccimg_V1_ProcessInfo()
        let threads = try image.section(.threads, as: Ccimg_V1_ThreadList.self)?.threads.count ?? 0
        let counts = stateCounts(image)
        let mapped = image.memoryMap.reduce(UInt64(0)) { $0 + ($1.end - $1.start) }
        let frameBytes = image.index.frameOffsets.isEmpty ? 0 : image.indexOffset - image.index.frameOffsets[0]
        return .object([
            ("schema", .string(infoSchema)),
            ("file", .string(fileName(image.path))),
            ("fileBytes", .count(image.fileSize)),
            ("header", headerJSON(image)),
            ("process", .object([
                ("pid", .count(process.pid)),
                ("comm", .string(process.comm)),
                ("exe", .string(process.exePath)),
                ("cmdline", .array(process.cmdline.map { .string($0) })),
                ("threads", .count(threads)),
            ])),
            ("memory", .object([
                ("vmas", .count(image.memoryMap.count)),
                ("mappedBytes", .count(mapped)),
                ("pages", statesJSON(counts)),
                ("storedBytes", .count(image.index.storedPages * UInt64(image.header.pageSize))),
                ("framesApproxBytes", .count(frameBytes)),
            ])),
            ("chain", .array(chain.images.map { .object([
                ("uuid", .string($0.header.uuid.description)),
                ("file", .string($0.path)),
            ]) })),
        ])
    }

    // MARK: dump

    /// `ccimg dump`: everything in the image; `section` narrows it to one part
    /// (a section name, "header" or "memory").
    public static func dump(_ chain: ImageChain, section: String? = nil) throws(ImageError) -> JSONValue {
        let image = chain.top
        var pairs: [(String, JSONValue)] = [("schema", .string(dumpSchema)), ("file", .string(fileName(image.path)))]
        func want(_ name: String) -> Bool { section == nil || section == name }
        if want("header") { pairs.append(("header", headerJSON(image))) }
        if section == nil {
            pairs.append(("sections", .array(image.index.sections.map { entry in
                let flags = BlockFlags(rawValue: UInt16(truncatingIfNeeded: entry.flags))
                return .object([
                    ("kind", .count(entry.kind)),
                    ("name", SectionKind(rawValue: entry.kind).map { .string($0.name) } ?? .null),
                    ("version", .count(entry.version)),
                    ("critical", .bool(flags.contains(.critical))),
                    ("compressed", .bool(flags.contains(.zstd))),
                    ("offset", .count(entry.offset)),
                    ("bytes", .count(entry.length)),
                ])
            })))
        }
        for kind in SectionKind.allCases where kind != .memoryMap && kind != .pageMap && want(kind.name) {
            guard let entry = image.sectionEntry(kind) else {
                if section != nil { pairs.append((kind.name, .null)) }
                continue
            }
            let payload = try image.sectionPayload(entry)
            let message: any SwiftProtobuf.Message
            do { message = try SectionCatalog.decode(kind, payload) } catch {
                throw ImageError(.structural, "section does not decode as its record", path: image.path,
                                 location: "section \(kind.name)", offset: entry.offset, cause: "\(error)")
            }
            pairs.append((kind.name, .message(message)))
        }
        if want("memory") || want("memory-map") || want("page-map") {
            pairs.append(("memory", memoryJSON(image)))
        }
        if section == nil {
            pairs.append(("frames", .object([
                ("count", .count(image.index.frameOffsets.count)),
                ("storedPages", .count(image.index.storedPages)),
            ])))
        }
        return .object(pairs)
    }

    static func vmaJSON(_ vma: Ccimg_V1_Vma) -> [(String, JSONValue)] {
        var pairs: [(String, JSONValue)] = [
            ("start", .hex(vma.start)),
            ("end", .hex(vma.end)),
            ("prot", .string(protString(vma))),
            ("role", .string(roleName(vma.role))),
        ]
        if !vma.path.isEmpty { pairs.append(("path", .string(vma.path))) }
        if !vma.object.isEmpty { pairs.append(("object", .string(vma.object))) }
        if vma.fileOffset != 0 { pairs.append(("fileOffset", .hex(vma.fileOffset))) }
        if vma.hasFileIdentity { pairs.append(("fileIdentity", .message(vma.fileIdentity))) }
        return pairs
    }

    static func memoryJSON(_ image: ImageReader) -> JSONValue {
        .object([("vmas", .array(zip(image.memoryMap, image.pageTables).map { vma, table in
            var pairs = vmaJSON(vma)
            pairs.append(("pages", .count(table.pageCount)))
            pairs.append(("states", statesJSON(table.counts())))
            pairs.append(("runs", .array(table.runs.map { run in
                var r: [(String, JSONValue)] = [("state", .string(run.state.description)), ("count", .count(run.count))]
                if run.state == .stored { r.append(("firstOrdinal", .count(run.firstOrdinal))) }
                if run.state == .dedup { r.append(("targets", .array(run.dedupTargets.map { .count($0) }))) }
                return .object(r)
            })))
            return .object(pairs)
        }))])
    }

    // MARK: stat

    /// `ccimg stat`: bytes per section and per VMA role, compression, page-state counts.
    public static func stat(_ chain: ImageChain) throws(ImageError) -> JSONValue {
        let image = chain.top
        let ps = UInt64(image.header.pageSize)
        // Compressed size of each frame, apportioned to its pages.
        var frameSizes: [UInt64] = []
        let offsets = image.index.frameOffsets
        let firstSectionAfterFrames = image.index.sections.map(\.offset).filter { o in offsets.last.map { o > $0 } ?? false }.min()
        for (i, offset) in offsets.enumerated() {
            let next = i + 1 < offsets.count ? offsets[i + 1] : (firstSectionAfterFrames ?? image.indexOffset)
            frameSizes.append(next - offset)
        }
        func compressedShare(ordinal: UInt64) -> Double {
            let f = Int(ordinal / UInt64(image.header.pagesPerFrame))
            let pagesInFrame = min(UInt64(image.header.pagesPerFrame), image.index.storedPages - UInt64(f) * UInt64(image.header.pagesPerFrame))
            return Double(frameSizes[f]) / Double(pagesInFrame)
        }
        struct RoleStat { var vmas = 0; var mapped: UInt64 = 0; var states: [PageState: UInt64] = [:]; var compressed: Double = 0 }
        var roles: [String: RoleStat] = [:]
        for (vma, table) in zip(image.memoryMap, image.pageTables) {
            var s = roles[roleName(vma.role), default: RoleStat()]
            s.vmas += 1
            s.mapped += vma.end - vma.start
            for (state, n) in table.counts() { s.states[state, default: 0] += n }
            for run in table.runs where run.state == .stored {
                for o in run.firstOrdinal..<(run.firstOrdinal + run.count) { s.compressed += compressedShare(ordinal: o) }
            }
            roles[roleName(vma.role)] = s
        }
        let counts = stateCounts(image)
        let storedRaw = image.index.storedPages * ps
        let frameTotal = frameSizes.reduce(0, +)
        let populated: UInt64 = [PageState.zero, .stored, .dedup, .inherited].reduce(0) { $0 + (counts[$1] ?? 0) }
        let sectionList: [JSONValue] = image.index.sections.map { entry in
            let name = SectionKind(rawValue: entry.kind)?.name ?? "kind-\(entry.kind)"
            return .object([("name", .string(name)), ("bytes", .count(entry.length))])
        }
        let ratio = frameTotal == 0 ? "n/a" : (Double(storedRaw) / Double(frameTotal)).fixed(3)
        let roleList: [JSONValue] = roles.keys.sorted().map { name in
            let s = roles[name]!
            let pairs: [(String, JSONValue)] = [
                ("role", .string(name)),
                ("vmas", .count(s.vmas)),
                ("mappedBytes", .count(s.mapped)),
                ("pages", statesJSON(s.states)),
                ("storedBytes", .count((s.states[.stored] ?? 0) * ps)),
                ("compressedBytes", .count(UInt64(s.compressed.rounded()))),
            ]
            return .object(pairs)
        }
        let indexBytes = image.fileSize - image.indexOffset - UInt64(ImageFormat.footerLength)
        return .object([
            ("schema", .string(statSchema)),
            ("file", .string(fileName(image.path))),
            ("fileBytes", .count(image.fileSize)),
            ("sections", .array(sectionList)),
            ("frames", .object([("count", .count(offsets.count)), ("bytes", .count(frameTotal))])),
            ("indexBytes", .count(indexBytes)),
            ("pages", statesJSON(counts)),
            ("populatedBytes", .count(populated * ps)),
            ("storedRawBytes", .count(storedRaw)),
            ("compressionRatio", .string(ratio)),
            ("roles", .array(roleList)),
        ])
    }

    // MARK: verify

    /// `ccimg verify --json`.
    public static func verifyJSON(_ report: VerifyReport) -> JSONValue {
        .object([
            ("schema", .string(verifySchema)),
            ("file", .string(report.path)),
            ("valid", .bool(report.isValid)),
            ("deep", .bool(report.deep)),
            ("exitStatus", .count(report.exitStatus)),
            ("sections", .count(report.sections)),
            ("frames", .count(report.frames)),
            ("storedPages", .count(report.storedPages)),
            ("pagesHashed", .count(report.pagesHashed)),
            ("parents", .array(report.parents.map { .string($0) })),
            ("problems", .array(report.problems.map(problemJSON))),
        ])
    }

    /// One error as JSON: class, message and context.
    public static func problemJSON(_ e: ImageError) -> JSONValue {
        var pairs: [(String, JSONValue)] = [("class", .string(e.code.rawValue)), ("message", .string(e.message))]
        pairs.append(("file", e.path.map { .string($0) } ?? .null))
        pairs.append(("location", e.location.map { .string($0) } ?? .null))
        pairs.append(("offset", e.offset.map { .count($0) } ?? .null))
        if let cause = e.cause { pairs.append(("cause", .string(cause))) }
        return .object(pairs)
    }
}

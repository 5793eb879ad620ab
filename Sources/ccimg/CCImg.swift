import ArgumentParser
import CheckpointImage
import LinuxKernel

/// `ccimg`: inspect, compare, check and transform checkpoint images.
@main
struct CCImg: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ccimg",
        abstract: "Inspect, compare, verify and transform checkpoint images (format 1.x).",
        discussion: """
        Exit status: 0 success; 1 'diff' found differences; 2 trouble (missing file, I/O);
        10 truncated, 11 bad magic, 12 unsupported, 13 checksum mismatch, 14 structural,
        15 broken parent chain, 16 limit exceeded. JSON schemas: spec/ccimg-json.md.
        """,
        version: CheckpointImageVersion.current,
        subcommands: [Info.self, Dump.self, Diff.self, Verify.self, Stat.self, Flatten.self, Extract.self]
    )
}

/// Options every command that opens an image shares.
struct ChainOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Directory to search for parent images by UUID (repeatable).", valueName: "DIR"))
    var store: [String] = []
}

/// Runs `body`, turning an ``ImageError`` into a one-line message and its exit status.
func reportingImageErrors(_ body: () throws -> Void, troubleStatus: Int32? = nil) throws {
    do {
        try body()
    } catch let error as ImageError {
        let hint: String
        switch error.code {
        case .truncated: hint = " — the image is incomplete; copy it again or use an intact copy"
        case .checksumMismatch: hint = " — the image is damaged; run 'ccimg verify --deep' for every problem"
        case .brokenChain: hint = ""
        case .unsupported: hint = " — a newer ccimg may read it"
        default: hint = ""
        }
        StandardStream.error.write("ccimg: error: \(error)\(hint)\n")
        throw ExitCode(troubleStatus ?? error.code.exitStatus)
    }
}

func printOut(_ text: String) {
    StandardStream.output.write(text)
}

/// Opens an image and its chain; "-" reads standard input into a temporary file first.
func openChain(_ path: String, _ options: ChainOptions) throws -> ImageChain {
    if path == "-" {
        let spooled = try StandardInputSpool.spool(prefix: "ccimg-stdin")
        defer { try? FileSystem.unlink(spooled) }
        return try ImageChain.open(path: spooled, storeDirectories: options.store)
    }
    return try ImageChain.open(path: path, storeDirectories: options.store)
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "One screen about an image: producer, format, process, sizes, parent chain.")
    @Argument(help: "The image ('-' for standard input).") var image: String
    @Flag(help: "Print JSON (schema ccimg.info/1).") var json = false
    @OptionGroup var chainOptions: ChainOptions

    func run() throws {
        try reportingImageErrors {
            let chain = try openChain(image, chainOptions)
            let model = try ImageInspector.info(chain)
            printOut(json ? model.rendered() : TextRenderer.info(model))
        }
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump", abstract: "Everything in an image, readable; or a hexdump of memory as of that image.")
    @Argument(help: "The image ('-' for standard input).") var image: String
    @Option(help: ArgumentHelp("Only this part: header, memory, process, threads, sync-objects, handles, sockets, console, signals, metadata.", valueName: "S"))
    var section: String?
    @Option(help: ArgumentHelp("Hexdump memory at ADDR (hex, 0x…) for LEN bytes (default 256), following the parent chain.", valueName: "ADDR[+LEN]"))
    var memory: String?
    @Flag(help: "Print JSON (schema ccimg.dump/1, or ccimg.memory/1 with --memory).") var json = false
    @OptionGroup var chainOptions: ChainOptions

    func validate() throws {
        if let section, !(["header", "memory"] + SectionKind.allCases.map(\.name)).contains(section) {
            throw ValidationError("unknown section '\(section)'; use one of: header, memory, \(SectionKind.allCases.map(\.name).joined(separator: ", "))")
        }
        if let memory { _ = try MemoryRange.parse(memory, defaultLength: 256) }
    }

    func run() throws {
        try reportingImageErrors {
            let chain = try openChain(image, chainOptions)
            if let memory {
                let range = try MemoryRange.parse(memory, defaultLength: 256)
                let bytes = try chain.readMemory(address: range.address, length: range.length)
                if json {
                    printOut(JSONValue.object([
                        ("schema", .string("ccimg.memory/1")),
                        ("address", .hex(range.address)),
                        ("length", .count(range.length)),
                        ("hex", .string(bytes.map { $0.hex(width: 2) }.joined())),
                    ]).rendered())
                } else {
                    printOut(TextRenderer.hexdump(bytes, address: range.address))
                }
                return
            }
            let model = try ImageInspector.dump(chain, section: section)
            printOut(json ? model.rendered() : TextRenderer.tree(model))
        }
    }
}

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "What changed between two images of one process. Exit 0 same, 1 different, 2 trouble.")
    @Argument(help: "The older image.") var a: String
    @Argument(help: "The newer image.") var b: String
    @Flag(help: "Print JSON (schema ccimg.diff/1).") var json = false
    @OptionGroup var chainOptions: ChainOptions

    func run() throws {
        var different = false
        try reportingImageErrors({
            let result = try ImageDiff.compare(try openChain(a, chainOptions), try openChain(b, chainOptions))
            printOut(json ? result.report.rendered() : TextRenderer.diff(result.report))
            different = result.different
        }, troubleStatus: 2)
        if different { throw ExitCode(1) }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check structure, checksums and parent chain; --deep also decompresses every frame and checks every page hash.",
        discussion: "Exit status: 0 sound; otherwise that of the first problem's class (10-16), 2 if the file cannot be read.")
    @Argument(help: "The image ('-' reads a stream from standard input; parents are then not checked).") var image: String
    @Flag(help: "Decompress every frame and check every page against its hash.") var deep = false
    @Flag(help: "Print JSON (schema ccimg.verify/1).") var json = false
    @OptionGroup var chainOptions: ChainOptions

    func run() throws {
        let report = image == "-"
            ? ImageVerifier.verify(streamFrom: 0, deep: deep)
            : ImageVerifier.verify(path: image, deep: deep, storeDirectories: chainOptions.store)
        if json {
            printOut(ImageInspector.verifyJSON(report).rendered())
        } else if report.isValid {
            let chain = report.parents.isEmpty ? "" : ", chain of \(report.parents.count + 1) images"
            printOut("\(image): OK (\(report.sections) sections, \(report.frames) frames, \(report.storedPages) stored pages\(report.deep ? ", \(report.pagesHashed) pages hashed" : "")\(chain))\n")
        } else {
            for problem in report.problems {
                StandardStream.error.write("ccimg: \(problem)\n")
            }
            printOut("\(image): FAILED (\(report.problems.count) problem\(report.problems.count == 1 ? "" : "s"))\n")
        }
        if report.exitStatus != 0 { throw ExitCode(report.exitStatus) }
    }
}

struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stat", abstract: "Sizes per section and per VMA role; compression ratio; zero, dedup and inherited page counts.")
    @Argument(help: "The image ('-' for standard input).") var image: String
    @Flag(help: "Print JSON (schema ccimg.stat/1).") var json = false
    @OptionGroup var chainOptions: ChainOptions

    func run() throws {
        try reportingImageErrors {
            let model = try ImageInspector.stat(try openChain(image, chainOptions))
            printOut(json ? model.rendered() : TextRenderer.tree(model))
        }
    }
}

struct Flatten: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flatten", abstract: "Write an incremental image and its parents as one standalone image.")
    @Argument(help: "The newest image of the chain.") var image: String
    @Option(name: .shortAndLong, help: "Where to write the standalone image (written atomically).") var output: String
    @OptionGroup var chainOptions: ChainOptions

    func run() throws {
        try reportingImageErrors {
            let chain = try openChain(image, chainOptions)
            let summary = try ImageFlattener.flatten(chain, to: try ImageOutput(path: output))
            printOut("\(output): \(summary.uuid), \(summary.fileBytes) bytes, flattened from \(chain.images.count) image\(chain.images.count == 1 ? "" : "s")\n")
        }
    }
}

struct Extract: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "extract", abstract: "Write a range of memory, as of an image, to a file.")
    @Argument(help: "The image.") var image: String
    @Option(help: ArgumentHelp("Range to extract: ADDR in hex with 0x, LEN decimal or hex.", valueName: "ADDR+LEN")) var memory: String
    @Option(name: .shortAndLong, help: "The file to write (written atomically).") var output: String
    @OptionGroup var chainOptions: ChainOptions

    func validate() throws { _ = try MemoryRange.parse(memory, defaultLength: nil) }

    func run() throws {
        try reportingImageErrors {
            let range = try MemoryRange.parse(memory, defaultLength: nil)
            let bytes = try openChain(image, chainOptions).readMemory(address: range.address, length: range.length)
            try MemoryExtractor.write(bytes, to: output)
            printOut("\(output): \(bytes.count) bytes from 0x\(String(range.address, radix: 16))\n")
        }
    }
}

/// `ADDR[+LEN]` as the commands take it.
struct MemoryRange {
    var address: UInt64
    var length: UInt64

    static func parse(_ text: String, defaultLength: UInt64?) throws -> MemoryRange {
        let parts = text.split(separator: "+", maxSplits: 1).map(String.init)
        guard let first = parts.first, first.lowercased().hasPrefix("0x"), let address = UInt64(first.dropFirst(2), radix: 16) else {
            throw ValidationError("address '\(text)' must be hex with 0x, like 0x7f001000+4096")
        }
        var length = defaultLength
        if parts.count == 2 {
            let l = parts[1].lowercased()
            length = l.hasPrefix("0x") ? UInt64(l.dropFirst(2), radix: 16) : UInt64(l)
            guard length != nil else { throw ValidationError("length '\(parts[1])' must be decimal or hex with 0x") }
        }
        guard let length, length > 0 else { throw ValidationError("give a length: ADDR+LEN, like 0x7f001000+4096") }
        return MemoryRange(address: address, length: length)
    }
}

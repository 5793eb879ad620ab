import Foundation
@_spi(Fixtures) import CheckpointImage

/// Format 1.1 fixtures (§5.3 handles with open-files, §3.3 incompatible bit 1;
/// decision 0018): golden images under `fixtures/images/1.1/` with their golden
/// dumps, and damaged fd tables for the damaged corpus.
public enum OpenFilesFixtures {
    /// Golden 1.1 images, in the order they are written.
    public static let goldenNames = ["open-files", "open-files-flat"]

    /// Writer options of the 1.1 fixtures: the 1.0 fixtures' with open-files declared.
    public static func options(seed: UInt64) -> ImageWriterOptions {
        var o = FixtureSet.options(seed: seed)
        o.producerVersion = "1.1"
        o.openFiles = true
        return o
    }

    /// The synthetic process with its descriptors as open file descriptions: fds
    /// 0–2 share one terminal (inherited), fd 14 is a dup of the file at fd 3
    /// (shared offset), fd 15 a dup of the eventfd at fd 5 (shared counter; fd 5
    /// close-on-exec, fd 15 not); every other descriptor is its own object.
    public static func process() -> SyntheticProcess {
        var p = SyntheticProcess(version: 1)
        var table = OpenFileTable()
        let extra: [Int32: [Int32]] = [0: [1, 2], 3: [14], 5: [15]]
        for h in SyntheticProcess.handleTable() where h.fd != 1 && h.fd != 2 {
            let fds = [(h.fd, h.fdFlags)] + (extra[h.fd] ?? []).map { ($0, UInt32(0)) }
            let id = table.add(h, descriptors: fds)
            switch h.type {
            case .eventfd: var e = p.sync.eventfds[0]; e.objectID = id; table.attach(e)
            case .timerfd: var t = p.sync.timerfds[0]; t.objectID = id; table.attach(t)
            case .signalfd: var s = p.sync.signalfds[0]; s.objectID = id; table.attach(s)
            default: break
            }
        }
        p.handles = table.handleTable
        table.syncEntries(into: &p.sync)
        return p
    }

    /// Writes golden image `name` to `path`; `directory` holds the ones before it.
    static func writeGolden(_ name: String, to path: String, in directory: String) throws {
        let output = try ImageOutput(path: path)
        switch name {
        case "open-files":
            try process().write(to: output, options: options(seed: 41))
        case "open-files-flat":
            var o = options(seed: 42)
            o.openFiles = false     // the flattener takes the bit from the image it flattens
            try ImageFlattener.flatten(try ImageChain.open(path: directory + "/open-files.ccimg"), to: output, options: o)
        default:
            preconditionFailure("unknown golden 1.1 fixture \(name)")
        }
    }

    /// The bytes of golden 1.1 image `name`, encoded now; `directory` must hold the ones before it.
    public static func encodeGolden(_ name: String, in directory: String) throws -> [UInt8] {
        let tmp = directory + "/.encode-\(name)-\(getpid()).ccimg"
        defer { unlink(tmp) }
        try writeGolden(name, to: tmp, in: directory)
        return Array(try Data(contentsOf: URL(fileURLWithPath: tmp)))
    }

    /// Writes every golden 1.1 image and its `ccimg dump --json` into `directory`.
    public static func writeGolden(into directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in goldenNames {
            let path = "\(directory)/\(name).ccimg"
            try writeGolden(name, to: path, in: directory)
            try FixtureSet.goldenDump(of: path).write(toFile: "\(directory)/\(name).dump.json", atomically: true, encoding: .utf8)
        }
    }

    /// Damaged fd tables (each structural), written into `directory`; their manifest entries.
    public static func writeDamaged(into directory: String) throws -> [FixtureSet.DamagedCase] {
        var cases: [FixtureSet.DamagedCase] = []
        func save(_ name: String, seed: UInt64, openFiles: Bool = true, _ description: String,
                  _ change: (inout Ccimg_V1_HandleTable) -> Void) throws {
            var p = process()
            change(&p.handles)
            var o = options(seed: seed)
            o.openFiles = openFiles
            try p.write(to: try ImageOutput(path: "\(directory)/\(name).ccimg"), options: o)
            cases.append(FixtureSet.DamagedCase(file: "\(name).ccimg", description: description, verify: "structural", verifyDeep: "structural"))
        }
        try save("open-files-missing-object", seed: 51, "an fd of the fd table names an object the handles section does not hold") {
            $0.fds[$0.fds.firstIndex { $0.fd == 14 }!].objectID = 999
        }
        try save("open-files-duplicate-fd", seed: 52, "fd 3 appears twice in the fd table") {
            $0.fds[$0.fds.firstIndex { $0.fd == 14 }!].fd = 3
        }
        try save("open-files-orphan-object", seed: 53, "an object no descriptor names") {
            var orphan = $0.handles[3]
            orphan.objectID = 100
            $0.handles.append(orphan)
        }
        try save("open-files-without-feature", seed: 54, openFiles: false, "an fd table in an image that does not declare open-files (incompatible bit 1)") { _ in }
        return cases
    }
}

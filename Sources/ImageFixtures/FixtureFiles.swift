import LinuxKernel

/// The fixture tools' file I/O, through LinuxKernel (spec/decisions/0016): plain
/// files, written whole (not atomically: fixtures are regenerated, not recovered).
enum FixtureFiles {
    /// The whole file at `path` (open(2), read(2)).
    static func read(_ path: String) throws -> [UInt8] {
        try FileSystem.readFile(path)
    }

    /// Creates or truncates `path` and writes `bytes` (open(2) O_CREAT|O_TRUNC, write(2)).
    static func write(_ bytes: [UInt8], to path: String) throws {
        let file = try OwnedDescriptor(opening: path, .createTruncating(permissions: 0o644))
        try bytes.withUnsafeBytes { (raw) throws in try file.writeAll(raw) }
    }

    /// Writes `text` as UTF-8 to `path`.
    static func write(_ text: String, to path: String) throws {
        try write(Array(text.utf8), to: path)
    }

    /// mkdir -p `path` (mkdir(2)).
    static func createDirectory(_ path: String) throws {
        try FileSystem.createDirectory(path)
    }

    /// Removes `path` if it is there (unlink(2)).
    static func remove(_ path: String) {
        try? FileSystem.unlink(path)
    }

    /// This process's id (getpid(2)), for temporary names.
    static var processID: Int32 { Host.processID }
}

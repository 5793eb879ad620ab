import CheckpointImage

/// Writes extracted memory to a file through the same atomic output as images.
enum MemoryExtractor {
    static func write(_ bytes: [UInt8], to path: String) throws {
        var output = try ImageOutput(path: path)
        try output.writeRaw(bytes)
        try output.commit()
    }
}

import CheckpointImage
import LinuxKernel

// MARK: Files and formatting

/// Writes `bytes` to a new file at `path` (no fsync).
func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
    do {
        let file = try OwnedDescriptor(opening: path, .createTruncating(permissions: 0o644))
        var done = 0
        while done < bytes.count {
            let end = min(bytes.count, done + (64 << 20))
            try file.writeAll(UnsafeRawBufferPointer(rebasing: bytes[done..<end]))
            done = end
        }
    } catch {
        throw BenchError("cannot write \(path): \(error)")
    }
}

/// The size of the file at `path` (stat(2)).
func fileSize(_ path: String) throws -> UInt64 {
    guard let size = FileSystem.size(of: path) else { throw BenchError("cannot stat \(path)") }
    return size
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

/// `value` with `digits` decimals, as printf's %.Nf.
func f(_ value: Double, _ digits: Int) -> String { value.fixed(digits) }


import LinuxKernel
#if canImport(Glibc)
import Glibc
#endif

/// An image read from a pipe ("-"), kept in a temporary file so that it can be
/// read at random (§2: the memory map and page map follow the frames). Used by
/// `ccimg` and `ccpm restore`; the caller unlinks the file when done.
public enum StandardInputSpool {
    /// Copies standard input into a new file under $TMPDIR (or /tmp), created
    /// exclusively (mkstemp), and returns its path.
    public static func spool(prefix: String) throws(ImageError) -> String {
        let directory = Host.temporaryDirectory
        var template = Array("\(directory)/\(prefix)-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw ImageError(.io, "cannot create a temporary file in \(directory) for standard input", cause: "'mkstemp' failed: \(errnoText(errno))")
        }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let out = OwnedDescriptor(raw: fd)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                unlink(path)
                throw ImageError(.io, "cannot read standard input", cause: "'read' failed: \(errnoText(errno))")
            }
            if n == 0 { break }
            do throws(ImageError) {
                try buffer.withBytes { (raw) throws(ImageError) in try out.writeAll(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            } catch {
                unlink(path)
                throw ImageError(.io, "cannot spool standard input to \(path)", path: path, cause: error.description)
            }
        }
        return path
    }
}

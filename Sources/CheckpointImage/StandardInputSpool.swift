import LinuxKernel

/// An image read from a pipe ("-"), kept in a temporary file so that it can be
/// read at random (§2: the memory map and page map follow the frames). Used by
/// `ccimg` and `ccpm restore`; the caller unlinks the file when done. The copy
/// is LinuxKernel's ``StandardInputFile``; this maps its failures to ``ImageError``.
public enum StandardInputSpool {
    /// Copies standard input into a new file under $TMPDIR (or /tmp), created
    /// exclusively (mkstemp(3)), and returns its path.
    public static func spool(prefix: String) throws(ImageError) -> String {
        do { return try StandardInputFile.spool(prefix: prefix) } catch {
            switch error {
            case .create(let directory, let cause):
                throw ImageError(.io, "cannot create a temporary file in \(directory) for standard input", cause: cause.description)
            case .read(let cause):
                throw ImageError(.io, "cannot read standard input", cause: cause.description)
            case .write(let path, let cause):
                let hint = cause.errno == .noSpace ? "the disk is full" : cause.errno == .brokenPipe ? "the reader went away" : "write failed"
                throw ImageError(.io, "cannot spool standard input to \(path)", path: path,
                                 cause: ImageError(.io, hint, cause: cause.description).description)
            }
        }
    }
}

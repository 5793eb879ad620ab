/// Why a kind of state cannot be captured or restored: the state itself (not the
/// kernel, not the image's bytes) is the trouble. Capture maps it to
/// `CaptureError.unsupported`, restore to `RestoreError` of the same code.
public struct StateError: Error, CustomStringConvertible, Sendable {
    /// The class of trouble; each maps to one exit status of `ccpm`.
    public enum Code: String, Sendable {
        /// It cannot run here: a file it had open is missing, a layout differs.
        case incompatible
        /// This version does not capture or recreate this state.
        case unsupported
        /// The kernel answered something the state cannot come back from.
        case kernel
    }

    /// The class of trouble.
    public var code: Code
    /// What is wrong, in one line, naming the thing (the fd, the path).
    public var message: String

    /// A trouble of class `code`.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The message.
    public var description: String { message }
}

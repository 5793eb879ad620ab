import LinuxKernel
import ProcessState
import CheckpointImage

/// Why a restore failed. Each code has its own `ccpm restore` exit status, and
/// every failure kills the half-restored process first (issue #4).
public struct RestoreError: Error, CustomStringConvertible, Sendable {
    /// The class of failure; each has its own exit status (``exitStatus``).
    public enum Code: String, Sendable {
        /// The image or its chain is damaged or missing (the ``ImageError`` class gives the status).
        case image
        /// The image cannot run on this machine: another architecture, CPU features, a changed file.
        case incompatible
        /// Not allowed to create or trace the process (restore runs as root).
        case permissionDenied = "permission-denied"
        /// The kernel refused a step of the restore.
        case kernel
        /// The image holds something this version cannot recreate.
        case unsupported
    }

    /// The class of failure.
    public var code: Code
    /// What failed, in one line, naming the thing and what to do.
    public var message: String
    /// The image error behind a `.image` failure, whose class sets the exit status.
    public var imageError: ImageError?
    /// What lies behind a failure, as a typed value: a system call, the image (or a part
    /// of it, as the vdso's ELF object), or the state that cannot come back here. One
    /// classification of causes for captures, restores and kinds of state (``StateFailure``).
    public typealias Cause = StateFailure

    /// The system call or image error behind it, when there is one.
    public var cause: Cause?

    /// A failure of class `code`.
    public init(_ code: Code, _ message: String, cause: Cause? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// The image (or its chain) cannot be used: `error` says why and sets the exit status.
    public init(_ error: ImageError) {
        self.init(.image, "the image cannot be used: \(error.description)")
        imageError = error
    }

    /// State the image holds that cannot come back here (``StateError``).
    public init(_ error: StateError) {
        switch error.code {
        case .incompatible: self.init(.incompatible, error.message)
        case .unsupported: self.init(.unsupported, error.message)
        case .kernel: self.init(.kernel, error.message)
        }
    }

    /// The `ccpm restore` exit status: an image problem uses its §11 status (10–16),
    /// then incompatible 20, not permitted 4, kernel 7, unsupported 8.
    public var exitStatus: Int32 {
        switch code {
        case .image: imageError?.code.exitStatus ?? 14
        case .incompatible: 20
        case .permissionDenied: 4
        case .kernel: 7
        case .unsupported: 8
        }
    }

    /// The message, then the cause in parentheses.
    public var description: String {
        var text = message
        if let cause { text += " (\(cause))" }
        return text
    }

    /// Classifies a failed system call made while `doing` something.
    static func from(_ error: SystemCallError, doing what: String) -> RestoreError {
        switch error.errno {
        case .notPermitted, .permissionDenied:
            RestoreError(.permissionDenied, "not permitted to \(what); run ccpm restore as root", cause: .system(error))
        default:
            RestoreError(.kernel, "cannot \(what)", cause: .system(error))
        }
    }
}

/// Why a restore step failed: a cause the step runner classifies with the step's name
/// (`cannot <step>`), or a failure already classified where it happened.
enum StepFailure: Error {
    /// Classified by the runner: a system call by its errno, an image or state error by its class.
    case cause(RestoreError.Cause)
    /// Classified already.
    case failed(RestoreError)

    /// A kind's failure (``StateFailure``), to be classified by the runner.
    init(_ failure: StateFailure) { self = .cause(failure) }

    /// The restore error of a step named `step` that failed this way.
    func error(doing step: String) -> RestoreError {
        switch self {
        case .cause(.system(let e)): RestoreError.from(e, doing: step)
        case .cause(.image(let e)): RestoreError(e)
        case .cause(.state(let e)): RestoreError(e)
        case .failed(let e): e
        }
    }
}

/// Runs `body`, a sequence of system calls, as part of a restore step.
func systemCalls<R>(_ body: () throws(SystemCallError) -> R) throws(StepFailure) -> R {
    do { return try body() } catch { throw .cause(.system(error)) }
}

/// Runs `body`, which reads the image, as part of a restore step.
func imageReads<R>(_ body: () throws(ImageError) -> R) throws(StepFailure) -> R {
    do { return try body() } catch { throw .cause(.image(error)) }
}

import CheckpointImage
import LinuxKernel
import ProcessState

/// Why a checkpoint failed. Each code has its own `ccpm` exit status; every
/// failure leaves the target running as it was (issue #3, "never harm the target").
public struct CaptureError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The PID names no process (or it exited during the capture).
        case noSuchProcess = "no-such-process"
        /// Not allowed to trace or read the process.
        case permissionDenied = "permission-denied"
        /// The image could not be written (full disk, unwritable path, closed pipe).
        case output
        /// The parent image is missing or damaged.
        case parent
        /// The kernel refused something the capture needs.
        case kernel
        /// The process is in a state this version cannot capture.
        case unsupported

        /// The `ccpm checkpoint` exit status.
        public var exitStatus: Int32 {
            switch self {
            case .noSuchProcess: 3
            case .permissionDenied: 4
            case .output: 5
            case .parent: 6
            case .kernel: 7
            case .unsupported: 8
            }
        }
    }

    /// What lies behind a failure, as a typed value: a system call, the image (or its
    /// parent) that could not be written or read, or the state itself. One classification
    /// of causes for captures, restores and kinds of state (``StateFailure``).
    public typealias Cause = StateFailure

    /// The class of failure; each has its own exit status.
    public var code: Code
    /// What failed, in one line.
    public var message: String
    /// The process, when the failure concerns one.
    public var pid: Int32?
    /// The system call or image error behind it, when there is one.
    public var cause: Cause?

    /// A failure of class `code`.
    public init(_ code: Code, _ message: String, pid: Int32? = nil, cause: Cause? = nil) {
        self.code = code
        self.message = message
        self.pid = pid
        self.cause = cause
    }

    public var description: String {
        var text = pid.map { "pid \($0): " } ?? ""
        text += message
        if let cause, cause.description != message { text += " (\(cause))" }
        return text
    }

    /// Classifies a failed system call on process `pid`.
    static func from(_ error: SystemCallError, pid: Int32, doing what: String) -> CaptureError {
        switch error.errno {
        case .noSuchProcess, .noSuchFileOrDirectory: CaptureError(.noSuchProcess, "no such process (it may have exited)", pid: pid, cause: .system(error))
        case .notPermitted, .permissionDenied: CaptureError(.permissionDenied, "not permitted to \(what); run as root or as the process's owner with ptrace allowed",
                                         pid: pid, cause: .system(error))
        default: CaptureError(.kernel, "cannot \(what)", pid: pid, cause: .system(error))
        }
    }

    /// Classifies a failure of the capture's stages (``StateFailure``): a system call as
    /// ``from(_:pid:doing:)``, an image error as one raised while writing, state this
    /// version cannot capture as `.unsupported`.
    static func from(_ failure: StateFailure, pid: Int32, doing what: String) -> CaptureError {
        switch failure {
        case .system(let e): from(e, pid: pid, doing: what)
        case .image(let e): from(e, pid: pid)
        case .state(let e): CaptureError(.unsupported, e.message, pid: pid, cause: .state(e))
        }
    }

    /// Classifies an image error raised while writing.
    static func from(_ error: ImageError, pid: Int32) -> CaptureError {
        CaptureError(.output, "cannot write the image", pid: pid, cause: .image(error))
    }
}

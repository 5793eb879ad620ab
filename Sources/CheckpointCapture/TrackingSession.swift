import CheckpointImage
import LinuxKernel
import ProcessState

/// A series of tracked images of one process taken by one resident ccpm (issue #3,
/// `ccpm track`): a full image that starts kernel dirty-page tracking, then
/// increments, each on the image before — as DMTCP's checkpoint interval or CRIU's
/// iterative pre-dumps. The chain stays open between images, so an increment costs
/// only its own work: no process start-up, and no chain to find, open and verify
/// again (§8) — only the new image's index is read after it is written.
public final class TrackingSession {
    /// The process whose images these are.
    public let pid: Int32
    /// The directory the images go to, as ``path(ofImage:)`` names them.
    public let directory: String
    /// The images written so far, newest first; nil before the first.
    public private(set) var chain: ImageChain?
    /// How many images were written.
    public private(set) var imagesWritten = 0
    /// The increments' frame buffers and compression threads, kept from image to image.
    private let incrementFrames: FramePool = {
        var options = ImageWriterOptions()
        options.pagesPerFrame = ImageFormat.smallImagePagesPerFrame    // as Checkpointer.pagesPerFrame picks for increments
        return ImageWriter.framePool(for: options)
    }()

    /// A session writing into `directory`, which is created if missing and must hold
    /// no images of an earlier session: their names would be taken again.
    public init(pid: Int32, directory: String) throws(CaptureError) {
        self.pid = pid
        self.directory = directory
        do throws(SystemCallError) { try FileSystem.makeDirectory(directory, permissions: 0o755) } catch {
            throw CaptureError.from(error, pid: pid, doing: "create the image directory")
        }
        let names: [String]
        do throws(SystemCallError) { names = try FileSystem.contentsOfDirectory(directory) } catch {
            throw CaptureError.from(SystemCallError("opendir(\(directory))", errno: error.errno), pid: pid, doing: "open the image directory")
        }
        for name in names {
            if name.hasPrefix("image-") && name.hasSuffix(".ccimg") {
                throw CaptureError(.output, "\(directory) already holds images of a session (\(name)); give an empty directory",
                                   pid: pid)
            }
        }
    }

    /// Whether the process still exists (kill(pid, 0)).
    public var processIsAlive: Bool { ProcessHandle.probe(pid: pid) != .noSuchProcess }

    /// Where image `number` goes: `DIRECTORY/image-NNNN.ccimg`, 0 the full image.
    public func path(ofImage number: Int) -> String {
        "\(directory)/image-\(number.decimal(width: 4)).ccimg"
    }

    /// Takes the next image: the full one first, then an increment on the last image
    /// (and a full one again each time the chain reaches its deepest, §10).
    /// The process runs on afterwards, tracked. On failure it is left running as it
    /// was, and the session can go on from its last image.
    public func takeImage(progress: (@Sendable (UInt64, UInt64) -> Void)? = nil) throws(CaptureError) -> CheckpointSummary {
        var options = CheckpointOptions()
        options.track = true
        // A chain may be only so deep (§10): at the limit the session starts a new one with a
        // full image, and the tracking already in the process starts its count afresh.
        let continuing = chain.map { $0.images.count < ImageLimits.maxChainDepth } ?? false
        options.openParent = continuing ? chain : nil
        options.progress = progress
        options.writer.framePool = incrementFrames
        let path = path(ofImage: imagesWritten)
        let output: ImageOutput
        do { output = try ImageOutput(path: path) } catch {
            throw CaptureError(.output, "cannot create the image", pid: pid, cause: .image(error))
        }
        let summary = try Checkpointer.checkpoint(pid: pid, to: output, options: options)
        do {
            chain = try ImageChain(images: [try ImageReader(path: path)] + (continuing ? chain!.images : []))
        } catch {
            throw CaptureError.from(error, pid: pid)
        }
        imagesWritten += 1
        return summary
    }
}

/// When a ``TrackingSession`` takes its next image: every `every` seconds, and with
/// `onInput` each time a line arrives on standard input; SIGINT, SIGTERM and the end
/// of input end the session instead. The signals are blocked from creation on and
/// read from a signalfd(2) between captures, so none interrupts a capture halfway.
public struct SessionTriggers: ~Copyable {
    /// What ended a ``wait()``.
    public enum Event: Equatable, Sendable {
        /// Time for the next image.
        case due
        /// SIGINT or SIGTERM arrived.
        case stop
        /// Standard input ended (with `onInput`).
        case endOfInput
    }

    private let every: Double?
    private let onInput: Bool
    private let signals: SignalWatch

    /// Blocks SIGINT and SIGTERM in this thread (and so in threads it creates later):
    /// make it before anything starts threads.
    public init(every: Double?, onInput: Bool) throws(CaptureError) {
        precondition(every != nil || onInput, "a session needs an interval or input lines")
        do throws(SystemCallError) { signals = try SignalWatch() } catch {
            throw CaptureError.from(error, pid: 0, doing: "watch for SIGINT and SIGTERM")
        }
        self.every = every
        self.onInput = onInput
    }

    /// Waits for the next trigger (poll(2) on the signalfd and standard input). Lines
    /// that arrived while an image was being taken count as one trigger.
    public func wait() -> Event {
        let deadline = every.map { MonotonicClock.now() + UInt64($0 * 1e9) }
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let left = Int64(deadline) - Int64(MonotonicClock.now())
                if left <= 0 { return .due }
                timeout = Int32(clamping: (left + 999_999) / 1_000_000)
            }
            switch signals.wait(timeoutMilliseconds: timeout, input: onInput) {
            case .signal: return .stop
            case .timeout: continue
            case .input:
                switch SignalWatch.readInput() {
                case .end: return .endOfInput
                case .newline: return .due
                case .partial: continue
                }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
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
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw CaptureError.from(SystemCallError("mkdir(\(directory))", errno: errno), pid: pid, doing: "create the image directory")
        }
        guard let entries = opendir(directory) else {
            throw CaptureError.from(SystemCallError("opendir(\(directory))", errno: errno), pid: pid, doing: "open the image directory")
        }
        defer { closedir(entries) }
        while let entry = readdir(entries) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix("image-") && name.hasSuffix(".ccimg") {
                throw CaptureError(.output, "\(directory) already holds images of a session (\(name)); give an empty directory",
                                   pid: pid)
            }
        }
    }

    /// Whether the process still exists (kill(pid, 0)).
    public var processIsAlive: Bool { Glibc.kill(pid, 0) == 0 || errno != ESRCH }

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
    private let signals: Int32

    /// Blocks SIGINT and SIGTERM in this thread (and so in threads it creates later):
    /// make it before anything starts threads.
    public init(every: Double?, onInput: Bool) throws(CaptureError) {
        precondition(every != nil || onInput, "a session needs an interval or input lines")
        let fd = Int32(cc_signalfd_blocking(SIGINT, SIGTERM))
        guard fd >= 0 else {
            throw CaptureError.from(SystemCallError("signalfd", errno: -fd), pid: 0, doing: "watch for SIGINT and SIGTERM")
        }
        self.every = every
        self.onInput = onInput
        self.signals = fd
    }

    deinit { close(signals) }

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
            var fds = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0)]
            if onInput { fds.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
            if poll(&fds, nfds_t(fds.count), timeout) < 0 {
                if errno == EINTR { continue }
                return .stop
            }
            if fds[0].revents != 0 { return .stop }
            if onInput && fds[1].revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) { return .endOfInput }
                if n > 0 && buffer[..<n].contains(UInt8(ascii: "\n")) { return .due }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// Standard output or standard error, written with write(2): the command-line
/// tools print through this rather than Foundation's FileHandle.
package enum StandardStream {
    case output, error

    /// Whether the stream is a terminal, isatty(3) (progress bars are drawn only on one).
    package var isTerminal: Bool { isatty(self == .output ? STDOUT_FILENO : STDERR_FILENO) != 0 }

    /// Writes all of `text`; a closed stream (EPIPE) loses the rest silently, as `print` does.
    package func write(_ text: String) {
        let fd: Int32 = self == .output ? STDOUT_FILENO : STDERR_FILENO
        var text = text
        text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }
}

/// Early writeback of a file's dirty pages.
package enum FileWriteback {
    /// sync_file_range(SYNC_FILE_RANGE_WRITE): starts writing `length` bytes from `offset`
    /// of `fd` back to disk without waiting, so a later fsync has less left to wait for.
    /// Advice only: a failure changes nothing but the fsync's wait.
    package static func start(_ fd: Int32, offset: UInt64, length: UInt64) {
        _ = cc_start_writeback(fd, offset, length)
    }
}

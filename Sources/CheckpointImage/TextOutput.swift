#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Standard output or standard error, written with write(2): the command-line
/// tools print through this rather than Foundation's FileHandle.
package enum StandardStream {
    case output, error

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

extension BinaryInteger {
    /// Lower-case hexadecimal, zero-padded to `width` digits.
    package func hex(width: Int) -> String { zeroPadded(String(self, radix: 16), width) }

    /// Decimal, zero-padded to `width` digits (a non-negative value).
    package func decimal(width: Int) -> String { zeroPadded(String(self), width) }

    private func zeroPadded(_ digits: String, _ width: Int) -> String {
        digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

extension Double {
    /// Fixed-point text with `places` decimals ("12.35"), as printf's %.Nf.
    package func fixed(_ places: Int) -> String {
        guard isFinite else { return description }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = (abs(self) * scale).rounded()
        guard scaled < 9.0e18 else { return description }
        let units = UInt64(scaled)
        let whole = String(units / UInt64(scale))
        let sign = self < 0 && units != 0 ? "-" : ""
        guard places > 0 else { return sign + whole }
        return sign + whole + "." + (units % UInt64(scale)).decimal(width: places)
    }
}

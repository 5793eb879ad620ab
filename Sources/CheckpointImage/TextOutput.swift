/// Number formatting for the tools' text output.

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

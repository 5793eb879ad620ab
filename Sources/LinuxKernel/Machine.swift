#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel

/// This machine, as a capture records it and a restore checks it (§3.2 MachineFacts).
package enum Machine {
    /// uname(2): the architecture (`machine`), the kernel release and the host name.
    package static func names() -> (machine: String, release: String, nodename: String) {
        var u = utsname()
        uname(&u)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return (text(u.machine), text(u.release), text(u.nodename))
    }

    /// XCR0 (xgetbv(0)): the XSAVE features the kernel enabled on this CPU.
    package static var xsaveFeatures: UInt64 { cc_xgetbv0() }

    /// Bytes of the XSAVE area for the features enabled (CPUID leaf 0xD, EBX).
    package static var xsaveSize: Int { Int(cc_xsave_size()) }
}

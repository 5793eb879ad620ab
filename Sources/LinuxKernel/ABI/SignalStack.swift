/// `stack_t` of x86-64 (uapi asm-generic/signal.h): ss_sp, ss_flags (an int, then
/// 4 bytes of padding), ss_size. Read by the capture (sigaltstack(NULL, &old)) and
/// written by the restore (sigaltstack(&ss, NULL)); one parse, one encode.
package struct SignalStack: Equatable, Sendable {
    /// Bytes of the struct.
    package static let size = 24
    /// `SS_ONSTACK` (uapi signal.h): the thread runs on its alternate stack now.
    package static let onStack: Int32 = 1
    /// `SS_DISABLE` (uapi signal.h): no alternate stack.
    package static let disable: Int32 = 2
    /// `ss_sp`: the stack's lowest address.
    package var sp: UInt64
    /// `ss_flags` (``onStack``, ``disable``).
    package var flags: Int32
    /// `ss_size`: its size in bytes.
    package var size: UInt64

    /// A stack from its fields.
    package init(sp: UInt64, flags: Int32, size: UInt64) {
        self.sp = sp
        self.flags = flags
        self.size = size
    }

    /// Parses the struct from the first ``size`` bytes of `bytes`.
    package init(parsing bytes: [UInt8]) {
        self.init(sp: bytes.loadLE(UInt64.self, at: 0), flags: Int32(truncatingIfNeeded: bytes.loadLE(UInt64.self, at: 8)),
                  size: bytes.loadLE(UInt64.self, at: 16))
    }

    /// The struct's bytes, as sigaltstack reads them.
    package var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        bytes.appendLE(sp); bytes.appendLE(flags); bytes.appendLE(UInt32(0)); bytes.appendLE(size)
        return bytes
    }
}

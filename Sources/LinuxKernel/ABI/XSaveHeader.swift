/// The XSAVE area's header and software-reserved bytes (Intel SDM vol. 1 §13.4; the
/// kernel's uapi asm/sigcontext.h `struct _fpx_sw_bytes`), as PTRACE_GETREGSET
/// NT_X86_XSTATE returns the area and as a signal frame holds it.
package struct XSaveHeader: Equatable, Sendable {
    /// Bytes of the legacy FXSAVE region, before the header.
    package static let legacySize = 512
    /// Offset of the software-reserved bytes in the legacy region.
    package static let softwareReservedOffset = 464
    /// Offset of XSTATE_BV (the header's first word).
    package static let xstateBVOffset = 512
    /// `FP_XSTATE_MAGIC1`, at the start of the software-reserved bytes.
    package static let magic1: UInt32 = 0x4650_5853
    /// `FP_XSTATE_MAGIC2`, the 4 bytes right after the XSAVE area in a signal frame.
    package static let magic2: UInt32 = 0x4650_5845

    /// XSTATE_BV: which state components the area holds.
    package var xstateBV: UInt64

    /// The header of `area`; nil when it is too short to have one (520 bytes).
    package init?(area: [UInt8]) {
        guard area.count >= Self.xstateBVOffset + 8 else { return nil }
        xstateBV = area.loadLE(UInt64.self, at: Self.xstateBVOffset)
    }

    /// `struct _fpx_sw_bytes` at byte 464: magic1, extended_size, xfeatures, xstate_size.
    package struct SoftwareBytes: Equatable, Sendable {
        package var magic1: UInt32
        /// Bytes of the whole area plus FP_XSTATE_MAGIC2.
        package var extendedSize: UInt32
        package var features: UInt64
        /// Bytes of the XSAVE area itself.
        package var xstateSize: UInt32

        /// The software-reserved bytes of `area` (at least 512 bytes).
        package init(area: [UInt8]) {
            let at = XSaveHeader.softwareReservedOffset
            magic1 = area.loadLE(UInt32.self, at: at)
            extendedSize = area.loadLE(UInt32.self, at: at + 4)
            features = area.loadLE(UInt64.self, at: at + 8)
            xstateSize = area.loadLE(UInt32.self, at: at + 16)
        }

        /// Whether they describe a whole XSAVE area of at most `available` bytes in the
        /// kernel's signal-frame format (magic1, and extended size = XSAVE size + 4).
        package func describesWholeArea(available: Int) -> Bool {
            magic1 == XSaveHeader.magic1 && xstateSize >= 576 && Int(xstateSize) <= available && extendedSize == xstateSize + 4
        }
    }
}

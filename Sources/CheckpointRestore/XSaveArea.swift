import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A thread's XSAVE area from an image (§5.3 ThreadState.xsave, the NT_X86_XSTATE
/// regset in the standard format), fitted to this CPU. PTRACE_SETREGSET takes an area
/// of exactly this CPU's size whose XSTATE_BV names no feature XCR0 leaves off here.
///
/// An area goes in unchanged when it has this CPU's size and uses only features enabled
/// here, as between machines of one kind. Otherwise it is rebuilt, where that is safe:
/// - **x87, SSE and AVX state** (components 0-2) sit at the same offsets on every x86-64
///   CPU; a thread that used nothing else gets an area of this CPU's size with just
///   those, the other components in their initial state.
/// - **PKRU**, the protection-key rights register (component 9), may be missing here:
///   hypervisors enable protection keys or not. A thread whose PKRU holds the value
///   Linux starts every process with (0x55555554: key 0 open, keys 1-15 closed) never
///   opened a key, and without protection keys all its memory is key 0's; its PKRU is
///   left out. With other state besides (AVX-512), the two layouts must be one and the
///   same but for PKRU: XCR0 differing in PKRU alone, the sizes by its 8 bytes.
/// Anything else is refused before the process is made: the thread would use a feature
/// this CPU lacks, or its registers would land at the wrong offsets.
enum XSaveArea {
    /// XSTATE_BV (the features in a non-initial state): the first word of the XSAVE
    /// header, after the 512-byte legacy area.
    static let stateBitmapOffset = 512
    /// x87, SSE and AVX (components 0-2): the legacy area, the header and the AVX upper
    /// halves, in the first 832 bytes of every standard-format area.
    static let portableFeatures: UInt64 = 0x7
    static let portableBytes = 832
    /// PKRU: XSAVE state component 9; the register and 4 bytes of padding.
    static let pkruFeature: UInt64 = 1 << 9
    static let pkruBytes = 8
    /// The PKRU value Linux gives every process (init_pkru_value in arch/x86/mm/pkeys.c).
    static let defaultPKRU: UInt32 = 0x5555_5554

    /// This CPU: its XCR0 (xgetbv) and the size of its XSAVE area (cpuid 0xd).
    struct CPU {
        var features: UInt64
        var size: Int
        static var here: CPU { CPU(features: Machine.xsaveFeatures, size: Machine.xsaveSize) }
    }

    /// The area `saved` of thread `tid`, whose XSTATE_BV is `threadFeatures`, captured on a
    /// CPU with XCR0 `savedXCR0`, as `cpu` takes it; `dropped` says whether a default PKRU
    /// was left out. Throws `.incompatible`, saying what differs, when it cannot be fitted.
    static func fitted(_ saved: Data, tid: Int32, threadFeatures: UInt64, savedXCR0: UInt64,
                       for cpu: CPU) throws(RestoreError) -> (area: Data, dropped: Bool) {
        let xcr0 = "XCR0 0x\(String(cpu.features, radix: 16))"
        let missing = threadFeatures & ~cpu.features
        if missing & ~pkruFeature != 0 {
            throw RestoreError(.incompatible, "thread \(tid) uses XSAVE features 0x\(String(missing, radix: 16)) this CPU does not enable (\(xcr0))")
        }
        if saved.isEmpty || (missing == 0 && saved.count == cpu.size) { return (saved, false) }
        let dropping = missing == pkruFeature
        if dropping {
            // PKRU is the area's last component when it is the highest feature of the capturing CPU.
            guard savedXCR0 >> 10 == 0, saved.count >= portableBytes + pkruBytes else {
                throw RestoreError(.incompatible, "thread \(tid) uses protection keys (PKRU), which this CPU does not enable (\(xcr0))")
            }
            let raw = saved.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: saved.count - pkruBytes, as: UInt32.self) }
            let pkru = UInt32(littleEndian: raw)
            guard pkru == defaultPKRU else {
                throw RestoreError(.incompatible, "thread \(tid) changed its protection-key rights (PKRU 0x\(String(pkru, radix: 16))), and this CPU has no protection keys (\(xcr0))")
            }
        }
        let kept = threadFeatures & ~pkruFeature
        if kept & ~portableFeatures == 0 && saved.count >= min(portableBytes, cpu.size) {
            var area = Data(count: cpu.size)
            let common = min(portableBytes, cpu.size)
            area.replaceSubrange(0..<common, with: saved.prefix(common))
            setStateBitmap(&area, kept)
            return (area, dropping)
        }
        if dropping && savedXCR0 ^ cpu.features == pkruFeature && saved.count == cpu.size + pkruBytes {
            var area = Data(saved.prefix(cpu.size))
            setStateBitmap(&area, kept)
            return (area, true)
        }
        throw RestoreError(.incompatible, "thread \(tid)'s XSAVE area is \(saved.count) bytes for XCR0 0x\(String(savedXCR0, radix: 16)); this CPU's is \(cpu.size) bytes for \(xcr0), and the thread's state (XSTATE_BV 0x\(String(threadFeatures, radix: 16))) goes beyond what sits at the same offsets on both")
    }

    private static func setStateBitmap(_ area: inout Data, _ features: UInt64) {
        withUnsafeBytes(of: features.littleEndian) { area.replaceSubrange(stateBitmapOffset..<stateBitmapOffset + 8, with: $0) }
    }
}

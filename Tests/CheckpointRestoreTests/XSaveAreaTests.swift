@testable import CheckpointRestore
import Foundation
import Testing

/// Fitting a thread's XSAVE area to the CPU it is restored on (``XSaveArea``), on areas
/// laid out as the standard format puts them: the AMD EPYC layouts below are this VM's
/// with and without protection keys (2440 and 2432 bytes), an Intel one for contrast.
@Suite struct XSaveAreaTests {
    static let amdWithPKU = XSaveArea.CPU(features: 0x2e7, size: 2440)
    static let amdWithoutPKU = XSaveArea.CPU(features: 0xe7, size: 2432)

    /// A standard-format area of `size` bytes: recognizable bytes everywhere, XSTATE_BV
    /// `features`, XCOMP_BV 0, and PKRU (when `pkru` is given) in the last 8 bytes.
    static func area(size: Int, features: UInt64, pkru: UInt32? = nil) -> Data {
        var bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        withUnsafeBytes(of: features.littleEndian) { bytes.replaceSubrange(512..<520, with: $0) }
        bytes.replaceSubrange(520..<576, with: [UInt8](repeating: 0, count: 56))
        if let pkru { withUnsafeBytes(of: UInt64(pkru).littleEndian) { bytes.replaceSubrange(size - 8..<size, with: $0) } }
        return Data(bytes)
    }
    static func stateBitmap(_ area: Data) -> UInt64 {
        area.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 512, as: UInt64.self)) }
    }
    static func fit(_ saved: Data, _ features: UInt64, from xcr0: UInt64, to cpu: XSaveArea.CPU) throws -> (area: Data, dropped: Bool) {
        try XSaveArea.fitted(saved, tid: 7, threadFeatures: features, savedXCR0: xcr0, for: cpu)
    }

    @Test("an area of this CPU's size using features enabled here goes in unchanged")
    func sameMachine() throws {
        let saved = Self.area(size: 2440, features: 0x2e7, pkru: XSaveArea.defaultPKRU)
        let fitted = try Self.fit(saved, 0x2e7, from: 0x2e7, to: Self.amdWithPKU)
        #expect(fitted.area == saved && !fitted.dropped)
    }

    @Test("a default PKRU is left out where protection keys are off; x87, SSE and AVX state is kept")
    func defaultPKRUDropped() throws {
        // As the archived fixture: captured with XCR0 0x207, SSE and PKRU in use.
        for features: UInt64 in [0x202, 0x206, 0x207] {
            let saved = Self.area(size: 2440, features: features, pkru: XSaveArea.defaultPKRU)
            let fitted = try Self.fit(saved, features, from: 0x207, to: Self.amdWithoutPKU)
            #expect(fitted.dropped)
            #expect(fitted.area.count == 2432)
            #expect(Self.stateBitmap(fitted.area) == features & ~XSaveArea.pkruFeature)
            #expect(fitted.area.prefix(512) == saved.prefix(512))
            #expect(fitted.area[576..<832] == saved[576..<832])
            #expect(fitted.area[832...].allSatisfy { $0 == 0 })
        }
    }

    @Test("a PKRU the process changed is refused where protection keys are off")
    func changedPKRURefused() {
        let saved = Self.area(size: 2440, features: 0x202, pkru: 0x5555_5550)
        #expect(throws: RestoreError.self) { try Self.fit(saved, 0x202, from: 0x207, to: Self.amdWithoutPKU) }
    }

    @Test("AVX-512 state moves only between layouts that differ in PKRU alone")
    func avx512NeedsTheSameLayout() throws {
        let saved = Self.area(size: 2440, features: 0x2e7, pkru: XSaveArea.defaultPKRU)
        let fitted = try Self.fit(saved, 0x2e7, from: 0x2e7, to: Self.amdWithoutPKU)
        #expect(fitted.dropped && fitted.area.count == 2432 && Self.stateBitmap(fitted.area) == 0xe7)
        #expect(fitted.area.prefix(512) == saved.prefix(512) && fitted.area[520..<2432] == saved[520..<2432])
        // The same state from an Intel CPU (opmask at 1088, not 832): refused, not scrambled.
        let intel = Self.area(size: 2696, features: 0x2e7, pkru: XSaveArea.defaultPKRU)
        #expect(throws: RestoreError.self) { try Self.fit(intel, 0x2e7, from: 0x2e7, to: Self.amdWithoutPKU) }
    }

    @Test("a feature this CPU does not enable is refused")
    func missingFeatureRefused() {
        let saved = Self.area(size: 2432, features: 0xe7)
        #expect(throws: RestoreError.self) { try Self.fit(saved, 0xe7, from: 0xe7, to: XSaveArea.CPU(features: 0x7, size: 832)) }
    }

    @Test("an area from a CPU without protection keys grows to this CPU's size, PKRU in its initial state")
    func grownWherePKRUIsOn() throws {
        let saved = Self.area(size: 2432, features: 0x7)
        let fitted = try Self.fit(saved, 0x7, from: 0xe7, to: Self.amdWithPKU)
        #expect(fitted.area.count == 2440 && !fitted.dropped)
        #expect(fitted.area.prefix(832) == saved.prefix(832) && Self.stateBitmap(fitted.area) == 0x7)
    }
}

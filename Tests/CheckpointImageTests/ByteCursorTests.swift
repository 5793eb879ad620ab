import LinuxKernel
import Foundation
import Testing
@testable import CheckpointImage

/// §1 The reader of untrusted bytes: bounds, little-endian integers, varints.
@Suite struct ByteCursorTests {
    func code(_ body: () throws -> Void) -> ImageError? {
        thrown(body) as? ImageError
    }

    @Test func readsLittleEndianIntegers() throws {
        var c = ByteCursor([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F], what: "t")
        #expect(try c.readLE(UInt16.self) == 0x0201)
        #expect(try c.readLE(UInt32.self) == 0x0605_0403)
        #expect(try c.readLE(UInt64.self) == 0x0E0D_0C0B_0A09_0807)
        #expect(c.remaining == 1)
        #expect(!c.isAtEnd)
        #expect(Array(try c.readBytes(1)) == [0x0F])
        #expect(c.isAtEnd)
        #expect(Array(try c.readBytes(0)) == [])
    }

    @Test func truncatedReadsThrowTruncatedAtTheirOffset() {
        var c = ByteCursor([1, 2, 3], what: "thing", base: 100)
        _ = try? c.readBytes(2)
        let e = code { _ = try c.readLE(UInt32.self) }
        #expect(e?.code == .truncated)
        #expect(e?.location == "thing")
        #expect(e?.offset == 102)
        #expect(c.position == 2, "a failed read consumes nothing")
        #expect(code { _ = try c.readBytes(2) }?.code == .truncated)
        #expect(code { _ = try c.readBytes(-1) }?.code == .truncated)
        #expect(code { _ = try c.readBytes(Int.max) }?.code == .truncated)
        #expect(code { _ = try c.readLE(UInt16.self) }?.code == .truncated)
        #expect(Array((try? c.readBytes(1)) ?? []) == [3])
        var empty = ByteCursor([], what: "empty")
        #expect(code { _ = try empty.readLE(UInt8.self) }?.code == .truncated)
        #expect(code { _ = try empty.readVarint() }?.code == .truncated)
    }

    @Test func truncatedVarintsThrowTruncated() {
        for bytes: [UInt8] in [[0x80], [0xFF, 0xFF], [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]] {
            var c = ByteCursor(bytes, what: "v")
            #expect(code { _ = try c.readVarint() }?.code == .truncated, "\(bytes)")
        }
    }

    static let boundaries: [UInt64] = [0, 1, 127, 128, 255, 16383, 16384, 1 << 21 - 1, 1 << 21, UInt64(UInt32.max),
                                       1 << 56 - 1, 1 << 56, 1 << 63 - 1, 1 << 63, UInt64.max - 1, UInt64.max]

    @Test(arguments: boundaries)
    func varintRoundTrips(value: UInt64) throws {
        var bytes: [UInt8] = []
        bytes.appendVarint(value)
        // §1: 7 bits a byte, the shortest encoding, at most 10 bytes.
        let expectedLength = value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
        #expect(bytes.count == expectedLength)
        #expect(bytes.dropLast().allSatisfy { $0 & 0x80 != 0 })
        #expect(bytes.last! & 0x80 == 0)
        var c = ByteCursor(bytes + [0xAA], what: "v")
        #expect(try c.readVarint() == value)
        #expect(c.position == bytes.count)
    }

    @Test func varintEncodingsAtBoundaries() {
        func enc(_ v: UInt64) -> [UInt8] { var b: [UInt8] = []; b.appendVarint(v); return b }
        #expect(enc(0) == [0x00])
        #expect(enc(127) == [0x7F])
        #expect(enc(128) == [0x80, 0x01])
        #expect(enc(300) == [0xAC, 0x02])
        #expect(enc(1 << 63) == [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
        #expect(enc(UInt64.max) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    }

    @Test func overlongOrOverflowingVarintsAreStructural() {
        let cases: [[UInt8]] = [
            // A 10th byte above 01: the value does not fit in 64 bits.
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7F],
            // More than 10 bytes.
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x81, 0x00],
            [UInt8](repeating: 0xFF, count: 20) + [0x00],
        ]
        for bytes in cases {
            var c = ByteCursor(bytes, what: "v")
            let e = code { _ = try c.readVarint() }
            #expect(e?.code == .structural, "\(bytes): \(String(describing: e))")
        }
    }

    @Test func sequentialVarints() throws {
        var bytes: [UInt8] = []
        let values: [UInt64] = [5, 0, 1 << 40, 127, UInt64.max, 128]
        for v in values { bytes.appendVarint(v) }
        var c = ByteCursor(bytes, what: "v")
        for v in values { #expect(try c.readVarint() == v) }
        #expect(c.isAtEnd)
    }

    @Test func checkedArithmeticReportsOverflowAsStructural() throws {
        #expect(try checkedAdd(1, 2, "x") == 3)
        #expect(try checkedMultiply(1 << 32, 1 << 31, "x") == 1 << 63)
        #expect(code { _ = try checkedAdd(UInt64.max, 1, "x") }?.code == .structural)
        #expect(code { _ = try checkedMultiply(1 << 32, 1 << 32, "x") }?.code == .structural)
    }

    @Test func littleEndianWriterMatchesReader() throws {
        var bytes: [UInt8] = []
        bytes.appendLE(UInt16(0xBEEF))
        bytes.appendLE(UInt32(0xDEAD_BEEF))
        bytes.appendLE(UInt64(0x0123_4567_89AB_CDEF))
        #expect(bytes == [0xEF, 0xBE, 0xEF, 0xBE, 0xAD, 0xDE, 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01])
        var c = ByteCursor(bytes, what: "le")
        #expect(try c.readLE(UInt16.self) == 0xBEEF)
        #expect(try c.readLE(UInt32.self) == 0xDEAD_BEEF)
        #expect(try c.readLE(UInt64.self) == 0x0123_4567_89AB_CDEF)
    }
}

/// §6.2 The page-map run encoding, against the spec's examples and rules.
@Suite struct PageRunEncodingTests {
    func decode(_ bytes: [UInt8], pages: UInt64, next: UInt64 = 0, inherited: Bool = false) -> Result<(VmaPageTable, UInt64), ImageError> {
        var ordinal = next
        do throws(ImageError) {
            let table = try VmaPageTable.decode(bytes, pageCount: pages, nextOrdinal: &ordinal, allowInherited: inherited, vmaNumber: 0)
            return .success((table, ordinal))
        } catch {
            return .failure(error)
        }
    }

    func errorCode(_ r: Result<(VmaPageTable, UInt64), ImageError>) -> ImageError.Code? {
        if case .failure(let e) = r { return e.code }
        return nil
    }

    @Test func specExampleSixteenPages() throws {
        // 4 not populated, 3 stored (ordinals 0–2), 1 zero, 2 repeating ordinal 1, 6 not populated.
        let runs = [PageRun(state: .notPopulated, count: 4), PageRun(state: .stored, count: 3, firstOrdinal: 0),
                    PageRun(state: .zero, count: 1), PageRun(state: .dedup, count: 2, dedupTargets: [1, 1]),
                    PageRun(state: .notPopulated, count: 6)]
        #expect(VmaPageTable.encode(runs) == [0x20, 0x1A, 0x09, 0x14, 0x01, 0x01, 0x30])
        let (table, next) = try decode([0x20, 0x1A, 0x09, 0x14, 0x01, 0x01, 0x30], pages: 16).get()
        #expect(next == 3)
        #expect(table.runs == runs)
        #expect(table.pageCount == 16)
        let entries = (0..<16).map { table.entry(at: UInt64($0)) }
        #expect(entries == [.notPopulated, .notPopulated, .notPopulated, .notPopulated,
                            .stored(ordinal: 0), .stored(ordinal: 1), .stored(ordinal: 2), .zero,
                            .stored(ordinal: 1), .stored(ordinal: 1)] + Array(repeating: .notPopulated, count: 6))
        #expect(table.counts() == [.notPopulated: 10, .stored: 3, .zero: 1, .dedup: 2])
    }

    @Test func specExampleThousandStoredPages() throws {
        #expect(VmaPageTable.encode([PageRun(state: .stored, count: 1000)]) == [0xC2, 0x3E])
        let (table, next) = try decode([0xC2, 0x3E], pages: 1000, next: 7).get()
        #expect(next == 1007)
        #expect(table.entry(at: 999) == .stored(ordinal: 1006))
    }

    @Test func builderMergesAdjacentRuns() {
        var b = PageRunBuilder()
        b.append(.zero); b.append(.zero)
        b.append(.stored, ordinal: 0); b.append(.stored, ordinal: 1)
        b.append(.dedup, dedupTarget: 0); b.append(.dedup, dedupTarget: 1)
        b.append(.notPopulated, count: 5)
        #expect(b.runs == [PageRun(state: .zero, count: 2), PageRun(state: .stored, count: 2, firstOrdinal: 0),
                           PageRun(state: .dedup, count: 2, dedupTargets: [0, 1]), PageRun(state: .notPopulated, count: 5)])
    }

    @Test func ruleViolations() {
        // Undefined states 5–7.
        for state: UInt8 in 5...7 { #expect(errorCode(decode([1 << 3 | state], pages: 1)) == .structural) }
        // count ≥ 1.
        #expect(errorCode(decode([0x01, 0x09], pages: 1)) == .structural)
        // Runs sum exactly to the page count: too few, too many.
        #expect(errorCode(decode([0x11], pages: 3)) == .structural)
        #expect(errorCode(decode([0x21], pages: 3)) == .structural)
        #expect(errorCode(decode([], pages: 1)) == .structural)
        // A dedup target must be below the next ordinal.
        #expect(errorCode(decode([0x0C, 0x00], pages: 1)) == .structural)
        #expect(errorCode(decode([0x0A, 0x0C, 0x01], pages: 2)) == .structural)
        #expect(errorCode(decode([0x0A, 0x0C, 0x00], pages: 2)) == nil)
        // A dedup run whose targets cannot fit in the bytes left.
        #expect(errorCode(decode([0x0A, 0x1C, 0x00], pages: 4)) == .truncated)
        // Inherited only with a parent.
        #expect(errorCode(decode([0x0B], pages: 1)) == .structural)
        #expect(errorCode(decode([0x0B], pages: 1, inherited: true)) == nil)
        // A truncated varint.
        #expect(errorCode(decode([0x80], pages: 1)) == .truncated)
        // Non-canonical but valid: two zero runs of one page.
        #expect(errorCode(decode([0x09, 0x09], pages: 2)) == nil)
    }

    @Test func hugeCountsDoNotOverflowOrAllocate() {
        // A run claiming 2^60 pages in a VMA of 2^45 pages.
        var bytes: [UInt8] = []
        bytes.appendVarint(UInt64(1) << 63 | 4)  // count 2^60, dedup
        #expect(errorCode(decode(bytes, pages: 1 << 45)) == .structural)
        // A dedup run of 2^40 pages with two bytes of targets.
        var dedup: [UInt8] = []
        dedup.appendVarint(UInt64(1) << 43 | 4)  // count 2^40, dedup
        #expect(errorCode(decode([0x0A] + dedup + [0, 0], pages: 1 + (1 << 40))) == .truncated)
        // A stored run of 2^45 pages: fine (no allocation), and ordinals add up.
        var stored: [UInt8] = []
        stored.appendVarint(UInt64(1) << 48 | 2)  // count 2^45, stored
        #expect(errorCode(decode(stored, pages: 1 << 45)) == nil)
    }
}

/// §6.3 Page hashes in canonical form.
@Suite struct PageHashTests {
    @Test func canonicalFormIsBigEndianHighThenLow() {
        let h = PageHash(high: 0x0102_0304_0506_0708, low: 0x090A_0B0C_0D0E_0F10)
        #expect(h.canonical == Array(1...16))
        #expect(h.description == "0102030405060708090a0b0c0d0e0f10")
        #expect(PageHash(canonical: ArraySlice(h.canonical)) == h)
    }

    @Test func zeroPageHashIsTheHashOfZeros() {
        for size in [4096, 8192, 65536] {
            #expect(PageHash.zeroPage(pageSize: size) == PageHash(of: [UInt8](repeating: 0, count: size)))
        }
        #expect(PageHash.zeroPage(pageSize: 4096) != PageHash.zeroPage(pageSize: 8192))
    }

    @Test func knownXXH3Values() {
        // XXH3-128 and XXH3-64 of the empty input (xxHash reference values).
        let empty = PageHash(of: [UInt8]())
        #expect(empty.description == "99aa06d3014798d86001c324468d497f")
        #expect(xxh3Checksum([UInt8]()) == 0x2D06_8005_38D3_94C2)
    }
}

@testable import LinuxKernel
import Foundation
import Testing

/// The memory's kernel calls (Pagemap.swift, ProcessMemoryReader.swift) on this process itself.
@Suite struct ProcessMemoryReaderTests {
    @Test func pagemapShowsATouchedPagePresent() throws {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        page.storeBytes(of: UInt64(0x1234), as: UInt64.self)
        let pid = ProcessHandle.ownPID
        let pagemap = try PagemapFile(pid: pid)
        var entries = [UInt64](repeating: 0, count: 1)
        try pagemap.entries(&entries, count: 1, at: UInt64(UInt(bitPattern: page.baseAddress)), pageSize: 4096)
        #expect(entries[0] & (PagemapFile.present | PagemapFile.swapped) != 0)
    }

    @Test func scatteredPiecesLandAtTheirOffsets() throws {
        let source: [UInt8] = (0..<64).map { UInt8($0) }
        let reader = try ProcessMemoryReader(pid: ProcessHandle.ownPID)
        var destination = [UInt8](repeating: 0, count: 12)
        try source.withUnsafeBytes { src in
            let base = UInt64(UInt(bitPattern: src.baseAddress))
            try destination.withUnsafeMutableBytes { dest in
                try reader.read([ProcessMemoryReader.Piece(offset: 0, address: base + 10, count: 4),
                                 ProcessMemoryReader.Piece(offset: 4, address: base + 40, count: 8)], into: dest)
            }
        }
        #expect(destination == [10, 11, 12, 13, 40, 41, 42, 43, 44, 45, 46, 47])
    }

    @Test func anUnmappedAddressIsAnErrorNamingMem() throws {
        var byte = [UInt8](repeating: 0, count: 1)
        #expect(throws: SystemCallError.self) {
            let reader = try ProcessMemoryReader(pid: ProcessHandle.ownPID)
            try byte.withUnsafeMutableBytes { try reader.read(into: $0, at: 0x10) }
        }
    }
}

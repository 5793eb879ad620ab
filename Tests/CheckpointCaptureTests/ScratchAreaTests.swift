@testable import LinuxKernel
import Testing

/// The one scratch allocator of remote calls (``ScratchArea``, decision 0020): what the
/// capture's parked data area and the restore's scratch mapping hand out.
@Suite struct ScratchAreaTests {
    @Test func allocationsAreAlignedAndDoNotOverlap() throws {
        var area = ScratchArea(address: 0x7000_0000_1000, size: 512)
        let a = try area.reserve(3)
        let b = try area.reserve(16)
        let c = try area.reserve(0)
        let d = try area.reserve(1)
        #expect(a == 0x7000_0000_1000)
        #expect(b == a + 16)
        #expect(c == b + 16)
        #expect(d == c + 16)
        for address in [a, b, c, d] { #expect(address % ScratchArea.alignment == 0) }
    }

    @Test func aFullAreaIsENOMEM() throws {
        var area = ScratchArea(address: 0x1000, size: 64)
        #expect(try area.reserve(64) == 0x1000)
        #expect(throws: SystemCallError.self) { try area.reserve(1) }
        var other = ScratchArea(address: 0x1000, size: 64)
        _ = try other.reserve(40)
        // 40 rounds up to 48: 16 more fit, 17 do not.
        #expect(throws: SystemCallError.self) { try other.reserve(17) }
        #expect(try other.reserve(16) == 0x1000 + 48)
        do throws(SystemCallError) {
            var big = ScratchArea(address: 0x1000, size: 64)
            _ = try big.reserve(65)
            Issue.record("65 bytes fit in 64")
        } catch {
            #expect(error.errno.rawValue == 12)    // ENOMEM
        }
    }

    @Test func releaseToAMarkGivesBack() throws {
        var area = ScratchArea(address: 0x2000, size: 128)
        _ = try area.reserve(8)
        let mark = area.mark
        let first = try area.reserve(100)
        #expect(throws: SystemCallError.self) { try area.reserve(32) }
        area.release(to: mark)
        #expect(area.mark == mark)
        #expect(try area.reserve(100) == first)
        area.release(to: 0)
        #expect(try area.reserve(128) == 0x2000)
    }

    @Test func remoteCallsWithoutAreaHaveNoCapacity() {
        var remote = RemoteCalls(pid: 1, syscallAddress: 0)
        #expect(remote.scratchCapacity == 0)
        #expect(remote.scratchMark == 0)
        remote.release(to: 0)
        #expect(remote.scratch == nil)
    }

    @Test func parkedRemoteCallsAllocateInTheDataArea() throws {
        let injector = SyscallInjector(pid: 10, tid: 11, syscallAddress: 0x5000)
        var remote = RemoteCalls(parked: injector, data: ScratchArea(address: 0x9000, size: 512))
        #expect(remote.defaultThread == 11)
        #expect(remote.scratchCapacity == 512)
        let mark = remote.scratchMark
        let at = try remote.withScratch { remote throws(SystemCallError) in try remote.reserve(24) }
        #expect(at == 0x9000)
        #expect(remote.scratchMark == mark)
        // The parked area is the parking's, not this value's: unmapScratch leaves it.
        try remote.unmapScratch()
        #expect(remote.scratch?.address == 0x9000)
    }
}

@testable import LinuxKernel
import Testing

/// The kernel ABI structs (Sources/LinuxKernel/ABI): each one's encoding has the
/// kernel's layout, and parsing its bytes gives the same value back.
@Suite struct KernelABITests {
    @Test func kernelSigactionHasTheKernelLayoutAndRoundTrips() {
        let action = KernelSigaction(handler: 0x1122_3344_5566_7788, flags: 0x0400_0004, restorer: 0x7f00_0000_1000, mask: 1 << 9)
        let bytes = action.encoded
        #expect(bytes.count == KernelSigaction.size)
        #expect(bytes.loadLE(UInt64.self, at: 0) == 0x1122_3344_5566_7788)   // sa_handler
        #expect(bytes.loadLE(UInt64.self, at: 8) == 0x0400_0004)             // sa_flags
        #expect(bytes.loadLE(UInt64.self, at: 16) == 0x7f00_0000_1000)       // sa_restorer
        #expect(bytes.loadLE(UInt64.self, at: 24) == 1 << 9)                 // sa_mask
        #expect(KernelSigaction(parsing: bytes) == action)
    }

    @Test func signalStackHasTheKernelLayoutAndRoundTrips() {
        let stack = SignalStack(sp: 0x7ffd_0000_0000, flags: SignalStack.onStack, size: 65536)
        let bytes = stack.encoded
        #expect(bytes.count == SignalStack.size)
        #expect(bytes.loadLE(UInt64.self, at: 0) == 0x7ffd_0000_0000)        // ss_sp
        #expect(bytes.loadLE(Int32.self, at: 8) == 1)                        // ss_flags
        #expect(bytes.loadLE(UInt32.self, at: 12) == 0)                      // padding
        #expect(bytes.loadLE(UInt64.self, at: 16) == 65536)                  // ss_size
        #expect(SignalStack(parsing: bytes) == stack)
    }

    @Test func intervalTimerValueIsTwoTimevals() {
        let value = IntervalTimerValue(intervalMicroseconds: 2_500_000, valueMicroseconds: 1_000_001)
        let bytes = value.encoded
        #expect(bytes.count == IntervalTimerValue.size)
        #expect([0, 8, 16, 24].map { bytes.loadLE(Int64.self, at: $0) } == [2, 500_000, 1, 1])
        #expect(IntervalTimerValue(parsing: bytes) == value)
    }

    @Test func timerSpecIsTwoTimespecs() {
        let spec = TimerSpec(intervalNanoseconds: 1_000_000_007, valueNanoseconds: 3_000_000_000)
        let bytes = spec.encoded
        #expect(bytes.count == TimerSpec.size)
        #expect([0, 8, 16, 24].map { bytes.loadLE(Int64.self, at: $0) } == [1, 7, 3, 0])
        #expect(TimerSpec(parsing: bytes) == spec)
    }

    @Test func signalEventIsSixtyFourBytesWithTheThreadID() {
        let event = SignalEvent(value: 0xdead_beef, signo: 34, notify: SignalEvent.threadID, tid: 4242)
        let bytes = event.encoded
        #expect(bytes.count == 64)
        #expect(bytes.loadLE(UInt64.self, at: 0) == 0xdead_beef)             // sigev_value
        #expect(bytes.loadLE(Int32.self, at: 8) == 34)                       // sigev_signo
        #expect(bytes.loadLE(Int32.self, at: 12) == 4)                       // sigev_notify
        #expect(bytes.loadLE(Int32.self, at: 16) == 4242)                    // _tid
        #expect(bytes[20...].allSatisfy { $0 == 0 })
        #expect(SignalEvent(parsing: bytes) == event)
    }

    @Test func cloneArgsPutSetTIDAtItsOffset() {
        let args = CloneArgs(flags: Linux.CLONE_VM | Linux.CLONE_THREAD, setTID: 0x5000, setTIDSize: 1)
        let bytes = args.encoded
        #expect(bytes.count == 88)                                           // CLONE_ARGS_SIZE_VER2
        #expect(bytes.loadLE(UInt64.self, at: 0) == 0x10100)                 // flags
        #expect(bytes.loadLE(UInt64.self, at: 64) == 0x5000)                 // set_tid
        #expect(bytes.loadLE(UInt64.self, at: 72) == 1)                      // set_tid_size
        #expect(CloneArgs(parsing: bytes) == args)
    }

    @Test func xsaveHeaderReadsXstateBVAndTheSoftwareBytes() {
        var area = [UInt8](repeating: 0, count: 832)
        func put32(_ v: UInt32, _ at: Int) { for i in 0..<4 { area[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        put32(XSaveHeader.magic1, 464)
        put32(836, 468)      // extended size = XSAVE size + 4
        put32(0x7, 472)      // features
        put32(832, 480)      // XSAVE size
        area[512] = 0x07     // XSTATE_BV: x87, SSE, AVX
        #expect(XSaveHeader(area: area)?.xstateBV == 7)
        #expect(XSaveHeader(area: Array(area[0..<519])) == nil)
        let software = XSaveHeader.SoftwareBytes(area: area)
        #expect(software.describesWholeArea(available: 832))
        #expect(!software.describesWholeArea(available: 831))
    }

    @Test func savedRegistersGiveTheirStackPointer() {
        var regs = UserRegisters()
        regs.rsp = 0x7ffc_1234_5670
        regs.rip = 0x40_1000
        let bytes = regs.bytes
        #expect(bytes.count == 27 * 8)
        #expect(UserRegisters.stackPointer(of: bytes) == 0x7ffc_1234_5670)
        #expect(UserRegisters(bytes: bytes)?.rip == 0x40_1000)
        #expect(UserRegisters(bytes: bytes.dropLast()) == nil)
    }
}

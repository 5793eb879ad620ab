@testable import LinuxKernel
import Testing

/// The parking frame's bytes (``SignalFrame``, decisions 0010 and 0014): encoded from
/// known registers, mask and XSAVE area, every field is where the kernel's x86-64
/// `struct rt_sigframe` has it (arch/x86/include/asm/sigframe.h, uapi asm/sigcontext.h).
@Suite struct SignalFrameTests {
    /// Registers with a distinct value in each field.
    func registers() -> UserRegisters {
        var r = UserRegisters()
        r.r15 = 0x15; r.r14 = 0x14; r.r13 = 0x13; r.r12 = 0x12; r.rbp = 0xb9; r.rbx = 0xb8
        r.r11 = 0x11; r.r10 = 0x10; r.r9 = 0x09; r.r8 = 0x08; r.rax = 0xa0; r.rcx = 0xc0
        r.rdx = 0xd0; r.rsi = 0x51; r.rdi = 0xd1; r.orig_rax = 0xffff_ffff_ffff_ffff
        r.rip = 0x40_1234; r.cs = 0x33; r.eflags = 0x246; r.rsp = 0x7ffc_0000_1000; r.ss = 0x2b
        return r
    }

    /// An XSAVE area of `size` bytes in the signal-frame format, with a pattern.
    func xsaveArea(size: Int) -> [UInt8] {
        var area = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) }
        func put32(_ v: UInt32, _ at: Int) { for i in 0..<4 { area[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        put32(XSaveHeader.magic1, 464)
        put32(UInt32(size + 4), 468)
        put32(UInt32(size), 480)
        return area
    }

    @Test func theFrameHasTheKernelsLayout() {
        let area = xsaveArea(size: 832)
        let fp = SignalFrame.fpState(of: area, capacity: 4096)
        #expect(fp == .xsave(bytes: 832))
        let size = SignalFrame.size(for: fp)
        #expect(size == (448 + 832 + 4 + 63) & ~63)
        let address: UInt64 = 0x7ffc_0000_0000
        let frame = SignalFrame.encode(registers: registers(), mask: 0x8000_0001, xstate: area, fp: fp,
                                       restorer: 0x7f12_3456_7890, address: address, bytes: size)
        #expect(frame.count == size)
        func word(_ at: Int) -> UInt64 { frame.loadLE(UInt64.self, at: at) }
        #expect(word(0) == 0x7f12_3456_7890)                   // pretcode
        #expect(word(8) == 0 && word(16) == 0)                 // uc_flags, uc_link
        #expect(word(24) == 0 && word(32) == 3 && word(40) == 0)   // uc_stack: sp, invalid flags, size
        // struct sigcontext at 48: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags.
        let expected: [UInt64] = [0x08, 0x09, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0xd1, 0x51, 0xb9, 0xb8,
                                  0xd0, 0xa0, 0xc0, 0x7ffc_0000_1000, 0x40_1234, 0x246]
        #expect((0..<18).map { word(48 + 8 * $0) } == expected)
        #expect(word(48 + 144) == 0x33 | (0x2b << 48))         // cs, gs, fs, ss
        #expect(word(48 + 152) == 0 && word(48 + 160) == 0 && word(48 + 168) == 0 && word(48 + 176) == 0)  // err, trapno, oldmask, cr2
        #expect(word(48 + 184) == address + 448)               // fpstate
        #expect(word(304) == 0x8000_0001)                      // uc_sigmask
        #expect(frame[312..<448].allSatisfy { $0 == 0 })       // siginfo and padding
        #expect(Array(frame[448..<(448 + 832)]) == area)       // the whole XSAVE area
        #expect(frame.loadLE(UInt32.self, at: 448 + 832) == 0x4650_5845)   // FP_XSTATE_MAGIC2
    }

    @Test func anAreaThatIsNotInTheSignalFormatGoesInAsFXSAVE() {
        var area = xsaveArea(size: 832)
        area[464] = 0                                          // no FP_XSTATE_MAGIC1
        let fp = SignalFrame.fpState(of: area, capacity: 4096)
        #expect(fp == .fxsave)
        #expect(SignalFrame.size(for: fp) == 960)
        let frame = SignalFrame.encode(registers: registers(), mask: 0, xstate: area, fp: fp, restorer: 1, address: 0x1000, bytes: 4096)
        #expect(Array(frame[448..<(448 + 464)]) == Array(area[0..<464]))
        #expect(frame[(448 + 464)..<(448 + 512)].allSatisfy { $0 == 0 })  // software-reserved bytes cleared
        #expect(frame[(448 + 512)...].allSatisfy { $0 == 0 })
    }

    @Test func anAreaTooLargeForTheFrameGoesInAsFXSAVE() {
        let area = xsaveArea(size: 3700)
        #expect(SignalFrame.fpState(of: area, capacity: 4096) == .fxsave)      // 448 + 3700 + 4 > 4096
        #expect(SignalFrame.fpState(of: area, capacity: 8192) == .xsave(bytes: 3700))
        #expect(SignalFrame.fpState(of: Array(area[0..<3000]), capacity: 8192) == .fxsave)   // shorter than it says
    }
}

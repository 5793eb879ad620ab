@testable import CheckpointImage
@testable import LinuxKernel
@testable import ProcessState
import Foundation
import Testing

/// The syscall re-entry rules (``SyscallRestart``): for each restart code a stopped
/// thread can show in rax, what the capture records, what a parking frame resumes
/// with, and what the restore sets.
@Suite struct SyscallRestartTests {
    /// A thread stopped inside call `number` with `rax` (a restart code or a result).
    func stopped(in number: Int64, rax: Int64) -> UserRegisters {
        var regs = UserRegisters()
        regs.orig_rax = UInt64(bitPattern: number)
        regs.rax = UInt64(bitPattern: rax)
        regs.rip = 0x7f00_0000_1002     // after the `syscall` (2 bytes)
        return regs
    }

    @Test(arguments: [(Int64(-512), SyscallRestart.automatic), (-513, .automatic), (-514, .noHandler), (-516, .block)])
    func aRestartCodeIsAnInterruptedCall(code: Int64, restart: SyscallRestart) throws {
        let regs = stopped(in: 230, rax: code)        // clock_nanosleep
        let interrupted = try #require(SyscallRestart.interrupted(origRax: regs.orig_rax, rax: regs.rax))
        #expect(interrupted.number == 230 && interrupted.restart == restart)

        // Parking resumes as the kernel's restart would: back onto the `syscall`.
        let resume = SyscallRestart.resumeRegisters(regs)
        #expect(resume.rip == regs.rip - 2)
        #expect(resume.rax == (restart == .block ? UInt64(X86Syscall.restartSyscall) : 230))

        // The restore makes the call again.
        var restored = regs
        SyscallRestart.reenter(&restored, number: interrupted.number)
        #expect(restored.rip == regs.rip - 2 && restored.rax == 230)
    }

    @Test(arguments: [Int64(0), -4 /* EINTR */, -11, 12345, -515, -517])
    func aResultIsNoInterruptedCall(rax: Int64) {
        let regs = stopped(in: 230, rax: rax)
        #expect(SyscallRestart.interrupted(origRax: regs.orig_rax, rax: regs.rax) == nil)
        let resume = SyscallRestart.resumeRegisters(regs)
        #expect(resume.rip == regs.rip && resume.rax == regs.rax)
    }

    @Test func outsideASystemCallNothingIsRestarted() {
        let regs = stopped(in: -1, rax: -512)
        #expect(SyscallRestart.interrupted(origRax: regs.orig_rax, rax: regs.rax) == nil)
        #expect(SyscallRestart.resumeRegisters(regs).rip == regs.rip)
    }

    @Test func restartSyscallItselfComesBackAsEINTR() {
        var regs = stopped(in: Int64(X86Syscall.restartSyscall), rax: -516)
        SyscallRestart.reenter(&regs, number: UInt64(X86Syscall.restartSyscall))
        #expect(Int64(bitPattern: regs.rax) == -4)      // -EINTR
        #expect(regs.rip == 0x7f00_0000_1002)           // not backed up
    }

    @Test(arguments: [(Ccimg_V1_SyscallRestart.auto, true), (.nohand, true), (.block, true), (Ccimg_V1_SyscallRestart.none, false)])
    func theImageRecordDecidesTheReentry(restart: Ccimg_V1_SyscallRestart, reenters: Bool) throws {
        var thread = Ccimg_V1_ThreadState()
        thread.tid = 7
        var call = Ccimg_V1_SyscallState()
        call.number = 7                                 // poll
        call.restart = restart
        thread.syscall = call
        let saved = stopped(in: 7, rax: -514)
        thread.generalRegisters = Data(saved.bytes)
        let regs = try ThreadStateKind.resumeRegisters(of: thread)
        #expect(regs.orig_rax == UInt64.max)
        #expect(regs.rip == (reenters ? saved.rip - 2 : saved.rip))
        #expect(regs.rax == (reenters ? 7 : saved.rax))
    }

    @Test func theImageRecordsTheKernelsRestartClass() {
        #expect(ThreadStateKind.imageRestart(.automatic) == .auto)
        #expect(ThreadStateKind.imageRestart(.noHandler) == .nohand)
        #expect(ThreadStateKind.imageRestart(.block) == .block)
    }
}

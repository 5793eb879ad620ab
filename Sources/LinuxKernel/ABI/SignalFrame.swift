/// The x86-64 signal frame parking writes (arch/x86/include/asm/sigframe.h `struct
/// rt_sigframe`, uapi asm/ucontext.h and asm/sigcontext.h), as rt_sigreturn reads it
/// with the stack pointer 8 bytes above the frame's start: the return address, the
/// ucontext (flags, link, uc_stack, sigcontext, uc_sigmask), the siginfo, then the
/// FP/XSAVE state at ``fpstateOffset`` (decisions 0010, 0014).
package enum SignalFrame {
    /// Offset of the ucontext, after the return address (`pretcode`).
    package static let ucontextOffset = 8
    /// Offset of `uc_mcontext` (struct sigcontext) in the frame.
    package static let sigcontextOffset = ucontextOffset + 40
    /// Offset of `uc_sigmask` in the frame.
    package static let sigmaskOffset = ucontextOffset + 296
    /// Offset of the FP state: 64-byte aligned, after ucontext (304 bytes) and siginfo (128).
    package static let fpstateOffset = 448
    /// `uc_stack.ss_flags` of a parking frame: not a valid value, so rt_sigreturn leaves
    /// the thread's alternate stack as it is (`restore_altstack` fails quietly).
    package static let invalidStackFlags: UInt64 = 3

    /// How much of the thread's FP state goes into the frame.
    package enum FPState: Equatable, Sendable {
        /// The whole XSAVE area of this many bytes, in the kernel's signal-frame format,
        /// followed by FP_XSTATE_MAGIC2.
        case xsave(bytes: Int)
        /// Only the 512-byte FXSAVE region, its software-reserved bytes zeroed.
        case fxsave
    }

    /// Which FP state a thread's XSAVE area (`xstate`, as PTRACE_GETREGSET returned it)
    /// can give a frame of at most `capacity` bytes (nil: sized to fit).
    package static func fpState(of xstate: [UInt8], capacity: Int?) -> FPState {
        let software = XSaveHeader.SoftwareBytes(area: xstate)
        let size = Int(software.xstateSize)
        if software.describesWholeArea(available: xstate.count) && fpstateOffset + size + 4 <= (capacity ?? Int.max) {
            return .xsave(bytes: size)
        }
        return .fxsave
    }

    /// Bytes a frame with `fp` needs, rounded up to 64.
    package static func size(for fp: FPState) -> Int {
        switch fp {
        case .xsave(let bytes): (fpstateOffset + bytes + 4 + 63) & ~63
        case .fxsave: (fpstateOffset + XSaveHeader.legacySize + 63) & ~63
        }
    }

    /// The frame's bytes (`bytes` long, at least ``size(for:)``), to be written at `address`
    /// (64-byte aligned): returning through it restores `registers`, `mask` and the FP
    /// state of `xstate`; its first word is `restorer`, where the parked `ret` goes.
    package static func encode(registers r: UserRegisters, mask: UInt64, xstate: [UInt8], fp: FPState,
                               restorer: UInt64, address: UInt64, bytes count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        func put(_ value: UInt64, at offset: Int) {
            for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        put(restorer, at: 0)                          // where the gadget's `ret` goes: rt_sigreturn, rsp at frame + 8
        let uc = ucontextOffset
        put(0, at: uc)                                // uc_flags
        put(0, at: uc + 8)                            // uc_link
        put(0, at: uc + 16)                           // uc_stack.ss_sp
        put(invalidStackFlags, at: uc + 24)           // uc_stack.ss_flags
        put(0, at: uc + 32)                           // uc_stack.ss_size
        let sc = sigcontextOffset                     // struct sigcontext
        for (i, value) in [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
                           r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp,
                           r.rip, r.eflags].enumerated() {
            put(value, at: sc + 8 * i)
        }
        put(r.cs | (r.ss << 48), at: sc + 144)        // cs, gs, fs, ss (16 bits each)
        put(address + UInt64(fpstateOffset), at: sc + 184)   // fpstate
        put(mask, at: sigmaskOffset)                  // uc_sigmask
        switch fp {
        case .xsave(let size):
            bytes.replaceSubrange(fpstateOffset..<(fpstateOffset + size), with: xstate[0..<size])
            let magic2 = XSaveHeader.magic2
            for i in 0..<4 { bytes[fpstateOffset + size + i] = UInt8(truncatingIfNeeded: magic2 >> (8 * UInt32(i))) }
        case .fxsave:
            let legacy = XSaveHeader.legacySize
            bytes.replaceSubrange(fpstateOffset..<(fpstateOffset + legacy), with: xstate[0..<legacy])
            for i in (fpstateOffset + XSaveHeader.softwareReservedOffset)..<(fpstateOffset + legacy) { bytes[i] = 0 }
        }
        return bytes
    }
}

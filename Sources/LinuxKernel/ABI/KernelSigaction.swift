/// `struct kernel_sigaction` of x86-64 (arch/x86/include/asm/signal.h as the kernel's
/// rt_sigaction(2) takes it, not glibc's `struct sigaction`): handler, flags, restorer,
/// mask, 8 bytes each. Read by the capture (rt_sigaction(signo, NULL, &old)) and written
/// by the restore (rt_sigaction(signo, &act, NULL)); one parse, one encode.
package struct KernelSigaction: Equatable, Sendable {
    /// Bytes of the struct (with a sigset_t of 8 bytes: rt_sigaction's `sigsetsize`).
    package static let size = 32
    /// `sa_handler` (SIG_DFL 0, SIG_IGN 1, or the handler's address).
    package var handler: UInt64
    /// `sa_flags` (SA_SIGINFO, SA_RESTORER, SA_ONSTACK, ...).
    package var flags: UInt64
    /// `sa_restorer`: the signal-return trampoline (glibc's `__restore_rt`).
    package var restorer: UInt64
    /// `sa_mask`: signals blocked while the handler runs.
    package var mask: UInt64

    /// A disposition from its four fields.
    package init(handler: UInt64, flags: UInt64, restorer: UInt64, mask: UInt64) {
        self.handler = handler
        self.flags = flags
        self.restorer = restorer
        self.mask = mask
    }

    /// Parses the struct from the first ``size`` bytes of `bytes`.
    package init(parsing bytes: [UInt8]) {
        self.init(handler: bytes.loadLE(UInt64.self, at: 0), flags: bytes.loadLE(UInt64.self, at: 8),
                  restorer: bytes.loadLE(UInt64.self, at: 16), mask: bytes.loadLE(UInt64.self, at: 24))
    }

    /// The struct's bytes, as rt_sigaction reads them.
    package var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        bytes.appendLE(handler); bytes.appendLE(flags); bytes.appendLE(restorer); bytes.appendLE(mask)
        return bytes
    }
}

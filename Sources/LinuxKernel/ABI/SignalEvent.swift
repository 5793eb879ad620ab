/// `struct sigevent` of x86-64 (uapi asm-generic/siginfo.h), as timer_create(2) takes
/// it: sigev_value (8 bytes), sigev_signo, sigev_notify, then the union whose first
/// member is the thread ID of SIGEV_THREAD_ID; 64 bytes in all. Written by the restore;
/// the capture reads the same facts from /proc/PID/timers.
package struct SignalEvent: Equatable, Sendable {
    /// Bytes of the struct (SIGEV_MAX_SIZE).
    package static let size = 64
    /// `SIGEV_THREAD_ID` (uapi asm-generic/siginfo.h): signal one thread, `_tid`.
    package static let threadID: Int32 = 4
    /// `sigev_value`: the value handed to the handler.
    package var value: UInt64
    /// `sigev_signo`: the signal sent at expiry.
    package var signo: Int32
    /// `sigev_notify` (SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4).
    package var notify: Int32
    /// `_sigev_un._tid`: the thread signalled with SIGEV_THREAD_ID, else 0.
    package var tid: Int32

    /// An event from its fields.
    package init(value: UInt64, signo: Int32, notify: Int32, tid: Int32) {
        self.value = value
        self.signo = signo
        self.notify = notify
        self.tid = tid
    }

    /// Parses the struct from the first ``size`` bytes of `bytes`.
    package init(parsing bytes: [UInt8]) {
        self.init(value: bytes.loadLE(UInt64.self, at: 0), signo: bytes.loadLE(Int32.self, at: 8),
                  notify: bytes.loadLE(Int32.self, at: 12), tid: bytes.loadLE(Int32.self, at: 16))
    }

    /// The struct's bytes, zero-padded to ``size``, as timer_create reads them.
    package var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        bytes.appendLE(value); bytes.appendLE(signo); bytes.appendLE(notify); bytes.appendLE(tid)
        while bytes.count < Self.size { bytes.appendLE(UInt32(0)) }
        return bytes
    }
}

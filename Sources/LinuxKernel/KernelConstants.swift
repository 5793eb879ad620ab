// The x86-64 system call numbers and the uapi constants the code uses, in one place.

/// x86-64 system call numbers used by injection (arch/x86/entry/syscalls/syscall_64.tbl).
package enum X86Syscall {
    package static let write = 1
    package static let close = 3
    package static let lseek = 8
    package static let mmap = 9
    package static let mprotect = 10
    package static let munmap = 11
    package static let brk = 12
    package static let rtSigaction = 13
    package static let ioctl = 16
    package static let mremap = 25
    package static let getitimer = 36
    package static let setitimer = 38
    package static let fcntl = 72
    package static let chdir = 80
    package static let umask = 95
    package static let setgroups = 116
    package static let setresuid = 117
    package static let setresgid = 119
    package static let rtSigqueueinfo = 129
    package static let sigaltstack = 131
    package static let personality = 135
    package static let prctl = 157
    package static let restartSyscall = 219
    package static let setTidAddress = 218
    package static let timerCreate = 222
    package static let timerSettime = 223
    package static let timerGettime = 224
    package static let epollCtl = 233
    package static let inotifyAddWatch = 254
    package static let openat = 257
    package static let setRobustList = 273
    package static let timerfdCreate = 283
    package static let timerfdSettime = 286
    package static let signalfd4 = 289
    package static let eventfd2 = 290
    package static let epollCreate1 = 291
    package static let dup3 = 292
    package static let pipe2 = 293
    package static let inotifyInit1 = 294
    package static let rtTgsigqueueinfo = 297
    package static let memfdCreate = 319
    package static let userfaultfd = 323
    package static let clone3 = 435
}

/// Linux constants Swift's Glibc module leaves out (they need _GNU_SOURCE):
/// values from the kernel's uapi headers, x86-64.
package enum Linux {
    package static let MREMAP_MAYMOVE = 1                 // linux/mman.h
    package static let MREMAP_FIXED = 2
    package static let MAP_FIXED_NOREPLACE: Int32 = 0x100000
    package static let O_DIRECT: Int32 = 0o40000          // asm-generic/fcntl.h
    package static let O_NOATIME: Int32 = 0o1000000
    package static let O_PATH: Int32 = 0o10000000
    package static let CLONE_VM: UInt64 = 0x100           // linux/sched.h
    package static let CLONE_FS: UInt64 = 0x200
    package static let CLONE_FILES: UInt64 = 0x400
    package static let CLONE_SIGHAND: UInt64 = 0x800
    package static let CLONE_THREAD: UInt64 = 0x10000
    package static let CLONE_SYSVSEM: UInt64 = 0x40000
    package static let F_SETPIPE_SZ = 1031                // linux/fcntl.h
    package static let TFD_IOC_SET_TICKS: UInt64 = 0x4008_5400
    package static let PR_SET_MM = 35                     // linux/prctl.h
    package static let PR_SET_MM_MAP = 14
    package static let SYS_tgkill = 234
    package static let SYS_timer_delete = 226
    package static let PR_TIMER_CREATE_RESTORE_IDS = 77   // Linux 6.15
    package static let PR_GET_TID_ADDRESS = 40
    package static let PR_SET_NAME = 15                   // the calling thread's name (comm), 16 bytes with the NUL
    package static let UFFD_USER_MODE_ONLY = 1            // linux/userfaultfd.h
    package static let O_NONBLOCK: Int32 = 0o4000         // asm-generic/fcntl.h
    package static let O_CLOEXEC: Int32 = 0o2000000
    package static let SS_DISABLE: Int32 = 2              // uapi linux/signal.h
    /// The number of signals (SIGRTMAX): dispositions 1...64.
    package static let signalCount = 64
}

/// Signal numbers of x86-64 Linux the state code names (uapi asm/signal.h).
package enum Signal {
    package static let kill: Int32 = 9
    package static let stop: Int32 = 19
}

/// Kernel-internal errno values a stopped thread shows in rax (include/linux/errno.h):
/// the restart codes of an interrupted system call (``SyscallRestart``).
package enum KernelErrno {
    package static let restartSys: Int64 = -512
    package static let restartNoIntr: Int64 = -513
    package static let restartNoHand: Int64 = -514
    package static let restartRestartBlock: Int64 = -516
}

/// open(2), fcntl(2), lseek(2) and eventfd(2) constants the descriptors' capture and
/// restore pass to injected calls (uapi asm-generic/fcntl.h, linux/fs.h, linux/eventfd.h,
/// linux/eventpoll.h), x86-64.
package enum DescriptorFlags {
    package static let O_RDONLY: UInt32 = 0
    package static let O_WRONLY: UInt32 = 1
    package static let O_RDWR: UInt32 = 2
    package static let O_ACCMODE: UInt32 = 3
    package static let O_CREAT: UInt32 = 0o100
    package static let O_EXCL: UInt32 = 0o200
    package static let O_NOCTTY: UInt32 = 0o400
    package static let O_TRUNC: UInt32 = 0o1000
    package static let O_APPEND: UInt32 = 0o2000
    package static let O_NONBLOCK: UInt32 = 0o4000
    package static let O_ASYNC: UInt32 = 0o20000            // FASYNC
    package static let O_DIRECT: UInt32 = 0o40000
    package static let O_NOATIME: UInt32 = 0o1000000
    package static let O_CLOEXEC: UInt32 = 0o2000000
    package static let FD_CLOEXEC: UInt32 = 1
    package static let F_DUPFD: UInt64 = 0
    package static let F_SETFL: UInt64 = 4
    package static let SEEK_SET: UInt64 = 0
    package static let AT_FDCWD: Int64 = -100
    package static let EFD_SEMAPHORE: UInt64 = 1
    package static let EPOLL_CTL_ADD: UInt64 = 1
}

/// mmap(2) flags and protections, which the memory's restore passes to injected calls
/// (uapi asm-generic/mman-common.h).
extension Linux {
    package static let PROT_WRITE: UInt32 = 0x2
    package static let MAP_SHARED: Int32 = 0x01
    package static let MAP_PRIVATE: Int32 = 0x02
    package static let MAP_FIXED: Int32 = 0x10
    package static let MAP_ANONYMOUS: Int32 = 0x20
    package static let MAP_GROWSDOWN: Int32 = 0x0100
}

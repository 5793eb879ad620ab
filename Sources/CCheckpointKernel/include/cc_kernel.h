// cc_kernel.h — the few kernel interfaces Swift cannot call directly.
//
// Every function is non-variadic, prefixed cc_, and returns a value >= 0 on
// success or -errno on failure. The bodies are in cc_kernel.c, compiled with
// _GNU_SOURCE. Constants that Debian's kernel headers do not
// have yet (PAGEMAP_SCAN, UFFD_FEATURE_WP_ASYNC: Linux 6.7+) are defined here
// from the kernel's uapi headers.
#ifndef CC_KERNEL_H
#define CC_KERNEL_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>


// ---- ptrace ---------------------------------------------------------------
long cc_ptrace_seize(int tid, unsigned long options);
long cc_ptrace_interrupt(int tid);
long cc_ptrace_detach(int tid, int sig);
long cc_ptrace_cont(int tid, int sig);
long cc_ptrace_singlestep(int tid, int sig);
long cc_ptrace_syscall(int tid, int sig);
long cc_ptrace_listen(int tid);
long cc_ptrace_getregs(int tid, struct user_regs_struct *regs);
long cc_ptrace_setregs(int tid, const struct user_regs_struct *regs);
/// PTRACE_GETREGSET for note type `type` into buf; returns the bytes filled.
long cc_ptrace_getregset(int tid, int type, void *buf, size_t len);
long cc_ptrace_getsigmask(int tid, uint64_t *mask);
/// PTRACE_SETREGSET for note type `type` from buf.
long cc_ptrace_setregset(int tid, int type, const void *buf, size_t len);
long cc_ptrace_setsigmask(int tid, uint64_t mask);
long cc_ptrace_geteventmsg(int tid, unsigned long *msg);
long cc_ptrace_getsiginfo(int tid, siginfo_t *info);
/// PTRACE_PEEKSIGINFO: up to n pending signals from `offset`, thread (shared=0) or process queue (shared=1).
long cc_ptrace_peeksiginfo(int tid, uint64_t offset, int shared, int n, siginfo_t *out);
long cc_ptrace_peekdata(int tid, uint64_t addr, uint64_t *out);
long cc_ptrace_pokedata(int tid, uint64_t addr, uint64_t value);

/// PTRACE_GET_SYSCALL_INFO (Linux 5.3): op, arch, and entry/exit data.
struct cc_syscall_info {
    uint8_t op; uint8_t pad[3]; uint32_t arch;
    uint64_t instruction_pointer, stack_pointer;
    union {
        struct { uint64_t nr; uint64_t args[6]; } entry;
        struct { int64_t rval; uint8_t is_error; } exit;
        struct { uint64_t nr; uint64_t args[6]; uint32_t ret_data; } seccomp;
    };
};
long cc_ptrace_get_syscall_info(int tid, struct cc_syscall_info *info);

// ---- waiting ----------------------------------------------------------------
/// waitpid for one task (__WALL); returns the pid and stores the raw status.
long cc_waitpid(int pid, int *status, int options);
int cc_wifexited(int s);
int cc_wexitstatus(int s);
int cc_wifsignaled(int s);
int cc_wtermsig(int s);
int cc_wifstopped(int s);
int cc_wstopsig(int s);
/// The PTRACE_EVENT_* in a stop status (status >> 16).
int cc_wptrace_event(int s);

// ---- memory -----------------------------------------------------------------
/// process_vm_readv of one remote range into one local buffer; returns bytes read.
long cc_process_vm_read(int pid, void *local, size_t len, uint64_t remote);
/// process_vm_readv with many iovecs at once.
long cc_process_vm_readv(int pid, const struct iovec *local, unsigned long nlocal,
                         const struct iovec *remote, unsigned long nremote);
long cc_process_vm_write(int pid, const void *local, size_t len, uint64_t remote);

// ---- pidfd, robust lists, limits ---------------------------------------------
long cc_pidfd_open(int pid);
long cc_pidfd_getfd(int pidfd, int targetfd);
long cc_get_robust_list(int tid, uint64_t *head, uint64_t *len);
/// Blocks signals `first` and `second` in the calling thread (threads it creates
/// later inherit that) and returns a signalfd(2) that reads them, or -errno.
long cc_signalfd_blocking(int first, int second);
long cc_prlimit_get(int pid, int resource, uint64_t *soft, uint64_t *hard);
long cc_tgkill(int tgid, int tid, int sig);
long cc_prlimit_set(int pid, int resource, uint64_t soft, uint64_t hard);

/// open_by_handle_at(2) of a file handle as inotify's fdinfo shows it; returns the new fd.
long cc_open_by_handle(int mount_fd, int handle_type, const void *handle, unsigned handle_bytes, int flags);

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34, _GNU_SOURCE): close every fd >= from in the child.
long cc_spawn_actions_closefrom(void *actions, int from);

// ---- spawning the process a restore fills in ------------------------------------
/// How to start the task that becomes the restored process.
struct cc_spawn_request {
    int pid;                    ///< PID to take (clone3 set_tid), or 0 for any
    int new_pid_namespace;      ///< 1: start a small init in a new PID namespace, which creates the task
    const char *path;           ///< executable to run
    char *const *argv;
    char *const *envp;
};
/// Starts the task with clone3 (set_tid when `pid` is given): it stops itself
/// with SIGSTOP, closes every fd above 2 and then executes `path`. Returns the
/// pid of the direct child (the task itself, or the namespace's init, whose
/// only child is the task and which exits with the task's exit status, or
/// 128 + its signal). Only raw system calls run in the children.
long cc_spawn_stopped(const struct cc_spawn_request *request);

// ---- pipes --------------------------------------------------------------------
/// Copies up to len queued bytes of the pipe `fd` into buf without consuming
/// them (tee(2) into a private pipe, then read); returns the bytes copied.
long cc_pipe_peek(int fd, void *buf, size_t len);
long cc_fionread(int fd, int *n);

// ---- memory search ------------------------------------------------------------
/// The offset of the first occurrence of `needle` in `haystack` (memmem(3), a GNU
/// extension), or -1.
long cc_find_bytes(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);

// ---- userfaultfd write-protect tracking and PAGEMAP_SCAN (Linux 6.7) ------------
#define CC_UFFD_FEATURE_WP_UNPOPULATED (1ULL << 13)
#define CC_UFFD_FEATURE_WP_ASYNC (1ULL << 15)
struct cc_page_region { uint64_t start, end, categories; };
struct cc_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define CC_PM_SCAN_WP_MATCHING (1ULL << 0)
#define CC_PM_SCAN_CHECK_WPASYNC (1ULL << 1)
#define CC_PAGE_IS_WPALLOWED (1ULL << 0)
#define CC_PAGE_IS_WRITTEN (1ULL << 1)
#define CC_PAGE_IS_FILE (1ULL << 2)
#define CC_PAGE_IS_PRESENT (1ULL << 3)
#define CC_PAGE_IS_SWAPPED (1ULL << 4)
#define CC_PAGE_IS_PFNZERO (1ULL << 5)

/// PAGEMAP_SCAN on an open /proc/PID/pagemap; returns the regions filled.
long cc_pagemap_scan(int pagemap_fd, struct cc_pm_scan_arg *arg);
long cc_uffdio_api(int uffd, uint64_t features, uint64_t *granted);
long cc_uffdio_register_wp(int uffd, uint64_t start, uint64_t len);
long cc_uffdio_writeprotect(int uffd, uint64_t start, uint64_t len, int protect);

/// sync_file_range(SYNC_FILE_RANGE_WRITE): starts writing a range of a file back to
/// disk without waiting, so a later fsync has less left to wait for.
long cc_start_writeback(int fd, uint64_t offset, uint64_t length);

/// XCR0: the XSAVE features the OS enabled on this CPU (xgetbv 0).
uint64_t cc_xgetbv0(void);
/// Bytes of the XSAVE area, standard format, for the features enabled in XCR0
/// (cpuid leaf 0xd, subleaf 0, EBX): the size PTRACE_SETREGSET NT_X86_XSTATE takes here.
uint32_t cc_xsave_size(void);

// ---- constants Swift cannot import as macros --------------------------------------
extern const int cc_NT_PRSTATUS;
extern const int cc_NT_X86_XSTATE;
extern const unsigned long cc_PTRACE_O_TRACESYSGOOD;
extern const unsigned long cc_PTRACE_O_EXITKILL;
extern const int cc_PTRACE_EVENT_STOP;
extern const int cc_PTRACE_EVENT_CLONE;
extern const int cc_PTRACE_EVENT_EXEC;
extern const unsigned long cc_PTRACE_O_TRACECLONE;
extern const unsigned long cc_PTRACE_O_TRACEEXEC;
extern const int cc_WNOHANG;

#endif

// ---- kcmp
/// kcmp(pid1, pid2, KCMP_FILE, fd1, fd2): 0 when the two descriptors name one open
/// file description, 1 or 2 when they do not (an ordering), or -errno.
long cc_kcmp_file(int pid1, int pid2, int fd1, int fd2);

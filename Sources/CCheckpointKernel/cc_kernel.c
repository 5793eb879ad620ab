// cc_kernel.c — bodies of the functions declared in cc_kernel.h.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/elf.h>
#include <linux/sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cc_kernel.h"

#define CC_PAGEMAP_SCAN _IOWR('f', 16, struct cc_pm_scan_arg)
#define CC_RET(expr) do { long _r = (long)(expr); return _r < 0 ? -errno : _r; } while (0)

long cc_process_vm_readv(int pid, const struct iovec *local, unsigned long nlocal,
                         const struct iovec *remote, unsigned long nremote) {
    CC_RET(process_vm_readv(pid, local, nlocal, remote, nremote, 0));
}

long cc_ptrace_seize(int tid, unsigned long options) { CC_RET(ptrace(PTRACE_SEIZE, tid, 0, (void *)options)); }

long cc_ptrace_interrupt(int tid) { CC_RET(ptrace(PTRACE_INTERRUPT, tid, 0, 0)); }

long cc_ptrace_detach(int tid, int sig) { CC_RET(ptrace(PTRACE_DETACH, tid, 0, (void *)(long)sig)); }

long cc_ptrace_cont(int tid, int sig) { CC_RET(ptrace(PTRACE_CONT, tid, 0, (void *)(long)sig)); }

long cc_ptrace_listen(int tid) { CC_RET(ptrace(PTRACE_LISTEN, tid, 0, 0)); }

long cc_ptrace_getregs(int tid, struct user_regs_struct *regs) { CC_RET(ptrace(PTRACE_GETREGS, tid, 0, regs)); }

long cc_ptrace_setregs(int tid, const struct user_regs_struct *regs) { CC_RET(ptrace(PTRACE_SETREGS, tid, 0, regs)); }

long cc_ptrace_getregset(int tid, int type, void *buf, size_t len) {
    struct iovec iov = { buf, len };
    long r = ptrace(PTRACE_GETREGSET, tid, (void *)(long)type, &iov);
    return r < 0 ? -errno : (long)iov.iov_len;
}

long cc_ptrace_getsigmask(int tid, uint64_t *mask) { CC_RET(ptrace(PTRACE_GETSIGMASK, tid, (void *)8, mask)); }

long cc_ptrace_setregset(int tid, int type, const void *buf, size_t len) {
    struct iovec iov = { (void *)buf, len };
    CC_RET(ptrace(PTRACE_SETREGSET, tid, (void *)(long)type, &iov));
}

long cc_ptrace_setsigmask(int tid, uint64_t mask) { CC_RET(ptrace(PTRACE_SETSIGMASK, tid, (void *)8, &mask)); }

long cc_ptrace_geteventmsg(int tid, unsigned long *msg) { CC_RET(ptrace(PTRACE_GETEVENTMSG, tid, 0, msg)); }

long cc_ptrace_getsiginfo(int tid, siginfo_t *info) { CC_RET(ptrace(PTRACE_GETSIGINFO, tid, 0, info)); }

long cc_ptrace_peeksiginfo(int tid, uint64_t offset, int shared, int n, siginfo_t *out) {
    struct { uint64_t off; uint32_t flags; int32_t nr; } args = { offset, shared ? 1u : 0u, n };
    CC_RET(ptrace(PTRACE_PEEKSIGINFO, tid, &args, out));
}

long cc_ptrace_peekdata(int tid, uint64_t addr, uint64_t *out) {
    errno = 0;
    long v = ptrace(PTRACE_PEEKDATA, tid, (void *)addr, 0);
    if (v == -1 && errno) return -errno;
    *out = (uint64_t)v;
    return 0;
}

long cc_ptrace_pokedata(int tid, uint64_t addr, uint64_t value) { CC_RET(ptrace(PTRACE_POKEDATA, tid, (void *)addr, (void *)value)); }

long cc_ptrace_get_syscall_info(int tid, struct cc_syscall_info *info) {
    CC_RET(ptrace((enum __ptrace_request)0x420e, tid, (void *)sizeof *info, info));
}

long cc_waitpid(int pid, int *status, int options) { CC_RET(waitpid(pid, status, options | __WALL)); }

int cc_wifexited(int s) { return WIFEXITED(s); }

int cc_wexitstatus(int s) { return WEXITSTATUS(s); }

int cc_wifsignaled(int s) { return WIFSIGNALED(s); }

int cc_wtermsig(int s) { return WTERMSIG(s); }

int cc_wifstopped(int s) { return WIFSTOPPED(s); }

int cc_wstopsig(int s) { return WSTOPSIG(s); }

int cc_wptrace_event(int s) { return (s >> 16) & 0xff; }

long cc_process_vm_read(int pid, void *local, size_t len, uint64_t remote) {
    struct iovec l = { local, len }, r = { (void *)remote, len };
    CC_RET(process_vm_readv(pid, &l, 1, &r, 1, 0));
}

long cc_process_vm_write(int pid, const void *local, size_t len, uint64_t remote) {
    struct iovec l = { (void *)local, len }, r = { (void *)remote, len };
    CC_RET(process_vm_writev(pid, &l, 1, &r, 1, 0));
}

long cc_pidfd_open(int pid) { CC_RET(syscall(SYS_pidfd_open, pid, 0)); }

long cc_pidfd_getfd(int pidfd, int targetfd) { CC_RET(syscall(SYS_pidfd_getfd, pidfd, targetfd, 0)); }

long cc_signalfd_blocking(int first, int second) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, first);
    sigaddset(&set, second);
    if (sigprocmask(SIG_BLOCK, &set, 0) != 0) return -errno;
    CC_RET(signalfd(-1, &set, SFD_CLOEXEC));
}

long cc_get_robust_list(int tid, uint64_t *head, uint64_t *len) {
    void *h = 0; size_t l = 0;
    long r = syscall(SYS_get_robust_list, tid, &h, &l);
    if (r < 0) return -errno;
    *head = (uint64_t)h; *len = l;
    return 0;
}

long cc_prlimit_get(int pid, int resource, uint64_t *soft, uint64_t *hard) {
    struct rlimit lim;
    long r = syscall(SYS_prlimit64, pid, resource, 0, &lim);
    if (r < 0) return -errno;
    *soft = lim.rlim_cur; *hard = lim.rlim_max;
    return 0;
}

long cc_tgkill(int tgid, int tid, int sig) { CC_RET(syscall(SYS_tgkill, tgid, tid, sig)); }

long cc_pipe_peek(int fd, void *buf, size_t len) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
    if (len > 65536) fcntl(p[1], F_SETPIPE_SZ, (int)len);
    long n = tee(fd, p[1], len, SPLICE_F_NONBLOCK);
    long result = n < 0 ? -errno : 0;
    size_t done = 0;
    while (n > 0 && done < (size_t)n) {
        long r = read(p[0], (char *)buf + done, (size_t)n - done);
        if (r <= 0) break;
        done += (size_t)r;
    }
    close(p[0]);
    close(p[1]);
    return result < 0 ? result : (long)done;
}

long cc_uffdio_register_wp(int uffd, uint64_t start, uint64_t len) {
    struct uffdio_register reg = { .range = { start, len }, .mode = UFFDIO_REGISTER_MODE_WP };
    CC_RET(ioctl(uffd, UFFDIO_REGISTER, &reg));
}

long cc_uffdio_writeprotect(int uffd, uint64_t start, uint64_t len, int protect) {
    struct uffdio_writeprotect wp = { .range = { start, len }, .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };
    CC_RET(ioctl(uffd, UFFDIO_WRITEPROTECT, &wp));
}

const int cc_NT_PRSTATUS = NT_PRSTATUS;

const int cc_NT_X86_XSTATE = 0x202;

const unsigned long cc_PTRACE_O_TRACESYSGOOD = PTRACE_O_TRACESYSGOOD;

const unsigned long cc_PTRACE_O_EXITKILL = PTRACE_O_EXITKILL;

const int cc_PTRACE_EVENT_STOP = PTRACE_EVENT_STOP;
const int cc_PTRACE_EVENT_CLONE = PTRACE_EVENT_CLONE;
const int cc_PTRACE_EVENT_EXEC = PTRACE_EVENT_EXEC;
const unsigned long cc_PTRACE_O_TRACECLONE = PTRACE_O_TRACECLONE;
const unsigned long cc_PTRACE_O_TRACEEXEC = PTRACE_O_TRACEEXEC;

const int cc_WNOHANG = WNOHANG;

uint64_t cc_xgetbv0(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
#else
    return 0;
#endif
}

uint32_t cc_xsave_size(void) {
#if defined(__x86_64__)
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(0));
    return b;
#else
    return 0;
#endif
}

long cc_fionread(int fd, int *n) { CC_RET(ioctl(fd, FIONREAD, n)); }

long cc_pagemap_scan(int pagemap_fd, struct cc_pm_scan_arg *arg) { CC_RET(ioctl(pagemap_fd, CC_PAGEMAP_SCAN, arg)); }

long cc_uffdio_api(int uffd, uint64_t features, uint64_t *granted) {
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    long r = ioctl(uffd, UFFDIO_API, &api);
    if (r < 0) return -errno;
    *granted = api.features;
    return 0;
}

long cc_ptrace_singlestep(int tid, int sig) { CC_RET(ptrace(PTRACE_SINGLESTEP, tid, 0, (void *)(long)sig)); }
long cc_ptrace_syscall(int tid, int sig) { CC_RET(ptrace(PTRACE_SYSCALL, tid, 0, (void *)(long)sig)); }

long cc_prlimit_set(int pid, int resource, uint64_t soft, uint64_t hard) {
    struct rlimit64 limit = { soft, hard };
    CC_RET(syscall(SYS_prlimit64, pid, resource, &limit, NULL));
}

// clone3 with fork semantics; set_tid when pid > 0.
static long cc_clone3(uint64_t flags, int pid) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    pid_t tid = pid;
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    if (pid > 0) { args.set_tid = (uint64_t)(uintptr_t)&tid; args.set_tid_size = 1; }
    return syscall(SYS_clone3, &args, sizeof args);
}

// In a child of a multithreaded parent: raw system calls only.
static void cc_become_task(const struct cc_spawn_request *r) {
    syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);
    syscall(SYS_close_range, 3, ~0U, 0);
    syscall(SYS_execve, r->path, r->argv, r->envp);
    syscall(SYS_exit_group, 127);
}

long cc_spawn_stopped(const struct cc_spawn_request *r) {
    if (!r->new_pid_namespace) {
        long child = cc_clone3(0, r->pid);
        if (child < 0) return -errno;
        if (child == 0) cc_become_task(r);
        return child;
    }
    long init = cc_clone3(CLONE_NEWPID, 0);
    if (init < 0) return -errno;
    if (init > 0) return init;
    // The namespace's init: create the task, reap whatever ends, exit as the task did.
    long task = cc_clone3(0, r->pid);
    if (task < 0) syscall(SYS_exit_group, 126);
    if (task == 0) cc_become_task(r);
    // The init holds no fds: a reader of ccpm's output must not wait for it to end.
    syscall(SYS_close_range, 0, ~0U, 0);
    for (;;) {
        int status = 0;
        long w = syscall(SYS_wait4, -1, &status, 0, NULL);
        if (w < 0 && errno == ECHILD) syscall(SYS_exit_group, 125);
        if (w == task && (WIFEXITED(status) || WIFSIGNALED(status)))
            syscall(SYS_exit_group, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
}

long cc_open_by_handle(int mount_fd, int handle_type, const void *handle, unsigned handle_bytes, int flags) {
    if (handle_bytes > MAX_HANDLE_SZ) return -EINVAL;
    struct { struct file_handle h; unsigned char bytes[MAX_HANDLE_SZ]; } fh;
    fh.h.handle_bytes = handle_bytes;
    fh.h.handle_type = handle_type;
    memcpy(fh.h.f_handle, handle, handle_bytes);
    CC_RET(open_by_handle_at(mount_fd, &fh.h, flags));
}

long cc_spawn_actions_closefrom(void *actions, int from) {
    int r = posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
    return r ? -r : 0;
}

long cc_start_writeback(int fd, uint64_t offset, uint64_t length) {
    CC_RET(sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE));
}

long cc_find_bytes(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    const char *hit = memmem(haystack, haystack_len, needle, needle_len);
    return hit ? (long)(hit - (const char *)haystack) : -1;
}

// ---- kcmp
#include <linux/kcmp.h>
long cc_kcmp_file(int pid1, int pid2, int fd1, int fd2) {
    CC_RET(syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, (unsigned long)fd1, (unsigned long)fd2));
}

/*
 * berth's seccomp probe: tries system calls with arguments that do no harm (bad
 * descriptors, bad pointers, bad flags, queries) and prints one line per try:
 * "LABEL ok" or "LABEL errno N". The tests run it inside containers under different
 * seccomp profiles and compare the lines. Built static at test time (cc -static).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
/* Calls newer than the C library's headers (numbers shared by every architecture). */
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_map_shadow_stack
#define SYS_map_shadow_stack 453
#endif
#ifndef SYS_futex_wake
#define SYS_futex_wake 454
#endif
#ifndef SYS_statmount
#define SYS_statmount 457
#endif
#ifndef SYS_listmount
#define SYS_listmount 458
#endif
#ifndef SYS_lsm_list_modules
#define SYS_lsm_list_modules 461
#endif
#ifndef SYS_mseal
#define SYS_mseal 462
#endif
#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif
#ifndef SYS_file_getattr
#define SYS_file_getattr 468
#endif
#endif

#define BAD ((long)1) /* an address that is never mapped */
#define NOPID 999999999L

static void try(const char *label, long nr, long a, long b, long c, long d, long e, long f)
{
    errno = 0;
    long r = syscall(nr, a, b, c, d, e, f);
    if (r < 0)
        printf("%s errno %d\n", label, errno);
    else
        printf("%s ok\n", label);
}

#define T(label, nr, ...) try(label, nr, __VA_ARGS__)

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Everyday calls. */
    T("read", SYS_read, -1, 0, 0, 0, 0, 0);
    T("getpid", SYS_getpid, 0, 0, 0, 0, 0, 0);
    T("ioctl", SYS_ioctl, -1, 0, 0, 0, 0, 0);
    T("mknodat", SYS_mknodat, -1, BAD, 0, 0, 0, 0);
    T("prctl", SYS_prctl, 9999, 0, 0, 0, 0, 0);
    T("capset", SYS_capset, 0, 0, 0, 0, 0, 0);
    T("setuid", SYS_setuid, -1, 0, 0, 0, 0, 0);
    T("kill", SYS_kill, 0, 0, 0, 0, 0, 0);
    T("tkill", SYS_tkill, NOPID, 0, 0, 0, 0, 0);
    T("wait4", SYS_wait4, -1, 0, 1 /* WNOHANG */, 0, 0, 0);
    T("waitid", SYS_waitid, 99, 0, 0, 0, 0, 0);
    T("execveat", SYS_execveat, -1, BAD, 0, 0, 0, 0);
    T("bind", SYS_bind, -1, 0, 0, 0, 0, 0);
    T("socketpair", SYS_socketpair, 9999, 0, 0, 0, 0, 0);
    T("epoll_create1", SYS_epoll_create1, -1, 0, 0, 0, 0, 0);
    T("eventfd2", SYS_eventfd2, 0, -1, 0, 0, 0, 0);
    T("timerfd_create", SYS_timerfd_create, -1, 0, 0, 0, 0, 0);
    T("inotify_init1", SYS_inotify_init1, -1, 0, 0, 0, 0, 0);
    T("memfd_create", SYS_memfd_create, BAD, 0, 0, 0, 0, 0);
    T("msgctl", SYS_msgctl, -1, 2 /* IPC_STAT */, 0, 0, 0, 0);
    T("mq_open", SYS_mq_open, BAD, 0, 0, 0, 0, 0);
    T("io_setup", SYS_io_setup, 0, 0, 0, 0, 0, 0);
    T("ioprio_set", SYS_ioprio_set, 99, 0, 0, 0, 0, 0);
    T("sched_setattr", SYS_sched_setattr, 0, 0, 0, 0, 0, 0);
    T("getrandom", SYS_getrandom, 0, 0, 0, 0, 0, 0);
    T("rseq", SYS_rseq, 0, 0, 0, 0, 0, 0);
    T("adjtimex", SYS_adjtimex, 0, 0, 0, 0, 0, 0);
    T("clock_adjtime", SYS_clock_adjtime, 0, 0, 0, 0, 0, 0);
    T("seccomp", SYS_seccomp, 99, 0, 0, 0, 0, 0);
    T("pidfd_open", SYS_pidfd_open, NOPID, 0, 0, 0, 0, 0);
    T("process_mrelease", SYS_process_mrelease, -1, 0, 0, 0, 0, 0);
    T("name_to_handle_at", SYS_name_to_handle_at, -1, BAD, 0, 0, 0, 0);
    T("landlock_create_ruleset", SYS_landlock_create_ruleset, 0, 0, 1, 0, 0, 0);
    T("pkey_free", SYS_pkey_free, 99, 0, 0, 0, 0, 0);
    T("memfd_secret", SYS_memfd_secret, -1, 0, 0, 0, 0, 0);
    T("futex_waitv", SYS_futex_waitv, 0, 0, -1, 0, 0, 0);
    T("close_range", SYS_close_range, 2, 1, 0, 0, 0, 0);
    T("epoll_pwait2", SYS_epoll_pwait2, -1, 0, 0, 0, 0, 0);
#ifdef SYS_cachestat
    T("cachestat", SYS_cachestat, -1, 0, 0, 0, 0, 0);
    T("fchmodat2", SYS_fchmodat2, -1, BAD, 0, 0, 0, 0);
    T("map_shadow_stack", SYS_map_shadow_stack, 0, 0, -1, 0, 0, 0);
    T("futex_wake", SYS_futex_wake, 0, 0, 0, -1, 0, 0);
    T("statmount", SYS_statmount, BAD, 0, 0, 0, 0, 0);
    T("listmount", SYS_listmount, BAD, 0, 0, 0, 0, 0);
    T("mseal", SYS_mseal, 0, 0, -1, 0, 0, 0);
    T("getxattrat", SYS_getxattrat, -1, BAD, 0, 0, 0, 0);
    T("open_tree_attr", SYS_open_tree_attr, -1, BAD, -1, 0, 0, 0);
    T("file_getattr", SYS_file_getattr, -1, BAD, 0, 0, -1, 0);
#endif

    /* Argument filters. */
    T("personality_query", SYS_personality, 0xffffffffL, 0, 0, 0, 0, 0);
    T("personality_read_implies_exec", SYS_personality, 0x0400000, 0, 0, 0, 0, 0);
    T("personality_addr_no_randomize", SYS_personality, 0x0040000, 0, 0, 0, 0, 0);
    T("personality_linux", SYS_personality, 0, 0, 0, 0, 0, 0);
    T("socket_unix", SYS_socket, 1, 1, 0, 0, 0, 0);
    T("socket_inet", SYS_socket, 2, 2, 0, 0, 0, 0);
    T("socket_netlink", SYS_socket, 16, 2, 0, 0, 0, 0);
    T("socket_alg", SYS_socket, 38, 5, 0, 0, 0, 0);
    T("socket_vsock", SYS_socket, 40, 1, 0, 0, 0, 0);
    T("socket_kcm", SYS_socket, 41, 2, 0, 0, 0, 0);
    /* CLONE_NEWUSER|CLONE_FS and CLONE_THREAD alone: the kernel refuses both (EINVAL). */
    T("clone_newuser", SYS_clone, CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0, 0);
    T("clone_plain", SYS_clone, CLONE_THREAD, 0, 0, 0, 0, 0);
    T("clone3", SYS_clone3, 0, 0, 0, 0, 0, 0);

    /* Calls tied to capabilities, or refused to everyone. */
    T("mount", SYS_mount, 0, BAD, 0, 0, 0, 0);
    T("umount2", SYS_umount2, BAD, -1, 0, 0, 0, 0);
    T("unshare", SYS_unshare, 0, 0, 0, 0, 0, 0);
    T("setns", SYS_setns, -1, 0, 0, 0, 0, 0);
    T("pivot_root", SYS_pivot_root, BAD, BAD, 0, 0, 0, 0);
    T("sethostname", SYS_sethostname, BAD, 5, 0, 0, 0, 0);
    T("setdomainname", SYS_setdomainname, BAD, 5, 0, 0, 0, 0);
    T("chroot", SYS_chroot, BAD, 0, 0, 0, 0, 0);
    T("fsopen", SYS_fsopen, BAD, 0, 0, 0, 0, 0);
    T("fspick", SYS_fspick, -1, BAD, 0, 0, 0, 0);
    T("fsconfig", SYS_fsconfig, -1, 99, 0, 0, 0, 0);
    T("fsmount", SYS_fsmount, -1, 0, 0, 0, 0, 0);
    T("move_mount", SYS_move_mount, -1, BAD, -1, BAD, 0, 0);
    T("open_tree", SYS_open_tree, -1, BAD, 0, 0, 0, 0);
    T("mount_setattr", SYS_mount_setattr, -1, BAD, 0, 0, 0, 0);
    T("quotactl", SYS_quotactl, 0, BAD, 0, 0, 0, 0);
    T("quotactl_fd", SYS_quotactl_fd, -1, 0, 0, 0, 0, 0);
    T("fanotify_init", SYS_fanotify_init, -1, 0, 0, 0, 0, 0);
#ifdef SYS_lsm_list_modules
    T("lsm_list_modules", SYS_lsm_list_modules, 0, 0, -1, 0, 0, 0);
#endif
    T("bpf", SYS_bpf, 9999, 0, 0, 0, 0, 0);
    T("perf_event_open", SYS_perf_event_open, BAD, 0, -1, -1, 0, 0);
    T("syslog", SYS_syslog, 10 /* SIZE_BUFFER */, 0, 0, 0, 0, 0);
    T("keyctl", SYS_keyctl, 9999, 0, 0, 0, 0, 0);
    T("add_key", SYS_add_key, BAD, BAD, 0, 0, 0, 0);
    T("request_key", SYS_request_key, BAD, BAD, 0, 0, 0, 0);
    T("io_uring_setup", SYS_io_uring_setup, 0, BAD, 0, 0, 0, 0);
    T("userfaultfd", SYS_userfaultfd, -1, 0, 0, 0, 0, 0);
    T("ptrace", SYS_ptrace, 2 /* PEEKDATA */, NOPID, 0, 0, 0, 0);
    T("process_vm_readv", SYS_process_vm_readv, NOPID, 0, 0, 0, 0, 1);
    T("kcmp", SYS_kcmp, NOPID, NOPID, 0, 0, 0, 0);
    T("pidfd_getfd", SYS_pidfd_getfd, -1, 0, 0, 0, 0, 0);
    T("process_madvise", SYS_process_madvise, -1, 0, 0, 0, 0, 0);
    T("reboot", SYS_reboot, 0, 0, 0, 0, 0, 0);
    T("kexec_load", SYS_kexec_load, 0, 0, 0, -1, 0, 0);
    T("init_module", SYS_init_module, 0, 0, 0, 0, 0, 0);
    T("delete_module", SYS_delete_module, BAD, 0, 0, 0, 0, 0);
    T("acct", SYS_acct, BAD, 0, 0, 0, 0, 0);
    T("clock_settime", SYS_clock_settime, -1, 0, 0, 0, 0, 0);
    T("settimeofday", SYS_settimeofday, BAD, 0, 0, 0, 0, 0);
    T("swapon", SYS_swapon, BAD, 0, 0, 0, 0, 0);
    T("open_by_handle_at", SYS_open_by_handle_at, -1, BAD, 0, 0, 0, 0);
    T("get_mempolicy", SYS_get_mempolicy, 0, 0, 0, 0, -1, 0);
    T("mbind", SYS_mbind, 0, 0, 99, 0, 0, 0);
    T("move_pages", SYS_move_pages, NOPID, 1, BAD, 0, BAD, 0);
    T("migrate_pages", SYS_migrate_pages, NOPID, 0, BAD, BAD, 0, 0);
    T("vhangup", SYS_vhangup, 0, 0, 0, 0, 0, 0);
#if defined(__x86_64__)
    T("arch_prctl", SYS_arch_prctl, 0x9999, 0, 0, 0, 0, 0);
    T("modify_ldt", SYS_modify_ldt, 99, 0, 0, 0, 0, 0);
    T("iopl", SYS_iopl, 4, 0, 0, 0, 0, 0);
    T("ioperm", SYS_ioperm, 0x10000, 1, 1, 0, 0, 0);
    T("uselib", SYS_uselib, BAD, 0, 0, 0, 0, 0);
    T("ustat", SYS_ustat, 0, BAD, 0, 0, 0, 0);
    T("sysfs", SYS_sysfs, 99, 0, 0, 0, 0, 0);
#endif
    return 0;
}

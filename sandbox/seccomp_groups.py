"""Syscall data for the seccomp layer: the x86_64 table, named groups and argument constants.

Pure data, no imports: profile validation reads it without touching libseccomp.

The table is the kernel's own x86_64 numbering (arch/x86/entry/syscalls/syscall_64.tbl) up to
file_setattr (469, Linux 6.17). It is deliberately ours rather than libseccomp's: the installed
libseccomp (2.5.4) stops at 450, and a policy must be able to name every syscall the running
kernel has. Any number above MAX_NR, and the unused block 335..423 (reserved so that x86_64 and
the 32-bit ABIs share numbers from 424 on), is "newer than the policy knows" and answered with
ENOSYS by policies that ask for it, so libc falls back to an older call.
"""

SYSCALLS_X86_64 = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7, "lseek": 8,
    "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14,
    "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21,
    "pipe": 22, "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28,
    "shmget": 29, "shmat": 30, "shmctl": 31, "dup": 32, "dup2": 33, "pause": 34, "nanosleep": 35,
    "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "sendfile": 40, "socket": 41, "connect": 42,
    "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48, "bind": 49,
    "listen": 50, "getsockname": 51, "getpeername": 52, "socketpair": 53, "setsockopt": 54, "getsockopt": 55,
    "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60, "wait4": 61, "kill": 62, "uname": 63,
    "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67, "msgget": 68, "msgsnd": 69, "msgrcv": 70,
    "msgctl": 71, "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync": 75, "truncate": 76, "ftruncate": 77,
    "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84,
    "creat": 85, "link": 86, "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91,
    "chown": 92, "fchown": 93, "lchown": 94, "umask": 95, "gettimeofday": 96, "getrlimit": 97,
    "getrusage": 98, "sysinfo": 99, "times": 100, "ptrace": 101, "getuid": 102, "syslog": 103, "getgid": 104,
    "setuid": 105, "setgid": 106, "geteuid": 107, "getegid": 108, "setpgid": 109, "getppid": 110,
    "getpgrp": 111, "setsid": 112, "setreuid": 113, "setregid": 114, "getgroups": 115, "setgroups": 116,
    "setresuid": 117, "getresuid": 118, "setresgid": 119, "getresgid": 120, "getpgid": 121, "setfsuid": 122,
    "setfsgid": 123, "getsid": 124, "capget": 125, "capset": 126, "rt_sigpending": 127,
    "rt_sigtimedwait": 128, "rt_sigqueueinfo": 129, "rt_sigsuspend": 130, "sigaltstack": 131, "utime": 132,
    "mknod": 133, "uselib": 134, "personality": 135, "ustat": 136, "statfs": 137, "fstatfs": 138,
    "sysfs": 139, "getpriority": 140, "setpriority": 141, "sched_setparam": 142, "sched_getparam": 143,
    "sched_setscheduler": 144, "sched_getscheduler": 145, "sched_get_priority_max": 146,
    "sched_get_priority_min": 147, "sched_rr_get_interval": 148, "mlock": 149, "munlock": 150,
    "mlockall": 151, "munlockall": 152, "vhangup": 153, "modify_ldt": 154, "pivot_root": 155, "_sysctl": 156,
    "prctl": 157, "arch_prctl": 158, "adjtimex": 159, "setrlimit": 160, "chroot": 161, "sync": 162,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "create_module": 174,
    "init_module": 175, "delete_module": 176, "get_kernel_syms": 177, "query_module": 178, "quotactl": 179,
    "nfsservctl": 180, "getpmsg": 181, "putpmsg": 182, "afs_syscall": 183, "tuxcall": 184, "security": 185,
    "gettid": 186, "readahead": 187, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "getxattr": 191,
    "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194, "llistxattr": 195, "flistxattr": 196,
    "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "tkill": 200, "time": 201, "futex": 202,
    "sched_setaffinity": 203, "sched_getaffinity": 204, "set_thread_area": 205, "io_setup": 206,
    "io_destroy": 207, "io_getevents": 208, "io_submit": 209, "io_cancel": 210, "get_thread_area": 211,
    "lookup_dcookie": 212, "epoll_create": 213, "epoll_ctl_old": 214, "epoll_wait_old": 215,
    "remap_file_pages": 216, "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219,
    "semtimedop": 220, "fadvise64": 221, "timer_create": 222, "timer_settime": 223, "timer_gettime": 224,
    "timer_getoverrun": 225, "timer_delete": 226, "clock_settime": 227, "clock_gettime": 228,
    "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233,
    "tgkill": 234, "utimes": 235, "vserver": 236, "mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244,
    "mq_getsetattr": 245, "kexec_load": 246, "waitid": 247, "add_key": 248, "request_key": 249, "keyctl": 250,
    "ioprio_set": 251, "ioprio_get": 252, "inotify_init": 253, "inotify_add_watch": 254,
    "inotify_rm_watch": 255, "migrate_pages": 256, "openat": 257, "mkdirat": 258, "mknodat": 259,
    "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263, "renameat": 264, "linkat": 265,
    "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "unshare": 272, "set_robust_list": 273, "get_robust_list": 274, "splice": 275, "tee": 276,
    "sync_file_range": 277, "vmsplice": 278, "move_pages": 279, "utimensat": 280, "epoll_pwait": 281,
    "signalfd": 282, "timerfd_create": 283, "eventfd": 284, "fallocate": 285, "timerfd_settime": 286,
    "timerfd_gettime": 287, "accept4": 288, "signalfd4": 289, "eventfd2": 290, "epoll_create1": 291,
    "dup3": 292, "pipe2": 293, "inotify_init1": 294, "preadv": 295, "pwritev": 296, "rt_tgsigqueueinfo": 297,
    "perf_event_open": 298, "recvmmsg": 299, "fanotify_init": 300, "fanotify_mark": 301, "prlimit64": 302,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "syncfs": 306, "sendmmsg": 307,
    "setns": 308, "getcpu": 309, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "sched_setattr": 314, "sched_getattr": 315, "renameat2": 316, "seccomp": 317,
    "getrandom": 318, "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "membarrier": 324, "mlock2": 325, "copy_file_range": 326, "preadv2": 327,
    "pwritev2": 328, "pkey_mprotect": 329, "pkey_alloc": 330, "pkey_free": 331, "statx": 332,
    "io_pgetevents": 333, "rseq": 334, "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435, "close_range": 436, "openat2": 437,
    "pidfd_getfd": 438, "faccessat2": 439, "process_madvise": 440, "epoll_pwait2": 441, "mount_setattr": 442,
    "quotactl_fd": 443, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
    "landlock_restrict_self": 446, "memfd_secret": 447, "process_mrelease": 448, "futex_waitv": 449,
    "set_mempolicy_home_node": 450, "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453,
    "futex_wake": 454, "futex_wait": 455, "futex_requeue": 456, "statmount": 457, "listmount": 458,
    "lsm_get_self_attr": 459, "lsm_set_self_attr": 460, "lsm_list_modules": 461, "mseal": 462,
    "setxattrat": 463, "getxattrat": 464, "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467,
    "file_getattr": 468, "file_setattr": 469,
}

MAX_NR = 469
# Unused numbers inside the table: never a syscall on x86_64.
HOLES = ((335, 423),)

X32_SYSCALL_BIT = 0x40000000
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003

# Named groups. A profile names them as "@group". Families the strict profile refuses come
# first; they double as vocabulary for `deny` lists and for the linter.
GROUPS = {
    # mount(2) and the new mount API (5.2+), and the read-only mount listing calls (6.8+).
    "mount": ("mount", "umount2", "pivot_root", "fsopen", "fsmount", "fsconfig", "fspick",
              "move_mount", "open_tree", "open_tree_attr", "mount_setattr"),
    "mount-info": ("statmount", "listmount"),
    "namespaces": ("unshare", "setns"),
    "keyring": ("keyctl", "add_key", "request_key"),
    "bpf": ("bpf",),
    "perf": ("perf_event_open",),
    "userfaultfd": ("userfaultfd",),
    "io-uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "handles": ("open_by_handle_at", "name_to_handle_at"),
    "module": ("init_module", "finit_module", "delete_module", "create_module", "query_module",
               "get_kernel_syms"),
    "kexec": ("kexec_load", "kexec_file_load"),
    "reboot": ("reboot",),
    "swap": ("swapon", "swapoff"),
    "clock-set": ("settimeofday", "clock_settime", "adjtimex", "clock_adjtime"),
    "raw-io": ("iopl", "ioperm"),
    "accounting": ("acct", "quotactl", "quotactl_fd"),
    "syslog": ("syslog",),
    "debug": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
              "process_madvise"),
    "numa": ("mbind", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages",
             "move_pages"),
    "hostname": ("sethostname", "setdomainname"),
    "fanotify": ("fanotify_init", "fanotify_mark"),
    "lsm": ("lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"),
    # Memory the kernel itself cannot reach (removed from the direct map, locked): no ordinary
    # program needs it, it fragments the host's direct map and is charged as locked memory.
    "secretmem": ("memfd_secret",),
    "obsolete": ("_sysctl", "afs_syscall", "getpmsg", "putpmsg", "security", "tuxcall", "uselib",
                 "ustat", "vserver", "sysfs", "nfsservctl", "epoll_ctl_old", "epoll_wait_old",
                 "lookup_dcookie", "vhangup", "modify_ldt"),
    # Ordinary programs.
    "file-system": (
        "access", "chdir", "chmod", "chown", "creat", "faccessat", "faccessat2", "fchdir", "fchmod",
        "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr",
        "flock", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futimesat",
        "getcwd", "getdents", "getdents64", "getxattr", "getxattrat", "inotify_add_watch",
        "inotify_init", "inotify_init1", "inotify_rm_watch", "lchown", "lgetxattr", "link", "linkat",
        "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat",
        "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "readlink",
        "readlinkat", "removexattr", "removexattrat", "rename", "renameat", "renameat2", "rmdir",
        "setxattr", "setxattrat", "stat", "statfs", "statx", "symlink", "symlinkat", "truncate",
        "umask", "unlink", "unlinkat", "utime", "utimensat", "utimes", "cachestat"),
    "io": ("read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "preadv2", "pwritev",
           "pwritev2", "sendfile", "splice", "tee", "vmsplice", "copy_file_range", "readahead",
           "fadvise64", "fallocate", "sync", "syncfs", "sync_file_range", "close", "close_range",
           "dup", "dup2", "dup3", "pipe", "pipe2"),
    "poll": ("poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
             "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd",
             "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_settime"),
    "aio": ("io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents"),
    "memory": ("brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "mincore", "mlock", "mlock2",
               "mlockall", "munlock", "munlockall", "msync", "memfd_create",
               "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect", "membarrier", "mseal",
               "map_shadow_stack"),
    "process": ("execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid",
                "kill", "tgkill", "tkill", "getpid", "getppid", "gettid", "getpgid", "getpgrp",
                "getsid", "setpgid", "setsid", "prctl", "arch_prctl", "set_tid_address",
                "set_robust_list", "get_robust_list", "rseq", "restart_syscall", "pidfd_open",
                "pidfd_send_signal", "process_mrelease", "get_thread_area", "set_thread_area",
                "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "getpriority",
                "setpriority", "sched_get_priority_max", "sched_get_priority_min",
                "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_getscheduler",
                "sched_rr_get_interval", "sched_setaffinity", "sched_setattr", "sched_setparam",
                "sched_setscheduler", "sched_yield", "ioprio_get", "ioprio_set", "capget", "capset",
                "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
                "uname", "sysinfo", "getcpu", "getrandom"),
    "credentials": ("getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid",
                    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
                    "setfsgid", "setgroups"),
    "signal": ("rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
               "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "sigaltstack", "pause"),
    "time": ("alarm", "clock_getres", "clock_gettime", "clock_nanosleep", "gettimeofday", "nanosleep",
             "time", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
             "timer_gettime", "timer_settime"),
    "ipc": ("mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
            "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
            "shmget", "shmat", "shmdt", "shmctl"),
    "network": ("accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
                "listen", "recvfrom", "recvmmsg", "recvmsg", "sendmmsg", "sendmsg", "sendto",
                "setsockopt", "shutdown"),
    "futex": ("futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue"),
}
# What an ordinary program needs: the allow list both built-in profiles start from.
GROUPS["basic"] = tuple(n for g in ("file-system", "io", "poll", "aio", "memory", "process",
                                    "credentials", "signal", "time", "ipc", "network", "futex")
                        for n in GROUPS[g])
GROUPS["privileged"] = tuple(n for g in ("mount", "namespaces", "keyring", "bpf", "perf", "userfaultfd",
                                         "io-uring", "handles", "module", "kexec", "reboot", "swap",
                                         "clock-set", "raw-io", "accounting", "syslog", "debug",
                                         "hostname") for n in GROUPS[g])

ERRNOS = {
    "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EINTR": 4, "EIO": 5, "ENXIO": 6, "E2BIG": 7, "ENOEXEC": 8,
    "EBADF": 9, "ECHILD": 10, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16,
    "EEXIST": 17, "EXDEV": 18, "ENODEV": 19, "ENOTDIR": 20, "EISDIR": 21, "EINVAL": 22, "ENFILE": 23,
    "EMFILE": 24, "ENOTTY": 25, "ETXTBSY": 26, "EFBIG": 27, "ENOSPC": 28, "ESPIPE": 29, "EROFS": 30,
    "EMLINK": 31, "EPIPE": 32, "EDOM": 33, "ERANGE": 34, "EDEADLK": 35, "ENAMETOOLONG": 36,
    "ENOLCK": 37, "ENOSYS": 38, "ENOTSUP": 95, "EOPNOTSUPP": 95, "EAFNOSUPPORT": 97,
    "EPROTONOSUPPORT": 93, "ENOTSOCK": 88,
}

# Constants a profile may name in argument conditions (also "A|B").
CONSTANTS = {
    "AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_AX25": 3, "AF_IPX": 4, "AF_APPLETALK": 5,
    "AF_INET6": 10, "AF_KEY": 15, "AF_NETLINK": 16, "AF_PACKET": 17, "AF_TIPC": 30,
    "AF_BLUETOOTH": 31, "AF_ALG": 38, "AF_NFC": 39, "AF_VSOCK": 40, "AF_XDP": 44,
    "SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3, "SOCK_RDM": 4, "SOCK_SEQPACKET": 5,
    "SOCK_TYPE_MASK": 0xF,
    "NETLINK_ROUTE": 0, "NETLINK_AUDIT": 9,
    "CLONE_NEWTIME": 0x80, "CLONE_NEWNS": 0x20000, "CLONE_NEWCGROUP": 0x2000000,
    "CLONE_NEWUTS": 0x4000000, "CLONE_NEWIPC": 0x8000000, "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000, "CLONE_NEWNET": 0x40000000,
    # every namespace flag clone(2) accepts (CLONE_NEWTIME only exists for unshare/clone3)
    "CLONE_NS_FLAGS": 0x7E020000,
    "TIOCSTI": 0x5412, "TIOCLINUX": 0x541C,
    # ioctl request codes (asm-generic/ioctls.h, linux/fs.h, linux/sockios.h), for ioctl allowlists
    "TCGETS": 0x5401, "TCSETS": 0x5402, "TCSETSW": 0x5403, "TCSETSF": 0x5404, "TCGETA": 0x5405,
    "TCSETA": 0x5406, "TCSETAW": 0x5407, "TCSETAF": 0x5408, "TCSBRK": 0x5409, "TCXONC": 0x540A,
    "TCFLSH": 0x540B, "TIOCEXCL": 0x540C, "TIOCNXCL": 0x540D, "TIOCSCTTY": 0x540E, "TIOCGPGRP": 0x540F,
    "TIOCSPGRP": 0x5410, "TIOCOUTQ": 0x5411, "TIOCGWINSZ": 0x5413, "TIOCSWINSZ": 0x5414,
    "FIONREAD": 0x541B, "TIOCCONS": 0x541D, "FIONBIO": 0x5421, "TIOCNOTTY": 0x5422, "TIOCSETD": 0x5423,
    "TIOCGETD": 0x5424, "TIOCSBRK": 0x5427, "TIOCCBRK": 0x5428, "TIOCGSID": 0x5429, "TCGETS2": 0x802C542A,
    "TCSETS2": 0x402C542B, "TCSETSW2": 0x402C542C, "TCSETSF2": 0x402C542D, "TCSBRKP": 0x5425, "TIOCGPTN": 0x80045430, "TIOCSPTLCK": 0x40045431, "TIOCGPTPEER": 0x5441,
    "TIOCGEXCL": 0x80045440, "FIONCLEX": 0x5450, "FIOCLEX": 0x5451, "FIOASYNC": 0x5452, "FIOQSIZE": 0x5460,
    "FS_IOC_GETFLAGS": 0x80086601, "FS_IOC_SETFLAGS": 0x40086602, "FS_IOC_FSGETXATTR": 0x801C581F,
    "SIOCGIFNAME": 0x8910, "SIOCGIFCONF": 0x8912, "SIOCGIFFLAGS": 0x8913, "SIOCGIFADDR": 0x8915,
    "SIOCGIFNETMASK": 0x891B, "SIOCGIFMTU": 0x8921, "SIOCGIFHWADDR": 0x8927, "SIOCGIFINDEX": 0x8933,
    # socket protocols (netinet/in.h)
    "IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_ICMPV6": 58,
    "IPPROTO_SCTP": 132, "IPPROTO_UDPLITE": 136, "IPPROTO_MPTCP": 262,
    "PER_LINUX": 0, "PER_LINUX32": 0x8, "UNAME26": 0x20000, "PER_LINUX32_UNAME26": 0x20008,
    "PER_QUERY": 0xFFFFFFFF, "READ_IMPLIES_EXEC": 0x400000, "ADDR_NO_RANDOMIZE": 0x40000,
    "INT_MASK": 0xFFFFFFFF,
    # file mode bits and open flags (sys/stat.h, asm-generic/fcntl.h), for rules on creation modes;
    # O_TMPFILE is __O_TMPFILE | O_DIRECTORY, both bits are always set together (else EINVAL)
    "S_ISUID": 0o4000, "S_ISGID": 0o2000, "S_ISVTX": 0o1000,
    "O_CREAT": 0o100, "O_TMPFILE": 0o20200000,
}

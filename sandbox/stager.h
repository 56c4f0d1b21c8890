/* Generated from sandbox/stager.py by `python3 -m sandbox.stager`: do not edit. */
#ifndef PYSANDBOX_STAGER_H
#define PYSANDBOX_STAGER_H
#define STAGER_MAGIC "PSBX"
#define STAGER_VERSION 4
#define OP_CLONE 0 /* the namespaces clone() makes (always first; the stager itself runs it) */
#define OP_STAGE 1 /* the stage later errors are reported under */
#define OP_PDEATHSIG 2 /* PR_SET_PDEATHSIG SIGKILL */
#define OP_JOIN_CGROUPS 3 /* write 0 to the run's v1 tasks files */
#define OP_WAIT_GO 4 /* wait for the supervisor's G */
#define OP_ENTER_IDS 5 /* setgroups(none)?, uid, gid inside the user namespace */
#define OP_UNSHARE 6 /* unshare(flags) */
#define OP_SETHOSTNAME 7 /* sethostname */
#define OP_WRITE 8 /* path, data, open flags, mode, label */
#define OP_LOOPBACK 9 /* bring lo up */
#define OP_MOUNT 10 /* source, target, fstype, flags, data, label */
#define OP_MOUNT_SYSFS 11 /* a fresh sysfs or a read-only bind of the host's */
#define OP_RESTRICT 12 /* nosuid, nodev (, read-only) recursively */
#define OP_MKDIR 13 /* path, mode, exist_ok */
#define OP_MKDIRS 14 /* path, mode */
#define OP_MOUNT_POINT 15 /* path, is_dir */
#define OP_SYMLINK 16 /* target, path */
#define OP_PIVOT 17 /* new root, put old */
#define OP_CHDIR 18 /* path */
#define OP_UMOUNT 19 /* path, flags, label */
#define OP_ATTACH 20 /* source index, target, is_dir (move_mount of a detached tree) */
#define OP_TARGET_IN_ROOT 21 /* root, path, is_dir (made without following a link) */
#define OP_PROC_STAT 22 /* path, copy */
#define OP_MASK 23 /* number of masked paths, masked paths, read-only paths */
#define OP_CLOSE_HOST_FDS 24 /* everything but stdio and the channel */
#define OP_FORK 25 /* fork the command; PID 1 goes on at init */
#define OP_SIGNALS 26 /* default dispositions; setsid when set */
#define OP_BECOME_IDS 27 /* uid, gid, keep capabilities */
#define OP_RLIMITS 28 /* (resource, soft, hard)... */
#define OP_CPU_TIME 29 /* RLIMIT_CPU from the run's budget */
#define OP_CWD 30 /* chdir to the run's directory */
#define OP_CLOSE_FDS 31 /* everything but stdio and the channel */
#define OP_CAPS 32 /* keep mask, ambient mask */
#define OP_NO_NEW_PRIVS 33 /* PR_SET_NO_NEW_PRIVS */
#define OP_LANDLOCK 34 /* ruleset masks and rules */
#define OP_WARN 35 /* a warning for the caller */
#define OP_VERIFY 36 /* expectations, as key/value pairs */
#define OP_SECCOMP 37 /* BPF, flags */
#define OP_SECCOMP_CHECK 38 /* filters expected after ours */
#define OP_EXEC 39 /* execvpe the command */
#define OP_INIT 40 /* PID 1 becomes the init (init.c) */
#define OP_NET_HELPER 41 /* the stager's helper makes the network namespace (see _net_helper) */
#define OP_KEEP_DIR 42 /* path: kept open (O_PATH); relative write paths are below it (user limits) */
#define OP_CLOSE_KEPT 43 /* PID 1: close the kept directory */
#define OP_NET_JOIN 44 /* PID 1: setns into the helper's network namespace */
#define OP_KEEP_MASK_SOURCE 45 /* path: a detached read-only copy of this empty directory, for the masks */
#define OP_COUNT 46
static const unsigned op_min_args[OP_COUNT] = {1, 1, 0, 0, 0, 3, 1, 1, 5, 0, 6, 2, 3, 3, 2, 2, 2, 2, 1, 3, 3, 3, 2, 1, 0, 0, 1, 3, 0, 0, 0, 0, 2, 0, 5, 1, 0, 2, 1, 0, 0, 0, 1, 0, 0, 1};
#endif

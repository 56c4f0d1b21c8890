/*
 * pysandbox-stage: the sandbox's child side, compiled. The supervisor starts it with
 * posix_spawn (a vfork: nothing of the supervisor's Python heap is copied), hands it
 * the plan as a program (sandbox/stager.py compiles stages.CHILD_STAGES into it, once
 * per Sandbox) and the run's own values as arguments. It clones PID 1 into the new
 * user and pid namespaces as the supervisor's own child (CLONE_PARENT), reports its
 * PID and exits; PID 1 then runs the program's operations in order, forks the command
 * (which runs the command's operations and execs) and becomes the init (init.c).
 *
 * Why: on a virtual machine each page fault and each page-table copy costs microseconds;
 * a Python child forked from the supervisor pays for its heap twice (fork and
 * copy-on-write), about two thirds of a run. The operations are the same kernel calls
 * the Python stages make, in the same order, named the same way in errors.
 *
 * usage: pysandbox-stage PROGRAM_FD BIRTH_FD MSG_FD GO_FD CPU_SECONDS CWD STDIN STDOUT STDERR
 *                        NSOURCES FD... NCGROUPS TASKS_FILE...
 *                        GO_W SETGROUPS UID_MAP GID_MAP NPROCS PROCS_FILE...
 *                        -- NCOMMAND ARGV... [--net-inline]
 * (a zygote request: the same fields from MSG_FD on, then "--env" NENV ENV... and
 * "--inherit"; every list is counted, so no word of the command is ever a delimiter)
 * With GO_W the stager also writes PID 1's id maps, moves it into its cgroups and
 * releases it (the supervisor's stages idmap, cgroup-attach and go).
 * The environment is the command's. Errors: one channel line "E <stage> <errno>
 * <message>" on MSG_FD, exit 125 (127/126 when the command cannot be executed).
 */
#define _GNU_SOURCE
#define PYSANDBOX_STAGER
#include "init.c"

#include <fcntl.h>
#include <stdarg.h>
#include <linux/landlock.h>
#include <linux/filter.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <dirent.h>
#include <grp.h>
#include <malloc.h>
#include <sys/time.h>

#include "stager.h"

#define EXIT_SETUP 125
#define EXIT_NOEXEC 126
#define EXIT_NOTFOUND 127
#define MAX_ARGS 65536

struct op {
	uint32_t code, nargs;
	const char **arg;
	uint32_t *len;
};

static struct op *ops;
static size_t nops;
static unsigned char *program_text;
static int in_zygote; /* PID 1 cloned from a zygote: the program's pages are the zygote's too */
static int net_sock = -1; /* PID 1's end of the network helper's socket (stager.py _net_helper) */
static int kept_dir = -1; /* "keep_dir": what relative "write" paths are below (user limits) */
static int mask_source = -1; /* "keep_mask_source": the detached empty directory the masks show */
static pid_t last_helper = -1; /* the one-shot stager waits for it before it exits */
static int msg_fd = -1, go_fd = -1;
static const char *stage = "stager";
static char **command_argv;
static const char *run_cwd;
static long cpu_seconds = -1;
static int *source_fds;
static int nsources;
static char **cgroup_tasks;
static int ncgroups;

/* ---- reporting ------------------------------------------------------------------ */

static void clean(char *text)
{
	for (; *text; text++)
		if (*text == '\t' || *text == '\n')
			*text = ' ';
}

static void send_error(int err, const char *message)
{
	char line[1024], text[900];
	snprintf(text, sizeof(text), "%s", message);
	clean(text);
	snprintf(line, sizeof(line), CHANNEL_ERROR "\t%s\t%d\t%s\n", stage, err, text);
	say(msg_fd, line);
}

static void send_warning(const char *message)
{
	char line[1024], text[1000];
	snprintf(text, sizeof(text), "%s", message);
	clean(text);
	snprintf(line, sizeof(line), CHANNEL_WARNING "\t%s\n", text);
	say(msg_fd, line);
}

/* "<stage>: <what>: <strerror>" (or "<stage>: <label>: <what>: ..." when the
 * operation's own label differs from the stage), then exit 125: the Python stages'
 * SetupError text, as stages.report_failure sends it. */
static __attribute__((noreturn)) void fail(int err, const char *label, const char *fmt, ...)
{
	char what[700], message[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	const char *sep = what[0] ? ": " : "";
	if (label && strcmp(label, stage) != 0)
		snprintf(message, sizeof(message), "%s: %s: %s%s%s", stage, label, what, sep,
			 err ? strerror(err) : "failed");
	else
		snprintf(message, sizeof(message), "%s: %s%s%s", stage, what, sep, err ? strerror(err) : "failed");
	send_error(err, message);
	_exit(EXIT_SETUP);
}

#define CHECK(rc, label, ...) do { if ((rc) < 0) fail(errno, label, __VA_ARGS__); } while (0)

/* ---- the program ---------------------------------------------------------------- */

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t num(const struct op *op, uint32_t i)
{
	if (i >= op->nargs || op->len[i] != 8)
		fail(EINVAL, NULL, "program: argument %u of operation %u is not a number", i, op->code);
	const unsigned char *p = (const unsigned char *)op->arg[i];
	uint64_t v = 0;
	for (int b = 7; b >= 0; b--)
		v = v << 8 | p[b];
	return v;
}

static const char *str(const struct op *op, uint32_t i)
{
	if (i >= op->nargs)
		fail(EINVAL, NULL, "program: operation %u has no argument %u", op->code, i);
	return op->arg[i];
}

/* Reads the whole program and splits it into operations; every length is checked
 * against the buffer (the program comes from the supervisor, but a short read or a
 * bug must end in an error, not a wild pointer). */
static void load_program(int fd)
{
	size_t size = 0, cap = 65536;
	int seekable = 1;
	unsigned char *buf = malloc(cap);
	for (;;) {
		if (size == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		if (!buf)
			fail(ENOMEM, NULL, "program");
		/* pread: the sealed memfd is shared by concurrent runs (no common offset); a
		 * pipe is read as a stream */
		ssize_t n = seekable ? pread(fd, buf + size, cap - size, (off_t)size) : read(fd, buf + size, cap - size);
		if (n < 0 && errno == ESPIPE && seekable) {
			seekable = 0;
			continue;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail(errno, NULL, "read the program");
		}
		if (n == 0)
			break;
		size += (size_t)n;
	}
	close(fd);
	program_text = buf;
	if (size < 8 || memcmp(buf, STAGER_MAGIC, 4) != 0 || get32(buf + 4) != STAGER_VERSION)
		fail(EINVAL, NULL, "not a program of this version (%zu bytes)", size);
	size_t pos = 8, count = 0, capops = 64;
	ops = calloc(capops, sizeof(*ops));
	while (pos < size) {
		if (count == capops) {
			capops *= 2;
			ops = realloc(ops, capops * sizeof(*ops));
		}
		if (!ops || pos + 8 > size)
			fail(EINVAL, NULL, "truncated program at %zu", pos);
		struct op *op = &ops[count];
		memset(op, 0, sizeof(*op));
		op->code = get32(buf + pos);
		op->nargs = get32(buf + pos + 4);
		pos += 8;
		/* every case of the interpreter may read its fixed arguments without looking */
		if (op->code >= OP_COUNT || op->nargs < op_min_args[op->code])
			fail(EINVAL, NULL, "operation %u with %u arguments", op->code, op->nargs);
		if (op->nargs > MAX_ARGS || op->nargs > (size - pos) / 5)
			fail(EINVAL, NULL, "operation %u has %u arguments", op->code, op->nargs);
		op->arg = calloc(op->nargs + 1, sizeof(*op->arg));
		op->len = calloc(op->nargs + 1, sizeof(*op->len));
		if (!op->arg || !op->len)
			fail(ENOMEM, NULL, "program");
		for (uint32_t i = 0; i < op->nargs; i++) {
			if (pos + 4 > size)
				fail(EINVAL, NULL, "truncated program at %zu", pos);
			uint32_t len = get32(buf + pos);
			pos += 4;
			/* every argument is stored with a NUL after it (strings and numbers alike) */
			if (len == 0 || pos + len > size || buf[pos + len - 1] != 0)
				fail(EINVAL, NULL, "bad argument at %zu", pos);
			op->arg[i] = (const char *)buf + pos;
			op->len[i] = len - 1;
			pos += len;
		}
		count++;
	}
	nops = count;
}

/* ---- helpers the operations share ---------------------------------------------- */

static void write_file(const char *path, const char *data, size_t len, int flags, mode_t mode, const char *label)
{
	/* a relative path is below the kept directory: the sandbox's /proc/sys/user (user_limits.py) */
	int fd = openat(path[0] == '/' ? AT_FDCWD : kept_dir, path, flags | O_WRONLY | O_CLOEXEC, mode);
	CHECK(fd, label, "%s%s", path[0] == '/' ? "" : "/proc/sys/user/", path);
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail(errno, label, "write %s%s", path[0] == '/' ? "" : "/proc/sys/user/", path);
		}
		data += n;
		len -= (size_t)n;
	}
	close(fd);
}

/* mkdir -p. The whole path is tried first: mount points sit mostly in directories made a
 * moment ago (/newroot/etc for each /etc entry), so one mkdir answers EEXIST instead of one
 * per component; only ENOENT walks the components from the top, in one buffer. */
static void mkdirs(const char *path, mode_t mode)
{
	if (mkdir(path, mode) == 0 || errno == EEXIST)
		return;
	if (errno != ENOENT)
		fail(errno, "mkdir", "%s", path);
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			fail(errno, "mkdir", "%s", buf);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		fail(errno, "mkdir", "%s", buf);
}

static void mount_point(const char *path, int is_dir)
{
	if (is_dir) {
		mkdirs(path, 0755);
		return;
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		mkdirs(dir, 0755);
	}
	struct stat st;
	if (lstat(path, &st) < 0) {
		int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		CHECK(fd, "mknod", "%s", path);
		close(fd);
	}
}

static unsigned long mount_flags_of(const char *path)
{
	/* the flags the kernel locks on a mount inherited from a more privileged namespace */
	struct statvfs st;
	unsigned long flags = 0;
	if (statvfs(path, &st) < 0)
		return 0;
	if (st.f_flag & ST_NOEXEC)
		flags |= MS_NOEXEC;
	if (st.f_flag & ST_NOATIME)
		flags |= MS_NOATIME;
	if (st.f_flag & ST_NODIRATIME)
		flags |= MS_NODIRATIME;
	if (st.f_flag & ST_RELATIME)
		flags |= MS_RELATIME;
	if (st.f_flag & ST_RDONLY)
		flags |= MS_RDONLY;
	return flags;
}

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#endif
#ifndef MOUNT_ATTR_NOEXEC
#define MOUNT_ATTR_NOEXEC 0x8
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

struct mount_attr_v0 {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* mnt.restrict: nosuid, nodev (and read-only) recursively */
static void restrict_mount(const char *path, int readonly, const char *label)
{
	struct mount_attr_v0 attr = {MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0), 0, 0, 0};
	if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof(attr)) == 0)
		return;
	unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | mount_flags_of(path) | (readonly ? MS_RDONLY : 0);
	CHECK(mount(NULL, path, NULL, flags, NULL), label, "%s", path);
}

static void target_in_root(const char *root, const char *path, int is_dir)
{
	char buf[4096], done[4096] = "";
	snprintf(buf, sizeof(buf), "%s", path);
	int fd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	CHECK(fd, "mount-target", "%s", root);
	char *save = NULL;
	char *part = strtok_r(buf, "/", &save);
	while (part) {
		char *next = strtok_r(NULL, "/", &save);
		int last = next == NULL;
		size_t used = strlen(done);
		snprintf(done + used, sizeof(done) - used, "/%s", part);
		struct stat st;
		if (fstatat(fd, part, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				fail(errno, "mount-target", "%s", path);
			int rc;
			if (last && !is_dir) {
				rc = openat(fd, part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
				if (rc >= 0)
					close(rc);
			} else {
				rc = mkdirat(fd, part, 0755);
			}
			CHECK(rc, "mount-target", "%s", path);
			CHECK(fstatat(fd, part, &st, AT_SYMLINK_NOFOLLOW), "mount-target", "%s", path);
		}
		if (S_ISLNK(st.st_mode))
			fail(ELOOP, "mount-target", "%s: there is a symlink at %s; refusing to mount through it", path, done);
		if (!last) {
			int nfd = openat(fd, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			CHECK(nfd, "mount-target", "%s", path);
			close(fd);
			fd = nfd;
		}
		part = next;
	}
	close(fd);
}

static int on_writable_mount(const char *path)
{
	struct statvfs vfs;
	return statvfs(path, &vfs) == 0 && !(vfs.f_flag & ST_RDONLY);
}

static int is_null_device(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(1, 3);
}

/* The entries of a directory besides . and .., or -1 when it cannot be read. */
static int count_entries(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int entries = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			entries++;
	closedir(d);
	return entries;
}

/* mnt._op_keep_mask_source: a detached read-only copy of an empty directory of the scratch,
 * taken before the pivot puts the scratch out of reach */
static void keep_mask_source(const char *path)
{
	int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, 1 /* OPEN_TREE_CLONE */ | O_CLOEXEC);
	CHECK(fd, "mask", "open_tree %s", path);
	struct mount_attr_v0 attr = {MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 0, 0, 0};
	CHECK(syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)), "mask", "mount_setattr %s", path);
	mask_source = fd;
}

/* A read-only path that is also a masked directory is an empty read-only mount with
 * nothing below it already: its read-only bind would be a mount more and nothing else. */
static int masked_directory(const struct op *op, uint32_t nmasked, const char *path)
{
	for (uint32_t i = 1; i <= nmasked; i++) {
		struct stat st;
		if (strcmp(str(op, i), path) == 0)
			return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && !on_writable_mount(path);
	}
	return 0;
}

/* mnt._mask: masked paths (a directory under an empty read-only directory, anything else
 * under the null device, checked before and after the bind), then read-only paths */
static void mask_paths(const struct op *op)
{
	uint32_t nmasked = (uint32_t)num(op, 0);
	if (nmasked >= op->nargs)
		fail(EINVAL, "mask", "program: %u masked paths in %u arguments", nmasked, op->nargs);
	int null_fd = open("/dev/null", O_PATH | O_NOFOLLOW | O_CLOEXEC);
	CHECK(null_fd, "mask", "/dev/null");
	struct stat st;
	CHECK(fstat(null_fd, &st), "mask", "/dev/null");
	if (!is_null_device(&st))
		fail(0, "mask", "/dev/null is not the null device");
	char null_src[64], empty_src[64];
	snprintf(null_src, sizeof(null_src), "/proc/self/fd/%d", null_fd);
	/* Every masked directory shows one empty read-only directory: the scratch's, kept by
	 * keep_mask_source (a tmpfs only where none was kept), moved over the first and bound
	 * over the others. A superblock per mask cost its creation and, at the sandbox's end,
	 * a teardown with the memory cgroup's shrinker reparenting; a bind is as empty and as
	 * unwritable. */
	int empty_fd = -1;
	for (uint32_t i = 1; i <= nmasked; i++) {
		const char *path = str(op, i);
		if (lstat(path, &st) < 0) {
			if (errno == ENOENT)
				continue;
			fail(errno, "mask", "%s", path);
		}
		if (S_ISDIR(st.st_mode) && empty_fd >= 0) {
			CHECK(mount(empty_src, path, NULL, MS_BIND, NULL), "mask", "%s", path);
			struct stat check, empty;
			if (stat(path, &check) < 0 || fstat(empty_fd, &empty) < 0 || check.st_dev != empty.st_dev
			    || check.st_ino != empty.st_ino || on_writable_mount(path))
				fail(0, "mask", "%s is not masked by the empty directory after the bind", path);
		} else if (S_ISDIR(st.st_mode)) {
			if (mask_source >= 0) {
				CHECK(syscall(SYS_move_mount, mask_source, "", AT_FDCWD, path, 0x4 /* MOVE_MOUNT_F_EMPTY_PATH */),
				      "mask", "%s", path);
			} else {
				CHECK(mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
					    "size=0,mode=0555"), "mask", "%s", path);
			}
			empty_fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			CHECK(empty_fd, "mask", "%s", path);
			snprintf(empty_src, sizeof(empty_src), "/proc/self/fd/%d", empty_fd);
			if (count_entries(empty_src) != 0 || on_writable_mount(path))
				fail(0, "mask", "%s is not an empty read-only directory after the mask", path);
		} else if (S_ISLNK(st.st_mode)) {
			continue;
		} else {
			CHECK(mount(null_src, path, NULL, MS_BIND, NULL), "mask", "%s", path);
			struct stat check;
			if (stat(path, &check) < 0 || !is_null_device(&check))
				fail(0, "mask", "%s is not masked by /dev/null after the bind", path);
		}
	}
	close(null_fd);
	if (empty_fd >= 0)
		close(empty_fd);
	if (mask_source >= 0) {
		close(mask_source); /* its descriptor outlives the move_mount */
		mask_source = -1;
	}
	for (uint32_t i = nmasked + 1; i < op->nargs; i++) {
		const char *path = str(op, i);
		if (access(path, F_OK) < 0 || masked_directory(op, nmasked, path))
			continue;
		CHECK(mount(path, path, NULL, MS_BIND | MS_REC, NULL), "readonly-path", "%s", path);
		restrict_mount(path, 1, "readonly-path");
	}
}

/* mnt._sanitize_proc_stat: a copy of /proc/stat with the intr and softirq counters
 * zeroed, bound read-only over it (the copy lives on the scratch tmpfs) */
static void proc_stat(const char *path, const char *copy)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd, "proc-stat", "%s", path);
	size_t cap = 1 << 16, size = 0;
	char *in = malloc(cap);
	for (;;) {
		if (size + 1 >= cap)
			in = realloc(in, cap *= 2);
		if (!in)
			fail(ENOMEM, "proc-stat", "%s", path);
		ssize_t n = read(fd, in + size, cap - size - 1);
		CHECK(n, "proc-stat", "%s", path);
		if (n == 0)
			break;
		size += (size_t)n;
	}
	close(fd);
	in[size] = 0;
	char *out = malloc(size + 1);
	size_t o = 0;
	char *line = in;
	while (*line) {
		char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		int zero = (len > 5 && strncmp(line, "intr ", 5) == 0) || (len > 8 && strncmp(line, "softirq ", 8) == 0);
		if (zero) {
			const char *name = line[0] == 'i' ? "intr" : "softirq";
			size_t nlen = strlen(name);
			memcpy(out + o, name, nlen);
			o += nlen;
			/* one "0" per field, so parsers see as many fields */
			int in_field = 0;
			for (size_t i = nlen; i < len; i++) {
				if (line[i] == ' ') {
					in_field = 0;
				} else if (!in_field) {
					in_field = 1;
					out[o++] = ' ';
					out[o++] = '0';
				}
			}
		} else {
			memcpy(out + o, line, len);
			o += len;
		}
		if (!end)
			break;
		out[o++] = '\n';
		line = end + 1;
	}
	write_file(copy, out, o, O_CREAT | O_TRUNC, 0444, "proc-stat");
	free(in);
	free(out);
	CHECK(mount(copy, path, NULL, MS_BIND, NULL), "proc-stat", "%s", path);
	CHECK(mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL),
	      "proc-stat", "%s", path);
}

static void attach(int fd, const char *target, int is_dir)
{
	mount_point(target, is_dir);
	CHECK(syscall(SYS_move_mount, fd, "", AT_FDCWD, target, 0x4 /* MOVE_MOUNT_F_EMPTY_PATH */), "bind", "%s", target);
}

/* net.bring_up_loopback: a new network namespace holds only lo, and the kernel makes it down */
static void loopback_up(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(fd, "loopback", "socket");
	struct ifreq req;
	memset(&req, 0, sizeof(req));
	strcpy(req.ifr_name, "lo");
	CHECK(ioctl(fd, SIOCGIFFLAGS, &req), "loopback", "SIOCGIFFLAGS lo");
	req.ifr_flags |= IFF_UP | IFF_RUNNING;
	CHECK(ioctl(fd, SIOCSIFFLAGS, &req), "loopback", "SIOCSIFFLAGS lo");
	close(fd);
}

/* One byte, with a descriptor when fd >= 0 (SCM_RIGHTS); init.c's receive_fd takes it */
static ssize_t send_fd(int sock, char byte, int fd)
{
	union {
		struct cmsghdr align;
		char data[CMSG_SPACE(sizeof(int))];
	} control_data;
	memset(&control_data, 0, sizeof(control_data));
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		msg.msg_control = control_data.data;
		msg.msg_controllen = sizeof(control_data.data);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

/* "write": path, data, open flags, mode, label */
static void write_op(const struct op *op)
{
	write_file(str(op, 0), str(op, 1), op->len[1], (int)num(op, 2), (mode_t)num(op, 3), str(op, 4));
}

/* ---- the command's layers ------------------------------------------------------ */

/* /proc/self/status, read once per check (each read makes the kernel format all of it) */
static char status_text[16384];

static int read_status(void)
{
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t size = 0;
	for (;;) {
		ssize_t n = read(fd, status_text + size, sizeof(status_text) - 1 - size);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size += (size_t)n;
	}
	close(fd);
	status_text[size] = 0;
	return size ? 0 : -1;
}

static int status_field(const char *name, char *value, size_t size)
{
	char *buf = status_text;
	if (!buf[0])
		return -1;
	size_t len = strlen(name);
	for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, name, len) == 0 && line[len] == ':') {
			char *v = line + len + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t l = strcspn(v, "\n");
			if (l >= size)
				l = size - 1;
			memcpy(value, v, l);
			value[l] = 0;
			return 0;
		}
	}
	return -1;
}

static void verify_fail(const char *layer, const char *fmt, ...)
{
	char what[700], message[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	/* verify's own words (verify._fail): stage "verify: <layer>" */
	char full_stage[64];
	snprintf(full_stage, sizeof(full_stage), "verify: %s", layer);
	stage = full_stage;
	snprintf(message, sizeof(message), "verify: %s: %s", layer, what);
	send_error(0, message);
	_exit(EXIT_SETUP);
}

/* verify.check for the expectations the program carries: arguments are key/value pairs */
static void verify(const struct op *op)
{
	char value[128];
	if (read_status() < 0)
		status_text[0] = 0; /* every status expectation then fails: cannot read */
	for (uint32_t i = 0; i + 1 < op->nargs; i += 2) {
		const char *key = str(op, i);
		const char *want = str(op, i + 1);
		if (strncmp(key, "status:", 7) == 0) {
			/* a /proc/self/status field, compared as text or as a hex mask */
			const char *field = key + 7;
			const char *layer = strncmp(field, "Cap", 3) == 0 ? "capabilities"
					    : strcmp(field, "NoNewPrivs") == 0 ? "no_new_privs" : "seccomp";
			if (status_field(field, value, sizeof(value)) < 0)
				verify_fail(layer, "cannot read %s from /proc/self/status", field);
			if (strncmp(field, "Cap", 3) == 0) {
				unsigned long long have = strtoull(value, NULL, 16), wanted = strtoull(want, NULL, 16);
				if (have != wanted)
					verify_fail(layer, "%s is %#llx, expected %#llx", field, have, wanted);
			} else if (strcmp(value, want) != 0) {
				verify_fail(layer, "%s is %s, expected %s", field, value, want);
			}
		} else if (strcmp(key, "map") == 0) {
			char path[64], buf[4096];
			snprintf(path, sizeof(path), "/proc/self/%s", want);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				verify_fail("id maps", "cannot read %s: %s", path, strerror(errno));
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			buf[n > 0 ? n : 0] = 0;
			for (char *line = buf; *line;) {
				long long inside, outside, count;
				if (sscanf(line, "%lld %lld %lld", &inside, &outside, &count) != 3)
					verify_fail("id maps", "unreadable %s line", want);
				if (outside <= 0 && 0 < outside + count)
					verify_fail("id maps", "%s maps inside id %lld onto host id 0", want, inside - outside);
				char *nl = strchr(line, '\n');
				if (!nl)
					break;
				line = nl + 1;
			}
		} else if (strcmp(key, "masked") == 0) {
			struct stat st;
			if (stat(want, &st) < 0 || is_null_device(&st))
				continue;
			if (S_ISDIR(st.st_mode)) {
				int entries = count_entries(want);
				if (entries < 0)
					continue;
				if (entries)
					verify_fail("masked paths", "%s is a directory with %d entries, expected it masked", want, entries);
				if (on_writable_mount(want))
					verify_fail("masked paths", "%s is an empty but writable directory, expected it read-only", want);
				continue;
			}
			int fd = open(want, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
			if (fd >= 0) {
				close(fd);
				verify_fail("masked paths", "%s can be opened for reading, expected it masked", want);
			}
		} else if (strcmp(key, "readonly") == 0) {
			struct stat st;
			if (stat(want, &st) < 0)
				continue;
			if (S_ISDIR(st.st_mode)) {
				if (on_writable_mount(want))
					verify_fail("readonly paths", "%s is on a writable mount", want);
				continue;
			}
			/* opened and closed at once, nothing is ever written */
			int fd = open(want, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
			if (fd >= 0) {
				close(fd);
				verify_fail("readonly paths", "%s can be opened for writing", want);
			}
			if (errno != EROFS && errno != EACCES && errno != EPERM)
				verify_fail("readonly paths", "%s: opening for writing failed with %s, expected EROFS or EACCES",
					    want, strerror(errno));
		} else if (strcmp(key, "landlock-list") == 0 || strcmp(key, "landlock-write") == 0) {
			int list = key[9] == 'l';
			int fd = open(want, (list ? O_RDONLY | O_DIRECTORY : O_WRONLY | O_NOCTTY | O_NONBLOCK) | O_CLOEXEC);
			if (fd >= 0) {
				close(fd);
				verify_fail("landlock", "the process is not Landlock-restricted: %s %s outside the allowed set "
					    "succeeded", list ? "listing" : "opening for writing", want);
			}
			if (errno != EACCES)
				verify_fail("landlock", "probe: %s %s failed with %s, expected EACCES",
					    list ? "listing" : "opening for writing", want, strerror(errno));
		} else if (strcmp(key, "fds") == 0) {
			/* only 0, 1, 2 and the channel may be open */
			DIR *d = opendir("/proc/self/fd");
			if (!d)
				verify_fail("descriptors", "cannot list /proc/self/fd: %s", strerror(errno));
			int own = dirfd(d);
			struct dirent *e;
			while ((e = readdir(d))) {
				if (e->d_name[0] == '.')
					continue;
				int fd = atoi(e->d_name);
				if (fd <= 2 || fd == own || fd == msg_fd)
					continue;
				char link[64], target[256] = "?";
				snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
				ssize_t n = readlink(link, target, sizeof(target) - 1);
				target[n > 0 ? n : 1] = 0;
				verify_fail("descriptors", "fd %d (%s) is open, expected only 0, 1, 2, %d", fd, target, msg_fd);
			}
			closedir(d);
		}
	}
}

static void set_caps(uint64_t keep, uint64_t ambient)
{
	/* caps.apply: bounding set first (needs CAP_SETPCAP, still effective), then the
	 * ambient set cleared, then permitted/effective/inheritable exactly `keep`, then the
	 * ambient capabilities raised (they must be permitted and inheritable). After
	 * setresuid() with KEEP_CAPS the effective set is empty: it is raised from the
	 * permitted set first (capset may raise effective within permitted). */
	struct __user_cap_header_struct current_header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct current[2];
	CHECK(syscall(SYS_capget, &current_header, current), "capabilities", "capget");
	if (current[0].effective != current[0].permitted || current[1].effective != current[1].permitted) {
		current[0].effective = current[0].permitted;
		current[1].effective = current[1].permitted;
		CHECK(syscall(SYS_capset, &current_header, current), "capabilities", "raising effective");
	}
	for (int cap = 0; cap <= 63; cap++) {
		if (keep >> cap & 1)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break;
			fail(errno, "capabilities", "PR_CAPBSET_DROP %d", cap);
		}
	}
	CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "capabilities", "clear the ambient set");
	struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	for (int i = 0; i < 2; i++) {
		data[i].effective = data[i].permitted = data[i].inheritable = (uint32_t)(keep >> (32 * i));
	}
	CHECK(syscall(SYS_capset, &header, data), "capabilities", "capset");
	for (int cap = 0; cap <= 63; cap++)
		if (ambient >> cap & 1)
			CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), "capabilities", "ambient %d", cap);
}

struct ruleset_attr_v3 {
	uint64_t handled_access_fs, handled_access_net, scoped;
};

struct path_beneath {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

struct net_port {
	uint64_t allowed_access, port;
};

/* landlock.apply with every mask computed by the supervisor for this kernel's ABI:
 * args handled_fs, handled_net, scoped, attr_size, file_rights, then rules as
 * (kind "p" path access flags | kind "n" right port) */
static void landlock(const struct op *op)
{
	struct ruleset_attr_v3 attr = {num(op, 0), num(op, 1), num(op, 2)};
	size_t attr_size = (size_t)num(op, 3);
	uint64_t file_rights = num(op, 4);
	int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	CHECK(ruleset, "landlock", "landlock_create_ruleset");
	for (uint32_t i = 5; i < op->nargs;) {
		const char *kind = str(op, i);
		if (kind[0] == 'p' && i + 3 < op->nargs) {
			const char *path = str(op, i + 1);
			uint64_t access = num(op, i + 2), flags = num(op, i + 3);
			i += 4;
			int fd = open(path, O_PATH | O_CLOEXEC);
			if (fd < 0) {
				char text[600];
				if (flags & 2) /* listed in the profile */
					fail(errno, "landlock", "%s: %s (listed in the profile)", path, strerror(errno));
				if (flags & 1) { /* essential */
					snprintf(text, sizeof(text), "landlock: %s: %s; no rule added", path, strerror(errno));
					send_warning(text);
				}
				continue;
			}
			struct stat st;
			if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
				access &= file_rights;
			struct path_beneath rule = {access, fd};
			CHECK(syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0), "landlock",
			      "landlock_add_rule %s", path);
			close(fd);
		} else if (kind[0] == 'n' && i + 2 < op->nargs) {
			struct net_port rule = {num(op, i + 1), num(op, i + 2)};
			i += 3;
			CHECK(syscall(SYS_landlock_add_rule, ruleset, 2 /* LANDLOCK_RULE_NET_PORT */, &rule, 0), "landlock",
			      "landlock_add_rule port %llu", (unsigned long long)rule.port);
		} else {
			fail(EINVAL, "landlock", "bad rule in the program");
		}
	}
	CHECK(syscall(SYS_landlock_restrict_self, ruleset, 0), "landlock", "landlock_restrict_self");
	close(ruleset);
}

static void seccomp_filter(const struct op *op)
{
	/* args: BPF, flags, filters expected after it */
	if (op->len[0] == 0 || op->len[0] % 8 || op->len[0] / 8 > 4096)
		fail(EINVAL, "seccomp", "invalid BPF program (%u bytes)", op->len[0]);
	struct sock_fprog prog = {.len = (unsigned short)(op->len[0] / 8), .filter = (struct sock_filter *)op->arg[0]};
	CHECK(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned int)num(op, 1), &prog), "seccomp", "");
}

static void seccomp_installed(uint64_t filters)
{
	/* verify.seccomp_installed: open/read/close only, which the command's exec needs anyway */
	char value[32] = "unknown", want[32];
	if (read_status() < 0)
		status_text[0] = 0;
	if (status_field("Seccomp", value, sizeof(value)) < 0 || strcmp(value, "2") != 0)
		verify_fail("seccomp", "Seccomp mode is %s after installing the filter, expected 2", value);
	snprintf(want, sizeof(want), "%llu", (unsigned long long)filters);
	if (status_field("Seccomp_filters", value, sizeof(value)) < 0 || strcmp(value, want) != 0)
		verify_fail("seccomp", "%s seccomp filters after installing, expected %s", value, want);
}

static void exec_command(void)
{
	execvpe(command_argv[0], command_argv, environ);
	int err = errno;
	char message[600];
	snprintf(message, sizeof(message), "%s: %s", command_argv[0], strerror(err));
	stage = "exec";
	send_error(err, message);
	_exit(err == ENOENT || err == ENOTDIR ? EXIT_NOTFOUND : EXIT_NOEXEC);
}

static void supervisor_alive(void)
{
	/* Changing credentials clears the parent-death signal: set again, then make sure the
	 * supervisor did not die in between (its end of the channel would be gone). */
	CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig", "");
	struct pollfd p = {.fd = msg_fd, .events = 0};
	if (poll(&p, 1, 0) > 0)
		_exit(EXIT_SETUP);
}

/* A write of the release; on failure PID 1 is killed (the supervisor reaps it) and the
 * error goes on the channel */
static int release_write(long pid, const char *path, const char *text, const char *label)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	size_t len = strlen(text);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
		int err = errno;
		char message[600];
		if (fd >= 0)
			close(fd);
		kill((pid_t)pid, SIGKILL);
		if (strcmp(label, "cgroup") == 0)
			snprintf(message, sizeof(message), "%s: %s: attach to %s: %s", stage, label, path, strerror(err));
		else
			snprintf(message, sizeof(message), "%s: %s: %s", stage, label, strerror(err));
		send_error(err, message);
		return -1;
	}
	close(fd);
	return 0;
}

/* ---- the interpreter --------------------------------------------------------- */

static void run(size_t from)
{
	pid_t command = -1;
	for (size_t index = from; index < nops; index++) {
		const struct op *op = &ops[index];
		switch (op->code) {
		case OP_STAGE:
			stage = str(op, 0);
			break;
		case OP_PDEATHSIG:
			CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig", "");
			break;
		case OP_JOIN_CGROUPS:
			for (int i = 0; i < ncgroups; i++)
				write_file(cgroup_tasks[i], "0", 1, 0, 0, NULL);
			break;
		case OP_WAIT_GO: {
			char byte = 0;
			ssize_t n;
			do
				n = read(go_fd, &byte, 1);
			while (n < 0 && errno == EINTR);
			if (n != 1 || byte != 'G')
				_exit(EXIT_SETUP);
			close(go_fd);
			break;
		}
		case OP_ENTER_IDS:
			if (num(op, 0))
				CHECK(syscall(SYS_setgroups, 0, NULL), "setgroups", "");
			CHECK(syscall(SYS_setresgid, (gid_t)num(op, 2), (gid_t)num(op, 2), (gid_t)num(op, 2)), "setresuid", "");
			CHECK(syscall(SYS_setresuid, (uid_t)num(op, 1), (uid_t)num(op, 1), (uid_t)num(op, 1)), "setresuid", "");
			supervisor_alive();
			break;
		case OP_UNSHARE:
			CHECK(unshare((int)num(op, 0)), "unshare", "");
			break;
		case OP_SETHOSTNAME:
			CHECK(sethostname(str(op, 0), op->len[0]), "sethostname", "");
			break;
		case OP_WRITE:
			write_op(op);
			break;
		case OP_LOOPBACK:
			loopback_up();
			break;
		case OP_MOUNT: {
			/* source, target, fstype, flags, data, label ("" = none) */
			const char *src = op->len[0] ? str(op, 0) : NULL, *fstype = op->len[2] ? str(op, 2) : NULL;
			const char *data = op->len[4] ? str(op, 4) : NULL;
			unsigned long flags = (unsigned long)num(op, 3);
			if (mount(src, str(op, 1), fstype, flags, data) < 0) {
				/* native.mount_detail: a bind names its source as the host sees it */
				if ((flags & MS_BIND) && !(flags & MS_REMOUNT) && src)
					fail(errno, str(op, 5), "%s on %s",
					     strncmp(src, "/oldroot/", 9) == 0 ? src + 8 : src, str(op, 1));
				fail(errno, str(op, 5), "%s", str(op, 1));
			}
			break;
		}
		case OP_MOUNT_SYSFS: {
			/* a fresh sysfs needs a network namespace of our own; else a read-only bind */
			const char *target = str(op, 0);
			if (mount("sysfs", target, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
				CHECK(mount(str(op, 1), target, NULL, MS_BIND | MS_REC, NULL), "mount-sys", "%s", target);
				restrict_mount(target, 1, "mount-sys");
			}
			break;
		}
		case OP_RESTRICT:
			restrict_mount(str(op, 0), (int)num(op, 1), str(op, 2));
			break;
		case OP_MKDIR:
			if (mkdir(str(op, 0), (mode_t)num(op, 1)) < 0 && !(errno == EEXIST && num(op, 2)))
				fail(errno, "mkdir", "%s", str(op, 0));
			break;
		case OP_MKDIRS:
			mkdirs(str(op, 0), (mode_t)num(op, 1));
			break;
		case OP_MOUNT_POINT:
			mount_point(str(op, 0), (int)num(op, 1));
			break;
		case OP_SYMLINK:
			CHECK(symlink(str(op, 0), str(op, 1)), "symlink", "%s", str(op, 1));
			break;
		case OP_PIVOT:
			CHECK(syscall(SYS_pivot_root, str(op, 0), str(op, 1)), "pivot_root", "");
			break;
		case OP_CHDIR:
			CHECK(chdir(str(op, 0)), "chdir", "%s", str(op, 0));
			break;
		case OP_UMOUNT:
			CHECK(umount2(str(op, 0), (int)num(op, 1)), str(op, 2), "");
			break;
		case OP_ATTACH: {
			uint64_t which = num(op, 0);
			if ((int)which >= nsources)
				fail(EBADF, "bind", "source %llu of %d", (unsigned long long)which, nsources);
			attach(source_fds[which], str(op, 1), (int)num(op, 2));
			break;
		}
		case OP_TARGET_IN_ROOT:
			target_in_root(str(op, 0), str(op, 1), (int)num(op, 2));
			break;
		case OP_PROC_STAT:
			proc_stat(str(op, 0), str(op, 1));
			break;
		case OP_KEEP_MASK_SOURCE:
			keep_mask_source(str(op, 0));
			break;
		case OP_KEEP_DIR:
			/* mnt._op_keep_dir: the sandbox's /proc/sys/user, before the masks */
			kept_dir = open(str(op, 0), O_PATH | O_DIRECTORY | O_CLOEXEC);
			CHECK(kept_dir, "mount", "keep %s", str(op, 0));
			break;
		case OP_MASK:
			mask_paths(op);
			break;
		case OP_CLOSE_HOST_FDS:
			/* everything but stdio and the channel: the bind sources, whatever the
			 * supervisor's process held */
			for (int i = 0; i < nsources; i++)
				close(source_fds[i]);
			nsources = 0;
			if (msg_fd > 3)
				syscall(SYS_close_range, 3, msg_fd - 1, 0);
			syscall(SYS_close_range, msg_fd + 1, ~0U, 0);
			break;
		case OP_FORK:
			command = fork();
			CHECK(command, "fork", "");
			if (command > 0) {
				/* PID 1 goes on after the command's operations */
				while (index + 1 < nops && ops[index + 1].code != OP_INIT)
					index++;
			}
			break;
		case OP_SIGNALS: {
			/* The command starts with every signal at its default and none blocked.
			 * exec keeps ignored signals and the mask, so whatever the supervisor set
			 * (a Python process ignores SIGPIPE and SIGXFSZ; the stager's own glibc
			 * leaves its two real-time signals ignored) or its caller set would reach
			 * the command otherwise. The raw call: glibc refuses 32 and 33. */
			struct {
				void *handler;
				unsigned long flags;
				void *restorer;
				unsigned long mask;
			} old, dfl = {SIG_DFL, 0, NULL, 0};
			for (int sig = 1; sig <= 64; sig++) {
				if (sig == SIGKILL || sig == SIGSTOP)
					continue;
				if (syscall(SYS_rt_sigaction, sig, NULL, &old, sizeof(old.mask)) == 0 && old.handler != SIG_DFL)
					CHECK(syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask)), "rt_sigaction", "");
			}
			sigset_t none;
			sigemptyset(&none);
			CHECK(sigprocmask(SIG_SETMASK, &none, NULL), "sigprocmask", "");
			if (num(op, 0))
				CHECK(setsid(), "setsid", "");
			break;
		}
		case OP_BECOME_IDS:
			/* uid, gid, keep capabilities across setresuid */
			if (num(op, 2) && num(op, 0) != 0)
				CHECK(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keepcaps", "");
			CHECK(syscall(SYS_setresgid, (gid_t)num(op, 1), (gid_t)num(op, 1), (gid_t)num(op, 1)), "setresuid", "");
			CHECK(syscall(SYS_setresuid, (uid_t)num(op, 0), (uid_t)num(op, 0), (uid_t)num(op, 0)), "setresuid", "");
			break;
		case OP_RLIMITS:
			for (uint32_t i = 0; i + 2 < op->nargs; i += 3) {
				struct rlimit limit = {(rlim_t)num(op, i + 1), (rlim_t)num(op, i + 2)};
				CHECK(setrlimit((int)num(op, i), &limit), "rlimits", "");
			}
			break;
		case OP_CPU_TIME:
			if (cpu_seconds >= 0) {
				struct rlimit limit;
				CHECK(getrlimit(RLIMIT_CPU, &limit), "cpu-time", "RLIMIT_CPU");
				rlim_t soft = (rlim_t)cpu_seconds, hard = (rlim_t)cpu_seconds + 1;
				if (limit.rlim_max != RLIM_INFINITY && soft > limit.rlim_max)
					soft = limit.rlim_max;
				if (limit.rlim_cur != RLIM_INFINITY && soft > limit.rlim_cur)
					soft = limit.rlim_cur;
				if (limit.rlim_max != RLIM_INFINITY && hard > limit.rlim_max)
					hard = limit.rlim_max;
				struct rlimit wanted = {soft, hard};
				CHECK(setrlimit(RLIMIT_CPU, &wanted), "cpu-time", "RLIMIT_CPU %ld", cpu_seconds);
			}
			break;
		case OP_CWD:
			if (chdir(run_cwd) < 0)
				fail(errno, "chdir", "cwd %s", run_cwd);
			break;
		case OP_CLOSE_FDS:
			if (msg_fd > 3)
				syscall(SYS_close_range, 3, msg_fd - 1, 0);
			syscall(SYS_close_range, msg_fd + 1, ~0U, 0);
			break;
		case OP_CAPS:
			set_caps(num(op, 0), num(op, 1));
			break;
		case OP_NO_NEW_PRIVS:
			CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs", "");
			break;
		case OP_LANDLOCK:
			landlock(op);
			break;
		case OP_WARN:
			send_warning(str(op, 0));
			break;
		case OP_VERIFY:
			verify(op);
			break;
		case OP_SECCOMP:
			seccomp_filter(op);
			break;
		case OP_SECCOMP_CHECK:
			seccomp_installed(num(op, 0));
			break;
		case OP_EXEC:
			exec_command();
			break;
		case OP_NET_HELPER:
			break; /* the stager's (start_run, net_helper_main) */
		case OP_CLOSE_KEPT:
			close(kept_dir);
			kept_dir = -1;
			break;
		case OP_NET_JOIN: {
			if (net_sock < 0) {
				/* no helper for this run (net_inline): PID 1 makes the namespace at the
				 * helper's point in the order, still before the user limits; owned by
				 * its user namespace and charged to its cgroups, as the helper's is */
				stage = "unshare";
				CHECK(unshare(CLONE_NEWNET), "unshare", "network namespace");
				stage = "loopback";
				loopback_up();
				break;
			}
			int netns = receive_fd(net_sock); /* init.c's */
			if (netns < 0)
				_exit(EXIT_SETUP); /* the helper failed: it said why on the channel */
			CHECK(setns(netns, CLONE_NEWNET), "setns", "the helper's network namespace");
			close(netns);
			close(net_sock);
			net_sock = -1;
			break;
		}
		case OP_INIT:
			if (command <= 0)
				_exit(EXIT_SETUP); /* the command's operations never reach here */
			/* PID 1 lives as long as the sandbox: it keeps nothing of the program. A
			 * zygote's clone shares those pages with the zygote until it writes them, and
			 * freeing them would write them: there it leaves them alone. */
			if (in_zygote)
				_exit(init_loop(command, msg_fd, -1));
			for (size_t i = 0; i < nops; i++) {
				free(ops[i].arg);
				free(ops[i].len);
			}
			free(ops);
			free(program_text);
			malloc_trim(0);
			_exit(init_loop(command, msg_fd, -1));
		default:
			fail(EINVAL, NULL, "unknown operation %u", op->code);
		}
	}
	_exit(EXIT_SETUP);
}

/* ---- one run: its arguments, the clone, the release ------------------------------ */

/* What one run brings besides the program (the one-shot command line, or one request to
 * the zygote): every string copied, so nothing points into an area that is reused. */
struct run_args {
	int msg_fd, go_fd, go_w, stdio[3];
	long cpu_seconds;
	char *cwd, *deny_setgroups, *uid_map, *gid_map;
	int nsources, ncgroups, nprocs;
	int *sources;
	char **cgroups, **procs, **argv, **envp;
	/* what a process started now would inherit from the supervisor (zygote requests) */
	int inherit, umask_value, nice_value, nlimits;
	/* PID 1 makes the network namespace itself, no helper (stager.py net_inline) */
	int net_inline;
	struct rlimit limits[RLIM_NLIMITS];
	int limit_resource[RLIM_NLIMITS];
};

static char **copy_strings(char **from, int n)
{
	char **out = calloc((size_t)n + 1, sizeof(char *));
	if (!out)
		fail(ENOMEM, NULL, "arguments");
	for (int i = 0; i < n; i++)
		if (!(out[i] = strdup(from[i])))
			fail(ENOMEM, NULL, "arguments");
	return out;
}

/* A descriptor field: a number (the one-shot stager's own descriptors) or "@K", the K-th
 * descriptor a zygote request carried; "-" is none. */
static int fd_field(const char *text, const int *passed, int npassed)
{
	if (strcmp(text, "-") == 0)
		return -1;
	if (text[0] == '@') {
		int k = atoi(text + 1);
		return passed && k >= 0 && k < npassed ? passed[k] : -2;
	}
	return atoi(text);
}

/* MSG_FD GO_FD CPU_SECONDS CWD STDIN STDOUT STDERR NSOURCES FD... NCGROUPS TASKS_FILE...
 * GO_W SETGROUPS UID_MAP GID_MAP NPROCS PROCS_FILE... -- ARGV... [--env ENV...]
 * [--inherit UMASK NICE NLIMITS (RESOURCE SOFT HARD)...]   (0 on success) */
/* A count field: digits only, and at most `room` (what is left of the request). -1 if not. */
static int count_field(const char *text, int room)
{
	char *end;
	errno = 0;
	long value = strtol(text, &end, 10);
	if (errno || end == text || *end || value < 0 || value > room)
		return -1;
	return (int)value;
}

static int parse_run(int argc, char **argv, const int *passed, int npassed, struct run_args *run_args)
{
	int i = 0;
	memset(run_args, 0, sizeof(*run_args));
	run_args->msg_fd = run_args->go_fd = -1; /* refuse_request writes to none before they are read */
	if (argc < 17) /* the fields up to "--", a count and a program */
		return -1;
	run_args->msg_fd = fd_field(argv[i++], passed, npassed);
	run_args->go_fd = fd_field(argv[i++], passed, npassed);
	run_args->cpu_seconds = strcmp(argv[i], "-") ? atol(argv[i]) : -1;
	i++;
	run_args->cwd = strdup(argv[i++]);
	for (int k = 0; k < 3; k++)
		run_args->stdio[k] = fd_field(argv[i++], passed, npassed);
	run_args->nsources = count_field(argv[i], argc - i - 2);
	i++;
	if (run_args->nsources < 0)
		return -1;
	run_args->sources = calloc((size_t)run_args->nsources + 1, sizeof(int));
	for (int k = 0; k < run_args->nsources; k++)
		run_args->sources[k] = fd_field(argv[i++], passed, npassed);
	run_args->ncgroups = count_field(argv[i], argc - i - 2);
	i++;
	if (run_args->ncgroups < 0)
		return -1;
	run_args->cgroups = copy_strings(argv + i, run_args->ncgroups);
	i += run_args->ncgroups;
	/* the release: GO_W ("-": the supervisor writes the maps and "G" itself), SETGROUPS
	 * ("deny" or "-"), UID_MAP, GID_MAP, NPROCS cgroup.procs files */
	if (i + 5 >= argc)
		return -1;
	run_args->go_w = fd_field(argv[i], passed, npassed);
	run_args->deny_setgroups = strdup(argv[i + 1]);
	run_args->uid_map = strdup(argv[i + 2]);
	run_args->gid_map = strdup(argv[i + 3]);
	run_args->nprocs = count_field(argv[i + 4], argc - i - 6);
	i += 5;
	if (run_args->nprocs < 0)
		return -1;
	run_args->procs = copy_strings(argv + i, run_args->nprocs);
	i += run_args->nprocs;
	/* "--", NCOMMAND and the command, then (zygote requests) "--env" NENV and the
	 * environment: counted, never delimited, so that a command's own "--env" is an argument */
	if (strcmp(argv[i], "--") != 0 || i + 2 >= argc)
		return -1;
	int ncommand = count_field(argv[i + 1], argc - i - 2);
	i += 2;
	if (ncommand <= 0)
		return -1;
	run_args->argv = copy_strings(argv + i, ncommand);
	i += ncommand;
	if (i < argc && strcmp(argv[i], "--env") == 0) {
		if (i + 1 >= argc)
			return -1;
		int nenv = count_field(argv[i + 1], argc - i - 2);
		i += 2;
		if (nenv < 0)
			return -1;
		run_args->envp = copy_strings(argv + i, nenv);
		i += nenv;
	}
	if (i < argc && strcmp(argv[i], "--net-inline") == 0) {
		run_args->net_inline = 1;
		i++;
	}
	if (i < argc && strcmp(argv[i], "--inherit") == 0) {
		if (i + 3 >= argc)
			return -1;
		run_args->inherit = 1;
		run_args->umask_value = (int)strtol(argv[i + 1], NULL, 8);
		run_args->nice_value = atoi(argv[i + 2]);
		run_args->nlimits = count_field(argv[i + 3], RLIM_NLIMITS);
		i += 4;
		if (run_args->nlimits < 0 || 3 * run_args->nlimits > argc - i)
			return -1;
		for (int k = 0; k < run_args->nlimits; k++, i += 3) {
			run_args->limit_resource[k] = atoi(argv[i]);
			run_args->limits[k].rlim_cur = strcmp(argv[i + 1], "-1") ? strtoull(argv[i + 1], NULL, 10) : RLIM_INFINITY;
			run_args->limits[k].rlim_max = strcmp(argv[i + 2], "-1") ? strtoull(argv[i + 2], NULL, 10) : RLIM_INFINITY;
		}
	}
	if (i != argc)
		return -1; /* a field this stager does not know: never guess */
	int fds[] = {run_args->msg_fd, run_args->go_fd};
	for (size_t k = 0; k < 2; k++)
		if (fds[k] < 0)
			return -1;
	for (int k = 0; k < run_args->nsources; k++)
		if (run_args->sources[k] < 0)
			return -1;
	return 0;
}

/* A request parse_run refused: say so on its channel when that much was read (a
 * supervisor and a stager of different versions, most likely), instead of only exiting. */
static void refuse_request(const struct run_args *run_args)
{
	if (run_args->msg_fd < 0)
		return;
	msg_fd = run_args->msg_fd;
	stage = "clone";
	send_error(EINVAL, "clone: the stager could not read the run's fields (a supervisor and stager of "
			   "different versions? reinstall pysandbox)");
}

static void free_run(struct run_args *run_args)
{
	char **lists[] = {run_args->cgroups, run_args->procs, run_args->argv, run_args->envp};
	for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		for (char **p = lists[l]; p && *p; p++)
			free(*p);
		free(lists[l]);
	}
	free(run_args->sources);
	free(run_args->cwd);
	free(run_args->deny_setgroups);
	free(run_args->uid_map);
	free(run_args->gid_map);
	memset(run_args, 0, sizeof(*run_args));
}

/* PID 1 from here on: the run's values become the interpreter's, stdio is the command's */
static __attribute__((noreturn)) void become_pid1(struct run_args *run_args, int keep_open)
{
	msg_fd = run_args->msg_fd;
	go_fd = run_args->go_fd;
	cpu_seconds = run_args->cpu_seconds;
	run_cwd = run_args->cwd;
	nsources = run_args->nsources;
	source_fds = run_args->sources;
	ncgroups = run_args->ncgroups;
	cgroup_tasks = run_args->cgroups;
	command_argv = run_args->argv;
	if (run_args->envp)
		environ = run_args->envp;
	if (run_args->go_w >= 0 && run_args->go_w != keep_open)
		close(run_args->go_w);
	for (int k = 0; k < 3; k++)
		if (run_args->stdio[k] >= 0 && run_args->stdio[k] != k && dup2(run_args->stdio[k], k) < 0)
			fail(errno, "stdio", "dup2 %d", k);
	run(1);
	_exit(EXIT_SETUP);
}

/* Who learns PID 1's PID the moment it exists (before anything else can fail or this
 * process be killed): the supervisor must reap it whatever happens next. */
struct birth_report {
	int fd;
	int zygote; /* a "P<pid>" message on the zygote's socket, else "<pid>\n" on the birth pipe */
};

static void report_birth(const struct birth_report *report, long pid)
{
	char line[64];
	if (report->zygote) {
		int len = snprintf(line, sizeof(line), "P%ld", pid);
		if (send(report->fd, line, (size_t)len, MSG_NOSIGNAL) < 0) {
			kill((pid_t)pid, SIGKILL); /* nobody would reap it knowingly */
			_exit(0);
		}
	} else {
		snprintf(line, sizeof(line), "%ld\n", pid);
		say(report->fd, line);
	}
}

/* The network helper (stager.py _net_helper): forked by the stager outside the sandbox
 * right after PID 1's clone, it makes the sandbox's network namespace while PID 1 builds
 * its root. Errors go on the run's channel; closing its socket tells PID 1 to give up. */
static __attribute__((noreturn)) void net_helper_main(struct run_args *run_args, long pid1, int sock)
{
	char path[64];
	msg_fd = run_args->msg_fd;
	/* Once in PID 1's user namespace, a process there with CAP_SYS_PTRACE could trace it
	 * if it were dumpable; non-dumpable, that needs the capability where its memory was made
	 * (the host's). */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* its kernel memory (the namespace's) is the run's: into the run's v1 cgroups first,
	 * with the supervisor's credentials */
	stage = "cgroup";
	for (int i = 0; i < run_args->ncgroups; i++)
		write_file(run_args->cgroups[i], "0", 1, 0, 0, NULL);
	stage = "unshare";
	snprintf(path, sizeof(path), "/proc/%ld/ns/user", pid1);
	int userns = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(userns, "setns", "%s", path);
	CHECK(setns(userns, CLONE_NEWUSER), "setns", "PID 1's user namespace");
	close(userns);
	CHECK(unshare(CLONE_NEWNET), "unshare", "network namespace");
	stage = "loopback";
	loopback_up();
	int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	CHECK(netns, "loopback", "/proc/self/ns/net");
	send_fd(sock, 'N', netns); /* failing: PID 1 is gone */
	_exit(0);
}

/* Clone PID 1 and release it; returns 0, or -1 with the error on the channel (PID 1,
 * when it exists, killed: the supervisor reaps it). *pid_out is PID 1's PID or 0. */
static int start_run(struct run_args *run_args, long *pid_out, int close_in_child, const struct birth_report *report)
{
	*pid_out = 0;
	msg_fd = run_args->msg_fd;
	stage = "clone";
	if (run_args->inherit) {
		/* A zygote was started earlier: PID 1 must inherit what a process the supervisor
		 * started now would (its umask, nice value and resource limits of now), so they
		 * are taken on here, outside the new user namespace, where raising a hard limit
		 * is still allowed to a privileged supervisor. */
		umask((mode_t)run_args->umask_value);
		errno = 0;
		int current = getpriority(PRIO_PROCESS, 0);
		if (errno == 0 && current != run_args->nice_value && setpriority(PRIO_PROCESS, 0, run_args->nice_value) < 0) {
			send_error(errno, "clone: the supervisor's nice value cannot be taken on");
			return -1;
		}
		for (int k = 0; k < run_args->nlimits; k++)
			if (setrlimit(run_args->limit_resource[k], &run_args->limits[k]) < 0) {
				char message[200];
				snprintf(message, sizeof(message), "clone: the supervisor's resource limit %d cannot be taken on: %s",
					 run_args->limit_resource[k], strerror(errno));
				send_error(errno, message);
				return -1;
			}
	}
	int helper_sock[2] = {-1, -1};
	/* The helper only shortens a start while a CPU is free for it; on a busy machine it is
	 * a process, five cgroup joins and an exit more per run (stager.py net_inline). */
	int with_helper = nops > 1 && ops[1].code == OP_NET_HELPER && !run_args->net_inline;
	if (with_helper && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, helper_sock) < 0) {
		send_error(errno, "clone: socketpair for the network helper");
		return -1;
	}
	/* PID 1 is the supervisor's child, as with the Python stages' clone: the supervisor
	 * waits for it and reaps it; the stager only starts and releases it. */
	long pid = syscall(SYS_clone, (unsigned long)num(&ops[0], 0) | CLONE_PARENT, NULL, NULL, NULL, NULL);
	if (pid < 0) {
		int err = errno;
		char message[200];
		snprintf(message, sizeof(message), "clone: %s", strerror(err));
		send_error(err, message);
		if (with_helper) {
			close(helper_sock[0]);
			close(helper_sock[1]);
		}
		return -1;
	}
	if (pid == 0) {
		if (close_in_child >= 0)
			close(close_in_child);
		if (with_helper) {
			net_sock = helper_sock[0];
			close(helper_sock[1]);
		}
		become_pid1(run_args, -1);
	}
	*pid_out = pid;
	report_birth(report, pid);
	if (with_helper) {
		close(helper_sock[0]);
		pid_t helper = fork();
		if (helper == 0) {
			if (close_in_child >= 0)
				close(close_in_child);
			net_helper_main(run_args, pid, helper_sock[1]);
		}
		close(helper_sock[1]);
		if (helper < 0) {
			int err = errno;
			kill((pid_t)pid, SIGKILL);
			send_error(err, "clone: fork of the network helper");
			return -1;
		}
		last_helper = helper;
	}
	if (run_args->go_w < 0)
		return 0;
	/* The supervisor's stages idmap, cgroup-attach and go, done from here (outside the new
	 * user namespace, with the supervisor's credentials) without a round trip through it:
	 * gid before uid (once uid_map is written the child is no longer ours to write for
	 * when we are unprivileged). */
	char path[64], line[32];
	stage = "idmap";
	if (strcmp(run_args->deny_setgroups, "deny") == 0) {
		snprintf(path, sizeof(path), "/proc/%ld/setgroups", pid);
		if (release_write(pid, path, "deny", "setgroups") < 0)
			return -1;
	}
	if (run_args->uid_map[0]) { /* none without a user namespace */
		snprintf(path, sizeof(path), "/proc/%ld/gid_map", pid);
		if (release_write(pid, path, run_args->gid_map, "gid_map") < 0)
			return -1;
		snprintf(path, sizeof(path), "/proc/%ld/uid_map", pid);
		if (release_write(pid, path, run_args->uid_map, "uid_map") < 0)
			return -1;
	}
	stage = "cgroup-attach";
	snprintf(line, sizeof(line), "%ld", pid);
	for (int p = 0; p < run_args->nprocs; p++)
		if (release_write(pid, run_args->procs[p], line, "cgroup") < 0)
			return -1;
	stage = "go";
	if (write(run_args->go_w, "G", 1) != 1) {
		int err = errno;
		kill((pid_t)pid, SIGKILL);
		send_error(err, "go: write G");
		return -1;
	}
	return 0;
}

static void hide_arguments(int argc, char **argv)
{
	/* Other processes of the sandbox can read PID 1's /proc/1/cmdline: it must name no
	 * host path (the stager's, the run's cgroups). Everything was copied out first. */
	char *area_end = argv[argc - 1] + strlen(argv[argc - 1]);
	memset(argv[0], 0, (size_t)(area_end - argv[0]));
	strcpy(argv[0], "pysandbox-init");
}

/* ---- the zygote ------------------------------------------------------------------ */

#define MAX_PASSED 250

/* A reused Sandbox's stager: started once per supervisor thread, it holds the parsed
 * program and starts one PID 1 per request, so a run costs no exec and no parse. A
 * request is one SOCK_SEQPACKET message: the run's arguments (NUL-separated, descriptors
 * as "@K") with its descriptors attached; the replies are "P<pid>" as soon as PID 1 exists
 * and then "S<status>" (0, or 125 with the error on the run's channel). EOF on the socket (the supervisor closed the
 * Sandbox, or died) ends it. It runs nothing of a request's own: PID 1 is a fresh clone. */
static __attribute__((noreturn)) void zygote(int control)
{
	static char buf[1 << 17];
	for (;;) {
		int passed[MAX_PASSED];
		int npassed = 0;
		union {
			struct cmsghdr align;
			char data[CMSG_SPACE(sizeof(int) * MAX_PASSED)];
		} control_data;
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control_data.data,
				     .msg_controllen = sizeof(control_data.data)};
		ssize_t n = recvmsg(control, &msg, MSG_CMSG_CLOEXEC);
		/* network helpers of earlier runs: its only children (PID 1s are the supervisor's) */
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			while (waitpid(-1, NULL, 0) > 0)
				;
			_exit(0);
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int k = 0; k < count && npassed < MAX_PASSED; k++)
				memcpy(&passed[npassed++], CMSG_DATA(c) + k * sizeof(int), sizeof(int));
		}
		char reply[64];
		long pid = 0;
		int status = EXIT_SETUP;
		if (!(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
			buf[n] = 0;
			/* every field, however many (stager.py sends at most ZYGOTE_MAX_REQUEST bytes) */
			int nfields = 0;
			for (char *p = buf; p < buf + n; p += strlen(p) + 1)
				nfields++;
			char **fields = calloc((size_t)nfields + 1, sizeof(char *));
			if (fields) {
				int k = 0;
				for (char *p = buf; p < buf + n; p += strlen(p) + 1)
					fields[k++] = p;
				struct run_args run_args;
				struct birth_report report = {.fd = control, .zygote = 1};
				if (parse_run(nfields, fields, passed, npassed, &run_args) == 0)
					status = start_run(&run_args, &pid, control, &report) == 0 ? 0 : EXIT_SETUP;
				else
					refuse_request(&run_args);
				free_run(&run_args);
				free(fields);
			}
		}
		for (int k = 0; k < npassed; k++)
			close(passed[k]);
		snprintf(reply, sizeof(reply), "S%d", status);
		if (send(control, reply, strlen(reply), MSG_NOSIGNAL) < 0)
			_exit(0);
	}
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "--zygote") == 0) {
		/* pysandbox-stage --zygote CONTROL_FD PROGRAM_FD */
		int control = atoi(argv[2]), program_fd = atoi(argv[3]);
		fcntl(control, F_SETFD, FD_CLOEXEC);
		fcntl(program_fd, F_SETFD, FD_CLOEXEC);
		/* it holds no directory of the supervisor's (its stdio is /dev/null already) */
		if (chdir("/") < 0)
			return EXIT_SETUP;
		hide_arguments(argc, argv);
		load_program(program_fd);
		if (nops == 0 || ops[0].code != OP_CLONE)
			fail(EINVAL, NULL, "the program does not start with clone");
		in_zygote = 1;
		zygote(control);
	}
	/* pysandbox-stage PROGRAM_FD BIRTH_FD RUN... (parse_run's fields) */
	if (argc < 4)
		return EXIT_SETUP;
	int program_fd = atoi(argv[1]);
	int birth_fd = atoi(argv[2]);
	struct run_args run_args;
	if (parse_run(argc - 3, argv + 3, NULL, 0, &run_args) < 0) {
		refuse_request(&run_args);
		return EXIT_SETUP;
	}
	hide_arguments(argc, argv);
	/* posix_spawn's dup2 onto themselves cleared close-on-exec; the command must not
	 * inherit any of them (the channel stays open until its exec, as in the Python stages) */
	int own[] = {program_fd, run_args.msg_fd, run_args.go_fd, birth_fd, run_args.go_w};
	for (size_t f = 0; f < sizeof(own) / sizeof(own[0]); f++)
		if (own[f] >= 0)
			fcntl(own[f], F_SETFD, FD_CLOEXEC);
	for (int k = 0; k < run_args.nsources; k++)
		fcntl(run_args.sources[k], F_SETFD, FD_CLOEXEC);
	msg_fd = run_args.msg_fd;
	stage = "clone";
	load_program(program_fd);
	if (nops == 0 || ops[0].code != OP_CLONE)
		fail(EINVAL, NULL, "the program does not start with clone");
	long pid;
	struct birth_report report = {.fd = birth_fd, .zygote = 0};
	int rc = start_run(&run_args, &pid, birth_fd, &report);
	/* "S<status>" ends the supervisor's read; it reaps this process after its own go
	 * stage, once the network helper (which waits for nothing of PID 1's) has exited */
	char line[32];
	snprintf(line, sizeof(line), "S%d\n", rc == 0 ? 0 : EXIT_SETUP);
	say(birth_fd, line);
	close(birth_fd);
	if (last_helper > 0)
		waitpid(last_helper, NULL, 0);
	_exit(rc == 0 ? 0 : EXIT_SETUP);
}

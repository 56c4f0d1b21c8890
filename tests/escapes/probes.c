/*
 * Escape probes for the pysandbox escape suite.
 *
 *   probes all          run every probe, each in its own forked child
 *   probes NAME...      run the named probes
 *   probes list         list the probe names
 *
 * Each probe tries one technique for real and prints one line:
 *   probe=<name> result=<ok | empty | errno:<NAME>[@step] | signal:<SIG> | value:<v> | skip:<why>>
 * "ok" means the attempt succeeded (an escape route is open), "empty" that a read
 * succeeded but returned nothing (a /dev/null mask). A probe killed by a signal (a
 * seccomp KILL action) is reported by the parent as signal:<SIG>.
 *
 * Safety: the probes never write content to sensitive files. "Writes" are
 * open(O_WRONLY) followed by close(); reboot uses LINUX_REBOOT_CMD_CAD_OFF, which in a
 * child PID namespace is refused with EINVAL; clock_settime sets the time just read.
 * As a guard the program refuses to run in the initial user namespace at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/keyctl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif

static char inherited_fds[256] = "none";

static void out(const char *name, const char *result)
{
	dprintf(1, "probe=%s result=%s\n", name, result);
}

static void out_errno(const char *name, int err, const char *step)
{
	char buf[96];
	const char *ename = strerrorname_np(err);
	snprintf(buf, sizeof buf, "errno:%s%s%s", ename ? ename : "?", step ? "@" : "", step ? step : "");
	out(name, buf);
}

/* rc < 0: the errno; otherwise ok */
static void verdict(const char *name, long rc)
{
	if (rc < 0)
		out_errno(name, errno, NULL);
	else
		out(name, "ok");
}

static void ensure_dir(const char *path)
{
	mkdir(path, 0700);
}

/* ---- namespaces and mounts ---- */

static void p_mount(const char *n)
{
	ensure_dir("/tmp/.probe-mnt");
	long rc = mount("none", "/tmp/.probe-mnt", "tmpfs", 0, "size=4k");
	if (rc == 0)
		umount2("/tmp/.probe-mnt", MNT_DETACH);
	verdict(n, rc);
}

static void p_unshare_userns(const char *n) { verdict(n, unshare(CLONE_NEWUSER)); }
static void p_unshare_mntns(const char *n) { verdict(n, unshare(CLONE_NEWNS)); }

static void p_clone_userns(const char *n)
{
	long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	verdict(n, pid);
}

static void p_clone3_userns(const char *n)
{
	struct clone_args args;
	memset(&args, 0, sizeof args);
	args.flags = CLONE_NEWUSER;
	args.exit_signal = SIGCHLD;
	long pid = syscall(SYS_clone3, &args, sizeof args);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	verdict(n, pid);
}

static void p_setns_mnt(const char *n)
{
	int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return out_errno(n, errno, "open");
	verdict(n, setns(fd, CLONE_NEWNS));
}

static void p_fsopen(const char *n) { verdict(n, syscall(SYS_fsopen, "tmpfs", 1 /* FSOPEN_CLOEXEC */)); }

static void p_open_tree(const char *n)
{
	/* AT_RECURSIVE: a clone of a subtree holding locked mounts is refused otherwise */
	verdict(n, syscall(SYS_open_tree, AT_FDCWD, "/tmp", OPEN_TREE_CLONE | AT_RECURSIVE | O_CLOEXEC));
}

static void p_chroot(const char *n) { verdict(n, chroot("/tmp")); }

static void p_binfmt_misc_mount(const char *n)
{
	ensure_dir("/tmp/.probe-binfmt");
	long rc = mount("binfmt_misc", "/tmp/.probe-binfmt", "binfmt_misc", 0, NULL);
	if (rc == 0)
		umount2("/tmp/.probe-binfmt", MNT_DETACH);
	verdict(n, rc);
}

static void p_release_agent(const char *n)
{
	ensure_dir("/tmp/.probe-cg");
	if (mount("cgroup", "/tmp/.probe-cg", "cgroup", 0, "none,name=pysbxprobe") != 0)
		return out_errno(n, errno, "mount");
	int fd = open("/tmp/.probe-cg/release_agent", O_WRONLY | O_CLOEXEC);
	int err = errno;
	if (fd >= 0)
		close(fd);
	umount2("/tmp/.probe-cg", MNT_DETACH);
	if (fd < 0)
		return out_errno(n, err, "open");
	out(n, "ok");
}

static void p_cgroup2_mount(const char *n)
{
	ensure_dir("/tmp/.probe-cg2");
	long rc = mount("cgroup2", "/tmp/.probe-cg2", "cgroup2", 0, NULL);
	if (rc == 0)
		umount2("/tmp/.probe-cg2", MNT_DETACH);
	verdict(n, rc);
}

/* ---- kernel interfaces ---- */

static void p_keyctl(const char *n)
{
	verdict(n, syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL));
}

static void p_add_key(const char *n)
{
	verdict(n, syscall(SYS_add_key, "user", "pysandbox-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
}

static void p_bpf(const char *n)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 4;
	attr.max_entries = 1;
	verdict(n, syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
}

static void p_perf_event_open(const char *n)
{
	struct perf_event_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.size = sizeof attr;
	attr.type = PERF_TYPE_SOFTWARE;
	attr.config = PERF_COUNT_SW_CPU_CLOCK;
	attr.exclude_kernel = 1;
	attr.exclude_hv = 1;
	verdict(n, syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
}

static void p_userfaultfd(const char *n) { verdict(n, syscall(SYS_userfaultfd, O_CLOEXEC)); }
static void p_userfaultfd_user(const char *n) { verdict(n, syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY)); }

static void p_io_uring(const char *n)
{
	struct io_uring_params params;
	memset(&params, 0, sizeof params);
	verdict(n, syscall(SYS_io_uring_setup, 1, &params));
}

static void p_open_by_handle_at(const char *n)
{
	struct { struct file_handle fh; unsigned char data[128]; } h;
	int mount_id;
	h.fh.handle_bytes = sizeof h.data;
	if (name_to_handle_at(AT_FDCWD, "/etc", &h.fh, &mount_id, 0) != 0)
		return out_errno(n, errno, "name_to_handle_at");
	int mfd = open("/etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		return out_errno(n, errno, "open");
	verdict(n, open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC));
}

static void p_finit_module(const char *n)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	verdict(n, syscall(SYS_finit_module, fd, "", 0));
}

static void p_init_module(const char *n) { verdict(n, syscall(SYS_init_module, NULL, 0, "")); }
static void p_kexec_load(const char *n) { verdict(n, syscall(SYS_kexec_load, 0, 0, NULL, 0)); }

static void p_reboot(const char *n)
{
	verdict(n, syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
}

static void p_clock_settime(const char *n)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	verdict(n, clock_settime(CLOCK_REALTIME, &ts));
}

static void p_iopl(const char *n) { verdict(n, syscall(SYS_iopl, 3)); }
static void p_swapon(const char *n) { verdict(n, swapon("/dev/null", 0)); }
static void p_personality(const char *n) { verdict(n, syscall(SYS_personality, ADDR_NO_RANDOMIZE)); }

static void p_tiocsti(const char *n)
{
	if (!isatty(0))
		return out(n, "skip:stdin-not-a-tty");
	char c = ' ';
	verdict(n, ioctl(0, TIOCSTI, &c));
}

/* ---- sockets ---- */

static void p_raw_socket(const char *n) { verdict(n, socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP)); }
static void p_packet_socket(const char *n) { verdict(n, socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL))); }
static void p_alg_socket(const char *n) { verdict(n, socket(AF_ALG, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)); }

/* ---- files: open for writing and close, or read one byte ---- */

static void open_write(const char *n, const char *path)
{
	int fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return out_errno(n, errno, NULL);
	close(fd);
	out(n, "ok");
}

static void read_one(const char *n, const char *path)
{
	char c;
	int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return out_errno(n, errno, NULL);
	ssize_t got = read(fd, &c, 1);
	int err = errno;
	close(fd);
	if (got < 0)
		return out_errno(n, err, "read");
	out(n, got ? "ok" : "empty");
}

static void p_sysrq_trigger(const char *n) { open_write(n, "/proc/sysrq-trigger"); }
static void p_core_pattern(const char *n) { open_write(n, "/proc/sys/kernel/core_pattern"); }
static void p_modprobe(const char *n) { open_write(n, "/proc/sys/kernel/modprobe"); }
static void p_uevent_helper(const char *n) { open_write(n, "/sys/kernel/uevent_helper"); }
static void p_binfmt_misc_register(const char *n) { open_write(n, "/proc/sys/fs/binfmt_misc/register"); }
static void p_kcore(const char *n) { read_one(n, "/proc/kcore"); }
static void p_dev_mem(const char *n) { read_one(n, "/dev/mem"); }
static void p_dev_kmsg(const char *n) { read_one(n, "/dev/kmsg"); }
static void p_host_disk(const char *n) { read_one(n, "/dev/vda"); }

static void p_mknod_block(const char *n)
{
	long rc = mknod("/tmp/.probe-blk", S_IFBLK | 0600, makedev(254, 0));
	if (rc == 0)
		unlink("/tmp/.probe-blk");
	verdict(n, rc);
}

static void p_mknod_char(const char *n)
{
	long rc = mknod("/tmp/.probe-chr", S_IFCHR | 0600, makedev(1, 7));
	if (rc == 0)
		unlink("/tmp/.probe-chr");
	verdict(n, rc);
}

static void p_landlock(const char *n)
{
	int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return out_errno(n, errno, NULL);
	close(fd);
	out(n, "ok");
}

/* ---- checks of the process's own state ---- */

static int status_field(const char *field, char *value, size_t size)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	size_t len = strlen(field);
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, field, len) == 0 && line[len] == ':') {
			char *v = line + len + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			v[strcspn(v, "\n")] = 0;
			snprintf(value, size, "%s", v);
			fclose(f);
			return 0;
		}
	}
	fclose(f);
	return -1;
}

static void report_field(const char *n, const char *field, int hex)
{
	char v[64], buf[96];
	if (status_field(field, v, sizeof v) != 0)
		return out_errno(n, errno ? errno : ENOENT, "status");
	if (hex)
		snprintf(buf, sizeof buf, "value:%#llx", strtoull(v, NULL, 16));
	else
		snprintf(buf, sizeof buf, "value:%s", v);
	out(n, buf);
}

static void p_cap_eff(const char *n) { report_field(n, "CapEff", 1); }
static void p_cap_prm(const char *n) { report_field(n, "CapPrm", 1); }
static void p_cap_inh(const char *n) { report_field(n, "CapInh", 1); }
static void p_cap_bnd(const char *n) { report_field(n, "CapBnd", 1); }
static void p_cap_amb(const char *n) { report_field(n, "CapAmb", 1); }
static void p_no_new_privs(const char *n) { report_field(n, "NoNewPrivs", 0); }
static void p_seccomp(const char *n) { report_field(n, "Seccomp", 0); }

static void p_inherited_fds(const char *n)
{
	char buf[300];
	snprintf(buf, sizeof buf, "value:%s", inherited_fds);
	out(n, buf);
}

/* 1: some range of the map covers host id 0 (seen from the parent user namespace) */
static int map_covers_zero(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned long long inside, outside, count;
	int hit = 0;
	if (!f)
		return -1;
	while (fscanf(f, "%llu %llu %llu", &inside, &outside, &count) == 3)
		if (outside == 0 && count > 0)
			hit = 1;
	fclose(f);
	return hit;
}

static void p_host_root_mapped(const char *n)
{
	int u = map_covers_zero("/proc/self/uid_map"), g = map_covers_zero("/proc/self/gid_map");
	if (u < 0 || g < 0)
		return out_errno(n, errno, "map");
	out(n, u || g ? "value:yes" : "value:no");
}

/* ---- table ---- */

struct probe { const char *name; void (*fn)(const char *); };
static const struct probe PROBES[] = {
	{"mount", p_mount}, {"unshare_userns", p_unshare_userns}, {"unshare_mntns", p_unshare_mntns},
	{"clone_userns", p_clone_userns}, {"clone3_userns", p_clone3_userns}, {"setns_mnt", p_setns_mnt},
	{"fsopen", p_fsopen}, {"open_tree", p_open_tree}, {"chroot", p_chroot},
	{"binfmt_misc_mount", p_binfmt_misc_mount}, {"release_agent", p_release_agent},
	{"cgroup2_mount", p_cgroup2_mount},
	{"keyctl", p_keyctl}, {"add_key", p_add_key}, {"bpf", p_bpf}, {"perf_event_open", p_perf_event_open},
	{"userfaultfd", p_userfaultfd}, {"userfaultfd_user", p_userfaultfd_user}, {"io_uring", p_io_uring},
	{"open_by_handle_at", p_open_by_handle_at}, {"finit_module", p_finit_module},
	{"init_module", p_init_module}, {"kexec_load", p_kexec_load}, {"reboot", p_reboot},
	{"clock_settime", p_clock_settime}, {"iopl", p_iopl}, {"swapon", p_swapon},
	{"personality", p_personality}, {"tiocsti", p_tiocsti},
	{"raw_socket", p_raw_socket}, {"packet_socket", p_packet_socket}, {"alg_socket", p_alg_socket},
	{"sysrq_trigger", p_sysrq_trigger}, {"core_pattern", p_core_pattern}, {"modprobe", p_modprobe},
	{"uevent_helper", p_uevent_helper}, {"binfmt_misc_register", p_binfmt_misc_register},
	{"kcore", p_kcore}, {"dev_mem", p_dev_mem}, {"dev_kmsg", p_dev_kmsg}, {"host_disk", p_host_disk},
	{"mknod_block", p_mknod_block}, {"mknod_char", p_mknod_char}, {"landlock", p_landlock},
	{"cap_eff", p_cap_eff}, {"cap_prm", p_cap_prm}, {"cap_inh", p_cap_inh}, {"cap_bnd", p_cap_bnd},
	{"cap_amb", p_cap_amb}, {"no_new_privs", p_no_new_privs}, {"seccomp", p_seccomp},
	{"inherited_fds", p_inherited_fds}, {"host_root_mapped", p_host_root_mapped},
};
#define NPROBES (sizeof PROBES / sizeof PROBES[0])

static void run_one(const struct probe *p)
{
	pid_t pid = fork();
	int status;
	if (pid < 0) {
		out_errno(p->name, errno, "fork");
		return;
	}
	if (pid == 0) {
		p->fn(p->name);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) < 0)
		return out_errno(p->name, errno, "waitpid");
	if (WIFSIGNALED(status)) {
		char buf[64];
		const char *abbrev = sigabbrev_np(WTERMSIG(status));
		snprintf(buf, sizeof buf, "signal:SIG%s", abbrev ? abbrev : "?");
		out(p->name, buf);
	}
}

static void note_inherited_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	size_t used = 0;
	if (!d) {
		snprintf(inherited_fds, sizeof inherited_fds, "unknown");
		return;
	}
	inherited_fds[0] = 0;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
			continue;
		used += snprintf(inherited_fds + used, sizeof inherited_fds - used, "%s%d", used ? "," : "", fd);
		if (used >= sizeof inherited_fds)
			break;
	}
	closedir(d);
	if (!inherited_fds[0])
		snprintf(inherited_fds, sizeof inherited_fds, "none");
}

int main(int argc, char **argv)
{
	note_inherited_fds();
	if (argc < 2) {
		fprintf(stderr, "usage: %s all | list | NAME...\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "list") == 0) {
		for (size_t i = 0; i < NPROBES; i++)
			printf("%s\n", PROBES[i].name);
		return 0;
	}
	/* Guard: where host root is mapped (the initial user namespace, `unshare -Ur` as
	 * root) these probes could act on the host itself, so they do not run at all. */
	if (map_covers_zero("/proc/self/uid_map") != 0) {
		out("guard", "refused:host-root-mapped");
		return 3;
	}
	int all = strcmp(argv[1], "all") == 0;
	for (size_t i = 0; i < NPROBES; i++) {
		int wanted = all;
		for (int j = 1; j < argc && !wanted; j++)
			wanted = strcmp(argv[j], PROBES[i].name) == 0;
		if (wanted)
			run_one(&PROBES[i]);
	}
	return 0;
}

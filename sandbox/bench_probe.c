/*
 * The workload of `pysandbox bench`: one static binary that runs unchanged on the host,
 * in a sandbox, in a container image, under gVisor and as PID 1 of a QEMU guest, so every
 * technology is measured doing exactly the same work.
 *
 *   bench-probe true              exit 0 at once (start-up time)
 *   bench-probe sleep             block until killed (memory per instance)
 *   bench-probe cpu N             N rounds of integer work
 *   bench-probe syscall N         N getppid() calls
 *   bench-probe io MB DIR         write MB MiB to a file in DIR, fsync, read it back
 *   bench-probe net MB            send MB MiB over TCP on 127.0.0.1 to a forked reader
 * Each measuring mode prints the elapsed nanoseconds of its work on stdout.
 *
 * As /init of the VM's initramfs (PID 1, argv[0] "/init") it brings up the guest's loopback,
 * prints GUEST_READY on the serial console, runs each line of /bench-script as the modes
 * above (one forked child per line, so each is a fresh process as elsewhere), framing each
 * result as "<GUEST_TAG>result <ns>" and "<GUEST_TAG>exit <status>", then reboots; QEMU runs
 * with -no-reboot, so the reboot ends the VM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GUEST_TAG "pysandbox-bench: "
#define GUEST_READY GUEST_TAG "ready"

/* Prefix of the result line: empty on the host, GUEST_TAG in the VM (kernel messages may
 * share the console). */
static const char *result_prefix = "";

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cpu(long rounds)
{
	volatile unsigned long long x = 88172645463325252ULL;
	for (long i = 0; i < rounds; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	return (int)(x & 1);
}

static int io(long mib, const char *dir)
{
	static char block[1 << 20];
	char path[4096];
	memset(block, 'x', sizeof(block));
	snprintf(path, sizeof(path), "%s/bench-probe.%d", dir, (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return 1;
	unlink(path);
	for (long i = 0; i < mib; i++)
		if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block))
			return 1;
	if (fsync(fd) != 0)
		return 1;
	if (lseek(fd, 0, SEEK_SET) != 0)
		return 1;
	while (read(fd, block, sizeof(block)) > 0)
		;
	close(fd);
	return 0;
}

static int net(long mib)
{
	static char block[1 << 16];
	int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof(addr)) || listen(server, 1) ||
	    getsockname(server, (struct sockaddr *)&addr, &len))
		return 1;
	pid_t reader = fork();
	if (reader == 0) {
		int conn = accept(server, NULL, NULL);
		while (read(conn, block, sizeof(block)) > 0)
			;
		_exit(0);
	}
	int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof(addr)))
		return 1;
	long long total = mib << 20;
	while (total > 0) {
		ssize_t n = write(client, block, sizeof(block));
		if (n <= 0)
			return 1;
		total -= n;
	}
	close(client);
	int status;
	waitpid(reader, &status, 0);
	return 0;
}

static int run_mode(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	const char *mode = argv[1];
	long n = argc > 2 ? atol(argv[2]) : 0;
	if (!strcmp(mode, "true"))
		return 0;
	if (!strcmp(mode, "sleep")) {
		for (;;)
			pause();
	}
	long long start = now_ns();
	int rc;
	if (!strcmp(mode, "cpu"))
		rc = cpu(n) & 0;
	else if (!strcmp(mode, "syscall")) {
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		rc = 0;
	} else if (!strcmp(mode, "io"))
		rc = io(n, argc > 3 ? argv[3] : "/tmp");
	else if (!strcmp(mode, "net"))
		rc = net(n);
	else
		return 2;
	if (rc)
		return 1;
	printf("%s%lld\n", result_prefix, now_ns() - start);
	return 0;
}

/* The kernel creates lo down in every network namespace, the guest's first one too; the
 * net mode needs 127.0.0.1. */
static int loopback_up(void)
{
	struct ifreq ifr = {0};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	strcpy(ifr.ifr_name, "lo");
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr))
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	int rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
	close(fd);
	return rc;
}

static int guest_init(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (loopback_up())
		printf(GUEST_TAG "warning: lo stays down\n");
	result_prefix = GUEST_TAG "result ";
	printf(GUEST_READY "\n");
	FILE *script = fopen("/bench-script", "r");
	char line[512];
	while (script && fgets(line, sizeof(line), script)) {
		char *args[8] = {"bench-probe"};
		int count = 1;
		for (char *word = strtok(line, " \n"); word && count < 7; word = strtok(NULL, " \n"))
			args[count++] = word;
		args[count] = NULL;
		fflush(stdout);
		pid_t child = fork();
		if (child == 0) {
			int rc = run_mode(count, args);
			fflush(stdout);   /* _exit does not flush stdio */
			_exit(rc);
		}
		int status = 0;
		while (child > 0 && waitpid(child, &status, 0) < 0)
			;
		printf(GUEST_TAG "exit %d\n", child > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : 255);
	}
	printf(GUEST_TAG "done\n");
	fflush(stdout);
	sync();
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();   /* PID 1 must not exit: the kernel would panic */
}

int main(int argc, char **argv)
{
	if (getpid() == 1 && !strcmp(argv[0], "/init"))
		return guest_init();
	return run_mode(argc, argv);
}

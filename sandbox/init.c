/*
 * pysandbox-init: the sandbox's PID 1 once setup is done.
 *
 * The Python PID 1 composes the root, forks the command and then execs this program
 * (through a descriptor opened before pivot_root), so each idle sandbox costs a few
 * hundred KiB instead of a forked Python interpreter. Its whole job:
 *   - reap every process that ends up as its child (it is the pid namespace's init);
 *   - forward the signals a supervisor or a terminal sends to the command;
 *   - with a seccomp listener (handed over by the command through a socket), report
 *     the syscall a kill rule caught and kill the command;
 *   - report the command's wait status on the message pipe, then exit (which makes the
 *     kernel kill whatever is left in the namespace).
 * It never runs anything. It drops every capability and becomes non-dumpable first:
 * nothing in the sandbox may ptrace it or read its memory.
 *
 * usage: pysandbox-init COMMAND_PID MSG_FD [LISTENER_SOCKET_FD]
 * Messages: the channel's kinds (sandbox/channel.py, generated into channel.h), the
 * same lines the Python PID 1 writes:
 *   X <pid> <syscall nr> <audit arch>     a kill rule was hit
 *   S <wait status>                       the command ended
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};

static void say(int fd, const char *line)
{
	size_t len = strlen(line);
	while (len > 0) {
		ssize_t n = write(fd, line, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		line += n;
		len -= (size_t)n;
	}
}

static int receive_fd(int sock)
{
	char data;
	struct iovec iov = {.iov_base = &data, .iov_len = 1};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

static void drop_privileges(void)
{
	struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	/* execve reset dumpable to 1; PID 1 must not be readable from inside */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
			break;
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	syscall(SYS_capset, &header, data);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* The init's whole life: returns its exit status once the command has ended. The
 * stager (stager.c) includes this file and calls it in PID 1 directly, without an exec. */
static int init_loop(pid_t command, int msg, int sock)
{
	int listener = -1;
	char line[128];

	drop_privileges();

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&mask, forwarded[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return 125;

	for (;;) {
		int status;
		pid_t pid;
		/* reap first: the command may have ended before we started */
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid == command) {
				snprintf(line, sizeof(line), CHANNEL_STATUS "\t%d\n", status);
				say(msg, line);
				return 0;
			}
		}
		if (pid < 0 && errno == ECHILD) {
			say(msg, CHANNEL_STATUS "\t0\n");
			return 0;
		}
		struct pollfd fds[3] = {{.fd = sfd, .events = POLLIN}, {.fd = sock, .events = POLLIN},
					{.fd = listener, .events = POLLIN}};
		if (poll(fds, 3, -1) < 0 && errno != EINTR)
			return 125;
		if (fds[0].revents & POLLIN) {
			struct signalfd_siginfo info;
			while (read(sfd, &info, sizeof(info)) == sizeof(info))
				if (info.ssi_signo != SIGCHLD)
					kill(command, (int)info.ssi_signo);
		}
		if (sock >= 0 && fds[1].revents) {
			listener = receive_fd(sock);
			close(sock);
			sock = -1;
		}
		if (listener >= 0 && fds[2].revents) {
			if (!(fds[2].revents & POLLIN)) {
				/* POLLHUP: no task uses the filter any more */
				close(listener);
				listener = -1;
				continue;
			}
			struct seccomp_notif notif;
			memset(&notif, 0, sizeof(notif));
			if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &notif) == 0) {
				snprintf(line, sizeof(line), CHANNEL_SECCOMP_KILL "\t%u\t%d\t%u\n", notif.pid, notif.data.nr, notif.data.arch);
				say(msg, line);
				kill((pid_t)notif.pid, SIGKILL);
				kill(command, SIGKILL);
			}
		}
	}
}

#ifndef PYSANDBOX_STAGER
int main(int argc, char **argv)
{
	if (argc < 3)
		return 125;
	return init_loop((pid_t)atoi(argv[1]), atoi(argv[2]), argc > 3 ? atoi(argv[3]) : -1);
}
#endif

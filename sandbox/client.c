/* The `pysandbox` command as setup.sh installs it: a `pysandbox run` goes to this user's
 * warm server (`pysandbox serve`, sandbox/serve.py) when one listens; everything else, and
 * every run the server declines, execs the Python CLI (PYSANDBOX_CLI, compiled in).
 *
 * The same client as sandbox/serve_client.py (its docstring has the wire format and the
 * rules), without the interpreter's start: a served strict run then costs the server's
 * run and two messages. Nothing here decides anything about the sandbox: the server
 * checks the caller, and the Python CLI runs whatever the server does not take.
 *
 *   gcc -static -O2 -DPYSANDBOX_CLI='"/opt/pysandbox/venv/bin/pysandbox-cli"' -o pysandbox client.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PYSANDBOX_CLI
#error "build with -DPYSANDBOX_CLI='\"/path/to/the/python/launcher\"'"
#endif

#define MAGIC "pysandbox-serve/1"
#define EXIT_SETUP 125

extern char **environ;

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT}; /* what the CLI forwards */
static int conn = -1;
static volatile sig_atomic_t caught;

static void fail(const char *message, const char *detail)
{
	fprintf(stderr, "pysandbox: serve: %s%s\n", message, detail ? detail : "");
	exit(EXIT_SETUP);
}

static void run_python(char **argv)
{
	execv(PYSANDBOX_CLI, argv);
	fprintf(stderr, "pysandbox: cannot run %s: %s\n", PYSANDBOX_CLI, strerror(errno));
	exit(EXIT_SETUP);
}

static void forward(int sig)
{
	char message[4];
	int n = 0, saved = errno;

	if (!caught)
		caught = sig;
	message[n++] = 'S';
	if (sig >= 10)
		message[n++] = (char)('0' + sig / 10);
	message[n++] = (char)('0' + sig % 10);
	/* async-signal-safe; a signal before the sandbox starts waits in the socket */
	send(conn, message, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	errno = saved;
}

/* The socket path: PYSANDBOX_SERVE_SOCKET, root's /run/pysandbox/serve.sock, a user's
 * $XDG_RUNTIME_DIR/pysandbox/serve.sock, else /tmp/pysandbox-serve-UID/serve.sock. */
static void socket_path(char *out, size_t size)
{
	const char *explicit = getenv("PYSANDBOX_SERVE_SOCKET");
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	size_t len;

	if (explicit && *explicit)
		snprintf(out, size, "%s", explicit);
	else if (geteuid() == 0)
		snprintf(out, size, "/run/pysandbox/serve.sock");
	else if (runtime && runtime[0] == '/') {
		snprintf(out, size, "%s", runtime);
		len = strlen(out);
		while (len > 1 && out[len - 1] == '/')
			out[--len] = 0;
		snprintf(out + len, size - len, "/pysandbox/serve.sock");
	} else
		snprintf(out, size, "/tmp/pysandbox-serve-%u/serve.sock", (unsigned)geteuid());
}

/* NULL when `path` is this user's socket in a directory closed to everyone else (another
 * user could stand in for the server and get the command's stdio), else why not. */
static const char *private_socket(const char *path)
{
	char directory[PATH_MAX];
	struct stat st;
	char *slash;

	if (lstat(path, &st) < 0)
		return "no server listens there";
	if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid())
		return "not a socket of this user's";
	snprintf(directory, sizeof(directory), "%s", path);
	slash = strrchr(directory, '/');
	if (slash == directory)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	else
		snprintf(directory, sizeof(directory), ".");
	if (lstat(directory, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
		return "its directory is not this user's with mode 0700";
	return NULL;
}

/* Hand `pysandbox run ...` (argv[1] == "run") to the server: exits with the run's status,
 * or returns why not (nothing was started). */
static const char *hand_over(int argc, char **argv, char *reason, size_t reason_size)
{
	char path[PATH_MAX], cwd[PATH_MAX], count[16], reply[4096];
	const char *why;
	struct sockaddr_un address = {.sun_family = AF_UNIX};
	struct sigaction action = {.sa_handler = forward}, previous[4];
	size_t size = 0, pos = 0;
	char *request;
	ssize_t got;

	socket_path(path, sizeof(path));
	if ((why = private_socket(path))) {
		snprintf(reason, reason_size, "%s: %s", path, why);
		return reason;
	}
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) < 0)
			return "stdin, stdout or stderr is closed";
		if (isatty(fd))
			return "a terminal among stdin, stdout and stderr (the CLI relays it)";
	}
	if (!getcwd(cwd, sizeof(cwd)))
		return "the current directory cannot be named";
	if (strlen(path) >= sizeof(address.sun_path))
		return "the socket path is too long";
	snprintf(count, sizeof(count), "%d", argc - 1);

	/* MAGIC NUL cwd NUL argc NUL argv[1..] NUL env... */
	const char *head[] = {MAGIC, cwd, count};
	for (size_t i = 0; i < 3; i++)
		size += strlen(head[i]) + 1;
	for (int i = 1; i < argc; i++)
		size += strlen(argv[i]) + 1;
	for (char **e = environ; *e; e++)
		size += strlen(*e) + 1;
	request = malloc(size);
	if (!request)
		return "out of memory";
#define PUT(text)                                                                                                      \
	do {                                                                                                           \
		size_t n = strlen(text) + 1;                                                                           \
		memcpy(request + pos, text, n);                                                                        \
		pos += n;                                                                                              \
	} while (0)
	for (size_t i = 0; i < 3; i++)
		PUT(head[i]);
	for (int i = 1; i < argc; i++)
		PUT(argv[i]);
	for (char **e = environ; *e; e++)
		PUT(*e);
#undef PUT

	conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (conn < 0)
		return "no socket";
	memcpy(address.sun_path, path, strlen(path) + 1);
	if (connect(conn, (struct sockaddr *)&address, sizeof(address)) < 0) {
		close(conn);
		return "the server does not answer";
	}
	struct ucred server;
	socklen_t len = sizeof(server);
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &server, &len) < 0 || server.uid != geteuid()) {
		close(conn); /* the path was swapped after the check: not this user's server */
		return "the listener is not this user's";
	}
	/* the proof (sandbox/serve_client.py): a Landlock domain refuses this open */
	char proof_path[64];
	snprintf(proof_path, sizeof(proof_path), "/proc/%d/mem", (int)server.pid);
	int proof = open(proof_path, O_RDONLY | O_CLOEXEC);
	/* before the request: a signal that comes before the sandbox starts reaches it then */
	for (int i = 0; i < 4; i++)
		sigaction(forwarded[i], &action, &previous[i]);

	int fds[4] = {0, 1, 2, proof};
	size_t nfds = proof < 0 ? 3 : 4;
	union {
		char buf[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} control;
	memset(&control, 0, sizeof(control));
	struct iovec iov = {.iov_base = request, .iov_len = size - 1}; /* no NUL after the last */
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));

	if (sendmsg(conn, &msg, MSG_NOSIGNAL) < 0) {
		snprintf(reason, reason_size, "sending the request: %s", strerror(errno)); /* EMSGSIZE */
		got = -2;
	} else {
		do
			got = recv(conn, reply, sizeof(reply) - 1, 0);
		while (got < 0 && errno == EINTR);
		/* ECONNRESET: the server closed with a message of ours unread; with no signal
		 * sent after the request, that is the request itself: nothing ran */
		if (got < 0 && errno == ECONNRESET && !caught) {
			snprintf(reason, reason_size, "the server ended before it read the request");
			got = -2;
		}
	}
	if (proof >= 0)
		close(proof);
	free(request);
	if (got > 1 && reply[0] == 'X') {
		reply[got] = 0;
		char *end;
		long code = strtol(reply + 1, &end, 10);
		if (*end == 0 && code >= 0 && code <= 255)
			exit((int)code);
	}
	if (got == 0 || got == -1)
		fail("the server ended during the run (its sandbox was killed with it)", NULL);
	if (got > 0 && reply[0] != 'L')
		fail("the server's reply is not an exit status", NULL);
	for (int i = 0; i < 4; i++)
		sigaction(forwarded[i], &previous[i], NULL);
	close(conn);
	if (caught)
		exit(128 + caught); /* interrupted before anything ran */
	if (got > 0) {
		reply[got] = 0;
		snprintf(reason, reason_size, "%s", reply + 1);
	}
	return reason;
}

int main(int argc, char **argv)
{
	const char *mode = getenv("PYSANDBOX_SERVE");
	char reason[4096];

	if (argc > 1 && strcmp(argv[1], "run") == 0) {
		if (!mode)
			mode = "auto";
		if (!*mode)
			mode = "off";
		if (strcmp(mode, "auto") && strcmp(mode, "off") && strcmp(mode, "require"))
			fail("PYSANDBOX_SERVE must be auto, off or require, got ", mode);
		if (strcmp(mode, "off")) {
			const char *why = hand_over(argc, argv, reason, sizeof(reason));
			if (strcmp(mode, "require") == 0)
				fail("not served: ", why);
		}
	}
	run_python(argv);
	return EXIT_SETUP;
}

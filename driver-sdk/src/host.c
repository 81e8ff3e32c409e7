/*
 * Spawning a driver process and owning its life: clean environment, private
 * socket directory, the handshake, stop/wait/free. Calls are in host_call.c,
 * the I/O thread in host_io.c.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "drover/address.h"
#include "drv_internal.h"
#include "host_internal.h"

#define DEFAULT_HANDSHAKE_TIMEOUT_MS 5000
/* After the process exited, how long we still wait for its last stderr lines. */
#define EXIT_DRAIN_MS 200
/* How long to wait for a SIGKILLed process to be reaped. */
#define KILL_WAIT_MS 10000

static const char *const env_fixed[] = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", NULL};

int drv__host_status_locked(const struct drv_host *h)
{
	if (h->term_signal)
		return 128 + h->term_signal;
	return (int)h->exit_status;
}

void drv__host_describe_exit_locked(const struct drv_host *h, char *buf, size_t len)
{
	if (h->term_signal)
		snprintf(buf, len, "was killed by signal %d (%s)", h->term_signal, strsignal(h->term_signal));
	else
		snprintf(buf, len, "exited with status %lld", (long long)h->exit_status);
}

static struct timespec abs_realtime_from_mono(uint64_t deadline_ns)
{
	/* Condition variables here use CLOCK_MONOTONIC (see drv__host_new). */
	struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
	                      .tv_nsec = (long)(deadline_ns % 1000000000u)};
	return ts;
}

bool drv__host_wait_exit_locked(struct drv_host *h, uint64_t deadline_ns)
{
	while (!h->exited && drv__host_now_ns() < deadline_ns) {
		struct timespec ts = abs_realtime_from_mono(deadline_ns);
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	return h->exited;
}

static uint64_t deadline_after_ms(int ms)
{
	return drv__host_now_ns() + (uint64_t)(ms < 0 ? 0 : ms) * 1000000u;
}

struct drv_host *drv__host_new(void)
{
	struct drv_host *h = drv__calloc(1, sizeof(*h));
	pthread_condattr_t ca;

	if (!h)
		return NULL;
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	h->pidfd = h->fd_in = h->fd_out = h->fd_err = -1;
	return h;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void remove_sockdir(struct drv_host *h)
{
	if (!h->sockdir[0])
		return;
	/* Never through a symlink: the driver could have put one where its directory was. */
	drv__sockdir_remove(h->sockdir);
	h->sockdir[0] = '\0';
}

void drv__host_release(struct drv_host *h)
{
	int fds[] = {h->fd_in, h->fd_out, h->fd_err};

	/* Pipe ends the loop never took over (a spawn that failed during its handshake). */
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	drv_rpc_channel_free(h->ch);
	remove_sockdir(h);
	free_strv(h->argv);
	free_strv(h->envp);
	free(h->name);
	free(h->path);
	free(h->target);
	free(h->errbuf);
	free(h->cleanbuf);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

/* ---- environment ---- */

static int env_push(char ***v, size_t *n, size_t *cap, const char *name, const char *value)
{
	char *s;

	if (*n + 2 > *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		char **nv = drv__realloc(*v, ncap * sizeof(char *));

		if (!nv)
			return DRV_ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	if (value) {
		if (asprintf(&s, "%s=%s", name, value) < 0)
			return DRV_ENOMEM;
	} else {
		s = drv__strdup(name);
		if (!s)
			return DRV_ENOMEM;
	}
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
	return 0;
}

static bool env_has(char **v, size_t n, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < n; i++)
		if (strncmp(v[i], name, len) == 0 && v[i][len] == '=')
			return true;
	return false;
}

static bool valid_env_name(const char *s, size_t len)
{
	if (len == 0 || isdigit((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	return true;
}

/*
 * The driver's whole environment: the fixed allowlist and env_allow copied
 * from ours, the magic cookie and socket dir, then env_extra. Ours come first
 * and duplicates are skipped, so env_extra cannot move the socket dir.
 */
static int build_env(struct drv_host *h, const struct drv_spawn_opts *o, char *err, size_t errlen)
{
	char **v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	rc = env_push(&v, &n, &cap, DRV_MAGIC_COOKIE_KEY, DRV_MAGIC_COOKIE_VALUE);
	if (rc == 0)
		rc = env_push(&v, &n, &cap, "DROVER_SOCKET_DIR", h->sockdir);
	for (int pass = 0; rc == 0 && pass < 2; pass++) {
		const char *const *names = pass == 0 ? env_fixed : o->env_allow;

		for (size_t i = 0; rc == 0 && names && names[i]; i++) {
			const char *val = getenv(names[i]);

			if (!valid_env_name(names[i], strlen(names[i]))) {
				drv__seterr(err, errlen,
				            "driver '%s': env_allow entry \"%s\" is not a variable name",
				            h->name, names[i]);
				rc = DRV_EINVAL;
				break;
			}
			if (val && !env_has(v, n, names[i]))
				rc = env_push(&v, &n, &cap, names[i], val);
		}
	}
	for (size_t i = 0; rc == 0 && o->env_extra && o->env_extra[i]; i++) {
		const char *e = o->env_extra[i];
		const char *eq = strchr(e, '=');

		if (!eq || !valid_env_name(e, (size_t)(eq - e))) {
			drv__seterr(err, errlen, "driver '%s': env_extra entry \"%.60s\" is not NAME=value",
			            h->name, e);
			rc = DRV_EINVAL;
			break;
		}
		char name[256];
		snprintf(name, sizeof(name), "%.*s", (int)(eq - e), e);
		if (!env_has(v, n, name))
			rc = env_push(&v, &n, &cap, e, NULL);
	}
	if (rc == DRV_ENOMEM)
		drv__seterr(err, errlen, "driver '%s': out of memory", h->name);
	if (rc != 0) {
		free_strv(v);
		return rc;
	}
	h->envp = v;
	return 0;
}

static int build_argv(struct drv_host *h, const struct drv_spawn_opts *o)
{
	size_t n = 0;

	while (o->args && o->args[n])
		n++;
	h->argv = drv__calloc(n + 2, sizeof(char *));
	if (!h->argv)
		return DRV_ENOMEM;
	h->argv[0] = drv__strdup(o->path);
	if (!h->argv[0])
		return DRV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		h->argv[i + 1] = drv__strdup(o->args[i]);
		if (!h->argv[i + 1])
			return DRV_ENOMEM;
	}
	return 0;
}

static pthread_once_t sweep_once = PTHREAD_ONCE_INIT;

static void sweep_at_start(void)
{
	drv__sockdir_sweep(drv__socket_base());
}

int drv_host_sweep_socket_dirs(void)
{
	return drv__sockdir_sweep(drv__socket_base());
}

static int make_sockdir(struct drv_host *h, char *err, size_t errlen)
{
	/* The litter of hosts and drivers that were killed goes once per process, before we add ours. */
	pthread_once(&sweep_once, sweep_at_start);
	if (drv__sockdir_make("drover", h->sockdir, sizeof(h->sockdir)) != 0) {
		drv__seterr(err, errlen, "driver '%s': cannot create a socket directory in %s: %s", h->name,
		            drv__socket_base(), strerror(errno));
		h->sockdir[0] = '\0';
		return DRV_ESYSTEM;
	}
	/* What the handshake's socket must resolve into; the base may be reached through a symlink. */
	if (!realpath(h->sockdir, h->sockdir_real)) {
		drv__seterr(err, errlen, "driver '%s': cannot resolve its socket directory %s: %s", h->name,
		            h->sockdir, strerror(errno));
		return DRV_ESYSTEM;
	}
	return 0;
}

/*
 * Why the driver program could not be started, from the libuv error of the
 * spawn (a negated errno on Unix; libuv has no name for some, such as
 * ENOEXEC), with a hint for the mistakes a driver author makes: a script
 * without a "#!" line, or one whose interpreter is missing.
 */
static void describe_spawn_error(const struct drv_host *h, int uv_err, char *buf, size_t len)
{
	int e = -uv_err;

	if (e == ENOEXEC)
		snprintf(buf, len, "%s (not a program for this machine; a script needs a \"#!\" line)",
		         strerror(e));
	else if (e == ENOENT && strchr(h->path, '/') && access(h->path, F_OK) == 0)
		snprintf(buf, len, "%s (the file exists: is the interpreter on its \"#!\" line missing?)",
		         strerror(e));
	else if (e == ENOENT && !strchr(h->path, '/') && access(h->path, F_OK) == 0)
		snprintf(buf, len,
		         "%s in PATH (a name without '/' is looked up in PATH, not in the current "
		         "directory: use ./%s)",
		         strerror(e), h->path);
	else if (e == EACCES)
		snprintf(buf, len, "%s (is it an executable file?)", strerror(e));
	else
		snprintf(buf, len, "%s", e > 0 ? strerror(e) : uv_strerror(uv_err));
}

/* ---- the handshake ---- */

/* Copies `s` into buf with non-printable bytes escaped and the length capped, for error messages. */
static void quote_line(const char *s, char *buf, size_t len)
{
	size_t j = 0;

	for (size_t i = 0; s[i] && j + 5 < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i >= 120) {
			snprintf(buf + j, len - j, "...");
			return;
		}
		if (c == '"' || c == '\\') {
			buf[j++] = '\\';
			buf[j++] = (char)c;
		} else if (isprint(c)) {
			buf[j++] = (char)c;
		} else {
			j += (size_t)snprintf(buf + j, len - j, "\\x%02x", c);
		}
	}
	buf[j < len ? j : len - 1] = '\0';
}

static void stderr_tail_locked(const struct drv_host *h, char *buf, size_t len)
{
	unsigned n = h->tail_count < 3 ? h->tail_count : 3;
	size_t j = 0;

	buf[0] = '\0';
	for (unsigned i = h->tail_count - n; i < h->tail_count && j < len; i++) {
		j += (size_t)snprintf(buf + j, len - j, "%s%s", j ? " | " : "",
		                      h->tail[i % DRV_HOST_TAIL_LINES]);
	}
	if (!buf[0])
		snprintf(buf, len, "(nothing)");
}

/*
 * What a handshake timeout most likely means, for the two slips a driver
 * author makes most: the line printed on stderr, or printed on stdout but
 * never flushed (a pipe is block-buffered, so it waits in the driver).
 */
static void timeout_hint_locked(const struct drv_host *h, char *buf, size_t len)
{
	unsigned n = h->tail_count < DRV_HOST_TAIL_LINES ? h->tail_count : DRV_HOST_TAIL_LINES;
	size_t out = h->outlen > h->stdout_bytes ? h->outlen : h->stdout_bytes;

	buf[0] = '\0';
	for (unsigned i = h->tail_count - n; i < h->tail_count; i++) {
		const char *line = h->tail[i % DRV_HOST_TAIL_LINES];
		if (strncmp(line, "1|", 2) == 0 && strstr(line, "|grpc")) {
			snprintf(buf, len, "; its handshake line went to stderr: print it on stdout");
			return;
		}
	}
	if (out == 0)
		snprintf(buf, len,
		         "; nothing arrived on its stdout (a line printed but not flushed stays in the "
		         "driver's buffer)");
	else
		snprintf(buf, len, "; %zu bytes arrived on its stdout, without a newline", out);
}

/* True when the host part of "HOST:PORT" or "[V6]:PORT" (already checked by the handshake parser) is
 * loopback. */
static bool loopback_address(const char *addr)
{
	struct drv_host_port hp;
	return drv_host_port_parse(addr, false, &hp, NULL, 0) == 0 && drv__is_loopback_host(hp.host);
}

/*
 * The path checks of a unix handshake, before we connect: the socket's
 * directory resolves (symlinks followed) into the one made for this driver,
 * and the socket itself is a socket, not a link. They make the error clear;
 * the listener's credentials, checked after connecting, are what a swap of
 * the file between the two steps cannot fool. 0; -1 when nothing is there;
 * -2 when what is there is refused; with `why`.
 */
static int check_socket_path(const struct drv_host *h, const char *path, struct stat *st, char *why,
                             size_t len)
{
	char dir[PATH_MAX], real[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = strlen(h->sockdir_real);

	snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	if (!realpath(dir, real)) {
		snprintf(why, len, "its directory cannot be resolved (%s)", strerror(errno));
		return -1;
	}
	if (strncmp(real, h->sockdir_real, n) != 0 || (real[n] != '\0' && real[n] != '/')) {
		snprintf(why, len,
		         "it is outside the socket directory made for this driver (%s); a spawned driver "
		         "must listen in $DROVER_SOCKET_DIR",
		         h->sockdir);
		return -2;
	}
	if (lstat(path, st) != 0) {
		snprintf(why, len, "nothing is there (%s)", strerror(errno));
		return -1;
	}
	if (S_ISLNK(st->st_mode)) {
		snprintf(why, len, "it is a symbolic link, not the driver's own socket");
		return -2;
	}
	if (!S_ISSOCK(st->st_mode)) {
		snprintf(why, len, "it is not a socket");
		return -2;
	}
	return 0;
}

/* True when pid is `ancestor` or one of its descendants, from the parent links in /proc. */
static bool descends_from(pid_t pid, pid_t ancestor)
{
	for (int depth = 0; depth < 64 && pid > 1; depth++) {
		pid_t ppid;

		if (pid == ancestor)
			return true;
		if (drv__proc_stat(pid, &ppid, NULL) != 0)
			return false;
		pid = ppid;
	}
	return false;
}

/*
 * Who listens at the other end of a connected unix socket: the driver we
 * spawned or a process it started, under the uid that owns the socket file.
 * Anything else (another program's socket, hard-linked into the driver's
 * directory, or swapped in after the path checks) is refused before a byte
 * is sent. 0, or -1 with `why`.
 */
static int check_peer(struct drv_host *h, int fd, const struct stat *st, char *why, size_t len)
{
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	pid_t driver;

	pthread_mutex_lock(&h->mu);
	driver = h->pid;
	pthread_mutex_unlock(&h->mu);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0) {
		snprintf(why, len, "cannot tell who listens there (%s)", strerror(errno));
		return -1;
	}
	if (!descends_from(cr.pid, driver)) {
		snprintf(why, len,
		         "the process listening there (pid %d) is not the driver (pid %d) nor one of its "
		         "children",
		         (int)cr.pid, (int)driver);
		return -1;
	}
	if (cr.uid != st->st_uid) {
		snprintf(why, len, "the socket is owned by uid %u, not by the driver's uid %u",
		         (unsigned)st->st_uid, (unsigned)cr.uid);
		return -1;
	}
	return 0;
}

/*
 * A spawned driver announces a socket it already listens on. We connect
 * at once: "nobody listens there" becomes a clear handshake error instead of
 * a puzzling UNAVAILABLE on the first call, and the connection is the
 * channel's (a direct one, see drv__rpc_channel_new_fd). A driver that dies
 * is restarted as a new process with a new channel, so nothing is lost by a
 * channel that does not reconnect. The descriptor, or -1 with `why`.
 */
static int connect_unix(const char *path, char *why, size_t len)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(why, len, "socket path is longer than %zu bytes", sizeof(sa.sun_path) - 1);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, len, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		snprintf(why, len, "nothing listens on %s (%s)", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Checks the handshake line and connects the channel. A driver of another
 * protocol version gets its own error code and message: the operator must
 * upgrade something, not debug garbage. The address must be the driver's
 * own (PROTOCOL.md §12.6): the calls that follow carry backends' configs and
 * secrets, so a driver that names another program's socket or port is
 * refused before anything is sent there.
 */
static int finish_handshake(struct drv_host *h, const char *line, char *err, size_t errlen)
{
	struct drv_handshake hs;
	char perr[256] = "", q[512];
	const char *bar = strchr(line, '|');
	int rc, ufd = -1;

	quote_line(line, q, sizeof(q));
	rc = drv_handshake_parse(line, &hs, perr, sizeof(perr));
	if (rc == DRV_EPROTOCOL && bar) {
		drv__seterr(err, errlen,
		            "driver '%s' (%s): speaks protocol %ld, we speak %d (handshake \"%s\")", h->name,
		            h->path, strtol(bar + 1, NULL, 10), DRV_PROTOCOL_VERSION, q);
		return DRV_EPROTOCOL;
	}
	if (rc != 0) {
		drv__seterr(err, errlen, "driver '%s' (%s): garbage handshake line \"%s\": %s", h->name,
		            h->path, q, perr[0] ? perr : drv_strerror(rc));
		return DRV_EHANDSHAKE;
	}
	if (hs.protocol_version != DRV_PROTOCOL_VERSION) {
		drv__seterr(err, errlen, "driver '%s' (%s): speaks protocol %d, we speak %d", h->name,
		            h->path, hs.protocol_version, DRV_PROTOCOL_VERSION);
		return DRV_EPROTOCOL;
	}
	if (strcmp(hs.network, "unix") == 0) {
		char why[PATH_MAX + 160];
		struct stat st;

		rc = check_socket_path(h, hs.address, &st, why, sizeof(why));
		if (rc == -1)
			drv__seterr(err, errlen,
			            "driver '%s' (%s): handshake \"%s\" names a socket nobody answers on: %s",
			            h->name, h->path, q, why);
		else if (rc != 0)
			drv__seterr(err, errlen,
			            "driver '%s' (%s): handshake refused: it names the socket %s: %s",
			            h->name, h->path, hs.address, why);
		if (rc != 0)
			return DRV_EHANDSHAKE;
		ufd = connect_unix(hs.address, why, sizeof(why));
		if (ufd < 0) {
			drv__seterr(err, errlen,
			            "driver '%s' (%s): handshake \"%s\" names a socket nobody answers on: %s",
			            h->name, h->path, q, why);
			return DRV_EHANDSHAKE;
		}
		if (check_peer(h, ufd, &st, why, sizeof(why)) != 0) {
			close(ufd);
			drv__seterr(err, errlen,
			            "driver '%s' (%s): handshake refused: it names the socket %s: %s",
			            h->name, h->path, hs.address, why);
			return DRV_EHANDSHAKE;
		}
		if (asprintf(&h->target, "unix:%s", hs.address) < 0)
			h->target = NULL;
	} else {
		/*
		 * A TCP port may belong to any process, and nothing tells us which:
		 * only a host that allowed it for this driver takes one. Even then a
		 * spawned driver talks to us in plain text, so the address must be
		 * loopback, else a driver could route our calls (and the secrets in
		 * them) over the network.
		 */
		if (!h->allow_tcp) {
			drv__seterr(
			    err, errlen,
			    "driver '%s' (%s): handshake refused: it names the TCP address %s, which "
			    "could be any process's port; a spawned driver must listen on a unix socket in "
			    "$DROVER_SOCKET_DIR, unless its host allows TCP for it (droverd: "
			    "allow_tcp_handshake: true in its drivers.commands entry)",
			    h->name, h->path, hs.address);
			return DRV_EHANDSHAKE;
		}
		if (!loopback_address(hs.address)) {
			drv__seterr(
			    err, errlen,
			    "driver '%s' (%s): handshake \"%s\" names a non-loopback TCP address; a spawned "
			    "driver must listen on a unix socket or on loopback",
			    h->name, h->path, q);
			return DRV_EHANDSHAKE;
		}
		h->target = drv__strdup(hs.address);
	}
	if (!h->target) {
		if (ufd >= 0)
			close(ufd);
		drv__seterr(err, errlen, "driver '%s': out of memory", h->name);
		return DRV_ENOMEM;
	}
	struct drv_rpc_channel_opts co = {.target = h->target};
	drv__host_channel_limits(h, &co);
	char cerr[256] = "";
	rc = ufd >= 0 ? drv__rpc_channel_new_fd(&co, ufd, &h->ch, cerr, sizeof(cerr))
	              : drv_rpc_channel_new(&co, &h->ch, cerr, sizeof(cerr));
	if (rc != 0) {
		drv__seterr(err, errlen, "driver '%s' (%s): cannot open a channel to %s: %s", h->name,
		            h->path, h->target, cerr[0] ? cerr : drv_strerror(rc));
		return rc;
	}
	return 0;
}

/*
 * Waits for the handshake line, the process's death, or the deadline.
 * Returns 0 with the line copied into `line`, or an error.
 */
static int wait_handshake(struct drv_host *h, int wait_ms, int timeout_ms, char *line, size_t linelen,
                          char *err, size_t errlen)
{
	uint64_t deadline = deadline_after_ms(wait_ms);
	int rc = 0;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		uint64_t now = drv__host_now_ns(), wake = deadline;

		if (h->spawn_done && h->spawn_errno != 0) {
			char why[200];
			describe_spawn_error(h, h->spawn_errno, why, sizeof(why));
			drv__seterr(err, errlen, "driver '%s' (%s): cannot start: %s", h->name, h->path, why);
			rc = DRV_ESYSTEM;
			break;
		}
		if (h->line_ready) {
			if (h->line_too_long) {
				char q[256];
				quote_line(h->handshake, q, sizeof(q));
				drv__seterr(
				    err, errlen,
				    "driver '%s' (%s): garbage handshake line \"%s\": no newline in its "
				    "first %d bytes",
				    h->name, h->path, q, DRV_HOST_HANDSHAKE_MAX - 1);
				rc = DRV_EHANDSHAKE;
			} else if (h->line_nul) {
				char q[256];
				quote_line(h->handshake, q, sizeof(q));
				drv__seterr(
				    err, errlen,
				    "driver '%s' (%s): garbage handshake line \"%s...\": it contains a "
				    "NUL byte",
				    h->name, h->path, q);
				rc = DRV_EHANDSHAKE;
			} else {
				snprintf(line, linelen, "%s", h->handshake);
			}
			break;
		}
		if (h->exited) {
			uint64_t drain_end = h->t_exit_ns + (uint64_t)EXIT_DRAIN_MS * 1000000u;

			if ((h->stderr_eof && h->stdout_eof) || now >= drain_end) {
				char how[96], tail[800];

				drv__host_describe_exit_locked(h, how, sizeof(how));
				stderr_tail_locked(h, tail, sizeof(tail));
				drv__seterr(err, errlen,
				            "driver '%s' (%s): %s before its handshake; stderr: %s", h->name,
				            h->path, how, tail);
				rc = DRV_EHANDSHAKE;
				break;
			}
			if (drain_end < wake)
				wake = drain_end;
		}
		if (now >= deadline) {
			char tail[800];

			char hint[200];
			stderr_tail_locked(h, tail, sizeof(tail));
			timeout_hint_locked(h, hint, sizeof(hint));
			drv__seterr(err, errlen,
			            "driver '%s' (%s): handshake timed out after %d ms%s%s; stderr: %s",
			            h->name, h->path, timeout_ms,
			            h->stdout_eof ? " (it closed its stdout)" : "", hint, tail);
			rc = DRV_EDEADLINE;
			break;
		}
		struct timespec ts = abs_realtime_from_mono(wake);
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

/*
 * Reads the handshake line straight from the child's stdout on the calling
 * thread (posix_spawn path): no hand-off through the I/O thread sits between
 * the driver's write and our parse. Ends when the line is complete, stdout
 * closes, the process exits (pidfd readable) or the deadline passes; the last
 * three cases are then explained by wait_handshake, which sees the exit and
 * the stderr lines the I/O thread collected.
 */
static int read_handshake_direct(struct drv_host *h, int timeout_ms, char *line, size_t linelen, char *err,
                                 size_t errlen)
{
	uint64_t deadline = deadline_after_ms(timeout_ms);
	size_t len = 0, cap = sizeof(h->outbuf) - 1;
	bool done = false, too_long = false, gone = false, exited = false, nul = false;

	while (!done && !gone) {
		uint64_t now = drv__host_now_ns();
		struct pollfd p[2] = {{.fd = h->fd_out, .events = POLLIN},
		                      {.fd = h->pidfd, .events = POLLIN}};
		int left = now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);

		if (left == 0 && !exited)
			break;
		/* Once the process is gone, only what stdout still holds counts. */
		int n = poll(p, exited ? 1 : 2, exited ? 0 : left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || (exited && n == 0)) {
			gone = true;
			break;
		}
		if (!exited && (p[1].revents & POLLIN))
			exited = true;
		if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t r = read(h->fd_out, h->outbuf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			gone = true;
			break;
		}
		char *nl = memchr(h->outbuf + len, '\n', (size_t)r);
		len += (size_t)r;
		if (nl) {
			/* C string functions would see the line end at a NUL byte and miss what follows. */
			nul = memchr(h->outbuf, '\0', (size_t)(nl - h->outbuf)) != NULL;
			*nl = '\0';
			if (nl > h->outbuf && nl[-1] == '\r')
				nl[-1] = '\0';
			done = true;
		} else if (len == cap) {
			h->outbuf[len] = '\0';
			done = too_long = true;
		}
	}
	pthread_mutex_lock(&h->mu);
	if (done) {
		memcpy(h->handshake, h->outbuf, sizeof(h->handshake));
		h->handshake[sizeof(h->handshake) - 1] = '\0';
		h->line_ready = true;
		h->line_too_long = too_long;
		h->line_nul = nul;
		h->t_line_ns = drv__host_now_ns();
	} else {
		h->stdout_bytes = len;
		if (gone)
			h->stdout_eof = true;
	}
	pthread_mutex_unlock(&h->mu);
	uint64_t now = drv__host_now_ns();
	int rest = now >= deadline ? 0 : (int)((deadline - now) / 1000000);
	return wait_handshake(h, rest, timeout_ms, line, linelen, err, errlen);
}

/* Kills (if needed), reaps and closes everything of a host on the failure path or in free. */
static void host_teardown(struct drv_host *h, bool spawned_io)
{
	if (spawned_io) {
		pthread_mutex_lock(&h->mu);
		h->quiet = true;
		bool running = h->spawn_errno == 0 && !h->exited;
		pthread_mutex_unlock(&h->mu);
		if (running && drv__host_io_submit(drv__host_io_kill, h, SIGKILL) == 0) {
			pthread_mutex_lock(&h->mu);
			drv__host_wait_exit_locked(h, deadline_after_ms(KILL_WAIT_MS));
			pthread_mutex_unlock(&h->mu);
		}
		/* Without the close commands queued, the host cannot be freed safely; retry until queued. */
		while (drv__host_io_submit(drv__host_io_close_all, h, 0) != 0)
			usleep(1000);
		pthread_mutex_lock(&h->mu);
		while (h->open_handles > 0)
			pthread_cond_wait(&h->cv, &h->mu);
		pthread_mutex_unlock(&h->mu);
	}
	drv__host_release(h);
}

int drv_host_spawn(const struct drv_spawn_opts *opts, struct drv_host **out, char *err, size_t errlen)
{
	struct drv_host *h;
	char line[DRV_HOST_HANDSHAKE_MAX];
	const char *base;
	int timeout_ms, rc;

	if (err && errlen)
		err[0] = '\0';
	if (!opts || !opts->path || !opts->path[0] || !out) {
		drv__seterr(err, errlen, "drv_host_spawn: a driver path is required");
		return DRV_EINVAL;
	}
	h = drv__host_new();
	if (!h) {
		drv__seterr(err, errlen, "drv_host_spawn: out of memory");
		return DRV_ENOMEM;
	}
	h->spawned = true;
	base = strrchr(opts->path, '/');
	h->name = drv__strdup(opts->name && opts->name[0] ? opts->name : base ? base + 1 : opts->path);
	h->path = drv__strdup(opts->path);
	h->on_stderr = opts->on_stderr;
	h->on_exit = opts->on_exit;
	h->ud = opts->ud;
	h->limits = opts->limits;
	h->allow_tcp = opts->allow_tcp_handshake;
	if (drv__host_stderr_init(h, opts) != 0) {
		drv__seterr(err, errlen, "drv_host_spawn: out of memory");
		rc = DRV_ENOMEM;
		goto fail_prepare;
	}
	timeout_ms =
	    opts->handshake_timeout_ms > 0 ? opts->handshake_timeout_ms : DEFAULT_HANDSHAKE_TIMEOUT_MS;
	if (!h->name || !h->path || build_argv(h, opts) != 0) {
		drv__seterr(err, errlen, "drv_host_spawn: out of memory");
		rc = DRV_ENOMEM;
		goto fail_prepare;
	}
	rc = make_sockdir(h, err, errlen);
	if (rc != 0)
		goto fail_prepare;
	rc = build_env(h, opts, err, errlen);
	if (rc != 0)
		goto fail_prepare;
	rc = drv__host_io_start();
	if (rc != 0) {
		drv__seterr(err, errlen, "driver '%s': cannot start the host I/O thread", h->name);
		goto fail_prepare;
	}
	if (drv__host_have_pidfd()) {
		h->use_pidfd = true;
		pthread_mutex_lock(&h->mu);
		h->quiet = true;
		h->t_spawn_ns = drv__host_now_ns();
		pthread_mutex_unlock(&h->mu);
		rc = drv__host_spawn_posix(h);
		if (rc != 0) {
			char why[200];
			describe_spawn_error(h, rc, why, sizeof(why));
			drv__seterr(err, errlen, "driver '%s' (%s): cannot start: %s", h->name, h->path, why);
			rc = DRV_ESYSTEM;
			goto fail_prepare;
		}
		pthread_mutex_lock(&h->mu);
		h->spawn_done = true;
		/* Counted before the loop opens them, so a teardown can never see zero too early. */
		h->open_handles = 5;
		pthread_mutex_unlock(&h->mu);
		while (drv__host_io_submit(drv__host_io_adopt, h, 0) != 0)
			usleep(1000);
		rc = read_handshake_direct(h, timeout_ms, line, sizeof(line), err, errlen);
	} else {
		rc = drv__host_io_submit(drv__host_io_spawn, h, 0);
		if (rc != 0) {
			drv__seterr(err, errlen, "driver '%s': out of memory", h->name);
			goto fail_prepare;
		}
		rc = wait_handshake(h, timeout_ms, timeout_ms, line, sizeof(line), err, errlen);
	}
	if (rc == 0)
		rc = finish_handshake(h, line, err, errlen);
	if (rc != 0)
		goto fail_spawned;
	pthread_mutex_lock(&h->mu);
	h->quiet = false;
	bool late = h->exit_held;
	pthread_mutex_unlock(&h->mu);
	if (h->use_pidfd)
		while (drv__host_io_submit(drv__host_io_adopt_stdout, h, 0) != 0)
			usleep(1000);
	/* It died right after a good handshake: the exit callback still runs, on the I/O thread as promised.
	 */
	if (late)
		drv__host_io_submit(drv__host_io_late_exit, h, 0);
	*out = h;
	return 0;

fail_spawned:
	/* The spawn command was queued: wait until it ran before tearing down. */
	pthread_mutex_lock(&h->mu);
	while (!h->spawn_done)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
	host_teardown(h, true);
	return rc;
fail_prepare:
	host_teardown(h, false);
	return rc;
}

int drv_host_wait(struct drv_host *h, int timeout_ms, int *exit_status)
{
	int rc = DRV_EDEADLINE;

	if (!h)
		return DRV_EINVAL;
	if (!h->spawned)
		return DRV_EDEADLINE;
	pthread_mutex_lock(&h->mu);
	if (drv__host_wait_exit_locked(h, deadline_after_ms(timeout_ms))) {
		if (exit_status)
			*exit_status = drv__host_status_locked(h);
		rc = 0;
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

int drv_host_stop(struct drv_host *h, int grace_ms, int *exit_status)
{
	int rc = 0;

	if (!h)
		return DRV_EINVAL;
	if (!h->spawned) {
		pthread_mutex_lock(&h->mu);
		h->closed = true;
		pthread_mutex_unlock(&h->mu);
		if (exit_status)
			*exit_status = 0;
		return 0;
	}
	pthread_mutex_lock(&h->mu);
	if (!h->exited) {
		pthread_mutex_unlock(&h->mu);
		rc = drv__host_io_submit(drv__host_io_kill, h, SIGTERM);
		pthread_mutex_lock(&h->mu);
		if (rc == 0 && !drv__host_wait_exit_locked(h, deadline_after_ms(grace_ms)))
			rc = DRV_EDEADLINE;
		if (rc != 0) {
			/* No memory to ask for SIGTERM: the driver is killed all the same, and the caller
			 * learns why. */
			int why = rc == DRV_ENOMEM ? DRV_ENOMEM : DRV_EDEADLINE;
			pthread_mutex_unlock(&h->mu);
			while (drv__host_io_submit(drv__host_io_kill, h, SIGKILL) != 0)
				usleep(1000);
			pthread_mutex_lock(&h->mu);
			drv__host_wait_exit_locked(h, deadline_after_ms(KILL_WAIT_MS));
			rc = why;
		}
	}
	if (exit_status)
		*exit_status = h->exited ? drv__host_status_locked(h) : -1;
	pthread_mutex_unlock(&h->mu);
	return rc;
}

void drv_host_close_stdin(struct drv_host *h)
{
	if (h && h->spawned)
		while (drv__host_io_submit(drv__host_io_close_stdin, h, 0) != 0)
			usleep(1000);
}

void drv_host_free(struct drv_host *h)
{
	bool running;

	if (!h)
		return;
	if (!h->spawned) {
		drv__host_release(h);
		return;
	}
	pthread_mutex_lock(&h->mu);
	running = !h->exited;
	pthread_mutex_unlock(&h->mu);
	if (running)
		drv_host_stop(h, 2000, NULL);
	host_teardown(h, true);
}

/* ---- accessors ---- */

pid_t drv_host_pid(const struct drv_host *h)
{
	return h && h->spawned ? h->pid : 0;
}

const char *drv_host_name(const struct drv_host *h)
{
	return h ? h->name : NULL;
}

const char *drv_host_handshake(const struct drv_host *h)
{
	return h && h->spawned ? h->handshake : "";
}

const char *drv_host_target(const struct drv_host *h)
{
	return h ? h->target : NULL;
}

bool drv_host_alive(const struct drv_host *h)
{
	struct drv_host *mh = (struct drv_host *)h;
	bool alive;

	if (!h)
		return false;
	pthread_mutex_lock(&mh->mu);
	alive = h->spawned ? !h->exited : !h->closed;
	pthread_mutex_unlock(&mh->mu);
	return alive;
}

double drv_host_handshake_ms(const struct drv_host *h)
{
	if (!h || !h->spawned || !h->t_line_ns)
		return 0;
	return (double)(h->t_line_ns - h->t_spawn_ns) / 1e6;
}

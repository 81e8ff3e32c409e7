/*
 * drv_main(): the process around a driver. Parses the command line, checks
 * the driver's declaration, then serves either spawned (unix socket,
 * handshake on stdout, exit on stdin EOF) or standalone (--listen over TCP,
 * mutual TLS or loopback/--insecure), until SIGTERM/SIGINT.
 *
 * Nothing slow runs before the handshake line: the host measures spawn to
 * first RPC, so schemas and other cached answers are built after it. Spawned,
 * the driver even prints it before gRPC is up, listening on its socket
 * itself and handing each connection to gRPC once the server runs; gRPC
 * starts meanwhile on a thread of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "drover/address.h"
#include "drover/host.h"
#include "drover/rpc.h"
#include "drv_internal.h"

#define DEFAULT_GRACE_MS 5000
#define DEFAULT_WORKERS 4
#define MAX_WORKERS 256
#define UNIX_PATH_MAX 107
/* Time for replies already being written when shutdown cuts connections. */
#define SETTLE_MS 50

struct options {
	const char *listen;
	const char *tls_cert;
	const char *tls_key;
	const char *client_ca;
	bool insecure;
	int workers;
	int grace_ms;
	bool help, version, info;
};

static const char *prog_name(const char *argv0)
{
	const char *slash = argv0 ? strrchr(argv0, '/') : NULL;
	return slash ? slash + 1 : (argv0 ? argv0 : "drover-driver");
}

static void usage(FILE *out, const char *prog, const struct drv_driver *d)
{
	fprintf(out,
	        "Usage: %s [OPTIONS]\n"
	        "\n"
	        "drover driver for backend type \"%s\" (version %s): %s\n"
	        "\n"
	        "Without --listen this program is a plugin: droverd or drover-conformance start\n"
	        "it, read the handshake line it prints, and talk gRPC over a private unix socket.\n"
	        "\n"
	        "Options:\n"
	        "  --help               show this help and exit\n"
	        "  --version            print the driver version and exit\n"
	        "  --info               print GetInfo (type, version, features, config schema) as JSON\n"
	        "  --listen HOST:PORT   serve standalone over TCP (port 0 picks one)\n"
	        "  --tls-cert FILE      server certificate (PEM) for mutual TLS\n"
	        "  --tls-key FILE       private key (PEM) of --tls-cert\n"
	        "  --client-ca FILE     CA (PEM) that client certificates must chain to\n"
	        "  --insecure           allow plain TCP on a non-loopback address\n"
	        "  --workers N          handler threads (1..%d, default %d)\n"
	        "  --grace-ms N         on SIGTERM, let calls finish for N ms (default %d)\n"
	        "\n"
	        "Environment: DROVER_SOCKET_DIR (socket directory in spawned mode),\n"
	        "DROVER_LOG_LEVEL (debug, info, warn, error).\n",
	        prog, d->type, d->driver_version ? d->driver_version : "?",
	        d->description ? d->description : "", MAX_WORKERS, DEFAULT_WORKERS, DEFAULT_GRACE_MS);
}

/* Prints "<prog>: <message>" and the --help hint; returns exit code 2. */
static int __attribute__((format(printf, 2, 3))) usage_error(const char *prog, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
	return 2;
}

/* Decimal digits only: strtol alone would also take " 80" and "+80". */
static bool parse_int(const char *s, long lo, long hi, int *out)
{
	char *end;
	if (!(*s >= '0' && *s <= '9'))
		return false;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = (int)v;
	return true;
}

/* Returns -1 to go on serving, or an exit code. */
static int parse_args(int argc, char **argv, const char *prog, struct options *o)
{
	static const char *const with_value[] = {"--listen",    "--tls-cert", "--tls-key",
	                                         "--client-ca", "--workers",  "--grace-ms"};
	memset(o, 0, sizeof(*o));
	o->workers = DEFAULT_WORKERS;
	o->grace_ms = DEFAULT_GRACE_MS;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = NULL;
		char name[32];
		const char *eq = strchr(arg, '=');

		if (strncmp(arg, "--", 2) == 0 && eq && (size_t)(eq - arg) < sizeof(name)) {
			memcpy(name, arg, (size_t)(eq - arg));
			name[eq - arg] = '\0';
			val = eq + 1;
		} else {
			snprintf(name, sizeof(name), "%s", arg);
		}
		bool needs = false;
		for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
			if (strcmp(name, with_value[k]) == 0)
				needs = true;
		if (needs && !val) {
			if (i + 1 >= argc)
				return usage_error(prog, "option %s needs a value", name);
			val = argv[++i];
		} else if (!needs && val) {
			return usage_error(prog, "option %s takes no value", name);
		}

		if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
			o->help = true;
		} else if (strcmp(name, "--version") == 0) {
			o->version = true;
		} else if (strcmp(name, "--info") == 0) {
			o->info = true;
		} else if (strcmp(name, "--insecure") == 0) {
			o->insecure = true;
		} else if (strcmp(name, "--listen") == 0) {
			o->listen = val;
		} else if (strcmp(name, "--tls-cert") == 0) {
			o->tls_cert = val;
		} else if (strcmp(name, "--tls-key") == 0) {
			o->tls_key = val;
		} else if (strcmp(name, "--client-ca") == 0) {
			o->client_ca = val;
		} else if (strcmp(name, "--workers") == 0) {
			if (!parse_int(val, 1, MAX_WORKERS, &o->workers))
				return usage_error(
				    prog, "--workers: expected an integer from 1 to 256, got \"%.40s\"%s",
				    val, "");
		} else if (strcmp(name, "--grace-ms") == 0) {
			if (!parse_int(val, 0, 3600000, &o->grace_ms))
				return usage_error(
				    prog,
				    "--grace-ms: expected milliseconds from 0 to 3600000, got \"%.40s\"%s",
				    val, "");
		} else {
			return usage_error(prog, "unknown argument \"%.80s\"", arg);
		}
	}
	return -1;
}

static int check_listen(const char *prog, const struct options *o)
{
	struct drv_host_port hp;
	char why[96];
	bool any_tls = o->tls_cert || o->tls_key || o->client_ca;

	if (!o->listen) {
		if (any_tls || o->insecure)
			return usage_error(prog, "%s needs --listen HOST:PORT",
			                   o->insecure   ? "--insecure"
			                   : o->tls_cert ? "--tls-cert"
			                   : o->tls_key  ? "--tls-key"
			                                 : "--client-ca");
		return -1;
	}
	if (drv_host_port_parse(o->listen, true, &hp, why, sizeof(why)) != 0)
		return usage_error(prog,
		                   "--listen: expected HOST:PORT (e.g. 127.0.0.1:4100), got \"%.80s\": %s",
		                   o->listen, why);
	if (any_tls) {
		const char *missing = !o->tls_cert    ? "--tls-cert"
		                      : !o->tls_key   ? "--tls-key"
		                      : !o->client_ca ? "--client-ca"
		                                      : NULL;
		if (missing)
			return usage_error(
			    prog,
			    "mutual TLS needs --tls-cert, --tls-key and --client-ca together; %s is "
			    "missing%s",
			    missing, "");
		if (o->insecure)
			return usage_error(prog, "--insecure cannot be combined with TLS options");
		const char *files[] = {o->tls_cert, o->tls_key, o->client_ca};
		const char *names[] = {"--tls-cert", "--tls-key", "--client-ca"};
		for (int i = 0; i < 3; i++)
			if (access(files[i], R_OK) != 0)
				return usage_error(prog, "%s: cannot read \"%.200s\"", names[i], files[i]);
	} else if (!drv__is_loopback_host(hp.host) && !o->insecure) {
		return usage_error(
		    prog,
		    "refusing plain TCP on non-loopback address \"%.80s\": use --tls-cert, --tls-key "
		    "and --client-ca for mutual TLS, or --insecure%s",
		    hp.host, "");
	}
	return -1;
}

static enum drv_log_level level_from_env(void)
{
	const char *v = getenv("DROVER_LOG_LEVEL");
	if (!v)
		return DRV_LOG_INFO;
	if (strcmp(v, "debug") == 0)
		return DRV_LOG_DEBUG;
	if (strcmp(v, "warn") == 0)
		return DRV_LOG_WARN;
	if (strcmp(v, "error") == 0)
		return DRV_LOG_ERROR;
	return DRV_LOG_INFO;
}

static int print_info(const struct drv_driver *d)
{
	json_t *o = drv__info_json(d);
	if (!o) {
		fprintf(stderr, "%s: cannot build GetInfo\n", d->type);
		return 1;
	}
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return 1;
	puts(text);
	free(text);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* Socket path of spawned mode: $DROVER_SOCKET_DIR/<type>.sock, or in a fresh private directory. */
static int make_socket_path(const struct drv_driver *d, char *path, size_t len, char *own_dir, size_t dirlen)
{
	const char *dir = getenv("DROVER_SOCKET_DIR");
	own_dir[0] = '\0';
	if (dir && dir[0]) {
		struct stat st;
		if (dir[0] != '/') {
			drv_log(DRV_LOG_ERROR, "DROVER_SOCKET_DIR \"%.200s\" is not an absolute path", dir);
			return DRV_EINVAL;
		}
		if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
			drv_log(DRV_LOG_ERROR, "DROVER_SOCKET_DIR \"%.200s\" is not a directory", dir);
			return DRV_EINVAL;
		}
	} else {
		char prefix[128];
		snprintf(prefix, sizeof(prefix), "drover-%.100s", d->type);
		if (drv__sockdir_make(prefix, own_dir, dirlen) != 0) {
			drv_log(DRV_LOG_ERROR, "cannot create a socket directory in %s: %s",
			        drv__socket_base(), strerror(errno));
			own_dir[0] = '\0';
			return DRV_ESYSTEM;
		}
		dir = own_dir;
	}
	int n = snprintf(path, len, "%s/%s.sock", dir, d->type);
	if (n < 0 || (size_t)n >= len || (size_t)n > UNIX_PATH_MAX) {
		drv_log(DRV_LOG_ERROR,
		        "socket path \"%s/%s.sock\" is longer than %d bytes; use a shorter "
		        "DROVER_SOCKET_DIR",
		        dir, d->type, UNIX_PATH_MAX);
		if (own_dir[0])
			rmdir(own_dir);
		own_dir[0] = '\0';
		return DRV_EINVAL;
	}
	return 0;
}

/*
 * The spawned driver's listening socket, non-blocking. A stale socket of an
 * earlier run is replaced; anything else at the path is left alone and is an
 * error. Returns the descriptor, or -1 with the reason in err.
 */
static int listen_unix(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "the socket path is longer than %zu bytes", sizeof(sa.sun_path) - 1);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "the path exists and is not a socket");
			return -1;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, SOMAXCONN) != 0) {
		snprintf(err, errlen, "%s (does its directory exist and is it writable?)", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Hands every connection waiting on the listener to the gRPC server. */
static void accept_all(int lfd, struct drv_rpc_server *srv)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			char c;
			/*
			 * A peer already gone (a host that gave up, say) needs no HTTP/2
			 * transport set up and torn down on the way to the next.
			 */
			if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
				close(fd);
			else
				drv__rpc_server_adopt_fd(srv, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			drv_log(DRV_LOG_WARN, "accept on the driver socket failed: %s", strerror(errno));
			/* Out of descriptors, say: the backlog stays readable; do not spin on it. */
			usleep(100 * 1000);
		}
		return;
	}
}

/* The gRPC server of a driver, made by make_server(), maybe on a thread of its own. */
struct server_setup {
	struct drv_rpc_server_opts opts;
	const struct drv_driver *driver;
	bool spawned;
	int port;
	struct drv_rpc_server *srv;
	int rc;
	char err[512];
};

/*
 * Initialises gRPC and makes and starts the server: spawned, unbound (the
 * connections come from our own listener); standalone, on its address.
 */
static void *make_server(void *arg)
{
	struct server_setup *s = arg;
	s->rc = drv_rpc_server_new(&s->opts, &s->srv, s->err, sizeof(s->err));
	if (s->rc == 0)
		s->rc = drv__serve_register(s->srv, s->driver, s->err, sizeof(s->err));
	if (s->rc == 0)
		s->rc = s->spawned ? drv__rpc_server_start_unbound(s->srv, s->err, sizeof(s->err))
		                   : drv_rpc_server_start(s->srv, &s->port, s->err, sizeof(s->err));
	return NULL;
}

/* Prints the handshake line; afterwards stdout goes to /dev/null. 0 or -1 (logged). */
static int print_handshake(const struct drv_handshake *hs, bool stdout_closed)
{
	char line[400];

	if (drv_handshake_format(hs, line, sizeof(line)) < 0) {
		drv_log(DRV_LOG_ERROR, "cannot format the handshake line for %s", hs->address);
		return -1;
	}
	if (stdout_closed) {
		drv_log(DRV_LOG_INFO, "stdout is closed; handshake not printed: %s", line);
		return 0;
	}
	if (printf("%s\n", line) < 0 || fflush(stdout) != 0) {
		drv_log(DRV_LOG_ERROR, "cannot write the handshake line: %s", strerror(errno));
		return -1;
	}
	/* Nothing may follow the handshake on stdout: stray output goes nowhere. */
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDOUT_FILENO);
		close(devnull);
	}
	return 0;
}

/*
 * Waits for SIGTERM/SIGINT (signalfd: the signals are blocked in every
 * thread, so they queue there) or, when spawned, EOF on stdin, and accepts
 * connections on `lfd` (-1: gRPC listens itself). Polling all in the main
 * thread costs no extra thread, which keeps an idle driver small.
 */
static void wait_for_stop(int sigfd, bool watch_stdin, int lfd, struct drv_rpc_server *srv)
{
	char buf[512];
	for (;;) {
		struct pollfd fds[3] = {{.fd = sigfd, .events = POLLIN},
		                        {.fd = watch_stdin ? STDIN_FILENO : -1, .events = POLLIN},
		                        {.fd = lfd, .events = POLLIN}};
		int n = poll(fds, 3, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			drv_log(DRV_LOG_ERROR, "poll failed: %s; stopping", strerror(errno));
			return;
		}
		if (fds[0].revents) {
			struct signalfd_siginfo si;
			if (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				drv_log(DRV_LOG_INFO, "received %s; stopping",
				        si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
			return;
		}
		if (watch_stdin && fds[1].revents) {
			if (fds[1].revents & POLLNVAL) {
				drv_log(DRV_LOG_INFO, "stdin is closed; stopping");
				return;
			}
			ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
			if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
				drv_log(DRV_LOG_INFO, "stdin reached EOF (host gone); stopping");
				return;
			}
		}
		if (lfd >= 0 && fds[2].revents)
			accept_all(lfd, srv);
	}
}

/*
 * Finds which of fds 0..2 the process did not inherit. A descriptor that was
 * closed at exec is taken by the first open() of the process, and gRPC's
 * static initialisers open an eventfd before main() runs: such a descriptor
 * is close-on-exec, which an inherited standard stream never is. The stdin
 * watch, the handshake and log lines must then leave it alone. Descriptors
 * still closed get /dev/null so no later socket lands on them.
 */
static void std_fds_check(bool closed[3])
{
	for (int fd = 0; fd <= 2; fd++) {
		int flags = fcntl(fd, F_GETFD);
		closed[fd] = flags == -1 || (flags & FD_CLOEXEC);
		if (flags == -1 && errno == EBADF) {
			int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
			if (nfd >= 0 && nfd != fd) {
				dup2(nfd, fd);
				close(nfd);
			}
		}
	}
}

int drv_main(int argc, char **argv, const struct drv_driver *driver)
{
	const char *prog = prog_name(argc > 0 ? argv[0] : NULL);
	struct options o;
	char err[512];
	int rc;

	/*
	 * First of all, so that no printf below can write into a descriptor
	 * gRPC owns: a stream that is not ours is pointed at /dev/null.
	 */
	bool std_closed[3];
	std_fds_check(std_closed);
	/*
	 * The process is the driver's, run by the SDK: jansson's blocks come
	 * from the SDK's allocator too, so that a failure among them is counted
	 * (drv__alloc_failures) and the config check can tell a config that is
	 * not JSON from a parse that ran out of memory (jansson reports both as
	 * a syntax error).
	 */
	json_set_alloc_funcs(drv__malloc, free);
	/*
	 * A driver answers the same large messages again and again (a GetOffers
	 * of 1,000 offers is 115 KB packed, ~340 KB unpacked). With glibc's
	 * defaults, blocks that size are mmap'ed and unmapped, and a freed heap
	 * top is given back, per call: every page faulted in again next time,
	 * ~50 faults per call. Here they stay in the heap, and up to 8 MB of
	 * free heap top is kept. An idle driver is not affected; one that once
	 * answered a large call keeps at most that much more.
	 */
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	mallopt(M_TRIM_THRESHOLD, 8 << 20);
	for (int fd = 1; fd <= 2; fd++) {
		FILE *devnull = std_closed[fd] ? fopen("/dev/null", "we") : NULL;
		if (devnull && fd == 1)
			stdout = devnull;
		else if (devnull)
			stderr = devnull;
	}
	if (std_closed[2])
		drv__log_set_fd(-1);

	if (!driver || !driver->type) {
		fprintf(stderr, "%s: drv_main called without a driver\n", prog);
		return 1;
	}
	rc = parse_args(argc, argv, prog, &o);
	if (rc >= 0)
		return rc;
	if (o.help) {
		usage(stdout, prog, driver);
		return 0;
	}
	if (o.version) {
		printf("%s %s (drover protocol %d)\n", driver->type,
		       driver->driver_version ? driver->driver_version : "", DRV_PROTOCOL_VERSION);
		return 0;
	}
	if (drv_driver_check(driver, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 1;
	}
	if (o.info)
		return print_info(driver);
	rc = check_listen(prog, &o);
	if (rc >= 0)
		return rc;

	bool spawned = o.listen == NULL;
	if (spawned) {
		const char *cookie = getenv(DRV_MAGIC_COOKIE_KEY);
		if (!cookie || strcmp(cookie, DRV_MAGIC_COOKIE_VALUE) != 0) {
			fprintf(
			    stderr,
			    "%s: this is a drover driver plugin (backend type \"%s\"); it is not meant to be "
			    "run directly.\n"
			    "Run it through droverd or drover-conformance, or serve it standalone with "
			    "--listen HOST:PORT (see --help).\n",
			    prog, driver->type);
			return 1;
		}
	}

	drv__log_set_driver(driver->type);
	drv__log_set_level(level_from_env());

	if (spawned && (std_closed[0] || std_closed[1])) {
		drv_log(DRV_LOG_ERROR,
		        "std%s is closed: a spawned driver prints its handshake on stdout and stops "
		        "when its host closes stdin, so the host must hold both open",
		        std_closed[0] ? "in" : "out");
		return 1;
	}

	/*
	 * Block the stop signals before any gRPC thread exists so every thread
	 * inherits the mask and the signals wait for us on the signalfd.
	 */
	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGINT);
	signal(SIGPIPE, SIG_IGN);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	int sigfd = signalfd(-1, &stop_set, SFD_CLOEXEC);
	if (sigfd < 0) {
		drv_log(DRV_LOG_ERROR, "signalfd: %s", strerror(errno));
		return 1;
	}

	char sock_path[PATH_MAX] = "";
	char own_dir[PATH_MAX] = "";
	char address[PATH_MAX + 8];
	struct drv_rpc_server *srv = NULL;
	bool started = false;
	bool bound = false;
	int lfd = -1;
	int exit_code = 1;

	if (spawned) {
		if (make_socket_path(driver, sock_path, sizeof(sock_path), own_dir, sizeof(own_dir)) != 0)
			goto out_sigfd;
		snprintf(address, sizeof(address), "unix:%s", sock_path);
	} else {
		snprintf(address, sizeof(address), "%s", o.listen);
	}

	struct server_setup setup = {
	    .opts = {.address = address,
	             .tls_cert_file = o.tls_cert,
	             .tls_key_file = o.tls_key,
	             .client_ca_file = o.client_ca,
	             .workers = o.workers},
	    .driver = driver,
	    .spawned = spawned,
	};
	/*
	 * Spawned, gRPC starts on a thread of its own (it inherits the blocked
	 * signals) while this one starts the driver and prints the handshake:
	 * the two overlap on a second core. Should the thread not start, the
	 * server is made below, in this thread.
	 */
	pthread_t setup_thread;
	bool setup_running = spawned && pthread_create(&setup_thread, NULL, make_server, &setup) == 0;

	if (driver->start) {
		rc = driver->start();
		if (rc != 0) {
			drv_log(DRV_LOG_ERROR, "driver start-up failed (%d: %s)", rc, drv_strerror(rc));
			goto out_server;
		}
	}
	started = true;

	struct drv_handshake hs = {.core_version = 1, .protocol_version = DRV_PROTOCOL_VERSION};
	snprintf(hs.protocol, sizeof(hs.protocol), "grpc");
	if (spawned) {
		/*
		 * Spawned, we listen on the unix socket ourselves and print the
		 * handshake before gRPC starts: the host connects and sends its first
		 * call while gRPC initialises, and the kernel holds both until we
		 * accept. That overlap is most of spawn-to-first-call.
		 */
		lfd = listen_unix(sock_path, err, sizeof(err));
		if (lfd < 0) {
			drv_log(DRV_LOG_ERROR, "cannot serve on %s: %s", address, err);
			goto out_server;
		}
		bound = true;
		snprintf(hs.network, sizeof(hs.network), "unix");
		snprintf(hs.address, sizeof(hs.address), "%.*s", (int)sizeof(hs.address) - 1, sock_path);
		if (print_handshake(&hs, std_closed[1]) != 0)
			goto out_server;
	}

	if (setup_running) {
		pthread_join(setup_thread, NULL);
		setup_running = false;
	} else {
		make_server(&setup);
	}
	srv = setup.srv;
	int port = setup.port;
	if (setup.rc != 0) {
		drv_log(DRV_LOG_ERROR, "cannot serve on %s: %s", address, setup.err);
		goto out_server;
	}
	if (spawned) {
		/* The host's first call is likely waiting in the backlog already. */
		accept_all(lfd, srv);
	} else {
		bound = true;
		struct drv_host_port hp;
		drv_host_port_parse(o.listen, true, &hp, NULL, 0); /* checked by check_listen */
		snprintf(hs.network, sizeof(hs.network), "tcp");
		snprintf(hs.address, sizeof(hs.address), strchr(hp.host, ':') ? "[%s]:%d" : "%s:%d", hp.host,
		         port);
		if (print_handshake(&hs, std_closed[1]) != 0)
			goto out_server;
	}

	drv__serve_warm();
	drv_log(DRV_LOG_INFO, "serving %s on %s (%s)", driver->type, hs.address,
	        spawned ? "spawned" : (o.tls_cert ? "mutual TLS" : "plain TCP"));

	wait_for_stop(sigfd, spawned, lfd, srv);
	exit_code = 0;

out_server:
	if (setup_running) {
		pthread_join(setup_thread, NULL);
		srv = setup.srv;
	}
	/* No new connections from here on; those accepted stop with the server. */
	if (lfd >= 0)
		close(lfd);
	if (srv) {
		/*
		 * Let in-flight calls finish first, then give replies being
		 * written a moment before gRPC cuts the connections (see
		 * drv__serve_wait_idle for why not just grace_ms here).
		 */
		drv__serve_stop_accepting();
		int left = exit_code == 0 ? drv__serve_wait_idle(o.grace_ms) : 0;
		drv_rpc_server_shutdown(srv, left < SETTLE_MS ? left : SETTLE_MS);
		drv_log(DRV_LOG_DEBUG, "server stopped; waiting for deferred calls");
		drv__serve_drain();
		drv_rpc_server_free(srv);
		drv_log(DRV_LOG_DEBUG, "server freed");
	}
	if (started && driver->stop)
		driver->stop();
	/* Only a socket we bound is ours to remove; whatever else was there stays. */
	if (bound && sock_path[0]) {
		unlink(sock_path);
		/*
		 * The host's socket directory too, when it is empty: a host that was
		 * killed cannot remove it, and rmdir() never removes anything else.
		 */
		char *slash = strrchr(sock_path, '/');
		if (!own_dir[0] && slash && slash != sock_path) {
			*slash = '\0';
			rmdir(sock_path);
		}
	}
	if (own_dir[0])
		rmdir(own_dir);
out_sigfd:
	close(sigfd);
	return exit_code;
}

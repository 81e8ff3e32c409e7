/*
 * drv_host_spawn against real misbehaving processes (tests/fixtures/drivers/hs-*.c):
 * every handshake fault gives its own code and a message naming the driver,
 * the child is reaped, the environment is an allowlist, and stop escalates
 * from SIGTERM to SIGKILL.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "sdk_test.h"

/* Internal: the test switch between the two spawn paths, and a process's start time from /proc. */
void drv__host_force_uv_spawn(bool on);
int drv__proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start);

#ifndef FIXTURE_DIR
#error FIXTURE_DIR must name the directory of the fixture-driver-* programs
#endif

static char fixture_path[512];

static const char *fixture(const char *name)
{
	snprintf(fixture_path, sizeof(fixture_path), "%s/fixture-driver-%s", FIXTURE_DIR, name);
	return fixture_path;
}

/*
 * Number of our children that are still around (zombies included): spawn
 * failures must reap. Summed over every thread, since a child belongs to the
 * thread that started it (the caller or the host's I/O thread).
 */
static int count_children(void)
{
	char path[300], buf[64];
	struct dirent *e;
	int n = 0;
	DIR *d = opendir("/proc/self/task");

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/children", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		while (fscanf(f, "%63s", buf) == 1)
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

/* Entries in our private TMPDIR, where the host makes socket directories. */
static int count_tmp_entries(void)
{
	DIR *d = opendir(getenv("TMPDIR"));
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Spawns a fixture that must fail; checks code, driver name and that nothing is left behind. */
static void spawn_fails(const char *name, int timeout_ms, int want, const char *want_text, char *err,
                        size_t errlen)
{
	struct lines l;
	struct drv_host *h = NULL;
	int before = count_children();

	lines_init(&l);
	struct drv_spawn_opts o = {
	    .path = fixture(name),
	    .handshake_timeout_ms = timeout_ms,
	    .on_stderr = lines_cb,
	    .on_exit = lines_exit_cb,
	    .ud = &l,
	};
	int rc = drv_host_spawn(&o, &h, err, errlen);
	assert_rc(rc, want, err);
	assert_null(h);
	assert_contains(err, "driver 'fixture-driver-");
	assert_contains(err, name);
	assert_contains(err, fixture_path);
	assert_contains(err, want_text);
	assert_int_equal(count_children(), before);
	/* The socket directory made for it is gone too. */
	assert_int_equal(count_tmp_entries(), 0);
	/* The caller never saw the host, so it gets no exit callback for it. */
	assert_int_equal(l.exits, 0);
	lines_free(&l);
}

static void test_garbage_line(void **state)
{
	char err[1024];

	spawn_fails("hs-garbage", 2000, DRV_EHANDSHAKE, "garbage handshake line \"hello\"", err, sizeof(err));
	/* The parse error says what is wrong with it, not just that it is wrong. */
	assert_contains(err, "5 '|'-separated fields");

	/* A NUL byte does not end the line early: what follows it would go unchecked. */
	static const char *const nul[] = {"nul", NULL};
	struct drv_spawn_opts o = {.path = fixture("hs-garbage"), .args = nul, .handshake_timeout_ms = 2000};
	for (int forced = 0; forced < 2; forced++) {
		struct drv_host *h = NULL;
		drv__host_force_uv_spawn(forced);
		assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EHANDSHAKE, err);
		assert_null(h);
		assert_contains(err, "x.sock|grpc...\": it contains a NUL byte");
	}
	drv__host_force_uv_spawn(false);
}

static void test_silent_times_out(void **state)
{
	char err[1024];
	double t0 = now_ms();

	spawn_fails("hs-silent", 300, DRV_EDEADLINE, "handshake timed out after 300 ms", err, sizeof(err));
	double took = now_ms() - t0;
	assert_true(took >= 290);
	assert_true(took < 2000);
	/* What the driver said meanwhile helps the operator; it is part of the error. */
	assert_contains(err, "thinking about it");
	assert_contains(err, "nothing arrived on its stdout");

	/* The two likeliest slips of a driver author are named, on both spawn paths. */
	static const char *const to_stderr[] = {"stderr", NULL}, *const unflushed[] = {"unflushed", NULL};
	struct drv_spawn_opts o = {.path = fixture("hs-silent"), .handshake_timeout_ms = 300};
	for (int forced = 0; forced < 2; forced++) {
		struct drv_host *h = NULL;
		drv__host_force_uv_spawn(forced);
		o.args = to_stderr;
		assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EDEADLINE, err);
		assert_contains(err, "its handshake line went to stderr: print it on stdout");
		o.args = unflushed;
		assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EDEADLINE, err);
		assert_contains(err, "a line printed but not flushed stays in the driver's buffer");
		assert_null(h);
	}
	drv__host_force_uv_spawn(false);
}

static void test_early_exit(void **state)
{
	char err[1024];
	double t0 = now_ms();

	spawn_fails("hs-early-exit", 5000, DRV_EHANDSHAKE, "exited with status 1 before its handshake", err,
	            sizeof(err));
	assert_contains(err, "the provider SDK is missing");
	/* An early exit is reported at once, not after the handshake timeout. */
	assert_true(now_ms() - t0 < 1500);
}

static void test_wrong_protocol(void **state)
{
	char err[1024];

	spawn_fails("hs-wrong-proto", 2000, DRV_EPROTOCOL, "speaks protocol 2, we speak 1", err, sizeof(err));
}

static void test_no_listener(void **state)
{
	char err[1024];

	spawn_fails("hs-no-listener", 2000, DRV_EHANDSHAKE, "nobody answers", err, sizeof(err));
	assert_contains(err, "nobody.sock");
}

static void test_remote_tcp_refused(void **state)
{
	char err[1024];

	/* A TCP handshake is refused unless the host allows it: any process may own a port. */
	spawn_fails("hs-remote-tcp", 2000, DRV_EHANDSHAKE, "handshake refused: it names the TCP address", err,
	            sizeof(err));
	assert_contains(err, "192.0.2.1:4000");
	assert_contains(err, "allow_tcp_handshake");

	/* Allowed, it must still be loopback: a name that only starts like a loopback address may resolve
	 * anywhere. */
	static const char *const args[] = {"127.0.0.1.example:4000", NULL};
	struct drv_spawn_opts o = {.path = fixture("hs-remote-tcp"),
	                           .args = args,
	                           .handshake_timeout_ms = 2000,
	                           .allow_tcp_handshake = true};
	struct drv_host *h = NULL;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EHANDSHAKE, err);
	assert_null(h);
	assert_contains(err, "127.0.0.1.example:4000|grpc\" names a non-loopback TCP address");
	static const char *const remote[] = {"192.0.2.1:4000", NULL};
	o.args = remote;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EHANDSHAKE, err);
	assert_contains(err, "non-loopback TCP address");
}

/* A listener that is not the driver: the test process itself, on a unix socket or a loopback port. */
static int listen_unix_at(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

static int listen_tcp_loopback(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* Accepts what waits on a listener; returns the number of connections, and the bytes they sent in *bytes. */
static int drain_listener(int lfd, size_t *bytes)
{
	int conns = 0, c;
	char buf[4096];

	*bytes = 0;
	while ((c = accept(lfd, NULL, NULL)) >= 0) {
		conns++;
		/* The host closed its end when it refused: read to EOF. */
		struct pollfd p = {.fd = c, .events = POLLIN};
		while (poll(&p, 1, 1000) > 0) {
			ssize_t n = read(c, buf, sizeof(buf));
			if (n <= 0)
				break;
			*bytes += (size_t)n;
		}
		close(c);
	}
	return conns;
}

/*
 * A handshake may name only the driver's own socket: inside the directory
 * made for it, a socket (no symlink), listened on by the driver itself.
 * Another program's socket, named by path, through a symlink or through a
 * hard link in the driver's own directory, is refused, and nothing is sent
 * to it: its listener sees no byte.
 */
static void test_foreign_socket_refused(void **state)
{
	char dir[64], sock[128], arg[200], err[1024];
	size_t bytes;

	make_tmpdir(dir, sizeof(dir), "foreign");
	snprintf(sock, sizeof(sock), "%s/other.sock", dir);
	int lfd = listen_unix_at(sock);
	static const struct {
		const char *fault, *want;
		bool connects; /* the host gets as far as connecting (then checks who listens) */
	} cases[] = {
	    {"handshake-unix", "outside the socket directory made for this driver", false},
	    {"handshake-symlink", "it is a symbolic link", false},
	    {"handshake-link", "is not the driver (pid", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(arg, sizeof(arg), "%s=%s", cases[i].fault, sock);
		const char *args[] = {"--fault", arg, NULL};
		struct drv_spawn_opts o = {
		    .path = fixture("broken-sdk"), .args = args, .handshake_timeout_ms = 3000};
		struct drv_host *h = NULL;
		int before = count_children();
		assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EHANDSHAKE, err);
		assert_null(h);
		assert_contains(err, "driver 'fixture-driver-broken-sdk'");
		assert_contains(err, "handshake refused");
		assert_contains(err, cases[i].want);
		/* The message names the address the driver gave. */
		assert_contains(err, i == 0 ? sock : "broken-sdk.sock");
		assert_int_equal(count_children(), before);
		assert_int_equal(count_tmp_entries(), 0);
		int conns = drain_listener(lfd, &bytes);
		if (conns != (cases[i].connects ? 1 : 0) || bytes != 0)
			fail_msg("%s: the foreign listener saw %d connections and %zu bytes", cases[i].fault,
			         conns, bytes);
	}
	close(lfd);

	/* A TCP port of another process: refused unless allowed, and then nothing connects to it. */
	int port;
	lfd = listen_tcp_loopback(&port);
	snprintf(arg, sizeof(arg), "handshake-tcp=127.0.0.1:%d", port);
	const char *args[] = {"--fault", arg, NULL};
	struct drv_spawn_opts o = {.path = fixture("broken-sdk"), .args = args, .handshake_timeout_ms = 3000};
	struct drv_host *h = NULL;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EHANDSHAKE, err);
	assert_contains(err, "handshake refused: it names the TCP address 127.0.0.1:");
	assert_int_equal(drain_listener(lfd, &bytes), 0);
	/* Allowed for this driver, the same handshake is taken (the operator vouched for the port). */
	o.allow_tcp_handshake = true;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), 0, err);
	assert_contains(drv_host_target(h), arg + strlen("handshake-tcp="));
	drv_host_free(h);
	close(lfd);
	rm_rf(dir);
}

/*
 * A driver that swaps its socket directory for a symlink to another
 * directory does not make the host empty that directory when it cleans up:
 * the link is removed, never followed.
 */
static void test_sockdir_swap_does_not_follow(void **state)
{
	char victim[64], precious[128], arg[200], err[1024];

	make_tmpdir(victim, sizeof(victim), "victim");
	snprintf(precious, sizeof(precious), "%s/precious", victim);
	FILE *f = fopen(precious, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(arg, sizeof(arg), "sockdir-swap=%s", victim);
	const char *args[] = {"--fault", arg, NULL};
	struct drv_spawn_opts o = {.path = fixture("broken-sdk"), .args = args, .handshake_timeout_ms = 3000};
	struct drv_host *h = NULL;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EHANDSHAKE, err);
	assert_contains(err, "outside the socket directory made for this driver");
	assert_int_equal(access(precious, F_OK), 0);
	/* The directory it moved away is its own litter; the symlink itself is gone. */
	DIR *d = opendir(getenv("TMPDIR"));
	struct dirent *e;
	int links = 0;
	while ((e = readdir(d)) != NULL) {
		char p[600];
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s", getenv("TMPDIR"), e->d_name);
		if (e->d_name[0] != '.' && lstat(p, &st) == 0) {
			links += S_ISLNK(st.st_mode);
			if (S_ISDIR(st.st_mode))
				rm_rf(p);
		}
	}
	closedir(d);
	assert_int_equal(links, 0);
	rm_rf(victim);
}

/* Runs the broken-sdk fixture as a driver with no host socket directory (it makes its own), then SIGKILLs it.
 */
static void litter_by_killed_driver(char *dir, size_t len)
{
	int out[2], in[2];
	char line[600] = "";
	size_t n = 0;

	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(in), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		char *const argv[] = {(char *)fixture("broken-sdk"), NULL};
		char env_tmp[300];
		snprintf(env_tmp, sizeof(env_tmp), "TMPDIR=%s", getenv("TMPDIR"));
		char *const envp[] = {DRV_MAGIC_COOKIE_KEY "=" DRV_MAGIC_COOKIE_VALUE, env_tmp, NULL};
		execve(argv[0], argv, envp);
		_exit(127);
	}
	close(out[1]);
	close(in[0]);
	while (n < sizeof(line) - 1 && read(out[0], line + n, 1) == 1 && line[n] != '\n')
		n++;
	line[n] = '\0';
	/* "1|1|unix|<dir>/broken-sdk.sock|grpc" */
	char *start = strstr(line, "|unix|"), *end = strstr(line, "/broken-sdk.sock|");
	if (!start || !end)
		fail_msg("no handshake from the fixture: \"%s\"", line);
	start += 6;
	snprintf(dir, len, "%.*s", (int)(end - start), start);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(out[0]);
	close(in[1]);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/*
 * Socket directories whose owner was killed are removed by the next host;
 * a live owner's directory, a pid reused by a later process, a symlink and
 * a name that is not ours are each told apart.
 */
static void test_stale_socket_dirs(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char killed[600], reused[600], live[600], link_name[600], legacy[600], target[64], keep[600];
	unsigned long long start;

	/* A driver that made its own directory and was SIGKILLed left it with its socket inside. */
	litter_by_killed_driver(killed, sizeof(killed));
	assert_true(exists(killed));
	/* Our pid, but another start time: the owner of that name is gone and its pid was reused. */
	assert_int_equal(drv__proc_stat(getpid(), NULL, &start), 0);
	snprintf(reused, sizeof(reused), "%s/drover-%d-%llx-Reused", tmp, (int)getpid(), start + 1);
	assert_int_equal(mkdir(reused, 0700), 0);
	/* A live owner (us), as a host of this process names its directories. */
	snprintf(live, sizeof(live), "%s/drover-%d-%llx-LiveOn", tmp, (int)getpid(), start);
	assert_int_equal(mkdir(live, 0700), 0);
	/* A symlink with a stale owner's name is not followed: its target and what is in it stay. */
	make_tmpdir(target, sizeof(target), "sweep-target");
	snprintf(keep, sizeof(keep), "%s/keep", target);
	fclose(fopen(keep, "w"));
	snprintf(link_name, sizeof(link_name), "%s/drover-%d-%llx-Linked", tmp, (int)getpid(), start + 1);
	assert_int_equal(symlink(target, link_name), 0);
	/* A name without an owner (an older version's, or someone else's) is left alone. */
	snprintf(legacy, sizeof(legacy), "%s/drover-AbCdEf", tmp);
	assert_int_equal(mkdir(legacy, 0700), 0);

	/* A live host's directory, made by a real spawn, is kept too. */
	struct drv_host *h = NULL;
	char err[1024];
	struct drv_spawn_opts o = {.path = fixture("hs-env")};
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), 0, err);
	char host_dir[600];
	snprintf(host_dir, sizeof(host_dir), "%s", strstr(drv_host_handshake(h), "|unix|") + 6);
	*strrchr(host_dir, '/') = '\0';

	assert_int_equal(drv_host_sweep_socket_dirs(), 2);
	assert_false(exists(killed));
	assert_false(exists(reused));
	assert_true(exists(live));
	assert_true(exists(link_name));
	assert_true(exists(keep));
	assert_true(exists(legacy));
	assert_true(exists(host_dir));
	drv_host_free(h);
	assert_false(exists(host_dir));
	rmdir(live);
	unlink(link_name);
	rmdir(legacy);
	rm_rf(target);
	assert_int_equal(count_tmp_entries(), 0);
}

static void test_missing_binary(void **state)
{
	struct drv_host *h = NULL;
	char err[512];
	struct drv_spawn_opts o = {.path = "/nonexistent/drover-driver-nope", .name = "nope"};

	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_ESYSTEM, err);
	assert_contains(err, "driver 'nope' (/nonexistent/drover-driver-nope): cannot start");
	assert_null(h);

	/*
	 * A driver author's script without a "#!" line, or with an interpreter
	 * that is not there: the message says so (it said "Unknown system
	 * error -8" for the first and "no such file or directory" for the second).
	 */
	char dir[] = "/tmp/drover-test-spawn-XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	static const struct {
		const char *name, *text, *want;
	} cases[] = {
	    {"no-shebang", "echo hello\n", "a script needs a \"#!\" line"},
	    {"bad-shebang", "#!/nonexistent/python3\n", "is the interpreter on its \"#!\" line missing?"},
	};
	for (int forced = 0; forced < 2; forced++) {
		drv__host_force_uv_spawn(forced);
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			/* libuv's fallback execs with execvp, which runs a script without "#!" through
			 * /bin/sh. */
			if (forced && strcmp(cases[i].name, "no-shebang") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, cases[i].name);
			FILE *f = fopen(path, "w");
			assert_non_null(f);
			fputs(cases[i].text, f);
			fclose(f);
			chmod(path, 0755);
			o.path = path;
			o.name = cases[i].name;
			assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_ESYSTEM, err);
			assert_null(h);
			if (!strstr(err, cases[i].want))
				fail_msg("%s spawn: \"%s\" lacks \"%s\"", forced ? "uv" : "posix", err,
				         cases[i].want);
			unlink(path);
		}
	}
	drv__host_force_uv_spawn(false);

	/* A bare name is looked up in PATH; one that is only in the current directory gets a hint. */
	char cwd[4096];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(path, sizeof(path), "%s/drover-driver-here", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("#!/bin/sh\n", f);
	fclose(f);
	chmod(path, 0755);
	assert_int_equal(chdir(dir), 0);
	o.path = "drover-driver-here";
	o.name = NULL;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_ESYSTEM, err);
	assert_contains(err, "use ./drover-driver-here");
	assert_int_equal(chdir(cwd), 0);
	unlink(path);
	rmdir(dir);
}

static void test_bad_options(void **state)
{
	struct drv_host *h = NULL;
	char err[512];
	const char *extra[] = {"NO_EQUALS_SIGN", NULL};
	const char *allow[] = {"BAD NAME", NULL};
	struct drv_spawn_opts o = {.path = fixture("hs-env"), .name = "env", .env_extra = extra};

	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "env_extra entry \"NO_EQUALS_SIGN\"");
	o.env_extra = NULL;
	o.env_allow = allow;
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "\"BAD NAME\"");
	assert_rc(drv_host_spawn(NULL, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_null(h);
	drv_host_free(NULL);
}

/* Returns the value of "env NAME=value" from the collected lines, or NULL. */
static const char *env_value(struct lines *l, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < l->n; i++)
		if (strncmp(l->v[i], "env ", 4) == 0 && strncmp(l->v[i] + 4, name, n) == 0 &&
		    l->v[i][4 + n] == '=')
			return l->v[i] + 4 + n + 1;
	return NULL;
}

static void test_env_allowlist(void **state)
{
	struct lines l;
	struct drv_host *h = NULL;
	char err[512], line[256];
	const char *allow[] = {"DROVER_TEST_ALLOWED", NULL};
	const char *extra[] = {"DROVER_TEST_EXTRA=42", "DROVER_SOCKET_DIR=/tmp/hijack", NULL};
	struct stat sb;
	int status = -1;

	setenv("DROVER_TEST_SECRET", "hunter2", 1);
	setenv("DROVER_TEST_ALLOWED", "yes", 1);
	setenv("PATH", "/usr/bin:/bin", 1);
	lines_init(&l);
	struct drv_spawn_opts o = {
	    .path = fixture("hs-env"),
	    .env_allow = allow,
	    .env_extra = extra,
	    .on_stderr = lines_cb,
	    .ud = &l,
	};
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), 0, err);
	assert_true(lines_wait(&l, "env-end", true, 3000));
	pthread_mutex_lock(&l.mu);
	assert_false(lines_has_locked(&l, "env DROVER_TEST_SECRET", false));
	assert_true(lines_has_locked(&l, "env PATH", true));
	assert_string_equal(env_value(&l, "DROVER_TEST_ALLOWED"), "yes");
	assert_string_equal(env_value(&l, "DROVER_TEST_EXTRA"), "42");
	assert_string_equal(env_value(&l, DRV_MAGIC_COOKIE_KEY), DRV_MAGIC_COOKIE_VALUE);
	/* Our socket dir wins over an env_extra entry of the same name. */
	const char *dir = env_value(&l, "DROVER_SOCKET_DIR");
	assert_non_null(dir);
	assert_string_not_equal(dir, "/tmp/hijack");
	snprintf(line, sizeof(line), "%s", dir);
	for (int i = 0; i < l.n; i++) {
		/* Nothing beyond the allowlist, the extras and our two variables reaches the driver. */
		const char *ok[] = {"env PATH",
		                    "env HOME",
		                    "env LANG",
		                    "env LC_ALL",
		                    "env TZ",
		                    "env TMPDIR",
		                    "env DROVER_TEST_ALLOWED=",
		                    "env DROVER_TEST_EXTRA=",
		                    "env DROVER_MAGIC_COOKIE=",
		                    "env DROVER_SOCKET_DIR=",
		                    "env-end",
		                    NULL};
		bool allowed = strncmp(l.v[i], "env", 3) != 0;
		for (int k = 0; ok[k] && !allowed; k++)
			allowed = strncmp(l.v[i], ok[k], strlen(ok[k])) == 0;
		if (!allowed)
			fail_msg("driver saw a variable outside the allowlist: %s", l.v[i]);
	}
	pthread_mutex_unlock(&l.mu);

	/* The socket directory is private and is where the driver listens. */
	assert_int_equal(stat(line, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_contains(drv_host_handshake(h), line);
	assert_contains(drv_host_target(h), "unix:");
	assert_string_equal(drv_host_name(h), "fixture-driver-hs-env");
	assert_true(drv_host_pid(h) > 0);
	assert_true(drv_host_alive(h));
	assert_true(drv_host_handshake_ms(h) > 0);

	/* stdin EOF is the parent-death signal: the driver exits by itself. */
	drv_host_close_stdin(h);
	assert_rc(drv_host_wait(h, 3000, &status), 0, "driver did not exit after stdin EOF");
	assert_int_equal(status, 0);
	assert_false(drv_host_alive(h));
	drv_host_free(h);
	/* drv_host_free removes the socket directory. */
	assert_int_equal(stat(line, &sb), -1);
	assert_int_equal(errno, ENOENT);
	unsetenv("DROVER_TEST_SECRET");
	lines_free(&l);
}

/* Spawns hs-env and checks that its socket is under `base`; the directory is gone after free. */
static void spawn_under(const char *base)
{
	struct drv_host *h = NULL;
	char err[512], prefix[300];
	struct lines l;
	lines_init(&l);
	struct drv_spawn_opts o = {.path = fixture("hs-env"), .on_stderr = lines_cb, .ud = &l};
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), 0, err);
	snprintf(prefix, sizeof(prefix), "|unix|%s/drover-", base);
	assert_contains(drv_host_handshake(h), prefix);
	drv_host_free(h);
	lines_free(&l);
}

/* Socket directories go under $TMPDIR, else $XDG_RUNTIME_DIR, else /dev/shm, else /tmp. */
static void test_socket_base(void **state)
{
	char *tmpdir = strdup(getenv("TMPDIR"));
	char xdg[] = "/tmp/drover-test-xdg-XXXXXX";
	assert_non_null(mkdtemp(xdg));
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	spawn_under(tmpdir); /* TMPDIR wins */
	unsetenv("TMPDIR");
	spawn_under(xdg);
	/* Unusable candidates are skipped: relative, or not writable. */
	setenv("TMPDIR", "relative/dir", 1);
	setenv("XDG_RUNTIME_DIR", "/nonexistent/run", 1);
	spawn_under(access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp");
	unsetenv("XDG_RUNTIME_DIR");
	setenv("TMPDIR", tmpdir, 1);
	/* Every directory made under the runtime directory was removed. */
	assert_int_equal(rmdir(xdg), 0);
	free(tmpdir);
}

static void test_stop_escalates_to_sigkill(void **state)
{
	struct lines l;
	struct drv_host *h = NULL;
	struct drv_status st;
	char err[512];
	int status = -1;

	lines_init(&l);
	struct drv_spawn_opts o = {
	    .path = fixture("hs-ignore-term"), .name = "stubborn", .on_exit = lines_exit_cb, .ud = &l};
	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), 0, err);
	pid_t pid = drv_host_pid(h);
	double t0 = now_ms();
	assert_rc(drv_host_stop(h, 200, &status), DRV_EDEADLINE, "SIGTERM should have been ignored");
	double took = now_ms() - t0;
	assert_true(took >= 190);
	assert_true(took < 3000);
	assert_int_equal(status, 128 + SIGKILL);
	assert_int_equal(lines_wait_exit(&l, 2000), 1);
	assert_int_equal(l.term_signal, SIGKILL);
	/* Reaped: the pid is no child of ours any more. */
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);

	/* A dead driver fails calls at once, saying what happened. */
	drv_get_info_request req = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *resp = (void *)1;
	t0 = now_ms();
	assert_rc(drv_host_get_info(h, &req, &resp, 5000, &st), DRV_EUNAVAILABLE, st.message);
	assert_true(now_ms() - t0 < 50);
	assert_null(resp);
	assert_int_equal(st.code, DRV_EUNAVAILABLE);
	assert_contains(st.message, "driver stubborn was killed by signal 9");
	assert_rc(drv_host_health(h, 1000, &st), DRV_EUNAVAILABLE, st.message);

	/* Stop on a dead host reports the same status again without waiting. */
	assert_rc(drv_host_stop(h, 1000, &status), 0, "second stop");
	assert_int_equal(status, 128 + SIGKILL);
	drv_host_free(h);
	lines_free(&l);
}

/* Without on_stderr, lines go to our stderr prefixed with the driver's name. */
static void test_default_stderr_prefix(void **state)
{
	char tmpl[] = "/tmp/drover-test-stderr-XXXXXX", buf[4096] = "", err[1024];
	struct drv_host *h = NULL;
	int fd = mkstemp(tmpl), saved = dup(2);

	assert_true(fd >= 0);
	fflush(stderr);
	dup2(fd, 2);
	struct drv_spawn_opts o = {.path = fixture("hs-early-exit"), .name = "early"};
	int rc = drv_host_spawn(&o, &h, err, sizeof(err));
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	assert_rc(rc, DRV_EHANDSHAKE, err);
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	unlink(tmpl);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_contains(buf, "[early] hs-early-exit: cannot start: the provider SDK is missing\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_garbage_line),
	    cmocka_unit_test(test_silent_times_out),
	    cmocka_unit_test(test_early_exit),
	    cmocka_unit_test(test_wrong_protocol),
	    cmocka_unit_test(test_no_listener),
	    cmocka_unit_test(test_remote_tcp_refused),
	    cmocka_unit_test(test_foreign_socket_refused),
	    cmocka_unit_test(test_sockdir_swap_does_not_follow),
	    cmocka_unit_test(test_stale_socket_dirs),
	    cmocka_unit_test(test_missing_binary),
	    cmocka_unit_test(test_bad_options),
	    cmocka_unit_test(test_env_allowlist),
	    cmocka_unit_test(test_socket_base),
	    cmocka_unit_test(test_stop_escalates_to_sigkill),
	    cmocka_unit_test(test_default_stderr_prefix),
	};
	/* A test that dies must not leave fixture drivers behind: they exit on stdin EOF. */
	char tmp[] = "/tmp/drover-test-spawn-XXXXXX";

	signal(SIGPIPE, SIG_IGN);
	/* A private TMPDIR, so the test can see that every socket directory is removed. */
	if (!mkdtemp(tmp))
		return 2;
	setenv("TMPDIR", tmp, 1);
	int rc = cmocka_run_group_tests_name("posix_spawn+pidfd", tests, NULL, NULL);
	/* The same faults through the fallback used on kernels without pidfd_open. */
	drv__host_force_uv_spawn(true);
	rc |= cmocka_run_group_tests_name("uv_spawn fallback", tests, NULL, NULL);
	drv__host_force_uv_spawn(false);
	int left = count_tmp_entries();
	rm_rf(tmp);
	if (left != 0) {
		fprintf(stderr, "%d socket directories were left in TMPDIR\n", left);
		return 1;
	}
	return rc;
}

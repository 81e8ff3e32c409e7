/*
 * drv_host_connect against a driver run standalone (--listen 127.0.0.1:0):
 * mutual TLS with certificates made at test time, a client certificate of
 * another CA refused with an error that says TLS, the insecure rules, and
 * reconnection when the driver comes back on the same port.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "sdk_test.h"

#ifndef STANDALONE_BIN
#error STANDALONE_BIN must name a driver binary that supports --listen
#endif
#ifndef GEN_CERTS
#error GEN_CERTS must name gen-certs.sh
#endif

#define CALL_MS 5000

static char certs[256];

struct standalone {
	pid_t pid;
	char address[256];
};

static const char *cert(const char *name)
{
	/* Enough slots that every path one test holds stays valid. */
	static char buf[16][512];
	static int i;

	i = (i + 1) % 16;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", certs, name);
	return buf[i];
}

/*
 * Starts the driver standalone and reads the address from its handshake
 * line. PR_SET_PDEATHSIG: if this test dies, the driver dies with it.
 */
static void start_standalone(struct standalone *s, const char *listen, bool tls)
{
	int out[2];
	char line[512] = "", err[256];
	struct drv_handshake hs;

	assert_int_equal(pipe(out), 0);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(out[1], 1);
		close(out[0]);
		close(out[1]);
		if (tls)
			execl(STANDALONE_BIN, STANDALONE_BIN, "--listen", listen, "--tls-cert",
			      cert("server.pem"), "--tls-key", cert("server.key"), "--client-ca",
			      cert("ca.pem"), (char *)NULL);
		else
			execl(STANDALONE_BIN, STANDALONE_BIN, "--listen", listen, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	FILE *f = fdopen(out[0], "r");
	assert_non_null(f);
	if (!fgets(line, sizeof(line), f))
		fail_msg("standalone driver printed no handshake line");
	fclose(f);
	line[strcspn(line, "\n")] = '\0';
	assert_rc(drv_handshake_parse(line, &hs, err, sizeof(err)), 0, err);
	assert_string_equal(hs.network, "tcp");
	snprintf(s->address, sizeof(s->address), "%s", hs.address);
}

static void stop_standalone(struct standalone *s)
{
	int status;

	kill(s->pid, SIGTERM);
	assert_int_equal(waitpid(s->pid, &status, 0), s->pid);
}

static int setup(void **state)
{
	char cmd[600];

	make_tmpdir(certs, sizeof(certs), "certs");
	snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>&1", GEN_CERTS, certs);
	return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	rm_rf(certs);
	return 0;
}

static void test_mutual_tls(void **state)
{
	struct standalone s;
	struct drv_host *h = NULL;
	struct drv_status st;
	char err[1024];

	start_standalone(&s, "127.0.0.1:0", true);
	struct drv_connect_opts o = {
	    .address = s.address,
	    .name = "remote",
	    .ca_file = cert("ca.pem"),
	    .cert_file = cert("client.pem"),
	    .key_file = cert("client.key"),
	    .connect_timeout_ms = 5000,
	};
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), 0, err);
	assert_string_equal(drv_host_name(h), "remote");
	assert_string_equal(drv_host_target(h), s.address);
	assert_string_equal(drv_host_handshake(h), "");
	assert_int_equal(drv_host_pid(h), 0);
	assert_true(drv_host_alive(h));

	drv_get_info_request req = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *info = NULL;
	assert_rc(drv_host_get_info(h, &req, &info, CALL_MS, &st), 0, st.message);
	assert_true(info->type[0] != '\0');
	drv_response_free(&info->base);

	/* Stopping a remote host only closes our side; calls then fail at once. */
	int status = -1;
	assert_rc(drv_host_stop(h, 1000, &status), 0, "stop remote");
	assert_false(drv_host_alive(h));
	assert_rc(drv_host_get_info(h, &req, &info, CALL_MS, &st), DRV_EUNAVAILABLE, st.message);
	drv_host_free(h);

	/* A client certificate from another CA is refused, and the error says TLS. */
	h = NULL;
	o.cert_file = cert("rogue.pem");
	o.key_file = cert("rogue.key");
	o.connect_timeout_ms = 1000;
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), DRV_EUNAVAILABLE, err);
	assert_null(h);
	assert_contains(err, "TLS");
	assert_contains(err, "driver 'remote'");
	print_message("rogue client: %s\n", err);

	/* A driver certificate we do not trust is refused too. */
	o.ca_file = cert("rogue-ca.pem");
	o.cert_file = cert("client.pem");
	o.key_file = cert("client.key");
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), DRV_EUNAVAILABLE, err);
	assert_contains(err, "TLS");

	/* Plain text to a TLS port never becomes SERVING. */
	struct drv_connect_opts plain = {.address = s.address, .insecure = true, .connect_timeout_ms = 500};
	assert_rc(drv_host_connect(&plain, &h, err, sizeof(err)), DRV_EUNAVAILABLE, err);
	assert_contains(err, s.address);
	stop_standalone(&s);
}

static void test_connect_options(void **state)
{
	struct drv_host *h = NULL;
	char err[1024];

	struct drv_connect_opts o = {.address = "10.1.2.3:4000", .insecure = true};
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "refusing plain TCP to non-loopback address 10.1.2.3:4000");
	assert_contains(err, "allow_remote_insecure");

	/* A name that starts like a loopback address may resolve anywhere: not loopback. */
	struct drv_connect_opts named = {.address = "127.0.0.1.example:4000", .insecure = true};
	assert_rc(drv_host_connect(&named, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "refusing plain TCP to non-loopback address 127.0.0.1.example:4000");

	/* With the explicit flag it is allowed (no wait, so nothing is dialled here). */
	o.allow_remote_insecure = true;
	o.connect_timeout_ms = 0;
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), 0, err);
	drv_host_free(h);
	h = NULL;

	struct drv_connect_opts none = {.address = "127.0.0.1:4000"};
	assert_rc(drv_host_connect(&none, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "no TLS files given");

	struct drv_connect_opts partial = {
	    .address = "127.0.0.1:4000", .ca_file = cert("ca.pem"), .cert_file = cert("client.pem")};
	assert_rc(drv_host_connect(&partial, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "key_file is missing");

	partial.key_file = "/nonexistent/client.key";
	assert_rc(drv_host_connect(&partial, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "TLS key file /nonexistent/client.key");

	struct drv_connect_opts bad = {.address = "no-port-here", .insecure = true};
	assert_rc(drv_host_connect(&bad, &h, err, sizeof(err)), DRV_EINVAL, err);
	assert_contains(err, "\"no-port-here\"");
	assert_null(h);
}

/*
 * Connecting, failing to connect and freeing close nothing the host does not
 * own. A remote host once had its pipe ends zeroed instead of -1, so
 * drv__host_release closed fd 0 three times: stdin first, then whatever took
 * the number next, such as gRPC's epoll fd (an abort about one run in three).
 */
static void test_connect_closes_no_stranger_fd(void **state)
{
	struct drv_host *h = NULL;
	struct stat before, after;
	char err[1024];
	int fd = open("/dev/null", O_RDONLY);

	/* Give fd 0 a known owner: this test, not whatever ctest passed as stdin. */
	assert_true(fd >= 0);
	assert_int_equal(dup2(fd, 0), 0);
	if (fd != 0)
		close(fd);
	assert_int_equal(fstat(0, &before), 0);

	struct drv_connect_opts o = {
	    .address = "10.1.2.3:4000", .insecure = true, .allow_remote_insecure = true};
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), 0, err);
	drv_host_free(h);
	h = NULL;
	/* The failure path releases the half-built host too. */
	struct drv_connect_opts bad = {
	    .address = "unix:/nonexistent/drover.sock", .connect_timeout_ms = 50, .insecure = true};
	assert_int_not_equal(drv_host_connect(&bad, &h, err, sizeof(err)), 0);
	assert_null(h);

	assert_int_equal(fstat(0, &after), 0);
	assert_true(after.st_dev == before.st_dev && after.st_ino == before.st_ino);
}

static void test_unreachable(void **state)
{
	struct drv_host *h = NULL;
	char err[1024];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	char addr[64];

	/* A port that was free a moment ago: bound, not listening, then closed. */
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
	struct drv_connect_opts o = {.address = addr, .insecure = true, .connect_timeout_ms = 300};
	double t0 = now_ms();
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), DRV_EUNAVAILABLE, err);
	assert_true(now_ms() - t0 < 2000);
	assert_contains(err, "unreachable");
	assert_contains(err, addr);
}

/* The channel reconnects by itself when the driver comes back on the same address. */
static void test_reconnect(void **state)
{
	struct standalone s;
	struct drv_host *h = NULL;
	struct drv_status st;
	char err[1024];

	start_standalone(&s, "127.0.0.1:0", false);
	struct drv_connect_opts o = {.address = s.address, .insecure = true, .connect_timeout_ms = 5000};
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), 0, err);
	assert_rc(drv_host_health(h, CALL_MS, &st), 0, st.message);

	stop_standalone(&s);
	assert_rc(drv_host_health(h, 1000, &st), DRV_EUNAVAILABLE, st.message);

	char again[256];
	snprintf(again, sizeof(again), "%s", s.address);
	start_standalone(&s, again, false);
	assert_string_equal(s.address, again);
	int rc = -1;
	for (int i = 0; i < 200 && rc != 0; i++) {
		rc = drv_host_health(h, 1000, &st);
		if (rc != 0)
			usleep(50 * 1000);
	}
	assert_rc(rc, 0, st.message);
	drv_host_free(h);
	stop_standalone(&s);
}

/*
 * A TCP relay that holds every chunk for `delay_ms` before passing it on,
 * both ways: a link with a round trip of twice that, like a driver on
 * another continent. One connection at a time is enough here.
 */
struct slow_link {
	int listen_fd;
	int delay_ms;
	char target[256]; /* 127.0.0.1:PORT */
	char address[64];
	pthread_t thread;
	atomic_bool stop;
};

static void relay(int a, int b, int delay_ms, atomic_bool *stop)
{
	char buf[65536];
	struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
	while (!atomic_load(stop)) {
		int n = poll(p, 2, 100);
		if (n < 0)
			return;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = read(p[i].fd, buf, sizeof(buf));
			if (r <= 0)
				return;
			usleep((useconds_t)delay_ms * 1000);
			if (write(p[1 - i].fd, buf, (size_t)r) != r)
				return;
		}
	}
}

static void *slow_link_main(void *arg)
{
	struct slow_link *l = arg;
	while (!atomic_load(&l->stop)) {
		struct pollfd p = {.fd = l->listen_fd, .events = POLLIN};
		if (poll(&p, 1, 100) != 1)
			continue;
		int c = accept(l->listen_fd, NULL, NULL);
		if (c < 0)
			continue;
		int u = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		sa.sin_port = htons((uint16_t)atoi(strrchr(l->target, ':') + 1));
		if (u >= 0 && connect(u, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			relay(c, u, l->delay_ms, &l->stop);
		if (u >= 0)
			close(u);
		close(c);
	}
	return NULL;
}

static void slow_link_start(struct slow_link *l, const char *target, int delay_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);

	memset(l, 0, sizeof(*l));
	l->delay_ms = delay_ms;
	snprintf(l->target, sizeof(l->target), "%s", target);
	l->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(l->listen_fd >= 0);
	assert_int_equal(bind(l->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l->listen_fd, 4), 0);
	assert_int_equal(getsockname(l->listen_fd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(l->address, sizeof(l->address), "127.0.0.1:%d", ntohs(sa.sin_port));
	assert_int_equal(pthread_create(&l->thread, NULL, slow_link_main, l), 0);
}

static void slow_link_stop(struct slow_link *l)
{
	atomic_store(&l->stop, true);
	pthread_join(l->thread, NULL);
	close(l->listen_fd);
}

/*
 * A driver a 600 ms round trip away: the connection (TCP, then HTTP/2's
 * settings both ways) takes about a second, and is made within a 5 s
 * timeout. gRPC gives a connection attempt as long as its minimum reconnect
 * backoff, which the SDK once set to 250 ms: attempts timed out until the
 * backoff had grown past the round trip, 7 s here, and a link slow enough
 * never connected at all.
 */
static void test_slow_link(void **state)
{
	struct standalone s;
	struct slow_link l;
	struct drv_host *h = NULL;
	struct drv_status st;
	char err[1024];

	start_standalone(&s, "127.0.0.1:0", false);
	slow_link_start(&l, s.address, 300);
	struct drv_connect_opts o = {.address = l.address, .insecure = true, .connect_timeout_ms = 5000};
	assert_rc(drv_host_connect(&o, &h, err, sizeof(err)), 0, err);
	assert_rc(drv_host_health(h, CALL_MS, &st), 0, st.message);
	drv_host_free(h);
	slow_link_stop(&l);
	stop_standalone(&s);
}

/*
 * A second driver told to listen where one already does exits with an error
 * naming the address. gRPC's SO_REUSEPORT used to let it "listen" too, and
 * the kernel split connections between the two.
 */
static void test_address_in_use(void **state)
{
	struct standalone s;
	int errp[2], status;
	char buf[2048] = "";
	size_t len = 0;
	ssize_t r;

	start_standalone(&s, "127.0.0.1:0", false);
	assert_int_equal(pipe(errp), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(errp[1], 2);
		close(errp[0]);
		close(errp[1]);
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execl(STANDALONE_BIN, STANDALONE_BIN, "--listen", s.address, (char *)NULL);
		_exit(127);
	}
	close(errp[1]);
	/* Its stderr closes when it exits; one still serving after 10 s shares the port. */
	struct pollfd p = {.fd = errp[0], .events = POLLIN};
	double until = now_ms() + 10000;
	while (len < sizeof(buf) - 1 && now_ms() < until && poll(&p, 1, 100) >= 0) {
		if (!p.revents)
			continue;
		if ((r = read(errp[0], buf + len, sizeof(buf) - 1 - len)) <= 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	close(errp[0]);
	/* Its stderr closes a moment before it can be reaped. */
	pid_t w = 0;
	for (int i = 0; i < 500 && (w = waitpid(pid, &status, WNOHANG)) == 0; i++)
		usleep(10 * 1000);
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		stop_standalone(&s);
		fail_msg("a second driver serves on %s, which the first holds", s.address);
	}
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
	assert_contains(buf, s.address);
	assert_contains(buf, "address in use");
	stop_standalone(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mutual_tls),
	    cmocka_unit_test(test_connect_options),
	    cmocka_unit_test(test_connect_closes_no_stranger_fd),
	    cmocka_unit_test(test_unreachable),
	    cmocka_unit_test(test_reconnect),
	    cmocka_unit_test(test_slow_link),
	    cmocka_unit_test(test_address_in_use),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * SSH connections and their pool (ssh_conn.h), on libssh in non-blocking
 * mode so that every wait polls the call's deadline and cancellation.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libssh/libssh.h>

#include "drover/types.h"
#include "ssh_conn.h"

#define POLL_SLICE_MS 50
#define MAX_OUTPUT (1024 * 1024)
#define POOL_HOSTS 512
#define IDLE_MAX_MS (5 * 60 * 1000)
#define KEEPALIVE_MS (15 * 1000)

int64_t ssh_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ssh_result_free(struct ssh_result *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}

/* ---- waiting ---- */

/* 0 while there is time left; DRV_EDEADLINE or DRV_ECANCELLED once not. */
static int limits_check(const struct ssh_limits *lim)
{
	if (lim->cancelled && lim->cancelled(lim->ud))
		return DRV_ECANCELLED;
	if (ssh_now_ms() >= lim->deadline_ms)
		return DRV_EDEADLINE;
	return 0;
}

/* Waits for the socket (at most one slice), then checks the limits. */
static int wait_fd(int fd, short events, const struct ssh_limits *lim)
{
	int64_t left = lim->deadline_ms - ssh_now_ms();
	int slice = left < POLL_SLICE_MS ? (left > 0 ? (int)left : 0) : POLL_SLICE_MS;
	struct pollfd p = {.fd = fd, .events = events};
	if (fd >= 0)
		poll(&p, 1, slice);
	return limits_check(lim);
}

static int wait_session(ssh_session s, const struct ssh_limits *lim)
{
	int dir = ssh_get_poll_flags(s);
	short ev = POLLIN;
	if (dir & SSH_WRITE_PENDING)
		ev |= POLLOUT;
	return wait_fd(ssh_get_fd(s), ev, lim);
}

/* ---- TCP ---- */

/* A connected TCP socket to address:port, connect polled against the limits. */
static int tcp_connect(const char *address, int port, const struct ssh_limits *lim, int *fdp, char *err,
                       size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	int gai = getaddrinfo(address, portstr, &hints, &res);
	if (gai) {
		snprintf(err, errlen, "unreachable: cannot resolve %s: %s", address, gai_strerror(gai));
		return DRV_EUNAVAILABLE;
	}
	int rc = DRV_EUNAVAILABLE;
	char why[160] = "no address";
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd =
		    socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			snprintf(why, sizeof(why), "socket: %s", strerror(errno));
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
			snprintf(why, sizeof(why), "%s", strerror(errno));
			close(fd);
			continue;
		}
		for (;;) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int64_t left = lim->deadline_ms - ssh_now_ms();
			int n =
			    poll(&p, 1, left < POLL_SLICE_MS ? (left > 0 ? (int)left : 0) : POLL_SLICE_MS);
			if (n > 0) {
				int soerr = 0;
				socklen_t sl = sizeof(soerr);
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
				if (soerr) {
					snprintf(why, sizeof(why), "%s", strerror(soerr));
					break;
				}
				int one = 1;
				setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				*fdp = fd;
				freeaddrinfo(res);
				return 0;
			}
			int l = limits_check(lim);
			if (l) {
				close(fd);
				freeaddrinfo(res);
				snprintf(err, errlen, "%s while connecting to %s:%d",
				         l == DRV_EDEADLINE ? "deadline passed" : "cancelled", address, port);
				return l;
			}
		}
		close(fd);
	}
	freeaddrinfo(res);
	snprintf(err, errlen, "unreachable: connecting to %s:%d: %s", address, port, why);
	return rc;
}

/* ---- sessions ---- */

struct conn {
	ssh_session s;
	int fd; /* ours: libssh does not close a socket given with SSH_OPTIONS_FD */
	int64_t last_used_ms;
};

static void conn_close(struct conn *c)
{
	if (!c)
		return;
	if (c->s) {
		ssh_disconnect(c->s);
		ssh_free(c->s);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Key exchange on fd, polled; the session takes the fd. */
static int session_handshake(ssh_session s, const struct ssh_limits *lim, const char *what, char *err,
                             size_t errlen)
{
	for (;;) {
		int rc = ssh_connect(s);
		if (rc == SSH_OK)
			return 0;
		if (rc != SSH_AGAIN) {
			snprintf(err, errlen, "unreachable: SSH handshake with %s failed: %s", what,
			         ssh_get_error(s));
			return DRV_EUNAVAILABLE;
		}
		int l = wait_session(s, lim);
		if (l) {
			snprintf(err, errlen, "%s during the SSH handshake with %s",
			         l == DRV_EDEADLINE ? "deadline passed" : "cancelled", what);
			return l;
		}
	}
}

static int hostkey_check(ssh_session s, const struct ssh_hostkey *want, const char *what, char *err,
                         size_t errlen)
{
	ssh_key key = NULL;
	char got[SSH_FP_LEN + 1];
	if (ssh_get_server_publickey(s, &key) != SSH_OK || !key) {
		snprintf(err, errlen, "host key mismatch: %s presented no host key", what);
		return DRV_EPERM;
	}
	int rc = ssh_hostkey_fingerprint(key, got);
	const char *type = ssh_key_type_to_char(ssh_key_type(key));
	char type_got[40];
	snprintf(type_got, sizeof(type_got), "%s", type ? type : "?");
	ssh_key_free(key);
	if (rc) {
		snprintf(err, errlen, "host key mismatch: cannot fingerprint the host key of %s", what);
		return DRV_EPERM;
	}
	if (strcmp(got, want->fingerprint) != 0) {
		snprintf(
		    err, errlen,
		    "host key mismatch: %s presented %s key %s, the config's host_key is %s; if the host "
		    "was reinstalled, check its key out of band and update host_key",
		    what, type_got, got, want->fingerprint);
		return DRV_EPERM;
	}
	return 0;
}

static int session_auth(ssh_session s, const struct ssh_target *t, const struct ssh_limits *lim,
                        const char *what, char *err, size_t errlen)
{
	ssh_key key = NULL;
	if (ssh_pki_import_privkey_base64(t->private_key, t->passphrase, NULL, NULL, &key) != SSH_OK ||
	    !key) {
		snprintf(
		    err, errlen, "the private_key secret does not load as an OpenSSH or PEM private key%s",
		    t->passphrase ? " with the passphrase secret" : " (does it need a passphrase secret?)");
		return DRV_EUNAUTHENTICATED;
	}
	int rc;
	for (;;) {
		rc = ssh_userauth_publickey(s, NULL, key);
		if (rc != SSH_AUTH_AGAIN)
			break;
		int l = wait_session(s, lim);
		if (l) {
			ssh_key_free(key);
			snprintf(err, errlen, "%s during authentication to %s",
			         l == DRV_EDEADLINE ? "deadline passed" : "cancelled", what);
			return l;
		}
	}
	ssh_key_free(key);
	if (rc == SSH_AUTH_SUCCESS)
		return 0;
	if (rc == SSH_AUTH_ERROR) {
		snprintf(err, errlen, "unreachable: authentication to %s failed: %s", what, ssh_get_error(s));
		return DRV_EUNAVAILABLE;
	}
	snprintf(err, errlen,
	         "authentication refused: %s did not accept the private_key secret (is its public key in "
	         "%s's ~/.ssh/authorized_keys?)",
	         what, t->user);
	return DRV_EPERM;
}

static int conn_open(const struct ssh_target *t, const struct ssh_limits *lim, struct conn **out, char *err,
                     size_t errlen);

/* ---- proxy jump ---- */

/*
 * One tunnel: a thread copies bytes between one end of a socket pair (the
 * other end is the target session's socket) and a direct-tcpip channel of
 * the jump host's session, which it owns. It ends, closing both, when
 * either side closes: the target session closed, or the jump host dropped.
 */
struct tunnel {
	struct conn *jump;
	ssh_channel ch;
	int fd;
};

/* Live tunnel threads: ssh_pool_stop() waits for them before libssh is finalised. */
static pthread_mutex_t tunnels_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tunnels_cond = PTHREAD_COND_INITIALIZER;
static int n_tunnels;

static bool write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void *tunnel_main(void *arg)
{
	struct tunnel *tn = arg;
	ssh_session js = tn->jump->s;
	char buf[16384];
	for (;;) {
		struct pollfd p[2] = {{.fd = tn->fd, .events = POLLIN},
		                      {.fd = ssh_get_fd(js), .events = POLLIN}};
		if (ssh_get_poll_flags(js) & SSH_WRITE_PENDING)
			p[1].events |= POLLOUT;
		poll(p, 2, 1000);
		if (p[0].revents) {
			ssize_t n = read(tn->fd, buf, sizeof(buf));
			if (n <= 0)
				break;
			for (size_t sent = 0; sent < (size_t)n;) {
				int w = ssh_channel_write(tn->ch, buf + sent, (uint32_t)((size_t)n - sent));
				if (w < 0)
					goto done;
				sent += (size_t)w;
				if (sent < (size_t)n) {
					struct pollfd q = {.fd = ssh_get_fd(js), .events = POLLIN | POLLOUT};
					poll(&q, 1, 100);
				}
			}
		}
		for (;;) {
			int n = ssh_channel_read_nonblocking(tn->ch, buf, sizeof(buf), 0);
			if (n < 0)
				goto done;
			if (n == 0)
				break;
			if (!write_all(tn->fd, buf, (size_t)n))
				goto done;
		}
		if (ssh_channel_is_eof(tn->ch) || !ssh_is_connected(js))
			break;
	}
done:
	close(tn->fd);
	ssh_channel_free(tn->ch);
	conn_close(tn->jump);
	free(tn);
	pthread_mutex_lock(&tunnels_lock);
	n_tunnels--;
	pthread_cond_broadcast(&tunnels_cond);
	pthread_mutex_unlock(&tunnels_lock);
	return NULL;
}

/* A socket whose bytes reach t->address:t->port through t->jump, in *fdp. */
static int jump_connect(const struct ssh_target *t, const struct ssh_limits *lim, int *fdp, char *err,
                        size_t errlen)
{
	struct conn *jc = NULL;
	char jerr[700];
	int rc = conn_open(t->jump, lim, &jc, jerr, sizeof(jerr));
	if (rc) {
		snprintf(err, errlen, "through the jump host %s@%s:%d: %s", t->jump->user, t->jump->address,
		         t->jump->port, jerr);
		return rc;
	}
	ssh_channel ch = ssh_channel_new(jc->s);
	if (!ch) {
		conn_close(jc);
		snprintf(err, errlen, "out of memory");
		return DRV_ENOMEM;
	}
	for (;;) {
		int o = ssh_channel_open_forward(ch, t->address, t->port, "127.0.0.1", 22);
		if (o == SSH_OK)
			break;
		int l = o == SSH_AGAIN ? wait_session(jc->s, lim) : DRV_EUNAVAILABLE;
		if (l) {
			snprintf(err, errlen,
			         "%s: the jump host %s@%s:%d did not open a channel to %s:%d: %s",
			         l == DRV_EUNAVAILABLE ? "unreachable"
			         : l == DRV_EDEADLINE  ? "deadline passed"
			                               : "cancelled",
			         t->jump->user, t->jump->address, t->jump->port, t->address, t->port,
			         ssh_get_error(jc->s));
			ssh_channel_free(ch);
			conn_close(jc);
			return l;
		}
	}
	int sv[2];
	struct tunnel *tn = calloc(1, sizeof(*tn));
	if (!tn || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		free(tn);
		ssh_channel_free(ch);
		conn_close(jc);
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return DRV_ESYSTEM;
	}
	*tn = (struct tunnel){.jump = jc, .ch = ch, .fd = sv[1]};
	pthread_attr_t attr;
	pthread_t th;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&tunnels_lock);
	n_tunnels++;
	pthread_mutex_unlock(&tunnels_lock);
	rc = pthread_create(&th, &attr, tunnel_main, tn);
	pthread_attr_destroy(&attr);
	if (rc) {
		pthread_mutex_lock(&tunnels_lock);
		n_tunnels--;
		pthread_mutex_unlock(&tunnels_lock);
		close(sv[0]);
		close(sv[1]);
		ssh_channel_free(ch);
		conn_close(jc);
		free(tn);
		snprintf(err, errlen, "could not start the tunnel's thread");
		return DRV_ESYSTEM;
	}
	*fdp = sv[0];
	return 0;
}

static int conn_open(const struct ssh_target *t, const struct ssh_limits *lim, struct conn **out, char *err,
                     size_t errlen)
{
	char what[300];
	snprintf(what, sizeof(what), "%s@%s:%d", t->user, t->address, t->port);
	int fd = -1;
	int rc = t->jump ? jump_connect(t, lim, &fd, err, errlen)
	                 : tcp_connect(t->address, t->port, lim, &fd, err, errlen);
	if (rc)
		return rc;
	struct conn *c = calloc(1, sizeof(*c));
	ssh_session s = c ? ssh_new() : NULL;
	if (!s) {
		free(c);
		close(fd);
		snprintf(err, errlen, "out of memory");
		return DRV_ENOMEM;
	}
	c->s = s;
	c->fd = fd;
	int no = 0, verbosity = SSH_LOG_NOLOG;
	ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no); /* nothing from ~/.ssh/config or /etc/ssh */
	ssh_options_set(s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity);
	ssh_options_set(s, SSH_OPTIONS_HOST, t->address);
	ssh_options_set(s, SSH_OPTIONS_PORT, &t->port);
	ssh_options_set(s, SSH_OPTIONS_USER, t->user);
	ssh_options_set(s, SSH_OPTIONS_FD, &fd);
	/* Ask for the key type the config names, so that the server presents that key. */
	if (t->hostkey->type[0]) {
		const char *algs = t->hostkey->type;
		if (strcmp(algs, "ssh-rsa") == 0)
			algs = "rsa-sha2-512,rsa-sha2-256,ssh-rsa";
		ssh_options_set(s, SSH_OPTIONS_HOSTKEYS, algs);
	}
	ssh_set_blocking(s, 0);
	rc = session_handshake(s, lim, what, err, errlen);
	if (!rc)
		rc = hostkey_check(s, t->hostkey, what, err, errlen);
	if (!rc)
		rc = session_auth(s, t, lim, what, err, errlen);
	if (rc) {
		conn_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

/* ---- the pool ---- */

struct pool_host {
	char key[600];
	struct conn **idle;
	int n_idle;
	int n_open;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pool_host hosts[POOL_HOSTS];
	int n_hosts;
	int max_per_host;
	int64_t keepalive_ms, idle_max_ms;
	bool started, stopping;
	pthread_t keepalive;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/*
 * Connections are shared only between calls with the same host, user, host
 * key and private key: a connection authenticated with one key never serves
 * a config with another. The key enters as a hash, never as text.
 */
void ssh_target_key(const struct ssh_target *t, char *out, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (const char *c = t->private_key ? t->private_key : ""; *c; c++) {
		h ^= (unsigned char)*c;
		h *= UINT64_C(0x100000001b3);
	}
	snprintf(out, len, "%s@%s:%d|%s|%016llx|%s@%s:%d|%s", t->user, t->address, t->port,
	         t->hostkey->fingerprint, (unsigned long long)h, t->jump ? t->jump->user : "",
	         t->jump ? t->jump->address : "", t->jump ? t->jump->port : 0,
	         t->jump ? t->jump->hostkey->fingerprint : "");
}

static struct pool_host *pool_find(const char *key)
{
	for (int i = 0; i < pool.n_hosts; i++)
		if (strcmp(pool.hosts[i].key, key) == 0)
			return &pool.hosts[i];
	if (pool.n_hosts == POOL_HOSTS)
		return NULL;
	struct pool_host *h = &pool.hosts[pool.n_hosts];
	struct conn **idle = calloc((size_t)pool.max_per_host, sizeof(*idle));
	if (!idle)
		return NULL;
	pool.n_hosts++;
	snprintf(h->key, sizeof(h->key), "%s", key);
	h->idle = idle;
	return h;
}

/* Sends an SSH_MSG_IGNORE on idle connections, and closes those idle too long or gone. */
static void *keepalive_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pool.lock);
	while (!pool.stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += pool.keepalive_ms / 1000;
		ts.tv_nsec += (pool.keepalive_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&pool.cond, &pool.lock, &ts);
		if (pool.stopping)
			break;
		int64_t now = ssh_now_ms();
		for (int i = 0; i < pool.n_hosts; i++) {
			struct pool_host *h = &pool.hosts[i];
			for (int j = 0; j < h->n_idle;) {
				struct conn *c = h->idle[j];
				bool drop =
				    now - c->last_used_ms > pool.idle_max_ms || !ssh_is_connected(c->s);
				if (!drop && now - c->last_used_ms >= pool.keepalive_ms)
					drop = ssh_send_ignore(c->s, "drover keep-alive") != SSH_OK;
				if (drop) {
					h->idle[j] = h->idle[--h->n_idle];
					h->n_open--;
					conn_close(c);
					pthread_cond_broadcast(&pool.cond);
				} else {
					j++;
				}
			}
		}
	}
	pthread_mutex_unlock(&pool.lock);
	return NULL;
}

static int64_t env_ms(const char *name, int64_t fallback)
{
	const char *v = getenv(name);
	char *end;
	long long x = v ? strtoll(v, &end, 10) : 0;
	return v && *v && !*end && x >= 10 && x <= 86400000 ? (int64_t)x : fallback;
}

int ssh_pool_start(int max_per_host)
{
	if (ssh_init() != SSH_OK)
		return -1;
	pthread_mutex_lock(&pool.lock);
	pool.max_per_host = max_per_host > 0 ? max_per_host : 4;
	/* The tests shorten both, to see keep-alives and idle closes within a test's time. */
	pool.keepalive_ms = env_ms("DROVER_SSH_KEEPALIVE_MS", KEEPALIVE_MS);
	pool.idle_max_ms = env_ms("DROVER_SSH_IDLE_MS", IDLE_MAX_MS);
	pool.stopping = false;
	int rc = 0;
	if (!pool.started) {
		rc = pthread_create(&pool.keepalive, NULL, keepalive_main, NULL);
		pool.started = rc == 0;
	}
	pthread_mutex_unlock(&pool.lock);
	return rc ? -1 : 0;
}

void ssh_pool_stop(void)
{
	pthread_mutex_lock(&pool.lock);
	pool.stopping = true;
	pthread_cond_broadcast(&pool.cond);
	bool started = pool.started;
	pool.started = false;
	pthread_mutex_unlock(&pool.lock);
	if (started)
		pthread_join(pool.keepalive, NULL);
	pthread_mutex_lock(&pool.lock);
	for (int i = 0; i < pool.n_hosts; i++) {
		for (int j = 0; j < pool.hosts[i].n_idle; j++)
			conn_close(pool.hosts[i].idle[j]);
		free(pool.hosts[i].idle);
	}
	pool.n_hosts = 0;
	pthread_mutex_unlock(&pool.lock);
	/* Closing the connections above ends their tunnels; libssh must outlive those threads. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	pthread_mutex_lock(&tunnels_lock);
	while (n_tunnels > 0)
		if (pthread_cond_timedwait(&tunnels_cond, &tunnels_lock, &ts) != 0)
			break;
	bool tunnels_left = n_tunnels > 0;
	pthread_mutex_unlock(&tunnels_lock);
	if (!tunnels_left)
		ssh_finalize();
}

/*
 * An idle connection (*reused true), or a slot for a new one; waits while
 * the host is at its cap. The slot is counted in n_open until pool_put or
 * pool_drop.
 */
static int pool_get(const char *key, const struct ssh_limits *lim, struct conn **c, bool *reused,
                    struct pool_host **hp, char *err, size_t errlen)
{
	pthread_mutex_lock(&pool.lock);
	struct pool_host *h = pool_find(key);
	if (!h) {
		pthread_mutex_unlock(&pool.lock);
		snprintf(err, errlen, "out of memory, or more than %d hosts", POOL_HOSTS);
		return DRV_ENOMEM;
	}
	for (;;) {
		if (h->n_idle) {
			*c = h->idle[--h->n_idle];
			*reused = true;
			break;
		}
		if (h->n_open < pool.max_per_host) {
			h->n_open++;
			*c = NULL;
			*reused = false;
			break;
		}
		int l = limits_check(lim);
		if (l) {
			pthread_mutex_unlock(&pool.lock);
			snprintf(err, errlen, "%s while waiting for one of the %d connections to the host",
			         l == DRV_EDEADLINE ? "deadline passed" : "cancelled", pool.max_per_host);
			return l;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += POLL_SLICE_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&pool.cond, &pool.lock, &ts);
	}
	pthread_mutex_unlock(&pool.lock);
	*hp = h;
	return 0;
}

static void pool_put(struct pool_host *h, struct conn *c)
{
	pthread_mutex_lock(&pool.lock);
	c->last_used_ms = ssh_now_ms();
	if (pool.stopping || h->n_idle == pool.max_per_host) {
		h->n_open--;
		pthread_mutex_unlock(&pool.lock);
		conn_close(c);
		return;
	}
	h->idle[h->n_idle++] = c;
	pthread_cond_broadcast(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
}

static void pool_drop(struct pool_host *h, struct conn *c)
{
	pthread_mutex_lock(&pool.lock);
	h->n_open--;
	pthread_cond_broadcast(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
	conn_close(c);
}

/* ---- commands ---- */

struct buf {
	char *p;
	size_t n, cap;
};

static int buf_add(struct buf *b, const char *d, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
	b->p[b->n] = '\0';
	return 0;
}

/*
 * Runs one command on an open connection. Returns 0, or an error; *fatal
 * says whether the connection is still good for the pool.
 */
static int conn_exec(struct conn *c, const char *command, const char *input, size_t len,
                     const struct ssh_limits *lim, struct ssh_result *r, bool *channel_failed, char *err,
                     size_t errlen)
{
	ssh_session s = c->s;
	ssh_channel ch = ssh_channel_new(s);
	struct buf out = {0}, eb = {0};
	int rc = 0, l;
	*channel_failed = false;
	if (!ch) {
		snprintf(err, errlen, "out of memory");
		return DRV_ENOMEM;
	}
	for (;;) {
		int o = ssh_channel_open_session(ch);
		if (o == SSH_OK)
			break;
		if (o != SSH_AGAIN) {
			*channel_failed = true;
			snprintf(err, errlen, "unreachable: opening a session channel failed: %s",
			         ssh_get_error(s));
			rc = DRV_EUNAVAILABLE;
			goto done;
		}
		if ((l = wait_session(s, lim)))
			goto limit;
	}
	for (;;) {
		int o = ssh_channel_request_exec(ch, command);
		if (o == SSH_OK)
			break;
		if (o != SSH_AGAIN) {
			snprintf(err, errlen, "unreachable: the host refused to run the command: %s",
			         ssh_get_error(s));
			rc = DRV_EUNAVAILABLE;
			goto done;
		}
		if ((l = wait_session(s, lim)))
			goto limit;
	}
	size_t sent = 0;
	while (sent < len) {
		int w = ssh_channel_write(ch, input + sent, (uint32_t)(len - sent));
		if (w < 0) {
			snprintf(err, errlen, "unreachable: writing the command's input failed: %s",
			         ssh_get_error(s));
			rc = DRV_EUNAVAILABLE;
			goto done;
		}
		sent += (size_t)w;
		if (sent < len && (l = wait_session(s, lim)))
			goto limit;
	}
	ssh_channel_send_eof(ch);
	char tmp[8192];
	for (;;) {
		bool progress = false;
		for (int is_err = 0; is_err < 2; is_err++) {
			int n = ssh_channel_read_nonblocking(ch, tmp, sizeof(tmp), is_err);
			if (n == SSH_ERROR) {
				snprintf(err, errlen,
				         "unreachable: the connection dropped while the command ran: %s",
				         ssh_get_error(s));
				rc = DRV_EUNAVAILABLE;
				goto done;
			}
			if (n > 0) {
				progress = true;
				struct buf *b = is_err ? &eb : &out;
				if (b->n + (size_t)n > MAX_OUTPUT) {
					snprintf(err, errlen, "the command printed more than %d bytes",
					         MAX_OUTPUT);
					rc = DRV_EUNAVAILABLE;
					goto done;
				}
				if (buf_add(b, tmp, (size_t)n)) {
					snprintf(err, errlen, "out of memory");
					rc = DRV_ENOMEM;
					goto done;
				}
			}
		}
		if (progress)
			continue;
		/*
		 * Done at the host's EOF with the exit status in. libssh keeps a
		 * channel "open" after the host's close while it still holds
		 * unread data (a delayed close), so the state alone is no test;
		 * in non-blocking mode the exit status query does not wait.
		 */
		if (ssh_channel_is_eof(ch)) {
			r->exit_status = ssh_channel_get_exit_status(ch);
			if (r->exit_status != -1 || ssh_channel_is_closed(ch))
				break;
		}
		if (!ssh_is_connected(s)) {
			snprintf(err, errlen, "unreachable: the connection dropped while the command ran");
			rc = DRV_EUNAVAILABLE;
			goto done;
		}
		if ((l = wait_session(s, lim)))
			goto limit;
	}
	if (buf_add(&out, "", 0) || buf_add(&eb, "", 0)) {
		snprintf(err, errlen, "out of memory");
		rc = DRV_ENOMEM;
		goto done;
	}
	r->out = out.p;
	r->out_len = out.n;
	r->err = eb.p;
	r->err_len = eb.n;
	out.p = eb.p = NULL;
	goto done;
limit:
	snprintf(err, errlen, "%s while the command ran on the host",
	         l == DRV_EDEADLINE ? "deadline passed" : "cancelled");
	rc = l;
done:
	free(out.p);
	free(eb.p);
	ssh_channel_free(ch);
	return rc;
}

int ssh_run(const struct ssh_target *t, const char *command, const char *input, size_t len,
            const struct ssh_limits *lim, struct ssh_result *r, char *err, size_t errlen)
{
	char key[600];
	memset(r, 0, sizeof(*r));
	ssh_target_key(t, key, sizeof(key));
	/* A pooled connection the host closed meanwhile fails at the channel: once more, afresh. */
	for (int attempt = 0; attempt < 2; attempt++) {
		struct conn *c = NULL;
		struct pool_host *h = NULL;
		bool reused = false, channel_failed = false;
		int rc = pool_get(key, lim, &c, &reused, &h, err, errlen);
		if (rc)
			return rc;
		if (!c) {
			rc = conn_open(t, lim, &c, err, errlen);
			if (rc) {
				pool_drop(h, NULL);
				return rc;
			}
		}
		r->round_trips++;
		rc = conn_exec(c, command, input, len, lim, r, &channel_failed, err, errlen);
		if (rc == 0) {
			pool_put(h, c);
			return 0;
		}
		pool_drop(h, c);
		if (!(reused && channel_failed))
			return rc;
	}
	return DRV_EUNAVAILABLE;
}

static bool never(void *ud)
{
	(void)ud;
	return false;
}

int ssh_keyscan(const char *address, int port, int timeout_ms, char *out, size_t outlen, char *err,
                size_t errlen)
{
	struct ssh_limits lim = {.deadline_ms = ssh_now_ms() + timeout_ms, .cancelled = never};
	char what[300];
	snprintf(what, sizeof(what), "%s:%d", address, port);
	int fd = -1;
	if (tcp_connect(address, port, &lim, &fd, err, errlen))
		return -1;
	ssh_session s = ssh_new();
	if (!s) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int no = 0, verbosity = SSH_LOG_NOLOG;
	ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);
	ssh_options_set(s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity);
	ssh_options_set(s, SSH_OPTIONS_HOST, address);
	ssh_options_set(s, SSH_OPTIONS_PORT, &port);
	ssh_options_set(s, SSH_OPTIONS_FD, &fd);
	ssh_set_blocking(s, 0);
	int rc = session_handshake(s, &lim, what, err, errlen) ? -1 : 0;
	ssh_key key = NULL;
	if (!rc && (ssh_get_server_publickey(s, &key) != SSH_OK || !key)) {
		snprintf(err, errlen, "%s presented no host key", what);
		rc = -1;
	}
	char *b64 = NULL;
	if (!rc && ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK) {
		snprintf(err, errlen, "cannot encode the host key of %s", what);
		rc = -1;
	}
	if (!rc)
		snprintf(out, outlen, "%s %s", ssh_key_type_to_char(ssh_key_type(key)), b64);
	ssh_string_free_char(b64);
	ssh_key_free(key);
	ssh_disconnect(s);
	ssh_free(s);
	close(fd);
	return rc;
}

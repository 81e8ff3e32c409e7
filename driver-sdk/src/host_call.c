/*
 * Calling a driver: the typed drv_host_<op> functions (generated from the RPC
 * table), calls by method name, health checks, and connecting to a remote
 * driver by address.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include "alloc.h"
#include "drover/address.h"
#include "drv_internal.h"
#include "grpc/health/v1/health.pb-c.h"
#include "host_internal.h"
#include "rpc_table.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define QUOTA_FACTOR 2
#define SERVICE (&drover__compute__v1__compute__descriptor)

/* Fails fast for a driver that exited or a remote host that was stopped. */
static int check_usable(struct drv_host *h, struct drv_status *st)
{
	int rc = 0;

	pthread_mutex_lock(&h->mu);
	if (h->spawned && h->exited) {
		char how[96];

		drv__host_describe_exit_locked(h, how, sizeof(how));
		drv__status_set(st, DRV_EUNAVAILABLE, "driver %s %s", h->name, how);
		rc = DRV_EUNAVAILABLE;
	} else if (h->closed) {
		drv__status_set(st, DRV_EUNAVAILABLE, "driver %s: connection closed by drv_host_stop",
		                h->name);
		rc = DRV_EUNAVAILABLE;
	} else if (!h->ch) {
		drv__status_set(st, DRV_EUNAVAILABLE, "driver %s: not connected", h->name);
		rc = DRV_EUNAVAILABLE;
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

/*
 * True when the process is exiting or exited. A dying process closes its
 * sockets only after the kernel marked it exiting (PF_EXITING in
 * /proc/<pid>/stat), so when gRPC reports the connection lost this check is
 * already conclusive, without waiting. libuv may also have reaped it already.
 */
static bool process_gone(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long flags = 0;
	char state = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	const char *p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2)
		return false;
	return state == 'Z' || state == 'X' || (flags & 0x4 /* PF_EXITING */) != 0;
}

/*
 * After an UNAVAILABLE on a spawned driver: if the process died under the
 * call, wait briefly for libuv's exit callback so the message can say how it
 * died instead of gRPC's "Socket closed".
 */
static void explain_death(struct drv_host *h, const char *method, struct drv_status *st)
{
	if (!process_gone(h->pid))
		return;
	pthread_mutex_lock(&h->mu);
	if (drv__host_wait_exit_locked(h, drv__host_now_ns() + 1000000000u) && st) {
		char how[96];

		drv__host_describe_exit_locked(h, how, sizeof(how));
		drv__status_set(st, DRV_EUNAVAILABLE, "driver %s %s during %s", h->name, how, method);
	}
	pthread_mutex_unlock(&h->mu);
}

/*
 * The transport's limit is the largest per-call limit, so gRPC refuses
 * whatever no call may accept; each call then checks its own. The memory
 * quota bounds what the connection buffers for an answer gRPC is still
 * receiving (gRPC reads a whole message before it compares its size with
 * the limit): twice the largest answer allowed, so that answers within
 * their limits, several at once, still fit.
 */
void drv__host_channel_limits(const struct drv_host *h, struct drv_rpc_channel_opts *co)
{
	const struct drv_answer_limits *l = &h->limits;
	size_t max = l->answer_bytes > l->offers_answer_bytes ? l->answer_bytes : l->offers_answer_bytes;

	if (!l->answer_bytes || !l->offers_answer_bytes)
		return;
	if (l->list_answer_bytes > max)
		max = l->list_answer_bytes;
	co->max_message_bytes = max;
	co->memory_quota_bytes = QUOTA_FACTOR * max;
}

/* The limits of one method's answers. */
static void method_limit(const struct drv_host *h, const ProtobufCServiceDescriptor *svc, int idx,
                         struct drv__answer_limit *lim)
{
	memset(lim, 0, sizeof(*lim));
	if (svc != SERVICE)
		return;
	if (strcmp(svc->methods[idx].name, "GetOffers") == 0) {
		lim->max_bytes = h->limits.offers_answer_bytes;
		lim->counted_field = 1; /* GetOffersResponse.offers */
		lim->max_count = h->limits.offers;
		lim->count_noun = "offers";
		if (!lim->max_count)
			lim->counted_field = 0;
	} else if (strcmp(svc->methods[idx].name, "ListInstances") == 0 && h->limits.list_answer_bytes) {
		/* A listing grows with the machines a backend holds, unlike the answers about one. */
		lim->max_bytes = h->limits.list_answer_bytes;
	} else {
		lim->max_bytes = h->limits.answer_bytes;
	}
}

static int call_index(struct drv_host *h, const ProtobufCServiceDescriptor *svc, int idx,
                      const ProtobufCMessage *req, ProtobufCMessage **resp, int timeout_ms,
                      struct drv_status *st)
{
	int rc;

	rc = check_usable(h, st);
	if (rc != 0)
		return rc;
	struct drv__answer_limit lim;
	method_limit(h, svc, idx, &lim);
	rc = drv__rpc_call_limited(h->ch, svc, (unsigned)idx, req, resp, timeout_ms, NULL, &lim, st);
	if (rc == DRV_EUNAVAILABLE && h->spawned && h->pid > 0)
		explain_death(h, svc->methods[idx].name, st);
	return rc;
}

static int resolve(struct drv_host *h, const char *method, const ProtobufCMessage *req,
                   ProtobufCMessage **resp, struct drv_status *st)
{
	int idx;

	if (resp)
		*resp = NULL;
	if (!h || !method || !req || !resp) {
		drv__status_set(st, DRV_EINVAL,
		                "drv_host_call: host, method, request and response are required");
		return DRV_EINVAL;
	}
	idx = drv_rpc_method_index(SERVICE, method);
	if (idx < 0) {
		drv__status_set(st, DRV_EINVAL, "drv_host_call: %s has no method \"%s\"", DRV_COMPUTE_SERVICE,
		                method);
		return DRV_EINVAL;
	}
	if (req->descriptor != SERVICE->methods[idx].input) {
		drv__status_set(st, DRV_EINVAL, "drv_host_call: %s takes a %s, not a %s", method,
		                SERVICE->methods[idx].input->name,
		                req->descriptor ? req->descriptor->name : "?");
		return DRV_EINVAL;
	}
	return idx;
}

int drv_host_call(struct drv_host *h, const char *method, const ProtobufCMessage *req,
                  ProtobufCMessage **resp, int timeout_ms, struct drv_status *st)
{
	int idx = resolve(h, method, req, resp, st);

	if (idx < 0)
		return idx;
	return call_index(h, SERVICE, idx, req, resp, timeout_ms, st);
}

#define X(op, Method, feature, req_t, resp_t, snake)                                                         \
	int drv_host_##snake(struct drv_host *h, const req_t *req, resp_t **resp, int timeout_ms,            \
	                     struct drv_status *st)                                                          \
	{                                                                                                    \
		return drv_host_call(h, #Method, req ? &req->base : NULL, (ProtobufCMessage **)resp,         \
		                     timeout_ms, st);                                                        \
	}
DRV_IDENTITY_RPC_TABLE(X)
DRV_RPC_TABLE(X)
#undef X

int drv_host_call_async(struct drv_host *h, const char *method, const ProtobufCMessage *req, int timeout_ms,
                        drv_host_done_cb cb, void *ud)
{
	ProtobufCMessage *unused;
	int idx, rc;

	if (!cb)
		return DRV_EINVAL;
	idx = resolve(h, method, req, &unused, NULL);
	if (idx < 0)
		return idx;
	rc = check_usable(h, NULL);
	if (rc != 0)
		return rc;
	struct drv__answer_limit lim;
	method_limit(h, SERVICE, idx, &lim);
	return drv__rpc_call_async_limited(h->ch, SERVICE, (unsigned)idx, req, timeout_ms, NULL, &lim, cb,
	                                   ud);
}

int drv_host_health(struct drv_host *h, int timeout_ms, struct drv_status *st)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	const ProtobufCServiceDescriptor *svc = &grpc__health__v1__health__descriptor;
	int idx, rc;

	if (!h)
		return DRV_EINVAL;
	req.service = "";
	idx = drv_rpc_method_index(svc, "Check");
	rc = call_index(h, svc, idx, &req.base, &resp, timeout_ms, st);
	if (rc != 0)
		return rc;
	Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)resp;
	if (r->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
		const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		    &grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
		drv__status_set(st, DRV_EUNAVAILABLE, "driver %s reports %s", h->name,
		                v ? v->name : "an unknown status");
		rc = DRV_EUNAVAILABLE;
	} else if (st) {
		st->code = 0;
		st->message[0] = '\0';
	}
	drv_response_free(resp);
	return rc;
}

/* ---- connecting by address ---- */

static bool is_unix_target(const char *addr)
{
	return strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0;
}

/*
 * Plain TCP connect with a timeout. Used only to tell "nothing listens" from
 * "TCP works but TLS or gRPC on top failed" in connect errors.
 */
static int tcp_probe(const char *host, const char *port, int timeout_ms, char *why, size_t len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc, fd, result = -1;

	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		snprintf(why, len, "cannot resolve %s: %s", host, gai_strerror(rc));
		return -1;
	}
	snprintf(why, len, "no address for %s", host);
	for (struct addrinfo *ai = res; ai && result != 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0)
			continue;
		rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (rc != 0 && errno == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int soerr = 0;
			socklen_t sl = sizeof(soerr);

			if (poll(&p, 1, timeout_ms) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0) {
				rc = soerr ? -1 : 0;
				errno = soerr;
			} else {
				errno = ETIMEDOUT;
			}
		}
		if (rc == 0)
			result = 0;
		else
			snprintf(why, len, "TCP connect to %s:%s failed: %s", host, port, strerror(errno));
		close(fd);
	}
	freeaddrinfo(res);
	return result;
}

static bool readable(const char *path)
{
	return access(path, R_OK) == 0;
}

static int check_connect_opts(const struct drv_connect_opts *o, const char *name, bool *tls, char *host,
                              size_t hostlen, char *port, size_t portlen, char *err, size_t errlen)
{
	bool unix_addr = is_unix_target(o->address);
	int nfiles = !!o->ca_file + !!o->cert_file + !!o->key_file;

	if (!unix_addr) {
		struct drv_host_port hp;
		char why[96];
		if (drv_host_port_parse(o->address, false, &hp, why, sizeof(why)) != 0) {
			drv__seterr(err, errlen,
			            "driver '%s': address \"%s\" is neither host:port nor unix:/path: %s",
			            name, o->address, why);
			return DRV_EINVAL;
		}
		snprintf(host, hostlen, "%s", hp.host);
		snprintf(port, portlen, "%u", (unsigned)hp.port);
	}
	*tls = nfiles > 0;
	if (*tls && o->insecure) {
		drv__seterr(err, errlen, "driver '%s': both TLS files and insecure given; choose one", name);
		return DRV_EINVAL;
	}
	if (*tls && nfiles < 3) {
		drv__seterr(err, errlen,
		            "driver '%s': mutual TLS needs ca_file, cert_file and key_file; %s is missing",
		            name,
		            !o->ca_file     ? "ca_file"
		            : !o->cert_file ? "cert_file"
		                            : "key_file");
		return DRV_EINVAL;
	}
	if (*tls) {
		const char *files[3] = {o->ca_file, o->cert_file, o->key_file};
		const char *what[3] = {"TLS CA file", "TLS certificate file", "TLS key file"};

		for (int i = 0; i < 3; i++) {
			if (!readable(files[i])) {
				drv__seterr(err, errlen, "driver '%s': cannot read %s %s: %s", name, what[i],
				            files[i], strerror(errno));
				return DRV_EINVAL;
			}
		}
		return 0;
	}
	if (!o->insecure) {
		drv__seterr(
		    err, errlen,
		    "driver '%s' at %s: no TLS files given; set ca_file/cert_file/key_file for mutual "
		    "TLS, or "
		    "insecure for plain TCP (loopback only)",
		    name, o->address);
		return DRV_EINVAL;
	}
	if (!unix_addr && !drv__is_loopback_host(host) && !o->allow_remote_insecure) {
		drv__seterr(
		    err, errlen,
		    "driver '%s': refusing plain TCP to non-loopback address %s: use mutual TLS, or set "
		    "allow_remote_insecure if the network is trusted",
		    name, o->address);
		return DRV_EINVAL;
	}
	return 0;
}

/* Health-checks until SERVING or the deadline; fail-fast calls, so we pace the retries. */
static int wait_serving(struct drv_host *h, int timeout_ms, struct drv_status *last)
{
	uint64_t deadline = drv__host_now_ns() + (uint64_t)timeout_ms * 1000000u;
	int rc;

	for (;;) {
		uint64_t now = drv__host_now_ns();
		int left = now < deadline ? (int)((deadline - now) / 1000000u) : 0;

		rc = drv_host_health(h, left > 0 ? left : 1, last);
		if (rc == 0 || rc != DRV_EUNAVAILABLE || drv__host_now_ns() + 20000000u >= deadline)
			return rc;
		usleep(20000);
	}
}

int drv_host_connect(const struct drv_connect_opts *opts, struct drv_host **out, char *err, size_t errlen)
{
	struct drv_host *h;
	char host[256] = "", port[16] = "", cerr[256] = "";
	struct drv_status last = {0};
	bool tls = false;
	int rc, timeout_ms;

	if (err && errlen)
		err[0] = '\0';
	if (!opts || !opts->address || !opts->address[0] || !out) {
		drv__seterr(err, errlen, "drv_host_connect: an address is required");
		return DRV_EINVAL;
	}
	const char *name = opts->name && opts->name[0] ? opts->name : opts->address;
	rc = check_connect_opts(opts, name, &tls, host, sizeof(host), port, sizeof(port), err, errlen);
	if (rc != 0)
		return rc;

	/* Not a bare calloc: a zero pipe end would make drv__host_release close fd 0, whoever owns it now. */
	h = drv__host_new();
	if (!h) {
		drv__seterr(err, errlen, "drv_host_connect: out of memory");
		return DRV_ENOMEM;
	}
	h->name = drv__strdup(name);
	h->target = drv__strdup(opts->address);
	h->limits = opts->limits;
	if (!h->name || !h->target) {
		drv__seterr(err, errlen, "drv_host_connect: out of memory");
		rc = DRV_ENOMEM;
		goto fail;
	}
	struct drv_rpc_channel_opts co = {
	    .target = h->target,
	    .ca_file = tls ? opts->ca_file : NULL,
	    .cert_file = tls ? opts->cert_file : NULL,
	    .key_file = tls ? opts->key_file : NULL,
	    .server_name = opts->server_name,
	};
	drv__host_channel_limits(h, &co);
	rc = drv_rpc_channel_new(&co, &h->ch, cerr, sizeof(cerr));
	if (rc != 0) {
		drv__seterr(err, errlen, "driver '%s' at %s: cannot set up the %schannel: %s", name,
		            opts->address, tls ? "TLS " : "", cerr[0] ? cerr : drv_strerror(rc));
		goto fail;
	}
	timeout_ms = opts->connect_timeout_ms;
	if (timeout_ms < 0)
		timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	if (timeout_ms > 0) {
		rc = wait_serving(h, timeout_ms, &last);
		if (rc == DRV_ENOMEM) {
			/* Our memory, not the driver: said as it is, not as an unreachable driver. */
			drv__seterr(err, errlen, "driver '%s' at %s: health check: %s", name, opts->address,
			            last.message);
			goto fail;
		}
		if (rc != 0) {
			char why[300] = "";
			bool tcp_ok = !is_unix_target(opts->address) &&
			              tcp_probe(host, port, 500, why, sizeof(why)) == 0;

			if (tls && tcp_ok)
				drv__seterr(
				    err, errlen,
				    "driver '%s' at %s: TCP connects but the TLS handshake or the health "
				    "check failed "
				    "within %d ms (check the CA, certificates, key and server name): %s",
				    name, opts->address, timeout_ms, last.message);
			else if (tcp_ok || is_unix_target(opts->address))
				drv__seterr(
				    err, errlen,
				    "driver '%s' at %s: health check did not answer SERVING within %d ms: %s",
				    name, opts->address, timeout_ms, last.message);
			else
				drv__seterr(err, errlen, "driver '%s' at %s: unreachable within %d ms: %s",
				            name, opts->address, timeout_ms, why);
			rc = DRV_EUNAVAILABLE;
			goto fail;
		}
	}
	*out = h;
	return 0;

fail:
	drv__host_release(h);
	return rc;
}

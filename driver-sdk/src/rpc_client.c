/*
 * The calling half of drover/rpc.h: generic protobuf-c unary calls over gRPC
 * C core, for any ProtobufCServiceDescriptor.
 *
 * Each method is registered with the channel once, on first use, and cached
 * per channel (lock-free to read). A blocking call runs on a pluck queue of
 * its own, so the calling thread drives gRPC's poller itself and no thread
 * hand-off sits in the round trip; one queue per call in flight also stays
 * clear of the pluck queue's limit of 6 concurrent pluckers. The queues are
 * kept in a per-channel pool rather than made per call: a queue's creation
 * and shutdown cost about as much as our whole protobuf work for a small call. Asynchronous calls share
 * one `next` queue per channel whose thread is created on the first such
 * call, so a driver that never makes one pays no thread for it.
 *
 * A blocking call of a method whose last call on the channel was answered
 * within SPIN_US polls its queue without sleeping for up to that long before
 * it blocks: on this project's VMs a sleeping thread took 10-20 us to wake,
 * a fifth of a GetFeatures round trip. Slower methods (and a method's first
 * call) block at once, so no CPU is spent spinning on them.
 *
 * Threads: callers must block the signals they handle themselves (SIGTERM,
 * SIGINT, SIGPIPE) before drv_rpc_channel_new(): grpc_init() starts gRPC's
 * threads, which inherit the creating thread's mask.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "alloc.h"
#include "drover/rpc.h"
#include "drv_internal.h"
#include "rpc_grpc.h"
#include "rpc_response.h"

struct svc_cache {
	const ProtobufCServiceDescriptor *service;
	struct svc_cache *next;
	_Atomic uint32_t *last_us; /* per method: the last blocking call's wait in us, 0 if none */
	void *_Atomic handles[];   /* one per method, NULL until registered */
};

#define SPIN_US 100

struct ccall;

struct drv_rpc_channel {
	grpc_channel *ch;
	char *target;
	int max_message;
	grpc_resource_quota *quota; /* NULL: gRPC's default */
	size_t quota_bytes;
	bool wait_for_ready;
	_Atomic(struct svc_cache *) services;

	pthread_mutex_t lock;             /* guards registration and everything below */
	grpc_completion_queue **idle_cqs; /* pluck queues not in use */
	size_t n_idle_cqs, cap_idle_cqs;
	grpc_completion_queue *cq; /* asynchronous calls; NULL until the first */
	pthread_t thread;
	bool thread_started;
	struct ccall *pending; /* asynchronous calls in flight */
};

/* The inline metadata slots cover the usual authorization + a request id without a malloc. */
#define INLINE_MD 4

struct ccall {
	grpc_call *call;
	const ProtobufCMethodDescriptor *method;
	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_byte_buffer *send_bb;
	grpc_byte_buffer *recv_bb;
	grpc_status_code status;
	grpc_slice details;
	const char *error_string;
	grpc_metadata md_inline[INLINE_MD];
	grpc_metadata *md;
	size_t n_md;
	bool md_owned; /* asynchronous calls copy metadata slices */

	_Atomic uint32_t *last_us; /* the method's entry in its svc_cache */
	struct drv_rpc_channel *ch;
	drv_rpc_done cb;
	void *ud;
	struct ccall *prev, *next;
	struct drv__answer_limit lim; /* all zero: none */
};

int drv_rpc_method_index(const ProtobufCServiceDescriptor *service, const char *method)
{
	if (!service || !method)
		return -1;
	for (unsigned i = 0; i < service->n_methods; i++)
		if (strcmp(service->methods[i].name, method) == 0)
			return (int)i;
	return -1;
}

/* ---- channel ---- */

static int make_creds(const struct drv_rpc_channel_opts *o, grpc_channel_credentials **out, char *err,
                      size_t errlen)
{
	if (!o->ca_file) {
		if (o->cert_file || o->key_file) {
			drv__seterr(err, errlen, "a client certificate needs ca_file (the server's CA) too");
			return DRV_EINVAL;
		}
		*out = grpc_insecure_credentials_create();
		return 0;
	}
	if (!o->cert_file != !o->key_file) {
		drv__seterr(err, errlen, "mutual TLS needs both cert_file and key_file (%s missing)",
		            o->cert_file ? "key_file" : "cert_file");
		return DRV_EINVAL;
	}
	char *ca = NULL, *cert = NULL, *key = NULL;
	int rc = drv__rpc_read_file("ca_file", o->ca_file, &ca, err, errlen);
	if (rc == 0 && o->cert_file)
		rc = drv__rpc_read_file("cert_file", o->cert_file, &cert, err, errlen);
	if (rc == 0 && o->key_file)
		rc = drv__rpc_read_file("key_file", o->key_file, &key, err, errlen);
	if (rc == 0)
		rc = drv__rpc_check_pem("ca_file", o->ca_file, ca, "CERTIFICATE", err, errlen);
	if (rc == 0 && cert)
		rc = drv__rpc_check_pem("cert_file", o->cert_file, cert, "CERTIFICATE", err, errlen);
	if (rc == 0 && key)
		rc = drv__rpc_check_pem("key_file", o->key_file, key, "PRIVATE KEY", err, errlen);
	if (rc == 0) {
		grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
		*out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
		if (!*out) {
			drv__seterr(err, errlen, "cannot use TLS files (ca_file '%s')", o->ca_file);
			rc = DRV_EINVAL;
		}
	}
	/* gRPC copied the PEM text; the key is wiped before it goes back to the heap. */
	if (key)
		explicit_bzero(key, strlen(key));
	free(ca);
	free(cert);
	free(key);
	return rc;
}

/* With *fd >= 0, a channel on that connection; *fd is -1 once gRPC owns it. */
static int channel_new(const struct drv_rpc_channel_opts *opts, int *fd, struct drv_rpc_channel **out,
                       char *err, size_t errlen)
{
	if (!opts || !opts->target || !*opts->target) {
		drv__seterr(err, errlen, "channel target missing");
		return DRV_EINVAL;
	}
	if (strncmp(opts->target, "unix:", 5) == 0 && opts->target[5] != '/') {
		drv__seterr(err, errlen, "unix socket target '%s' must be an absolute path", opts->target);
		return DRV_EINVAL;
	}
	struct drv_rpc_channel *ch = drv__calloc(1, sizeof(*ch));
	if (!ch || !(ch->target = drv__strdup(opts->target))) {
		free(ch);
		drv__seterr(err, errlen, "out of memory");
		return DRV_ENOMEM;
	}
	ch->max_message = drv__rpc_max_message(opts->max_message_bytes);
	ch->wait_for_ready = opts->wait_for_ready;
	pthread_mutex_init(&ch->lock, NULL);
	atomic_init(&ch->services, NULL);

	drv__rpc_grpc_init();
	grpc_channel_credentials *creds = NULL;
	int rc = make_creds(opts, &creds, err, errlen);
	if (rc != 0) {
		grpc_shutdown();
		pthread_mutex_destroy(&ch->lock);
		free(ch->target);
		free(ch);
		return rc;
	}
	grpc_arg args[9];
	size_t n = 0;
	memset(args, 0, sizeof(args));
	if (opts->memory_quota_bytes > 0) {
		ch->quota = grpc_resource_quota_create(opts->target);
		grpc_resource_quota_resize(ch->quota, opts->memory_quota_bytes);
		ch->quota_bytes = opts->memory_quota_bytes;
		args[n].type = GRPC_ARG_POINTER;
		args[n].key = GRPC_ARG_RESOURCE_QUOTA;
		args[n].value.pointer.p = ch->quota;
		args[n++].value.pointer.vtable = grpc_resource_quota_arg_vtable();
	}
	args[n].type = GRPC_ARG_INTEGER;
	args[n].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[n++].value.integer = ch->max_message;
	args[n].type = GRPC_ARG_INTEGER;
	args[n].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[n++].value.integer = ch->max_message;
	/* Retries are the caller's policy (backoff on UNAVAILABLE); gRPC's own retry layer only adds cost. */
	args[n].type = GRPC_ARG_INTEGER;
	args[n].key = GRPC_ARG_ENABLE_RETRIES;
	args[n++].value.integer = 0;
	/*
	 * gRPC's default reconnect backoff grows to 120 s, far too long for a
	 * driver that restarts or a network that comes back: cap it at 5 s and
	 * start at 250 ms. The caller's own retry policy sits on top.
	 * GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays gRPC's (20 s): it is also how
	 * long one connection attempt may take. At 250 ms, a driver farther
	 * away than that (TCP, TLS and HTTP/2 settings take a few round trips)
	 * connected only once the backoff had grown past it, seconds later, or
	 * never.
	 */
	args[n].type = GRPC_ARG_INTEGER;
	args[n].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
	args[n++].value.integer = 250;
	args[n].type = GRPC_ARG_INTEGER;
	args[n].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
	args[n++].value.integer = 5000;
	if (opts->server_name && opts->ca_file) {
		args[n].type = GRPC_ARG_STRING;
		args[n].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		args[n++].value.string = (char *)opts->server_name;
	}
	grpc_channel_args cargs = {.num_args = n, .args = args};
	if (*fd >= 0) {
		/* Else gRPC sends ":authority: test.authority". */
		args[n].type = GRPC_ARG_STRING;
		args[n].key = GRPC_ARG_DEFAULT_AUTHORITY;
		args[n].value.string = "localhost";
		cargs.num_args = ++n;
		ch->ch = grpc_channel_create_from_fd(opts->target, *fd, creds, &cargs);
		*fd = -1;
	} else {
		ch->ch = grpc_channel_create(opts->target, creds, &cargs);
	}
	grpc_channel_credentials_release(creds);
	if (!ch->ch) {
		if (ch->quota)
			grpc_resource_quota_unref(ch->quota);
		grpc_shutdown();
		pthread_mutex_destroy(&ch->lock);
		free(ch->target);
		free(ch);
		drv__seterr(err, errlen, "cannot create a channel to '%s'", opts->target);
		return DRV_EINVAL;
	}
	*out = ch;
	return 0;
}

int drv_rpc_channel_new(const struct drv_rpc_channel_opts *opts, struct drv_rpc_channel **out, char *err,
                        size_t errlen)
{
	int no_fd = -1;
	return channel_new(opts, &no_fd, out, err, errlen);
}

/*
 * A direct channel on the caller's connection: no resolver, no load
 * balancing, no reconnection, and no wait for the server's SETTINGS before
 * the first call goes out. A spawned driver's first call is therefore
 * already in the socket when the driver's gRPC takes the connection (one
 * round trip less than a channel that connects by itself), and every call
 * skips the client channel's layers.
 */
int drv__rpc_channel_new_fd(const struct drv_rpc_channel_opts *opts, int fd, struct drv_rpc_channel **out,
                            char *err, size_t errlen)
{
	int rc;
	if (fd < 0 || (opts && (opts->ca_file || opts->cert_file || opts->key_file))) {
		drv__seterr(err, errlen, "a channel on a connected descriptor is plain text only");
		rc = DRV_EINVAL;
	} else {
		rc = channel_new(opts, &fd, out, err, errlen);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The registered-call handle of a method, registering it on first use; *last_us its latency slot. */
static void *method_handle(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                           unsigned idx, _Atomic uint32_t **last_us)
{
	for (struct svc_cache *s = atomic_load_explicit(&ch->services, memory_order_acquire); s;
	     s = s->next) {
		if (s->service == service) {
			void *h = atomic_load_explicit(&s->handles[idx], memory_order_acquire);
			if (h) {
				*last_us = &s->last_us[idx];
				return h;
			}
			break;
		}
	}
	pthread_mutex_lock(&ch->lock);
	struct svc_cache *s;
	for (s = atomic_load(&ch->services); s; s = s->next)
		if (s->service == service)
			break;
	if (!s) {
		s = drv__calloc(1, sizeof(*s) + service->n_methods * sizeof(s->handles[0]));
		if (s && !(s->last_us = drv__calloc(service->n_methods ? service->n_methods : 1,
		                                    sizeof(*s->last_us)))) {
			free(s);
			s = NULL;
		}
		if (!s) {
			pthread_mutex_unlock(&ch->lock);
			return NULL;
		}
		s->service = service;
		s->next = atomic_load(&ch->services);
		atomic_store_explicit(&ch->services, s, memory_order_release);
	}
	void *h = atomic_load(&s->handles[idx]);
	if (!h) {
		char path[512];
		snprintf(path, sizeof(path), "/%s/%s", service->name, service->methods[idx].name);
		h = grpc_channel_register_call(ch->ch, path, NULL, NULL);
		atomic_store_explicit(&s->handles[idx], h, memory_order_release);
	}
	*last_us = &s->last_us[idx];
	pthread_mutex_unlock(&ch->lock);
	return h;
}

static void ccall_release(struct ccall *cc)
{
	if (cc->call)
		grpc_call_unref(cc->call);
	grpc_metadata_array_destroy(&cc->initial_md);
	grpc_metadata_array_destroy(&cc->trailing_md);
	if (cc->send_bb)
		grpc_byte_buffer_destroy(cc->send_bb);
	if (cc->recv_bb)
		grpc_byte_buffer_destroy(cc->recv_bb);
	grpc_slice_unref(cc->details);
	if (cc->error_string)
		gpr_free((void *)cc->error_string);
	if (cc->md_owned)
		for (size_t i = 0; i < cc->n_md; i++) {
			grpc_slice_unref(cc->md[i].key);
			grpc_slice_unref(cc->md[i].value);
		}
	if (cc->md != cc->md_inline)
		free(cc->md);
}

/*
 * Creates the call and starts its single batch on `cq` with tag `cc`. On
 * failure everything is released and the error is in `st`.
 */
static int ccall_start(struct drv_rpc_channel *ch, grpc_completion_queue *cq, struct ccall *cc,
                       const ProtobufCServiceDescriptor *service, unsigned idx, const ProtobufCMessage *req,
                       int timeout_ms, const struct drv_rpc_metadata *md, bool copy_md, struct drv_status *st)
{
	const ProtobufCMethodDescriptor *m = &service->methods[idx];
	cc->method = m;
	cc->md = cc->md_inline;
	cc->details = grpc_empty_slice();
	grpc_metadata_array_init(&cc->initial_md);
	grpc_metadata_array_init(&cc->trailing_md);
	if (req->descriptor != m->input) {
		drv__status_set(st, DRV_EINVAL, "%s takes %s, not %s", m->name, m->input->name,
		                req->descriptor->name);
		return DRV_EINVAL;
	}
	size_t n_md = 0;
	while (md && md[n_md].key)
		n_md++;
	if (n_md > INLINE_MD) {
		cc->md = drv__calloc(n_md, sizeof(*cc->md));
		if (!cc->md) {
			cc->md = cc->md_inline;
			drv__status_set(st, DRV_ENOMEM, "out of memory");
			return DRV_ENOMEM;
		}
	}
	for (size_t i = 0; i < n_md; i++) {
		const char *v = md[i].value ? md[i].value : "";
		memset(&cc->md[i], 0, sizeof(cc->md[i]));
		if (copy_md) {
			cc->md[i].key = grpc_slice_from_copied_string(md[i].key);
			cc->md[i].value = grpc_slice_from_copied_string(v);
		} else {
			/* Borrowed for the blocking call, which outlives the batch: no copy. */
			cc->md[i].key = grpc_slice_from_static_string(md[i].key);
			cc->md[i].value = grpc_slice_from_static_string(v);
		}
	}
	cc->n_md = n_md;
	cc->md_owned = copy_md;

	void *handle = method_handle(ch, service, idx, &cc->last_us);
	if (!handle) {
		drv__status_set(st, DRV_ENOMEM, "out of memory registering %s", m->name);
		return DRV_ENOMEM;
	}
	cc->send_bb = drv__rpc_pack(req);
	if (!cc->send_bb) {
		drv__status_set(st, DRV_ENOMEM, "out of memory packing %s", m->input->name);
		return DRV_ENOMEM;
	}
	if (timeout_ms <= 0)
		timeout_ms = DRV__RPC_DEFAULT_TIMEOUT_MS;
	cc->call = grpc_channel_create_registered_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, handle,
	                                               drv__rpc_deadline(timeout_ms), NULL);
	if (!cc->call) {
		drv__status_set(st, DRV_EINTERNAL, "cannot create a call to %s", m->name);
		return DRV_EINTERNAL;
	}
	grpc_op ops[6];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = ch->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
	ops[0].data.send_initial_metadata.count = n_md;
	ops[0].data.send_initial_metadata.metadata = n_md ? cc->md : NULL;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = cc->send_bb;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc->initial_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &cc->recv_bb;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &cc->trailing_md;
	ops[5].data.recv_status_on_client.status = &cc->status;
	ops[5].data.recv_status_on_client.status_details = &cc->details;
	ops[5].data.recv_status_on_client.error_string = &cc->error_string;
	grpc_call_error e = grpc_call_start_batch(cc->call, ops, 6, cc, NULL);
	if (e == GRPC_CALL_ERROR_INVALID_METADATA) {
		drv__status_set(st, DRV_EINVAL,
		                "invalid call metadata (keys must be lower-case, values printable)");
		return DRV_EINVAL;
	}
	if (e != GRPC_CALL_OK) {
		drv__status_set(st, DRV_EINTERNAL, "cannot start a call to %s (gRPC error %d)", m->name,
		                (int)e);
		return DRV_EINTERNAL;
	}
	return 0;
}

void drv__format_bytes(size_t n, char *buf, size_t len)
{
	if (n >= ((size_t)1 << 20) && n % ((size_t)1 << 20) == 0)
		snprintf(buf, len, "%zu MiB", n >> 20);
	else if (n >= 1024 && n % 1024 == 0)
		snprintf(buf, len, "%zu KiB", n >> 10);
	else
		snprintf(buf, len, "%zu bytes", n);
}

/*
 * gRPC refused an answer over the channel's max_message_bytes: the words of
 * the per-call limit instead of gRPC's, when the call has one. gRPC says
 * "Received message larger than max (N vs. M)"; a driver could answer those
 * words itself, which only makes its own call fail the same way.
 */
static bool over_channel_limit(struct ccall *cc, char *msg, size_t msglen)
{
	static const char prefix[] = "Received message larger than max (";
	const char *d = (const char *)GRPC_SLICE_START_PTR(cc->details);
	size_t n = GRPC_SLICE_LENGTH(cc->details);
	char text[128], lim[32];
	unsigned long long got;

	if (cc->status != GRPC_STATUS_RESOURCE_EXHAUSTED || !cc->lim.max_bytes || n >= sizeof(text))
		return false;
	memcpy(text, d, n);
	text[n] = '\0';
	if (strcmp(text, "Buffers full") == 0 && cc->ch->quota_bytes) {
		/* The quota's reclaimer cancelled the call while its answer was still arriving. */
		char quota[32];
		drv__format_bytes(cc->lim.max_bytes, lim, sizeof(lim));
		drv__format_bytes(cc->ch->quota_bytes, quota, sizeof(quota));
		snprintf(
		    msg, msglen,
		    "%s answer cut off: the answers arriving on the driver's connection filled its %s of "
		    "buffers (this answer's limit is %s)",
		    cc->method->name, quota, lim);
		return true;
	}
	if (strncmp(text, prefix, sizeof(prefix) - 1) != 0 ||
	    sscanf(text + sizeof(prefix) - 1, "%llu", &got) != 1)
		return false;
	drv__format_bytes(cc->lim.max_bytes, lim, sizeof(lim));
	snprintf(msg, msglen, "%s answer of %llu bytes exceeds the %s limit", cc->method->name, got, lim);
	return true;
}

/* Entries of top-level field `field` in protobuf bytes; stops counting past `max`. */
static size_t count_field(const uint8_t *p, size_t len, uint32_t field, size_t max)
{
	const uint8_t *end = p + len;
	size_t k = 0;

	while (p < end && k <= max) {
		uint64_t tag = 0, v = 0;
		unsigned shift;
		for (shift = 0; p < end && shift < 64; shift += 7) {
			tag |= (uint64_t)(*p & 0x7f) << shift;
			if (!(*p++ & 0x80))
				break;
		}
		switch (tag & 7) {
		case 0:
			while (p < end && (*p++ & 0x80))
				;
			break;
		case 1:
			p = (size_t)(end - p) < 8 ? end : p + 8;
			break;
		case 2:
			for (shift = 0; p < end && shift < 64; shift += 7) {
				v |= (uint64_t)(*p & 0x7f) << shift;
				if (!(*p++ & 0x80))
					break;
			}
			p = v > (uint64_t)(end - p) ? end : p + v;
			if (tag >> 3 == field)
				k++;
			break;
		case 5:
			p = (size_t)(end - p) < 4 ? end : p + 4;
			break;
		default:
			/* Not a valid message: the unpack that follows says so. */
			return k;
		}
	}
	return k;
}

/* The size limit of an answer gRPC accepted, on its length as received. */
static bool over_size_limit(struct ccall *cc, char *msg, size_t msglen)
{
	size_t len = grpc_byte_buffer_length(cc->recv_bb);
	char lim[32];

	if (!cc->lim.max_bytes || len <= cc->lim.max_bytes)
		return false;
	drv__format_bytes(cc->lim.max_bytes, lim, sizeof(lim));
	snprintf(msg, msglen, "%s answer of %zu bytes exceeds the %s limit", cc->method->name, len, lim);
	return true;
}

/*
 * Unpacks an answer whose entries of one field are counted first, on the
 * same contiguous bytes the unpack reads (joined once when the answer came
 * in several slices), so that an answer over the count costs no unpacking.
 * Returns 0 with *resp (NULL: not a valid message), or DRV_ERANGE.
 */
static int unpack_counted(struct ccall *cc, char *msg, size_t msglen, ProtobufCMessage **resp)
{
	const struct drv__answer_limit *l = &cc->lim;
	grpc_byte_buffer *bb = cc->recv_bb;
	grpc_slice all = grpc_empty_slice();
	const uint8_t *data;
	size_t len;

	if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
	    bb->data.raw.slice_buffer.count == 1) {
		data = GRPC_SLICE_START_PTR(bb->data.raw.slice_buffer.slices[0]);
		len = GRPC_SLICE_LENGTH(bb->data.raw.slice_buffer.slices[0]);
	} else {
		grpc_byte_buffer_reader r;
		if (!grpc_byte_buffer_reader_init(&r, bb))
			return 0;
		all = grpc_byte_buffer_reader_readall(&r);
		grpc_byte_buffer_reader_destroy(&r);
		data = GRPC_SLICE_START_PTR(all);
		len = GRPC_SLICE_LENGTH(all);
	}
	int rc = 0;
	if (count_field(data, len, l->counted_field, l->max_count) > l->max_count) {
		snprintf(msg, msglen, "%s answer holds more than %zu %s, the limit", cc->method->name,
		         l->max_count, l->count_noun ? l->count_noun : "entries");
		rc = DRV_ERANGE;
	} else {
		*resp = drv__response_unpack(cc->method->output, len, data ? data : (const uint8_t *)"");
	}
	grpc_slice_unref(all);
	return rc;
}

/* Turns the finished batch into code, message and response. */
static int ccall_finish(struct ccall *cc, bool batch_ok, char *msg, size_t msglen, ProtobufCMessage **resp)
{
	*resp = NULL;
	msg[0] = '\0';
	if (!batch_ok) {
		snprintf(msg, msglen, "%s: call failed inside gRPC", cc->method->name);
		return DRV_EINTERNAL;
	}
	if (cc->status != GRPC_STATUS_OK) {
		const uint8_t *d = GRPC_SLICE_START_PTR(cc->details);
		if (over_channel_limit(cc, msg, msglen))
			return DRV_ERANGE;
		size_t n = GRPC_SLICE_LENGTH(cc->details);
		/* Cut a long message between characters, not inside one (callers log and forward it). */
		n = drv_utf8_cut((const char *)d, n, msglen - 1);
		memcpy(msg, d, n);
		msg[n] = '\0';
		return drv_error_from_grpc((int)cc->status);
	}
	if (cc->recv_bb && over_size_limit(cc, msg, msglen))
		return DRV_ERANGE;
	unsigned long failed = drv__alloc_failures();
	if (cc->recv_bb && cc->lim.counted_field) {
		if (unpack_counted(cc, msg, msglen, resp) != 0)
			return DRV_ERANGE;
	} else {
		*resp = drv__rpc_unpack(cc->method->output, cc->recv_bb, drv__response_unpack);
	}
	/* protobuf-c says NULL for no memory too: the driver's answer is not to blame then. */
	if (!*resp && drv__alloc_failures() != failed) {
		snprintf(msg, msglen, "%s: out of memory unpacking the response", cc->method->name);
		return DRV_ENOMEM;
	}
	if (!*resp) {
		snprintf(msg, msglen, "%s: response is %s a valid %s message", cc->method->name,
		         cc->recv_bb ? "not" : "missing,", cc->method->output->name);
		return DRV_EINTERNAL;
	}
	return 0;
}

/* A pluck queue from the pool, or a new one. */
static grpc_completion_queue *cq_get(struct drv_rpc_channel *ch)
{
	grpc_completion_queue *cq = NULL;
	pthread_mutex_lock(&ch->lock);
	if (ch->n_idle_cqs > 0)
		cq = ch->idle_cqs[--ch->n_idle_cqs];
	pthread_mutex_unlock(&ch->lock);
	return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

/* Back to the pool; the pool keeps as many queues as there were blocking calls at once, at most 64. */
static void cq_put(struct drv_rpc_channel *ch, grpc_completion_queue *cq)
{
	pthread_mutex_lock(&ch->lock);
	if (ch->n_idle_cqs == ch->cap_idle_cqs && ch->cap_idle_cqs < 64) {
		size_t cap = ch->cap_idle_cqs ? ch->cap_idle_cqs * 2 : 4;
		grpc_completion_queue **v = drv__realloc(ch->idle_cqs, cap * sizeof(*v));
		if (v) {
			ch->idle_cqs = v;
			ch->cap_idle_cqs = cap;
		}
	}
	if (ch->n_idle_cqs < ch->cap_idle_cqs) {
		ch->idle_cqs[ch->n_idle_cqs++] = cq;
		cq = NULL;
	}
	pthread_mutex_unlock(&ch->lock);
	if (cq) {
		grpc_completion_queue_shutdown(cq);
		grpc_completion_queue_destroy(cq);
	}
}

int drv_rpc_call(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service, unsigned method_index,
                 const ProtobufCMessage *req, ProtobufCMessage **resp, int timeout_ms,
                 const struct drv_rpc_metadata *md, struct drv_status *st)
{
	return drv__rpc_call_limited(ch, service, method_index, req, resp, timeout_ms, md, NULL, st);
}

int drv__rpc_call_limited(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                          unsigned method_index, const ProtobufCMessage *req, ProtobufCMessage **resp,
                          int timeout_ms, const struct drv_rpc_metadata *md,
                          const struct drv__answer_limit *lim, struct drv_status *st)
{
	if (!resp) {
		drv__status_set(st, DRV_EINVAL, "drv_rpc_call: resp is required");
		return DRV_EINVAL;
	}
	*resp = NULL;
	if (!ch || !service || !req || method_index >= service->n_methods) {
		drv__status_set(st, DRV_EINVAL, "drv_rpc_call: bad arguments");
		return DRV_EINVAL;
	}
	struct ccall cc;
	memset(&cc, 0, sizeof(cc));
	if (lim)
		cc.lim = *lim;
	cc.ch = ch;
	grpc_completion_queue *cq = cq_get(ch);
	int rc = ccall_start(ch, cq, &cc, service, method_index, req, timeout_ms, md, false, st);
	if (rc == 0) {
		grpc_event ev = {.type = GRPC_QUEUE_TIMEOUT};
		gpr_timespec t0 = gpr_now(GPR_CLOCK_MONOTONIC);
		uint32_t last = cc.last_us ? atomic_load_explicit(cc.last_us, memory_order_relaxed) : 0;
		if (last && last <= SPIN_US) {
			gpr_timespec until = gpr_time_add(t0, gpr_time_from_micros(SPIN_US, GPR_TIMESPAN));
			/* A deadline in the past still polls once, without sleeping. */
			do
				ev = grpc_completion_queue_pluck(cq, &cc, gpr_inf_past(GPR_CLOCK_MONOTONIC),
				                                 NULL);
			while (ev.type == GRPC_QUEUE_TIMEOUT &&
			       gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), until) < 0);
		}
		if (ev.type == GRPC_QUEUE_TIMEOUT)
			ev = grpc_completion_queue_pluck(cq, &cc, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		double us = gpr_timespec_to_micros(gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), t0));
		if (cc.last_us)
			atomic_store_explicit(cc.last_us,
			                      us < 1            ? 1
			                      : us > UINT32_MAX ? UINT32_MAX
			                                        : (uint32_t)us,
			                      memory_order_relaxed);
		char msg[sizeof(st->message)];
		rc = ccall_finish(&cc, ev.type == GRPC_OP_COMPLETE && ev.success, msg, sizeof(msg), resp);
		if (st) {
			st->code = rc;
			memcpy(st->message, msg, sizeof(st->message));
		}
	}
	ccall_release(&cc);
	/* The call's one event was plucked (or its batch never started), so the queue is empty again. */
	cq_put(ch, cq);
	return rc;
}

/* ---- asynchronous calls ---- */

/* Takes an asynchronous call off the channel's list of calls in flight. */
static void pending_remove(struct drv_rpc_channel *ch, struct ccall *cc)
{
	pthread_mutex_lock(&ch->lock);
	if (cc->prev)
		cc->prev->next = cc->next;
	else
		ch->pending = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	pthread_mutex_unlock(&ch->lock);
}

static void *async_main(void *arg)
{
	struct drv_rpc_channel *ch = arg;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(ch->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		struct ccall *cc = ev.tag;
		char msg[512];
		ProtobufCMessage *resp;
		int rc = ccall_finish(cc, ev.success, msg, sizeof(msg), &resp);
		pending_remove(ch, cc);
		cc->cb(cc->ud, rc, msg, resp);
		ccall_release(cc);
		free(cc);
	}
	return NULL;
}

int drv_rpc_call_async(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                       unsigned method_index, const ProtobufCMessage *req, int timeout_ms,
                       const struct drv_rpc_metadata *md, drv_rpc_done cb, void *ud)
{
	return drv__rpc_call_async_limited(ch, service, method_index, req, timeout_ms, md, NULL, cb, ud);
}

int drv__rpc_call_async_limited(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                                unsigned method_index, const ProtobufCMessage *req, int timeout_ms,
                                const struct drv_rpc_metadata *md, const struct drv__answer_limit *lim,
                                drv_rpc_done cb, void *ud)
{
	if (!ch || !service || !req || !cb || method_index >= service->n_methods)
		return DRV_EINVAL;
	struct ccall *cc = drv__calloc(1, sizeof(*cc));
	if (!cc)
		return DRV_ENOMEM;
	cc->ch = ch;
	cc->cb = cb;
	cc->ud = ud;
	if (lim)
		cc->lim = *lim;
	/* One lock per call: the queue's creation check and the listing share it. */
	pthread_mutex_lock(&ch->lock);
	if (!ch->cq) {
		ch->cq = grpc_completion_queue_create_for_next(NULL);
		if (pthread_create(&ch->thread, NULL, async_main, ch) != 0) {
			grpc_completion_queue_shutdown(ch->cq);
			grpc_completion_queue_destroy(ch->cq);
			ch->cq = NULL;
			pthread_mutex_unlock(&ch->lock);
			free(cc);
			return DRV_ESYSTEM;
		}
		ch->thread_started = true;
	}
	/*
	 * Listed before the batch starts: the completion may run on the queue
	 * thread before ccall_start() even returns.
	 */
	cc->next = ch->pending;
	if (ch->pending)
		ch->pending->prev = cc;
	ch->pending = cc;
	pthread_mutex_unlock(&ch->lock);
	struct drv_status st;
	int rc = ccall_start(ch, ch->cq, cc, service, method_index, req, timeout_ms, md, true, &st);
	if (rc != 0) {
		pending_remove(ch, cc);
		ccall_release(cc);
		free(cc);
	}
	return rc;
}

void drv_rpc_channel_free(struct drv_rpc_channel *ch)
{
	if (!ch)
		return;
	/* Calls still in flight end now, each callback running with CANCELLED. */
	pthread_mutex_lock(&ch->lock);
	for (struct ccall *cc = ch->pending; cc; cc = cc->next)
		if (cc->call)
			grpc_call_cancel(cc->call, NULL);
	pthread_mutex_unlock(&ch->lock);
	if (ch->cq) {
		grpc_completion_queue_shutdown(ch->cq);
		pthread_join(ch->thread, NULL);
		grpc_completion_queue_destroy(ch->cq);
	}
	for (size_t i = 0; i < ch->n_idle_cqs; i++) {
		grpc_completion_queue_shutdown(ch->idle_cqs[i]);
		grpc_completion_queue_destroy(ch->idle_cqs[i]);
	}
	free(ch->idle_cqs);
	grpc_channel_destroy(ch->ch);
	struct svc_cache *s = atomic_load(&ch->services);
	while (s) {
		struct svc_cache *next = s->next;
		free(s->last_us);
		free(s);
		s = next;
	}
	pthread_mutex_destroy(&ch->lock);
	if (ch->quota)
		grpc_resource_quota_unref(ch->quota);
	free(ch->target);
	free(ch);
	grpc_shutdown();
}

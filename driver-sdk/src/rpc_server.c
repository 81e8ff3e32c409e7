/*
 * The serving half of drover/rpc.h: generic protobuf-c unary methods over
 * gRPC C core, for any ProtobufCServiceDescriptor.
 *
 * One completion-queue thread takes every event. Each registered method keeps
 * several requests posted (the request message arrives with the call), and one
 * generic request is always posted so that an unknown method is answered with
 * UNIMPLEMENTED at once instead of hanging until the client's deadline.
 *
 * A call is answered with one batch (initial metadata, message, status). Its
 * RECV_CLOSE_ON_SERVER op, which is how the server learns the client went
 * away, rides in that batch when the reply comes straight from an inline
 * handler (the fast path: one batch per call); when the handler runs on a
 * worker or keeps the call for later, the op is started on its own at once so
 * that drv_rpc_call_cancelled() sees cancellation while the handler works.
 *
 * Lifetime of a call: `grpc_refs` counts what holds the gRPC call (the
 * not-yet-sent reply and each started batch); at zero the gRPC call is
 * released. `refs` counts the gRPC side (as one) and the handler, which holds
 * the call until drv_rpc_reply(); at zero the memory is freed. A shutdown
 * that outlasts its grace answers unanswered calls with CANCELLED itself, so
 * the gRPC server can finish even while a handler still holds its call; the
 * handler's late drv_rpc_reply() then only frees it.
 *
 * Threads: callers must block the signals they handle themselves (SIGTERM,
 * SIGINT, SIGPIPE) before drv_rpc_server_new(), because gRPC's own threads and
 * ours inherit the mask of the thread that creates them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "alloc.h"
#include "drover/rpc.h"
#include "rpc_grpc.h"

/*
 * Requests kept posted per method. A call that finds none waits inside gRPC
 * and is matched by the next request posted, which the completion-queue thread
 * does as it dispatches each call, so a few are enough even for 8+ calls in
 * flight. Many would cost every call: Debian's gRPC (built without NDEBUG)
 * scans all the queue's outstanding tags on each completion (cq_check_tag),
 * and 8 for each of the ~15 methods made that scan ~4% of the server's
 * instructions per call.
 */
#define POSTED_PER_METHOD 2

enum tag_kind {
	TAG_NEW_CALL,    /* a registered call arrived (or the server shut down) */
	TAG_NEW_GENERIC, /* a call to an unknown method arrived */
	TAG_REPLY,       /* the reply batch completed */
	TAG_CLOSE,       /* the lone RECV_CLOSE_ON_SERVER batch completed */
	TAG_SHUTDOWN,    /* grpc_server_shutdown_and_notify completed */
};

struct tag {
	enum tag_kind kind;
};

struct method {
	struct drv_rpc_server *srv;
	const ProtobufCServiceDescriptor *service;
	const ProtobufCMethodDescriptor *desc;
	drv_rpc_handler fn;
	void *ud;
	unsigned flags;
	void *handle; /* from grpc_server_register_method */
	int unposted; /* requests that could not be posted again, for lack of memory; CQ thread */
};

struct md_pair {
	char *key;
	char *value;
};

struct drv_rpc_call {
	struct tag t_new;
	struct tag t_reply;
	struct tag t_close;
	struct drv_rpc_server *srv;
	struct method *m; /* NULL for a generic (unknown method) call */
	/* m->desc, kept here because a handler may hold the call after the server (and m) is freed. */
	const ProtobufCMethodDescriptor *desc;
	grpc_call *gcall;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
	grpc_call_details details; /* generic calls only */

	ProtobufCMessage *req;
	struct md_pair *mds; /* request metadata copied once: outlives the gRPC call */
	size_t n_mds;
	char *peer;
	void *data;

	atomic_int grpc_refs;
	atomic_int refs;
	atomic_int state;          /* enum call_state */
	atomic_bool close_claimed; /* someone started RECV_CLOSE_ON_SERVER */
	atomic_bool cancelled;
	int close_cancelled; /* out-param of RECV_CLOSE_ON_SERVER */
	int reply_has_close;

	grpc_byte_buffer *resp_bb;
	grpc_slice status_details;
	int has_details;

	struct drv_rpc_call *q_next;                /* worker queue */
	struct drv_rpc_call *live_prev, *live_next; /* server's list of unanswered calls */
};

enum call_state {
	CALL_PENDING,
	CALL_REPLIED,
	CALL_FORCE_CLOSED,
};

struct drv_rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq;
	struct tag t_shutdown;
	char *address;
	int workers;
	int max_message;
	grpc_server_credentials *creds;
	bool tls;

	struct method **methods;
	size_t n_methods;

	pthread_t cq_thread;
	pthread_t *worker_threads;
	int n_workers_started;
	bool cq_thread_started;
	bool started;
	/* Requests (registered and generic) to post again; CQ thread only once it runs. */
	int n_unposted, generic_unposted;

	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t cond;  /* shutdown progress */
	pthread_cond_t
	    work_cond; /* the worker queue; apart from `cond` so a signal always reaches a worker */
	struct drv_rpc_call *q_head, *q_tail;
	int n_queued, n_idle; /* calls in the queue, workers waiting for one */
	bool workers_stop;
	struct drv_rpc_call *live; /* calls not yet released by gRPC */
	bool shutdown_begun;
	bool shutdown_done; /* the shutdown tag arrived */
	bool threads_joined;
	atomic_bool stopping; /* grace over: calls are being cancelled */
};

static void post_generic(struct drv_rpc_server *srv);
static void post_registered(struct method *m);
static void post_missing(struct drv_rpc_server *srv);
static void call_grpc_unref(struct drv_rpc_call *c);

#define CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static struct drv_rpc_call *call_alloc(struct drv_rpc_server *srv, struct method *m)
{
	struct drv_rpc_call *c = drv__calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->t_new.kind = m ? TAG_NEW_CALL : TAG_NEW_GENERIC;
	c->t_reply.kind = TAG_REPLY;
	c->t_close.kind = TAG_CLOSE;
	c->srv = srv;
	c->m = m;
	c->desc = m ? m->desc : NULL;
	grpc_metadata_array_init(&c->md);
	if (!m)
		grpc_call_details_init(&c->details);
	return c;
}

/* Frees a call that never arrived (its request was posted and the server shut down). */
static void call_free_unarrived(struct drv_rpc_call *c)
{
	grpc_metadata_array_destroy(&c->md);
	if (!c->m)
		grpc_call_details_destroy(&c->details);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	free(c);
}

static void call_free(struct drv_rpc_call *c)
{
	/* Empty once copy_metadata copied it; still full when that copy ran out of memory. */
	grpc_metadata_array_destroy(&c->md);
	if (!c->m)
		grpc_call_details_destroy(&c->details);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	if (c->req)
		protobuf_c_message_free_unpacked(c->req, &drv__protobuf_allocator);
	free(c->mds);
	free(c->peer);
	free(c);
}

static void call_unref(struct drv_rpc_call *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		call_free(c);
}

static void call_grpc_unref(struct drv_rpc_call *c)
{
	if (atomic_fetch_sub(&c->grpc_refs, 1) != 1)
		return;
	struct drv_rpc_server *srv = c->srv;
	pthread_mutex_lock(&srv->lock);
	if (c->live_prev)
		c->live_prev->live_next = c->live_next;
	else
		srv->live = c->live_next;
	if (c->live_next)
		c->live_next->live_prev = c->live_prev;
	grpc_call *g = c->gcall;
	c->gcall = NULL;
	/* A shutdown waits for the last live call before it lets the server be freed. */
	if (!srv->live && srv->shutdown_begun)
		pthread_cond_broadcast(&srv->cond);
	/* Past this unlock the server is not touched: it may be freed from here on. */
	pthread_mutex_unlock(&srv->lock);
	if (g)
		grpc_call_unref(g);
	call_unref(c);
}

/*
 * Copies the request metadata out of gRPC's array so that it stays valid for
 * the handler even after a shutdown released the gRPC call. One allocation
 * holds the table and every string: a request carries only a few headers.
 */
static int copy_metadata(struct drv_rpc_call *c)
{
	size_t n = c->md.count, bytes = n * sizeof(struct md_pair);
	for (size_t i = 0; i < n; i++)
		bytes +=
		    GRPC_SLICE_LENGTH(c->md.metadata[i].key) + GRPC_SLICE_LENGTH(c->md.metadata[i].value) + 2;
	if (n > 0) {
		c->mds = drv__malloc(bytes);
		if (!c->mds)
			return DRV_ENOMEM;
		char *p = (char *)(c->mds + n);
		for (size_t i = 0; i < n; i++) {
			const grpc_metadata *e = &c->md.metadata[i];
			size_t kl = GRPC_SLICE_LENGTH(e->key), vl = GRPC_SLICE_LENGTH(e->value);
			c->mds[i].key = p;
			memcpy(p, GRPC_SLICE_START_PTR(e->key), kl);
			p[kl] = '\0';
			p += kl + 1;
			c->mds[i].value = p;
			memcpy(p, GRPC_SLICE_START_PTR(e->value), vl);
			p[vl] = '\0';
			p += vl + 1;
		}
		c->n_mds = n;
	}
	grpc_metadata_array_destroy(&c->md);
	grpc_metadata_array_init(&c->md);
	return 0;
}

/* Starts RECV_CLOSE_ON_SERVER alone unless the reply already took it. */
static void claim_close(struct drv_rpc_call *c)
{
	if (atomic_exchange(&c->close_claimed, true))
		return;
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->close_cancelled;
	atomic_fetch_add(&c->grpc_refs, 1);
	if (grpc_call_start_batch(c->gcall, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
		call_grpc_unref(c);
}

/*
 * Sends status (and the packed response when bb is set). Runs on any thread.
 * The caller has already moved `state` away from CALL_PENDING, so this runs
 * once per call.
 */
/* Frees the answer's buffer and status text once the reply batch is over (or never started). */
static void reply_release(struct drv_rpc_call *c)
{
	if (c->resp_bb)
		grpc_byte_buffer_destroy(c->resp_bb);
	c->resp_bb = NULL;
	if (c->has_details)
		grpc_slice_unref(c->status_details);
	c->has_details = 0;
}

static void send_reply(struct drv_rpc_call *c, int grpc_code, const char *message, grpc_byte_buffer *bb)
{
	grpc_op ops[4];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (bb) {
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = bb;
	}
	if (!atomic_exchange(&c->close_claimed, true)) {
		ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
		ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
		c->reply_has_close = 1;
	}
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)grpc_code;
	if (message && *message) {
		/* The details slice must live until the batch completes. */
		c->status_details = grpc_slice_from_copied_string(message);
		c->has_details = 1;
		ops[n].data.send_status_from_server.status_details = &c->status_details;
	}
	n++;
	c->resp_bb = bb;
	atomic_fetch_add(&c->grpc_refs, 1);
	if (grpc_call_start_batch(c->gcall, ops, n, &c->t_reply, NULL) != GRPC_CALL_OK) {
		/* Only a programming error gets here; release what the batch would have. */
		reply_release(c);
		call_grpc_unref(c);
	}
	/* The reference that stood for "not yet answered". */
	call_grpc_unref(c);
}

static void reply_done(struct drv_rpc_call *c)
{
	reply_release(c);
	if (c->reply_has_close && c->close_cancelled)
		atomic_store(&c->cancelled, true);
	call_grpc_unref(c);
}

void drv_rpc_reply(struct drv_rpc_call *call, int code, const char *message, const ProtobufCMessage *resp)
{
	if (!call)
		return;
	int expected = CALL_PENDING;
	if (!atomic_compare_exchange_strong(&call->state, &expected, CALL_REPLIED)) {
		/* A shutdown already answered this call; only the handler's hold remains. */
		call_unref(call);
		return;
	}
	grpc_byte_buffer *bb = NULL;
	char buf[256];
	if (code == 0) {
		const ProtobufCMessageDescriptor *want = call->desc ? call->desc->output : NULL;
		if (!resp || (want && resp->descriptor != want)) {
			snprintf(buf, sizeof(buf), "handler of %s replied with %s instead of %s",
			         call->desc ? call->desc->name : "?",
			         resp ? resp->descriptor->name : "no message", want ? want->name : "?");
			code = DRV_EINTERNAL;
			message = buf;
		} else {
			bb = drv__rpc_pack(resp);
			if (!bb) {
				code = DRV_ENOMEM;
				message = "out of memory packing the response";
			}
		}
	}
	send_reply(call, code == 0 ? 0 : drv_error_to_grpc(code), message, bb);
	call_unref(call);
}

/*
 * Keeps the gRPC call alive while shutdown uses it outside the lock, unless
 * its last reference is already gone (it is being released right now).
 */
static bool grpc_ref_if_live(struct drv_rpc_call *c)
{
	int n = atomic_load(&c->grpc_refs);
	while (n > 0)
		if (atomic_compare_exchange_weak(&c->grpc_refs, &n, n + 1))
			return true;
	return false;
}

/* Answers a call nobody will answer in time (shutdown past its grace). */
static void force_close(struct drv_rpc_call *c)
{
	int expected = CALL_PENDING;
	if (!atomic_compare_exchange_strong(&c->state, &expected, CALL_FORCE_CLOSED))
		return;
	/* Set on the call itself so the handler can ask even after the server is freed. */
	atomic_store(&c->cancelled, true);
	send_reply(c, GRPC_STATUS_CANCELLED, "server shutting down", NULL);
}

/* ---- call accessors ---- */

int64_t drv_rpc_call_time_left_ms(const struct drv_rpc_call *call)
{
	if (call->deadline.tv_sec == INT64_MAX)
		return INT64_MAX;
	gpr_timespec d = gpr_convert_clock_type(call->deadline, GPR_CLOCK_MONOTONIC);
	gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
	return gpr_time_to_millis(left);
}

bool drv_rpc_call_cancelled(const struct drv_rpc_call *call)
{
	if (atomic_load(&((struct drv_rpc_call *)call)->cancelled) || atomic_load(&call->srv->stopping))
		return true;
	return drv_rpc_call_time_left_ms(call) <= 0;
}

const char *drv_rpc_call_method(const struct drv_rpc_call *call)
{
	return call->desc ? call->desc->name : NULL;
}

const ProtobufCMethodDescriptor *drv_rpc_call_method_desc(const struct drv_rpc_call *call)
{
	return call->desc;
}

const char *drv_rpc_call_metadata(const struct drv_rpc_call *call, const char *key)
{
	if (!key)
		return NULL;
	for (size_t i = 0; i < call->n_mds; i++)
		if (strcmp(call->mds[i].key, key) == 0)
			return call->mds[i].value;
	return NULL;
}

const char *drv_rpc_call_peer(const struct drv_rpc_call *call)
{
	struct drv_rpc_call *c = (struct drv_rpc_call *)call;
	struct drv_rpc_server *srv = c->srv;
	/* A call the shutdown answered may outlive its server: no server lock then. */
	if (atomic_load(&c->state) == CALL_FORCE_CLOSED)
		return c->peer ? c->peer : "";
	pthread_mutex_lock(&srv->lock);
	if (!c->peer && c->gcall) {
		char *p = grpc_call_get_peer(c->gcall);
		if (p) {
			c->peer = drv__strdup(p);
			gpr_free(p);
		}
	}
	pthread_mutex_unlock(&srv->lock);
	return c->peer ? c->peer : "";
}

void drv_rpc_call_set_data(struct drv_rpc_call *call, void *data)
{
	call->data = data;
}

void *drv_rpc_call_data(const struct drv_rpc_call *call)
{
	return call->data;
}

/* ---- dispatch ---- */

/* Unpacks the request and runs the handler; on the CQ thread (inline) or a worker. */
static void run_handler(struct drv_rpc_call *c)
{
	const ProtobufCMessageDescriptor *in = c->desc->input;
	unsigned long failed = drv__alloc_failures();
	c->req = drv__rpc_unpack(in, c->payload, drv__unpack_plain);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	bool had_payload = c->payload != NULL;
	c->payload = NULL;
	if (!c->req && drv__alloc_failures() != failed) {
		drv_rpc_reply(c, DRV_ENOMEM, "out of memory unpacking the request", NULL);
		return;
	}
	if (!c->req) {
		char buf[256];
		if (had_payload)
			snprintf(buf, sizeof(buf), "%s: request is not a valid %s message", c->desc->name,
			         in->name);
		else
			snprintf(buf, sizeof(buf), "%s: request message missing, expected %s", c->desc->name,
			         in->name);
		drv_rpc_reply(c, DRV_EINVAL, buf, NULL);
		return;
	}
	c->m->fn(c->m->ud, c, c->req);
}

static void *worker_main(void *arg);

/*
 * Workers start on demand, when a call finds none idle: a spawned driver
 * then creates no thread of ours before its handshake, and an idle one keeps
 * only the workers its load ever needed. Lock held.
 */
static void worker_add_locked(struct drv_rpc_server *srv)
{
	if (srv->n_queued <= srv->n_idle || srv->workers_stop || !srv->worker_threads ||
	    srv->n_workers_started >= srv->workers)
		return;
	if (pthread_create(&srv->worker_threads[srv->n_workers_started], NULL, worker_main, srv) == 0)
		srv->n_workers_started++;
}

static void enqueue_worker(struct drv_rpc_call *c)
{
	struct drv_rpc_server *srv = c->srv;
	pthread_mutex_lock(&srv->lock);
	srv->n_queued++;
	worker_add_locked(srv);
	if (srv->n_workers_started == 0 && !srv->workers_stop) {
		/* Not even one worker could start: run the handler here rather than never. */
		srv->n_queued--;
		pthread_mutex_unlock(&srv->lock);
		run_handler(c);
		return;
	}
	c->q_next = NULL;
	if (srv->q_tail)
		srv->q_tail->q_next = c;
	else
		srv->q_head = c;
	srv->q_tail = c;
	pthread_cond_signal(&srv->work_cond);
	pthread_mutex_unlock(&srv->lock);
}

static void *worker_main(void *arg)
{
	struct drv_rpc_server *srv = arg;
	pthread_mutex_lock(&srv->lock);
	for (;;) {
		while (!srv->q_head && !srv->workers_stop) {
			srv->n_idle++;
			pthread_cond_wait(&srv->work_cond, &srv->lock);
			srv->n_idle--;
		}
		struct drv_rpc_call *c = srv->q_head;
		if (!c)
			break;
		srv->n_queued--;
		srv->q_head = c->q_next;
		if (!srv->q_head)
			srv->q_tail = NULL;
		pthread_mutex_unlock(&srv->lock);
		run_handler(c);
		pthread_mutex_lock(&srv->lock);
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void call_arrived(struct drv_rpc_call *c)
{
	struct drv_rpc_server *srv = c->srv;
	/* Reference held until the reply is sent, plus one for the gRPC side in `refs`. */
	atomic_init(&c->grpc_refs, 1);
	atomic_init(&c->refs, 2);
	atomic_init(&c->state, CALL_PENDING);
	pthread_mutex_lock(&srv->lock);
	c->live_prev = NULL;
	c->live_next = srv->live;
	if (srv->live)
		srv->live->live_prev = c;
	srv->live = c;
	pthread_mutex_unlock(&srv->lock);

	if (copy_metadata(c) != 0) {
		drv_rpc_reply(c, DRV_ENOMEM, "out of memory reading request metadata", NULL);
		return;
	}
	if (!c->m) {
		char buf[300];
		size_t ml = GRPC_SLICE_LENGTH(c->details.method);
		snprintf(buf, sizeof(buf), "unknown method %.*s", (int)(ml > 200 ? 200 : ml),
		         (const char *)GRPC_SLICE_START_PTR(c->details.method));
		drv_rpc_reply(c, DRV_EUNIMPLEMENTED, buf, NULL);
		return;
	}
	if (c->m->flags & DRV_RPC_INLINE) {
		run_handler(c);
		/* A handler that kept the call for later still wants to learn about cancellation. */
		if (atomic_load(&c->state) == CALL_PENDING)
			claim_close(c);
		return;
	}
	claim_close(c);
	enqueue_worker(c);
}

/*
 * After an event, the CQ thread polls without sleeping for this long before
 * it blocks: a caller's next call often follows its answer within tens of
 * microseconds, and waking a sleeping thread took 10-20 us on this project's
 * VMs (drover-bench row 1: GetFeatures p50 from 1.05x the bare echo to
 * 0.6x). An idle server spins this long once, after its last call.
 */
#define SPIN_US 50

static void *cq_main(void *arg)
{
	struct drv_rpc_server *srv = arg;
	gpr_timespec spin_until = gpr_inf_past(GPR_CLOCK_MONOTONIC);
	for (;;) {
		grpc_event ev;
		if (gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), spin_until) < 0)
			ev = grpc_completion_queue_next(srv->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
		else
			ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		spin_until =
		    gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros(SPIN_US, GPR_TIMESPAN));
		struct tag *t = ev.tag;
		struct drv_rpc_call *c;
		struct method *m;
		switch (t->kind) {
		case TAG_NEW_CALL:
			c = CONTAINER(t, struct drv_rpc_call, t_new);
			if (!ev.success) {
				call_free_unarrived(c);
				break;
			}
			/*
			 * The request that replaces this one is posted after the call is
			 * dispatched (an inline handler has replied by then), so that it
			 * is not on the call's round trip; the others stay posted
			 * meanwhile. `c` may be gone after dispatch: m outlives it.
			 */
			m = c->m;
			call_arrived(c);
			post_registered(m);
			break;
		case TAG_NEW_GENERIC:
			c = CONTAINER(t, struct drv_rpc_call, t_new);
			if (!ev.success) {
				call_free_unarrived(c);
				break;
			}
			call_arrived(c);
			post_generic(srv);
			break;
		case TAG_REPLY:
			reply_done(CONTAINER(t, struct drv_rpc_call, t_reply));
			break;
		case TAG_CLOSE:
			c = CONTAINER(t, struct drv_rpc_call, t_close);
			if (c->close_cancelled)
				atomic_store(&c->cancelled, true);
			call_grpc_unref(c);
			break;
		case TAG_SHUTDOWN:
			pthread_mutex_lock(&srv->lock);
			srv->shutdown_done = true;
			pthread_cond_broadcast(&srv->cond);
			pthread_mutex_unlock(&srv->lock);
			break;
		}
		/* Once the shutdown tag came, the server may be destroyed at any moment: post nothing. */
		if (srv->n_unposted > 0 && !srv->shutdown_done)
			post_missing(srv);
	}
	return NULL;
}

/*
 * A request that cannot be posted again (no memory for its call) is counted
 * and posted on a later event of the CQ thread: each lost post would
 * otherwise be lost for good, and a method that lost all of them would leave
 * its calls waiting until their deadline.
 */
static void post_registered(struct method *m)
{
	struct drv_rpc_call *c = call_alloc(m->srv, m);
	if (!c) {
		m->unposted++;
		m->srv->n_unposted++;
		return;
	}
	if (grpc_server_request_registered_call(m->srv->server, m->handle, &c->gcall, &c->deadline, &c->md,
	                                        &c->payload, m->srv->cq, m->srv->cq,
	                                        &c->t_new) != GRPC_CALL_OK)
		call_free_unarrived(c);
}

static void post_generic(struct drv_rpc_server *srv)
{
	struct drv_rpc_call *c = call_alloc(srv, NULL);
	if (!c) {
		srv->generic_unposted++;
		srv->n_unposted++;
		return;
	}
	if (grpc_server_request_call(srv->server, &c->gcall, &c->details, &c->md, srv->cq, srv->cq,
	                             &c->t_new) != GRPC_CALL_OK)
		call_free_unarrived(c);
}

/* Posts again what post_registered and post_generic could not; stops at the first failure. */
static void post_missing(struct drv_rpc_server *srv)
{
	for (size_t i = 0; i < srv->n_methods && srv->n_unposted > 0; i++) {
		struct method *m = srv->methods[i];
		while (m->unposted > 0) {
			int before = srv->n_unposted;
			m->unposted--;
			srv->n_unposted--;
			post_registered(m);
			if (srv->n_unposted >= before)
				return;
		}
	}
	while (srv->generic_unposted > 0) {
		int before = srv->n_unposted;
		srv->generic_unposted--;
		srv->n_unposted--;
		post_generic(srv);
		if (srv->n_unposted >= before)
			return;
	}
}

/* ---- lifecycle ---- */

static int make_creds(struct drv_rpc_server *srv, const struct drv_rpc_server_opts *o, char *err,
                      size_t errlen)
{
	if (!o->tls_cert_file && !o->tls_key_file) {
		if (o->client_ca_file) {
			drv__seterr(err, errlen,
			            "client_ca_file '%s' given without tls_cert_file and tls_key_file",
			            o->client_ca_file);
			return DRV_EINVAL;
		}
		srv->creds = grpc_insecure_server_credentials_create();
		return 0;
	}
	if (!o->tls_cert_file || !o->tls_key_file) {
		drv__seterr(err, errlen, "TLS needs both tls_cert_file and tls_key_file (%s missing)",
		            o->tls_cert_file ? "tls_key_file" : "tls_cert_file");
		return DRV_EINVAL;
	}
	char *cert = NULL, *key = NULL, *ca = NULL;
	int rc = drv__rpc_read_file("tls_cert_file", o->tls_cert_file, &cert, err, errlen);
	if (rc == 0)
		rc = drv__rpc_read_file("tls_key_file", o->tls_key_file, &key, err, errlen);
	if (rc == 0 && o->client_ca_file)
		rc = drv__rpc_read_file("client_ca_file", o->client_ca_file, &ca, err, errlen);
	if (rc == 0)
		rc = drv__rpc_check_pem("tls_cert_file", o->tls_cert_file, cert, "CERTIFICATE", err, errlen);
	if (rc == 0)
		rc = drv__rpc_check_pem("tls_key_file", o->tls_key_file, key, "PRIVATE KEY", err, errlen);
	if (rc == 0 && ca)
		rc = drv__rpc_check_pem("client_ca_file", o->client_ca_file, ca, "CERTIFICATE", err, errlen);
	if (rc == 0) {
		grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
		srv->creds = grpc_ssl_server_credentials_create_ex(
		    ca, &pair, 1,
		    ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
		       : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
		    NULL);
		srv->tls = true;
		if (!srv->creds) {
			drv__seterr(err, errlen, "cannot use TLS certificate '%s' with key '%s'",
			            o->tls_cert_file, o->tls_key_file);
			rc = DRV_EINVAL;
		}
	}
	/* gRPC copied the PEM text; the key is wiped before it goes back to the heap. */
	if (key)
		explicit_bzero(key, strlen(key));
	free(cert);
	free(key);
	free(ca);
	return rc;
}

int drv_rpc_server_new(const struct drv_rpc_server_opts *opts, struct drv_rpc_server **out, char *err,
                       size_t errlen)
{
	if (!opts || !opts->address || !*opts->address) {
		drv__seterr(err, errlen, "server address missing");
		return DRV_EINVAL;
	}
	if (strncmp(opts->address, "unix:", 5) == 0) {
		const char *path = opts->address + 5;
		if (path[0] != '/') {
			drv__seterr(err, errlen, "unix socket address '%s' must be an absolute path",
			            opts->address);
			return DRV_EINVAL;
		}
		if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			drv__seterr(err, errlen, "unix socket path '%s' is longer than %zu bytes", path,
			            sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return DRV_EINVAL;
		}
	}
	if (opts->workers < 0 || opts->workers > 1024) {
		drv__seterr(err, errlen, "workers %d out of range 0..1024", opts->workers);
		return DRV_EINVAL;
	}
	struct drv_rpc_server *srv = drv__calloc(1, sizeof(*srv));
	if (!srv) {
		drv__seterr(err, errlen, "out of memory");
		return DRV_ENOMEM;
	}
	srv->address = drv__strdup(opts->address);
	if (!srv->address) {
		free(srv);
		drv__seterr(err, errlen, "out of memory");
		return DRV_ENOMEM;
	}
	srv->workers = opts->workers ? opts->workers : 4;
	srv->max_message = drv__rpc_max_message(opts->max_message_bytes);
	srv->t_shutdown.kind = TAG_SHUTDOWN;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	pthread_cond_init(&srv->work_cond, NULL);
	atomic_init(&srv->stopping, false);

	drv__rpc_grpc_init();
	int rc = make_creds(srv, opts, err, errlen);
	if (rc != 0) {
		grpc_shutdown();
		pthread_mutex_destroy(&srv->lock);
		pthread_cond_destroy(&srv->cond);
		pthread_cond_destroy(&srv->work_cond);
		free(srv->address);
		free(srv);
		return rc;
	}
	grpc_arg args[3];
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = srv->max_message;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[1].value.integer = srv->max_message;
	/*
	 * gRPC binds TCP ports with SO_REUSEPORT: a second server on a port in
	 * use also "listened", and the kernel split the connections between the
	 * two. An address in use is an error instead.
	 */
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
	args[2].value.integer = 0;
	grpc_channel_args cargs = {.num_args = 3, .args = args};
	srv->server = grpc_server_create(&cargs, NULL);
	srv->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
	*out = srv;
	return 0;
}

int drv_rpc_server_add(struct drv_rpc_server *srv, const ProtobufCServiceDescriptor *service,
                       unsigned method_index, drv_rpc_handler fn, void *ud, unsigned flags)
{
	if (!srv || !service || !fn || method_index >= service->n_methods)
		return DRV_EINVAL;
	if (srv->started)
		return DRV_EPRECONDITION;
	const ProtobufCMethodDescriptor *d = &service->methods[method_index];
	for (size_t i = 0; i < srv->n_methods; i++)
		if (srv->methods[i]->desc == d)
			return DRV_EEXIST;
	struct method *m = drv__calloc(1, sizeof(*m));
	struct method **nm = drv__realloc(srv->methods, (srv->n_methods + 1) * sizeof(*nm));
	size_t plen = strlen(service->name) + strlen(d->name) + 3;
	char *path = drv__malloc(plen);
	if (!m || !nm || !path) {
		free(m);
		free(path);
		if (nm)
			srv->methods = nm;
		return DRV_ENOMEM;
	}
	srv->methods = nm;
	snprintf(path, plen, "/%s/%s", service->name, d->name);
	*m = (struct method){.srv = srv, .service = service, .desc = d, .fn = fn, .ud = ud, .flags = flags};
	/* gRPC keeps its own copy of the path. */
	m->handle = grpc_server_register_method(srv->server, path, NULL,
	                                        GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	free(path);
	if (!m->handle) {
		free(m);
		return DRV_EEXIST;
	}
	srv->methods[srv->n_methods++] = m;
	return 0;
}

/* A unix socket path taken by something that is not a socket makes gRPC's bind fail; say why. */
static void explain_bind_failure(const struct drv_rpc_server *srv, char *err, size_t errlen)
{
	struct stat st;
	if (strncmp(srv->address, "unix:", 5) == 0) {
		const char *path = srv->address + 5;
		if (stat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			drv__seterr(err, errlen, "cannot listen on '%s': the path exists and is not a socket",
			            srv->address);
			return;
		}
		drv__seterr(err, errlen,
		            "cannot listen on '%s' (does its directory exist and is it writable?)",
		            srv->address);
		return;
	}
	if (srv->tls)
		drv__seterr(err, errlen,
		            "cannot listen on '%s' (address in use or not local, or the TLS certificate and "
		            "key do not match)",
		            srv->address);
	else
		drv__seterr(err, errlen, "cannot listen on '%s' (address in use or not local?)",
		            srv->address);
}

/* Starts serving; with `bind`, on a listener of gRPC's own at srv->address. */
static int server_start(struct drv_rpc_server *srv, bool bind, int *bound_port, char *err, size_t errlen)
{
	int port = 0;

	if (!srv || srv->started) {
		drv__seterr(err, errlen, "server already started");
		return DRV_EPRECONDITION;
	}
	if (bind) {
		port = grpc_server_add_http2_port(srv->server, srv->address, srv->creds);
		if (port <= 0) {
			explain_bind_failure(srv, err, errlen);
			return DRV_EUNAVAILABLE;
		}
	} else if (srv->tls) {
		/* gRPC takes only plain-text connections by descriptor. */
		drv__seterr(err, errlen, "a server fed connections by descriptor cannot use TLS");
		return DRV_EINVAL;
	}
	grpc_server_start(srv->server);
	srv->started = true;
	for (size_t i = 0; i < srv->n_methods; i++)
		for (int k = 0; k < POSTED_PER_METHOD; k++)
			post_registered(srv->methods[i]);
	post_generic(srv);
	if (srv->n_unposted > 0) {
		/* Nothing would post them again before a call arrived. */
		drv__seterr(err, errlen, "out of memory");
		drv_rpc_server_shutdown(srv, 0);
		return DRV_ENOMEM;
	}

	/* Before the CQ thread runs: it starts workers into this array (see worker_add_locked). */
	srv->worker_threads = drv__calloc((size_t)srv->workers, sizeof(pthread_t));
	if (!srv->worker_threads) {
		drv__seterr(err, errlen, "out of memory");
		drv_rpc_server_shutdown(srv, 0);
		return DRV_ENOMEM;
	}
	/* Threads start here, after the caller had its chance to block signals. */
	if (pthread_create(&srv->cq_thread, NULL, cq_main, srv) != 0) {
		drv__seterr(err, errlen, "cannot create the completion-queue thread");
		drv_rpc_server_shutdown(srv, 0);
		return DRV_ESYSTEM;
	}
	srv->cq_thread_started = true;
	if (bound_port)
		*bound_port = strncmp(srv->address, "unix:", 5) == 0 ? 0 : port;
	return 0;
}

int drv_rpc_server_start(struct drv_rpc_server *srv, int *bound_port, char *err, size_t errlen)
{
	return server_start(srv, true, bound_port, err, errlen);
}

int drv__rpc_server_start_unbound(struct drv_rpc_server *srv, char *err, size_t errlen)
{
	return server_start(srv, false, NULL, err, errlen);
}

void drv__rpc_server_adopt_fd(struct drv_rpc_server *srv, int fd)
{
	/* gRPC owns the descriptor from here, and closes it with the connection. */
	grpc_server_add_channel_from_fd(srv->server, fd, srv->creds);
}

void drv__realtime_after_ms(int ms, struct timespec *until)
{
	clock_gettime(CLOCK_REALTIME, until);
	until->tv_sec += ms / 1000;
	until->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until->tv_nsec >= 1000000000L) {
		until->tv_sec++;
		until->tv_nsec -= 1000000000L;
	}
}

/* Waits on srv->cond until the shutdown tag arrived or `ms` passed (ms < 0: no limit). Lock held. */
static void wait_shutdown_tag(struct drv_rpc_server *srv, int ms)
{
	struct timespec until;
	drv__realtime_after_ms(ms, &until);
	while (!srv->shutdown_done) {
		if (ms < 0)
			pthread_cond_wait(&srv->cond, &srv->lock);
		else if (pthread_cond_timedwait(&srv->cond, &srv->lock, &until) != 0)
			break;
	}
}

void drv_rpc_server_shutdown(struct drv_rpc_server *srv, int grace_ms)
{
	if (!srv)
		return;
	pthread_mutex_lock(&srv->lock);
	if (srv->shutdown_begun) {
		/* Another thread is shutting down; wait for it to finish. */
		while (!srv->threads_joined)
			pthread_cond_wait(&srv->cond, &srv->lock);
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	srv->shutdown_begun = true;
	pthread_mutex_unlock(&srv->lock);

	if (srv->cq_thread_started) {
		grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
		pthread_mutex_lock(&srv->lock);
		wait_shutdown_tag(srv, grace_ms < 0 ? 0 : grace_ms);
		bool done = srv->shutdown_done;
		pthread_mutex_unlock(&srv->lock);
		if (!done) {
			atomic_store(&srv->stopping, true);
			grpc_server_cancel_all_calls(srv->server);
		}
		/*
		 * Answer whatever handlers still hold: calls still running after the
		 * grace, and calls whose client gave up (gRPC counts those as done).
		 * Collect under the lock, send outside it: the send may release the
		 * call, which takes the lock.
		 */
		pthread_mutex_lock(&srv->lock);
		size_t n = 0;
		for (struct drv_rpc_call *c = srv->live; c; c = c->live_next)
			n++;
		struct drv_rpc_call **v = n ? drv__calloc(n, sizeof(*v)) : NULL;
		size_t k = 0;
		for (struct drv_rpc_call *c = srv->live; v && c; c = c->live_next)
			if (atomic_load(&c->state) == CALL_PENDING && grpc_ref_if_live(c))
				v[k++] = c;
		pthread_mutex_unlock(&srv->lock);
		for (size_t i = 0; i < k; i++) {
			force_close(v[i]);
			call_grpc_unref(v[i]);
		}
		free(v);
		pthread_mutex_lock(&srv->lock);
		wait_shutdown_tag(srv, -1);
		pthread_mutex_unlock(&srv->lock);
	} else if (srv->started) {
		/* Started but the CQ thread never ran: drive shutdown from here. */
		grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
		grpc_server_cancel_all_calls(srv->server);
		for (;;) {
			grpc_event ev =
			    grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
			if (ev.type != GRPC_OP_COMPLETE)
				break;
			struct tag *t = ev.tag;
			if (t->kind == TAG_SHUTDOWN)
				break;
			if (t->kind == TAG_NEW_CALL || t->kind == TAG_NEW_GENERIC)
				call_free_unarrived(CONTAINER(t, struct drv_rpc_call, t_new));
		}
	}
	atomic_store(&srv->stopping, true);

	/* Workers drop calls still queued: they were all answered above. */
	pthread_mutex_lock(&srv->lock);
	srv->workers_stop = true;
	pthread_cond_broadcast(&srv->work_cond);
	int n_workers = srv->n_workers_started; /* no more start once workers_stop is set */
	pthread_mutex_unlock(&srv->lock);
	for (int i = 0; i < n_workers; i++)
		pthread_join(srv->worker_threads[i], NULL);
	/* Queued calls left behind hold a handler reference nobody will drop. */
	pthread_mutex_lock(&srv->lock);
	struct drv_rpc_call *q = srv->q_head;
	srv->q_head = srv->q_tail = NULL;
	pthread_mutex_unlock(&srv->lock);
	while (q) {
		struct drv_rpc_call *next = q->q_next;
		drv_rpc_reply(q, DRV_ECANCELLED, "server shutting down", NULL);
		q = next;
	}

	grpc_server_destroy(srv->server);
	srv->server = NULL;
	grpc_completion_queue_shutdown(srv->cq);
	if (srv->cq_thread_started) {
		pthread_join(srv->cq_thread, NULL);
	} else {
		while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		       GRPC_QUEUE_SHUTDOWN)
			;
	}
	grpc_completion_queue_destroy(srv->cq);
	srv->cq = NULL;

	/*
	 * Every call is answered by now, but a thread that answered one may still
	 * be on its way out of drv_rpc_reply, about to drop its last reference
	 * (which takes the server's lock). Wait for it, so that the server is not
	 * freed under it; bounded, should a reference ever be left behind.
	 */
	pthread_mutex_lock(&srv->lock);
	struct timespec until;
	drv__realtime_after_ms(10000, &until);
	while (srv->live && pthread_cond_timedwait(&srv->cond, &srv->lock, &until) == 0)
		;
	pthread_mutex_unlock(&srv->lock);

	pthread_mutex_lock(&srv->lock);
	srv->threads_joined = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

void drv_rpc_server_free(struct drv_rpc_server *srv)
{
	if (!srv)
		return;
	drv_rpc_server_shutdown(srv, 0);
	for (size_t i = 0; i < srv->n_methods; i++)
		free(srv->methods[i]);
	free(srv->methods);
	free(srv->worker_threads);
	if (srv->creds)
		grpc_server_credentials_release(srv->creds);
	free(srv->address);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	pthread_cond_destroy(&srv->work_cond);
	free(srv);
	grpc_shutdown();
}

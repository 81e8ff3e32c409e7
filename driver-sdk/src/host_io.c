/*
 * The hosting half's one I/O thread: a private libuv loop that owns every
 * spawned driver's exit watch (a pidfd poll, or libuv's process handle on old
 * kernels) and its stdin/stdout/stderr pipes.
 *
 * Other threads never touch a uv handle; they queue a function with
 * drv__host_io_submit() and wait on the host's condition variable. Results
 * flow back as fields of struct drv_host under its mutex. The one exception
 * is the start of a spawn on the posix_spawn path: the caller starts the
 * child and reads its handshake line itself (no thread hand-off on the
 * critical path), then hands the descriptors over.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "alloc.h"
#include "host_internal.h"
#include "rpc_grpc.h"

struct io_cmd {
	void (*fn)(struct drv_host *h, int arg);
	struct drv_host *h;
	int arg;
	struct io_cmd *next;
};

static struct {
	pthread_once_t once;
	int start_err;
	uv_loop_t loop;
	uv_async_t wake;
	pthread_t thread;
	pthread_mutex_t mu;
	struct io_cmd *head, *tail;
} io = {.once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

uint64_t drv__host_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_wake(uv_async_t *a)
{
	struct io_cmd *c;

	pthread_mutex_lock(&io.mu);
	c = io.head;
	io.head = io.tail = NULL;
	pthread_mutex_unlock(&io.mu);
	while (c) {
		struct io_cmd *next = c->next;
		c->fn(c->h, c->arg);
		free(c);
		c = next;
	}
}

static void *io_main(void *arg)
{
	sigset_t set;

	/*
	 * The uv_spawn fallback learns of child exits through SIGCHLD; make sure
	 * this thread can take it even when the embedding program blocked it.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	uv_run(&io.loop, UV_RUN_DEFAULT);
	return NULL;
}

static void io_init(void)
{
	sigset_t all, old;
	int rc;

	rc = uv_loop_init(&io.loop);
	if (rc == 0)
		rc = uv_async_init(&io.loop, &io.wake, on_wake);
	if (rc != 0) {
		io.start_err = DRV_ESYSTEM;
		return;
	}
	/* The threads started here must not steal SIGTERM/SIGINT meant for the program's own handler. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	/*
	 * One gRPC reference for the life of the process: every channel takes and
	 * drops its own, and without this a program that spawns, calls and frees
	 * drivers one at a time (a benchmark, a CLI) would pay gRPC's full
	 * start-up on every spawn.
	 */
	drv__rpc_log_install();
	grpc_init();
	rc = pthread_create(&io.thread, NULL, io_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		io.start_err = DRV_ESYSTEM;
		return;
	}
	pthread_setname_np(io.thread, "drv-host-io");
	pthread_detach(io.thread);
}

int drv__host_io_start(void)
{
	pthread_once(&io.once, io_init);
	return io.start_err;
}

int drv__host_io_submit(void (*fn)(struct drv_host *h, int arg), struct drv_host *h, int arg)
{
	struct io_cmd *c = drv__calloc(1, sizeof(*c));

	if (!c)
		return DRV_ENOMEM;
	c->fn = fn;
	c->h = h;
	c->arg = arg;
	pthread_mutex_lock(&io.mu);
	if (io.tail)
		io.tail->next = c;
	else
		io.head = c;
	io.tail = c;
	pthread_mutex_unlock(&io.mu);
	uv_async_send(&io.wake);
	return 0;
}

/* ---- handle callbacks (I/O thread) ---- */

static void on_closed(uv_handle_t *handle)
{
	struct drv_host *h = handle->data;

	pthread_mutex_lock(&h->mu);
	h->open_handles--;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static void close_handle(struct drv_host *h, uv_handle_t *handle)
{
	if (!uv_is_closing(handle))
		uv_close(handle, on_closed);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	/*
	 * As large as a driver's stderr pipe (see drv__host_spawn_posix): a flood
	 * is read in few calls. Only the one I/O thread reads, and each chunk is
	 * consumed by its read callback before the next read, so one buffer will
	 * do. A thread-local one made every thread of the process carry 1 MiB of
	 * TLS: glibc zeroes each thread's static TLS when the thread starts (idle
	 * droverd, 27 threads, was 42 MB), and refuses it for threads with smaller
	 * stacks (the serving half's 512 KiB pool threads, in a process that also
	 * hosts drivers).
	 */
	static char chunk[1 << 20];

	buf->base = chunk;
	buf->len = sizeof(chunk);
}

static void remember_stderr_locked(struct drv_host *h, const char *line)
{
	char *slot = h->tail[h->tail_count % DRV_HOST_TAIL_LINES];

	snprintf(slot, sizeof(h->tail[0]), "%s", line);
	h->tail_count++;
}

size_t drv_host_clean_text(char *out, size_t outlen, const char *in, size_t len)
{
	const unsigned char *p = (const unsigned char *)in, *end = p + len;
	size_t o = 0;

	if (outlen == 0)
		return 0;
	while (p < end) {
		unsigned char seq[4] = {0};
		char esc[8];
		const char *src = (const char *)p;
		size_t left = (size_t)(end - p), n = 1, w = 1;

		/* A copy, so that a sequence cut by the end of the text is never read past it. */
		memcpy(seq, p, left < 4 ? left : 4);
		if (*p >= 0x80)
			n = w = drv_utf8_len((const char *)seq);
		if (n == 0 || (*p < 0x20 && *p != '\t') || *p == 0x7f) {
			n = 1;
			src = esc;
			w = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", *p);
		} else if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0) {
			/* U+0080..U+009F, the C1 controls (U+009B is CSI on some terminals). */
			src = esc;
			w = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", p[1]);
		}
		if (o + w >= outlen)
			break;
		memcpy(out + o, src, w);
		o += w;
		p += n;
	}
	out[o] = '\0';
	return o;
}

int drv__host_stderr_init(struct drv_host *h, const struct drv_spawn_opts *o)
{
	size_t max = o->stderr_line_max ? o->stderr_line_max : DRV_HOST_LINE_MAX;

	if (max < DRV_HOST_LINE_MAX_MIN)
		max = DRV_HOST_LINE_MAX_MIN;
	if (max > DRV_HOST_LINE_MAX_MAX)
		max = DRV_HOST_LINE_MAX_MAX;
	h->errmax = max;
	/* An escaped byte takes at most 4; room for the cut marker besides. */
	h->cleanlen = 4 * max + 128;
	h->errbuf = drv__malloc(max + 1);
	h->cleanbuf = drv__malloc(h->cleanlen);
	if (!h->errbuf || !h->cleanbuf)
		return DRV_ENOMEM;
	drv__line_limit_init(&h->limit, o->stderr_lines_per_s ? o->stderr_lines_per_s : DRV_HOST_LINES_PER_S,
	                     o->stderr_bytes_per_s ? o->stderr_bytes_per_s : DRV_HOST_BYTES_PER_S,
	                     drv__host_now_ns());
	return 0;
}

static void deliver_line(struct drv_host *h, const char *line)
{
	pthread_mutex_lock(&h->mu);
	remember_stderr_locked(h, line);
	pthread_mutex_unlock(&h->mu);
	if (h->on_stderr)
		h->on_stderr(h->ud, h->name, line);
	else
		fprintf(stderr, "[%s] %s\n", h->name, line);
}

/* Says how many lines the rate limit dropped, as a JSON line at warn level as the SDK logs. */
static void report_drops(struct drv_host *h, bool force, uint64_t now)
{
	uint64_t lines, bytes;
	char msg[300];

	if (!drv__line_limit_report(&h->limit, now, force, &lines, &bytes))
		return;
	snprintf(msg, sizeof(msg),
	         "{\"level\":\"warn\",\"msg\":\"%llu lines dropped (%llu bytes): the driver wrote more "
	         "than %.0f lines or %.0f bytes a second to stderr\",\"dropped_lines\":%llu}",
	         (unsigned long long)lines, (unsigned long long)bytes, h->limit.lines_per_s,
	         h->limit.bytes_per_s, (unsigned long long)lines);
	deliver_line(h, msg);
}

/* One line of the driver's stderr (errbuf[0..len), cut at errmax when `cut`): rate-limited, cleaned, passed
 * on. */
static void emit_stderr_line(struct drv_host *h, size_t len, bool cut, uint64_t now)
{
	if (!cut && len > 0 && h->errbuf[len - 1] == '\r')
		len--;
	if (!drv__line_limit_take(&h->limit, len, now)) {
		report_drops(h, false, now);
		return;
	}
	report_drops(h, true, now);
	h->errbuf[len] = '\0';
	size_t n = drv_host_clean_text(h->cleanbuf, h->cleanlen - 96, h->errbuf, len);
	if (cut)
		snprintf(h->cleanbuf + n, h->cleanlen - n, " [cut: the line is longer than %zu bytes]",
		         h->errmax);
	deliver_line(h, h->cleanbuf);
}

/*
 * How fast a driver's stderr is read at most: 64 MiB/s, in 100 ms windows.
 * That is 64 times the default log budget, so only a driver flooding its
 * stderr ever waits on a write; without a cap, one driver writing 2.4 GB/s
 * kept droverd's I/O thread 64% busy just reading and dropping it.
 */
#define READ_WINDOW_NS 100000000u
#define READ_CAP_PER_WINDOW (64u << 20) / 10

static void on_stderr_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void resume_stderr(uv_timer_t *t)
{
	struct drv_host *h = t->data;

	if (uv_is_closing((uv_handle_t *)&h->err))
		return;
	h->err_window_ns = drv__host_now_ns();
	h->err_window_bytes = 0;
	uv_read_start((uv_stream_t *)&h->err, on_alloc, on_stderr_read);
}

/* Counts a read against the cap; past it, reading pauses until the window ends. */
static void read_cap(struct drv_host *h, size_t n, uint64_t now)
{
	if (now - h->err_window_ns >= READ_WINDOW_NS) {
		h->err_window_ns = now;
		h->err_window_bytes = 0;
	}
	h->err_window_bytes += n;
	if (h->err_window_bytes < READ_CAP_PER_WINDOW)
		return;
	uint64_t left = READ_WINDOW_NS - (now - h->err_window_ns);
	uv_read_stop((uv_stream_t *)&h->err);
	uv_timer_start(&h->errpause, resume_stderr, left / 1000000u + 1, 0);
}

/*
 * Splits what arrives into lines. Everything is read, whatever the driver
 * writes (up to the read cap above): it never blocks on a full pipe. A line longer than errmax is passed
 * on cut, and the rest of it is skipped up to its newline.
 */
static void on_stderr_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct drv_host *h = s->data;
	const char *p = buf->base, *end = buf->base + (nread > 0 ? nread : 0);
	uint64_t now = drv__host_now_ns();

	if (nread < 0) {
		if (h->errlen > 0 && !h->errskip)
			emit_stderr_line(h, h->errlen, false, now);
		h->errlen = 0;
		report_drops(h, true, now);
		close_handle(h, (uv_handle_t *)s);
		pthread_mutex_lock(&h->mu);
		h->stderr_eof = true;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
		return;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl ? nl : end;

		if (h->errskip) {
			h->errskip = nl == NULL;
		} else {
			size_t seg = (size_t)(stop - p), room = h->errmax - h->errlen;
			size_t take = seg < room ? seg : room;

			memcpy(h->errbuf + h->errlen, p, take);
			h->errlen += take;
			if (seg > room) {
				emit_stderr_line(h, h->errlen, true, now);
				h->errlen = 0;
				h->errskip = nl == NULL;
			} else if (nl) {
				emit_stderr_line(h, h->errlen, false, now);
				h->errlen = 0;
			}
		}
		p = nl ? nl + 1 : end;
	}
	read_cap(h, (size_t)nread, now);
}

static void on_stdout_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct drv_host *h = s->data;

	if (nread < 0) {
		close_handle(h, (uv_handle_t *)s);
		pthread_mutex_lock(&h->mu);
		h->stdout_eof = true;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
		return;
	}
	pthread_mutex_lock(&h->mu);
	if (h->line_ready) {
		/* The protocol allows one line only; later output is dropped, but still read so the driver
		 * never blocks. */
		pthread_mutex_unlock(&h->mu);
		return;
	}
	for (ssize_t i = 0; i < nread && !h->line_ready; i++) {
		char c = buf->base[i];

		if (c == '\n') {
			h->outbuf[h->outlen] = '\0';
			if (h->outlen > 0 && h->outbuf[h->outlen - 1] == '\r')
				h->outbuf[h->outlen - 1] = '\0';
			h->line_ready = true;
		} else if (h->outlen == sizeof(h->outbuf) - 1) {
			h->outbuf[h->outlen] = '\0';
			h->line_ready = true;
			h->line_too_long = true;
		} else {
			if (c == '\0')
				h->line_nul = true;
			h->outbuf[h->outlen++] = c;
		}
	}
	if (h->line_ready) {
		memcpy(h->handshake, h->outbuf, sizeof(h->handshake));
		h->t_line_ns = drv__host_now_ns();
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
}

static void record_exit(struct drv_host *h, int64_t exit_status, int term_signal)
{
	bool quiet;

	pthread_mutex_lock(&h->mu);
	h->exited = true;
	h->exit_status = exit_status;
	h->term_signal = term_signal;
	h->t_exit_ns = drv__host_now_ns();
	quiet = h->quiet;
	h->exit_held = quiet;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	if (h->on_exit && !quiet)
		h->on_exit(h->ud, h->name, exit_status, term_signal);
}

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
	record_exit(p->data, exit_status, term_signal);
}

/* The pidfd became readable: the child exited. Reap exactly it (no pid reuse race) and report. */
static void on_pidfd(uv_poll_t *poll, int status, int events)
{
	struct drv_host *h = poll->data;
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, (id_t)h->pidfd, &si, WEXITED | WNOHANG) != 0 || si.si_pid == 0)
		return; /* spurious wake-up: not exited yet */
	uv_poll_stop(poll);
	if (si.si_code == CLD_EXITED)
		record_exit(h, si.si_status, 0);
	else
		record_exit(h, 0, si.si_status);
}

static void on_poll_closed(uv_handle_t *handle)
{
	struct drv_host *h = handle->data;

	close(h->pidfd);
	h->pidfd = -1;
	on_closed(handle);
}

static _Atomic bool force_uv_spawn;

void drv__host_force_uv_spawn(bool on)
{
	force_uv_spawn = on;
}

bool drv__host_have_pidfd(void)
{
	static int ok = -1;

	if (force_uv_spawn)
		return false;
	if (ok < 0) {
		int fd = pidfd_open(getpid(), 0);

		ok = fd >= 0;
		if (fd >= 0)
			close(fd);
	}
	return ok;
}

/*
 * The fast path, run on the caller's thread: posix_spawn (glibc's
 * clone(CLONE_VM|CLONE_VFORK), so no page-table copy of a large host process)
 * plus a pidfd. Measured in a gRPC-linked parent, uv_spawn (fork) took 7 ms
 * against 2.5 ms here for the same child; spawn-to-first-RPC is budgeted at
 * 3.5 ms. The pidfd also makes kill and reap immune to pid reuse. Fills pid,
 * pidfd and the parent's ends of the three pipes; returns 0 or a libuv error
 * code, and then nothing is left open or running.
 */
int drv__host_spawn_posix(struct drv_host *h)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	pid_t pid;
	int rc;

	if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
		rc = uv_translate_sys_error(errno);
		goto fail_pipes;
	}
	/*
	 * A larger stderr pipe (1 MiB, Linux's default cap for unprivileged
	 * users; smaller where the cap is lower, which is fine): a flooding
	 * driver costs the I/O thread a read per MiB instead of per 64 KiB.
	 */
	fcntl(err[0], F_SETPIPE_SZ, 1 << 20);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err[1], 2);
	/* The driver starts with default signal handling, whatever the host blocked or ignored. */
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	/*
	 * Its own process group, so a terminal's Ctrl-C reaches only the host,
	 * which then stops its drivers in order (SIGTERM, grace, SIGKILL) and can
	 * still clean up through them; stdin EOF still ends a driver whose host died.
	 */
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	if (strchr(h->path, '/'))
		rc = posix_spawn(&pid, h->path, &fa, &at, h->argv, h->envp);
	else
		rc = posix_spawnp(&pid, h->path, &fa, &at, h->argv, h->envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(in[0]);
	close(out[1]);
	close(err[1]);
	in[0] = out[1] = err[1] = -1;
	if (rc != 0) {
		rc = uv_translate_sys_error(rc);
		goto fail_pipes;
	}
	h->pidfd = pidfd_open(pid, 0);
	if (h->pidfd < 0) {
		/* Cannot watch it: do not leave it running unwatched. */
		rc = uv_translate_sys_error(errno);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		goto fail_pipes;
	}
	pthread_mutex_lock(&h->mu);
	h->pid = pid;
	pthread_mutex_unlock(&h->mu);
	h->fd_in = in[1];
	h->fd_out = out[0];
	h->fd_err = err[0];
	return 0;

fail_pipes:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
		if (err[i] >= 0)
			close(err[i]);
	}
	return rc;
}

/*
 * Takes over a child started by drv__host_spawn_posix: stdin (held), stderr
 * (read line by line) and the pidfd (exit). stdout stays with the caller
 * until the handshake is read; see drv__host_io_adopt_stdout.
 */
void drv__host_io_adopt(struct drv_host *h, int unused)
{
	uv_loop_t *loop = &io.loop;

	uv_pipe_init(loop, &h->in, 0);
	uv_pipe_init(loop, &h->out, 0);
	uv_pipe_init(loop, &h->err, 0);
	h->in.data = h->out.data = h->err.data = h;
	uv_pipe_open(&h->in, h->fd_in);
	h->fd_in = -1;
	h->in_open = true;
	uv_pipe_open(&h->err, h->fd_err);
	h->fd_err = -1;
	uv_poll_init(loop, &h->pidpoll, h->pidfd);
	h->pidpoll.data = h;
	h->poll_inited = true;
	uv_timer_init(loop, &h->errpause);
	h->errpause.data = h;
	uv_read_start((uv_stream_t *)&h->err, on_alloc, on_stderr_read);
	uv_poll_start(&h->pidpoll, UV_READABLE, on_pidfd);
}

/* After the handshake: stdout is drained (and dropped) so a chatty driver never blocks on it. */
void drv__host_io_adopt_stdout(struct drv_host *h, int unused)
{
	uv_pipe_open(&h->out, h->fd_out);
	h->fd_out = -1;
	uv_read_start((uv_stream_t *)&h->out, on_alloc, on_stdout_read);
}

/* The fallback for kernels without pidfd_open (before 5.3): libuv's fork-based spawn. */
static int spawn_uv(struct drv_host *h)
{
	uv_stdio_container_t stdio[3];
	uv_process_options_t o;
	int rc;

	memset(stdio, 0, sizeof(stdio));
	stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
	stdio[0].data.stream = (uv_stream_t *)&h->in;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&h->out;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&h->err;
	memset(&o, 0, sizeof(o));
	o.file = h->path;
	o.args = h->argv;
	o.env = h->envp;
	o.exit_cb = on_exit_cb;
	o.flags = UV_PROCESS_DETACHED; /* own session and process group, as in the posix_spawn path */
	o.stdio = stdio;
	o.stdio_count = 3;
	h->proc.data = h;
	rc = uv_spawn(&io.loop, &h->proc, &o);
	/* libuv initialises the process handle even when the spawn fails, so it is closed either way. */
	h->proc_inited = true;
	pthread_mutex_lock(&h->mu);
	h->open_handles++;
	if (rc == 0)
		h->pid = h->proc.pid;
	pthread_mutex_unlock(&h->mu);
	return rc;
}

/* ---- commands (I/O thread) ---- */

void drv__host_io_spawn(struct drv_host *h, int unused)
{
	uv_loop_t *loop = &io.loop;
	int rc;

	uv_pipe_init(loop, &h->in, 0);
	uv_pipe_init(loop, &h->out, 0);
	uv_pipe_init(loop, &h->err, 0);
	h->in.data = h->out.data = h->err.data = h;
	h->in_open = true;
	uv_timer_init(loop, &h->errpause);
	h->errpause.data = h;
	pthread_mutex_lock(&h->mu);
	h->open_handles = 4;
	h->quiet = true;
	h->t_spawn_ns = drv__host_now_ns();
	pthread_mutex_unlock(&h->mu);

	rc = spawn_uv(h);
	if (rc == 0) {
		uv_read_start((uv_stream_t *)&h->out, on_alloc, on_stdout_read);
		uv_read_start((uv_stream_t *)&h->err, on_alloc, on_stderr_read);
	}
	pthread_mutex_lock(&h->mu);
	h->spawn_done = true;
	h->spawn_errno = rc;
	if (rc != 0)
		h->stdout_eof = h->stderr_eof = true;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

void drv__host_io_kill(struct drv_host *h, int signum)
{
	bool running;

	/*
	 * libuv reaps the child and runs our exit callback in one go on this
	 * thread, so checking `exited` here cannot race with pid reuse.
	 */
	pthread_mutex_lock(&h->mu);
	running = h->spawn_done && h->spawn_errno == 0 && !h->exited;
	pthread_mutex_unlock(&h->mu);
	if (!running)
		return;
	if (h->use_pidfd)
		pidfd_send_signal(h->pidfd, signum, NULL, 0);
	else
		uv_process_kill(&h->proc, signum);
}

void drv__host_io_late_exit(struct drv_host *h, int unused)
{
	if (h->on_exit)
		h->on_exit(h->ud, h->name, h->exit_status, h->term_signal);
}

void drv__host_io_close_stdin(struct drv_host *h, int unused)
{
	if (h->in_open) {
		h->in_open = false;
		close_handle(h, (uv_handle_t *)&h->in);
	}
}

void drv__host_io_close_all(struct drv_host *h, int unused)
{
	drv__host_io_close_stdin(h, 0);
	close_handle(h, (uv_handle_t *)&h->out);
	close_handle(h, (uv_handle_t *)&h->err);
	close_handle(h, (uv_handle_t *)&h->errpause);
	if (h->proc_inited)
		close_handle(h, (uv_handle_t *)&h->proc);
	if (h->poll_inited && !uv_is_closing((uv_handle_t *)&h->pidpoll))
		uv_close((uv_handle_t *)&h->pidpoll, on_poll_closed);
}

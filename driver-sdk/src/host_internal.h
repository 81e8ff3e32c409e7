/*
 * Internals of the hosting half, shared by host.c (spawn, stop, free),
 * host_io.c (the I/O thread) and host_call.c (calls, health, connect).
 *
 * Threads: every libuv handle of a host lives on ONE process-wide I/O thread
 * (host_io.c) shared by all hosts; a spawn costs no thread creation and a
 * server with fifty drivers runs one extra thread, not fifty. Callers on any
 * thread hand work to it with drv__host_io_submit() and then wait on the
 * host's condition variable for the state it changes. Everything below the
 * "state" comment is guarded by `mu`; the uv handles are touched only on the
 * I/O thread. On the posix_spawn path the spawning thread owns fd_out and
 * outbuf until it hands stdout over (drv__host_io_adopt_stdout); the queue's
 * mutex orders that hand-over.
 */
#ifndef DRV_HOST_INTERNAL_H
#define DRV_HOST_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "drover/host.h"
#include "drover/rpc.h"
#include "drv_internal.h"

#define DRV_HOST_TAIL_LINES 8
#define DRV_HOST_HANDSHAKE_MAX 1024
/* Defaults of drv_spawn_opts' stderr bounds (PROTOCOL.md §12.7). */
#define DRV_HOST_LINES_PER_S 1000
#define DRV_HOST_BYTES_PER_S (1u << 20)
#define DRV_HOST_LINE_MAX (16u << 10)
#define DRV_HOST_LINE_MAX_MIN 256u
#define DRV_HOST_LINE_MAX_MAX (1u << 20)

struct drv_host {
	char *name;
	char *path;   /* spawned only */
	char *target; /* gRPC target */
	bool spawned;
	struct drv_rpc_channel *ch;
	struct drv_answer_limits limits;
	char sockdir[PATH_MAX];      /* "" when none */
	char sockdir_real[PATH_MAX]; /* the same, resolved: where a handshake's socket must be */
	bool allow_tcp;              /* drv_spawn_opts.allow_tcp_handshake */
	char **argv;
	char **envp;
	drv_host_line_cb on_stderr;
	drv_host_exit_cb on_exit;
	void *ud;

	/* I/O thread only. */
	bool use_pidfd;    /* spawned with posix_spawn and watched through a pidfd (else uv_spawn) */
	uv_process_t proc; /* uv_spawn path */
	bool proc_inited;
	uv_poll_t pidpoll; /* pidfd path */
	bool poll_inited;
	int pidfd;
	int fd_in, fd_out, fd_err; /* pipe ends not (yet) handed to the loop, or -1 */
	uv_pipe_t in, out, err;
	bool in_open;
	char outbuf[DRV_HOST_HANDSHAKE_MAX];
	size_t outlen;
	char *errbuf;  /* the stderr line being read: errmax bytes and a NUL */
	size_t errmax; /* the line cap */
	size_t errlen;
	bool errskip;   /* dropping the rest of a line cut at errmax */
	char *cleanbuf; /* a line with control characters escaped, for the callback */
	size_t cleanlen;
	struct drv__line_limit limit;
	uv_timer_t errpause;    /* resumes reading stderr after the read cap paused it */
	uint64_t err_window_ns; /* start of the read cap's current window */
	size_t err_window_bytes;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* state, guarded by mu */
	bool spawn_done; /* uv_spawn returned */
	int spawn_errno; /* its libuv error, 0 on success */
	pid_t pid;
	bool line_ready; /* handshake (or an over-long first stdout chunk) arrived */
	bool line_too_long;
	bool line_nul;       /* the line holds a NUL byte */
	size_t stdout_bytes; /* posix_spawn path: bytes read when no line came */
	char handshake[DRV_HOST_HANDSHAKE_MAX];
	bool stdout_eof, stderr_eof;
	bool exited;
	int64_t exit_status;
	int term_signal;
	uint64_t t_spawn_ns, t_line_ns, t_exit_ns;
	char tail[DRV_HOST_TAIL_LINES][256]; /* last stderr lines, a ring */
	unsigned tail_count;
	/*
	 * No on_exit until drv_host_spawn succeeded: the caller never sees a host
	 * whose spawn failed. An exit held back this way is delivered by
	 * drv__host_io_late_exit once the spawn succeeded.
	 */
	bool quiet;
	bool exit_held;
	bool closed;      /* drv_host_stop on a remote host */
	int open_handles; /* uv handles not yet through their close callback */
};

/* Starts the shared I/O thread once. 0 or DRV_ESYSTEM. */
int drv__host_io_start(void);

/*
 * Runs fn(h, arg) on the I/O thread, soon, asynchronously. Returns 0 or
 * DRV_ENOMEM. The host must stay allocated until fn has run: callers wait on
 * h->cv for the state fn changes.
 */
int drv__host_io_submit(void (*fn)(struct drv_host *h, int arg), struct drv_host *h, int arg);

/* Tests: spawn with libuv's uv_spawn (the fallback for kernels without pidfd) even where pidfd works. */
void drv__host_force_uv_spawn(bool on);

/* I/O-thread functions (host_io.c), run through drv__host_io_submit. */
void drv__host_io_spawn(struct drv_host *h, int unused); /* the uv_spawn fallback */
void drv__host_io_adopt(struct drv_host *h, int unused);
void drv__host_io_adopt_stdout(struct drv_host *h, int unused);

/* True when this kernel has pidfd_open (and the test switch is off): the posix_spawn path. */
bool drv__host_have_pidfd(void);
/* Caller thread: starts the child with posix_spawn; fills pid, pidfd, fd_in/out/err. 0 or a libuv error. */
int drv__host_spawn_posix(struct drv_host *h);
void drv__host_io_kill(struct drv_host *h, int signum);
void drv__host_io_close_stdin(struct drv_host *h, int unused);
void drv__host_io_close_all(struct drv_host *h, int unused);
void drv__host_io_late_exit(struct drv_host *h, int unused);

/* Exit code, or 128+signal. Caller holds mu. */
int drv__host_status_locked(const struct drv_host *h);

/* "exited with status 3" / "was killed by signal 9". Caller holds mu. */
void drv__host_describe_exit_locked(const struct drv_host *h, char *buf, size_t len);

/*
 * Waits on h->cv until `exited` or the absolute monotonic time deadline_ns.
 * Caller holds mu. Returns h->exited.
 */
bool drv__host_wait_exit_locked(struct drv_host *h, uint64_t deadline_ns);

uint64_t drv__host_now_ns(void);

/*
 * The one constructor for spawned and connected hosts: zeroed, mu and a
 * CLOCK_MONOTONIC cv ready, and pidfd and the pipe ends -1 (none), because
 * drv__host_release closes every pipe end that is not -1. NULL when out of memory.
 */
struct drv_host *drv__host_new(void);

/*
 * Sets up the stderr line buffers and rate limit from the spawn options.
 * 0 or DRV_ENOMEM.
 */
int drv__host_stderr_init(struct drv_host *h, const struct drv_spawn_opts *o);

/* Frees a host that has no live handles left (close_all done). */
void drv__host_release(struct drv_host *h);

/* Sets the channel options that h->limits imply (host_call.c). */
void drv__host_channel_limits(const struct drv_host *h, struct drv_rpc_channel_opts *co);

#endif

/*
 * SSH connections to hosts, on libssh: connect with the host key checked
 * against the config (at every connection, never trusted on first use),
 * public key authentication with a key held only in memory, commands run
 * with their input over stdin, and a pool of connections per host.
 *
 * Every operation takes a deadline and a cancel check and polls both while
 * it waits: the session runs in libssh's non-blocking mode, so a call's
 * deadline or its cancellation aborts the TCP connect, the key exchange,
 * the authentication and a running command alike. A connection that saw an
 * error or an abort is closed, never pooled again.
 *
 * Threads: any number of threads may use the pool; one connection is used
 * by one thread at a time (checked out).
 */
#ifndef SSH_CONN_H
#define SSH_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ssh_parse.h"

/* Where to connect and as whom. Strings borrowed for the call. */
struct ssh_target {
	const char *address;
	int port;
	const char *user;
	const struct ssh_hostkey *hostkey;
	const char *private_key; /* OpenSSH or PEM text; never logged, never written anywhere */
	const char *passphrase;  /* or NULL */
	/*
	 * Or NULL. A host to reach this one through, as `ssh -J` does: the
	 * driver logs in to the jump host (its host key checked the same way,
	 * with the same private key) and opens a direct-tcpip channel to
	 * address:port; the session to this host runs inside it, end to end.
	 */
	const struct ssh_target *jump;
};

/* A deadline (CLOCK_MONOTONIC ms) and a cancel check, polled while waiting. */
struct ssh_limits {
	int64_t deadline_ms;
	bool (*cancelled)(void *ud);
	void *ud;
};

/* The outcome of one command. */
struct ssh_result {
	char *out; /* stdout, NUL-terminated, malloc'd */
	size_t out_len;
	char *err; /* stderr, NUL-terminated, malloc'd */
	size_t err_len;
	int exit_status;
	int round_trips; /* commands run over SSH (a failed pooled one retried counts twice) */
};

void ssh_result_free(struct ssh_result *r);

/* Monotonic milliseconds. */
int64_t ssh_now_ms(void);

/*
 * Starts libssh and the pool's keep-alive thread; `max_per_host` caps open
 * connections per host. An idle connection gets an SSH_MSG_IGNORE every
 * 15 s and is closed after 5 minutes idle (environment DROVER_SSH_KEEPALIVE_MS
 * and DROVER_SSH_IDLE_MS change both, for tests).
 */
int ssh_pool_start(int max_per_host);
/* Closes every pooled connection and stops the keep-alive thread. */
void ssh_pool_stop(void);
/* The pool's key of a target: host, user, host key and a hash of the private key (never its text). */
void ssh_target_key(const struct ssh_target *t, char *out, size_t len);

/*
 * Runs `command` on `t` with `input` (len bytes, may be NULL) on its stdin,
 * through a pooled connection (a new one when none is idle, waiting while
 * the host is at the cap). Returns 0 with *r filled (whatever the command's
 * exit status), or a negative drv_error with a message in err:
 * DRV_EUNAVAILABLE (unreachable, dropped), DRV_EPERM (host key mismatch,
 * with the fingerprint got; or authentication refused: the message says which),
 * DRV_EUNAUTHENTICATED (the private key does not load), DRV_EDEADLINE,
 * DRV_ECANCELLED.
 */
int ssh_run(const struct ssh_target *t, const char *command, const char *input, size_t len,
            const struct ssh_limits *lim, struct ssh_result *r, char *err, size_t errlen);

/*
 * Connects to address:port and returns the server's host key (the
 * algorithm's name and base64) as "type base64" in out, for `keyscan`. No
 * authentication. 0 or -1 with err set.
 */
int ssh_keyscan(const char *address, int port, int timeout_ms, char *out, size_t outlen, char *err,
                size_t errlen);

#endif

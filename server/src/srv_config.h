/*
 * srv_config — droverd's YAML configuration file, parsed with libyaml into
 * plain structs. Every error names the file, the line and the field path
 * ("droverd.yaml:12: projects[0].backends[1].type: expected a string").
 *
 * Backend types are opaque strings here as everywhere in the server: the
 * config never lists or checks them; the driver does (ValidateConfig).
 */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct srv_config_secret {
	char *name;
	char *value;
};

struct srv_config_backend {
	char *name;
	char *type;
	char *config_json; /* the `config` mapping as compact JSON text; "{}" if absent */
	struct srv_config_secret *secrets;
	size_t n_secrets;
	int line;
};

struct srv_config_project {
	char *name;
	struct srv_config_backend *backends;
	size_t n_backends;
	int line;
};

/*
 * Limits on a driver's answers (docs/PROTOCOL.md §12.1): drivers.limits, or
 * the `limits:` of a command or remote entry, whose fields left out (0) are
 * drivers.limits'.
 */
struct srv_driver_limits {
	int answer_bytes;        /* every answer but GetOffers' and ListInstances', default 1 MiB */
	int offers_answer_bytes; /* one GetOffers answer, default 16 MiB */
	int list_answer_bytes;   /* one ListInstances answer, default 8 MiB */
	int offers;              /* offers in one GetOffers answer, default 20,000 */
};

/* A driver started from an explicit command rather than found in a directory. */
struct srv_config_command {
	char *type;
	char *path;
	char **args; /* NULL-terminated */
	size_t n_args;
	struct srv_driver_limits limits;
	bool allow_tcp_handshake; /* take a loopback TCP handshake from it (default: unix socket only) */
};

/* A driver reached over the network with mutual TLS. */
struct srv_config_remote {
	char *type;
	char *name;
	char *address;
	char *ca, *cert, *key; /* PEM files */
	char *server_name;     /* may be NULL */
	bool insecure;         /* plain TCP; loopback only */
	struct srv_driver_limits limits;
};

struct srv_config {
	char *path; /* the file it came from, for messages */

	char *listen_unix; /* default "<data_dir>/droverd.sock" when no listen is given */
	char *listen_tcp;  /* "127.0.0.1:7443" or NULL */
	char *tcp_cert, *tcp_key, *tcp_client_ca;
	char *data_dir;  /* NULL when the file has none */
	char *log_level; /* NULL: info */

	/* log: droverd's log file (NULL: stderr), rotated past max_bytes, keep old files kept. */
	char *log_file;
	int log_max_bytes; /* default 64 MiB */
	int log_keep;      /* default 3 */
	/* Bounds on each driver's stderr lines in the log (PROTOCOL.md §12.7). */
	int driver_log_lines_per_s; /* default 1000 */
	int driver_log_bytes_per_s; /* default 1 MiB */
	int driver_log_line_max;    /* default 16 KiB */

	char **driver_dirs;
	size_t n_driver_dirs;
	struct srv_config_command *commands;
	size_t n_commands;
	struct srv_config_remote *remotes;
	size_t n_remotes;
	int handshake_timeout_ms;   /* default 5000 */
	int call_timeout_ms;        /* default 10000 */
	int offers_timeout_ms;      /* default 3000 */
	int health_interval_ms;     /* default 5000 */
	int restart_backoff_ms;     /* first restart delay, default 200 */
	int restart_backoff_max_ms; /* cap, default 30000 */
	int shutdown_grace_ms;      /* SIGTERM → SIGKILL, default 3000 */
	struct srv_driver_limits limits;

	struct srv_config_project *projects;
	size_t n_projects;

	int max_tries;             /* provisioning: offers tried per create, default 3 */
	int reconcile_interval_ms; /* default 1000 */
	/* GetInstance of each running machine, to notice one gone behind our back; 0 never; default 60000 */
	int running_check_interval_ms;
	/* TerminateInstance answered OK but the machine's end not observed for this long: a warning; default
	 * 600000 */
	int termination_confirm_window_ms;
	/* Per backend and orphan scan: listed machines looked at (default 10000) and adopted (default 1000).
	 */
	int orphan_max_listed;
	int orphan_max_adopted;
};

/* The limits of one driver: `entry`'s (may be NULL) where set, else cfg->limits. */
struct srv_driver_limits srv_config_driver_limits(const struct srv_config *cfg,
                                                  const struct srv_driver_limits *entry);

/* A config with every default set and no projects, for tests and for running without a file. */
struct srv_config *srv_config_new_default(void);

/*
 * The largest config file droverd reads: a file is read whole before it is
 * parsed, so a bigger one (or /dev/zero named by mistake) is refused before
 * it can take the memory. The largest config dyaml's caps let through (about
 * 50,000 backends) is a few MiB.
 */
#define SRV_CONFIG_MAX_BYTES (16 << 20)

/*
 * Parses the YAML file at `path`. On success *out is a new config (free with
 * srv_config_free) and 0 is returned; on failure returns -1 and writes a
 * message naming file, line and field into `err` (or the file and
 * SRV_CONFIG_MAX_BYTES when it is larger).
 */
int srv_config_load(const char *path, struct srv_config **out, char *err, size_t errlen);

/* The same from a string; `name` stands for the file name in messages. */
int srv_config_parse(const char *name, const char *text, size_t len, struct srv_config **out, char *err,
                     size_t errlen);

/* A project, backend or instance name: [a-z0-9][a-z0-9-]*, at most 63 characters. */
bool srv_valid_name(const char *s);

/* NULL is fine. */
void srv_config_free(struct srv_config *cfg);

#endif

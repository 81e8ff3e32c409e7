/*
 * The drover CLI: a thin client of droverd's API (proto/drover/api/v1) over
 * the SDK's generic transport (drover/rpc.h). It holds no state of its own;
 * every command is one or a few RPCs and a way to print the answer.
 */
#ifndef CLI_H
#define CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "drover/api/v1/api.pb-c.h"
#include "drover/types.h"

/* Exit codes scripts can rely on (documented in `drover --help`). */
enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_REFUSED = 1,     /* the server answered with an error, or the result is a failure */
	CLI_EXIT_USAGE = 2,       /* bad command line or unreadable local input */
	CLI_EXIT_UNREACHABLE = 3, /* cannot reach the server */
};

struct drv_rpc_channel;

/* Global options and the lazily opened connection. */
struct cli_ctx {
	const char *server;      /* as given: "unix:./var/droverd.sock" or "host:port" */
	const char *server_from; /* where it came from, for errors: "--server" or "$DROVER_SERVER" */
	const char *token_file;
	const char *ca_file;   /* TLS for a TCP server; NULL: plain */
	const char *cert_file; /* client certificate, when the server asks for one */
	const char *key_file;
	const char *project; /* default project of the commands that take one */
	bool json;
	int timeout_ms;
	const char
	    *bad_timeout;  /* a --timeout after the command that did not parse, reported by cli_call() */
	char target[4200]; /* the gRPC target, unix paths made absolute */
	char token[512];
	struct drv_rpc_channel *ch;
	int last_code; /* the drv_error of the last cli_call(), 0 on success */
	bool quiet;    /* cli_call() prints no error (the caller reports it) */
};

/*
 * Calls `method` of the Drover service. On CLI_EXIT_OK *resp is a new message
 * the caller frees with drv_response_free(). Otherwise the
 * error has been printed to stderr ("drover: METHOD: CODE: message") and the
 * exit code is returned; *resp is NULL.
 */
int cli_call(struct cli_ctx *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp);

/*
 * cli_call() for a command whose --json output is the response as it is:
 * with --json the response is printed and freed here and *resp is NULL, so
 * on CLI_EXIT_OK the caller prints its text form only when *resp is set.
 */
int cli_call_text(struct cli_ctx *c, const char *method, const ProtobufCMessage *req,
                  ProtobufCMessage **resp);

/* Every page of a paged listing, and one answer that holds them all. */
struct cli_pages {
	ProtobufCMessage **pages;
	size_t n_pages;
	ProtobufCMessage *all; /* the answer's type, its repeated field holding every page's items */
	void *items;
};

/*
 * cli_call() for a paged listing: a request with `page_size` and
 * `page_token`, an answer with `next_page_token` and one repeated field
 * (ListInstances, ListEvents). Follows every page (`req` is changed), and on
 * CLI_EXIT_OK fills *out, freed with cli_pages_free(); with --json the merged
 * answer is printed and out->all is NULL.
 */
int cli_call_pages(struct cli_ctx *c, const char *method, ProtobufCMessage *req, struct cli_pages *out);
void cli_pages_free(struct cli_pages *p);

/*
 * Options every subcommand takes (--json, --project, --timeout, --help), as
 * getopt_long entries with the short codes 'J', 'P', 'T' and 'h'.
 */
#define CLI_COMMON_OPTIONS                                                                                   \
	{"json", no_argument, NULL, 'J'}, {"project", required_argument, NULL, 'P'},                         \
	    {"timeout", required_argument, NULL, 'T'},                                                       \
	{                                                                                                    \
		"help", no_argument, NULL, 'h'                                                               \
	}

/* Requirement options of `offer` and `instance create`, handled by cli_req_opt(). */
enum {
	CLI_OPT_GPU = 300,
	CLI_OPT_GPU_MEMORY,
	CLI_OPT_CPUS,
	CLI_OPT_MEMORY,
	CLI_OPT_DISK,
	CLI_OPT_SPOT,
	CLI_OPT_ON_DEMAND,
	CLI_OPT_SPOT_AUTO,
	CLI_OPT_MAX_PRICE,
	CLI_OPT_REGION,
	CLI_OPT_FEATURE,
	CLI_OPT_ARCH,
	CLI_OPT_SPOT_POLICY,
};
#define CLI_REQ_OPTIONS                                                                                      \
	{"gpu", required_argument, NULL, CLI_OPT_GPU},                                                       \
	    {"gpu-memory", required_argument, NULL, CLI_OPT_GPU_MEMORY},                                     \
	    {"cpus", required_argument, NULL, CLI_OPT_CPUS},                                                 \
	    {"memory", required_argument, NULL, CLI_OPT_MEMORY},                                             \
	    {"disk", required_argument, NULL, CLI_OPT_DISK}, {"spot", no_argument, NULL, CLI_OPT_SPOT},      \
	    {"on-demand", no_argument, NULL, CLI_OPT_ON_DEMAND},                                             \
	    {"spot-auto", no_argument, NULL, CLI_OPT_SPOT_AUTO},                                             \
	    {"spot-policy", required_argument, NULL, CLI_OPT_SPOT_POLICY},                                   \
	    {"max-price", required_argument, NULL, CLI_OPT_MAX_PRICE},                                       \
	    {"region", required_argument, NULL, CLI_OPT_REGION},                                             \
	    {"feature", required_argument, NULL, CLI_OPT_FEATURE},                                           \
	{                                                                                                    \
		"arch", required_argument, NULL, CLI_OPT_ARCH                                                \
	}

/*
 * Applies one of the options every subcommand shares (--json, --project) to
 * `c`; returns false for any other option code. ('h' stays with each
 * subcommand, which prints its own help.)
 */
bool cli_common_option(struct cli_ctx *c, int opt);

/* Prints the error for an unknown option or a missing value of `cmd` and returns CLI_EXIT_USAGE. */
int cli_bad_option(const char *cmd, char **argv);

/* Closes the connection, if any. */
void cli_ctx_close(struct cli_ctx *c);

/* Prints "drover: <fmt>\n" to stderr and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- argument parsing (cli_args.c); each returns 0 or -1 with a message in err ---- */

/*
 * A size in MiB from "80", "80G", "80GB", "80GiB", "512MB", "1.5T"... The
 * default unit is GiB; GB means GiB, as in most cloud catalogs.
 */
int cli_parse_size_mib(const char *s, uint64_t *mib, char *err, size_t errlen);
/* "MIN[:MAX]", either side may be empty ("24:", ":80"), both sizes as above. */
int cli_parse_size_range(const char *s, Drover__Compute__V1__UintRange *r, char *err, size_t errlen);
/* "MIN[:MAX]" of plain non-negative integers. */
int cli_parse_count_range(const char *s, Drover__Compute__V1__UintRange *r, char *err, size_t errlen);
/*
 * "NAME[:COUNT]" where COUNT is N or MIN..MAX; a bare number is a count with
 * any GPU name. *name is set to a pointer into a copy the caller frees, or
 * NULL when there is no name.
 */
/* The API's name of a CPU architecture for the usual spellings (amd64, AARCH64...), or NULL. */
const char *cli_arch_name(const char *s);
int cli_parse_gpu(const char *s, char **name, Drover__Compute__V1__UintRange *count, char *err,
                  size_t errlen);
/* A non-negative integer that fits in `max`. */
int cli_parse_uint(const char *s, uint64_t max, uint64_t *out);
/* --timeout SECONDS, 1 to 86400, into milliseconds. 0 or -1. */
int cli_parse_timeout(const char *s, int *ms);
/* A price: a finite number > 0. */
int cli_parse_price(const char *s, double *out);

/* ---- output (cli_output.c) ---- */

/*
 * Blanks the control characters (C0 with ESC, DEL, C1 with CSI) and the bytes
 * that are not UTF-8 of every string in `msg`, in place: text from drivers
 * reaches the terminal only as text. --json output escapes them instead.
 * cli_clean_str() does one string.
 */
void cli_clean_text(ProtobufCMessage *msg);
void cli_clean_str(char *s);
/*
 * Prints a message as JSON (proto field names, enum value names) to stdout,
 * or to `f`; control characters in strings, C1 included, are escaped.
 */
void cli_print_json(const ProtobufCMessage *msg);
void cli_print_json_to(FILE *f, const ProtobufCMessage *msg);

/* A tiny table: collect rows of strings, then print with aligned columns. */
struct cli_table;
struct cli_table *cli_table_new(int ncols, const char *const *headers);
/* Adds one row; the strings are copied. */
void cli_table_row(struct cli_table *t, const char *const *cells);
/* Prints to `f` and frees the table. */
void cli_table_print(struct cli_table *t, FILE *f);

/* A feature list as "OFFERS,CREATE_INSTANCE"; returns buf. */
const char *cli_features_str(const int *features, size_t n, char *buf, size_t len);
/* An enum value's name without `prefix` ("INSTANCE_STATUS_"), lower-cased; "?" if unknown. */
const char *cli_enum_short(const ProtobufCEnumDescriptor *d, int value, const char *prefix, char *buf,
                           size_t len);
/* A time in milliseconds since the epoch as "2026-11-28 18:40:21" (UTC), "-" for 0. */
const char *cli_time_str(int64_t unix_ms, char *buf, size_t len);
/* MiB as "80GiB" / "512MiB". */
const char *cli_mib_str(uint64_t mib, char *buf, size_t len);

/* The GPUs of an offer as "8xH100 (80GiB)", "-" for none. */
const char *cli_gpus_str(const Drover__Compute__V1__Resources *r, char *buf, size_t len);

/* ---- progress on stderr (cli_progress.c) ---- */

/* What has been reported of one instance; nothing is printed unless `on`. */
struct cli_progress {
	bool on;
	int64_t start_ms;
	unsigned attempts_seen, attempts_done;
	int status;
};
void cli_progress_init(struct cli_progress *p, bool on);
/* Reports the new attempts, the ended ones and a changed status of `in`. */
void cli_progress_update(struct cli_progress *p, const Drover__Api__V1__Instance *in);

/* ---- commands (cli_cmd_*.c): argc/argv start at the subcommand's own name ---- */

int cli_cmd_driver(struct cli_ctx *c, int argc, char **argv);
int cli_cmd_project(struct cli_ctx *c, int argc, char **argv);
int cli_cmd_backend(struct cli_ctx *c, int argc, char **argv);
int cli_cmd_offer(struct cli_ctx *c, int argc, char **argv);
int cli_cmd_instance(struct cli_ctx *c, int argc, char **argv);
int cli_cmd_event(struct cli_ctx *c, int argc, char **argv);

/*
 * Requirement flags shared by `offer` and `instance create`. cli_req_opt()
 * consumes option `opt` (with `arg`) if it is one of them and returns 1, 0 if
 * it is not a requirement option, or -1 after printing an error (exit with
 * CLI_EXIT_USAGE). cli_req_finish() points the message's repeated fields at
 * the collected values; call it once before sending.
 */
struct cli_req {
	Drover__Compute__V1__Requirements req;
	Drover__Compute__V1__UintRange cpus, memory, disk, gpu_count, gpu_memory;
	char **gpu_names;
	size_t n_gpu_names;
	char **regions;
	size_t n_regions;
	char **features;
	size_t n_features;
	char **archs;
	size_t n_archs;
};
void cli_req_init(struct cli_req *r);
int cli_req_opt(struct cli_req *r, int opt, const char *arg);
void cli_req_finish(struct cli_req *r);
void cli_req_free(struct cli_req *r);
/*
 * After a query of `r` found no offers: prints on stderr why (no backends, a
 * GPU name no backend offers with the closest one that is, or which filter
 * emptied the result). CLI_EXIT_USAGE for an unknown GPU name, else CLI_EXIT_OK.
 */
int cli_explain_no_offers(struct cli_ctx *c, const struct cli_req *r);
/* "project P has no backends: add one with drover backend add ..." on stderr. */
void cli_print_no_backends(const char *project);
/* The help text of the requirement flags. */
extern const char cli_req_help[];

#endif

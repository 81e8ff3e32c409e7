/*
 * droverd — wiring only: flags, config, data directory, store, supervisor,
 * engine and API on one libuv loop; SIGTERM, SIGINT and SIGHUP stop it gracefully.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <uv.h>

#include "drover/driver.h"
#include "drover/host.h"
#include "drover/rpc.h"
#include "srv_api.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_log.h"
#include "srv_secrets.h"
#include "srv_store.h"
#include "srv_supervisor.h"

#ifndef DROVER_VERSION
#define DROVER_VERSION "0.0.0"
#endif

static const char usage[] =
    "Usage: droverd [--config FILE] [--data-dir DIR] [--log-level LEVEL]\n"
    "\n"
    "The drover server: keeps projects, backends and instances in a sqlite store,\n"
    "supervises driver processes, and serves the drover API (by default on the unix\n"
    "socket <data dir>/droverd.sock, mode 0600).\n"
    "\n"
    "  --config FILE      YAML configuration (see config/droverd.yaml); without it,\n"
    "                     defaults and no projects\n"
    "  --data-dir DIR     store, secrets key and admin token (default: the config's\n"
    "                     data_dir, else ./var); created 0700 if missing\n"
    "  --log-level LEVEL  debug, info, warn or error (default: the config's, else info)\n"
    "  --help             this text\n"
    "  --version          the version\n"
    "\n"
    "Files in the data directory: drover.db (sqlite, WAL), secret.key (0600, encrypts\n"
    "backend secrets), admin.token (0600, the bearer token for the API).\n"
    "Exit status: 0 after a clean stop (SIGTERM, SIGINT or SIGHUP), 1 on a start-up error,\n"
    "2 on bad arguments.\n";

struct app {
	uv_loop_t *loop;
	struct srv_config *cfg;
	struct srv_secrets *sec;
	struct srv_store *st;
	struct srv_supervisor *sup;
	struct srv_engine *eng;
	struct srv_api *api;
	uv_signal_t sigterm, sigint, sighup;
	bool stopping;
};

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* An absolute path for a file that may not exist yet: its directory must. */
static char *abs_path(const char *path)
{
	char dir[PATH_MAX], base[PATH_MAX], *real;
	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(base, sizeof(base), "%s", path);
	real = realpath(dirname(dir), NULL);
	if (!real)
		return NULL;
	char *out = malloc(strlen(real) + strlen(base) + 2);
	if (!out) {
		free(real);
		errno = ENOMEM;
		return NULL;
	}
	sprintf(out, "%s/%s", real, basename(base));
	free(real);
	return out;
}

/*
 * A backend whose type changes in the file while it has live instances: they
 * keep the old config and secrets (as with remove --force) and stay with the
 * driver of their own type. Replaced in place, they were terminated through
 * the new type's driver, which does not know them (UNIMPLEMENTED or
 * NOT_FOUND): machines left running that drover could no longer stop.
 */
static int detach_on_type_change(struct app *a, const char *project, const struct srv_config_backend *cb)
{
	struct srv_backend *old = NULL;
	int rc = srv_store_backend_get(a->st, project, cb->name, &old);
	if (rc != 0)
		return rc < 0 ? -1 : 0;
	int64_t live = 0;
	if (strcmp(old->type, cb->type) != 0 &&
	    srv_store_backend_live_instances(a->st, project, cb->name, &live) == 0 && live > 0) {
		srv_warn("config",
		         "backend %s/%s changes type from %s to %s with %lld live instance(s); they keep "
		         "their %s config and driver until they are terminated",
		         project, cb->name, old->type, cb->type, (long long)live, old->type);
		rc = srv_store_backend_detach(a->st, project, cb->name) < 0 ? -1 : 0;
	}
	srv_backend_free(old);
	return rc;
}

/* Projects and backends of the YAML file into the store; file-made backends gone from the file go too. */
static int sync_config(struct app *a)
{
	struct srv_config *cfg = a->cfg;
	if (srv_store_begin(a->st) < 0)
		goto fail;
	for (size_t i = 0; i < cfg->n_projects; i++) {
		struct srv_config_project *p = &cfg->projects[i];
		if (srv_store_project_put(a->st, p->name) < 0)
			goto fail;
		for (size_t j = 0; j < p->n_backends; j++) {
			struct srv_config_backend *cb = &p->backends[j];
			struct srv_secret_kv *kv = calloc(cb->n_secrets + 1, sizeof(*kv));
			if (!kv) {
				srv_error("config", "syncing the config into the store: out of memory");
				return -1;
			}
			for (size_t k = 0; k < cb->n_secrets; k++) {
				kv[k].name = cb->secrets[k].name;
				kv[k].value = cb->secrets[k].value;
			}
			if (detach_on_type_change(a, p->name, cb) < 0) {
				free(kv);
				goto fail;
			}
			struct srv_backend b = {.project = p->name,
			                        .name = cb->name,
			                        .type = cb->type,
			                        .config_json = cb->config_json,
			                        .secrets = kv,
			                        .n_secrets = cb->n_secrets,
			                        .source = "config"};
			int rc = srv_store_backend_put(a->st, &b);
			free(kv);
			if (rc < 0)
				goto fail;
		}
	}
	struct srv_backend **bes;
	size_t n;
	if (srv_store_backend_list(a->st, NULL, &bes, &n) < 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		struct srv_backend *b = bes[i];
		if (strcmp(b->source, "config") != 0)
			continue;
		bool in_file = false;
		for (size_t p = 0; p < cfg->n_projects && !in_file; p++)
			for (size_t j = 0; j < cfg->projects[p].n_backends && !in_file; j++)
				in_file = strcmp(cfg->projects[p].name, b->project) == 0 &&
				          strcmp(cfg->projects[p].backends[j].name, b->name) == 0;
		if (in_file)
			continue;
		int64_t live = 0;
		srv_store_backend_live_instances(a->st, b->project, b->name, &live);
		if (live > 0) {
			srv_warn("config",
			         "backend %s/%s left the config file but has %lld live instance(s); kept",
			         b->project, b->name, (long long)live);
			continue;
		}
		srv_info("config", "backend %s/%s left the config file; removed", b->project, b->name);
		srv_store_backend_delete(a->st, b->project, b->name);
	}
	srv_backend_list_free(bes, n);
	return srv_store_commit(a->st);
fail:
	srv_error("config", "syncing the config into the store: %s", srv_store_errmsg(a->st));
	return -1;
}

static void on_driver_event(void *ud, const char *type, int level, const char *kind, const char *message)
{
	struct app *a = ud;
	srv_engine_event(a->eng, level, kind, NULL, NULL, NULL, type, "%s", message);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void shutdown_all(struct app *a)
{
	if (a->stopping)
		return;
	a->stopping = true;
	srv_info("droverd", "stopping");
	srv_engine_stop(a->eng);
	/* Drivers get SIGTERM, a grace period, then SIGKILL; calls on them fail now, and their API calls get
	 * answers. */
	srv_supervisor_stop(a->sup);
	srv_api_stop(a->api);
	uv_walk(a->loop, close_walk, NULL);
}

/* gRPC's own lines (a refused TLS handshake...) into droverd's log, not raw on stderr. */
static void grpc_log_line(int level, const char *text)
{
	srv_log(level == DRV_LOG_ERROR  ? SRV_LOG_ERROR
	        : level == DRV_LOG_WARN ? SRV_LOG_WARN
	        : level == DRV_LOG_INFO ? SRV_LOG_INFO
	                                : SRV_LOG_DEBUG,
	        "grpc", "%s", text);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct app *a = s->data;
	srv_info("droverd", "received %s",
	         signum == SIGTERM  ? "SIGTERM"
	         : signum == SIGHUP ? "SIGHUP (its terminal closed?)"
	                            : "SIGINT");
	shutdown_all(a);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},    {"data-dir", required_argument, NULL, 'd'},
	    {"log-level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0}};
	const char *config_path = NULL, *data_dir = NULL, *log_level = NULL;
	char err[2048];
	/*
	 * No fastbins: an offers query unpacks and frees ~200,000 small blocks
	 * (16 backends x 1,000 offers); in fastbins they were merged again by
	 * malloc_consolidate at the next large request, which cost droverd a
	 * third of its CPU time per query (64 -> 45 ms of CPU measured with
	 * drover-bench-server). Must run before any allocation.
	 */
	mallopt(M_MXFAST, 0);
	/*
	 * Big blocks (a 2.5 MB packed reply, 16 arrays of 1,000 offers) stay in
	 * the heap instead of being mmap'ed and unmapped per query, and the heap
	 * top is not given back after each one (every page faulted in again
	 * next time): 54 -> 43 ms of CPU per query. srv_api trims once idle,
	 * but malloc_trim() never shrinks the top of a thread's heap: only
	 * free() does, past this threshold. 16 MB is above what one query
	 * leaves in a thread (16 answers of about 600 KB unpacked) and bounds
	 * what each thread keeps: drover-bench-server row 3b (RSS with 10,000
	 * instances) 33-38 MB at 64 MB, 24-25 MB at 16 MB; at 8 MB every query
	 * trimmed and faulted again (droverd CPU per query 19 -> 26 ms).
	 */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 16 << 20);
	/*
	 * One malloc arena for every thread. gRPC's threads unpack the answers of
	 * drivers and the API's requests; with an arena each, what they freed
	 * stayed in their own arena, fragmented around a few live blocks, where
	 * neither the loop thread nor malloc_trim could use or return it. Row
	 * 3b of drover-bench-server (10,000 instances in store, five readings
	 * over a minute and more): 25-32 MB with glibc's default (up to 8 arenas
	 * per core), 25-29 MB with 2, 16-17 MB with one.
	 */
	mallopt(M_ARENA_MAX, 1);
	struct app a = {0};
	int c, rc = 1;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'd':
			data_dir = optarg;
			break;
		case 'l':
			log_level = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'V':
			printf("droverd %s\n", DROVER_VERSION);
			return 0;
		default:
			fprintf(stderr, "droverd: unknown or incomplete option \"%s\"\n%s", argv[optind - 1],
			        usage);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "droverd: unexpected argument \"%s\"\n%s", argv[optind], usage);
		return 2;
	}
	if (log_level && srv_log_level_from_name(log_level) < 0) {
		fprintf(stderr, "droverd: --log-level: expected debug, info, warn or error, not \"%s\"\n",
		        log_level);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	drv_rpc_set_log(grpc_log_line);
	/*
	 * libuv's pool runs the blocking work: spawns waiting for a handshake,
	 * connects, health checks. Four threads would let a few hung drivers
	 * starve the rest.
	 */
	setenv("UV_THREADPOOL_SIZE", "16", 0);
	/* Everything droverd creates (store, key, token, socket) is private to its user. */
	umask(077);

	if (config_path) {
		if (srv_config_load(config_path, &a.cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "droverd: %s\n", err);
			return 1;
		}
	} else {
		a.cfg = srv_config_new_default();
	}
	if (!log_level)
		log_level = a.cfg->log_level;
	if (log_level)
		srv_log_set_level((enum srv_log_level)srv_log_level_from_name(log_level));
	if (a.cfg->log_file &&
	    srv_log_open_file(a.cfg->log_file, a.cfg->log_max_bytes, a.cfg->log_keep, err, sizeof(err)) < 0) {
		fprintf(stderr, "droverd: %s\n", err);
		srv_config_free(a.cfg);
		return 1;
	}
	/* Socket directories of droverds and drivers that were killed, before ours are made next to them. */
	int swept = drv_host_sweep_socket_dirs();
	if (swept > 0)
		srv_info("droverd", "removed %d stale socket director%s (their owner process is gone)", swept,
		         swept == 1 ? "y" : "ies");
	if (!data_dir)
		data_dir = a.cfg->data_dir ? a.cfg->data_dir : "./var";
	if (!data_dir[0]) {
		srv_error("droverd", "the data directory is an empty path (--data-dir or data_dir)");
		goto out;
	}
	/* mkdir_p() accepts an existing file; it failed later as "FILE/droverd.lock: Not a directory". */
	struct stat dst;
	if (mkdir_p(data_dir, 0700) < 0 || stat(data_dir, &dst) < 0) {
		srv_error("droverd", "data directory %s: %s", data_dir, strerror(errno));
		goto out;
	}
	if (!S_ISDIR(dst.st_mode)) {
		srv_error("droverd", "data directory %s: %s", data_dir, strerror(ENOTDIR));
		goto out;
	}
	char path[PATH_MAX];
	/*
	 * One droverd per data directory: a second one would take over the API
	 * socket and drive the same machines. The lock goes with the process.
	 */
	snprintf(path, sizeof(path), "%s/droverd.lock", data_dir);
	int lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
		srv_error("droverd", "%s: %s", path,
		          lock_fd < 0 ? strerror(errno)
		                      : "another droverd is running on this data directory");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/secret.key", data_dir);
	if (srv_secrets_open(path, &a.sec, err, sizeof(err)) < 0) {
		srv_error("droverd", "%s", err);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/drover.db", data_dir);
	if (srv_store_open(path, a.sec, &a.st, err, sizeof(err)) < 0) {
		srv_error("droverd", "store: %s", err);
		goto out;
	}
	char token[128];
	snprintf(path, sizeof(path), "%s/admin.token", data_dir);
	if (srv_api_load_token(path, token, sizeof(token), err, sizeof(err)) < 0) {
		srv_error("droverd", "%s", err);
		goto out;
	}
	char *server_id = NULL;
	/* Read failures stop here: a new id would orphan every machine tagged with the old one. */
	if (srv_store_meta_get(a.st, "server_id", &server_id) < 0) {
		srv_error("droverd", "store: %s", srv_store_errmsg(a.st));
		goto out;
	}
	if (!server_id) {
		unsigned char rnd[8];
		server_id = malloc(24);
		if (!server_id) {
			srv_error("droverd", "out of memory");
			goto out;
		}
		RAND_bytes(rnd, sizeof(rnd));
		snprintf(server_id, 24, "s-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
		         rnd[4], rnd[5], rnd[6], rnd[7]);
		if (srv_store_meta_set(a.st, "server_id", server_id) < 0) {
			srv_error("droverd", "store: %s", srv_store_errmsg(a.st));
			free(server_id);
			goto out;
		}
	}
	if (sync_config(&a) < 0) {
		free(server_id);
		goto out;
	}

	a.loop = uv_default_loop();
	if (srv_supervisor_new(a.loop, a.cfg, &a.sup, err, sizeof(err)) < 0) {
		srv_error("droverd", "%s", err);
		free(server_id);
		goto out;
	}
	if (srv_engine_new(a.loop, a.st, a.sup, a.cfg, server_id, &a.eng) < 0) {
		srv_error("droverd", "out of memory");
		free(server_id);
		goto out_loop;
	}
	srv_supervisor_set_event_cb(a.sup, on_driver_event, &a);
	free(server_id);

	char *sock;
	if (a.cfg->listen_unix) {
		sock = abs_path(a.cfg->listen_unix);
	} else {
		snprintf(path, sizeof(path), "%s/droverd.sock", data_dir);
		sock = abs_path(path);
	}
	if (!sock) {
		if (errno == ENOMEM)
			srv_error("droverd", "out of memory");
		else
			srv_error("droverd", "the directory of the API socket does not exist: %s",
			          a.cfg->listen_unix ? a.cfg->listen_unix : data_dir);
		goto out_loop;
	}
	struct srv_api_opts ao = {.loop = a.loop,
	                          .store = a.st,
	                          .sup = a.sup,
	                          .engine = a.eng,
	                          .cfg = a.cfg,
	                          .unix_path = sock,
	                          .token = token};
	if (srv_api_start(&ao, &a.api, err, sizeof(err)) < 0) {
		srv_error("droverd", "%s", err);
		free(sock);
		goto out_loop;
	}
	explicit_bzero(token, sizeof(token));

	/* Every driver starts now, not at the first request: `driver list` shows what each can do. */
	srv_supervisor_start_all(a.sup);
	struct srv_backend **bes;
	size_t nb;
	if (srv_store_backend_list(a.st, NULL, &bes, &nb) == 0) {
		for (size_t i = 0; i < nb; i++)
			if (srv_supervisor_ensure(a.sup, bes[i]->type) != 0)
				srv_warn(
				    "droverd",
				    "backend %s/%s: no driver of type \"%s\" (looked for drover-driver-%s)",
				    bes[i]->project, bes[i]->name, bes[i]->type, bes[i]->type);
		srv_backend_list_free(bes, nb);
	}
	srv_engine_start(a.eng);

	uv_signal_init(a.loop, &a.sigterm);
	uv_signal_init(a.loop, &a.sigint);
	/* A closed terminal (droverd in the foreground, as `make run` starts it) stops it cleanly too. */
	uv_signal_init(a.loop, &a.sighup);
	a.sigterm.data = a.sigint.data = a.sighup.data = &a;
	uv_signal_start(&a.sigterm, on_signal, SIGTERM);
	uv_signal_start(&a.sigint, on_signal, SIGINT);
	uv_signal_start(&a.sighup, on_signal, SIGHUP);
	srv_info("droverd", "droverd %s serving on unix:%s%s%s (data dir %s)", DROVER_VERSION, sock,
	         a.cfg->listen_tcp ? " and " : "", a.cfg->listen_tcp ? a.cfg->listen_tcp : "", data_dir);
	free(sock);

	uv_run(a.loop, UV_RUN_DEFAULT);
	rc = 0;
	srv_info("droverd", "stopped");

out_loop:
	if (!a.stopping) {
		if (a.eng)
			srv_engine_stop(a.eng);
		srv_supervisor_stop(a.sup);
		if (a.api)
			srv_api_stop(a.api);
		uv_walk(a.loop, close_walk, NULL);
	}
	uv_run(a.loop, UV_RUN_DEFAULT);
	srv_api_free(a.api);
	srv_supervisor_free(a.sup);
	srv_engine_free(a.eng);
	uv_loop_close(a.loop);
out:
	srv_store_close(a.st);
	srv_secrets_free(a.sec);
	srv_config_free(a.cfg);
	srv_log_close_file();
	return rc;
}

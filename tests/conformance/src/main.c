/*
 * drover-conformance: checks that a driver keeps the drover driver protocol.
 * main only parses arguments and wires the run together.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "conf_run.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: drover-conformance [options] --driver PATH [DRIVER-ARGS...]\n"
	           "       drover-conformance [options] --address HOST:PORT|unix:/PATH [TLS options]\n"
	           "       drover-conformance --list\n"
	           "\n"
	           "Checks that a drover driver keeps the driver protocol (proto/drover/compute/v1).\n"
	           "Checks are selected from the driver's own GetFeatures; every skip says why.\n"
	           "\n"
	           "target:\n"
	           "  --driver PATH [ARGS...]  spawn this driver binary (everything after PATH is its argv)\n"
	           "  --address ADDR           connect to a running driver (HOST:PORT or unix:/path)\n"
	           "  --ca FILE --cert FILE --key FILE   mutual TLS for --address (PEM files)\n"
	           "  --server-name NAME       name to verify in the driver's certificate\n"
	           "  --insecure               plain TCP for --address (loopback only)\n"
	           "options:\n"
	           "  --config FILE            JSON (or .yaml/.yml): {\"config\": {...}, \"secrets\": {...}, "
	           "\"params\": {...}}\n"
	           "  --repeat N               repeat mutating calls N times for idempotency (default 3)\n"
	           "  --focus PATTERN          run only checks matching (glob, or substring); repeatable\n"
	           "  --skip PATTERN           do not run checks matching; repeatable\n"
	           "  --list                   list the checks, their gating feature and rule, and exit\n"
	           "  --junit FILE             also write the results as JUnit XML\n"
	           "  --verbose                show progress inside checks\n"
	           "  --help                   this text\n"
	           "\n"
	           "Prints one line per check (PASS/FAIL/SKIP name: reason) and a closing line\n"
	           "\"N passed, N failed, N skipped\". Exit status: 0 all passed, 1 a check failed,\n"
	           "2 usage or config error.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "drover-conformance: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'drover-conformance --help'.\n");
	return CONF_EXIT_USAGE;
}

static void list_tests(void)
{
	for (size_t i = 0; i < conf_n_tests; i++) {
		const struct conf_test *t = &conf_tests[i];
		printf("%-40s %-18s %s\n", t->name, t->feature ? drv_feature_name(t->feature) : "-", t->rule);
	}
	printf("%-40s %-18s %s\n", "cleanup", "-",
	       "everything the harness created can be removed at the end (Terminate*/Delete* answer OK)");
}

static void on_signal(int sig)
{
	(void)sig;
	conf_interrupted = 1;
}

static void start_driver(struct conf_ctx *c)
{
	struct conf_opts *o = c->o;
	if (o->driver_path) {
		struct drv_spawn_opts so = {
		    .path = o->driver_path,
		    .args = o->driver_args,
		    .handshake_timeout_ms = o->handshake_timeout_ms,
		};
		c->start_code = drv_host_spawn(&so, &c->host, c->start_error, sizeof(c->start_error));
	} else {
		struct drv_connect_opts co = {
		    .address = o->address,
		    .ca_file = o->ca_file,
		    .cert_file = o->cert_file,
		    .key_file = o->key_file,
		    .server_name = o->server_name,
		    .insecure = o->insecure,
		    .connect_timeout_ms = o->handshake_timeout_ms,
		};
		c->start_code = drv_host_connect(&co, &c->host, c->start_error, sizeof(c->start_error));
	}
	if (c->start_code) {
		c->host = NULL;
		return;
	}

	/* Identity first: checks are selected from what the driver says about itself. */
	struct drv_status st = {0};
	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	if (drv_host_get_info(c->host, &ireq, &c->info, o->call_timeout_ms, &st) != 0)
		c->info = NULL;

	drv_get_features_request freq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *fresp = NULL;
	freq.config = &c->bc.buf.msg;
	int rc = drv_host_get_features(c->host, &freq, &fresp, o->call_timeout_ms, &st);
	if (rc) {
		char ans[700];
		snprintf(c->features_error, sizeof(c->features_error), "GetFeatures(config) answered %s",
		         conf_answer(rc, &st, ans, sizeof(ans)));
		return;
	}
	c->features_ok = true;
	for (size_t i = 0; i < fresp->n_features; i++)
		if ((unsigned)fresp->features[i] < 64)
			c->features |= DRV_FEATURE_BIT(fresp->features[i]);
	drv_response_free(&fresp->base);
}

int main(int argc, char **argv)
{
	struct conf_opts o = {0};
	conf_config_defaults(&o);
	/* Patterns are few; a fixed table keeps the early usage-error returns leak-free. */
	enum { MAX_PATTERNS = 64 };
	static const char *focus[MAX_PATTERNS + 1], *skip[MAX_PATTERNS + 1];
	size_t nfocus = 0, nskip = 0;
	o.focus = focus;
	o.skip = skip;
	const char *config_file = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_val = i + 1 < argc;
#define VALUE()                                                                                              \
	do {                                                                                                 \
		if (!has_val)                                                                                \
			return usage_error("%s needs a value", a);                                           \
	} while (0)
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--driver") == 0) {
			VALUE();
			o.driver_path = argv[++i];
			/* Everything after the path is the driver's own argv. */
			o.driver_args = (const char *const *)&argv[i + 1];
			break;
		} else if (strcmp(a, "--address") == 0) {
			VALUE();
			o.address = argv[++i];
		} else if (strcmp(a, "--ca") == 0) {
			VALUE();
			o.ca_file = argv[++i];
		} else if (strcmp(a, "--cert") == 0) {
			VALUE();
			o.cert_file = argv[++i];
		} else if (strcmp(a, "--key") == 0) {
			VALUE();
			o.key_file = argv[++i];
		} else if (strcmp(a, "--server-name") == 0) {
			VALUE();
			o.server_name = argv[++i];
		} else if (strcmp(a, "--insecure") == 0) {
			o.insecure = true;
		} else if (strcmp(a, "--config") == 0) {
			VALUE();
			config_file = argv[++i];
		} else if (strcmp(a, "--repeat") == 0) {
			VALUE();
			char *end;
			long n = strtol(argv[++i], &end, 10);
			if (*end || n < 2 || n > 100)
				return usage_error("--repeat %s: expected an integer from 2 to 100", argv[i]);
			o.repeat = (int)n;
		} else if (strcmp(a, "--focus") == 0) {
			VALUE();
			if (nfocus == MAX_PATTERNS)
				return usage_error("%s: at most 64 patterns", a);
			focus[nfocus++] = argv[++i];
		} else if (strcmp(a, "--skip") == 0) {
			VALUE();
			if (nskip == MAX_PATTERNS)
				return usage_error("%s: at most 64 patterns", a);
			skip[nskip++] = argv[++i];
		} else if (strcmp(a, "--list") == 0) {
			o.list = true;
		} else if (strcmp(a, "--junit") == 0) {
			VALUE();
			o.junit_file = argv[++i];
		} else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
			o.verbose = true;
		} else {
			return usage_error("unknown argument \"%s\"", a);
		}
#undef VALUE
	}

	if (o.list) {
		list_tests();
		return 0;
	}
	if (!o.driver_path == !o.address)
		return usage_error("%s", "give exactly one of --driver PATH or --address ADDR");
	if (o.address && !o.insecure && !(o.ca_file && o.cert_file && o.key_file))
		return usage_error("%s",
		                   "--address needs --ca, --cert and --key (mutual TLS), or --insecure");

	char err[1024];
	if (config_file && conf_config_load(&o, config_file, err, sizeof(err))) {
		fprintf(stderr, "drover-conformance: --config %s\n", err);
		conf_config_free(&o);
		return CONF_EXIT_USAGE;
	}

	/* Ctrl-C or a CI timeout's SIGTERM still gets the cleanup (a real cloud bills what is left). */
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct conf_ctx c = {.o = &o};
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(c.run_id, sizeof(c.run_id), "%lx%04lx", (unsigned long)(ts.tv_sec & 0xffffff),
	         (unsigned long)((ts.tv_nsec / 1000) ^ (unsigned long)getpid()) & 0xffff);
	conf_bc_init(&c.bc, o.config, NULL, o.secrets, NULL);

	start_driver(&c);

	struct conf_report report = {0};
	conf_run_all(&c, &report);

	int exit_status = 0;
	if (c.host && o.driver_path)
		drv_host_stop(c.host, o.shutdown_grace_ms, &exit_status);
	drv_host_free(c.host);

	int passed, failed, skipped;
	conf_report_summary(&report, &passed, &failed, &skipped);
	int rc = failed || conf_interrupted ? CONF_EXIT_FAILED : CONF_EXIT_OK;
	if (conf_interrupted)
		fprintf(stderr, "drover-conformance: interrupted; the checks after the signal did not run\n");
	if (o.junit_file) {
		char suite[300];
		snprintf(suite, sizeof(suite), "drover-conformance %s",
		         c.info && c.info->type[0] ? c.info->type : "driver");
		if (conf_report_junit(&report, o.junit_file, suite, err, sizeof(err))) {
			fprintf(stderr, "drover-conformance: %s\n", err);
			rc = CONF_EXIT_FAILED;
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	fflush(stdout);

	conf_report_free(&report);
	if (c.info)
		drv_response_free(&c.info->base);
	conf_track_free(&c);
	conf_bc_free(&c.bc);
	conf_config_free(&o);
	return rc;
}

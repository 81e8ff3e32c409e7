/*
 * The sim driver as a process, through the SDK's hosting half: what only the
 * real binary shows — the validate hook's diagnostics, rejected credentials,
 * injected faults and latency (and that identity calls never fault), one
 * process serving two clouds (state files) at once, and idle memory.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "drover/host.h"
#include "sim_test_util.h"

#ifndef SIM_BIN
#error SIM_BIN must name the drover-driver-sim binary
#endif

#define CALL_MS 5000
#define RACE_N 40

static struct drv_host *spawn_sim(void)
{
	struct drv_host *h = NULL;
	char err[1024];
	struct drv_spawn_opts o = {.path = SIM_BIN, .name = "sim"};
	if (drv_host_spawn(&o, &h, err, sizeof(err)) != 0)
		fail_msg("spawn: %s", err);
	return h;
}

/* A BackendConfig with config JSON and at most one secret (api_key). */
struct config {
	drv_backend_config c;
	drv_secret_entry secret;
	drv_secret_entry *secrets[1];
};

static drv_backend_config *config(struct config *cf, const char *json, const char *api_key)
{
	drover__compute__v1__backend_config__init(&cf->c);
	cf->c.config_json = (char *)json;
	if (api_key) {
		drover__compute__v1__backend_config__secrets_entry__init(&cf->secret);
		cf->secret.key = "api_key";
		cf->secret.value = (char *)api_key;
		cf->secrets[0] = &cf->secret;
		cf->c.secrets = cf->secrets;
		cf->c.n_secrets = 1;
	}
	return &cf->c;
}

#define FREE(m)                                                                                              \
	do {                                                                                                 \
		if (m)                                                                                       \
			drv_response_free(&(m)->base);                                                       \
		(m) = NULL;                                                                                  \
	} while (0)

static drv_validate_config_response *validate(struct drv_host *h, drv_backend_config *c)
{
	drv_validate_config_request req = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
	drv_validate_config_response *resp = NULL;
	struct drv_status st;
	req.config = c;
	if (drv_host_validate_config(h, &req, &resp, CALL_MS, &st) != 0)
		fail_msg("ValidateConfig: %s", st.message);
	return resp;
}

static const drv_diagnostic *diag_at(const drv_validate_config_response *r, const char *path)
{
	for (size_t i = 0; i < r->n_diagnostics; i++)
		if (strcmp(r->diagnostics[i]->field_path, path) == 0)
			return r->diagnostics[i];
	return NULL;
}

static int get_offers(struct drv_host *h, drv_backend_config *c, drv_get_offers_response **resp,
                      struct drv_status *st, int timeout_ms)
{
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	req.config = c;
	*resp = NULL;
	return drv_host_get_offers(h, &req, resp, timeout_ms, st);
}

static void test_validate_hook(void **state)
{
	struct drv_host *h = spawn_sim();
	struct config cf;
	char *dir = make_temp_dir();
	char json[1024];

	snprintf(json, sizeof(json),
	         "{\"state_file\": \"%s/s.json\", \"regions\": [\"us-east-1\", \"eastus\"]}", dir);
	drv_validate_config_response *r = validate(h, config(&cf, json, "good-key"));
	assert_true(r->valid);
	assert_int_equal(r->n_diagnostics, 0);
	FREE(r);

	r = validate(h, config(&cf, "{}", "invalid"));
	assert_false(r->valid);
	const drv_diagnostic *d = diag_at(r, "/secrets/api_key");
	assert_non_null(d);
	assert_int_equal(d->severity, DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR);
	assert_string_equal(d->summary, "credentials rejected");
	/* The secret's value appears nowhere but in the rule it broke. */
	FREE(r);

	r = validate(h, config(&cf, "{\"regions\": [\"us-east-1\", \"atlantis-1\"]}", NULL));
	assert_false(r->valid);
	d = diag_at(r, "/regions/1");
	assert_non_null(d);
	assert_non_null(strstr(d->detail, "atlantis-1"));
	assert_null(diag_at(r, "/regions/0"));
	FREE(r);

	snprintf(json, sizeof(json), "{\"state_file\": \"%s/missing/s.json\"}", dir);
	r = validate(h, config(&cf, json, NULL));
	assert_false(r->valid);
	assert_non_null(diag_at(r, "/state_file"));
	FREE(r);

	snprintf(json, sizeof(json), "%s/corrupt.json", dir);
	FILE *fp = fopen(json, "w");
	fputs("not json", fp);
	fclose(fp);
	char json2[1100];
	snprintf(json2, sizeof(json2), "{\"state_file\": \"%s\"}", json);
	r = validate(h, config(&cf, json2, NULL));
	assert_false(r->valid);
	d = diag_at(r, "/state_file");
	assert_non_null(d);
	assert_non_null(strstr(d->detail, "not valid JSON"));
	FREE(r);

	/* Schema checks by the SDK from the declared fields. */
	r = validate(h, config(&cf, "{\"error_rate\": 1.5}", NULL));
	assert_false(r->valid);
	assert_non_null(diag_at(r, "/error_rate"));
	FREE(r);

	drv_host_free(h);
	rm_rf(dir);
	free(dir);
}

static void test_credentials_and_faults(void **state)
{
	struct drv_host *h = spawn_sim();
	struct config cf;
	struct drv_status st;
	drv_get_offers_response *offers;

	assert_int_equal(get_offers(h, config(&cf, "{}", "invalid"), &offers, &st, CALL_MS),
	                 DRV_EUNAUTHENTICATED);
	assert_non_null(strstr(st.message, "credentials rejected"));
	assert_null(strstr(st.message, "invalid\"")); /* no echo of a secret's value */

	/* error_rate 1: every provider call fails, identity calls never do. */
	drv_backend_config *faulty = config(&cf, "{\"error_rate\": 1}", NULL);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(get_offers(h, faulty, &offers, &st, CALL_MS), DRV_EUNAVAILABLE);
		assert_non_null(strstr(st.message, "injected fault"));
	}
	drv_validate_config_response *v = validate(h, faulty);
	assert_true(v->valid);
	FREE(v);
	drv_get_features_request fr = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *features = NULL;
	fr.config = faulty;
	assert_int_equal(drv_host_get_features(h, &fr, &features, CALL_MS, &st), 0);
	assert_int_equal(features->n_features, 9);
	FREE(features);

	/* fail_termination: creating works, terminating never does. */
	drv_backend_config *stuck = config(&cf, "{\"fail_termination\": true}", NULL);
	assert_int_equal(get_offers(h, stuck, &offers, &st, CALL_MS), 0);
	drv_offer *offer = NULL;
	for (size_t i = 0; i < offers->n_offers && !offer; i++)
		if (offers->offers[i]->availability ==
		    DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE)
			offer = offers->offers[i];
	assert_non_null(offer);
	drv_create_instance_request cr = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	ic.idempotency_key = "stuck-1";
	cr.config = stuck;
	cr.offer = offer;
	cr.instance = &ic;
	drv_create_instance_response *created = NULL;
	assert_int_equal(drv_host_create_instance(h, &cr, &created, CALL_MS, &st), 0);
	drv_terminate_instance_request tr = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
	drv_terminate_instance_response *tresp = NULL;
	tr.config = stuck;
	tr.instance_id = created->data->instance_id;
	assert_int_equal(drv_host_terminate_instance(h, &tr, &tresp, CALL_MS, &st), DRV_EUNAVAILABLE);
	assert_non_null(strstr(st.message, "fail_termination"));
	tr.config = config(&cf, "{}", NULL);
	assert_int_equal(drv_host_terminate_instance(h, &tr, &tresp, CALL_MS, &st), 0);
	FREE(tresp);
	FREE(created);
	FREE(offers);
	drv_host_free(h);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_latency_and_deadline(void **state)
{
	struct drv_host *h = spawn_sim();
	struct config cf;
	struct drv_status st;
	drv_get_offers_response *offers;

	double t0 = now_ms();
	assert_int_equal(get_offers(h, config(&cf, "{\"latency_ms\": 150}", NULL), &offers, &st, CALL_MS), 0);
	assert_true(now_ms() - t0 >= 140);
	FREE(offers);

	/* A deadline shorter than the latency ends the call; the driver stays healthy. */
	t0 = now_ms();
	assert_int_equal(get_offers(h, config(&cf, "{\"latency_ms\": 20000}", NULL), &offers, &st, 200),
	                 DRV_EDEADLINE);
	assert_true(now_ms() - t0 < 2000);
	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);
	assert_int_equal(get_offers(h, config(&cf, "{}", NULL), &offers, &st, CALL_MS), 0);
	FREE(offers);
	drv_host_free(h);
}

static size_t list_count(struct drv_host *h, drv_backend_config *c)
{
	drv_list_instances_request req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	drv_list_instances_response *resp = NULL;
	struct drv_status st;
	req.config = c;
	if (drv_host_list_instances(h, &req, &resp, CALL_MS, &st) != 0)
		fail_msg("ListInstances: %s", st.message);
	size_t n = resp->n_instances;
	FREE(resp);
	return n;
}

/* One driver process, two backends with their own state files: two separate clouds. */
static void test_two_clouds_one_process(void **state)
{
	struct drv_host *h = spawn_sim();
	char *dir = make_temp_dir();
	char ja[512], jb[512], fa[400], fb[400];
	snprintf(fa, sizeof(fa), "%s/a.json", dir);
	snprintf(fb, sizeof(fb), "%s/b.json", dir);
	snprintf(ja, sizeof(ja), "{\"state_file\": \"%s\", \"capacity\": 1}", fa);
	snprintf(jb, sizeof(jb), "{\"state_file\": \"%s\", \"capacity\": 1}", fb);
	struct config ca, cb;
	drv_backend_config *a = config(&ca, ja, NULL), *b = config(&cb, jb, NULL);
	struct drv_status st;

	struct test_arena t;
	test_arena_init(&t);
	drv_create_instance_request *cr = make_create(&t, "m7i.2xlarge", "eu-central-1", false, "two-1");
	cr->config = a;
	drv_create_instance_response *resp = NULL;

	if (drv_host_create_instance(h, cr, &resp, CALL_MS, &st) != 0)
		fail_msg("CreateInstance: %s", st.message);
	FREE(resp);
	/* Capacity is per cloud: b still has room for the same pool. */
	cr->instance->idempotency_key = "two-2";
	assert_int_equal(drv_host_create_instance(h, cr, &resp, CALL_MS, &st), DRV_ENOCAPACITY);
	assert_string_equal(st.message, "no capacity for m7i.2xlarge in eu-central-1");
	cr->config = b;
	assert_int_equal(drv_host_create_instance(h, cr, &resp, CALL_MS, &st), 0);
	FREE(resp);

	assert_int_equal(list_count(h, a), 1);
	assert_int_equal(list_count(h, b), 1);
	struct config cm;
	assert_int_equal(list_count(h, config(&cm, "{}", NULL)), 0);
	struct stat sb;
	assert_int_equal(stat(fa, &sb), 0);
	assert_int_equal(stat(fb, &sb), 0);

	/* After a restart both clouds still hold their machine. */
	drv_host_free(h);
	h = spawn_sim();
	assert_int_equal(list_count(h, a), 1);
	assert_int_equal(list_count(h, b), 1);
	drv_host_free(h);
	test_arena_free(&t);
	rm_rf(dir);
	free(dir);
}

/* Two driver processes on one state file (e.g. a restart overlapping a slow shutdown) see each other's
 * changes. */
static void test_two_processes_one_file(void **state)
{
	struct drv_host *h1 = spawn_sim(), *h2 = spawn_sim();
	char *dir = make_temp_dir();
	char json[512];
	snprintf(json, sizeof(json), "{\"state_file\": \"%s/shared.json\"}", dir);
	struct config cf;
	drv_backend_config *c = config(&cf, json, NULL);
	assert_int_equal(list_count(h2, c), 0);

	struct test_arena t;
	test_arena_init(&t);
	drv_create_instance_request *cr = make_create(&t, "m7i.2xlarge", "eu-central-1", false, "shared-1");
	cr->config = c;
	drv_create_instance_response *r1 = NULL, *r2 = NULL;
	struct drv_status st;
	if (drv_host_create_instance(h1, cr, &r1, CALL_MS, &st) != 0)
		fail_msg("CreateInstance: %s", st.message);
	assert_int_equal(list_count(h2, c), 1);
	/* The key is known to the other process too: no second machine. */
	assert_int_equal(drv_host_create_instance(h2, cr, &r2, CALL_MS, &st), 0);
	assert_string_equal(r1->data->instance_id, r2->data->instance_id);
	FREE(r1);
	FREE(r2);
	drv_host_free(h1);
	drv_host_free(h2);
	test_arena_free(&t);
	rm_rf(dir);
	free(dir);
}

/*
 * The config's bounds: delays that would overflow the clock or never end, and
 * more synthetic offers than one answer can carry, are refused at their field
 * path; the largest allowed synthetic set still reaches the host.
 */
static void test_config_limits(void **state)
{
	struct drv_host *h = spawn_sim();
	struct config cf;
	drv_validate_config_response *r = validate(
	    h, config(&cf,
	              "{\"provisioning_delay_ms\": 9223372036854775807, \"latency_ms\": 86400000000, "
	              "\"synthetic_offers\": 1000000}",
	              NULL));
	assert_false(r->valid);
	const char *paths[] = {"/provisioning_delay_ms", "/latency_ms", "/synthetic_offers"};
	for (size_t i = 0; i < 3; i++) {
		const drv_diagnostic *d = diag_at(r, paths[i]);
		if (!d)
			fail_msg("no diagnostic at %s", paths[i]);
		assert_int_equal(d->severity, DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR);
	}
	FREE(r);

	/* A provider call with such a config is refused before it sleeps or creates anything. */
	struct drv_status st;
	drv_get_offers_response *offers;
	assert_int_equal(
	    get_offers(h, config(&cf, "{\"latency_ms\": 86400000000}", NULL), &offers, &st, CALL_MS),
	    DRV_EINVAL);
	assert_non_null(strstr(st.message, "/latency_ms"));
	FREE(offers);

	char json[128];
	snprintf(json, sizeof(json), "{\"synthetic_offers\": %d}", SIM_MAX_SYNTHETIC_OFFERS);
	if (get_offers(h, config(&cf, json, NULL), &offers, &st, 30000) != 0)
		fail_msg("GetOffers with %d synthetic offers: %s", SIM_MAX_SYNTHETIC_OFFERS, st.message);
	assert_true(offers->n_offers > SIM_MAX_SYNTHETIC_OFFERS);
	FREE(offers);
	drv_host_free(h);
}

/* One of two processes creating machines on one state file at the same time. */
struct racer {
	struct drv_host *h;
	drv_backend_config *c;
	char prefix;
	char shared_ids[RACE_N][32]; /* the instance id each shared key got from this process */
	int failures;
};

static void *race_creates(void *arg)
{
	struct racer *r = arg;
	struct test_arena t;
	test_arena_init(&t);
	for (int i = 0; i < RACE_N; i++) {
		for (int shared = 0; shared < 2; shared++) {
			char key[32];
			snprintf(key, sizeof(key), "%c-%d", shared ? 's' : r->prefix, i);
			drv_create_instance_request *cr =
			    make_create(&t, "m7i.large", "us-east-1", false, key);
			cr->config = r->c;
			drv_create_instance_response *resp = NULL;
			struct drv_status st;
			if (drv_host_create_instance(r->h, cr, &resp, CALL_MS, &st) != 0) {
				r->failures++;
				continue;
			}
			if (shared)
				snprintf(r->shared_ids[i], sizeof(r->shared_ids[i]), "%s",
				         resp->data->instance_id);
			FREE(resp);
		}
	}
	test_arena_free(&t);
	return NULL;
}

/*
 * Two processes mutating one state file at once: each read-modify-write
 * holds the file's lock, so no answered creation is lost to the other's
 * save, and a key both use at the same moment makes one machine.
 */
static void test_two_processes_race(void **state)
{
	char *dir = make_temp_dir();
	char json[512];
	snprintf(json, sizeof(json), "{\"state_file\": \"%s/race.json\", \"capacity\": 1000}", dir);
	struct config cf;
	drv_backend_config *c = config(&cf, json, NULL);
	struct racer a = {.h = spawn_sim(), .c = c, .prefix = 'a'},
	             b = {.h = spawn_sim(), .c = c, .prefix = 'b'};
	pthread_t ta, tb;
	assert_int_equal(pthread_create(&ta, NULL, race_creates, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, race_creates, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(a.failures + b.failures, 0);
	for (int i = 0; i < RACE_N; i++)
		assert_string_equal(a.shared_ids[i], b.shared_ids[i]);
	drv_host_free(a.h);
	drv_host_free(b.h);

	struct drv_host *h = spawn_sim();
	assert_int_equal(list_count(h, c), 3 * RACE_N);
	drv_host_free(h);
	rm_rf(dir);
	free(dir);
}

/*
 * crash_rate 1: the driver aborts during every provider call, sometimes before
 * and sometimes after the call's effect. After a crash "after", the machine
 * exists though nobody was told: the orphan ListInstances must reveal.
 */
/*
 * With one seed, the first provider call of each new driver process does not
 * always meet the same fault: the draws used to depend on the seed alone, and
 * a driver whose first draw was a crash crashed on its first call after every
 * restart, for ever.
 */
static void test_fault_draws_per_process(void **state)
{
	struct config cf;
	int crashed = 0, answered = 0;
	for (int i = 0; i < 16 && !(crashed && answered); i++) {
		struct drv_host *h = spawn_sim();
		drv_get_offers_response *resp = NULL;
		struct drv_status st;
		int rc = get_offers(h, config(&cf, "{\"crash_rate\": 0.5, \"seed\": 7}", NULL), &resp, &st,
		                    CALL_MS);
		if (rc == 0) {
			answered++;
			drv_response_free(resp);
		} else {
			assert_int_equal(rc, DRV_EUNAVAILABLE);
			int status = 0;
			assert_int_equal(drv_host_wait(h, 3000, &status), 0);
			crashed++;
		}
		drv_host_free(h);
	}
	assert_true(crashed > 0);
	assert_true(answered > 0);
}

static void test_injected_crash(void **state)
{
	char *dir = make_temp_dir();
	char crashing[512], calm[512];
	int before = 0, after = 0;
	for (int seed = 1; seed <= 12 && !(before && after); seed++) {
		snprintf(crashing, sizeof(crashing),
		         "{\"state_file\": \"%s/c.json\", \"crash_rate\": 1, \"seed\": %d}", dir, seed);
		snprintf(calm, sizeof(calm), "{\"state_file\": \"%s/c.json\"}", dir);
		struct config cc, ck;
		struct drv_host *h = spawn_sim();
		size_t had = list_count(h, config(&ck, calm, NULL));

		char key[32];
		snprintf(key, sizeof(key), "crash-%d", seed);
		struct test_arena t;
		test_arena_init(&t);
		drv_create_instance_request *cr = make_create(&t, "m7i.2xlarge", "eu-central-1", false, key);
		cr->config = config(&cc, crashing, NULL);
		drv_create_instance_response *resp = NULL;
		struct drv_status st;
		assert_int_equal(drv_host_create_instance(h, cr, &resp, CALL_MS, &st), DRV_EUNAVAILABLE);
		int status = 0;
		assert_int_equal(drv_host_wait(h, 3000, &status), 0);
		assert_int_equal(status, 128 + 6); /* SIGABRT */
		drv_host_free(h);
		test_arena_free(&t);

		h = spawn_sim();
		size_t now = list_count(h, config(&ck, calm, NULL));
		drv_host_free(h);
		if (now == had + 1)
			after++;
		else if (now == had)
			before++;
		else
			fail_msg("%zu instances after a crash, %zu before", now, had);
	}
	assert_true(before > 0);
	assert_true(after > 0);
	rm_rf(dir);
	free(dir);
}

/* A "Name: N kB" line of /proc/<pid>/status, or -1. */
static long status_kib(pid_t pid, const char *name)
{
	char path[64], line[256], fmt[64];
	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	snprintf(fmt, sizeof(fmt), "%s: %%ld", name);
	FILE *fp = fopen(path, "r");
	if (!fp)
		return -1;
	long kib = -1;
	while (fgets(line, sizeof(line), fp))
		if (sscanf(line, fmt, &kib) == 1)
			break;
	fclose(fp);
	return kib;
}

/*
 * The sim's own memory at idle, after a GetOffers of 1,000+ offers: the
 * anonymous part of the RSS (the binary's mapped pages are shared and belong
 * to the SDK's budget). Also prints the RPC time of that GetOffers.
 */
static void test_memory_and_big_offers(void **state)
{
	struct drv_host *h = spawn_sim();
	struct config cf;
	struct drv_status st;
	drv_get_offers_response *offers;
	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);
	long idle = status_kib(drv_host_pid(h), "VmRSS");
	print_message("idle driver VmRSS %ld KiB\n", idle);
	assert_true(idle > 0);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
	/* The budget of the brief, for optimised builds (debug and sanitizer builds are bigger). */
	assert_true(idle <= 10 * 1024);
#endif
	drv_backend_config *c = config(&cf, "{\"synthetic_offers\": 1000}", NULL);
	assert_int_equal(get_offers(h, c, &offers, &st, CALL_MS), 0);
	FREE(offers);
	double best = 1e9;
	size_t n = 0;
	for (int i = 0; i < 10; i++) {
		double t0 = now_ms();
		assert_int_equal(get_offers(h, c, &offers, &st, CALL_MS), 0);
		double dt = now_ms() - t0;
		best = dt < best ? dt : best;
		n = offers->n_offers;
		FREE(offers);
	}
	assert_true(n >= 2000);
	long anon = status_kib(drv_host_pid(h), "RssAnon");
	print_message("GetOffers(%zu offers) round trip best of 10: %.2f ms; driver RssAnon %ld KiB\n", n,
	              best, anon);
	assert_true(anon > 0);
#ifndef __SANITIZE_ADDRESS__
	/* Sanitizer builds carry shadow memory; the figure means nothing there. */
	assert_true(anon < 6 * 1024);
#endif
	drv_host_free(h);
}

static void test_command_line(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "'%s' --help", SIM_BIN);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char buf[8192];
	size_t n = fread(buf, 1, sizeof(buf) - 1, p);
	buf[n] = '\0';
	assert_int_equal(pclose(p), 0);
	assert_non_null(strstr(buf, "sim"));

	snprintf(cmd, sizeof(cmd), "'%s' --info", SIM_BIN);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(buf, 1, sizeof(buf) - 1, p);
	buf[n] = '\0';
	assert_int_equal(pclose(p), 0);
	assert_non_null(strstr(buf, "\"type\": \"sim\""));
	assert_non_null(strstr(buf, "PRIVATE_GATEWAYS"));
	assert_non_null(strstr(buf, "synthetic_offers"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_validate_hook),
	    cmocka_unit_test(test_credentials_and_faults),
	    cmocka_unit_test(test_latency_and_deadline),
	    cmocka_unit_test(test_two_clouds_one_process),
	    cmocka_unit_test(test_config_limits),
	    cmocka_unit_test(test_two_processes_one_file),
	    cmocka_unit_test(test_two_processes_race),
	    cmocka_unit_test(test_injected_crash),
	    cmocka_unit_test(test_fault_draws_per_process),
	    cmocka_unit_test(test_memory_and_big_offers),
	    cmocka_unit_test(test_command_line),
	};
	return cmocka_run_group_tests_name("sim_driver", tests, NULL, NULL);
}

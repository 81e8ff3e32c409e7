/* srv_config: the YAML file, good and bad, with line numbers in errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "srv_config.h"
#include "testutil.h"

static const char good[] = "listen: {unix: ./var/droverd.sock}\n"
                           "data_dir: ./var\n"
                           "drivers:\n"
                           "  dirs: [./build/bin]\n"
                           "  commands: [{type: sim2, path: /opt/x/drover-driver-sim, args: [--flag], "
                           "allow_tcp_handshake: true}]\n"
                           "  remote:\n"
                           "    - {type: sim, name: far-sim, address: 127.0.0.1:4100, ca: ca.pem,\n"
                           "       cert: c.pem, key: k.pem}\n"
                           "  handshake_timeout_ms: 2500\n"
                           "  offers_timeout_ms: 700\n"
                           "projects:\n"
                           "  - name: main\n"
                           "    backends:\n"
                           "      - name: sim\n"
                           "        type: sim\n"
                           "        config: {capacity: 4, state_file: ./var/s.json, price_factor: 1.5,\n"
                           "                 spot: true, regions: [eu, us], label: \"007\", none: ~}\n"
                           "        secrets: {api_key: \"abc\"}\n"
                           "      - {name: other, type: never-heard-of-it}\n"
                           "provisioning: {max_tries: 5, running_check_interval_ms: 0}\n"
                           "log: {file: ./var/d.log, max_bytes: 1048576, keep: 0, driver_lines_per_s: 10}\n";

static void test_good(void **state)
{
	struct srv_config *c;
	char err[512] = "";
	int rc = srv_config_parse("good.yaml", good, strlen(good), &c, err, sizeof(err));
	if (rc)
		fail_msg("%s", err);
	assert_string_equal(c->listen_unix, "./var/droverd.sock");
	assert_string_equal(c->data_dir, "./var");
	assert_int_equal(c->n_driver_dirs, 1);
	assert_string_equal(c->driver_dirs[0], "./build/bin");
	assert_int_equal(c->n_commands, 1);
	assert_string_equal(c->commands[0].type, "sim2");
	assert_int_equal(c->commands[0].n_args, 1);
	assert_string_equal(c->commands[0].args[0], "--flag");
	assert_null(c->commands[0].args[1]);
	assert_true(c->commands[0].allow_tcp_handshake);
	assert_string_equal(c->log_file, "./var/d.log");
	assert_int_equal(c->log_max_bytes, 1048576);
	assert_int_equal(c->log_keep, 0);
	assert_int_equal(c->driver_log_lines_per_s, 10);
	assert_int_equal(c->driver_log_bytes_per_s, 1 << 20); /* defaults kept */
	assert_int_equal(c->driver_log_line_max, 16384);
	assert_int_equal(c->n_remotes, 1);
	assert_string_equal(c->remotes[0].name, "far-sim");
	assert_string_equal(c->remotes[0].cert, "c.pem");
	assert_int_equal(c->handshake_timeout_ms, 2500);
	assert_int_equal(c->offers_timeout_ms, 700);
	assert_int_equal(c->call_timeout_ms, 10000); /* default kept */
	assert_int_equal(c->max_tries, 5);
	assert_int_equal(c->running_check_interval_ms, 0);
	assert_int_equal(c->n_projects, 1);
	assert_int_equal(c->projects[0].n_backends, 2);
	struct srv_config_backend *b = &c->projects[0].backends[0];
	/* Plain scalars become JSON numbers/bools/null; quoted ones stay strings. */
	assert_string_equal(b->config_json,
	                    "{\"capacity\":4,\"label\":\"007\",\"none\":null,\"price_factor\":1.5,"
	                    "\"regions\":[\"eu\",\"us\"],\"spot\":true,"
	                    "\"state_file\":\"./var/s.json\"}");
	assert_int_equal(b->n_secrets, 1);
	assert_string_equal(b->secrets[0].name, "api_key");
	assert_string_equal(b->secrets[0].value, "abc");
	assert_int_equal(b->line, 14);
	/* Any type string is accepted; the server keeps no list. */
	assert_string_equal(c->projects[0].backends[1].type, "never-heard-of-it");
	assert_string_equal(c->projects[0].backends[1].config_json, "{}");
	srv_config_free(c);
}

struct bad_case {
	const char *yaml;
	const char *expect; /* substring of the error */
};

static void test_bad(void **state)
{
	const struct bad_case cases[] = {
	    {"projects:\n  - name: main\n    backends:\n      - {name: a, type: sim}\n      - name: b\n"
	     "        type: [x]\n",
	     "bad.yaml:6: projects[0].backends[1].type: expected a string, found a list"},
	    {"projects:\n  - name: main\n    backends:\n      - {name: a}\n",
	     "bad.yaml:4: projects[0].backends[0]: missing field 'type'"},
	    {"drivers:\n  handshake_timeout_ms: soon\n",
	     "bad.yaml:2: drivers.handshake_timeout_ms: expected an integer, found \"soon\""},
	    {"drivers:\n  call_timeout_ms: -5\n", "bad.yaml:2: drivers.call_timeout_ms: -5 is out of range"},
	    {"provisioning:\n  running_check_interval_ms: -1\n",
	     "bad.yaml:2: provisioning.running_check_interval_ms: -1 is out of range"},
	    {"listen: {unix: a}\nlisen: {}\n", "bad.yaml:2: lisen: unknown field"},
	    {"projects: {name: main}\n", "bad.yaml:1: projects: expected a list, found a mapping"},
	    {"projects:\n  - name: a\n  - name: a\n",
	     "bad.yaml:3: projects[1]: duplicate project name \"a\""},
	    /* The first repeat in file order (b), not the first in sorted order (a). */
	    {"projects:\n  - name: b\n  - name: a\n  - name: b\n  - name: a\n",
	     "bad.yaml:4: projects[2]: duplicate project name \"b\""},
	    {"projects:\n  - name: main\n    backends:\n      - {name: b, type: sim}\n"
	     "      - {name: a, type: sim}\n      - {name: b, type: sim}\n      - {name: a, type: sim}\n",
	     "bad.yaml:6: projects[0].backends[2]: duplicate backend name \"b\" in this project"},
	    /* A repeat comes before a later item's own fault, as the file reads. */
	    {"projects:\n  - name: main\n    backends:\n      - {name: a, type: sim}\n"
	     "      - {name: a, type: sim}\n      - {name: c}\n",
	     "bad.yaml:5: projects[0].backends[1]: duplicate backend name \"a\" in this project"},
	    {"projects:\n  - name: main\n    backends:\n      - {name: a, type: sim}\n"
	     "      - {name: a}\n",
	     "bad.yaml:5: projects[0].backends[1]: missing field 'type'"},
	    {"projects:\n  - name: a\n  - name: a\n  - name: Bad\n",
	     "bad.yaml:3: projects[1]: duplicate project name \"a\""},
	    {"projects:\n  - name: main\n    backends:\n      - {name: a, type: sim, secrets: {k: [1]}}\n",
	     "bad.yaml:4: projects[0].backends[0].secrets.k: expected a string"},
	    {"drivers:\n  remote:\n    - {type: sim, address: 127.0.0.1:1}\n",
	     "bad.yaml:3: drivers.remote[0]: a remote driver needs ca, cert and key"},
	    {"a: [unclosed\n", "bad.yaml:2: YAML syntax error"},
	    {"- just\n- a list\n", "bad.yaml:1: (top level): expected a mapping, found a list"},
	    {"log_level: loud\n", "bad.yaml:1: log_level: expected debug, info, warn or error"},
	    {"log: {file: x.log, max_bytes: 100}\n",
	     "bad.yaml:1: log.max_bytes: 100 is out of range [65536,"},
	    {"log:\n  keep: -1\n", "bad.yaml:2: log.keep: -1 is out of range [0, 100]"},
	    {"log: {colour: red}\n", "bad.yaml:1: log.colour: unknown field (expected file, max_bytes"},
	    {"log: {driver_line_max: 10}\n", "bad.yaml:1: log.driver_line_max: 10 is out of range"},
	    {"drivers:\n  commands: [{type: a, path: b, allow_tcp_handshake: maybe}]\n",
	     "bad.yaml:2: drivers.commands[0].allow_tcp_handshake: expected true or false"},
	    /* A key given twice: a list given twice was read past its array before. */
	    {"drivers:\n  commands: [{type: a, path: b}]\n  commands: [{type: c, path: d}, {type: e, "
	     "path: f}]\n",
	     "bad.yaml:3: drivers: field 'commands' is given twice (first on line 2)"},
	    {"projects:\n  - name: main\n    backends: [{name: a, type: sim}]\n    backends: [{name: b, "
	     "type: sim}, {name: c, type: sim}]\n",
	     "bad.yaml:4: projects[0]: field 'backends' is given twice (first on line 3)"},
	    {"projects:\n  - name: main\n    backends:\n      - name: a\n        type: sim\n"
	     "        secrets: {k: x, k: y}\n",
	     "bad.yaml:6: projects[0].backends[0].secrets: field 'k' is given twice"},
	    {"projects:\n  - name: main\n    backends:\n      - {name: a, type: sim, config: {r: 1, r: 2}}\n",
	     "bad.yaml:4: projects[0].backends[0].config: field 'r' is given twice"},
	    {"log_level: info\nlog_level: debug\n",
	     "bad.yaml:2: (top level): field 'log_level' is given twice (first on line 1)"},
	    /* Names the API would refuse were taken from the file before. */
	    {"projects:\n  - name: Main\n", "bad.yaml:2: projects[0]: \"Main\" is not a valid project name"},
	    {"projects:\n  - name: main\n    backends:\n      - {name: my_sim, type: sim}\n",
	     "bad.yaml:4: projects[0].backends[0]: \"my_sim\" is not a valid backend name"},
	    /* A port above 65535 was taken modulo 65536 by the resolver: 99999 listened on 34463. */
	    {"listen:\n  tcp: {address: 127.0.0.1:99999}\n",
	     "bad.yaml:2: listen.tcp: address \"127.0.0.1:99999\" is not HOST:PORT"},
	    {"listen:\n  tcp: {address: localhost}\n", "bad.yaml:2: listen.tcp: address \"localhost\""},
	    {"drivers:\n  remote:\n    - {type: sim, address: \"[::1]:0\", insecure: true}\n",
	     "bad.yaml:3: drivers.remote[0]: address \"[::1]:0\" is not HOST:PORT"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv_config *c = NULL;
		char err[512] = "";
		int rc =
		    srv_config_parse("bad.yaml", cases[i].yaml, strlen(cases[i].yaml), &c, err, sizeof(err));
		if (rc != -1 || !strstr(err, cases[i].expect))
			fail_msg("case %zu: rc %d, error \"%s\", expected \"%s\"", i, rc, err,
			         cases[i].expect);
		assert_null(c);
	}
}

static void test_secret_value_not_in_errors(void **state)
{
	const char *yaml = "projects:\n  - name: main\n    backends:\n"
	                   "      - {name: a, type: sim, secrets: {k: topsecretvalue}, bogus: 1}\n";
	struct srv_config *c = NULL;
	char err[512] = "";
	assert_int_equal(srv_config_parse("s.yaml", yaml, strlen(yaml), &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bogus"));
	assert_null(strstr(err, "topsecretvalue"));
}

/*
 * A backend's config is converted to JSON, which expands every alias: the
 * document is checked whole first (common/dyaml.c). Before, a cycle or
 * 20,000 nested lists crashed droverd (SIGSEGV, no message), an alias bomb
 * took gigabytes, and 100,000 keys took over 30 s.
 */
static void test_hostile_yaml(void **state)
{
	static const char head[] =
	    "projects:\n  - name: main\n    backends:\n      - name: a\n        type: sim\n";
	size_t cap = 4 * 1000000, o;
	char *y = malloc(cap), err[512];
	struct srv_config *c = NULL;
	assert_non_null(y);

	o = (size_t)snprintf(y, cap, "%s        config: &c {x: *c}\n", head);
	assert_int_equal(srv_config_parse("bad.yaml", y, o, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err,
	                       "bad.yaml:6: projects[0].backends[0].config.x: an alias names a node that "
	                       "contains it (a cycle)"));

	o = (size_t)snprintf(y, cap, "%s        config: {x: ", head);
	for (int i = 0; i < 20000; i++)
		y[o++] = '[';
	for (int i = 0; i < 20000; i++)
		y[o++] = ']';
	o += (size_t)snprintf(y + o, cap - o, "}\n");
	assert_int_equal(srv_config_parse("bad.yaml", y, o, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bad.yaml:6: projects[0].backends[0].config.x[0][0]"));
	assert_non_null(strstr(err, "nested more than 64 levels deep"));

	o = (size_t)snprintf(y, cap, "%s        config:\n          a0: &a0 [lol]\n", head);
	for (int i = 1; i <= 9; i++) {
		o += (size_t)snprintf(y + o, cap - o, "          a%d: &a%d [", i, i);
		for (int k = 0; k < 10; k++)
			o += (size_t)snprintf(y + o, cap - o, "%s*a%d", k ? "," : "", i - 1);
		o += (size_t)snprintf(y + o, cap - o, "]\n");
	}
	clock_t t0 = clock();
	assert_int_equal(srv_config_parse("bad.yaml", y, o, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "nodes (an alias counts as a copy of what it names)"));
	assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 2.0);

	o = (size_t)snprintf(y, cap, "%s        config:\n", head);
	for (int i = 0; i < 100000; i++)
		o += (size_t)snprintf(y + o, cap - o, "          k%d: %d\n", i, i);
	t0 = clock();
	if (srv_config_parse("big.yaml", y, o, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 5.0);
	assert_non_null(strstr(c->projects[0].backends[0].config_json, "\"k99999\":99999"));
	srv_config_free(c);
	free(y);
}

/*
 * Backend and project names are checked for repeats by sorting: comparing
 * each with every earlier one took 4.2 s for 49,000 backends. 45,000 stays
 * under dyaml's cap on nodes (5 a backend).
 */
static void test_many_names(void **state)
{
	enum { N = 45000 };
	size_t cap = 64 * (size_t)N, o;
	char *y = malloc(cap), err[512];
	struct srv_config *c = NULL;
	assert_non_null(y);

	o = (size_t)snprintf(y, cap, "projects:\n  - name: main\n    backends:\n");
	for (int i = 0; i < N; i++)
		o += (size_t)snprintf(y + o, cap - o, "      - {name: b%d, type: sim}\n", i);
	clock_t t0 = clock();
	if (srv_config_parse("many.yaml", y, o, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
	assert_int_equal(c->projects[0].n_backends, N);
	srv_config_free(c);
	c = NULL;
	/* The last one repeats the first: found, named on its own line. */
	o += (size_t)snprintf(y + o, cap - o, "      - {name: b0, type: sim}\n");
	t0 = clock();
	assert_int_equal(srv_config_parse("many.yaml", y, o, &c, err, sizeof(err)), -1);
	secs += (double)(clock() - t0) / CLOCKS_PER_SEC;
	assert_null(c);
	char want[128];
	snprintf(want, sizeof(want), "many.yaml:%d: projects[0].backends[%d]: duplicate backend name \"b0\"",
	         N + 4, N);
	if (!strstr(err, want))
		fail_msg("error \"%s\", expected \"%s\"", err, want);

	o = (size_t)snprintf(y, cap, "projects:\n");
	for (int i = 0; i < N; i++)
		o += (size_t)snprintf(y + o, cap - o, "  - name: p%d\n", i);
	t0 = clock();
	if (srv_config_parse("many.yaml", y, o, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	secs += (double)(clock() - t0) / CLOCKS_PER_SEC;
	assert_int_equal(c->n_projects, N);
	srv_config_free(c);
	/* The same backend name in two projects is no repeat. */
	o = (size_t)snprintf(y, cap,
	                     "projects:\n  - {name: p, backends: [{name: a, type: sim}]}\n"
	                     "  - {name: q, backends: [{name: a, type: sim}]}\n");
	if (srv_config_parse("two.yaml", y, o, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	srv_config_free(c);
	/* Three parses of 45,000 names: quadratic checks took over 3 s for one. */
	if (secs > 4.0)
		fail_msg("three parses of %d names took %.2f s of CPU", N, secs);
	print_message("three parses of %d names: %.2f s of CPU\n", N, secs);
	free(y);
}

static void test_load_file_and_empty(void **state)
{
	char err[512];
	struct srv_config *c;
	assert_int_equal(srv_config_load("/nonexistent/droverd.yaml", &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/droverd.yaml: cannot open"));
	char *dir = tu_tempdir();
	char *p = tu_join(dir, "empty.yaml");
	FILE *f = fopen(p, "w");
	fclose(f);
	assert_int_equal(srv_config_load(p, &c, err, sizeof(err)), 0);
	assert_int_equal(c->n_projects, 0);
	assert_int_equal(c->max_tries, 3);
	assert_int_equal(c->running_check_interval_ms, 60000);
	srv_config_free(c);
	/* A directory opens, and read as an empty config before: it must be refused. */
	c = NULL;
	assert_int_equal(srv_config_load(dir, &c, err, sizeof(err)), -1);
	assert_null(c);
	assert_non_null(strstr(err, "cannot read: Is a directory"));
	/* A file over the limit is refused, naming the file and the limit; one at the limit is read. */
	f = fopen(p, "w");
	assert_non_null(f);
	char line[64];
	int n = snprintf(line, sizeof(line), "# %*s\n", 60, "");
	size_t written = 0;
	while (written + (size_t)n <= SRV_CONFIG_MAX_BYTES)
		written += fwrite(line, 1, (size_t)n, f);
	while (written < SRV_CONFIG_MAX_BYTES)
		written += fwrite("\n", 1, 1, f);
	assert_int_equal(fflush(f), 0);
	assert_int_equal(srv_config_load(p, &c, err, sizeof(err)), 0);
	srv_config_free(c);
	c = NULL;
	assert_int_equal(fputc('\n', f), '\n');
	fclose(f);
	assert_int_equal(srv_config_load(p, &c, err, sizeof(err)), -1);
	assert_null(c);
	char want[600];
	snprintf(want, sizeof(want), "%s: larger than 16 MiB, the limit on a config file", p);
	assert_string_equal(err, want);
	/* A device without end is refused at the limit, not read for ever. */
	assert_int_equal(srv_config_load("/dev/zero", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/dev/zero: larger than 16 MiB, the limit on a config file");
	free(p);
	tu_rmrf(dir);
	free(dir);
}

static void test_shipped_config(void **state)
{
	char err[512];
	struct srv_config *c;
	if (srv_config_load(DROVER_SOURCE_DIR "/config/droverd.yaml", &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_true(c->n_projects >= 1);
	assert_string_equal(c->projects[0].name, "main");
	srv_config_free(c);
	/* The examples in the repository parse too, and mean what they say. */
	if (srv_config_load(DROVER_SOURCE_DIR "/config/examples/full.yaml", &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->listen_tcp, "127.0.0.1:7443");
	assert_int_equal(c->n_remotes, 1);
	assert_int_equal(c->projects[0].n_backends, 2);
	assert_int_equal(c->limits.offers_answer_bytes, 16 << 20);
	assert_int_equal(c->limits.offers, 20000);
	assert_int_equal(c->commands[0].limits.offers_answer_bytes, 32 << 20);
	assert_false(c->commands[0].allow_tcp_handshake);
	assert_string_equal(c->log_file, "./var/droverd.log");
	assert_int_equal(c->log_max_bytes, 64 << 20);
	assert_int_equal(c->log_keep, 3);
	assert_int_equal(c->driver_log_lines_per_s, 1000);
	srv_config_free(c);
	if (srv_config_load(DROVER_SOURCE_DIR "/config/examples/remote-tls.yaml", &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->remotes[0].name, "remote-sim");
	srv_config_free(c);
}

/* drivers.limits and the limits: of a command or remote entry; the defaults where neither says. */
static void test_driver_limits(void **state)
{
	static const char yaml[] =
	    "drivers:\n"
	    "  limits: {answer_bytes: 2097152, offers: 500}\n"
	    "  commands:\n"
	    "    - {type: a, path: /x, limits: {offers_answer_bytes: 33554432}}\n"
	    "    - {type: b, path: /y}\n"
	    "  remote:\n"
	    "    - {type: c, address: 127.0.0.1:4100, insecure: true, limits: {offers: 7}}\n";
	struct srv_config *c = srv_config_new_default();
	char err[512] = "";

	struct srv_driver_limits l = srv_config_driver_limits(c, NULL);
	assert_int_equal(l.answer_bytes, 1 << 20);
	assert_int_equal(l.offers_answer_bytes, 16 << 20);
	assert_int_equal(l.list_answer_bytes, 8 << 20);
	assert_int_equal(l.offers, 20000);
	srv_config_free(c);
	if (srv_config_parse("limits.yaml", yaml, strlen(yaml), &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	l = srv_config_driver_limits(c, &c->commands[0].limits);
	assert_int_equal(l.answer_bytes, 2 << 20);
	assert_int_equal(l.offers_answer_bytes, 32 << 20);
	assert_int_equal(l.offers, 500);
	l = srv_config_driver_limits(c, &c->commands[1].limits);
	assert_int_equal(l.offers_answer_bytes, 16 << 20);
	assert_int_equal(l.offers, 500);
	l = srv_config_driver_limits(c, &c->remotes[0].limits);
	assert_int_equal(l.answer_bytes, 2 << 20);
	assert_int_equal(l.offers, 7);
	srv_config_free(c);

	const struct bad_case cases[] = {
	    {"drivers:\n  limits: {offers: 0}\n", "bad.yaml:2: drivers.limits.offers: 0 is out of range"},
	    {"drivers:\n  limits: {answer_bytes: 10}\n", "drivers.limits.answer_bytes: 10 is out of range"},
	    {"drivers:\n  limits: {offer_bytes: 10}\n", "drivers.limits.offer_bytes: unknown field"},
	    {"drivers:\n  commands: [{type: a, path: b, limits: {offers_answer_bytes: big}}]\n",
	     "drivers.commands[0].limits.offers_answer_bytes"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = NULL;
		err[0] = '\0';
		assert_int_not_equal(
		    srv_config_parse("bad.yaml", cases[i].yaml, strlen(cases[i].yaml), &c, err, sizeof(err)),
		    0);
		assert_null(c);
		if (!strstr(err, cases[i].expect))
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].expect);
	}
}

/* The termination window and the orphan scan's caps (issue 12): defaults, values, and bounds. */
static void test_termination_and_orphan_fields(void **state)
{
	char err[512] = "";
	struct srv_config *c;
	assert_int_equal(srv_config_parse("d.yaml", "", 0, &c, err, sizeof(err)), 0);
	assert_int_equal(c->termination_confirm_window_ms, 600000);
	assert_int_equal(c->orphan_max_listed, 10000);
	assert_int_equal(c->orphan_max_adopted, 1000);
	srv_config_free(c);
	const char *y = "provisioning: {termination_confirm_window_ms: 1500, orphan_max_listed: 50,\n"
	                "               orphan_max_adopted: 0}\n";
	int rc = srv_config_parse("t.yaml", y, strlen(y), &c, err, sizeof(err));
	if (rc)
		fail_msg("%s", err);
	assert_int_equal(c->termination_confirm_window_ms, 1500);
	assert_int_equal(c->orphan_max_listed, 50);
	assert_int_equal(c->orphan_max_adopted, 0);
	srv_config_free(c);
	const struct bad_case cases[] = {
	    {"provisioning:\n  termination_confirm_window_ms: 0\n",
	     "bad.yaml:2: provisioning.termination_confirm_window_ms: 0 is out of range"},
	    {"provisioning:\n  orphan_max_listed: 0\n",
	     "bad.yaml:2: provisioning.orphan_max_listed: 0 is out of range"},
	    {"provisioning:\n  orphan_max_adopted: -1\n",
	     "bad.yaml:2: provisioning.orphan_max_adopted: -1 is out of range"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = NULL;
		assert_int_equal(
		    srv_config_parse("bad.yaml", cases[i].yaml, strlen(cases[i].yaml), &c, err, sizeof(err)),
		    -1);
		assert_null(c);
		if (!strstr(err, cases[i].expect))
			fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err, cases[i].expect);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_bad),
	    cmocka_unit_test(test_secret_value_not_in_errors),
	    cmocka_unit_test(test_hostile_yaml),
	    cmocka_unit_test(test_many_names),
	    cmocka_unit_test(test_load_file_and_empty),
	    cmocka_unit_test(test_shipped_config),
	    cmocka_unit_test(test_driver_limits),
	    cmocka_unit_test(test_termination_and_orphan_fields),
	};
	return cmocka_run_group_tests_name("server_config", tests, NULL, NULL);
}

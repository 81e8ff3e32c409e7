/*
 * Unit tests of the harness's own pieces: name patterns, the config file
 * loader's errors, Requirements from JSON, answers as text and JUnit XML.
 * The harness as a whole is tested against real drivers (CMakeLists.txt).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf.h"
#include "conf_run.h"

static char tmpdir[512];

static const char *write_file(const char *name, const char *text)
{
	static char path[700];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char buf[16384];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_pattern_match(void **state)
{
	(void)state;
	assert_true(conf_pattern_match("offers.*", "offers.filter_cpus"));
	assert_false(conf_pattern_match("offers.*", "instances.list"));
	assert_true(conf_pattern_match("filter", "offers.filter_cpus"));
	assert_false(conf_pattern_match("volumes", "offers.filter_cpus"));
	assert_true(conf_pattern_match("*.lifecycle", "gateways.lifecycle"));
	assert_true(conf_pattern_match("instances.?ist", "instances.list"));
}

static void load_expect_error(const char *text, const char *needle)
{
	struct conf_opts o = {0};
	conf_config_defaults(&o);
	char err[1024] = "";
	const char *path = write_file("conf.json", text);
	assert_int_equal(conf_config_load(&o, path, err, sizeof(err)), -1);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" does not name \"%s\"", err, needle);
	conf_config_free(&o);
}

static void test_config_errors_name_the_field(void **state)
{
	(void)state;
	load_expect_error("{\"config\": {}, \"extra\": 1}", "unknown top-level key \"extra\"");
	load_expect_error("{\"config\": []}", "config: must be a JSON object");
	load_expect_error("{\"secrets\": {\"api_key\": 3}}", "secrets.api_key: must be a string");
	load_expect_error("{\"params\": {\"call_timeout_ms\": 0}}", "params.call_timeout_ms");
	load_expect_error("{\"params\": {\"timeout\": 5}}", "params.timeout: unknown parameter");
	load_expect_error("{\"params\": {\"name_prefix\": \"Bad Prefix\"}}", "params.name_prefix");
	load_expect_error("{\"params\": {\"offer_requirements\": {\"cpus\": 4}}}",
	                  "params.offer_requirements.cpus");
	load_expect_error("{\"params\": {\"offer_requirements\": {\"spot\": \"maybe\"}}}",
	                  "params.offer_requirements.spot");
	load_expect_error("{\"params\": {\"offer_requirements\": {\"gpus\": 1}}}",
	                  "params.offer_requirements.gpus: unknown filter");
	load_expect_error("{\"config\": {}", "conf.json:");
	load_expect_error("{\"params\": {\"bad_secrets\": \"x\"}}",
	                  "params.bad_secrets: must be a JSON object");
	load_expect_error("{\"params\": {\"bad_secrets\": {}}}",
	                  "params.bad_secrets: must name at least one");
	load_expect_error("{\"params\": {\"bad_secrets\": {\"k\": 1}}}",
	                  "params.bad_secrets.k: must be a string");
}

static void test_config_loads(void **state)
{
	(void)state;
	struct conf_opts o = {0};
	conf_config_defaults(&o);
	char err[1024] = "";
	const char *path = write_file(
	    "ok.json", "{\"config\": {\"capacity\": 2}, \"secrets\": {\"k\": \"v\"},"
	               " \"params\": {\"name_prefix\": \"t-\", \"call_timeout_ms\": 1234,"
	               " \"slow_config\": {\"latency_ms\": 5}, \"bad_secrets\": {\"k\": \"no\"}}}");
	assert_int_equal(conf_config_load(&o, path, err, sizeof(err)), 0);
	assert_string_equal(o.name_prefix, "t-");
	assert_int_equal(o.call_timeout_ms, 1234);
	assert_int_equal(o.repeat, 3);
	assert_non_null(o.slow_config);
	assert_string_equal(json_string_value(json_object_get(o.bad_secrets, "k")), "no");

	/* The backend config merges the overlay and carries the secrets. */
	struct conf_bc bc;
	conf_bc_init(&bc, o.config, o.slow_config, o.secrets, NULL);
	assert_string_equal(bc.buf.msg.config_json, "{\"capacity\":2,\"latency_ms\":5}");
	assert_int_equal(bc.buf.msg.n_secrets, 1);
	assert_string_equal(bc.buf.msg.secrets[0]->key, "k");
	conf_bc_free(&bc);
	conf_config_free(&o);
}

static void test_yaml_config_equals_json(void **state)
{
	(void)state;
	struct conf_opts y = {0}, j = {0};
	conf_config_defaults(&y);
	conf_config_defaults(&j);
	char err[1024] = "";
	const char *yp =
	    write_file("c.yaml", "config:\n  capacity: 2\n  regions: [us-east-1, \"eu-west-1\"]\n"
	                         "  label: \"42\"\n  spot: true\n  rate: 0.5\n"
	                         "params:\n  name_prefix: y-\n  slow_config: {latency_ms: 400}\n");
	assert_int_equal(conf_config_load(&y, yp, err, sizeof(err)), 0);
	const char *jp = write_file(
	    "c.json", "{\"config\": {\"capacity\": 2, \"regions\": [\"us-east-1\", \"eu-west-1\"],"
	              " \"label\": \"42\", \"spot\": true, \"rate\": 0.5},"
	              " \"params\": {\"name_prefix\": \"y-\", \"slow_config\": {\"latency_ms\": 400}}}");
	assert_int_equal(conf_config_load(&j, jp, err, sizeof(err)), 0);
	assert_true(json_equal(y.config, j.config));
	assert_true(json_equal(y.slow_config, j.slow_config));
	assert_string_equal(y.name_prefix, "y-");
	conf_config_free(&y);
	conf_config_free(&j);

	struct conf_opts b = {0};
	conf_config_defaults(&b);
	const char *bp = write_file("bad.yaml", "config:\n  a: [1, 2\nparams: {}\n");
	assert_int_equal(conf_config_load(&b, bp, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bad.yaml:3: YAML syntax error"));
	bp = write_file("dup.yml", "config: {}\nconfig: {}\n");
	assert_int_equal(conf_config_load(&b, bp, err, sizeof(err)), -1);
	assert_non_null(
	    strstr(err, "dup.yml:2: (top level): field 'config' is given twice (first on line 1)"));
	conf_config_free(&b);
}

static void test_requirements_from_json(void **state)
{
	(void)state;
	json_error_t je;
	json_t *j = json_loads("{\"cpus\": {\"min\": 2, \"max\": 8}, \"gpu_names\": [\"H100\", \"a100\"],"
	                       " \"spot\": \"on_demand\", \"max_price\": 1.5, \"regions\": [\"us-east\"]}",
	                       0, &je);
	assert_non_null(j);
	drv_requirements r;
	char err[300];
	assert_int_equal(conf_requirements_from_json(j, &r, err, sizeof(err)), 0);
	assert_non_null(r.cpus);
	assert_int_equal(r.cpus->min, 2);
	assert_int_equal(r.cpus->max, 8);
	assert_int_equal(r.n_gpu_names, 2);
	assert_string_equal(r.gpu_names[1], "a100");
	assert_int_equal(r.spot, DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND);
	assert_int_equal(r._max_price_case, DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE);
	assert_null(r.memory_mib);
	conf_requirements_free(&r);
	json_decref(j);
}

static void test_answer_text(void **state)
{
	(void)state;
	char buf[700];
	struct drv_status st = {.code = DRV_ENOTFOUND};
	snprintf(st.message, sizeof(st.message), "no such instance");
	assert_string_equal(conf_answer(0, &st, buf, sizeof(buf)), "OK");
	assert_string_equal(conf_answer(DRV_ENOTFOUND, &st, buf, sizeof(buf)),
	                    "NOT_FOUND \"no such instance\"");
	st.message[0] = '\0';
	assert_string_equal(conf_answer(DRV_EUNIMPLEMENTED, &st, buf, sizeof(buf)), "UNIMPLEMENTED");
}

/* Result lines: one line, no terminal controls (C1 included), no runaway numbers or strings. */
static void test_one_line_and_cut(void **state)
{
	(void)state;
	char *l = conf_one_line("a\nb\x1b[0m \xc2\x9b \xff caf\xc3\xa9");
	assert_string_equal(l, "a\\nb\\x1b[0m \\u009b \\xff caf\xc3\xa9");
	free(l);
	char digits[400];
	snprintf(digits, sizeof(digits), "$%.4f/h", 1e308);
	l = conf_one_line(digits);
	assert_string_equal(l, "$100000000000000001097906...(309 digits).0000/h");
	free(l);
	l = conf_one_line("id 123456789012345678901234 stays");
	assert_string_equal(l, "id 123456789012345678901234 stays");
	free(l);

	char buf[128];
	assert_string_equal(conf_cut("short", 10, buf, sizeof(buf)), "short");
	assert_string_equal(conf_cut("abcdefghijkl", 4, buf, sizeof(buf)), "abcd...(12 bytes)");
	/* The cut backs up to a character boundary: "é" is two bytes. */
	assert_string_equal(conf_cut("ab\xc3\xa9"
	                             "cd",
	                             3, buf, sizeof(buf)),
	                    "ab...(6 bytes)");
}

static void test_junit(void **state)
{
	(void)state;
	struct conf_result_row rows[] = {
	    {"a.pass", CONF_PASS, (char *)"", 12},
	    {"b.fail", CONF_FAIL, (char *)"GetOffers answered <bad> & \"worse\"", 3},
	    {"c.skip", CONF_SKIP, (char *)"driver does not advertise VOLUMES", 0},
	};
	struct conf_report r = {rows, 3, 3};
	int p, f, s;
	conf_report_summary(&r, &p, &f, &s);
	assert_int_equal(p, 1);
	assert_int_equal(f, 1);
	assert_int_equal(s, 1);
	char path[700], err[300];
	snprintf(path, sizeof(path), "%s/junit.xml", tmpdir);
	assert_int_equal(conf_report_junit(&r, path, "drover-conformance sim", err, sizeof(err)), 0);
	const char *x = read_file(path);
	assert_non_null(strstr(x, "tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""));
	assert_non_null(
	    strstr(x, "<failure message=\"GetOffers answered &lt;bad&gt; &amp; &quot;worse&quot;\"/>"));
	assert_non_null(strstr(x, "<skipped message=\"driver does not advertise VOLUMES\"/>"));
	assert_non_null(strstr(x, "name=\"a.pass\" time=\"0.012\"/>"));
	/* The suite name comes from the driver's GetInfo type: its bytes must not break the XML. */
	assert_int_equal(conf_report_junit(&r, path, "drover-conformance x\xff\x1b[0m", err, sizeof(err)), 0);
	x = read_file(path);
	assert_non_null(strstr(x, "<testsuite name=\"drover-conformance x\\xff\\x1b[0m\""));
	assert_int_equal(conf_report_junit(&r, "/nonexistent-dir/junit.xml", "s", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent-dir/junit.xml"));
}

static void test_table_is_sane(void **state)
{
	(void)state;
	/* Names are unique and every gating feature is a real one. */
	for (size_t i = 0; i < conf_n_tests; i++) {
		assert_non_null(conf_tests[i].fn);
		assert_non_null(conf_tests[i].rule);
		if (conf_tests[i].feature)
			assert_non_null(drv_feature_name(conf_tests[i].feature));
		for (size_t k = i + 1; k < conf_n_tests; k++)
			assert_string_not_equal(conf_tests[i].name, conf_tests[k].name);
	}
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--help") == 0) {
		printf("usage: test_conformance_core\nUnit tests of drover-conformance's own pieces "
		       "(config loader, patterns, requirements, JUnit). Scratch files go under "
		       "$CONF_TEST_TMP or /tmp.\n");
		return 0;
	}

	const char *base = getenv("CONF_TEST_TMP");
	snprintf(tmpdir, sizeof(tmpdir), "%s/conf-core-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror(tmpdir);
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pattern_match),
	    cmocka_unit_test(test_config_errors_name_the_field),
	    cmocka_unit_test(test_config_loads),
	    cmocka_unit_test(test_yaml_config_equals_json),
	    cmocka_unit_test(test_requirements_from_json),
	    cmocka_unit_test(test_answer_text),
	    cmocka_unit_test(test_one_line_and_cut),
	    cmocka_unit_test(test_junit),
	    cmocka_unit_test(test_table_is_sane),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return rc;
}

/*
 * dyaml: the checks that keep hostile YAML (cycles, deep nesting, alias
 * bombs, huge mappings) from crashing or stalling whoever loads it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dyaml.h"

/* Loads `text`; on success returns its root as compact JSON text (malloc'd), else NULL with err filled. */
static char *load(const char *text, size_t len, char *err, size_t errlen)
{
	yaml_document_t doc;
	err[0] = '\0';
	if (dyaml_load("t.yaml", text, len, &doc, err, errlen) < 0)
		return NULL;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	json_t *j = root ? dyaml_to_json(&doc, root) : json_null();
	assert_non_null(j);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	yaml_document_delete(&doc);
	return s;
}

static void expect_error(const char *text, size_t len, const char *want)
{
	char err[512];
	char *s = load(text, len, err, sizeof(err));
	if (s)
		fail_msg("loaded, expected an error with \"%s\": %s", want, s);
	if (!strstr(err, want))
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static double cpu_seconds(void)
{
	return (double)clock() / CLOCKS_PER_SEC;
}

static void test_types(void **state)
{
	(void)state;
	char err[512];
	const char *y = "a: 1\nb: -2.5e3\nc: \"7\"\nd: ~\ne: TRUE\nf: False\ng: [x, 'y']\n"
	                "h: nan\ni: .inf\nj: 0x10\nk: 1e999\nl: ''\n";
	char *s = load(y, strlen(y), err, sizeof(err));
	if (!s)
		fail_msg("%s", err);
	/* Only decimal numbers are numbers: JSON has no NaN or infinity, and 1e999 would be one. */
	assert_string_equal(s, "{\"a\":1,\"b\":-2500.0,\"c\":\"7\",\"d\":null,\"e\":true,\"f\":false,"
	                       "\"g\":[\"x\",\"y\"],\"h\":\"nan\",\"i\":\".inf\",\"j\":\"0x10\","
	                       "\"k\":\"1e999\",\"l\":\"\"}");
	free(s);
	/* An alias used a few times is fine: it is a copy of what it names. */
	y = "base: &b {cpu: 2}\nx: *b\ny: [*b, *b]\n";
	s = load(y, strlen(y), err, sizeof(err));
	if (!s)
		fail_msg("%s", err);
	assert_string_equal(s, "{\"base\":{\"cpu\":2},\"x\":{\"cpu\":2},\"y\":[{\"cpu\":2},{\"cpu\":2}]}");
	free(s);
	s = load("", 0, err, sizeof(err));
	assert_string_equal(s, "null"); /* an empty file: a document without a root */
	free(s);
}

/* `config: &c {x: *c}` made droverd recurse until the stack ran out (SIGSEGV, no message). */
static void test_alias_cycle(void **state)
{
	(void)state;
	const char *y = "config: &c {x: *c}\n";
	expect_error(y, strlen(y), "t.yaml:1: config.x: an alias names a node that contains it (a cycle)");
	y = "a:\n  - b: &l [1, [2, *l]]\n";
	expect_error(y, strlen(y), "t.yaml:2: a[0].b[1][1]: an alias names a node that contains it");
}

/* 20,000 nested '[' did the same. */
static void test_deep_nesting(void **state)
{
	(void)state;
	size_t depth = 20000;
	char *y = malloc(2 * depth + 1);
	assert_non_null(y);
	memset(y, '[', depth);
	memset(y + depth, ']', depth);
	expect_error(y, 2 * depth, "t.yaml:1: [0][0][0]");
	expect_error(y, 2 * depth, ": nested more than 64 levels deep");
	/* 64 levels are fine. */
	assert_int_equal(DYAML_MAX_DEPTH, 64);
	char err[512];
	char *s = load(y + depth - 65, 2 * 65, err, sizeof(err));
	if (!s)
		fail_msg("%s", err);
	free(s);
	free(y);
}

/* `levels` lines a1..aN, each a list of ten aliases to the line before: 10^N copies of a0. */
static size_t laughs(char *y, size_t cap, int levels)
{
	size_t o = (size_t)snprintf(y, cap, "a0: &a0 [lol]\n");
	for (int i = 1; i <= levels; i++) {
		o += (size_t)snprintf(y + o, cap - o, "a%d: &a%d [", i, i);
		for (int k = 0; k < 10; k++)
			o += (size_t)snprintf(y + o, cap - o, "%s*a%d", k ? "," : "", i - 1);
		o += (size_t)snprintf(y + o, cap - o, "]\n");
	}
	return o;
}

/*
 * Billion laughs: each level a list of ten aliases to the level below. Nine
 * levels name 10^9 nodes in under 600 bytes; converting them took 1.2 GB and
 * 5 s at eight levels. The count stops at DYAML_MAX_NODES instead.
 */
static void test_alias_bomb(void **state)
{
	(void)state;
	char y[1024];
	size_t o = laughs(y, sizeof(y), 9);
	assert_true(o < 600);
	double t0 = cpu_seconds();
	expect_error(y, o, "nodes (an alias counts as a copy of what it names)");
	expect_error(y, o, "t.yaml:");
	assert_true(cpu_seconds() - t0 < 2.0);
	/* Below the limit the same construction loads: 3 levels of 10 is 1,000 copies. */
	char err[512];
	o = laughs(y, sizeof(y), 3);
	char *s = load(y, o, err, sizeof(err));
	if (!s)
		fail_msg("%s", err);
	free(s);
}

/* A mapping of `n` distinct keys k0..k(n-1) with one duplicate at the end when `dup`. */
static char *many_keys(size_t n, bool dup, size_t *len)
{
	char *y = malloc(n * 16 + 32);
	assert_non_null(y);
	size_t o = 0;
	for (size_t i = 0; i < n; i++)
		o += (size_t)sprintf(y + o, "k%zu: %zu\n", i, i);
	if (dup)
		o += (size_t)sprintf(y + o, "k17: again\n");
	*len = o;
	return y;
}

/* 100,000 keys kept droverd busy for over 30 s: each key was compared with every key before it. */
static void test_many_keys(void **state)
{
	(void)state;
	char err[512];
	size_t len;
	char *y = many_keys(100000, false, &len);
	double t0 = cpu_seconds();
	char *s = load(y, len, err, sizeof(err));
	double took = cpu_seconds() - t0;
	if (!s)
		fail_msg("%s", err);
	print_message("dyaml: 100,000 keys loaded and converted in %.3f s of CPU\n", took);
	assert_true(took < 5.0);
	assert_non_null(strstr(s, "\"k99999\":99999"));
	free(s);
	free(y);
	y = many_keys(100000, true, &len);
	t0 = cpu_seconds();
	expect_error(y, len, "t.yaml:100001: (top level): field 'k17' is given twice (first on line 18)");
	assert_true(cpu_seconds() - t0 < 5.0);
	free(y);
	/* Past the node limit, a flat mapping is refused too. */
	y = many_keys(DYAML_MAX_NODES / 2 + 1, false, &len);
	expect_error(y, len, "more than 250000 nodes");
	free(y);
}

static void test_keys_are_scalars(void **state)
{
	(void)state;
	const char *y = "a:\n  ? [1, 2]\n  : x\n";
	expect_error(y, strlen(y), "t.yaml:2: a: mapping keys must be strings");
	y = "a: [1\n";
	expect_error(y, strlen(y), "t.yaml:2: YAML syntax error");
	/* Of several keys given twice, the one whose second use comes first in the file is named. */
	y = "m:\n  b: 1\n  a: 1\n  c: 1\n  b: 2\n  a: 2\n  c: 3\n  b: 3\n";
	expect_error(y, strlen(y), "t.yaml:5: m: field 'b' is given twice (first on line 2)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_types),        cmocka_unit_test(test_alias_cycle),
	    cmocka_unit_test(test_deep_nesting), cmocka_unit_test(test_alias_bomb),
	    cmocka_unit_test(test_many_keys),    cmocka_unit_test(test_keys_are_scalars),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The CLI's value syntaxes (sizes, ranges, GPU specs, prices) and its
 * descriptor-driven JSON output, on the same objects the drover binary
 * links. Everything else of the CLI is tested through the binary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"

static void test_sizes(void **state)
{
	char err[256];
	uint64_t mib = 0;
	assert_int_equal(cli_parse_size_mib("80", &mib, err, sizeof(err)), 0);
	assert_int_equal(mib, 80 * 1024);
	assert_int_equal(cli_parse_size_mib("80GB", &mib, err, sizeof(err)), 0);
	assert_int_equal(mib, 80 * 1024);
	assert_int_equal(cli_parse_size_mib("24gib", &mib, err, sizeof(err)), 0);
	assert_int_equal(mib, 24 * 1024);
	assert_int_equal(cli_parse_size_mib("512MB", &mib, err, sizeof(err)), 0);
	assert_int_equal(mib, 512);
	assert_int_equal(cli_parse_size_mib("1.5TB", &mib, err, sizeof(err)), 0);
	assert_int_equal(mib, 1536 * 1024);
	assert_int_equal(cli_parse_size_mib("0.5", &mib, err, sizeof(err)), 0);
	assert_int_equal(mib, 512);
	assert_int_equal(cli_parse_size_mib("12furlongs", &mib, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "furlongs"));
	assert_int_equal(cli_parse_size_mib("-4", &mib, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_size_mib("", &mib, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_size_mib("GB", &mib, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_size_mib("1e30", &mib, err, sizeof(err)), -1);
}

static void test_ranges(void **state)
{
	char err[256];
	Drover__Compute__V1__UintRange r = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_size_range("40GB:80GB", &r, err, sizeof(err)), 0);
	assert_true(r._min_case && r._max_case);
	assert_int_equal(r.min, 40 * 1024);
	assert_int_equal(r.max, 80 * 1024);

	Drover__Compute__V1__UintRange open = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_size_range("24:", &open, err, sizeof(err)), 0);
	assert_true(open._min_case);
	assert_false(open._max_case);

	Drover__Compute__V1__UintRange upper = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_size_range(":16", &upper, err, sizeof(err)), 0);
	assert_false(upper._min_case);
	assert_true(upper._max_case);
	assert_int_equal(upper.max, 16 * 1024);

	Drover__Compute__V1__UintRange bad = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_size_range("80:40", &bad, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "minimum above its maximum"));
	assert_int_equal(cli_parse_size_range(":", &bad, err, sizeof(err)), -1);

	/* A single CPU count is a minimum; MIN:MAX a range. */
	Drover__Compute__V1__UintRange cpus = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_count_range("8", &cpus, err, sizeof(err)), 0);
	assert_true(cpus._min_case);
	assert_false(cpus._max_case);
	assert_int_equal(cpus.min, 8);
	Drover__Compute__V1__UintRange cpus2 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_count_range("8:64", &cpus2, err, sizeof(err)), 0);
	assert_int_equal(cpus2.max, 64);
	assert_int_equal(cli_parse_count_range("eight", &cpus2, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_count_range("8.5", &cpus2, err, sizeof(err)), -1);
}

static void test_gpu(void **state)
{
	char err[256], *name = NULL;
	Drover__Compute__V1__UintRange c = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("H100", &name, &c, err, sizeof(err)), 0);
	assert_string_equal(name, "H100");
	assert_false(c._min_case || c._max_case);
	free(name);

	assert_int_equal(cli_parse_gpu("A100:8", &name, &c, err, sizeof(err)), 0);
	assert_string_equal(name, "A100");
	assert_int_equal(c.min, 8);
	assert_int_equal(c.max, 8);
	free(name);

	Drover__Compute__V1__UintRange c2 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("L4:1..2", &name, &c2, err, sizeof(err)), 0);
	assert_int_equal(c2.min, 1);
	assert_int_equal(c2.max, 2);
	free(name);

	Drover__Compute__V1__UintRange c3 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("4", &name, &c3, err, sizeof(err)), 0);
	assert_null(name);
	assert_int_equal(c3.min, 4);

	assert_int_equal(cli_parse_gpu("H100:", &name, &c3, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_gpu("H100:lots", &name, &c3, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_gpu(":2", &name, &c3, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_gpu("H 100", &name, &c3, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_gpu("L4:2..1", &name, &c3, err, sizeof(err)), -1);

	/* A model with a count of 0 is no machine; a count of 0 alone is "no GPU". */
	Drover__Compute__V1__UintRange c4 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("H100:0", &name, &c4, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "count of 0"));
	Drover__Compute__V1__UintRange c5 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("H100:0..0", &name, &c5, err, sizeof(err)), -1);
	Drover__Compute__V1__UintRange c6 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("H100:0..2", &name, &c6, err, sizeof(err)), 0);
	assert_string_equal(name, "H100");
	free(name);
	Drover__Compute__V1__UintRange c7 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	assert_int_equal(cli_parse_gpu("0", &name, &c7, err, sizeof(err)), 0);
	assert_null(name);
	assert_int_equal(c7.max, 0);
}

/* Driver text reaches the terminal without its control characters, nested and repeated strings included. */
static void test_clean_text(void **state)
{
	char type[] = "gpu\x1b[2J.big", region[] = "us\r\nstatus: RUNNING", z0[] = "a\x07", z1[] = "b";
	char *zones[] = {z0, z1};
	Drover__Compute__V1__Offer offer = DROVER__COMPUTE__V1__OFFER__INIT;
	offer.instance_type = type;
	offer.region = region;
	offer.zones = zones;
	offer.n_zones = 2;
	Drover__Api__V1__BackendOffer bo = DROVER__API__V1__BACKEND_OFFER__INIT;
	char backend[] = "sim\x7f";
	bo.backend = backend;
	bo.offer = &offer;
	cli_clean_text(&bo.base);
	assert_string_equal(type, "gpu [2J.big");
	assert_string_equal(region, "us  status: RUNNING");
	assert_string_equal(z0, "a ");
	assert_string_equal(z1, "b");
	assert_string_equal(backend, "sim ");
}

/*
 * C1 controls too: U+009B (C2 9B) and a raw 0x9B byte are CSI on terminals
 * that honour 8-bit controls, as ESC [ is everywhere. Both are blanked in
 * tables and escaped in --json; other non-ASCII text is kept.
 */
static void test_clean_c1(void **state)
{
	char type[] = "gpu\xc2\x9b"
	              "2J.big",
	     region[] = "us\x9b"
	                "2J-east",
	     zone[] = "z\xc3\xbcrich\xc2\x85x\xc2\xa0";
	char *zones[] = {zone};
	Drover__Compute__V1__Offer offer = DROVER__COMPUTE__V1__OFFER__INIT;
	offer.instance_type = type;
	offer.region = region;
	offer.zones = zones;
	offer.n_zones = 1;

	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	assert_non_null(f);
	cli_print_json_to(f, &offer.base);
	fclose(f);
	assert_non_null(strstr(out, "\"instance_type\": \"gpu\\u009b2J.big\""));
	assert_non_null(strstr(out, "\"us\xef\xbf\xbd"
	                            "2J-east\"")); /* not UTF-8: U+FFFD, as before */
	assert_non_null(strstr(out, "\"z\xc3\xbcrich\\u0085x\xc2\xa0\""));
	for (const unsigned char *p = (const unsigned char *)out; *p; p++)
		if (*p == 0x9b || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] < 0xa0))
			fail_msg("a C1 control in --json output at byte %td: %s", (const char *)p - out, out);
	free(out);

	cli_clean_text(&offer.base);
	assert_string_equal(type, "gpu  2J.big");
	assert_string_equal(region, "us 2J-east");
	assert_string_equal(zone, "z\xc3\xbcrich  x\xc2\xa0"); /* ü and the no-break space stay */
}

static void test_arch(void **state)
{
	assert_string_equal(cli_arch_name("x86_64"), "x86_64");
	assert_string_equal(cli_arch_name("AMD64"), "x86_64");
	assert_string_equal(cli_arch_name("x64"), "x86_64");
	assert_string_equal(cli_arch_name("ARM64"), "arm64");
	assert_string_equal(cli_arch_name("aarch64"), "arm64");
	assert_null(cli_arch_name("riscv64"));
	assert_null(cli_arch_name(""));
}

static void test_numbers(void **state)
{
	uint64_t v;
	double p;
	assert_int_equal(cli_parse_uint("42", 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(cli_parse_uint("101", 100, &v), -1);
	assert_int_equal(cli_parse_uint("-1", 100, &v), -1);
	assert_int_equal(cli_parse_uint("4x", 100, &v), -1);
	assert_int_equal(cli_parse_uint("", 100, &v), -1);
	assert_int_equal(cli_parse_price("2.50", &p), 0);
	assert_true(p > 2.49 && p < 2.51);
	assert_int_equal(cli_parse_price("0", &p), -1);
	assert_int_equal(cli_parse_price("-3", &p), -1);
	assert_int_equal(cli_parse_price("nan", &p), -1);
	assert_int_equal(cli_parse_price("inf", &p), -1);
}

/* Captures what cli_print_json writes to stdout. */
static char *json_of(const ProtobufCMessage *m)
{
	char path[] = "/tmp/drover-cli-json.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stdout);
	int saved = dup(1);
	dup2(fd, 1);
	cli_print_json(m);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	static char buf[8192];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	close(fd);
	unlink(path);
	return buf;
}

static void test_json(void **state)
{
	Drover__Api__V1__Backend b = DROVER__API__V1__BACKEND__INIT;
	char *names[] = {"token"};
	Drover__Compute__V1__Feature feats[] = {DROVER__COMPUTE__V1__FEATURE__FEATURE_OFFERS};
	b.project = "main";
	b.name = "sim2";
	b.type = "brand-new";
	b.secret_names = names;
	b.n_secret_names = 1;
	b.features = feats;
	b.n_features = 1;
	const char *j = json_of(&b.base);
	assert_non_null(strstr(j, "\"type\": \"brand-new\""));
	assert_non_null(strstr(j, "\"secret_names\": [\n    \"token\"\n  ]"));
	assert_non_null(strstr(j, "\"FEATURE_OFFERS\""));
	/* proto3 scalars are always present, so scripts need no defaults. */
	assert_non_null(strstr(j, "\"live_instance_count\": 0"));

	/* A oneof member is present only when set; bytes are base64. */
	Drover__Compute__V1__UintRange r = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	r._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
	r.min = 7;
	j = json_of(&r.base);
	assert_non_null(strstr(j, "\"min\": 7"));
	assert_null(strstr(j, "\"max\""));
	Drover__Compute__V1__ProvisioningData pd = DROVER__COMPUTE__V1__PROVISIONING_DATA__INIT;
	uint8_t raw[] = {1, 2, 3, 4};
	pd.backend_data.data = raw;
	pd.backend_data.len = sizeof(raw);
	pd.state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING;
	j = json_of(&pd.base);
	assert_non_null(strstr(j, "\"backend_data\": \"AQIDBA==\""));
	assert_non_null(strstr(j, "\"INSTANCE_STATE_RUNNING\""));

	/* Maps become objects. */
	Drover__Compute__V1__BackendConfig__SecretsEntry e =
	    DROVER__COMPUTE__V1__BACKEND_CONFIG__SECRETS_ENTRY__INIT;
	Drover__Compute__V1__BackendConfig__SecretsEntry *ep = &e;
	Drover__Compute__V1__BackendConfig bc = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	e.key = "k";
	e.value = "v";
	bc.secrets = &ep;
	bc.n_secrets = 1;
	j = json_of(&bc.base);
	assert_non_null(strstr(j, "\"secrets\": {\n    \"k\": \"v\"\n  }"));

	/*
	 * Text that is not UTF-8 (a driver echoing a command-line byte) keeps its
	 * field, with U+FFFD for each bad byte: json_string() refused it and the
	 * field was left out. Valid multi-byte text is kept as is.
	 */
	Drover__Compute__V1__Diagnostic dg = DROVER__COMPUTE__V1__DIAGNOSTIC__INIT;
	dg.summary = "caf\xc3\xa9";
	dg.detail = "\"\xffk\" is not a secret";
	dg.field_path = "/secrets/\xffk\xed\xa0\x80";
	j = json_of(&dg.base);
	assert_non_null(strstr(j, "\"summary\": \"caf\xc3\xa9\""));
	assert_non_null(strstr(j, "\"detail\": \"\\\"\xef\xbf\xbdk\\\" is not a secret\""));
	assert_non_null(
	    strstr(j, "\"field_path\": \"/secrets/\xef\xbf\xbdk\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""));
	e.key = "\xc0k";
	e.value = "v\xfe";
	j = json_of(&bc.base);
	assert_non_null(strstr(j, "\"\xef\xbf\xbdk\": \"v\xef\xbf\xbd\""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sizes),      cmocka_unit_test(test_ranges),
	    cmocka_unit_test(test_gpu),        cmocka_unit_test(test_arch),
	    cmocka_unit_test(test_clean_text), cmocka_unit_test(test_clean_c1),
	    cmocka_unit_test(test_numbers),    cmocka_unit_test(test_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

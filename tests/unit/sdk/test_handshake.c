/* Tests of handshake.c: the line a spawned driver prints, parsed by the host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drover/host.h"

static void parse_ok(const char *line, const char *network, const char *address)
{
	struct drv_handshake hs;
	char err[256] = "";
	int rc = drv_handshake_parse(line, &hs, err, sizeof(err));
	if (rc != 0)
		fail_msg("\"%s\" rejected: %s", line, err);
	assert_int_equal(hs.core_version, 1);
	assert_int_equal(hs.protocol_version, 1);
	assert_string_equal(hs.network, network);
	assert_string_equal(hs.address, address);
	assert_string_equal(hs.protocol, "grpc");
}

static void test_good_lines(void **state)
{
	parse_ok("1|1|unix|/tmp/drover-x/driver.sock|grpc", "unix", "/tmp/drover-x/driver.sock");
	parse_ok("1|1|tcp|127.0.0.1:4100|grpc", "tcp", "127.0.0.1:4100");
	parse_ok("1|1|tcp|[::1]:4100|grpc", "tcp", "[::1]:4100");
	/* The line arrives with its newline (and maybe CR). */
	parse_ok("1|1|unix|/s.sock|grpc\n", "unix", "/s.sock");
	parse_ok("1|1|unix|/s.sock|grpc\r\n", "unix", "/s.sock");
}

/* Rejects `line` with `code` and a message containing `needle`. */
static void parse_bad(const char *line, int code, const char *needle)
{
	struct drv_handshake hs;
	char err[256] = "";
	int rc = drv_handshake_parse(line, &hs, err, sizeof(err));
	if (rc != code)
		fail_msg("\"%s\": got %d (%s), want %d", line, rc, err, code);
	if (!strstr(err, needle))
		fail_msg("\"%s\": message \"%s\" lacks \"%s\"", line, err, needle);
}

static void test_bad_lines(void **state)
{
	parse_bad("", DRV_EHANDSHAKE, "empty");
	parse_bad("\n", DRV_EHANDSHAKE, "empty");
	parse_bad("hello world", DRV_EHANDSHAKE, "5 '|'-separated fields");
	parse_bad("1|1|unix|/a.sock", DRV_EHANDSHAKE, "5 '|'-separated fields");
	parse_bad("1|1|unix|/a.sock|grpc|extra", DRV_EHANDSHAKE, "more than 5");
	parse_bad("x|1|unix|/a.sock|grpc", DRV_EHANDSHAKE, "core version is not a number: \"x\"");
	parse_bad("2|1|unix|/a.sock|grpc", DRV_EHANDSHAKE, "core version \"2\" is not 1");
	parse_bad("1|one|unix|/a.sock|grpc", DRV_EHANDSHAKE, "protocol version is not a number: \"one\"");
	parse_bad("1|2|unix|/a.sock|grpc", DRV_EPROTOCOL, "protocol version \"2\"");
	parse_bad("1|-1|unix|/a.sock|grpc", DRV_EHANDSHAKE, "not a number");
	parse_bad("1|1|udp|/a.sock|grpc", DRV_EHANDSHAKE, "network \"udp\"");
	parse_bad("1|1|unix|a.sock|grpc", DRV_EHANDSHAKE, "not absolute: \"a.sock\"");
	parse_bad("1|1|unix||grpc", DRV_EHANDSHAKE, "address is empty");
	parse_bad("1|1|tcp|localhost|grpc", DRV_EHANDSHAKE, "not HOST:PORT");
	parse_bad("1|1|tcp|h:99999|grpc", DRV_EHANDSHAKE, "not HOST:PORT");
	parse_bad("1|1|unix|/a.sock|http", DRV_EHANDSHAKE, "protocol \"http\" is not grpc");
	parse_bad("1|1|unix|/a.sock|grpc ", DRV_EHANDSHAKE, "is not grpc");
	parse_bad("1|1|unix|/a\tb|grpc", DRV_EHANDSHAKE, "control character");
	parse_bad("1|1|unix|/a\x1b[31m|grpc", DRV_EHANDSHAKE, "control character");
}

static void test_quotes_are_truncated_and_clean(void **state)
{
	char line[600];
	char err[256];
	struct drv_handshake hs;

	/* An oversized address is rejected and the quote is cut. */
	memset(line, 0, sizeof(line));
	strcpy(line, "1|1|unix|/");
	memset(line + strlen(line), 'a', 300);
	strcat(line, "|grpc");
	assert_int_equal(drv_handshake_parse(line, &hs, err, sizeof(err)), DRV_EHANDSHAKE);
	assert_non_null(strstr(err, "too long"));
	assert_non_null(strstr(err, "..."));
	assert_true(strlen(err) < 120);

	/* A control character is never copied into the message. */
	assert_int_equal(drv_handshake_parse("\x1b[2J|1|unix|/a|grpc", &hs, err, sizeof(err)),
	                 DRV_EHANDSHAKE);
	for (const char *p = err; *p; p++)
		assert_true((unsigned char)*p >= 0x20);

	/* A line far too long for a handshake. */
	char big[3000];
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(drv_handshake_parse(big, &hs, err, sizeof(err)), DRV_EHANDSHAKE);
	assert_non_null(strstr(err, "too long"));

	/* NULL line and tiny error buffers are handled. */
	assert_int_equal(drv_handshake_parse(NULL, &hs, err, sizeof(err)), DRV_EHANDSHAKE);
	assert_int_equal(drv_handshake_parse("junk", &hs, err, 4), DRV_EHANDSHAKE);
	assert_int_equal(strlen(err), 3);
	assert_int_equal(drv_handshake_parse("junk", &hs, NULL, 0), DRV_EHANDSHAKE);
}

static void test_format_round_trip(void **state)
{
	struct drv_handshake hs = {.core_version = 1, .protocol_version = 1};
	struct drv_handshake back;
	char buf[400];
	char err[256];

	strcpy(hs.network, "unix");
	strcpy(hs.address, "/tmp/drover-abc/sim.sock");
	strcpy(hs.protocol, "grpc");
	int n = drv_handshake_format(&hs, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen("1|1|unix|/tmp/drover-abc/sim.sock|grpc"));
	assert_string_equal(buf, "1|1|unix|/tmp/drover-abc/sim.sock|grpc");
	assert_int_equal(drv_handshake_parse(buf, &back, err, sizeof(err)), 0);
	assert_memory_equal(&hs, &back, sizeof(hs));

	strcpy(hs.network, "tcp");
	strcpy(hs.address, "127.0.0.1:4100");
	assert_true(drv_handshake_format(&hs, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "1|1|tcp|127.0.0.1:4100|grpc");

	/* Too small a buffer, a bad network or a '|' in the address: errors. */
	assert_true(drv_handshake_format(&hs, buf, 10) < 0);
	strcpy(hs.network, "udp");
	assert_true(drv_handshake_format(&hs, buf, sizeof(buf)) < 0);
	strcpy(hs.network, "unix");
	strcpy(hs.address, "/a|b");
	assert_true(drv_handshake_format(&hs, buf, sizeof(buf)) < 0);
}

/* Random lines from the handshake's own alphabet: never a crash, never an unclean message. */
static void test_random_lines(void **state)
{
	static const char alphabet[] = "0112|||||unixtcpgrpc/:.[]- \x01\x7f\xff";
	unsigned seed = 12345;
	int accepted = 0;
	for (int iter = 0; iter < 200000; iter++) {
		char line[48];
		size_t n = (size_t)(rand_r(&seed) % (sizeof(line) - 1));
		for (size_t i = 0; i < n; i++)
			line[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
		line[n] = '\0';
		/* A quarter of the runs are nearly valid, so the deeper checks are reached too. */
		if (iter % 4 == 1)
			snprintf(line, sizeof(line), "1|1|unix|/%.*s|grpc", (int)(n % 20),
			         "abc/def.sock\x01|xyz.s/k");
		struct drv_handshake hs;
		char err[128];
		int rc = drv_handshake_parse(line, &hs, err, sizeof(err));
		if (rc == 0) {
			accepted++;
			char back[400];
			assert_true(drv_handshake_format(&hs, back, sizeof(back)) > 0);
			continue;
		}
		assert_true(rc == DRV_EHANDSHAKE || rc == DRV_EPROTOCOL);
		for (const char *p = err; *p; p++)
			assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p != 0x7f);
	}
	assert_true(accepted > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_lines),
	    cmocka_unit_test(test_bad_lines),
	    cmocka_unit_test(test_quotes_are_truncated_and_clean),
	    cmocka_unit_test(test_format_round_trip),
	    cmocka_unit_test(test_random_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

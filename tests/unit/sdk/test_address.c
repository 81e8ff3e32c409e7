/* Tests of address.c: the one parser of HOST:PORT and [IPV6]:PORT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "drover/address.h"
#include "drover/types.h"

static void ok(const char *addr, bool port0, const char *host, unsigned port)
{
	struct drv_host_port hp;
	char why[128] = "";
	int rc = drv_host_port_parse(addr, port0, &hp, why, sizeof(why));
	if (rc != 0)
		fail_msg("\"%s\" refused: %s", addr, why);
	assert_string_equal(hp.host, host);
	assert_int_equal(hp.port, port);
}

static void bad(const char *addr, bool port0, const char *reason)
{
	struct drv_host_port hp = {.host = "untouched", .port = 7};
	char why[128] = "";
	assert_int_equal(drv_host_port_parse(addr, port0, &hp, why, sizeof(why)), DRV_EINVAL);
	if (!strstr(why, reason))
		fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", addr, why, reason);
	/* Written only on success. */
	assert_string_equal(hp.host, "untouched");
	assert_int_equal(hp.port, 7);
}

static void test_accepted(void **state)
{
	ok("127.0.0.1:4100", false, "127.0.0.1", 4100);
	ok("localhost:1", false, "localhost", 1);
	ok("drivers.example.com:65535", false, "drivers.example.com", 65535);
	ok("[::1]:7443", false, "::1", 7443);
	ok("[fe80::1%eth0]:80", false, "fe80::1%eth0", 80);
	ok("127.0.0.1:0", true, "127.0.0.1", 0); /* a listener's "any free port" */
	ok("[::]:0", true, "::", 0);
	ok("h:00080", false, "h", 80);
	/* NULL out and why are fine. */
	assert_int_equal(drv_host_port_parse("h:1", false, NULL, NULL, 0), 0);
	assert_int_equal(drv_host_port_parse("h", false, NULL, NULL, 0), DRV_EINVAL);
}

static void test_ipv6_needs_brackets(void **state)
{
	/* gRPC reads a bare IPv6 literal as a host without a port, so "::1:7443" would go to port 443. */
	bad("::1:7443", false, "IPv6 host must be in brackets");
	bad("fe80::1:80", false, "IPv6 host must be in brackets");
	bad("[::1:7443", false, "no closing ']'");
	bad("[::1]7443", false, "expected ':' after ']'");
	bad("[::1]", false, "port is missing");
	bad("[]:80", false, "host is empty");
	bad("a]b:80", false, "bracket");
}

static void test_missing_port(void **state)
{
	bad("localhost", false, "port is missing");
	bad("localhost:", false, "port is missing");
	bad("[::1]:", false, "port is missing");
	bad("", false, "address is empty");
	bad(NULL, false, "address is empty");
}

static void test_port_out_of_range(void **state)
{
	/* The resolver takes 99999 modulo 65536: another port. */
	bad("127.0.0.1:99999", false, "from 1 to 65535");
	bad("127.0.0.1:65536", false, "from 1 to 65535");
	bad("127.0.0.1:0", false, "from 1 to 65535");
	bad("127.0.0.1:65536", true, "from 0 to 65535");
	bad("127.0.0.1:184467440737095516170", false, "from 1 to 65535"); /* no overflow back into range */
	bad("127.0.0.1:+80", false, "from 1 to 65535");
	bad("127.0.0.1:-1", false, "from 1 to 65535");
	bad("127.0.0.1: 80", false, "from 1 to 65535");
	bad("127.0.0.1:80x", false, "from 1 to 65535");
}

static void test_empty_or_bad_host(void **state)
{
	bad(":80", false, "host is empty");
	bad("bad host:80", false, "space");
	bad("bad\thost:80", false, "control character");
	char longhost[300];
	memset(longhost, 'a', 256);
	strcpy(longhost + 256, ":80");
	bad(longhost, false, "longer than 255 bytes");
	longhost[255] = '\0';
	strcat(longhost, ":80");
	struct drv_host_port hp;
	assert_int_equal(drv_host_port_parse(longhost, false, &hp, NULL, 0), 0);
	assert_int_equal(strlen(hp.host), 255);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepted),          cmocka_unit_test(test_ipv6_needs_brackets),
	    cmocka_unit_test(test_missing_port),      cmocka_unit_test(test_port_out_of_range),
	    cmocka_unit_test(test_empty_or_bad_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

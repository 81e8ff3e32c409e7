/*
 * The handshake line a spawned driver prints on stdout:
 *
 *   CORE|PROTOCOL|NETWORK|ADDRESS|grpc      e.g. 1|1|unix|/tmp/d/x.sock|grpc
 *
 * The host reads it from a child it does not trust yet, so parsing rejects
 * anything unexpected with a message that quotes the offending part.
 */
#include <stdio.h>
#include <string.h>

#include "drover/address.h"
#include "drover/host.h"

#define CORE_VERSION 1
#define MAX_LINE 1024
#define QUOTE_MAX 40

/*
 * Copies at most QUOTE_MAX bytes of [s, s+n) into out, with "..." when cut.
 * Control characters become '?' so an error message never carries a
 * terminal escape from an untrusted child into the host's log.
 */
static void quote(char *out, size_t outlen, const char *s, size_t n)
{
	size_t k = n > QUOTE_MAX ? QUOTE_MAX : n;
	size_t o = 0;
	if (outlen == 0)
		return;
	for (size_t i = 0; i < k && o + 1 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (n > QUOTE_MAX)
		for (int i = 0; i < 3 && o + 1 < outlen; i++)
			out[o++] = '.';
	out[o] = '\0';
}

static int fail(char *err, size_t errlen, int code, const char *fmt, const char *part, size_t n)
{
	char q[QUOTE_MAX + 8];
	quote(q, sizeof(q), part, n);
	if (err && errlen)
		snprintf(err, errlen, fmt, q);
	return code;
}

/* Parses a small non-negative decimal; -1 when not all digits or too long. */
static int parse_uint(const char *s, size_t n)
{
	int v = 0;
	if (n == 0 || n > 6)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* A TCP address as drv_host_port_parse() reads it, from a part of the line that has no NUL of its own. */
static bool tcp_address_ok(const char *s, size_t n)
{
	char addr[MAX_LINE + 1];
	if (n >= sizeof(addr))
		return false;
	memcpy(addr, s, n);
	addr[n] = '\0';
	return drv_host_port_parse(addr, false, NULL, NULL, 0) == 0;
}

int drv_handshake_parse(const char *line, struct drv_handshake *hs, char *err, size_t errlen)
{
	const char *part[5];
	size_t len[5];
	size_t nparts = 0;

	if (!line || !hs)
		return fail(err, errlen, DRV_EHANDSHAKE, "empty handshake line%s", "", 0);
	size_t total = strlen(line);
	/* A single trailing newline (and CR) is how the line arrives; tolerate it. */
	if (total && line[total - 1] == '\n')
		total--;
	if (total && line[total - 1] == '\r')
		total--;
	if (total == 0)
		return fail(err, errlen, DRV_EHANDSHAKE, "empty handshake line%s", "", 0);
	if (total > MAX_LINE)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake line too long: \"%s\"", line, total);
	for (size_t i = 0; i < total; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c < 0x20 || c == 0x7f)
			return fail(err, errlen, DRV_EHANDSHAKE,
			            "handshake line contains a control character: \"%s\"", line, total);
	}

	const char *p = line;
	const char *end = line + total;
	for (;;) {
		const char *bar = memchr(p, '|', (size_t)(end - p));
		const char *stop = bar ? bar : end;
		if (nparts == 5) {
			return fail(err, errlen, DRV_EHANDSHAKE,
			            "handshake line has more than 5 '|'-separated fields: \"%s\"", line,
			            total);
		}
		part[nparts] = p;
		len[nparts] = (size_t)(stop - p);
		nparts++;
		if (!bar)
			break;
		p = bar + 1;
	}
	if (nparts != 5)
		return fail(err, errlen, DRV_EHANDSHAKE,
		            "handshake line must have 5 '|'-separated fields "
		            "(CORE|PROTOCOL|NETWORK|ADDRESS|grpc): \"%s\"",
		            line, total);

	int core = parse_uint(part[0], len[0]);
	if (core < 0)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake core version is not a number: \"%s\"",
		            part[0], len[0]);
	if (core != CORE_VERSION)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake core version \"%s\" is not 1", part[0],
		            len[0]);

	int proto = parse_uint(part[1], len[1]);
	if (proto < 0)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake protocol version is not a number: \"%s\"",
		            part[1], len[1]);
	if (proto != DRV_PROTOCOL_VERSION)
		return fail(err, errlen, DRV_EPROTOCOL,
		            "driver speaks protocol version \"%s\"; this build speaks version 1", part[1],
		            len[1]);

	bool is_unix = len[2] == 4 && memcmp(part[2], "unix", 4) == 0;
	bool is_tcp = len[2] == 3 && memcmp(part[2], "tcp", 3) == 0;
	if (!is_unix && !is_tcp)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake network \"%s\" is neither unix nor tcp",
		            part[2], len[2]);

	if (len[3] == 0)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake address is empty%s", "", 0);
	if (len[3] >= sizeof(hs->address))
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake address is too long: \"%s\"", part[3],
		            len[3]);
	if (is_unix && part[3][0] != '/')
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake unix socket path is not absolute: \"%s\"",
		            part[3], len[3]);
	if (is_tcp && !tcp_address_ok(part[3], len[3]))
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake tcp address is not HOST:PORT: \"%s\"",
		            part[3], len[3]);

	if (len[4] != 4 || memcmp(part[4], "grpc", 4) != 0)
		return fail(err, errlen, DRV_EHANDSHAKE, "handshake protocol \"%s\" is not grpc", part[4],
		            len[4]);

	memset(hs, 0, sizeof(*hs));
	hs->core_version = core;
	hs->protocol_version = proto;
	memcpy(hs->network, part[2], len[2]);
	memcpy(hs->address, part[3], len[3]);
	memcpy(hs->protocol, "grpc", 4);
	return 0;
}

int drv_handshake_format(const struct drv_handshake *hs, char *buf, size_t buflen)
{
	if (!hs || !buf || buflen == 0)
		return DRV_EINVAL;
	if (strcmp(hs->network, "unix") != 0 && strcmp(hs->network, "tcp") != 0)
		return DRV_EINVAL;
	if (hs->address[0] == '\0' || memchr(hs->address, '|', strnlen(hs->address, sizeof(hs->address))))
		return DRV_EINVAL;
	const char *protocol = hs->protocol[0] ? hs->protocol : "grpc";
	int n = snprintf(buf, buflen, "%d|%d|%s|%.*s|%s", hs->core_version ? hs->core_version : CORE_VERSION,
	                 hs->protocol_version ? hs->protocol_version : DRV_PROTOCOL_VERSION, hs->network,
	                 (int)sizeof(hs->address), hs->address, protocol);
	if (n < 0 || (size_t)n >= buflen)
		return DRV_EINVAL;
	return n;
}

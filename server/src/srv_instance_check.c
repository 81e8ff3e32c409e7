/*
 * The checks droverd makes of a driver's provisioning data (CreateInstance,
 * GetInstance and ListInstances answers) before anything of it is stored or
 * acted on. A driver is third-party code: an id droverd cannot use to
 * terminate the machine, or an address that is not one, is a fault of that
 * driver, never a row.
 */
#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "drover/driver.h"
#include "srv_engine_internal.h"

/*
 * The code point of the UTF-8 sequence at s (at most `left` bytes) in *cp,
 * and its length; 0 when it is not valid UTF-8 (overlong, surrogate, cut).
 */
static size_t utf8_next(const unsigned char *s, size_t left, unsigned *cp)
{
	size_t n;
	unsigned min;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, min = 0x80, *cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, min = 0x800, *cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, min = 0x10000, *cp = s[0] & 0x07;
	else
		return 0;
	if (n > left)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3f);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Whether s is printable UTF-8 of at most `max` bytes: no C0 or C1 control
 * character and no DEL, which would reach a terminal as commands. Writes
 * the fault, naming `field`, into why.
 */
static bool text_ok(const char *field, const char *s, size_t max, bool required, char *why, size_t len)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 && required) {
		snprintf(why, len, "%s is empty", field);
		return false;
	}
	if (n > max) {
		snprintf(why, len, "%s is %zu bytes long, more than %zu", field, n, max);
		return false;
	}
	for (size_t i = 0; i < n;) {
		unsigned cp;
		size_t k = utf8_next((const unsigned char *)s + i, n - i, &cp);
		if (k == 0) {
			snprintf(why, len, "%s is not valid UTF-8 (at byte %zu)", field, i);
			return false;
		}
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
			snprintf(why, len, "%s holds control character U+%04X at byte %zu", field, cp, i);
			return false;
		}
		i += k;
	}
	return true;
}

/* Printable ASCII of a few kinds only: letters, digits and the characters in `extra`. */
static bool ascii_ok(const char *field, const char *s, size_t max, const char *extra, char *why, size_t len)
{
	if (!text_ok(field, s, max, false, why, len))
		return false;
	for (const char *p = s; p && *p; p++) {
		unsigned char ch = (unsigned char)*p;
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		          (ch && strchr(extra, ch));
		if (!ok) {
			snprintf(why, len, "%s holds '%c', which is not allowed there", field,
			         ch < 0x80 ? ch : '?');
			return false;
		}
	}
	return true;
}

int srv__check_provisioning(const drv_provisioning_data *pd, char *why, size_t len)
{
	if (!pd) {
		snprintf(why, len, "the answer carries no provisioning data");
		return -1;
	}
	if (!text_ok("instance_id", pd->instance_id, SRV_MAX_INSTANCE_ID, true, why, len) ||
	    !text_ok("instance_type", pd->instance_type, SRV_MAX_NAME, false, why, len) ||
	    !text_ok("region", pd->region, SRV_MAX_NAME, false, why, len) ||
	    !text_ok("zone", pd->zone, SRV_MAX_NAME, false, why, len) ||
	    /* A DNS name (253 bytes at most), or an IPv6 literal. */
	    !ascii_ok("hostname", pd->hostname, 253, "-._:", why, len) ||
	    /* A POSIX user name, never an option ("-oProxyCommand=..."). */
	    !ascii_ok("username", pd->username, 64, "-._", why, len))
		return -1;
	if (pd->hostname && pd->hostname[0] == '-') {
		snprintf(why, len, "hostname starts with '-'");
		return -1;
	}
	if (pd->username && pd->username[0] == '-') {
		snprintf(why, len, "username starts with '-'");
		return -1;
	}
	unsigned char addr[16];
	if (pd->internal_ip && pd->internal_ip[0] &&
	    (strlen(pd->internal_ip) > 45 || (inet_pton(AF_INET, pd->internal_ip, addr) != 1 &&
	                                      inet_pton(AF_INET6, pd->internal_ip, addr) != 1))) {
		snprintf(why, len, "internal_ip is not an IPv4 or IPv6 address");
		return -1;
	}
	if (pd->ssh_port > 65535) {
		snprintf(why, len, "ssh_port %u is not a port (1 to 65535, or 0: unknown)", pd->ssh_port);
		return -1;
	}
	if (pd->backend_data.len > SRV_MAX_BACKEND_DATA) {
		snprintf(why, len, "backend_data is %zu bytes long, more than %d", pd->backend_data.len,
		         SRV_MAX_BACKEND_DATA);
		return -1;
	}
	if (!protobuf_c_enum_descriptor_get_value(&drover__compute__v1__instance_state__descriptor,
	                                          (int)pd->state)) {
		snprintf(why, len, "state %d is not an InstanceState", (int)pd->state);
		return -1;
	}
	if (!isfinite(pd->price_per_hour) || pd->price_per_hour < 0) {
		snprintf(why, len, "price_per_hour is not a finite price >= 0");
		return -1;
	}
	return 0;
}

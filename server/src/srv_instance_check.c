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
#include "drover/offer_check.h"
#include "srv_engine_internal.h"

/* Printable ASCII of a few kinds only: letters, digits and the characters in `extra`. */
static bool ascii_ok(const char *field, const char *s, size_t max, const char *extra, char *why, size_t len)
{
	if (!drv_text_check(field, s, max, false, why, len))
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
	/* The same text rules as for offers, and the harness's for ids (drover/offer_check.h). */
	if (!drv_text_check("instance_id", pd->instance_id, DRV_TEXT_MAX_ID, true, why, len) ||
	    !drv_text_check("instance_type", pd->instance_type, DRV_TEXT_MAX_NAME, false, why, len) ||
	    !drv_text_check("region", pd->region, DRV_TEXT_MAX_NAME, false, why, len) ||
	    !drv_text_check("zone", pd->zone, DRV_TEXT_MAX_NAME, false, why, len) ||
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

/* The one parser of "HOST:PORT" and "[IPV6]:PORT" (drover/address.h). */
#include "drover/address.h"

#include <stdio.h>
#include <string.h>

#include "drover/types.h"

static int refuse(char *why, size_t whylen, const char *reason)
{
	if (why && whylen)
		snprintf(why, whylen, "%s", reason);
	return DRV_EINVAL;
}

int drv_host_port_parse(const char *addr, bool allow_port_0, struct drv_host_port *out, char *why,
                        size_t whylen)
{
	const char *host, *colon;
	size_t hl;

	if (!addr || !*addr)
		return refuse(why, whylen, "the address is empty");
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (!close)
			return refuse(why, whylen, "an IPv6 host has no closing ']'");
		host = addr + 1;
		hl = (size_t)(close - host);
		if (close[1] != ':')
			return refuse(why, whylen,
			              close[1] ? "expected ':' after ']'" : "the port is missing");
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return refuse(why, whylen, "the port is missing (expected HOST:PORT)");
		host = addr;
		hl = (size_t)(colon - addr);
		if (memchr(host, ':', hl))
			return refuse(why, whylen, "an IPv6 host must be in brackets ([::1]:PORT)");
	}
	if (hl == 0)
		return refuse(why, whylen, "the host is empty");
	if (hl >= sizeof(out->host))
		return refuse(why, whylen, "the host is longer than 255 bytes");
	for (size_t i = 0; i < hl; i++) {
		unsigned char c = (unsigned char)host[i];
		if (c <= ' ' || c == 0x7f || c == '[' || c == ']')
			return refuse(why, whylen,
			              "the host contains a space, a control character or a bracket");
	}
	const char *p = colon + 1;
	const char *range = allow_port_0 ? "the port must be a number from 0 to 65535"
	                                 : "the port must be a number from 1 to 65535";
	if (!*p)
		return refuse(why, whylen, "the port is missing");
	unsigned long port = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return refuse(why, whylen, range);
		port = port * 10 + (unsigned long)(*p - '0');
		if (port > 65535)
			return refuse(why, whylen, range);
	}
	if (port == 0 && !allow_port_0)
		return refuse(why, whylen, range);
	if (out) {
		memcpy(out->host, host, hl);
		out->host[hl] = '\0';
		out->port = (uint16_t)port;
	}
	return 0;
}

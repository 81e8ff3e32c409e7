/*
 * Which hosts count as loopback, for the three places that allow plain TCP
 * only there: a driver's --listen, a host's connect, and a spawned driver's
 * handshake. A host name is not resolved: only "localhost" (and
 * "ip6-localhost") and literal loopback addresses count, so a name such as
 * "127.example.com", which may resolve anywhere, is not taken for one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "drv_internal.h"

bool drv__is_loopback_host(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (!host)
		return false;
	if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "ip6-localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

/*
 * drover/address.h — the one parser of a TCP address, "HOST:PORT" or
 * "[IPV6]:PORT", for everything that reads one: a driver's --listen and its
 * handshake line, drv_host_connect(), droverd's config (listen.tcp, remote
 * drivers) and the CLI's --server. Unix socket targets ("unix:/path") are
 * the callers' own business.
 */
#ifndef DROVER_ADDRESS_H
#define DROVER_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed address. The host is without brackets: "::1", "127.0.0.1", "example.com". */
struct drv_host_port {
	char host[256];
	uint16_t port;
};

/*
 * Parses addr. The host is not empty, at most 255 bytes, and free of spaces,
 * control characters, '[' and ']'; an IPv6 literal must be in brackets,
 * because gRPC reads a bare one ("::1:4100") as a host without a port. The
 * port is decimal digits only, from 1 to 65535 (0 as well with allow_port_0,
 * the "any free port" of a listener), checked here because the resolver takes
 * a larger port modulo 65536: 127.0.0.1:99999 would reach port 34463.
 * Returns 0 and fills *out (may be NULL), or DRV_EINVAL with the reason in
 * `why` ("the port is missing", ...; may be NULL). Copies nothing of addr.
 */
int drv_host_port_parse(const char *addr, bool allow_port_0, struct drv_host_port *out, char *why,
                        size_t whylen);

#endif

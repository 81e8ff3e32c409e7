/*
 * The handshake line a spawned driver prints (driver-sdk/src/handshake.c):
 * the first bytes droverd reads from a driver. The input is the line. What
 * must hold: no crash, an error message on refusal, and a line that parses
 * formats back to a line that parses to the same fields.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drover/host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The host reads the line as a C string: a NUL ends it there too. */
	char *line = strndup((const char *)data, size);
	if (!line)
		return 0;
	struct drv_handshake hs, again;
	char err[256] = "", buf[512];
	if (drv_handshake_parse(line, &hs, err, sizeof(err)) != 0) {
		if (!err[0])
			abort(); /* a refusal must say why */
	} else {
		int n = drv_handshake_format(&hs, buf, sizeof(buf));
		if (n < 0 || drv_handshake_parse(buf, &again, err, sizeof(err)) != 0) {
			fprintf(stderr,
			        "fuzz_handshake: \"%s\" parsed, but its formatted form \"%s\" did not: %s\n",
			        line, n < 0 ? "" : buf, err);
			abort();
		}
		if (memcmp(&hs, &again, sizeof(hs)) != 0 &&
		    (hs.core_version != again.core_version || hs.protocol_version != again.protocol_version ||
		     strcmp(hs.network, again.network) != 0 || strcmp(hs.address, again.address) != 0 ||
		     strcmp(hs.protocol, again.protocol) != 0)) {
			fprintf(stderr, "fuzz_handshake: \"%s\" and its formatted form \"%s\" differ\n", line,
			        buf);
			abort();
		}
	}
	free(line);
	return 0;
}

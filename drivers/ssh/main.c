/*
 * drover-driver-ssh: the ssh driver as a driver process, and its one
 * command of its own: `keyscan HOST[:PORT]` prints the host_key line of a
 * host for the config, as ssh-keyscan would (check it out of band: this is
 * the one moment the key is taken on trust).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssh_conn.h"
#include "ssh_driver.h"

static int keyscan(const char *arg)
{
	char host[300];
	int port = 22;
	const char *colon = strrchr(arg, ':');
	if (arg[0] == '[') { /* [v6 address]:port */
		const char *end = strchr(arg, ']');
		if (!end || (end[1] && end[1] != ':'))
			goto usage;
		snprintf(host, sizeof(host), "%.*s", (int)(end - arg - 1), arg + 1);
		colon = end[1] == ':' ? end + 1 : NULL;
	} else if (colon && strchr(arg, ':') != colon) {
		snprintf(host, sizeof(host), "%s", arg); /* a bare v6 address */
		colon = NULL;
	} else {
		snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - arg) : (int)strlen(arg), arg);
	}
	if (colon) {
		char *end;
		long p = strtol(colon + 1, &end, 10);
		if (*end || p < 1 || p > 65535)
			goto usage;
		port = (int)p;
	}
	if (!host[0])
		goto usage;
	char line[16384], err[600];
	if (ssh_pool_start(1) != 0 || ssh_keyscan(host, port, 10000, line, sizeof(line), err, sizeof(err))) {
		fprintf(stderr, "drover-driver-ssh keyscan: %s\n", err);
		return 1;
	}
	printf("%s\n", line);
	return 0;
usage:
	fprintf(stderr, "usage: drover-driver-ssh keyscan HOST[:PORT]   (HOST may be [IPv6]:PORT)\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "keyscan") == 0) {
		if (argc != 3) {
			fprintf(stderr, "usage: drover-driver-ssh keyscan HOST[:PORT]\n");
			return 2;
		}
		return keyscan(argv[2]);
	}
	return drv_main(argc, argv, &ssh_driver);
}

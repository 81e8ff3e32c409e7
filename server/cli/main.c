/* drover: the command-line client of droverd. This file only wires options to commands. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char usage[] =
    "Usage: drover [GLOBAL OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "The command-line client of droverd, the drover server.\n"
    "\n"
    "Commands:\n"
    "  driver list | show TYPE          drivers as the server supervises them\n"
    "  project list | create NAME       projects\n"
    "  backend add | list | remove      backends of a project\n"
    "  offer [REQUIREMENTS]             offers of every backend of a project, cheapest first\n"
    "  instance create | list | show | terminate\n"
    "  event list                       what the server did and why\n"
    "Run `drover COMMAND --help` for the options of each.\n"
    "\n"
    "Global options:\n"
    "  --server ADDR       unix:PATH or HOST:PORT; without it, the first of:\n"
    "                      $DROVER_SERVER; the data directory `make run` recorded\n"
    "                      in $XDG_RUNTIME_DIR/drover/server (without\n"
    "                      $XDG_RUNTIME_DIR: ~/.local/state/drover/server), while\n"
    "                      its droverd.sock exists; unix:./var/droverd.sock\n"
    "  --token-file FILE   file holding the bearer token (default $DROVER_TOKEN_FILE,\n"
    "                      else admin.token in the recorded directory when the\n"
    "                      server was found there, else ./var/admin.token); the\n"
    "                      token is never printed\n"
    "  --ca-file FILE      CA of the server's TLS certificate (TCP with TLS)\n"
    "  --cert-file FILE    client certificate, with --key-file, when the server\n"
    "                      requires one (mutual TLS)\n"
    "  --project NAME      default project (default main, or $DROVER_PROJECT)\n"
    "  --json              print results as JSON (proto field names) for scripts\n"
    "  --timeout SECONDS   per-call deadline (default 60)\n"
    "  -h, --help          this help\n"
    "  --version           the client's version\n"
    "\n"
    "Exit codes:\n"
    "  0  success\n"
    "  1  the server refused or failed the request (its status is printed on\n"
    "     stderr as \"drover: METHOD: CODE: message\"), or the result is a failure\n"
    "     (an invalid backend config, an instance that could not be created)\n"
    "  2  usage error: bad command line or unreadable local file\n"
    "  3  cannot reach the server\n";

enum {
	OPT_SERVER = 256,
	OPT_TOKEN_FILE,
	OPT_CA_FILE,
	OPT_CERT_FILE,
	OPT_KEY_FILE,
	OPT_PROJECT,
	OPT_JSON,
	OPT_TIMEOUT,
	OPT_VERSION
};

static const struct option opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"ca-file", required_argument, NULL, OPT_CA_FILE},
    {"cert-file", required_argument, NULL, OPT_CERT_FILE},
    {"key-file", required_argument, NULL, OPT_KEY_FILE},
    {"project", required_argument, NULL, OPT_PROJECT},
    {"json", no_argument, NULL, OPT_JSON},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

/*
 * The data directory `make run` (scripts/run.sh) recorded for this user, so
 * that the CLI finds that droverd from any directory. The record is one
 * line, an absolute path, in $XDG_RUNTIME_DIR/drover/server (per user, and
 * gone after a reboot, as the server is), else in
 * ~/.local/state/drover/server. It is used only while the directory holds a
 * socket: a record left by a droverd that has stopped is ignored. Fills
 * `sock` ("unix:DIR/droverd.sock") and `token` (DIR/admin.token), and
 * `from` with the record's path, or returns false.
 */
static bool recorded_server(char *sock, size_t sock_len, char *token, size_t token_len, char *from,
                            size_t from_len)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR"), *home = getenv("HOME");
	if (xdg && xdg[0] == '/')
		snprintf(from, from_len, "%s/drover/server", xdg);
	else if (home && home[0] == '/')
		snprintf(from, from_len, "%s/.local/state/drover/server", home);
	else
		return false;
	FILE *f = fopen(from, "r");
	char dir[4000];
	if (!f)
		return false;
	bool got = fgets(dir, sizeof(dir), f) != NULL;
	fclose(f);
	if (!got)
		return false;
	dir[strcspn(dir, "\r\n")] = '\0';
	struct stat st;
	char path[4100];
	snprintf(path, sizeof(path), "%s/droverd.sock", dir);
	if (dir[0] != '/' || stat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
		return false;
	snprintf(sock, sock_len, "unix:%s", path);
	snprintf(token, token_len, "%s/admin.token", dir);
	return true;
}

int main(int argc, char **argv)
{
	struct cli_ctx c = {
	    .server = env_or("DROVER_SERVER", "unix:./var/droverd.sock"),
	    .server_from = env_or("DROVER_SERVER", NULL) ? "$DROVER_SERVER" : "--server",
	    .token_file = env_or("DROVER_TOKEN_FILE", "./var/admin.token"),
	    .project = env_or("DROVER_PROJECT", "main"),
	    .timeout_ms = 60000,
	};
	int opt;
	static char rec_sock[4200], rec_token[4200], rec_from[4096], rec_why[4200];
	bool token_from_record = false;
	if (!getenv("DROVER_SERVER") || !*getenv("DROVER_SERVER")) {
		if (recorded_server(rec_sock, sizeof(rec_sock), rec_token, sizeof(rec_token), rec_from,
		                    sizeof(rec_from))) {
			snprintf(rec_why, sizeof(rec_why), "the directory recorded in %s by make run",
			         rec_from);
			c.server = rec_sock;
			c.server_from = rec_why;
			if (!env_or("DROVER_TOKEN_FILE", NULL)) {
				c.token_file = rec_token;
				token_from_record = true;
			}
		}
	}
	bool token_given = false;

	/*
	 * gRPC's own log lines would interleave with the CLI's output; errors reach
	 * the user through the call status instead. GRPC_VERBOSITY=debug in the
	 * environment still turns them on.
	 */
	setenv("GRPC_VERBOSITY", "NONE", 0);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case OPT_SERVER:
			c.server = optarg;
			c.server_from = "--server";
			break;
		case OPT_TOKEN_FILE:
			c.token_file = optarg;
			token_given = true;
			break;
		case OPT_CA_FILE:
			c.ca_file = optarg;
			break;
		case OPT_CERT_FILE:
			c.cert_file = optarg;
			break;
		case OPT_KEY_FILE:
			c.key_file = optarg;
			break;
		case OPT_PROJECT:
			c.project = optarg;
			break;
		case OPT_JSON:
			c.json = true;
			break;
		case OPT_TIMEOUT:
			if (cli_parse_timeout(optarg, &c.timeout_ms) < 0)
				return cli_usage_error(
				    "--timeout %s: expected whole seconds between 1 and 86400", optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			return CLI_EXIT_OK;
		case OPT_VERSION:
			printf("drover %s\n", DROVER_VERSION);
			return CLI_EXIT_OK;
		default:
			return cli_usage_error("unknown or incomplete global option '%s' (see drover --help)",
			                       argv[optind - 1]);
		}
	}
	/* The recorded server's token is not the token of a server named by --server. */
	if (token_from_record && !token_given && c.server != rec_sock)
		c.token_file = "./var/admin.token";
	if (optind >= argc) {
		fputs(usage, stderr);
		return CLI_EXIT_USAGE;
	}

	static const struct {
		const char *name;
		int (*fn)(struct cli_ctx *, int, char **);
	} cmds[] = {
	    {"driver", cli_cmd_driver},     {"drivers", cli_cmd_driver}, {"project", cli_cmd_project},
	    {"backend", cli_cmd_backend},   {"offer", cli_cmd_offer},    {"offers", cli_cmd_offer},
	    {"instance", cli_cmd_instance}, {"event", cli_cmd_event},    {"events", cli_cmd_event},
	};
	const char *cmd = argv[optind];
	if (strcmp(cmd, "help") == 0) {
		fputs(usage, stdout);
		return CLI_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(cmd, cmds[i].name) == 0) {
			int rc = cmds[i].fn(&c, argc - optind, argv + optind);
			cli_ctx_close(&c);
			return rc;
		}
	}
	return cli_usage_error("unknown command '%s' (see drover --help)", cmd);
}

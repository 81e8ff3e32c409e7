/*
 * The CLI's one way to talk to droverd: a lazily opened channel, the bearer
 * token, and the mapping of failures to exit codes. "Cannot reach the server"
 * (exit 3) is decided by a plain connect() to the server's socket, because a
 * gRPC UNAVAILABLE alone cannot tell a dead server from a server reporting
 * that one of its drivers is down (exit 1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "drover/address.h"
#include "drover/rpc.h"

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("drover: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return CLI_EXIT_USAGE;
}

/* Builds the gRPC target: a relative unix path is made absolute, as gRPC resolves it against nothing useful.
 */
static int make_target(struct cli_ctx *c)
{
	const char *s = c->server;
	if (strncmp(s, "unix:", 5) == 0) {
		const char *path = s + 5;
		if (!*path)
			return cli_usage_error("%s %s: empty socket path", c->server_from, s);
		if (path[0] == '/') {
			snprintf(c->target, sizeof(c->target), "unix:%s", path);
		} else {
			char cwd[4096];
			if (!getcwd(cwd, sizeof(cwd)))
				return cli_usage_error("cannot get the current directory: %s",
				                       strerror(errno));
			while (strncmp(path, "./", 2) == 0)
				path += 2;
			snprintf(c->target, sizeof(c->target), "unix:%s/%s", cwd, path);
		}
		return 0;
	}
	char why[96];
	if (drv_host_port_parse(s, false, NULL, why, sizeof(why)) != 0)
		return cli_usage_error("%s %s: expected unix:PATH or HOST:PORT: %s", c->server_from, s, why);
	snprintf(c->target, sizeof(c->target), "%s", s);
	return 0;
}

/* 0 when something accepts connections at the target, else errno-style text in err. */
static int probe(const struct cli_ctx *c, char *err, size_t errlen)
{
	int fd = -1;
	if (strncmp(c->target, "unix:", 5) == 0) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		const char *path = c->target + 5;
		if (strlen(path) >= sizeof(sa.sun_path)) {
			snprintf(err, errlen, "socket path too long");
			return -1;
		}
		strcpy(sa.sun_path, path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			snprintf(err, errlen, "%s", strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		return 0;
	}
	struct drv_host_port hp;
	char port[8];
	if (drv_host_port_parse(c->target, false, &hp, err, errlen) != 0)
		return -1;
	snprintf(port, sizeof(port), "%u", (unsigned)hp.port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int gai = getaddrinfo(hp.host, port, &hints, &ai);
	if (gai) {
		snprintf(err, errlen, "%s", gai_strerror(gai));
		return -1;
	}
	int rc = -1;
	snprintf(err, errlen, "no address");
	for (struct addrinfo *a = ai; a && rc; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			rc = 0;
		} else if (errno == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			if (poll(&p, 1, 3000) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && !soerr)
				rc = 0;
			else
				snprintf(err, errlen, "%s", soerr ? strerror(soerr) : "connection timed out");
		} else {
			snprintf(err, errlen, "%s", strerror(errno));
		}
		close(fd);
	}
	freeaddrinfo(ai);
	return rc;
}

static bool transport_error(int rc)
{
	return rc == DRV_EUNAVAILABLE || rc == DRV_EUNKNOWN || rc == DRV_EINTERNAL || rc == DRV_ECANCELLED;
}

/*
 * True when the server still accepts connections. A dying process closes its
 * connections before its listening socket, so one successful connect() right
 * after a dropped call proves little: probe three times, 50 ms apart.
 */
static bool still_there(const struct cli_ctx *c, char *err, size_t errlen)
{
	for (int i = 0; i < 3; i++) {
		if (i) {
			struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (probe(c, err, errlen))
			return false;
	}
	return true;
}

static int read_token(struct cli_ctx *c)
{
	FILE *f = fopen(c->token_file, "r");
	if (!f)
		return cli_usage_error(
		    "cannot read the token file %s: %s (the admin token is in droverd's data "
		    "directory; use --token-file or DROVER_TOKEN_FILE)",
		    c->token_file, strerror(errno));
	size_t n = fread(c->token, 1, sizeof(c->token) - 1, f);
	int read_errno = ferror(f) ? errno : 0;
	fclose(f);
	if (read_errno) /* a directory opens; only the read fails */
		return cli_usage_error("cannot read the token file %s: %s", c->token_file,
		                       strerror(read_errno));
	c->token[n] = '\0';
	while (n && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r' || c->token[n - 1] == ' '))
		c->token[--n] = '\0';
	if (!n)
		return cli_usage_error("the token file %s is empty", c->token_file);
	/*
	 * A token is one line of printable ASCII. Checked here because gRPC rejects
	 * other bytes in metadata by logging the whole value, which must not happen
	 * to something that may be a secret.
	 */
	for (size_t i = 0; i < n; i++) {
		if (c->token[i] <= ' ' || c->token[i] > '~') {
			memset(c->token, 0, sizeof(c->token));
			return cli_usage_error(
			    "the token file %s does not hold a token (one line of printable characters)",
			    c->token_file);
		}
	}
	return 0;
}

static int connect_lazily(struct cli_ctx *c)
{
	char err[512];
	int rc;
	if (c->ch)
		return 0;
	if ((rc = make_target(c)))
		return rc;
	if (probe(c, err, sizeof(err))) {
		fprintf(stderr, "drover: cannot reach droverd at %s: %s (is droverd running? see %s)\n",
		        c->target, err, c->server_from);
		return CLI_EXIT_UNREACHABLE;
	}
	if ((rc = read_token(c)))
		return rc;
	if (c->cert_file && !c->ca_file)
		return cli_usage_error("--cert-file needs --ca-file (client certificates are for TLS)");
	if (!c->cert_file != !c->key_file)
		return cli_usage_error("--cert-file and --key-file go together");
	struct drv_rpc_channel_opts o = {
	    .target = c->target, .ca_file = c->ca_file, .cert_file = c->cert_file, .key_file = c->key_file};
	/* Making the channel only reads the --ca-file, --cert-file and --key-file: a local problem (2). */
	if (drv_rpc_channel_new(&o, &c->ch, err, sizeof(err)))
		return cli_usage_error("%s", err);
	return 0;
}

int cli_call(struct cli_ctx *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
	const ProtobufCServiceDescriptor *svc = &drover__api__v1__drover__descriptor;
	*resp = NULL;
	c->last_code = DRV_EUNAVAILABLE;
	/*
	 * An empty project is the API's "every project": --project "$UNSET" listed
	 * the instances of all projects and looked instances up by id only.
	 */
	if (c->bad_timeout)
		return cli_usage_error("--timeout %s: expected whole seconds between 1 and 86400",
		                       c->bad_timeout);
	if (!c->project[0])
		return cli_usage_error("--project: empty project name (use --all for every project)");
	int rc = connect_lazily(c);
	if (rc)
		return rc;
	int idx = drv_rpc_method_index(svc, method);
	if (idx < 0) {
		fprintf(stderr, "drover: internal error: no method %s in %s\n", method, svc->name);
		return CLI_EXIT_REFUSED;
	}
	char auth[600];
	snprintf(auth, sizeof(auth), "Bearer %s", c->token);
	struct drv_rpc_metadata md[] = {{"authorization", auth}, {NULL, NULL}};
	struct drv_status st = {0};
	rc = drv_rpc_call(c->ch, svc, (unsigned)idx, req, resp, c->timeout_ms, md, &st);
	/* The token must not linger in memory longer than needed. */
	memset(auth, 0, sizeof(auth));
	c->last_code = rc;
	if (rc == 0) {
		if (!c->json)
			cli_clean_text(*resp);
		return CLI_EXIT_OK;
	}
	cli_clean_str(st.message);
	*resp = NULL;
	char err[256];
	/*
	 * A server that dies mid-call shows up as UNAVAILABLE, UNKNOWN, INTERNAL
	 * or CANCELLED depending on where gRPC noticed; whether it is still there
	 * decides between "refused" and "cannot reach".
	 */
	if (transport_error(rc) && !still_there(c, err, sizeof(err))) {
		fprintf(stderr, "drover: %s: lost droverd at %s: %s (%s: %s)\n", method, c->target, err,
		        drv_error_name(rc), st.message[0] ? st.message : drv_strerror(rc));
		return CLI_EXIT_UNREACHABLE;
	}
	if (!c->quiet)
		fprintf(stderr, "drover: %s: %s: %s\n", method, drv_error_name(rc),
		        st.message[0] ? st.message : drv_strerror(rc));
	return CLI_EXIT_REFUSED;
}

int cli_call_text(struct cli_ctx *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
	int rc = cli_call(c, method, req, resp);
	if (rc == CLI_EXIT_OK && c->json) {
		cli_print_json(*resp);
		drv_response_free(*resp);
		*resp = NULL;
	}
	return rc;
}

/* The member of message `m` that field `name` is stored in; the field must exist. */
static void *field_at(ProtobufCMessage *m, const char *name, const ProtobufCFieldDescriptor **fd)
{
	*fd = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
	if (!*fd)
		abort();
	return (char *)m + (*fd)->offset;
}

void cli_pages_free(struct cli_pages *p)
{
	for (size_t i = 0; i < p->n_pages; i++)
		drv_response_free(p->pages[i]);
	free(p->pages);
	free(p->items);
	free(p->all);
	memset(p, 0, sizeof(*p));
}

int cli_call_pages(struct cli_ctx *c, const char *method, ProtobufCMessage *req, struct cli_pages *out)
{
	const ProtobufCFieldDescriptor *fd;
	memset(out, 0, sizeof(*out));
	*(uint32_t *)field_at(req, "page_size", &fd) = 1000;
	char **token = field_at(req, "page_token", &fd);
	const ProtobufCMessageDescriptor *rd = NULL;
	const ProtobufCFieldDescriptor *items = NULL;
	size_t n_items = 0;
	int rc;
	for (;;) {
		ProtobufCMessage *page;
		if ((rc = cli_call(c, method, req, &page)))
			break;
		out->pages = realloc(out->pages, (out->n_pages + 1) * sizeof(*out->pages));
		if (!out->pages)
			abort();
		out->pages[out->n_pages++] = page;
		rd = page->descriptor;
		for (unsigned i = 0; !items && i < rd->n_fields; i++)
			if (rd->fields[i].label == PROTOBUF_C_LABEL_REPEATED)
				items = &rd->fields[i];
		if (!items)
			abort(); /* a method that is not a paged listing: a bug of the caller */
		size_t n = *(size_t *)((char *)page + items->quantifier_offset);
		void **from = *(void ***)((char *)page + items->offset);
		out->items = realloc(out->items, (n_items + n + 1) * sizeof(void *));
		if (!out->items)
			abort();
		memcpy((void **)out->items + n_items, from, n * sizeof(void *));
		n_items += n;
		const char *next = *(char **)field_at(page, "next_page_token", &fd);
		if (!next[0])
			break;
		/* A server that answers the token it was given would page for ever. */
		if (strcmp(next, *token) == 0) {
			fprintf(stderr, "drover: %s: the server repeated page token %.40s\n", method, next);
			rc = CLI_EXIT_REFUSED;
			break;
		}
		*token = (char *)next;
	}
	if (rc) {
		cli_pages_free(out);
		return rc;
	}
	out->all = calloc(1, rd->sizeof_message);
	if (!out->all)
		abort();
	protobuf_c_message_init(rd, out->all);
	*(size_t *)((char *)out->all + items->quantifier_offset) = n_items;
	*(void **)((char *)out->all + items->offset) = out->items;
	if (c->json) {
		cli_print_json(out->all);
		free(out->all);
		out->all = NULL;
	}
	return 0;
}

bool cli_common_option(struct cli_ctx *c, int opt)
{
	switch (opt) {
	case 'J':
		c->json = true;
		return true;
	case 'P':
		c->project = optarg;
		return true;
	case 'T': /* after the command too: 'instance terminate X --wait --timeout 30' */
		if (cli_parse_timeout(optarg, &c->timeout_ms) < 0)
			c->bad_timeout = optarg;
		return true;
	default:
		return false;
	}
}

int cli_bad_option(const char *cmd, char **argv)
{
	return cli_usage_error("%s: unknown option or missing value in '%s' (see drover %s --help)", cmd,
	                       argv[optind - 1], cmd);
}

void cli_ctx_close(struct cli_ctx *c)
{
	if (c->ch)
		drv_rpc_channel_free(c->ch);
	c->ch = NULL;
	memset(c->token, 0, sizeof(c->token));
}

#include "srv_config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <yaml.h>

#include "drover/address.h"
#include "dyaml.h"

/* Walking state: the document and where errors go. */
struct walk {
	yaml_document_t *doc;
	const char *name;
	char *err;
	size_t errlen;
};

static int fail(struct walk *w, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct walk *w, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(w->err, w->errlen, "%s:%zu: %s: %s", w->name, n ? (size_t)n->start_mark.line + 1 : (size_t)0,
	         path[0] ? path : "(top level)", msg);
	return -1;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool is_null_scalar(const yaml_node_t *n)
{
	return dyaml_is_null(n);
}

bool srv_valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* HOST:PORT with a port from 1 to 65535, as the SDK reads it (drover/address.h). */
static bool valid_host_port(const char *s)
{
	return drv_host_port_parse(s, false, NULL, NULL, 0) == 0;
}

static int get_string(struct walk *w, const yaml_node_t *n, const char *path, char **out)
{
	if (n->type != YAML_SCALAR_NODE || is_null_scalar(n))
		return fail(w, n, path, "expected a string, found %s",
		            is_null_scalar(n) ? "null" : node_kind(n));
	char *s = strdup(scalar(n));
	if (!s)
		return fail(w, n, path, "out of memory");
	free(*out); /* a repeated key keeps the last value, as YAML loaders do */
	*out = s;
	return 0;
}

static int get_int(struct walk *w, const yaml_node_t *n, const char *path, int *out, long min, long max)
{
	char *end;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return fail(w, n, path, "expected an integer, found %s", node_kind(n));
	errno = 0;
	long v = strtol(scalar(n), &end, 10);
	if (errno || end == scalar(n) || *end)
		return fail(w, n, path, "expected an integer, found \"%s\"", scalar(n));
	if (v < min || v > max)
		return fail(w, n, path, "%ld is out of range [%ld, %ld]", v, min, max);
	*out = (int)v;
	return 0;
}

static int get_bool(struct walk *w, const yaml_node_t *n, const char *path, bool *out)
{
	if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		const char *s = scalar(n);
		if (strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0) {
			*out = false;
			return 0;
		}
	}
	return fail(w, n, path, "expected true or false");
}

static int expect(struct walk *w, const yaml_node_t *n, const char *path, yaml_node_type_t type)
{
	if (n->type == type)
		return 0;
	return fail(w, n, path, "expected %s, found %s",
	            type == YAML_MAPPING_NODE    ? "a mapping"
	            : type == YAML_SEQUENCE_NODE ? "a list"
	                                         : "a scalar",
	            is_null_scalar(n) ? "null" : node_kind(n));
}

#define FOR_PAIRS(w, map, pair)                                                                              \
	for (yaml_node_pair_t *pair = (map)->data.mapping.pairs.start; pair < (map)->data.mapping.pairs.top; \
	     pair++)

#define FOR_ITEMS(seq, item)                                                                                 \
	for (yaml_node_item_t *item = (seq)->data.sequence.items.start;                                      \
	     item < (seq)->data.sequence.items.top; item++)

static yaml_node_t *node_at(struct walk *w, int id)
{
	return yaml_document_get_node(w->doc, id);
}

/*
 * The key of pair `p`. dyaml_load() has checked the whole document: every key
 * is a scalar and none is given twice in one mapping, as YAML requires
 * (silently keeping one of the two would hide a mistake, and a list given
 * twice would be read into an array sized for the other).
 */
static const char *pair_key(struct walk *w, const yaml_node_pair_t *p)
{
	return scalar(node_at(w, p->key));
}

/* Field paths are cut at the buffer's size; a path that long is only for messages. */
static void pathf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static void join(char *buf, size_t len, const char *parent, const char *field)
{
	pathf(buf, len, "%s%s%s", parent, parent[0] ? "." : "", field);
}

/* What a field function returns for a key its mapping does not have. */
enum { FIELD_UNKNOWN = 1 };

/*
 * Reads one mapping field: `key` with value `v` at `path` ("parent.key").
 * Returns 0, -1 after fail(), or FIELD_UNKNOWN.
 */
typedef int (*field_fn)(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx);

/*
 * Walks the mapping `n`, giving each pair to field(). An unknown key fails
 * with "unknown field (expected <expected>)"; `expected` may be NULL when
 * field() takes every key.
 */
static int walk_mapping(struct walk *w, yaml_node_t *n, const char *path, field_fn field, void *ctx,
                        const char *expected)
{
	char sub[512];

	if (expect(w, n, path, YAML_MAPPING_NODE) < 0)
		return -1;
	FOR_PAIRS(w, n, p)
	{
		const char *key = pair_key(w, p);
		join(sub, sizeof(sub), path, key);
		int rc = field(w, key, node_at(w, p->value), sub, ctx);
		if (rc == FIELD_UNKNOWN)
			return fail(w, node_at(w, p->key), sub, "unknown field (expected %s)", expected);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* Reads one item of a list at `path` ("parent[i]"). Returns 0 or -1 after fail(). */
typedef int (*item_fn)(struct walk *w, yaml_node_t *n, const char *path, void *ctx);

/*
 * Checks a list value and allocates its array: 1 and *arr (zeroed, one
 * element of `size` per item, at least one), 0 for a null value (no list:
 * nothing to allocate or walk), or -1 after fail().
 */
static int list_open(struct walk *w, yaml_node_t *v, const char *path, size_t size, void **arr)
{
	if (is_null_scalar(v))
		return 0;
	if (expect(w, v, path, YAML_SEQUENCE_NODE) < 0)
		return -1;
	size_t len = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	*arr = calloc(len ? len : 1, size);
	if (!*arr)
		return fail(w, v, path, "out of memory");
	return 1;
}

/* Gives each item of the list `v` (opened by list_open()) to item(), with its path "path[i]". */
static int walk_list(struct walk *w, yaml_node_t *v, const char *path, item_fn item, void *ctx)
{
	char sub[512];
	size_t i = 0;

	FOR_ITEMS(v, it)
	{
		pathf(sub, sizeof(sub), "%s[%zu]", path, i++);
		if (item(w, node_at(w, *it), sub, ctx) < 0)
			return -1;
	}
	return 0;
}

/* Every key of `secrets` names a secret; the error names the secret but never shows its value. */
static int secret_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config_backend *b = ctx;
	struct srv_config_secret *s = &b->secrets[b->n_secrets++];
	s->name = strdup(key);
	if (!s->name)
		return fail(w, v, path, "out of memory");
	return get_string(w, v, path, &s->value);
}

static int backend_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config_backend *b = ctx;
	if (strcmp(key, "name") == 0)
		return get_string(w, v, path, &b->name);
	if (strcmp(key, "type") == 0)
		return get_string(w, v, path, &b->type);
	if (strcmp(key, "config") == 0) {
		if (is_null_scalar(v))
			return 0;
		if (expect(w, v, path, YAML_MAPPING_NODE) < 0)
			return -1;
		json_t *j = dyaml_to_json(w->doc, v);
		free(b->config_json);
		b->config_json = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		json_decref(j);
		if (!b->config_json)
			return fail(w, v, path, "out of memory");
		return 0;
	}
	if (strcmp(key, "secrets") == 0) {
		if (is_null_scalar(v))
			return 0;
		if (expect(w, v, path, YAML_MAPPING_NODE) < 0)
			return -1;
		size_t cap = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
		b->secrets = calloc(cap ? cap : 1, sizeof(*b->secrets));
		if (!b->secrets)
			return fail(w, v, path, "out of memory");
		return walk_mapping(w, v, path, secret_field, b, NULL);
	}
	return FIELD_UNKNOWN;
}

/*
 * After walk_list() over list `v` gave `rc`: the first name given twice,
 * reported as a walk in file order would, on the item that repeats it.
 * `items` is the list's array (`n` items begun, each `size` bytes, its name a
 * char * at `name_off`). A walk that stopped at item n - 1 (rc < 0) is
 * overruled by a name repeated before it, which comes first in the file.
 * `what` says whose names ("backend", "project") and `where` ends the
 * message. Sorting (dyaml_first_repeat) keeps this O(n log n), where
 * comparing each name with every earlier one made 49,000 backends take
 * seconds.
 */
static int repeated_name(struct walk *w, yaml_node_t *v, const char *path, int rc, const void *items,
                         size_t n, size_t size, size_t name_off, const char *what, const char *where)
{
	/* The items walked whole: all of them, or those before the one that failed. */
	size_t done = rc < 0 ? n - 1 : n;
	const char **names = malloc((done ? done : 1) * sizeof(*names));
	if (!names)
		return fail(w, v, path, "out of memory");
	for (size_t i = 0; i < done; i++)
		memcpy(&names[i], (const char *)items + i * size + name_off, sizeof(names[i]));
	size_t again = 0, first = 0;
	int rep = dyaml_first_repeat(names, done, &again, &first);
	if (rep < 0) {
		rc = fail(w, v, path, "out of memory");
	} else if (rep > 0) {
		char sub[512];
		pathf(sub, sizeof(sub), "%s[%zu]", path, again);
		rc = fail(w, node_at(w, v->data.sequence.items.start[again]), sub,
		          "duplicate %s name \"%s\"%s", what, names[again], where);
	}
	free(names);
	return rc;
}

/* The next backend of a project's list (its name is checked against the others' afterwards). */
static int backend_item(struct walk *w, yaml_node_t *n, const char *path, void *ctx)
{
	struct srv_config_project *pr = ctx;
	struct srv_config_backend *b = &pr->backends[pr->n_backends++];
	b->line = (int)n->start_mark.line + 1;
	if (walk_mapping(w, n, path, backend_field, b, "name, type, config, secrets") < 0)
		return -1;
	if (!b->name)
		return fail(w, n, path, "missing field 'name'");
	if (!srv_valid_name(b->name))
		return fail(w, n, path, "\"%s\" is not a valid backend name ([a-z0-9][a-z0-9-]*, at most 63)",
		            b->name);
	if (!b->type)
		return fail(w, n, path, "missing field 'type'");
	if (!b->config_json && !(b->config_json = strdup("{}")))
		return fail(w, n, path, "out of memory");
	return 0;
}

static int project_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config_project *pr = ctx;
	if (strcmp(key, "name") == 0)
		return get_string(w, v, path, &pr->name);
	if (strcmp(key, "backends") == 0) {
		void *arr;
		int rc = list_open(w, v, path, sizeof(*pr->backends), &arr);
		if (rc <= 0)
			return rc;
		pr->backends = arr;
		rc = walk_list(w, v, path, backend_item, pr);
		return repeated_name(w, v, path, rc, pr->backends, pr->n_backends, sizeof(*pr->backends),
		                     offsetof(struct srv_config_backend, name), "backend",
		                     " in this project");
	}
	return FIELD_UNKNOWN;
}

/* The next project of the file's list (its name is checked against the others' afterwards). */
static int project_item(struct walk *w, yaml_node_t *n, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	struct srv_config_project *pr = &cfg->projects[cfg->n_projects++];
	pr->line = (int)n->start_mark.line + 1;
	if (walk_mapping(w, n, path, project_field, pr, "name, backends") < 0)
		return -1;
	if (!pr->name)
		return fail(w, n, path, "missing field 'name'");
	if (!srv_valid_name(pr->name))
		return fail(w, n, path, "\"%s\" is not a valid project name ([a-z0-9][a-z0-9-]*, at most 63)",
		            pr->name);
	return 0;
}

static int parse_string_list(struct walk *w, yaml_node_t *v, const char *path, char ***out, size_t *n_out)
{
	if (expect(w, v, path, YAML_SEQUENCE_NODE) < 0)
		return -1;
	size_t cap = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	char **list = calloc(cap + 1, sizeof(char *));
	size_t n = 0;
	if (!list)
		return fail(w, v, path, "out of memory");
	*out = list;
	FOR_ITEMS(v, it)
	{
		char sub[512];
		pathf(sub, sizeof(sub), "%s[%zu]", path, n);
		if (get_string(w, node_at(w, *it), sub, &list[n]) < 0) {
			*n_out = n;
			return -1;
		}
		n++;
		*n_out = n;
	}
	return 0;
}

static int limits_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_driver_limits *l = ctx;
	if (strcmp(key, "answer_bytes") == 0)
		return get_int(w, v, path, &l->answer_bytes, 1024, 1 << 30);
	if (strcmp(key, "offers_answer_bytes") == 0)
		return get_int(w, v, path, &l->offers_answer_bytes, 1024, 1 << 30);
	if (strcmp(key, "list_answer_bytes") == 0)
		return get_int(w, v, path, &l->list_answer_bytes, 1024, 1 << 30);
	if (strcmp(key, "offers") == 0)
		return get_int(w, v, path, &l->offers, 1, 10000000);
	return FIELD_UNKNOWN;
}

static int parse_limits(struct walk *w, yaml_node_t *v, const char *path, struct srv_driver_limits *l)
{
	return walk_mapping(w, v, path, limits_field, l,
	                    "answer_bytes, offers_answer_bytes, list_answer_bytes, offers");
}

struct srv_driver_limits srv_config_driver_limits(const struct srv_config *cfg,
                                                  const struct srv_driver_limits *entry)
{
	struct srv_driver_limits l = cfg->limits;
	if (entry && entry->answer_bytes)
		l.answer_bytes = entry->answer_bytes;
	if (entry && entry->offers_answer_bytes)
		l.offers_answer_bytes = entry->offers_answer_bytes;
	if (entry && entry->list_answer_bytes)
		l.list_answer_bytes = entry->list_answer_bytes;
	if (entry && entry->offers)
		l.offers = entry->offers;
	return l;
}

static int command_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config_command *c = ctx;
	if (strcmp(key, "type") == 0)
		return get_string(w, v, path, &c->type);
	if (strcmp(key, "path") == 0)
		return get_string(w, v, path, &c->path);
	if (strcmp(key, "args") == 0)
		return parse_string_list(w, v, path, &c->args, &c->n_args);
	if (strcmp(key, "limits") == 0)
		return parse_limits(w, v, path, &c->limits);
	if (strcmp(key, "allow_tcp_handshake") == 0)
		return get_bool(w, v, path, &c->allow_tcp_handshake);
	return FIELD_UNKNOWN;
}

/* The next command of drivers.commands. */
static int command_item(struct walk *w, yaml_node_t *n, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	struct srv_config_command *c = &cfg->commands[cfg->n_commands++];
	if (walk_mapping(w, n, path, command_field, c, "type, path, args, limits, allow_tcp_handshake") < 0)
		return -1;
	if (!c->type)
		return fail(w, n, path, "missing field 'type'");
	if (!c->path)
		return fail(w, n, path, "missing field 'path'");
	if (!c->args && !(c->args = calloc(1, sizeof(char *))))
		return fail(w, n, path, "out of memory");
	return 0;
}

static int remote_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config_remote *r = ctx;
	char **dst = NULL;
	if (strcmp(key, "type") == 0)
		dst = &r->type;
	else if (strcmp(key, "name") == 0)
		dst = &r->name;
	else if (strcmp(key, "address") == 0)
		dst = &r->address;
	else if (strcmp(key, "ca") == 0)
		dst = &r->ca;
	else if (strcmp(key, "cert") == 0)
		dst = &r->cert;
	else if (strcmp(key, "key") == 0)
		dst = &r->key;
	else if (strcmp(key, "server_name") == 0)
		dst = &r->server_name;
	if (dst)
		return get_string(w, v, path, dst);
	if (strcmp(key, "insecure") == 0)
		return get_bool(w, v, path, &r->insecure);
	if (strcmp(key, "limits") == 0)
		return parse_limits(w, v, path, &r->limits);
	return FIELD_UNKNOWN;
}

/* The next remote driver of drivers.remote. */
static int remote_item(struct walk *w, yaml_node_t *n, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	struct srv_config_remote *r = &cfg->remotes[cfg->n_remotes++];
	if (walk_mapping(w, n, path, remote_field, r,
	                 "type, name, address, ca, cert, key, server_name, insecure, limits") < 0)
		return -1;
	if (!r->type)
		return fail(w, n, path, "missing field 'type'");
	if (!r->address)
		return fail(w, n, path, "missing field 'address'");
	if (strncmp(r->address, "unix:", 5) != 0 && !valid_host_port(r->address))
		return fail(w, n, path, "address \"%s\" is not HOST:PORT with a port from 1 to 65535",
		            r->address);
	if (!r->insecure && (!r->ca || !r->cert || !r->key))
		return fail(w, n, path,
		            "a remote driver needs ca, cert and key (mutual TLS), or insecure: true");
	if (!r->name && !(r->name = strdup(r->address)))
		return fail(w, n, path, "out of memory");
	return 0;
}

static int drivers_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	if (strcmp(key, "dirs") == 0)
		return parse_string_list(w, v, path, &cfg->driver_dirs, &cfg->n_driver_dirs);
	if (strcmp(key, "commands") == 0) {
		void *arr;
		int rc = list_open(w, v, path, sizeof(*cfg->commands), &arr);
		if (rc <= 0)
			return rc;
		cfg->commands = arr;
		return walk_list(w, v, path, command_item, cfg);
	}
	if (strcmp(key, "remote") == 0) {
		void *arr;
		int rc = list_open(w, v, path, sizeof(*cfg->remotes), &arr);
		if (rc <= 0)
			return rc;
		cfg->remotes = arr;
		return walk_list(w, v, path, remote_item, cfg);
	}
	if (strcmp(key, "handshake_timeout_ms") == 0)
		return get_int(w, v, path, &cfg->handshake_timeout_ms, 1, 600000);
	if (strcmp(key, "call_timeout_ms") == 0)
		return get_int(w, v, path, &cfg->call_timeout_ms, 1, 3600000);
	if (strcmp(key, "offers_timeout_ms") == 0)
		return get_int(w, v, path, &cfg->offers_timeout_ms, 1, 600000);
	if (strcmp(key, "health_interval_ms") == 0)
		return get_int(w, v, path, &cfg->health_interval_ms, 50, 3600000);
	if (strcmp(key, "restart_backoff_ms") == 0)
		return get_int(w, v, path, &cfg->restart_backoff_ms, 1, 3600000);
	if (strcmp(key, "restart_backoff_max_ms") == 0)
		return get_int(w, v, path, &cfg->restart_backoff_max_ms, 1, 3600000);
	if (strcmp(key, "shutdown_grace_ms") == 0)
		return get_int(w, v, path, &cfg->shutdown_grace_ms, 0, 600000);
	if (strcmp(key, "limits") == 0)
		return parse_limits(w, v, path, &cfg->limits);
	return FIELD_UNKNOWN;
}

static int tcp_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	if (strcmp(key, "address") == 0)
		return get_string(w, v, path, &cfg->listen_tcp);
	if (strcmp(key, "cert") == 0)
		return get_string(w, v, path, &cfg->tcp_cert);
	if (strcmp(key, "key") == 0)
		return get_string(w, v, path, &cfg->tcp_key);
	if (strcmp(key, "client_ca") == 0)
		return get_string(w, v, path, &cfg->tcp_client_ca);
	return FIELD_UNKNOWN;
}

static int listen_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	if (strcmp(key, "unix") == 0)
		return get_string(w, v, path, &cfg->listen_unix);
	if (strcmp(key, "tcp") == 0) {
		if (walk_mapping(w, v, path, tcp_field, cfg, "address, cert, key, client_ca") < 0)
			return -1;
		if (!cfg->listen_tcp)
			return fail(w, v, path, "missing field 'address'");
		if (!valid_host_port(cfg->listen_tcp))
			return fail(w, v, path, "address \"%s\" is not HOST:PORT with a port from 1 to 65535",
			            cfg->listen_tcp);
		if (!cfg->tcp_cert != !cfg->tcp_key)
			return fail(w, v, path, "cert and key go together");
		return 0;
	}
	return FIELD_UNKNOWN;
}

static int provisioning_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	if (strcmp(key, "max_tries") == 0)
		return get_int(w, v, path, &cfg->max_tries, 1, 1000);
	if (strcmp(key, "reconcile_interval_ms") == 0)
		return get_int(w, v, path, &cfg->reconcile_interval_ms, 10, 3600000);
	if (strcmp(key, "running_check_interval_ms") == 0)
		return get_int(w, v, path, &cfg->running_check_interval_ms, 0, 86400000);
	if (strcmp(key, "termination_confirm_window_ms") == 0)
		return get_int(w, v, path, &cfg->termination_confirm_window_ms, 10, 604800000);
	if (strcmp(key, "orphan_max_listed") == 0)
		return get_int(w, v, path, &cfg->orphan_max_listed, 1, 10000000);
	if (strcmp(key, "orphan_max_adopted") == 0)
		return get_int(w, v, path, &cfg->orphan_max_adopted, 0, 1000000);
	return FIELD_UNKNOWN;
}

static int log_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	if (strcmp(key, "file") == 0)
		return get_string(w, v, path, &cfg->log_file);
	/* A rotated file holds at least a few of the longest lines (a driver's line is cut at 1 MiB). */
	if (strcmp(key, "max_bytes") == 0)
		return get_int(w, v, path, &cfg->log_max_bytes, 65536, INT_MAX);
	if (strcmp(key, "keep") == 0)
		return get_int(w, v, path, &cfg->log_keep, 0, 100);
	if (strcmp(key, "driver_lines_per_s") == 0)
		return get_int(w, v, path, &cfg->driver_log_lines_per_s, 1, 1000000);
	if (strcmp(key, "driver_bytes_per_s") == 0)
		return get_int(w, v, path, &cfg->driver_log_bytes_per_s, 256, INT_MAX);
	if (strcmp(key, "driver_line_max") == 0)
		return get_int(w, v, path, &cfg->driver_log_line_max, 256, 1 << 20);
	return FIELD_UNKNOWN;
}

static int root_field(struct walk *w, const char *key, yaml_node_t *v, const char *path, void *ctx)
{
	struct srv_config *cfg = ctx;
	if (strcmp(key, "listen") == 0)
		return walk_mapping(w, v, path, listen_field, cfg, "unix, tcp");
	if (strcmp(key, "data_dir") == 0)
		return get_string(w, v, path, &cfg->data_dir);
	if (strcmp(key, "log_level") == 0) {
		if (get_string(w, v, path, &cfg->log_level) < 0)
			return -1;
		const char *l = cfg->log_level;
		if (strcmp(l, "debug") && strcmp(l, "info") && strcmp(l, "warn") && strcmp(l, "error"))
			return fail(w, v, path, "expected debug, info, warn or error, found \"%s\"", l);
		return 0;
	}
	if (strcmp(key, "log") == 0)
		return walk_mapping(w, v, path, log_field, cfg,
		                    "file, max_bytes, keep, driver_lines_per_s, driver_bytes_per_s, "
		                    "driver_line_max");
	if (strcmp(key, "drivers") == 0)
		return walk_mapping(w, v, path, drivers_field, cfg,
		                    "dirs, commands, remote, handshake_timeout_ms, call_timeout_ms, "
		                    "offers_timeout_ms, health_interval_ms, restart_backoff_ms, "
		                    "restart_backoff_max_ms, shutdown_grace_ms, limits");
	if (strcmp(key, "projects") == 0) {
		void *arr;
		int rc = list_open(w, v, path, sizeof(*cfg->projects), &arr);
		if (rc <= 0)
			return rc;
		cfg->projects = arr;
		rc = walk_list(w, v, path, project_item, cfg);
		return repeated_name(w, v, path, rc, cfg->projects, cfg->n_projects, sizeof(*cfg->projects),
		                     offsetof(struct srv_config_project, name), "project", "");
	}
	if (strcmp(key, "provisioning") == 0)
		return walk_mapping(w, v, path, provisioning_field, cfg,
		                    "max_tries, reconcile_interval_ms, running_check_interval_ms, "
		                    "termination_confirm_window_ms, orphan_max_listed, orphan_max_adopted");
	return FIELD_UNKNOWN;
}

static int parse_root(struct walk *w, struct srv_config *cfg, yaml_node_t *root)
{
	if (!root)
		return 0; /* an empty file is all defaults */
	return walk_mapping(w, root, "", root_field, cfg,
	                    "listen, data_dir, log_level, log, drivers, projects, provisioning");
}

struct srv_config *srv_config_new_default(void)
{
	struct srv_config *cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return NULL;
	cfg->handshake_timeout_ms = 5000;
	cfg->call_timeout_ms = 10000;
	cfg->offers_timeout_ms = 3000;
	cfg->health_interval_ms = 5000;
	cfg->restart_backoff_ms = 200;
	cfg->restart_backoff_max_ms = 30000;
	cfg->shutdown_grace_ms = 3000;
	cfg->limits.answer_bytes = 1 << 20;
	cfg->limits.offers_answer_bytes = 16 << 20;
	cfg->limits.list_answer_bytes = 8 << 20;
	cfg->limits.offers = 20000;
	cfg->max_tries = 3;
	cfg->reconcile_interval_ms = 1000;
	cfg->running_check_interval_ms = 60000;
	cfg->log_max_bytes = 64 << 20;
	cfg->log_keep = 3;
	cfg->driver_log_lines_per_s = 1000;
	cfg->driver_log_bytes_per_s = 1 << 20;
	cfg->driver_log_line_max = 16 << 10;
	cfg->termination_confirm_window_ms = 600000;
	cfg->orphan_max_listed = 10000;
	cfg->orphan_max_adopted = 1000;
	return cfg;
}

int srv_config_parse(const char *name, const char *text, size_t len, struct srv_config **out, char *err,
                     size_t errlen)
{
	yaml_document_t doc;
	struct walk w = {.doc = &doc, .name = name, .err = err, .errlen = errlen};
	struct srv_config *cfg = srv_config_new_default();
	int rc;

	if (!cfg) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	cfg->path = strdup(name);
	if (dyaml_load(name, text, len, &doc, err, errlen) < 0) {
		srv_config_free(cfg);
		return -1;
	}
	rc = parse_root(&w, cfg, yaml_document_get_root_node(&doc));
	yaml_document_delete(&doc);
	if (rc < 0) {
		srv_config_free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
}

int srv_config_load(const char *path, struct srv_config **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len > SRV_CONFIG_MAX_BYTES) {
			snprintf(err, errlen, "%s: larger than %d MiB, the limit on a config file", path,
			         SRV_CONFIG_MAX_BYTES >> 20);
			free(buf);
			fclose(f);
			return -1;
		}
		if (len + 4096 > cap) {
			/* Never more than the limit and a read's worth: a read past it ends the load. */
			cap = cap ? cap * 2 : 8192;
			if (cap > SRV_CONFIG_MAX_BYTES + 8192)
				cap = SRV_CONFIG_MAX_BYTES + 8192;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				snprintf(err, errlen, "%s: out of memory", path);
				return -1;
			}
			buf = nb;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	/* fopen() opens a directory; only the read fails (EISDIR), which must not read as an empty file. */
	if (ferror(f)) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	int rc = srv_config_parse(path, buf ? buf : "", len, out, err, errlen);
	free(buf);
	return rc;
}

void srv_config_free(struct srv_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->listen_unix);
	free(cfg->listen_tcp);
	free(cfg->tcp_cert);
	free(cfg->tcp_key);
	free(cfg->tcp_client_ca);
	free(cfg->data_dir);
	free(cfg->log_level);
	free(cfg->log_file);
	for (size_t i = 0; i < cfg->n_driver_dirs; i++)
		free(cfg->driver_dirs[i]);
	free(cfg->driver_dirs);
	for (size_t i = 0; i < cfg->n_commands; i++) {
		struct srv_config_command *c = &cfg->commands[i];
		free(c->type);
		free(c->path);
		for (size_t j = 0; j < c->n_args; j++)
			free(c->args[j]);
		free(c->args);
	}
	free(cfg->commands);
	for (size_t i = 0; i < cfg->n_remotes; i++) {
		struct srv_config_remote *r = &cfg->remotes[i];
		free(r->type);
		free(r->name);
		free(r->address);
		free(r->ca);
		free(r->cert);
		free(r->key);
		free(r->server_name);
	}
	free(cfg->remotes);
	for (size_t i = 0; i < cfg->n_projects; i++) {
		struct srv_config_project *pr = &cfg->projects[i];
		for (size_t j = 0; j < pr->n_backends; j++) {
			struct srv_config_backend *b = &pr->backends[j];
			free(b->name);
			free(b->type);
			free(b->config_json);
			for (size_t k = 0; k < b->n_secrets; k++) {
				free(b->secrets[k].name);
				/* Secrets are wiped before the memory goes back to the allocator. */
				if (b->secrets[k].value)
					explicit_bzero(b->secrets[k].value, strlen(b->secrets[k].value));
				free(b->secrets[k].value);
			}
			free(b->secrets);
		}
		free(pr->backends);
		free(pr->name);
	}
	free(cfg->projects);
	free(cfg);
}

/*
 * dyaml: libyaml's document loader plus one checking walk over the whole
 * document (see dyaml.h for what it refuses and why), and the conversion of
 * a checked node to JSON.
 */
#include "dyaml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where in the document: built as the walk descends, rendered only for an error. */
struct seg {
	const struct seg *up;
	const char *key; /* NULL for a list index */
	size_t index;
};

struct check {
	yaml_document_t *doc;
	const char *name;
	char *err;
	size_t errlen;
	size_t nodes;           /* visited so far, a node named by N aliases counted N+1 times */
	unsigned char *on_path; /* per node id: an ancestor of the node being visited */
};

static void render(const struct seg *s, char *buf, size_t len)
{
	if (!s)
		return;
	render(s->up, buf, len);
	size_t used = strlen(buf);
	if (used + 1 >= len)
		return;
	if (s->key)
		snprintf(buf + used, len - used, "%s%s", used ? "." : "", s->key);
	else
		snprintf(buf + used, len - used, "[%zu]", s->index);
}

static int fail(struct check *c, const yaml_node_t *n, const struct seg *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct check *c, const yaml_node_t *n, const struct seg *at, const char *fmt, ...)
{
	char path[512] = "", msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	render(at, path, sizeof(path));
	snprintf(c->err, c->errlen, "%s:%zu: %s: %s", c->name, (size_t)n->start_mark.line + 1,
	         path[0] ? path : "(top level)", msg);
	return -1;
}

static const char *key_text(const yaml_node_t *k)
{
	return (const char *)k->data.scalar.value;
}

struct key {
	const char *text;
	size_t index; /* its place in the caller's order */
};

static int key_cmp(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	int d = strcmp(x->text, y->text);
	return d ? d : (x->index > y->index) - (x->index < y->index);
}

/*
 * The texts are sorted, so that equal ones sit side by side: O(n log n)
 * whatever they are, where a hash table without a secret seed can be flooded
 * with texts that collide. `keys` holds each text with its index and is
 * sorted in place.
 */
static int first_repeat(struct key *keys, size_t n, size_t *again, size_t *first)
{
	qsort(keys, n, sizeof(*keys), key_cmp);
	*again = SIZE_MAX; /* the earliest second occurrence, and its first */
	for (size_t i = 1, run = 0; i < n; i++) {
		if (strcmp(keys[i].text, keys[run].text) != 0)
			run = i;
		else if (keys[i].index < *again)
			*again = keys[i].index, *first = keys[run].index;
	}
	return *again != SIZE_MAX;
}

int dyaml_first_repeat(const char *const *texts, size_t n, size_t *again, size_t *first)
{
	if (n < 2)
		return 0;
	struct key *keys = malloc(n * sizeof(*keys));
	if (!keys)
		return -1;
	for (size_t i = 0; i < n; i++)
		keys[i] = (struct key){.text = texts[i], .index = i};
	int rc = first_repeat(keys, n, again, first);
	free(keys);
	return rc;
}

/*
 * Every key of mapping `n` is a scalar and none is given twice (found by
 * sorting, see first_repeat). The duplicate reported is the one that comes
 * first in the file, as a walk in file order would report it.
 */
static int check_keys(struct check *c, const yaml_node_t *n, const struct seg *at)
{
	const yaml_node_pair_t *pairs = n->data.mapping.pairs.start;
	size_t count = (size_t)(n->data.mapping.pairs.top - pairs);
	if (count == 0)
		return 0;
	struct key *keys = malloc(count * sizeof(*keys));
	if (!keys)
		return fail(c, n, at, "out of memory");
	int rc = 0;
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *k = yaml_document_get_node(c->doc, pairs[i].key);
		if (!k || k->type != YAML_SCALAR_NODE) {
			rc = fail(c, k ? k : n, at, "mapping keys must be strings");
			goto out;
		}
		if (++c->nodes > DYAML_MAX_NODES) {
			rc = fail(c, k, at, "more than %d nodes (an alias counts as a copy of what it names)",
			          DYAML_MAX_NODES);
			goto out;
		}
		keys[i] = (struct key){.text = key_text(k), .index = i};
	}
	size_t again, first;
	if (first_repeat(keys, count, &again, &first)) {
		const yaml_node_t *k = yaml_document_get_node(c->doc, pairs[again].key);
		const yaml_node_t *k0 = yaml_document_get_node(c->doc, pairs[first].key);
		rc = fail(c, k, at, "field '%s' is given twice (first on line %zu)", key_text(k),
		          (size_t)k0->start_mark.line + 1);
	}
out:
	free(keys);
	return rc;
}

static int check_node(struct check *c, int id, const struct seg *at, int depth)
{
	const yaml_node_t *n = yaml_document_get_node(c->doc, id);
	if (!n) {
		snprintf(c->err, c->errlen, "%s: a YAML node refers to node %d, which does not exist",
		         c->name, id);
		return -1;
	}
	if (c->on_path[id])
		return fail(c, n, at, "an alias names a node that contains it (a cycle)");
	if (depth > DYAML_MAX_DEPTH)
		return fail(c, n, at, "nested more than %d levels deep", DYAML_MAX_DEPTH);
	if (++c->nodes > DYAML_MAX_NODES)
		return fail(c, n, at, "more than %d nodes (an alias counts as a copy of what it names)",
		            DYAML_MAX_NODES);
	int rc = 0;
	c->on_path[id] = 1;
	if (n->type == YAML_SEQUENCE_NODE) {
		size_t i = 0;
		for (const yaml_node_item_t *it = n->data.sequence.items.start;
		     rc == 0 && it < n->data.sequence.items.top; it++) {
			struct seg s = {.up = at, .index = i++};
			rc = check_node(c, *it, &s, depth + 1);
		}
	} else if (n->type == YAML_MAPPING_NODE) {
		rc = check_keys(c, n, at);
		for (const yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     rc == 0 && p < n->data.mapping.pairs.top; p++) {
			struct seg s = {.up = at, .key = key_text(yaml_document_get_node(c->doc, p->key))};
			rc = check_node(c, p->value, &s, depth + 1);
		}
	}
	c->on_path[id] = 0;
	return rc;
}

/* Loads one document from a parser whose input is set, and checks it. */
static int load(yaml_parser_t *parser, const char *name, yaml_document_t *doc, char *err, size_t errlen)
{
	if (!yaml_parser_load(parser, doc)) {
		snprintf(err, errlen, "%s:%zu: YAML syntax error: %s%s%s", name,
		         parser->problem_mark.line + 1, parser->problem ? parser->problem : "unknown",
		         parser->context ? " " : "", parser->context ? parser->context : "");
		return -1;
	}
	yaml_node_t *root = yaml_document_get_root_node(doc);
	if (!root)
		return 0;
	size_t n_nodes = (size_t)(doc->nodes.top - doc->nodes.start);
	struct check c = {.doc = doc, .name = name, .err = err, .errlen = errlen};
	c.on_path = calloc(n_nodes + 1, 1); /* node ids count from 1 */
	if (!c.on_path) {
		snprintf(err, errlen, "%s: out of memory", name);
		yaml_document_delete(doc);
		return -1;
	}
	int rc = check_node(&c, 1, NULL, 0);
	free(c.on_path);
	if (rc < 0)
		yaml_document_delete(doc);
	return rc;
}

int dyaml_load(const char *name, const char *text, size_t len, yaml_document_t *doc, char *err, size_t errlen)
{
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	int rc = load(&parser, name, doc, err, errlen);
	yaml_parser_delete(&parser);
	return rc;
}

int dyaml_load_file(const char *path, yaml_document_t *doc, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	yaml_parser_t parser;
	int rc = -1;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", path);
	} else {
		yaml_parser_set_input_file(&parser, f);
		rc = load(&parser, path, doc, err, errlen);
		yaml_parser_delete(&parser);
	}
	fclose(f);
	return rc;
}

bool dyaml_is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = (const char *)n->data.scalar.value;
	return s[0] == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	       strcmp(s, "NULL") == 0;
}

static json_t *scalar_to_json(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return json_string(s);
	if (dyaml_is_null(n))
		return json_null();
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return json_true();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return json_false();
	char *end;
	errno = 0;
	long long ll = strtoll(s, &end, 10);
	if (!errno && end != s && !*end)
		return json_integer(ll);
	/* Decimal only: strtod's "inf", "nan" and hex floats are not YAML numbers, and JSON has no inf or
	 * NaN. */
	errno = 0;
	double d = strtod(s, &end);
	if (!errno && end != s && !*end && strspn(s, "0123456789.eE+-") == strlen(s))
		return json_real(d);
	return json_string(s);
}

json_t *dyaml_to_json(yaml_document_t *doc, const yaml_node_t *n)
{
	json_t *v = NULL;

	switch (n->type) {
	case YAML_SCALAR_NODE:
		return scalar_to_json(n);
	case YAML_SEQUENCE_NODE:
		v = json_array();
		for (const yaml_node_item_t *it = n->data.sequence.items.start;
		     v && it < n->data.sequence.items.top; it++)
			if (json_array_append_new(v, dyaml_to_json(doc, yaml_document_get_node(doc, *it))) <
			    0) {
				json_decref(v);
				v = NULL;
			}
		return v;
	case YAML_MAPPING_NODE:
		v = json_object();
		for (const yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     v && p < n->data.mapping.pairs.top; p++) {
			const yaml_node_t *k = yaml_document_get_node(doc, p->key);
			if (json_object_set_new(v, key_text(k),
			                        dyaml_to_json(doc, yaml_document_get_node(doc, p->value))) <
			    0) {
				json_decref(v);
				v = NULL;
			}
		}
		return v;
	default:
		return NULL;
	}
}

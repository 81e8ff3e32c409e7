/*
 * YAML config files: libyaml's document loader, turned into the same jansson
 * tree a JSON file gives, so the rest of the harness sees one format.
 * Plain scalars are typed the YAML 1.2 core-schema way (null, true/false,
 * integers, floats); quoted scalars are always strings.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "conf.h"

static json_t *scalar(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return json_string(s);
	if (!*s || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0)
		return json_null();
	if (strcasecmp(s, "true") == 0)
		return json_true();
	if (strcasecmp(s, "false") == 0)
		return json_false();
	char *end;
	errno = 0;
	long long i = strtoll(s, &end, 10);
	if (!*end && errno == 0)
		return json_integer(i);
	double d = strtod(s, &end);
	if (!*end && errno == 0)
		return json_real(d);
	return json_string(s);
}

static json_t *convert(yaml_document_t *doc, yaml_node_t *n, int depth, char *err, size_t errlen)
{
	if (!n || depth > 64) {
		snprintf(err, errlen, "nested too deeply");
		return NULL;
	}
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return scalar(n);
	case YAML_SEQUENCE_NODE: {
		json_t *a = json_array();
		for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
		     it++) {
			json_t *v = convert(doc, yaml_document_get_node(doc, *it), depth + 1, err, errlen);
			if (!v) {
				json_decref(a);
				return NULL;
			}
			json_array_append_new(a, v);
		}
		return a;
	}
	case YAML_MAPPING_NODE: {
		json_t *o = json_object();
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(doc, p->key);
			if (!k || k->type != YAML_SCALAR_NODE) {
				snprintf(err, errlen, "line %zu: mapping keys must be scalars",
				         k ? k->start_mark.line + 1 : (size_t)0);
				json_decref(o);
				return NULL;
			}
			const char *key = (const char *)k->data.scalar.value;
			if (json_object_get(o, key)) {
				snprintf(err, errlen, "line %zu: duplicate key \"%s\"",
				         k->start_mark.line + 1, key);
				json_decref(o);
				return NULL;
			}
			json_t *v =
			    convert(doc, yaml_document_get_node(doc, p->value), depth + 1, err, errlen);
			if (!v) {
				json_decref(o);
				return NULL;
			}
			json_object_set_new(o, key, v);
		}
		return o;
	}
	default:
		snprintf(err, errlen, "line %zu: unsupported YAML node", n->start_mark.line + 1);
		return NULL;
	}
}

json_t *conf_yaml_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "cannot open: %s", strerror(errno));
		return NULL;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	json_t *root = NULL;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "out of memory");
		fclose(f);
		return NULL;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "%zu:%zu: %s", parser.problem_mark.line + 1,
		         parser.problem_mark.column + 1,
		         parser.problem ? parser.problem : "YAML syntax error");
	} else {
		yaml_node_t *top = yaml_document_get_root_node(&doc);
		if (!top)
			snprintf(err, errlen, "the file is empty");
		else
			root = convert(&doc, top, 0, err, errlen);
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return root;
}

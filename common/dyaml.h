/*
 * dyaml — YAML files that people write (droverd's config, the conformance
 * harness's config), loaded with libyaml and checked whole before anyone
 * walks them, so that no walk needs limits of its own.
 *
 * libyaml resolves an alias to the node its anchor names, so a document is a
 * graph, not a tree: an alias may name a node that contains it (a cycle), and
 * a few lines of aliases to aliases name millions of nodes ("billion
 * laughs"). Every walk that expands aliases, as a conversion to JSON does,
 * pays for the expansion. dyaml_load() therefore refuses, each with an error
 * "NAME:LINE: PATH: what":
 *  - an alias that names a node containing it (a cycle);
 *  - nesting deeper than DYAML_MAX_DEPTH;
 *  - more than DYAML_MAX_NODES nodes, counting every node an alias names
 *    once for each place it is named;
 *  - a mapping key that is not a scalar, or the same key twice in one
 *    mapping (found by sorting the keys: O(n log n) whatever they are).
 */
#ifndef DYAML_H
#define DYAML_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <yaml.h>

#define DYAML_MAX_DEPTH 64
#define DYAML_MAX_NODES 250000

/*
 * Loads the first document of `len` bytes of `text` into `doc` and checks it
 * as above. `name` (the file's name) begins every error. Returns 0 with *doc
 * filled (free it with yaml_document_delete(); an empty file gives a document
 * without a root node), or -1 with the error in err.
 */
int dyaml_load(const char *name, const char *text, size_t len, yaml_document_t *doc, char *err,
               size_t errlen);

/* The same, reading the file at `path`, which also names it in errors. */
int dyaml_load_file(const char *path, yaml_document_t *doc, char *err, size_t errlen);

/*
 * Whether a text of `texts` (borrowed, n of them, in the file's order) is
 * given twice, found by sorting: O(n log n) whatever they are. 1 with
 * *again the index of the earliest second occurrence and *first that of its
 * first, 0 when every text differs, -1 when out of memory.
 */
int dyaml_first_repeat(const char *const *texts, size_t n, size_t *again, size_t *first);

/* A plain scalar that YAML's core schema reads as null: empty, ~, null, Null, NULL. */
bool dyaml_is_null(const yaml_node_t *n);

/*
 * Node `n` of a document that dyaml_load() accepted, as a new jansson tree.
 * Plain scalars are typed as YAML's core schema types them (null, true/false,
 * integers, decimal floats); quoted scalars stay strings. NULL only when
 * memory ran out.
 */
json_t *dyaml_to_json(yaml_document_t *doc, const yaml_node_t *n);

#endif

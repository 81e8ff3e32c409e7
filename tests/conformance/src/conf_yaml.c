/*
 * YAML config files: loaded and checked by dyaml (common/dyaml.c, shared with
 * droverd's config), then turned into the same jansson tree a JSON file
 * gives, so the rest of the harness sees one format.
 */
#include <stdio.h>

#include "conf.h"
#include "dyaml.h"

json_t *conf_yaml_load(const char *path, char *err, size_t errlen)
{
	yaml_document_t doc;
	if (dyaml_load_file(path, &doc, err, errlen) < 0)
		return NULL;
	json_t *root = NULL;
	yaml_node_t *top = yaml_document_get_root_node(&doc);
	if (!top)
		snprintf(err, errlen, "%s: the file is empty", path);
	else if (!(root = dyaml_to_json(&doc, top)))
		snprintf(err, errlen, "%s: out of memory", path);
	yaml_document_delete(&doc);
	return root;
}

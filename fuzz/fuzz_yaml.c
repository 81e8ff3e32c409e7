/*
 * YAML written by an operator or a driver author: droverd's config
 * (srv_config_parse, through common/dyaml.c) and the conformance harness's
 * (dyaml_load and dyaml_to_json, as conf_yaml.c does). The input is the file.
 * What must hold: no crash, no stall, no unbounded memory (libFuzzer's
 * -rss_limit_mb and -timeout catch those), and an error message with the
 * file's name whenever the file is refused.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dyaml.h"
#include "srv_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024] = "";
	struct srv_config *cfg = NULL;
	if (srv_config_parse("f.yaml", (const char *)data, size, &cfg, err, sizeof(err)) == 0)
		srv_config_free(cfg);
	else if (strncmp(err, "f.yaml", 6) != 0)
		abort();

	yaml_document_t doc;
	err[0] = '\0';
	if (dyaml_load("f.yaml", (const char *)data, size, &doc, err, sizeof(err)) == 0) {
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		json_t *j = root ? dyaml_to_json(&doc, root) : NULL;
		if (root && !j)
			abort(); /* only out of memory may fail, and ASan's allocator does not */
		json_decref(j);
		yaml_document_delete(&doc);
	} else if (strncmp(err, "f.yaml", 6) != 0) {
		abort();
	}
	return 0;
}

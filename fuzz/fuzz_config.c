/*
 * The SDK's config validator (driver-sdk/src/config_schema.c): every driver
 * checks the BackendConfig droverd sends it (config JSON written by an
 * operator, secrets) against its declared fields before anything else.
 *
 * Input: the config JSON, then NUL-separated secret names and values. The
 * declared fields (tests/unit/sdk/config_fields.h) use every field type,
 * bounds, an enum, defaults, required fields and secrets. What must hold: no crash; an accepted config gives
 * an object with every default filled in; a refused one has at least one error diagnostic and no object.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config_fields.h"
#include "drover/host.h"
#include "drv_internal.h"

#define MAX_SECRETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* The config, then name/value pairs, split at NULs. */
	char *part[1 + 2 * MAX_SECRETS];
	size_t n = 0;
	for (char *p = text; n < sizeof(part) / sizeof(part[0]) && p <= text + size; p += strlen(p) + 1)
		part[n++] = p;
	/* Built as droverd and the harness build it (drover/host.h). */
	struct drv_backend_config_buf bc;
	if (drv_backend_config_init(&bc, part[0], (n - 1) / 2) != 0) {
		free(text);
		return 0;
	}
	for (size_t i = 1; i + 1 < n; i += 2)
		drv_backend_config_set_secret(&bc, i / 2, part[i], part[i + 1]);

	struct drv__arena arena;
	struct drv_diags diags;
	json_t *root = NULL;
	drv__arena_init(&arena);
	drv__diags_init(&diags, &arena);
	drv__config_check(fields, &bc.msg, &diags, &root);
	if (diags.n_errors ? root != NULL : !json_is_object(root))
		abort();
	if (root && (!json_is_string(json_object_get(root, "tier")) ||
	             !json_is_integer(json_object_get(root, "capacity")) ||
	             !json_is_boolean(json_object_get(root, "debug"))))
		abort(); /* accepted without its defaults */
	for (size_t i = 0; i < diags.n; i++)
		if (!diags.items[i]->field_path || !diags.items[i]->summary)
			abort();
	json_decref(root);
	drv__arena_release(&arena);
	drv_backend_config_clear(&bc);
	free(text);
	return 0;
}

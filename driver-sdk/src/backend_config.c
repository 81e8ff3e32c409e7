/* The BackendConfig of a call from a backend's config text and secrets (drover/host.h). */
#include <stdlib.h>

#include "drover/host.h"

int drv_backend_config_init(struct drv_backend_config_buf *b, const char *config_json, size_t n_secrets)
{
	drover__compute__v1__backend_config__init(&b->msg);
	b->msg.config_json = (char *)(config_json ? config_json : "{}");
	b->mem_ = NULL;
	if (n_secrets == 0)
		return 0;
	/* The entries, then the array of pointers to them that protobuf-c's repeated field wants. */
	if (n_secrets > SIZE_MAX / (sizeof(drv_secret_entry) + sizeof(drv_secret_entry *)))
		return DRV_ENOMEM;
	drv_secret_entry *entries = calloc(n_secrets, sizeof(*entries) + sizeof(drv_secret_entry *));
	if (!entries)
		return DRV_ENOMEM;
	drv_secret_entry **ptrs = (drv_secret_entry **)(entries + n_secrets);
	for (size_t i = 0; i < n_secrets; i++) {
		drover__compute__v1__backend_config__secrets_entry__init(&entries[i]);
		entries[i].key = (char *)"";
		entries[i].value = (char *)"";
		ptrs[i] = &entries[i];
	}
	b->mem_ = entries;
	b->msg.secrets = ptrs;
	b->msg.n_secrets = n_secrets;
	return 0;
}

void drv_backend_config_set_secret(struct drv_backend_config_buf *b, size_t i, const char *name,
                                   const char *value)
{
	b->msg.secrets[i]->key = (char *)name;
	b->msg.secrets[i]->value = (char *)(value ? value : "");
}

void drv_backend_config_clear(struct drv_backend_config_buf *b)
{
	free(b->mem_);
	b->mem_ = NULL;
	drover__compute__v1__backend_config__init(&b->msg);
}

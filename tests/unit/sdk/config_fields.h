/*
 * Config field declarations that use every field type, bounds, an enum,
 * defaults, required fields and secrets: the SDK's config tests
 * (test_config.c) and the config validator's fuzz target (fuzz/fuzz_config.c)
 * check against them.
 */
#ifndef CONFIG_FIELDS_H
#define CONFIG_FIELDS_H

#include "drover/driver.h"

static const char *const tiers[] = {"basic", "pro", NULL};

static const struct drv_config_field fields[] = {
    {.name = "region", .type = DRV_FIELD_STRING, .required = true, .description = "where machines run"},
    {.name = "tier", .type = DRV_FIELD_STRING, .enum_values = tiers, .default_json = "\"basic\""},
    {.name = "capacity",
     .type = DRV_FIELD_INTEGER,
     .has_minimum = true,
     .minimum = 1,
     .has_maximum = true,
     .maximum = 100,
     .default_json = "10"},
    {.name = "ratio", .type = DRV_FIELD_NUMBER, .has_maximum = true, .maximum = 1.5},
    {.name = "debug", .type = DRV_FIELD_BOOLEAN, .default_json = "false"},
    {.name = "zones", .type = DRV_FIELD_STRING_ARRAY},
    {.name = "api_key", .type = DRV_FIELD_STRING, .secret = true, .required = true, .description = "the key"},
    {.name = "project_id", .type = DRV_FIELD_STRING, .secret = true},
    {.name = NULL},
};

#endif

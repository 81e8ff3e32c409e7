/* checks.h — the check functions of the table in conf_tests.c, by group. */
#ifndef CHECKS_H
#define CHECKS_H

#include "conf.h"

/* checks_identity.c */
void check_transport_connect(struct conf_ctx *c);
void check_handshake_format(struct conf_ctx *c);
void check_handshake_timing(struct conf_ctx *c);
void check_health_serving(struct conf_ctx *c);
void check_info_well_formed(struct conf_ctx *c);
void check_info_config_schema(struct conf_ctx *c);
void check_config_valid_accepted(struct conf_ctx *c);
void check_config_missing_required(struct conf_ctx *c);
void check_config_ill_typed(struct conf_ctx *c);
void check_config_unknown_field(struct conf_ctx *c);
void check_config_invalid_rejected(struct conf_ctx *c);
void check_features_well_formed(struct conf_ctx *c);
void check_features_stable(struct conf_ctx *c);
void check_features_advertised_implemented(struct conf_ctx *c);
void check_features_unadvertised_unimplemented(struct conf_ctx *c);
void check_errors_codes_in_table(struct conf_ctx *c);
void check_errors_bad_secrets(struct conf_ctx *c);
/* GetInfo's config schema, checked; new reference or NULL after conf_fail. */
json_t *conf_config_schema(struct conf_ctx *c);

/* checks_offers.c */
void check_offers_well_formed(struct conf_ctx *c);
void check_offers_filter_cpus(struct conf_ctx *c);
void check_offers_filter_memory(struct conf_ctx *c);
void check_offers_filter_disk(struct conf_ctx *c);
void check_offers_filter_gpu_count(struct conf_ctx *c);
void check_offers_filter_gpu_memory(struct conf_ctx *c);
void check_offers_filter_gpu_names(struct conf_ctx *c);
void check_offers_filter_spot(struct conf_ctx *c);
void check_offers_filter_max_price(struct conf_ctx *c);
void check_offers_filter_regions(struct conf_ctx *c);
void check_offers_filter_cpu_archs(struct conf_ctx *c);
void check_offers_large_response(struct conf_ctx *c);
/* Checks one offer; returns false after conf_fail naming `what`. */
bool conf_offer_well_formed(struct conf_ctx *c, const drv_offer *o, size_t index, const char *what);

/* checks_compute.c */
void check_instances_lifecycle(struct conf_ctx *c);
void check_instances_terminate_unknown(struct conf_ctx *c);
void check_instances_get_unknown(struct conf_ctx *c);
void check_instances_idempotent_create(struct conf_ctx *c);
void check_instances_list(struct conf_ctx *c);
void check_instances_survive_restart(struct conf_ctx *c);
void check_instances_key_reuse(struct conf_ctx *c);
void check_errors_create_without_key(struct conf_ctx *c);
void check_errors_config_not_json(struct conf_ctx *c);
void check_volumes_lifecycle(struct conf_ctx *c);
void check_volumes_register(struct conf_ctx *c);
void check_volumes_attach_unknown(struct conf_ctx *c);
void check_placement_lifecycle(struct conf_ctx *c);
void check_gateways_lifecycle(struct conf_ctx *c);

/* checks_robust.c */
void check_robustness_deadline(struct conf_ctx *c);
void check_robustness_concurrency(struct conf_ctx *c);
void check_lifecycle_sigterm(struct conf_ctx *c);
void check_lifecycle_stdin_eof(struct conf_ctx *c);

#endif

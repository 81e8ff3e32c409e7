/*
 * offer_rules.h — the rules an offer must keep, as pure functions: each takes
 * a value (or a whole Offer) and returns NULL when the rule holds, else a
 * one-line reason that names the field and the limit. Reasons never quote
 * the offending value itself (a control character or a megabyte string has
 * no business in a report); the caller names the offer.
 *
 * These rules are meant to be shared: the conformance harness's
 * offers.well_formed applies them, and droverd checks every offer a driver
 * sends against the same rules (docs/PROTOCOL.md, "The trust boundary").
 * Nothing here depends on the harness, only on the generated protocol types.
 */
#ifndef OFFER_RULES_H
#define OFFER_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drover/types.h"

/* Longest instance type, region, zone, GPU name or vendor, cpu_arch or backend_type, in bytes. */
#define OFFER_RULES_NAME_MAX 128
/* Longest provider id (instance, volume, gateway), in bytes. */
#define OFFER_RULES_ID_MAX 256
/* An offer costs more than a millionth of a dollar an hour (this rules out 5e-324)... */
#define OFFER_RULES_PRICE_MIN 1e-6
/* ... and at most this sanity ceiling, in USD per hour. */
#define OFFER_RULES_PRICE_MAX 10000.0
/* Any GPU's memory in MiB: below the floor it was almost surely given in GiB. */
#define OFFER_RULES_GPU_MIB_MIN 512
#define OFFER_RULES_GPU_MIB_MAX (1024 * 1024)

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 when s does not start
 * one. s must be NUL-terminated.
 */
size_t offer_rules_utf8_len(const unsigned char *s);

/*
 * A text field: valid UTF-8, no control character (C0, DEL or C1), at most
 * `max` bytes, and not empty when `required`. `field` names it in the reason.
 * Returns NULL, or buf holding the reason.
 */
const char *offer_rules_text(const char *field, const char *s, size_t max, bool required, char *buf,
                             size_t len);

/* price_per_hour: finite, within [OFFER_RULES_PRICE_MIN, OFFER_RULES_PRICE_MAX]. NULL or buf. */
const char *offer_rules_price(double price, char *buf, size_t len);

/*
 * GPU memory in MiB for a GPU called `name`: within the generic bounds, and
 * within the plausible range of a known GPU name (case-insensitive; "H100"
 * has 80 to 96 GiB, so 80 where 81,920 MiB was meant fails). NULL or buf.
 */
const char *offer_rules_gpu_memory(const char *name, uint64_t memory_mib, char *buf, size_t len);

/*
 * The plausible memory range in MiB of a known GPU name (case-insensitive).
 * Returns false for a name the table does not know.
 */
bool offer_rules_gpu_known(const char *name, uint64_t *min_mib, uint64_t *max_mib);

/*
 * Every rule of one offer, in a fixed order (texts, resources, price,
 * availability, GPUs); the first broken rule's reason, or NULL. Does not
 * judge backend_type against the driver's own type, which needs GetInfo.
 */
const char *offer_rules_check(const drv_offer *o, char *buf, size_t len);

#endif

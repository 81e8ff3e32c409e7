/*
 * drover/offer_check.h — the rules a well-formed offer keeps, in one place
 * for the two programs that check drivers: droverd drops offers that break
 * them (docs/PROTOCOL.md §12.2) and the conformance harness fails a driver
 * whose offers break them (offers.well_formed).
 */
#ifndef DROVER_OFFER_CHECK_H
#define DROVER_OFFER_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "drover/types.h"

/* Bytes of any string field of an offer at most (names, types, regions, zones, vendors). */
#define DRV_OFFER_MAX_STRING 128
/* Zones of one offer, and GPU entries of one offer, at most. */
#define DRV_OFFER_MAX_ZONES 64
#define DRV_OFFER_MAX_GPU_ENTRIES 16
/* Prices per hour in USD: an offer's is at least the floor and at most the ceiling. */
#define DRV_OFFER_MIN_PRICE 1e-6
#define DRV_OFFER_MAX_PRICE 10000.0
/* Memory of one GPU in MiB: less than 1 GiB is a GiB figure given where MiB is meant. */
#define DRV_OFFER_MIN_GPU_MEMORY_MIB 1024
#define DRV_OFFER_MAX_GPU_MEMORY_MIB (1024u * 1024u)

/*
 * True when `s` is valid UTF-8 of at most `max` bytes with no control
 * character (C0, DEL or C1), so that it is safe to store and to print.
 * NULL counts as the empty string.
 */
bool drv_text_ok(const char *s, size_t max);

/*
 * Checks one offer against the protocol's rules: a non-empty instance type
 * and region; every string field text as drv_text_ok() has it, within
 * DRV_OFFER_MAX_STRING; a finite price from DRV_OFFER_MIN_PRICE to
 * DRV_OFFER_MAX_PRICE; resources with cpus and memory; each GPU with a name,
 * a vendor, a count and a plausible memory in MiB; a known availability.
 * backend_type is not checked: droverd stamps its own, and the harness
 * compares it with GetInfo. Returns true when the offer keeps them;
 * otherwise false and, in `why` (may be NULL), which rule it broke, naming
 * the field.
 */
bool drv_offer_check(const drv_offer *o, char *why, size_t whylen);

#endif

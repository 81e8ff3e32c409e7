/*
 * drover/offer_check.h — the rules a well-formed offer keeps, and the text
 * rules for a driver's names and ids, in one place for the two programs that
 * check drivers: droverd drops offers that break them and refuses instance
 * answers whose id or names break them (docs/PROTOCOL.md §12.2, §12.4), and
 * the conformance harness fails a driver that breaks them (offers.well_formed,
 * and the instance id of instances.lifecycle). Neither keeps a copy.
 *
 * Every function here is pure: no I/O, no allocation, no global state, safe
 * from any thread. Arguments are borrowed for the call only. A reason written
 * to `why` names the field and the limit but never quotes the offending
 * value (a control character or a megabyte string has no business in a log,
 * an event or a report); the caller names the offer or the answer.
 */
#ifndef DROVER_OFFER_CHECK_H
#define DROVER_OFFER_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drover/types.h"

/* Bytes of a name at most: instance types, regions, zones, GPU names and vendors, cpu_arch, backend_type. */
#define DRV_TEXT_MAX_NAME 128
/* Bytes of a provider id at most (instance, volume, gateway). */
#define DRV_TEXT_MAX_ID 256
/* Zones of one offer, and GPU entries of one offer, at most. */
#define DRV_OFFER_MAX_ZONES 64
#define DRV_OFFER_MAX_GPU_ENTRIES 16
/*
 * Prices per hour in USD: at least the floor (which rules out 0, -5 and
 * 5e-324, prices that would win every create) and at most the sanity ceiling.
 */
#define DRV_OFFER_MIN_PRICE 1e-6
#define DRV_OFFER_MAX_PRICE 10000.0
/*
 * Memory of any one GPU in MiB, from 1 GiB to 1 TiB. The floor is the
 * ceiling counted in GiB, so a figure given in GiB where MiB is meant falls
 * below it for every GPU the ceiling allows (a floor of 512 would pass a
 * 512..1023 GiB GPU written in GiB). No cloud sells a GPU of less than 1 GiB
 * today: the last were 512 MiB vGPU slices of Maxwell-era cards.
 */
#define DRV_OFFER_MIN_GPU_MEMORY_MIB 1024
#define DRV_OFFER_MAX_GPU_MEMORY_MIB (1024u * 1024u)

/*
 * The length in bytes of the well-formed UTF-8 sequence that starts at `s`
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or
 * 0 when `s` does not start one. `s` must be NUL-terminated and non-NULL.
 * Control characters count as well-formed here; drv_text_ok() refuses them.
 */
size_t drv_utf8_len(const char *s);

/*
 * The length of the longest prefix of the n bytes at s that has at most max
 * bytes and does not end inside a UTF-8 sequence: n itself when n <= max.
 * How a long message is cut without making valid text invalid.
 */
size_t drv_utf8_cut(const char *s, size_t n, size_t max);

/*
 * True when `s` is valid UTF-8 of at most `max` bytes with no control
 * character (C0, DEL, or C1: U+0080..U+009F, which 8-bit terminals read as
 * escape sequences), so that it is safe to store and to print. NULL counts
 * as the empty string.
 */
bool drv_text_ok(const char *s, size_t max);

/*
 * The same rule with a reason: `s` (NULL counts as empty) must be text as
 * drv_text_ok() has it, of at most `max` bytes, and not empty when
 * `required`. `field` names it in the reason. Returns true when it keeps the
 * rule; otherwise false and, in `why` (may be NULL), the reason: "<field> is
 * empty", "<field> is N bytes long, at most MAX", "<field> is not valid UTF-8
 * (byte 0xNN at offset I)" or "<field> holds the control character U+NNNN at
 * offset I".
 */
bool drv_text_check(const char *field, const char *s, size_t max, bool required, char *why, size_t whylen);

/*
 * The plausible memory of a known GPU, by name (case-insensitive: "H100",
 * "a10g", "MI300X"): true with its range in MiB in *min_mib and *max_mib,
 * or false, with both untouched, for a name the table does not know. The
 * range is the smallest to the largest variant sold, widened 15% below and
 * 10% above, since tools report a little less than the nominal size
 * (nvidia-smi shows 15,360 MiB for a 16 GiB T4).
 */
bool drv_gpu_memory_known(const char *name, uint64_t *min_mib, uint64_t *max_mib);

/*
 * Checks one offer against the protocol's rules: every string field
 * (instance_type, region, zones, backend_type, resources.cpu_arch, each
 * GPU's name and vendor) text of at most DRV_TEXT_MAX_NAME bytes, with
 * instance_type, region, zones, GPU names and vendors not empty; at most
 * DRV_OFFER_MAX_ZONES zones; a finite price from DRV_OFFER_MIN_PRICE to
 * DRV_OFFER_MAX_PRICE; a known availability; resources with cpus and memory;
 * at most DRV_OFFER_MAX_GPU_ENTRIES GPU entries, each with a count and a
 * memory in MiB within DRV_OFFER_MIN_GPU_MEMORY_MIB..DRV_OFFER_MAX_GPU_MEMORY_MIB
 * and, for a GPU drv_gpu_memory_known() knows, within its range.
 *
 * Whose backend the offer names is not judged, only that backend_type is
 * text: droverd stamps its own, and the harness compares it with GetInfo.
 * Returns true when the offer keeps every rule; otherwise false and, in
 * `why` (may be NULL), the first rule it broke, naming the field. Costs a
 * pass over the offer's strings and no allocation, as droverd checks every
 * offer of every answer.
 */
bool drv_offer_check(const drv_offer *o, char *why, size_t whylen);

#endif

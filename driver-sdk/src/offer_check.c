/* The rules of a well-formed offer, and of a driver's names and ids (drover/offer_check.h). */
#include "drover/offer_check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

size_t drv_utf8_len(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = s[0] < 0x80                    ? 1
	           : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
	           : s[0] >= 0xe0 && s[0] <= 0xef ? 3
	           : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
	                                          : 0;
	/* A NUL ends the loop too, since it is no continuation byte. */
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong 3- and 4-byte forms, surrogates, and past U+10FFFF. */
	if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 3 && s[0] == 0xed && s[1] > 0x9f) ||
	    (n == 4 && s[0] == 0xf0 && s[1] < 0x90) || (n == 4 && s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

size_t drv_utf8_cut(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	size_t keep = max;
	while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80)
		keep--;
	return keep;
}

static bool fail(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return false;
}

/*
 * The offset of the first byte of s (n bytes) that does not start a
 * printable UTF-8 character, or n. Printable ASCII, nearly every byte of
 * real offers, takes one compare per byte.
 */
static size_t printable_prefix(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if ((unsigned)(s[i] - 0x20) < 0x5f) {
			i++;
			continue;
		}
		size_t k = drv_utf8_len((const char *)s + i);
		/* Below 0x80: C0 or DEL. C2 80..C2 9F: the C1 controls. */
		if (k <= 1 || (k == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0))
			return i;
		i += k;
	}
	return n;
}

/*
 * A text field. Its name for the reason is `field`, or "<field>[<idx>]<sub>"
 * when idx >= 0, formatted only on failure: droverd checks every offer of
 * every answer, so a good field must cost next to nothing.
 */
static bool text_field(const char *s, size_t max, bool required, const char *field, long idx, const char *sub,
                       char *why, size_t len)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p), bad = SIZE_MAX;

	if (n > 0 && n <= max && (bad = printable_prefix(p, n)) == n)
		return true;
	if (n == 0 && !required)
		return true;
	if (!why || !len)
		return false;
	char name[96];
	if (idx >= 0)
		snprintf(name, sizeof(name), "%s[%ld]%s", field, idx, sub ? sub : "");
	else
		snprintf(name, sizeof(name), "%s", field);
	if (n == 0)
		return fail(why, len, "%s is empty", name);
	if (n > max)
		return fail(why, len, "%s is %zu bytes long, at most %zu", name, n, max);
	size_t k = drv_utf8_len((const char *)p + bad);
	if (k == 0)
		return fail(why, len, "%s is not valid UTF-8 (byte 0x%02x at offset %zu)", name, p[bad], bad);
	return fail(why, len, "%s holds the control character U+%04X at offset %zu", name,
	            k == 1 ? p[bad] : p[bad + 1], bad);
}

bool drv_text_ok(const char *s, size_t max)
{
	return text_field(s, max, false, "", -1, NULL, NULL, 0);
}

bool drv_text_check(const char *field, const char *s, size_t max, bool required, char *why, size_t whylen)
{
	return text_field(s, max, required, field, -1, NULL, why, whylen);
}

/*
 * Known GPUs and the memory of each in GiB, from the smallest to the largest
 * variant sold. The sim's catalog (drivers/sim/catalog.tsv) must fit, and
 * every GPU in it must be here: tests/unit/sdk/test_offer_check.c reads it.
 */
static const struct {
	const char *name;
	unsigned min_gib, max_gib;
} known_gpus[] = {
    {"K80", 12, 12},      {"P4", 8, 8},         {"P100", 12, 16},     {"T4", 16, 16},
    {"V100", 16, 32},     {"A10", 24, 24},      {"A10G", 24, 24},     {"A16", 16, 16},
    {"A30", 24, 24},      {"A40", 48, 48},      {"A100", 40, 80},     {"A800", 40, 80},
    {"A4000", 16, 16},    {"A5000", 24, 24},    {"A6000", 48, 48},    {"RTX6000", 24, 48},
    {"RTX3090", 24, 24},  {"RTX4090", 24, 24},  {"L4", 24, 24},       {"L40", 48, 48},
    {"L40S", 48, 48},     {"H100", 80, 96},     {"H800", 80, 80},     {"H200", 141, 141},
    {"GH200", 96, 144},   {"B100", 192, 192},   {"B200", 180, 192},   {"GB200", 186, 192},
    {"MI210", 64, 64},    {"MI250", 128, 128},  {"MI250X", 128, 128}, {"MI300A", 128, 128},
    {"MI300X", 192, 192}, {"MI325X", 256, 256}, {"Gaudi2", 96, 96},   {"Gaudi3", 128, 128},
};

/* The index of a known GPU's name in known_gpus, or -1. */
static long gpu_index(const char *name)
{
	for (size_t i = 0; name && i < sizeof(known_gpus) / sizeof(known_gpus[0]); i++)
		if (strcasecmp(known_gpus[i].name, name) == 0)
			return (long)i;
	return -1;
}

static void gpu_range(long i, uint64_t *min_mib, uint64_t *max_mib)
{
	*min_mib = (uint64_t)known_gpus[i].min_gib * 1024 * 85 / 100;
	*max_mib = (uint64_t)known_gpus[i].max_gib * 1024 * 110 / 100;
}

bool drv_gpu_memory_known(const char *name, uint64_t *min_mib, uint64_t *max_mib)
{
	long i = gpu_index(name);
	if (i < 0)
		return false;
	gpu_range(i, min_mib, max_mib);
	return true;
}

static bool check_price(double price, char *why, size_t len)
{
	/* NaN fails every comparison, so the test is written to pass only good prices. */
	if (price >= DRV_OFFER_MIN_PRICE && price <= DRV_OFFER_MAX_PRICE)
		return true;
	if (isnan(price))
		return fail(why, len, "price_per_hour is NaN; it must be a finite number of USD per hour");
	if (isinf(price))
		return fail(why, len,
		            "price_per_hour is %sinfinite; it must be a finite number of USD per hour",
		            price < 0 ? "minus " : "");
	if (price <= 0)
		return fail(why, len, "price_per_hour is %.6g; the protocol requires > 0", price);
	if (price < DRV_OFFER_MIN_PRICE)
		return fail(why, len, "price_per_hour is %.6g, below the floor of %g USD/h", price,
		            DRV_OFFER_MIN_PRICE);
	return fail(why, len, "price_per_hour is %.6g, above the sanity ceiling of %g USD/h", price,
	            DRV_OFFER_MAX_PRICE);
}

static bool check_gpus(const drv_resources *r, char *why, size_t len)
{
	if (r->n_gpus > DRV_OFFER_MAX_GPU_ENTRIES)
		return fail(why, len, "resources.gpus has %zu entries, at most %d", r->n_gpus,
		            DRV_OFFER_MAX_GPU_ENTRIES);
	for (size_t g = 0; g < r->n_gpus; g++) {
		const drv_gpu *gpu = r->gpus[g];
		if (!gpu)
			return fail(why, len, "resources.gpus[%zu] is missing", g);
		if (!text_field(gpu->name, DRV_TEXT_MAX_NAME, true, "resources.gpus", (long)g, ".name", why,
		                len) ||
		    !text_field(gpu->vendor, DRV_TEXT_MAX_NAME, true, "resources.gpus", (long)g, ".vendor",
		                why, len))
			return false;
		if (gpu->count == 0)
			return fail(why, len, "resources.gpus[%zu].count is 0", g);
		uint64_t mib = gpu->memory_mib, lo, hi;
		if (mib < DRV_OFFER_MIN_GPU_MEMORY_MIB || mib > DRV_OFFER_MAX_GPU_MEMORY_MIB)
			return fail(why, len,
			            "resources.gpus[%zu].memory_mib is %llu, outside %d..%u MiB for any GPU "
			            "(is it in GiB? the protocol counts MiB)",
			            g, (unsigned long long)mib, DRV_OFFER_MIN_GPU_MEMORY_MIB,
			            DRV_OFFER_MAX_GPU_MEMORY_MIB);
		/* The table's spelling of the name is quoted, never the driver's. */
		long k = gpu_index(gpu->name);
		if (k >= 0) {
			gpu_range(k, &lo, &hi);
			if (mib < lo || mib > hi)
				return fail(why, len,
				            "resources.gpus[%zu].memory_mib is %llu, implausible for a %s "
				            "(%llu..%llu MiB; the protocol counts MiB)",
				            g, (unsigned long long)mib, known_gpus[k].name,
				            (unsigned long long)lo, (unsigned long long)hi);
		}
	}
	return true;
}

bool drv_offer_check(const drv_offer *o, char *why, size_t len)
{
	const size_t max = DRV_TEXT_MAX_NAME;

	if (!o)
		return fail(why, len, "the offer is missing");
	if (!text_field(o->instance_type, max, true, "instance_type", -1, NULL, why, len) ||
	    !text_field(o->region, max, true, "region", -1, NULL, why, len) ||
	    !text_field(o->backend_type, max, false, "backend_type", -1, NULL, why, len))
		return false;
	if (o->n_zones > DRV_OFFER_MAX_ZONES)
		return fail(why, len, "zones has %zu entries, at most %d", o->n_zones, DRV_OFFER_MAX_ZONES);
	for (size_t z = 0; z < o->n_zones; z++)
		if (!text_field(o->zones[z], max, true, "zones", (long)z, NULL, why, len))
			return false;
	if (!check_price(o->price_per_hour, why, len))
		return false;
	if (o->availability < DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE ||
	    o->availability > DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_UNKNOWN)
		return fail(why, len,
		            "availability is %d; the protocol requires one of AVAILABLE, NOT_AVAILABLE, "
		            "NO_QUOTA, NO_BALANCE, UNKNOWN",
		            (int)o->availability);
	const drv_resources *r = o->resources;
	if (!r)
		return fail(why, len, "resources are missing");
	if (!text_field(r->cpu_arch, max, false, "resources.cpu_arch", -1, NULL, why, len))
		return false;
	if (r->cpus == 0)
		return fail(why, len, "resources.cpus is 0");
	if (r->memory_mib == 0)
		return fail(why, len, "resources.memory_mib is 0");
	return check_gpus(r, why, len);
}

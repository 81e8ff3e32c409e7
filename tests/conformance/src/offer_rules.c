/*
 * The rules an offer must keep (see offer_rules.h). Pure functions over the
 * generated protocol types: no I/O, no global state.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "offer_rules.h"

size_t offer_rules_utf8_len(const unsigned char *s)
{
	size_t n = s[0] < 0x80                    ? 1
	           : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
	           : s[0] >= 0xe0 && s[0] <= 0xef ? 3
	           : s[0] >= 0xc2 && s[0] < 0xe0  ? 2
	                                          : 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 3 && s[0] == 0xed && s[1] > 0x9f) ||
	    (n == 4 && s[0] == 0xf0 && s[1] < 0x90) || (n == 4 && s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

const char *offer_rules_text(const char *field, const char *s, size_t max, bool required, char *buf,
                             size_t len)
{
	if (!s || !*s) {
		if (!required)
			return NULL;
		snprintf(buf, len, "%s is empty", field);
		return buf;
	}
	size_t n = strlen(s);
	if (n > max) {
		snprintf(buf, len, "%s is %zu bytes long, at most %zu", field, n, max);
		return buf;
	}
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t k = offer_rules_utf8_len(p + i);
		if (k == 0) {
			snprintf(buf, len, "%s is not valid UTF-8 (byte 0x%02x at offset %zu)", field, p[i],
			         i);
			return buf;
		}
		/* C0, DEL and C1 (U+0080..U+009F, which 8-bit terminals read as ESC sequences). */
		if (p[i] < 0x20 || p[i] == 0x7f || (k == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)) {
			unsigned cp = k == 1 ? p[i] : p[i + 1];
			snprintf(buf, len, "%s holds the control character U+%04X at offset %zu", field, cp,
			         i);
			return buf;
		}
		i += k;
	}
	return NULL;
}

const char *offer_rules_price(double price, char *buf, size_t len)
{
	if (isnan(price))
		snprintf(buf, len, "price_per_hour is NaN; it must be a finite number of USD per hour");
	else if (isinf(price))
		snprintf(buf, len, "price_per_hour is %sinfinite; it must be a finite number of USD per hour",
		         price < 0 ? "minus " : "");
	else if (price <= 0)
		snprintf(buf, len, "price_per_hour is %.6g; the protocol requires > 0", price);
	else if (price < OFFER_RULES_PRICE_MIN)
		snprintf(buf, len, "price_per_hour is %.6g, below the floor of %g USD/h", price,
		         OFFER_RULES_PRICE_MIN);
	else if (price > OFFER_RULES_PRICE_MAX)
		snprintf(buf, len, "price_per_hour is %.6g, above the sanity ceiling of %g USD/h", price,
		         OFFER_RULES_PRICE_MAX);
	else
		return NULL;
	return buf;
}

/*
 * Known GPUs and the memory of each in GiB (smallest and largest variant
 * sold). Vendors and tools report a little less than the nominal size
 * (nvidia-smi shows 15,360 MiB for a T4 and 23,028 MiB for an A10G), so a
 * range is widened by 15% below and 10% above when checked. The sim's
 * catalog (drivers/sim/catalog.tsv) must fit: a self-test reads it.
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

bool offer_rules_gpu_known(const char *name, uint64_t *min_mib, uint64_t *max_mib)
{
	for (size_t i = 0; name && i < sizeof(known_gpus) / sizeof(known_gpus[0]); i++) {
		if (strcasecmp(known_gpus[i].name, name) == 0) {
			*min_mib = (uint64_t)known_gpus[i].min_gib * 1024 * 85 / 100;
			*max_mib = (uint64_t)known_gpus[i].max_gib * 1024 * 110 / 100;
			return true;
		}
	}
	return false;
}

const char *offer_rules_gpu_memory(const char *name, uint64_t mib, char *buf, size_t len)
{
	uint64_t lo, hi;
	if (mib < OFFER_RULES_GPU_MIB_MIN || mib > OFFER_RULES_GPU_MIB_MAX)
		snprintf(buf, len,
		         "GPU memory_mib is %llu, outside %d..%d MiB for any GPU (is it in GiB? the protocol "
		         "counts MiB)",
		         (unsigned long long)mib, OFFER_RULES_GPU_MIB_MIN, OFFER_RULES_GPU_MIB_MAX);
	else if (offer_rules_gpu_known(name, &lo, &hi) && (mib < lo || mib > hi))
		snprintf(buf, len,
		         "GPU memory_mib is %llu, implausible for a %s (%llu..%llu MiB; the protocol counts "
		         "MiB)",
		         (unsigned long long)mib, name, (unsigned long long)lo, (unsigned long long)hi);
	else
		return NULL;
	return buf;
}

const char *offer_rules_check(const drv_offer *o, char *buf, size_t len)
{
	const size_t max = OFFER_RULES_NAME_MAX;
	const char *why;
	if ((why = offer_rules_text("instance_type", o->instance_type, max, true, buf, len)) ||
	    (why = offer_rules_text("region", o->region, max, true, buf, len)) ||
	    (why = offer_rules_text("backend_type", o->backend_type, max, false, buf, len)))
		return why;
	for (size_t i = 0; i < o->n_zones; i++) {
		char field[32];
		snprintf(field, sizeof(field), "zones[%zu]", i);
		if ((why = offer_rules_text(field, o->zones[i], max, true, buf, len)))
			return why;
	}
	const drv_resources *r = o->resources;
	if (!r) {
		snprintf(buf, len, "resources are missing");
		return buf;
	}
	if ((why = offer_rules_text("resources.cpu_arch", r->cpu_arch, max, false, buf, len)))
		return why;
	if ((why = offer_rules_price(o->price_per_hour, buf, len)))
		return why;
	if (r->cpus == 0) {
		snprintf(buf, len, "resources.cpus is 0");
		return buf;
	}
	if (r->memory_mib == 0) {
		snprintf(buf, len, "resources.memory_mib is 0");
		return buf;
	}
	if (o->availability < DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE ||
	    o->availability > DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_UNKNOWN) {
		snprintf(buf, len,
		         "availability is %d; the protocol requires one of AVAILABLE, NOT_AVAILABLE, "
		         "NO_QUOTA, NO_BALANCE, UNKNOWN",
		         (int)o->availability);
		return buf;
	}
	for (size_t g = 0; g < r->n_gpus; g++) {
		const drv_gpu *gpu = r->gpus[g];
		char field[48];
		snprintf(field, sizeof(field), "resources.gpus[%zu].name", g);
		if ((why = offer_rules_text(field, gpu->name, max, true, buf, len)))
			return why;
		snprintf(field, sizeof(field), "resources.gpus[%zu].vendor", g);
		if ((why = offer_rules_text(field, gpu->vendor, max, true, buf, len)))
			return why;
		if (gpu->count == 0) {
			snprintf(buf, len, "resources.gpus[%zu].count is 0", g);
			return buf;
		}
		if ((why = offer_rules_gpu_memory(gpu->name, gpu->memory_mib, buf, len)))
			return why;
	}
	return NULL;
}

/* The rules of a well-formed offer (drover/offer_check.h). */
#include "drover/offer_check.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*
 * The length of s when it is valid UTF-8 without control characters, else
 * -1. Printable ASCII, nearly every byte of real offers, takes one compare
 * per byte.
 */
static long text_len(const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = 0;

	for (;;) {
		while ((unsigned)(p[n] - 0x20) < 0x5f)
			n++;
		unsigned c = p[n], len, cp;
		if (c == 0)
			return (long)n;
		if (c < 0x80)
			return -1; /* C0 or DEL */
		if (c >= 0xc2 && c <= 0xdf)
			len = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4, cp = c & 0x07;
		else
			return -1;
		for (unsigned i = 1; i < len; i++) {
			if ((p[n + i] & 0xc0) != 0x80)
				return -1;
			cp = (cp << 6) | (p[n + i] & 0x3f);
		}
		/* Overlong forms, surrogates, past U+10FFFF, and the C1 controls. */
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return -1;
		n += len;
	}
}

bool drv_text_ok(const char *s, size_t max)
{
	long n = text_len(s);
	return n >= 0 && (size_t)n <= max;
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
 * A required (or optional) string field: text, within the cap. Its name for
 * the reason is `field`, or "<field>[<idx>]<sub>" with idx >= 0, formatted
 * only on failure: checking an offer must cost next to nothing, as droverd
 * checks every offer of every answer.
 */
static bool text_field(const char *s, bool required, const char *field, long idx, const char *sub, char *why,
                       size_t len)
{
	const char *fault = NULL;
	long n = text_len(s);

	if (required && n == 0)
		fault = "is empty";
	else if (n < 0)
		fault = "is not valid UTF-8 text (it holds a control character or a bad byte)";
	else if (n > DRV_OFFER_MAX_STRING)
		fault = "is too long";
	if (!fault)
		return true;
	char name[96];
	if (idx >= 0)
		snprintf(name, sizeof(name), "%s[%ld]%s", field, idx, sub ? sub : "");
	else
		snprintf(name, sizeof(name), "%s", field);
	if (n > DRV_OFFER_MAX_STRING)
		return fail(why, len, "%s is %zu bytes long; at most %d are allowed", name, n,
		            DRV_OFFER_MAX_STRING);
	return fail(why, len, "%s %s", name, fault);
}

static bool check_gpus(const drv_resources *r, char *why, size_t len)
{
	if (r->n_gpus > DRV_OFFER_MAX_GPU_ENTRIES)
		return fail(why, len, "resources.gpus has %zu entries; at most %d are allowed", r->n_gpus,
		            DRV_OFFER_MAX_GPU_ENTRIES);
	for (size_t g = 0; g < r->n_gpus; g++) {
		const drv_gpu *gpu = r->gpus[g];
		if (!gpu)
			return fail(why, len, "resources.gpus[%zu] is missing", g);
		if (!text_field(gpu->name, true, "resources.gpus", (long)g, ".name", why, len) ||
		    !text_field(gpu->vendor, true, "resources.gpus", (long)g, ".vendor", why, len))
			return false;
		if (gpu->count == 0)
			return fail(why, len, "resources.gpus[%zu].count is 0", g);
		if (gpu->memory_mib < DRV_OFFER_MIN_GPU_MEMORY_MIB ||
		    gpu->memory_mib > DRV_OFFER_MAX_GPU_MEMORY_MIB)
			return fail(why, len,
			            "resources.gpus[%zu].memory_mib is %llu; a GPU's memory in MiB lies from "
			            "%d to %u (a figure in GiB where MiB is meant?)",
			            g, (unsigned long long)gpu->memory_mib, DRV_OFFER_MIN_GPU_MEMORY_MIB,
			            DRV_OFFER_MAX_GPU_MEMORY_MIB);
	}
	return true;
}

bool drv_offer_check(const drv_offer *o, char *why, size_t len)
{
	if (!o)
		return fail(why, len, "the offer is missing");
	if (!text_field(o->instance_type, true, "instance_type", -1, NULL, why, len) ||
	    !text_field(o->region, true, "region", -1, NULL, why, len))
		return false;
	if (o->n_zones > DRV_OFFER_MAX_ZONES)
		return fail(why, len, "zones has %zu entries; at most %d are allowed", o->n_zones,
		            DRV_OFFER_MAX_ZONES);
	for (size_t z = 0; z < o->n_zones; z++)
		if (!text_field(o->zones[z], true, "zones", (long)z, NULL, why, len))
			return false;
	/* NaN fails every comparison, so it fails here too. */
	if (!(o->price_per_hour >= DRV_OFFER_MIN_PRICE && o->price_per_hour <= DRV_OFFER_MAX_PRICE))
		return fail(why, len, "price_per_hour is %.6g; it must be a number from %g to %g",
		            o->price_per_hour, DRV_OFFER_MIN_PRICE, DRV_OFFER_MAX_PRICE);
	if (o->availability < DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE ||
	    o->availability > DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_UNKNOWN)
		return fail(why, len, "availability is %d, not one of AVAILABLE .. UNKNOWN",
		            (int)o->availability);
	const drv_resources *r = o->resources;
	if (!r)
		return fail(why, len, "resources is missing");
	if (r->cpus == 0)
		return fail(why, len, "resources.cpus is 0");
	if (r->memory_mib == 0)
		return fail(why, len, "resources.memory_mib is 0");
	if (!text_field(r->cpu_arch, false, "resources.cpu_arch", -1, NULL, why, len))
		return false;
	return check_gpus(r, why, len);
}

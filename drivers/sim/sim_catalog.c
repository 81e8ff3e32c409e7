/*
 * The catalog: parsing catalog.tsv, the precomputed offers, lookups, and the
 * synthetic offers of config "synthetic_offers".
 *
 * Offers are built once so GetOffers only filters and copies them: every
 * string of an offer points into the catalog's text or its zone table.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"
#include "xalloc.h"

#define N_COLUMNS 13
#define SYNTH_NAME_MAX 64

static uint64_t mix64(uint64_t x)
{
	/* The splitmix64 finaliser: spreads every input bit over the output. */
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

uint64_t sim_slot_hash(const char *type, const char *region)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (const unsigned char *p = (const unsigned char *)type; *p; p++)
		h = (h ^ *p) * UINT64_C(0x100000001b3);
	h = (h ^ '|') * UINT64_C(0x100000001b3);
	for (const unsigned char *p = (const unsigned char *)region; *p; p++)
		h = (h ^ *p) * UINT64_C(0x100000001b3);
	return mix64(h);
}

bool sim_type_no_quota(const struct sim_catalog *cat, const struct sim_type *type, int r)
{
	/*
	 * About one pool in 29: "a few", stable when other rows change. A type's
	 * first region always has quota, so the obvious pick (p5.48xlarge or
	 * g6.xlarge in us-east-1) works in tests and demos.
	 */
	if (type->n_regions == 0 || type->regions[0] == r)
		return false;
	return sim_slot_hash(type->name, cat->regions[r]) % 29 == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_type_name(const void *a, const void *b, void *cat)
{
	const struct sim_type *types = ((const struct sim_catalog *)cat)->types;
	return strcmp(types[*(const size_t *)a].name, types[*(const size_t *)b].name);
}

static int cmp_offer(const void *a, const void *b)
{
	const struct sim_offer *x = a, *y = b;
	if (x->offer.price_per_hour != y->offer.price_per_hour)
		return x->offer.price_per_hour < y->offer.price_per_hour ? -1 : 1;
	int c = strcmp(x->offer.instance_type, y->offer.instance_type);
	if (c)
		return c;
	c = strcmp(x->offer.region, y->offer.region);
	if (c)
		return c;
	return (int)x->resources.spot - (int)y->resources.spot;
}

/* Points the offer's message fields at its own sub-structs (after any move). */
static void offer_link(struct sim_offer *o)
{
	o->offer.resources = &o->resources;
	o->gpus[0] = &o->gpu;
	if (o->resources.n_gpus)
		o->resources.gpus = o->gpus;
}

static void offer_fill(struct sim_offer *o, const struct sim_catalog *cat, const struct sim_type *t,
                       const char *name, int r, bool spot, double price)
{
	drover__compute__v1__offer__init(&o->offer);
	drover__compute__v1__resources__init(&o->resources);
	drover__compute__v1__gpu__init(&o->gpu);
	o->offer.backend_type = (char *)"sim";
	o->offer.instance_type = (char *)name;
	o->offer.region = (char *)cat->regions[r];
	o->offer.n_zones = 3;
	o->offer.zones = cat->zones[r];
	o->offer.price_per_hour = price;
	o->offer.availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
	o->resources.cpus = t->cpus;
	o->resources.memory_mib = t->memory_mib;
	o->resources.disk_mib = t->disk_mib;
	o->resources.spot = spot;
	o->resources.cpu_arch = (char *)t->cpu_arch;
	if (t->gpu_count) {
		o->gpu.name = (char *)t->gpu_name;
		o->gpu.vendor = (char *)t->gpu_vendor;
		o->gpu.memory_mib = t->gpu_memory_mib;
		o->gpu.count = t->gpu_count;
		o->resources.n_gpus = 1;
	}
	o->region_idx = (uint16_t)r;
	o->slot = sim_slot_hash(name, cat->regions[r]);
	offer_link(o);
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int parse_price(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || end == s || !isfinite(v) || v < 0)
		return -1;
	*out = v;
	return 0;
}

/* Splits `line` at tabs in place; returns the number of fields (up to max). */
static size_t split(char *line, char sep, char **fields, size_t max)
{
	size_t n = 0;
	char *p = line;
	while (n < max) {
		fields[n++] = p;
		char *q = strchr(p, sep);
		if (!q)
			break;
		*q = '\0';
		p = q + 1;
	}
	return n;
}

struct row {
	char *fields[N_COLUMNS];
	char *region_names[64];
	size_t n_regions;
	size_t line;
};

static int parse_row(struct row *row, struct sim_type *t, struct sim_err *e)
{
	char **f = row->fields;
	uint64_t gpu_count, gpu_mem, cpus, mem, disk;
	t->provider = f[0];
	t->name = f[1];
	if (!*t->provider || !*t->name)
		return sim_fail(e, DRV_EINVAL, "line %zu: empty provider or instance_type", row->line);
	if (parse_u64(f[3], &gpu_count) || gpu_count > 64)
		return sim_fail(e, DRV_EINVAL, "line %zu: gpu_count \"%s\" is not a count", row->line, f[3]);
	if (parse_u64(f[4], &gpu_mem) || parse_u64(f[6], &cpus) || parse_u64(f[7], &mem) ||
	    parse_u64(f[8], &disk) || cpus == 0 || cpus > 4096 || mem == 0)
		return sim_fail(e, DRV_EINVAL,
		                "line %zu (%s): bad gpu_memory_gib, cpus, memory_gib or disk_gib", row->line,
		                t->name);
	bool has_gpu = strcmp(f[2], "-") != 0;
	if (has_gpu != (gpu_count > 0) || (has_gpu && (gpu_mem == 0 || strcmp(f[5], "-") == 0)))
		return sim_fail(e, DRV_EINVAL,
		                "line %zu (%s): gpu_name, gpu_count, gpu_memory_gib and gpu_vendor disagree",
		                row->line, t->name);
	if (strcmp(f[9], "x86_64") != 0 && strcmp(f[9], "arm64") != 0)
		return sim_fail(e, DRV_EINVAL, "line %zu (%s): cpu_arch \"%s\" is not x86_64 or arm64",
		                row->line, t->name, f[9]);
	if (parse_price(f[10], &t->price) || t->price <= 0 || parse_price(f[11], &t->spot_price) ||
	    t->spot_price >= t->price)
		return sim_fail(
		    e, DRV_EINVAL,
		    "line %zu (%s): prices must be > 0, the spot price 0 or below the on-demand price",
		    row->line, t->name);
	t->gpu_name = has_gpu ? f[2] : NULL;
	t->gpu_vendor = has_gpu ? f[5] : NULL;
	t->gpu_count = (uint32_t)gpu_count;
	t->gpu_memory_mib = gpu_mem * 1024;
	t->cpus = (uint32_t)cpus;
	t->memory_mib = mem * 1024;
	t->disk_mib = disk * 1024;
	t->cpu_arch = f[9];
	row->n_regions = split(f[12], ',', row->region_names, 64);
	for (size_t i = 0; i < row->n_regions; i++)
		if (!*row->region_names[i])
			return sim_fail(e, DRV_EINVAL, "line %zu (%s): empty region name", row->line,
			                t->name);
	return 0;
}

static int build_offers(struct sim_catalog *cat, struct sim_err *e)
{
	size_t n = 0;
	for (size_t i = 0; i < cat->n_types; i++)
		n += cat->types[i].n_regions * (cat->types[i].spot_price > 0 ? 2 : 1);
	cat->offers = xcalloc(n, sizeof(*cat->offers), "the catalog's offers");
	size_t k = 0;
	for (size_t i = 0; i < cat->n_types; i++) {
		const struct sim_type *t = &cat->types[i];
		for (size_t j = 0; j < t->n_regions; j++) {
			struct sim_offer *o = &cat->offers[k++];
			offer_fill(o, cat, t, t->name, t->regions[j], false, t->price);
			o->no_quota = sim_type_no_quota(cat, t, t->regions[j]);
			if (t->spot_price > 0) {
				o = &cat->offers[k++];
				offer_fill(o, cat, t, t->name, t->regions[j], true, t->spot_price);
				o->no_quota = sim_type_no_quota(cat, t, t->regions[j]);
			}
		}
	}
	cat->n_offers = n;
	qsort(cat->offers, n, sizeof(*cat->offers), cmp_offer);
	for (size_t i = 0; i < n; i++)
		offer_link(&cat->offers[i]);
	return 0;
}

static int build_regions(struct sim_catalog *cat, struct row *rows, struct sim_err *e)
{
	size_t total = 0;
	for (size_t i = 0; i < cat->n_types; i++)
		total += rows[i].n_regions;
	const char **all = xcalloc(total ? total : 1, sizeof(*all), "the catalog's regions");
	cat->region_lists = xcalloc(total ? total : 1, sizeof(*cat->region_lists), "the catalog's regions");
	size_t k = 0;
	for (size_t i = 0; i < cat->n_types; i++)
		for (size_t j = 0; j < rows[i].n_regions; j++)
			all[k++] = rows[i].region_names[j];
	qsort(all, total, sizeof(*all), cmp_str);
	size_t u = 0;
	for (size_t i = 0; i < total; i++)
		if (u == 0 || strcmp(all[u - 1], all[i]) != 0)
			all[u++] = all[i];
	if (u > UINT16_MAX) {
		free(all);
		return sim_fail(e, DRV_EINVAL, "too many regions (%zu)", u);
	}
	cat->regions = all;
	cat->n_regions = u;
	cat->zones = xcalloc(u ? u : 1, sizeof(*cat->zones), "the catalog's zones");
	for (size_t r = 0; r < u; r++)
		for (int z = 0; z < 3; z++)
			cat->zones[r][z] = xasprintf("the catalog's zones", "%s%c", all[r], 'a' + z);
	k = 0;
	for (size_t i = 0; i < cat->n_types; i++) {
		cat->types[i].regions = &cat->region_lists[k];
		cat->types[i].n_regions = rows[i].n_regions;
		for (size_t j = 0; j < rows[i].n_regions; j++) {
			int r = sim_catalog_find_region(cat, rows[i].region_names[j]);
			for (size_t p = 0; p < j; p++)
				if (cat->types[i].regions[p] == r)
					return sim_fail(e, DRV_EINVAL,
					                "line %zu (%s): region %s listed twice", rows[i].line,
					                cat->types[i].name, rows[i].region_names[j]);
			cat->region_lists[k++] = (uint16_t)r;
		}
	}
	return 0;
}

int sim_catalog_parse(const char *text, size_t len, struct sim_catalog **out, struct sim_err *e)
{
	struct sim_catalog *cat = xcalloc(1, sizeof(*cat), "the catalog");
	struct row *rows = NULL;
	int rc;
	cat->text = xmalloc(len + 1, "the catalog's text");
	memcpy(cat->text, text, len);
	cat->text[len] = '\0';

	size_t max_rows = 1;
	for (size_t i = 0; i < len; i++)
		max_rows += text[i] == '\n';
	rows = xcalloc(max_rows, sizeof(*rows), "the catalog's rows");
	cat->types = xcalloc(max_rows, sizeof(*cat->types), "the catalog's instance types");

	bool header_seen = false;
	size_t line_no = 0;
	char *p = cat->text;
	while (p && *p) {
		char *line = p;
		char *nl = strchr(p, '\n');
		if (nl) {
			*nl = '\0';
			p = nl + 1;
		} else {
			p = NULL;
		}
		line_no++;
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[--l] = '\0';
		if (l == 0 || line[0] == '#')
			continue;
		if (!header_seen) {
			if (strncmp(line, "provider\tinstance_type\t", 23) != 0) {
				rc = sim_fail(
				    e, DRV_EINVAL,
				    "line %zu: expected the column header (provider, instance_type, ...)",
				    line_no);
				goto fail;
			}
			header_seen = true;
			continue;
		}
		struct row *row = &rows[cat->n_types];
		row->line = line_no;
		size_t nf = split(line, '\t', row->fields, N_COLUMNS);
		if (nf != N_COLUMNS || strchr(row->fields[N_COLUMNS - 1], '\t')) {
			rc = sim_fail(e, DRV_EINVAL, "line %zu: expected %d tab-separated columns", line_no,
			              N_COLUMNS);
			goto fail;
		}
		rc = parse_row(row, &cat->types[cat->n_types], e);
		if (rc)
			goto fail;
		cat->n_types++;
	}
	if (cat->n_types == 0) {
		rc = sim_fail(e, DRV_EINVAL, "the catalog has no instance types");
		goto fail;
	}

	cat->by_name = xcalloc(cat->n_types, sizeof(*cat->by_name), "the catalog's index");
	for (size_t i = 0; i < cat->n_types; i++)
		cat->by_name[i] = i;
	qsort_r(cat->by_name, cat->n_types, sizeof(*cat->by_name), cmp_type_name, cat);
	for (size_t i = 1; i < cat->n_types; i++)
		if (strcmp(cat->types[cat->by_name[i - 1]].name, cat->types[cat->by_name[i]].name) == 0) {
			rc = sim_fail(e, DRV_EINVAL, "instance type %s is listed twice",
			              cat->types[cat->by_name[i]].name);
			goto fail;
		}

	rc = build_regions(cat, rows, e);
	if (rc)
		goto fail;
	rc = build_offers(cat, e);
	if (rc)
		goto fail;
	free(rows);
	*out = cat;
	return 0;
fail:
	free(rows);
	sim_catalog_free(cat);
	return rc;
}

void sim_catalog_free(struct sim_catalog *cat)
{
	if (!cat)
		return;
	if (cat->zones)
		for (size_t r = 0; r < cat->n_regions; r++)
			for (int z = 0; z < 3; z++)
				free(cat->zones[r][z]);
	free(cat->zones);
	sim_offers_cache_clear(cat);
	free(cat->offers);
	free(cat->region_lists);
	free(cat->regions);
	free(cat->by_name);
	free(cat->types);
	free(cat->text);
	free(cat);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct sim_catalog *default_cat;
static struct sim_err default_err;

static void load_default(void)
{
	if (sim_catalog_parse(sim_catalog_tsv, sim_catalog_tsv_len, &default_cat, &default_err) != 0)
		default_cat = NULL;
}

const struct sim_catalog *sim_catalog_default(struct sim_err *e)
{
	pthread_once(&default_once, load_default);
	if (!default_cat && e)
		snprintf(e->msg, sizeof(e->msg), "built-in catalog: %.300s", default_err.msg);
	return default_cat;
}

const struct sim_type *sim_catalog_find_type(const struct sim_catalog *cat, const char *name)
{
	if (!name)
		return NULL;
	size_t lo = 0, hi = cat->n_types;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct sim_type *t = &cat->types[cat->by_name[mid]];
		int c = strcmp(name, t->name);
		if (c == 0)
			return t;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int sim_catalog_find_region(const struct sim_catalog *cat, const char *name)
{
	if (!name)
		return -1;
	size_t lo = 0, hi = cat->n_regions;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, cat->regions[mid]);
		if (c == 0)
			return (int)mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

bool sim_type_in_region(const struct sim_type *type, int r)
{
	for (size_t i = 0; i < type->n_regions; i++)
		if (type->regions[i] == r)
			return true;
	return false;
}

/* ---- synthetic offers ---- */

static pthread_mutex_t synth_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sim_synth *synth_list;

/*
 * Synthetic offer i of (seed): the resources of a real catalog type, one of
 * its regions, a price within +-20% of its own, and a name of its own so
 * that it forms its own capacity pool. Depends on nothing but (seed, i).
 */
static void synth_make(const struct sim_catalog *cat, int64_t seed, int64_t i, struct sim_offer *o,
                       char *name)
{
	uint64_t h = mix64((uint64_t)seed * UINT64_C(0x9e3779b97f4a7c15) + (uint64_t)i + 1);
	const struct sim_type *t = &cat->types[h % cat->n_types];
	int r = t->regions[(h >> 20) % t->n_regions];
	bool spot = t->spot_price > 0 && (h >> 28) % 3 == 0;
	double factor = 0.8 + (double)((h >> 32) % 4001) / 10000.0;
	double price = round((spot ? t->spot_price : t->price) * factor * 10000.0) / 10000.0;
	if (price < 0.0001)
		price = 0.0001;
	snprintf(name, SYNTH_NAME_MAX, "syn-%06" PRId64 "-%s", i, t->name);
	offer_fill(o, cat, t, name, r, spot, price);
}

static struct sim_synth *synth_build(const struct sim_catalog *cat, int64_t n, int64_t seed)
{
	struct sim_synth *s = xcalloc(1, sizeof(*s), "synthetic offers");
	s->n = n;
	s->seed = seed;
	s->offers = xcalloc((size_t)n ? (size_t)n : 1, sizeof(*s->offers), "synthetic offers");
	s->names = xmalloc((size_t)(n ? n : 1) * SYNTH_NAME_MAX, "the names of synthetic offers");
	for (int64_t i = 0; i < n; i++)
		synth_make(cat, seed, i, &s->offers[i], s->names + i * SYNTH_NAME_MAX);
	s->n_offers = (size_t)n;
	qsort(s->offers, s->n_offers, sizeof(*s->offers), cmp_offer);
	for (size_t i = 0; i < s->n_offers; i++)
		offer_link(&s->offers[i]);
	return s;
}

const struct sim_synth *sim_synth_get(const struct sim_catalog *cat, int64_t n, int64_t seed)
{
	pthread_mutex_lock(&synth_mu);
	struct sim_synth *s;
	for (s = synth_list; s; s = s->next)
		if (s->n == n && s->seed == seed)
			break;
	if (!s) {
		/* Built under the lock: a second caller with the same (n, seed) waits rather than builds
		 * again. */
		s = synth_build(cat, n, seed);
		s->next = synth_list;
		synth_list = s;
	}
	pthread_mutex_unlock(&synth_mu);
	return s;
}

const struct sim_offer *sim_synth_find(const struct sim_synth *s, const char *type, const char *region,
                                       bool spot)
{
	if (!s || !type || strncmp(type, "syn-", 4) != 0)
		return NULL;
	/* Offers are sorted by price, not name; synthetic sets are only searched on CreateInstance. */
	for (size_t i = 0; i < s->n_offers; i++) {
		const struct sim_offer *o = &s->offers[i];
		if (strcmp(o->offer.instance_type, type) == 0)
			return strcmp(o->offer.region, region ? region : "") == 0 && o->resources.spot == spot
			           ? o
			           : NULL;
	}
	return NULL;
}

void sim_synth_cleanup(void)
{
	sim_offers_cache_clear(NULL);
	pthread_mutex_lock(&synth_mu);
	while (synth_list) {
		struct sim_synth *s = synth_list;
		synth_list = s->next;
		free(s->offers);
		free(s->names);
		free(s);
	}
	pthread_mutex_unlock(&synth_mu);
}

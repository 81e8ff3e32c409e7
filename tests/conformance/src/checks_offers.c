/*
 * GetOffers checks: well-formed offers, every Requirements filter checked on
 * its own with a requirement derived from the driver's own unfiltered offers
 * (so the checks work for any catalog), and a large response.
 *
 * The filter rules are the protocol's (docs/PROTOCOL.md), written here again
 * on purpose: the harness must not trust the SDK's drv_offer_matches, which
 * is one of the things it checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checks.h"
#include "drover/offer_check.h"

static int get_offers(struct conf_ctx *c, const drv_requirements *req, const json_t *overlay, int timeout_ms,
                      drv_get_offers_response **out, struct drv_status *st)
{
	struct conf_bc bc;
	conf_bc_init(&bc, c->o->config, overlay, c->o->secrets, NULL);
	drv_get_offers_request rq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	rq.config = &bc.buf.msg;
	rq.requirements = (drv_requirements *)req;
	int rc = drv_host_get_offers(c->host, &rq, out, timeout_ms, st);
	conf_bc_free(&bc);
	return rc;
}

static const char *offer_label(const drv_offer *o, char *buf, size_t len)
{
	char type[96], region[96];
	snprintf(buf, len, "\"%s\" in %s%s", conf_cut(o->instance_type, 64, type, sizeof(type)),
	         o->region[0] ? conf_cut(o->region, 64, region, sizeof(region)) : "(no region)",
	         o->resources && o->resources->spot ? " (spot)" : "");
	return buf;
}

bool conf_offer_well_formed(struct conf_ctx *c, const drv_offer *o, size_t i, const char *what)
{
	char l[300], why[300], bt[96];
	if (!drv_offer_check(o, why, sizeof(why)))
		conf_fail(c, "%s: offer %zu %s: %s", what, i, offer_label(o, l, sizeof(l)), why);
	else if (c->info && c->info->type[0] && strcmp(o->backend_type, c->info->type))
		conf_fail(c, "%s: offer %zu %s has backend_type \"%s\"; GetInfo says the type is \"%s\"",
		          what, i, offer_label(o, l, sizeof(l)),
		          conf_cut(o->backend_type, 64, bt, sizeof(bt)), c->info->type);
	return !c->failed;
}

/* The driver's unfiltered offers for the base config; NULL after conf_fail/conf_skip. */
static drv_get_offers_response *unfiltered(struct conf_ctx *c)
{
	drv_get_offers_response *rs = NULL;
	struct drv_status st = {0};
	char ans[700];
	int rc = get_offers(c, NULL, NULL, c->o->call_timeout_ms, &rs, &st);
	if (rc) {
		conf_fail(c, "GetOffers(config, no requirements) answered %s; the protocol requires OK",
		          conf_answer(rc, &st, ans, sizeof(ans)));
		return NULL;
	}
	if (rs->n_offers == 0) {
		conf_skip(c, "the driver returned no offers for the config, so there is nothing to check");
		drv_response_free(&rs->base);
		return NULL;
	}
	return rs;
}

void check_offers_well_formed(struct conf_ctx *c)
{
	drv_get_offers_response *rs = unfiltered(c);
	if (!rs)
		return;
	for (size_t i = 0; i < rs->n_offers; i++)
		if (!conf_offer_well_formed(c, rs->offers[i], i, "GetOffers(config)"))
			break;
	drv_response_free(&rs->base);
}

/* ---- filters ---- */

static uint64_t gpu_total(const drv_offer *o)
{
	uint64_t n = 0;
	for (size_t i = 0; o->resources && i < o->resources->n_gpus; i++)
		n += o->resources->gpus[i]->count;
	return n;
}

static bool in_range(uint64_t v, const drv_uint_range *r)
{
	if (r->_min_case == DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN && v < r->min)
		return false;
	if (r->_max_case == DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX && v > r->max)
		return false;
	return true;
}

/* One filter: how to read an offer, how to set the requirement, whether an offer satisfies it. */
struct filter {
	const char *name;
	uint64_t (*value)(const drv_offer *o); /* range filters */
	drv_uint_range **(*slot)(drv_requirements *r);
};

static uint64_t v_cpus(const drv_offer *o)
{
	return o->resources->cpus;
}
static uint64_t v_mem(const drv_offer *o)
{
	return o->resources->memory_mib;
}
static uint64_t v_disk(const drv_offer *o)
{
	return o->resources->disk_mib;
}
static drv_uint_range **s_cpus(drv_requirements *r)
{
	return &r->cpus;
}
static drv_uint_range **s_mem(drv_requirements *r)
{
	return &r->memory_mib;
}
static drv_uint_range **s_disk(drv_requirements *r)
{
	return &r->disk_mib;
}
static drv_uint_range **s_gpu_count(drv_requirements *r)
{
	return &r->gpu_count;
}
static drv_uint_range **s_gpu_mem(drv_requirements *r)
{
	return &r->gpu_memory_mib;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The protocol's rule for one filter (see the file comment). */
static bool satisfies(const drv_offer *o, const drv_requirements *r)
{
	const drv_resources *res = o->resources;
	if (!res)
		return false;
	if (r->cpus && !in_range(res->cpus, r->cpus))
		return false;
	if (r->memory_mib && !in_range(res->memory_mib, r->memory_mib))
		return false;
	if (r->disk_mib && !in_range(res->disk_mib, r->disk_mib))
		return false;
	if (r->gpu_count && !in_range(gpu_total(o), r->gpu_count))
		return false;
	if (r->gpu_memory_mib) {
		if (res->n_gpus == 0 && r->gpu_memory_mib->_min_case && r->gpu_memory_mib->min > 0)
			return false;
		for (size_t i = 0; i < res->n_gpus; i++)
			if (!in_range(res->gpus[i]->memory_mib, r->gpu_memory_mib))
				return false;
	}
	if (r->n_gpu_names) {
		if (res->n_gpus == 0)
			return false;
		for (size_t i = 0; i < res->n_gpus; i++) {
			bool any = false;
			for (size_t k = 0; k < r->n_gpu_names; k++)
				any = any || strcasecmp(res->gpus[i]->name, r->gpu_names[k]) == 0;
			if (!any)
				return false;
		}
	}
	if (r->spot == DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND && res->spot)
		return false;
	if (r->spot == DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT && !res->spot)
		return false;
	if (r->_max_price_case && !(o->price_per_hour <= r->max_price))
		return false;
	if (r->n_regions) {
		bool any = false;
		for (size_t k = 0; k < r->n_regions; k++)
			any = any || strcmp(o->region, r->regions[k]) == 0;
		if (!any)
			return false;
	}
	if (r->n_cpu_archs) {
		bool any = false;
		for (size_t k = 0; k < r->n_cpu_archs; k++)
			any = any || strcmp(res->cpu_arch, r->cpu_archs[k]) == 0;
		if (!any)
			return false;
	}
	return true;
}

static void describe_offer(const drv_offer *o, char *buf, size_t len)
{
	const drv_resources *r = o->resources;
	char type[96], region[96], arch[96], gpu[96];
	/* %g, not %f: a price of 1e308 must not print as 309 digits. */
	size_t off = (size_t)snprintf(
	    buf, len, "\"%s\" in %s: %u cpus, %llu MiB, disk %llu MiB, %s, $%.6g/h, arch \"%s\"",
	    conf_cut(o->instance_type, 64, type, sizeof(type)),
	    conf_cut(o->region, 64, region, sizeof(region)), r->cpus, (unsigned long long)r->memory_mib,
	    (unsigned long long)r->disk_mib, r->spot ? "spot" : "on-demand", o->price_per_hour,
	    conf_cut(r->cpu_arch, 64, arch, sizeof(arch)));
	for (size_t i = 0; i < r->n_gpus && i < 4 && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, ", %ux %s %llu MiB", r->gpus[i]->count,
		                        conf_cut(r->gpus[i]->name, 64, gpu, sizeof(gpu)),
		                        (unsigned long long)r->gpus[i]->memory_mib);
}

/*
 * Runs GetOffers with `req` (describe: its text) and checks every returned
 * offer satisfies it, and that the driver does not return nothing when some
 * of its unfiltered offers match.
 */
static void expect_filtered(struct conf_ctx *c, const drv_get_offers_response *all,
                            const drv_requirements *req, const char *describe)
{
	size_t expected = 0;
	for (size_t i = 0; i < all->n_offers; i++)
		expected += satisfies(all->offers[i], req);
	drv_get_offers_response *rs = NULL;
	struct drv_status st = {0};
	char ans[700];
	int rc = get_offers(c, req, NULL, c->o->call_timeout_ms, &rs, &st);
	if (rc) {
		conf_fail(c, "GetOffers(%s) answered %s; the protocol requires OK", describe,
		          conf_answer(rc, &st, ans, sizeof(ans)));
		return;
	}
	for (size_t i = 0; i < rs->n_offers; i++) {
		if (!rs->offers[i]->resources) {
			conf_fail(c, "GetOffers(%s) returned offer %zu without resources", describe, i);
			break;
		}
		if (!satisfies(rs->offers[i], req)) {
			char d[600];
			describe_offer(rs->offers[i], d, sizeof(d));
			conf_fail(c,
			          "GetOffers(%s) returned offer %s, outside the requested filter; every "
			          "returned offer must satisfy every filter",
			          describe, d);
			break;
		}
	}
	if (!c->failed && expected && rs->n_offers == 0)
		conf_fail(c,
		          "GetOffers(%s) returned no offers, though %zu of the driver's unfiltered offers "
		          "satisfy it",
		          describe, expected);
	conf_note(c, "GetOffers(%s): %zu offers (%zu of the unfiltered ones match)", describe, rs->n_offers,
	          expected);
	drv_response_free(&rs->base);
}

/*
 * A range filter: from the distinct values among the unfiltered offers,
 * the range [second lowest, second highest] excludes offers at both ends
 * when there are enough distinct values.
 */
static void range_filter(struct conf_ctx *c, const struct filter *f)
{
	drv_get_offers_response *all = unfiltered(c);
	if (!all)
		return;
	uint64_t *v = calloc(all->n_offers, sizeof(*v));
	size_t n = 0;
	for (size_t i = 0; v && i < all->n_offers; i++)
		if (all->offers[i]->resources)
			v[n++] = f->value(all->offers[i]);
	qsort(v, n, sizeof(*v), cmp_u64);
	size_t d = 0;
	for (size_t i = 0; i < n; i++)
		if (!d || v[d - 1] != v[i])
			v[d++] = v[i];
	drv_uint_range r = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	if (d >= 3) {
		r._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
		r.min = v[1];
		r._max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
		r.max = v[d - 2];
	} else if (d >= 1) {
		r._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
		r.min = v[d - 1];
	}
	free(v);
	if (d) {
		drv_requirements req = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
		*f->slot(&req) = &r;
		char desc[200];
		if (r._max_case)
			snprintf(desc, sizeof(desc), "%s.min=%llu, %s.max=%llu", f->name,
			         (unsigned long long)r.min, f->name, (unsigned long long)r.max);
		else
			snprintf(desc, sizeof(desc), "%s.min=%llu", f->name, (unsigned long long)r.min);
		expect_filtered(c, all, &req, desc);
		/* An upper bound alone, below the largest value. */
		if (!c->failed && d >= 2) {
			drv_uint_range r2 = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
			r2._max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
			r2.max = r._max_case ? r.max : r.min - 1;
			*f->slot(&req) = &r2;
			snprintf(desc, sizeof(desc), "%s.max=%llu", f->name, (unsigned long long)r2.max);
			expect_filtered(c, all, &req, desc);
		}
	}
	drv_response_free(&all->base);
}

void check_offers_filter_cpus(struct conf_ctx *c)
{
	static const struct filter f = {"cpus", v_cpus, s_cpus};
	range_filter(c, &f);
}

void check_offers_filter_memory(struct conf_ctx *c)
{
	static const struct filter f = {"memory_mib", v_mem, s_mem};
	range_filter(c, &f);
}

void check_offers_filter_disk(struct conf_ctx *c)
{
	static const struct filter f = {"disk_mib", v_disk, s_disk};
	range_filter(c, &f);
}

void check_offers_filter_gpu_count(struct conf_ctx *c)
{
	static const struct filter f = {"gpu_count", gpu_total, s_gpu_count};
	range_filter(c, &f);
}

static uint64_t v_gpu_mem_max(const drv_offer *o)
{
	uint64_t m = 0;
	for (size_t i = 0; i < o->resources->n_gpus; i++)
		if (o->resources->gpus[i]->memory_mib > m)
			m = o->resources->gpus[i]->memory_mib;
	return m;
}

void check_offers_filter_gpu_memory(struct conf_ctx *c)
{
	static const struct filter f = {"gpu_memory_mib", v_gpu_mem_max, s_gpu_mem};
	range_filter(c, &f);
}

/*
 * The most frequent string among the offers, by `get` (case-insensitive);
 * NULL when none. Candidates are the first distinct values met, which is
 * plenty for any catalog. Borrowed from `all`.
 */
static const char *most_common(const drv_get_offers_response *all,
                               const char *(*get)(const drv_offer *, size_t), size_t per_offer)
{
	enum { MAX_CANDIDATES = 64 };
	const char *cand[MAX_CANDIDATES];
	size_t count[MAX_CANDIDATES] = {0}, n = 0;
	for (size_t i = 0; i < all->n_offers; i++) {
		for (size_t k = 0; k < per_offer; k++) {
			const char *s = get(all->offers[i], k);
			if (!s || !*s)
				continue;
			size_t j = 0;
			while (j < n && strcasecmp(cand[j], s))
				j++;
			if (j == n && n < MAX_CANDIDATES)
				cand[n++] = s;
			if (j < n)
				count[j]++;
		}
	}
	const char *best = NULL;
	size_t best_n = 0;
	for (size_t j = 0; j < n; j++)
		if (count[j] > best_n) {
			best = cand[j];
			best_n = count[j];
		}
	return best;
}

static const char *g_gpu_name(const drv_offer *o, size_t k)
{
	return o->resources && k < o->resources->n_gpus ? o->resources->gpus[k]->name : NULL;
}
static const char *g_region(const drv_offer *o, size_t k)
{
	return o->region;
}
static const char *g_arch(const drv_offer *o, size_t k)
{
	return o->resources ? o->resources->cpu_arch : NULL;
}

static void string_filter(struct conf_ctx *c, const char *name, const char *(*get)(const drv_offer *, size_t),
                          size_t per_offer, bool lower)
{
	drv_get_offers_response *all = unfiltered(c);
	if (!all)
		return;
	const char *v = most_common(all, get, per_offer);
	if (!v) {
		conf_skip(c, "none of the driver's offers has a value for the %s filter", name);
	} else {
		char value[200];
		snprintf(value, sizeof(value), "%s", v);
		/* GPU names are case-insensitive by protocol: ask in lower case to check that too. */
		for (char *p = value; lower && *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		char *list[1] = {value};
		drv_requirements req = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
		if (strcmp(name, "gpu_names") == 0) {
			req.n_gpu_names = 1;
			req.gpu_names = list;
		} else if (strcmp(name, "regions") == 0) {
			req.n_regions = 1;
			req.regions = list;
		} else {
			req.n_cpu_archs = 1;
			req.cpu_archs = list;
		}
		char desc[300];
		snprintf(desc, sizeof(desc), "%s=[\"%s\"]", name, value);
		expect_filtered(c, all, &req, desc);
	}
	drv_response_free(&all->base);
}

void check_offers_filter_gpu_names(struct conf_ctx *c)
{
	string_filter(c, "gpu_names", g_gpu_name, 8, true);
}

void check_offers_filter_regions(struct conf_ctx *c)
{
	string_filter(c, "regions", g_region, 1, false);
}

void check_offers_filter_cpu_archs(struct conf_ctx *c)
{
	string_filter(c, "cpu_archs", g_arch, 1, false);
}

void check_offers_filter_spot(struct conf_ctx *c)
{
	drv_get_offers_response *all = unfiltered(c);
	if (!all)
		return;
	drv_requirements req = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
	req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND;
	expect_filtered(c, all, &req, "spot=ON_DEMAND");
	if (!c->failed) {
		req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT;
		expect_filtered(c, all, &req, "spot=SPOT");
	}
	drv_response_free(&all->base);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

void check_offers_filter_max_price(struct conf_ctx *c)
{
	drv_get_offers_response *all = unfiltered(c);
	if (!all)
		return;
	double *p = calloc(all->n_offers, sizeof(*p));
	if (p) {
		for (size_t i = 0; i < all->n_offers; i++)
			p[i] = all->offers[i]->price_per_hour;
		qsort(p, all->n_offers, sizeof(*p), cmp_double);
		drv_requirements req = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
		req._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
		req.max_price = p[all->n_offers / 2];
		char desc[100];
		snprintf(desc, sizeof(desc), "max_price=%g", req.max_price);
		expect_filtered(c, all, &req, desc);
		free(p);
	}
	drv_response_free(&all->base);
}

void check_offers_large_response(struct conf_ctx *c)
{
	if (!c->o->large_offers_config) {
		conf_skip(c, "params.large_offers_config is not set in --config");
		return;
	}
	drv_get_offers_response *rs = NULL;
	struct drv_status st = {0};
	char ans[700];
	double t0 = conf_now_ms();
	int rc = get_offers(c, NULL, c->o->large_offers_config, c->o->call_timeout_ms, &rs, &st);
	double ms = conf_now_ms() - t0;
	if (rc) {
		conf_fail(c,
		          "GetOffers(params.large_offers_config) answered %s after %.0f ms; the protocol "
		          "requires large catalogs to work",
		          conf_answer(rc, &st, ans, sizeof(ans)), ms);
		return;
	}
	if ((int64_t)rs->n_offers < c->o->large_offers_min)
		conf_fail(c,
		          "GetOffers(params.large_offers_config) returned %zu offers; "
		          "params.large_offers_min expects at least %lld",
		          rs->n_offers, (long long)c->o->large_offers_min);
	for (size_t i = 0; i < rs->n_offers && !c->failed; i++)
		conf_offer_well_formed(c, rs->offers[i], i, "GetOffers(params.large_offers_config)");
	conf_note(c, "%zu offers in %.0f ms", rs->n_offers, ms);
	drv_response_free(&rs->base);
}

drv_get_offers_response *conf_pick_offer(struct conf_ctx *c, drv_offer **offer)
{
	if (!conf_has(c, DRV_FEATURE_OFFERS)) {
		conf_skip(c, "driver does not advertise OFFERS, needed to choose the offer to create from");
		return NULL;
	}
	drv_requirements req;
	char err[300];
	if (conf_requirements_from_json(c->o->offer_requirements ? c->o->offer_requirements : json_object(),
	                                &req, err, sizeof(err))) {
		conf_fail(c, "%s", err);
		conf_requirements_free(&req);
		return NULL;
	}
	drv_get_offers_response *rs = NULL;
	struct drv_status st = {0};
	char ans[700];
	int rc = conf_has(c, DRV_FEATURE_OFFERS) ? get_offers(c, &req, NULL, c->o->call_timeout_ms, &rs, &st)
	                                         : DRV_EUNIMPLEMENTED;
	conf_requirements_free(&req);
	if (rc) {
		conf_fail(c,
		          "GetOffers(params.offer_requirements) answered %s; an offer is needed to create an "
		          "instance",
		          conf_answer(rc, &st, ans, sizeof(ans)));
		return NULL;
	}
	drv_offer *best = NULL;
	for (size_t i = 0; i < rs->n_offers; i++) {
		drv_offer *o = rs->offers[i];
		if (o->availability == DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE &&
		    (!best || o->price_per_hour < best->price_per_hour))
			best = o;
	}
	if (!best) {
		conf_fail(c,
		          "GetOffers(params.offer_requirements) returned %zu offers, none AVAILABLE; set "
		          "params.offer_requirements to a cheap available offer",
		          rs->n_offers);
		drv_response_free(&rs->base);
		return NULL;
	}
	*offer = best;
	return rs;
}

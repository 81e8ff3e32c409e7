/*
 * GetOffers: filter the precomputed offers (catalog and synthetic, both
 * sorted by price), merge them, and mark pools without capacity.
 *
 * The response copies each drv_offer by value into one arena block and
 * shares everything it points to with the catalog, so 1,000 offers cost two
 * arena allocations and no string copies. The SDK packs the answer like
 * any driver's.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "drover/driver.h"
#include "sim_core.h"
#include "xalloc.h"

struct pool_count {
	uint64_t slot;
	int64_t live;
};

static int cmp_pool(const void *a, const void *b)
{
	uint64_t x = ((const struct pool_count *)a)->slot, y = ((const struct pool_count *)b)->slot;
	return x < y ? -1 : x > y;
}

int sim_config_check_regions(const struct sim_catalog *cat, const struct sim_config *cfg, struct sim_err *e)
{
	for (size_t i = 0; i < cfg->n_regions; i++)
		if (sim_catalog_find_region(cat, cfg->regions[i]) < 0)
			return sim_fail(e, DRV_EINVAL, "config regions[%zu]: unknown region \"%s\"", i,
			                cfg->regions[i]);
	return 0;
}

/*
 * Live instances per capacity pool, sorted by slot, from the arena. Taken
 * under the state's lock; the offers are then marked without holding it.
 */
static void count_pools(struct sim_state *st, struct sim_arena *a, struct pool_count **out, size_t *n_out)
{
	sim_state_lock(st);
	size_t live = 0;
	/* Instances in a reservation use reserved capacity, not the pools offers describe. */
	for (size_t i = 0; i < st->instances.n; i++) {
		const struct sim_instance *in = st->instances.items[i];
		live += !in->terminated && !*in->reservation;
	}
	struct pool_count *pools = NULL;
	size_t n = 0;
	if (live) {
		pools = sim_arena_alloc(a, live * sizeof(*pools));
		for (size_t i = 0; i < st->instances.n; i++) {
			const struct sim_instance *in = st->instances.items[i];
			if (!in->terminated && !*in->reservation)
				pools[n++] =
				    (struct pool_count){sim_slot_hash(in->instance_type, in->region), 1};
		}
	}
	sim_state_unlock(st);
	if (n)
		qsort(pools, n, sizeof(*pools), cmp_pool);
	size_t u = 0;
	for (size_t i = 0; i < n; i++) {
		if (u && pools[u - 1].slot == pools[i].slot)
			pools[u - 1].live++;
		else
			pools[u++] = pools[i];
	}
	*out = pools;
	*n_out = u;
}

static int64_t pool_live(const struct pool_count *pools, size_t n, uint64_t slot)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (pools[mid].slot == slot)
			return pools[mid].live;
		if (pools[mid].slot < slot)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

struct filter {
	const drv_requirements *req;
	const struct pool_count *pools;
	size_t n_pools;
	int64_t capacity;
};

/* The offer's availability for this state. */
static int availability(const struct filter *f, const struct sim_offer *o)
{
	if (o->no_quota)
		return DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NO_QUOTA;
	if (pool_live(f->pools, f->n_pools, o->slot) >= f->capacity)
		return DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NOT_AVAILABLE;
	return o->offer.availability;
}

/* ---- candidates: the offers of a config's regions, kept between calls ---- */

/*
 * The offers of one (catalog, synthetic set, regions) in price order,
 * catalog and synthetic merged. They are the same for every call with that
 * config, so they are kept after the first: a call then filters its ~1,000
 * candidates instead of walking every offer of every region (most of them
 * elsewhere) through memory. A few configs at most in practice; past
 * MAX_CACHED, or with more regions than a mask holds, each call merges anew.
 */
struct candidates {
	const struct sim_catalog *cat;
	const struct sim_synth *syn; /* NULL: the catalog's offers only */
	uint64_t regions;            /* bit r: catalog region r */
	const struct sim_offer **offers;
	size_t n;
	struct candidates *next;
};

#define MAX_CACHED 64

static pthread_mutex_t cand_mu = PTHREAD_MUTEX_INITIALIZER;
static struct candidates *cand_list;
static size_t n_cached;

/* Merges the offers of the regions in region_ok. */
static struct candidates *candidates_build(const struct sim_catalog *cat, const struct sim_synth *syn,
                                           const bool *region_ok)
{
	size_t n_syn = syn ? syn->n_offers : 0;
	struct candidates *c = xcalloc(1, sizeof(*c), "a list of candidate offers");
	const struct sim_offer **v =
	    xmalloc((cat->n_offers + n_syn + 1) * sizeof(*v), "a list of candidate offers");
	/* Merge of two price-sorted lists keeps the whole answer sorted by price. */
	size_t i = 0, j = 0, n = 0;
	while (i < cat->n_offers || j < n_syn) {
		const struct sim_offer *o;
		if (j >= n_syn || (i < cat->n_offers && cat->offers[i].offer.price_per_hour <=
		                                            syn->offers[j].offer.price_per_hour))
			o = &cat->offers[i++];
		else
			o = &syn->offers[j++];
		if (region_ok[o->region_idx])
			v[n++] = o;
	}
	c->cat = cat;
	c->syn = syn;
	c->offers = v;
	c->n = n;
	return c;
}

static void candidates_free(struct candidates *c)
{
	if (c) {
		free(c->offers);
		free(c);
	}
}

/*
 * The candidates of a config: kept ones (*own false), or a list made for
 * this call that the caller frees (*own true).
 */
static const struct candidates *candidates_get(const struct sim_catalog *cat, const struct sim_synth *syn,
                                               const bool *region_ok, bool *own)
{
	uint64_t mask = 0;
	bool cacheable = cat->n_regions <= 64;
	for (size_t r = 0; cacheable && r < cat->n_regions; r++)
		if (region_ok[r])
			mask |= UINT64_C(1) << r;
	*own = false;
	if (cacheable) {
		pthread_mutex_lock(&cand_mu);
		for (struct candidates *c = cand_list; c; c = c->next)
			if (c->cat == cat && c->syn == syn && c->regions == mask) {
				pthread_mutex_unlock(&cand_mu);
				return c;
			}
		pthread_mutex_unlock(&cand_mu);
	}
	struct candidates *c = candidates_build(cat, syn, region_ok);
	c->regions = mask;
	if (cacheable) {
		pthread_mutex_lock(&cand_mu);
		/* Another call may have built the same list meanwhile: either is right, both are kept. */
		if (n_cached < MAX_CACHED) {
			c->next = cand_list;
			cand_list = c;
			n_cached++;
			pthread_mutex_unlock(&cand_mu);
			return c;
		}
		pthread_mutex_unlock(&cand_mu);
	}
	*own = true;
	return c;
}

void sim_offers_cache_clear(const struct sim_catalog *cat)
{
	pthread_mutex_lock(&cand_mu);
	for (struct candidates **pp = &cand_list; *pp;) {
		struct candidates *c = *pp;
		if (cat && c->cat != cat) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		candidates_free(c);
		n_cached--;
	}
	pthread_mutex_unlock(&cand_mu);
}

/*
 * The offers this call answers, sorted by price, in *kept (malloc'd, the
 * caller frees it), and the filter that chose them (its arrays are in `a`).
 */
static int collect(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                   const drv_requirements *req, struct sim_arena *a, struct filter *f,
                   const struct sim_offer ***kept_out, size_t *n_out, struct sim_err *e)
{
	int rc = sim_config_check_regions(cat, cfg, e);
	if (rc)
		return rc;
	const struct sim_synth *syn = NULL;
	if (cfg->synthetic_offers > 0)
		syn = sim_synth_get(cat, cfg->synthetic_offers, cfg->seed);
	bool *region_ok = sim_arena_alloc(a, cat->n_regions * sizeof(bool));
	if (cfg->n_regions == 0)
		memset(region_ok, 1, cat->n_regions * sizeof(bool));
	for (size_t i = 0; i < cfg->n_regions; i++)
		region_ok[sim_catalog_find_region(cat, cfg->regions[i])] = true;

	*f = (struct filter){.req = req, .capacity = cfg->capacity};
	struct pool_count *pools;
	count_pools(st, a, &pools, &f->n_pools);
	f->pools = pools;

	bool own;
	const struct candidates *c = candidates_get(cat, syn, region_ok, &own);
	/*
	 * The kept offers are collected first (pointers in a scratch array) and
	 * copied into an arena block of exactly their number: the arena zeroes
	 * what it gives, and sizing the block for every candidate spent more
	 * time in memset than in the filter.
	 */
	const struct sim_offer **kept = xmalloc((c->n + 1) * sizeof(*kept), "the offers of an answer");
	size_t n = 0;
	for (size_t i = 0; i < c->n; i++)
		if (drv_offer_matches(&c->offers[i]->offer, req))
			kept[n++] = c->offers[i];
	if (own)
		candidates_free((struct candidates *)c);
	*kept_out = kept;
	*n_out = n;
	return 0;
}

int sim_offers_get(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                   const drv_requirements *req, struct sim_arena *a, drv_get_offers_response *resp,
                   struct sim_err *e)
{
	/* Initialised although collect() sets them on success: GCC cannot see that once it inlines it. */
	struct filter f = {0};
	const struct sim_offer **kept = NULL;
	size_t n = 0;
	int rc = collect(cat, st, cfg, req, a, &f, &kept, &n, e);
	if (rc)
		return rc;
	drv_offer *block = sim_arena_alloc(a, (n ? n : 1) * sizeof(*block));
	drv_offer **ptrs = sim_arena_alloc(a, (n ? n : 1) * sizeof(*ptrs));
	for (size_t k = 0; k < n; k++) {
		block[k] = kept[k]->offer;
		block[k].availability = availability(&f, kept[k]);
		ptrs[k] = &block[k];
	}
	free(kept);
	resp->offers = ptrs;
	resp->n_offers = n;
	return 0;
}

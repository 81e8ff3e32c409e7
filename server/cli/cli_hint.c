/*
 * Why a query found no offers, for `offer` and `instance create`: a project
 * without backends, a GPU name no backend offers (with the closest name that
 * one does), or the filter that emptied the result. Runs only after an empty
 * answer, so a query that finds offers costs nothing more.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

#define FREE_MSG(m) drv_response_free((ProtobufCMessage *)(m))

/* Case-insensitive edit distance of two short names (longer ones are cut at 63 bytes). */
static size_t distance(const char *a, const char *b)
{
	size_t la = strnlen(a, 63), lb = strnlen(b, 63);
	size_t row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			int ca = a[i - 1] >= 'a' && a[i - 1] <= 'z' ? a[i - 1] - 32 : a[i - 1];
			int cb = b[j - 1] >= 'a' && b[j - 1] <= 'z' ? b[j - 1] - 32 : b[j - 1];
			size_t best = diag + (ca != cb);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* One GetOffers of at most `page` offers; NULL (and no message) when it fails. */
static Drover__Api__V1__GetOffersResponse *ask(struct cli_ctx *c, Drover__Compute__V1__Requirements *req,
                                               char **features, size_t n_features, uint32_t page)
{
	Drover__Api__V1__GetOffersRequest q = DROVER__API__V1__GET_OFFERS_REQUEST__INIT;
	Drover__Api__V1__GetOffersResponse *resp = NULL;
	q.project = (char *)c->project;
	q.requirements = req;
	q.required_features = features;
	q.n_required_features = n_features;
	q.limit = page;
	q.page_size = page;
	bool quiet = c->quiet;
	c->quiet = true;
	if (cli_call(c, "GetOffers", &q.base, (ProtobufCMessage **)&resp))
		resp = NULL;
	c->quiet = quiet;
	return resp;
}

void cli_print_no_backends(const char *project)
{
	fprintf(stderr,
	        "drover: project %s has no backends: add one with\n"
	        "  drover backend add --project %s --name NAME --type TYPE [--config JSON]\n"
	        "where TYPE is a driver type of `drover driver list`\n",
	        project, project);
}

/*
 * The GPU names of `r` that no offer of the unfiltered query has: each gets
 * "no GPU named X; did you mean Y?" (Y the closest offered name). True when
 * there was one.
 */
static bool unknown_gpus(const char *project, const struct cli_req *r,
                         const Drover__Api__V1__GetOffersResponse *all)
{
	bool any = false;
	for (size_t k = 0; k < r->n_gpu_names; k++) {
		const char *want = r->gpu_names[k], *best = NULL;
		size_t best_d = (size_t)-1;
		bool found = false;
		for (size_t i = 0; i < all->n_offers && !found; i++) {
			const Drover__Compute__V1__Offer *of = all->offers[i]->offer;
			if (!of || !of->resources)
				continue;
			for (size_t g = 0; g < of->resources->n_gpus; g++) {
				const char *name = of->resources->gpus[g]->name;
				if (strcasecmp(name, want) == 0) {
					found = true;
					break;
				}
				size_t d = distance(want, name);
				if (d < best_d) {
					best_d = d;
					best = name;
				}
			}
		}
		if (found)
			continue;
		any = true;
		/* A name too far from every offered one is no suggestion worth making. */
		if (best && best_d <= (strlen(want) + 2) / 3 + 1)
			fprintf(stderr, "drover: no GPU named %s; did you mean %s?\n", want, best);
		else if (best)
			fprintf(stderr, "drover: no GPU named %s; the backends offer e.g. %s\n", want, best);
		else
			fprintf(stderr, "drover: no GPU named %s: no backend of project %s offers GPUs\n",
			        want, project);
	}
	return any;
}

int cli_explain_no_offers(struct cli_ctx *c, const struct cli_req *r)
{
	/* A create can fail for want of capacity while offers match: nothing to explain then. */
	Drover__Api__V1__GetOffersResponse *same =
	    ask(c, (Drover__Compute__V1__Requirements *)&r->req, r->features, r->n_features, 1);
	bool matched = same && same->n_offers;
	if (same)
		FREE_MSG(same);
	if (matched)
		return CLI_EXIT_OK;
	Drover__Compute__V1__Requirements none = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
	none.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_AUTO;
	/* One page of everything the backends offer: enough to know their GPU names. */
	Drover__Api__V1__GetOffersResponse *all = ask(c, &none, NULL, 0, 20000);
	if (!all)
		return CLI_EXIT_OK;
	if (!all->n_backends) {
		FREE_MSG(all);
		cli_print_no_backends(c->project);
		return CLI_EXIT_OK;
	}
	/*
	 * A backend that did not answer may be the one offering the name, or the
	 * offers the filters would keep: no guess is made then, the failure is
	 * the reason given.
	 */
	bool failed = false;
	for (size_t i = 0; i < all->n_backends; i++) {
		const Drover__Api__V1__BackendResult *b = all->backends[i];
		if (b->code[0] && strcmp(b->code, "OK") != 0 && strcmp(b->code, "UNIMPLEMENTED") != 0) {
			fprintf(stderr,
			        "drover: no offers: backend %s did not answer (%s); its offers are unknown\n",
			        b->backend, b->code);
			failed = true;
		}
	}
	if (failed) {
		FREE_MSG(all);
		return CLI_EXIT_OK;
	}
	if (unknown_gpus(c->project, r, all)) {
		FREE_MSG(all);
		return CLI_EXIT_USAGE;
	}
	bool offers_at_all = all->n_offers > 0;
	FREE_MSG(all);
	if (!offers_at_all) {
		fprintf(stderr,
		        "drover: no backend of project %s offers anything right now (whatever the "
		        "requirements)\n",
		        c->project);
		return CLI_EXIT_OK;
	}

	/*
	 * Each filter in turn is dropped and the query asked again for one
	 * offer: a filter whose removal finds offers is one that emptied the
	 * result. Only the filters given are tried, so this is a few calls.
	 */
	const Drover__Compute__V1__Requirements *req = &r->req;
	struct {
		const char *what;
		bool set;
	} f[] = {
	    {"--gpu (name)", req->n_gpu_names > 0},
	    {"--gpu (count)", req->gpu_count != NULL},
	    {"--gpu-memory", req->gpu_memory_mib != NULL},
	    {"--cpus", req->cpus != NULL},
	    {"--memory", req->memory_mib != NULL},
	    {"--disk", req->disk_mib != NULL},
	    {req->spot == DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT
	         ? "--spot"
	         : "on-demand (the default; "
	           "--spot-policy auto allows spot)",
	     req->spot != DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_AUTO},
	    {"--max-price", req->_max_price_case != DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE__NOT_SET},
	    {"--region", req->n_regions > 0},
	    {"--arch", req->n_cpu_archs > 0},
	    {"--feature", r->n_features > 0},
	};
	bool named = false;
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (!f[i].set)
			continue;
		Drover__Compute__V1__Requirements q = *req;
		char **features = r->features;
		size_t n_features = r->n_features;
		switch (i) {
		case 0:
			q.n_gpu_names = 0;
			break;
		case 1:
			q.gpu_count = NULL;
			break;
		case 2:
			q.gpu_memory_mib = NULL;
			break;
		case 3:
			q.cpus = NULL;
			break;
		case 4:
			q.memory_mib = NULL;
			break;
		case 5:
			q.disk_mib = NULL;
			break;
		case 6:
			q.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_AUTO;
			break;
		case 7:
			q._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE__NOT_SET;
			break;
		case 8:
			q.n_regions = 0;
			break;
		case 9:
			q.n_cpu_archs = 0;
			break;
		default:
			n_features = 0;
			break;
		}
		Drover__Api__V1__GetOffersResponse *resp = ask(c, &q, features, n_features, 1);
		if (!resp)
			continue;
		if (resp->n_offers) {
			fprintf(stderr, "drover: no offers: %s emptied the result (without it, %llu match)\n",
			        f[i].what, (unsigned long long)resp->total_offers);
			named = true;
		}
		FREE_MSG(resp);
	}
	if (!named)
		fprintf(stderr, "drover: no offers: no single filter empties the result; together they "
		                "exclude every offer\n");
	return CLI_EXIT_OK;
}

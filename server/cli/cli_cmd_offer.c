/* `drover offer`: one GetOffers fan-out, printed cheapest first with the failing backends beside it. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FREE_MSG(m) drv_response_free((ProtobufCMessage *)(m))

static const char offer_help_head[] =
    "Usage: drover offer [REQUIREMENTS] [--limit N | --all] [--project P] [--json]\n"
    "\n"
    "Asks every backend of the project for offers at once (each within the\n"
    "server's per-driver deadline), and prints the matching ones cheapest first.\n"
    "A backend that fails or is too slow is reported on stderr beside the\n"
    "results; it never fails the query (exit 0). The 50 cheapest are shown;\n"
    "--limit N shows the N cheapest, --all every one (fetched page by page).\n"
    "\n";

#define OFFER_DEFAULT_SHOWN 50
#define OFFER_PAGE_MAX 20000

/*
 * The pages of one query, `want` offers at most (0: all), as one answer:
 * the first page's, with the offers of every page. The pages stay alive
 * (their offers are borrowed) until offer_pages_free().
 */
struct offer_pages {
	Drover__Api__V1__GetOffersResponse **pages;
	size_t n_pages;
	Drover__Api__V1__GetOffersResponse all;
};

static void offer_pages_free(struct offer_pages *p)
{
	for (size_t i = 0; i < p->n_pages; i++)
		FREE_MSG(p->pages[i]);
	free(p->pages);
	free(p->all.offers);
}

static int fetch_offers(struct cli_ctx *c, Drover__Api__V1__GetOffersRequest *req, size_t want,
                        struct offer_pages *p)
{
	char token[64] = "";
	int rc;

	memset(p, 0, sizeof(*p));
	do {
		Drover__Api__V1__GetOffersResponse *r, **pages;
		size_t left = want ? want - p->all.n_offers : OFFER_PAGE_MAX;
		req->page_size = (uint32_t)(left < OFFER_PAGE_MAX ? left : OFFER_PAGE_MAX);
		req->page_token = token;
		if ((rc = cli_call(c, "GetOffers", &req->base, (ProtobufCMessage **)&r)))
			return rc;
		pages = realloc(p->pages, (p->n_pages + 1) * sizeof(*pages));
		Drover__Api__V1__BackendOffer **offers =
		    realloc(p->all.offers, (p->all.n_offers + r->n_offers + 1) * sizeof(*offers));
		if (pages)
			p->pages = pages;
		if (offers)
			p->all.offers = offers;
		if (!pages || !offers) {
			FREE_MSG(r);
			fprintf(stderr, "drover: out of memory\n");
			return CLI_EXIT_REFUSED;
		}
		p->pages[p->n_pages++] = r;
		memcpy(p->all.offers + p->all.n_offers, r->offers, r->n_offers * sizeof(*offers));
		p->all.n_offers += r->n_offers;
		/* A page token is short; a longer one is not from droverd and is not followed. */
		snprintf(token, sizeof(token), "%s",
		         strlen(r->next_page_token) < sizeof(token) ? r->next_page_token : "");
	} while (token[0] && (!want || p->all.n_offers < want));
	p->all = (Drover__Api__V1__GetOffersResponse){
	    .base = p->pages[0]->base,
	    .offers = p->all.offers,
	    .n_offers = p->all.n_offers,
	    .backends = p->pages[0]->backends,
	    .n_backends = p->pages[0]->n_backends,
	    .total_offers = p->pages[0]->total_offers,
	    .next_page_token = (char *)"",
	};
	p->all.base.n_unknown_fields = 0;
	p->all.base.unknown_fields = NULL;
	return 0;
}

int cli_cmd_offer(struct cli_ctx *c, int argc, char **argv)
{
	enum { O_LIMIT = 400, O_ALL };
	static const struct option o[] = {CLI_COMMON_OPTIONS,
	                                  CLI_REQ_OPTIONS,
	                                  {"limit", required_argument, NULL, O_LIMIT},
	                                  {"all", no_argument, NULL, O_ALL},
	                                  {NULL, 0, NULL, 0}};
	Drover__Api__V1__GetOffersRequest req = DROVER__API__V1__GET_OFFERS_REQUEST__INIT;
	struct offer_pages pages = {0};
	struct cli_req r;
	size_t want = OFFER_DEFAULT_SHOWN;
	bool all = false, limited = false;
	uint64_t v;
	int opt, rc = 0;

	cli_req_init(&r);
	optind = 0;
	while ((opt = getopt_long(argc, argv, "h", o, NULL)) != -1) {
		int k = cli_req_opt(&r, opt, optarg);
		if (k < 0) {
			rc = CLI_EXIT_USAGE;
			goto out;
		}
		if (k > 0)
			continue;
		switch (opt) {
		case 'h':
			fputs(offer_help_head, stdout);
			fputs(cli_req_help, stdout);
			goto out;
		case O_LIMIT:
			if (cli_parse_uint(optarg, UINT32_MAX, &v)) {
				rc = cli_usage_error("offer: --limit %s: expected a non-negative integer",
				                     optarg);
				goto out;
			}
			want = (size_t)v;
			limited = true;
			break;
		case O_ALL:
			all = true;
			break;
		default:
			if (cli_common_option(c, opt))
				break;
			rc = cli_bad_option("offer", argv);
			goto out;
		}
	}
	if (optind < argc) {
		rc = cli_usage_error(
		    "offer: unexpected argument '%s' (requirements are flags; see drover offer --help)",
		    argv[optind]);
		goto out;
	}
	if (all && limited) {
		rc = cli_usage_error("offer: --limit and --all exclude each other");
		goto out;
	}
	if (all || (limited && want == 0))
		want = 0;
	cli_req_finish(&r);
	req.project = (char *)c->project;
	req.requirements = &r.req;
	req.required_features = r.features;
	req.n_required_features = r.n_features;

	if ((rc = fetch_offers(c, &req, want, &pages)))
		goto out;
	Drover__Api__V1__GetOffersResponse *resp = &pages.all;
	if (want && resp->n_offers > want)
		resp->n_offers = want;
	if (c->json) {
		cli_print_json(&resp->base);
	} else {
		static const char *const hdr[] = {"#",    "BACKEND", "INSTANCE", "REGION",
		                                  "ARCH", "CPUS",    "MEMORY",   "GPUS",
		                                  "DISK", "SPOT",    "PRICE/H",  "AVAILABILITY"};
		struct cli_table *t = cli_table_new(12, hdr);
		for (size_t i = 0; i < resp->n_offers; i++) {
			const Drover__Api__V1__BackendOffer *bo = resp->offers[i];
			const Drover__Compute__V1__Offer *of = bo->offer;
			if (!of)
				continue;
			const Drover__Compute__V1__Resources *res = of->resources;
			char n[24], cpus[16], mem[32], gpus[256], disk[32], price[32], avail[32];
			snprintf(n, sizeof(n), "%zu", i + 1);
			snprintf(cpus, sizeof(cpus), "%u", res ? res->cpus : 0);
			cli_mib_str(res ? res->memory_mib : 0, mem, sizeof(mem));
			cli_gpus_str(res, gpus, sizeof(gpus));
			cli_mib_str(res ? res->disk_mib : 0, disk, sizeof(disk));
			snprintf(price, sizeof(price), "$%.4f", of->price_per_hour);
			cli_enum_short(&drover__compute__v1__availability__descriptor, of->availability,
			               "AVAILABILITY_", avail, sizeof(avail));
			const char *row[] = {n,
			                     bo->backend,
			                     of->instance_type,
			                     of->region,
			                     res && res->cpu_arch[0] ? res->cpu_arch : "-",
			                     cpus,
			                     mem,
			                     gpus,
			                     disk,
			                     res && res->spot ? "yes" : "no",
			                     price,
			                     avail};
			cli_table_row(t, row);
		}
		cli_table_print(t, stdout);
		if (resp->n_backends && !resp->n_offers)
			printf("(no offers match the requirements)\n");
		if (resp->total_offers > resp->n_offers)
			printf("%zu more: --limit N or --all\n", (size_t)resp->total_offers - resp->n_offers);
	}
	/* Problems go to stderr in both modes, so a script reading --json still sees them in its log. */
	for (size_t i = 0; i < resp->n_backends; i++) {
		const Drover__Api__V1__BackendResult *b = resp->backends[i];
		if (strcmp(b->code, "OK") != 0 && b->code[0])
			fprintf(stderr, "drover: backend %s (%s): %s: %s (after %u ms)\n", b->backend,
			        b->type, b->code, b->message, b->elapsed_ms);
		if (b->bad_offers)
			fprintf(
			    stderr,
			    "drover: backend %s (%s): %u malformed offers dropped (see drover event list)\n",
			    b->backend, b->type, b->bad_offers);
	}
	/* An empty answer says why: no backends, a GPU name nobody offers, or the filter that emptied it. */
	if (!resp->n_backends)
		cli_print_no_backends(c->project);
	else if (!resp->n_offers)
		rc = cli_explain_no_offers(c, &r);
out:
	offer_pages_free(&pages);
	cli_req_free(&r);
	return rc;
}

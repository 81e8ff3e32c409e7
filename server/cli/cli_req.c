/* The requirement flags shared by `drover offer` and `drover instance create`. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

const char cli_req_help[] =
    "Requirements (every one given must hold for an offer):\n"
    "  --gpu NAME[:COUNT]        GPU model, e.g. H100, A100:8, L4:1..2; repeat for any of\n"
    "                            several models; a bare number is a count of any model\n"
    "  --gpu-memory MIN[:MAX]    memory per GPU, GiB by default (24, 40GB:80GB, 80:)\n"
    "  --cpus MIN[:MAX]          CPU count (a single value is a minimum)\n"
    "  --memory MIN[:MAX]        RAM, GiB by default; units MB, GB, TB accepted\n"
    "  --disk MIN[:MAX]          disk, GiB by default\n"
    "  --spot | --on-demand | --spot-auto\n"
    "                            spot only, on-demand only (the default), or either\n"
    "  --spot-policy POLICY      the same as one word: spot, on-demand or auto\n"
    "  --max-price USD           highest price per hour\n"
    "  --region REGION           repeat for any of several regions\n"
    "  --arch ARCH               CPU architecture: x86_64 (or amd64) or arm64 (or\n"
    "                            aarch64), any case; repeatable\n"
    "  --feature FEATURE         only backends advertising it (VOLUMES, MULTINODE, ...);\n"
    "                            repeatable\n";

void cli_req_init(struct cli_req *r)
{
	memset(r, 0, sizeof(*r));
	drover__compute__v1__requirements__init(&r->req);
	drover__compute__v1__uint_range__init(&r->cpus);
	drover__compute__v1__uint_range__init(&r->memory);
	drover__compute__v1__uint_range__init(&r->disk);
	drover__compute__v1__uint_range__init(&r->gpu_count);
	drover__compute__v1__uint_range__init(&r->gpu_memory);
}

static int push(char ***arr, size_t *n, const char *s, bool owned)
{
	char **a = realloc(*arr, (*n + 1) * sizeof(char *));
	if (!a)
		abort();
	*arr = a;
	a[(*n)++] = owned ? (char *)s : strdup(s);
	return 1;
}

static int fail(const char *opt, const char *msg)
{
	cli_usage_error("--%s: %s", opt, msg);
	return -1;
}

static bool range_set(const Drover__Compute__V1__UintRange *r)
{
	return r->_min_case || r->_max_case;
}

int cli_req_opt(struct cli_req *r, int opt, const char *arg)
{
	char err[256];
	double price;
	switch (opt) {
	case CLI_OPT_GPU: {
		char *name = NULL;
		Drover__Compute__V1__UintRange count = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
		if (cli_parse_gpu(arg, &name, &count, err, sizeof(err)))
			return fail("gpu", err);
		if (range_set(&count)) {
			if (range_set(&r->gpu_count) &&
			    (count.min != r->gpu_count.min || count.max != r->gpu_count.max ||
			     count._max_case != r->gpu_count._max_case)) {
				free(name);
				return fail(
				    "gpu",
				    "different GPU counts given; one count applies to every GPU model");
			}
			r->gpu_count = count;
		}
		if (name)
			push(&r->gpu_names, &r->n_gpu_names, name, true);
		return 1;
	}
	case CLI_OPT_GPU_MEMORY:
		if (cli_parse_size_range(arg, &r->gpu_memory, err, sizeof(err)))
			return fail("gpu-memory", err);
		return 1;
	case CLI_OPT_CPUS:
		if (cli_parse_count_range(arg, &r->cpus, err, sizeof(err)))
			return fail("cpus", err);
		return 1;
	case CLI_OPT_MEMORY:
		if (cli_parse_size_range(arg, &r->memory, err, sizeof(err)))
			return fail("memory", err);
		return 1;
	case CLI_OPT_DISK:
		if (cli_parse_size_range(arg, &r->disk, err, sizeof(err)))
			return fail("disk", err);
		return 1;
	case CLI_OPT_SPOT_POLICY:
		if (strcasecmp(arg, "spot") == 0)
			opt = CLI_OPT_SPOT;
		else if (strcasecmp(arg, "on-demand") == 0 || strcasecmp(arg, "on_demand") == 0 ||
		         strcasecmp(arg, "ondemand") == 0)
			opt = CLI_OPT_ON_DEMAND;
		else if (strcasecmp(arg, "auto") == 0)
			opt = CLI_OPT_SPOT_AUTO;
		else
			return fail("spot-policy", "expected spot, on-demand or auto");
		/* fall through */
	case CLI_OPT_SPOT:
	case CLI_OPT_ON_DEMAND:
	case CLI_OPT_SPOT_AUTO: {
		int p = opt == CLI_OPT_SPOT        ? DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT
		        : opt == CLI_OPT_ON_DEMAND ? DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND
		                                   : DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_AUTO;
		if (r->req.spot && (int)r->req.spot != p)
			return fail("spot", "--spot, --on-demand and --spot-auto exclude each other");
		r->req.spot = p;
		return 1;
	}
	case CLI_OPT_MAX_PRICE:
		if (cli_parse_price(arg, &price))
			return fail("max-price",
			            "expected a price per hour in USD greater than 0, e.g. 2.50");
		r->req._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
		r->req.max_price = price;
		return 1;
	case CLI_OPT_REGION:
		if (!*arg)
			return fail("region", "empty region name");
		return push(&r->regions, &r->n_regions, arg, false);
	case CLI_OPT_ARCH: {
		if (!*arg)
			return fail("arch", "empty architecture");
		/* Other spellings of the API's names are taken; a name it does not know passes as given. */
		const char *arch = cli_arch_name(arg);
		return push(&r->archs, &r->n_archs, arch ? arch : arg, false);
	}
	case CLI_OPT_FEATURE:
		if (drv_feature_from_name(arg) < 0) {
			/* The known names come from the protocol's enum, not from a list here. */
			char known[180] = "";
			const ProtobufCEnumDescriptor *d = &drover__compute__v1__feature__descriptor;
			for (unsigned i = 0; i < d->n_values; i++) {
				const char *name = drv_feature_name(d->values[i].value);
				if (name)
					snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
					         known[0] ? ", " : "", name);
			}
			snprintf(err, sizeof(err), "unknown feature '%.40s' (known: %s)", arg, known);
			return fail("feature", err);
		}
		return push(&r->features, &r->n_features, arg, false);
	}
	return 0;
}

void cli_req_finish(struct cli_req *r)
{
	/*
	 * The protocol reads an unset policy as AUTO, which let the README's
	 * `instance create --gpu H100` land on a spot machine that can be
	 * reclaimed at any time. A user gets spot only by asking for it, so the
	 * CLI, the one place that knows the user did not ask, says ON_DEMAND.
	 */
	if (!r->req.spot)
		r->req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND;
	if (range_set(&r->cpus))
		r->req.cpus = &r->cpus;
	if (range_set(&r->memory))
		r->req.memory_mib = &r->memory;
	if (range_set(&r->disk))
		r->req.disk_mib = &r->disk;
	if (range_set(&r->gpu_count))
		r->req.gpu_count = &r->gpu_count;
	if (range_set(&r->gpu_memory))
		r->req.gpu_memory_mib = &r->gpu_memory;
	r->req.gpu_names = r->gpu_names;
	r->req.n_gpu_names = r->n_gpu_names;
	r->req.regions = r->regions;
	r->req.n_regions = r->n_regions;
	r->req.cpu_archs = r->archs;
	r->req.n_cpu_archs = r->n_archs;
}

static void free_arr(char **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(a[i]);
	free(a);
}

void cli_req_free(struct cli_req *r)
{
	free_arr(r->gpu_names, r->n_gpu_names);
	free_arr(r->regions, r->n_regions);
	free_arr(r->features, r->n_features);
	free_arr(r->archs, r->n_archs);
}

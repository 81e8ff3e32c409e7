/* `drover driver`, `drover project` and `drover event`: listings and one create. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FREE_MSG(m) drv_response_free((ProtobufCMessage *)(m))

/*
 * The option loop of a command that takes only the common options: -1 when
 * the command goes on with argv[optind...], or the exit code to return
 * (after --help or a bad option).
 */
static int common_options_only(struct cli_ctx *c, int argc, char **argv, const char *cmd, const char *help)
{
	static const struct option o[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
	int opt;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "h", o, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(help, stdout);
			return 0;
		default:
			if (cli_common_option(c, opt))
				break;
			return cli_bad_option(cmd, argv);
		}
	}
	return -1;
}

/* ---- driver ---- */

static const char driver_help[] =
    "Usage: drover driver list [--json]\n"
    "\n"
    "Lists the drivers droverd supervises: type, name, pid (spawned) or address\n"
    "(remote), state, restarts, current restart delay, last error, version and\n"
    "features. A crash-looping driver shows a growing restart count and delay.\n";

static int driver_list(struct cli_ctx *c)
{
	Drover__Api__V1__ListDriversRequest req = DROVER__API__V1__LIST_DRIVERS_REQUEST__INIT;
	Drover__Api__V1__ListDriversResponse *resp;
	int rc = cli_call_text(c, "ListDrivers", &req.base, (ProtobufCMessage **)&resp);
	if (rc || !resp)
		return rc;
	static const char *const hdr[] = {"TYPE",    "NAME",    "STATE",    "PID/ADDRESS", "RESTARTS",
	                                  "BACKOFF", "VERSION", "FEATURES", "LAST ERROR"};
	struct cli_table *t = cli_table_new(9, hdr);
	for (size_t i = 0; i < resp->n_drivers; i++) {
		const Drover__Api__V1__Driver *d = resp->drivers[i];
		char state[32], where[512], restarts[16], backoff[32], feats[512], type[160], err[1024];
		cli_enum_short(&drover__api__v1__driver_state__descriptor, d->state, "DRIVER_STATE_", state,
		               sizeof(state));
		if (d->kind == DROVER__API__V1__DRIVER_KIND__DRIVER_KIND_REMOTE || !d->pid)
			snprintf(where, sizeof(where), "%s",
			         d->kind == DROVER__API__V1__DRIVER_KIND__DRIVER_KIND_REMOTE ? d->address
			                                                                     : "-");
		else
			snprintf(where, sizeof(where), "%d", d->pid);
		snprintf(restarts, sizeof(restarts), "%u", d->restarts);
		if (d->backoff_ms)
			snprintf(backoff, sizeof(backoff), "%ums", d->backoff_ms);
		else
			snprintf(backoff, sizeof(backoff), "-");
		cli_features_str((const int *)d->features, d->n_features, feats, sizeof(feats));
		if (d->reported_type[0] && strcmp(d->reported_type, d->type) != 0)
			snprintf(type, sizeof(type), "%s (reports %s)", d->type, d->reported_type);
		else
			snprintf(type, sizeof(type), "%s", d->type);
		snprintf(err, sizeof(err), "%s", d->last_error[0] ? d->last_error : "-");
		const char *row[] = {
		    type,  d->name, state, where, restarts, backoff, d->version[0] ? d->version : "-",
		    feats, err};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
	FREE_MSG(resp);
	return 0;
}

int cli_cmd_driver(struct cli_ctx *c, int argc, char **argv)
{
	int rc = common_options_only(c, argc, argv, "driver", driver_help);
	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return cli_usage_error("driver: missing subcommand (list); see drover driver --help");
	if (strcmp(argv[optind], "list") == 0 && optind + 1 == argc)
		return driver_list(c);
	return cli_usage_error("driver: unknown subcommand or extra argument '%s' (see drover driver --help)",
	                       argv[optind + (strcmp(argv[optind], "list") == 0)]);
}

/* ---- project ---- */

static const char project_help[] =
    "Usage: drover project list [--json]\n"
    "       drover project create NAME [--json]\n"
    "\n"
    "Projects group backends and instances. NAME: lower-case letters, digits and '-'.\n";

int cli_cmd_project(struct cli_ctx *c, int argc, char **argv)
{
	int rc = common_options_only(c, argc, argv, "project", project_help);
	if (rc >= 0)
		return rc;
	int nargs = argc - optind;
	const char *sub = nargs > 0 ? argv[optind] : NULL;
	if (sub && strcmp(sub, "list") == 0 && nargs == 1) {
		Drover__Api__V1__ListProjectsRequest req = DROVER__API__V1__LIST_PROJECTS_REQUEST__INIT;
		Drover__Api__V1__ListProjectsResponse *resp;
		if ((rc = cli_call_text(c, "ListProjects", &req.base, (ProtobufCMessage **)&resp)) || !resp)
			return rc;
		static const char *const hdr[] = {"NAME", "BACKENDS", "LIVE INSTANCES", "CREATED"};
		struct cli_table *t = cli_table_new(4, hdr);
		for (size_t i = 0; i < resp->n_projects; i++) {
			const Drover__Api__V1__Project *p = resp->projects[i];
			char nb[16], ni[16], ts[32];
			snprintf(nb, sizeof(nb), "%u", p->backend_count);
			snprintf(ni, sizeof(ni), "%u", p->live_instance_count);
			const char *row[] = {p->name, nb, ni,
			                     cli_time_str(p->created_unix_ms, ts, sizeof(ts))};
			cli_table_row(t, row);
		}
		cli_table_print(t, stdout);
		FREE_MSG(resp);
		return 0;
	}
	if (sub && strcmp(sub, "create") == 0 && nargs == 2) {
		Drover__Api__V1__CreateProjectRequest req = DROVER__API__V1__CREATE_PROJECT_REQUEST__INIT;
		Drover__Api__V1__CreateProjectResponse *resp;
		req.name = argv[optind + 1];
		if ((rc = cli_call_text(c, "CreateProject", &req.base, (ProtobufCMessage **)&resp)) || !resp)
			return rc;
		printf("created project %s\n", resp->project ? resp->project->name : req.name);
		FREE_MSG(resp);
		return 0;
	}
	if (sub && strcmp(sub, "create") == 0)
		return cli_usage_error(
		    "project create: expected exactly one NAME (see drover project --help)");
	return cli_usage_error("project: expected 'list' or 'create NAME' (see drover project --help)");
}

/* ---- event ---- */

static const char event_help[] =
    "Usage: drover event list [--project P | --all] [--instance ID|NAME] [--after ID] [--limit N] [--json]\n"
    "\n"
    "Lists the server's events (instances created, attempts failed, drivers\n"
    "crashed...), oldest first. --all lists the events of every project.\n"
    "--limit (default 100) keeps the latest N.\n";

static void event_table(const Drover__Api__V1__ListEventsResponse *resp);

int cli_cmd_event(struct cli_ctx *c, int argc, char **argv)
{
	enum { O_INSTANCE = 400, O_AFTER, O_LIMIT, O_ALL };
	static const struct option o[] = {CLI_COMMON_OPTIONS,
	                                  {"instance", required_argument, NULL, O_INSTANCE},
	                                  {"after", required_argument, NULL, O_AFTER},
	                                  {"limit", required_argument, NULL, O_LIMIT},
	                                  {"all", no_argument, NULL, O_ALL},
	                                  {NULL, 0, NULL, 0}};
	Drover__Api__V1__ListEventsRequest req = DROVER__API__V1__LIST_EVENTS_REQUEST__INIT;
	bool all = false;
	uint64_t v;
	int opt, rc;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "h", o, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(event_help, stdout);
			return 0;
		case O_INSTANCE:
			req.instance_id = optarg;
			break;
		case O_AFTER:
			if (cli_parse_uint(optarg, UINT64_MAX, &v))
				return cli_usage_error("event list: --after %s: expected an event id",
				                       optarg);
			req.after_id = v;
			break;
		case O_LIMIT:
			/* The API reads 0 as its default of 100, which `offer --limit 0` (no limit) would not
			 * suggest. */
			if (cli_parse_uint(optarg, UINT32_MAX, &v) || v == 0)
				return cli_usage_error("event list: --limit %s: expected a positive integer",
				                       optarg);
			req.limit = (uint32_t)v;
			break;
		case O_ALL:
			all = true;
			break;
		default:
			if (cli_common_option(c, opt))
				break;
			return cli_bad_option("event", argv);
		}
	}
	if (argc - optind != 1 || strcmp(argv[optind], "list") != 0)
		return cli_usage_error("event: expected 'list' (see drover event --help)");
	req.project = all ? "" : (char *)c->project;
	/* Every page, followed to the end; one table or one JSON answer for them all. */
	struct cli_pages p;
	if ((rc = cli_call_pages(c, "ListEvents", &req.base, &p)) == 0 && p.all)
		event_table((const Drover__Api__V1__ListEventsResponse *)p.all);
	cli_pages_free(&p);
	return rc;
}

static void event_table(const Drover__Api__V1__ListEventsResponse *resp)
{
	static const char *const hdr[] = {"ID",      "TIME",     "LEVEL",   "KIND",
	                                  "PROJECT", "INSTANCE", "BACKEND", "MESSAGE"};
	struct cli_table *t = cli_table_new(8, hdr);
	for (size_t i = 0; i < resp->n_events; i++) {
		const Drover__Api__V1__Event *e = resp->events[i];
		char id[24], ts[32], lvl[16], backend[300];
		snprintf(id, sizeof(id), "%llu", (unsigned long long)e->id);
		cli_enum_short(&drover__api__v1__event_level__descriptor, e->level, "EVENT_LEVEL_", lvl,
		               sizeof(lvl));
		if (e->driver[0] && !e->backend[0])
			snprintf(backend, sizeof(backend), "driver %s", e->driver);
		else
			snprintf(backend, sizeof(backend), "%s", e->backend[0] ? e->backend : "-");
		const char *row[] = {id,
		                     cli_time_str(e->at_unix_ms, ts, sizeof(ts)),
		                     lvl,
		                     e->kind,
		                     e->project[0] ? e->project : "-",
		                     e->instance_id[0] ? e->instance_id : "-",
		                     backend,
		                     e->message};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
}

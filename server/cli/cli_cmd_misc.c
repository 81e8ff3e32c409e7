/* `drover driver`, `drover project` and `drover event`: listings and one create. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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
    "       drover driver show TYPE [--json]\n"
    "\n"
    "list  the drivers droverd supervises: type, name, pid (spawned) or address\n"
    "      (remote), state, restarts, current restart delay, version, features and\n"
    "      last error. A crash-looping driver shows a growing restart count and\n"
    "      delay; a driver that crashed or waits to be restarted also gets its last\n"
    "      error on a line of its own under the table.\n"
    "show  one driver: its version, description, features, and the fields of a\n"
    "      backend's config and secrets from its schema (type, default, whether\n"
    "      required, description): what `drover backend add --config` takes.\n";

/* A JSON value in one line ("-" for none), for a schema's type and default. */
static void json_short(const json_t *v, char *buf, size_t len)
{
	if (!v) {
		snprintf(buf, len, "-");
		return;
	}
	if (json_is_string(v)) {
		snprintf(buf, len, "%s", json_string_value(v));
		return;
	}
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	snprintf(buf, len, "%s", s ? s : "?");
	free(s);
}

/*
 * The fields of a JSON Schema of an object, one row each: name, type,
 * default, required, description. A schema that is not JSON, or not an
 * object with properties, is said to be so (it came from the driver).
 */
static void print_schema_fields(const char *title, const char *schema)
{
	if (!schema[0]) {
		printf("%s: none given by the driver\n", title);
		return;
	}
	json_error_t jerr;
	json_t *root = json_loads(schema, 0, &jerr);
	json_t *props = root ? json_object_get(root, "properties") : NULL;
	if (!json_is_object(props)) {
		printf("%s: the driver's schema %s\n", title,
		       root ? "has no properties" : "is not valid JSON");
		json_decref(root);
		return;
	}
	if (!json_object_size(props)) {
		printf("%s: none\n", title);
		json_decref(root);
		return;
	}
	printf("%s:\n", title);
	json_t *required = json_object_get(root, "required");
	static const char *const hdr[] = {"  FIELD", "TYPE", "DEFAULT", "REQUIRED", "DESCRIPTION"};
	struct cli_table *t = cli_table_new(5, hdr);
	const char *name;
	json_t *p;
	json_object_foreach(props, name, p)
	{
		char field[300], type[200], def[200], desc[1024];
		bool req = false;
		size_t i;
		json_t *r;
		json_array_foreach(required, i, r) req =
		    req || (json_is_string(r) && strcmp(json_string_value(r), name) == 0);
		snprintf(field, sizeof(field), "  %s", name);
		json_short(json_object_get(p, "type"), type, sizeof(type));
		json_t *en = json_object_get(p, "enum");
		if (json_is_array(en)) {
			char vals[160];
			json_short(en, vals, sizeof(vals));
			snprintf(type + strlen(type), sizeof(type) - strlen(type), " of %s", vals);
		}
		json_short(json_object_get(p, "default"), def, sizeof(def));
		json_t *d = json_object_get(p, "description");
		snprintf(desc, sizeof(desc), "%s", json_is_string(d) ? json_string_value(d) : "-");
		/* The schema is the driver's text: it reaches the terminal only as text. */
		cli_clean_str(field);
		cli_clean_str(type);
		cli_clean_str(def);
		cli_clean_str(desc);
		const char *row[] = {field, type, def, req ? "yes" : "no", desc};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
	json_decref(root);
}

static int driver_show(struct cli_ctx *c, const char *type)
{
	Drover__Api__V1__ListDriversRequest req = DROVER__API__V1__LIST_DRIVERS_REQUEST__INIT;
	Drover__Api__V1__ListDriversResponse *resp;
	int rc = cli_call(c, "ListDrivers", &req.base, (ProtobufCMessage **)&resp);
	if (rc)
		return rc;
	const Drover__Api__V1__Driver *d = NULL;
	for (size_t i = 0; i < resp->n_drivers && !d; i++)
		if (strcmp(resp->drivers[i]->type, type) == 0)
			d = resp->drivers[i];
	if (!d) {
		char types[512] = "";
		for (size_t i = 0; i < resp->n_drivers; i++)
			snprintf(types + strlen(types), sizeof(types) - strlen(types), "%s%s", i ? ", " : "",
			         resp->drivers[i]->type);
		fprintf(stderr, "drover: driver show: no driver of type '%s' (known: %s)\n", type,
		        types[0] ? types : "none");
		FREE_MSG(resp);
		return CLI_EXIT_REFUSED;
	}
	if (c->json) {
		cli_print_json(&d->base);
		FREE_MSG(resp);
		return 0;
	}
	cli_clean_text(&resp->base);
	char state[32], feats[512], ts[32];
	cli_enum_short(&drover__api__v1__driver_state__descriptor, d->state, "DRIVER_STATE_", state,
	               sizeof(state));
	cli_features_str((const int *)d->features, d->n_features, feats, sizeof(feats));
	printf("type:         %s\n", d->type);
	printf("name:         %s\n", d->name);
	printf("state:        %s, %u restart(s)\n", state, d->restarts);
	printf("version:      %s (protocol %u)\n", d->version[0] ? d->version : "-", d->protocol_version);
	printf("description:  %s\n", d->description[0] ? d->description : "-");
	printf("features:     %s\n", feats[0] ? feats : "-");
	if (d->last_error[0])
		printf("last error:   %s (%s)\n", d->last_error,
		       cli_time_str(d->last_error_unix_ms, ts, sizeof(ts)));
	print_schema_fields("config fields", d->config_schema_json);
	print_schema_fields("secrets", d->secrets_schema_json);
	FREE_MSG(resp);
	return 0;
}

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
	/*
	 * The last error sits at the end of a wide row, past the features, where
	 * an 80-column terminal cuts it off: a driver that crashed or waits to be
	 * restarted gets its own line under the table as well.
	 */
	for (size_t i = 0; i < resp->n_drivers; i++) {
		const Drover__Api__V1__Driver *d = resp->drivers[i];
		char state[32], ts[32], next[64] = "";
		if (!d->last_error[0] && d->state != DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_BACKOFF)
			continue;
		cli_enum_short(&drover__api__v1__driver_state__descriptor, d->state, "DRIVER_STATE_", state,
		               sizeof(state));
		if (d->state == DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_BACKOFF)
			snprintf(next, sizeof(next), ", next start in %u ms", d->backoff_ms);
		printf("\ndriver %s: %s after %u restart(s)%s\n  last error (%s): %s\n", d->name, state,
		       d->restarts, next, cli_time_str(d->last_error_unix_ms, ts, sizeof(ts)),
		       d->last_error[0] ? d->last_error : "-");
	}
	FREE_MSG(resp);
	return 0;
}

int cli_cmd_driver(struct cli_ctx *c, int argc, char **argv)
{
	int rc = common_options_only(c, argc, argv, "driver", driver_help);
	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return cli_usage_error("driver: missing subcommand (list or show); see drover driver --help");
	if (strcmp(argv[optind], "list") == 0 && optind + 1 == argc)
		return driver_list(c);
	if (strcmp(argv[optind], "show") == 0 && optind + 2 == argc)
		return driver_show(c, argv[optind + 1]);
	if (strcmp(argv[optind], "show") == 0 && optind + 1 == argc)
		return cli_usage_error("driver show: missing TYPE (see drover driver list)");
	return cli_usage_error(
	    "driver: unknown subcommand or extra argument '%s' (see drover driver --help)",
	    argv[optind + (strcmp(argv[optind], "list") == 0 || strcmp(argv[optind], "show") == 0) *
	                      (1 + (strcmp(argv[optind], "show") == 0))]);
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

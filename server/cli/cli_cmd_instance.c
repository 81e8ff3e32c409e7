/* `drover instance create|list|show|terminate`. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define FREE_MSG(m) drv_response_free((ProtobufCMessage *)(m))

static const char instance_help_head[] =
    "Usage: drover instance create [REQUIREMENTS] [--name NAME] [--max-tries N]\n"
    "                              [--backend B]... [--ssh-key KEY|@FILE]...\n"
    "                              [--idempotency-key K] [--wait [--quiet]] [--project P]\n"
    "                              [--json]\n"
    "       drover instance list [--status S]... [--project P | --all] [--json]\n"
    "       drover instance list --foreign [--project P | --all] [--json]\n"
    "       drover instance show ID|NAME [--project P] [--json]\n"
    "       drover instance terminate ID|NAME [--wait] [--project P] [--json]\n"
    "\n"
    "create     tries the matching offers cheapest first, falling back to the next\n"
    "           on RESOURCE_EXHAUSTED (at most --max-tries, default: the server's),\n"
    "           and prints the instance with every attempt. Exits 1 when no\n"
    "           attempt produced a machine. --wait waits until it is running,\n"
    "           showing each attempt and each status change on stderr\n"
    "           when stderr is a terminal (--quiet: not at all).\n"
    "           Repeating a create with the same --idempotency-key returns the\n"
    "           first instance instead of making a second one.\n"
    "list       all instances, terminated ones too; --status running (repeatable)\n"
    "           filters: pending, creating, provisioning, running, terminating,\n"
    "           terminated, failed, termination_failing. \"running (see last\n"
    "           error)\": the server's last check of the machine failed (or it\n"
    "           was adopted as an orphan); show says why. \"(unconfirmed)\": its\n"
    "           termination was answered OK, but the machine's end has not been\n"
    "           observed within the server's window: it may still be billed.\n"
    "           --foreign: machines a backend lists with this server's tags but\n"
    "           without its signature, from the last scan; the server never adopts\n"
    "           or terminates them.\n"
    "show       one instance with its attempts.\n"
    "terminate  asks for termination; the server confirms it with the driver in\n"
    "           the background. --wait waits for the confirmation (exit 1 if it\n"
    "           does not come within --timeout). An instance still being\n"
    "           created is terminated as soon as its create ends (or fails\n"
    "           without trying further offers, when it made no machine).\n"
    "ID|NAME    the instance id, or its name within --project.\n"
    "\n";

/* A terminate waiting for the create call to end, as a suffix of the status. */
static const char *requested_str(const Drover__Api__V1__Instance *in)
{
	return in->terminate_requested &&
	               in->status == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_CREATING
	           ? " (terminate requested: it follows the create)"
	           : "";
}

static const char *status_str(int status, char *buf, size_t len)
{
	return cli_enum_short(&drover__api__v1__instance_status__descriptor, status, "INSTANCE_STATUS_", buf,
	                      len);
}

static const char *address_of(const Drover__Api__V1__Instance *in)
{
	const Drover__Compute__V1__ProvisioningData *pd = in->provisioning_data;
	if (!pd)
		return "-";
	if (pd->hostname[0])
		return pd->hostname;
	if (pd->internal_ip[0])
		return pd->internal_ip;
	return "-";
}

static void print_instance(const Drover__Api__V1__Instance *in)
{
	char st[32], ts[32], mem[32], gpus[256];
	const Drover__Compute__V1__Offer *of = in->offer;
	const Drover__Compute__V1__ProvisioningData *pd = in->provisioning_data;
	printf("id:               %s\n", in->id);
	printf("name:             %s\n", in->name);
	printf("project:          %s\n", in->project);
	printf("status:           %s%s\n", status_str(in->status, st, sizeof(st)), requested_str(in));
	printf("backend:          %s%s%s%s\n", in->backend[0] ? in->backend : "-",
	       in->backend_type[0] ? " (" : "", in->backend_type, in->backend_type[0] ? ")" : "");
	if (of) {
		printf("instance type:    %s in %s, $%.4f/h\n", of->instance_type, of->region,
		       of->price_per_hour);
		if (of->resources)
			printf("resources:        %u CPUs, %s memory, GPUs %s%s\n", of->resources->cpus,
			       cli_mib_str(of->resources->memory_mib, mem, sizeof(mem)),
			       cli_gpus_str(of->resources, gpus, sizeof(gpus)),
			       of->resources->spot ? ", spot" : "");
	}
	if (pd && pd->instance_id[0]) {
		printf("provider id:      %s\n", pd->instance_id);
		printf("address:          %s%s%s\n", address_of(in), pd->username[0] ? " as " : "",
		       pd->username);
		if (pd->ssh_port)
			printf("ssh port:         %u\n", pd->ssh_port);
	}
	printf("idempotency key:  %s\n", in->idempotency_key[0] ? in->idempotency_key : "-");
	printf("created:          %s\n", cli_time_str(in->created_unix_ms, ts, sizeof(ts)));
	printf("updated:          %s\n", cli_time_str(in->updated_unix_ms, ts, sizeof(ts)));
	if (in->terminated_unix_ms)
		printf("terminated:       %s\n", cli_time_str(in->terminated_unix_ms, ts, sizeof(ts)));
	if (in->termination_tries)
		printf("termination tries: %u\n", in->termination_tries);
	if (in->termination_unconfirmed)
		printf("termination:      unconfirmed: answered OK, the machine's end not observed yet\n");
	if (in->last_error[0])
		printf("last error:       %s\n", in->last_error);
	if (!in->n_attempts) {
		printf("attempts:         none\n");
		return;
	}
	printf("attempts:\n");
	static const char *const hdr[] = {"  #",     "BACKEND", "INSTANCE", "REGION",
	                                  "PRICE/H", "RESULT",  "MESSAGE"};
	struct cli_table *t = cli_table_new(7, hdr);
	for (size_t i = 0; i < in->n_attempts; i++) {
		const Drover__Api__V1__Attempt *a = in->attempts[i];
		char n[16], price[32];
		snprintf(n, sizeof(n), "  %u", a->number ? a->number : (unsigned)(i + 1));
		snprintf(price, sizeof(price), "$%.4f", a->price_per_hour);
		const char *row[] = {n,
		                     a->backend,
		                     a->instance_type,
		                     a->region,
		                     price,
		                     a->code[0] ? a->code : "(in flight)",
		                     a->message[0] ? a->message : "-"};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
}

static void ssleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Polls GetInstance until `done` holds for the status (0) or the CLI's
 * timeout passes (-1); *out gets the last instance seen (caller frees the
 * response). A failed call returns its exit code, with *out NULL.
 */
static int wait_for(struct cli_ctx *c, const char *id, bool (*done)(int status),
                    Drover__Api__V1__GetInstanceResponse **out, struct cli_progress *prog)
{
	Drover__Api__V1__GetInstanceRequest req = DROVER__API__V1__GET_INSTANCE_REQUEST__INIT;
	req.id = (char *)id;
	int64_t deadline = now_ms() + c->timeout_ms;
	*out = NULL;
	for (;;) {
		Drover__Api__V1__GetInstanceResponse *resp;
		int rc = cli_call(c, "GetInstance", &req.base, (ProtobufCMessage **)&resp);
		if (*out)
			FREE_MSG(*out);
		*out = resp; /* NULL when the call failed */
		if (rc)
			return rc;
		if (prog)
			cli_progress_update(prog, resp->instance);
		if (resp->instance && done(resp->instance->status))
			return 0;
		if (now_ms() >= deadline)
			return -1;
		ssleep_ms(250);
	}
}

static bool settled_running(int s)
{
	return s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING ||
	       s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_FAILED ||
	       s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATED ||
	       s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATING ||
	       s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATION_FAILING;
}

static bool settled_terminated(int s)
{
	return s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATED ||
	       s == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_FAILED;
}

/*
 * The list's status column: short, with a terminate waiting for the create
 * marked, and a running instance that has something in last_error (its
 * check failing, or an adopted orphan) pointed at it.
 */
static const char *list_status(const Drover__Api__V1__Instance *in, char *buf, size_t len)
{
	char st[32];
	bool noted =
	    in->status == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING && in->last_error[0];
	snprintf(buf, len, "%s%s%s%s", status_str(in->status, st, sizeof(st)),
	         requested_str(in)[0] ? " (terminate requested)" : "", noted ? " (see last error)" : "",
	         in->termination_unconfirmed ? " (unconfirmed)" : "");
	return buf;
}

static int show_result(struct cli_ctx *c, const ProtobufCMessage *resp, const Drover__Api__V1__Instance *in)
{
	if (c->json)
		cli_print_json(resp);
	else if (in)
		print_instance(in);
	return 0;
}

static int instance_create(struct cli_ctx *c, Drover__Api__V1__CreateInstanceRequest *req,
                           const struct cli_req *r, bool wait, struct cli_progress *prog)
{
	Drover__Api__V1__CreateInstanceResponse *resp;
	char st[32];
	/*
	 * CreateInstance answers after its attempts; their outcomes are printed
	 * with the answer, and the status changes after it as --wait polls.
	 */
	if (prog->on)
		fprintf(stderr,
		        "drover: [  0.0s] asking the backends for offers, trying them cheapest first\n");
	int rc = cli_call(c, "CreateInstance", &req->base, (ProtobufCMessage **)&resp);
	if (rc == 0)
		cli_progress_update(prog, resp->instance);
	/* No offer to try: say why (an unknown GPU name is a usage error). */
	if (rc && c->last_code == DRV_ENOCAPACITY && cli_explain_no_offers(c, r) == CLI_EXIT_USAGE)
		return CLI_EXIT_USAGE;
	if (rc)
		return rc;
	const Drover__Api__V1__Instance *in = resp->instance;
	if (!in) {
		FREE_MSG(resp);
		fprintf(stderr, "drover: CreateInstance: the server answered without an instance\n");
		return CLI_EXIT_REFUSED;
	}
	if (wait && !settled_running(in->status)) {
		Drover__Api__V1__GetInstanceResponse *g;
		rc = wait_for(c, in->id, settled_running, &g, prog);
		FREE_MSG(resp);
		if (rc > 0)
			return rc;
		show_result(c, &g->base, g->instance);
		int status = g->instance ? (int)g->instance->status : 0;
		FREE_MSG(g);
		if (rc < 0) {
			fprintf(stderr, "drover: instance still %s after %d s\n",
			        status_str(status, st, sizeof(st)), c->timeout_ms / 1000);
			return CLI_EXIT_REFUSED;
		}
		return status == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING ? 0
		                                                                           : CLI_EXIT_REFUSED;
	}
	show_result(c, &resp->base, in);
	bool failed = in->status == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_FAILED;
	/*
	 * --wait promises a running instance: one already ended or terminating
	 * (a terminate asked while it was created) never runs.
	 */
	bool not_running = wait && in->status != DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING;
	rc = failed || not_running ? CLI_EXIT_REFUSED : 0;
	if (failed && !c->json)
		fprintf(stderr, "drover: no attempt produced an instance: %s\n", in->last_error);
	/* Nothing was tried: say why no offer matched (an unknown GPU name is a usage error). */
	if (failed && !in->n_attempts && cli_explain_no_offers(c, r) == CLI_EXIT_USAGE)
		rc = CLI_EXIT_USAGE;
	else if (not_running)
		fprintf(stderr, "drover: instance %s is %s: it will not be running\n", in->id,
		        status_str(in->status, st, sizeof(st)));
	FREE_MSG(resp);
	return rc;
}

static int instance_table(const Drover__Api__V1__ListInstancesResponse *resp);

/* Every page of the listing, followed to the end; one table or one JSON answer for them all. */
static int instance_list(struct cli_ctx *c, Drover__Api__V1__ListInstancesRequest *req)
{
	struct cli_pages p;
	int rc = cli_call_pages(c, "ListInstances", &req->base, &p);
	if (rc == 0 && p.all)
		rc = instance_table((const Drover__Api__V1__ListInstancesResponse *)p.all);
	cli_pages_free(&p);
	return rc;
}

static int instance_table(const Drover__Api__V1__ListInstancesResponse *resp)
{
	static const char *const hdr[] = {"ID",     "NAME", "PROJECT", "BACKEND", "STATUS", "INSTANCE",
	                                  "REGION", "ARCH", "PRICE/H", "ADDRESS", "CREATED"};
	struct cli_table *t = cli_table_new(11, hdr);
	for (size_t i = 0; i < resp->n_instances; i++) {
		const Drover__Api__V1__Instance *in = resp->instances[i];
		char st[64], price[32], ts[32];
		const Drover__Compute__V1__Offer *of = in->offer;
		if (of)
			snprintf(price, sizeof(price), "$%.4f", of->price_per_hour);
		else
			snprintf(price, sizeof(price), "-");
		const char *row[] = {
		    in->id,
		    in->name,
		    in->project,
		    in->backend[0] ? in->backend : "-",
		    list_status(in, st, sizeof(st)),
		    of ? of->instance_type : "-",
		    of ? of->region : "-",
		    of && of->resources && of->resources->cpu_arch[0] ? of->resources->cpu_arch : "-",
		    price,
		    address_of(in),
		    cli_time_str(in->created_unix_ms, ts, sizeof(ts))};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
	return 0;
}

/* The last orphan scan's foreign machines: listed with this server's tags, not signed by it. */
static int instance_list_foreign(struct cli_ctx *c, const char *project)
{
	Drover__Api__V1__ListForeignMachinesRequest req =
	    DROVER__API__V1__LIST_FOREIGN_MACHINES_REQUEST__INIT;
	Drover__Api__V1__ListForeignMachinesResponse *resp;
	req.project = (char *)project;
	int rc = cli_call_text(c, "ListForeignMachines", &req.base, (ProtobufCMessage **)&resp);
	if (rc || !resp)
		return rc;
	static const char *const hdr[] = {"PROJECT",         "BACKEND", "PROVIDER ID",
	                                  "DROVER-INSTANCE", "NAME",    "INSTANCE",
	                                  "REGION",          "WHY",     "SEEN"};
	struct cli_table *t = cli_table_new(9, hdr);
	for (size_t i = 0; i < resp->n_machines; i++) {
		const Drover__Api__V1__ForeignMachine *m = resp->machines[i];
		char ts[32];
		const char *row[] = {m->project,
		                     m->backend,
		                     m->instance_id[0] ? m->instance_id : "-",
		                     m->drover_instance,
		                     m->name[0] ? m->name : "-",
		                     m->instance_type[0] ? m->instance_type : "-",
		                     m->region[0] ? m->region : "-",
		                     m->reason,
		                     cli_time_str(m->seen_unix_ms, ts, sizeof(ts))};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
	printf("%llu foreign machine(s) in the last scan%s: not adopted and never terminated by drover\n",
	       (unsigned long long)resp->total,
	       resp->total > resp->n_machines ? " (not all listed: 1,000 are kept per backend)" : "");
	FREE_MSG(resp);
	return 0;
}

static int parse_status(const char *s, Drover__Api__V1__InstanceStatus *out)
{
	const ProtobufCEnumDescriptor *d = &drover__api__v1__instance_status__descriptor;
	for (unsigned i = 0; i < d->n_values; i++) {
		const char *n = d->values[i].name + strlen("INSTANCE_STATUS_");
		if (d->values[i].value && strcasecmp(n, s) == 0) {
			*out = (Drover__Api__V1__InstanceStatus)d->values[i].value;
			return 0;
		}
	}
	return -1;
}

int cli_cmd_instance(struct cli_ctx *c, int argc, char **argv)
{
	enum {
		O_NAME = 400,
		O_MAX_TRIES,
		O_BACKEND,
		O_SSH_KEY,
		O_IDEM,
		O_WAIT,
		O_STATUS,
		O_ALL,
		O_FOREIGN,
		O_QUIET
	};
	static const struct option o[] = {CLI_COMMON_OPTIONS,
	                                  CLI_REQ_OPTIONS,
	                                  {"name", required_argument, NULL, O_NAME},
	                                  {"max-tries", required_argument, NULL, O_MAX_TRIES},
	                                  {"backend", required_argument, NULL, O_BACKEND},
	                                  {"ssh-key", required_argument, NULL, O_SSH_KEY},
	                                  {"idempotency-key", required_argument, NULL, O_IDEM},
	                                  {"wait", no_argument, NULL, O_WAIT},
	                                  {"quiet", no_argument, NULL, O_QUIET},
	                                  {"status", required_argument, NULL, O_STATUS},
	                                  {"all", no_argument, NULL, O_ALL},
	                                  {"foreign", no_argument, NULL, O_FOREIGN},
	                                  {NULL, 0, NULL, 0}};
	Drover__Api__V1__CreateInstanceRequest creq = DROVER__API__V1__CREATE_INSTANCE_REQUEST__INIT;
	Drover__Api__V1__ListInstancesRequest lreq = DROVER__API__V1__LIST_INSTANCES_REQUEST__INIT;
	struct cli_req r;
	char **backends = NULL, **keys = NULL;
	size_t n_backends = 0, n_keys = 0;
	Drover__Api__V1__InstanceStatus statuses[16];
	size_t n_statuses = 0;
	bool wait = false, all = false, create_only = false, foreign = false, quiet = false;
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
		if (k > 0) {
			create_only = true;
			continue;
		}
		switch (opt) {
		case 'h':
			fputs(instance_help_head, stdout);
			fputs(cli_req_help, stdout);
			goto out;
		case O_NAME:
			creq.name = optarg;
			create_only = true;
			break;
		case O_MAX_TRIES:
			if (cli_parse_uint(optarg, 1000, &v) || v == 0) {
				rc = cli_usage_error(
				    "instance create: --max-tries %s: expected a number from 1 to 1000",
				    optarg);
				goto out;
			}
			creq.max_tries = (uint32_t)v;
			create_only = true;
			break;
		case O_BACKEND:
			backends = realloc(backends, (n_backends + 1) * sizeof(char *));
			if (!backends)
				abort();
			backends[n_backends++] = optarg;
			create_only = true;
			break;
		case O_SSH_KEY: {
			char *key;
			if (optarg[0] == '@') {
				FILE *f = fopen(optarg + 1, "r");
				char line[8192];
				if (!f || !fgets(line, sizeof(line), f)) {
					if (f)
						fclose(f);
					rc = cli_usage_error(
					    "instance create: --ssh-key: cannot read a key from %s",
					    optarg + 1);
					goto out;
				}
				fclose(f);
				line[strcspn(line, "\r\n")] = '\0';
				key = strdup(line);
			} else {
				key = strdup(optarg);
			}
			/*
			 * Both went to the driver as a key: an empty one (--ssh-key "$UNSET", an
			 * empty file), and the first line of a private key file (@~/.ssh/id_ed25519).
			 */
			if (key && !key[0])
				rc = cli_usage_error("instance create: --ssh-key '%s': empty key", optarg);
			else if (key && strncmp(key, "-----BEGIN", 10) == 0)
				rc = cli_usage_error("instance create: --ssh-key %s: this is a private key; "
				                     "give the public one (the .pub file)",
				                     optarg);
			if (rc) {
				free(key);
				goto out;
			}
			keys = realloc(keys, (n_keys + 1) * sizeof(char *));
			if (!keys || !key)
				abort();
			keys[n_keys++] = key;
			create_only = true;
			break;
		}
		case O_IDEM:
			creq.idempotency_key = optarg;
			create_only = true;
			break;
		case O_WAIT:
			wait = true;
			break;
		case O_QUIET:
			quiet = true;
			create_only = true;
			break;
		case O_STATUS:
			if (n_statuses == sizeof(statuses) / sizeof(statuses[0]) ||
			    parse_status(optarg, &statuses[n_statuses])) {
				rc = cli_usage_error(
				    "instance list: --status %s: expected one of pending, creating, "
				    "provisioning, "
				    "running, terminating, terminated, failed, termination_failing",
				    optarg);
				goto out;
			}
			n_statuses++;
			break;
		case O_ALL:
			all = true;
			break;
		case O_FOREIGN:
			foreign = true;
			break;
		default:
			if (cli_common_option(c, opt))
				break;
			rc = cli_bad_option("instance", argv);
			goto out;
		}
	}
	int nargs = argc - optind;
	const char *sub = nargs > 0 ? argv[optind] : "";
	/* Options of another subcommand were ignored: 'instance create --status running' made a machine. */
	if ((n_statuses || all) && strcmp(sub, "list") != 0) {
		rc = cli_usage_error("instance: --status and --all belong to 'instance list'");
		goto out;
	}
	if (foreign && strcmp(sub, "list") != 0) {
		rc = cli_usage_error("instance: --foreign belongs to 'instance list'");
		goto out;
	}
	if (foreign && n_statuses) {
		rc = cli_usage_error("instance list: --foreign lists machines, not instances: no --status");
		goto out;
	}
	if (wait && strcmp(sub, "create") != 0 && strcmp(sub, "terminate") != 0) {
		rc =
		    cli_usage_error("instance: --wait belongs to 'instance create' and 'instance terminate'");
		goto out;
	}
	if (strcmp(sub, "create") == 0 && nargs == 1) {
		cli_req_finish(&r);
		creq.project = (char *)c->project;
		creq.requirements = &r.req;
		creq.required_features = r.features;
		creq.n_required_features = r.n_features;
		creq.backends = backends;
		creq.n_backends = n_backends;
		creq.ssh_public_keys = keys;
		creq.n_ssh_public_keys = n_keys;
		/* Progress is for a person watching: a terminal on stderr, and not --quiet. */
		struct cli_progress prog;
		cli_progress_init(&prog, wait && !quiet && isatty(STDERR_FILENO));
		rc = instance_create(c, &creq, &r, wait, &prog);
	} else if (create_only) {
		rc = cli_usage_error("instance: requirement, --name, --backend, --ssh-key, --max-tries, "
		                     "--idempotency-key and --quiet belong to 'instance create'");
	} else if (strcmp(sub, "list") == 0 && nargs == 1 && foreign) {
		rc = instance_list_foreign(c, all ? "" : c->project);
	} else if (strcmp(sub, "list") == 0 && nargs == 1) {
		lreq.project = all ? "" : (char *)c->project;
		lreq.statuses = statuses;
		lreq.n_statuses = n_statuses;
		rc = instance_list(c, &lreq);
	} else if ((strcmp(sub, "show") == 0 || strcmp(sub, "terminate") == 0) && nargs == 2) {
		const char *id = argv[optind + 1];
		if (strcmp(sub, "show") == 0) {
			Drover__Api__V1__GetInstanceRequest req = DROVER__API__V1__GET_INSTANCE_REQUEST__INIT;
			Drover__Api__V1__GetInstanceResponse *resp;
			req.id = (char *)id;
			req.project = (char *)c->project;
			if ((rc = cli_call(c, "GetInstance", &req.base, (ProtobufCMessage **)&resp)))
				goto out;
			rc = show_result(c, &resp->base, resp->instance);
			FREE_MSG(resp);
		} else {
			Drover__Api__V1__TerminateInstanceRequest req =
			    DROVER__API__V1__TERMINATE_INSTANCE_REQUEST__INIT;
			Drover__Api__V1__TerminateInstanceResponse *resp;
			char st[32];
			req.id = (char *)id;
			req.project = (char *)c->project;
			if ((rc = cli_call(c, "TerminateInstance", &req.base, (ProtobufCMessage **)&resp)))
				goto out;
			if (!wait) {
				if (c->json)
					cli_print_json(&resp->base);
				else if (resp->instance)
					printf("instance %s: %s%s%s%s\n", resp->instance->id,
					       status_str(resp->instance->status, st, sizeof(st)),
					       requested_str(resp->instance),
					       resp->instance->last_error[0] ? ": " : "",
					       resp->instance->last_error);
				FREE_MSG(resp);
			} else {
				Drover__Api__V1__GetInstanceResponse *g;
				rc = wait_for(c, resp->instance ? resp->instance->id : id, settled_terminated,
				              &g, NULL);
				FREE_MSG(resp);
				if (rc > 0)
					goto out;
				int status = g->instance ? (int)g->instance->status : 0;
				if (c->json)
					cli_print_json(&g->base);
				else if (g->instance)
					printf("instance %s: %s%s%s\n", g->instance->id,
					       status_str(status, st, sizeof(st)),
					       g->instance->last_error[0] ? ": " : "",
					       g->instance->last_error);
				FREE_MSG(g);
				rc = rc < 0 ? CLI_EXIT_REFUSED : 0;
			}
		}
	} else {
		rc = cli_usage_error(
		    "instance: expected create, list, show ID or terminate ID (see drover instance --help)");
	}
out:
	cli_req_free(&r);
	free(backends);
	for (size_t i = 0; i < n_keys; i++)
		free(keys[i]);
	free(keys);
	return rc;
}

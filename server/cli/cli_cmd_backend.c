/* `drover backend add|list|remove`. Secret values go to the server and are never printed. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define FREE_MSG(m) drv_response_free((ProtobufCMessage *)(m))

static const char backend_help[] =
    "Usage: drover backend add --name NAME --type TYPE [--config JSON | --config-file FILE]\n"
    "                          [--secret KEY=VALUE]... [--secret-file KEY=FILE]...\n"
    "                          [--validate-only] [--project P] [--json]\n"
    "       drover backend list [--project P | --all] [--json]\n"
    "       drover backend remove NAME [--force] [--project P] [--json]\n"
    "\n"
    "add      validates the config through the driver of TYPE (ValidateConfig) and\n"
    "         adds the backend. Every diagnostic is printed with its field path\n"
    "         (\"/capacity\", \"/secrets/token\"); an invalid config adds nothing and\n"
    "         exits 1. --validate-only checks without adding. TYPE is any type a\n"
    "         driver is known for (see drover driver list). --secret-file reads the\n"
    "         value from a file, which keeps it out of the shell history.\n"
    "list     shows each backend with its features (from the driver, cached) and\n"
    "         the names of its secrets; secret values are never shown.\n"
    "remove   is refused while the backend has live instances, unless --force.\n";

struct secrets {
	Drover__Api__V1__AddBackendRequest__SecretsEntry *entries;
	Drover__Api__V1__AddBackendRequest__SecretsEntry **ptrs;
	char **owned;
	size_t n;
};

/* The whole file as a string, its length in *len; NULL with a message in err. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	size_t cap = 4096, n = 0, r;
	char *buf = malloc(cap);
	while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += r;
		if (n + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	int read_errno = ferror(f) ? errno : 0;
	fclose(f);
	if (!buf)
		abort();
	/* A directory opens; only the read fails, which must not pass for an empty file. */
	if (read_errno) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(read_errno));
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

static int secret_add(struct secrets *s, const char *opt, const char *arg, bool from_file)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg)
		return cli_usage_error("backend add: --%s expects KEY=%s (the key is missing)", opt,
		                       from_file ? "FILE" : "VALUE");
	char *key = strndup(arg, (size_t)(eq - arg));
	char *value;
	if (from_file) {
		char err[4200]; /* room for a path as long as PATH_MAX */
		size_t n;
		if (!(value = read_file(eq + 1, &n, err, sizeof(err)))) {
			free(key);
			return cli_usage_error("backend add: --secret-file: %s", err);
		}
		/* A trailing newline from an editor is not part of a credential. */
		while (n && (value[n - 1] == '\n' || value[n - 1] == '\r'))
			value[--n] = '\0';
		if (!n) {
			free(key);
			free(value);
			return cli_usage_error("backend add: --secret-file: %s is empty", eq + 1);
		}
	} else {
		value = strdup(eq + 1);
	}
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->entries[i].key, key) == 0) {
			free(key);
			free(value);
			return cli_usage_error("backend add: secret '%.*s' given twice", (int)(eq - arg),
			                       arg);
		}
	s->entries = realloc(s->entries, (s->n + 1) * sizeof(*s->entries));
	s->owned = realloc(s->owned, (s->n + 1) * 2 * sizeof(char *));
	if (!s->entries || !s->owned)
		abort();
	drover__api__v1__add_backend_request__secrets_entry__init(&s->entries[s->n]);
	s->entries[s->n].key = key;
	s->entries[s->n].value = value;
	s->owned[2 * s->n] = key;
	s->owned[2 * s->n + 1] = value;
	s->n++;
	return 0;
}

static void secrets_free(struct secrets *s)
{
	for (size_t i = 0; i < 2 * s->n; i++) {
		/* Wipe secret values before freeing: this process may dump core. */
		memset(s->owned[i], 0, strlen(s->owned[i]));
		free(s->owned[i]);
	}
	free(s->owned);
	free(s->entries);
	free(s->ptrs);
}

static void print_diagnostics(Drover__Compute__V1__Diagnostic **d, size_t n, FILE *f)
{
	for (size_t i = 0; i < n; i++) {
		const char *sev =
		    d[i]->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_WARNING ? "warning" : "error";
		fprintf(f, "  %s at %s: %s", sev, d[i]->field_path[0] ? d[i]->field_path : "(config)",
		        d[i]->summary);
		if (d[i]->detail[0])
			fprintf(f, " (%s)", d[i]->detail);
		fputc('\n', f);
	}
}

static int backend_add(struct cli_ctx *c, Drover__Api__V1__AddBackendRequest *req, struct secrets *s)
{
	Drover__Api__V1__AddBackendResponse *resp;
	s->ptrs = calloc(s->n + 1, sizeof(*s->ptrs));
	if (!s->ptrs)
		abort();
	for (size_t i = 0; i < s->n; i++)
		s->ptrs[i] = &s->entries[i];
	req->secrets = s->ptrs;
	req->n_secrets = s->n;
	req->project = (char *)c->project;

	int rc = cli_call(c, "AddBackend", &req->base, (ProtobufCMessage **)&resp);
	if (rc && c->last_code == DRV_EINVAL && !req->validate_only) {
		/*
		 * The status message already names the fields; ask again without adding to
		 * get the driver's diagnostics as data, with severity and detail.
		 */
		req->validate_only = true;
		Drover__Api__V1__AddBackendResponse *v;
		c->quiet = true;
		int vrc = cli_call(c, "AddBackend", &req->base, (ProtobufCMessage **)&v);
		c->quiet = false;
		if (vrc == 0) {
			if (c->json)
				cli_print_json(&v->base);
			else if (v->n_diagnostics) {
				fprintf(stderr, "backend %s: the %s driver reports:\n", req->name, req->type);
				print_diagnostics(v->diagnostics, v->n_diagnostics, stderr);
			}
			FREE_MSG(v);
		}
		return CLI_EXIT_REFUSED;
	}
	if (rc)
		return rc;
	if (c->json) {
		cli_print_json(&resp->base);
	} else if (req->validate_only) {
		printf("backend %s: config is %s\n", req->name, resp->valid ? "valid" : "INVALID");
		print_diagnostics(resp->diagnostics, resp->n_diagnostics, stdout);
	} else {
		printf("added backend %s (type %s) to project %s\n", req->name, req->type, c->project);
		print_diagnostics(resp->diagnostics, resp->n_diagnostics, stdout);
	}
	rc = req->validate_only && !resp->valid ? CLI_EXIT_REFUSED : 0;
	FREE_MSG(resp);
	return rc;
}

static int backend_list(struct cli_ctx *c, bool all)
{
	Drover__Api__V1__ListBackendsRequest req = DROVER__API__V1__LIST_BACKENDS_REQUEST__INIT;
	Drover__Api__V1__ListBackendsResponse *resp;
	req.project = all ? "" : (char *)c->project;
	int rc = cli_call_text(c, "ListBackends", &req.base, (ProtobufCMessage **)&resp);
	if (rc || !resp)
		return rc;
	static const char *const hdr[] = {"PROJECT", "NAME",   "TYPE", "FEATURES",
	                                  "SECRETS", "SOURCE", "LIVE", "CONFIG"};
	struct cli_table *t = cli_table_new(8, hdr);
	for (size_t i = 0; i < resp->n_backends; i++) {
		const Drover__Api__V1__Backend *b = resp->backends[i];
		char feats[600], secrets[600], live[16];
		if (b->features_error[0])
			snprintf(feats, sizeof(feats), "? (%s)", b->features_error);
		else
			cli_features_str((const int *)b->features, b->n_features, feats, sizeof(feats));
		size_t o = 0;
		secrets[0] = '\0';
		for (size_t k = 0; k < b->n_secret_names && o < sizeof(secrets); k++)
			o += (size_t)snprintf(secrets + o, sizeof(secrets) - o, "%s%s", k ? "," : "",
			                      b->secret_names[k]);
		snprintf(live, sizeof(live), "%u", b->live_instance_count);
		const char *row[] = {b->project,
		                     b->name,
		                     b->type,
		                     feats,
		                     secrets[0] ? secrets : "-",
		                     b->source[0] ? b->source : "-",
		                     live,
		                     b->config_json[0] ? b->config_json : "{}"};
		cli_table_row(t, row);
	}
	cli_table_print(t, stdout);
	FREE_MSG(resp);
	return 0;
}

static int backend_remove(struct cli_ctx *c, const char *name, bool force)
{
	Drover__Api__V1__RemoveBackendRequest req = DROVER__API__V1__REMOVE_BACKEND_REQUEST__INIT;
	Drover__Api__V1__RemoveBackendResponse *resp;
	req.project = (char *)c->project;
	req.name = (char *)name;
	req.force = force;
	int rc = cli_call_text(c, "RemoveBackend", &req.base, (ProtobufCMessage **)&resp);
	if (rc || !resp)
		return rc;
	printf("removed backend %s from project %s\n", name, c->project);
	if (resp->n_live_instance_ids) {
		printf("still live, kept on record:");
		for (size_t i = 0; i < resp->n_live_instance_ids; i++)
			printf(" %s", resp->live_instance_ids[i]);
		printf("\n");
	}
	if (resp->from_config)
		fprintf(
		    stderr,
		    "drover: note: backend %s is defined in droverd's config file; droverd's next start adds "
		    "it again unless it is removed there too\n",
		    name);
	FREE_MSG(resp);
	return 0;
}

int cli_cmd_backend(struct cli_ctx *c, int argc, char **argv)
{
	enum {
		O_NAME = 400,
		O_TYPE,
		O_CONFIG,
		O_CONFIG_FILE,
		O_SECRET,
		O_SECRET_FILE,
		O_VALIDATE,
		O_FORCE,
		O_ALL
	};
	static const struct option o[] = {CLI_COMMON_OPTIONS,
	                                  {"name", required_argument, NULL, O_NAME},
	                                  {"type", required_argument, NULL, O_TYPE},
	                                  {"config", required_argument, NULL, O_CONFIG},
	                                  {"config-file", required_argument, NULL, O_CONFIG_FILE},
	                                  {"secret", required_argument, NULL, O_SECRET},
	                                  {"secret-file", required_argument, NULL, O_SECRET_FILE},
	                                  {"validate-only", no_argument, NULL, O_VALIDATE},
	                                  {"force", no_argument, NULL, O_FORCE},
	                                  {"all", no_argument, NULL, O_ALL},
	                                  {NULL, 0, NULL, 0}};
	Drover__Api__V1__AddBackendRequest req = DROVER__API__V1__ADD_BACKEND_REQUEST__INIT;
	struct secrets sec = {0};
	/* Not req.name: generated messages start with "" rather than NULL. */
	const char *name = NULL, *config = NULL, *config_file = NULL;
	char *config_buf = NULL;
	bool force = false, all = false, add_only = false, have_secret = false;
	int opt, rc = 0;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "h", o, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(backend_help, stdout);
			rc = 0;
			goto out;
		case O_NAME:
			name = optarg;
			break;
		case O_TYPE:
			req.type = optarg;
			add_only = true;
			break;
		case O_CONFIG:
			config = optarg;
			add_only = true;
			break;
		case O_CONFIG_FILE:
			config_file = optarg;
			add_only = true;
			break;
		case O_SECRET:
		case O_SECRET_FILE:
			have_secret = true;
			if ((rc = secret_add(&sec, opt == O_SECRET ? "secret" : "secret-file", optarg,
			                     opt == O_SECRET_FILE)))
				goto out;
			break;
		case O_VALIDATE:
			req.validate_only = true;
			add_only = true;
			break;
		case O_FORCE:
			force = true;
			break;
		case O_ALL:
			all = true;
			break;
		default:
			if (cli_common_option(c, opt))
				break;
			rc = cli_bad_option("backend", argv);
			goto out;
		}
	}
	int nargs = argc - optind;
	const char *sub = nargs > 0 ? argv[optind] : "";
	/* Ignored before: 'backend remove NAME --all' removed it from --project only. */
	if (all && strcmp(sub, "list") != 0) {
		rc = cli_usage_error("backend: --all belongs to 'backend list'");
		goto out;
	}
	if (force && strcmp(sub, "remove") != 0) {
		rc = cli_usage_error("backend: --force belongs to 'backend remove'");
		goto out;
	}
	if (strcmp(sub, "add") == 0) {
		if (nargs == 2 && !name)
			name = argv[optind + 1];
		else if (nargs != 1) {
			rc = cli_usage_error("backend add: unexpected argument '%s'", argv[optind + 1]);
			goto out;
		}
		if (name)
			req.name = (char *)name;
		if (!*req.name || !*req.type) {
			rc = cli_usage_error(
			    "backend add: --name and --type are required (see drover backend --help)");
			goto out;
		}
		if (config && config_file) {
			rc = cli_usage_error("backend add: give --config or --config-file, not both");
			goto out;
		}
		if (config_file) {
			char err[512];
			size_t len;
			if (!(config_buf = read_file(config_file, &len, err, sizeof(err)))) {
				rc = cli_usage_error("backend add: --config-file: %s", err);
				goto out;
			}
			config = config_buf;
		}
		if (config) {
			/* Catch JSON syntax here, where the error can point at the text the user typed. */
			json_error_t je;
			json_t *j = json_loads(config, JSON_REJECT_DUPLICATES, &je);
			if (!j) {
				rc = cli_usage_error(
				    "backend add: %s is not valid JSON: line %d, column %d: %s",
				    config_file ? config_file : "--config", je.line, je.column, je.text);
				goto out;
			}
			bool obj = json_is_object(j);
			json_decref(j);
			if (!obj) {
				rc = cli_usage_error("backend add: %s must be a JSON object ({...})",
				                     config_file ? config_file : "--config");
				goto out;
			}
			req.config_json = (char *)config;
		}
		rc = backend_add(c, &req, &sec);
	} else if (strcmp(sub, "list") == 0 && nargs == 1 && !add_only && !have_secret && !name) {
		rc = backend_list(c, all);
	} else if (strcmp(sub, "remove") == 0 && !add_only && !have_secret) {
		if (nargs == 2 && !name)
			name = argv[optind + 1];
		else if (nargs != 1 || !name) {
			rc = cli_usage_error(
			    "backend remove: expected one backend NAME (see drover backend --help)");
			goto out;
		}
		rc = backend_remove(c, name, force);
	} else {
		rc = cli_usage_error(
		    "backend: expected add, list or remove with their options (see drover backend --help)");
	}
out:
	secrets_free(&sec);
	free(config_buf);
	return rc;
}

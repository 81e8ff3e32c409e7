/*
 * The ssh driver's SDK side: config declaration, validation, and the
 * offers and instances RPCs over the hosts of the config. Each host is one
 * offer; an instance is a claim of a whole host, held in a file on the host
 * itself (ssh_scripts.h), so the hosts, not this process, are the state:
 * any number of drivers (and droverds) can serve one fleet.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "drover/driver.h"
#include "ssh_conn.h"
#include "ssh_driver.h"
#include "ssh_parse.h"
#include "ssh_scripts.h"

#define DEFAULT_PORT 22
#define DEFAULT_REGION "on-prem"
/* The protocol requires a price above 0; a host of one's own costs next to nothing. */
#define DEFAULT_PRICE 0.0001
#define DEFAULT_PROBE_TTL_S 60
#define DEFAULT_PROBE_TIMEOUT_S 10
#define MAX_HOSTS 256
#define MAX_PER_HOST 4
/* Time kept back from a call's deadline for building and sending the answer. */
#define ANSWER_MARGIN_MS 100

#define STR_(x) #x
#define STR(x) STR_(x)

static const char *const placements[] = {"none", "cluster", NULL};

static const struct drv_config_field host_fields[] = {
    {.name = "address",
     .type = DRV_FIELD_STRING,
     .required = true,
     .description = "Host name or IP address the driver connects to"},
    {.name = "port",
     .type = DRV_FIELD_INTEGER,
     .default_json = STR(DEFAULT_PORT),
     .has_minimum = true,
     .minimum = 1,
     .has_maximum = true,
     .maximum = 65535,
     .description = "SSH port"},
    {.name = "user", .type = DRV_FIELD_STRING, .required = true, .description = "Login user on the host"},
    {.name = "host_key",
     .type = DRV_FIELD_STRING,
     .required = true,
     .description = "The host's public key line (as `drover-driver-ssh keyscan HOST` prints it) or its "
                    "SHA256: fingerprint; every connection is refused when the host shows another key"},
    {.name = "proxy_jump",
     .type = DRV_FIELD_STRING,
     .description = "Reach the host through this one, as ssh -J does: \"user@host\" or \"user@host:port\" "
                    "(the same private key logs in there)"},
    {.name = "proxy_jump_host_key",
     .type = DRV_FIELD_STRING,
     .description = "The jump host's public key line or SHA256: fingerprint; required with proxy_jump"},
    {.name = "region",
     .type = DRV_FIELD_STRING,
     .default_json = "\"" DEFAULT_REGION "\"",
     .description = "Region label of the host's offer"},
    {.name = "price_per_hour",
     .type = DRV_FIELD_NUMBER,
     .default_json = STR(DEFAULT_PRICE),
     .has_minimum = true,
     .minimum = DEFAULT_PRICE,
     .description = "Price of the host's offer in USD per hour (the protocol requires more than 0)"},
    {.name = NULL},
};

static const struct drv_config_field config_fields[] = {
    {.name = "hosts",
     .type = DRV_FIELD_OBJECT_ARRAY,
     .required = true,
     .items = host_fields,
     .description = "The machines of this backend; each is one offer, and an instance claims a whole host"},
    {.name = "placement",
     .type = DRV_FIELD_STRING,
     .enum_values = placements,
     .default_json = "\"none\"",
     .description = "\"cluster\": the hosts share one network, so the backend also offers MULTINODE"},
    {.name = "probe_ttl_s",
     .type = DRV_FIELD_INTEGER,
     .default_json = STR(DEFAULT_PROBE_TTL_S),
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = 86400,
     .description = "How long a host's probe (CPUs, memory, disk, GPUs, claim) answers GetOffers"},
    {.name = "probe_timeout_s",
     .type = DRV_FIELD_INTEGER,
     .default_json = STR(DEFAULT_PROBE_TIMEOUT_S),
     .has_minimum = true,
     .minimum = 1,
     .has_maximum = true,
     .maximum = 300,
     .description = "Deadline of one host's connection and probe, inside the call's own deadline"},
    {.name = "disk_path",
     .type = DRV_FIELD_STRING,
     .description = "Path whose file system is the offer's disk (default: the login user's home)"},
    {.name = "setup",
     .type = DRV_FIELD_STRING,
     .description = "Shell script run (sh -s, as the login user) on a host once it is claimed; a failure "
                    "undoes the claim"},
    {.name = "cleanup",
     .type = DRV_FIELD_STRING,
     .description = "Shell script run on a host when its instance terminates, before the claim is "
                    "released"},
    {.name = "require_sudo",
     .type = DRV_FIELD_BOOLEAN,
     .default_json = "false",
     .description = "The hosts' users must run sudo without a password (sudo -n true); ValidateConfig "
                    "checks it on every host"},
    {.name = "private_key",
     .type = DRV_FIELD_STRING,
     .secret = true,
     .description = "Private key (OpenSSH or PEM) every host accepts for its user; held in memory only"},
    {.name = "passphrase",
     .type = DRV_FIELD_STRING,
     .secret = true,
     .description = "Passphrase of private_key"},
    {.name = NULL},
};

/* ---- config ---- */

struct host {
	const char *address;
	int port;
	const char *user;
	const char *region;
	double price;
	struct ssh_hostkey hostkey;
	char id[13];
	char label[300]; /* user@address:port, for messages */
	/* proxy_jump, when set: jump.address and jump.user point into jump_spec. */
	bool has_jump;
	char jump_spec[300];
	struct ssh_hostkey jump_key;
	struct ssh_target jump;
};

struct cfg {
	json_t *root;
	struct host *hosts;
	size_t n_hosts;
	bool cluster;
	int64_t probe_ttl_ms;
	int64_t probe_timeout_ms;
	const char *disk_path;
	const char *setup;
	const char *cleanup;
	const char *private_key;
	const char *passphrase;
	bool require_sudo;
};

/* Diagnostics go to `d` when set (ValidateConfig), else the first becomes the message in err. */
struct diag_sink {
	struct drv_diags *d;
	char *err;
	size_t errlen;
	int n;
};

static void sink_error(struct diag_sink *s, const char *path, const char *summary, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void sink_error(struct diag_sink *s, const char *path, const char *summary, const char *fmt, ...)
{
	char detail[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (s->d)
		drv_diag_error(s->d, path, summary, "%s", detail);
	else if (s->n == 0)
		snprintf(s->err, s->errlen, "%s: %s: %s", path, summary, detail);
	s->n++;
}

/* Every string of the config, at any depth, is checked for a pasted private key. */
static void find_private_keys(json_t *v, const char *path, struct diag_sink *s)
{
	char p[400];
	if (json_is_string(v)) {
		if (ssh_looks_private(json_string_value(v)))
			sink_error(
			    s, path, "private key in config",
			    "this value holds a private key; a private key goes in the private_key secret, "
			    "never in the config");
	} else if (json_is_object(v)) {
		const char *k;
		json_t *e;
		json_object_foreach(v, k, e)
		{
			snprintf(p, sizeof(p), "%.300s/%.80s", path, k);
			find_private_keys(e, p, s);
		}
	} else if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
		{
			snprintf(p, sizeof(p), "%.300s/%zu", path, i);
			find_private_keys(e, p, s);
		}
	}
}

static void cfg_close(struct cfg *c)
{
	json_decref(c->root);
	free(c->hosts);
	memset(c, 0, sizeof(*c));
}

/* "user@host", "user@host:port" or "user@[v6]:port" into x->jump. 0, or -1 with err set. */
static int parse_jump(const char *spec, struct host *x, char *err, size_t errlen)
{
	snprintf(x->jump_spec, sizeof(x->jump_spec), "%s", spec);
	char *at = strchr(x->jump_spec, '@');
	if (!at) {
		snprintf(err, errlen, "\"user@host\" or \"user@host:port\"");
		return -1;
	}
	*at = '\0';
	char *host = at + 1, *port = NULL;
	if (*host == '[') {
		char *end = strchr(host, ']');
		if (!end || (end[1] && end[1] != ':')) {
			snprintf(err, errlen, "an IPv6 jump host is written user@[address]:port");
			return -1;
		}
		*end = '\0';
		port = end[1] ? end + 2 : NULL;
		host++;
	} else if ((port = strchr(host, ':')) != NULL) {
		*port++ = '\0';
	}
	x->jump.user = x->jump_spec;
	x->jump.address = host;
	x->jump.port = DEFAULT_PORT;
	if (port) {
		char *end;
		long v = strtol(port, &end, 10);
		if (*end || v < 1 || v > 65535) {
			snprintf(err, errlen, "the jump host's port is not 1..65535");
			return -1;
		}
		x->jump.port = (int)v;
	}
	if (!ssh_user_ok(x->jump.user) || !ssh_address_ok(x->jump.address)) {
		snprintf(err, errlen,
		         "the jump host's user or address has characters outside the strict patterns");
		return -1;
	}
	x->has_jump = true;
	return 0;
}

/*
 * Reads the call's config beyond what the SDK's schema checks: host
 * addresses, users, host keys, duplicates, pasted private keys. Returns 0,
 * or DRV_EINVAL with every problem in the sink.
 */
static int cfg_load(struct drv_call *call, struct cfg *c, struct diag_sink *s)
{
	memset(c, 0, sizeof(*c));
	json_error_t je;
	c->root = json_loads(drv_call_config_json(call), JSON_DECODE_ANY, &je);
	if (!json_is_object(c->root)) {
		sink_error(s, "", "config is not a JSON object", "%s", je.text);
		return DRV_EINVAL;
	}
	find_private_keys(c->root, "", s);
	json_t *hosts = json_object_get(c->root, "hosts");
	size_t n = json_array_size(hosts);
	if (n == 0)
		sink_error(s, "/hosts", "no hosts", "the backend needs at least one host");
	if (n > MAX_HOSTS)
		sink_error(s, "/hosts", "too many hosts", "%zu hosts; at most %d per backend", n, MAX_HOSTS);
	if (n == 0 || n > MAX_HOSTS)
		return DRV_EINVAL;
	c->hosts = calloc(n, sizeof(*c->hosts));
	if (!c->hosts) {
		sink_error(s, "", "out of memory", "reading %zu hosts", n);
		return DRV_ENOMEM;
	}
	c->n_hosts = n;
	for (size_t i = 0; i < n; i++) {
		json_t *h = json_array_get(hosts, i);
		struct host *x = &c->hosts[i];
		char path[64], err[300];
		x->address = json_string_value(json_object_get(h, "address"));
		x->user = json_string_value(json_object_get(h, "user"));
		json_t *port = json_object_get(h, "port");
		x->port = port ? (int)json_number_value(port) : DEFAULT_PORT;
		json_t *region = json_object_get(h, "region");
		x->region = region ? json_string_value(region) : DEFAULT_REGION;
		json_t *price = json_object_get(h, "price_per_hour");
		x->price = price ? json_number_value(price) : DEFAULT_PRICE;
		if (!ssh_address_ok(x->address)) {
			snprintf(path, sizeof(path), "/hosts/%zu/address", i);
			sink_error(s, path, "invalid address",
			           "a host name or IP address of letters, digits, '.', ':' and '-'");
		}
		if (!ssh_user_ok(x->user)) {
			snprintf(path, sizeof(path), "/hosts/%zu/user", i);
			sink_error(s, path, "invalid user",
			           "a login name such as \"gpu\" ([a-z_][a-z0-9_.-]*)");
		}
		const char *hk = json_string_value(json_object_get(h, "host_key"));
		if (!ssh_looks_private(hk) &&
		    ssh_hostkey_parse(hk ? hk : "", &x->hostkey, err, sizeof(err))) {
			snprintf(path, sizeof(path), "/hosts/%zu/host_key", i);
			sink_error(s, path, "invalid host_key", "%s", err);
		}
		const char *pj = json_string_value(json_object_get(h, "proxy_jump"));
		const char *pjk = json_string_value(json_object_get(h, "proxy_jump_host_key"));
		if (pj) {
			snprintf(path, sizeof(path), "/hosts/%zu/proxy_jump", i);
			if (parse_jump(pj, x, err, sizeof(err)))
				sink_error(s, path, "invalid proxy_jump", "%s", err);
			snprintf(path, sizeof(path), "/hosts/%zu/proxy_jump_host_key", i);
			if (!pjk)
				sink_error(
				    s, path, "missing proxy_jump_host_key",
				    "the jump host's key is required too: there is no trust on first use");
			else if (!ssh_looks_private(pjk) &&
			         ssh_hostkey_parse(pjk, &x->jump_key, err, sizeof(err)))
				sink_error(s, path, "invalid proxy_jump_host_key", "%s", err);
		} else if (pjk) {
			snprintf(path, sizeof(path), "/hosts/%zu/proxy_jump_host_key", i);
			sink_error(s, path, "proxy_jump_host_key without proxy_jump",
			           "set proxy_jump too, or remove this");
		}
		if (!region || !x->region[0]) {
			x->region = DEFAULT_REGION;
		}
		if (s->n)
			continue;
		ssh_host_id(x->user, x->address, x->port, x->id);
		snprintf(x->label, sizeof(x->label), "%s@%s:%d", x->user, x->address, x->port);
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->hosts[j].id, x->id) == 0) {
				snprintf(path, sizeof(path), "/hosts/%zu", i);
				sink_error(s, path, "duplicate host", "%s is also /hosts/%zu", x->label, j);
			}
	}
	const char *placement = json_string_value(json_object_get(c->root, "placement"));
	c->cluster = placement && strcmp(placement, "cluster") == 0;
	c->probe_ttl_ms = drv_call_config_int(call, "probe_ttl_s", DEFAULT_PROBE_TTL_S) * 1000;
	c->probe_timeout_ms = drv_call_config_int(call, "probe_timeout_s", DEFAULT_PROBE_TIMEOUT_S) * 1000;
	c->disk_path = drv_call_config_string(call, "disk_path", "");
	c->setup = drv_call_config_string(call, "setup", NULL);
	c->cleanup = drv_call_config_string(call, "cleanup", NULL);
	c->require_sudo = drv_call_config_bool(call, "require_sudo", false);
	c->private_key = drv_call_secret(call, "private_key");
	c->passphrase = drv_call_secret(call, "passphrase");
	if (c->passphrase && !c->passphrase[0])
		c->passphrase = NULL;
	for (size_t i = 0; i < c->n_hosts; i++) {
		c->hosts[i].jump.private_key = c->private_key;
		c->hosts[i].jump.passphrase = c->passphrase;
		c->hosts[i].jump.hostkey = &c->hosts[i].jump_key;
	}
	if (c->disk_path && strchr(c->disk_path, '\n'))
		sink_error(s, "/disk_path", "invalid disk_path", "a path on one line");
	return s->n ? DRV_EINVAL : 0;
}

/* Loads the config for a provider call: INVALID_ARGUMENT with the path, or UNAUTHENTICATED without a key. */
static int begin(struct drv_call *call, struct cfg *c)
{
	char err[700] = "";
	struct diag_sink s = {.err = err, .errlen = sizeof(err)};
	int rc = cfg_load(call, c, &s);
	if (rc) {
		cfg_close(c);
		return drv_call_fail(call, rc, "%s", err);
	}
	if (!c->private_key || !c->private_key[0]) {
		cfg_close(c);
		return drv_call_fail(
		    call, DRV_EUNAUTHENTICATED,
		    "/secrets/private_key: the hosts are reached with the private_key secret, "
		    "which is missing");
	}
	return 0;
}

static struct ssh_target target_of(const struct cfg *c, const struct host *h)
{
	return (struct ssh_target){.address = h->address,
	                           .port = h->port,
	                           .user = h->user,
	                           .hostkey = &h->hostkey,
	                           .private_key = c->private_key,
	                           .passphrase = c->passphrase,
	                           .jump = h->has_jump ? &h->jump : NULL};
}

static bool call_cancelled(void *ud)
{
	return drv_call_cancelled(ud);
}

/* Limits of one host's work: its own timeout, inside the call's deadline. */
static struct ssh_limits limits_for(struct drv_call *call, int64_t host_timeout_ms)
{
	int64_t now = ssh_now_ms();
	int64_t left = drv_call_time_left_ms(call);
	int64_t deadline = now + host_timeout_ms;
	if (left != INT64_MAX && now + left - ANSWER_MARGIN_MS < deadline)
		deadline = now + left - ANSWER_MARGIN_MS;
	return (struct ssh_limits){.deadline_ms = deadline, .cancelled = call_cancelled, .ud = call};
}

static struct host *host_by_id(const struct cfg *c, const char *id12)
{
	for (size_t i = 0; i < c->n_hosts; i++)
		if (strncmp(c->hosts[i].id, id12, 12) == 0)
			return &c->hosts[i];
	return NULL;
}

/* Logs a command's stderr (a setup script's output) line by line, at most a few lines. */
static void log_stderr(struct drv_call *call, const struct host *h, const char *what, const char *text)
{
	int lines = 0;
	for (const char *p = text; p && *p && lines < 40; lines++) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);
		drv_call_log(call, DRV_LOG_INFO, "%s %s: %.*s", h->label, what, len > 300 ? 300 : len, p);
		p = nl ? nl + 1 : NULL;
	}
}

/* The value of `key=` in a command's output, copied into out (or "" when absent). */
static const char *out_value(const char *out, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);
	buf[0] = '\0';
	for (const char *p = out; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = ll - kl - 1;
			if (vl >= len)
				vl = len - 1;
			memcpy(buf, p + kl + 1, vl);
			buf[vl] = '\0';
			return buf;
		}
		p = nl ? nl + 1 : NULL;
	}
	return buf;
}

/* ---- probes and their cache ---- */

struct cached_probe {
	char key[700];
	int64_t at_ms;      /* when the probe answered; 0: never */
	bool ok;            /* the last probe worked */
	struct ssh_probe p; /* the last good probe's findings */
	char why[400];      /* why the last probe failed */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached_probe *cache;
static size_t n_cache;

static void cache_key(const struct cfg *c, const struct host *h, char *out, size_t len)
{
	struct ssh_target t = target_of(c, h);
	char k[600];
	ssh_target_key(&t, k, sizeof(k));
	snprintf(out, len, "%s|%s", k, c->disk_path ? c->disk_path : "");
}

static struct cached_probe *cache_find_locked(const char *key, bool create)
{
	for (size_t i = 0; i < n_cache; i++)
		if (strcmp(cache[i].key, key) == 0)
			return &cache[i];
	if (!create)
		return NULL;
	struct cached_probe *n = realloc(cache, (n_cache + 1) * sizeof(*cache));
	if (!n)
		return NULL;
	cache = n;
	struct cached_probe *e = &cache[n_cache++];
	memset(e, 0, sizeof(*e));
	snprintf(e->key, sizeof(e->key), "%s", key);
	return e;
}

/* Forgets a host's probe (its claim changed), keeping the resources for a later failed probe. */
static void cache_expire(const struct cfg *c, const struct host *h)
{
	char key[700];
	cache_key(c, h, key, sizeof(key));
	pthread_mutex_lock(&cache_lock);
	struct cached_probe *e = cache_find_locked(key, false);
	if (e)
		e->at_ms = 0;
	pthread_mutex_unlock(&cache_lock);
}

struct probe_job {
	struct drv_call *call;
	const struct cfg *c;
	const struct host *h;
	struct ssh_limits lim;
	struct ssh_probe p;
	bool ok;
	int rc;
	char why[400];
	pthread_t thread;
	bool started;
};

static void *probe_main(void *arg)
{
	struct probe_job *j = arg;
	struct ssh_target t = target_of(j->c, j->h);
	struct ssh_result r;
	char input[4200];
	int n = snprintf(input, sizeof(input), "%s\n", j->c->disk_path ? j->c->disk_path : "");
	j->rc = ssh_run(&t, ssh_probe_script, input, (size_t)n, &j->lim, &r, j->why, sizeof(j->why));
	if (j->rc)
		return NULL;
	char err[200];
	if (r.exit_status != 0)
		snprintf(j->why, sizeof(j->why), "the probe exited with status %d: %.200s", r.exit_status,
		         r.err);
	else if (ssh_probe_parse(r.out, &j->p, err, sizeof(err)))
		snprintf(j->why, sizeof(j->why), "%s", err);
	else
		j->ok = true;
	ssh_result_free(&r);
	return NULL;
}

static drv_offer *offer_of(struct drv_call *call, const struct host *h, const struct ssh_probe *p,
                           bool available)
{
	drv_offer *o = drv_new(call, offer);
	drv_resources *r = o ? drv_new(call, resources) : NULL;
	if (!r)
		return NULL;
	o->backend_type = "ssh";
	o->instance_type = drv_call_printf(call, "host-%s", h->id);
	/* Config strings die with the handler's cfg; the answer is sent after. */
	o->region = drv_call_strdup(call, h->region);
	o->price_per_hour = h->price;
	o->availability = available ? DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE
	                            : DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NOT_AVAILABLE;
	o->resources = r;
	r->cpus = p->cpus;
	r->memory_mib = p->memory_mib;
	r->disk_mib = p->disk_mib;
	r->cpu_arch = drv_call_strdup(call, p->arch);
	if (p->n_gpus) {
		r->gpus = drv_call_ptrs(call, p->n_gpus);
		if (!r->gpus)
			return NULL;
		for (size_t i = 0; i < p->n_gpus; i++) {
			drv_gpu *g = drv_new(call, gpu);
			if (!g)
				return NULL;
			g->name = drv_call_strdup(call, p->gpus[i].name);
			g->vendor = drv_call_strdup(call, p->gpus[i].vendor);
			g->memory_mib = p->gpus[i].memory_mib;
			g->count = p->gpus[i].count;
			r->gpus[r->n_gpus++] = g;
		}
	}
	if (!o->instance_type || !o->region || !r->cpu_arch)
		return NULL;
	return o;
}

/*
 * Probes every host whose cached probe is older than probe_ttl_s, all at
 * once, each within its own deadline inside the call's; then reads each
 * host's state from the cache into probes[i] and ok[i].
 */
static void probe_hosts(struct drv_call *call, const struct cfg *c, struct ssh_probe *probes, bool *ok,
                        bool *known, char (*why)[400])
{
	struct probe_job *jobs = calloc(c->n_hosts, sizeof(*jobs));
	int64_t now = ssh_now_ms();
	for (size_t i = 0; jobs && i < c->n_hosts; i++) {
		char key[700];
		cache_key(c, &c->hosts[i], key, sizeof(key));
		pthread_mutex_lock(&cache_lock);
		struct cached_probe *e = cache_find_locked(key, false);
		bool fresh = e && e->at_ms && now - e->at_ms < c->probe_ttl_ms;
		pthread_mutex_unlock(&cache_lock);
		if (fresh)
			continue;
		jobs[i] = (struct probe_job){
		    .call = call, .c = c, .h = &c->hosts[i], .lim = limits_for(call, c->probe_timeout_ms)};
		jobs[i].started = pthread_create(&jobs[i].thread, NULL, probe_main, &jobs[i]) == 0;
		if (!jobs[i].started)
			snprintf(jobs[i].why, sizeof(jobs[i].why), "could not start a probe thread");
	}
	for (size_t i = 0; jobs && i < c->n_hosts; i++) {
		if (!jobs[i].h)
			continue;
		if (jobs[i].started)
			pthread_join(jobs[i].thread, NULL);
		char key[700];
		cache_key(c, &c->hosts[i], key, sizeof(key));
		pthread_mutex_lock(&cache_lock);
		struct cached_probe *e = cache_find_locked(key, true);
		if (e) {
			e->at_ms = ssh_now_ms();
			e->ok = jobs[i].ok;
			if (jobs[i].ok)
				e->p = jobs[i].p;
			snprintf(e->why, sizeof(e->why), "%s", jobs[i].ok ? "" : jobs[i].why);
			/* A failed probe is tried again at the next call, not after the TTL. */
			if (!jobs[i].ok)
				e->at_ms = 0;
		}
		pthread_mutex_unlock(&cache_lock);
		if (!jobs[i].ok)
			drv_call_log(call, DRV_LOG_WARN, "host %s (/hosts/%zu) is not available: %s",
			             c->hosts[i].label, i, jobs[i].why);
	}
	for (size_t i = 0; i < c->n_hosts; i++) {
		char key[700];
		cache_key(c, &c->hosts[i], key, sizeof(key));
		pthread_mutex_lock(&cache_lock);
		struct cached_probe *e = cache_find_locked(key, false);
		ok[i] = e && e->ok;
		known[i] = e && e->p.cpus > 0;
		if (e)
			probes[i] = e->p;
		snprintf(why[i], sizeof(why[i]), "%s", e ? e->why : (jobs ? jobs[i].why : "out of memory"));
		pthread_mutex_unlock(&cache_lock);
	}
	free(jobs);
}

static int get_offers(struct drv_call *call, const drv_get_offers_request *req, drv_get_offers_response *resp)
{
	struct cfg c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	struct ssh_probe *probes = calloc(c.n_hosts, sizeof(*probes));
	bool *ok = calloc(c.n_hosts, sizeof(*ok) * 2);
	char(*why)[400] = calloc(c.n_hosts, sizeof(*why));
	resp->offers = drv_call_ptrs(call, c.n_hosts);
	if (!probes || !ok || !why || !resp->offers) {
		rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
		goto out;
	}
	bool *known = ok + c.n_hosts;
	probe_hosts(call, &c, probes, ok, known, why);
	for (size_t i = 0; i < c.n_hosts; i++) {
		const struct host *h = &c.hosts[i];
		if (!known[i]) {
			drv_call_log(
			    call, DRV_LOG_WARN,
			    "host %s (/hosts/%zu) has never answered a probe, so it has no offer: %s",
			    h->label, i, why[i]);
			continue;
		}
		bool available = ok[i] && !probes[i].claimed;
		if (ok[i] && probes[i].claimed)
			drv_call_log(call, DRV_LOG_DEBUG, "host %s is claimed: %.200s", h->label,
			             probes[i].claim);
		drv_offer *o = offer_of(call, h, &probes[i], available);
		if (!o) {
			rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
			goto out;
		}
		if (drv_offer_matches(o, req->requirements))
			resp->offers[resp->n_offers++] = o;
	}
out:
	free(probes);
	free(ok);
	free(why);
	cfg_close(&c);
	return rc;
}

/* ---- instances ---- */

/*
 * Keys this process has seen holding a host (from creates and listings):
 * a key reused with another host's offer is ALREADY_EXISTS. The hosts'
 * claims are the truth; this only spares asking every host at each create.
 */
#define KEYS_MAX 4096
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static struct seen_key {
	char key[256];
	char instance_id[32];
} seen_keys[KEYS_MAX];
static size_t n_seen, seen_next;

static void key_remember(const char *key, const char *instance_id)
{
	if (strlen(key) >= sizeof(seen_keys[0].key))
		return;
	pthread_mutex_lock(&keys_lock);
	size_t i = 0;
	while (i < n_seen && strcmp(seen_keys[i].key, key) != 0)
		i++;
	if (i == n_seen) {
		if (n_seen < KEYS_MAX)
			i = n_seen++;
		else
			i = seen_next++ % KEYS_MAX;
	}
	snprintf(seen_keys[i].key, sizeof(seen_keys[i].key), "%s", key);
	snprintf(seen_keys[i].instance_id, sizeof(seen_keys[i].instance_id), "%s", instance_id);
	pthread_mutex_unlock(&keys_lock);
}

static void key_forget_instance(const char *instance_id)
{
	pthread_mutex_lock(&keys_lock);
	for (size_t i = 0; i < n_seen; i++)
		if (strcmp(seen_keys[i].instance_id, instance_id) == 0)
			seen_keys[i].instance_id[0] = '\0';
	pthread_mutex_unlock(&keys_lock);
}

/* The instance id a key is known to hold, or false. */
static bool key_lookup(const char *key, char out[32])
{
	bool found = false;
	pthread_mutex_lock(&keys_lock);
	for (size_t i = 0; i < n_seen && !found; i++)
		if (seen_keys[i].instance_id[0] && strcmp(seen_keys[i].key, key) == 0) {
			snprintf(out, 32, "%s", seen_keys[i].instance_id);
			found = true;
		}
	pthread_mutex_unlock(&keys_lock);
	return found;
}

static drv_provisioning_data *data_of(struct drv_call *call, const struct host *h, const char *instance_id,
                                      const char *ip)
{
	drv_provisioning_data *d = drv_new(call, provisioning_data);
	if (!d)
		return NULL;
	d->instance_id = drv_call_strdup(call, instance_id);
	d->instance_type = drv_call_printf(call, "host-%s", h->id);
	d->state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING;
	/* The address the driver reaches the host by: the one a user's ssh can use too. */
	d->hostname = drv_call_strdup(call, h->address);
	d->internal_ip = drv_call_strdup(call, ip && ip[0] ? ip : h->address);
	d->region = drv_call_strdup(call, h->region);
	d->price_per_hour = h->price;
	d->username = drv_call_strdup(call, h->user);
	d->ssh_port = (uint32_t)h->port;
	if (!d->instance_id || !d->instance_type || !d->internal_ip || !d->hostname || !d->region ||
	    !d->username)
		return NULL;
	return d;
}

/* "N\nkey\nkey\n" of the request's public keys; INVALID_ARGUMENT for a key that is not one line of a key. */
static int keys_block(struct drv_call *call, const drv_instance_configuration *ic, char **out)
{
	size_t len = 32;
	for (size_t i = 0; i < ic->n_ssh_public_keys; i++) {
		if (!ssh_pubkey_line_ok(ic->ssh_public_keys[i]))
			return drv_call_fail(
			    call, DRV_EINVAL,
			    "instance.ssh_public_keys[%zu] is not one OpenSSH public key line "
			    "(\"ssh-ed25519 AAAA... comment\", comment of letters, digits and @._+=:-)",
			    i);
		len += strlen(ic->ssh_public_keys[i]) + 1;
	}
	char *b = drv_call_alloc(call, len);
	if (!b)
		return drv_call_fail(call, DRV_ENOMEM, "out of memory");
	size_t o = (size_t)snprintf(b, len, "%zu\n", ic->n_ssh_public_keys);
	for (size_t i = 0; i < ic->n_ssh_public_keys; i++)
		o += (size_t)snprintf(b + o, len - o, "%s\n", ic->ssh_public_keys[i]);
	*out = b;
	return 0;
}

static int fail_ssh(struct drv_call *call, const struct host *h, int rc, const char *err)
{
	/* DEADLINE_EXCEEDED and UNAVAILABLE are retried by the caller with the same key. */
	return drv_call_fail(call, rc == DRV_ECANCELLED ? DRV_EDEADLINE : rc, "host %s: %s", h->label, err);
}

static int create_instance(struct drv_call *call, const drv_create_instance_request *req,
                           drv_create_instance_response *resp)
{
	const drv_instance_configuration *ic = req->instance;
	if (!ic || !ic->idempotency_key || !ic->idempotency_key[0])
		return drv_call_fail(call, DRV_EINVAL, "instance.idempotency_key is required");
	if (!req->offer || strncmp(req->offer->instance_type, "host-", 5) != 0 ||
	    strlen(req->offer->instance_type) != 17)
		return drv_call_fail(call, DRV_EINVAL,
		                     "the offer is not one of this driver's (instance_type host-ID)");
	if (strlen(ic->idempotency_key) > 1024)
		return drv_call_fail(call, DRV_EINVAL, "instance.idempotency_key is longer than 1024 bytes");
	struct cfg c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	char *keys = NULL, *input = NULL, *claim = NULL;
	json_t *tags = NULL;
	struct ssh_result r = {0};
	struct host *h = host_by_id(&c, req->offer->instance_type + 5);
	if (!h) {
		rc = drv_call_fail(call, DRV_EINVAL, "the offer's host %s is not in the config's hosts",
		                   req->offer->instance_type);
		goto out;
	}
	if ((rc = keys_block(call, ic, &keys)))
		goto out;
	char held[32];
	if (key_lookup(ic->idempotency_key, held) && strncmp(held + 4, h->id, 12) != 0) {
		rc = drv_call_fail(
		    call, DRV_EEXIST,
		    "idempotency key \"%.100s\" already made instance %s on another host; a key "
		    "names one instance",
		    ic->idempotency_key, held);
		goto out;
	}
	unsigned char rnd[4];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		rc = drv_call_fail(call, DRV_EINTERNAL, "getrandom failed");
		goto out;
	}
	char id[32];
	snprintf(id, sizeof(id), "ssh-%s-%02x%02x%02x%02x", h->id, rnd[0], rnd[1], rnd[2], rnd[3]);
	tags = json_object();
	for (size_t i = 0; tags && i < ic->n_tags; i++)
		json_object_set_new(tags, ic->tags[i]->key, json_string(ic->tags[i]->value));
	claim = ssh_claim_format(id, ic->idempotency_key, ic->name, ic->project, tags, (int64_t)time(NULL));
	if (claim && strlen(claim) > SSH_CLAIM_MAX) {
		rc = drv_call_fail(
		    call, DRV_EINVAL,
		    "the instance's name, project, tags and idempotency key take %zu bytes as a claim; "
		    "at most %d",
		    strlen(claim), SSH_CLAIM_MAX);
		goto out;
	}
	const char *setup = c.setup && c.setup[0] ? c.setup : NULL;
	size_t in_len = (claim ? strlen(claim) : 0) + strlen(keys) + (setup ? strlen(setup) : 0) + 8;
	input = malloc(in_len);
	if (!claim || !input) {
		rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
		goto out;
	}
	int n = snprintf(input, in_len, "%s\n%s%s\n%s", claim, keys, setup ? "1" : "0", setup ? setup : "");
	struct ssh_target t = target_of(&c, h);
	struct ssh_limits lim = limits_for(call, INT64_MAX / 4);
	char err[700], v[SSH_CLAIM_MAX + 64];
	int trips = 0;
	rc = ssh_run(&t, SSH_SCRIPT_CREATE, input, (size_t)n, &lim, &r, err, sizeof(err));
	trips += r.round_trips;
	if (rc) {
		rc = fail_ssh(call, h, rc, err);
		goto out;
	}
	log_stderr(call, h, "setup", r.err);
	if (r.exit_status != 0) {
		rc = drv_call_fail(call, DRV_EUNAVAILABLE, "host %s: claiming failed with status %d: %.200s",
		                   h->label, r.exit_status, r.err);
		goto out;
	}
	cache_expire(&c, h);
	if (out_value(r.out, "setup_failed", v, sizeof(v))[0]) {
		rc = drv_call_fail(call, DRV_EUNAVAILABLE,
		                   "host %s: the setup script exited with status %s; the claim was undone",
		                   h->label, v);
		goto out;
	}
	out_value(r.out, "result", v, sizeof(v));
	if (strcmp(v, "held") == 0) {
		struct ssh_claim cl;
		char cerr[200];
		out_value(r.out, "claim", v, sizeof(v));
		if (ssh_claim_parse(v, &cl, cerr, sizeof(cerr))) {
			rc =
			    drv_call_fail(call, DRV_ENOCAPACITY,
			                  "host %s is held, and its claim is unreadable: %s", h->label, cerr);
			goto out;
		}
		if (strcmp(cl.idempotency_key, ic->idempotency_key) != 0) {
			rc = drv_call_fail(call, DRV_ENOCAPACITY, "host %s is held by instance %s", h->label,
			                   cl.instance_id);
			ssh_claim_close(&cl);
			goto out;
		}
		/* Ours from an earlier attempt: the keys again, and the same instance. */
		snprintf(id, sizeof(id), "%s", cl.instance_id);
		ssh_claim_close(&cl);
		ssh_result_free(&r);
		n = snprintf(input, in_len, "%s\n%s", id, keys);
		rc = ssh_run(&t, SSH_SCRIPT_REKEY, input, (size_t)n, &lim, &r, err, sizeof(err));
		trips += r.round_trips;
		if (rc) {
			rc = fail_ssh(call, h, rc, err);
			goto out;
		}
		out_value(r.out, "result", v, sizeof(v));
		if (r.exit_status != 0 || strcmp(v, "claimed") != 0) {
			rc = drv_call_fail(
			    call, DRV_EUNAVAILABLE,
			    "host %s: the claim of instance %s went away while its keys were put back",
			    h->label, id);
			goto out;
		}
	} else if (strcmp(v, "claimed") != 0) {
		rc = drv_call_fail(call, DRV_EUNAVAILABLE, "host %s: the claim answered \"%.100s\"", h->label,
		                   v);
		goto out;
	}
	key_remember(ic->idempotency_key, id);
	char ip[64];
	out_value(r.out, "ip", ip, sizeof(ip));
	resp->data = data_of(call, h, id, ip);
	if (!resp->data) {
		rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
		goto out;
	}
	drv_call_log(call, DRV_LOG_INFO, "instance %s holds host %s (%d SSH round trips)", id, h->label,
	             trips);
out:
	ssh_result_free(&r);
	free(input);
	free(claim);
	json_decref(tags);
	cfg_close(&c);
	return rc;
}

/* Reads a host's claim. 0 with *has set; or an error (already failed on the call). */
static int read_claim(struct drv_call *call, const struct cfg *c, const struct host *h, struct ssh_claim *cl,
                      bool *has, char *ip, size_t iplen)
{
	struct ssh_target t = target_of(c, h);
	struct ssh_limits lim = limits_for(call, c->probe_timeout_ms);
	struct ssh_result r;
	char err[700], v[SSH_CLAIM_MAX + 64];
	*has = false;
	int rc = ssh_run(&t, SSH_SCRIPT_READ, NULL, 0, &lim, &r, err, sizeof(err));
	if (rc)
		return fail_ssh(call, h, rc, err);
	out_value(r.out, "ip", ip, iplen);
	out_value(r.out, "claim", v, sizeof(v));
	ssh_result_free(&r);
	if (!v[0])
		return 0;
	char cerr[200];
	if (ssh_claim_parse(v, cl, cerr, sizeof(cerr))) {
		drv_call_log(call, DRV_LOG_WARN, "host %s: unreadable claim: %s", h->label, cerr);
		return 0;
	}
	*has = true;
	return 0;
}

static int get_instance(struct drv_call *call, const drv_get_instance_request *req,
                        drv_get_instance_response *resp)
{
	if (!req->instance_id || !req->instance_id[0])
		return drv_call_fail(call, DRV_EINVAL, "instance_id is required");
	if (!ssh_instance_id_ok(req->instance_id))
		return drv_call_fail(call, DRV_ENOTFOUND, "no instance %.100s (not an id of this driver)",
		                     req->instance_id);
	struct cfg c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	struct host *h = host_by_id(&c, req->instance_id + 4);
	if (!h) {
		rc = drv_call_fail(call, DRV_ENOTFOUND, "no instance %s: its host is not in the config",
		                   req->instance_id);
		goto out;
	}
	struct ssh_claim cl;
	bool has;
	char ip[64];
	if ((rc = read_claim(call, &c, h, &cl, &has, ip, sizeof(ip))))
		goto out;
	if (!has || strcmp(cl.instance_id, req->instance_id) != 0) {
		rc = drv_call_fail(call, DRV_ENOTFOUND, "no instance %s: host %s does not hold it",
		                   req->instance_id, h->label);
	} else {
		resp->data = data_of(call, h, cl.instance_id, ip);
		if (!resp->data)
			rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
	}
	if (has)
		ssh_claim_close(&cl);
out:
	cfg_close(&c);
	return rc;
}

static int terminate_instance(struct drv_call *call, const drv_terminate_instance_request *req,
                              drv_terminate_instance_response *resp)
{
	(void)resp;
	if (!req->instance_id || !req->instance_id[0])
		return drv_call_fail(call, DRV_EINVAL, "instance_id is required");
	/* An id this driver never made is an unknown instance: gone, as the protocol asks. */
	if (!ssh_instance_id_ok(req->instance_id))
		return 0;
	struct cfg c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	struct host *h = host_by_id(&c, req->instance_id + 4);
	char *input = NULL;
	struct ssh_result r = {0};
	if (!h)
		goto out;
	const char *cleanup = c.cleanup && c.cleanup[0] ? c.cleanup : NULL;
	size_t in_len = strlen(req->instance_id) + (cleanup ? strlen(cleanup) : 0) + 8;
	input = malloc(in_len);
	if (!input) {
		rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
		goto out;
	}
	int n = snprintf(input, in_len, "%s\n%s\n%s", req->instance_id, cleanup ? "1" : "0",
	                 cleanup ? cleanup : "");
	struct ssh_target t = target_of(&c, h);
	struct ssh_limits lim = limits_for(call, INT64_MAX / 4);
	char err[700], v[64];
	rc = ssh_run(&t, SSH_SCRIPT_TERMINATE, input, (size_t)n, &lim, &r, err, sizeof(err));
	if (rc) {
		rc = fail_ssh(call, h, rc, err);
		goto out;
	}
	log_stderr(call, h, "cleanup", r.err);
	if (r.exit_status != 0) {
		rc = drv_call_fail(call, DRV_EUNAVAILABLE, "host %s: releasing failed with status %d: %.200s",
		                   h->label, r.exit_status, r.err);
		goto out;
	}
	if (out_value(r.out, "cleanup_rc", v, sizeof(v))[0] && strcmp(v, "0") != 0)
		drv_call_log(call, DRV_LOG_WARN, "host %s: the cleanup script exited with status %s",
		             h->label, v);
	out_value(r.out, "result", v, sizeof(v));
	if (strcmp(v, "released") == 0)
		drv_call_log(call, DRV_LOG_INFO, "instance %s released host %s", req->instance_id, h->label);
	key_forget_instance(req->instance_id);
	cache_expire(&c, h);
out:
	ssh_result_free(&r);
	free(input);
	cfg_close(&c);
	return rc;
}

struct list_job {
	struct drv_call *call;
	const struct cfg *c;
	const struct host *h;
	struct ssh_limits lim;
	int rc;
	char err[700];
	char out[SSH_CLAIM_MAX + 512];
	pthread_t thread;
	bool started;
};

static void *list_main(void *arg)
{
	struct list_job *j = arg;
	struct ssh_target t = target_of(j->c, j->h);
	struct ssh_result r;
	j->rc = ssh_run(&t, SSH_SCRIPT_READ, NULL, 0, &j->lim, &r, j->err, sizeof(j->err));
	if (!j->rc) {
		snprintf(j->out, sizeof(j->out), "%s", r.out);
		ssh_result_free(&r);
	}
	return NULL;
}

static bool has_tags(json_t *tags, const drv_list_instances_request *req)
{
	for (size_t i = 0; i < req->n_tags; i++) {
		const char *v = json_string_value(json_object_get(tags, req->tags[i]->key));
		if (!v || strcmp(v, req->tags[i]->value) != 0)
			return false;
	}
	return true;
}

static int list_instances(struct drv_call *call, const drv_list_instances_request *req,
                          drv_list_instances_response *resp)
{
	struct cfg c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	struct list_job *jobs = calloc(c.n_hosts, sizeof(*jobs));
	resp->instances = drv_call_ptrs(call, c.n_hosts);
	if (!jobs || !resp->instances) {
		free(jobs);
		cfg_close(&c);
		return drv_call_fail(call, DRV_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < c.n_hosts; i++) {
		jobs[i] = (struct list_job){
		    .call = call, .c = &c, .h = &c.hosts[i], .lim = limits_for(call, c.probe_timeout_ms)};
		jobs[i].started = pthread_create(&jobs[i].thread, NULL, list_main, &jobs[i]) == 0;
		if (!jobs[i].started) {
			jobs[i].rc = DRV_EUNAVAILABLE;
			snprintf(jobs[i].err, sizeof(jobs[i].err), "could not start a thread");
		}
	}
	for (size_t i = 0; i < c.n_hosts; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].thread, NULL);
	/*
	 * A host that does not answer fails the whole list: a partial list would
	 * read as "that host's instance is gone".
	 */
	for (size_t i = 0; i < c.n_hosts && !rc; i++)
		if (jobs[i].rc)
			rc = fail_ssh(call, jobs[i].h,
			              jobs[i].rc == DRV_EPERM ? DRV_EUNAVAILABLE : jobs[i].rc, jobs[i].err);
	for (size_t i = 0; i < c.n_hosts && !rc; i++) {
		char v[SSH_CLAIM_MAX + 64], ip[64], cerr[200];
		struct ssh_claim cl;
		if (!out_value(jobs[i].out, "claim", v, sizeof(v))[0])
			continue;
		if (ssh_claim_parse(v, &cl, cerr, sizeof(cerr))) {
			drv_call_log(call, DRV_LOG_WARN, "host %s: unreadable claim: %s", c.hosts[i].label,
			             cerr);
			continue;
		}
		key_remember(cl.idempotency_key, cl.instance_id);
		if (has_tags(cl.tags, req)) {
			drv_listed_instance *li = drv_new(call, listed_instance);
			out_value(jobs[i].out, "ip", ip, sizeof(ip));
			if (li)
				li->data = data_of(call, &c.hosts[i], cl.instance_id, ip);
			if (li) {
				li->name = drv_call_strdup(call, cl.name);
				li->idempotency_key = drv_call_strdup(call, cl.idempotency_key);
				size_t nt = json_object_size(cl.tags);
				li->tags = nt ? drv_call_ptrs(call, nt) : NULL;
				const char *k;
				json_t *tv;
				json_object_foreach(cl.tags, k, tv)
				{
					Drover__Compute__V1__ListedInstance__TagsEntry *te =
					    li->tags
					        ? drv_call_message(
					              call,
					              &drover__compute__v1__listed_instance__tags_entry__descriptor)
					        : NULL;
					if (!te || !json_is_string(tv))
						continue;
					te->key = drv_call_strdup(call, k);
					te->value = drv_call_strdup(call, json_string_value(tv));
					li->tags[li->n_tags++] = te;
				}
			}
			if (!li || !li->data || !li->name || !li->idempotency_key)
				rc = drv_call_fail(call, DRV_ENOMEM, "out of memory");
			else
				resp->instances[resp->n_instances++] = li;
		}
		ssh_claim_close(&cl);
	}
	free(jobs);
	cfg_close(&c);
	return rc;
}

/* ---- validation, features ---- */

struct check_job {
	const struct cfg *c;
	const struct host *h;
	struct ssh_limits lim;
	int rc;
	bool no_sudo;
	char err[700];
	pthread_t thread;
	bool started;
};

static void *check_main(void *arg)
{
	struct check_job *j = arg;
	struct ssh_target t = target_of(j->c, j->h);
	struct ssh_result r;
	/* Fixed text: whether the login user may run sudo without a password. */
	const char *cmd =
	    j->c->require_sudo ? "sudo -n true </dev/null 2>&1 && echo sudo=ok || echo sudo=no" : "true";
	j->rc = ssh_run(&t, cmd, NULL, 0, &j->lim, &r, j->err, sizeof(j->err));
	if (j->rc)
		return NULL;
	char v[16];
	if (j->c->require_sudo && strcmp(out_value(r.out, "sudo", v, sizeof(v)), "ok") != 0) {
		j->no_sudo = true;
		snprintf(j->err, sizeof(j->err),
		         "require_sudo is set, but `sudo -n true` fails for %s: %.300s", j->h->label, r.out);
	}
	ssh_result_free(&r);
	return NULL;
}

/*
 * Offline checks first; with the private_key secret present, a bounded
 * connection to every host at once, each failure at its host's path.
 */
static int validate_config(struct drv_call *call, struct drv_diags *diags)
{
	struct cfg c;
	struct diag_sink s = {.d = diags};
	int rc = cfg_load(call, &c, &s);
	if (rc || !c.private_key || !c.private_key[0]) {
		cfg_close(&c);
		return rc == DRV_ENOMEM ? rc : 0;
	}
	struct check_job *jobs = calloc(c.n_hosts, sizeof(*jobs));
	if (!jobs) {
		cfg_close(&c);
		return DRV_ENOMEM;
	}
	for (size_t i = 0; i < c.n_hosts; i++) {
		jobs[i] = (struct check_job){
		    .c = &c, .h = &c.hosts[i], .lim = limits_for(call, c.probe_timeout_ms)};
		jobs[i].started = pthread_create(&jobs[i].thread, NULL, check_main, &jobs[i]) == 0;
	}
	for (size_t i = 0; i < c.n_hosts; i++) {
		char path[32];
		snprintf(path, sizeof(path), "/hosts/%zu", i);
		if (!jobs[i].started) {
			drv_diag_error(diags, path, "not checked", "could not start a thread");
			continue;
		}
		pthread_join(jobs[i].thread, NULL);
		const char *e = jobs[i].err;
		if (jobs[i].no_sudo)
			drv_diag_error(diags, path, "sudo missing", "%s", e);
		if (jobs[i].rc == 0)
			continue;
		if (strstr(e, "host key mismatch"))
			drv_diag_error(diags, path, "host key mismatch", "%s", e);
		else if (strstr(e, "authentication refused"))
			drv_diag_error(diags, path, "authentication refused", "%s", e);
		else if (jobs[i].rc == DRV_EUNAUTHENTICATED)
			drv_diag_error(diags, "/secrets/private_key", "private key unusable", "%s", e);
		else
			drv_diag_error(diags, path, "unreachable", "%s", e);
	}
	free(jobs);
	cfg_close(&c);
	return 0;
}

static void narrow_features(struct drv_call *call, drv_features *features)
{
	const char *placement = drv_call_config_string(call, "placement", "none");
	if (!placement || strcmp(placement, "cluster") != 0)
		*features &= ~DRV_FEATURE_BIT(DRV_FEATURE_MULTINODE);
}

static int start(void)
{
	return ssh_pool_start(MAX_PER_HOST);
}

static void stop(void)
{
	ssh_pool_stop();
	pthread_mutex_lock(&cache_lock);
	free(cache);
	cache = NULL;
	n_cache = 0;
	pthread_mutex_unlock(&cache_lock);
}

static const struct drv_compute_ops ops = {
    .version = DRV_COMPUTE_OPS_V1,
    .get_offers = get_offers,
    .create_instance = create_instance,
    .get_instance = get_instance,
    .terminate_instance = terminate_instance,
    .list_instances = list_instances,
};

const struct drv_driver ssh_driver = {
    .version = DRV_DRIVER_V1,
    .type = "ssh",
    .driver_version = "0.1.0",
    .description = "the operator's own machines over SSH: each host one offer, an instance a claim of a host",
    .ops = &ops,
    .config_fields = config_fields,
    .markers = DRV_FEATURE_BIT(DRV_FEATURE_MULTINODE),
    .validate_config = validate_config,
    .narrow_features = narrow_features,
    .start = start,
    .stop = stop,
};

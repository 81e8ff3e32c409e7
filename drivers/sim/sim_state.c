/*
 * The simulated cloud's state: one per state file, kept for the life of the
 * process in a registry, loaded from the file on first use and written back
 * atomically after every mutation, so it survives a driver restart the way a
 * real cloud's machines do.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "sim_core.h"
#include "xalloc.h"

#define STATE_FORMAT "drover-sim-state"
#define STATE_VERSION 1

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sim_state *registry;

/* ---- records ---- */

void sim_vec_push(struct sim_vec *v, void *item)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 16;
		v->items = xrealloc(v->items, v->cap * sizeof(*v->items), "the sim's list of records");
	}
	v->items[v->n++] = item;
}

void sim_vec_remove(struct sim_vec *v, size_t i)
{
	memmove(&v->items[i], &v->items[i + 1], (v->n - i - 1) * sizeof(*v->items));
	v->n--;
}

static void tags_free(struct sim_tag *tags, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(tags[i].key);
		free(tags[i].value);
	}
	free(tags);
}

void sim_instance_free(struct sim_instance *in)
{
	if (!in)
		return;
	free(in->id);
	free(in->idempotency_key);
	free(in->name);
	free(in->project);
	free(in->reservation);
	free(in->instance_type);
	free(in->region);
	free(in->zone);
	free(in->hostname);
	free(in->internal_ip);
	tags_free(in->tags, in->n_tags);
	free(in);
}

void sim_volume_free(struct sim_volume *v)
{
	if (!v)
		return;
	free(v->id);
	free(v->idempotency_key);
	free(v->name);
	free(v->project);
	free(v->region);
	free(v->zone);
	free(v->attached_instance_id);
	free(v->device_name);
	tags_free(v->tags, v->n_tags);
	free(v);
}

void sim_group_free(struct sim_placement_group *g)
{
	if (!g)
		return;
	free(g->name);
	free(g->region);
	free(g->project);
	free(g->group_id);
	free(g);
}

void sim_gateway_free(struct sim_gateway *g)
{
	if (!g)
		return;
	free(g->id);
	free(g->idempotency_key);
	free(g->name);
	free(g->project);
	free(g->region);
	free(g->ip_address);
	free(g->hostname);
	free(g);
}

static void state_clear(struct sim_state *st)
{
	for (size_t i = 0; i < st->instances.n; i++)
		sim_instance_free(st->instances.items[i]);
	for (size_t i = 0; i < st->volumes.n; i++)
		sim_volume_free(st->volumes.items[i]);
	for (size_t i = 0; i < st->groups.n; i++)
		sim_group_free(st->groups.items[i]);
	for (size_t i = 0; i < st->gateways.n; i++)
		sim_gateway_free(st->gateways.items[i]);
	st->instances.n = st->volumes.n = st->groups.n = st->gateways.n = 0;
	st->next_serial = 1;
}

static void state_free(struct sim_state *st)
{
	if (!st)
		return;
	state_clear(st);
	free(st->instances.items);
	free(st->volumes.items);
	free(st->groups.items);
	free(st->gateways.items);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	pthread_mutex_destroy(&st->mu);
	free(st->path);
	free(st);
}

uint64_t sim_state_serial(struct sim_state *st)
{
	return st->next_serial++;
}

/* ---- JSON ---- */

static json_t *tags_to_json(const struct sim_tag *tags, size_t n)
{
	json_t *o = json_object();
	for (size_t i = 0; o && i < n; i++)
		json_object_set_new(o, tags[i].key, json_string(tags[i].value));
	return o;
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *state_to_json(const struct sim_state *st)
{
	json_t *root = json_pack("{s:s, s:i, s:I}", "format", STATE_FORMAT, "version", STATE_VERSION,
	                         "next_serial", (json_int_t)st->next_serial);
	json_t *ins = json_array(), *vols = json_array(), *groups = json_array(), *gws = json_array();
	if (!root || !ins || !vols || !groups || !gws)
		goto fail;
	for (size_t i = 0; i < st->instances.n; i++) {
		const struct sim_instance *in = st->instances.items[i];
		json_t *o = json_pack(
		    "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:f, s:I, s:I, s:I, s:b, s:o}",
		    "id", in->id, "idempotency_key", in->idempotency_key, "name", in->name, "project",
		    in->project, "reservation", in->reservation, "instance_type", in->instance_type, "region",
		    in->region, "zone", in->zone, "hostname", in->hostname, "internal_ip", in->internal_ip,
		    "spot", in->spot, "price_per_hour", in->price, "created_ms", (json_int_t)in->created_ms,
		    "ready_ms", (json_int_t)in->ready_ms, "terminated_ms", (json_int_t)in->terminated_ms,
		    "terminated", in->terminated, "tags", tags_to_json(in->tags, in->n_tags));
		if (!o || json_array_append_new(ins, o))
			goto fail;
	}
	for (size_t i = 0; i < st->volumes.n; i++) {
		const struct sim_volume *v = st->volumes.items[i];
		json_t *o =
		    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:o}", "id", v->id,
		              "idempotency_key", v->idempotency_key, "name", v->name, "project", v->project,
		              "region", v->region, "zone", v->zone, "size_mib", (json_int_t)v->size_mib,
		              "attached_instance_id", str_or_null(v->attached_instance_id), "device_name",
		              str_or_null(v->device_name), "tags", tags_to_json(v->tags, v->n_tags));
		if (!o || json_array_append_new(vols, o))
			goto fail;
	}
	for (size_t i = 0; i < st->groups.n; i++) {
		const struct sim_placement_group *g = st->groups.items[i];
		json_t *o =
		    json_pack("{s:s, s:s, s:s, s:s, s:i}", "name", g->name, "region", g->region, "project",
		              g->project, "group_id", g->group_id, "strategy", g->strategy);
		if (!o || json_array_append_new(groups, o))
			goto fail;
	}
	for (size_t i = 0; i < st->gateways.n; i++) {
		const struct sim_gateway *g = st->gateways.items[i];
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:I}", "id", g->id,
		                      "idempotency_key", g->idempotency_key, "name", g->name, "project",
		                      g->project, "region", g->region, "ip_address", g->ip_address,
		                      "hostname", g->hostname, "public_ip", g->public_ip, "terminated",
		                      g->terminated, "terminated_ms", (json_int_t)g->terminated_ms);
		if (!o || json_array_append_new(gws, o))
			goto fail;
	}
	json_object_set_new(root, "instances", ins);
	json_object_set_new(root, "volumes", vols);
	json_object_set_new(root, "placement_groups", groups);
	json_object_set_new(root, "gateways", gws);
	return root;
fail:
	json_decref(ins);
	json_decref(vols);
	json_decref(groups);
	json_decref(gws);
	json_decref(root);
	return NULL;
}

/* A copy of string member `key`, or NULL (with *bad set) when absent or not a string. */
static char *get_str(json_t *o, const char *key, bool *bad)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v)) {
		*bad = true;
		return NULL;
	}
	return xstrdup(json_string_value(v), "a field of the sim state");
}

/* Like get_str, but JSON null (or absence) is a valid NULL. */
static char *get_opt_str(json_t *o, const char *key, bool *bad)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return NULL;
	return get_str(o, key, bad);
}

static int64_t get_int(json_t *o, const char *key, bool *bad)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v)) {
		*bad = true;
		return 0;
	}
	return json_integer_value(v);
}

static bool get_bool(json_t *o, const char *key, bool *bad)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_boolean(v)) {
		*bad = true;
		return false;
	}
	return json_is_true(v);
}

static struct sim_tag *get_tags(json_t *o, const char *key, size_t *n, bool *bad)
{
	json_t *t = json_object_get(o, key);
	*n = 0;
	if (!json_is_object(t)) {
		*bad = true;
		return NULL;
	}
	size_t count = json_object_size(t);
	struct sim_tag *tags = xcalloc(count ? count : 1, sizeof(*tags), "the tags of a sim record");
	const char *k;
	json_t *v;
	json_object_foreach(t, k, v)
	{
		if (!json_is_string(v)) {
			*bad = true;
			break;
		}
		tags[*n].key = xstrdup(k, "a tag of a sim record");
		tags[*n].value = xstrdup(json_string_value(v), "a tag of a sim record");
		(*n)++;
	}
	return tags;
}

static int state_from_json(struct sim_state *st, json_t *root, struct sim_err *e)
{
	const char *what = "top level";
	json_t *fmt = json_object_get(root, "format");
	if (!json_is_string(fmt) || strcmp(json_string_value(fmt), STATE_FORMAT) != 0)
		return sim_fail(e, DRV_EINVAL,
		                "state_file %s: not a sim state file (\"format\" is not \"%s\")", st->path,
		                STATE_FORMAT);
	json_t *ver = json_object_get(root, "version");
	if (!json_is_integer(ver) || json_integer_value(ver) != STATE_VERSION)
		return sim_fail(e, DRV_EINVAL,
		                "state_file %s: unsupported \"version\" (this driver reads %d)", st->path,
		                STATE_VERSION);
	bool bad = false;
	int64_t serial = get_int(root, "next_serial", &bad);
	json_t *ins = json_object_get(root, "instances"), *vols = json_object_get(root, "volumes");
	json_t *groups = json_object_get(root, "placement_groups"), *gws = json_object_get(root, "gateways");
	if (bad || serial < 1 || !json_is_array(ins) || !json_is_array(vols) || !json_is_array(groups) ||
	    !json_is_array(gws))
		goto bad;
	st->next_serial = (uint64_t)serial;
	size_t i;
	json_t *o;
	what = "instances";
	json_array_foreach(ins, i, o)
	{
		struct sim_instance *in = xcalloc(1, sizeof(*in), "a sim instance");
		sim_vec_push(&st->instances, in);
		in->id = get_str(o, "id", &bad);
		in->idempotency_key = get_str(o, "idempotency_key", &bad);
		in->name = get_str(o, "name", &bad);
		in->project = get_str(o, "project", &bad);
		/* Optional: files written before reservations were modelled lack it. */
		in->reservation = get_opt_str(o, "reservation", &bad);
		if (!in->reservation)
			in->reservation = xstrdup("", "a sim instance's field");
		in->instance_type = get_str(o, "instance_type", &bad);
		in->region = get_str(o, "region", &bad);
		in->zone = get_str(o, "zone", &bad);
		in->hostname = get_str(o, "hostname", &bad);
		in->internal_ip = get_str(o, "internal_ip", &bad);
		in->spot = get_bool(o, "spot", &bad);
		json_t *price = json_object_get(o, "price_per_hour");
		if (!json_is_number(price))
			bad = true;
		in->price = json_number_value(price);
		in->created_ms = get_int(o, "created_ms", &bad);
		in->ready_ms = get_int(o, "ready_ms", &bad);
		in->terminated_ms = get_int(o, "terminated_ms", &bad);
		in->terminated = get_bool(o, "terminated", &bad);
		in->tags = get_tags(o, "tags", &in->n_tags, &bad);
		if (bad)
			goto bad;
	}
	what = "volumes";
	json_array_foreach(vols, i, o)
	{
		struct sim_volume *v = xcalloc(1, sizeof(*v), "a sim volume");
		sim_vec_push(&st->volumes, v);
		v->id = get_str(o, "id", &bad);
		v->idempotency_key = get_str(o, "idempotency_key", &bad);
		v->name = get_str(o, "name", &bad);
		v->project = get_str(o, "project", &bad);
		v->region = get_str(o, "region", &bad);
		v->zone = get_str(o, "zone", &bad);
		int64_t size = get_int(o, "size_mib", &bad);
		v->size_mib = size > 0 ? (uint64_t)size : 0;
		v->attached_instance_id = get_opt_str(o, "attached_instance_id", &bad);
		v->device_name = get_opt_str(o, "device_name", &bad);
		v->tags = get_tags(o, "tags", &v->n_tags, &bad);
		if (bad || size <= 0 || !v->attached_instance_id != !v->device_name)
			goto bad;
	}
	what = "placement_groups";
	json_array_foreach(groups, i, o)
	{
		struct sim_placement_group *g = xcalloc(1, sizeof(*g), "a sim placement group");
		sim_vec_push(&st->groups, g);
		g->name = get_str(o, "name", &bad);
		g->region = get_str(o, "region", &bad);
		g->project = get_str(o, "project", &bad);
		g->group_id = get_str(o, "group_id", &bad);
		g->strategy = (int)get_int(o, "strategy", &bad);
		if (bad)
			goto bad;
	}
	what = "gateways";
	json_array_foreach(gws, i, o)
	{
		struct sim_gateway *g = xcalloc(1, sizeof(*g), "a sim gateway");
		sim_vec_push(&st->gateways, g);
		g->id = get_str(o, "id", &bad);
		g->idempotency_key = get_str(o, "idempotency_key", &bad);
		g->name = get_str(o, "name", &bad);
		g->project = get_str(o, "project", &bad);
		g->region = get_str(o, "region", &bad);
		g->ip_address = get_str(o, "ip_address", &bad);
		g->hostname = get_str(o, "hostname", &bad);
		g->public_ip = get_bool(o, "public_ip", &bad);
		g->terminated = get_bool(o, "terminated", &bad);
		/* Files written before gateways had it: the retention counts from now. */
		g->terminated_ms = json_object_get(o, "terminated_ms") ? get_int(o, "terminated_ms", &bad)
		                   : g->terminated                     ? sim_now_ms()
		                                                       : 0;
		if (bad)
			goto bad;
	}
	return 0;
bad:
	return sim_fail(e, DRV_EINVAL,
	                "state_file %s: malformed %s (a member is missing or has the wrong type)", st->path,
	                what);
}

static void stamp_of(const struct stat *sb, struct sim_file_stamp *out)
{
	*out = (struct sim_file_stamp){
	    .exists = true,
	    .dev = (uint64_t)sb->st_dev,
	    .ino = (uint64_t)sb->st_ino,
	    .size = (uint64_t)sb->st_size,
	    .mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec,
	};
}

static void stamp_take(const char *path, struct sim_file_stamp *out)
{
	struct stat sb;
	if (stat(path, &sb) == 0)
		stamp_of(&sb, out);
	else
		*out = (struct sim_file_stamp){.exists = false};
}

static bool stamp_equal(const struct sim_file_stamp *a, const struct sim_file_stamp *b)
{
	if (!a->exists || !b->exists)
		return a->exists == b->exists;
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

static int state_load(struct sim_state *st, struct sim_err *e)
{
	state_clear(st);
	st->stamp = (struct sim_file_stamp){.exists = false};
	if (!*st->path)
		return 0;
	/* Stamped before reading: a file replaced meanwhile only causes one more reload later. */
	struct stat sb;
	if (stat(st->path, &sb) != 0) {
		if (errno == ENOENT)
			return 0; /* a fresh cloud: the file appears with the first mutation */
		return sim_fail(e, DRV_EINVAL, "state_file %s: %s", st->path, strerror(errno));
	}
	stamp_of(&sb, &st->stamp);
	if (!S_ISREG(sb.st_mode))
		return sim_fail(e, DRV_EINVAL, "state_file %s: not a regular file", st->path);
	json_error_t jerr;
	json_t *root = json_load_file(st->path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return sim_fail(e, DRV_EINVAL, "state_file %s: not valid JSON at line %d: %s", st->path,
		                jerr.line, jerr.text);
	int rc = json_is_object(root) ? state_from_json(st, root, e)
	                              : sim_fail(e, DRV_EINVAL, "state_file %s: not a JSON object", st->path);
	json_decref(root);
	if (rc)
		state_clear(st);
	return rc;
}

/* Moves the records of `from` (a loaded temporary) into `to`, freeing `to`'s. */
static void state_take_contents(struct sim_state *to, struct sim_state *from)
{
	state_clear(to);
	free(to->instances.items);
	free(to->volumes.items);
	free(to->groups.items);
	free(to->gateways.items);
	to->instances = from->instances;
	to->volumes = from->volumes;
	to->groups = from->groups;
	to->gateways = from->gateways;
	to->next_serial = from->next_serial;
	to->stamp = from->stamp;
	from->instances = from->volumes = from->groups = from->gateways = (struct sim_vec){0};
}

/*
 * The lock between processes. A file of its own, because every save renames
 * a new inode over the state file (a lock on that would guard a file nobody
 * reads any more). It is never removed: unlinking a lock file lets two
 * processes hold locks on two different inodes. Best effort: where it cannot
 * be created (a read-only directory) no save can succeed either, and reads
 * need no lock since every version of the state file is complete.
 */
static void lock_file(struct sim_state *st)
{
	if (st->lock_fd < 0) {
		char *lp = xasprintf("the name of the state's lock file", "%s.lock", st->path);
		st->lock_fd = open(lp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		free(lp);
		if (st->lock_fd < 0)
			return;
	}
	while (flock(st->lock_fd, LOCK_EX) != 0 && errno == EINTR)
		;
}

void sim_state_lock(struct sim_state *st)
{
	pthread_mutex_lock(&st->mu);
	if (!*st->path)
		return;
	lock_file(st);
	struct sim_file_stamp now;
	stamp_take(st->path, &now);
	if (stamp_equal(&now, &st->stamp))
		return;
	struct sim_state tmp = {.path = st->path, .lock_fd = -1, .next_serial = 1};
	struct sim_err ignored;
	if (state_load(&tmp, &ignored) == 0)
		state_take_contents(st, &tmp);
	state_clear(&tmp);
	free(tmp.instances.items);
	free(tmp.volumes.items);
	free(tmp.groups.items);
	free(tmp.gateways.items);
}

void sim_state_unlock(struct sim_state *st)
{
	if (st->lock_fd >= 0)
		flock(st->lock_fd, LOCK_UN);
	pthread_mutex_unlock(&st->mu);
}

int sim_state_reload(struct sim_state *st, struct sim_err *e)
{
	return state_load(st, e);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int sim_state_save(struct sim_state *st, struct sim_err *e)
{
	if (!*st->path)
		return 0;
	json_t *root = state_to_json(st);
	char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(root);
	if (!text)
		return sim_fail(e, DRV_ENOMEM, "out of memory serialising the state");

	char *tmp = NULL, *dir_copy = NULL;
	int fd = -1, rc = 0;
	tmp = xasprintf("the name of the state's temporary file", "%s.tmp.%ld", st->path, (long)getpid());
	/*
	 * A fresh inode every time: whatever has the name (a temp file left by a
	 * crash, or a symlink someone planted next to a state file in a shared
	 * directory) is removed, never written through.
	 */
	if (unlink(tmp) != 0 && errno != ENOENT && errno != EISDIR) {
		rc = sim_fail(e, DRV_EUNAVAILABLE, "cannot write state file %s: remove old %s: %s", st->path,
		              tmp, strerror(errno));
		goto done;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = sim_fail(e, DRV_EUNAVAILABLE, "cannot write state file %s: create %s: %s", st->path, tmp,
		              strerror(errno));
		goto done;
	}
	size_t len = strlen(text);
	if (write_all(fd, text, len) || write_all(fd, "\n", 1) || fsync(fd) != 0) {
		rc = sim_fail(e, DRV_EUNAVAILABLE, "cannot write state file %s: write %s: %s", st->path, tmp,
		              strerror(errno));
		goto done;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = sim_fail(e, DRV_EUNAVAILABLE, "cannot write state file %s: close %s: %s", st->path, tmp,
		              strerror(errno));
		goto done;
	}
	fd = -1;
	if (rename(tmp, st->path) != 0) {
		rc = sim_fail(e, DRV_EUNAVAILABLE, "cannot write state file %s: rename: %s", st->path,
		              strerror(errno));
		goto done;
	}
	stamp_take(st->path, &st->stamp);
	/* The rename itself is durable only once the directory is synced. */
	dir_copy = xstrdup(st->path, "the state file's directory");
	int dfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
done:
	if (fd >= 0)
		close(fd);
	if (rc && tmp)
		unlink(tmp);
	free(dir_copy);
	free(tmp);
	free(text);
	return rc;
}

void sim_state_set_retention(struct sim_state *st, int64_t ms)
{
	atomic_store_explicit(&st->retention_ms, ms < 0 ? 0 : ms, memory_order_relaxed);
}

/* Drops the instances and gateways terminated at least the retention ago (state locked). */
static void forget_terminated(struct sim_state *st)
{
	int64_t keep = atomic_load_explicit(&st->retention_ms, memory_order_relaxed), now = sim_now_ms();
	size_t n = 0;
	for (size_t i = 0; i < st->instances.n; i++) {
		struct sim_instance *in = st->instances.items[i];
		if (in->terminated && now - in->terminated_ms >= keep)
			sim_instance_free(in);
		else
			st->instances.items[n++] = in;
	}
	st->instances.n = n;
	n = 0;
	for (size_t i = 0; i < st->gateways.n; i++) {
		struct sim_gateway *g = st->gateways.items[i];
		if (g->terminated && now - g->terminated_ms >= keep)
			sim_gateway_free(g);
		else
			st->gateways.items[n++] = g;
	}
	st->gateways.n = n;
}

int sim_state_commit(struct sim_state *st, struct sim_err *e)
{
	forget_terminated(st);
	int rc = sim_state_save(st, e);
	if (rc) {
		struct sim_err ignored;
		/* Memory must not run ahead of the file: undo by reading the last good one back. */
		sim_state_reload(st, &ignored);
	}
	return rc;
}

/*
 * The registry's key for a path: its directory resolved, so "./s.json" and
 * "/abs/s.json" share one state (two states on one file would lose updates).
 */
static char *canonical_path(const char *path)
{
	if (!*path)
		return xstrdup("", "a state file's path");
	char *d = xstrdup(path, "a state file's path"), *b = xstrdup(path, "a state file's path"), *out;
	char *real = realpath(dirname(d), NULL);
	const char *base = basename(b);
	if (real && strcmp(base, "/") != 0 && strcmp(base, ".") != 0 && strcmp(base, "..") != 0)
		out = xasprintf("a state file's path", "%s/%s", strcmp(real, "/") == 0 ? "" : real, base);
	else
		out = xstrdup(path, "a state file's path");
	free(real);
	free(d);
	free(b);
	return out;
}

int sim_state_get(const char *path, struct sim_state **out, struct sim_err *e)
{
	char *canon = canonical_path(path ? path : "");
	path = canon;
	pthread_mutex_lock(&registry_mu);
	struct sim_state *st;
	for (st = registry; st; st = st->next)
		if (strcmp(st->path, path) == 0)
			break;
	int rc = 0;
	if (!st) {
		st = xcalloc(1, sizeof(*st), "a sim state");
		st->path = xstrdup(path, "a state file's path");
		pthread_mutex_init(&st->mu, NULL);
		st->lock_fd = -1;
		st->next_serial = 1;
		atomic_init(&st->retention_ms, (int64_t)SIM_DEFAULT_TERMINATED_RETENTION_S * 1000);
		rc = state_load(st, e);
		if (rc) {
			/* Not kept: a fixed file is read again on the next call. */
			state_free(st);
			goto done;
		}
		st->next = registry;
		registry = st;
	}
	*out = st;
done:
	pthread_mutex_unlock(&registry_mu);
	free(canon);
	return rc;
}

void sim_state_registry_clear(void)
{
	pthread_mutex_lock(&registry_mu);
	while (registry) {
		struct sim_state *st = registry;
		registry = st->next;
		state_free(st);
	}
	pthread_mutex_unlock(&registry_mu);
}

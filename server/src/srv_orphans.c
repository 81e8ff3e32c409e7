/*
 * Orphans for srv_engine: machines listed with this server's tags that the
 * store does not hold as live. A listing is a driver's word, so nothing in it
 * is trusted blindly: only a machine whose signature tag verifies (droverd
 * made it, srv_secrets_sign_machine) is adopted, or terminated again when its
 * row ended; any other machine with droverd's tags is foreign, shown and
 * never touched; and each scan's work is capped per backend.
 */
#include "srv_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drover/driver.h"
#include "srv_config.h"
#include "srv_engine_internal.h"
#include "srv_log.h"
#include "srv_secrets.h"
#include "srv_store.h"
#include "srv_supervisor.h"

struct orphan_op {
	struct srv_engine *eng;
	char *project, *backend, *type;
	int64_t started; /* rows written since are newer than the listing */
};

static void orphan_op_free(struct orphan_op *op)
{
	free(op->project);
	free(op->backend);
	free(op->type);
	free(op);
}

/*
 * A driver's text for display: at most SRV_FOREIGN_FIELD_MAX bytes, every
 * byte outside printable ASCII as '?', so that no length, escape or broken
 * UTF-8 of a hostile listing reaches an answer or a terminal. NULL when out
 * of memory.
 */
static char *clean(const char *s)
{
	size_t n = s ? strnlen(s, SRV_FOREIGN_FIELD_MAX) : 0;
	char *c = malloc(n + 1);
	if (!c)
		return NULL;
	for (size_t i = 0; i < n; i++)
		c[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	c[n] = '\0';
	return c;
}

static void machine_clear(struct srv_foreign_machine *m)
{
	free(m->instance_id);
	free(m->tag_instance);
	free(m->name);
	free(m->region);
	free(m->instance_type);
}

static void scan_clear(struct srv_foreign_scan *f)
{
	for (size_t i = 0; i < f->n_machines; i++)
		machine_clear(&f->machines[i]);
	free(f->machines);
	free(f->project);
	free(f->backend);
	free(f->backend_type);
}

void srv__foreign_clear(struct srv_engine *eng)
{
	for (size_t i = 0; i < eng->n_foreign; i++)
		scan_clear(&eng->foreign[i]);
	free(eng->foreign);
	eng->foreign = NULL;
	eng->n_foreign = 0;
}

const struct srv_foreign_scan *srv_engine_foreign_scans(const struct srv_engine *eng, size_t *n)
{
	*n = eng->n_foreign;
	return eng->foreign;
}

static void scan_drop(struct srv_engine *eng, size_t i)
{
	scan_clear(&eng->foreign[i]);
	eng->foreign[i] = eng->foreign[--eng->n_foreign];
}

/* Replaces the backend's last scan by `f` (taken; total 0: only the old one goes). */
static void scan_keep(struct srv_engine *eng, struct srv_foreign_scan *f)
{
	for (size_t i = 0; i < eng->n_foreign; i++)
		if (strcmp(eng->foreign[i].project, f->project) == 0 &&
		    strcmp(eng->foreign[i].backend, f->backend) == 0) {
			scan_drop(eng, i);
			break;
		}
	if (f->total == 0) {
		scan_clear(f);
		return;
	}
	struct srv_foreign_scan *v = realloc(eng->foreign, (eng->n_foreign + 1) * sizeof(*v));
	if (!v) {
		srv_warn("engine", "backend %s/%s: out of memory keeping its foreign machines", f->project,
		         f->backend);
		scan_clear(f);
		return;
	}
	eng->foreign = v;
	eng->foreign[eng->n_foreign++] = *f;
}

/* Appends one foreign machine to f's kept list (room for it is there); out of memory: only counted. */
static void keep_machine(struct srv_foreign_scan *f, const drv_listed_instance *li, const char *iid,
                         const char *reason)
{
	const drv_provisioning_data *d = li->data;
	struct srv_foreign_machine m = {.instance_id = clean(d ? d->instance_id : NULL),
	                                .tag_instance = clean(iid),
	                                .name = clean(li->name),
	                                .region = clean(d ? d->region : NULL),
	                                .instance_type = clean(d ? d->instance_type : NULL),
	                                .reason = reason};
	if (!m.instance_id || !m.tag_instance || !m.name || !m.region || !m.instance_type) {
		machine_clear(&m);
		return;
	}
	f->machines[f->n_machines++] = m;
}

/* Adopted and shown, never silently dropped: it may be billed. */
static void adopt(struct orphan_op *op, const drv_listed_instance *li, const char *iid)
{
	struct srv_engine *eng = op->eng;
	struct srv_instance in = {.id = (char *)iid,
	                          .project = op->project,
	                          .backend = op->backend,
	                          .backend_type = op->type,
	                          .name = li->name && li->name[0] ? li->name : (char *)iid,
	                          .status = SRV_ST_RUNNING,
	                          .next_check_at = srv__running_check_at(eng),
	                          .idempotency_key = li->idempotency_key ? li->idempotency_key : "",
	                          .last_error =
	                              "orphan: found by ListInstances with this server's signed tags "
	                              "but missing from the store; adopted"};
	size_t len = 0;
	if (li->data && !(in.provisioning = srv__pack(&li->data->base, &len))) {
		/* Not adopted without its data: the next scan finds it again. */
		srv_warn("engine", "orphan %s: out of memory adopting it; trying again", iid);
		return;
	}
	in.provisioning_len = len;
	srv__put_or_log(eng, &in);
	free(in.provisioning);
	srv_engine_event(eng, SRV_EVENT_WARNING, "instance.orphan_adopted", op->project, iid, op->backend,
	                 op->type, "machine %s on backend %s was not in the store; adopted",
	                 li->data && li->data->instance_id ? li->data->instance_id : "?", op->backend);
}

/*
 * A machine droverd made, listed alive, whose row ended: a failed or lying
 * termination (or a refusal that made a machine after all). The row goes
 * back to "terminating", aimed at the listed machine.
 */
static void revive(struct orphan_op *op, struct srv_instance *row, const drv_listed_instance *li)
{
	struct srv_engine *eng = op->eng;
	char was[16];
	snprintf(was, sizeof(was), "%s", row->status);
	const drv_provisioning_data *d = li->data;
	bool has_id = d && d->instance_id && d->instance_id[0];
	if ((has_id && srv__set_blob(&row->provisioning, &row->provisioning_len, &d->base) < 0) ||
	    srv__set_str(&row->status, SRV_ST_TERMINATING) < 0 ||
	    srv__set_str(&row->last_error, "listed alive by ListInstances after it ended; terminating it "
	                                   "again") < 0) {
		/* Still ended in the store: the next scan finds it again. */
		srv_warn("engine", "instance %s: out of memory terminating it again", row->id);
		return;
	}
	srv__termination_reset(row);
	row->terminated_at = 0;
	row->next_check_at = srv_now_ms();
	srv__put_or_log(eng, row);
	srv_engine_event(
	    eng, SRV_EVENT_WARNING, "instance.alive_after_termination", row->project, row->id, row->backend,
	    row->backend_type,
	    "backend %s lists its machine %s alive, signed by this server, while the store had it "
	    "%s; terminating it again",
	    op->backend, has_id ? d->instance_id : "?", was);
}

static void list_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct orphan_op *op = ud;
	struct srv_engine *eng = op->eng;
	if (code != 0 && !eng->stopped)
		/* Nothing is adopted or shown from a scan that failed; the next scan tries again. */
		srv_warn("engine", "orphan scan of backend %s/%s failed: %s: %s", op->project, op->backend,
		         drv_strerror(code), message ? message : "");
	if (code != 0 || !resp || eng->stopped)
		goto done;
	const drv_list_instances_response *r = (const drv_list_instances_response *)resp;
	struct srv_secrets *sec = srv_store_secrets(eng->st);
	size_t max_listed = (size_t)eng->cfg->orphan_max_listed;
	size_t max_adopted = (size_t)eng->cfg->orphan_max_adopted;
	size_t look = r->n_instances < max_listed ? r->n_instances : max_listed;
	size_t adopted = 0, waiting = 0, revived = 0, unusable = 0;
	char why[500], first_why[500] = "";
	struct srv_foreign_scan f = {.project = strdup(op->project),
	                             .backend = strdup(op->backend),
	                             .backend_type = strdup(op->type),
	                             .scanned_at = srv_now_ms()};
	size_t room = look < SRV_FOREIGN_KEPT ? look : SRV_FOREIGN_KEPT;
	f.machines = calloc(room + 1, sizeof(*f.machines));
	bool keep = f.project && f.backend && f.backend_type && f.machines;
	srv_store_begin(eng->st);
	for (size_t i = 0; i < look; i++) {
		const drv_listed_instance *li = r->instances[i];
		const char *server, *iid, *sig = NULL;
		/* Not claiming to be this server's: another server's machine, or a filter ignored. */
		if (!srv__listed_tag(li, SRV_TAG_SERVER, &server) || strcmp(server, eng->server_id) != 0 ||
		    !srv__listed_tag(li, SRV_TAG_INSTANCE, &iid))
			continue;
		bool has_sig = srv__listed_tag(li, SRV_TAG_SIGNATURE, &sig);
		bool verified =
		    has_sig && srv_secrets_verify_machine(sec, iid, op->project, op->backend, sig);
		struct srv_instance *known = NULL;
		if (srv_store_instance_get(eng->st, iid, &known) < 0) {
			srv_error("engine", "orphan scan of %s/%s: %s", op->project, op->backend,
			          srv_store_errmsg(eng->st));
			continue;
		}
		bool here = known && strcmp(known->project, op->project) == 0 &&
		            strcmp(known->backend, op->backend) == 0;
		bool ended = known && (strcmp(known->status, SRV_ST_TERMINATED) == 0 ||
		                       strcmp(known->status, SRV_ST_FAILED) == 0);
		bool alive = !li->data || li->data->state !=
		                              DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED;
		if (!verified && !(here && !ended)) {
			/* A live row of this backend is its own proof; anything else unsigned is foreign. */
			if (keep && f.n_machines < room)
				keep_machine(&f, li, iid,
				             has_sig ? "the signature does not verify" : "no signature");
			f.total++;
		} else if (verified && !known) {
			/* Data droverd could not use (to terminate it, to show it) never becomes a row. */
			if (li->data && srv__check_provisioning(li->data, why, sizeof(why)) < 0) {
				if (unusable++ == 0)
					snprintf(first_why, sizeof(first_why), "%s", why);
			} else if (adopted < max_adopted) {
				adopt(op, li, iid);
				adopted++;
			} else {
				waiting++;
			}
		} else if (verified && here && ended && alive && known->updated_at < op->started) {
			/* Ended before the listing was asked for: the listing is newer than the row. */
			revive(op, known, li);
			revived++;
		}
		srv_instance_free(known);
	}
	if (f.total)
		srv_engine_event(
		    eng, SRV_EVENT_WARNING, "orphan.foreign", op->project, NULL, op->backend, op->type,
		    "%zu machine(s) listed by backend %s carry this server's tags without a valid "
		    "signature: not adopted, never terminated by drover; drover instance list "
		    "--foreign shows them",
		    f.total, op->backend);
	if (look < r->n_instances || waiting)
		srv_engine_event(
		    eng, SRV_EVENT_WARNING, "orphan.scan_capped", op->project, NULL, op->backend, op->type,
		    "backend %s listed %zu machine(s) with this server's tag; this scan looked at %zu "
		    "(provisioning.orphan_max_listed) and adopted %zu (orphan_max_adopted); %zu "
		    "adoption(s) wait for the next scan",
		    op->backend, r->n_instances, look, adopted, waiting);
	if (unusable)
		srv_warn(
		    "engine",
		    "backend %s/%s: %zu signed machine(s) missing from the store were not adopted: their "
		    "data failed droverd's check (the first: %s)",
		    op->project, op->backend, unusable, first_why);
	srv_store_commit(eng->st);
	if (revived)
		srv__engine_kick(eng);
	if (keep) {
		scan_keep(eng, &f);
	} else {
		srv_warn("engine", "backend %s/%s: out of memory keeping its foreign machines", op->project,
		         op->backend);
		scan_clear(&f);
	}
done:
	if (resp)
		drv_response_free(resp);
	eng->busy--;
	orphan_op_free(op);
}

/* Forgets the kept foreign machines of backends that are gone. */
static void drop_removed(struct srv_engine *eng, struct srv_backend **bes, size_t n)
{
	for (size_t i = 0; i < eng->n_foreign;) {
		bool found = false;
		for (size_t k = 0; k < n && !found; k++)
			found = strcmp(bes[k]->project, eng->foreign[i].project) == 0 &&
			        strcmp(bes[k]->name, eng->foreign[i].backend) == 0;
		if (found)
			i++;
		else
			scan_drop(eng, i);
	}
}

void srv_engine_find_orphans(struct srv_engine *eng)
{
	struct srv_backend **bes;
	size_t n;
	eng->last_orphan_scan = srv_now_ms();
	if (srv_store_backend_list(eng->st, NULL, &bes, &n) < 0)
		return;
	drop_removed(eng, bes, n);
	for (size_t i = 0; i < n; i++) {
		/* Only drivers that are up: an orphan scan never starts a driver by itself. */
		if (srv_supervisor_state(eng->sup, bes[i]->type) != SRV_DRIVER_READY)
			continue;
		struct orphan_op *op = calloc(1, sizeof(*op));
		if (op) {
			op->eng = eng;
			op->project = strdup(bes[i]->project);
			op->backend = strdup(bes[i]->name);
			op->type = strdup(bes[i]->type);
			op->started = srv_now_ms();
		}
		struct drv_backend_config_buf bc;
		if (!op || !op->project || !op->backend || !op->type || srv_bcfg_init(&bc, bes[i]) < 0) {
			/* This backend is skipped this round; the next scan covers it. */
			srv_warn("engine", "backend %s/%s: out of memory for the orphan scan",
			         bes[i]->project, bes[i]->name);
			if (op)
				orphan_op_free(op);
			continue;
		}
		drv_list_instances_request req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
		Drover__Compute__V1__ListInstancesRequest__TagsEntry tag =
		    DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__TAGS_ENTRY__INIT;
		Drover__Compute__V1__ListInstancesRequest__TagsEntry *tagp = &tag;
		tag.key = SRV_TAG_SERVER;
		tag.value = eng->server_id;
		req.config = &bc.msg;
		req.n_tags = 1;
		req.tags = &tagp;
		eng->busy++;
		srv_supervisor_call(eng->sup, bes[i]->type, "ListInstances", &req.base,
		                    eng->cfg->call_timeout_ms, list_done, op);
		drv_backend_config_clear(&bc);
	}
	srv_backend_list_free(bes, n);
}

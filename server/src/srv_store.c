#include "srv_store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "srv_secrets.h"

/*
 * Ordered migrations: entry i takes the schema from version i to i+1. Never
 * edit a released entry; append a new one.
 */
static const char *const migrations[] = {
    /* 0 → 1 */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE projects(name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);"
    /* type is deliberately free text: no CHECK, no enum, no list. */
    "CREATE TABLE backends(project TEXT NOT NULL REFERENCES projects(name), name TEXT NOT NULL,"
    " type TEXT NOT NULL, config_json TEXT NOT NULL, secrets BLOB, source TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, PRIMARY KEY(project, name));"
    "CREATE TABLE instances(id TEXT PRIMARY KEY, project TEXT NOT NULL, backend TEXT NOT NULL,"
    " backend_type TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, offer BLOB,"
    " provisioning BLOB, idempotency_key TEXT NOT NULL, attempts TEXT NOT NULL DEFAULT '[]',"
    " last_error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX instances_project ON instances(project, created_at);"
    "CREATE INDEX instances_status ON instances(status);"
    "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, project TEXT,"
    " instance TEXT, kind TEXT NOT NULL, message TEXT NOT NULL);"
    "CREATE INDEX events_instance ON events(instance, id);",
    /* 1 → 2: what reconciliation needs. */
    "ALTER TABLE instances ADD COLUMN termination_failures INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN next_check_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN requirements BLOB;"
    "ALTER TABLE instances ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '[]';"
    "ALTER TABLE instances ADD COLUMN terminated_at INTEGER NOT NULL DEFAULT 0;"
    /* A forcibly removed backend's config and sealed secrets, kept for termination. */
    "ALTER TABLE instances ADD COLUMN backend_config TEXT;"
    "ALTER TABLE instances ADD COLUMN backend_secrets BLOB;"
    "CREATE INDEX instances_due ON instances(next_check_at) WHERE next_check_at > 0;"
    "CREATE INDEX instances_key ON instances(idempotency_key);"
    "CREATE INDEX instances_name ON instances(project, name);"
    "ALTER TABLE events ADD COLUMN level INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE events ADD COLUMN backend TEXT;"
    "ALTER TABLE events ADD COLUMN driver TEXT;",
    /* 2 → 3: a terminate asked for while the create call is out, kept until it ends. */
    "ALTER TABLE instances ADD COLUMN terminate_requested INTEGER NOT NULL DEFAULT 0;",
    /* 3 → 4: termination is observed, not believed (issue 12). */
    "ALTER TABLE instances ADD COLUMN termination_acked_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN termination_checks INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN termination_unconfirmed INTEGER NOT NULL DEFAULT 0;",
    /*
     * 4 → 5: the provider's machine id as a column of its own, so that the
     * check of every create (srv_store_instance_holding) is one index probe
     * rather than a scan of the backend's rows (quadratic in a filling store:
     * 10,000 creates took 80 s); and (created_at, id) for the keyset paging
     * of instance listings. provider_id is filled from the packed
     * provisioning data of every row by the function drover_provider_id,
     * which the store registers before migrating.
     */
    "ALTER TABLE instances ADD COLUMN provider_id TEXT;"
    "UPDATE instances SET provider_id = drover_provider_id(provisioning) WHERE provisioning IS NOT NULL;"
    "CREATE INDEX instances_provider ON instances(backend, provider_id) WHERE provider_id IS NOT NULL;"
    "CREATE INDEX instances_created ON instances(created_at, id);"
    /*
     * The attempts and ssh keys, JSON text until schema 4, become one packed
     * drover.state.v1.InstanceRecord (the API's Attempt messages), converted
     * by drover_instance_record.
     */
    "ALTER TABLE instances ADD COLUMN record BLOB;"
    "UPDATE instances SET record = drover_instance_record(attempts, ssh_keys);"
    "ALTER TABLE instances DROP COLUMN attempts;"
    "ALTER TABLE instances DROP COLUMN ssh_keys;",
};

#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))
_Static_assert(N_MIGRATIONS == SRV_STORE_SCHEMA_VERSION, "one migration per schema version");

#define INSTANCE_COLS                                                                                        \
	"id, project, backend, backend_type, name, status, offer, provisioning, idempotency_key, record,"    \
	" last_error, created_at, updated_at, termination_failures, next_check_at, requirements,"            \
	" terminated_at, terminate_requested, termination_acked_at, termination_checks,"                     \
	" termination_unconfirmed"

enum stmt_id {
	S_INSTANCE_PUT,
	S_INSTANCE_GET,
	S_EVENT_ADD,
	S_BACKEND_GET,
	S_HAS_KEY,
	S_COUNT,
};

struct srv_store {
	sqlite3 *db;
	struct srv_secrets *secrets;
	sqlite3_stmt *stmts[S_COUNT];
	/* Every other statement, prepared once and kept: keyed by its SQL literal's address. */
	struct {
		const char *sql;
		sqlite3_stmt *stmt;
	} cache[48];
	size_t n_cache;
	int tx_depth;
	bool in_batch; /* the outermost transaction is a batch (holds one level of tx_depth) */
	srv_store_batch_cb batch_cb;
	void *batch_ud;
	srv_store_commit_cb commit_cb;
	void *commit_ud;
	char err[512];
};

static const char *const stmt_sql[S_COUNT] = {
    /*
     * An upsert, not INSERT OR REPLACE: a replace deletes the row (and every
     * index entry) first, and would drop the columns this statement does not
     * set (a removed backend's config kept for termination).
     */
    [S_INSTANCE_PUT] =
        "INSERT INTO instances(id, project, backend, backend_type, name, status, offer,"
        " provisioning, idempotency_key, record, last_error, created_at, updated_at,"
        " termination_failures, next_check_at, requirements, terminated_at,"
        " terminate_requested, termination_acked_at, termination_checks, termination_unconfirmed,"
        " provider_id)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?18,?19,?20,?21,?22,?23)"
        " ON CONFLICT(id) DO UPDATE SET project=excluded.project, backend=excluded.backend,"
        " backend_type=excluded.backend_type, name=excluded.name, status=excluded.status,"
        " offer=excluded.offer, provisioning=excluded.provisioning,"
        " idempotency_key=excluded.idempotency_key, record=excluded.record,"
        " last_error=excluded.last_error, updated_at=excluded.updated_at,"
        " termination_failures=excluded.termination_failures, next_check_at=excluded.next_check_at,"
        " requirements=excluded.requirements,"
        " terminated_at=excluded.terminated_at, terminate_requested=excluded.terminate_requested,"
        " termination_acked_at=excluded.termination_acked_at, termination_checks=excluded.termination_checks,"
        " termination_unconfirmed=excluded.termination_unconfirmed, provider_id=excluded.provider_id",
    [S_INSTANCE_GET] = "SELECT " INSTANCE_COLS " FROM instances WHERE id = ?1",
    [S_EVENT_ADD] = "INSERT INTO events(ts, project, instance, kind, message, level, backend, driver)"
                    " VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
    [S_BACKEND_GET] = "SELECT project, name, type, config_json, secrets, source, created_at FROM backends"
                      " WHERE project = ?1 AND name = ?2",
    [S_HAS_KEY] = "SELECT 1 FROM instances WHERE idempotency_key = ?1 LIMIT 1",
};

int64_t srv_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_err(struct srv_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_err(struct srv_store *st, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(st->err, sizeof(st->err), fmt, ap);
	va_end(ap);
	return -1;
}

static int db_err(struct srv_store *st, const char *what)
{
	return set_err(st, "%s: %s", what, sqlite3_errmsg(st->db));
}

const char *srv_store_errmsg(const struct srv_store *st)
{
	return st->err;
}

struct srv_secrets *srv_store_secrets(const struct srv_store *st)
{
	return st->secrets;
}

static sqlite3_stmt *stmt(struct srv_store *st, enum stmt_id id)
{
	sqlite3_stmt *s = st->stmts[id];
	if (!s) {
		if (sqlite3_prepare_v3(st->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st->stmts[id],
		                       NULL) != SQLITE_OK) {
			db_err(st, "prepare");
			return NULL;
		}
		s = st->stmts[id];
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Same contract as sqlite3_prepare_v2 on a string literal, but prepared once per store. */
static int prep(struct srv_store *st, const char *sql, int len, sqlite3_stmt **out, const char **tail)
{
	for (size_t i = 0; i < st->n_cache; i++) {
		if (st->cache[i].sql == sql) {
			sqlite3_reset(st->cache[i].stmt);
			sqlite3_clear_bindings(st->cache[i].stmt);
			*out = st->cache[i].stmt;
			return SQLITE_OK;
		}
	}
	int rc = sqlite3_prepare_v3(st->db, sql, len, SQLITE_PREPARE_PERSISTENT, out, tail);
	if (rc == SQLITE_OK && st->n_cache < sizeof(st->cache) / sizeof(st->cache[0])) {
		st->cache[st->n_cache].sql = sql;
		st->cache[st->n_cache].stmt = *out;
		st->n_cache++;
	}
	return rc;
}

/* The end of a use of a statement from prep(): kept if cached, finalized if not. */
static void unprep(struct srv_store *st, sqlite3_stmt *s)
{
	for (size_t i = 0; i < st->n_cache; i++) {
		if (st->cache[i].stmt == s) {
			sqlite3_reset(s);
			return;
		}
	}
	sqlite3_finalize(s);
}

static int exec(struct srv_store *st, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		set_err(st, "%s", msg ? msg : sqlite3_errmsg(st->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

int srv_store_schema_version(struct srv_store *st)
{
	sqlite3_stmt *s;
	int v = -1;
	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return v;
}

/*
 * The machine id of packed provisioning data, without unpacking it:
 * protobuf-c packs fields by number, so a non-empty instance_id (field 1)
 * opens the blob as its key byte (0x0a), its length as a varint, then its
 * bytes. NULL when there is none (or the blob is cut short).
 */
static const unsigned char *pd_machine_id(const unsigned char *pd, size_t len, size_t *id_len)
{
	if (!pd || len < 2 || pd[0] != 0x0a)
		return NULL;
	uint64_t n = 0;
	size_t i = 1;
	for (int shift = 0; i < len && shift < 64; shift += 7) {
		unsigned char b = pd[i++];
		n |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			if (n == 0 || n > len - i)
				return NULL;
			*id_len = (size_t)n;
			return pd + i;
		}
	}
	return NULL;
}

/* drover_provider_id(provisioning) for the migration to schema 5. */
static void sql_provider_id(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	size_t n;
	const unsigned char *id =
	    pd_machine_id(sqlite3_value_blob(argv[0]), (size_t)sqlite3_value_bytes(argv[0]), &n);
	if (id)
		sqlite3_result_text(ctx, (const char *)id, (int)n, SQLITE_TRANSIENT);
	else
		sqlite3_result_null(ctx);
}

/*
 * drover_instance_record(attempts, ssh_keys) for the migration to schema 5:
 * the JSON text of schema 4 as one packed drover.state.v1.InstanceRecord
 * (NULL when both are empty). Damaged text is read as no entries, as
 * droverd read it before.
 */
static void sql_instance_record(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	const char *att_text = (const char *)sqlite3_value_text(argv[0]);
	const char *keys_text = (const char *)sqlite3_value_text(argv[1]);
	json_t *att = json_loads(att_text ? att_text : "[]", 0, NULL);
	json_t *keys = json_loads(keys_text ? keys_text : "[]", 0, NULL);
	size_t na = json_is_array(att) ? json_array_size(att) : 0;
	size_t nk = json_is_array(keys) ? json_array_size(keys) : 0;
	Drover__State__V1__InstanceRecord rec = DROVER__STATE__V1__INSTANCE_RECORD__INIT;
	Drover__Api__V1__Attempt *a = calloc(na + 1, sizeof(*a));
	Drover__Api__V1__Attempt **ap = calloc(na + 1, sizeof(*ap));
	char **kp = calloc(nk + 1, sizeof(*kp));
	if (!a || !ap || !kp) {
		sqlite3_result_error_nomem(ctx);
		goto out;
	}
	for (size_t i = 0; i < na; i++) {
		json_t *j = json_array_get(att, i);
		const char *str;
		drover__api__v1__attempt__init(&a[i]);
		a[i].number = (uint32_t)json_integer_value(json_object_get(j, "number"));
#define TEXT(field)                                                                                          \
	if ((str = json_string_value(json_object_get(j, #field))) != NULL)                                   \
		a[i].field = (char *)str;
		TEXT(backend)
		TEXT(instance_type)
		TEXT(region)
		TEXT(code)
		TEXT(message)
#undef TEXT
		a[i].price_per_hour = json_number_value(json_object_get(j, "price_per_hour"));
		a[i].started_unix_ms = json_integer_value(json_object_get(j, "started_unix_ms"));
		a[i].finished_unix_ms = json_integer_value(json_object_get(j, "finished_unix_ms"));
		ap[rec.n_attempts++] = &a[i];
	}
	for (size_t i = 0; i < nk; i++)
		if ((kp[rec.n_ssh_public_keys] = (char *)json_string_value(json_array_get(keys, i))) != NULL)
			rec.n_ssh_public_keys++;
	rec.attempts = ap;
	rec.ssh_public_keys = kp;
	size_t len = protobuf_c_message_get_packed_size(&rec.base);
	unsigned char *buf = len ? malloc(len) : NULL;
	if (len && !buf) {
		sqlite3_result_error_nomem(ctx);
		goto out;
	}
	if (len) {
		protobuf_c_message_pack(&rec.base, buf);
		sqlite3_result_blob(ctx, buf, (int)len, free);
	} else {
		sqlite3_result_null(ctx);
	}
out:
	free(a);
	free(ap);
	free(kp);
	json_decref(att);
	json_decref(keys);
}

static int migrate(struct srv_store *st)
{
	int v = srv_store_schema_version(st);
	if (v < 0)
		return db_err(st, "reading the schema version");
	if (v > (int)N_MIGRATIONS)
		return set_err(st, "the database has schema version %d, newer than this droverd knows (%d)",
		               v, (int)N_MIGRATIONS);
	for (; v < (int)N_MIGRATIONS; v++) {
		char pragma[64];
		/* Each step is one transaction: a crash mid-migration leaves the previous version intact. */
		if (exec(st, "BEGIN IMMEDIATE") < 0)
			return -1;
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
		if (exec(st, migrations[v]) < 0 || exec(st, pragma) < 0) {
			char *msg = strdup(st->err);
			exec(st, "ROLLBACK");
			set_err(st, "migration %d → %d failed: %s", v, v + 1, msg ? msg : "?");
			free(msg);
			return -1;
		}
		if (exec(st, "COMMIT") < 0)
			return -1;
	}
	return 0;
}

int srv_store_open(const char *path, struct srv_secrets *secrets, struct srv_store **out, char *err,
                   size_t errlen)
{
	struct srv_store *st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	st->secrets = secrets;
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, st->db ? sqlite3_errmsg(st->db) : "cannot open");
		srv_store_close(st);
		return -1;
	}
	sqlite3_busy_timeout(st->db, 5000);
	/*
	 * WAL with synchronous=NORMAL: a commit is durable against a process crash
	 * (what the crash-safety of provisioning needs) without an fsync per row.
	 */
	if (sqlite3_create_function(st->db, "drover_provider_id", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
	                            sql_provider_id, NULL, NULL) != SQLITE_OK)
		db_err(st, "registering drover_provider_id");
	else if (sqlite3_create_function(st->db, "drover_instance_record", 2,
	                                 SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_instance_record, NULL,
	                                 NULL) != SQLITE_OK)
		db_err(st, "registering drover_instance_record");
	if (st->err[0] || exec(st, "PRAGMA journal_mode=WAL") < 0 ||
	    exec(st, "PRAGMA synchronous=NORMAL") < 0 || exec(st, "PRAGMA foreign_keys=ON") < 0 ||
	    migrate(st) < 0) {
		snprintf(err, errlen, "%s: %s", path, st->err);
		srv_store_close(st);
		return -1;
	}
	*out = st;
	return 0;
}

void srv_store_close(struct srv_store *st)
{
	if (!st)
		return;
	/* Writes still in an open batch are kept, not rolled back by the close. */
	srv_store_batch_commit(st);
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmts[i]);
	for (size_t i = 0; i < st->n_cache; i++)
		sqlite3_finalize(st->cache[i].stmt);
	sqlite3_close(st->db);
	free(st);
}

void srv_store_set_batch_hook(struct srv_store *st, srv_store_batch_cb cb, void *ud)
{
	st->batch_cb = cb;
	st->batch_ud = ud;
}

/* Before every write: join the open transaction, or open a batch when batching. */
static int write_begin(struct srv_store *st)
{
	if (st->tx_depth > 0 || !st->batch_cb)
		return 0;
	if (exec(st, "BEGIN IMMEDIATE") < 0)
		return -1;
	st->tx_depth = 1;
	st->in_batch = true;
	st->batch_cb(st->batch_ud);
	return 0;
}

int srv_store_batch_commit(struct srv_store *st)
{
	if (!st->in_batch)
		return 0;
	st->in_batch = false;
	st->tx_depth = 1;
	int rc = srv_store_commit(st);
	if (st->commit_cb)
		st->commit_cb(st->commit_ud, rc == 0);
	return rc;
}

bool srv_store_in_batch(const struct srv_store *st)
{
	return st->in_batch;
}

void srv_store_set_commit_hook(struct srv_store *st, srv_store_commit_cb cb, void *ud)
{
	st->commit_cb = cb;
	st->commit_ud = ud;
}

int srv_store_begin(struct srv_store *st)
{
	if (write_begin(st) < 0)
		return -1;
	if (st->tx_depth++ > 0)
		return 0;
	if (exec(st, "BEGIN IMMEDIATE") < 0) {
		st->tx_depth--;
		return -1;
	}
	return 0;
}

int srv_store_commit(struct srv_store *st)
{
	if (st->tx_depth == 0 || --st->tx_depth > 0)
		return 0;
	if (exec(st, "COMMIT") == 0)
		return 0;
	/* A failed commit must not leave the transaction open for every later write. */
	char *msg = strdup(st->err);
	st->in_batch = false;
	exec(st, "ROLLBACK");
	set_err(st, "commit failed: %s", msg ? msg : "?");
	free(msg);
	return -1;
}

/* Both: NULL for a NULL column, and NULL with *oom set when the copy cannot be made. */
static char *col_str(sqlite3_stmt *s, int i, bool *oom)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	char *c = t ? strdup((const char *)t) : NULL;
	if (t && !c)
		*oom = true;
	return c;
}

static unsigned char *col_blob(sqlite3_stmt *s, int i, size_t *len, bool *oom)
{
	const void *b = sqlite3_column_blob(s, i);
	int n = sqlite3_column_bytes(s, i);
	*len = 0;
	if (!b || n <= 0)
		return NULL;
	unsigned char *c = malloc((size_t)n);
	if (c) {
		memcpy(c, b, (size_t)n);
		*len = (size_t)n;
	} else {
		*oom = true;
	}
	return c;
}

/* ---- meta ---- */

int srv_store_meta_get(struct srv_store *st, const char *key, char **value)
{
	sqlite3_stmt *s;
	*value = NULL;
	if (prep(st, "SELECT value FROM meta WHERE key = ?1", -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "meta get");
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	bool oom = false;
	if (rc == SQLITE_ROW)
		*value = col_str(s, 0, &oom);
	unprep(st, s);
	if (oom)
		return set_err(st, "out of memory");
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(st, "meta get");
}

/* Runs a write with two text parameters; `what` names it in the error message. */
static int write_text2(struct srv_store *st, const char *sql, const char *p1, const char *p2,
                       const char *what)
{
	if (write_begin(st) < 0)
		return -1;
	sqlite3_stmt *s;
	if (prep(st, sql, -1, &s, NULL) != SQLITE_OK)
		return db_err(st, what);
	sqlite3_bind_text(s, 1, p1, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, p2, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	unprep(st, s);
	return rc == SQLITE_DONE ? 0 : db_err(st, what);
}

int srv_store_meta_set(struct srv_store *st, const char *key, const char *value)
{
	return write_text2(st, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", key, value,
	                   "meta set");
}

/* ---- projects ---- */

int srv_store_project_put(struct srv_store *st, const char *name)
{
	if (write_begin(st) < 0)
		return -1;
	sqlite3_stmt *s;
	if (prep(st, "INSERT OR IGNORE INTO projects(name, created_at) VALUES(?1, ?2)", -1, &s, NULL) !=
	    SQLITE_OK)
		return db_err(st, "project put");
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, srv_now_ms());
	int rc = sqlite3_step(s);
	unprep(st, s);
	return rc == SQLITE_DONE ? 0 : db_err(st, "project put");
}

int srv_store_project_created(struct srv_store *st, const char *name, int64_t *created_at)
{
	sqlite3_stmt *s;
	if (prep(st, "SELECT created_at FROM projects WHERE name = ?1", -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "project get");
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*created_at = sqlite3_column_int64(s, 0);
	unprep(st, s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : db_err(st, "project get");
}

int srv_store_project_exists(struct srv_store *st, const char *name)
{
	sqlite3_stmt *s;
	if (prep(st, "SELECT 1 FROM projects WHERE name = ?1", -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "project get");
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	unprep(st, s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : db_err(st, "project get");
}

int srv_store_project_list(struct srv_store *st, char ***names, size_t *n)
{
	sqlite3_stmt *s;
	size_t cnt = 0, cap = 8;
	char **list = malloc(cap * sizeof(char *));
	if (!list || prep(st, "SELECT name FROM projects ORDER BY name", -1, &s, NULL) != SQLITE_OK) {
		free(list);
		return db_err(st, "project list");
	}
	bool oom = false;
	while (!oom && sqlite3_step(s) == SQLITE_ROW) {
		if (cnt == cap) {
			char **nl = realloc(list, cap * 2 * sizeof(char *));
			if (!nl) {
				oom = true;
				break;
			}
			list = nl;
			cap *= 2;
		}
		list[cnt] = col_str(s, 0, &oom);
		if (!oom)
			cnt++;
	}
	unprep(st, s);
	if (oom) {
		for (size_t i = 0; i < cnt; i++)
			free(list[i]);
		free(list);
		return set_err(st, "out of memory");
	}
	*names = list;
	*n = cnt;
	return 0;
}

/* ---- backends ---- */

static const char *backend_aad = "drover/backend-secrets/v1";

static int seal_secrets(struct srv_store *st, const struct srv_backend *b, unsigned char **blob, size_t *len)
{
	*blob = NULL;
	*len = 0;
	if (b->n_secrets == 0)
		return 0;
	if (!st->secrets)
		return set_err(st, "backend %s/%s has secrets but the store has no key", b->project, b->name);
	json_t *obj = json_object();
	bool ok = obj != NULL;
	/* Every secret or none: a partial set written would lose the rest for good. */
	for (size_t i = 0; ok && i < b->n_secrets; i++)
		ok = json_object_set_new(obj, b->secrets[i].name, json_string(b->secrets[i].value)) == 0;
	char *text = ok ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!ok)
		return set_err(st,
		               "cannot encode the secrets of backend %s/%s (out of memory, or a name or "
		               "value that is not UTF-8)",
		               b->project, b->name);
	if (!text)
		return set_err(st, "out of memory");
	int rc = srv_secrets_seal(st->secrets, backend_aad, text, strlen(text), blob, len);
	explicit_bzero(text, strlen(text));
	free(text);
	return rc < 0 ? set_err(st, "cannot encrypt the secrets of backend %s/%s", b->project, b->name) : 0;
}

static int open_secrets(struct srv_store *st, struct srv_backend *b, const unsigned char *blob, size_t len)
{
	char *text;
	size_t tlen;
	if (!blob || len == 0)
		return 0;
	if (!st->secrets || srv_secrets_open_blob(st->secrets, backend_aad, blob, len, &text, &tlen) < 0)
		return set_err(
		    st,
		    "cannot decrypt the secrets of backend %s/%s (wrong or missing key file in the data "
		    "directory?)",
		    b->project, b->name);
	json_error_t jerr;
	json_t *obj = json_loadb(text, tlen, 0, &jerr);
	explicit_bzero(text, tlen);
	free(text);
	if (!obj && json_error_code(&jerr) == json_error_out_of_memory)
		return set_err(st, "out of memory");
	if (!json_is_object(obj)) {
		json_decref(obj);
		return set_err(st, "the secrets of backend %s/%s are damaged", b->project, b->name);
	}
	b->secrets = calloc(json_object_size(obj) + 1, sizeof(*b->secrets));
	bool ok = b->secrets != NULL;
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v)
	{
		if (!ok)
			break;
		b->secrets[b->n_secrets].name = strdup(k);
		b->secrets[b->n_secrets].value = strdup(json_string_value(v) ? json_string_value(v) : "");
		ok = b->secrets[b->n_secrets].name && b->secrets[b->n_secrets].value;
		b->n_secrets++; /* counted either way: srv_backend_free frees a half-made pair */
	}
	json_decref(obj);
	return ok ? 0 : set_err(st, "out of memory");
}

int srv_store_backend_put(struct srv_store *st, const struct srv_backend *b)
{
	if (write_begin(st) < 0)
		return -1;
	unsigned char *blob;
	size_t blen;
	sqlite3_stmt *s;

	if (seal_secrets(st, b, &blob, &blen) < 0)
		return -1;
	if (sqlite3_prepare_v2(
	        st->db,
	        "INSERT INTO backends(project, name, type, config_json, secrets, source, created_at)"
	        " VALUES(?1,?2,?3,?4,?5,?6,?7) ON CONFLICT(project, name) DO UPDATE SET"
	        " type=excluded.type, config_json=excluded.config_json, secrets=excluded.secrets,"
	        " source=excluded.source",
	        -1, &s, NULL) != SQLITE_OK) {
		free(blob);
		return db_err(st, "backend put");
	}
	sqlite3_bind_text(s, 1, b->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, b->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, b->type, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, b->config_json ? b->config_json : "{}", -1, SQLITE_STATIC);
	if (blob)
		sqlite3_bind_blob(s, 5, blob, (int)blen, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 5);
	sqlite3_bind_text(s, 6, b->source ? b->source : "api", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 7, b->created_at ? b->created_at : srv_now_ms());
	int rc = sqlite3_step(s);
	unprep(st, s);
	free(blob);
	return rc == SQLITE_DONE ? 0 : db_err(st, "backend put");
}

static struct srv_backend *backend_row(struct srv_store *st, sqlite3_stmt *s)
{
	struct srv_backend *b = calloc(1, sizeof(*b));
	bool oom = !b;
	if (oom) {
		set_err(st, "out of memory");
		return NULL;
	}
	b->project = col_str(s, 0, &oom);
	b->name = col_str(s, 1, &oom);
	b->type = col_str(s, 2, &oom);
	b->config_json = col_str(s, 3, &oom);
	b->source = col_str(s, 5, &oom);
	b->created_at = sqlite3_column_int64(s, 6);
	if (oom) {
		set_err(st, "out of memory");
		srv_backend_free(b);
		return NULL;
	}
	if (open_secrets(st, b, sqlite3_column_blob(s, 4), (size_t)sqlite3_column_bytes(s, 4)) < 0) {
		srv_backend_free(b);
		return NULL;
	}
	return b;
}

int srv_store_backend_get(struct srv_store *st, const char *project, const char *name,
                          struct srv_backend **out)
{
	sqlite3_stmt *s = stmt(st, S_BACKEND_GET);
	if (!s)
		return -1;
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return 1;
	if (rc != SQLITE_ROW)
		return db_err(st, "backend get");
	*out = backend_row(st, s);
	sqlite3_reset(s);
	return *out ? 0 : -1;
}

int srv_store_backend_list(struct srv_store *st, const char *project, struct srv_backend ***out, size_t *n)
{
	sqlite3_stmt *s;
	size_t cnt = 0, cap = 8;
	struct srv_backend **list = malloc(cap * sizeof(*list));
	if (!list || prep(st,
	                  "SELECT project, name, type, config_json, secrets, source, created_at"
	                  " FROM backends WHERE ?1 IS NULL OR project = ?1 ORDER BY project, name",
	                  -1, &s, NULL) != SQLITE_OK) {
		free(list);
		return db_err(st, "backend list");
	}
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	while (sqlite3_step(s) == SQLITE_ROW) {
		struct srv_backend *b = backend_row(st, s);
		if (!b) {
			unprep(st, s);
			srv_backend_list_free(list, cnt);
			return -1;
		}
		if (cnt == cap) {
			struct srv_backend **nl = realloc(list, cap * 2 * sizeof(*list));
			if (!nl) {
				unprep(st, s);
				srv_backend_free(b);
				srv_backend_list_free(list, cnt);
				return set_err(st, "out of memory");
			}
			list = nl;
			cap *= 2;
		}
		list[cnt++] = b;
	}
	unprep(st, s);
	*out = list;
	*n = cnt;
	return 0;
}

int srv_store_backend_delete(struct srv_store *st, const char *project, const char *name)
{
	if (write_text2(st, "DELETE FROM backends WHERE project = ?1 AND name = ?2", project, name,
	                "backend delete") < 0)
		return -1;
	return sqlite3_changes(st->db) ? 0 : 1;
}

/* Runs a "SELECT count(*)" with up to two text parameters (NULL binds NULL) into *n. */
static int count_rows(struct srv_store *st, const char *sql, const char *p1, const char *p2, const char *what,
                      int64_t *n)
{
	sqlite3_stmt *s;
	if (prep(st, sql, -1, &s, NULL) != SQLITE_OK)
		return db_err(st, what);
	sqlite3_bind_text(s, 1, p1, -1, SQLITE_STATIC);
	if (p2)
		sqlite3_bind_text(s, 2, p2, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	*n = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	unprep(st, s);
	return rc == SQLITE_ROW ? 0 : db_err(st, what);
}

int srv_store_backend_live_instances(struct srv_store *st, const char *project, const char *name, int64_t *n)
{
	return count_rows(st,
	                  "SELECT count(*) FROM instances WHERE project = ?1 AND backend = ?2"
	                  " AND status NOT IN ('terminated', 'failed')",
	                  project, name, "count instances", n);
}

void srv_backend_free(struct srv_backend *b)
{
	if (!b)
		return;
	free(b->project);
	free(b->name);
	free(b->type);
	free(b->config_json);
	free(b->source);
	for (size_t i = 0; i < b->n_secrets; i++) {
		free(b->secrets[i].name);
		if (b->secrets[i].value)
			explicit_bzero(b->secrets[i].value, strlen(b->secrets[i].value));
		free(b->secrets[i].value);
	}
	free(b->secrets);
	free(b);
}

void srv_backend_list_free(struct srv_backend **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		srv_backend_free(list[i]);
	free(list);
}

/* NULL in, NULL out; NULL with *oom set when the copy cannot be made. */
static char *dup_or_null(const char *s, bool *oom)
{
	char *c = s ? strdup(s) : NULL;
	if (s && !c)
		*oom = true;
	return c;
}

struct srv_backend *srv_backend_dup(const struct srv_backend *b)
{
	struct srv_backend *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	bool oom = false;
	c->project = dup_or_null(b->project, &oom);
	c->name = dup_or_null(b->name, &oom);
	c->type = dup_or_null(b->type, &oom);
	c->config_json = dup_or_null(b->config_json, &oom);
	c->source = dup_or_null(b->source, &oom);
	c->created_at = b->created_at;
	c->secrets = calloc(b->n_secrets + 1, sizeof(*c->secrets));
	oom = oom || !c->secrets;
	for (size_t i = 0; !oom && i < b->n_secrets; i++) {
		c->secrets[i].name = dup_or_null(b->secrets[i].name, &oom);
		c->secrets[i].value = dup_or_null(b->secrets[i].value, &oom);
		c->n_secrets++;
	}
	if (oom) {
		srv_backend_free(c);
		return NULL;
	}
	return c;
}

/* ---- instances ---- */

static void bind_blob_or_null(sqlite3_stmt *s, int i, const void *b, size_t len)
{
	if (b && len)
		sqlite3_bind_blob(s, i, b, (int)len, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

int srv_store_instance_put(struct srv_store *st, struct srv_instance *in)
{
	if (write_begin(st) < 0)
		return -1;
	sqlite3_stmt *s = stmt(st, S_INSTANCE_PUT);
	if (!s)
		return -1;
	in->updated_at = srv_now_ms();
	if (!in->created_at)
		in->created_at = in->updated_at;
	sqlite3_bind_text(s, 1, in->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, in->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, in->backend ? in->backend : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, in->backend_type ? in->backend_type : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, in->name ? in->name : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, in->status, -1, SQLITE_STATIC);
	bind_blob_or_null(s, 7, in->offer, in->offer_len);
	bind_blob_or_null(s, 8, in->provisioning, in->provisioning_len);
	sqlite3_bind_text(s, 9, in->idempotency_key ? in->idempotency_key : "", -1, SQLITE_STATIC);
	unsigned char *rec = NULL;
	size_t rec_len = in->record ? protobuf_c_message_get_packed_size(&in->record->base) : 0;
	if (rec_len) {
		if (!(rec = malloc(rec_len))) {
			sqlite3_reset(s);
			return set_err(st, "out of memory");
		}
		protobuf_c_message_pack(&in->record->base, rec);
	}
	bind_blob_or_null(s, 10, rec, rec_len);
	if (in->last_error)
		sqlite3_bind_text(s, 11, in->last_error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 12, in->created_at);
	sqlite3_bind_int64(s, 13, in->updated_at);
	sqlite3_bind_int64(s, 14, in->termination_failures);
	sqlite3_bind_int64(s, 15, in->next_check_at);
	bind_blob_or_null(s, 16, in->requirements, in->requirements_len);
	sqlite3_bind_int64(s, 18, in->terminated_at);
	sqlite3_bind_int(s, 19, in->terminate_requested ? 1 : 0);
	sqlite3_bind_int64(s, 20, in->termination_acked_at);
	sqlite3_bind_int64(s, 21, in->termination_checks);
	sqlite3_bind_int(s, 22, in->termination_unconfirmed ? 1 : 0);
	size_t pid_len;
	const unsigned char *pid = pd_machine_id(in->provisioning, in->provisioning_len, &pid_len);
	if (pid)
		sqlite3_bind_text(s, 23, (const char *)pid, (int)pid_len, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	free(rec);
	return rc == SQLITE_DONE ? 0 : db_err(st, "instance put");
}

/* NULL when out of memory. */
static struct srv_instance *instance_row(sqlite3_stmt *s)
{
	struct srv_instance *in = calloc(1, sizeof(*in));
	bool oom = false;
	if (!in)
		return NULL;
	in->id = col_str(s, 0, &oom);
	in->project = col_str(s, 1, &oom);
	in->backend = col_str(s, 2, &oom);
	in->backend_type = col_str(s, 3, &oom);
	in->name = col_str(s, 4, &oom);
	in->status = col_str(s, 5, &oom);
	in->offer = col_blob(s, 6, &in->offer_len, &oom);
	in->provisioning = col_blob(s, 7, &in->provisioning_len, &oom);
	in->idempotency_key = col_str(s, 8, &oom);
	if (sqlite3_column_type(s, 9) == SQLITE_BLOB) {
		/*
		 * protobuf-c does not say whether a failed unpack ran out of memory or
		 * met damaged bytes; either way the row is not read, rather than read
		 * without its attempts and written back so.
		 */
		in->record = drover__state__v1__instance_record__unpack(
		    NULL, (size_t)sqlite3_column_bytes(s, 9), sqlite3_column_blob(s, 9));
		oom |= in->record == NULL;
	}
	in->last_error = col_str(s, 10, &oom);
	in->created_at = sqlite3_column_int64(s, 11);
	in->updated_at = sqlite3_column_int64(s, 12);
	in->termination_failures = sqlite3_column_int64(s, 13);
	in->next_check_at = sqlite3_column_int64(s, 14);
	in->requirements = col_blob(s, 15, &in->requirements_len, &oom);
	in->terminated_at = sqlite3_column_int64(s, 16);
	in->terminate_requested = sqlite3_column_int(s, 17) != 0;
	in->termination_acked_at = sqlite3_column_int64(s, 18);
	in->termination_checks = sqlite3_column_int64(s, 19);
	in->termination_unconfirmed = sqlite3_column_int(s, 20) != 0;
	if (oom) {
		srv_instance_free(in);
		return NULL;
	}
	return in;
}

int srv_store_instance_get(struct srv_store *st, const char *id, struct srv_instance **out)
{
	sqlite3_stmt *s = stmt(st, S_INSTANCE_GET);
	if (!s)
		return -1;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		return 1;
	}
	if (rc != SQLITE_ROW)
		return db_err(st, "instance get");
	*out = instance_row(s);
	sqlite3_reset(s);
	return *out ? 0 : set_err(st, "out of memory");
}

static int instance_query(struct srv_store *st, sqlite3_stmt *s, struct srv_instance ***out, size_t *n)
{
	size_t cnt = 0, cap = 16;
	struct srv_instance **list = malloc(cap * sizeof(*list));
	int rc = SQLITE_DONE;
	bool oom = !list;
	while (!oom && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (cnt == cap) {
			struct srv_instance **nl = realloc(list, cap * 2 * sizeof(*list));
			if (!nl) {
				oom = true;
				break;
			}
			list = nl;
			cap *= 2;
		}
		if (!(list[cnt] = instance_row(s)))
			oom = true;
		else
			cnt++;
	}
	unprep(st, s);
	if (oom) {
		srv_instance_list_free(list, cnt);
		return set_err(st, "out of memory");
	}
	if (rc != SQLITE_DONE) {
		srv_instance_list_free(list, cnt);
		return db_err(st, "instance list");
	}
	*out = list;
	*n = cnt;
	return 0;
}

/* The one instance a LIMIT 1 query finds: 0 and *out, 1 when there is none, -1 on error. */
static int instance_first(struct srv_store *st, sqlite3_stmt *s, struct srv_instance **out)
{
	struct srv_instance **list;
	size_t n;
	if (instance_query(st, s, &list, &n) < 0)
		return -1;
	if (n == 0) {
		free(list);
		return 1;
	}
	*out = list[0];
	free(list);
	return 0;
}

int srv_store_instance_list(struct srv_store *st, const struct srv_instance_filter *f,
                            struct srv_instance ***out, size_t *n)
{
	sqlite3_stmt *s;
#define INSTANCE_LIST_WHERE                                                                                  \
	"SELECT " INSTANCE_COLS " FROM instances WHERE (?1 IS NULL OR project = ?1)"                         \
	" AND (?2 IS NULL OR backend = ?2)"                                                                  \
	" AND (?3 = 0 OR status NOT IN ('terminated', 'failed'))"                                            \
	" AND (?6 IS NULL OR instr(?6, ',' || status || ',') > 0)"                                           \
	" AND (?7 IS NULL OR created_at > ?8 OR (created_at = ?8 AND id > ?7))"
	if (prep(st,
	         f && f->oldest_first ? INSTANCE_LIST_WHERE " ORDER BY created_at, id LIMIT ?4 OFFSET ?5"
	                              : INSTANCE_LIST_WHERE
	             " ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5",
	         -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "instance list");
#undef INSTANCE_LIST_WHERE
	sqlite3_bind_text(s, 7, f ? f->after_id : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 8, f ? f->after_created : 0);
	sqlite3_bind_text(s, 1, f ? f->project : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, f ? f->backend : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, f && f->live_only);
	sqlite3_bind_int64(s, 4, f && f->limit > 0 ? f->limit : -1);
	sqlite3_bind_int64(s, 5, f ? f->offset : 0);
	sqlite3_bind_text(s, 6, f ? f->statuses : NULL, -1, SQLITE_STATIC);
	return instance_query(st, s, out, n);
}

int srv_store_instance_due(struct srv_store *st, int64_t now_ms, int64_t limit, struct srv_instance ***out,
                           size_t *n)
{
	sqlite3_stmt *s;
	if (prep(st,
	         "SELECT " INSTANCE_COLS " FROM instances WHERE next_check_at > 0 AND"
	         " next_check_at <= ?1 ORDER BY next_check_at LIMIT ?2",
	         -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "instance due");
	sqlite3_bind_int64(s, 1, now_ms);
	sqlite3_bind_int64(s, 2, limit > 0 ? limit : -1);
	return instance_query(st, s, out, n);
}

int srv_store_instance_by_status(struct srv_store *st, const char *status, struct srv_instance ***out,
                                 size_t *n)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(
	        st->db, "SELECT " INSTANCE_COLS " FROM instances WHERE status = ?1 ORDER BY created_at", -1,
	        &s, NULL) != SQLITE_OK)
		return db_err(st, "instance by status");
	sqlite3_bind_text(s, 1, status, -1, SQLITE_STATIC);
	return instance_query(st, s, out, n);
}

int srv_store_instance_has_key(struct srv_store *st, const char *key)
{
	sqlite3_stmt *s = stmt(st, S_HAS_KEY);
	if (!s)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : db_err(st, "instance key");
}

int srv_store_instance_count(struct srv_store *st, const char *status, int64_t *n)
{
	return count_rows(st, "SELECT count(*) FROM instances WHERE ?1 IS NULL OR status = ?1", status, NULL,
	                  "instance count", n);
}

int srv_store_instance_holding(struct srv_store *st, const char *project, const char *backend,
                               const char *provider_id, const char *except, char **holder)
{
	sqlite3_stmt *s;
	if (prep(st,
	         "SELECT id FROM instances WHERE backend = ?2 AND provider_id = ?4 AND project = ?1"
	         " AND id <> ?3 AND status NOT IN ('terminated', 'failed') LIMIT 1",
	         -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "instance holding");
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, backend, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, except, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, provider_id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	bool oom = false;
	if (rc == SQLITE_ROW)
		*holder = col_str(s, 0, &oom);
	unprep(st, s);
	if (oom)
		return set_err(st, "out of memory");
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : db_err(st, "instance holding");
}

void srv_instance_free(struct srv_instance *in)
{
	if (!in)
		return;
	free(in->id);
	free(in->project);
	free(in->backend);
	free(in->backend_type);
	free(in->name);
	free(in->status);
	free(in->offer);
	free(in->provisioning);
	free(in->idempotency_key);
	if (in->record)
		protobuf_c_message_free_unpacked(&in->record->base, NULL);
	free(in->last_error);
	free(in->requirements);
	free(in);
}

void srv_instance_list_free(struct srv_instance **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		srv_instance_free(list[i]);
	free(list);
}

/* ---- events ---- */

int srv_store_event_add(struct srv_store *st, const struct srv_event *ev)
{
	if (write_begin(st) < 0)
		return -1;
	sqlite3_stmt *s = stmt(st, S_EVENT_ADD);
	if (!s)
		return -1;
	sqlite3_bind_int64(s, 1, ev->ts ? ev->ts : srv_now_ms());
	sqlite3_bind_text(s, 2, ev->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, ev->instance, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, ev->kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, ev->message ? ev->message : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 6, ev->level ? ev->level : SRV_EVENT_INFO);
	sqlite3_bind_text(s, 7, ev->backend, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, ev->driver, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : db_err(st, "event add");
}

int srv_store_event_list(struct srv_store *st, const struct srv_event_filter *f, struct srv_event **out,
                         size_t *n)
{
	sqlite3_stmt *s;
	size_t cnt = 0, cap = 16;
	struct srv_event *ev = calloc(cap, sizeof(*ev));
	/* The latest (or first) `limit` events after after_id, returned oldest first. */
#define EVENT_LIST_WHERE                                                                                     \
	"SELECT id, ts, project, instance, kind, message, level, backend, driver FROM events"                \
	" WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR instance = ?2) AND id > ?3"
	if (!ev ||
	    prep(st,
	         f->first ? EVENT_LIST_WHERE " ORDER BY id LIMIT ?4"
	                  : "SELECT * FROM (" EVENT_LIST_WHERE " ORDER BY id DESC LIMIT ?4) ORDER BY id",
	         -1, &s, NULL) != SQLITE_OK) {
#undef EVENT_LIST_WHERE
		free(ev);
		return db_err(st, "event list");
	}
	sqlite3_bind_text(s, 1, f->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, f->instance, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, f->after_id);
	sqlite3_bind_int64(s, 4, f->limit > 0 ? f->limit : 100);
	bool oom = false;
	while (!oom && sqlite3_step(s) == SQLITE_ROW) {
		if (cnt == cap) {
			struct srv_event *ne = realloc(ev, cap * 2 * sizeof(*ev));
			if (!ne) {
				oom = true;
				break;
			}
			ev = ne;
			cap *= 2;
		}
		memset(&ev[cnt], 0, sizeof(ev[cnt]));
		ev[cnt].id = sqlite3_column_int64(s, 0);
		ev[cnt].ts = sqlite3_column_int64(s, 1);
		ev[cnt].project = col_str(s, 2, &oom);
		ev[cnt].instance = col_str(s, 3, &oom);
		ev[cnt].kind = col_str(s, 4, &oom);
		ev[cnt].message = col_str(s, 5, &oom);
		ev[cnt].level = sqlite3_column_int(s, 6);
		ev[cnt].backend = col_str(s, 7, &oom);
		ev[cnt].driver = col_str(s, 8, &oom);
		cnt++; /* counted either way: srv_event_list_free frees a half-made one */
	}
	unprep(st, s);
	if (oom) {
		srv_event_list_free(ev, cnt);
		return set_err(st, "out of memory");
	}
	*out = ev;
	*n = cnt;
	return 0;
}

int srv_store_event_window(struct srv_store *st, const struct srv_event_filter *f, int64_t *after)
{
	sqlite3_stmt *s;
	if (prep(st,
	         "SELECT id FROM events WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR instance = ?2)"
	         " AND id > ?3 ORDER BY id DESC LIMIT 1 OFFSET ?4",
	         -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "event window");
	sqlite3_bind_text(s, 1, f->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, f->instance, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, f->after_id);
	sqlite3_bind_int64(s, 4, f->limit > 0 ? f->limit : 100);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*after = sqlite3_column_int64(s, 0);
	else if (rc == SQLITE_DONE)
		*after = f->after_id;
	unprep(st, s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(st, "event window");
}

void srv_event_list_free(struct srv_event *ev, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(ev[i].project);
		free(ev[i].instance);
		free(ev[i].kind);
		free(ev[i].message);
		free(ev[i].backend);
		free(ev[i].driver);
	}
	free(ev);
}

int srv_store_backend_detach(struct srv_store *st, const char *project, const char *name)
{
	if (srv_store_begin(st) < 0)
		return -1;
	if (write_text2(st,
	                "UPDATE instances SET backend_config = b.config_json, backend_secrets = b.secrets"
	                " FROM (SELECT config_json, secrets FROM backends WHERE project = ?1 AND name = ?2) b"
	                " WHERE instances.project = ?1 AND instances.backend = ?2"
	                " AND instances.status NOT IN ('terminated', 'failed')",
	                project, name, "backend detach") < 0)
		goto fail;
	if (srv_store_backend_delete(st, project, name) != 0)
		goto fail;
	return srv_store_commit(st);
fail:
	st->tx_depth = 0;
	exec(st, "ROLLBACK");
	return -1;
}

int srv_store_instance_backend(struct srv_store *st, const struct srv_instance *in, struct srv_backend **out)
{
	sqlite3_stmt *s;
	if (prep(st, "SELECT backend_config, backend_secrets FROM instances WHERE id = ?1", -1, &s, NULL) !=
	    SQLITE_OK)
		return db_err(st, "instance backend");
	sqlite3_bind_text(s, 1, in->id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
		struct srv_backend *b = calloc(1, sizeof(*b));
		bool oom = !b;
		if (b) {
			b->project = dup_or_null(in->project, &oom);
			b->name = dup_or_null(in->backend, &oom);
			b->type = dup_or_null(in->backend_type, &oom);
			b->config_json = col_str(s, 0, &oom);
			b->source = dup_or_null("removed", &oom);
		}
		if (oom) {
			unprep(st, s);
			srv_backend_free(b);
			return set_err(st, "out of memory");
		}
		if (open_secrets(st, b, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1)) < 0) {
			unprep(st, s);
			srv_backend_free(b);
			return -1;
		}
		unprep(st, s);
		*out = b;
		return 0;
	}
	unprep(st, s);
	return srv_store_backend_get(st, in->project, in->backend, out);
}

int srv_store_instance_by_name(struct srv_store *st, const char *project, const char *name, bool live_only,
                               struct srv_instance **out)
{
	sqlite3_stmt *s;
	if (prep(st,
	         "SELECT " INSTANCE_COLS " FROM instances WHERE project = ?1 AND name = ?2"
	         " AND (?3 = 0 OR status NOT IN ('terminated', 'failed'))"
	         " ORDER BY created_at DESC LIMIT 1",
	         -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "instance by name");
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, live_only);
	return instance_first(st, s, out);
}

int srv_store_instance_by_key(struct srv_store *st, const char *project, const char *key,
                              struct srv_instance **out)
{
	sqlite3_stmt *s;
	if (prep(st,
	         "SELECT " INSTANCE_COLS " FROM instances WHERE idempotency_key = ?2 AND project = ?1"
	         " LIMIT 1",
	         -1, &s, NULL) != SQLITE_OK)
		return db_err(st, "instance by key");
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
	return instance_first(st, s, out);
}

int srv_store_instance_count_live(struct srv_store *st, const char *project, int64_t *n)
{
	return count_rows(st,
	                  "SELECT count(*) FROM instances WHERE project = ?1"
	                  " AND status NOT IN ('terminated', 'failed')",
	                  project, NULL, "instance count", n);
}

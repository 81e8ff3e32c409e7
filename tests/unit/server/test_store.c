/* srv_store against real sqlite files in a temp directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "drover/compute/v1/compute.pb-c.h"
#include "srv_secrets.h"
#include "srv_store.h"
#include "testutil.h"

struct fx {
	char *dir;
	char *db_path;
	struct srv_secrets *sec;
	struct srv_store *st;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[512];
	f->dir = tu_tempdir();
	f->db_path = tu_join(f->dir, "drover.db");
	char *key = tu_join(f->dir, "secret.key");
	assert_int_equal(srv_secrets_open(key, &f->sec, err, sizeof(err)), 0);
	free(key);
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	srv_store_close(f->st);
	srv_secrets_free(f->sec);
	tu_rmrf(f->dir);
	free(f->dir);
	free(f->db_path);
	free(f);
	return 0;
}

static void test_migrations_from_zero(void **state)
{
	struct fx *f = *state;
	/* A fresh file went through every migration, in WAL mode. */
	assert_int_equal(srv_store_schema_version(f->st), SRV_STORE_SCHEMA_VERSION);
	srv_store_close(f->st);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->db_path, &db), SQLITE_OK);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	/* A version newer than this build is refused, not silently used. */
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	char err[512];
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "newer"));
	/* Back to version 1: reopening runs only the missing migration. */
	assert_int_equal(sqlite3_open(f->db_path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db,
	                 "DROP TABLE instances; DROP TABLE events; DROP TABLE backends; DROP TABLE projects;"
	                 " DROP TABLE meta; PRAGMA user_version = 0",
	                 NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), 0);
	assert_int_equal(srv_store_schema_version(f->st), SRV_STORE_SCHEMA_VERSION);
}

/* What schema 5 added, taken away again: a schema 4 file as the earlier release left it. */
#define SCHEMA5_UNDO                                                                                         \
	"DROP INDEX instances_provider; DROP INDEX instances_created;"                                       \
	" ALTER TABLE instances DROP COLUMN provider_id; ALTER TABLE instances DROP COLUMN record;"          \
	" ALTER TABLE instances ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';"                             \
	" ALTER TABLE instances ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '[]';"

/*
 * Schema 4 → 5: the provider's machine id of every row written before is
 * filled in from its packed provisioning data, so the check of a create
 * still finds the row holding a machine, and finds it through the index
 * (not a scan of the backend's rows); rows without one hold nothing.
 */
static void test_provider_id_migrates(void **state)
{
	struct fx *f = *state;
	char mid[201];
	memset(mid, 'm', 200);
	mid[200] = '\0';
	Drover__Compute__V1__ProvisioningData pd = DROVER__COMPUTE__V1__PROVISIONING_DATA__INIT;
	pd.instance_id = mid;
	unsigned char buf[512];
	size_t len = protobuf_c_message_pack(&pd.base, buf);
	struct srv_instance in = {.id = "i-old",
	                          .project = "main",
	                          .backend = "b1",
	                          .backend_type = "sim",
	                          .name = "old",
	                          .status = SRV_ST_RUNNING,
	                          .idempotency_key = "k-old",
	                          .provisioning = buf,
	                          .provisioning_len = len};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	in.id = "i-none";
	in.idempotency_key = "k-none";
	in.provisioning = NULL;
	in.provisioning_len = 0;
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	srv_store_close(f->st);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              SCHEMA5_UNDO
	                              " UPDATE instances SET attempts = '[{\"number\":1,\"backend\":\"b1\","
	                              "\"code\":\"OK\",\"price_per_hour\":1.5,\"started_unix_ms\":7}]',"
	                              " ssh_keys = '[\"ssh-ed25519 AAAA k@1\"]' WHERE id = 'i-old';"
	                              " PRAGMA user_version = 4",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	char err[512];
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), 0);
	assert_int_equal(srv_store_schema_version(f->st), SRV_STORE_SCHEMA_VERSION);
	char *holder = NULL;
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b1", mid, "i-new", &holder), 0);
	assert_string_equal(holder, "i-old");
	free(holder);
	/* The JSON text of schema 4 became the record's messages; a row without any has none. */
	struct srv_instance *got;
	assert_int_equal(srv_store_instance_get(f->st, "i-old", &got), 0);
	assert_non_null(got->record);
	assert_int_equal(got->record->n_attempts, 1);
	assert_int_equal(got->record->attempts[0]->number, 1);
	assert_string_equal(got->record->attempts[0]->backend, "b1");
	assert_string_equal(got->record->attempts[0]->code, "OK");
	assert_true(got->record->attempts[0]->price_per_hour == 1.5);
	assert_int_equal(got->record->attempts[0]->started_unix_ms, 7);
	assert_int_equal(got->record->n_ssh_public_keys, 1);
	assert_string_equal(got->record->ssh_public_keys[0], "ssh-ed25519 AAAA k@1");
	srv_instance_free(got);
	assert_int_equal(srv_store_instance_get(f->st, "i-none", &got), 0);
	assert_null(got->record);
	srv_instance_free(got);
	assert_int_equal(sqlite3_open(f->db_path, &db), SQLITE_OK);
	sqlite3_stmt *s;
	assert_int_equal(
	    sqlite3_prepare_v2(db,
	                       "SELECT count(*) FROM instances WHERE provider_id IS NOT NULL UNION ALL"
	                       " SELECT count(*) FROM instances WHERE provider_id = ?1",
	                       -1, &s, NULL),
	    SQLITE_OK);
	sqlite3_bind_text(s, 1, mid, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), 1);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), 1);
	sqlite3_finalize(s);
	/* The plan of the holding query: the index, not a scan. */
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "EXPLAIN QUERY PLAN SELECT id FROM instances WHERE backend = 'b1'"
	                                    " AND provider_id = 'x' AND project = 'main' AND id <> 'i'"
	                                    " AND status NOT IN ('terminated', 'failed') LIMIT 1",
	                                    -1, &s, NULL),
	                 SQLITE_OK);
	bool indexed = false;
	while (sqlite3_step(s) == SQLITE_ROW)
		indexed |= strstr((const char *)sqlite3_column_text(s, 3), "instances_provider") != NULL;
	sqlite3_finalize(s);
	sqlite3_close(db);
	assert_true(indexed);
}

/*
 * Schema 3 → 4: a terminating row written before observed termination keeps
 * its state with nothing acknowledged yet; the new fields round-trip.
 */
static void test_termination_fields_migrate(void **state)
{
	struct fx *f = *state;
	struct srv_instance in = {.id = "i-old",
	                          .project = "main",
	                          .backend = "sim",
	                          .backend_type = "sim",
	                          .name = "old",
	                          .status = SRV_ST_TERMINATING,
	                          .idempotency_key = "k-old",
	                          .next_check_at = 5};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	srv_store_close(f->st);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              SCHEMA5_UNDO
	                              "ALTER TABLE instances DROP COLUMN termination_acked_at;"
	                              " ALTER TABLE instances DROP COLUMN termination_checks;"
	                              " ALTER TABLE instances DROP COLUMN termination_unconfirmed;"
	                              " PRAGMA user_version = 3",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	char err[512];
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), 0);
	assert_int_equal(srv_store_schema_version(f->st), SRV_STORE_SCHEMA_VERSION);
	struct srv_instance *got;
	assert_int_equal(srv_store_instance_get(f->st, "i-old", &got), 0);
	assert_string_equal(got->status, SRV_ST_TERMINATING);
	assert_int_equal(got->next_check_at, 5);
	assert_int_equal(got->termination_acked_at, 0);
	assert_int_equal(got->termination_checks, 0);
	assert_false(got->termination_unconfirmed);
	got->termination_acked_at = 1234;
	got->termination_checks = 3;
	got->termination_unconfirmed = true;
	assert_int_equal(srv_store_instance_put(f->st, got), 0);
	srv_instance_free(got);
	assert_int_equal(srv_store_instance_get(f->st, "i-old", &got), 0);
	assert_int_equal(got->termination_acked_at, 1234);
	assert_int_equal(got->termination_checks, 3);
	assert_true(got->termination_unconfirmed);
	srv_instance_free(got);
}

static void test_backend_of_unknown_type(void **state)
{
	struct fx *f = *state;
	/* A type no part of the server has ever heard of goes in and out unchanged. */
	const char *type = "quantum-annealer-9000";
	struct srv_secret_kv sec[] = {{"token", "tok-123"}};
	struct srv_backend b = {.project = "main",
	                        .name = "qa",
	                        .type = (char *)type,
	                        .config_json = "{\"qubits\":5000}",
	                        .secrets = sec,
	                        .n_secrets = 1,
	                        .source = "api"};
	assert_int_equal(srv_store_project_put(f->st, "main"), 0);
	int v0 = srv_store_schema_version(f->st);
	assert_int_equal(srv_store_backend_put(f->st, &b), 0);
	assert_int_equal(srv_store_schema_version(f->st), v0);
	struct srv_backend *got;
	assert_int_equal(srv_store_backend_get(f->st, "main", "qa", &got), 0);
	assert_string_equal(got->type, type);
	assert_string_equal(got->config_json, "{\"qubits\":5000}");
	assert_int_equal(got->n_secrets, 1);
	assert_string_equal(got->secrets[0].name, "token");
	assert_string_equal(got->secrets[0].value, "tok-123");
	srv_backend_free(got);
	assert_int_equal(srv_store_backend_get(f->st, "main", "nope", &got), 1);

	struct srv_backend **list;
	size_t n;
	assert_int_equal(srv_store_backend_list(f->st, "main", &list, &n), 0);
	assert_int_equal(n, 1);
	srv_backend_list_free(list, n);
	assert_int_equal(srv_store_backend_delete(f->st, "main", "qa"), 0);
	assert_int_equal(srv_store_backend_delete(f->st, "main", "qa"), 1);
}

static void test_backend_needs_project(void **state)
{
	struct fx *f = *state;
	struct srv_backend b = {.project = "ghost", .name = "x", .type = "sim", .config_json = "{}"};
	assert_int_equal(srv_store_backend_put(f->st, &b), -1);
	assert_non_null(strstr(srv_store_errmsg(f->st), "FOREIGN KEY"));
}

static void test_secrets_encrypted_in_file(void **state)
{
	struct fx *f = *state;
	const char *plain = "s3cr3t-plaintext-value-4711";
	struct srv_secret_kv sec[] = {{"api_key", (char *)plain}};
	struct srv_backend b = {.project = "main",
	                        .name = "sim",
	                        .type = "sim",
	                        .config_json = "{}",
	                        .secrets = sec,
	                        .n_secrets = 1};
	assert_int_equal(srv_store_project_put(f->st, "main"), 0);
	assert_int_equal(srv_store_backend_put(f->st, &b), 0);
	srv_store_close(f->st);
	f->st = NULL;
	/* Every byte on disk (db, WAL) is checked, not just the main file. */
	const char *files[] = {"drover.db", "drover.db-wal"};
	int seen_file = 0;
	for (size_t i = 0; i < 2; i++) {
		char *p = tu_join(f->dir, files[i]);
		size_t len;
		char *data = tu_read_file(p, &len);
		free(p);
		if (!data)
			continue;
		seen_file++;
		assert_false(tu_contains(data, len, plain, strlen(plain)));
		assert_false(tu_contains(data, len, "api_key", 7));
		free(data);
	}
	assert_true(seen_file >= 1);
	char err[512];
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), 0);
	struct srv_backend *got;
	assert_int_equal(srv_store_backend_get(f->st, "main", "sim", &got), 0);
	assert_string_equal(got->secrets[0].value, plain);
	srv_backend_free(got);
	/* With another key the secrets do not open: an error, not garbage. */
	srv_store_close(f->st);
	char *key2 = tu_join(f->dir, "other.key");
	struct srv_secrets *sec2;
	assert_int_equal(srv_secrets_open(key2, &sec2, err, sizeof(err)), 0);
	free(key2);
	assert_int_equal(srv_store_open(f->db_path, sec2, &f->st, err, sizeof(err)), 0);
	assert_int_equal(srv_store_backend_get(f->st, "main", "sim", &got), -1);
	assert_non_null(strstr(srv_store_errmsg(f->st), "cannot decrypt"));
	srv_store_close(f->st);
	srv_secrets_free(sec2);
	assert_int_equal(srv_store_open(f->db_path, f->sec, &f->st, err, sizeof(err)), 0);
}

static void test_instance_transitions(void **state)
{
	struct fx *f = *state;
	struct srv_instance in = {.id = "i-1",
	                          .project = "main",
	                          .backend = "sim",
	                          .backend_type = "sim",
	                          .name = "web",
	                          .status = SRV_ST_PENDING,
	                          .idempotency_key = "k1"};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	const char *path[] = {SRV_ST_CREATING, SRV_ST_PROVISIONING, SRV_ST_RUNNING, SRV_ST_TERMINATING,
	                      SRV_ST_TERMINATED};
	/* The record (attempts, keys) goes in and out as the API's messages. */
	Drover__Api__V1__Attempt a = DROVER__API__V1__ATTEMPT__INIT, *ap = &a;
	a.number = 1;
	a.code = "RESOURCE_EXHAUSTED";
	char *key = "ssh-ed25519 AAAA test@key";
	Drover__State__V1__InstanceRecord rec = DROVER__STATE__V1__INSTANCE_RECORD__INIT;
	rec.n_attempts = 1;
	rec.attempts = &ap;
	rec.n_ssh_public_keys = 1;
	rec.ssh_public_keys = &key;
	for (size_t i = 0; i < 5; i++) {
		struct srv_instance *got;
		in.status = (char *)path[i];
		in.next_check_at = i < 4 ? 1000 + (int64_t)i : 0;
		in.record = &rec;
		assert_int_equal(srv_store_instance_put(f->st, &in), 0);
		assert_int_equal(srv_store_instance_get(f->st, "i-1", &got), 0);
		assert_string_equal(got->status, path[i]);
		assert_non_null(got->record);
		assert_int_equal(got->record->n_attempts, 1);
		assert_int_equal(got->record->attempts[0]->number, 1);
		assert_string_equal(got->record->attempts[0]->code, "RESOURCE_EXHAUSTED");
		assert_int_equal(got->record->n_ssh_public_keys, 1);
		assert_string_equal(got->record->ssh_public_keys[0], key);
		assert_int_equal(got->next_check_at, in.next_check_at);
		srv_instance_free(got);
	}
	int64_t live;
	assert_int_equal(srv_store_instance_count_live(f->st, "main", &live), 0);
	assert_int_equal(live, 0);
	assert_int_equal(srv_store_instance_has_key(f->st, "k1"), 1);
	assert_int_equal(srv_store_instance_has_key(f->st, "k2"), 0);
}

static void test_instance_due_and_lists(void **state)
{
	struct fx *f = *state;
	char id[32], key[32];
	assert_int_equal(srv_store_begin(f->st), 0);
	for (int i = 0; i < 50; i++) {
		snprintf(id, sizeof(id), "i-%02d", i);
		snprintf(key, sizeof(key), "k-%02d", i);
		struct srv_instance in = {.id = id,
		                          .project = i % 2 ? "a" : "b",
		                          .backend = "sim",
		                          .backend_type = "sim",
		                          .name = id,
		                          .status = i < 10 ? SRV_ST_TERMINATED : SRV_ST_PROVISIONING,
		                          .idempotency_key = key,
		                          .next_check_at = i < 10 ? 0 : 100 + i};
		assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	}
	assert_int_equal(srv_store_commit(f->st), 0);
	struct srv_instance **list;
	size_t n;
	assert_int_equal(srv_store_instance_due(f->st, 120, 0, &list, &n), 0);
	assert_int_equal(n, 11); /* 110..120 */
	assert_string_equal(list[0]->id, "i-10");
	srv_instance_list_free(list, n);
	struct srv_instance_filter flt = {.project = "a", .live_only = true};
	assert_int_equal(srv_store_instance_list(f->st, &flt, &list, &n), 0);
	assert_int_equal(n, 20);
	srv_instance_list_free(list, n);
	struct srv_instance *one;
	assert_int_equal(srv_store_instance_by_name(f->st, "a", "i-11", true, &one), 0);
	assert_string_equal(one->id, "i-11");
	srv_instance_free(one);
	assert_int_equal(srv_store_instance_by_name(f->st, "a", "i-01", true, &one), 1);
	assert_int_equal(srv_store_instance_by_key(f->st, "b", "k-12", &one), 0);
	srv_instance_free(one);
}

static void test_forced_removal_keeps_config(void **state)
{
	struct fx *f = *state;
	struct srv_secret_kv sec[] = {{"token", "abc"}};
	struct srv_backend b = {.project = "main",
	                        .name = "s1",
	                        .type = "sim",
	                        .config_json = "{\"a\":1}",
	                        .secrets = sec,
	                        .n_secrets = 1};
	assert_int_equal(srv_store_project_put(f->st, "main"), 0);
	assert_int_equal(srv_store_backend_put(f->st, &b), 0);
	struct srv_instance in = {.id = "i-9",
	                          .project = "main",
	                          .backend = "s1",
	                          .backend_type = "sim",
	                          .name = "x",
	                          .status = SRV_ST_RUNNING,
	                          .idempotency_key = "k9"};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	int64_t live;
	assert_int_equal(srv_store_backend_live_instances(f->st, "main", "s1", &live), 0);
	assert_int_equal(live, 1);
	assert_int_equal(srv_store_backend_detach(f->st, "main", "s1"), 0);
	struct srv_backend *got;
	assert_int_equal(srv_store_backend_get(f->st, "main", "s1", &got), 1);
	/* A later put of the instance (status change) keeps the copy. */
	in.status = SRV_ST_TERMINATING;
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	assert_int_equal(srv_store_instance_backend(f->st, &in, &got), 0);
	assert_string_equal(got->config_json, "{\"a\":1}");
	assert_string_equal(got->secrets[0].value, "abc");
	srv_backend_free(got);
}

static void test_events(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 5; i++) {
		struct srv_event ev = {.project = "main",
		                       .instance = i < 3 ? "i-1" : "i-2",
		                       .kind = "instance.x",
		                       .message = "hello",
		                       .level = SRV_EVENT_WARNING};
		assert_int_equal(srv_store_event_add(f->st, &ev), 0);
	}
	struct srv_event *ev;
	size_t n;
	struct srv_event_filter flt = {.instance = "i-1"};
	assert_int_equal(srv_store_event_list(f->st, &flt, &ev, &n), 0);
	assert_int_equal(n, 3);
	assert_true(ev[0].id < ev[1].id);
	assert_int_equal(ev[0].level, SRV_EVENT_WARNING);
	srv_event_list_free(ev, n);
	struct srv_event_filter last2 = {.limit = 2};
	assert_int_equal(srv_store_event_list(f->st, &last2, &ev, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(ev[1].instance, "i-2");
	srv_event_list_free(ev, n);
}

/* The live instance of a backend that holds a provider's machine id, found by the packed prefix. */
static void test_instance_holding(void **state)
{
	struct fx *f = *state;
	/* 200 bytes: the length takes two varint bytes. */
	char mid[201], other[201];
	memset(mid, 'm', 200);
	mid[200] = '\0';
	memcpy(other, mid, sizeof(mid));
	other[199] = 'o';
	Drover__Compute__V1__ProvisioningData pd = DROVER__COMPUTE__V1__PROVISIONING_DATA__INIT;
	pd.instance_id = mid;
	pd.hostname = "h.example";
	unsigned char buf[512];
	size_t len = protobuf_c_message_pack(&pd.base, buf);
	struct srv_instance in = {.id = "i-1",
	                          .project = "main",
	                          .backend = "b1",
	                          .backend_type = "sim",
	                          .name = "web",
	                          .status = SRV_ST_RUNNING,
	                          .idempotency_key = "k1",
	                          .provisioning = buf,
	                          .provisioning_len = len};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	char *holder = NULL;
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b1", mid, "i-2", &holder), 0);
	assert_string_equal(holder, "i-1");
	free(holder);
	/* Not its own row, not another id, not a prefix of the id, not another backend or project. */
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b1", mid, "i-1", &holder), 1);
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b1", other, "i-2", &holder), 1);
	mid[150] = '\0';
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b1", mid, "i-2", &holder), 1);
	mid[150] = 'm';
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b2", mid, "i-2", &holder), 1);
	assert_int_equal(srv_store_instance_holding(f->st, "other", "b1", mid, "i-2", &holder), 1);
	/* A terminated row holds nothing. */
	in.status = SRV_ST_TERMINATED;
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	assert_int_equal(srv_store_instance_holding(f->st, "main", "b1", mid, "i-2", &holder), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_migrations_from_zero, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_termination_fields_migrate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backend_of_unknown_type, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backend_needs_project, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secrets_encrypted_in_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_instance_transitions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_instance_due_and_lists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forced_removal_keeps_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_events, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_instance_holding, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_provider_id_migrates, setup, teardown),
	};
	return cmocka_run_group_tests_name("server_store", tests, NULL, NULL);
}

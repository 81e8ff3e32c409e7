/*
 * Persistence of the sim state through real files: a round trip across a
 * simulated restart (the registry is dropped and the file read again),
 * corrupt files, and atomic writes that leave the old file intact.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <dirent.h>

#include <cmocka.h>

#include "sim_test_util.h"

struct fixture {
	struct test_arena t;
	struct sim_config cfg;
	const struct sim_catalog *cat;
	char *dir;
	char *path;
	struct sim_err e;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	test_arena_init(&f->t);
	sim_config_init(&f->cfg);
	f->cat = sim_catalog_default(&f->e);
	f->dir = make_temp_dir();
	if (!f->cat || asprintf(&f->path, "%s/sim-state.json", f->dir) < 0)
		return -1;
	f->cfg.state_file = f->path;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sim_state_registry_clear();
	sim_synth_cleanup();
	chmod(f->dir, 0700);
	rm_rf(f->dir);
	test_arena_free(&f->t);
	free(f->dir);
	free(f->path);
	free(f);
	return 0;
}

static struct sim_state *state_of(struct fixture *f)
{
	struct sim_state *st;
	if (sim_state_get(f->path, &st, &f->e))
		fail_msg("loading %s: %s", f->path, f->e.msg);
	return st;
}

static char *read_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	char *buf = calloc(1, 1 << 20);
	size_t n = fread(buf, 1, (1 << 20) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static size_t count_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static drv_provisioning_data *create(struct fixture *f, const char *type, const char *region, const char *key,
                                     int *rc)
{
	drv_create_instance_request *req = make_create(&f->t, type, region, false, key);
	add_tag(&f->t, req->instance, "drover-server", "s1");
	drv_provisioning_data *d = NULL;
	*rc = sim_instance_create(f->cat, state_of(f), &f->cfg, req, &f->t.a, &d, NULL, &f->e);
	return d;
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	int rc;
	/* No file until the first mutation: a fresh cloud. */
	struct stat sb;
	struct sim_state *st = state_of(f);
	assert_int_equal(st->instances.n, 0);
	assert_int_equal(stat(f->path, &sb), -1);

	f->cfg.provisioning_delay_ms = 3600 * 1000;
	drv_provisioning_data *i1 = create(f, "g6.xlarge", "us-west-2", "rt-1", &rc);
	assert_int_equal(rc, 0);
	f->cfg.provisioning_delay_ms = 0;
	drv_provisioning_data *i2 = create(f, "a2-highgpu-1g", "europe-west4", "rt-2", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	drv_volume_configuration vc = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
	vc.idempotency_key = "rt-vol";
	vc.name = "ckpt";
	vc.region = "us-west-2";
	vc.size_mib = 4096;
	drv_volume *v;
	assert_int_equal(sim_volume_create(f->cat, st, &f->cfg, &vc, &f->t.a, &v, &f->e), 0);
	char *dev;
	assert_int_equal(sim_volume_attach(st, v->volume_id, i1->instance_id, &f->t.a, &dev, &f->e), 0);
	drv_gateway_configuration gc = DROVER__COMPUTE__V1__GATEWAY_CONFIGURATION__INIT;
	gc.idempotency_key = "rt-gw";
	gc.name = "gw";
	gc.region = "us-west-2";
	gc.public_ip = true;
	drv_gateway *g;
	assert_int_equal(sim_gateway_create(f->cat, st, &f->cfg, &gc, &f->t.a, &g, &f->e), 0);
	drv_create_placement_group_request pr = DROVER__COMPUTE__V1__CREATE_PLACEMENT_GROUP_REQUEST__INIT;
	pr.name = "rt-pg";
	pr.region = "us-west-2";
	drv_placement_group *pg;
	assert_int_equal(sim_group_create(f->cat, st, &f->cfg, &pr, &f->t.a, &pg, &f->e), 0);
	assert_int_equal(sim_instance_terminate(st, i2->instance_id, &f->e), 0);

	/* "Restart": forget every state and read the file again. */
	sim_state_registry_clear();
	st = state_of(f);
	assert_int_equal(st->instances.n, 2);
	assert_int_equal(st->volumes.n, 1);
	assert_int_equal(st->gateways.n, 1);
	assert_int_equal(st->groups.n, 1);

	/* Same key, same machine; still provisioning (the delay was persisted); tags kept. */
	drv_provisioning_data *again = create(f, "g6.xlarge", "us-west-2", "rt-1", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(again->instance_id, i1->instance_id);
	assert_int_equal(again->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING);
	drv_list_instances_request lr = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	drv_list_instances_response *lresp = sim_new(&f->t.a, list_instances_response);
	assert_int_equal(sim_instance_list(st, &lr, &f->t.a, lresp, &f->e), 0);
	assert_int_equal(lresp->n_instances, 1);
	assert_string_equal(lresp->instances[0]->data->instance_id, i1->instance_id);
	assert_string_equal(lresp->instances[0]->tags[0]->key, "drover-server");
	assert_string_equal(lresp->instances[0]->tags[0]->value, "s1");
	drv_provisioning_data *d;
	assert_int_equal(sim_instance_get(st, i2->instance_id, &f->t.a, &d, &f->e), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED);

	char *dev2;
	assert_int_equal(sim_volume_attach(st, v->volume_id, i1->instance_id, &f->t.a, &dev2, &f->e), 0);
	assert_string_equal(dev2, dev);
	drv_gateway *g2;
	assert_int_equal(sim_gateway_create(f->cat, st, &f->cfg, &gc, &f->t.a, &g2, &f->e), 0);
	assert_string_equal(g2->instance_id, g->instance_id);
	assert_string_equal(g2->ip_address, g->ip_address);
	drv_placement_group *pg2;
	assert_int_equal(sim_group_create(f->cat, st, &f->cfg, &pr, &f->t.a, &pg2, &f->e), 0);
	assert_string_equal(pg2->group_id, pg->group_id);

	/* New ids after the restart do not collide with old ones. */
	drv_provisioning_data *i3 = create(f, "g6.xlarge", "us-west-2", "rt-3", &rc);
	assert_int_equal(rc, 0);
	assert_string_not_equal(i3->instance_id, i1->instance_id);
	assert_string_not_equal(i3->instance_id, i2->instance_id);

	/* Two state files are two clouds. */
	char *other;
	assert_true(asprintf(&other, "%s/other.json", f->dir) > 0);
	struct sim_state *st2;
	assert_int_equal(sim_state_get(other, &st2, &f->e), 0);
	assert_ptr_not_equal(st2, st);
	assert_int_equal(st2->instances.n, 0);
	free(other);
}

/* Forgotten records leave the file too; a terminated gateway saved without its time is kept. */
static void test_forgotten_on_file(void **state)
{
	struct fixture *f = *state;
	write_file(
	    f->path,
	    "{\"format\":\"drover-sim-state\",\"version\":1,\"next_serial\":5,\"instances\":[],"
	    "\"volumes\":[],\"placement_groups\":[],\"gateways\":[{\"id\":\"gw-1\","
	    "\"idempotency_key\":\"k\",\"name\":\"n\",\"project\":\"p\",\"region\":\"eastus\","
	    "\"ip_address\":\"10.0.0.9\",\"hostname\":\"h\",\"public_ip\":false,\"terminated\":true}]}");
	struct sim_state *st = state_of(f);
	assert_int_equal(st->gateways.n, 1);
	int rc;
	drv_provisioning_data *d = create(f, "g6.xlarge", "us-west-2", "gone", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(st->gateways.n, 1); /* its hour counts from the load */
	char *text = read_file(f->path);
	assert_non_null(strstr(text, "\"gw-1\""));
	assert_non_null(strstr(text, "\"terminated_ms\""));
	assert_non_null(strstr(text, d->instance_id));
	free(text);

	sim_state_set_retention(st, 0);
	assert_int_equal(sim_instance_terminate(st, d->instance_id, &f->e), 0);
	text = read_file(f->path);
	assert_null(strstr(text, d->instance_id));
	assert_null(strstr(text, "\"gw-1\""));
	free(text);
	sim_state_registry_clear();
	st = state_of(f);
	assert_int_equal(st->instances.n, 0);
	assert_int_equal(st->gateways.n, 0);
}

static void test_corrupt_file(void **state)
{
	struct fixture *f = *state;
	struct sim_state *st;
	write_file(f->path, "{\"format\": \"drover-sim-state\", \"version\": 1, \"next_serial\": ");
	assert_int_equal(sim_state_get(f->path, &st, &f->e), DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, f->path));
	assert_non_null(strstr(f->e.msg, "not valid JSON"));

	write_file(f->path, "{\"hello\": 1}");
	assert_int_equal(sim_state_get(f->path, &st, &f->e), DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "not a sim state file"));

	write_file(
	    f->path,
	    "{\"format\":\"drover-sim-state\",\"version\":1,\"next_serial\":3,\"instances\":[{\"id\":7}],"
	    "\"volumes\":[],\"placement_groups\":[],\"gateways\":[]}");
	assert_int_equal(sim_state_get(f->path, &st, &f->e), DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "malformed instances"));

	/* Once fixed, the file is read again (a failed load is not cached). */
	write_file(f->path,
	           "{\"format\":\"drover-sim-state\",\"version\":1,\"next_serial\":3,\"instances\":[],"
	           "\"volumes\":[],\"placement_groups\":[],\"gateways\":[]}");
	assert_int_equal(sim_state_get(f->path, &st, &f->e), 0);
	assert_int_equal(st->next_serial, 3);

	/* A directory where the file should be. */
	char *sub;
	assert_true(asprintf(&sub, "%s/adir", f->dir) > 0);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(sim_state_get(sub, &st, &f->e), DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "not a regular file"));
	free(sub);
}

/*
 * The write fails half-way (the file size limit is hit): the old file must be
 * byte-for-byte intact, no temp file left behind, and memory rolled back.
 */
static void test_atomic_write_size_limit(void **state)
{
	struct fixture *f = *state;
	int rc;
	drv_provisioning_data *i1 = create(f, "g6.xlarge", "us-west-2", "aw-1", &rc);
	assert_int_equal(rc, 0);
	char *before = read_file(f->path);
	assert_non_null(before);
	size_t size = strlen(before);

	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = size + 16; /* the next state (two instances) is much larger */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	create(f, "g6.xlarge", "us-west-2", "aw-2", &rc);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, old_handler);

	assert_int_equal(rc, DRV_EUNAVAILABLE);
	assert_non_null(strstr(f->e.msg, f->path));
	char *after = read_file(f->path);
	assert_string_equal(after, before);
	/* The state file and its lock file (sim_state_lock), no temp file. */
	assert_int_equal(count_dir_entries(f->dir), 2);
	char *lock;
	assert_true(asprintf(&lock, "%s.lock", f->path) > 0);
	assert_int_equal(access(lock, F_OK), 0);
	free(lock);
	struct sim_state *st = state_of(f);
	assert_int_equal(st->instances.n, 1);
	assert_string_equal(((struct sim_instance *)st->instances.items[0])->id, i1->instance_id);

	/* Once writes work again, the same key creates the machine. */
	create(f, "g6.xlarge", "us-west-2", "aw-2", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(state_of(f)->instances.n, 2);
	free(before);
	free(after);
}

/*
 * Something already has the temp file's name: a symlink (planted next to a
 * state file in a shared directory) was followed and its target overwritten,
 * and the state file itself became that symlink. Now the name is replaced.
 */
static void test_temp_name_taken(void **state)
{
	struct fixture *f = *state;
	int rc;
	char *tmp, *victim;
	assert_true(asprintf(&tmp, "%s.tmp.%ld", f->path, (long)getpid()) > 0);
	assert_true(asprintf(&victim, "%s/victim", f->dir) > 0);
	write_file(victim, "precious");
	assert_int_equal(symlink(victim, tmp), 0);
	create(f, "g6.xlarge", "us-west-2", "tn-1", &rc);
	assert_int_equal(rc, 0);
	char *text = read_file(victim);
	assert_string_equal(text, "precious");
	free(text);
	struct stat sb;
	assert_int_equal(lstat(f->path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));

	/* A temp file a crash left behind is simply replaced. */
	write_file(tmp, "half a state fi");
	create(f, "g6.xlarge", "us-west-2", "tn-2", &rc);
	assert_int_equal(rc, 0);
	sim_state_registry_clear();
	assert_int_equal(state_of(f)->instances.n, 2);
	assert_int_equal(lstat(tmp, &sb), -1);
	free(tmp);
	free(victim);
}

/* The temp file cannot be created (a directory is in the way, or the directory is read-only). */
static void test_atomic_write_unwritable(void **state)
{
	struct fixture *f = *state;
	int rc;
	create(f, "g6.xlarge", "us-west-2", "uw-1", &rc);
	assert_int_equal(rc, 0);
	char *before = read_file(f->path);

	char *tmp;
	assert_true(asprintf(&tmp, "%s.tmp.%ld", f->path, (long)getpid()) > 0);
	assert_int_equal(mkdir(tmp, 0700), 0);
	drv_volume_configuration vc = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
	vc.idempotency_key = "uw-vol";
	vc.region = "us-west-2";
	vc.size_mib = 100;
	drv_volume *v;
	struct sim_state *st = state_of(f);
	assert_int_equal(sim_volume_create(f->cat, st, &f->cfg, &vc, &f->t.a, &v, &f->e), DRV_EUNAVAILABLE);
	assert_non_null(strstr(f->e.msg, "cannot write state file"));
	assert_int_equal(st->volumes.n, 0);
	char *after = read_file(f->path);
	assert_string_equal(after, before);
	free(after);
	rmdir(tmp);
	free(tmp);

	/* A read-only directory (meaningless for root, who may write anyway). */
	if (geteuid() != 0) {
		assert_int_equal(chmod(f->dir, 0500), 0);
		assert_int_equal(sim_volume_create(f->cat, st, &f->cfg, &vc, &f->t.a, &v, &f->e),
		                 DRV_EUNAVAILABLE);
		after = read_file(f->path);
		assert_string_equal(after, before);
		free(after);
		chmod(f->dir, 0700);
	}
	assert_int_equal(sim_volume_create(f->cat, st, &f->cfg, &vc, &f->t.a, &v, &f->e), 0);
	assert_int_equal(st->volumes.n, 1);
	free(before);
}

/*
 * Request text and sizes that the state file could not hold. Text that is not
 * UTF-8 made every save fail with "out of memory serialising the state"
 * (INTERNAL); a volume of 2^64-1 MiB was saved as size -1 and the next start
 * refused the whole file. Both are now refused up front, naming the field.
 */
static void test_unstorable_requests(void **state)
{
	struct fixture *f = *state;
	drv_create_instance_request *req = make_create(&f->t, "g6.xlarge", "us-west-2", false, "utf-1");
	req->instance->name = "bad-\xff-name";
	drv_provisioning_data *d = NULL;
	assert_int_equal(sim_instance_create(f->cat, state_of(f), &f->cfg, req, &f->t.a, &d, NULL, &f->e),
	                 DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "instance.name"));
	req->instance->name = "fine";
	add_tag(&f->t, req->instance, "team", "\xc0\xaf"); /* an overlong '/' */
	assert_int_equal(sim_instance_create(f->cat, state_of(f), &f->cfg, req, &f->t.a, &d, NULL, &f->e),
	                 DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "instance.tags[0]"));
	assert_int_equal(state_of(f)->instances.n, 0);

	/* Real UTF-8 is kept as it is, across a restart. */
	req = make_create(&f->t, "g6.xlarge", "us-west-2", false, "utf-2");
	req->instance->name = "na\xc3\xafve-\xe5\x90\x8d-\xf0\x9f\x9a\x80";
	assert_int_equal(sim_instance_create(f->cat, state_of(f), &f->cfg, req, &f->t.a, &d, NULL, &f->e), 0);

	drv_volume_configuration vc = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
	vc.idempotency_key = "huge";
	vc.region = "us-west-2";
	vc.size_mib = UINT64_MAX;
	drv_volume *v;
	assert_int_equal(sim_volume_create(f->cat, state_of(f), &f->cfg, &vc, &f->t.a, &v, &f->e),
	                 DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "volume.size_mib"));
	vc.name = "\xe2\x82";
	vc.size_mib = SIM_MAX_VOLUME_MIB;
	assert_int_equal(sim_volume_create(f->cat, state_of(f), &f->cfg, &vc, &f->t.a, &v, &f->e),
	                 DRV_EINVAL);
	assert_non_null(strstr(f->e.msg, "volume.name"));
	vc.name = "largest";
	assert_int_equal(sim_volume_create(f->cat, state_of(f), &f->cfg, &vc, &f->t.a, &v, &f->e), 0);

	sim_state_registry_clear();
	struct sim_state *st = state_of(f);
	assert_int_equal(st->instances.n, 1);
	assert_string_equal(((struct sim_instance *)st->instances.items[0])->name,
	                    "na\xc3\xafve-\xe5\x90\x8d-\xf0\x9f\x9a\x80");
	assert_int_equal(st->volumes.n, 1);
	assert_int_equal(((struct sim_volume *)st->volumes.items[0])->size_mib, SIM_MAX_VOLUME_MIB);
}

/* The file is the truth: changes made behind our back (another process) are picked up. */
static void test_external_changes(void **state)
{
	struct fixture *f = *state;
	int rc;
	create(f, "g6.xlarge", "us-west-2", "ex-1", &rc);
	assert_int_equal(rc, 0);
	char *one = read_file(f->path);
	create(f, "g6.xlarge", "us-west-2", "ex-2", &rc);
	assert_int_equal(rc, 0);

	/* Another writer puts the one-instance version back (atomically, as we do). */
	char *tmp;
	assert_true(asprintf(&tmp, "%s.other", f->path) > 0);
	write_file(tmp, one);
	assert_int_equal(rename(tmp, f->path), 0);
	drv_list_instances_request lr = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	drv_list_instances_response *resp = sim_new(&f->t.a, list_instances_response);
	assert_int_equal(sim_instance_list(state_of(f), &lr, &f->t.a, resp, &f->e), 0);
	assert_int_equal(resp->n_instances, 1);
	assert_string_equal(resp->instances[0]->idempotency_key, "ex-1");

	/* A deleted file is an empty cloud. */
	assert_int_equal(unlink(f->path), 0);
	resp = sim_new(&f->t.a, list_instances_response);
	assert_int_equal(sim_instance_list(state_of(f), &lr, &f->t.a, resp, &f->e), 0);
	assert_int_equal(resp->n_instances, 0);

	/* A file broken behind our back does not wipe what we know. */
	create(f, "g6.xlarge", "us-west-2", "ex-3", &rc);
	assert_int_equal(rc, 0);
	write_file(f->path, "garbage");
	resp = sim_new(&f->t.a, list_instances_response);
	assert_int_equal(sim_instance_list(state_of(f), &lr, &f->t.a, resp, &f->e), 0);
	assert_int_equal(resp->n_instances, 1);

	/* Two spellings of one path are one state. */
	char *dotted;
	assert_true(asprintf(&dotted, "%s/./sim-state.json", f->dir) > 0);
	struct sim_state *a, *b;
	assert_int_equal(sim_state_get(f->path, &a, &f->e), 0);
	assert_int_equal(sim_state_get(dotted, &b, &f->e), 0);
	assert_ptr_equal(a, b);
	free(dotted);
	free(tmp);
	free(one);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forgotten_on_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_atomic_write_size_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_atomic_write_unwritable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_temp_name_taken, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unstorable_requests, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_external_changes, setup, teardown),
	};
	return cmocka_run_group_tests_name("sim_state", tests, NULL, NULL);
}

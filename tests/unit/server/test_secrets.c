/* srv_secrets: AES-256-GCM with a 0600 key file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "srv_secrets.h"
#include "testutil.h"

static void test_round_trip_and_key_file(void **state)
{
	char *dir = tu_tempdir();
	char *path = tu_join(dir, "secret.key");
	char err[512];
	struct srv_secrets *s;
	assert_int_equal(srv_secrets_open(path, &s, err, sizeof(err)), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 32);

	const char *msg = "{\"api_key\":\"hunter2\"}";
	unsigned char *blob, *blob2;
	size_t blen, blen2;
	assert_int_equal(srv_secrets_seal(s, "what", msg, strlen(msg), &blob, &blen), 0);
	assert_false(tu_contains(blob, blen, "hunter2", 7));
	/* A fresh nonce each time: the same text never seals to the same bytes. */
	assert_int_equal(srv_secrets_seal(s, "what", msg, strlen(msg), &blob2, &blen2), 0);
	assert_int_equal(blen, blen2);
	assert_memory_not_equal(blob, blob2, blen);

	char *out;
	size_t olen;
	assert_int_equal(srv_secrets_open_blob(s, "what", blob, blen, &out, &olen), 0);
	assert_string_equal(out, msg);
	free(out);
	/* Another purpose, a flipped bit, a truncated blob: all refused. */
	assert_int_equal(srv_secrets_open_blob(s, "other", blob, blen, &out, &olen), -1);
	blob[blen / 2] ^= 1;
	assert_int_equal(srv_secrets_open_blob(s, "what", blob, blen, &out, &olen), -1);
	assert_int_equal(srv_secrets_open_blob(s, "what", blob2, 10, &out, &olen), -1);
	srv_secrets_free(s);

	/* The second start reads the same key and opens the old blob. */
	assert_int_equal(srv_secrets_open(path, &s, err, sizeof(err)), 0);
	assert_int_equal(srv_secrets_open_blob(s, "what", blob2, blen2, &out, &olen), 0);
	assert_string_equal(out, msg);
	free(out);
	srv_secrets_free(s);

	/* A key file others can read is refused with a clear message. */
	chmod(path, 0644);
	assert_int_equal(srv_secrets_open(path, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chmod 600"));
	free(blob);
	free(blob2);
	tu_rmrf(dir);
	free(dir);
	free(path);
}

static void test_bad_key_file(void **state)
{
	char *dir = tu_tempdir();
	char *path = tu_join(dir, "secret.key");
	FILE *f = fopen(path, "w");
	fputs("short", f);
	fclose(f);
	chmod(path, 0600);
	char err[512];
	struct srv_secrets *s;
	assert_int_equal(srv_secrets_open(path, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a key file"));
	/* A directory in its place was told to "chmod 600 it". */
	unlink(path);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(srv_secrets_open(path, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "secret.key: not a regular file"));
	tu_rmrf(dir);
	free(dir);
	free(path);
}

/*
 * Machine signatures: stable for one key file (a restart, a restored store),
 * bound to the instance id, project and backend, and unforgeable without the
 * key; "v1-" and 32 lowercase hex digits.
 */
static void test_machine_signature(void **state)
{
	char *dir = tu_tempdir();
	char *path = tu_join(dir, "secret.key"), *path2 = tu_join(dir, "other.key");
	char err[512], sig[SRV_SECRETS_SIG_LEN + 1], again[SRV_SECRETS_SIG_LEN + 1];
	struct srv_secrets *s, *s2, *other;
	assert_int_equal(srv_secrets_open(path, &s, err, sizeof(err)), 0);
	assert_int_equal(srv_secrets_sign_machine(s, "i-1", "main", "sim", sig), 0);
	assert_int_equal(strlen(sig), SRV_SECRETS_SIG_LEN);
	assert_memory_equal(sig, "v1-", 3);
	for (size_t i = 3; i < SRV_SECRETS_SIG_LEN; i++)
		assert_true((sig[i] >= '0' && sig[i] <= '9') || (sig[i] >= 'a' && sig[i] <= 'f'));
	assert_true(srv_secrets_verify_machine(s, "i-1", "main", "sim", sig));
	/* The same key file opened again (droverd restarted) verifies it. */
	assert_int_equal(srv_secrets_open(path, &s2, err, sizeof(err)), 0);
	assert_int_equal(srv_secrets_sign_machine(s2, "i-1", "main", "sim", again), 0);
	assert_string_equal(sig, again);
	assert_true(srv_secrets_verify_machine(s2, "i-1", "main", "sim", sig));
	/* Any other id, project or backend; a shifted boundary; another key; a cut or empty tag: no. */
	assert_false(srv_secrets_verify_machine(s, "i-2", "main", "sim", sig));
	assert_false(srv_secrets_verify_machine(s, "i-1", "dev", "sim", sig));
	assert_false(srv_secrets_verify_machine(s, "i-1", "main", "sim2", sig));
	assert_false(srv_secrets_verify_machine(s, "i-1m", "ain", "sim", sig));
	assert_int_equal(srv_secrets_open(path2, &other, err, sizeof(err)), 0);
	assert_false(srv_secrets_verify_machine(other, "i-1", "main", "sim", sig));
	char cut[SRV_SECRETS_SIG_LEN + 1];
	memcpy(cut, sig, sizeof(cut));
	cut[SRV_SECRETS_SIG_LEN - 1] = '\0';
	assert_false(srv_secrets_verify_machine(s, "i-1", "main", "sim", cut));
	cut[SRV_SECRETS_SIG_LEN - 1] = sig[SRV_SECRETS_SIG_LEN - 1] == '0' ? '1' : '0';
	assert_false(srv_secrets_verify_machine(s, "i-1", "main", "sim", cut));
	assert_false(srv_secrets_verify_machine(s, "i-1", "main", "sim", ""));
	assert_false(srv_secrets_verify_machine(s, "i-1", "main", "sim", NULL));
	assert_false(srv_secrets_verify_machine(NULL, "i-1", "main", "sim", sig));
	srv_secrets_free(s);
	srv_secrets_free(s2);
	srv_secrets_free(other);
	tu_rmrf(dir);
	free(path);
	free(path2);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_and_key_file),
	    cmocka_unit_test(test_bad_key_file),
	    cmocka_unit_test(test_machine_signature),
	};
	return cmocka_run_group_tests_name("server_secrets", tests, NULL, NULL);
}

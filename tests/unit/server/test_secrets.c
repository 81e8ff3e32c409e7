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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_and_key_file),
	    cmocka_unit_test(test_bad_key_file),
	};
	return cmocka_run_group_tests_name("server_secrets", tests, NULL, NULL);
}

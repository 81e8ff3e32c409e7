#include "srv_secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define BLOB_VERSION 1

/* The label that derives the machine-signing key from the secrets key. */
#define SIGN_LABEL "drover/machine-signature/v1"

struct srv_secrets {
	unsigned char key[KEY_LEN];
	unsigned char sign_key[KEY_LEN]; /* HMAC-SHA256(key, SIGN_LABEL) */
};

/* Derives the signing key; -1 when OpenSSL fails. */
static int derive(struct srv_secrets *s)
{
	unsigned int len = 0;
	if (!HMAC(EVP_sha256(), s->key, KEY_LEN, (const unsigned char *)SIGN_LABEL, strlen(SIGN_LABEL),
	          s->sign_key, &len) ||
	    len != KEY_LEN)
		return -1;
	return 0;
}

static int read_key(int fd, unsigned char *key)
{
	size_t got = 0;
	while (got < KEY_LEN) {
		ssize_t r = read(fd, key + got, KEY_LEN - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	char extra;
	return read(fd, &extra, 1) == 0 ? 0 : -1;
}

static int derive_or_fail(struct srv_secrets *s, const char *path, struct srv_secrets **out, char *err,
                          size_t errlen)
{
	if (derive(s) < 0) {
		snprintf(err, errlen, "%s: cannot derive the machine-signing key (OpenSSL HMAC failed)",
		         path);
		srv_secrets_free(s);
		return -1;
	}
	*out = s;
	return 0;
}

int srv_secrets_open(const char *path, struct srv_secrets **out, char *err, size_t errlen)
{
	struct srv_secrets *s = calloc(1, sizeof(*s));
	struct stat st;
	int fd;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* O_EXCL: exactly one start creates the key; every later one reads it. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0) {
		if (RAND_bytes(s->key, KEY_LEN) != 1 || write(fd, s->key, KEY_LEN) != KEY_LEN ||
		    fsync(fd) < 0) {
			snprintf(err, errlen, "%s: cannot write a new key: %s", path, strerror(errno));
			close(fd);
			unlink(path);
			srv_secrets_free(s);
			return -1;
		}
		close(fd);
		return derive_or_fail(s, path, out, err, errlen);
	}
	if (errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
		srv_secrets_free(s);
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		srv_secrets_free(s);
		return -1;
	}
	/* A directory opens read-only too; the mode check below would say "chmod 600 it". */
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file (the 32-byte key file of this data directory)",
		         path);
		close(fd);
		srv_secrets_free(s);
		return -1;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
		         "%s: key file is accessible by group or others (mode %03o); chmod 600 it", path,
		         (unsigned)(st.st_mode & 0777));
		close(fd);
		srv_secrets_free(s);
		return -1;
	}
	if (read_key(fd, s->key) < 0) {
		snprintf(err, errlen, "%s: not a key file (expected exactly %d bytes)", path, KEY_LEN);
		close(fd);
		srv_secrets_free(s);
		return -1;
	}
	close(fd);
	return derive_or_fail(s, path, out, err, errlen);
}

void srv_secrets_free(struct srv_secrets *s)
{
	if (!s)
		return;
	explicit_bzero(s->key, sizeof(s->key));
	free(s);
}

int srv_secrets_seal(struct srv_secrets *s, const char *what, const void *plain, size_t len,
                     unsigned char **out, size_t *out_len)
{
	size_t total = 1 + NONCE_LEN + len + TAG_LEN;
	unsigned char *blob = malloc(total);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, ok = 0;

	if (!blob || !ctx || len > INT32_MAX)
		goto fail;
	blob[0] = BLOB_VERSION;
	if (RAND_bytes(blob + 1, NONCE_LEN) != 1)
		goto fail;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, s->key, blob + 1) != 1)
		goto fail;
	if (what && EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)what, (int)strlen(what)) != 1)
		goto fail;
	if (EVP_EncryptUpdate(ctx, blob + 1 + NONCE_LEN, &n, plain, (int)len) != 1)
		goto fail;
	if (EVP_EncryptFinal_ex(ctx, blob + 1 + NONCE_LEN + n, &n) != 1)
		goto fail;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, blob + 1 + NONCE_LEN + len) != 1)
		goto fail;
	ok = 1;
fail:
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		free(blob);
		return -1;
	}
	*out = blob;
	*out_len = total;
	return 0;
}

int srv_secrets_open_blob(struct srv_secrets *s, const char *what, const unsigned char *blob, size_t len,
                          char **out, size_t *out_len)
{
	EVP_CIPHER_CTX *ctx = NULL;
	char *plain = NULL;
	size_t plen;
	int n, ok = 0;

	if (!blob || len < 1 + NONCE_LEN + TAG_LEN || blob[0] != BLOB_VERSION)
		return -1;
	plen = len - 1 - NONCE_LEN - TAG_LEN;
	plain = malloc(plen + 1);
	ctx = EVP_CIPHER_CTX_new();
	if (!plain || !ctx)
		goto fail;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, s->key, blob + 1) != 1)
		goto fail;
	if (what && EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)what, (int)strlen(what)) != 1)
		goto fail;
	if (EVP_DecryptUpdate(ctx, (unsigned char *)plain, &n, blob + 1 + NONCE_LEN, (int)plen) != 1)
		goto fail;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(blob + len - TAG_LEN)) != 1)
		goto fail;
	/* The tag check happens here: a damaged blob or a wrong key fails. */
	if (EVP_DecryptFinal_ex(ctx, (unsigned char *)plain + n, &n) != 1)
		goto fail;
	plain[plen] = 0;
	ok = 1;
fail:
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		if (plain)
			explicit_bzero(plain, plen);
		free(plain);
		return -1;
	}
	*out = plain;
	*out_len = plen;
	return 0;
}

int srv_secrets_sign_machine(const struct srv_secrets *s, const char *instance_id, const char *project,
                             const char *backend, char *out)
{
	/* NUL-separated: no two triples of C strings give the same message. */
	size_t li = strlen(instance_id), lp = strlen(project), lb = strlen(backend);
	size_t len = li + 1 + lp + 1 + lb;
	unsigned char *msg = malloc(len);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mlen = 0;
	if (!msg)
		return -1;
	memcpy(msg, instance_id, li + 1);
	memcpy(msg + li + 1, project, lp + 1);
	memcpy(msg + li + 1 + lp + 1, backend, lb);
	bool ok = HMAC(EVP_sha256(), s->sign_key, KEY_LEN, msg, len, mac, &mlen) && mlen >= 16;
	free(msg);
	if (!ok)
		return -1;
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "v1-", 3);
	for (int i = 0; i < 16; i++) {
		out[3 + 2 * i] = hex[mac[i] >> 4];
		out[3 + 2 * i + 1] = hex[mac[i] & 15];
	}
	out[SRV_SECRETS_SIG_LEN] = '\0';
	return 0;
}

bool srv_secrets_verify_machine(const struct srv_secrets *s, const char *instance_id, const char *project,
                                const char *backend, const char *sig)
{
	char want[SRV_SECRETS_SIG_LEN + 1];
	if (!s || !sig || strlen(sig) != SRV_SECRETS_SIG_LEN ||
	    srv_secrets_sign_machine(s, instance_id, project, backend, want) < 0)
		return false;
	return CRYPTO_memcmp(want, sig, SRV_SECRETS_SIG_LEN) == 0;
}

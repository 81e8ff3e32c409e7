/*
 * srv_secrets — encryption at rest for backend secrets: AES-256-GCM (OpenSSL
 * EVP) with a key file created 0600 in the data directory at first start.
 *
 * A sealed blob is: version byte (1) | 12-byte random nonce | ciphertext |
 * 16-byte tag. The associated data binds a blob to its purpose ("what"), so a
 * blob copied into another row does not decrypt.
 */
#ifndef SRV_SECRETS_H
#define SRV_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

struct srv_secrets;

/*
 * Opens (or, at first start, creates with mode 0600) the key file `path`.
 * Refuses a key file readable by group or others, or of the wrong size.
 * Returns 0 and *out, or -1 with a message in err.
 */
int srv_secrets_open(const char *path, struct srv_secrets **out, char *err, size_t errlen);

/* Wipes the key; NULL is fine. */
void srv_secrets_free(struct srv_secrets *s);

/*
 * Encrypts `len` bytes. On 0, *out is a new malloc'ed blob of *out_len bytes.
 * `what` (may be NULL) is authenticated but not stored.
 */
int srv_secrets_seal(struct srv_secrets *s, const char *what, const void *plain, size_t len,
                     unsigned char **out, size_t *out_len);

/*
 * Decrypts a blob from srv_secrets_seal. On 0, *out is a new NUL-terminated
 * malloc'ed buffer of *out_len bytes (plus the NUL). Returns -1 when the blob
 * is damaged, was sealed with another key or for another `what`.
 */
int srv_secrets_open_blob(struct srv_secrets *s, const char *what, const unsigned char *blob, size_t len,
                          char **out, size_t *out_len);

/*
 * Machine signatures. droverd tags every machine it creates with an
 * HMAC-SHA256 of the instance id, the project and the backend name, under a
 * key derived from the secrets key with its own label (so the signatures
 * reveal nothing of the key that seals secrets). A listed machine whose tag
 * verifies was provably made by this data directory's droverd; anything else
 * carrying droverd's tags is foreign. The tag value is "v1-" and the first
 * 128 bits of the MAC in lowercase hex: short, and within every provider's
 * tag and label alphabet (GCP labels take only [a-z0-9_-], 63 characters).
 */
#define SRV_SECRETS_SIG_LEN 35
/* Writes the signature and a NUL into out (SRV_SECRETS_SIG_LEN + 1 bytes). 0, or -1 when OpenSSL fails. */
int srv_secrets_sign_machine(const struct srv_secrets *s, const char *instance_id, const char *project,
                             const char *backend, char *out);
/* True when `sig` (may be NULL) is the signature of these three; compared in constant time. */
bool srv_secrets_verify_machine(const struct srv_secrets *s, const char *instance_id, const char *project,
                                const char *backend, const char *sig);

#endif

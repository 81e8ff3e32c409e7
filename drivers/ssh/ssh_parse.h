/*
 * The ssh driver's pure parts: host keys and fingerprints, what a probe of a
 * host prints, GPU names, the claim file, and the strict patterns that every
 * value bound for a host passes. No I/O, no libssh sessions: unit tests
 * (tests/unit/ssh) call these directly.
 */
#ifndef SSH_PARSE_H
#define SSH_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libssh/libssh.h>

/* "SHA256:" and 43 characters of unpadded base64, as OpenSSH prints it. */
#define SSH_FP_LEN 50

/*
 * A host_key from the config: either a public key line ("ssh-ed25519
 * AAAA… [comment]", as ssh-keyscan or `keyscan` print it; a leading
 * "[host]:port " or "host " of a known_hosts line is accepted too) or a
 * fingerprint ("SHA256:…"). `type` is the key's algorithm ("" for a bare
 * fingerprint, which then accepts a key of any type with that hash).
 */
struct ssh_hostkey {
	char fingerprint[SSH_FP_LEN + 1];
	char type[40];
};

/* 0, or -1 with a message in err naming what is wrong (never the key itself for secrets). */
int ssh_hostkey_parse(const char *text, struct ssh_hostkey *out, char *err, size_t errlen);

/* The "SHA256:..." fingerprint of a key (a server's, as libssh got it). 0 or -1. */
int ssh_hostkey_fingerprint(ssh_key key, char out[SSH_FP_LEN + 1]);

/* True when `s` holds what looks like a private key (a "PRIVATE KEY-----" armour line). */
bool ssh_looks_private(const char *s);

/*
 * An authorized_keys line for an instance's ssh_public_keys: an algorithm
 * OpenSSH knows, base64 that decodes to a key of that algorithm, and an
 * optional comment of [A-Za-z0-9@._+=:-] only. Anything else (newlines,
 * options such as command="…", shell metacharacters) is refused, since the
 * line is written into the user's authorized_keys.
 */
bool ssh_pubkey_line_ok(const char *line);

/* Host names and addresses: [A-Za-z0-9.:-], 1..253 characters, not starting with '-'. */
bool ssh_address_ok(const char *s);
/* Login names: [a-z_][a-z0-9_.-]{0,31}. */
bool ssh_user_ok(const char *s);

/* ---- probes ---- */

#define SSH_MAX_GPU_KINDS 4
/* The longest claim line: CreateInstance refuses a name, project, tags and key that make a longer one. */
#define SSH_CLAIM_MAX 8192

struct ssh_gpu {
	char name[32];   /* the sim catalog's name: "H100" */
	char vendor[16]; /* "nvidia", "amd" */
	uint64_t memory_mib;
	uint32_t count;
};

/* What one probe of a host found. */
struct ssh_probe {
	char arch[32];
	uint32_t cpus;
	uint64_t memory_mib;
	uint64_t disk_mib;
	struct ssh_gpu gpus[SSH_MAX_GPU_KINDS];
	size_t n_gpus;
	bool claimed;
	char claim[SSH_CLAIM_MAX + 1]; /* the claim file's first line when claimed */
	char hostname[256];
	char ip[64];
};

/*
 * The shell program a probe runs on a host (fixed text: the only input, the
 * disk path, comes over stdin), printing key=value lines for
 * ssh_probe_parse().
 */
extern const char ssh_probe_script[];

/*
 * Parses a probe's output. Unknown keys are ignored (a newer probe); a
 * missing arch, cpus or memory is an error. 0, or -1 with err set.
 */
int ssh_probe_parse(const char *out, struct ssh_probe *p, char *err, size_t errlen);

/*
 * One line of `nvidia-smi --query-gpu=name,memory.total
 * --format=csv,noheader,nounits` ("NVIDIA H100 80GB HBM3, 81559") into
 * name and MiB. 0, or -1 for a line of another shape.
 */
int ssh_nvidia_smi_line(const char *line, char *name, size_t namelen, uint64_t *mib);

/*
 * A GPU's marketing name as the vendor tool prints it ("NVIDIA H100 80GB
 * HBM3", "NVIDIA A100-SXM4-80GB", "AMD Instinct MI300X") as the sim
 * catalog names it ("H100", "A100", "MI300X"): the model with vendor, form
 * factor and memory taken off. Writes "" when nothing recognisable is left.
 */
void ssh_gpu_normalise(const char *raw, char *out, size_t outlen);

/* ---- claims ---- */

/* What a claim file on a host records. Strings borrowed from the JSON it was read from. */
struct ssh_claim {
	const char *instance_id;
	const char *idempotency_key;
	const char *name;
	const char *project;
	const char *created_at;
	json_t *tags; /* object, borrowed */
	json_t *root; /* owned: ssh_claim_close() */
};

/* The claim's one line of JSON (malloc'd), from the instance's fields; tags is borrowed. */
char *ssh_claim_format(const char *instance_id, const char *key, const char *name, const char *project,
                       json_t *tags, int64_t now_s);
/* Parses a claim line. 0, or -1 with err set. */
int ssh_claim_parse(const char *line, struct ssh_claim *c, char *err, size_t errlen);
void ssh_claim_close(struct ssh_claim *c);

/* Instance ids: "ssh-" + the host's 12-hex id + "-" + 8 hex. */
bool ssh_instance_id_ok(const char *id);
/* The 12-hex id of a host (user@address:port), in out[13]. */
void ssh_host_id(const char *user, const char *address, int port, char out[13]);

#endif

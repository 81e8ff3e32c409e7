/*
 * The ssh driver's pure parts (ssh_parse.h): host keys, probe output, GPU
 * names, claims and the strict patterns for values that reach a host.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libssh/libssh.h>

#include "ssh_parse.h"

/* ---- host keys ---- */

static bool is_b64(int c)
{
	return isalnum(c) || c == '+' || c == '/';
}

static int fingerprint_of(ssh_key key, char out[SSH_FP_LEN + 1])
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != 0)
		return -1;
	char *fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	if (!fp)
		return -1;
	int rc = strlen(fp) == SSH_FP_LEN ? 0 : -1;
	if (rc == 0)
		memcpy(out, fp, SSH_FP_LEN + 1);
	ssh_string_free_char(fp);
	return rc;
}

int ssh_hostkey_fingerprint(ssh_key key, char out[SSH_FP_LEN + 1])
{
	return fingerprint_of(key, out);
}

int ssh_hostkey_parse(const char *text, struct ssh_hostkey *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	while (*text == ' ' || *text == '\t')
		text++;
	if (strncmp(text, "SHA256:", 7) == 0) {
		const char *b = text + 7;
		size_t n = 0;
		while (is_b64((unsigned char)b[n]))
			n++;
		if (n != 43 || (b[n] && b[n] != ' ' && b[n] != '\n')) {
			snprintf(
			    err, errlen,
			    "a SHA256 fingerprint is \"SHA256:\" and 43 base64 characters, as ssh-keygen -l "
			    "prints it");
			return -1;
		}
		memcpy(out->fingerprint, text, SSH_FP_LEN);
		out->fingerprint[SSH_FP_LEN] = '\0';
		return 0;
	}
	/* Words: [marker-host] type base64 [comment]. */
	char buf[16384];
	if (strlen(text) >= sizeof(buf)) {
		snprintf(err, errlen, "the host key line is too long");
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", text);
	char *save = NULL;
	char *w1 = strtok_r(buf, " \t\r\n", &save);
	char *w2 = w1 ? strtok_r(NULL, " \t\r\n", &save) : NULL;
	char *w3 = w2 ? strtok_r(NULL, " \t\r\n", &save) : NULL;
	if (!w1 || !w2) {
		snprintf(err, errlen,
		         "expected a public host key line (\"ssh-ed25519 AAAA...\", as `drover-driver-ssh "
		         "keyscan` "
		         "prints it) or a \"SHA256:...\" fingerprint");
		return -1;
	}
	const char *type = w1, *b64 = w2;
	if (ssh_key_type_from_name(w1) == SSH_KEYTYPE_UNKNOWN && w3) {
		type = w2; /* a known_hosts line: the host comes first */
		b64 = w3;
	}
	enum ssh_keytypes_e t = ssh_key_type_from_name(type);
	if (t == SSH_KEYTYPE_UNKNOWN) {
		snprintf(err, errlen, "\"%.40s\" is not a public key algorithm libssh knows", type);
		return -1;
	}
	ssh_key key = NULL;
	if (ssh_pki_import_pubkey_base64(b64, t, &key) != SSH_OK || !key) {
		snprintf(err, errlen,
		         "the base64 of the %.40s host key does not decode to a key of that type", type);
		return -1;
	}
	int rc = fingerprint_of(key, out->fingerprint);
	ssh_key_free(key);
	if (rc) {
		snprintf(err, errlen, "could not compute the host key's fingerprint");
		return -1;
	}
	snprintf(out->type, sizeof(out->type), "%s", type);
	return 0;
}

bool ssh_looks_private(const char *s)
{
	return s && (strstr(s, "PRIVATE KEY-----") || strstr(s, "PuTTY-User-Key-File"));
}

bool ssh_pubkey_line_ok(const char *line)
{
	static const char *const algs[] = {"ssh-ed25519",
	                                   "ssh-rsa",
	                                   "ecdsa-sha2-nistp256",
	                                   "ecdsa-sha2-nistp384",
	                                   "ecdsa-sha2-nistp521",
	                                   "sk-ssh-ed25519@openssh.com",
	                                   "sk-ecdsa-sha2-nistp256@openssh.com",
	                                   NULL};
	if (!line || strlen(line) > 8192)
		return false;
	const char *sp = strchr(line, ' ');
	if (!sp)
		return false;
	size_t alen = (size_t)(sp - line);
	const char *const *a = algs;
	for (; *a; a++)
		if (strlen(*a) == alen && strncmp(*a, line, alen) == 0)
			break;
	if (!*a)
		return false;
	const char *b = sp + 1;
	size_t n = 0;
	while (is_b64((unsigned char)b[n]))
		n++;
	size_t pad = 0;
	while (b[n + pad] == '=' && pad < 3)
		pad++;
	if (n == 0 || (b[n + pad] && b[n + pad] != ' '))
		return false;
	const char *c = b + n + pad;
	if (*c == ' ') {
		c++;
		if (!*c || strlen(c) > 200)
			return false;
		for (const char *p = c; *p; p++)
			if (!isalnum((unsigned char)*p) && !strchr("@._+=:-", *p))
				return false;
	}
	char b64[8192];
	snprintf(b64, sizeof(b64), "%.*s", (int)(n + pad), b);
	char alg[64];
	snprintf(alg, sizeof(alg), "%.*s", (int)alen, line);
	ssh_key key = NULL;
	if (ssh_pki_import_pubkey_base64(b64, ssh_key_type_from_name(alg), &key) != SSH_OK || !key)
		return false;
	ssh_key_free(key);
	return true;
}

bool ssh_address_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 253 || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != ':' && s[i] != '-')
			return false;
	return true;
}

bool ssh_user_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 32 || !(islower((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

/* ---- probes ---- */

/*
 * Reads the disk path from stdin (empty: the home directory). Shell
 * builtins where they do (/proc/meminfo, the host name): a probe of 20 hosts
 * at once should cost the hosts as few processes as it can. The GPU vendor
 * comes from device nodes first, NVIDIA before AMD, so an AMD iGPU beside an
 * NVIDIA card does not hide the card; then from the tools on PATH. The claim
 * is read in the same round trip, so an offer knows whether its host is free.
 */
const char ssh_probe_script[] =
    "IFS= read -r p || p=\n"
    "[ -n \"$p\" ] || p=\"$HOME\"\n"
    "echo \"arch=$(uname -m)\"\n"
    "echo \"cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)\"\n"
    "while read -r k v _; do if [ \"$k\" = MemTotal: ]; then echo \"mem_kib=$v\"; break; fi; done "
    "</proc/meminfo\n"
    "df -Pk -- \"$p\" 2>/dev/null | { read -r _; read -r _ t _ && echo \"disk_kib=$t\"; }\n"
    "read -r h </proc/sys/kernel/hostname && echo \"hostname=$h\"\n"
    "set -- $SSH_CONNECTION\n"
    "echo \"ip=$3\"\n"
    "v=\n"
    "if [ -e /dev/nvidiactl ] || [ -e /dev/nvidia0 ]; then v=nvidia\n"
    "elif [ -e /dev/kfd ]; then v=amd\n"
    "elif command -v nvidia-smi >/dev/null 2>&1; then v=nvidia\n"
    "elif command -v amd-smi >/dev/null 2>&1; then v=amd\n"
    "fi\n"
    "echo \"gpu_vendor=$v\"\n"
    "if [ \"$v\" = nvidia ]; then\n"
    "  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | "
    "sed 's/^/nvidia=/'\n"
    "elif [ \"$v\" = amd ]; then\n"
    "  for d in /sys/class/drm/card[0-9]*/device; do\n"
    "    [ \"$(cat \"$d/vendor\" 2>/dev/null)\" = 0x1002 ] || continue\n"
    "    m=$(cat \"$d/mem_info_vram_total\" 2>/dev/null) || continue\n"
    "    echo \"amd_vram=$m\"\n"
    "  done\n"
    "  amd-smi static --asic --json 2>/dev/null | "
    "sed -n 's/.*\"market_name\": *\"\\([^\"]*\\)\".*/amd_name=\\1/p' | head -n 1\n"
    "fi\n"
    "if [ -f \"$HOME/.drover/claim\" ]; then printf 'claim='; head -n 1 \"$HOME/.drover/claim\"; echo; fi\n";

static struct ssh_gpu *gpu_slot(struct ssh_probe *p, const char *name, const char *vendor, uint64_t mib)
{
	for (size_t i = 0; i < p->n_gpus; i++)
		if (strcmp(p->gpus[i].name, name) == 0 && p->gpus[i].memory_mib == mib)
			return &p->gpus[i];
	if (p->n_gpus == SSH_MAX_GPU_KINDS)
		return NULL;
	struct ssh_gpu *g = &p->gpus[p->n_gpus++];
	memset(g, 0, sizeof(*g));
	snprintf(g->name, sizeof(g->name), "%s", name);
	snprintf(g->vendor, sizeof(g->vendor), "%s", vendor);
	g->memory_mib = mib;
	return g;
}

static bool parse_u64(const char *s, uint64_t *v)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return false;
	unsigned long long x = strtoull(s, &end, 10);
	while (*end == ' ' || *end == '\r')
		end++;
	if (*end)
		return false;
	*v = x;
	return true;
}

int ssh_nvidia_smi_line(const char *line, char *name, size_t namelen, uint64_t *mib)
{
	const char *comma = strrchr(line, ',');
	if (!comma || comma == line)
		return -1;
	const char *m = comma + 1;
	while (*m == ' ')
		m++;
	if (!parse_u64(m, mib) || *mib == 0)
		return -1;
	size_t n = (size_t)(comma - line);
	while (n && line[n - 1] == ' ')
		n--;
	if (n == 0 || n >= namelen)
		return -1;
	memcpy(name, line, n);
	name[n] = '\0';
	return 0;
}

int ssh_probe_parse(const char *out, struct ssh_probe *p, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	char amd_name[64] = "";
	uint64_t amd_count = 0, amd_mib = 0;
	bool have_cpus = false, have_mem = false;
	const char *line = out;
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char buf[SSH_CLAIM_MAX + 64];
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
		memcpy(buf, line, len);
		buf[len] = '\0';
		line = nl ? nl + 1 : NULL;
		char *eq = strchr(buf, '=');
		if (!eq)
			continue;
		*eq = '\0';
		const char *k = buf, *v = eq + 1;
		uint64_t x;
		if (strcmp(k, "arch") == 0) {
			snprintf(p->arch, sizeof(p->arch), "%s", v);
		} else if (strcmp(k, "cpus") == 0 && parse_u64(v, &x) && x > 0 && x < 100000) {
			p->cpus = (uint32_t)x;
			have_cpus = true;
		} else if (strcmp(k, "mem_kib") == 0 && parse_u64(v, &x) && x > 0) {
			p->memory_mib = x / 1024;
			have_mem = true;
		} else if (strcmp(k, "disk_kib") == 0 && parse_u64(v, &x)) {
			p->disk_mib = x / 1024;
		} else if (strcmp(k, "hostname") == 0) {
			snprintf(p->hostname, sizeof(p->hostname), "%s", v);
		} else if (strcmp(k, "ip") == 0) {
			snprintf(p->ip, sizeof(p->ip), "%s", v);
		} else if (strcmp(k, "nvidia") == 0) {
			char raw[128], name[32];
			if (ssh_nvidia_smi_line(v, raw, sizeof(raw), &x) != 0)
				continue;
			ssh_gpu_normalise(raw, name, sizeof(name));
			struct ssh_gpu *g = name[0] ? gpu_slot(p, name, "nvidia", x) : NULL;
			if (g)
				g->count++;
		} else if (strcmp(k, "amd_vram") == 0 && parse_u64(v, &x) && x > 0) {
			amd_count++;
			amd_mib = x / (1024 * 1024);
		} else if (strcmp(k, "amd_name") == 0) {
			snprintf(amd_name, sizeof(amd_name), "%s", v);
		} else if (strcmp(k, "claim") == 0 && v[0]) {
			p->claimed = true;
			snprintf(p->claim, sizeof(p->claim), "%s", v);
		}
	}
	if (amd_count && amd_name[0]) {
		char name[32];
		ssh_gpu_normalise(amd_name, name, sizeof(name));
		struct ssh_gpu *g = name[0] ? gpu_slot(p, name, "amd", amd_mib) : NULL;
		if (g)
			g->count = (uint32_t)amd_count;
	}
	if (!p->arch[0] || !have_cpus || !have_mem) {
		snprintf(err, errlen, "the probe's output lacks %s",
		         !p->arch[0]  ? "the CPU arch (uname -m)"
		         : !have_cpus ? "the CPU count"
		                      : "MemTotal of /proc/meminfo");
		return -1;
	}
	return 0;
}

/* Words that say nothing of the model: vendors, families, form factors. */
static bool noise_word(const char *w)
{
	static const char *const noise[] = {
	    "nvidia", "amd",  "tesla", "instinct", "radeon", "geforce", "quadro", "pcie", "sxm", "sxm2",
	    "sxm4",   "sxm5", "hbm3",  "hbm3e",    "hbm2",   "hbm2e",   "nvl",    "oam",  "pro", NULL};
	for (const char *const *n = noise; *n; n++)
		if (strcasecmp(w, *n) == 0)
			return true;
	/* "80GB", "40GB", "16gb", "480GB": the memory, which is reported apart. */
	size_t n = strlen(w);
	if (n > 2 && strcasecmp(w + n - 2, "gb") == 0) {
		for (size_t i = 0; i + 2 < n; i++)
			if (!isdigit((unsigned char)w[i]))
				return false;
		return true;
	}
	return false;
}

void ssh_gpu_normalise(const char *raw, char *out, size_t outlen)
{
	char buf[128];
	char words[8][32];
	size_t nw = 0;
	snprintf(buf, sizeof(buf), "%s", raw);
	/* '-' separates words too: "A100-SXM4-80GB". */
	for (char *c = buf; *c; c++)
		if (*c == '-' || *c == '_')
			*c = ' ';
	char *save = NULL;
	for (char *w = strtok_r(buf, " \t", &save); w && nw < 8; w = strtok_r(NULL, " \t", &save))
		if (!noise_word(w))
			snprintf(words[nw++], sizeof(words[0]), "%s", w);
	out[0] = '\0';
	if (nw == 0)
		return;
	/* "RTX A6000" is sold as the A6000; "RTX 6000" (Quadro, Turing) is the catalog's RTX6000. */
	size_t o = 0;
	for (size_t i = 0; i < nw; i++) {
		if (strcasecmp(words[i], "rtx") == 0 && i + 1 < nw && isalpha((unsigned char)words[i + 1][0]))
			continue;
		for (const char *c = words[i]; *c && o + 1 < outlen; c++)
			out[o++] = (char)toupper((unsigned char)*c);
	}
	out[o] = '\0';
}

/* ---- claims ---- */

char *ssh_claim_format(const char *instance_id, const char *key, const char *name, const char *project,
                       json_t *tags, int64_t now_s)
{
	char when[32];
	time_t t = (time_t)now_s;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_t *o =
	    json_pack("{s:s, s:s, s:s, s:s, s:O, s:s, s:s}", "instance_id", instance_id, "idempotency_key",
	              key, "name", name ? name : "", "project", project ? project : "", "tags",
	              tags ? tags : json_object(), "created_at", when, "by", "drover-driver-ssh");
	if (!o)
		return NULL;
	/* One line: jansson escapes newlines and every control character inside strings. */
	char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(o);
	return s;
}

int ssh_claim_parse(const char *line, struct ssh_claim *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	json_error_t je;
	json_t *root = json_loads(line, 0, &je);
	if (!root || !json_is_object(root)) {
		snprintf(err, errlen, "the claim file is not a JSON object: %s",
		         root ? "other JSON" : je.text);
		json_decref(root);
		return -1;
	}
	c->root = root;
	c->instance_id = json_string_value(json_object_get(root, "instance_id"));
	c->idempotency_key = json_string_value(json_object_get(root, "idempotency_key"));
	c->name = json_string_value(json_object_get(root, "name"));
	c->project = json_string_value(json_object_get(root, "project"));
	c->created_at = json_string_value(json_object_get(root, "created_at"));
	c->tags = json_object_get(root, "tags");
	if (!c->instance_id || !ssh_instance_id_ok(c->instance_id) || !c->idempotency_key ||
	    (c->tags && !json_is_object(c->tags))) {
		snprintf(err, errlen, "the claim file lacks a valid instance_id, idempotency_key or tags");
		ssh_claim_close(c);
		return -1;
	}
	if (!c->name)
		c->name = "";
	if (!c->project)
		c->project = "";
	return 0;
}

void ssh_claim_close(struct ssh_claim *c)
{
	json_decref(c->root);
	memset(c, 0, sizeof(*c));
}

static bool hex_run(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	return true;
}

bool ssh_instance_id_ok(const char *id)
{
	return id && strlen(id) == 4 + 12 + 1 + 8 && strncmp(id, "ssh-", 4) == 0 && hex_run(id + 4, 12) &&
	       id[16] == '-' && hex_run(id + 17, 8);
}

void ssh_host_id(const char *user, const char *address, int port, char out[13])
{
	/* FNV-1a 64: ids route calls to hosts; nothing here needs a cryptographic hash. */
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	char key[400];
	snprintf(key, sizeof(key), "%s@%s:%d", user, address, port);
	for (const char *c = key; *c; c++) {
		h ^= (unsigned char)*c;
		h *= UINT64_C(0x100000001b3);
	}
	snprintf(out, 13, "%012" PRIx64, h & UINT64_C(0xffffffffffff));
}

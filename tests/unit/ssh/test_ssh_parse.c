/* Tests of drivers/ssh/ssh_parse.c: host keys, probe output, GPU names, claims, patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ssh_parse.h"

/* Made with ssh-keygen; the fingerprints are what `ssh-keygen -l -E sha256` printed for them. */
#define ED_LINE "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXiggkIDV9Rkm+Z1Q/xl4BbesP5jNdEBZmJfmZ12RRU"
#define ED_FP "SHA256:QTfBt6uNTK9u3l77Bir2vvFMtaPZgsV+g195SQxctiY"
#define EC_LINE                                                                                              \
	"ecdsa-sha2-nistp256 "                                                                               \
	"AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBH0+672CjsxYeg+"                                \
	"bl5ekbRr0jlPV2mumu7CJtMlqoIoBnCcQxoOoeLd"                                                           \
	"8LqPcjTEk/Wmd9smJe06ZHQSl/oCN9mg="
#define EC_FP "SHA256:qK0pwAj6wlfqDg8wKygpQxiH9Xb0Ln48JKjkjbOC2B0"

static void test_hostkey(void **state)
{
	(void)state;
	struct ssh_hostkey k;
	char err[300];
	assert_int_equal(ssh_hostkey_parse(ED_LINE, &k, err, sizeof(err)), 0);
	assert_string_equal(k.fingerprint, ED_FP);
	assert_string_equal(k.type, "ssh-ed25519");
	assert_int_equal(ssh_hostkey_parse(ED_LINE " a comment", &k, err, sizeof(err)), 0);
	assert_string_equal(k.fingerprint, ED_FP);
	/* A known_hosts line, as ssh-keyscan prints it. */
	assert_int_equal(ssh_hostkey_parse("[10.0.0.5]:2222 " EC_LINE, &k, err, sizeof(err)), 0);
	assert_string_equal(k.fingerprint, EC_FP);
	assert_string_equal(k.type, "ecdsa-sha2-nistp256");
	assert_int_equal(ssh_hostkey_parse(ED_FP, &k, err, sizeof(err)), 0);
	assert_string_equal(k.fingerprint, ED_FP);
	assert_string_equal(k.type, "");

	assert_int_equal(ssh_hostkey_parse("SHA256:short", &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "43 base64"));
	assert_int_equal(ssh_hostkey_parse("MD5:aa:bb", &k, err, sizeof(err)), -1);
	assert_int_equal(ssh_hostkey_parse("ssh-ed25519 AAAAnotakey", &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not decode"));
	assert_int_equal(ssh_hostkey_parse("ssh-foo AAAA", &k, err, sizeof(err)), -1);
	assert_int_equal(ssh_hostkey_parse("", &k, err, sizeof(err)), -1);
	/* The ed25519 key's base64 under the ecdsa name is not an ecdsa key. */
	assert_int_equal(
	    ssh_hostkey_parse(
	        "ecdsa-sha2-nistp256 AAAAC3NzaC1lZDI1NTE5AAAAIEXiggkIDV9Rkm+Z1Q/xl4BbesP5jNdEBZmJfmZ12RRU",
	        &k, err, sizeof(err)),
	    -1);
}

static void test_private_and_pubkey_lines(void **state)
{
	(void)state;
	assert_true(ssh_looks_private(
	    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"));
	assert_true(ssh_looks_private("x -----BEGIN RSA PRIVATE KEY----- y"));
	assert_false(ssh_looks_private(ED_LINE));
	assert_false(ssh_looks_private(NULL));

	assert_true(ssh_pubkey_line_ok(ED_LINE));
	assert_true(ssh_pubkey_line_ok(ED_LINE " alice@laptop"));
	assert_true(ssh_pubkey_line_ok(EC_LINE));
	/* Hostile values: nothing but a key and a plain comment reaches authorized_keys. */
	static const char *const bad[] = {
	    ED_LINE " $(touch /tmp/pwned)",
	    ED_LINE " a;b",
	    ED_LINE " it's",
	    ED_LINE " \"q\"",
	    ED_LINE "\n" ED_LINE,
	    ED_LINE " x\nssh-ed25519 AAAA evil",
	    "command=\"rm -rf ~\" " ED_LINE,
	    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXiggkIDV9Rkm$(id)",
	    "ssh-ed25519",
	    "ssh-ed25519 ",
	    "ssh-ed25519 AAAAnotakey",
	    "",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ssh_pubkey_line_ok(bad[i]))
			fail_msg("accepted hostile key line %zu: %s", i, bad[i]);
}

static void test_names(void **state)
{
	(void)state;
	assert_true(ssh_address_ok("127.0.0.2"));
	assert_true(ssh_address_ok("gpu-01.example.com"));
	assert_true(ssh_address_ok("::1"));
	assert_false(ssh_address_ok("-oProxyCommand=x"));
	assert_false(ssh_address_ok("a b"));
	assert_false(ssh_address_ok("$(id)"));
	assert_false(ssh_address_ok(""));
	assert_true(ssh_user_ok("ubuntu"));
	assert_true(ssh_user_ok("_svc.gpu-1"));
	assert_false(ssh_user_ok("Root"));
	assert_false(ssh_user_ok("a;b"));
	assert_false(ssh_user_ok("-l"));
	assert_false(ssh_user_ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 33 */
}

static void test_gpu_names(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"NVIDIA H100 80GB HBM3", "H100"},
	    {"NVIDIA H100 PCIe", "H100"},
	    {"NVIDIA H100 NVL", "H100"},
	    {"NVIDIA A100-SXM4-80GB", "A100"},
	    {"NVIDIA A100-PCIE-40GB", "A100"},
	    {"NVIDIA A10G", "A10G"},
	    {"NVIDIA A10", "A10"},
	    {"Tesla T4", "T4"},
	    {"NVIDIA L4", "L4"},
	    {"NVIDIA L40S", "L40S"},
	    {"NVIDIA RTX A6000", "A6000"},
	    {"Quadro RTX 6000", "RTX6000"},
	    {"NVIDIA H200", "H200"},
	    {"NVIDIA GH200 480GB", "GH200"},
	    {"AMD Instinct MI300X", "MI300X"},
	    {"AMD Instinct MI300X OAM", "MI300X"},
	    {"NVIDIA", ""},
	};
	char out[32];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ssh_gpu_normalise(cases[i][0], out, sizeof(out));
		if (strcmp(out, cases[i][1]) != 0)
			fail_msg("\"%s\" -> \"%s\", want \"%s\"", cases[i][0], out, cases[i][1]);
	}
}

static void test_nvidia_smi_line(void **state)
{
	(void)state;
	char name[64];
	uint64_t mib;
	assert_int_equal(ssh_nvidia_smi_line("NVIDIA H100 80GB HBM3, 81559", name, sizeof(name), &mib), 0);
	assert_string_equal(name, "NVIDIA H100 80GB HBM3");
	assert_int_equal(mib, 81559);
	assert_int_equal(ssh_nvidia_smi_line("NVIDIA A100-SXM4-80GB, 81920\r", name, sizeof(name), &mib), 0);
	assert_int_equal(mib, 81920);
	assert_int_equal(ssh_nvidia_smi_line("NVIDIA H100, [N/A]", name, sizeof(name), &mib), -1);
	assert_int_equal(ssh_nvidia_smi_line("no comma", name, sizeof(name), &mib), -1);
	assert_int_equal(ssh_nvidia_smi_line(", 100", name, sizeof(name), &mib), -1);
	assert_int_equal(ssh_nvidia_smi_line("NVIDIA H100, 0", name, sizeof(name), &mib), -1);
}

static void test_probe_parse(void **state)
{
	(void)state;
	struct ssh_probe p;
	char err[200];
	const char *h100 = "arch=x86_64\ncpus=208\nmem_kib=2113647104\ndisk_kib=3750000000\nhostname=gpu-01\n"
	                   "ip=10.0.0.5\ngpu_vendor=nvidia\n"
	                   "nvidia=NVIDIA H100 80GB HBM3, 81559\nnvidia=NVIDIA H100 80GB HBM3, 81559\n"
	                   "nvidia=NVIDIA H100 80GB HBM3, 81559\nnvidia=NVIDIA H100 80GB HBM3, 81559\n"
	                   "nvidia=NVIDIA H100 80GB HBM3, 81559\nnvidia=NVIDIA H100 80GB HBM3, 81559\n"
	                   "nvidia=NVIDIA H100 80GB HBM3, 81559\nnvidia=NVIDIA H100 80GB HBM3, 81559\n"
	                   "future_key=whatever\n";
	assert_int_equal(ssh_probe_parse(h100, &p, err, sizeof(err)), 0);
	assert_string_equal(p.arch, "x86_64");
	assert_int_equal(p.cpus, 208);
	assert_int_equal(p.memory_mib, 2113647104ULL / 1024);
	assert_int_equal(p.disk_mib, 3750000000ULL / 1024);
	assert_int_equal(p.n_gpus, 1);
	assert_string_equal(p.gpus[0].name, "H100");
	assert_string_equal(p.gpus[0].vendor, "nvidia");
	assert_int_equal(p.gpus[0].count, 8);
	assert_int_equal(p.gpus[0].memory_mib, 81559);
	assert_false(p.claimed);
	assert_string_equal(p.ip, "10.0.0.5");

	assert_int_equal(ssh_probe_parse("arch=aarch64\ncpus=4\nmem_kib=8000000\ngpu_vendor=\n"
	                                 "claim={\"instance_id\":\"ssh-0123456789ab-01234567\"}\n",
	                                 &p, err, sizeof(err)),
	                 0);
	assert_int_equal(p.n_gpus, 0);
	assert_true(p.claimed);
	assert_non_null(strstr(p.claim, "ssh-0123456789ab-01234567"));

	/* AMD: count and memory from sysfs, the name from amd-smi. */
	assert_int_equal(
	    ssh_probe_parse("arch=x86_64\ncpus=4\nmem_kib=8000000\ngpu_vendor=amd\n"
	                    "amd_vram=206141652992\namd_vram=206141652992\namd_name=AMD Instinct MI300X\n",
	                    &p, err, sizeof(err)),
	    0);
	assert_int_equal(p.n_gpus, 1);
	assert_string_equal(p.gpus[0].name, "MI300X");
	assert_string_equal(p.gpus[0].vendor, "amd");
	assert_int_equal(p.gpus[0].count, 2);
	assert_int_equal(p.gpus[0].memory_mib, 196592);

	assert_int_equal(ssh_probe_parse("cpus=4\nmem_kib=8000000\n", &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "arch"));
	assert_int_equal(ssh_probe_parse("arch=x86_64\ncpus=many\nmem_kib=8000000\n", &p, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "CPU count"));
	assert_int_equal(ssh_probe_parse("arch=x86_64\ncpus=2\n", &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "MemTotal"));
	assert_int_equal(ssh_probe_parse("", &p, err, sizeof(err)), -1);
}

static void test_claims(void **state)
{
	(void)state;
	json_t *tags = json_pack("{s:s, s:s}", "drover-instance", "i-1", "evil", "$(reboot)\n'\";");
	const char *hostile = "box $(id) `id` 'q' \"dq\" ; rm -rf ~\nsecond line";
	char *line = ssh_claim_format("ssh-0123456789ab-01234567", "key\n;$(x)", hostile, "proj", tags, 0);
	json_decref(tags);
	assert_non_null(line);
	/* One line whatever the values hold: a claim file is read with head -n 1. */
	assert_null(strchr(line, '\n'));
	assert_non_null(strstr(line, "\"instance_id\":\"ssh-0123456789ab-01234567\""));
	assert_non_null(strstr(line, "1970-01-01T00:00:00Z"));
	struct ssh_claim c;
	char err[200];
	assert_int_equal(ssh_claim_parse(line, &c, err, sizeof(err)), 0);
	assert_string_equal(c.name, hostile);
	assert_string_equal(c.idempotency_key, "key\n;$(x)");
	assert_string_equal(json_string_value(json_object_get(c.tags, "evil")), "$(reboot)\n'\";");
	ssh_claim_close(&c);
	free(line);

	assert_int_equal(ssh_claim_parse("not json", &c, err, sizeof(err)), -1);
	assert_int_equal(
	    ssh_claim_parse("{\"instance_id\":\"i-1\",\"idempotency_key\":\"k\"}", &c, err, sizeof(err)), -1);
	assert_int_equal(
	    ssh_claim_parse("{\"instance_id\":\"ssh-0123456789ab-01234567\"}", &c, err, sizeof(err)), -1);
}

static void test_ids(void **state)
{
	(void)state;
	char a[13], b[13];
	ssh_host_id("gpu", "10.0.0.5", 22, a);
	ssh_host_id("gpu", "10.0.0.5", 2222, b);
	assert_int_equal(strlen(a), 12);
	assert_string_not_equal(a, b);
	ssh_host_id("gpu", "10.0.0.5", 22, b);
	assert_string_equal(a, b);
	assert_true(ssh_instance_id_ok("ssh-0123456789ab-01234567"));
	assert_false(ssh_instance_id_ok("ssh-0123456789AB-01234567"));
	assert_false(ssh_instance_id_ok("ssh-0123456789ab-0123456"));
	assert_false(ssh_instance_id_ok("ssh-0123456789ab-0123456;"));
	assert_false(ssh_instance_id_ok("i-123"));
	assert_false(ssh_instance_id_ok(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hostkey),         cmocka_unit_test(test_private_and_pubkey_lines),
	    cmocka_unit_test(test_names),           cmocka_unit_test(test_gpu_names),
	    cmocka_unit_test(test_nvidia_smi_line), cmocka_unit_test(test_probe_parse),
	    cmocka_unit_test(test_claims),          cmocka_unit_test(test_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

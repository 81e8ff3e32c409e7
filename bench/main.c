/*
 * drover-bench: measures the driver protocol's costs against baselines taken
 * in the same run and prints one table (see bench_rows.h for the rows).
 * `drover-bench --echo-server` is the bare gRPC echo baseline's server, which
 * the benchmark starts as a child process of its own binary.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_echo.h"
#include "bench_report.h"
#include "bench_rows.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: drover-bench [--quick] [--json FILE] [--strict] [--sim PATH] [--python PATH] "
	        "[--verbose]\n"
	        "                    [--python-raw PATH] [--rows LIST]\n"
	        "\n"
	        "Measures drover's driver protocol against baselines run in the same process, and prints\n"
	        "one table: GetFeatures latency and throughput (vs a bare gRPC C core echo and the Python\n"
	        "driver), GetOffers with 1,000 offers, spawn to first RPC, and idle driver memory; then\n"
	        "the Python driver SDK against a Python driver on grpcio alone (rows 6-8).\n"
	        "\n"
	        "  --quick        few iterations: checks that every row runs (figures are rough)\n"
	        "  --json FILE    also write the results as JSON to FILE\n"
	        "  --strict       exit 1 when a row misses its target (default: only on errors)\n"
	        "  --sim PATH     the C sim driver (default: drover-driver-sim next to this binary)\n"
	        "  --python PATH  the Python driver (default: drover-driver-example-python next to it)\n"
	        "  --python-raw PATH  a Python driver on grpcio alone, rows 6-8's baseline\n"
	        "                 (default: fixture-driver-broken-py next to it)\n"
	        "  --verbose      show the drivers' stderr and each row's breakdown\n"
	        "  --rows LIST    only these rows, e.g. 4,5 (comma-separated numbers 1-%d)\n"
	        "  --help         this text\n"
	        "\n"
	        "Exit status: 0 when every row was measured, 1 when one could not be (or missed its\n"
	        "target under --strict), 2 on bad arguments.\n",
	        BENCH_ROWS);
}

/* "4,5" -> the row bits of bench_opts.rows; 0 on a bad list. */
static unsigned parse_rows(const char *s)
{
	unsigned mask = 0;

	while (*s) {
		char *end;
		long id;

		errno = 0;
		id = strtol(s, &end, 10);
		if (errno || end == s || id < 1 || id > BENCH_ROWS || (*end && *end != ','))
			return 0;
		mask |= 1u << id;
		s = *end ? end + 1 : end;
	}
	return mask;
}

/* The directory this binary lives in, where the drivers of the build are too. */
static int self_paths(char *self, size_t selflen, char *dir, size_t dirlen)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	if (n <= 0)
		return -1;
	buf[n] = '\0';
	snprintf(self, selflen, "%s", buf);
	snprintf(dir, dirlen, "%s", dirname(buf));
	return 0;
}

static int echo_main(int argc, char **argv)
{
	long reply = 0;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--reply-bytes") == 0 && i + 1 < argc) {
			char *end;

			errno = 0;
			reply = strtol(argv[++i], &end, 10);
			if (errno || *end || reply < 0 || reply > (16 << 20)) {
				fprintf(stderr, "drover-bench --echo-server: bad --reply-bytes '%s'\n",
				        argv[i]);
				return 2;
			}
		} else {
			fprintf(stderr, "drover-bench --echo-server: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	return bench_echo_serve((size_t)reply);
}

int main(int argc, char **argv)
{
	static char self[PATH_MAX], dir[PATH_MAX], sim[PATH_MAX + 32], python[PATH_MAX + 32],
	    python_raw[PATH_MAX + 32];
	struct bench_opts o = {0};
	struct bench_row rows[BENCH_ROWS];
	const char *json = NULL;
	bool strict = false;
	double load;
	int rc = 0;

	/*
	 * The calling side is set up as droverd sets itself up (server/src/main.c),
	 * the host it stands for: large blocks stay in the heap instead of being
	 * mmap'ed and faulted in again per call. The echo baseline, this same
	 * binary, gets the same setting.
	 */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 16 << 20);
	if (argc > 1 && strcmp(argv[1], "--echo-server") == 0)
		return echo_main(argc, argv);
	if (self_paths(self, sizeof(self), dir, sizeof(dir)) != 0) {
		fprintf(stderr, "drover-bench: cannot find my own binary in /proc/self/exe\n");
		return 1;
	}
	snprintf(sim, sizeof(sim), "%s/drover-driver-sim", dir);
	snprintf(python, sizeof(python), "%s/drover-driver-example-python", dir);
	o.sim = sim;
	o.python = python;
	snprintf(python_raw, sizeof(python_raw), "%s/fixture-driver-broken-py", dir);
	o.python_raw = python_raw;
	o.self = self;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--quick") == 0) {
			o.quick = true;
		} else if (strcmp(a, "--strict") == 0) {
			strict = true;
		} else if (strcmp(a, "--verbose") == 0) {
			o.verbose = true;
		} else if (strcmp(a, "--json") == 0 && has_value) {
			json = argv[++i];
		} else if (strcmp(a, "--rows") == 0 && has_value) {
			o.rows = parse_rows(argv[++i]);
			if (!o.rows) {
				fprintf(stderr, "drover-bench: bad --rows '%s' (e.g. 4,5)\n", argv[i]);
				return 2;
			}
		} else if (strcmp(a, "--sim") == 0 && has_value) {
			o.sim = argv[++i];
		} else if (strcmp(a, "--python") == 0 && has_value) {
			o.python = argv[++i];
		} else if (strcmp(a, "--python-raw") == 0 && has_value) {
			o.python_raw = argv[++i];
		} else if (strcmp(a, "--json") == 0 || strcmp(a, "--sim") == 0 ||
		           strcmp(a, "--python") == 0 || strcmp(a, "--python-raw") == 0 ||
		           strcmp(a, "--rows") == 0) {
			fprintf(stderr, "drover-bench: %s needs a value\n", a);
			return 2;
		} else {
			fprintf(stderr, "drover-bench: unknown argument '%s' (see --help)\n", a);
			return 2;
		}
	}

	load = bench_loadavg();
	bench_rows_run(&o, rows);
	/* Only the rows asked for are reported (and judged). */
	struct bench_row picked[BENCH_ROWS];
	size_t n = 0;
	for (int i = 0; i < BENCH_ROWS; i++)
		if (!o.rows || (o.rows & (1u << rows[i].id)))
			picked[n++] = rows[i];
	bench_report_print(picked, n, o.quick, load);
	if (json && bench_report_json(picked, n, o.quick, load, json) != 0)
		rc = 1;
	for (size_t i = 0; i < n; i++)
		if (picked[i].verdict == BENCH_ERROR || (strict && picked[i].verdict == BENCH_FAIL))
			rc = 1;
	for (int i = 0; i < BENCH_ROWS; i++)
		bench_row_free(&rows[i]);
	return rc;
}

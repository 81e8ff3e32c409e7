/* The benchmark's table and its JSON copy (see bench_report.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_report.h"

void bench_row_init(struct bench_row *r, int id, const char *name, const char *target)
{
	memset(r, 0, sizeof(*r));
	r->id = id;
	r->name = name;
	r->target = target;
	r->verdict = BENCH_ERROR;
	snprintf(r->error, sizeof(r->error), "not measured");
	r->data = json_object();
}

void bench_row_error(struct bench_row *r, const char *fmt, ...)
{
	va_list ap;

	r->verdict = BENCH_ERROR;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
}

void bench_row_num(struct bench_row *r, const char *key, double value)
{
	json_object_set_new(r->data, key, json_real(value));
}

void bench_row_free(struct bench_row *r)
{
	json_decref(r->data);
	r->data = NULL;
}

static const char *verdict_name(enum bench_verdict v)
{
	return v == BENCH_PASS ? "PASS" : v == BENCH_FAIL ? "FAIL" : "ERROR";
}

static void now_utc(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

double bench_loadavg(void)
{
	double l;

	return getloadavg(&l, 1) == 1 ? l : -1;
}

void bench_report_print(const struct bench_row *rows, size_t n, bool quick, double load_start)
{
	char when[32];

	now_utc(when, sizeof(when));
	printf("drover-bench, %s, %ld CPUs, %s, load average %.1f at start and %.1f at end.\n"
	       "Baselines are measured in the same run; compare the ratios, not the absolute figures.\n\n",
	       quick ? "quick mode (few iterations: the figures are rough)" : "full mode",
	       sysconf(_SC_NPROCESSORS_ONLN), when, load_start, bench_loadavg());
	printf("%-2s  %-36s  %-24s  %-64s  %-34s  %-34s  %s\n", "#", "measure", "drover (C sim)",
	       "baselines (same run)", "ratio", "target", "result");
	for (size_t i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];

		if (r->verdict == BENCH_ERROR) {
			printf("%-2d  %-36s  %-24s  %-64s  %-34s  %-34s  %s: %s\n", r->id, r->name, "-", "-",
			       "-", r->target, verdict_name(r->verdict), r->error);
			continue;
		}
		printf("%-2d  %-36s  %-24s  %-64s  %-34s  %-34s  %s\n", r->id, r->name, r->drover,
		       r->baselines, r->ratio, r->target, verdict_name(r->verdict));
	}
	fflush(stdout);
}

int bench_report_json(const struct bench_row *rows, size_t n, bool quick, double load_start, const char *path)
{
	json_t *root = json_object(), *arr = json_array();
	char when[32];
	int rc;

	now_utc(when, sizeof(when));
	json_object_set_new(root, "tool", json_string("drover-bench"));
	json_object_set_new(root, "mode", json_string(quick ? "quick" : "full"));
	json_object_set_new(root, "time", json_string(when));
	json_object_set_new(root, "cpus", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
	json_object_set_new(root, "loadavg_start", json_real(load_start));
	json_object_set_new(root, "loadavg_end", json_real(bench_loadavg()));
	for (size_t i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];
		json_t *o = json_object();

		json_object_set_new(o, "id", json_integer(r->id));
		json_object_set_new(o, "measure", json_string(r->name));
		json_object_set_new(o, "target", json_string(r->target));
		json_object_set_new(o, "result", json_string(verdict_name(r->verdict)));
		if (r->verdict == BENCH_ERROR) {
			json_object_set_new(o, "error", json_string(r->error));
		} else {
			json_object_set_new(o, "drover", json_string(r->drover));
			json_object_set_new(o, "baselines", json_string(r->baselines));
			json_object_set_new(o, "ratio", json_string(r->ratio));
		}
		json_object_set(o, "data", r->data);
		json_array_append_new(arr, o);
	}
	json_object_set_new(root, "rows", arr);
	rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
	json_decref(root);
	if (rc != 0) {
		fprintf(stderr, "drover-bench: cannot write %s\n", path);
		return -1;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_percentile(double *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

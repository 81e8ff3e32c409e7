/*
 * The benchmark's results: one row per measurement, printed as a table and
 * optionally written as JSON. Every row carries its own baselines from the
 * same run, its target and the verdict.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

enum bench_verdict { BENCH_PASS, BENCH_FAIL, BENCH_ERROR };

struct bench_row {
	int id;
	const char *name;   /* static */
	const char *target; /* static, human-readable */
	char drover[96];    /* the figure for drover */
	char baselines[192];
	char ratio[128];
	enum bench_verdict verdict;
	char error[256];
	json_t *data; /* owned: raw numbers for --json */
};

/* Initialises a row (verdict ERROR until a measurement sets it). */
void bench_row_init(struct bench_row *r, int id, const char *name, const char *target);
/* Marks the row failed to measure, with a printf-style reason. */
void bench_row_error(struct bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Adds a number to the row's JSON data. */
void bench_row_num(struct bench_row *r, const char *key, double value);
void bench_row_free(struct bench_row *r);

/*
 * Prints the table on stdout. `load_start` is the 1-minute load average when
 * the run began (the end's is read here): figures from a loaded machine are
 * only good for their ratios, and the reader should see that.
 */
void bench_report_print(const struct bench_row *rows, size_t n, bool quick, double load_start);
/* Writes the rows as JSON to `path`; 0 or -1 (message on stderr). */
int bench_report_json(const struct bench_row *rows, size_t n, bool quick, double load_start,
                      const char *path);

/* The 1-minute load average, or -1. */
double bench_loadavg(void);

/* p-th percentile (0..100) of `v` (sorted in place); 0 for n == 0. */
double bench_percentile(double *v, size_t n, double p);

#endif

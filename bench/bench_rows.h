/*
 * The five measurements of drover-bench. Each fills one bench_row with the
 * figure for drover (the C sim driver through the SDK's hosting half), the
 * baselines measured in the same run (bare gRPC echo, the Python driver) and
 * the verdict against its target.
 */
#ifndef BENCH_ROWS_H
#define BENCH_ROWS_H

#include <stdbool.h>

#include "bench_report.h"

#define BENCH_ROWS 5

struct bench_opts {
	bool quick;         /* few iterations: proves it runs, figures are rough */
	bool verbose;       /* pass the drivers' stderr through */
	const char *sim;    /* path of drover-driver-sim */
	const char *python; /* path of drover-driver-example-python */
	const char *self;   /* this binary, started again as the echo server */
	unsigned rows;      /* bit (1 << id) for each row to run; 0 runs them all */
};

/* Runs every measurement; rows[] must hold BENCH_ROWS rows. */
void bench_rows_run(const struct bench_opts *o, struct bench_row *rows);

#endif

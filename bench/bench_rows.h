/*
 * The measurements of drover-bench. Rows 1-5 fill one bench_row each with the
 * figure for drover (the C sim driver through the SDK's hosting half), the
 * baselines measured in the same run (bare gRPC echo, the Python driver) and
 * the verdict against its target. Rows 6-8 measure the Python driver SDK (the
 * example driver on it) against a Python driver written on grpcio alone.
 */
#ifndef BENCH_ROWS_H
#define BENCH_ROWS_H

#include <stdbool.h>

#include "bench_report.h"

#define BENCH_ROWS 8

struct bench_opts {
	bool quick;             /* few iterations: proves it runs, figures are rough */
	bool verbose;           /* pass the drivers' stderr through */
	const char *sim;        /* path of drover-driver-sim */
	const char *python;     /* path of drover-driver-example-python (on the Python SDK) */
	const char *python_raw; /* a Python driver on grpcio alone (fixture-driver-broken-py) */
	const char *self;       /* this binary, started again as the echo server */
	unsigned rows;          /* bit (1 << id) for each row to run; 0 runs them all */
};

/* Runs every measurement; rows[] must hold BENCH_ROWS rows. */
void bench_rows_run(const struct bench_opts *o, struct bench_row *rows);

#endif

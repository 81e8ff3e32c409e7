/* conf_run.h — the results of a harness run and their reports. */
#ifndef CONF_RUN_H
#define CONF_RUN_H

#include "conf.h"

struct conf_result_row {
	const char *name; /* borrowed: a test table name or a literal */
	enum conf_result result;
	char *message;
	double ms;
};

struct conf_report {
	struct conf_result_row *rows;
	size_t n, cap;
};

/* Runs every selected check, then the cleanup, then the late checks; prints one line per result. */
void conf_run_all(struct conf_ctx *c, struct conf_report *r);
void conf_report_summary(const struct conf_report *r, int *passed, int *failed, int *skipped);
/* Writes JUnit XML to path. Returns 0, or -1 with a message in err. */
int conf_report_junit(const struct conf_report *r, const char *path, const char *suite, char *err,
                      size_t errlen);
void conf_report_free(struct conf_report *r);

/*
 * A result message as one printable line (control characters, C1 and
 * invalid UTF-8 escaped, digit runs over 24 cut), as the run prints it.
 * Returns a new string (caller frees), NULL when out of memory.
 */
char *conf_one_line(const char *msg);

#endif

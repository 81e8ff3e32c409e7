/*
 * Progress of `instance create --wait` on stderr, for a person at a
 * terminal: each attempt with its outcome, and each change of the
 * instance's status while --wait polls, instead of silence until the end.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define FREE_MSG(m) drv_response_free((ProtobufCMessage *)(m))

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_progress_init(struct cli_progress *p, bool on)
{
	memset(p, 0, sizeof(*p));
	p->on = on;
	p->start_ms = mono_ms();
}

/* Prints what changed since the last look at `in`: new attempts, ended attempts, the status. */
void cli_progress_update(struct cli_progress *p, const Drover__Api__V1__Instance *in)
{
	if (!p->on || !in)
		return;
	double t = (double)(mono_ms() - p->start_ms) / 1000.0;
	for (size_t i = 0; i < in->n_attempts; i++) {
		const Drover__Api__V1__Attempt *a = in->attempts[i];
		unsigned n = a->number ? a->number : (unsigned)(i + 1);
		char backend[64], type[64], region[64], msg[256];
		/* The names come from drivers: only text reaches the terminal. */
		snprintf(backend, sizeof(backend), "%s", a->backend);
		snprintf(type, sizeof(type), "%s", a->instance_type);
		snprintf(region, sizeof(region), "%s", a->region);
		snprintf(msg, sizeof(msg), "%s", a->message);
		cli_clean_str(backend);
		cli_clean_str(type);
		cli_clean_str(region);
		cli_clean_str(msg);
		if (n > p->attempts_seen) {
			fprintf(stderr, "drover: [%5.1fs] attempt %u: %s %s in %s, $%.4f/h\n", t, n, backend,
			        type, region, a->price_per_hour);
			p->attempts_seen = n;
		}
		if (a->code[0] && n > p->attempts_done) {
			char code[40];
			snprintf(code, sizeof(code), "%s", a->code);
			cli_clean_str(code);
			fprintf(stderr, "drover: [%5.1fs] attempt %u: %s%s%s\n", t, n, code,
			        msg[0] && strcmp(code, "OK") != 0 ? ": " : "",
			        strcmp(code, "OK") != 0 ? msg : "");
			p->attempts_done = n;
		}
	}
	if ((int)in->status != p->status) {
		char st[32];
		cli_enum_short(&drover__api__v1__instance_status__descriptor, in->status, "INSTANCE_STATUS_",
		               st, sizeof(st));
		fprintf(stderr, "drover: [%5.1fs] instance %.40s: %s\n", t, in->id, st);
		p->status = (int)in->status;
	}
	fflush(stderr);
}

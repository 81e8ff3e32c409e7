/*
 * Running the table of checks: selection (features, --focus/--skip, target
 * kind), one line per result, the closing summary line and JUnit XML.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf.h"
#include "conf_run.h"
#include "drover/offer_check.h"

volatile sig_atomic_t conf_interrupted;

double conf_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

bool conf_pattern_match(const char *pattern, const char *name)
{
	if (strpbrk(pattern, "*?["))
		return fnmatch(pattern, name, 0) == 0;
	return strstr(name, pattern) != NULL;
}

/* Digit runs longer than this are cut in result lines (a price of 1e308 printed with %f has 309). */
#define MAX_DIGITS 24

/*
 * A result message as one printable line: messages quote what the driver
 * answered, and a driver's newline, terminal escape or broken UTF-8 must not
 * split the line, reach the terminal or make the JUnit file unreadable.
 * Control characters become \n, \r, \t or \xNN (C1 ones \u0080..\u009f), and
 * so does each byte of an invalid UTF-8 sequence. A run of more than MAX_DIGITS digits keeps its
 * first MAX_DIGITS and says how many it had, whatever check printed it.
 * NULL when out of memory.
 */
char *conf_one_line(const char *msg)
{
	const unsigned char *p = (const unsigned char *)msg;
	char *out = malloc(strlen(msg) * 4 + 1), *o = out;
	if (!out)
		return NULL;
	while (*p) {
		size_t digits = strspn((const char *)p, "0123456789");
		if (digits > MAX_DIGITS) {
			/* Within the 4 output bytes budgeted per input byte: 24 digits plus a note of
			 * under 30. */
			memcpy(o, p, MAX_DIGITS);
			o += MAX_DIGITS;
			o += sprintf(o, "...(%zu digits)", digits);
			p += digits;
			continue;
		}
		size_t n = drv_utf8_len((const char *)p);
		if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0) {
			/* C1 (U+0080..U+009F): well-formed, but U+009B is CSI on an 8-bit terminal. */
			o += sprintf(o, "\\u%04x", p[1]);
			p += 2;
			continue;
		}
		if (*p >= 0x20 && *p != 0x7f && n > 0) {
			memcpy(o, p, n);
			o += n, p += n;
			continue;
		}
		if (*p == '\n' || *p == '\r' || *p == '\t')
			o += sprintf(o, "\\%c", *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't');
		else
			o += sprintf(o, "\\x%02x", *p);
		p++;
	}
	*o = '\0';
	return out;
}

const char *conf_cut(const char *s, size_t max, char *buf, size_t len)
{
	size_t n = strlen(s);
	if (n <= max) {
		snprintf(buf, len, "%s", s);
		return buf;
	}
	size_t keep = drv_utf8_cut(s, n, max);
	snprintf(buf, len, "%.*s...(%zu bytes)", (int)keep, s, n);
	return buf;
}

void conf_fail(struct conf_ctx *c, const char *fmt, ...)
{
	if (c->failed)
		return;
	c->failed = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->message, sizeof(c->message), fmt, ap);
	va_end(ap);
}

void conf_skip(struct conf_ctx *c, const char *fmt, ...)
{
	if (c->failed || c->skipped)
		return;
	c->skipped = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->message, sizeof(c->message), fmt, ap);
	va_end(ap);
}

void conf_note(struct conf_ctx *c, const char *fmt, ...)
{
	if (!c->o->verbose)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	char *line = conf_one_line(buf);
	printf("  .. %s: %s\n", c->test_name ? c->test_name : "harness", line ? line : buf);
	free(line);
	fflush(stdout);
}

const char *conf_answer(int rc, const struct drv_status *st, char *buf, size_t len)
{
	if (rc == 0)
		snprintf(buf, len, "OK");
	else if (st && st->message[0]) {
		char msg[320];
		snprintf(buf, len, "%s \"%s\"", drv_error_name(rc),
		         conf_cut(st->message, 300, msg, sizeof(msg)));
	} else
		snprintf(buf, len, "%s", drv_error_name(rc));
	return buf;
}

bool conf_has(const struct conf_ctx *c, int feature)
{
	return (c->features & DRV_FEATURE_BIT(feature)) != 0;
}

const char *conf_name(struct conf_ctx *c, const char *what, char *buf, size_t len)
{
	static unsigned counter;
	snprintf(buf, len, "%s%s-%s-%u", c->o->name_prefix, c->run_id, what, ++counter);
	return buf;
}

/* Why a check does not run against this target, or NULL. Written into buf. */
static const char *skip_reason(const struct conf_ctx *c, const struct conf_test *t, char *buf, size_t len)
{
	if ((t->flags & CONF_NEEDS_SPAWN) && !c->o->driver_path)
		return snprintf(buf, len, "the harness did not spawn the driver (--address)"), buf;
	if (conf_interrupted)
		return snprintf(buf, len, "the run was interrupted"), buf;
	if (t->flags & CONF_STARTUP)
		return NULL;
	if (!c->host)
		return snprintf(buf, len, "the driver did not start"), buf;
	if (c->gone[0] && !(t->flags & CONF_LATE))
		return snprintf(buf, len, "the driver is no longer running (%s)", c->gone), buf;
	if (t->feature) {
		if (!c->features_ok)
			return snprintf(buf, len, "%s, so whether %s is advertised is unknown",
			                c->features_error, drv_feature_name(t->feature)),
			       buf;
		if (!conf_has(c, t->feature))
			return snprintf(buf, len, "driver does not advertise %s",
			                drv_feature_name(t->feature)),
			       buf;
	}
	return NULL;
}

static bool selected(const struct conf_opts *o, const char *name)
{
	if (o->focus[0]) {
		bool any = false;
		for (size_t i = 0; o->focus[i]; i++)
			any = any || conf_pattern_match(o->focus[i], name);
		if (!any)
			return false;
	}
	for (size_t i = 0; o->skip[i]; i++)
		if (conf_pattern_match(o->skip[i], name))
			return false;
	return true;
}

static void record(struct conf_report *r, const char *name, enum conf_result res, const char *msg, double ms)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct conf_result_row *rows = realloc(r->rows, cap * sizeof(*rows));
		if (!rows)
			return;
		r->rows = rows;
		r->cap = cap;
	}
	struct conf_result_row *row = &r->rows[r->n++];
	row->name = name;
	row->result = res;
	row->message = conf_one_line(msg ? msg : "");
	row->ms = ms;
	const char *tag = res == CONF_PASS ? "PASS" : res == CONF_FAIL ? "FAIL" : "SKIP";
	if (res == CONF_PASS)
		printf("%s %s (%.0f ms)\n", tag, name, ms);
	else
		printf("%s %s: %s\n", tag, name, row->message);
	fflush(stdout);
}

/*
 * True when the spawned driver has exited; its description goes to c->gone.
 * Only a driver the harness spawned can be seen to exit, and the late checks
 * stop processes of their own on purpose.
 */
static bool driver_exited(struct conf_ctx *c)
{
	if (!c->host || !c->o->driver_path || drv_host_alive(c->host))
		return false;
	/* A call on an exited driver fails at once with the host's account of the exit. */
	struct drv_status st = {0};
	drv_host_health(c->host, 1000, &st);
	snprintf(c->gone, sizeof(c->gone), "%s", st.message[0] ? st.message : "the driver exited");
	return true;
}

static void run_one(struct conf_ctx *c, struct conf_report *r, const struct conf_test *t)
{
	char why[1024];
	if (!selected(c->o, t->name))
		return;
	const char *reason = skip_reason(c, t, why, sizeof(why));
	if (reason) {
		record(r, t->name, CONF_SKIP, reason, 0);
		return;
	}
	c->test_name = t->name;
	c->failed = c->skipped = false;
	c->message[0] = '\0';
	bool watch = !(t->flags & (CONF_LATE | CONF_STARTUP));
	double t0 = conf_now_ms();
	if (watch && driver_exited(c)) {
		/* It died between checks (or under the harness's start-up calls): blame the next one. */
		conf_fail(c, "%s before this check started; a driver must keep serving until it is stopped",
		          c->gone);
	} else {
		t->fn(c);
		/*
		 * A check whose calls the driver died under may still pass (an
		 * UNAVAILABLE is "not UNIMPLEMENTED"); the death itself is the failure.
		 */
		if (watch && driver_exited(c) && !c->failed) {
			c->skipped = false;
			conf_fail(c, "%s during this check; a driver must keep serving until it is stopped",
			          c->gone);
		}
	}
	double ms = conf_now_ms() - t0;
	record(r, t->name, c->failed ? CONF_FAIL : c->skipped ? CONF_SKIP : CONF_PASS, c->message, ms);
	c->test_name = NULL;
}

void conf_run_all(struct conf_ctx *c, struct conf_report *r)
{
	for (size_t i = 0; i < conf_n_tests; i++)
		if (!(conf_tests[i].flags & CONF_LATE))
			run_one(c, r, &conf_tests[i]);

	/* Cleanup runs whatever was selected, because objects may exist after any failure. */
	if (c->host) {
		char err[1024] = "";
		double t0 = conf_now_ms();
		int left = conf_cleanup(c, err, sizeof(err));
		if (!left)
			left = conf_cleanup_verify(c, err, sizeof(err));
		if (selected(c->o, "cleanup"))
			record(r, "cleanup", left ? CONF_FAIL : CONF_PASS, err, conf_now_ms() - t0);
	}

	for (size_t i = 0; i < conf_n_tests; i++)
		if (conf_tests[i].flags & CONF_LATE)
			run_one(c, r, &conf_tests[i]);
}

void conf_report_summary(const struct conf_report *r, int *passed, int *failed, int *skipped)
{
	*passed = *failed = *skipped = 0;
	for (size_t i = 0; i < r->n; i++) {
		if (r->rows[i].result == CONF_PASS)
			(*passed)++;
		else if (r->rows[i].result == CONF_FAIL)
			(*failed)++;
		else
			(*skipped)++;
	}
}

static void xml_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			/* XML 1.0 forbids most control characters even escaped. */
			if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
				fputc('?', f);
			else
				fputc(*s, f);
		}
	}
}

int conf_report_junit(const struct conf_report *r, const char *path, const char *suite, char *err,
                      size_t errlen)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		snprintf(err, errlen, "--junit %s: cannot write: %s", path, strerror(errno));
		return -1;
	}
	int passed, failed, skipped;
	conf_report_summary(r, &passed, &failed, &skipped);
	double total = 0;
	for (size_t i = 0; i < r->n; i++)
		total += r->rows[i].ms;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
	fprintf(f, "<testsuites>\n<testsuite name=\"");
	/* The suite is named after the driver's GetInfo type, which is the driver's to write. */
	char *suite_line = conf_one_line(suite);
	xml_escape(f, suite_line ? suite_line : "drover-conformance");
	free(suite_line);
	fprintf(f, "\" tests=\"%zu\" failures=\"%d\" errors=\"0\" skipped=\"%d\" time=\"%.3f\">\n", r->n,
	        failed, skipped, total / 1000.0);
	for (size_t i = 0; i < r->n; i++) {
		const struct conf_result_row *row = &r->rows[i];
		fprintf(f, "  <testcase classname=\"drover-conformance\" name=\"");
		xml_escape(f, row->name);
		fprintf(f, "\" time=\"%.3f\"", row->ms / 1000.0);
		if (row->result == CONF_PASS) {
			fprintf(f, "/>\n");
			continue;
		}
		fprintf(f, ">\n    <%s message=\"", row->result == CONF_FAIL ? "failure" : "skipped");
		xml_escape(f, row->message);
		fprintf(f, "\"/>\n  </testcase>\n");
	}
	fprintf(f, "</testsuite>\n</testsuites>\n");
	if (fclose(f) != 0) {
		snprintf(err, errlen, "--junit %s: write failed: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

void conf_report_free(struct conf_report *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->rows[i].message);
	free(r->rows);
	memset(r, 0, sizeof(*r));
}

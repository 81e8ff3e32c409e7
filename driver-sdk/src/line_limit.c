/*
 * The rate limit of a spawned driver's stderr lines (PROTOCOL.md §12.7): a
 * driver may write what it likes, but only so many lines and bytes a second
 * reach the host's log; the rest is counted and reported as a count.
 */
#include "drv_internal.h"

static void refill(struct drv__line_limit *l, uint64_t now_ns)
{
	if (now_ns <= l->last_ns)
		return;
	double dt = (double)(now_ns - l->last_ns) / 1e9;
	l->last_ns = now_ns;
	l->lines += dt * l->lines_per_s;
	l->bytes += dt * l->bytes_per_s;
	if (l->lines > l->lines_per_s)
		l->lines = l->lines_per_s;
	if (l->bytes > l->bytes_per_s)
		l->bytes = l->bytes_per_s;
}

void drv__line_limit_init(struct drv__line_limit *l, unsigned lines_per_s, unsigned bytes_per_s,
                          uint64_t now_ns)
{
	*l = (struct drv__line_limit){.lines_per_s = lines_per_s ? lines_per_s : 1,
	                              .bytes_per_s = bytes_per_s ? bytes_per_s : 1,
	                              .last_ns = now_ns,
	                              .report_ns = now_ns};
	l->lines = l->lines_per_s;
	l->bytes = l->bytes_per_s;
}

bool drv__line_limit_take(struct drv__line_limit *l, size_t len, uint64_t now_ns)
{
	refill(l, now_ns);
	/* A line longer than a second's bytes passes on a full bucket, and leaves it in debt. */
	double need = (double)len < l->bytes_per_s ? (double)len : l->bytes_per_s;
	if (l->lines >= 1 && l->bytes >= need) {
		l->lines -= 1;
		l->bytes -= (double)len;
		return true;
	}
	if (l->dropped_lines == 0)
		l->report_ns = now_ns; /* the first drop of a run: its report is due a second later */
	l->dropped_lines++;
	l->dropped_bytes += len;
	return false;
}

bool drv__line_limit_report(struct drv__line_limit *l, uint64_t now_ns, bool force, uint64_t *lines,
                            uint64_t *bytes)
{
	if (l->dropped_lines == 0 || (!force && now_ns - l->report_ns < 1000000000u))
		return false;
	*lines = l->dropped_lines;
	*bytes = l->dropped_bytes;
	l->dropped_lines = l->dropped_bytes = 0;
	l->report_ns = now_ns;
	return true;
}

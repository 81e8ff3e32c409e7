/* The abort-on-out-of-memory wrappers (xalloc.h). */
#include "xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void (*report)(const char *line);

void xalloc_set_report(void (*fn)(const char *line))
{
	report = fn;
}

_Noreturn void xalloc_die(const char *what, size_t size)
{
	/* On the stack and without stdio's buffers: the heap is what just failed. */
	char line[256];
	int n = snprintf(line, sizeof(line), "out of memory allocating %zu bytes for %s; aborting", size,
	                 what ? what : "(unnamed)");
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(line))
		n = (int)sizeof(line) - 1;
	if (report) {
		report(line);
	} else {
		line[n] = '\n';
		ssize_t ignored = write(2, line, (size_t)n + 1);
		(void)ignored;
	}
	abort();
}

void *xmalloc(size_t size, const char *what)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		xalloc_die(what, size);
	return p;
}

void *xcalloc(size_t n, size_t size, const char *what)
{
	if (size && n > (size_t)-1 / size)
		xalloc_die(what, (size_t)-1);
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		xalloc_die(what, n * size);
	return p;
}

void *xrealloc(void *ptr, size_t size, const char *what)
{
	void *p = realloc(ptr, size ? size : 1);
	if (!p)
		xalloc_die(what, size);
	return p;
}

char *xstrdup(const char *s, const char *what)
{
	if (!s)
		s = "";
	size_t n = strlen(s) + 1;
	return memcpy(xmalloc(n, what), s, n);
}

char *xasprintf(const char *what, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		xalloc_die(what, 0);
	char *s = xmalloc((size_t)n + 1, what);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

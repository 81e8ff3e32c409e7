/*
 * xalloc.h — the out-of-memory policy of drover's crash-safe processes (the
 * sim, and droverd): an allocation that fails ends the process through one
 * wrapper, as Redis does (STYLE.md, habit 15). Everything such a process
 * keeps is recoverable after a crash by design (the sim's state file,
 * droverd's store), so there is nothing to unwind, and callers need no branch
 * that no test could reach. Libraries (the driver SDK) return DRV_ENOMEM
 * instead and do not use this.
 *
 * `what` names what was being allocated ("a sim instance"); it appears in the
 * last log line before abort(). Borrowed for the call.
 */
#ifndef XALLOC_H
#define XALLOC_H

#include <stddef.h>

/* Never NULL. Zero sizes give a valid block. */
void *xmalloc(size_t size, const char *what);
/* Zeroed; n * size must not overflow (it aborts as out of memory if it does). */
void *xcalloc(size_t n, size_t size, const char *what);
void *xrealloc(void *ptr, size_t size, const char *what);
/* A copy of s; NULL gives "". */
char *xstrdup(const char *s, const char *what);
/* A new string formatted as by printf. */
char *xasprintf(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Logs the last line, "out of memory allocating <size> bytes for <what>;
 * aborting", and aborts. For pointers that other allocators (an arena,
 * jansson) returned NULL.
 */
_Noreturn void xalloc_die(const char *what, size_t size);

/*
 * How the last line is written: `fn` gets it without a newline, on the
 * thread that failed, and must not allocate. NULL (the default) writes it to
 * stderr. Set once at start, before any thread allocates.
 */
void xalloc_set_report(void (*fn)(const char *line));

#endif

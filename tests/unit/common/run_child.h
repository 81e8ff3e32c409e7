/*
 * Runs a function in a forked child and collects what it writes to stderr,
 * for tests of code that ends the process (common/xalloc.c and its users).
 */
#ifndef RUN_CHILD_H
#define RUN_CHILD_H

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs fn in a child; its stderr goes to out (NUL-terminated). Returns the wait status, or -1. */
static inline int run_child(void (*fn)(void), char *out, size_t outlen)
{
	int p[2];
	if (pipe(p) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(p[1], 2);
		close(p[0]);
		close(p[1]);
		fn();
		_exit(0);
	}
	close(p[1]);
	size_t len = 0;
	ssize_t n;
	while (len + 1 < outlen && (n = read(p[0], out + len, outlen - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(p[0]);
	int status;
	return waitpid(pid, &status, 0) == pid ? status : -1;
}

#endif

/* Helpers shared by droverd's unit tests: temp directories and files, a config. */
#ifndef SRV_TESTUTIL_H
#define SRV_TESTUTIL_H

#include <stddef.h>

struct srv_config;

/* A fresh directory under $TMPDIR (or /tmp); the caller removes it with tu_rmrf. */
char *tu_tempdir(void);
/* Removes a directory tree (rm -rf). */
void tu_rmrf(const char *path);
/* Path joined into a static-free malloc'ed string. */
char *tu_join(const char *dir, const char *name);
/* Reads a whole file; NULL if it cannot. *len may be NULL. */
char *tu_read_file(const char *path, size_t *len);
/* Finds `needle` of `nlen` bytes in `hay`. */
int tu_contains(const void *hay, size_t hlen, const void *needle, size_t nlen);

/* The default config with this build's bin directory (its drivers) as the one driver directory. */
struct srv_config *tu_config_new(void);

#endif

#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "srv_config.h"

char *tu_tempdir(void)
{
	const char *base = getenv("TMPDIR");
	char *tmpl;
	if (asprintf(&tmpl, "%s/drover-srv-test-XXXXXX", base && base[0] ? base : "/tmp") < 0)
		return NULL;
	if (!mkdtemp(tmpl)) {
		free(tmpl);
		return NULL;
	}
	return tmpl;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

void tu_rmrf(const char *path)
{
	if (path)
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_join(const char *dir, const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

char *tu_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	size_t got = fread(buf, 1, (size_t)n, f);
	fclose(f);
	buf[got] = 0;
	if (len)
		*len = got;
	return buf;
}

int tu_contains(const void *hay, size_t hlen, const void *needle, size_t nlen)
{
	return memmem(hay, hlen, needle, nlen) != NULL;
}

struct srv_config *tu_config_new(void)
{
	struct srv_config *cfg = srv_config_new_default();
	cfg->driver_dirs = calloc(2, sizeof(char *));
	cfg->driver_dirs[0] = strdup(DROVER_BIN_DIR);
	cfg->n_driver_dirs = 1;
	return cfg;
}

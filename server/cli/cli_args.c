/*
 * Parsing of the CLI's value syntaxes: sizes with units, ranges, GPU specs,
 * prices. Pure functions, so they are tested without a server.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

static const struct {
	const char *suffix;
	double mib;
} units[] = {
    {"", 1024.0}, {"g", 1024.0}, {"gb", 1024.0},   {"gib", 1024.0},   {"m", 1.0},
    {"mb", 1.0},  {"mib", 1.0},  {"t", 1048576.0}, {"tb", 1048576.0}, {"tib", 1048576.0},
};

int cli_parse_size_mib(const char *s, uint64_t *mib, char *err, size_t errlen)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !isfinite(v) || v < 0 || *s == '-' || *s == '+') {
		snprintf(err, errlen, "'%s' is not a size (examples: 80, 80GB, 512MiB, 1.5TB)", s);
		return -1;
	}
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix) == 0) {
			double m = v * units[i].mib;
			if (m > 9.0e15) {
				snprintf(err, errlen, "size '%s' is too large", s);
				return -1;
			}
			*mib = (uint64_t)llround(m);
			return 0;
		}
	}
	snprintf(err, errlen, "'%s': unknown unit '%s' (use MB, GB or TB; the default is GB)", s, end);
	return -1;
}

int cli_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !isdigit((unsigned char)*s))
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

int cli_parse_timeout(const char *s, int *ms)
{
	uint64_t secs;
	if (cli_parse_uint(s, 86400, &secs) || secs == 0)
		return -1;
	*ms = (int)secs * 1000;
	return 0;
}

int cli_parse_price(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v) || v <= 0)
		return -1;
	*out = v;
	return 0;
}

/* Splits "A:B" (or "A..B" when dots is set) into two parts; *b is NULL when there is no separator. */
static char *split_range(const char *s, char **a, char **b, bool dots)
{
	char *copy = strdup(s);
	if (!copy)
		return NULL;
	*a = copy;
	*b = NULL;
	char *sep = dots ? strstr(copy, "..") : strchr(copy, ':');
	if (sep) {
		*sep = '\0';
		*b = sep + (dots ? 2 : 1);
	}
	return copy;
}

static void set_min(Drover__Compute__V1__UintRange *r, uint64_t v)
{
	r->_min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
	r->min = v;
}

static void set_max(Drover__Compute__V1__UintRange *r, uint64_t v)
{
	r->_max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
	r->max = v;
}

static int parse_range(const char *s, Drover__Compute__V1__UintRange *r, bool sizes, bool dots, char *err,
                       size_t errlen)
{
	char *a, *b;
	char *copy = split_range(s, &a, &b, dots);
	int rc = -1;
	uint64_t v;
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (!*a && (!b || !*b)) {
		snprintf(err, errlen, "'%s' is an empty range (use MIN, MIN:MAX, MIN: or :MAX)", s);
		goto out;
	}
	if (*a) {
		if (sizes ? cli_parse_size_mib(a, &v, err, errlen) : cli_parse_uint(a, UINT32_MAX, &v)) {
			if (!sizes)
				snprintf(err, errlen, "'%s' is not a non-negative integer", a);
			goto out;
		}
		set_min(r, v);
	}
	if (b && *b) {
		if (sizes ? cli_parse_size_mib(b, &v, err, errlen) : cli_parse_uint(b, UINT32_MAX, &v)) {
			if (!sizes)
				snprintf(err, errlen, "'%s' is not a non-negative integer", b);
			goto out;
		}
		set_max(r, v);
	} else if (!b && *a) {
		/* A single value is an exact requirement for counts, a minimum for sizes. */
		if (!sizes)
			set_max(r, r->min);
	}
	if (r->_min_case && r->_max_case && r->min > r->max) {
		snprintf(err, errlen, "range '%s' has its minimum above its maximum", s);
		goto out;
	}
	rc = 0;
out:
	free(copy);
	return rc;
}

int cli_parse_size_range(const char *s, Drover__Compute__V1__UintRange *r, char *err, size_t errlen)
{
	return parse_range(s, r, true, false, err, errlen);
}

int cli_parse_count_range(const char *s, Drover__Compute__V1__UintRange *r, char *err, size_t errlen)
{
	/* For CPUs a single value is a minimum: "--cpus 8" means at least 8. */
	Drover__Compute__V1__UintRange tmp = *r;
	int rc = parse_range(s, &tmp, false, false, err, errlen);
	if (rc == 0) {
		if (!strchr(s, ':'))
			tmp._max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX__NOT_SET;
		*r = tmp;
	}
	return rc;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s) && *s != '.')
			return false;
	return true;
}

const char *cli_arch_name(const char *s)
{
	/* The API's names (compute.proto); the other spellings are those of uname, Debian and Go. */
	static const struct {
		const char *alias, *name;
	} names[] = {{"x86_64", "x86_64"}, {"amd64", "x86_64"}, {"x64", "x86_64"},
	             {"x86-64", "x86_64"}, {"arm64", "arm64"},  {"aarch64", "arm64"}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(s, names[i].alias) == 0)
			return names[i].name;
	return NULL;
}

int cli_parse_gpu(const char *s, char **name, Drover__Compute__V1__UintRange *count, char *err, size_t errlen)
{
	char *copy = strdup(s);
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*name = NULL;
	char *colon = strchr(copy, ':');
	const char *countstr = NULL;
	if (colon) {
		*colon = '\0';
		countstr = colon + 1;
	} else if (all_digits(copy)) {
		countstr = copy;
	}
	if (countstr) {
		Drover__Compute__V1__UintRange tmp = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
		if (!*countstr || parse_range(countstr, &tmp, false, true, err, errlen)) {
			if (!*countstr)
				snprintf(err, errlen, "'%s': missing GPU count after ':'", s);
			else
				snprintf(err, errlen, "'%s': GPU count must be N or MIN..MAX", s);
			free(copy);
			return -1;
		}
		count->_min_case = tmp._min_case;
		count->min = tmp.min;
		count->_max_case = tmp._max_case;
		count->max = tmp.max;
	}
	if (countstr == copy) {
		free(copy);
		return 0;
	}
	if (!*copy) {
		snprintf(err, errlen, "'%s': empty GPU name", s);
		free(copy);
		return -1;
	}
	for (const char *p = copy; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') {
			snprintf(err, errlen,
			         "'%s': GPU name may hold letters, digits, '-', '_' and '.' only", s);
			free(copy);
			return -1;
		}
	}
	/* A model with at most 0 of it is no machine at all: it used to match nothing, silently. */
	if (count->_max_case && count->max == 0) {
		snprintf(err, errlen,
		         "'%s': a GPU model with a count of 0 matches no machine (--gpu 0 asks for "
		         "machines without GPUs)",
		         s);
		free(copy);
		return -1;
	}
	*name = copy;
	return 0;
}

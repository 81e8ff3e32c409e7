/*
 * conformance-expect: runs drover-conformance as a child process and checks
 * its exit status, its closing line and which checks it reports as passed or
 * failed, so a broken driver that fails for the wrong reason does not count.
 *
 * usage: conformance-expect --exit N [--fail CHECK]... [--pass CHECK]...
 *            [--output TEXT]... [--no-output TEXT]... [--file PATH --file-contains TEXT]...
 *            [--listen-driver PATH [--listen-arg ARG]...] [--timeout SEC] [--no-summary]
 *            [--signal-after-ms MS] [--workdir DIR] [--max-line N]
 *            -- HARNESS ARGS...
 *
 * --no-summary: the run prints no closing line (--help, --list).
 * --signal-after-ms MS: sends the harness SIGTERM MS after its start.
 * --listen-driver starts PATH --listen 127.0.0.1:0 first (a standalone
 * driver; with each --listen-arg ARG appended, else --insecure), reads its
 * handshake line and replaces @ADDRESS@ in the harness arguments with the
 * address it bound.
 * --workdir DIR: runs everything in DIR, made empty first (its files are
 * removed), so relative state files of one test's drivers are its own and
 * start empty every run.
 * --max-line N: no line of the harness's stdout is longer than N bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <regex.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <sys/stat.h>

#include <cmocka.h>

#define MAX_LIST 32

static struct {
	int exit_code;
	const char *fail[MAX_LIST], *pass[MAX_LIST], *output[MAX_LIST], *no_output[MAX_LIST];
	size_t n_fail, n_pass, n_output, n_no_output;
	const char *file[MAX_LIST], *file_contains[MAX_LIST];
	size_t n_file;
	const char *listen_driver;
	const char *listen_args[MAX_LIST];
	size_t n_listen_args;
	int timeout_s;
	int signal_after_ms; /* SIGTERM to the harness this long after its start; 0: never */
	bool no_summary;
	const char *workdir;
	long max_line; /* 0: no limit */
	char **argv;
} opt = {.exit_code = -1, .timeout_s = 120};

struct buf {
	char *data;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->data = realloc(b->data, b->cap);
		assert_non_null(b->data);
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts a standalone driver; returns its pid and writes its bound address. */
static pid_t start_listener(const char *path, char *addr, size_t addrlen, int *out_fd)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		setenv("DROVER_MAGIC_COOKIE", "6b1d4c0e-drover-driver-v1", 1);
		const char *args[MAX_LIST + 5] = {path, "--listen", "127.0.0.1:0"};
		size_t n = 3;
		for (size_t i = 0; i < opt.n_listen_args; i++)
			args[n++] = opt.listen_args[i];
		if (!opt.n_listen_args)
			args[n++] = "--insecure";
		args[n] = NULL;
		execv(path, (char *const *)args);
		_exit(127);
	}
	close(p[1]);
	char line[512];
	size_t n = 0;
	double deadline = now_s() + 10;
	while (n < sizeof(line) - 1 && now_s() < deadline) {
		struct pollfd pfd = {p[0], POLLIN, 0};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		ssize_t r = read(p[0], line + n, 1);
		if (r <= 0)
			break;
		if (line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	/* "1|1|tcp|127.0.0.1:PORT|grpc" */
	char *f = line;
	for (int i = 0; i < 3 && f; i++) {
		f = strchr(f, '|');
		if (f)
			f++;
	}
	assert_non_null(f);
	char *end = strchr(f, '|');
	assert_non_null(end);
	snprintf(addr, addrlen, "%.*s", (int)(end - f), f);
	*out_fd = p[0];
	return pid;
}

static bool has_line_prefix(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *l = text; l && *l;) {
		if (strncmp(l, prefix, n) == 0)
			return true;
		l = strchr(l, '\n');
		if (l)
			l++;
	}
	return false;
}

static void test_harness_run(void **state)
{
	(void)state;
	char addr[300] = "";
	int listener_fd = -1;
	pid_t listener = 0;
	if (opt.listen_driver)
		listener = start_listener(opt.listen_driver, addr, sizeof(addr), &listener_fd);

	size_t argc = 0;
	while (opt.argv[argc])
		argc++;
	char **args = calloc(argc + 1, sizeof(char *));
	assert_non_null(args);
	for (size_t i = 0; i < argc; i++)
		args[i] = strcmp(opt.argv[i], "@ADDRESS@") == 0 ? addr : opt.argv[i];

	int out[2], err[2];
	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(err), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setpgid(0, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(err[0]);
		execv(args[0], args);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	struct buf so = {0}, se = {0};
	buf_add(&so, "", 0);
	buf_add(&se, "", 0);
	double deadline = now_s() + opt.timeout_s;
	bool open_out = true, open_err = true, timed_out = false, signalled = false;
	double signal_at = now_s() + opt.signal_after_ms / 1000.0;
	while (open_out || open_err) {
		if (opt.signal_after_ms && !signalled && now_s() >= signal_at) {
			kill(pid, SIGTERM);
			signalled = true;
		}
		if (now_s() > deadline) {
			timed_out = true;
			kill(-pid, SIGKILL);
			break;
		}
		struct pollfd pfd[2] = {{open_out ? out[0] : -1, POLLIN, 0},
		                        {open_err ? err[0] : -1, POLLIN, 0}};
		if (poll(pfd, 2, 200) <= 0)
			continue;
		char chunk[4096];
		for (int i = 0; i < 2; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLHUP)))
				continue;
			ssize_t r = read(pfd[i].fd, chunk, sizeof(chunk));
			if (r <= 0) {
				if (i == 0)
					open_out = false;
				else
					open_err = false;
			} else {
				buf_add(i == 0 ? &so : &se, chunk, (size_t)r);
			}
		}
	}
	int status = 0;
	waitpid(pid, &status, 0);
	close(out[0]);
	close(err[0]);
	if (listener) {
		kill(listener, SIGTERM);
		waitpid(listener, NULL, 0);
		close(listener_fd);
	}

	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	bool ok = !timed_out && code == opt.exit_code;
	char why[600] = "";
	if (timed_out)
		snprintf(why, sizeof(why), "the harness ran longer than %d s", opt.timeout_s);
	else if (code != opt.exit_code)
		snprintf(why, sizeof(why), "exit status %d, expected %d", code, opt.exit_code);

	/* The closing line: the last line of stdout, alone. */
	regex_t re;
	assert_int_equal(
	    regcomp(&re, "(^|\n)([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped\n$", REG_EXTENDED), 0);
	regmatch_t m[5];
	if (ok && opt.exit_code <= 1 && !opt.no_summary) {
		if (regexec(&re, so.data, 5, m, 0) != 0) {
			ok = false;
			snprintf(why, sizeof(why),
			         "no closing line \"N passed, N failed, N skipped\" at the end of stdout");
		} else {
			long failed = strtol(so.data + m[3].rm_so, NULL, 10);
			if ((opt.exit_code == 0) != (failed == 0)) {
				ok = false;
				snprintf(why, sizeof(why),
				         "closing line says %ld failed but the exit status is %d", failed,
				         code);
			}
		}
	}
	regfree(&re);
	for (size_t i = 0; ok && i < opt.n_fail; i++) {
		char prefix[200];
		snprintf(prefix, sizeof(prefix), "FAIL %s: ", opt.fail[i]);
		if (!has_line_prefix(so.data, prefix)) {
			ok = false;
			snprintf(why, sizeof(why),
			         "no line \"FAIL %s: <message>\": the expected check did not fail",
			         opt.fail[i]);
		}
	}
	for (size_t i = 0; ok && i < opt.n_pass; i++) {
		char prefix[200];
		snprintf(prefix, sizeof(prefix), "PASS %s (", opt.pass[i]);
		if (!has_line_prefix(so.data, prefix)) {
			ok = false;
			snprintf(why, sizeof(why), "no line \"PASS %s\"", opt.pass[i]);
		}
	}
	for (size_t i = 0; ok && i < opt.n_output; i++) {
		if (!strstr(so.data, opt.output[i]) && !strstr(se.data, opt.output[i])) {
			ok = false;
			snprintf(why, sizeof(why), "the output does not contain \"%s\"", opt.output[i]);
		}
	}
	for (size_t i = 0; ok && i < opt.n_no_output; i++) {
		if (strstr(so.data, opt.no_output[i])) {
			ok = false;
			snprintf(why, sizeof(why), "stdout contains \"%s\", which it must not",
			         opt.no_output[i]);
		}
	}
	for (const char *line = so.data; ok && opt.max_line > 0 && *line;) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		if ((long)n > opt.max_line) {
			ok = false;
			snprintf(why, sizeof(why),
			         "a line of stdout is %zu bytes long (at most %ld): \"%.60s...\"", n,
			         opt.max_line, line);
		}
		line += n + (end != NULL);
	}
	for (size_t i = 0; ok && i < opt.n_file; i++) {
		FILE *f = fopen(opt.file[i], "r");
		struct buf fb = {0};
		buf_add(&fb, "", 0);
		char chunk[4096];
		size_t r;
		while (f && (r = fread(chunk, 1, sizeof(chunk), f)) > 0)
			buf_add(&fb, chunk, r);
		if (f)
			fclose(f);
		if (!f || !strstr(fb.data, opt.file_contains[i])) {
			ok = false;
			snprintf(why, sizeof(why), "%s %s \"%s\"", opt.file[i],
			         f ? "does not contain" : "cannot be read, expected", opt.file_contains[i]);
		}
		free(fb.data);
	}
	if (!ok) {
		fprintf(stderr,
		        "---- harness stdout ----\n%s---- harness stderr ----\n%s------------------------\n",
		        so.data, se.data);
		fail_msg("%s", why);
	}
	free(so.data);
	free(se.data);
	free(args);
}

/* Makes `dir` (and its parent) exist and hold no files, then makes it the working directory. */
static int enter_workdir(const char *dir)
{
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dir);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = '\0';
		mkdir(parent, 0755);
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "conformance-expect: --workdir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "conformance-expect: --workdir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[8192];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		struct stat sb;
		if (lstat(path, &sb) == 0 && !S_ISDIR(sb.st_mode))
			unlink(path);
	}
	closedir(d);
	if (chdir(dir) != 0) {
		fprintf(stderr, "conformance-expect: --workdir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: conformance-expect --exit N [--fail CHECK]... [--pass CHECK]... [--output TEXT]... "
	    "[--no-output TEXT]...\n"
	    "         [--file PATH --file-contains TEXT]... [--listen-driver PATH [--listen-arg ARG]...]\n"
	    "         [--timeout SEC] [--no-summary] [--signal-after-ms MS] [--workdir DIR] [--max-line N]\n"
	    "         -- HARNESS ARGS...\n");
	return 2;
}

int main(int argc, char **argv)
{
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--no-summary") == 0) {
			opt.no_summary = true;
			continue;
		}
		if (strcmp(a, "--help") == 0) {
			usage();
			return 0;
		}
		if (i + 1 >= argc)
			return usage();
		const char *v = argv[++i];
		if (strcmp(a, "--exit") == 0)
			opt.exit_code = atoi(v);
		else if (strcmp(a, "--fail") == 0 && opt.n_fail < MAX_LIST)
			opt.fail[opt.n_fail++] = v;
		else if (strcmp(a, "--pass") == 0 && opt.n_pass < MAX_LIST)
			opt.pass[opt.n_pass++] = v;
		else if (strcmp(a, "--output") == 0 && opt.n_output < MAX_LIST)
			opt.output[opt.n_output++] = v;
		else if (strcmp(a, "--no-output") == 0 && opt.n_no_output < MAX_LIST)
			opt.no_output[opt.n_no_output++] = v;
		else if (strcmp(a, "--file") == 0 && opt.n_file < MAX_LIST)
			opt.file[opt.n_file] = v;
		else if (strcmp(a, "--file-contains") == 0 && opt.n_file < MAX_LIST)
			opt.file_contains[opt.n_file++] = v;
		else if (strcmp(a, "--listen-driver") == 0)
			opt.listen_driver = v;
		else if (strcmp(a, "--listen-arg") == 0 && opt.n_listen_args < MAX_LIST)
			opt.listen_args[opt.n_listen_args++] = v;
		else if (strcmp(a, "--timeout") == 0)
			opt.timeout_s = atoi(v);
		else if (strcmp(a, "--signal-after-ms") == 0)
			opt.signal_after_ms = atoi(v);
		else if (strcmp(a, "--workdir") == 0)
			opt.workdir = v;
		else if (strcmp(a, "--max-line") == 0)
			opt.max_line = atol(v);
		else
			return usage();
	}
	if (i >= argc || opt.exit_code < 0)
		return usage();
	opt.argv = &argv[i];
	if (opt.workdir && enter_workdir(opt.workdir))
		return 2;
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_harness_run)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

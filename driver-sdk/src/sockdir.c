/*
 * Socket directories: where they go, how they are named and removed, for the
 * host (one per spawned driver) and for a driver spawned without one. Its own
 * file: a driver that links it must not pull the hosting half (and libuv)
 * into its binary.
 *
 * A directory's name carries its owner: drover[-<type>]-<pid>-<start>-XXXXXX,
 * with the pid of the process that made it and that process's start time
 * (hex clock ticks since boot, from /proc/<pid>/stat). A pid alone can be
 * reused; a pid with the same start time is the same process. So a host that
 * starts can tell the directories of a host or driver that was SIGKILLed
 * (owner gone) from those of a live one, and remove only the former.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drv_internal.h"

/* Deeper trees are not ours: sockets sit at the top, and a driver has no reason to nest. */
#define REMOVE_DEPTH_MAX 8

/* A usable base for socket directories: absolute, and short, since a unix socket path has ~107 bytes. */
static bool socket_base_ok(const char *dir)
{
	return dir && dir[0] == '/' && strlen(dir) <= 48 && access(dir, W_OK | X_OK) == 0;
}

/*
 * $TMPDIR when set (the operator's choice), else $XDG_RUNTIME_DIR, else
 * /dev/shm, else /tmp. The runtime directory and /dev/shm are memory file
 * systems: making and removing a directory there took 6 and 5 us on this
 * project's machines, against 100 us and 2.1 ms on a /tmp on disk, and
 * making it is on the way to a driver's first call.
 */
const char *drv__socket_base(void)
{
	const char *env[] = {getenv("TMPDIR"), getenv("XDG_RUNTIME_DIR"), "/dev/shm"};
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
		if (socket_base_ok(env[i]))
			return env[i];
	return "/tmp";
}

int drv__proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* The command name in parentheses may hold spaces and ')': the fields start after the last one. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	p++;
	/* After ')': state, ppid, ... and starttime as the 20th field. */
	unsigned long long field[20];
	for (int i = 0; i < 20; i++) {
		while (*p == ' ')
			p++;
		if (i == 0) {
			field[0] = 0;
			while (*p && *p != ' ')
				p++;
			continue;
		}
		char *end;
		errno = 0;
		field[i] = strtoull(p, &end, 10);
		if (end == p || errno)
			return -1;
		p = end;
	}
	if (ppid)
		*ppid = (pid_t)field[1];
	if (start)
		*start = field[19];
	return 0;
}

int drv__sockdir_make(const char *prefix, char *out, size_t len)
{
	const char *base = drv__socket_base();
	unsigned long long start = 0;

	/* Without a start time the name still works; it only falls back to the pid alone (0 matches any). */
	if (drv__proc_stat(getpid(), NULL, &start) != 0)
		start = 0;
	int n = snprintf(out, len, "%s/%s-%d-%llx-XXXXXX", base, prefix, (int)getpid(), start);
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (!mkdtemp(out))
		return -1;
	/* mkdtemp already uses 0700; be explicit against an odd umask. */
	chmod(out, 0700);
	return 0;
}

/* Parses the owner out of a directory name made by drv__sockdir_make; false when it is not one. */
static bool parse_owner(const char *name, pid_t *pid, unsigned long long *start)
{
	size_t n = strlen(name);
	/* From the right: "-XXXXXX", "-<hex start>", "-<decimal pid>", then "drover" or "drover-<type>". */
	if (strncmp(name, "drover-", 7) != 0 || n < 7 + 7)
		return false;
	const char *end = name + n - 7;
	if (*end != '-')
		return false;
	for (const char *p = end + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
			return false;
	const char *s = end;
	while (s > name && s[-1] != '-')
		s--;
	if (s == end || s == name || end - s > 16)
		return false;
	char *stop;
	*start = strtoull(s, &stop, 16);
	if (stop != end)
		return false;
	const char *pend = s - 1, *ps = pend;
	while (ps > name && ps[-1] != '-')
		ps--;
	if (ps == pend || pend - ps > 9 || ps < name + 7)
		return false;
	long v = 0;
	for (const char *p = ps; p < pend; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	if (v <= 0)
		return false;
	*pid = (pid_t)v;
	return true;
}

/* True unless the owner is provably gone: no such pid, or a pid reused by a process started later. */
static bool owner_alive(pid_t pid, unsigned long long start)
{
	unsigned long long now_start;

	if (kill(pid, 0) != 0 && errno == ESRCH)
		return false;
	/* It exited meanwhile, or /proc is not mounted: only the first is a reason to remove. */
	if (drv__proc_stat(pid, NULL, &now_start) != 0)
		return kill(pid, 0) == 0 || errno != ESRCH;
	return start == 0 || now_start == start;
}

/* Empties the directory open at dfd without following any symlink; entries that resist stay. */
static void empty_dir_at(int dfd, int depth)
{
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dfd, e->d_name, 0) == 0 || errno != EISDIR || depth >= REMOVE_DEPTH_MAX)
			continue;
		int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		empty_dir_at(sub, depth + 1);
		close(sub);
		unlinkat(dfd, e->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

/*
 * Removes base/name, a directory of ours, and what is in it. A symlink at
 * any level is removed, never followed: a driver that swapped its directory
 * for a link to somewhere else must not make us empty that place.
 */
static int remove_at(int bfd, const char *name, const struct stat *seen)
{
	int dfd = openat(bfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	if (dfd < 0)
		return -1;
	/* Still the directory we looked at, not one swapped in since. */
	if (fstat(dfd, &st) != 0 || (seen && (st.st_dev != seen->st_dev || st.st_ino != seen->st_ino))) {
		close(dfd);
		return -1;
	}
	empty_dir_at(dfd, 0);
	close(dfd);
	return unlinkat(bfd, name, AT_REMOVEDIR);
}

void drv__sockdir_remove(const char *path)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (!slash || slash[1] == '\0' || (size_t)(slash - path) >= sizeof(parent))
		return;
	snprintf(parent, sizeof(parent), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	int bfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0)
		return;
	if (remove_at(bfd, slash + 1, NULL) != 0 && (errno == ENOTDIR || errno == ELOOP))
		/* Not a directory any more (a symlink put in its place): the link goes, its target stays. */
		unlinkat(bfd, slash + 1, 0);
	close(bfd);
}

int drv__sockdir_sweep(const char *base)
{
	int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int dup_fd = bfd >= 0 ? dup(bfd) : -1;
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	struct dirent *e;
	int removed = 0;

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		if (bfd >= 0)
			close(bfd);
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		pid_t pid;
		unsigned long long start;
		struct stat st;

		if (!parse_owner(e->d_name, &pid, &start))
			continue;
		/* Only real directories of our own user; a symlink is never followed. */
		if (fstatat(bfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid())
			continue;
		if (owner_alive(pid, start))
			continue;
		if (remove_at(bfd, e->d_name, &st) == 0)
			removed++;
	}
	closedir(d);
	close(bfd);
	return removed;
}

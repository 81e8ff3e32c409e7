/*
 * The measurements (see bench_rows.h). Every comparison runs its contenders
 * in the same process, alternating rounds where a run is long, so a noisy
 * neighbour slows both sides rather than one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "drover/host.h"

#include "bench_echo.h"
#include "bench_rows.h"

#define CALL_TIMEOUT_MS 10000
#define OFFERS_WANTED 1000

struct ctx {
	const struct bench_opts *o;
	struct drv_host *sim, *py, *echo;
	struct bench_echo_client *ec;
	char sim_err[256], py_err[256], echo_err[256];
	bool sim_ok, py_ok; /* the driver could be spawned at the start of the run */
	size_t features_bytes;
};

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static void drop_line(void *ud, const char *driver_name, const char *line)
{
	(void)ud;
	(void)driver_name;
	(void)line;
}

static int spawn(const struct ctx *c, const char *path, const char *const *args, struct drv_host **h,
                 char *err, size_t errlen)
{
	struct drv_spawn_opts so = {
	    .path = path,
	    .args = args,
	    .handshake_timeout_ms = 10000,
	    .on_stderr = c->o->verbose ? NULL : drop_line,
	};

	if (access(path, X_OK) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	return drv_host_spawn(&so, h, err, errlen);
}

/* Starts the bare echo server answering every call with `reply_bytes` bytes. */
static int spawn_echo(const struct ctx *c, size_t reply_bytes, struct drv_host **h, char *err, size_t errlen)
{
	char bytes[32];
	const char *args[] = {"--echo-server", "--reply-bytes", bytes, NULL};

	snprintf(bytes, sizeof(bytes), "%zu", reply_bytes);
	return spawn(c, c->o->self, args, h, err, errlen);
}

static void free_msg(void *m)
{
	if (m)
		drv_response_free(m);
}

/* One GetFeatures; 0 or the error, with the driver's message in st. */
static int get_features(struct drv_host *h, struct drv_status *st)
{
	drv_get_features_request req = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *resp = NULL;
	int rc = drv_host_get_features(h, &req, &resp, CALL_TIMEOUT_MS, st);

	free_msg(resp);
	return rc;
}

/* Latencies of n sequential GetFeatures calls, in microseconds. */
static int lat_features(struct drv_host *h, double *out, size_t n, char *err, size_t errlen)
{
	struct drv_status st;

	for (size_t i = 0; i < n; i++) {
		double t0 = now_us();
		int rc = get_features(h, &st);

		out[i] = now_us() - t0;
		if (rc != 0) {
			snprintf(err, errlen, "GetFeatures failed: %s: %.160s", drv_error_name(rc),
			         st.message);
			return rc;
		}
	}
	return 0;
}

static int lat_echo(struct bench_echo_client *ec, double *out, size_t n, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		double t0 = now_us();
		int rc = bench_echo_call(ec);

		out[i] = now_us() - t0;
		if (rc != 0) {
			snprintf(err, errlen, "echo call failed");
			return rc;
		}
	}
	return 0;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

/* ---- 1: GetFeatures latency ---- */

/* p50 of a copy of v[0..n), leaving v in its order. */
static double p50_of(const double *v, size_t n)
{
	double *t = malloc((n ? n : 1) * sizeof(double)), m;

	if (!t)
		return 0;
	memcpy(t, v, n * sizeof(double));
	m = bench_percentile(t, n, 50);
	free(t);
	return m;
}

/*
 * Rounds alternate echo, sim and Python, and the ratios are the medians of
 * the per-round ratios: a burst of load within one round cannot tilt them.
 */
static void row_latency(struct ctx *c, struct bench_row *r)
{
	size_t rounds = c->o->quick ? 3 : 20, per = c->o->quick ? 100 : 1000, perpy = c->o->quick ? 30 : 100;
	size_t n = rounds * per, npy = rounds * perpy;
	double *sim = calloc(n, sizeof(double)), *echo = calloc(n, sizeof(double)),
	       *py = calloc(npy, sizeof(double)), rs[32], rp[32];
	double s50, s99, e50, e99, p50 = 0, p99 = 0, ratio_echo, ratio_py = 0;
	bool have_py = c->py != NULL;
	char err[256], pyerr[256] = "";

	if (!sim || !echo || !py) {
		bench_row_error(r, "out of memory");
		goto done;
	}
	if (!c->sim || !c->echo || !c->ec) {
		bench_row_error(r, "%s", !c->sim ? c->sim_err : c->echo_err);
		goto done;
	}
	/* Warm up the connections and the servers' caches first. */
	if (lat_features(c->sim, sim, 200, err, sizeof(err)) ||
	    lat_echo(c->ec, echo, 200, err, sizeof(err))) {
		bench_row_error(r, "%s", err);
		goto done;
	}
	if (have_py && lat_features(c->py, py, 20, pyerr, sizeof(pyerr)) != 0)
		have_py = false;
	for (size_t k = 0; k < rounds; k++) {
		if (lat_echo(c->ec, echo + k * per, per, err, sizeof(err)) ||
		    lat_features(c->sim, sim + k * per, per, err, sizeof(err))) {
			bench_row_error(r, "%s", err);
			goto done;
		}
		if (have_py && lat_features(c->py, py + k * perpy, perpy, pyerr, sizeof(pyerr)) != 0)
			have_py = false;
		rs[k] = ratio(p50_of(sim + k * per, per), p50_of(echo + k * per, per));
		rp[k] = have_py ? ratio(p50_of(py + k * perpy, perpy), p50_of(sim + k * per, per)) : 0;
	}
	ratio_echo = bench_percentile(rs, rounds, 50);
	ratio_py = bench_percentile(rp, rounds, 50);
	s50 = bench_percentile(sim, n, 50);
	s99 = bench_percentile(sim, n, 99);
	e50 = bench_percentile(echo, n, 50);
	e99 = bench_percentile(echo, n, 99);
	if (have_py) {
		p50 = bench_percentile(py, npy, 50);
		p99 = bench_percentile(py, npy, 99);
	}

	snprintf(r->drover, sizeof(r->drover), "%.1f / %.1f us", s50, s99);
	if (have_py)
		snprintf(r->baselines, sizeof(r->baselines), "echo %.1f / %.1f us; python %.0f / %.0f us",
		         e50, e99, p50, p99);
	else
		snprintf(r->baselines, sizeof(r->baselines), "echo %.1f / %.1f us; python n/a", e50, e99);
	snprintf(r->ratio, sizeof(r->ratio), "%.2fx echo; python %.1fx slower", ratio_echo, ratio_py);
	bench_row_num(r, "sim_p50_us", s50);
	bench_row_num(r, "sim_p99_us", s99);
	bench_row_num(r, "echo_p50_us", e50);
	bench_row_num(r, "echo_p99_us", e99);
	bench_row_num(r, "python_p50_us", p50);
	bench_row_num(r, "python_p99_us", p99);
	bench_row_num(r, "ratio_sim_to_echo_median_of_rounds", ratio_echo);
	bench_row_num(r, "ratio_python_to_sim_median_of_rounds", ratio_py);
	bench_row_num(r, "samples", (double)n);
	bench_row_num(r, "rounds", (double)rounds);
	bench_row_num(r, "echo_reply_bytes", (double)c->features_bytes);
	if (!have_py)
		bench_row_error(r, "python driver: %s", c->py ? pyerr : c->py_err);
	else
		r->verdict = ratio_echo <= 1.15 && ratio_py >= 5 ? BENCH_PASS : BENCH_FAIL;
done:
	free(sim);
	free(echo);
	free(py);
}

/* ---- 2: calls/s with 8 in flight ---- */

struct flight {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct drv_host *h;
	drv_get_features_request req;
	long total, started, done, failed;
	char msg[256];
};

static void flight_start(struct flight *f);

static void flight_done(struct flight *f, int code, const char *message)
{
	bool more;

	pthread_mutex_lock(&f->mu);
	f->done++;
	if (code != 0) {
		f->failed++;
		snprintf(f->msg, sizeof(f->msg), "%s: %s", drv_error_name(code), message ? message : "");
	}
	more = f->started < f->total && f->failed == 0;
	if (more)
		f->started++;
	else if (f->done == f->started)
		pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
	if (more)
		flight_start(f);
}

static void flight_cb(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	free_msg(resp);
	flight_done(ud, code, message);
}

static void flight_start(struct flight *f)
{
	int rc = drv_host_call_async(f->h, "GetFeatures", &f->req.base, CALL_TIMEOUT_MS, flight_cb, f);

	if (rc != 0)
		flight_done(f, rc, "drv_host_call_async refused the call");
}

/* Calls/s of `total` GetFeatures with `inflight` outstanding; < 0 on failure (message in err). */
static double sdk_throughput(struct drv_host *h, int inflight, long total, char *err, size_t errlen)
{
	struct flight f = {.h = h, .total = total};
	double t0, secs;
	long first;

	drover__compute__v1__get_features_request__init(&f.req);
	pthread_mutex_init(&f.mu, NULL);
	pthread_cond_init(&f.cv, NULL);
	t0 = now_us();
	first = total < inflight ? total : inflight;
	pthread_mutex_lock(&f.mu);
	f.started = first;
	pthread_mutex_unlock(&f.mu);
	for (long i = 0; i < first; i++)
		flight_start(&f);
	pthread_mutex_lock(&f.mu);
	while (f.done < f.started || (f.started < f.total && f.failed == 0))
		pthread_cond_wait(&f.cv, &f.mu);
	pthread_mutex_unlock(&f.mu);
	secs = (now_us() - t0) / 1e6;
	pthread_mutex_destroy(&f.mu);
	pthread_cond_destroy(&f.cv);
	if (f.failed) {
		snprintf(err, errlen, "%ld of %ld calls failed, last: %.160s", f.failed, f.done, f.msg);
		return -1;
	}
	return (double)total / secs;
}

/* CPU seconds a process has used, or -1 (from /proc/<pid>/stat: utime + stime). */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long ut, st;
	size_t n;
	FILE *f;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields resume after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
	       (double)u.ru_stime.tv_usec / 1e6;
}

/* CPU of the calling and the serving process over a stretch of calls. */
struct cpu_mark {
	double self, peer;
};

static struct cpu_mark cpu_mark(pid_t peer)
{
	return (struct cpu_mark){self_cpu_s(), proc_cpu_s(peer)};
}

static void cpu_add(struct cpu_mark *sum, struct cpu_mark from, pid_t peer)
{
	struct cpu_mark to = cpu_mark(peer);

	sum->self += to.self - from.self;
	sum->peer += to.peer - from.peer;
}

static void row_throughput(struct ctx *c, struct bench_row *r)
{
	long n = c->o->quick ? 3000 : 150000, npy = c->o->quick ? 200 : 5000;
	int rounds = c->o->quick ? 1 : 6;
	double sim_best = 0, echo_best = 0, py = -1;
	struct cpu_mark sim_cpu = {0, 0}, echo_cpu = {0, 0};
	pid_t sim_pid, echo_pid;
	char err[256] = "";

	if (!c->sim || !c->ec) {
		bench_row_error(r, "%s", !c->sim ? c->sim_err : c->echo_err);
		return;
	}
	sim_pid = drv_host_pid(c->sim);
	echo_pid = c->echo ? drv_host_pid(c->echo) : -1;
	/* The best of a few alternating rounds: noise only ever slows a run down. */
	for (int k = 0; k < rounds; k++) {
		double secs, s;
		struct cpu_mark m = cpu_mark(echo_pid);
		long failed = bench_echo_run_inflight(c->ec, 8, n / rounds, &secs);

		cpu_add(&echo_cpu, m, echo_pid);

		if (failed != 0) {
			bench_row_error(r, "echo with 8 in flight: %ld calls failed", failed);
			return;
		}
		if ((double)(n / rounds) / secs > echo_best)
			echo_best = (double)(n / rounds) / secs;
		m = cpu_mark(sim_pid);
		s = sdk_throughput(c->sim, 8, n / rounds, err, sizeof(err));
		cpu_add(&sim_cpu, m, sim_pid);
		if (s < 0) {
			bench_row_error(r, "sim with 8 in flight: %s", err);
			return;
		}
		if (s > sim_best)
			sim_best = s;
	}
	if (c->py)
		py = sdk_throughput(c->py, 8, npy, err, sizeof(err));
	snprintf(r->drover, sizeof(r->drover), "%.0f calls/s", sim_best);
	if (py > 0)
		snprintf(r->baselines, sizeof(r->baselines), "echo %.0f calls/s; python %.0f calls/s",
		         echo_best, py);
	else
		snprintf(r->baselines, sizeof(r->baselines), "echo %.0f calls/s; python n/a", echo_best);
	if (py > 0)
		snprintf(r->ratio, sizeof(r->ratio), "%.2fx echo; %.1fx python", ratio(sim_best, echo_best),
		         ratio(sim_best, py));
	else
		snprintf(r->ratio, sizeof(r->ratio), "%.2fx echo", ratio(sim_best, echo_best));
	bench_row_num(r, "sim_calls_per_s", sim_best);
	bench_row_num(r, "echo_calls_per_s", echo_best);
	bench_row_num(r, "python_calls_per_s", py);
	/*
	 * CPU per call of each side, over all rounds (the caller's includes this
	 * process's idle threads, which take next to nothing). Each side runs its
	 * gRPC work on one thread, so the busier side bounds the rate.
	 */
	double calls = (double)(n / rounds * rounds);
	bench_row_num(r, "sim_driver_cpu_us_per_call", sim_cpu.peer / calls * 1e6);
	bench_row_num(r, "sim_caller_cpu_us_per_call", sim_cpu.self / calls * 1e6);
	bench_row_num(r, "echo_server_cpu_us_per_call", echo_cpu.peer / calls * 1e6);
	bench_row_num(r, "echo_caller_cpu_us_per_call", echo_cpu.self / calls * 1e6);
	if (c->o->verbose)
		printf("row 2 CPU per call: sim driver %.1f us, its caller %.1f us; echo server %.1f us, its "
		       "caller %.1f us\n",
		       sim_cpu.peer / calls * 1e6, sim_cpu.self / calls * 1e6, echo_cpu.peer / calls * 1e6,
		       echo_cpu.self / calls * 1e6);
	r->verdict = sim_best >= 100000 ? BENCH_PASS : BENCH_FAIL;
}

/* ---- 3: GetOffers returning exactly 1,000 offers ---- */

static int offers_call(struct drv_host *h, const char *cfg, size_t *count, drv_get_offers_response **keep,
                       char *err, size_t errlen)
{
	drv_backend_config bc = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *resp = NULL;
	struct drv_status st;
	int rc;

	bc.config_json = (char *)cfg;
	req.config = &bc;
	rc = drv_host_get_offers(h, &req, &resp, CALL_TIMEOUT_MS, &st);
	if (rc != 0) {
		snprintf(err, errlen, "GetOffers with %.60s failed: %s: %.120s", cfg, drv_error_name(rc),
		         st.message);
		return rc;
	}
	*count = resp->n_offers;
	if (keep)
		*keep = resp;
	else
		free_msg(resp);
	return 0;
}

struct region_count {
	const char *name;
	size_t n;
};

static int by_count_desc(const void *a, const void *b)
{
	const struct region_count *x = a, *y = b;

	return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->name, y->name);
}

/*
 * When the whole catalog is larger than OFFERS_WANTED: the "regions" part of
 * a config whose catalog offers come as close to OFFERS_WANTED as possible
 * without passing it (largest regions first). Few synthetic offers are then
 * needed, so the driver does not spend the measured time filtering out
 * thousands of synthetic offers of other regions. *count gets the catalog
 * offers of the chosen regions; base is "" if no region fits.
 */
static void pick_regions(const drv_get_offers_response *all, char *base, size_t baselen, size_t *count)
{
	struct region_count *rc = calloc(all->n_offers ? all->n_offers : 1, sizeof(*rc));
	size_t nr = 0, sum = 0, used = 0;

	base[0] = '\0';
	*count = 0;
	if (!rc)
		return;
	for (size_t i = 0; i < all->n_offers; i++) {
		const char *r = all->offers[i]->region;
		size_t j;

		if (!r)
			continue;
		for (j = 0; j < nr && strcmp(rc[j].name, r) != 0; j++)
			;
		if (j == nr)
			rc[nr++].name = r;
		rc[j].n++;
	}
	qsort(rc, nr, sizeof(*rc), by_count_desc);
	for (size_t j = 0; j < nr; j++) {
		size_t o = strlen(base);
		int w;

		if (sum + rc[j].n > OFFERS_WANTED)
			continue;
		w = snprintf(base + o, baselen - o, "%s\"%s\"", used ? ", " : "\"regions\": [", rc[j].name);
		if (w < 0 || (size_t)w >= baselen - o - 4) {
			base[o] = '\0';
			break;
		}
		sum += rc[j].n;
		used++;
	}
	if (used)
		strcat(base, "], ");
	*count = sum;
	free(rc);
}

/*
 * Finds a config for which the driver answers exactly OFFERS_WANTED offers:
 * its own catalog (limited to some of its regions when the whole catalog is
 * larger) topped up with "synthetic_offers". Synthetic offer i depends only
 * on i, so the count grows by at most one per extra synthetic offer and a
 * search always lands on exactly OFFERS_WANTED.
 */
static int offers_config(struct drv_host *h, char *cfg, size_t cfglen, char *err, size_t errlen)
{
	drv_get_offers_response *all = NULL;
	char base[1536] = "";
	size_t c0, count = 0;
	long lo = 0, hi = -1, n;
	size_t clo;

	if (offers_call(h, "{}", &c0, &all, err, errlen))
		return -1;
	if (c0 > OFFERS_WANTED) {
		pick_regions(all, base, sizeof(base), &c0);
		if (!base[0]) {
			free_msg(all);
			snprintf(err, errlen, "every region alone has more than %d offers", OFFERS_WANTED);
			return -1;
		}
	}
	free_msg(all);
	clo = c0;
	n = OFFERS_WANTED - (long)c0;
	for (int probe = 0; probe < 40; probe++) {
		snprintf(cfg, cfglen, "{%s\"synthetic_offers\": %ld}", base, n);
		if (offers_call(h, cfg, &count, NULL, err, errlen))
			return -1;
		if (count == OFFERS_WANTED)
			return 0;
		if (count < OFFERS_WANTED) {
			lo = n;
			clo = count;
		} else {
			hi = n;
		}
		if (hi < 0) {
			/* Extrapolate from the share of synthetic offers that pass the region filter so far.
			 */
			double share = lo > 0 && clo > c0 ? (double)(clo - c0) / (double)lo : 0.01;
			n = lo + (long)((double)(OFFERS_WANTED - clo) / share) + 1;
			if (n > 100000)
				n = 100000;
		} else if (hi - lo > 1) {
			n = lo + (hi - lo) / 2;
		} else {
			break;
		}
	}
	snprintf(err, errlen, "could not make the driver return exactly %d offers (last: %zu with %.80s)",
	         OFFERS_WANTED, count, cfg);
	return -1;
}

static int lat_offers(struct drv_host *h, const char *cfg, double *out, size_t n, char *err, size_t errlen)
{
	drv_backend_config bc = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	struct drv_status st;

	bc.config_json = (char *)cfg;
	req.config = &bc;
	for (size_t i = 0; i < n; i++) {
		drv_get_offers_response *resp = NULL;
		double t0 = now_us();
		int rc = drv_host_get_offers(h, &req, &resp, CALL_TIMEOUT_MS, &st);

		out[i] = now_us() - t0;
		if (rc != 0) {
			snprintf(err, errlen, "GetOffers failed: %s: %.160s", drv_error_name(rc), st.message);
			return rc;
		}
		if (resp->n_offers != OFFERS_WANTED) {
			snprintf(err, errlen, "GetOffers returned %zu offers, not %d", resp->n_offers,
			         OFFERS_WANTED);
			free_msg(resp);
			return -1;
		}
		free_msg(resp);
	}
	return 0;
}

/*
 * The bare echo answering with as many bytes as the sim's 1,000-offer
 * answer: what moving those bytes costs without protobuf or the SDK.
 * Returns the p50 in microseconds, or -1.
 */
static double offers_echo_p50(struct ctx *c, size_t reply_bytes, size_t n)
{
	struct drv_host *h = NULL;
	struct bench_echo_client *ec = NULL;
	double *v = calloc(n, sizeof(double)), p50 = -1;
	char err[256];

	if (v && spawn_echo(c, reply_bytes, &h, err, sizeof(err)) == 0 &&
	    bench_echo_client_new(drv_host_target(h), 0, &ec, err, sizeof(err)) == 0 &&
	    lat_echo(ec, v, n < 10 ? n : 10, err, sizeof(err)) == 0 &&
	    lat_echo(ec, v, n, err, sizeof(err)) == 0)
		p50 = bench_percentile(v, n, 50);
	bench_echo_client_free(ec);
	drv_host_free(h);
	free(v);
	return p50;
}

/*
 * Median microseconds to pack `m` and unpack and free the bytes again in
 * this process: the protobuf-c work any C implementation of the call must do.
 */
static double codec_us(const ProtobufCMessage *m, size_t bytes, int reps)
{
	uint8_t *buf = malloc(bytes ? bytes : 1);
	double v[64];

	if (!buf)
		return -1;
	if (reps > 64)
		reps = 64;
	for (int i = 0; i < reps; i++) {
		double t0 = now_us();

		protobuf_c_message_pack(m, buf);
		ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, NULL, bytes, buf);

		if (u)
			protobuf_c_message_free_unpacked(u, NULL);
		v[i] = now_us() - t0;
	}
	free(buf);
	return bench_percentile(v, (size_t)reps, 50);
}

static void row_offers(struct ctx *c, struct bench_row *r)
{
	size_t n = c->o->quick ? 20 : 500, npy = c->o->quick ? 5 : 60, count, bytes;
	double *sim = calloc(n, sizeof(double)), *py = calloc(npy, sizeof(double));
	drv_get_offers_response *one = NULL;
	char cfg_sim[2048], cfg_py[2048], err[256];
	double s50, s99, p50 = 0, e50, codec = -1;
	bool have_py = false;

	if (!sim || !py) {
		bench_row_error(r, "out of memory");
		goto done;
	}
	if (!c->sim) {
		bench_row_error(r, "%s", c->sim_err);
		goto done;
	}
	if (offers_config(c->sim, cfg_sim, sizeof(cfg_sim), err, sizeof(err)) ||
	    offers_call(c->sim, cfg_sim, &count, &one, err, sizeof(err)) ||
	    lat_offers(c->sim, cfg_sim, sim, n < 10 ? n : 10, err, sizeof(err)) ||
	    lat_offers(c->sim, cfg_sim, sim, n, err, sizeof(err))) {
		bench_row_error(r, "sim: %s", err);
		goto done;
	}
	bytes = protobuf_c_message_get_packed_size(&one->base);
	codec = codec_us(&one->base, bytes, c->o->quick ? 5 : 50);
	free_msg(one);
	s50 = bench_percentile(sim, n, 50);
	s99 = bench_percentile(sim, n, 99);
	e50 = offers_echo_p50(c, bytes, n);
	if (c->py && offers_config(c->py, cfg_py, sizeof(cfg_py), err, sizeof(err)) == 0 &&
	    lat_offers(c->py, cfg_py, py, 3, err, sizeof(err)) == 0 &&
	    lat_offers(c->py, cfg_py, py, npy, err, sizeof(err)) == 0) {
		have_py = true;
		p50 = bench_percentile(py, npy, 50);
	}
	snprintf(r->drover, sizeof(r->drover), "p50 %.3f ms (p99 %.3f)", s50 / 1e3, s99 / 1e3);
	snprintf(r->baselines, sizeof(r->baselines),
	         "python p50 %.3f ms; echo of %zu KB %.3f ms + pack/unpack %.3f ms",
	         have_py ? p50 / 1e3 : 0.0, bytes / 1024, e50 / 1e3, codec / 1e3);
	snprintf(r->ratio, sizeof(r->ratio), "python %.1fx slower; %.2fx echo", ratio(p50, s50),
	         ratio(s50, e50));
	bench_row_num(r, "offers", OFFERS_WANTED);
	json_object_set_new(r->data, "sim_config", json_string(cfg_sim));
	if (have_py)
		json_object_set_new(r->data, "python_config", json_string(cfg_py));
	bench_row_num(r, "response_bytes", (double)bytes);
	bench_row_num(r, "sim_p50_ms", s50 / 1e3);
	bench_row_num(r, "sim_p99_ms", s99 / 1e3);
	bench_row_num(r, "python_p50_ms", p50 / 1e3);
	bench_row_num(r, "echo_same_bytes_p50_ms", e50 / 1e3);
	bench_row_num(r, "pack_unpack_free_ms", codec / 1e3);
	if (!have_py)
		bench_row_error(r, "python driver: %s", c->py ? err : c->py_err);
	else
		r->verdict = s50 <= 1000 && p50 >= 5 * s50 ? BENCH_PASS : BENCH_FAIL;
done:
	free(sim);
	free(py);
}

/* ---- 4: spawn -> first successful RPC ---- */

enum contender { SIM, PYTHON, PYTHON_RAW, ECHO };

/*
 * One spawn's timeline, in ms from the start of drv_host_spawn: the
 * handshake line read, drv_host_spawn returned (line checked, channel made),
 * the first call answered (the row's figure).
 */
struct spawn_times {
	double handshake, spawned, first_rpc;
};

static int spawn_once(struct ctx *c, enum contender who, struct spawn_times *t, char *err, size_t errlen)
{
	struct drv_host *h = NULL;
	struct bench_echo_client *ec = NULL;
	struct drv_status st;
	double t0 = now_us();
	int rc;

	if (who == ECHO)
		rc = spawn_echo(c, c->features_bytes, &h, err, errlen);
	else
		rc = spawn(c,
		           who == SIM      ? c->o->sim
		           : who == PYTHON ? c->o->python
		                           : c->o->python_raw,
		           NULL, &h, err, errlen);
	if (rc != 0)
		return -1;
	t->spawned = (now_us() - t0) / 1e3;
	t->handshake = drv_host_handshake_ms(h);
	if (who == ECHO) {
		rc = bench_echo_client_new(drv_host_target(h), 0, &ec, err, errlen);
		if (rc == 0)
			rc = bench_echo_call(ec);
	} else {
		rc = get_features(h, &st);
		if (rc != 0)
			snprintf(err, errlen, "first GetFeatures failed: %s: %.160s", drv_error_name(rc),
			         st.message);
	}
	t->first_rpc = (now_us() - t0) / 1e3;
	bench_echo_client_free(ec);
	drv_host_stop(h, 5000, NULL);
	drv_host_free(h);
	return rc == 0 ? 0 : -1;
}

static int spawn_median(struct ctx *c, enum contender who, int n, double *median, char *err, size_t errlen)
{
	double v[64];
	struct spawn_times t;

	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++) {
		if (spawn_once(c, who, &t, err, errlen) != 0)
			return -1;
		v[i] = t.first_rpc;
	}
	*median = bench_percentile(v, (size_t)n, 50);
	return 0;
}

/* Medians of each step of n spawns, into the row's JSON as <who>_<step>_ms; printed under --verbose. */
static void spawn_breakdown(struct ctx *c, struct bench_row *r, const char *who, const struct spawn_times *t,
                            int n)
{
	double v[64], m[3];
	char key[64];

	for (int step = 0; step < 3; step++) {
		for (int i = 0; i < n; i++)
			v[i] = step == 0 ? t[i].handshake : step == 1 ? t[i].spawned : t[i].first_rpc;
		m[step] = bench_percentile(v, (size_t)n, 50);
	}
	snprintf(key, sizeof(key), "%s_handshake_ms", who);
	bench_row_num(r, key, m[0]);
	snprintf(key, sizeof(key), "%s_spawned_ms", who);
	bench_row_num(r, key, m[1]);
	if (c->o->verbose)
		fprintf(stderr,
		        "row 4 %-4s medians: handshake line read %.2f ms, channel ready %.2f ms (+%.2f), "
		        "first RPC answered %.2f ms (+%.2f)\n",
		        who, m[0], m[1], m[1] - m[0], m[2], m[2] - m[1]);
}

static void row_spawn(struct ctx *c, struct bench_row *r)
{
	int n = c->o->quick ? 3 : 30, npy = c->o->quick ? 2 : 10;
	double sim, echo = 0, py = 0;
	char err[256];
	bool have_echo, have_py;

	if (!c->sim_ok) {
		bench_row_error(r, "%s", c->sim_err);
		return;
	}
	/* Sim and echo alternate, so a burst of load hits both. */
	struct spawn_times ts[64], te[64];
	double vs[64], ve[64];
	have_echo = true;
	for (int i = 0; i < n && i < 64; i++) {
		if (spawn_once(c, SIM, &ts[i], err, sizeof(err)) != 0) {
			bench_row_error(r, "sim: %s", err);
			return;
		}
		vs[i] = ts[i].first_rpc;
		if (have_echo && spawn_once(c, ECHO, &te[i], err, sizeof(err)) != 0)
			have_echo = false;
		ve[i] = have_echo ? te[i].first_rpc : 0;
	}
	sim = bench_percentile(vs, (size_t)n, 50);
	if (have_echo)
		echo = bench_percentile(ve, (size_t)n, 50);
	have_py = c->py_ok && spawn_median(c, PYTHON, npy, &py, err, sizeof(err)) == 0;
	snprintf(r->drover, sizeof(r->drover), "median %.2f ms", sim);
	snprintf(r->baselines, sizeof(r->baselines), "bare echo %s%.2f ms; python %s%.1f ms",
	         have_echo ? "" : "n/a ", echo, have_py ? "" : "n/a ", py);
	snprintf(r->ratio, sizeof(r->ratio), "%.2fx echo; python %.1fx slower", ratio(sim, echo),
	         ratio(py, sim));
	bench_row_num(r, "sim_median_ms", sim);
	bench_row_num(r, "echo_median_ms", echo);
	bench_row_num(r, "python_median_ms", py);
	bench_row_num(r, "spawns", n);
	spawn_breakdown(c, r, "sim", ts, n);
	if (have_echo)
		spawn_breakdown(c, r, "echo", te, n);
	r->verdict = sim <= 3.5 ? BENCH_PASS : BENCH_FAIL;
}

/* ---- 5: idle RSS and threads ---- */

static int proc_status(pid_t pid, long *rss_kb, long *threads)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	*rss_kb = *threads = -1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "VmRSS: %ld", rss_kb);
		sscanf(line, "Threads: %ld", threads);
	}
	fclose(f);
	return *rss_kb >= 0 && *threads >= 0 ? 0 : -1;
}

static void row_rss(struct ctx *c, struct bench_row *r)
{
	struct drv_host *sim = NULL, *py = NULL, *echo = NULL;
	struct bench_echo_client *ec = NULL;
	struct drv_status st;
	char err[256];
	long s_rss, s_thr, p_rss = 0, p_thr = 0, e_rss = 0, e_thr = 0;
	bool have_py = false, have_echo = false;

	if (spawn(c, c->o->sim, NULL, &sim, err, sizeof(err)) != 0) {
		bench_row_error(r, "sim: %s", err);
		return;
	}
	if (c->py_ok && spawn(c, c->o->python, NULL, &py, err, sizeof(err)) != 0)
		py = NULL;
	if (spawn_echo(c, c->features_bytes, &echo, err, sizeof(err)) == 0 &&
	    bench_echo_client_new(drv_host_target(echo), 0, &ec, err, sizeof(err)) == 0)
		have_echo = bench_echo_call(ec) == 0 && bench_echo_call(ec) == 0;
	/* "A few calls": what a server makes when it adds a backend and lists its offers. */
	for (struct drv_host **h = (struct drv_host *[]){sim, py, NULL}; *h; h++) {
		drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
		drv_get_info_response *iresp = NULL;

		drv_host_get_info(*h, &ireq, &iresp, CALL_TIMEOUT_MS, &st);
		free_msg(iresp);
		get_features(*h, &st);
		drv_host_health(*h, CALL_TIMEOUT_MS, &st);
		size_t count;

		offers_call(*h, "{}", &count, NULL, err, sizeof(err));
	}
	usleep(c->o->quick ? 300000 : 1000000);
	if (proc_status(drv_host_pid(sim), &s_rss, &s_thr) != 0) {
		bench_row_error(r, "cannot read /proc/%d/status of the sim driver", (int)drv_host_pid(sim));
		goto done;
	}
	have_py = py && proc_status(drv_host_pid(py), &p_rss, &p_thr) == 0;
	have_echo = have_echo && proc_status(drv_host_pid(echo), &e_rss, &e_thr) == 0;
	snprintf(r->drover, sizeof(r->drover), "%.1f MB, %ld threads", (double)s_rss / 1024, s_thr);
	snprintf(r->baselines, sizeof(r->baselines), "bare echo %.1f MB, %ld thr; python %.1f MB, %ld thr",
	         (double)e_rss / 1024, e_thr, (double)p_rss / 1024, p_thr);
	snprintf(r->ratio, sizeof(r->ratio), "%.2fx echo; python %.1fx larger",
	         ratio((double)s_rss, (double)e_rss), ratio((double)p_rss, (double)s_rss));
	if (!have_py || !have_echo)
		snprintf(r->ratio, sizeof(r->ratio), "%s", "baseline missing");
	bench_row_num(r, "sim_rss_kb", (double)s_rss);
	bench_row_num(r, "sim_threads", (double)s_thr);
	bench_row_num(r, "echo_rss_kb", (double)e_rss);
	bench_row_num(r, "echo_threads", (double)e_thr);
	bench_row_num(r, "python_rss_kb", (double)p_rss);
	bench_row_num(r, "python_threads", (double)p_thr);
	r->verdict = s_rss <= 10 * 1024 ? BENCH_PASS : BENCH_FAIL;
done:
	bench_echo_client_free(ec);
	drv_host_free(echo);
	drv_host_free(py);
	drv_host_free(sim);
}

/* ---- 6-8: the Python driver SDK against a Python driver on grpcio alone ---- */

/* Row 6: spawn -> first successful RPC, the two alternating. */
static void row_pysdk_spawn(struct ctx *c, struct bench_row *r)
{
	int n = c->o->quick ? 2 : 15;
	double vs[64], vr[64], sdk, raw;
	struct spawn_times t;
	char err[256];

	for (int i = 0; i < n; i++) {
		if (spawn_once(c, PYTHON, &t, err, sizeof(err)) != 0) {
			bench_row_error(r, "python sdk: %s", err);
			return;
		}
		vs[i] = t.first_rpc;
		if (spawn_once(c, PYTHON_RAW, &t, err, sizeof(err)) != 0) {
			bench_row_error(r, "python raw: %s", err);
			return;
		}
		vr[i] = t.first_rpc;
	}
	sdk = bench_percentile(vs, (size_t)n, 50);
	raw = bench_percentile(vr, (size_t)n, 50);
	snprintf(r->drover, sizeof(r->drover), "median %.1f ms", sdk);
	snprintf(r->baselines, sizeof(r->baselines), "raw grpcio %.1f ms", raw);
	snprintf(r->ratio, sizeof(r->ratio), "%.2fx raw", ratio(sdk, raw));
	bench_row_num(r, "python_sdk_median_ms", sdk);
	bench_row_num(r, "python_raw_median_ms", raw);
	bench_row_num(r, "spawns", n);
	r->verdict = sdk <= 100 ? BENCH_PASS : BENCH_FAIL;
}

/* Row 7: GetFeatures calls/s with 8 in flight; the best of alternating rounds. */
static void row_pysdk_throughput(struct ctx *c, struct bench_row *r)
{
	long n = c->o->quick ? 200 : 3000;
	int rounds = c->o->quick ? 1 : 6;
	struct drv_host *sdk = NULL, *raw = NULL;
	double sdk_best = 0, raw_best = 0;
	struct cpu_mark sdk_cpu = {0, 0}, raw_cpu = {0, 0};
	char err[256];

	if (spawn(c, c->o->python, NULL, &sdk, err, sizeof(err)) != 0) {
		bench_row_error(r, "python sdk: %s", err);
		return;
	}
	if (spawn(c, c->o->python_raw, NULL, &raw, err, sizeof(err)) != 0) {
		bench_row_error(r, "python raw: %s", err);
		goto done;
	}
	/*
	 * The calls/s of a loaded machine swing by a third between rounds; the
	 * drivers' CPU per call, summed over all rounds, shows the cost of each
	 * side whatever the load.
	 */
	for (int k = 0; k < rounds; k++) {
		struct cpu_mark m = cpu_mark(drv_host_pid(sdk));
		double s = sdk_throughput(sdk, 8, n, err, sizeof(err));
		cpu_add(&sdk_cpu, m, drv_host_pid(sdk));
		if (s < 0) {
			bench_row_error(r, "python sdk with 8 in flight: %s", err);
			goto done;
		}
		sdk_best = s > sdk_best ? s : sdk_best;
		m = cpu_mark(drv_host_pid(raw));
		s = sdk_throughput(raw, 8, n, err, sizeof(err));
		cpu_add(&raw_cpu, m, drv_host_pid(raw));
		if (s < 0) {
			bench_row_error(r, "python raw with 8 in flight: %s", err);
			goto done;
		}
		raw_best = s > raw_best ? s : raw_best;
	}
	double calls = (double)n * rounds;
	snprintf(r->drover, sizeof(r->drover), "%.0f calls/s, %.0f us CPU/call", sdk_best,
	         sdk_cpu.peer / calls * 1e6);
	snprintf(r->baselines, sizeof(r->baselines), "raw grpcio %.0f calls/s, %.0f us CPU/call", raw_best,
	         raw_cpu.peer / calls * 1e6);
	snprintf(r->ratio, sizeof(r->ratio), "%.2fx raw", ratio(sdk_best, raw_best));
	bench_row_num(r, "python_sdk_calls_per_s", sdk_best);
	bench_row_num(r, "python_raw_calls_per_s", raw_best);
	bench_row_num(r, "python_sdk_driver_cpu_us_per_call", sdk_cpu.peer / calls * 1e6);
	bench_row_num(r, "python_raw_driver_cpu_us_per_call", raw_cpu.peer / calls * 1e6);
	r->verdict = sdk_best >= raw_best ? BENCH_PASS : BENCH_FAIL;
done:
	drv_host_free(raw);
	drv_host_free(sdk);
}

/* Row 8: RSS after the calls a server makes when it adds a backend, and 1 s idle. */
static void row_pysdk_rss(struct ctx *c, struct bench_row *r)
{
	struct drv_host *h[2] = {NULL, NULL};
	const char *paths[2] = {c->o->python, c->o->python_raw};
	long rss[2], thr[2];
	struct drv_status st;
	char err[256];

	for (int i = 0; i < 2; i++) {
		if (spawn(c, paths[i], NULL, &h[i], err, sizeof(err)) != 0) {
			bench_row_error(r, "%s: %s", paths[i], err);
			goto done;
		}
		drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
		drv_get_info_response *iresp = NULL;
		size_t count;

		drv_host_get_info(h[i], &ireq, &iresp, CALL_TIMEOUT_MS, &st);
		free_msg(iresp);
		get_features(h[i], &st);
		drv_host_health(h[i], CALL_TIMEOUT_MS, &st);
		offers_call(h[i], "{}", &count, NULL, err, sizeof(err));
	}
	usleep(c->o->quick ? 300000 : 1000000);
	for (int i = 0; i < 2; i++) {
		if (proc_status(drv_host_pid(h[i]), &rss[i], &thr[i]) != 0) {
			bench_row_error(r, "cannot read /proc/%d/status", (int)drv_host_pid(h[i]));
			goto done;
		}
	}
	snprintf(r->drover, sizeof(r->drover), "%.1f MB, %ld threads", (double)rss[0] / 1024, thr[0]);
	snprintf(r->baselines, sizeof(r->baselines), "raw grpcio %.1f MB, %ld thr", (double)rss[1] / 1024,
	         thr[1]);
	snprintf(r->ratio, sizeof(r->ratio), "%.2fx raw", ratio((double)rss[0], (double)rss[1]));
	bench_row_num(r, "python_sdk_rss_kb", (double)rss[0]);
	bench_row_num(r, "python_sdk_threads", (double)thr[0]);
	bench_row_num(r, "python_raw_rss_kb", (double)rss[1]);
	bench_row_num(r, "python_raw_threads", (double)thr[1]);
	r->verdict = rss[0] <= 35 * 1024 ? BENCH_PASS : BENCH_FAIL;
done:
	drv_host_free(h[1]);
	drv_host_free(h[0]);
}

static bool wanted(const struct bench_opts *o, int id)
{
	return !o->rows || (o->rows & (1u << id));
}

void bench_rows_run(const struct bench_opts *o, struct bench_row *rows)
{
	struct ctx c = {.o = o};
	struct drv_status st;

	bench_row_init(&rows[0], 1, "GetFeatures latency p50 / p99",
	               "p50 <= 1.15x echo; >= 5x faster than py");
	bench_row_init(&rows[1], 2, "GetFeatures calls/s, 8 in flight", ">= 100,000 calls/s");
	bench_row_init(&rows[2], 3, "GetOffers (exactly 1,000 offers)",
	               "p50 <= 1.0 ms; >= 5x faster than py");
	bench_row_init(&rows[3], 4, "spawn -> first successful RPC", "median <= 3.5 ms");
	bench_row_init(&rows[4], 5, "idle driver RSS (1 s idle), threads", "RSS <= 10 MB");
	bench_row_init(&rows[5], 6, "py sdk: spawn -> first RPC", "median <= 100 ms");
	bench_row_init(&rows[6], 7, "py sdk: calls/s, 8 in flight", ">= 1.0x raw");
	bench_row_init(&rows[7], 8, "py sdk: idle RSS, threads", "RSS <= 35 MB");

	c.sim_ok = spawn(&c, o->sim, NULL, &c.sim, c.sim_err, sizeof(c.sim_err)) == 0;
	if (!c.sim_ok)
		c.sim = NULL;
	c.py_ok = spawn(&c, o->python, NULL, &c.py, c.py_err, sizeof(c.py_err)) == 0;
	if (!c.py_ok)
		c.py = NULL;
	/* The echo answers with as many bytes as the sim's real GetFeatures answer. */
	if (c.sim) {
		drv_get_features_request req = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
		drv_get_features_response *resp = NULL;

		if (drv_host_get_features(c.sim, &req, &resp, CALL_TIMEOUT_MS, &st) == 0)
			c.features_bytes = protobuf_c_message_get_packed_size(&resp->base);
		free_msg(resp);
	}
	if (spawn_echo(&c, c.features_bytes, &c.echo, c.echo_err, sizeof(c.echo_err)) != 0)
		c.echo = NULL;
	else if (bench_echo_client_new(drv_host_target(c.echo), 0, &c.ec, c.echo_err, sizeof(c.echo_err)) !=
	         0)
		c.ec = NULL;

	if (wanted(o, 1))
		row_latency(&c, &rows[0]);
	if (wanted(o, 2))
		row_throughput(&c, &rows[1]);
	if (wanted(o, 3))
		row_offers(&c, &rows[2]);

	/* The busy long-lived drivers go before the spawn and memory rows, so they do not compete. */
	bench_echo_client_free(c.ec);
	drv_host_free(c.echo);
	drv_host_free(c.py);
	c.ec = NULL;
	c.echo = c.py = NULL;
	/*
	 * The idle sim stays through the spawn row: a host adds a driver while
	 * others run (droverd does), and its open channel keeps gRPC's event
	 * engine alive. Without any channel, closing the last one tears the
	 * engine's threads down and every spawn (sim and echo alike) would pay
	 * for building them again, which no long-lived host does.
	 */
	if (wanted(o, 4))
		row_spawn(&c, &rows[3]);
	drv_host_free(c.sim);
	c.sim = NULL;
	if (wanted(o, 5))
		row_rss(&c, &rows[4]);
	if (wanted(o, 6))
		row_pysdk_spawn(&c, &rows[5]);
	if (wanted(o, 7))
		row_pysdk_throughput(&c, &rows[6]);
	if (wanted(o, 8))
		row_pysdk_rss(&c, &rows[7]);
}

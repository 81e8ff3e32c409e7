/*
 * Fault injection for provider calls: latency, transient errors, crashes.
 * Draws come from a counter mixed with the config's seed and a value of the
 * process's own (its pid and start time). With the seed alone, every driver
 * process drew the same sequence: one whose first draw was a crash crashed
 * on its first call after every restart, for ever, as no real fault does.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "sim_core.h"

static atomic_uint_fast64_t draws;
static uint64_t process_salt;
static pthread_once_t salt_once = PTHREAD_ONCE_INIT;

static void make_salt(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	process_salt =
	    ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec * UINT64_C(1000000007) ^ (uint64_t)ts.tv_nsec;
}

static double unit(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return (double)(x >> 11) / (double)(UINT64_C(1) << 53);
}

enum sim_fault sim_fault_draw(const struct sim_config *cfg)
{
	if (cfg->error_rate <= 0 && cfg->crash_rate <= 0)
		return SIM_FAULT_NONE;
	pthread_once(&salt_once, make_salt);
	uint64_t n = atomic_fetch_add(&draws, 1);
	uint64_t base = (uint64_t)cfg->seed * UINT64_C(0x9e3779b97f4a7c15) + process_salt + n * 3;
	if (unit(base) < cfg->crash_rate)
		return unit(base + 1) < 0.5 ? SIM_FAULT_CRASH_BEFORE : SIM_FAULT_CRASH_AFTER;
	if (unit(base + 2) < cfg->error_rate)
		return SIM_FAULT_ERROR;
	return SIM_FAULT_NONE;
}

bool sim_fault_lie(const struct sim_config *cfg)
{
	if (cfg->terminate_lie_rate <= 0)
		return false;
	pthread_once(&salt_once, make_salt);
	uint64_t n = atomic_fetch_add(&draws, 1);
	return unit((uint64_t)cfg->seed * UINT64_C(0x9e3779b97f4a7c15) + process_salt + n * 3 + 1) <
	       cfg->terminate_lie_rate;
}

int sim_fault_sleep(const struct sim_config *cfg, bool (*cancelled)(void *ctx), void *ctx)
{
	int64_t left = cfg->latency_ms;
	while (left > 0) {
		if (cancelled && cancelled(ctx))
			return DRV_EDEADLINE;
		int64_t step = left < 5 ? left : 5;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = step * 1000000L};
		nanosleep(&ts, NULL);
		left -= step;
	}
	return 0;
}

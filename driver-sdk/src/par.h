/*
 * Internal: one helper thread that takes half of a large encode or decode
 * (par.c), so that a 1,000-offer answer is packed and unpacked on two cores
 * where one would sit idle waiting for it.
 */
#ifndef DRV_PAR_H
#define DRV_PAR_H

#include <stdbool.h>

struct drv__par_job {
	void (*fn)(void *arg);
	void *arg;
	bool taken; /* the helper runs it; the caller must drv__par_wait() */
};

/*
 * Hands `job` to the helper thread, started on first use. False when the
 * helper is busy with another caller's job or cannot be started: the caller
 * then runs job->fn itself. Never blocks on another job.
 */
bool drv__par_start(struct drv__par_job *job);

/* Waits until a job drv__par_start() accepted has run. */
void drv__par_wait(struct drv__par_job *job);

#endif

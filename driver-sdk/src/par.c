/*
 * The codec's helper thread. One per process, started on the first message
 * large enough to split, sleeping on a condition variable otherwise: an idle
 * driver never starts it. One job at a time; a caller that finds it busy does
 * all the work itself, so no caller ever waits for another's job.
 */
#include "par.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER; /* a job is posted */
static pthread_cond_t done = PTHREAD_COND_INITIALIZER; /* the job has run */
static struct drv__par_job *current;                   /* posted or running */
static bool finished;                                  /* current has run */
static bool started, failed;

static void *helper(void *unused)
{
	(void)unused;
	pthread_setname_np(pthread_self(), "drv-codec");
	pthread_mutex_lock(&lock);
	for (;;) {
		while (!current || finished)
			pthread_cond_wait(&wake, &lock);
		struct drv__par_job *j = current;
		pthread_mutex_unlock(&lock);
		j->fn(j->arg);
		pthread_mutex_lock(&lock);
		finished = true;
		pthread_cond_broadcast(&done);
	}
	return NULL;
}

static bool start_helper(void)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	bool ok = false;

	if (pthread_attr_init(&attr) != 0)
		return false;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* Signals stay with the threads that expect them (SIGTERM handling in drivers and droverd). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ok = pthread_create(&t, &attr, helper, NULL) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return ok;
}

bool drv__par_start(struct drv__par_job *job)
{
	job->taken = false;
	pthread_mutex_lock(&lock);
	if (current || failed) {
		pthread_mutex_unlock(&lock);
		return false;
	}
	if (!started) {
		started = true;
		if (!start_helper()) {
			failed = true;
			pthread_mutex_unlock(&lock);
			return false;
		}
	}
	current = job;
	finished = false;
	job->taken = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	return true;
}

void drv__par_wait(struct drv__par_job *job)
{
	if (!job->taken)
		return;
	pthread_mutex_lock(&lock);
	while (current != job || !finished)
		pthread_cond_wait(&done, &lock);
	current = NULL;
	finished = false;
	pthread_mutex_unlock(&lock);
}

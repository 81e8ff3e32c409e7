/*
 * The result of one asynchronous GetOffers (drv_host_call_async), for the SDK
 * tests that wait for one: on_offers_done is the callback, async_wait blocks
 * until it ran.
 */
#ifndef ASYNC_RESULT_H
#define ASYNC_RESULT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "drover/types.h"

struct async_result {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int code;
	size_t n_offers;
};

#define ASYNC_RESULT_INIT                                                                                    \
	{                                                                                                    \
		.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER                              \
	}

static inline void on_offers_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct async_result *r = ud;
	pthread_mutex_lock(&r->mu);
	r->code = code;
	if (resp) {
		r->n_offers = ((drv_get_offers_response *)resp)->n_offers;
		drv_response_free(resp);
	}
	r->done = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static inline void async_wait(struct async_result *r)
{
	pthread_mutex_lock(&r->mu);
	while (!r->done)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

#endif

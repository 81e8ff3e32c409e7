/*
 * gRPC's own log lines (a failed TLS handshake, a dropped connection) go
 * where the program's other lines go: the SDK's JSON lines by default, so a
 * driver's stderr holds nothing else, or a host's logger (drv_rpc_set_log).
 * gRPC used to write them to stderr in its own format ("E1129 05:20:00 ...").
 */
#include <pthread.h>
#include <stdatomic.h>

#include <grpc/support/log.h>

#include "drover/driver.h"
#include "drover/rpc.h"
#include "rpc_grpc.h"

static _Atomic(drv_rpc_log_fn) log_hook;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void grpc_log(gpr_log_func_args *a)
{
	int level = a->severity == GPR_LOG_SEVERITY_ERROR  ? DRV_LOG_ERROR
	            : a->severity == GPR_LOG_SEVERITY_INFO ? DRV_LOG_INFO
	                                                   : DRV_LOG_DEBUG;
	char text[1024];
	snprintf(text, sizeof(text), "gRPC: %s (%s:%d)", a->message ? a->message : "",
	         a->file ? a->file : "?", a->line);
	drv_rpc_log_fn fn = atomic_load(&log_hook);
	if (fn)
		fn(level, text);
	else
		drv_log((enum drv_log_level)level, "%s", text);
}

static void install(void)
{
	gpr_set_log_function(grpc_log);
}

void drv__rpc_log_install(void)
{
	pthread_once(&log_once, install);
}

void drv_rpc_set_log(drv_rpc_log_fn fn)
{
	atomic_store(&log_hook, fn);
	drv__rpc_log_install();
}

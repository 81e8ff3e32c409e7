/* drover-driver-sim: the simulated cloud as a driver process. */
#include "drover/driver.h"
#include "sim_driver.h"
#include "xalloc.h"

/* The sim aborts when memory runs out; its last line goes to the host's log like every other. */
static void report_oom(const char *line)
{
	drv_log(DRV_LOG_ERROR, "%s", line);
}

int main(int argc, char **argv)
{
	xalloc_set_report(report_oom);
	return drv_main(argc, argv, &sim_driver);
}

/* drover-driver-sim: the simulated cloud as a driver process. */
#include "sim_driver.h"

int main(int argc, char **argv)
{
	return drv_main(argc, argv, &sim_driver);
}

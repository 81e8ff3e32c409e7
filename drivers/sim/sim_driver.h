/* sim_driver.h — the sim driver as drv_main() takes it (sim_driver.c). */
#ifndef SIM_DRIVER_H
#define SIM_DRIVER_H

#include "drover/driver.h"

extern const struct drv_driver sim_driver;

#endif

/* The ssh driver's declaration, for main.c and the tests. */
#ifndef SSH_DRIVER_H
#define SSH_DRIVER_H

#include "drover/driver.h"

extern const struct drv_driver ssh_driver;

#endif

/*
 * The only table mapping drover error codes to gRPC status codes and names.
 * drv_error values -1..-16 are the negated gRPC codes 1..16 by construction.
 */
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#include "drover/types.h"
#include "drv_internal.h"

static const struct {
	int err;
	const char *name;
	const char *text;
} errors[] = {
    {DRV_OK, "OK", "success"},
    {DRV_ECANCELLED, "CANCELLED", "the call was cancelled"},
    {DRV_EUNKNOWN, "UNKNOWN", "unknown error"},
    {DRV_EINVAL, "INVALID_ARGUMENT", "invalid argument or config"},
    {DRV_EDEADLINE, "DEADLINE_EXCEEDED", "deadline exceeded"},
    {DRV_ENOTFOUND, "NOT_FOUND", "not found"},
    {DRV_EEXIST, "ALREADY_EXISTS", "already exists with another request"},
    {DRV_EPERM, "PERMISSION_DENIED", "permission denied"},
    {DRV_ENOCAPACITY, "RESOURCE_EXHAUSTED", "no capacity"},
    {DRV_EPRECONDITION, "FAILED_PRECONDITION", "failed precondition"},
    {DRV_EABORTED, "ABORTED", "not done yet, retry later"},
    {DRV_ERANGE, "OUT_OF_RANGE", "out of range"},
    {DRV_EUNIMPLEMENTED, "UNIMPLEMENTED", "not implemented by this driver"},
    {DRV_EINTERNAL, "INTERNAL", "internal error"},
    {DRV_EUNAVAILABLE, "UNAVAILABLE", "unavailable, retry with backoff"},
    {DRV_EDATALOSS, "DATA_LOSS", "data loss"},
    {DRV_EUNAUTHENTICATED, "UNAUTHENTICATED", "not authenticated"},
    {DRV_ENOMEM, "INTERNAL", "out of memory"},
    {DRV_EHANDSHAKE, "INTERNAL", "bad or missing handshake from driver"},
    {DRV_EPROTOCOL, "INTERNAL", "driver speaks another protocol version"},
    {DRV_ESYSTEM, "INTERNAL", "system call failed"},
};

#define N_ERRORS (sizeof(errors) / sizeof(errors[0]))

const char *drv_strerror(int err)
{
	for (size_t i = 0; i < N_ERRORS; i++)
		if (errors[i].err == err)
			return errors[i].text;
	return "unknown error code";
}

const char *drv_error_name(int err)
{
	for (size_t i = 0; i < N_ERRORS; i++)
		if (errors[i].err == err)
			return errors[i].name;
	return "UNKNOWN";
}

int drv_error_to_grpc(int err)
{
	if (err <= 0 && err >= DRV_EUNAUTHENTICATED)
		return -err;
	return 13; /* INTERNAL */
}

int drv_error_from_grpc(int grpc_code)
{
	if (grpc_code >= 0 && grpc_code <= 16)
		return -grpc_code;
	return DRV_EUNKNOWN;
}

int drv_error_from_name(const char *name)
{
	if (!name)
		return 1;
	for (int code = 0; code <= 16; code++)
		if (strcasecmp(errors[code].name, name) == 0)
			return errors[code].err;
	return 1;
}

const char *drv_feature_name(int feature)
{
	const ProtobufCEnumValue *v =
	    protobuf_c_enum_descriptor_get_value(&drover__compute__v1__feature__descriptor, feature);
	if (!v || feature == 0)
		return NULL;
	/* Generated names are "FEATURE_OFFERS"; the short name drops the prefix. */
	return v->name + sizeof("FEATURE_") - 1;
}

int drv_feature_from_name(const char *name)
{
	const ProtobufCEnumDescriptor *d = &drover__compute__v1__feature__descriptor;
	if (!name)
		return -1;
	for (unsigned i = 0; i < d->n_values; i++) {
		const char *shortname = d->values[i].name + sizeof("FEATURE_") - 1;
		if (d->values[i].value != 0 && strcasecmp(shortname, name) == 0)
			return d->values[i].value;
	}
	return -1;
}

void drv__seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int drv__status_set(struct drv_status *st, int code, const char *fmt, ...)
{
	va_list ap;
	if (!st)
		return code;
	st->code = code;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
	return code;
}

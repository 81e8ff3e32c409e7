/*
 * Helpers shared by the two halves of the gRPC transport (rpc_server.c and
 * rpc_client.c). This header and those two files are the only places of the
 * SDK that see gRPC C core types.
 */
#ifndef DRV_RPC_GRPC_H
#define DRV_RPC_GRPC_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include <protobuf-c/protobuf-c.h>

#include "alloc.h"
#include "codec.h"
#include "drover/types.h"
#include "drv_internal.h"

/* Both sides accept messages this large by default: 10,000 offers are ~1.3 MB, far over gRPC's 4 MiB cap for
 * more. */
#define DRV__RPC_DEFAULT_MAX_MESSAGE ((size_t)64 << 20)

/* The timeout of a call given no timeout. */
#define DRV__RPC_DEFAULT_TIMEOUT_MS 30000

/*
 * Debian 12 builds abseil without NDEBUG, so every absl::Mutex lock inside
 * gRPC runs abseil's deadlock detector (a lock-order graph update per
 * acquisition): ~3% of the CPU of a unary call in profiles. Release builds of
 * abseil have it off; we turn it off the same way, through abseil's own
 * switch, found by its (Debian-namespaced) symbol. The reference is weak: with
 * another abseil build the symbol is absent and nothing happens.
 */
extern void _ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(int mode)
    __attribute__((weak));

/* grpc_init() plus the one-time tuning above. Pair with grpc_shutdown(). */
/* Sends gRPC's log lines to the SDK's log (rpc_log.c); once per process. */
void drv__rpc_log_install(void);

static inline void drv__rpc_grpc_init(void)
{
	drv__rpc_log_install();
	if (_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE)
		_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(0 /* kIgnore */);
	grpc_init();
}

static inline int drv__rpc_max_message(size_t opt)
{
	if (opt == 0)
		return (int)DRV__RPC_DEFAULT_MAX_MESSAGE;
	/* gRPC takes an int; anything larger means "no practical limit". */
	if (opt > (size_t)0x7fffffff)
		return 0x7fffffff;
	return (int)opt;
}

/* An absolute monotonic deadline `ms` from now. */
static inline gpr_timespec drv__rpc_deadline(int64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/*
 * Packs `msg` into a new byte buffer with a single allocation of exactly its
 * packed size. Returns NULL when out of memory.
 */
static inline grpc_byte_buffer *drv__rpc_pack(const ProtobufCMessage *msg)
{
	uint8_t small[512], *start;
	size_t n;
	grpc_slice s;
	uint8_t *block = drv__codec_pack_buf(msg, small, sizeof(small), &start, &n);

	if (block == small) {
		s = grpc_slice_from_copied_buffer((const char *)start, n);
	} else if (block) {
		/* The slice takes the codec's block as it is: no copy of a large message. */
		s = grpc_slice_new_with_user_data(start, n, free, block);
	} else {
		n = protobuf_c_message_get_packed_size(msg);
		s = grpc_slice_malloc(n);
		protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
	}
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* protobuf_c_message_unpack() or drv__response_unpack(). */
typedef ProtobufCMessage *(*drv__unpack_fn)(const ProtobufCMessageDescriptor *desc, size_t len,
                                            const uint8_t *data);

static inline ProtobufCMessage *drv__unpack_plain(const ProtobufCMessageDescriptor *desc, size_t len,
                                                  const uint8_t *data)
{
	return protobuf_c_message_unpack(desc, &drv__protobuf_allocator, len, data);
}

/*
 * Unpacks a received byte buffer as a message of type `desc` with `unpack`,
 * or NULL when the bytes are not a valid message of that type. A buffer that
 * arrived in one uncompressed slice (the common case for small messages) is
 * parsed in place; otherwise the slices are joined once.
 */
static inline ProtobufCMessage *drv__rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                                drv__unpack_fn unpack)
{
	if (!bb)
		return NULL;
	if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
	    bb->data.raw.slice_buffer.count <= 1) {
		if (bb->data.raw.slice_buffer.count == 0)
			return unpack(desc, 0, (const uint8_t *)"");
		grpc_slice s = bb->data.raw.slice_buffer.slices[0];
		return unpack(desc, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
	}
	grpc_byte_buffer_reader r;
	if (!grpc_byte_buffer_reader_init(&r, bb))
		return NULL;
	grpc_slice all = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	ProtobufCMessage *m = unpack(desc, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
	grpc_slice_unref(all);
	return m;
}

/*
 * Reads a whole (PEM) file into a NUL-terminated heap string. TLS material is
 * small; a limit keeps a wrong path (e.g. /dev/zero) from eating memory.
 */
static inline int drv__rpc_read_file(const char *what, const char *path, char **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		drv__seterr(err, errlen, "cannot read %s '%s': %s", what, path, strerror(errno));
		return DRV_EINVAL;
	}
	size_t cap = 4096, len = 0;
	char *buf = drv__malloc(cap + 1);
	while (buf) {
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
		if (len == cap) {
			if (cap >= ((size_t)1 << 20)) {
				free(buf);
				fclose(f);
				drv__seterr(err, errlen, "%s '%s' is larger than 1 MiB", what, path);
				return DRV_EINVAL;
			}
			cap *= 2;
			char *nb = drv__realloc(buf, cap + 1);
			if (!nb)
				free(buf);
			buf = nb;
		}
	}
	int rerr = ferror(f);
	fclose(f);
	if (!buf) {
		drv__seterr(err, errlen, "out of memory reading %s '%s'", what, path);
		return DRV_ENOMEM;
	}
	if (rerr || len == 0) {
		free(buf);
		drv__seterr(err, errlen, "%s '%s' is empty or unreadable", what, path);
		return DRV_EINVAL;
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

/*
 * A cheap check that a PEM file holds what its option says, so that a wrong
 * or swapped path gets an error naming the file (gRPC only fails later, with
 * no word on which file). `kind` is "CERTIFICATE" or "PRIVATE KEY".
 */
static inline int drv__rpc_check_pem(const char *what, const char *path, const char *pem, const char *kind,
                                     char *err, size_t errlen)
{
	const char *begin = strstr(pem, "-----BEGIN ");
	int ok;
	if (strcmp(kind, "CERTIFICATE") == 0)
		ok = strstr(pem, "-----BEGIN CERTIFICATE-----") != NULL;
	else
		ok = begin && strstr(begin, "PRIVATE KEY-----") != NULL;
	if (!ok) {
		drv__seterr(err, errlen, "%s '%s' holds no PEM %s", what, path, kind);
		return DRV_EINVAL;
	}
	return 0;
}

#endif

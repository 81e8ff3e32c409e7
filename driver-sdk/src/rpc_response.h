/* Internal: unpacking responses into an arena (rpc_response.c). */
#ifndef DRV_RPC_RESPONSE_H
#define DRV_RPC_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/*
 * Unpacks `len` bytes as a message of type `desc`, in one arena that
 * drv_response_free() releases. NULL when the bytes are not such a message
 * or memory ran out.
 */
ProtobufCMessage *drv__response_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
                                       const uint8_t *data);

#endif

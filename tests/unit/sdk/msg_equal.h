/*
 * Equality of two protobuf-c messages by their descriptors (msg_equal.c), for
 * tests and fuzz targets that hold the SDK's codec to protobuf-c's answer.
 */
#ifndef MSG_EQUAL_H
#define MSG_EQUAL_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Bytes one element of a field of type `t` takes in a message struct. */
size_t pbc_type_size(ProtobufCType t);

/*
 * True when `a` and `b` hold the same values: every field (scalars bitwise,
 * so -0.0 and NaN payloads count; NULL and "" differ), oneof case, has_ flag
 * and unknown field. Otherwise false, and `where` says where the first
 * difference is ("root.sc.db: scalar value"), `root` naming the top.
 */
bool pbc_msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char *root, char *where,
                   size_t wherelen);

#endif

/*
 * Equality of two protobuf-c messages, field by field through their
 * descriptors: the oracle's test of the SDK's codec (test_codec.c) and of its
 * fuzz target (fuzz/fuzz_codec.c) alike.
 */
#include "msg_equal.h"

#include <stdio.h>
#include <string.h>

static const void *member_at(const void *m, unsigned offset)
{
	return (const char *)m + offset;
}

size_t pbc_type_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* Where in a message: built as the comparison descends, printed only on a difference. */
struct path {
	const struct path *up;
	const char *name; /* a field (the type at the root), or NULL for an array index */
	size_t index;
	char *out; /* at the root only: where the difference is described */
	size_t outlen;
};

static void path_render(const struct path *p, char *dst, size_t n)
{
	if (p->up)
		path_render(p->up, dst, n);
	size_t used = strlen(dst);
	if (used + 1 >= n)
		return;
	if (!p->name)
		snprintf(dst + used, n - used, "[%zu]", p->index);
	else
		snprintf(dst + used, n - used, "%s%s", p->up ? "." : "", p->name);
}

static bool note(const struct path *p, const char *what)
{
	const struct path *root = p;
	while (root->up)
		root = root->up;
	root->out[0] = '\0';
	path_render(p, root->out, root->outlen);
	size_t used = strlen(root->out);
	snprintf(root->out + used, root->outlen - used, ": %s", what);
	return false;
}

static bool msg_equal_at(const ProtobufCMessage *a, const ProtobufCMessage *b, const struct path *path);

static bool value_equal(const ProtobufCFieldDescriptor *f, const void *a, const void *b,
                        const struct path *path)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *x, *y;
		memcpy(&x, a, sizeof(x));
		memcpy(&y, b, sizeof(y));
		if (!x || !y)
			return x == y ? true : note(path, x ? "string vs NULL" : "NULL vs string");
		if (strlen(x) != strlen(y))
			return note(path, "string length");
		return strcmp(x, y) == 0 ? true : note(path, "string content");
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *x = a, *y = b;
		if (x->len != y->len)
			return note(path, "bytes length");
		return x->len == 0 || memcmp(x->data, y->data, x->len) == 0 ? true
		                                                            : note(path, "bytes content");
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *x, *y;
		memcpy(&x, a, sizeof(x));
		memcpy(&y, b, sizeof(y));
		if (!x || !y)
			return x == y ? true : note(path, x ? "message vs NULL" : "NULL vs message");
		return msg_equal_at(x, y, path);
	}
	default:
		/* Bitwise, so that -0.0 and NaN payloads count. */
		return memcmp(a, b, pbc_type_size(f->type)) == 0 ? true : note(path, "scalar value");
	}
}

static bool msg_equal_at(const ProtobufCMessage *a, const ProtobufCMessage *b, const struct path *path)
{
	if (a->descriptor != b->descriptor)
		return note(path, "descriptor");
	const ProtobufCMessageDescriptor *d = a->descriptor;
	if (a->n_unknown_fields != b->n_unknown_fields)
		return note(path, "number of unknown fields");
	for (unsigned i = 0; i < a->n_unknown_fields; i++) {
		const ProtobufCMessageUnknownField *x = &a->unknown_fields[i], *y = &b->unknown_fields[i];
		if (x->tag != y->tag || x->wire_type != y->wire_type || x->len != y->len ||
		    (x->len && memcmp(x->data, y->data, x->len) != 0))
			return note(path, "unknown field");
	}
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *fa = member_at(a, f->offset), *fb = member_at(b, f->offset);
		struct path sub = {.up = path, .name = f->name};
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t ca, cb;
			memcpy(&ca, member_at(a, f->quantifier_offset), sizeof(ca));
			memcpy(&cb, member_at(b, f->quantifier_offset), sizeof(cb));
			if (ca != cb)
				return note(&sub, "oneof case");
			if (ca == f->id && !value_equal(f, fa, fb, &sub))
				return false;
		} else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t na, nb, size = pbc_type_size(f->type);
			memcpy(&na, member_at(a, f->quantifier_offset), sizeof(na));
			memcpy(&nb, member_at(b, f->quantifier_offset), sizeof(nb));
			if (na != nb)
				return note(&sub, "array length");
			const char *xa, *xb;
			memcpy(&xa, fa, sizeof(xa));
			memcpy(&xb, fb, sizeof(xb));
			for (size_t k = 0; k < na; k++) {
				struct path elem = {.up = &sub, .index = k};
				if (!value_equal(f, xa + k * size, xb + k * size, &elem))
					return false;
			}
		} else {
			if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
			    f->type != PROTOBUF_C_TYPE_MESSAGE) {
				protobuf_c_boolean ha, hb;
				memcpy(&ha, member_at(a, f->quantifier_offset), sizeof(ha));
				memcpy(&hb, member_at(b, f->quantifier_offset), sizeof(hb));
				if (ha != hb)
					return note(&sub, "has_ flag");
			}
			/* Even without has_, the value is the default protobuf-c leaves. */
			if (!value_equal(f, fa, fb, &sub))
				return false;
		}
	}
	return true;
}

bool pbc_msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char *root, char *where,
                   size_t wherelen)
{
	struct path top = {.name = root, .out = where, .outlen = wherelen};
	where[0] = '\0';
	return msg_equal_at(a, b, &top);
}

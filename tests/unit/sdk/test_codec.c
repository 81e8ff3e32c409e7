/*
 * Differential tests of codec.c against protobuf-c 1.4.1, the oracle.
 *
 * Random messages of every type drover's services reach (plus two test-only
 * protos that use every field type, label and proto2 default) are packed and
 * unpacked by both; then mutants of valid encodings (truncated, flipped,
 * duplicated fields, non-canonical varints, wrong wire types, groups, tag 0)
 * are unpacked by both. Whenever the codec does not decline, its answer must be
 * protobuf-c's exactly. The generator, the walk and the comparisons are driven
 * by the descriptors only, so a new field in the protocol is covered without
 * touching this file.
 *
 * Deterministic: DROVER_CODEC_SEED=<n> picks another seed; every failure prints
 * the seed, the test, the message type and the iteration. DROVER_CODEC_TEST=
 * <glob> runs only some tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "codec_test2.pb-c.h"
#include "codec_test3.pb-c.h"
#include "msg_equal.h"
#include "drover/api/v1/api.pb-c.h"
#include "drover/compute/v1/compute.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

enum {
	MAX_DEPTH = 5,
	MAX_TYPES = 512,
	MAX_RECS = 4096,
};

/* Where we are, printed with every failure. */

static uint64_t seed = 0x6c8e9cf570932bd5u;
static const char *cur_test = "";
static const ProtobufCMessageDescriptor *cur_type;
static unsigned cur_iter;
static const char *cur_what = "";

/* All of `b` when short, else a window around offset `around`. */
static void dump(const char *what, const uint8_t *b, size_t n, size_t around)
{
	size_t from = n <= 2048 ? 0 : around > 512 ? around - 512 : 0, to = n < from + 2048 ? n : from + 2048;
	fprintf(stderr, "  %s (%zu bytes), [%zu..%zu):", what, n, from, to);
	for (size_t i = from; i < to; i++)
		fprintf(stderr, "%s%02x", i % 32 == 0 ? "\n    " : " ", b[i]);
	fputc('\n', stderr);
}

static void report_context(void);

#define CHECK_FAIL(...)                                                                                      \
	do {                                                                                                 \
		report_context();                                                                            \
		fprintf(stderr, "  " __VA_ARGS__);                                                           \
		fputc('\n', stderr);                                                                         \
		fail();                                                                                      \
	} while (0)

static void report_context(void)
{
	fprintf(stderr, "codec mismatch: seed=%llu (DROVER_CODEC_SEED) test=%s type=%s iter=%u input=%s\n",
	        (unsigned long long)seed, cur_test, cur_type ? cur_type->name : "-", cur_iter, cur_what);
}

/* Deterministic PRNG (splitmix64). */

static uint64_t rng;

static void rng_seed(uint64_t test, uint64_t type)
{
	rng = seed ^ (test * 0x9e3779b97f4a7c15u) ^ (type * 0xc2b2ae3d27d4eb4fu);
}

static uint64_t next(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? next() % n : 0;
}

static bool chance(unsigned pct)
{
	return below(100) < pct;
}

/*
 * A pool allocator: frees everything at once, like an arena.
 *
 * Each block is its own malloc so that ASan puts a redzone after every string,
 * array and message the codec allocates; blocks come back filled with 0xa5 so
 * that a codec relying on zeroed memory shows up in the comparison.
 */
struct pool {
	void **blocks;
	size_t n, cap;
	long fail_after; /* allocations left before they fail; -1: never */
	ProtobufCAllocator alloc;
};

static void *pool_alloc(void *data, size_t size)
{
	struct pool *p = data;
	if (p->fail_after == 0)
		return NULL;
	if (p->fail_after > 0)
		p->fail_after--;
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		void **b = realloc(p->blocks, cap * sizeof(*b));
		if (!b)
			return NULL;
		p->blocks = b;
		p->cap = cap;
	}
	void *m = malloc(size ? size : 1);
	if (!m)
		return NULL;
	memset(m, 0xa5, size);
	p->blocks[p->n++] = m;
	return m;
}

static void pool_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr;
}

static void pool_init(struct pool *p)
{
	*p = (struct pool){.fail_after = -1,
	                   .alloc = {.alloc = pool_alloc, .free = pool_free, .allocator_data = p}};
}

static void pool_release(struct pool *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->blocks[i]);
	free(p->blocks);
	p->blocks = NULL;
	p->n = p->cap = 0;
}

/* A growable byte buffer and wire-format writers. */

struct buf {
	uint8_t *b;
	size_t n, cap;
};

static void put(struct buf *x, const void *p, size_t n)
{
	if (x->n + n > x->cap) {
		size_t cap = x->cap ? x->cap : 256;
		while (cap < x->n + n)
			cap *= 2;
		x->b = realloc(x->b, cap);
		assert_non_null(x->b);
		x->cap = cap;
	}
	if (n)
		memcpy(x->b + x->n, p, n);
	x->n += n;
}

static void put_byte(struct buf *x, uint8_t c)
{
	put(x, &c, 1);
}

/* `v` in exactly `width` bytes: wider than needed is a non-canonical varint. */
static void put_varint_wide(struct buf *x, uint64_t v, unsigned width)
{
	for (unsigned i = 0; i < width; i++) {
		uint8_t c = v & 0x7f;
		v >>= 7;
		put_byte(x, i + 1 < width ? c | 0x80 : c);
	}
}

static unsigned varint_width(uint64_t v)
{
	unsigned w = 1;
	while (v >= 0x80) {
		v >>= 7;
		w++;
	}
	return w;
}

static void put_varint(struct buf *x, uint64_t v)
{
	put_varint_wide(x, v, varint_width(v));
}

static void put_tag(struct buf *x, uint64_t field, unsigned wt)
{
	put_varint(x, field << 3 | wt);
}

static void buf_free(struct buf *x)
{
	free(x->b);
	*x = (struct buf){0};
}

/* Descriptor helpers. */

/* The wire type of one element of a field of type `t`. */
static unsigned wire_type(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return 5;
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 1;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return 2;
	default:
		return 0;
	}
}

static void *member_at(const void *m, unsigned offset)
{
	return (char *)m + offset;
}

static const ProtobufCFieldDescriptor *field_by_id(const ProtobufCMessageDescriptor *d, uint32_t id)
{
	for (unsigned i = 0; i < d->n_fields; i++)
		if (d->fields[i].id == id)
			return &d->fields[i];
	return NULL;
}

/* The types under test. */

static const ProtobufCMessageDescriptor *types[MAX_TYPES];
static size_t n_types, n_drover_types;

static void walk(const ProtobufCMessageDescriptor *d)
{
	for (size_t i = 0; i < n_types; i++)
		if (types[i] == d)
			return;
	assert_true(n_types < MAX_TYPES);
	types[n_types++] = d;
	for (unsigned i = 0; i < d->n_fields; i++)
		if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
			walk(d->fields[i].descriptor);
}

static void walk_service(const ProtobufCServiceDescriptor *s)
{
	for (unsigned i = 0; i < s->n_methods; i++) {
		walk(s->methods[i].input);
		walk(s->methods[i].output);
	}
}

static int setup_types(void **state)
{
	(void)state;
	if (n_types)
		return 0;
	walk_service(&drover__compute__v1__compute__descriptor);
	walk_service(&drover__api__v1__drover__descriptor);
	walk_service(&grpc__health__v1__health__descriptor);
	n_drover_types = n_types;
	walk_service(&drover__codectest__codec_test__descriptor);
	walk_service(&drover__codectest2__codec_test2__descriptor);
	return 0;
}

/* Random values, edge cases first. */

static bool gen_plain;    /* no NULL strings, no default pointers, bools 0/1 */
static size_t gen_budget; /* bytes of strings and arrays left for this message */

/* How often the generator made each edge case, so that it cannot silently stop. */
static struct {
	unsigned long huge_strings, empty_strings, null_strings, default_strings;
	unsigned long null_messages, empty_messages, long_arrays, empty_arrays;
} seen;

static void *gen_alloc(struct pool *p, size_t size)
{
	gen_budget = gen_budget > size ? gen_budget - size : 0;
	void *m = pool_alloc(p, size);
	assert_non_null(m);
	return m;
}

/* A magnitude of uniformly random bit length, so small and huge are as likely. */
static uint64_t rand_bits(void)
{
	unsigned bits = (unsigned)below(65);
	return bits ? next() >> (64 - bits) : 0;
}

static uint32_t gen_u32(bool is_signed)
{
	static const uint32_t edge[] = {0,          1,          127,        128,        16383,
	                                16384,      0x0fffffff, 0x10000000, 0x7fffffff, 0x80000000,
	                                0xffffffff, 0xfffffffe, 0x80000001, 0xffffff80, 0xffffff7f};
	if (chance(40))
		return edge[below(sizeof(edge) / sizeof(edge[0]))];
	uint32_t v = (uint32_t)rand_bits();
	return is_signed && chance(50) ? 0u - v : v;
}

static uint64_t gen_u64(bool is_signed)
{
	static const uint64_t edge[] = {0,
	                                1,
	                                127,
	                                128,
	                                0xffffffffu,
	                                0x100000000u,
	                                0x7fffffffffffffffu,
	                                0x8000000000000000u,
	                                0xffffffffffffffffu,
	                                0xffffffff80000000u, /* INT32_MIN widened */
	                                0x00ffffffffffffffu,
	                                0x0100000000000000u};
	if (chance(40))
		return edge[below(sizeof(edge) / sizeof(edge[0]))];
	uint64_t v = rand_bits();
	return is_signed && chance(50) ? 0u - v : v;
}

static uint32_t gen_float_bits(void)
{
	static const uint32_t edge[] = {0x00000000,
	                                0x80000000 /* -0.0 */,
	                                0x3f800000,
	                                0xbf800000,
	                                0x7f800000,
	                                0xff800000,
	                                0x7fc00000,
	                                0xffc00000,
	                                0x7fa00001 /* signalling NaN */,
	                                0x00000001,
	                                0x807fffff,
	                                0x7f7fffff};
	if (chance(50))
		return edge[below(sizeof(edge) / sizeof(edge[0]))];
	return (uint32_t)next();
}

static uint64_t gen_double_bits(void)
{
	static const uint64_t edge[] = {0,
	                                0x8000000000000000u, /* -0.0 */
	                                0x3ff0000000000000u,
	                                0xbff8000000000000u,
	                                0x7ff0000000000000u,
	                                0xfff0000000000000u,
	                                0x7ff8000000000000u,
	                                0x7ff4000000000001u, /* signalling NaN */
	                                0x0000000000000001u,
	                                0x7fefffffffffffffu};
	if (chance(50))
		return edge[below(sizeof(edge) / sizeof(edge[0]))];
	return next();
}

/* Lengths that make 1-, 2- and 3-byte length prefixes. */
static size_t gen_len(void)
{
	unsigned r = (unsigned)below(1000);
	size_t n;
	if (r < 200)
		n = 0;
	else if (r < 750)
		n = 1 + below(20);
	else if (r < 900)
		n = 100 + below(60);
	else if (r < 985)
		n = 128 + below(2000);
	else
		n = 16370 + below(100);
	if (n > gen_budget)
		n = below(8);
	return n;
}

static char *gen_string(struct pool *p)
{
	size_t n = gen_len();
	char *s = gen_alloc(p, n + 1);
	bool ascii = chance(50);
	for (size_t i = 0; i < n; i++)
		s[i] = ascii ? (char)(' ' + below(95)) : (char)(1 + below(255));
	s[n] = '\0';
	seen.huge_strings += n > 16383;
	seen.empty_strings += n == 0;
	return s;
}

static void gen_bytes(struct pool *p, ProtobufCBinaryData *bd)
{
	bd->len = gen_len();
	bd->data = bd->len || chance(50) ? gen_alloc(p, bd->len) : NULL;
	for (size_t i = 0; i < bd->len; i++)
		bd->data[i] = (uint8_t)next();
}

static ProtobufCMessage *gen_message(struct pool *p, const ProtobufCMessageDescriptor *d, unsigned depth);

static ProtobufCMessage *gen_submessage(struct pool *p, const ProtobufCFieldDescriptor *f, unsigned depth,
                                        bool nullable)
{
	const ProtobufCMessageDescriptor *sub = f->descriptor;
	if (nullable && (depth >= MAX_DEPTH || gen_budget == 0 || chance(30))) {
		seen.null_messages++;
		return NULL;
	}
	if (chance(10) || depth >= MAX_DEPTH) {
		seen.empty_messages++;
		ProtobufCMessage *m = gen_alloc(p, sub->sizeof_message);
		sub->message_init(m);
		return m;
	}
	return gen_message(p, sub, depth + 1);
}

/*
 * One value of field `f` at `dst`. `nullable`: a string or message may be
 * left NULL (or, for a string, point at the field's default, which protobuf-c
 * does not pack for an optional or oneof field).
 */
static void gen_value(struct pool *p, const ProtobufCFieldDescriptor *f, void *dst, unsigned depth,
                      bool nullable)
{
	uint32_t u32;
	uint64_t u64;
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		u32 = gen_u32(true);
		memcpy(dst, &u32, 4);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		u32 = gen_u32(false);
		memcpy(dst, &u32, 4);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		u64 = gen_u64(true);
		memcpy(dst, &u64, 8);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		u64 = gen_u64(false);
		memcpy(dst, &u64, 8);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		u32 = gen_float_bits();
		memcpy(dst, &u32, 4);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		u64 = gen_double_bits();
		memcpy(dst, &u64, 8);
		break;
	case PROTOBUF_C_TYPE_BOOL: {
		/* Any non-zero int is true in C; protobuf-c packs it as 1. */
		protobuf_c_boolean b = chance(50) ? 0 : !gen_plain && chance(10) ? 2 : 1;
		memcpy(dst, &b, sizeof(b));
		break;
	}
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *e = f->descriptor;
		int32_t v =
		    chance(85) && e->n_values ? e->values[below(e->n_values)].value : (int32_t)gen_u32(true);
		memcpy(dst, &v, 4);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		char *s = NULL;
		unsigned r = (unsigned)below(100);
		if (nullable && !gen_plain && r < 8) {
			s = NULL;
			seen.null_strings++;
		} else if (nullable && !gen_plain && r < 16 && f->default_value) {
			s = (char *)f->default_value;
			seen.default_strings++;
		} else {
			s = gen_string(p);
		}
		memcpy(dst, &s, sizeof(s));
		break;
	}
	case PROTOBUF_C_TYPE_BYTES:
		gen_bytes(p, dst);
		break;
	case PROTOBUF_C_TYPE_MESSAGE: {
		ProtobufCMessage *m = gen_submessage(p, f, depth, nullable);
		memcpy(dst, &m, sizeof(m));
		break;
	}
	}
}

static size_t gen_count(const ProtobufCFieldDescriptor *f, unsigned depth)
{
	bool msg = f->type == PROTOBUF_C_TYPE_MESSAGE;
	if (msg && depth >= MAX_DEPTH)
		return 0;
	if (gen_budget < 64)
		return below(2);
	unsigned r = (unsigned)below(100);
	if (r < 30)
		return 0;
	if (r < 80)
		return 1 + below(4);
	if (r < 95 || msg)
		return 5 + below(msg ? 6 : 30);
	return 100 + below(200);
}

static void gen_field(struct pool *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, unsigned depth)
{
	void *dst = member_at(m, f->offset);
	switch (f->label) {
	case PROTOBUF_C_LABEL_REPEATED: {
		size_t n = gen_count(f, depth), size = pbc_type_size(f->type);
		seen.long_arrays += n >= 100;
		seen.empty_arrays += n == 0;
		char *arr = n || chance(50) ? gen_alloc(p, n * size) : NULL;
		for (size_t i = 0; i < n; i++)
			gen_value(p, f, arr + i * size, depth, false);
		memcpy(member_at(m, f->quantifier_offset), &n, sizeof(n));
		memcpy(dst, &arr, sizeof(arr));
		break;
	}
	case PROTOBUF_C_LABEL_OPTIONAL:
		if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
			if (chance(70))
				gen_value(p, f, dst, depth, true);
		} else {
			protobuf_c_boolean has = chance(60);
			memcpy(member_at(m, f->quantifier_offset), &has, sizeof(has));
			/* A value without its has_ flag is not packed either. */
			if (has || chance(20))
				gen_value(p, f, dst, depth, true);
		}
		break;
	case PROTOBUF_C_LABEL_NONE:
		gen_value(p, f, dst, depth, true);
		break;
	case PROTOBUF_C_LABEL_REQUIRED:
		gen_value(p, f, dst, depth, false);
		break;
	}
}

static ProtobufCMessage *gen_message(struct pool *p, const ProtobufCMessageDescriptor *d, unsigned depth)
{
	ProtobufCMessage *m = gen_alloc(p, d->sizeof_message);
	d->message_init(m);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
			gen_field(p, m, f, depth);
			continue;
		}
		/* A oneof: at its first member, pick one member or none. */
		bool first = true;
		for (unsigned j = 0; j < i; j++)
			if ((d->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    d->fields[j].quantifier_offset == f->quantifier_offset)
				first = false;
		if (!first)
			continue;
		const ProtobufCFieldDescriptor *members[64];
		unsigned n = 0;
		for (unsigned j = i; j < d->n_fields && n < 64; j++)
			if ((d->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    d->fields[j].quantifier_offset == f->quantifier_offset)
				members[n++] = &d->fields[j];
		unsigned pick = (unsigned)below(n + 1);
		if (pick == n)
			continue;
		uint32_t which = members[pick]->id;
		memcpy(member_at(m, f->quantifier_offset), &which, sizeof(which));
		/* Plain: no case set over a NULL string or message. */
		gen_value(p, members[pick], member_at(m, members[pick]->offset), depth, !gen_plain);
	}
	return m;
}

static ProtobufCMessage *gen_root(struct pool *p, const ProtobufCMessageDescriptor *d)
{
	gen_budget = chance(10) ? 120000 : 6000;
	return gen_message(p, d, 0);
}

/* Comparisons. */

/* The offset of the first difference, or SIZE_MAX when equal. */
static size_t bytes_diff(const uint8_t *want, size_t want_len, const uint8_t *got, size_t got_len)
{
	size_t n = want_len < got_len ? want_len : got_len;
	for (size_t i = 0; i < n; i++)
		if (want[i] != got[i])
			return i;
	return want_len == got_len ? SIZE_MAX : n;
}

static char diff_path[1024]; /* where the last msg_equal() found a difference */

/* Field by field by the descriptor (msg_equal.c); on a difference, diff_path says where. */
static bool msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char *root)
{
	return pbc_msg_equal(a, b, root, diff_path, sizeof(diff_path));
}

static uint8_t *pbc_pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len ? *len : 1);
	assert_non_null(b);
	size_t n = protobuf_c_message_pack(m, b);
	assert_int_equal(n, *len);
	return b;
}

/* The two checks. */

/* Every call into the codec, and those it did not decline. */
static struct {
	uint64_t packs, packs_taken, unpacks, unpacks_taken;
} calls;

static void compare_pack(const ProtobufCMessage *m, const char *how, const uint8_t *want, size_t want_len,
                         const uint8_t *got, size_t len)
{
	size_t at = bytes_diff(want, want_len, got, len);
	if (at != SIZE_MAX) {
		report_context();
		fprintf(stderr, "  %s of %s differs from protobuf-c's at byte %zu\n", how,
		        m->descriptor->name, at);
		dump("protobuf-c", want, want_len, at);
		dump("codec", got, len, at);
		fail();
	}
}

/*
 * Packs `m` with protobuf-c, drv__codec_pack() and drv__codec_pack_buf() (into
 * a buffer too small, just right or larger); true if drv__codec_pack() did
 * not decline. Whatever the codec did not decline must match.
 */
static bool check_pack(const ProtobufCMessage *m)
{
	size_t want_len;
	uint8_t *want = pbc_pack(m, &want_len);
	uint8_t *start = NULL;
	size_t len = 0;
	uint8_t *block = drv__codec_pack(m, &start, &len);
	calls.packs++;
	if (block) {
		calls.packs_taken++;
		compare_pack(m, "drv__codec_pack", want, want_len, start, len);
		free(block);
	}

	size_t caps[] = {0, 1, want_len ? want_len - 1 : 0, want_len, want_len + 1 + below(64), 65536};
	size_t cap = caps[below(sizeof(caps) / sizeof(caps[0]))];
	/* Exactly `cap` bytes, so that ASan sees a write outside them. */
	uint8_t *buf = malloc(cap ? cap : 1), *bstart = NULL;
	assert_non_null(buf);
	bool give_buf = cap || chance(50);
	size_t blen = 0;
	uint8_t *got = drv__codec_pack_buf(m, give_buf ? buf : NULL, cap, &bstart, &blen);
	calls.packs++;
	if (got) {
		calls.packs_taken++;
		if (got == buf && (bstart < buf || blen > cap || (size_t)(bstart - buf) > cap - blen))
			CHECK_FAIL(
			    "drv__codec_pack_buf's %zu bytes at +%td are not inside the %zu-byte buffer",
			    blen, bstart - buf, cap);
		compare_pack(m, "drv__codec_pack_buf", want, want_len, bstart, blen);
		if (got != buf)
			free(got);
	}
	free(buf);
	free(want);
	return block != NULL;
}

/*
 * Unpacks `data` both ways; true if the codec did not decline (and then
 * matched). `canonical`: the bytes are protobuf-c's own packing, so that
 * packing the codec's struct must give them back exactly.
 */
static long unpack_alloc_limit = -1; /* the codec's allocations that succeed */
static bool force_split; /* always give drv__codec_unpack_split() a second arena (and save time) */

static bool check_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, bool canonical)
{
	ProtobufCMessage *ref = protobuf_c_message_unpack(d, NULL, len, data);
	struct pool pool;
	pool_init(&pool);
	ProtobufCMessage *msg = pool_alloc(&pool, d->sizeof_message);
	assert_non_null(msg);
	pool.fail_after = unpack_alloc_limit;
	/* Half the time with a second arena, so a long repeated field may be split. */
	struct pool pool2;
	pool_init(&pool2);
	pool2.fail_after = unpack_alloc_limit;
	bool split = force_split || chance(50);
	bool ok = split ? drv__codec_unpack_split(d, msg, &pool.alloc, &pool2.alloc, len, data)
	                : drv__codec_unpack(d, msg, &pool.alloc, len, data);
	calls.unpacks++;
	calls.unpacks_taken += ok;
	if (ok) {
		if (!ref) {
			report_context();
			fprintf(stderr, "  codec unpacked %s from bytes protobuf-c rejects\n", d->name);
			dump("input", data, len, 0);
			fail();
		}
		diff_path[0] = '\0';
		if (!msg_equal(ref, msg, d->name)) {
			report_context();
			fprintf(stderr, "  codec's unpack differs from protobuf-c's at %s\n", diff_path);
			dump("input", data, len, 0);
			fail();
		}
		size_t again_len, ref_len;
		uint8_t *again = pbc_pack(msg, &again_len), *ref_bytes = pbc_pack(ref, &ref_len);
		const uint8_t *want = canonical ? data : ref_bytes;
		size_t want_len = canonical ? len : ref_len,
		       at = bytes_diff(want, want_len, again, again_len);
		if (at != SIZE_MAX) {
			report_context();
			fprintf(stderr, "  codec's unpack of %s packs differently, at byte %zu\n", d->name,
			        at);
			dump(canonical ? "input" : "protobuf-c's unpack, packed", want, want_len, at);
			dump("codec's unpack, packed", again, again_len, at);
			fail();
		}
		free(again);
		free(ref_bytes);
		/* The codec packs its own result like protobuf-c too. */
		if (!force_split)
			check_pack(msg);
	}
	/* protobuf-c's result may carry unknown fields or merged duplicates. */
	if (ref && !canonical && !force_split)
		check_pack(ref);
	if (ref)
		protobuf_c_message_free_unpacked(ref, NULL);
	pool_release(&pool);
	pool_release(&pool2);
	return ok;
}

/* Tests: the walk, random valid messages. */

static void test_walk_covers_everything(void **state)
{
	(void)state;
	/* drover's own protocol: a reasonable number of types, so no vacuous pass. */
	print_message("codec: %zu types from drover's services, %zu in all\n", n_drover_types, n_types);
	assert_true(n_drover_types >= 20);
	/* With the test protos, every field type, label and oneof is generated. */
	unsigned seen_types = 0, seen_labels = 0;
	bool oneof = false, has_default = false;
	for (size_t i = 0; i < n_types; i++)
		for (unsigned j = 0; j < types[i]->n_fields; j++) {
			const ProtobufCFieldDescriptor *f = &types[i]->fields[j];
			seen_types |= 1u << f->type;
			seen_labels |= 1u << f->label;
			oneof |= (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0;
			has_default |= f->label == PROTOBUF_C_LABEL_OPTIONAL && f->default_value != NULL;
		}
	assert_int_equal(seen_types, (1u << (PROTOBUF_C_TYPE_MESSAGE + 1)) - 1);
	assert_int_equal(seen_labels, (1u << PROTOBUF_C_LABEL_REQUIRED) | (1u << PROTOBUF_C_LABEL_OPTIONAL) |
	                                  (1u << PROTOBUF_C_LABEL_REPEATED) | (1u << PROTOBUF_C_LABEL_NONE));
	assert_true(oneof);
	assert_true(has_default);
}

enum { RANDOM_ITERS = 120 };

static void test_pack_random(void **state)
{
	(void)state;
	cur_test = "pack_random";
	cur_what = "random message";
	memset(&seen, 0, sizeof(seen));
	for (size_t t = 0; t < n_types; t++) {
		cur_type = types[t];
		rng_seed(1, t);
		for (cur_iter = 0; cur_iter < RANDOM_ITERS; cur_iter++) {
			struct pool p;
			pool_init(&p);
			check_pack(gen_root(&p, types[t]));
			pool_release(&p);
		}
	}
	print_message(
	    "codec: generated %lu strings > 16383 bytes, %lu empty, %lu NULL, %lu at the default; %lu NULL "
	    "and %lu empty sub-messages; %lu arrays >= 100, %lu empty\n",
	    seen.huge_strings, seen.empty_strings, seen.null_strings, seen.default_strings,
	    seen.null_messages, seen.empty_messages, seen.long_arrays, seen.empty_arrays);
	assert_true(seen.huge_strings > 0 && seen.empty_strings > 0 && seen.null_strings > 0);
	assert_true(seen.default_strings > 0 && seen.null_messages > 0 && seen.empty_messages > 0);
	assert_true(seen.long_arrays > 0 && seen.empty_arrays > 0);
}

static void test_unpack_random(void **state)
{
	(void)state;
	cur_test = "unpack_random";
	cur_what = "protobuf-c's packing of a random message";
	for (size_t t = 0; t < n_types; t++) {
		cur_type = types[t];
		rng_seed(2, t);
		for (cur_iter = 0; cur_iter < RANDOM_ITERS; cur_iter++) {
			struct pool p;
			pool_init(&p);
			size_t len;
			uint8_t *b = pbc_pack(gen_root(&p, types[t]), &len);
			check_unpack(types[t], b, len, true);
			free(b);
			pool_release(&p);
		}
	}
}

/* Out of memory at every allocation in turn: decline or be right, never crash. */
static void test_unpack_out_of_memory(void **state)
{
	(void)state;
	cur_test = "unpack_out_of_memory";
	cur_what = "protobuf-c's packing of a random message, allocations failing";
	for (size_t t = 0; t < n_types; t++) {
		cur_type = types[t];
		rng_seed(5, t);
		for (cur_iter = 0; cur_iter < 6; cur_iter++) {
			struct pool p;
			pool_init(&p);
			size_t len;
			uint8_t *b = pbc_pack(gen_root(&p, types[t]), &len);
			for (unpack_alloc_limit = 0; unpack_alloc_limit < 12; unpack_alloc_limit++)
				check_unpack(types[t], b, len, true);
			unpack_alloc_limit = -1;
			free(b);
			pool_release(&p);
		}
	}
}

/* Tests: mutants of valid encodings. */

/*
 * Where a mutant goes: straight to check_unpack of the root type, or first
 * wrapped back, as a new length-delimited payload, into the parent message it
 * was cut from (so that nested messages are mutated too).
 */
struct sink {
	const struct sink *parent;
	const ProtobufCMessageDescriptor *desc;
	const uint8_t *pre, *post;
	size_t npre, npost;
	uint32_t field;
};

static unsigned n_mutants;

static void emit(const struct sink *s, const char *what, const uint8_t *b, size_t n)
{
	if (!s->parent) {
		cur_what = what;
		n_mutants++;
		check_unpack(s->desc, b, n, false);
		return;
	}
	struct buf x = {0};
	put(&x, s->pre, s->npre);
	put_tag(&x, s->field, 2);
	put_varint(&x, n);
	put(&x, b, n);
	put(&x, s->post, s->npost);
	emit(s->parent, what, x.b, x.n);
	buf_free(&x);
}

struct rec {
	uint64_t tag;
	size_t start, tend, end; /* the whole record; where its tag ends */
	size_t pstart, pend;     /* the varint, the fixed bytes or the delimited content */
};

static bool read_varint(const uint8_t *b, size_t n, size_t *pos, uint64_t *v)
{
	*v = 0;
	for (unsigned i = 0; i < 10 && *pos < n; i++) {
		uint8_t c = b[(*pos)++];
		*v |= (uint64_t)(c & 0x7f) << (7 * i);
		if (!(c & 0x80))
			return true;
	}
	return false;
}

/* Splits a valid encoding into (at most `max` of) its top-level records; SIZE_MAX if malformed. */
static size_t parse_records(const uint8_t *b, size_t n, struct rec *r, size_t max)
{
	size_t pos = 0, k = 0;
	while (pos < n) {
		if (k == max)
			return k; /* the rest is left out of the structural mutants */
		r[k].start = pos;
		uint64_t len;
		if (!read_varint(b, n, &pos, &r[k].tag))
			return SIZE_MAX;
		r[k].pstart = r[k].tend = pos;
		switch (r[k].tag & 7) {
		case 0:
			if (!read_varint(b, n, &pos, &len))
				return SIZE_MAX;
			break;
		case 1:
			pos += 8;
			break;
		case 5:
			pos += 4;
			break;
		case 2:
			if (!read_varint(b, n, &pos, &len) || len > n - pos)
				return SIZE_MAX;
			r[k].pstart = pos;
			pos += len;
			break;
		default:
			return SIZE_MAX;
		}
		if (pos > n)
			return SIZE_MAX;
		r[k].pend = r[k].end = pos;
		k++;
	}
	return k;
}

/* `b` with record `r` replaced by `with`. */
static void emit_replaced(const struct sink *s, const char *what, const uint8_t *b, size_t n,
                          const struct rec *r, const struct buf *with)
{
	struct buf x = {0};
	put(&x, b, r->start);
	put(&x, with->b, with->n);
	put(&x, b + r->end, n - r->end);
	emit(s, what, x.b, x.n);
	buf_free(&x);
}

/* A plausible payload of wire type `wt` (groups get none). */
static void put_payload(struct buf *x, unsigned wt)
{
	static const uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	switch (wt) {
	case 0:
		put_varint(x, 1);
		break;
	case 1:
		put(x, junk, 8);
		break;
	case 2:
		put_varint(x, 3);
		put(x, junk, 3);
		break;
	case 5:
		put(x, junk, 4);
		break;
	}
}

/* Encoding of a message of type `d` with only field `f` set (nothing if it packs empty). */
static void single_field(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
                         struct buf *out)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		struct pool p;
		pool_init(&p);
		gen_budget = 4000;
		ProtobufCMessage *m = gen_alloc(&p, d->sizeof_message);
		d->message_init(m);
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t which = f->id;
			memcpy(member_at(m, f->quantifier_offset), &which, sizeof(which));
			gen_value(&p, f, member_at(m, f->offset), 1, false);
		} else {
			gen_field(&p, m, f, 1);
		}
		size_t len;
		uint8_t *b = pbc_pack(m, &len);
		out->n = 0;
		put(out, b, len);
		free(b);
		pool_release(&p);
		if (len)
			return;
	}
}

static bool packable(const ProtobufCFieldDescriptor *f)
{
	return f && f->label == PROTOBUF_C_LABEL_REPEATED && wire_type(f->type) != 2;
}

static void mutate(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n, const struct sink *s,
                   unsigned depth);

/* Structural mutants of record `r` of `b`, a valid encoding of a `d`. */
static void mutate_record(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n,
                          const struct rec *r, const struct rec *all, size_t n_recs, const struct sink *s,
                          unsigned depth)
{
	uint32_t fid = (uint32_t)(r->tag >> 3);
	unsigned wt = r->tag & 7;
	const ProtobufCFieldDescriptor *f = field_by_id(d, fid);
	size_t plen = r->pend - r->pstart;
	struct buf x = {0};

	/* Overlong tags; protobuf-c reads tags of up to 5 bytes. */
	for (unsigned extra = 1; extra <= 4; extra++) {
		x.n = 0;
		put_varint_wide(&x, r->tag, varint_width(r->tag) + extra);
		put(&x, b + r->tend, r->end - r->tend);
		emit_replaced(s, "overlong tag", b, n, r, &x);
	}

	if (wt == 0) {
		/* Non-canonical varints (0 as 80 00, 10 bytes) and an 11-byte one. */
		size_t pos = r->pstart;
		uint64_t v;
		assert_true(read_varint(b, n, &pos, &v));
		unsigned widths[] = {varint_width(v) + 1, 10, 11};
		for (unsigned i = 0; i < 3; i++) {
			x.n = 0;
			put(&x, b + r->start, r->tend - r->start);
			put_varint_wide(&x, v, widths[i]);
			emit_replaced(s, widths[i] == 11 ? "11-byte varint" : "overlong varint", b, n, r, &x);
		}
		/*
		 * Other canonical values, which a 32-bit or bool field must cut
		 * or test as protobuf-c does (128 is a true bool; 2^32 an int32 0).
		 */
		static const uint64_t values[] = {0,
		                                  1,
		                                  2,
		                                  127,
		                                  128,
		                                  0x7fffffff,
		                                  0x80000000,
		                                  0xffffffff,
		                                  0x100000000,
		                                  0x7fffffffffffffff,
		                                  0x8000000000000000,
		                                  UINT64_MAX,
		                                  0xffffffff80000000};
		for (unsigned i = 0; i < 4; i++) {
			x.n = 0;
			put(&x, b + r->start, r->tend - r->start);
			put_varint(&x, values[below(sizeof(values) / sizeof(values[0]))]);
			emit_replaced(s, "another varint value", b, n, r, &x);
		}
	}

	if (wt == 2) {
		/* Overlong length prefixes, lengths off by one, and huge ones. */
		unsigned width = varint_width(plen);
		unsigned widths[] = {width + 1, width + 2, 10};
		for (unsigned i = 0; i < 3; i++) {
			x.n = 0;
			put(&x, b + r->start, r->tend - r->start);
			put_varint_wide(&x, plen, widths[i]);
			put(&x, b + r->pstart, plen);
			emit_replaced(s, "overlong length prefix", b, n, r, &x);
		}
		uint64_t lens[] = {plen + 1, plen ? plen - 1 : 1, 0xffffffffu, 0x7fffffffffffffffu,
		                   UINT64_MAX};
		for (unsigned i = 0; i < 5; i++) {
			x.n = 0;
			put(&x, b + r->start, r->tend - r->start);
			put_varint(&x, lens[i]);
			put(&x, b + r->pstart, plen);
			emit_replaced(s, "wrong length prefix", b, n, r, &x);
		}
	}

	/* The field number with every other wire type, groups included. */
	for (unsigned other = 0; other < 6; other++) {
		if (other == wt)
			continue;
		x.n = 0;
		put_tag(&x, fid, other);
		put_payload(&x, other);
		if (other == 3)
			put_tag(&x, fid, 4);
		emit_replaced(s, "wrong wire type", b, n, r, &x);
	}

	if (packable(f) && wt == 2) {
		/* Packed elements given one by one, and packed with a short length. */
		unsigned ewt = wire_type(f->type);
		size_t pos = r->pstart;
		x.n = 0;
		while (pos < r->pend) {
			size_t from = pos;
			uint64_t v;
			if (ewt == 0)
				assert_true(read_varint(b, r->pend, &pos, &v));
			else
				pos += ewt == 5 ? 4 : 8;
			if (pos > r->pend)
				break;
			put_tag(&x, fid, ewt);
			put(&x, b + from, pos - from);
		}
		emit_replaced(s, "packed field unpacked", b, n, r, &x);
		if (plen) {
			x.n = 0;
			put(&x, b + r->start, r->tend - r->start);
			put_varint(&x, plen - 1);
			put(&x, b + r->pstart, plen - 1);
			emit_replaced(s, "packed field cut short", b, n, r, &x);
		}
	}
	bool first_of_field = true;
	for (const struct rec *q = all; q < r; q++)
		first_of_field &= (q->tag >> 3) != fid;
	if (packable(f) && wt != 2 && first_of_field) {
		/* Unpacked elements of every packable field put into one packed record. */
		x.n = 0;
		struct buf content = {0};
		for (size_t k = 0; k < n_recs; k++)
			if ((all[k].tag >> 3) == fid && (all[k].tag & 7) != 2)
				put(&content, b + all[k].pstart, all[k].pend - all[k].pstart);
		put(&x, b, r->start);
		put_tag(&x, fid, 2);
		put_varint(&x, content.n);
		put(&x, content.b, content.n);
		for (size_t k = (size_t)(r - all) + 1; k < n_recs; k++)
			if ((all[k].tag >> 3) != fid)
				put(&x, b + all[k].start, all[k].end - all[k].start);
		put(&x, b + all[n_recs - 1].end, n - all[n_recs - 1].end);
		emit(s, "unpacked field packed", x.b, x.n);
		buf_free(&content);
	}

	/* The record again at the end: a scalar overwritten, a message merged. */
	x.n = 0;
	put(&x, b, n);
	put(&x, b + r->start, r->end - r->start);
	emit(s, "record repeated", x.b, x.n);

	if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && wt == 2 && depth < 2) {
		struct sink child = {
		    .parent = s,
		    .pre = b,
		    .npre = r->start,
		    .post = b + r->end,
		    .npost = n - r->end,
		    .field = fid,
		};
		mutate(f->descriptor, b + r->pstart, plen, &child, depth + 1);
	}
	buf_free(&x);
}

static void emit_concat(const struct sink *s, const char *what, const uint8_t *a, size_t na, const uint8_t *b,
                        size_t nb)
{
	struct buf x = {0};
	put(&x, a, na);
	put(&x, b, nb);
	emit(s, what, x.b, x.n);
	buf_free(&x);
}

static void mutate(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n, const struct sink *s,
                   unsigned depth)
{
	static struct rec recs_at[3][MAX_RECS];
	struct rec *recs = recs_at[depth];
	size_t n_recs = parse_records(b, n, recs, MAX_RECS);
	assert_true(n_recs != SIZE_MAX);
	struct buf x = {0};

	/* A few truncations (every one is done at the top, for some messages). */
	for (unsigned i = 0; i < 3 && n; i++)
		emit(s, "truncated", b, below(n));

	/* Random bytes changed. */
	for (unsigned i = 0; i < (depth ? 3u : 12u) && n; i++) {
		x.n = 0;
		put(&x, b, n);
		for (unsigned k = 0, flips = 1 + (unsigned)below(3); k < flips; k++) {
			size_t at = below(n);
			x.b[at] = chance(50) ? (uint8_t)next() : x.b[at] ^ (uint8_t)(1u << below(8));
		}
		emit(s, "bytes changed", x.b, x.n);
	}

	/* Unknown fields of every wire type, after and before. */
	uint32_t unknown = 1;
	while (field_by_id(d, unknown))
		unknown++;
	for (unsigned wt = 0; wt < 6; wt++) {
		if (wt == 3 || wt == 4)
			continue;
		x.n = 0;
		put_tag(&x, 1000 + below(100000), wt);
		put_payload(&x, wt);
		emit_concat(s, "unknown field appended", b, n, x.b, x.n);
		emit_concat(s, "unknown field prepended", x.b, x.n, b, n);
		x.n = 0;
		put_tag(&x, unknown, wt);
		put_payload(&x, wt);
		emit_concat(s, "unknown low field appended", b, n, x.b, x.n);
	}

	/* Tag 0, groups, a field number past 2^29-1, a 6-byte tag. */
	static const uint8_t tag0_varint[] = {0x00, 0x00}, tag0_len[] = {0x02, 0x00},
	                     big_field[] = {0x80, 0x80, 0x80, 0x80, 0x20, 0x01},
	                     six_byte_tag[] = {0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01};
	emit_concat(s, "tag 0", tag0_varint, 2, b, n);
	emit_concat(s, "tag 0 delimited", b, n, tag0_len, 2);
	emit_concat(s, "field 2^29", b, n, big_field, sizeof(big_field));
	emit_concat(s, "6-byte tag", b, n, six_byte_tag, sizeof(six_byte_tag));
	x.n = 0;
	put_tag(&x, unknown, 3);
	put_tag(&x, unknown, 4);
	emit_concat(s, "unknown group", b, n, x.b, x.n);
	x.n = 0;
	put_tag(&x, unknown, 4);
	emit_concat(s, "end group alone", b, n, x.b, x.n);
	if (d->n_fields) {
		x.n = 0;
		put_tag(&x, d->fields[0].id, 3);
		put_tag(&x, d->fields[0].id, 4);
		emit_concat(s, "known field as group", b, n, x.b, x.n);
	}

	/* The whole message twice: every field given twice, messages merged. */
	emit_concat(s, "message twice", b, n, b, n);

	/* Each field (or, nested, a few) given once more with another value. */
	for (unsigned i = 0; i < d->n_fields; i++) {
		if (depth && !chance(30))
			continue;
		single_field(d, &d->fields[i], &x);
		emit_concat(s, "field given again", b, n, x.b, x.n);
		if (!depth)
			emit_concat(s, "field given before", x.b, x.n, b, n);
	}

	unsigned limit = depth ? 4 : 24;
	for (size_t k = 0; k < n_recs && k < limit; k++)
		mutate_record(d, b, n, &recs[k], recs, n_recs, s, depth);
	buf_free(&x);
}

enum { MUTATED_PER_TYPE = 3 };

static void test_unpack_mutants(void **state)
{
	(void)state;
	cur_test = "unpack_mutants";
	n_mutants = 0;
	for (size_t t = 0; t < n_types; t++) {
		cur_type = types[t];
		rng_seed(3, t);
		for (cur_iter = 0; cur_iter < MUTATED_PER_TYPE; cur_iter++) {
			struct pool p;
			pool_init(&p);
			size_t len;
			uint8_t *b = pbc_pack(gen_root(&p, types[t]), &len);
			pool_release(&p);
			struct sink top = {.desc = types[t]};
			if (cur_iter < 2) {
				/* Cut at every length (at most ~300 of them). */
				size_t step = len / 300 + 1;
				for (size_t cut = 0; cut < len; cut += step)
					emit(&top, "truncated", b, cut);
			}
			mutate(types[t], b, len, &top, 0);
			free(b);
		}
	}
	print_message("codec: %u mutants checked\n", n_mutants);
	assert_true(n_mutants > 10000);
}

/* Tests: the fast path is actually taken. */

static void test_fast_path_taken(void **state)
{
	(void)state;
	cur_test = "fast_path_taken";
	cur_what = "plain random message";
	struct drv__codec_stats before, after;
	drv__codec_stats(&before);
	calls = (__typeof__(calls)){0};
	uint64_t top_packs = 0, top_packs_taken = 0, top_unpacks = 0, top_unpacks_taken = 0;
	gen_plain = true;
	/* drover's own protocol only: all proto3, the case the codec is for. */
	for (size_t t = 0; t < n_drover_types; t++) {
		cur_type = types[t];
		rng_seed(4, t);
		for (cur_iter = 0; cur_iter < 40; cur_iter++) {
			struct pool p;
			pool_init(&p);
			ProtobufCMessage *m = gen_root(&p, types[t]);
			top_packs++;
			top_packs_taken += check_pack(m);
			size_t len;
			uint8_t *b = pbc_pack(m, &len);
			top_unpacks++;
			top_unpacks_taken += check_unpack(types[t], b, len, true);
			free(b);
			pool_release(&p);
		}
	}
	gen_plain = false;
	drv__codec_stats(&after);
	print_message("codec: fast path took %llu of %llu packs, %llu of %llu unpacks of random messages\n",
	              (unsigned long long)top_packs_taken, (unsigned long long)top_packs,
	              (unsigned long long)top_unpacks_taken, (unsigned long long)top_unpacks);
	/* The codec's own count of declines agrees with what it returned. */
	assert_int_equal(after.packs_declined - before.packs_declined, calls.packs - calls.packs_taken);
	assert_int_equal(after.unpacks_declined - before.unpacks_declined,
	                 calls.unpacks - calls.unpacks_taken);
	/* A codec that declines everything would pass every other test. */
	assert_true(top_packs_taken * 10 >= top_packs * 9);
	assert_true(top_unpacks_taken * 10 >= top_unpacks * 9);
	assert_true(calls.packs_taken * 10 >= calls.packs * 9);
}

/*
 * Long repeated message fields of the top-level message, which the codec
 * splits in halves, one done on its helper thread: every top-level repeated
 * message field of every type, with 255 to 3,000 elements, valid and then
 * mutated around the middle and at the end.
 */
static void test_split_halves(void **state)
{
	(void)state;
	cur_test = "split_halves";
	struct drv__codec_stats before, after;
	drv__codec_stats(&before);
	force_split = true;
	unsigned fields = 0;
	n_mutants = 0;
	for (size_t t = 0; t < n_types; t++) {
		const ProtobufCMessageDescriptor *d = types[t];
		cur_type = d;
		for (unsigned i = 0; i < d->n_fields; i++) {
			const ProtobufCFieldDescriptor *f = &d->fields[i];
			if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
				continue;
			fields++;
			rng_seed(6, t * 64 + i);
			static const size_t counts[] = {255, 256, 300, 1000, 2500};
			for (cur_iter = 0; cur_iter < 5; cur_iter++) {
				size_t n = counts[cur_iter];
				cur_what = "random message with a long repeated field";
				struct pool p;
				pool_init(&p);
				ProtobufCMessage *m = gen_root(&p, d);
				/*
				 * At least n elements and, from 256 on, at least 34 KB of
				 * them: the codec splits only above 32 KB.
				 */
				size_t cap = n, bytes = 0;
				ProtobufCMessage **arr = malloc(cap * sizeof(*arr));
				assert_non_null(arr);
				for (n = 0; n < counts[cur_iter] || (n >= 256 && bytes < 34000 && n < 40000);
				     n++) {
					if (n == cap) {
						arr = realloc(arr, (cap *= 2) * sizeof(*arr));
						assert_non_null(arr);
					}
					gen_budget = 200;
					arr[n] = gen_message(&p, f->descriptor, MAX_DEPTH - 2);
					bytes += protobuf_c_message_get_packed_size(arr[n]) + 2;
				}
				ProtobufCMessage **kept = gen_alloc(&p, n * sizeof(*arr));
				memcpy(kept, arr, n * sizeof(*arr));
				free(arr);
				arr = kept;
				memcpy(member_at(m, f->quantifier_offset), &n, sizeof(n));
				memcpy(member_at(m, f->offset), &arr, sizeof(arr));
				check_pack(m);
				size_t len;
				uint8_t *b = pbc_pack(m, &len);
				check_unpack(d, b, len, true);
				pool_release(&p);
				if (counts[cur_iter] != 300) {
					free(b);
					continue;
				}
				/* Mutants of an element after the middle or of the last one. */
				static struct rec recs[MAX_RECS];
				size_t n_recs = parse_records(b, len, recs, MAX_RECS);
				assert_true(n_recs != SIZE_MAX);
				size_t elems[4], n_elems = 0, seen_elems = 0;
				for (size_t k = 0; k < n_recs; k++)
					if ((recs[k].tag >> 3) == f->id) {
						if (seen_elems == (fields % 2 ? n / 2 + 1 : n - 1))
							elems[n_elems++] = k;
						seen_elems++;
					}
				struct sink top = {.desc = d};
				for (size_t e = 0; e < n_elems; e++)
					mutate_record(d, b, len, &recs[elems[e]], recs, n_recs, &top, 1);
				for (unsigned k = 0; k < 8; k++)
					emit(&top, "truncated", b, len / 2 + below(len / 2));
				free(b);
			}
		}
	}
	force_split = false;
	drv__codec_stats(&after);
	print_message("codec: %u long fields, %u mutants; %llu packs and %llu unpacks split\n", fields,
	              n_mutants, (unsigned long long)(after.packs_split - before.packs_split),
	              (unsigned long long)(after.unpacks_split - before.unpacks_split));
	assert_true(fields >= 5);
}

/* Tests: the checker itself catches faults. */

static void test_checker_catches_faults(void **state)
{
	(void)state;
	Drover__Codectest__Scalars sc = DROVER__CODECTEST__SCALARS__INIT;
	Drover__Codectest__Oneofs oo = DROVER__CODECTEST__ONEOFS__INIT;
	Drover__Codectest__Root root = DROVER__CODECTEST__ROOT__INIT;
	Drover__Codectest__Repeats rp = DROVER__CODECTEST__REPEATS__INIT;
	int32_t arr[] = {1, -2, 3};
	sc.i32 = -5;
	sc.s = "abc";
	sc.by.len = 3;
	sc.by.data = (uint8_t *)"xyz";
	sc.db = -0.0;
	sc.fl = 1.5f;
	oo.pick_case = DROVER__CODECTEST__ONEOFS__PICK_P_S;
	oo.p_s = "q";
	rp.n_i32 = 3;
	rp.i32 = arr;
	root.sc = &sc;
	root.oo = &oo;
	root.rp = &rp;

	/* A corrupted byte of the codec's output (protobuf-c's when declined). */
	size_t want_len;
	uint8_t *want = pbc_pack(&root.base, &want_len);
	uint8_t *start = NULL;
	size_t len = 0;
	uint8_t *block = drv__codec_pack(&root.base, &start, &len);
	uint8_t *got = malloc(want_len);
	assert_non_null(got);
	if (block)
		assert_int_equal(len, want_len);
	memcpy(got, block ? start : want, want_len);
	free(block);
	assert_int_equal(bytes_diff(want, want_len, got, want_len), SIZE_MAX);
	got[want_len / 2] ^= 0x01;
	assert_int_equal(bytes_diff(want, want_len, got, want_len), want_len / 2);
	got[want_len / 2] ^= 0x01;
	assert_int_equal(bytes_diff(want, want_len, got, want_len - 1), want_len - 1);
	free(got);

	/* The deep comparison sees each kind of field differ. */
	ProtobufCMessage *a =
	    protobuf_c_message_unpack(&drover__codectest__root__descriptor, NULL, want_len, want);
	Drover__Codectest__Root *b = (Drover__Codectest__Root *)protobuf_c_message_unpack(
	    &drover__codectest__root__descriptor, NULL, want_len, want);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(msg_equal(a, &b->base, "root"));
	b->sc->i32++;
	assert_false(msg_equal(a, &b->base, "root"));
	b->sc->i32--;
	/* -0.0 was not packed (proto3 skips it: -0.0 == 0), so both hold +0.0. */
	b->sc->db = -0.0;
	assert_false(msg_equal(a, &b->base, "root"));
	assert_string_equal(diff_path, "root.sc.db: scalar value");
	b->sc->db = 0.0;
	b->sc->s[1] = 'B';
	assert_false(msg_equal(a, &b->base, "root"));
	b->sc->s[1] = 'b';
	b->sc->by.len--;
	assert_false(msg_equal(a, &b->base, "root"));
	b->sc->by.len++;
	b->oo->pick_case = DROVER__CODECTEST__ONEOFS__PICK__NOT_SET;
	assert_false(msg_equal(a, &b->base, "root"));
	b->oo->pick_case = DROVER__CODECTEST__ONEOFS__PICK_P_S;
	b->rp->n_i32--;
	assert_false(msg_equal(a, &b->base, "root"));
	b->rp->n_i32++;
	b->rp->i32[2] = 4;
	assert_false(msg_equal(a, &b->base, "root"));
	assert_string_equal(diff_path, "root.rp.i32[2]: scalar value");
	b->rp->i32[2] = 3;
	assert_true(msg_equal(a, &b->base, "root"));
	protobuf_c_message_free_unpacked(a, NULL);
	protobuf_c_message_free_unpacked(&b->base, NULL);
	free(want);
}

/*
 * The same with a helper buffer and block of 700 bytes: the helper stops when
 * they are full and the caller finishes the rest, which must give the same
 * result; the counters show that path ran.
 */
static void test_split_halves_overflow(void **state)
{
	struct drv__codec_stats before, after;
	drv__codec_stats(&before);
	drv__codec_small_halves(700);
	test_split_halves(state);
	drv__codec_small_halves(0);
	drv__codec_stats(&after);
	printf("codec: with 700-byte halves, %llu packs and %llu unpacks finished by the caller\n",
	       (unsigned long long)(after.packs_split_rest - before.packs_split_rest),
	       (unsigned long long)(after.unpacks_split_rest - before.unpacks_split_rest));
	assert_true(after.packs_split_rest - before.packs_split_rest >= 50);
	assert_true(after.unpacks_split_rest - before.unpacks_split_rest >= 50);
}

int main(void)
{
	const char *env = getenv("DROVER_CODEC_SEED");
	if (env && *env)
		seed = strtoull(env, NULL, 0);
	/* DROVER_CODEC_TEST=<glob>: only the tests of that name. */
	const char *only = getenv("DROVER_CODEC_TEST");
	if (only && *only)
		cmocka_set_test_filter(only);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_walk_covers_everything),
	    cmocka_unit_test(test_checker_catches_faults),
	    cmocka_unit_test(test_pack_random),
	    cmocka_unit_test(test_unpack_random),
	    cmocka_unit_test(test_unpack_out_of_memory),
	    cmocka_unit_test(test_unpack_mutants),
	    cmocka_unit_test(test_split_halves),
	    cmocka_unit_test(test_split_halves_overflow),
	    cmocka_unit_test(test_fast_path_taken),
	};
	return cmocka_run_group_tests(tests, setup_types, NULL);
}

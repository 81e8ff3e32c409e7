/*
 * A faster protobuf wire codec over protobuf-c's descriptors and structs.
 *
 * protobuf-c interprets its descriptors field by field: label, type, wire
 * type and zero test are each a branch on the descriptor for every field of
 * every message, and packing measures each sub-message again at every level
 * above it. For a GetOffers answer of 1,000 offers (115 KB) that is about
 * 0.2 ms to pack and 0.3 ms to unpack on a warm cache, twice that inside a
 * real call; both ends of every call pay it.
 *
 * Here each message type gets a plan once: per field, what to do with it in
 * one code, its tag already encoded, its offsets. Packing writes the message
 * backwards, from the end of a buffer, so a sub-message's length is known
 * once its bytes are written and nothing is measured twice. Unpacking reads
 * each message in one pass; a repeated field's array is sized on its first
 * occurrence by a look-ahead over the tags, and the elements of a repeated
 * message field are cut from one block. A long repeated message field of the
 * top-level message is split in two, one half on a helper thread (par.c).
 *
 * protobuf-c stays the reference (see codec.h). Anything outside the common
 * case (proto2 required fields and defaults, unknown fields, a sub-message
 * given twice, which protobuf-c merges) is declined and handed back to it.
 */
#include "alloc.h"
#include "codec.h"
#include "par.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CODEC_LITTLE_ENDIAN 1
#else
#define CODEC_LITTLE_ENDIAN 0 /* fixed-width fields are copied as they are in memory */
#endif

#define MAX_FIELDS 64     /* a bitmap of fields per message */
#define MAX_DEPTH 64      /* nesting of sub-messages */
#define MAX_ID (1u << 25) /* a tag of at most 4 bytes */
#define DIRECT_IDS 32     /* field ids looked up by index */

/*
 * A repeated message field of the top-level message with at least this many
 * elements (and, unpacking, a message of at least this many bytes) is split
 * in two halves, one on the helper thread: below it, waking the helper costs
 * more than it saves.
 */
#define SPLIT_MIN_ELEMS 256
#define SPLIT_MIN_BYTES 32768
#define SPLIT_MAX_PACK (1u << 20) /* see enc_repeated */

enum { WT_VARINT = 0, WT_64BIT = 1, WT_LEN = 2, WT_32BIT = 5 };

static _Atomic uint64_t n_packs, n_packs_declined, n_unpacks, n_unpacks_declined, n_packs_split,
    n_unpacks_split, n_packs_split_rest, n_unpacks_split_rest;
static _Atomic size_t small_halves; /* tests: the helper's buffer and block size, 0 = normal */

void drv__codec_small_halves(size_t bytes)
{
	atomic_store(&small_halves, bytes);
}

void drv__codec_stats(struct drv__codec_stats *out)
{
	out->packs = atomic_load(&n_packs);
	out->packs_declined = atomic_load(&n_packs_declined);
	out->unpacks = atomic_load(&n_unpacks);
	out->unpacks_declined = atomic_load(&n_unpacks_declined);
	out->packs_split = atomic_load(&n_packs_split);
	out->unpacks_split = atomic_load(&n_unpacks_split);
	out->packs_split_rest = atomic_load(&n_packs_split_rest);
	out->unpacks_split_rest = atomic_load(&n_unpacks_split_rest);
}

/* ---- Plans ---- */

/* What a field holds in the struct and how it goes on the wire. */
enum kind {
	K_I32,   /* int32, enum: a negative value is a sign-extended 10-byte varint */
	K_U32,   /* uint32 */
	K_S32,   /* sint32: zigzag */
	K_U64,   /* int64, uint64 */
	K_S64,   /* sint64: zigzag */
	K_BOOL,  /* a protobuf_c_boolean */
	K_F32,   /* fixed32, sfixed32: 4 bytes as in memory */
	K_F64,   /* fixed64, sfixed64 */
	K_FLT,   /* float: as K_F32, but zero is a float comparison (-0.0 too) */
	K_DBL,   /* double */
	K_STR,   /* char *, NUL-terminated */
	K_BYTES, /* ProtobufCBinaryData */
	K_MSG,   /* a pointer to a message */
};

/* When a field is on the wire. */
enum pres {
	P_ZERO,   /* proto3 singular: unless zero (protobuf-c's field_is_zeroish) */
	P_HAS,    /* proto3 optional: a has_ flag, or a non-NULL pointer */
	P_ONEOF,  /* its oneof's case names it */
	P_REP,    /* repeated, one tag per element */
	P_PACKED, /* repeated, one length-delimited run */
};

struct pfield {
	uint32_t offset, qoffset, id;
	uint8_t kind, pres, wt; /* wt: of one element */
	uint8_t keylen;         /* the tag as packed before a value (or a packed run) */
	uint8_t key[5];
	uint8_t esize; /* bytes of one element in a repeated array */
	uint8_t idx;   /* its index in the plan */
	const void *defval;
	const ProtobufCMessageDescriptor *sub; /* K_MSG */
};

struct plan {
	const ProtobufCMessageDescriptor *d;
	bool ok; /* false: every message of this type goes to protobuf-c */
	unsigned n;
	_Atomic size_t last_size; /* the last top-level message of this type packed, in bytes */
	uint8_t byid[DIRECT_IDS]; /* index + 1 of the field with id i, 0 if none */
	struct pfield f[];
};

static unsigned wire_type(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return WT_32BIT;
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return WT_64BIT;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return WT_LEN;
	default:
		return WT_VARINT;
	}
}

static enum kind kind_of(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_ENUM:
		return K_I32;
	case PROTOBUF_C_TYPE_UINT32:
		return K_U32;
	case PROTOBUF_C_TYPE_SINT32:
		return K_S32;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_UINT64:
		return K_U64;
	case PROTOBUF_C_TYPE_SINT64:
		return K_S64;
	case PROTOBUF_C_TYPE_BOOL:
		return K_BOOL;
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FIXED32:
		return K_F32;
	case PROTOBUF_C_TYPE_FLOAT:
		return K_FLT;
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_FIXED64:
		return K_F64;
	case PROTOBUF_C_TYPE_DOUBLE:
		return K_DBL;
	case PROTOBUF_C_TYPE_STRING:
		return K_STR;
	case PROTOBUF_C_TYPE_BYTES:
		return K_BYTES;
	default:
		return K_MSG;
	}
}

static uint8_t esize_of(enum kind k)
{
	switch (k) {
	case K_U64:
	case K_S64:
	case K_F64:
	case K_DBL:
		return 8;
	case K_BOOL:
		return sizeof(protobuf_c_boolean);
	case K_STR:
		return sizeof(char *);
	case K_BYTES:
		return sizeof(ProtobufCBinaryData);
	case K_MSG:
		return sizeof(void *);
	default:
		return 4;
	}
}

static bool packable(enum kind k)
{
	return k != K_STR && k != K_BYTES && k != K_MSG;
}

static struct plan *plan_build(const ProtobufCMessageDescriptor *d)
{
	bool ok =
	    d->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC && d->message_init && d->n_fields <= MAX_FIELDS;
	unsigned n = ok ? d->n_fields : 0;
	struct plan *p = drv__calloc(1, sizeof(*p) + n * sizeof(p->f[0]));

	if (!p)
		return NULL;
	p->d = d;
	p->n = n;
	for (unsigned i = 0; ok && i < n; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		struct pfield *pf = &p->f[i];
		/* ids in order: lookups past DIRECT_IDS are a binary search */
		if (f->id == 0 || f->id >= MAX_ID || (i > 0 && f->id <= d->fields[i - 1].id) ||
		    f->type > PROTOBUF_C_TYPE_MESSAGE ||
		    (f->type == PROTOBUF_C_TYPE_MESSAGE && !f->descriptor)) {
			ok = false;
			break;
		}
		pf->offset = f->offset;
		pf->qoffset = f->quantifier_offset;
		pf->id = f->id;
		pf->kind = (uint8_t)kind_of(f->type);
		pf->wt = (uint8_t)wire_type(f->type);
		pf->esize = esize_of(pf->kind);
		pf->idx = (uint8_t)i;
		pf->defval = f->default_value;
		pf->sub = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			pf->pres = P_ONEOF;
		} else if (f->label == PROTOBUF_C_LABEL_NONE) {
			pf->pres = P_ZERO;
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !f->default_value) {
			pf->pres = P_HAS;
		} else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			pf->pres = (f->flags & PROTOBUF_C_FIELD_FLAG_PACKED) && packable(pf->kind) ? P_PACKED
			                                                                           : P_REP;
		} else { /* proto2 required (a presence check), or a default (what counts as set):
			    protobuf-c's */
			ok = false;
			break;
		}
		uint64_t key = (uint64_t)f->id << 3 | (pf->pres == P_PACKED ? WT_LEN : pf->wt);
		do {
			pf->key[pf->keylen++] = (uint8_t)(key | (key >= 0x80 ? 0x80 : 0));
			key >>= 7;
		} while (key);
		if (f->id < DIRECT_IDS)
			p->byid[f->id] = (uint8_t)(i + 1);
	}
	p->ok = ok;
	return p;
}

/*
 * Plans are built once per message type and kept for the life of the
 * process (a program has a fixed, small set of types), in an open-addressed
 * table. When it is full, every message goes to protobuf-c.
 */
#define PLAN_SLOTS 512
#define PLAN_PROBES 16
static _Atomic(struct plan *) plans[PLAN_SLOTS];

static struct plan *plan_slow(const ProtobufCMessageDescriptor *d, size_t h)
{
	struct plan *mine = NULL;

	for (unsigned i = 0; i < PLAN_PROBES; i++) {
		_Atomic(struct plan *) *slot = &plans[(h + i) % PLAN_SLOTS];
		struct plan *cur = atomic_load_explicit(slot, memory_order_acquire);
		if (cur && cur->d == d) {
			free(mine);
			return cur;
		}
		if (cur)
			continue;
		if (!mine && !(mine = plan_build(d)))
			return NULL;
		if (atomic_compare_exchange_strong_explicit(slot, &cur, mine, memory_order_acq_rel,
		                                            memory_order_acquire))
			return mine;
		if (cur->d == d) { /* another thread was first */
			free(mine);
			return cur;
		}
	}
	free(mine);
	return NULL;
}

/* Mutable only in its size hint (last_size), which is atomic. */
static inline struct plan *plan_of(const ProtobufCMessageDescriptor *d)
{
	size_t h = (size_t)(((uintptr_t)d >> 3) * UINT64_C(0x9E3779B97F4A7C15) >> 55);
	struct plan *p = atomic_load_explicit(&plans[h % PLAN_SLOTS], memory_order_acquire);
	struct plan *r = p && p->d == d ? p : plan_slow(d, h);
	return r && r->ok ? r : NULL;
}

static inline const struct pfield *field_by_id(const struct plan *p, uint32_t id)
{
	if (id < DIRECT_IDS)
		return p->byid[id] ? &p->f[p->byid[id] - 1] : NULL;
	unsigned lo = 0, hi = p->n;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (p->f[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p->n && p->f[lo].id == id ? &p->f[lo] : NULL;
}

/* ---- Packing, backwards ---- */

struct enc {
	uint8_t *buf; /* the block */
	uint8_t *p;   /* first written byte; writing moves it down */
	uint8_t *end;
	bool owned;  /* buf is ours to free, not the caller's */
	bool fixed;  /* never grows: the helper thread's, see enc_half */
	bool full;   /* a fixed buffer ran out of room */
	size_t hint; /* the size of the last message of this type, 0 if none */
	int depth;
};

/* Moves what is written to the end of a block at least twice as large. */
static bool enc_grow(struct enc *e, size_t need)
{
	if (e->fixed) {
		e->full = true;
		return false;
	}
	size_t used = (size_t)(e->end - e->p), cap = (size_t)(e->end - e->buf);
	size_t ncap = cap ? cap * 2 : 512;

	while (ncap - used < need) {
		if (ncap > SIZE_MAX / 2)
			return false;
		ncap *= 2;
	}
	uint8_t *nb = drv__malloc(ncap);
	if (!nb)
		return false;
	if (used)
		memcpy(nb + ncap - used, e->p, used);
	if (e->owned)
		free(e->buf);
	e->owned = true;
	e->buf = nb;
	e->end = nb + ncap;
	e->p = e->end - used;
	return true;
}

static inline bool enc_room(struct enc *e, size_t n)
{
	return (size_t)(e->p - e->buf) >= n || enc_grow(e, n);
}

static inline size_t varint_size(uint64_t v)
{
	return v < 0x80 ? 1 : (size_t)(63 - __builtin_clzll(v)) / 7 + 1;
}

/* Writes varint v to end just before p; returns its first byte. The room is checked by the caller. */
static inline uint8_t *wr_varint(uint8_t *p, uint64_t v)
{
	if (v < 0x80) {
		*--p = (uint8_t)v;
		return p;
	}
	p -= varint_size(v);
	uint8_t *q = p;
	while (v >= 0x80) {
		*q++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*q = (uint8_t)v;
	return p;
}

static inline uint8_t *wr_key(uint8_t *p, const struct pfield *pf)
{
	if (pf->keylen == 1) {
		*--p = pf->key[0];
		return p;
	}
	p -= pf->keylen;
	memcpy(p, pf->key, pf->keylen);
	return p;
}

/* A tag of at most 5 bytes and a varint of at most 10. */
#define SCALAR_MAX 15

/*
 * Copies n bytes from src in front of what is written, leaving room for
 * `extra` more in front of them (a length, a tag), which the caller writes.
 */
static inline bool put_raw(struct enc *e, const void *src, size_t n, size_t extra)
{
	if (!enc_room(e, n + extra))
		return false;
	e->p -= n;
	if (n)
		memcpy(e->p, src, n);
	return true;
}

static inline bool put_key(struct enc *e, const struct pfield *pf)
{
	if (!enc_room(e, 5))
		return false;
	e->p = wr_key(e->p, pf);
	return true;
}

static inline uint32_t zigzag32(int32_t v)
{
	return ((uint32_t)v << 1) ^ (uint32_t) - (int32_t)((uint32_t)v >> 31);
}

static inline uint64_t zigzag64(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t) - (int64_t)((uint64_t)v >> 63);
}

static bool enc_msg(struct enc *e, const ProtobufCMessage *m);

/*
 * One value of field pf (at v), without its tag. With `skip_zero`, a
 * proto3 zero value is not written and *wrote says so.
 */
static inline __attribute__((always_inline)) bool enc_value(struct enc *e, const struct pfield *pf,
                                                            const void *v, bool skip_zero, bool *wrote)
{
	uint64_t x;

	*wrote = true;
	switch (pf->kind) {
	case K_I32:
		if (skip_zero && !*(const int32_t *)v)
			goto zero;
		x = (uint64_t)(int64_t) * (const int32_t *)v;
		goto varint;
	case K_U32:
		if (skip_zero && !*(const uint32_t *)v)
			goto zero;
		x = *(const uint32_t *)v;
		goto varint;
	case K_S32:
		if (skip_zero && !*(const int32_t *)v)
			goto zero;
		x = zigzag32(*(const int32_t *)v);
		goto varint;
	case K_U64:
		if (skip_zero && !*(const uint64_t *)v)
			goto zero;
		x = *(const uint64_t *)v;
		goto varint;
	case K_S64:
		if (skip_zero && !*(const int64_t *)v)
			goto zero;
		x = zigzag64(*(const int64_t *)v);
		goto varint;
	case K_BOOL:
		if (skip_zero && !*(const protobuf_c_boolean *)v)
			goto zero;
		x = *(const protobuf_c_boolean *)v ? 1 : 0;
		goto varint;
	case K_FLT:
		/* protobuf-c compares a float with 0: -0.0 is not sent either */
		if (skip_zero && *(const float *)v == 0)
			goto zero;
		return put_raw(e, v, 4, 5);
	case K_F32:
		if (skip_zero && !*(const uint32_t *)v)
			goto zero;
		return put_raw(e, v, 4, 5);
	case K_DBL:
		if (skip_zero && *(const double *)v == 0)
			goto zero;
		return put_raw(e, v, 8, 5);
	case K_F64:
		if (skip_zero && !*(const uint64_t *)v)
			goto zero;
		return put_raw(e, v, 8, 5);
	case K_STR: {
		const char *s = *(char *const *)v;
		if (skip_zero && (!s || !*s))
			goto zero;
		size_t n = s ? strlen(s) : 0;
		if (!put_raw(e, s, n, SCALAR_MAX))
			return false;
		e->p = wr_varint(e->p, n);
		return true;
	}
	case K_BYTES: {
		const ProtobufCBinaryData *b = v;
		if (skip_zero && !b->len)
			goto zero;
		if (!put_raw(e, b->data, b->len, SCALAR_MAX))
			return false;
		e->p = wr_varint(e->p, b->len);
		return true;
	}
	default: { /* K_MSG */
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
		if (!sub) {
			if (skip_zero)
				goto zero;
			return false; /* protobuf-c cannot measure this one either */
		}
		size_t mark = (size_t)(e->end - e->p);
		if (!enc_msg(e, sub) || !enc_room(e, SCALAR_MAX))
			return false;
		e->p = wr_varint(e->p, (size_t)(e->end - e->p) - mark);
		return true;
	}
	}
varint:
	if (!enc_room(e, SCALAR_MAX))
		return false;
	e->p = wr_varint(e->p, x);
	return true;
zero:
	*wrote = false;
	return true;
}

/* Elements [0, to) of a repeated message field, packed by the helper thread into a buffer of its own. */
/*
 * Elements [0, to) of a repeated message field, packed by the helper thread,
 * last first, into a buffer the caller allocated. The helper never allocates
 * (its malloc arena would keep what it took): when the buffer is full it
 * stops, and the caller packs elements [0, left) itself.
 */
struct enc_half {
	const struct pfield *pf;
	const unsigned char *a;
	size_t to, left;
	struct enc e;
	bool ok;
};

static void enc_half_run(void *arg)
{
	struct enc_half *h = arg;
	bool wrote;

	h->e.depth = 1;
	for (size_t i = h->to; i-- > 0;) {
		uint8_t *mark = h->e.p;
		if (!enc_value(&h->e, h->pf, h->a + i * sizeof(void *), false, &wrote) ||
		    !put_key(&h->e, h->pf)) {
			h->e.p = mark;
			h->left = i + 1;
			h->ok = h->e.full; /* out of room is not an error */
			return;
		}
	}
	h->left = 0;
	h->ok = true;
}

/*
 * A long run of message elements: elements [0, n/2) on the helper thread,
 * into a buffer allocated here and sized from the last message of this
 * type, the rest here; then the helper's bytes go in front, and what did not
 * fit in its buffer is packed here too.
 */
static bool enc_split(struct enc *e, const struct pfield *pf, size_t n, const unsigned char *a)
{
	struct enc_half half = {.pf = pf, .a = a, .to = n / 2};
	struct drv__par_job job = {.fn = enc_half_run, .arg = &half};
	size_t from = 0;
	bool wrote, ok = true;

	size_t cap = e->hint ? e->hint / 2 + e->hint / 16 + 4096 : 65536;
	if (atomic_load_explicit(&small_halves, memory_order_relaxed))
		cap = atomic_load_explicit(&small_halves, memory_order_relaxed);
	if ((half.e.buf = drv__malloc(cap))) {
		half.e.fixed = true;
		half.e.p = half.e.end = half.e.buf + cap;
		if (drv__par_start(&job))
			from = half.to;
	}
	for (size_t i = n; ok && i-- > from;)
		ok = enc_value(e, pf, a + i * pf->esize, false, &wrote) && put_key(e, pf);
	if (from) {
		drv__par_wait(&job);
		size_t hn = (size_t)(half.e.end - half.e.p);
		ok = ok && half.ok && enc_room(e, hn);
		if (ok) {
			e->p -= hn;
			memcpy(e->p, half.e.p, hn);
			atomic_fetch_add_explicit(&n_packs_split, 1, memory_order_relaxed);
		}
		if (ok && half.left)
			atomic_fetch_add_explicit(&n_packs_split_rest, 1, memory_order_relaxed);
		for (size_t i = half.left; ok && i-- > 0;)
			ok = enc_value(e, pf, a + i * pf->esize, false, &wrote) && put_key(e, pf);
	}
	free(half.e.buf);
	return ok;
}

static bool enc_repeated(struct enc *e, const struct pfield *pf, size_t n, const unsigned char *a)
{
	bool wrote;

	if (n == 0)
		return true;
	if (!a)
		return false;
	if (pf->pres == P_PACKED) {
		size_t mark = (size_t)(e->end - e->p);
		for (size_t i = n; i-- > 0;)
			if (!enc_value(e, pf, a + i * pf->esize, false, &wrote))
				return false;
		if (!enc_room(e, SCALAR_MAX))
			return false;
		e->p = wr_key(wr_varint(e->p, (size_t)(e->end - e->p) - mark), pf);
		return true;
	}
	/*
	 * In the top-level message, the first half of a long run goes to the
	 * helper thread. Not past SPLIT_MAX_PACK: the helper's buffer is half
	 * the message again while both exist, and for a reply of megabytes
	 * (droverd's ListInstances of 10,000 instances) that peak costs more
	 * than the split saves.
	 */
	if (pf->kind == K_MSG && n >= SPLIT_MIN_ELEMS && e->depth == 1 && e->hint < SPLIT_MAX_PACK)
		return enc_split(e, pf, n, a);
	for (size_t i = n; i-- > 0;)
		if (!enc_value(e, pf, a + i * pf->esize, false, &wrote) || !put_key(e, pf))
			return false;
	return true;
}

static bool enc_msg(struct enc *e, const ProtobufCMessage *m)
{
	const unsigned char *base = (const unsigned char *)m;
	const struct plan *pl;

	if (!m->descriptor || !(pl = plan_of(m->descriptor)) || e->depth >= MAX_DEPTH)
		return false;
	e->depth++;
	/* protobuf-c writes unknown fields after the known ones */
	for (size_t i = m->n_unknown_fields; i-- > 0;) {
		const ProtobufCMessageUnknownField *u = &m->unknown_fields[i];
		if (!put_raw(e, u->data, u->len, SCALAR_MAX))
			return false;
		e->p = wr_varint(e->p, (uint64_t)u->tag << 3 | u->wire_type);
	}
	for (unsigned i = pl->n; i-- > 0;) {
		const struct pfield *pf = &pl->f[i];
		const void *v = base + pf->offset;
		bool wrote;

		switch (pf->pres) {
		case P_ZERO:
			if (!enc_value(e, pf, v, true, &wrote))
				return false;
			if (!wrote)
				continue;
			break;
		case P_REP:
		case P_PACKED:
			if (!enc_repeated(e, pf, *(const size_t *)(base + pf->qoffset),
			                  *(const unsigned char *const *)v))
				return false;
			continue;
		case P_ONEOF:
			if (*(const uint32_t *)(base + pf->qoffset) != pf->id)
				continue;
			/* fall through */
		default: /* P_HAS */
			if (pf->kind == K_STR || pf->kind == K_MSG) {
				const void *ptr = *(const void *const *)v;
				if (!ptr || ptr == pf->defval)
					continue;
			} else if (pf->pres == P_HAS && !*(const protobuf_c_boolean *)(base + pf->qoffset)) {
				continue;
			}
			if (!enc_value(e, pf, v, false, &wrote))
				return false;
			break;
		}
		if (!put_key(e, pf))
			return false;
	}
	e->depth--;
	return true;
}

uint8_t *drv__codec_pack_buf(const ProtobufCMessage *m, uint8_t *buf, size_t cap, uint8_t **start,
                             size_t *len)
{
	struct enc e = {.buf = buf};
	struct plan *pl = m->descriptor ? plan_of(m->descriptor) : NULL;

	if (pl)
		e.hint = atomic_load_explicit(&pl->last_size, memory_order_relaxed);
	if (buf)
		e.p = e.end = buf + cap;
	/* Sized from the last message of this type, a large one is written without growing. */
	if (e.hint > cap) {
		size_t want = e.hint + e.hint / 16 + 256;
		uint8_t *nb = want > e.hint ? drv__malloc(want) : NULL;
		if (nb) {
			e.buf = nb;
			e.owned = true;
			e.p = e.end = nb + want;
		}
	}
	if (!CODEC_LITTLE_ENDIAN || !pl || (!e.buf && !enc_grow(&e, 0)) || !enc_msg(&e, m)) {
		if (e.owned)
			free(e.buf);
		atomic_fetch_add_explicit(&n_packs_declined, 1, memory_order_relaxed);
		return NULL;
	}
	atomic_fetch_add_explicit(&n_packs, 1, memory_order_relaxed);
	*start = e.p;
	*len = (size_t)(e.end - e.p);
	atomic_store_explicit(&pl->last_size, *len, memory_order_relaxed);
	return e.buf;
}

uint8_t *drv__codec_pack(const ProtobufCMessage *m, uint8_t **start, size_t *len)
{
	return drv__codec_pack_buf(m, NULL, 0, start, len);
}

/* ---- Unpacking ---- */

/*
 * Small blocks are cut from chunks of the caller's allocator here, inline:
 * an offer is a dozen blocks, and a call through the allocator for each
 * cost as much as parsing it. Strings are not aligned.
 */
#define CHUNK 16384

struct dec {
	uintptr_t cur, lim; /* the current chunk */
	ProtobufCAllocator *a;
	ProtobufCAllocator *a2; /* for the helper thread's half; NULL: no split */
	bool fixed;             /* only the current block: the helper thread's, see dec_half */
	bool full;              /* a fixed block ran out */
	int depth;
};

static void *bump_slow(struct dec *d, size_t n, size_t align);

static inline void *bump(struct dec *d, size_t n, size_t align)
{
	uintptr_t p = (d->cur + (align - 1)) & ~(uintptr_t)(align - 1);
	if (p >= d->cur && p <= d->lim && n <= d->lim - p) {
		d->cur = p + n;
		return (void *)p;
	}
	return bump_slow(d, n, align);
}

static void *bump_slow(struct dec *d, size_t n, size_t align)
{
	if (d->fixed) {
		d->full = true;
		return NULL;
	}
	if (n > CHUNK / 4) /* the allocator's blocks are aligned for any member */
		return d->a->alloc(d->a->allocator_data, n);
	void *c = d->a->alloc(d->a->allocator_data, CHUNK);
	if (!c)
		return NULL;
	d->cur = (uintptr_t)c;
	d->lim = d->cur + CHUNK;
	return bump(d, n, align);
}

/* A varint of at most 10 bytes: its length, or 0 when unterminated. */
static inline size_t get_varint(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
	if (p < end && p[0] < 0x80) {
		*out = p[0];
		return 1;
	}
	size_t max = (size_t)(end - p) < 10 ? (size_t)(end - p) : 10;
	uint64_t v = 0;
	for (size_t i = 0; i < max; i++) {
		v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			*out = v;
			return i + 1;
		}
	}
	return 0;
}

/* protobuf-c's bool is true when any 7-bit group is, even past 64 bits. */
static inline protobuf_c_boolean varint_bool(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] & 0x7f)
			return 1;
	return 0;
}

/*
 * One field occurrence on the wire: its id, wire type, and the bytes of its
 * value (for WT_LEN, the bytes after the length prefix).
 */
struct occ {
	uint32_t id;
	unsigned wt;
	const uint8_t *v;
	size_t n;
};

/* Reads the occurrence at *pp and moves past it; false on anything protobuf-c must judge. */
static inline bool next_occ(const uint8_t **pp, const uint8_t *end, struct occ *o)
{
	const uint8_t *p = *pp;
	uint64_t key, n;
	size_t used;

	if (p[0] < 0x80) { /* a one-byte tag: fields 1 to 15 */
		key = p[0];
		used = 1;
	} else if ((used = get_varint(p, end, &key)) == 0 || used > 4) {
		return false;
	}
	if ((key >> 3) == 0)
		return false;
	p += used;
	o->id = (uint32_t)(key >> 3);
	o->wt = (unsigned)(key & 7);
	switch (o->wt) {
	case WT_VARINT:
		if (p < end && p[0] < 0x80)
			used = 1;
		else if ((used = get_varint(p, end, &n)) == 0)
			return false;
		o->v = p;
		o->n = used;
		break;
	case WT_64BIT:
		if (end - p < 8)
			return false;
		o->v = p;
		o->n = 8;
		break;
	case WT_32BIT:
		if (end - p < 4)
			return false;
		o->v = p;
		o->n = 4;
		break;
	case WT_LEN:
		if (p < end && p[0] < 0x80) {
			n = p[0];
			used = 1;
		} else if ((used = get_varint(p, end, &n)) == 0 || used > 5 || n > INT_MAX) {
			return false;
		}
		if (n > (size_t)(end - p) - used)
			return false;
		o->v = p + used;
		o->n = (size_t)n;
		break;
	default:
		return false;
	}
	*pp = o->v + o->n;
	return true;
}

static inline uint64_t read_varint(const uint8_t *p, size_t n)
{
	uint64_t v = p[0] & 0x7f;
	for (size_t i = 1; i < n; i++)
		v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
	return v;
}

static bool dec_msg(struct dec *d, const ProtobufCMessageDescriptor *desc, void *msg, const uint8_t *p,
                    size_t len);

/*
 * Stores one value of field pf from the wire (`v`, `n` bytes, wire type
 * already checked) at `out`. Varints are 1 to 10 bytes here. A sub-message
 * goes into the struct *out points to, or a new one.
 */
static inline bool dec_value(struct dec *d, const struct pfield *pf, void *out, const uint8_t *v, size_t n)
{
	switch (pf->kind) {
	case K_I32:
	case K_U32:
		/* protobuf-c keeps the low 32 bits, as this does */
		*(uint32_t *)out = n == 1 ? v[0] : (uint32_t)read_varint(v, n);
		return true;
	case K_S32: {
		uint32_t u = (uint32_t)read_varint(v, n);
		*(int32_t *)out = (int32_t)((u >> 1) ^ (0u - (u & 1)));
		return true;
	}
	case K_U64:
		*(uint64_t *)out = n == 1 ? v[0] : read_varint(v, n);
		return true;
	case K_S64: {
		uint64_t u = read_varint(v, n);
		*(int64_t *)out = (int64_t)((u >> 1) ^ (0 - (u & 1)));
		return true;
	}
	case K_BOOL:
		*(protobuf_c_boolean *)out = varint_bool(v, n);
		return true;
	case K_F32:
	case K_FLT:
		memcpy(out, v, 4);
		return true;
	case K_F64:
	case K_DBL:
		memcpy(out, v, 8);
		return true;
	case K_STR: {
		char *s = bump(d, n + 1, 1);
		if (!s)
			return false;
		memcpy(s, v, n);
		s[n] = '\0';
		*(char **)out = s;
		return true;
	}
	case K_BYTES: {
		ProtobufCBinaryData *b = out;
		b->len = n;
		b->data = NULL;
		if (n) {
			if (!(b->data = bump(d, n, 1)))
				return false;
			memcpy(b->data, v, n);
		}
		return true;
	}
	default: { /* K_MSG */
		void *sub = *(void **)out;
		if (!sub && !(sub = bump(d, pf->sub->sizeof_message, 8)))
			return false;
		if (!dec_msg(d, pf->sub, sub, v, n))
			return false;
		*(void **)out = sub;
		return true;
	}
	}
}

/* Elements in a packed run: counts varint terminators, as protobuf-c does. */
static bool packed_count(const struct pfield *pf, const uint8_t *v, size_t n, size_t *count)
{
	switch (pf->wt) {
	case WT_32BIT:
		*count = n / 4;
		return n % 4 == 0;
	case WT_64BIT:
		*count = n / 8;
		return n % 8 == 0;
	default: {
		size_t c = 0;
		for (size_t i = 0; i < n; i++)
			c += !(v[i] & 0x80);
		*count = c;
		return n == 0 || !(v[n - 1] & 0x80);
	}
	}
}

/*
 * The elements field pf has from `p` to the end of its message, so that its
 * array is allocated once, at its exact size, on its first occurrence: a
 * scan of tags and lengths only.
 */
static bool count_ahead(const struct pfield *pf, const uint8_t *p, const uint8_t *end, size_t *count)
{
	size_t total = 0;
	struct occ o;

	while (p < end) {
		if (!next_occ(&p, end, &o))
			return false;
		if (o.id != pf->id)
			continue;
		size_t c = 1;
		if (o.wt == WT_LEN && packable(pf->kind)) {
			if (!packed_count(pf, o.v, o.n, &c))
				return false;
		} else if (o.wt != pf->wt) {
			return false;
		}
		total += c;
	}
	*count = total;
	return true;
}

/* Allocates the array of repeated field pf for `n` elements; a message field's elements in one block. */
static bool alloc_array(struct dec *d, const struct pfield *pf, unsigned char *base, size_t n)
{
	if (n > SIZE_MAX / pf->esize)
		return false;
	void **array = bump(d, n * pf->esize, 8);
	if (!array)
		return false;
	if (pf->kind == K_MSG) {
		size_t msz = pf->sub->sizeof_message;
		if (n > SIZE_MAX / msz)
			return false;
		unsigned char *block = bump(d, n * msz, 8);
		if (!block)
			return false;
		for (size_t k = 0; k < n; k++)
			array[k] = block + k * msz;
	}
	*(void **)(base + pf->offset) = array;
	return true;
}

/* Appends the elements of a packed run to the array of pf. */
static bool dec_packed(struct dec *d, const struct pfield *pf, unsigned char *array, size_t *count,
                       const uint8_t *v, size_t n)
{
	if (pf->wt == WT_32BIT || pf->wt == WT_64BIT) {
		if (n)
			memcpy(array + *count * pf->esize, v, n);
		*count += n / pf->esize;
		return true;
	}
	const uint8_t *end = v + n;
	while (v < end) {
		uint64_t x;
		size_t used = get_varint(v, end, &x);
		if (used == 0)
			return false;
		if (!dec_value(d, pf, array + *count * pf->esize, v, used))
			return false;
		(*count)++;
		v += used;
	}
	return true;
}

/*
 * Occurrences of repeated message field pf from its k-th one to the end of
 * the message, unpacked by the helper thread into elements k.. of its
 * array, in a block the caller allocated. The helper never allocates (its
 * malloc arena would keep what it took): when the block is full it stops at
 * element `left` (its occurrence at `left_at`), which the caller unpacks
 * from on.
 */
struct dec_half {
	struct dec d;
	const struct pfield *pf;
	void **array;
	size_t k, n, left;
	const uint8_t *p, *end, *left_at;
	bool ok;
};

/* Unpacks the occurrences of pf from q on into elements i.. of array; false at the first that fails. */
static bool dec_run(struct dec *d, const struct pfield *pf, void **array, size_t *i, size_t n,
                    const uint8_t **q, const uint8_t *end)
{
	struct occ o;

	while (*q < end) {
		const uint8_t *at = *q;
		if (!next_occ(q, end, &o)) {
			*q = at;
			return false;
		}
		if (o.id != pf->id)
			continue;
		if (o.wt != WT_LEN || *i >= n || !dec_value(d, pf, &array[*i], o.v, o.n)) {
			*q = at;
			return false;
		}
		(*i)++;
	}
	return true;
}

static void dec_half_run(void *arg)
{
	struct dec_half *h = arg;
	const uint8_t *q = h->p;
	size_t i = h->k;

	h->ok = dec_run(&h->d, h->pf, h->array, &i, h->n, &q, h->end);
	h->left = i;
	h->left_at = q;
	if (!h->ok && h->d.full)
		h->ok = true; /* out of room is not an error */
}

/* Where the k-th occurrence (from 0) of field pf starts, from p on. */
static const uint8_t *find_occ(const struct pfield *pf, const uint8_t *p, const uint8_t *end, size_t k)
{
	struct occ o;

	while (p < end) {
		const uint8_t *at = p;
		if (!next_occ(&p, end, &o))
			return NULL;
		if (o.id == pf->id && k-- == 0)
			return at;
	}
	return NULL;
}

static bool dec_msg(struct dec *d, const ProtobufCMessageDescriptor *desc, void *msg, const uint8_t *p,
                    size_t len)
{
	unsigned char *base = msg;
	const uint8_t *end = p + len, *q = p;
	const struct plan *pl = plan_of(desc);
	uint64_t seen = 0; /* fields met so far, by index */
	struct occ o;
	/* Set up only when a split starts (split != NULL): this runs for every message. */
	struct dec_half half;
	struct drv__par_job job;
	const struct pfield *split = NULL;
	size_t split_k = SIZE_MAX;
	bool ok = false;

	if (!pl || d->depth >= MAX_DEPTH)
		return false;
	d->depth++;
	desc->message_init(msg);

	while (q < end) {
		const uint8_t *at = q;
		if (!next_occ(&q, end, &o))
			goto out;
		const struct pfield *pf = field_by_id(pl, o.id);
		if (!pf) /* unknown fields are kept by protobuf-c */
			goto out;
		uint64_t bit = UINT64_C(1) << pf->idx;

		if (pf->pres >= P_REP) {
			size_t *np = (size_t *)(base + pf->qoffset);
			if (!(seen & bit)) {
				size_t total;
				if (!count_ahead(pf, at, end, &total) || !alloc_array(d, pf, base, total))
					goto out;
				seen |= bit;
				/* In the top-level message, the second half of a long run goes to the helper
				 * thread. */
				if (pf->kind == K_MSG && total >= SPLIT_MIN_ELEMS && d->depth == 1 && d->a2 &&
				    len >= SPLIT_MIN_BYTES && !split) {
					half = (struct dec_half){.d = {.a = d->a2, .depth = 1}};
					half.pf = pf;
					half.array = *(void ***)(base + pf->offset);
					half.n = total;
					half.k = total / 2;
					half.end = end;
					half.p = find_occ(pf, at, end, half.k);
					/*
					 * The helper's first block is taken here: what it
					 * allocated itself would come from its own malloc
					 * arena, which keeps it once freed. Unpacked
					 * messages take about three times their bytes.
					 */
					size_t first = half.p ? (size_t)(end - half.p) * 3 + 4096 : 0;
					if (first &&
					    atomic_load_explicit(&small_halves, memory_order_relaxed))
						first =
						    atomic_load_explicit(&small_halves, memory_order_relaxed);
					void *blk = first ? d->a2->alloc(d->a2->allocator_data, first) : NULL;
					if (blk) {
						half.d.cur = (uintptr_t)blk;
						half.d.lim = half.d.cur + first;
						half.d.fixed = true;
					}
					job = (struct drv__par_job){.fn = dec_half_run, .arg = &half};
					if (blk && drv__par_start(&job)) {
						split = pf;
						split_k = half.k;
					}
				}
			}
			unsigned char *array = *(unsigned char **)(base + pf->offset);
			if (pf == split && *np >= split_k)
				continue; /* the helper's half */
			if (o.wt == WT_LEN && packable(pf->kind)) {
				if (!dec_packed(d, pf, array, np, o.v, o.n))
					goto out;
				continue;
			}
			if (o.wt != pf->wt || !dec_value(d, pf, array + *np * pf->esize, o.v, o.n))
				goto out;
			(*np)++;
			continue;
		}
		if (o.wt != pf->wt)
			goto out;
		if (pf->kind == K_MSG) {
			/* protobuf-c merges a sub-message given twice */
			if (seen & bit)
				goto out;
			*(void **)(base + pf->offset) = NULL;
		}
		seen |= bit;
		if (pf->pres == P_ONEOF) {
			uint32_t *c = (uint32_t *)(base + pf->qoffset);
			/* protobuf-c clears a member it replaces; simpler to let it */
			if (*c != 0)
				goto out;
			*c = pf->id;
		}
		if (!dec_value(d, pf, base + pf->offset, o.v, o.n))
			goto out;
		if (pf->pres == P_HAS && pf->qoffset)
			*(protobuf_c_boolean *)(base + pf->qoffset) = 1;
	}
	ok = true;
out:
	/* The helper writes into this message: it must be done before anyone looks at it, or frees it. */
	if (split) {
		drv__par_wait(&job);
		size_t *np = (size_t *)(base + half.pf->qoffset);
		ok = ok && half.ok && *np == half.k;
		if (ok && half.left < half.n) { /* what did not fit in the helper's block */
			size_t i = half.left;
			const uint8_t *from = half.left_at;
			ok = dec_run(d, half.pf, half.array, &i, half.n, &from, end) && i == half.n;
			if (ok)
				atomic_fetch_add_explicit(&n_unpacks_split_rest, 1, memory_order_relaxed);
		} else if (ok) {
			ok = half.left == half.n;
		}
		if (ok) {
			*np = half.n;
			atomic_fetch_add_explicit(&n_unpacks_split, 1, memory_order_relaxed);
		}
	}
	d->depth--;
	return ok;
}

bool drv__codec_unpack(const ProtobufCMessageDescriptor *desc, void *msg, ProtobufCAllocator *alloc,
                       size_t len, const uint8_t *data)
{
	return drv__codec_unpack_split(desc, msg, alloc, NULL, len, data);
}

bool drv__codec_unpack_split(const ProtobufCMessageDescriptor *desc, void *msg, ProtobufCAllocator *alloc,
                             ProtobufCAllocator *alloc2, size_t len, const uint8_t *data)
{
	struct dec d = {.a = alloc, .a2 = alloc2};

	if (!CODEC_LITTLE_ENDIAN || len > INT_MAX || !dec_msg(&d, desc, msg, data, len)) {
		atomic_fetch_add_explicit(&n_unpacks_declined, 1, memory_order_relaxed);
		return false;
	}
	atomic_fetch_add_explicit(&n_unpacks, 1, memory_order_relaxed);
	return true;
}

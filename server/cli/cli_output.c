/*
 * Output: any protobuf-c message as JSON, walked through its descriptor (so
 * --json needs no per-message code and never drifts from the proto), and
 * plain aligned tables for humans.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "drover/offer_check.h"

static json_t *message_to_json(const ProtobufCMessage *msg);

static json_t *base64(const ProtobufCBinaryData *b)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = b->len, o = 0;
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	if (!out)
		return json_null();
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)b->data[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)b->data[i + 1] << 8;
		if (i + 2 < n)
			v |= b->data[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = '\0';
	json_t *j = json_string(out);
	free(out);
	return j;
}

/*
 * s as a JSON string. Text from a driver or echoed from the command line may
 * not be UTF-8, which json_string() refuses (NULL): the field then vanished
 * from the output. Each invalid byte becomes U+FFFD instead.
 */
static json_t *json_text(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	size_t len = strlen(s);
	char *out = malloc(3 * len + 1), *o = out;
	if (!out)
		return json_null();
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t n = drv_utf8_len((const char *)p);
		if (n) {
			memcpy(o, p, n);
			o += n;
			p += n;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			p++;
		}
	}
	*o = '\0';
	j = json_string(out);
	free(out);
	return j ? j : json_null();
}

/* One value of field `f` stored at `p`. */
static json_t *value_to_json(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_integer(*(const int64_t *)p);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return json_integer((json_int_t) * (const uint64_t *)p);
	case PROTOBUF_C_TYPE_FLOAT:
		return json_real(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return json_real(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		return ev ? json_string(ev->name) : json_integer(v);
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return json_text(s ? s : "");
	}
	case PROTOBUF_C_TYPE_BYTES:
		return base64(p);
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
		return m ? message_to_json(m) : json_null();
	}
	}
	return json_null();
}

static size_t type_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 4;
	}
}

/* protobuf-c has no map flag: a map field is a repeated *Entry message of key and value. */
static bool is_map_entry(const ProtobufCFieldDescriptor *f)
{
	if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
		return false;
	const ProtobufCMessageDescriptor *d = f->descriptor;
	size_t n = strlen(d->name);
	return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
	       strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static json_t *message_to_json(const ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	const char *base = (const char *)msg;
	json_t *obj = json_object();
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = base + f->offset;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)p;
			if (is_map_entry(f)) {
				json_t *m = json_object();
				for (size_t k = 0; k < n; k++) {
					const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
					const ProtobufCMessageDescriptor *ed = e->descriptor;
					const char *key =
					    *(char *const *)((const char *)e + ed->fields[0].offset);
					json_t *jk = json_text(key ? key : ""); /* keys must be UTF-8 too */
					json_object_set_new(
					    m, json_is_string(jk) ? json_string_value(jk) : "",
					    value_to_json(&ed->fields[1],
					                  (const char *)e + ed->fields[1].offset));
					json_decref(jk);
				}
				json_object_set_new(obj, f->name, m);
				continue;
			}
			json_t *a = json_array();
			for (size_t k = 0; k < n; k++)
				json_array_append_new(a, value_to_json(f, arr + k * type_size(f)));
			json_object_set_new(obj, f->name, a);
			continue;
		}
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
			if (which != f->id)
				continue;
		} else if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(ProtobufCMessage *const *)p) {
			continue;
		}
		json_object_set_new(obj, f->name, value_to_json(f, p));
	}
	return obj;
}

/*
 * Blanks what a terminal could take for a control: C0 and DEL, the C1 range
 * U+0080-U+009F (UTF-8 C2 80 to C2 9F; U+009B is CSI, as ESC [ is), and every
 * byte that is not part of valid UTF-8, which an 8-bit terminal reads as
 * Latin-1, where 0x80-0x9F are the same C1 controls. In place: each byte of
 * such a sequence becomes one space.
 */
void cli_clean_str(char *s)
{
	unsigned char *p = (unsigned char *)s;
	while (p && *p) {
		size_t n = drv_utf8_len((const char *)p);
		bool control = n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)) ||
		               (n == 2 && p[0] == 0xc2 && p[1] < 0xa0);
		if (n == 0)
			n = 1;
		if (control)
			memset(p, ' ', n);
		p += n;
	}
}

void cli_clean_text(ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	char *base = (char *)msg;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		void *p = base + f->offset;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			void **arr = *(void ***)p;
			for (size_t k = 0; k < n; k++) {
				if (f->type == PROTOBUF_C_TYPE_STRING)
					cli_clean_str(arr[k]);
				else if (arr[k])
					cli_clean_text(arr[k]);
			}
			continue;
		}
		/* A oneof's members share their storage: only the one set may be read. */
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		if (f->type == PROTOBUF_C_TYPE_STRING)
			cli_clean_str(*(char **)p);
		else if (*(ProtobufCMessage **)p)
			cli_clean_text(*(ProtobufCMessage **)p);
	}
}

void cli_print_json_to(FILE *f, const ProtobufCMessage *msg)
{
	json_t *j = message_to_json(msg);
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	json_decref(j);
	if (!text)
		abort();
	/*
	 * jansson escapes C0 controls but writes DEL and C1 (U+0080-U+009F) as
	 * they are, which a terminal obeys. Its output is valid UTF-8, where those
	 * can only be characters inside strings: each is escaped as \u00XX, so the
	 * JSON keeps its value and the terminal sees ASCII.
	 */
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if (*p == 0x7f) {
			fputs("\\u007f", f);
		} else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] < 0xa0) {
			fprintf(f, "\\u%04x", p[1]);
			p++;
		} else {
			fputc(*p, f);
		}
	}
	fputc('\n', f);
	free(text);
}

void cli_print_json(const ProtobufCMessage *msg)
{
	cli_print_json_to(stdout, msg);
}

struct cli_table {
	int ncols;
	size_t nrows, cap;
	char **cells; /* row-major, nrows+1 rows with the header first */
};

struct cli_table *cli_table_new(int ncols, const char *const *headers)
{
	struct cli_table *t = calloc(1, sizeof(*t));
	if (!t)
		abort();
	t->ncols = ncols;
	cli_table_row(t, headers);
	return t;
}

void cli_table_row(struct cli_table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 16;
		t->cells = realloc(t->cells, t->cap * (size_t)t->ncols * sizeof(char *));
		if (!t->cells)
			abort();
	}
	for (int i = 0; i < t->ncols; i++) {
		const char *s = cells[i] ? cells[i] : "";
		/* Cells are one line each: a multi-line driver message would break the table. */
		char *c = strdup(s);
		if (!c)
			abort();
		for (char *p = c; *p; p++)
			if (*p == '\n' || *p == '\t' || *p == '\r')
				*p = ' ';
		t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = c;
	}
	t->nrows++;
}

void cli_table_print(struct cli_table *t, FILE *f)
{
	size_t *w = calloc((size_t)t->ncols, sizeof(size_t));
	if (!w)
		abort();
	for (size_t r = 0; r < t->nrows; r++)
		for (int i = 0; i < t->ncols; i++) {
			size_t n = strlen(t->cells[r * (size_t)t->ncols + (size_t)i]);
			if (n > w[i])
				w[i] = n;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (int i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			if (i == t->ncols - 1)
				fprintf(f, "%s", s);
			else
				fprintf(f, "%-*s  ", (int)w[i], s);
		}
		fputc('\n', f);
	}
	for (size_t k = 0; k < t->nrows * (size_t)t->ncols; k++)
		free(t->cells[k]);
	free(t->cells);
	free(w);
	free(t);
}

const char *cli_features_str(const int *features, size_t n, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < n && o < len; i++) {
		const char *name = drv_feature_name(features[i]);
		char num[16];
		if (!name) {
			snprintf(num, sizeof(num), "%d", features[i]);
			name = num;
		}
		o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "," : "", name);
	}
	if (!buf[0])
		snprintf(buf, len, "-");
	return buf;
}

const char *cli_enum_short(const ProtobufCEnumDescriptor *d, int value, const char *prefix, char *buf,
                           size_t len)
{
	const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, value);
	if (!ev) {
		snprintf(buf, len, "?(%d)", value);
		return buf;
	}
	const char *s = ev->name;
	size_t pl = strlen(prefix);
	if (strncmp(s, prefix, pl) == 0)
		s += pl;
	size_t i = 0;
	for (; s[i] && i + 1 < len; i++)
		buf[i] = (char)tolower((unsigned char)s[i]);
	buf[i] = '\0';
	return buf;
}

const char *cli_time_str(int64_t unix_ms, char *buf, size_t len)
{
	if (unix_ms <= 0) {
		snprintf(buf, len, "-");
		return buf;
	}
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	return buf;
}

const char *cli_mib_str(uint64_t mib, char *buf, size_t len)
{
	if (mib >= 1024 && mib % 1024 == 0)
		snprintf(buf, len, "%lluGiB", (unsigned long long)(mib / 1024));
	else if (mib >= 1024)
		snprintf(buf, len, "%.1fGiB", (double)mib / 1024.0);
	else
		snprintf(buf, len, "%lluMiB", (unsigned long long)mib);
	return buf;
}

const char *cli_gpus_str(const Drover__Compute__V1__Resources *r, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; r && i < r->n_gpus && o < len; i++) {
		const Drover__Compute__V1__Gpu *g = r->gpus[i];
		char mem[32];
		o +=
		    (size_t)snprintf(buf + o, len - o, "%s%ux%s (%s)", o ? ", " : "", g->count ? g->count : 1,
		                     g->name, cli_mib_str(g->memory_mib, mem, sizeof(mem)));
	}
	if (!buf[0])
		snprintf(buf, len, "-");
	return buf;
}

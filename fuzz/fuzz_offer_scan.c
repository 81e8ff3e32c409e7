/*
 * droverd's hand-written wire walk (srv__offers_scan in
 * server/src/srv_offers.c): where each offer of a driver's GetOffersResponse
 * lies in the bytes the driver sent, so that droverd can forward them without
 * packing them again. The input is the response's bytes.
 *
 * What must hold, against protobuf-c's unpack of the same bytes: whenever
 * protobuf-c accepts them, the scan finds exactly its offers, each span
 * inside the input and unpacking (after its length varint) to an offer equal
 * to protobuf-c's offers[k]. When the scan succeeds on bytes protobuf-c
 * refuses, no harm is done (droverd never scans bytes it could not unpack),
 * but every span must still lie inside the input. (It does succeed on some:
 * the scan reads any tag varint up to 10 bytes, protobuf-c at most 5, and
 * protobuf-c takes field number 0 in a non-canonical tag such as 80 00.
 * Both differences only make the scan decline, or concern bytes droverd has
 * already refused.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "drover/compute/v1/compute.pb-c.h"
#include "msg_equal.h"
#include "srv_engine_internal.h"

/* The length varint in front of a span's body; 0 when cut short. */
static size_t varint(const uint8_t *p, size_t n, uint64_t *v)
{
	*v = 0;
	for (size_t i = 0; i < n && i < 10; i++) {
		*v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80))
			return i + 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Drover__Compute__V1__GetOffersResponse *ref =
	    drover__compute__v1__get_offers_response__unpack(NULL, size, data);
	/* Bytes protobuf-c refuses are never scanned; a few counts still try the scan's bounds on them. */
	size_t n = ref ? ref->n_offers : size % 8;
	struct srv__span *at = malloc((n + 1) * sizeof(*at));
	if (!at)
		abort();
	bool ok = srv__offers_scan(data, size, n, at);
	if (ref && !ok) {
		fprintf(stderr, "fuzz_offer_scan: protobuf-c found %zu offers, the scan did not\n", n);
		abort();
	}
	for (size_t k = 0; ok && k < n; k++) {
		if (at[k].p < data || at[k].len > size || (size_t)(at[k].p - data) > size - at[k].len)
			abort(); /* outside the input */
		if (!ref)
			continue;
		uint64_t body;
		size_t h = varint(at[k].p, at[k].len, &body);
		if (!h || body != at[k].len - h)
			abort();
		Drover__Compute__V1__Offer *o = drover__compute__v1__offer__unpack(NULL, body, at[k].p + h);
		char where[512];
		if (!o || !pbc_msg_equal(&ref->offers[k]->base, &o->base, "offer", where, sizeof(where))) {
			fprintf(stderr, "fuzz_offer_scan: span %zu is not offers[%zu]: %s\n", k, k,
			        o ? where : "no offer");
			abort();
		}
		drover__compute__v1__offer__free_unpacked(o, NULL);
	}
	free(at);
	if (ref)
		drover__compute__v1__get_offers_response__free_unpacked(ref, NULL);
	return 0;
}

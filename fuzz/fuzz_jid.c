/* libFuzzer target for src/jid/jid.c. Beyond "never crash", it checks the
 * property the rest of the server relies on: normalisation is idempotent.
 * A parsed JID formats to a string that parses back to the same JID, and
 * each jid_prep_* function leaves its own output unchanged. Any breach
 * aborts so libFuzzer keeps the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jid/jid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*prep_fn)(const char *, size_t, char *, size_t);

static void check_prep(prep_fn fn, const char *s, size_t n)
{
	char once[JID_PART_MAX + 1], twice[JID_PART_MAX + 1];
	int a = fn(s, n, once, sizeof once);
	int b;

	if (a < 0)
		return;
	if (a == 0 || a > JID_PART_MAX || strlen(once) != (size_t)a)
		abort();
	b = fn(once, (size_t)a, twice, sizeof twice);
	if (b != a || memcmp(once, twice, (size_t)a + 1) != 0)
		abort();
}

static void check_roundtrip(const struct jid *j, int bare)
{
	char out[3 * (JID_PART_MAX + 1)];
	struct jid again;
	int n = bare ? jid_format_bare(j, out, sizeof out)
		     : jid_format(j, out, sizeof out);

	if (n <= 0 || strlen(out) != (size_t)n)
		abort();
	if (jid_parse(&again, out, (size_t)n) != 0)
		abort();
	if (strcmp(again.local, j->local) != 0 ||
	    strcmp(again.domain, j->domain) != 0 ||
	    strcmp(again.resource, bare ? "" : j->resource) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct jid j;

	check_prep(jid_prep_local, s, size);
	check_prep(jid_prep_domain, s, size);
	check_prep(jid_prep_resource, s, size);
	if (jid_parse(&j, s, size) != 0)
		return 0;
	if (j.domain[0] == '\0')
		abort();
	check_roundtrip(&j, 0);
	check_roundtrip(&j, 1);
	return 0;
}

/* libFuzzer target for what a SASL2 client controls before it is
 * authenticated: <authenticate/> as src/c2s/sasl2.c reads it (the input
 * parsed as one element, as the stream parser would hand it over), and the
 * HT initial response of a FAST login (src/auth/fast.c), given the input as
 * its base64. Beyond "never crash": every string read must be NUL
 * terminated within its field, and a request is read the same way twice. */
#include <gsasl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/fast.h"
#include "c2s/sasl2.h"
#include "core/arena.h"
#include "xml/xml_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const struct sasl2_request *r)
{
	if (memchr(r->mech, 0, sizeof r->mech) == NULL ||
	    memchr(r->ua_id, 0, sizeof r->ua_id) == NULL ||
	    memchr(r->tag, 0, sizeof r->tag) == NULL ||
	    memchr(r->request_token, 0, sizeof r->request_token) == NULL)
		abort();
	for (const char *t = r->tag; *t; t++)
		if (*t == '/' || *t == '@' || (unsigned char)*t < 0x21)
			abort(); /* the tag goes into a resource */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_parse_element(&a, (const char *)data, size);
	if (n != NULL) {
		const char *cond = NULL, *cond2 = NULL;
		struct sasl2_request *r = sasl2_parse(n, &a, &cond);
		struct sasl2_request *r2 = sasl2_parse(n, &a, &cond2);
		if ((r == NULL) != (r2 == NULL) || (r == NULL && cond != cond2))
			abort();
		if (r != NULL) {
			check_request(r);
			char res[128];
			sasl2_bind_resource(r, "a@b", res, sizeof res);
		}
		sasl2_free(r);
		sasl2_free(r2);
	}
	arena_reset(&a);

	char *b64 = NULL;
	size_t len;
	if (gsasl_base64_to((const char *)data, size, &b64, &len) == GSASL_OK) {
		char local[1024];
		unsigned char hash[32];
		if (fast_parse_initial(b64, local, sizeof local, hash) == 0 &&
		    memchr(local, 0, sizeof local) == NULL)
			abort();
		gsasl_free(b64);
	}
	return 0;
}

/* Unit tests for src/c2s/sasl2.c (reading <authenticate/>, the Bind 2
 * resource) and the parts of src/auth/fast.c that need no store (the HT
 * initial response). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <gsasl.h>
#include <stdlib.h>
#include <string.h>

#include "auth/fast.h"
#include "c2s/sasl2.h"
#include "core/arena.h"
#include "xml/xml_parse.h"

static struct sasl2_request *parse(const char *xml, const char **condition)
{
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_parse_element(&a, xml, strlen(xml));
	assert_non_null(n);
	*condition = NULL;
	struct sasl2_request *r = sasl2_parse(n, &a, condition);
	arena_reset(&a);
	return r;
}

static void test_parse_full_request(void **state)
{
	(void)state;
	const char *cond;
	struct sasl2_request *r = parse(
		"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>"
		"<initial-response>\n  biwsbj1hbGljZSxyPWFiYw==\n</initial-response>"
		"<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'>"
		"<software>AwesomeXMPP</software><device>Kiva&#9;s Phone</device></user-agent>"
		"<bind xmlns='urn:xmpp:bind:0'><tag>Awe some/XMPP!</tag>"
		"<enable xmlns='urn:xmpp:carbons:2'/><unknown xmlns='urn:x'/></bind>"
		"<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>"
		"<megabind xmlns='urn:example:megabind'/>"
		"</authenticate>",
		&cond);
	assert_non_null(r);
	assert_string_equal(r->mech, "SCRAM-SHA-256");
	assert_string_equal(r->initial, "biwsbj1hbGljZSxyPWFiYw==");
	assert_string_equal(r->ua_id, "d4565fa7-4d72-4749-b3d3-740edbf87770");
	assert_string_equal(r->software, "AwesomeXMPP");
	assert_string_equal(r->device, "Kiva s Phone");
	assert_true(r->bind);
	assert_string_equal(r->tag, "AwesomeXMPP");
	assert_true(r->carbons);
	assert_false(r->sm_enable);
	assert_false(r->fast);
	assert_string_equal(r->request_token, "HT-SHA-256-NONE");
	sasl2_free(r);
}

static void test_parse_refusals(void **state)
{
	(void)state;
	const char *cond;
	assert_null(parse("<authenticate xmlns='urn:xmpp:sasl:2'/>", &cond));
	assert_string_equal(cond, "invalid-mechanism");
	assert_null(parse("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1' "
			  "upgrade='UPGR-SCRAM-SHA-256'/>",
			  &cond));
	assert_string_equal(cond, "invalid-mechanism");
	assert_null(parse("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>"
			  "<initial-response>AA==</initial-response>"
			  "<initial-response>AA==</initial-response></authenticate>",
			  &cond));
	assert_string_equal(cond, "malformed-request");
	static const char *const counts[] = { "0", "-1", "12x", "" };
	for (size_t i = 0; i < sizeof counts / sizeof *counts; i++) {
		char xml[256];
		snprintf(xml, sizeof xml,
			 "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>"
			 "<fast xmlns='urn:xmpp:fast:0' count='%s'/></authenticate>",
			 counts[i]);
		assert_null(parse(xml, &cond));
		assert_string_equal(cond, "malformed-request");
	}
	struct sasl2_request *r =
		parse("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>"
		      "<fast xmlns='urn:xmpp:fast:0' count='42' invalidate='1'/></authenticate>",
		      &cond);
	assert_non_null(r);
	assert_true(r->fast && r->fast_invalidate);
	assert_int_equal(r->fast_count, 42);
	assert_null(r->initial);
	sasl2_free(r);
}

static void test_bind_resource(void **state)
{
	(void)state;
	struct sasl2_request r = { 0 };
	char a[64], b[64], c[64];
	snprintf(r.ua_id, sizeof r.ua_id, "device-1");
	snprintf(r.tag, sizeof r.tag, "phone");
	sasl2_bind_resource(&r, "alice@example.com", a, sizeof a);
	sasl2_bind_resource(&r, "alice@example.com", b, sizeof b);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), strlen("phone.") + 8);
	assert_memory_equal(a, "phone.", 6);
	sasl2_bind_resource(&r, "bob@example.com", c, sizeof c);
	assert_string_not_equal(a, c);
	r.ua_id[0] = '\0';
	r.tag[0] = '\0';
	sasl2_bind_resource(&r, "alice@example.com", a, sizeof a);
	sasl2_bind_resource(&r, "alice@example.com", b, sizeof b);
	assert_string_not_equal(a, b);
	assert_memory_equal(a, "natter.", 7);
}

static char *b64(const char *data, size_t len)
{
	char *out = NULL;
	size_t n;
	assert_int_equal(gsasl_base64_to(data, len, &out, &n), GSASL_OK);
	return out;
}

static void test_ht_initial_response(void **state)
{
	(void)state;
	char raw[64] = "Alice";
	memset(raw + 6, 0xab, 32);
	raw[5] = '\0';
	char *ok = b64(raw, 38);
	char local[64];
	unsigned char hash[32];
	assert_int_equal(fast_parse_initial(ok, local, sizeof local, hash), 0);
	assert_string_equal(local, "alice");
	assert_int_equal(hash[0], 0xab);
	gsasl_free(ok);
	char *short_hash = b64(raw, 37);
	assert_int_equal(fast_parse_initial(short_hash, local, sizeof local, hash), -1);
	gsasl_free(short_hash);
	char *no_name = b64(raw + 5, 33);
	assert_int_equal(fast_parse_initial(no_name, local, sizeof local, hash), -1);
	gsasl_free(no_name);
	assert_int_equal(fast_parse_initial("%%%", local, sizeof local, hash), -1);
	assert_int_equal(fast_parse_initial("", local, sizeof local, hash), -1);
	memcpy(raw, "a b@", 4);
	raw[4] = '\0';
	char *bad_name = b64(raw, 37);
	assert_int_equal(fast_parse_initial(bad_name, local, sizeof local, hash), -2);
	gsasl_free(bad_name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_full_request),
		cmocka_unit_test(test_parse_refusals),
		cmocka_unit_test(test_bind_resource),
		cmocka_unit_test(test_ht_initial_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

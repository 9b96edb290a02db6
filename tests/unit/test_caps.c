/* Unit tests for src/modules/caps.c: the XEP-0115 §5.1 verification
 * string, with the examples of XEP-0115 §5.2 and §5.3, and the inputs
 * §5.4 refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "modules/caps.h"
#include "xml/xml_parse.h"

static void expect_ver(const char *query, const char *want)
{
	struct arena a;
	arena_init(&a);
	struct xml_node *q = xml_parse_element(&a, query, strlen(query));
	assert_non_null(q);
	char ver[32];
	int rc = caps_hash(q, &a, ver, sizeof ver);
	if (want == NULL) {
		assert_int_equal(rc, -1);
	} else {
		assert_int_equal(rc, 0);
		assert_string_equal(ver, want);
	}
	arena_reset(&a);
}

/* XEP-0115 §5.2: the simple example. */
static void simple_example(void **state)
{
	(void)state;
	expect_ver("<query xmlns='http://jabber.org/protocol/disco#info'>"
		   "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
		   "<feature var='http://jabber.org/protocol/caps'/>"
		   "<feature var='http://jabber.org/protocol/disco#info'/>"
		   "<feature var='http://jabber.org/protocol/disco#items'/>"
		   "<feature var='http://jabber.org/protocol/muc'/>"
		   "</query>",
		   "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

/* XEP-0115 §5.3: identities with xml:lang, an extended form. */
static void complex_example(void **state)
{
	(void)state;
	expect_ver("<query xmlns='http://jabber.org/protocol/disco#info'>"
		   "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
		   "<identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>"
		   "<feature var='http://jabber.org/protocol/caps'/>"
		   "<feature var='http://jabber.org/protocol/disco#info'/>"
		   "<feature var='http://jabber.org/protocol/disco#items'/>"
		   "<feature var='http://jabber.org/protocol/muc'/>"
		   "<x xmlns='jabber:x:data' type='result'>"
		   "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
		   "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
		   "<field var='os'><value>Mac</value></field>"
		   "<field var='os_version'><value>10.5.1</value></field>"
		   "<field var='software'><value>Psi</value></field>"
		   "<field var='software_version'><value>0.11</value></field>"
		   "</x></query>",
		   "q07IKJEyjvHSyhy//CH0CxmKi8w=");
}

/* Features sort as values: '#' comes before the '<' that ends each
 * (a client as shipped, slixmpp, announced this one). */
static void sorted_as_values(void **state)
{
	(void)state;
	expect_ver("<query xmlns='http://jabber.org/protocol/disco#info'>"
		   "<identity category='client' type='bot'/>"
		   "<feature var='http://jabber.org/protocol/tune+notify'/>"
		   "<feature var='http://jabber.org/protocol/disco#info'/>"
		   "<feature var='jabber:x:data'/>"
		   "<feature var='http://jabber.org/protocol/shim'/>"
		   "<feature var='http://jabber.org/protocol/shim#SubID'/>"
		   "<feature var='http://jabber.org/protocol/caps'/></query>",
		   "nsPvSXUG25d7SL+WFrO1OMI52Cs=");
}

/* §5.4: duplicate features (or identities) make no valid answer. */
static void duplicates_refused(void **state)
{
	(void)state;
	expect_ver("<query xmlns='http://jabber.org/protocol/disco#info'>"
		   "<identity category='client' type='pc'/>"
		   "<feature var='urn:a'/><feature var='urn:a'/></query>",
		   NULL);
	expect_ver("<query xmlns='http://jabber.org/protocol/disco#info'>"
		   "<identity category='client' type='pc'/>"
		   "<identity category='client' type='pc'/></query>",
		   NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(simple_example),
		cmocka_unit_test(complex_example),
		cmocka_unit_test(sorted_as_values),
		cmocka_unit_test(duplicates_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

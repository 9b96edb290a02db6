/* Unit tests for src/xml/xml.c: the tree builders and lookups, and the
 * serialiser (escaping, where xmlns is written, xml: and other qualified
 * attributes), plus the round trip parse -> serialise -> parse. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml/xml.h"
#include "xml/xml_stream.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Serialises n into a fresh NUL-terminated string (caller frees). */
static char *ser(const struct xml_node *n, const char *context_ns)
{
	struct buf b;
	buf_init(&b);
	xml_serialize(n, context_ns, &b);
	buf_append(&b, "", 1);
	return b.data;
}

static void expect_ser(const struct xml_node *n, const char *context_ns, const char *want)
{
	char *got = ser(n, context_ns);
	assert_string_equal(got, want);
	free(got);
}

/* A notation independent of xml_serialize, to compare trees:
 * {ns}name[{ns}attr='v'](children), text as "text". */
static void dump(const struct xml_node *n, struct buf *b)
{
	if (n->name == NULL) {
		buf_puts(b, "\"");
		buf_append(b, n->text, n->text_len);
		buf_puts(b, "\"");
		return;
	}
	buf_printf(b, "{%s}%s", n->ns, n->name);
	buf_puts(b, "[");
	for (const struct xml_attr *at = n->attrs; at; at = at->next)
		buf_printf(b, "{%s}%s='%s' ", at->ns, at->name, at->value);
	buf_puts(b, "](");
	for (const struct xml_node *c = n->children; c; c = c->next)
		dump(c, b);
	buf_puts(b, ")");
}

/* --- builders and lookups --- */

static void test_build_and_lookup(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *m = xml_new(&a, NS_CLIENT, "message");
	xml_set_attr(&a, m, "to", "juliet@example.com");
	xml_set_attr(&a, m, "type", "chat");
	xml_set_attr_ns(&a, m, NS_XML, "lang", "en");
	struct xml_node *body = xml_add_child(&a, m, NS_CLIENT, "body");
	xml_add_text(&a, body, "Hello, ", 7);
	xml_add_text(&a, body, "world!xx", 6);
	struct xml_node *x = xml_add_child(&a, m, "urn:x", "x");
	xml_add_text(&a, m, "tail", 4);

	assert_string_equal(xml_attr(m, "to"), "juliet@example.com");
	assert_string_equal(xml_attr(m, "type"), "chat");
	assert_null(xml_attr(m, "lang")); /* qualified: not found by plain name */
	assert_null(xml_attr(m, "from"));
	assert_ptr_equal(xml_child(m, NS_CLIENT, "body"), body);
	assert_ptr_equal(xml_child(m, "urn:x", NULL), x);
	assert_ptr_equal(xml_child(m, NULL, "x"), x);
	assert_null(xml_child(m, "urn:other", "x"));
	assert_null(xml_child(m, NS_CLIENT, "x"));
	assert_ptr_equal(xml_first_element(m), body);
	assert_int_equal(xml_element_count(m), 2);
	assert_int_equal(xml_element_count(x), 0);
	assert_null(xml_first_element(x));
	assert_string_equal(xml_text(&a, body), "Hello, world!");
	assert_string_equal(xml_text(&a, m), "tail");
	assert_string_equal(xml_text(&a, x), "");
	assert_true(xml_is(m, NS_CLIENT, "message"));
	assert_true(xml_is(m, NULL, "message"));
	assert_false(xml_is(m, NS_SERVER, "message"));
	assert_false(xml_is(m, NS_CLIENT, "iq"));
	assert_false(xml_is(body->children, NULL, "body"));
	assert_ptr_equal(body->parent, m);
	assert_ptr_equal(m->last, m->children->next->next);
	arena_reset(&a);
}

static void test_set_attr_replaces_and_removes(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_new(&a, NS_CLIENT, "iq");
	xml_set_attr(&a, n, "id", "1");
	xml_set_attr(&a, n, "type", "get");
	xml_set_attr_ns(&a, n, "urn:q", "id", "q");
	xml_set_attr(&a, n, "id", "2");
	assert_string_equal(xml_attr(n, "id"), "2");
	expect_ser(n, NS_CLIENT, "<iq id='2' type='get' xmlns:a0='urn:q' a0:id='q'/>");
	xml_set_attr(&a, n, "id", NULL);
	assert_null(xml_attr(n, "id"));
	expect_ser(n, NS_CLIENT, "<iq type='get' xmlns:a0='urn:q' a0:id='q'/>");
	xml_set_attr_ns(&a, n, "urn:q", "id", NULL);
	xml_set_attr(&a, n, "absent", NULL);
	expect_ser(n, NS_CLIENT, "<iq type='get'/>");
	xml_set_attr(&a, n, "type", NULL);
	assert_null(n->attrs);
	expect_ser(n, NS_CLIENT, "<iq/>");
	arena_reset(&a);
}

/* The builders copy their arguments into the arena. */
static void test_builders_copy(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	char ns[] = "urn:a", name[] = "el", val[] = "v", text[] = "t";
	struct xml_node *n = xml_new(&a, ns, name);
	xml_set_attr(&a, n, name, val);
	xml_add_text(&a, n, text, 1);
	ns[0] = name[0] = val[0] = text[0] = 'X';
	expect_ser(n, "", "<el xmlns='urn:a' el='v'>t</el>");
	arena_reset(&a);
}

/* --- serialiser --- */

static void test_escape_text(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *b = xml_new(&a, NS_CLIENT, "body");
	const char t[] = "a<b>&c'd\"e ]]> \xe2\x98\xba\n\tz";
	xml_add_text(&a, b, t, sizeof t - 1);
	expect_ser(b, NS_CLIENT,
		   "<body>a&lt;b&gt;&amp;c&apos;d&quot;e ]]&gt; \xe2\x98\xba\n\tz</body>");
	arena_reset(&a);
}

/* Text is written with its length: an embedded NUL does not cut it short. */
static void test_text_length_respected(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *b = xml_new(&a, NS_CLIENT, "body");
	xml_add_text(&a, b, "abcdef", 3);
	expect_ser(b, NS_CLIENT, "<body>abc</body>");
	expect_ser(b->children, NS_CLIENT, "abc");
	arena_reset(&a);
}

static void test_escape_attributes(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_new(&a, NS_CLIENT, "message");
	xml_set_attr(&a, n, "to", "a'b\"c<d>e&f");
	xml_set_attr(&a, n, "id", "&amp;");
	expect_ser(n, NS_CLIENT,
		   "<message to='a&apos;b&quot;c&lt;d&gt;e&amp;f' id='&amp;amp;'/>");
	arena_reset(&a);
}

/* Regression: whitespace a parser would normalise was written raw, so a
 * CR in text and TAB/LF/CR in attribute values did not survive a trip. */
static void test_escape_whitespace_that_parsers_normalise(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_new(&a, NS_CLIENT, "m");
	xml_set_attr(&a, n, "v", "a\tb\nc\rd e");
	xml_set_attr_ns(&a, n, "urn:q", "w", "\r\n");
	xml_add_text(&a, n, "x\ty\nz\r.", 7);
	expect_ser(n, NS_CLIENT, "<m v='a&#9;b&#10;c&#13;d e' xmlns:a0='urn:q' a0:w='&#13;&#10;'>"
				 "x\ty\nz&#13;.</m>");
	arena_reset(&a);
}

static void test_xmlns_only_where_namespace_changes(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *m = xml_new(&a, NS_CLIENT, "message");
	xml_add_child(&a, m, NS_CLIENT, "body");
	struct xml_node *x = xml_add_child(&a, m, "urn:x", "x");
	struct xml_node *y = xml_add_child(&a, x, "urn:x", "y");
	xml_add_child(&a, y, NS_CLIENT, "z");
	xml_add_child(&a, x, "", "none");
	struct xml_node *back = xml_add_child(&a, m, NS_CLIENT, "thread");
	xml_add_text(&a, back, "t", 1);

	expect_ser(m, NS_CLIENT,
		   "<message><body/><x xmlns='urn:x'><y><z xmlns='jabber:client'/></y>"
		   "<none xmlns=''/></x><thread>t</thread></message>");
	/* In another context the root declares its namespace, children
	 * inherit it from the root, not from the context. */
	expect_ser(m, NS_SERVER,
		   "<message xmlns='jabber:client'><body/><x xmlns='urn:x'><y><z "
		   "xmlns='jabber:client'/></y><none xmlns=''/></x><thread>t</thread></message>");
	expect_ser(x, "urn:x", "<x><y><z xmlns='jabber:client'/></y><none xmlns=''/></x>");
	expect_ser(x, "", "<x xmlns='urn:x'><y><z xmlns='jabber:client'/></y><none xmlns=''/></x>");
	expect_ser(x->last, "", "<none/>");
	arena_reset(&a);
}

static void test_namespace_value_escaped(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_new(&a, "urn:a'b&c", "e");
	expect_ser(n, NS_CLIENT, "<e xmlns='urn:a&apos;b&amp;c'/>");
	arena_reset(&a);
}

static void test_xml_lang(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *m = xml_new(&a, NS_CLIENT, "message");
	xml_set_attr_ns(&a, m, NS_XML, "lang", "en");
	struct xml_node *b = xml_add_child(&a, m, NS_CLIENT, "body");
	xml_set_attr_ns(&a, b, NS_XML, "lang", "de-CH");
	xml_add_text(&a, b, "Grüezi", 7);
	expect_ser(m, NS_CLIENT, "<message xml:lang='en'><body xml:lang='de-CH'>Grüezi"
				 "</body></message>");
	arena_reset(&a);
}

static void test_qualified_attributes(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_new(&a, NS_CLIENT, "presence");
	xml_set_attr_ns(&a, n, "urn:one", "x", "1");
	xml_set_attr(&a, n, "plain", "p");
	xml_set_attr_ns(&a, n, "urn:two", "x", "2");
	xml_set_attr_ns(&a, n, NS_XML, "lang", "en");
	struct xml_node *c = xml_add_child(&a, n, "urn:c", "c");
	xml_set_attr_ns(&a, c, "urn:one", "y", "3");
	expect_ser(n, NS_CLIENT,
		   "<presence xmlns:a0='urn:one' a0:x='1' plain='p' xmlns:a1='urn:two' a1:x='2' "
		   "xml:lang='en'><c xmlns='urn:c' xmlns:a0='urn:one' a0:y='3'/></presence>");
	arena_reset(&a);
}

/* --- round trip through the stream parser --- */

struct parsed {
	int count;
	char *dump;  /* of the last stanza */
	char *ser;   /* its serialisation in the stream's default namespace */
	char ns[256];
};

static void p_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct parsed *p = ud;
	(void)root;
	snprintf(p->ns, sizeof p->ns, "%s", default_ns);
}

static void p_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct parsed *p = ud;
	struct buf b;
	(void)a;
	p->count++;
	free(p->dump);
	free(p->ser);
	buf_init(&b);
	dump(st, &b);
	buf_append(&b, "", 1);
	p->dump = b.data;
	p->ser = ser(st, p->ns);
}

static void p_close(void *ud) { (void)ud; }

static const struct xml_stream_handlers p_handlers = { p_open, p_stanza, p_close };

/* Parses one stanza inside a stream whose default namespace is ns. */
static void parse_one(const char *ns, const char *stanza, struct parsed *p)
{
	struct xml_stream_limits lim = { 1 << 20, 64, 64 };
	struct xml_stream *xs = xml_stream_new(&lim, &p_handlers, p);
	struct buf b;
	memset(p, 0, sizeof *p);
	buf_init(&b);
	buf_puts(&b, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='");
	buf_append_escaped(&b, ns, strlen(ns));
	buf_puts(&b, "'>");
	buf_puts(&b, stanza);
	enum xml_stream_result r = xml_stream_feed(xs, b.data, b.len);
	if (r != XS_OK)
		fail_msg("parse failed (%d) for %s", r, stanza);
	assert_int_equal(p->count, 1);
	xml_stream_free(xs);
	buf_free(&b);
}

static void free_parsed(struct parsed *p)
{
	free(p->dump);
	free(p->ser);
}

static void expect_round_trip(const char *ns, const char *stanza, const char *want_ser)
{
	struct parsed one, two;
	parse_one(ns, stanza, &one);
	parse_one(ns, one.ser, &two);
	if (want_ser != NULL)
		assert_string_equal(one.ser, want_ser);
	assert_string_equal(two.dump, one.dump);
	assert_string_equal(two.ser, one.ser);
	free_parsed(&one);
	free_parsed(&two);
}

static void test_round_trip_canonical_form(void **state)
{
	(void)state;
	/* Prefixes from the wire are not kept; the output is the same
	 * whatever prefixes the sender chose. */
	expect_round_trip(NS_CLIENT,
			  "<c:message xmlns:c='jabber:client' xmlns:e='urn:e' to=\"a@b\" "
			  "e:x=\"1\"><c:body>hi</c:body><e:x><y/></e:x></c:message>",
			  "<message to='a@b' xmlns:a0='urn:e' a0:x='1'><body>hi</body>"
			  "<x xmlns='urn:e'><y xmlns='jabber:client'/></x></message>");
	expect_round_trip(NS_CLIENT, "<message><body><![CDATA[<&>]]>&#x263A;</body></message>",
			  "<message><body>&lt;&amp;&gt;\xe2\x98\xba</body></message>");
}

static void test_round_trip_examples(void **state)
{
	static const char *const t[] = {
		"<message from='juliet@example.com/balcony' to='romeo@example.net' type='chat' "
		"id='ktx72v49' xml:lang='en'><body>Art thou not Romeo, and a Montague?</body>"
		"<thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread></message>",
		"<iq type='result' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
		"<jid>juliet@im.example.com/4db06f06-1ea4-11dc-aca3-000bcd821bfb</jid></bind></iq>",
		"<presence><show>away</show><status xml:lang='de'>Nicht da &amp; &lt;weg&gt;"
		"</status><priority>-1</priority><c xmlns='http://jabber.org/protocol/caps' "
		"hash='sha-1' node='http://x' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMA==</auth>",
		"<message><body>line1\nline2\r\nline3&#13;&#9;tab</body></message>",
		"<message a='&#9;&#10;&#13;' b='x\ny\tz' c=\"'\" d='\"'/>",
		"<message><x xmlns=''><y xmlns='urn:y'><z xmlns=''/></y></x></message>",
		"<p:message xmlns:p='urn:p' xmlns:q='urn:q' q:a='1' p:b='2' xml:space='preserve'>"
		"<q:c q:d='3'>mixed<p:e/>content<![CDATA[ ]]>&apos;</q:c></p:message>",
		"<message>\xf0\x9f\x98\x80 \xc3\xa9 &#x10FFFF; &#xFFFD;</message>",
		"<a><b><c><d><e><f><g>deep</g></f></e></d></c></b></a>",
		"<e a0='plain' xmlns:a0='urn:clash' a0:a0='qualified'/>",
		/* Elements in the XML namespace (the xml: prefix needs no
		 * declaration, and that namespace may not be the default one):
		 * found by fuzz_xml, whose stanza serialised as
		 * <ltive xmlns='http://www.w3.org/XML/1998/namespace'/>. */
		"<xml:ltive xmlns='urn:xmpp:csi:0'/>",
		"<message><xml:x xml:lang='en'><y/><xml:z>t</xml:z><w xmlns='urn:w'/></xml:x>"
		"</message>",
	};
	(void)state;
	for (size_t i = 0; i < COUNT(t); i++) {
		expect_round_trip(NS_CLIENT, t[i], NULL);
		expect_round_trip(NS_SERVER, t[i], NULL);
		expect_round_trip("", t[i], NULL);
	}
}

/* Trees built by hand, not from the wire, read back as built. */
static void test_round_trip_built_tree(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	struct xml_node *m = xml_new(&a, NS_CLIENT, "message");
	xml_set_attr(&a, m, "to", "x@y/\xe2\x98\xba");
	xml_set_attr_ns(&a, m, "urn:q", "q", "<'\">\t\n\r&");
	xml_set_attr_ns(&a, m, NS_XML, "lang", "en");
	struct xml_node *b = xml_add_child(&a, m, NS_CLIENT, "body");
	xml_add_text(&a, b, "a\r\nb<c>&'\"", 10);
	struct xml_node *x = xml_add_child(&a, m, "", "x");
	xml_add_child(&a, x, "urn:y", "y");

	struct buf want;
	buf_init(&want);
	dump(m, &want);
	buf_append(&want, "", 1);
	char *s = ser(m, NS_CLIENT);
	struct parsed p;
	parse_one(NS_CLIENT, s, &p);
	assert_string_equal(p.dump, want.data);
	assert_string_equal(p.ser, s);
	free_parsed(&p);
	free(s);
	buf_free(&want);
	arena_reset(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_and_lookup),
		cmocka_unit_test(test_set_attr_replaces_and_removes),
		cmocka_unit_test(test_builders_copy),
		cmocka_unit_test(test_escape_text),
		cmocka_unit_test(test_text_length_respected),
		cmocka_unit_test(test_escape_attributes),
		cmocka_unit_test(test_escape_whitespace_that_parsers_normalise),
		cmocka_unit_test(test_xmlns_only_where_namespace_changes),
		cmocka_unit_test(test_namespace_value_escaped),
		cmocka_unit_test(test_xml_lang),
		cmocka_unit_test(test_qualified_attributes),
		cmocka_unit_test(test_round_trip_canonical_form),
		cmocka_unit_test(test_round_trip_examples),
		cmocka_unit_test(test_round_trip_built_tree),
	};
	return cmocka_run_group_tests_name("xml", tests, NULL, NULL);
}

/* Unit tests for src/xml/xml_stream.c: bytes in, stream-open / stanza /
 * stream-close events out, with restricted XML (RFC 6120 §11) and the hard
 * limits enforced however the input is split into feeds.
 *
 * Stanzas are checked through dump(), a notation written here rather than
 * xml_serialize(), so the parser is tested on its own:
 *   {ns}name[attr='v' {ns}attr='v']("text"{ns}child)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xml/xml_stream.h"

#define STREAM_ROOT                                                                     \
	"<stream:stream xmlns='jabber:client' "                                         \
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' " \
	"xml:lang='en'>"
#define STREAM_OPEN "<?xml version='1.0'?>" STREAM_ROOT
#define STREAM_CLOSE "</stream:stream>"

struct rec {
	struct xml_stream *xs;
	struct xml_stream_limits limits;
	int opens, stanzas, closes;
	struct buf root;        /* dump of the last stream header */
	char default_ns[256];   /* default namespace of the last header */
	struct buf log;         /* dump of each stanza, one per line */
	const char *restart_on; /* stanza name that calls xml_stream_restart */
	const char *stop_on;    /* stanza name that calls xml_stream_stop */
	bool restart_in_open;
	bool grow_stanza;       /* the stanza handler adds nodes in the arena */
};

static void dump(const struct xml_node *n, struct buf *b)
{
	if (n->name == NULL) {
		buf_puts(b, "\"");
		buf_append(b, n->text, n->text_len);
		buf_puts(b, "\"");
		return;
	}
	buf_printf(b, "{%s}%s", n->ns, n->name);
	if (n->attrs != NULL) {
		buf_puts(b, "[");
		for (const struct xml_attr *at = n->attrs; at; at = at->next) {
			if (at->ns[0] != '\0')
				buf_printf(b, "{%s}", at->ns);
			buf_printf(b, "%s='%s'%s", at->name, at->value, at->next ? " " : "");
		}
		buf_puts(b, "]");
	}
	if (n->children != NULL) {
		buf_puts(b, "(");
		for (const struct xml_node *c = n->children; c; c = c->next)
			dump(c, b);
		buf_puts(b, ")");
	}
}

static void on_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct rec *r = ud;
	r->opens++;
	r->root.len = 0;
	dump(root, &r->root);
	buf_append(&r->root, "", 1);
	snprintf(r->default_ns, sizeof r->default_ns, "%s", default_ns);
	if (r->restart_in_open)
		xml_stream_restart(r->xs);
}

static void on_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct rec *r = ud;
	r->stanzas++;
	if (r->grow_stanza) {
		struct xml_node *c = xml_add_child(a, st, "urn:added", "added");
		xml_set_attr(a, c, "k", "v");
		xml_add_text(a, c, "text", 4);
	}
	/* The log stays a C string between events. */
	if (r->log.len > 0)
		r->log.len--;
	dump(st, &r->log);
	buf_append(&r->log, "\n", 2);
	if (r->restart_on != NULL && strcmp(st->name, r->restart_on) == 0)
		xml_stream_restart(r->xs);
	if (r->stop_on != NULL && strcmp(st->name, r->stop_on) == 0)
		xml_stream_stop(r->xs);
}

static void on_close(void *ud)
{
	struct rec *r = ud;
	r->closes++;
}

static const struct xml_stream_handlers handlers = {
	.open = on_open,
	.stanza = on_stanza,
	.close = on_close,
};

static int setup(void **state)
{
	struct rec *r = calloc(1, sizeof *r);
	r->limits = (struct xml_stream_limits){ 4096, 8, 8 };
	buf_init(&r->root);
	buf_init(&r->log);
	buf_append(&r->log, "", 1);
	r->xs = xml_stream_new(&r->limits, &handlers, r);
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct rec *r = *state;
	xml_stream_free(r->xs);
	buf_free(&r->root);
	buf_free(&r->log);
	free(r);
	return 0;
}

/* Replaces the stream with one using other limits. */
static void set_limits(struct rec *r, size_t size, int depth, int attrs)
{
	xml_stream_free(r->xs);
	r->limits = (struct xml_stream_limits){ size, depth, attrs };
	r->xs = xml_stream_new(&r->limits, &handlers, r);
}

static enum xml_stream_result feed(struct rec *r, const char *s)
{
	return xml_stream_feed(r->xs, s, strlen(s));
}

/* Feeds n bytes in pieces of chunk bytes; returns the first result that is
 * not XS_OK, and in *at (if given) how many bytes had been fed by then. */
static enum xml_stream_result feed_chunks(struct rec *r, const char *s, size_t n, size_t chunk,
					  size_t *at)
{
	size_t off = 0;
	while (off < n) {
		size_t k = n - off < chunk ? n - off : chunk;
		enum xml_stream_result res = xml_stream_feed(r->xs, s + off, k);
		off += k;
		if (res != XS_OK) {
			if (at != NULL)
				*at = off;
			return res;
		}
	}
	if (at != NULL)
		*at = off;
	return XS_OK;
}

static void expect_log(struct rec *r, const char *want)
{
	assert_string_equal(r->log.data, want);
}

static double elapsed(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* Joins the pieces (NULL-terminated) into one malloc'd string. */
static char *concat(const char *first, ...)
{
	struct buf b;
	va_list ap;
	buf_init(&b);
	va_start(ap, first);
	for (const char *p = first; p != NULL; p = va_arg(ap, const char *))
		buf_puts(&b, p);
	va_end(ap);
	buf_append(&b, "", 1);
	return b.data;
}

/* --- the stream header --- */

static void test_header_event(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	assert_int_equal(r->opens, 1);
	assert_string_equal(r->default_ns, "jabber:client");
	assert_string_equal(r->root.data,
			    "{http://etherx.jabber.org/streams}stream[to='example.com' version='1.0' "
			    "{http://www.w3.org/XML/1998/namespace}lang='en']");
	assert_int_equal(r->stanzas, 0);
}

static void test_header_without_default_namespace(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
			 XS_OK);
	assert_int_equal(r->opens, 1);
	assert_string_equal(r->default_ns, "");
}

/* Regression: expat reports xmlns='' with a NULL URI, which crashed. */
static void test_header_empty_default_namespace(void **state)
{
	struct rec *r = *state;
	assert_int_equal(
		feed(r, "<stream:stream xmlns='' xmlns:stream='http://etherx.jabber.org/streams'>"
			"<message/>"),
		XS_OK);
	assert_int_equal(r->opens, 1);
	assert_string_equal(r->default_ns, "");
	expect_log(r, "{}message\n");
}

static void test_header_split_byte_by_byte(void **state)
{
	struct rec *r = *state;
	const char *s = STREAM_OPEN;
	for (size_t i = 0; i < strlen(s); i++) {
		assert_int_equal(r->opens, 0);
		assert_int_equal(xml_stream_feed(r->xs, s + i, 1), XS_OK);
	}
	assert_int_equal(r->opens, 1);
	assert_string_equal(r->default_ns, "jabber:client");
}

/* Regression: expat's reparse deferral held back a tag that came in
 * several pieces until the waiting data had doubled, so a complete header
 * went unanswered. */
static void test_token_in_pieces_not_held_back(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, "<stream:stream xmlns='jabber:client' "
				 "xmlns:stream='http://etherx.jabber.org/streams' to='exa"),
			 XS_OK);
	assert_int_equal(feed(r, "mple.com' version='1.0'"), XS_OK);
	assert_int_equal(r->opens, 0);
	assert_int_equal(feed(r, ">"), XS_OK);
	assert_int_equal(r->opens, 1);
	assert_int_equal(feed(r, "<presence><status>a long status to make the tag"), XS_OK);
	assert_int_equal(feed(r, " long</status><show"), XS_OK);
	assert_int_equal(feed(r, ">"), XS_OK);
	assert_int_equal(feed(r, "a"), XS_OK);
	assert_int_equal(feed(r, "way</show></presence"), XS_OK);
	assert_int_equal(r->stanzas, 0);
	assert_int_equal(feed(r, ">"), XS_OK);
	expect_log(r, "{jabber:client}presence({jabber:client}status(\"a long status to make the "
		      "tag long\"){jabber:client}show(\"away\"))\n");
}

/* A long tag, still short of anything the parser treats as hostile, is
 * delivered with its last piece however many pieces it came in. */
static void test_long_tag_in_pieces_not_held_back(void **state)
{
	struct rec *r = *state;
	set_limits(r, 1 << 20, 8, 8);
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	char *to = repeat('a', 6000);
	char *s = concat("<message to='", to, "'/>", NULL);
	size_t n = strlen(s);
	assert_int_equal(feed_chunks(r, s, n - 1, 100, NULL), XS_OK);
	assert_int_equal(r->stanzas, 0);
	assert_int_equal(xml_stream_feed(r->xs, s + n - 1, 1), XS_OK);
	assert_int_equal(r->stanzas, 1);
	free(to);
	free(s);
}

/* Issue 10, item 3: a complete stanza whose start tag is far longer than
 * any legitimate one (a 50,000 or 200,000-byte attribute), arriving in
 * TLS-record-sized pieces, is handled with its last piece: expat's
 * deferral (>= 2.6) had it wait for 14-30 KiB more input. */
static void huge_tag_delivered_at_once(struct rec *r, size_t attr_len, size_t chunk)
{
	set_limits(r, 1 << 20, 8, 8);
	r->stanzas = 0;
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	char *id = repeat('i', attr_len);
	char *st = concat("<message id='", id, "' to='a@b'><body>x</body></message>", NULL);
	assert_int_equal(feed_chunks(r, st, strlen(st), chunk, NULL), XS_OK);
	assert_int_equal(r->stanzas, 1);
	assert_int_equal(feed(r, "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"), XS_OK);
	assert_int_equal(r->stanzas, 2);
	free(id);
	free(st);
}

static void test_huge_attribute_not_held_back(void **state)
{
	huge_tag_delivered_at_once(*state, 50000, 16384);
	huge_tag_delivered_at_once(*state, 50000, 1400);
	huge_tag_delivered_at_once(*state, 200000, 16384);
}

/* The same for a start tag with 10,000 attributes (over the limit:
 * refused with its last piece) or 10,000 namespace declarations (not
 * attributes: handled with its last piece). */
static void many_in_tag_at_once(struct rec *r, const char *each, enum xml_stream_result want)
{
	set_limits(r, 1 << 20, 8, 64);
	r->stanzas = 0;
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<message");
	for (int i = 0; i < 10000; i++)
		buf_printf(&b, each, i);
	buf_puts(&b, "/>");
	assert_int_equal(feed_chunks(r, b.data, b.len, 16384, NULL), want);
	assert_int_equal(r->stanzas, want == XS_OK ? 1 : 0);
	buf_free(&b);
}

static void test_many_attributes_not_held_back(void **state)
{
	many_in_tag_at_once(*state, " a%d='v'", XS_POLICY);
	many_in_tag_at_once(*state, " xmlns:p%d='urn:x'", XS_OK);
}

/* An unfinished token fed a byte at a time must not cost time quadratic
 * in its length (reparsing all of it on every feed). The price: a tag far
 * longer than any legitimate one may wait, after its last byte, until as
 * many bytes again have arrived. */
static void test_token_fed_bytewise_stays_linear(void **state)
{
	struct rec *r = *state;
	const size_t n = 256 * 1024;
	set_limits(r, n + 1024, 8, 8);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(feed(r, STREAM_OPEN "<message to='"), XS_OK);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(xml_stream_feed(r->xs, "x", 1), XS_OK);
	assert_int_equal(feed(r, "'/>"), XS_OK);
	char *spaces = repeat(' ', n);
	assert_int_equal(feed(r, spaces), XS_OK);
	assert_int_equal(r->stanzas, 1);
	assert_true(elapsed(&t0) < 3.0);
	free(spaces);
}

/* --- stanzas --- */

static void test_stanza_whole(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN
				 "<message to='juliet@example.com' type='chat' id='m1' xml:lang='fr'>"
				 "<body>Bonjour</body><x xmlns='urn:x' a='1'/></message>"),
			 XS_OK);
	expect_log(r, "{jabber:client}message[to='juliet@example.com' type='chat' id='m1' "
		      "{http://www.w3.org/XML/1998/namespace}lang='fr']"
		      "({jabber:client}body(\"Bonjour\"){urn:x}x[a='1'])\n");
}

static void test_stanza_mixed_content(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<message><body>a<b>b</b>c<i/>d</body></message>"),
			 XS_OK);
	expect_log(r, "{jabber:client}message({jabber:client}body(\"a\"{jabber:client}b(\"b\")"
		      "\"c\"{jabber:client}i\"d\"))\n");
}

static void test_stanza_not_delivered_before_end(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/>"),
			 XS_OK);
	assert_int_equal(r->stanzas, 0);
	assert_int_equal(feed(r, "</iq>"), XS_OK);
	expect_log(r, "{jabber:client}iq[type='get' id='1']({urn:xmpp:ping}ping)\n");
}

static void test_several_stanzas_in_one_feed(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<a/><b>1</b>\n<c x='y'/> <d/>"), XS_OK);
	expect_log(r, "{jabber:client}a\n{jabber:client}b(\"1\")\n"
		      "{jabber:client}c[x='y']\n{jabber:client}d\n");
}

#define SPLIT_STREAM                                                                \
	STREAM_OPEN "<message to='a@b' type='chat'><body>h&amp;llo &#x263A; w\xc3\xb6rld" \
		    "</body><thread>t</thread></message>\n"                             \
		    "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"   \
		    "<resource>r</resource></bind></iq>" STREAM_CLOSE

#define SPLIT_LOG                                                                          \
	"{jabber:client}message[to='a@b' type='chat']({jabber:client}body(\"h&llo \xe2\x98\xba " \
	"w\xc3\xb6rld\"){jabber:client}thread(\"t\"))\n"                                   \
	"{jabber:client}iq[type='set' id='b']({urn:ietf:params:xml:ns:xmpp-bind}bind("      \
	"{urn:ietf:params:xml:ns:xmpp-bind}resource(\"r\")))\n"

/* Every way of cutting the stream in two gives the same events. */
static void test_every_two_way_split(void **state)
{
	struct rec *r = *state;
	const char *s = SPLIT_STREAM;
	size_t n = strlen(s);
	for (size_t cut = 0; cut <= n; cut++) {
		set_limits(r, 4096, 8, 8);
		r->log.len = 0;
		buf_append(&r->log, "", 1);
		r->opens = r->closes = 0;
		assert_int_equal(xml_stream_feed(r->xs, s, cut), XS_OK);
		assert_int_equal(xml_stream_feed(r->xs, s + cut, n - cut), XS_OK);
		assert_int_equal(r->opens, 1);
		assert_int_equal(r->closes, 1);
		expect_log(r, SPLIT_LOG);
	}
}

static void test_byte_by_byte(void **state)
{
	struct rec *r = *state;
	const char *s = SPLIT_STREAM;
	assert_int_equal(feed_chunks(r, s, strlen(s), 1, NULL), XS_OK);
	assert_int_equal(r->opens, 1);
	assert_int_equal(r->closes, 1);
	expect_log(r, SPLIT_LOG);
}

/* Text arriving in many feeds is one text node, not one per feed. */
static void test_text_split_across_feeds(void **state)
{
	struct rec *r = *state;
	char *text = repeat('x', 3000);
	char *s = concat(STREAM_OPEN "<message><body>", text, "</body></message>", NULL);
	char *want = concat("{jabber:client}message({jabber:client}body(\"", text, "\"))\n", NULL);
	assert_int_equal(feed_chunks(r, s, strlen(s), 7, NULL), XS_OK);
	expect_log(r, want);
	free(text);
	free(s);
	free(want);
}

static void test_references_decoded(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<m a='&lt;&amp;&gt;&quot;&apos;&#65;&#x42;'>"
					     "&lt;&gt;&amp;&apos;&quot;&#65;&#x42;&#x1F600;&#10;</m>"),
			 XS_OK);
	expect_log(r, "{jabber:client}m[a='<&>\"'AB']"
		      "(\"<>&'\"AB\xf0\x9f\x98\x80\n\")\n");
}

static void test_references_split_byte_by_byte(void **state)
{
	struct rec *r = *state;
	const char *s = STREAM_OPEN "<m a='&amp;&#x263A;'>&lt;&#x1F600;\xc3\xa9</m>";
	assert_int_equal(feed_chunks(r, s, strlen(s), 1, NULL), XS_OK);
	expect_log(r, "{jabber:client}m[a='&\xe2\x98\xba'](\"<\xf0\x9f\x98\x80\xc3\xa9\")\n");
}

static void test_cdata(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<m>a<![CDATA[<b>&amp;]]]]><![CDATA[>]]>c</m>"),
			 XS_OK);
	expect_log(r, "{jabber:client}m(\"a<b>&amp;]]>c\")\n");
}

static void test_attribute_value_normalised(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<m a='x\ny\tz\r\nw' b=\"it's\"/>"), XS_OK);
	expect_log(r, "{jabber:client}m[a='x y z w' b='it's']\n");
}

static void test_line_ends_normalised_in_text(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<m>a\r\nb\rc</m>"), XS_OK);
	expect_log(r, "{jabber:client}m(\"a\nb\nc\")\n");
}

static void test_prefixed_namespaces(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<stream:features><c:caps xmlns:c='urn:caps' "
					     "c:node='n' plain='p'/></stream:features>"
					     "<j:message xmlns:j='jabber:client' xmlns:q='urn:q'>"
					     "<q:x q:y='1'><z/></q:x><body xmlns='urn:other'/>"
					     "</j:message>"),
			 XS_OK);
	expect_log(r, "{http://etherx.jabber.org/streams}features({urn:caps}caps["
		      "{urn:caps}node='n' plain='p'])\n"
		      "{jabber:client}message({urn:q}x[{urn:q}y='1']({jabber:client}z)"
		      "{urn:other}body)\n");
}

static void test_undeclaring_default_namespace(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<m><x xmlns=''><y/></x></m>"), XS_OK);
	expect_log(r, "{jabber:client}m({}x({}y))\n");
}

static void test_handler_may_add_nodes(void **state)
{
	struct rec *r = *state;
	r->grow_stanza = true;
	assert_int_equal(feed(r, STREAM_OPEN "<m/><n>t</n>"), XS_OK);
	expect_log(r, "{jabber:client}m({urn:added}added[k='v'](\"text\"))\n"
		      "{jabber:client}n(\"t\"{urn:added}added[k='v'](\"text\"))\n");
}

/* --- restart, stop and close --- */

static void test_restart_discards_rest_of_feed(void **state)
{
	struct rec *r = *state;
	r->restart_on = "starttls";
	assert_int_equal(feed(r, STREAM_OPEN "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
					     "<message/>" STREAM_OPEN "<presence/>"),
			 XS_OK);
	assert_int_equal(r->opens, 1);
	expect_log(r, "{urn:ietf:params:xml:ns:xmpp-tls}starttls\n");
}

static void test_restart_expects_new_header(void **state)
{
	struct rec *r = *state;
	r->restart_on = "success";
	assert_int_equal(feed(r, STREAM_OPEN "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
			 XS_OK);
	/* A new document: the XML declaration may come again, and the
	 * namespaces of the old header are gone. */
	assert_int_equal(feed(r, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
				 "xmlns:stream='http://etherx.jabber.org/streams' to='b'>"),
			 XS_OK);
	assert_int_equal(r->opens, 2);
	assert_string_equal(r->default_ns, "jabber:server");
	assert_string_equal(r->root.data, "{http://etherx.jabber.org/streams}stream[to='b']");
	assert_int_equal(feed(r, "<iq/>" STREAM_CLOSE), XS_OK);
	expect_log(r, "{urn:ietf:params:xml:ns:xmpp-sasl}success\n{jabber:server}iq\n");
	assert_int_equal(r->closes, 1);
}

/* After a restart the next element is a header again, not a stanza: here
 * a stray stanza becomes a whole (empty) document. */
static void test_restart_next_element_is_header(void **state)
{
	struct rec *r = *state;
	r->restart_on = "success";
	assert_int_equal(feed(r, STREAM_OPEN "<success/>"), XS_OK);
	assert_int_equal(feed(r, "<message xmlns='jabber:client'/>"), XS_OK);
	assert_int_equal(r->opens, 2);
	assert_int_equal(r->closes, 1);
	assert_int_equal(r->stanzas, 1);
	assert_int_equal(feed(r, "<message/>"), XS_BAD_FORMAT);
}

static void test_restart_byte_by_byte(void **state)
{
	struct rec *r = *state;
	r->restart_on = "proceed";
	const char *s = STREAM_OPEN "<proceed/>" STREAM_OPEN "<a/><proceed/>" STREAM_OPEN "<b/>";
	assert_int_equal(feed_chunks(r, s, strlen(s), 1, NULL), XS_OK);
	assert_int_equal(r->opens, 3);
	expect_log(r, "{jabber:client}proceed\n{jabber:client}a\n{jabber:client}proceed\n"
		      "{jabber:client}b\n");
}

static void test_restart_forgets_bytes_counted(void **state)
{
	struct rec *r = *state;
	set_limits(r, 300, 8, 8);
	r->restart_on = "r";
	/* A partial stanza is dropped with the old document. */
	assert_int_equal(feed(r, STREAM_OPEN "<r/><message><body>"), XS_OK);
	char *body = repeat('b', 200);
	char *s = concat(STREAM_OPEN "<message><body>", body, "</body></message>", NULL);
	assert_int_equal(feed(r, s), XS_OK);
	assert_int_equal(r->stanzas, 2);
	free(body);
	free(s);
}

static void test_restart_from_open_handler(void **state)
{
	struct rec *r = *state;
	r->restart_in_open = true;
	assert_int_equal(feed(r, STREAM_OPEN "<message/>"), XS_OK);
	assert_int_equal(r->opens, 1);
	assert_int_equal(r->stanzas, 0);
	r->restart_in_open = false;
	assert_int_equal(feed(r, STREAM_OPEN "<message/>"), XS_OK);
	assert_int_equal(r->opens, 2);
	assert_int_equal(r->stanzas, 1);
}

static void test_stop(void **state)
{
	struct rec *r = *state;
	r->stop_on = "bad";
	assert_int_equal(feed(r, STREAM_OPEN "<a/><bad/><c/>"), XS_STOPPED);
	expect_log(r, "{jabber:client}a\n{jabber:client}bad\n");
}

static void test_stream_close(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<a/>"), XS_OK);
	assert_int_equal(r->closes, 0);
	assert_int_equal(feed(r, STREAM_CLOSE), XS_OK);
	assert_int_equal(r->closes, 1);
	assert_int_equal(r->stanzas, 1);
	/* Nothing may follow the end of the stream. */
	assert_int_equal(feed(r, "<b/>"), XS_BAD_FORMAT);
	assert_int_equal(r->stanzas, 1);
}

static void test_stream_close_with_partial_stanza_is_error(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<a>" STREAM_CLOSE), XS_NOT_WELL_FORMED);
	assert_int_equal(r->closes, 0);
	assert_int_equal(r->stanzas, 0);
}

/* --- not well-formed --- */

static void expect_result(struct rec *r, const char *s, size_t n, enum xml_stream_result want)
{
	enum xml_stream_result got = xml_stream_feed(r->xs, s, n);
	if (got != want)
		fail_msg("got %d, want %d for \"%.*s\"", got, want, (int)n, s);
	if (want == XS_NOT_WELL_FORMED)
		assert_non_null(xml_stream_error_text(r->xs));
}

/* Each case on a fresh stream, whole and byte by byte. */
static void expect_table(struct rec *r, const char *const *t, size_t count,
			 enum xml_stream_result want)
{
	for (size_t i = 0; i < count; i++) {
		set_limits(r, 4096, 8, 8);
		expect_result(r, t[i], strlen(t[i]), want);
		set_limits(r, 4096, 8, 8);
		enum xml_stream_result got = feed_chunks(r, t[i], strlen(t[i]), 1, NULL);
		if (got != want)
			fail_msg("byte by byte: got %d, want %d for \"%s\"", got, want, t[i]);
	}
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_not_well_formed(void **state)
{
	static const char *const t[] = {
		STREAM_OPEN "<message><body></message>",
		STREAM_OPEN "<a></b>",
		STREAM_OPEN "</a>",
		"hello" STREAM_OPEN,
		STREAM_OPEN "<a b=c/>",
		STREAM_OPEN "<a b='1' b='2'/>",
		STREAM_OPEN "<a xmlns:p='u' xmlns:q='u' p:b='1' q:b='2'/>",
		STREAM_OPEN "<p:a/>",
		STREAM_OPEN "<a>&unknown;</a>",
		STREAM_OPEN "<a>&#0;</a>",
		STREAM_OPEN "<a>&#xD800;</a>",
		STREAM_OPEN "<a>\x01</a>",
		STREAM_OPEN "<a><</a>",
		STREAM_OPEN "<a>]]></a>",
		STREAM_OPEN "<1a/>",
		"<?xml version='1.0'?><?xml version='1.0'?>",
		STREAM_OPEN "<a/><?xml version='1.0'?>",
		STREAM_OPEN "<a xmlns:xml='urn:not-xml'/>",
		STREAM_OPEN "<a xmlns='http://www.w3.org/2000/xmlns/'/>",
	};
	expect_table(*state, t, COUNT(t), XS_NOT_WELL_FORMED);
}

static void test_bad_utf8(void **state)
{
	static const char *const t[] = {
		STREAM_OPEN "<a>\xc3\x28</a>",         /* bad continuation */
		STREAM_OPEN "<a>\xc0\xaf</a>",         /* overlong '/' */
		STREAM_OPEN "<a>\xed\xa0\x80</a>",     /* surrogate */
		STREAM_OPEN "<a>\xf4\x90\x80\x80</a>", /* above U+10FFFF */
		STREAM_OPEN "<a>\xff</a>",
		STREAM_OPEN "<a b='\xe2\x82'/>",        /* truncated */
		STREAM_OPEN "<\xc3\xa9\xc3/>",
	};
	expect_table(*state, t, COUNT(t), XS_NOT_WELL_FORMED);
}

static void test_nul_byte(void **state)
{
	struct rec *r = *state;
	static const char s[] = STREAM_OPEN "<a>x\0y</a>";
	expect_result(r, s, sizeof s - 1, XS_NOT_WELL_FORMED);
	assert_int_equal(r->stanzas, 0);
}

/* --- restricted XML --- */

static void test_restricted(void **state)
{
	static const char *const t[] = {
		"<!DOCTYPE stream>" STREAM_OPEN,
		"<?xml version='1.0'?><!DOCTYPE stream SYSTEM 'file:///etc/passwd'>" STREAM_OPEN,
		"<!DOCTYPE s [<!ENTITY x 'y'>]><s>&x;</s>",
		"<!DOCTYPE s [<!ENTITY % p SYSTEM 'http://example.com/p'> %p;]><s/>",
		"<?xml-stylesheet href='a'?>" STREAM_OPEN,
		STREAM_OPEN "<?php echo 1; ?>",
		STREAM_OPEN "<message><?pi?></message>",
		"<!-- hello -->" STREAM_OPEN,
		STREAM_OPEN "<!-- between -->",
		STREAM_OPEN "<message><body>a<!-- inside -->b</body></message>",
	};
	expect_table(*state, t, COUNT(t), XS_RESTRICTED);
}

#define LOLS                                                                        \
	"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"                        \
	"<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"             \
	"<!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>"   \
	"<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>"   \
	"<!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>"   \
	"<!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>"   \
	"<!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>"   \
	"<!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>"   \
	"<!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>"   \
	"<!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>]>" \
	"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" \
	"<message><body>&lol9;</body></message>"

static void test_billion_laughs(void **state)
{
	struct rec *r = *state;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(feed(r, LOLS), XS_RESTRICTED);
	set_limits(r, 4096, 8, 8);
	assert_int_equal(feed_chunks(r, LOLS, strlen(LOLS), 1, NULL), XS_RESTRICTED);
	assert_true(elapsed(&t0) < 1.0);
	assert_int_equal(r->opens, 0);
	assert_int_equal(r->stanzas, 0);
}

/* The XML declaration is not a processing instruction. */
static void test_xml_declaration_allowed(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>"
				 "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
			 XS_OK);
	assert_int_equal(r->opens, 1);
}

/* --- encodings --- */

static void test_utf8_declaration_any_case(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, "<?xml version='1.0' encoding='utf-8'?><s><a>\xc3\xa9</a>"), XS_OK);
	expect_log(r, "{}a(\"\xc3\xa9\")\n");
}

/* Regression: the forced parser encoding made expat ignore the declared
 * one, so these streams were read as UTF-8 instead of being refused. */
static void test_other_declared_encoding_refused(void **state)
{
	static const char *const t[] = {
		"<?xml version='1.0' encoding='ISO-8859-1'?>" STREAM_ROOT "<a>x</a>",
		"<?xml version='1.0' encoding='US-ASCII'?>" STREAM_ROOT "<a>x</a>",
		"<?xml version='1.0' encoding='UTF-16'?>" STREAM_ROOT "<a>x</a>",
		"<?xml version='1.0' encoding='x-unknown'?>" STREAM_ROOT "<a>x</a>",
	};
	struct rec *r = *state;
	expect_table(r, t, COUNT(t), XS_UNSUPPORTED_ENCODING);
	assert_int_equal(r->opens, 0);
}

/* Regression: expat switches to UTF-16 on a byte order mark or on a NUL
 * in the first two bytes, whatever encoding it was told to use. */
static void test_utf16_refused(void **state)
{
	static const char le_bom[] = "\xff\xfe<\0s\0>\0<\0a\0/\0>\0";
	static const char be_bom[] = "\xfe\xff\0<\0s\0>\0<\0a\0/\0>";
	static const char le[] = "<\0s\0>\0<\0a\0/\0>\0";
	static const char be[] = "\0<\0s\0>\0<\0a\0/\0>";
	const struct {
		const char *s;
		size_t n;
	} t[] = {
		{ le_bom, sizeof le_bom - 1 },
		{ be_bom, sizeof be_bom - 1 },
		{ le, sizeof le - 1 },
		{ be, sizeof be - 1 },
	};
	struct rec *r = *state;
	for (size_t i = 0; i < COUNT(t); i++) {
		set_limits(r, 4096, 8, 8);
		expect_result(r, t[i].s, t[i].n, XS_UNSUPPORTED_ENCODING);
		set_limits(r, 4096, 8, 8);
		assert_int_equal(feed_chunks(r, t[i].s, t[i].n, 1, NULL), XS_UNSUPPORTED_ENCODING);
	}
	assert_int_equal(r->opens, 0);
	assert_int_equal(r->stanzas, 0);
}

static void test_utf16_refused_after_restart(void **state)
{
	static const char le_bom[] = "\xff\xfe<\0s\0>\0";
	struct rec *r = *state;
	r->restart_on = "proceed";
	assert_int_equal(feed(r, STREAM_OPEN "<proceed/>"), XS_OK);
	expect_result(r, le_bom, sizeof le_bom - 1, XS_UNSUPPORTED_ENCODING);
	assert_int_equal(r->opens, 1);
}

/* --- limits --- */

/* A stanza of exactly max_stanza_size bytes passes; one more byte does
 * not, however it is split. */
static void test_stanza_size_boundary(void **state)
{
	struct rec *r = *state;
	const size_t max = 512;
	const char *pre = "<message><body>", *post = "</body></message>";
	size_t fill = max - strlen(pre) - strlen(post);
	for (int extra = 0; extra <= 1; extra++) {
		char *body = repeat('x', fill + (size_t)extra);
		char *s = concat(pre, body, post, NULL);
		assert_int_equal(strlen(s), max + (size_t)extra);
		enum xml_stream_result want = extra ? XS_POLICY : XS_OK;
		size_t chunks[] = { strlen(s), 1, 7, 100 };
		for (size_t c = 0; c < COUNT(chunks); c++) {
			set_limits(r, max, 8, 8);
			r->stanzas = 0;
			assert_int_equal(feed(r, STREAM_OPEN "\n"), XS_OK);
			assert_int_equal(feed_chunks(r, s, strlen(s), chunks[c], NULL), want);
			assert_int_equal(r->stanzas, extra ? 0 : 1);
		}
		free(body);
		free(s);
	}
}

static void test_stanza_too_large_in_one_feed(void **state)
{
	struct rec *r = *state;
	char *body = repeat('x', 10000);
	char *s = concat(STREAM_OPEN "<a/><message><body>", body, "</body></message><b/>", NULL);
	assert_int_equal(feed(r, s), XS_POLICY);
	expect_log(r, "{jabber:client}a\n");
	free(body);
	free(s);
}

/* Many small children: no single token is large, the stanza is. */
static void test_stanza_too_large_many_elements(void **state)
{
	struct rec *r = *state;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, STREAM_OPEN "<message>");
	for (int i = 0; i < 2000; i++)
		buf_puts(&b, "<x/>");
	buf_puts(&b, "</message>");
	assert_int_equal(xml_stream_feed(r->xs, b.data, b.len), XS_POLICY);
	set_limits(r, 4096, 8, 8);
	size_t at;
	assert_int_equal(feed_chunks(r, b.data, b.len, 10, &at), XS_POLICY);
	assert_true(at <= strlen(STREAM_OPEN) + 4096 + 10);
	assert_int_equal(r->stanzas, 0);
	buf_free(&b);
}

/* Spread over many feeds, the stanza is refused as soon as it has gone
 * past the limit, long before it ends. */
static void test_stanza_too_large_over_many_feeds(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	assert_int_equal(feed(r, "<message><body>"), XS_OK);
	char *chunk = repeat('y', 100);
	int n = 0;
	enum xml_stream_result res;
	while ((res = feed(r, chunk)) == XS_OK && n < 1000)
		n++;
	assert_int_equal(res, XS_POLICY);
	assert_true(n * 100 <= 4096);
	assert_int_equal(r->stanzas, 0);
	free(chunk);
}

/* Expat buffers an unfinished token: a start tag or attribute value that
 * never closes must be refused once it passes the limit. */
static void test_unfinished_token_refused(void **state)
{
	static const char *const starts[] = {
		STREAM_OPEN "<message to='",
		STREAM_OPEN "<message><body a=\"",
		STREAM_OPEN "<messageeeeeeee",
		STREAM_OPEN "<message><body><![CDATA[",
		"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='",
		"<?xml version='1.0' encoding='",
	};
	struct rec *r = *state;
	char *chunk = repeat('z', 64);
	for (size_t i = 0; i < COUNT(starts); i++) {
		set_limits(r, 1024, 8, 8);
		enum xml_stream_result res = feed(r, starts[i]);
		size_t fed = 0;
		while (res == XS_OK && fed < 100000) {
			res = feed(r, chunk);
			fed += 64;
		}
		if (res != XS_POLICY)
			fail_msg("case %zu: got %d after %zu bytes", i, res, fed);
		assert_true(fed <= 1024 + 64);
	}
	free(chunk);
}

/* Regression: a header that came in one feed was never measured. */
static void test_huge_header_refused(void **state)
{
	struct rec *r = *state;
	char *big = repeat('h', 10000);
	char *s = concat("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='", big,
			 "'>", NULL);
	assert_int_equal(feed(r, s), XS_POLICY);
	set_limits(r, 4096, 8, 8);
	assert_int_equal(feed_chunks(r, s, strlen(s), 1000, NULL), XS_POLICY);
	assert_int_equal(r->opens, 0);
	free(big);
	free(s);
}

static void test_depth_limit(void **state)
{
	struct rec *r = *state;
	set_limits(r, 4096, 4, 8);
	/* The stanza is depth 1. */
	assert_int_equal(feed(r, STREAM_OPEN "<a><b><c><d/></c></b></a>"), XS_OK);
	assert_int_equal(r->stanzas, 1);
	assert_int_equal(feed(r, "<a><b><c><d><e/></d></c></b></a>"), XS_POLICY);
	assert_int_equal(r->stanzas, 1);
}

static void test_depth_limit_deep_nesting(void **state)
{
	struct rec *r = *state;
	set_limits(r, 1 << 20, 16, 8);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, STREAM_OPEN);
	for (int i = 0; i < 10000; i++)
		buf_puts(&b, "<a>");
	assert_int_equal(xml_stream_feed(r->xs, b.data, b.len), XS_POLICY);
	buf_free(&b);
}

static void test_attribute_limit(void **state)
{
	struct rec *r = *state;
	set_limits(r, 4096, 8, 4);
	/* Namespace declarations are not attributes. */
	assert_int_equal(feed(r, STREAM_OPEN "<m a='1' b='2' xmlns:p='u' p:c='3' xml:lang='en' "
					     "xmlns='urn:x'/>"),
			 XS_OK);
	assert_int_equal(r->stanzas, 1);
	assert_int_equal(feed(r, "<m a='1' b='2' c='3' d='4' e='5'/>"), XS_POLICY);
	assert_int_equal(r->stanzas, 1);
}

static void test_attribute_limit_child_and_header(void **state)
{
	struct rec *r = *state;
	set_limits(r, 4096, 8, 2);
	assert_int_equal(feed(r, STREAM_OPEN), XS_POLICY);
	set_limits(r, 4096, 8, 2);
	assert_int_equal(feed(r, "<s><m><x a='1' b='2' c='3'/></m>"), XS_POLICY);
	assert_int_equal(r->stanzas, 0);
}

/* Whitespace keep-alives over a long-lived stream move the stanza
 * boundary: the limit is per stanza, not per stream. */
static void test_keepalives_do_not_count(void **state)
{
	struct rec *r = *state;
	set_limits(r, 256, 8, 8);
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(feed(r, i % 10 == 9 ? "\n" : " "), XS_OK);
		if (i % 1000 == 999)
			assert_int_equal(feed(r, "<presence/>"), XS_OK);
	}
	char *spaces = repeat(' ', 5000);
	assert_int_equal(feed(r, spaces), XS_OK);
	assert_int_equal(feed(r, "<message><body>still fine</body></message>"), XS_OK);
	assert_int_equal(r->stanzas, 21);
	free(spaces);
}

static void test_many_stanzas_do_not_count(void **state)
{
	struct rec *r = *state;
	set_limits(r, 256, 8, 8);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, STREAM_OPEN);
	for (int i = 0; i < 1000; i++)
		buf_puts(&b, "<message to='a@b'><body>hello</body></message>");
	assert_int_equal(xml_stream_feed(r->xs, b.data, b.len), XS_OK);
	assert_int_equal(r->stanzas, 1000);
	set_limits(r, 256, 8, 8);
	r->stanzas = 0;
	assert_int_equal(feed_chunks(r, b.data, b.len, 97, NULL), XS_OK);
	assert_int_equal(r->stanzas, 1000);
	buf_free(&b);
}

static void test_free_mid_stanza(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<message a='b'><body>partial te"), XS_OK);
	/* teardown frees the stream with a tree half built. */
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

/* --- releasing the parser of an idle stream --- */

static void test_release_and_resume(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<message id='1'/>"), XS_OK);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, "<message id='2'><body>b</body></message>"), XS_OK);
	expect_log(r, "{jabber:client}message[id='1']\n"
		      "{jabber:client}message[id='2']({jabber:client}body(\"b\"))\n");
	assert_int_equal(r->opens, 1);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, STREAM_CLOSE), XS_OK);
	assert_int_equal(r->closes, 1);
}

static void test_release_keeps_prefixes(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/"
				 "streams' xmlns:x='urn:x'>"),
			 XS_OK);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, "<x:y/>"), XS_OK);
	expect_log(r, "{urn:x}y\n");
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, "</s:stream>"), XS_OK);
	assert_int_equal(r->closes, 1);
}

static void test_release_refused_mid_stanza(void **state)
{
	struct rec *r = *state;
	assert_int_equal(xml_stream_release(r->xs), -1); /* no header yet */
	assert_int_equal(feed(r, STREAM_OPEN "<message id='1'><bo"), XS_OK);
	assert_int_equal(xml_stream_release(r->xs), -1);
	assert_int_equal(feed(r, "dy/></message>"), XS_OK);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(xml_stream_release(r->xs), -1); /* already */
	/* Limits still hold on the new parser. */
	char *big = repeat('x', 5000);
	char *st = concat("<message><body>", big, "</body></message>", NULL);
	assert_int_equal(feed(r, st), XS_POLICY);
	free(st);
	free(big);
}

static void test_released_stream_takes_acks_without_a_parser(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN "<message id='1'/>"), XS_OK);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, " <a xmlns='urn:xmpp:sm:3' h='7'/>\n<r xmlns=\"urn:xmpp:sm:3\"/> "),
			 XS_OK);
	assert_true(xml_stream_released(r->xs));
	assert_int_equal(feed(r, "<inactive xmlns='urn:xmpp:csi:0' />"), XS_OK);
	assert_true(xml_stream_released(r->xs));
	/* Anything else makes a parser, after what came first, in order. */
	assert_int_equal(feed(r, "<a xmlns='urn:xmpp:sm:3' h='8'/><presence/>"), XS_OK);
	assert_false(xml_stream_released(r->xs));
	expect_log(r, "{jabber:client}message[id='1']\n"
		      "{urn:xmpp:sm:3}a[h='7']\n"
		      "{urn:xmpp:sm:3}r\n"
		      "{urn:xmpp:csi:0}inactive\n"
		      "{urn:xmpp:sm:3}a[h='8']\n"
		      "{jabber:client}presence\n");
	assert_int_equal(r->opens, 1);
}

static void test_released_stream_leaves_the_rest_to_expat(void **state)
{
	struct rec *r = *state;
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	/* Split, prefixed, without xmlns, with a reference: expat's. */
	const char *cases[] = { "<x:a xmlns:x='urn:x'/>", "<a h='1'/>",
				"<a xmlns='urn:x' v='&amp;'/>", "<a xmlns='urn:x'>t</a>" };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(xml_stream_release(r->xs), 0);
		assert_int_equal(feed(r, cases[i]), XS_OK);
		assert_false(xml_stream_released(r->xs));
	}
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, "<a xmlns='urn:x' h="), XS_OK);
	assert_int_equal(feed(r, "'2'/>"), XS_OK);
	expect_log(r, "{urn:x}a\n{jabber:client}a[h='1']\n{urn:x}a[v='&']\n{urn:x}a(\"t\")\n"
		      "{urn:x}a[h='2']\n");
	/* Not well-formed stays not well-formed. */
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, "<a xmlns='urn:x' h='1' h='2'/>"), XS_NOT_WELL_FORMED);
}

/* Expat refuses a namespace holding its separator (a space); the light
 * path must not take what expat would refuse. */
static void test_namespace_with_a_space_is_refused_either_way(void **state)
{
	struct rec *r = *state;
	const char *el = "<r xmlns='urn:xmpp :sm:3'/>";
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	enum xml_stream_result parsed = feed(r, el);
	assert_int_not_equal(parsed, XS_OK);
	set_limits(r, r->limits.max_stanza_size, r->limits.max_depth, r->limits.max_attributes);
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, el), parsed);
	expect_log(r, "");
}

static void test_released_stream_restarts_on_a_light_element(void **state)
{
	struct rec *r = *state;
	r->restart_on = "starttls";
	assert_int_equal(feed(r, STREAM_OPEN), XS_OK);
	assert_int_equal(xml_stream_release(r->xs), 0);
	assert_int_equal(feed(r, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message/>"),
			 XS_OK);
	assert_int_equal(feed(r, STREAM_OPEN "<presence/>"), XS_OK);
	assert_int_equal(r->opens, 2);
	expect_log(r, "{urn:ietf:params:xml:ns:xmpp-tls}starttls\n{jabber:client}presence\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_header_event),
		T(test_release_and_resume),
		T(test_release_keeps_prefixes),
		T(test_release_refused_mid_stanza),
		T(test_released_stream_takes_acks_without_a_parser),
		T(test_released_stream_leaves_the_rest_to_expat),
		T(test_released_stream_restarts_on_a_light_element),
		T(test_namespace_with_a_space_is_refused_either_way),
		T(test_header_without_default_namespace),
		T(test_header_empty_default_namespace),
		T(test_header_split_byte_by_byte),
		T(test_token_in_pieces_not_held_back),
		T(test_long_tag_in_pieces_not_held_back),
		T(test_token_fed_bytewise_stays_linear),
		T(test_huge_attribute_not_held_back),
		T(test_many_attributes_not_held_back),
		T(test_stanza_whole),
		T(test_stanza_mixed_content),
		T(test_stanza_not_delivered_before_end),
		T(test_several_stanzas_in_one_feed),
		T(test_every_two_way_split),
		T(test_byte_by_byte),
		T(test_text_split_across_feeds),
		T(test_references_decoded),
		T(test_references_split_byte_by_byte),
		T(test_cdata),
		T(test_attribute_value_normalised),
		T(test_line_ends_normalised_in_text),
		T(test_prefixed_namespaces),
		T(test_undeclaring_default_namespace),
		T(test_handler_may_add_nodes),
		T(test_restart_discards_rest_of_feed),
		T(test_restart_expects_new_header),
		T(test_restart_next_element_is_header),
		T(test_restart_byte_by_byte),
		T(test_restart_forgets_bytes_counted),
		T(test_restart_from_open_handler),
		T(test_stop),
		T(test_stream_close),
		T(test_stream_close_with_partial_stanza_is_error),
		T(test_not_well_formed),
		T(test_bad_utf8),
		T(test_nul_byte),
		T(test_restricted),
		T(test_billion_laughs),
		T(test_xml_declaration_allowed),
		T(test_utf8_declaration_any_case),
		T(test_other_declared_encoding_refused),
		T(test_utf16_refused),
		T(test_utf16_refused_after_restart),
		T(test_stanza_size_boundary),
		T(test_stanza_too_large_in_one_feed),
		T(test_stanza_too_large_many_elements),
		T(test_stanza_too_large_over_many_feeds),
		T(test_unfinished_token_refused),
		T(test_huge_header_refused),
		T(test_depth_limit),
		T(test_depth_limit_deep_nesting),
		T(test_attribute_limit),
		T(test_attribute_limit_child_and_header),
		T(test_keepalives_do_not_count),
		T(test_many_stanzas_do_not_count),
		T(test_free_mid_stanza),
	};
	return cmocka_run_group_tests_name("xml_stream", tests, NULL, NULL);
}

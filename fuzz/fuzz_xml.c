/* libFuzzer target for src/xml/xml_stream.c and the serialiser in
 * src/xml/xml.c. Beyond "never crash", it checks what the server relies on:
 *
 * - every stanza tree is consistent (parent/last links, limits held);
 * - its serialisation reads back, in a second parser, as exactly one
 *   stanza whose serialisation is identical (serialise -> parse is the
 *   identity on serialised output);
 * - the input's split into feeds is chosen by the first byte, so chunk
 *   boundaries fall everywhere, and a stanza named 'restart' or 'starttls'
 *   restarts the stream, one named 'stop' stops it;
 * - with the first byte's bit 2, the parser is released after every feed
 *   that ends at a stanza boundary (xml_stream_release), as an idle
 *   connection's is, so the next feed goes through the light path or a
 *   rebuilt parser; both must give what expat alone gives.
 *
 * Any breach aborts so libFuzzer keeps the input. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml/xml_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STANZA 4096
#define MAX_DEPTH 16
#define MAX_ATTRS 16
/* The xml_stream keeps at most 255 bytes of the header's namespace. */
#define NS_KEPT 255

struct fuzz_ctx {
	struct xml_stream *xs;
	char context_ns[NS_KEPT + 1]; /* "" when the header's could be cut */
	int events;
};

/* The second parser's view of one serialised stanza. */
struct reparse {
	const char *context_ns;
	struct buf out;
	int stanzas;
	int other_events;
};

static void die(const char *what, const struct buf *a, const struct buf *b)
{
	fprintf(stderr, "fuzz_xml: %s\n", what);
	if (a != NULL)
		fprintf(stderr, "first:  %.*s\n", (int)a->len, a->data);
	if (b != NULL)
		fprintf(stderr, "second: %.*s\n", (int)b->len, b->data);
	abort();
}

/* Checks the links of a parsed tree and the limits it was parsed under;
 * returns the number of nodes. */
static size_t check_tree(const struct xml_node *n, int depth)
{
	size_t count = 1;
	int attrs = 0;
	const struct xml_node *last = NULL;

	if (n->name == NULL)
		die("text node where an element was expected", NULL, NULL);
	if (n->ns == NULL || n->name[0] == '\0')
		die("element without namespace or name", NULL, NULL);
	if (depth > MAX_DEPTH)
		die("tree deeper than max_depth", NULL, NULL);
	for (const struct xml_attr *at = n->attrs; at; at = at->next) {
		if (at->ns == NULL || at->name == NULL || at->value == NULL || at->name[0] == '\0')
			die("incomplete attribute", NULL, NULL);
		attrs++;
	}
	if (attrs > MAX_ATTRS)
		die("more attributes than max_attributes", NULL, NULL);
	for (const struct xml_node *c = n->children; c; c = c->next) {
		if (c->parent != n)
			die("child with wrong parent", NULL, NULL);
		if (c->name == NULL) {
			/* The parser merges adjacent text and never adds empty text. */
			if (c->text == NULL || c->text_len == 0 || c->ns != NULL)
				die("bad text node", NULL, NULL);
			if (last != NULL && last->name == NULL)
				die("adjacent text nodes", NULL, NULL);
			if (memchr(c->text, '\0', c->text_len) != NULL)
				die("NUL in text", NULL, NULL);
			count++;
		} else {
			count += check_tree(c, depth + 1);
		}
		last = c;
	}
	if (n->last != last)
		die("last child link wrong", NULL, NULL);
	return count;
}

/* Attribute-value escaping for the second parser's header, written here
 * so the check does not lean on the code under test. */
static void put_attr_value(struct buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': buf_puts(b, "&amp;"); break;
		case '<': buf_puts(b, "&lt;"); break;
		case '\'': buf_puts(b, "&apos;"); break;
		case '\t': buf_puts(b, "&#9;"); break;
		case '\n': buf_puts(b, "&#10;"); break;
		case '\r': buf_puts(b, "&#13;"); break;
		default: buf_append(b, s, 1); break;
		}
	}
}

static void re_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct reparse *r = ud;
	(void)root;
	if (strcmp(default_ns, r->context_ns) != 0)
		r->other_events++;
}

static void re_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct reparse *r = ud;
	(void)a;
	r->stanzas++;
	check_tree(st, 1);
	xml_serialize(st, r->context_ns, &r->out);
}

static void re_close(void *ud)
{
	struct reparse *r = ud;
	r->other_events++;
}

static const struct xml_stream_handlers re_handlers = { re_open, re_stanza, re_close };

/* Parses the serialised stanza again, inside a header declaring the same
 * default namespace, and demands the same serialisation back. */
static void check_round_trip(const char *context_ns, const struct buf *first)
{
	/* Escaping can make the text up to six times longer than the wire
	 * form, and the prefixes for qualified attributes add more. */
	struct xml_stream_limits lim = { 1 << 20, MAX_DEPTH, MAX_ATTRS };
	struct reparse r = { context_ns, { 0 }, 0, 0 };
	struct buf in;
	buf_init(&in);
	buf_init(&r.out);
	buf_puts(&in, "<stream xmlns='");
	put_attr_value(&in, context_ns);
	buf_puts(&in, "'>");
	buf_append(&in, first->data, first->len);

	struct xml_stream *xs = xml_stream_new(&lim, &re_handlers, &r);
	enum xml_stream_result res = xml_stream_feed(xs, in.data, in.len);
	if (res != XS_OK)
		die("serialised stanza does not parse", first, NULL);
	if (r.stanzas != 1 || r.other_events != 0)
		die("serialised stanza is not one stanza", first, &r.out);
	if (r.out.len != first->len || memcmp(r.out.data, first->data, first->len) != 0)
		die("serialisation changed after a round trip", first, &r.out);
	xml_stream_free(xs);
	buf_free(&in);
	buf_free(&r.out);
}

static void on_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct fuzz_ctx *c = ud;
	c->events++;
	if (root->name == NULL || root->ns == NULL)
		die("header without a name", NULL, NULL);
	size_t n = strlen(default_ns);
	if (n > NS_KEPT)
		die("default namespace longer than the stream keeps", NULL, NULL);
	/* A namespace cut at the limit may end inside a UTF-8 sequence. */
	if (n == NS_KEPT)
		default_ns = "";
	memcpy(c->context_ns, default_ns, strlen(default_ns) + 1);
}

static void on_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct fuzz_ctx *c = ud;
	struct buf first;
	c->events++;
	check_tree(st, 1);
	buf_init(&first);
	xml_serialize(st, c->context_ns, &first);
	check_round_trip(c->context_ns, &first);
	buf_free(&first);

	/* The handler may build on the tree in the parser's arena. */
	struct xml_node *extra = xml_add_child(a, st, "urn:fuzz", "extra");
	xml_set_attr(a, extra, "k", "v");
	xml_add_text(a, extra, "t", 1);

	if (strcmp(st->name, "restart") == 0 || strcmp(st->name, "starttls") == 0)
		xml_stream_restart(c->xs);
	else if (strcmp(st->name, "stop") == 0)
		xml_stream_stop(c->xs);
}

static void on_close(void *ud)
{
	struct fuzz_ctx *c = ud;
	c->events++;
}

static const struct xml_stream_handlers handlers = { on_open, on_stanza, on_close };

/* Feeds len bytes in pieces of at most chunk; stops at the first result
 * other than XS_OK, as a connection would. With release, the parser is
 * released after each piece where it can be. */
static enum xml_stream_result feed(struct xml_stream *xs, const char *p, size_t len, size_t chunk,
				   bool release)
{
	while (len > 0) {
		size_t n = len < chunk ? len : chunk;
		enum xml_stream_result r = xml_stream_feed(xs, p, n);
		if (r != XS_OK)
			return r;
		if (release)
			xml_stream_release(xs);
		p += n;
		len -= n;
	}
	return XS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xml_stream_limits lim = { MAX_STANZA, MAX_DEPTH, MAX_ATTRS };
	struct fuzz_ctx c;
	const char *p = (const char *)data;

	if (size == 0)
		return 0;
	memset(&c, 0, sizeof c);
	c.xs = xml_stream_new(&lim, &handlers, &c);

	/* The first byte is part of the stream (seeds start with '<') and
	 * also picks the cut: its value scaled to the input's length. Odd
	 * values feed the second part in small pieces as well. */
	size_t cut = size * data[0] / 256;
	size_t chunk = data[0] & 1 ? 1 + (size_t)(data[0] >> 1) % 61 : size;
	bool release = (data[0] & 2) != 0;
	enum xml_stream_result r = feed(c.xs, p, cut, size, release);
	if (r == XS_OK)
		r = feed(c.xs, p + cut, size - cut, chunk, release);
	if (r == XS_NOT_WELL_FORMED && xml_stream_error_text(c.xs) == NULL)
		die("no error text for a parse error", NULL, NULL);
	xml_stream_free(c.xs);
	return 0;
}

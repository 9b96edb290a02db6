#include "xml/xml_parse.h"

#include <string.h>

#include "xml/xml_stream.h"

struct parse_one {
	struct arena *out;
	struct xml_node *result;
	int count;
};

static void on_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	(void)ud, (void)root, (void)default_ns;
}

static void on_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	(void)a;
	struct parse_one *p = ud;
	if (p->count++ == 0)
		p->result = xml_copy(p->out, st);
}

static void on_close(void *ud) { (void)ud; }

static const struct xml_stream_handlers handlers = { on_open, on_stanza, on_close };

struct xml_node *xml_parse_element(struct arena *a, const char *data, size_t len)
{
	static const char head[] = "<s:stream xmlns='jabber:client' xmlns:s='" NS_STREAMS "'>";
	struct xml_stream_limits lim = { len + sizeof head + 64, 128, 256 };
	struct parse_one p = { a, NULL, 0 };
	struct xml_stream *xs = xml_stream_new(&lim, &handlers, &p);
	enum xml_stream_result r = xml_stream_feed(xs, head, sizeof head - 1);
	if (r == XS_OK)
		r = xml_stream_feed(xs, data, len);
	xml_stream_free(xs);
	return r == XS_OK && p.count == 1 ? p.result : NULL;
}

struct xml_node *xml_copy(struct arena *a, const struct xml_node *n)
{
	if (n->name == NULL) {
		struct xml_node *t = arena_alloc(a, sizeof *t);
		memset(t, 0, sizeof *t);
		t->text = arena_strndup(a, n->text, n->text_len);
		t->text_len = n->text_len;
		return t;
	}
	struct xml_node *c = xml_new(a, n->ns, n->name);
	for (const struct xml_attr *at = n->attrs; at; at = at->next)
		xml_set_attr_ns(a, c, at->ns, at->name, at->value);
	for (const struct xml_node *ch = n->children; ch; ch = ch->next) {
		struct xml_node *cc = xml_copy(a, ch);
		cc->parent = c;
		if (c->last)
			c->last->next = cc;
		else
			c->children = cc;
		c->last = cc;
	}
	return c;
}

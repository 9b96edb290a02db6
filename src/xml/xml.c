#include "xml/xml.h"

#include <stdbool.h>
#include <string.h>

struct xml_node *xml_new(struct arena *a, const char *ns, const char *name)
{
	struct xml_node *n = arena_alloc(a, sizeof *n);
	memset(n, 0, sizeof *n);
	n->ns = arena_strdup(a, ns);
	n->name = arena_strdup(a, name);
	return n;
}

static void append_child(struct xml_node *parent, struct xml_node *c)
{
	c->parent = parent;
	if (parent->last)
		parent->last->next = c;
	else
		parent->children = c;
	parent->last = c;
}

struct xml_node *xml_add_child(struct arena *a, struct xml_node *parent, const char *ns,
			       const char *name)
{
	struct xml_node *c = xml_new(a, ns, name);
	append_child(parent, c);
	return c;
}

void xml_add_text(struct arena *a, struct xml_node *parent, const char *text, size_t len)
{
	struct xml_node *t = arena_alloc(a, sizeof *t);
	memset(t, 0, sizeof *t);
	t->text = arena_strndup(a, text, len);
	t->text_len = len;
	append_child(parent, t);
}

void xml_set_attr_ns(struct arena *a, struct xml_node *n, const char *ns, const char *name,
		     const char *value)
{
	struct xml_attr **pp = &n->attrs;
	for (; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, name) == 0 && strcmp((*pp)->ns, ns) == 0) {
			if (value == NULL)
				*pp = (*pp)->next;
			else
				(*pp)->value = arena_strdup(a, value);
			return;
		}
	}
	if (value == NULL)
		return;
	struct xml_attr *at = arena_alloc(a, sizeof *at);
	at->ns = arena_strdup(a, ns);
	at->name = arena_strdup(a, name);
	at->value = arena_strdup(a, value);
	at->next = NULL;
	*pp = at;
}

void xml_set_attr(struct arena *a, struct xml_node *n, const char *name, const char *value)
{
	xml_set_attr_ns(a, n, "", name, value);
}

const char *xml_attr(const struct xml_node *n, const char *name)
{
	for (const struct xml_attr *at = n->attrs; at; at = at->next)
		if (at->ns[0] == '\0' && strcmp(at->name, name) == 0)
			return at->value;
	return NULL;
}

bool xml_is(const struct xml_node *n, const char *ns, const char *name)
{
	return n->name != NULL && (name == NULL || strcmp(n->name, name) == 0) &&
	       (ns == NULL || strcmp(n->ns, ns) == 0);
}

struct xml_node *xml_child(const struct xml_node *n, const char *ns, const char *name)
{
	for (struct xml_node *c = n->children; c; c = c->next)
		if (c->name != NULL && (name == NULL || strcmp(c->name, name) == 0) &&
		    (ns == NULL || strcmp(c->ns, ns) == 0))
			return c;
	return NULL;
}

struct xml_node *xml_first_element(const struct xml_node *n)
{
	return xml_child(n, NULL, NULL);
}

int xml_element_count(const struct xml_node *n)
{
	int count = 0;
	for (struct xml_node *c = n->children; c; c = c->next)
		if (c->name != NULL)
			count++;
	return count;
}

const char *xml_text(struct arena *a, const struct xml_node *n)
{
	size_t len = 0;
	for (struct xml_node *c = n->children; c; c = c->next)
		if (c->name == NULL)
			len += c->text_len;
	char *out = arena_alloc(a, len + 1);
	size_t off = 0;
	for (struct xml_node *c = n->children; c; c = c->next) {
		if (c->name == NULL) {
			memcpy(out + off, c->text, c->text_len);
			off += c->text_len;
		}
	}
	out[off] = '\0';
	return out;
}

/* buf_append_escaped leaves whitespace alone, but a parser turns a literal
 * CR in text into LF, and TAB, LF and CR in attribute values into spaces:
 * those are written as character references so they read back the same. */
static void append_escaped(struct buf *out, const char *s, size_t n, bool attr)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\r' && !(attr && (s[i] == '\t' || s[i] == '\n')))
			continue;
		buf_append_escaped(out, s + start, i - start);
		buf_printf(out, "&#%d;", s[i]);
		start = i + 1;
	}
	buf_append_escaped(out, s + start, n - start);
}

static void serialize_attrs(const struct xml_node *n, struct buf *out)
{
	int prefix_no = 0;
	for (const struct xml_attr *at = n->attrs; at; at = at->next) {
		buf_puts(out, " ");
		if (at->ns[0] == '\0') {
			buf_puts(out, at->name);
		} else if (strcmp(at->ns, NS_XML) == 0) {
			buf_puts(out, "xml:");
			buf_puts(out, at->name);
		} else {
			/* A qualified attribute gets a prefix declared right here. */
			buf_printf(out, "xmlns:a%d='", prefix_no);
			append_escaped(out, at->ns, strlen(at->ns), true);
			buf_printf(out, "' a%d:%s", prefix_no, at->name);
			prefix_no++;
		}
		buf_puts(out, "='");
		append_escaped(out, at->value, strlen(at->value), true);
		buf_puts(out, "'");
	}
}

void xml_serialize(const struct xml_node *n, const char *context_ns, struct buf *out)
{
	if (n->name == NULL) {
		append_escaped(out, n->text, n->text_len, false);
		return;
	}
	/* The XML namespace may not be declared as the default one: its
	 * elements keep the xml: prefix, which needs no declaration, and
	 * leave the default namespace of their children as it was. */
	const char *prefix = strcmp(n->ns, NS_XML) == 0 ? "xml:" : "";
	const char *inner = prefix[0] ? context_ns : n->ns;
	buf_puts(out, "<");
	buf_puts(out, prefix);
	buf_puts(out, n->name);
	if (strcmp(inner, context_ns) != 0) {
		buf_puts(out, " xmlns='");
		append_escaped(out, n->ns, strlen(n->ns), true);
		buf_puts(out, "'");
	}
	serialize_attrs(n, out);
	if (n->children == NULL) {
		buf_puts(out, "/>");
		return;
	}
	buf_puts(out, ">");
	for (const struct xml_node *c = n->children; c; c = c->next)
		xml_serialize(c, inner, out);
	buf_puts(out, "</");
	buf_puts(out, prefix);
	buf_puts(out, n->name);
	buf_puts(out, ">");
}

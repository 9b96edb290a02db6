/* Stanza trees: parsed once, arena-allocated, serialised once.
 *
 * Names are namespace-resolved: every element carries its namespace URI and
 * local name; prefixes from the wire are not kept. The serialiser writes a
 * default-namespace declaration wherever an element's namespace differs from
 * its parent's, so output is independent of the sender's prefixes. */
#ifndef NATTER_XML_H
#define NATTER_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/buf.h"

#define NS_CLIENT "jabber:client"
#define NS_SERVER "jabber:server"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NS_PING "urn:xmpp:ping"
#define NS_SASL_CB "urn:xmpp:sasl-cb:0"

struct xml_attr {
	const char *ns;    /* "" for unqualified attributes */
	const char *name;
	const char *value;
	struct xml_attr *next;
};

struct xml_node {
	const char *ns;          /* element namespace; NULL for text nodes */
	const char *name;        /* local name; NULL for text nodes */
	const char *text;        /* text node content (not escaped) */
	size_t text_len;
	struct xml_attr *attrs;
	struct xml_node *parent;
	struct xml_node *children; /* first child */
	struct xml_node *last;     /* last child */
	struct xml_node *next;     /* next sibling */
};

/* Builders; everything is allocated in arena a and copied there. */
struct xml_node *xml_new(struct arena *a, const char *ns, const char *name);
struct xml_node *xml_add_child(struct arena *a, struct xml_node *parent, const char *ns,
			       const char *name);
void xml_add_text(struct arena *a, struct xml_node *parent, const char *text, size_t len);
/* Sets (replaces) an unqualified attribute; value NULL removes it. */
void xml_set_attr(struct arena *a, struct xml_node *n, const char *name, const char *value);
void xml_set_attr_ns(struct arena *a, struct xml_node *n, const char *ns, const char *name,
		     const char *value);

/* Lookups; return NULL when absent. */
const char *xml_attr(const struct xml_node *n, const char *name);
struct xml_node *xml_child(const struct xml_node *n, const char *ns, const char *name);
/* The first element child, and the number of element children. */
struct xml_node *xml_first_element(const struct xml_node *n);
int xml_element_count(const struct xml_node *n);
/* Concatenated text of the direct text children, copied into the arena. */
const char *xml_text(struct arena *a, const struct xml_node *n);
/* Whether n is an element with that namespace and name (NULL: any). */
bool xml_is(const struct xml_node *n, const char *ns, const char *name);

/* Appends the serialised form of n to out. context_ns is the default
 * namespace in force where it will be written (NS_CLIENT inside a c2s
 * stream); n gets an xmlns attribute when its namespace differs. */
void xml_serialize(const struct xml_node *n, const char *context_ns, struct buf *out);

#endif

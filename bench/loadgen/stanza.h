/* Incoming XMPP streams: expat in namespace mode turns each top-level
 * element (stanza or nonza) into a small tree, handed to a callback when
 * complete, and freed when the callback returns.
 *
 * Names are expat's "namespace-uri local-name" form, so prefixes chosen by
 * the server (stream:, ejabberd's and Prosody's habits) do not matter. */
#ifndef LOADGEN_STANZA_H
#define LOADGEN_STANZA_H

#include <stdbool.h>
#include <stddef.h>

#include <expat.h>

#define NS_CLIENT "jabber:client"
#define NS_STREAM "http://etherx.jabber.org/streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_ROSTER "jabber:iq:roster"
#define NS_PING "urn:xmpp:ping"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_SM "urn:xmpp:sm:3"         /* XEP-0198 stream management */
#define NS_SASL2 "urn:xmpp:sasl:2"    /* XEP-0388 extensible SASL profile */
#define NS_BIND2 "urn:xmpp:bind:0"    /* XEP-0386 Bind 2 */
#define NS_FAST "urn:xmpp:fast:0"     /* XEP-0484 FAST tokens */

/* One element. Everything hangs off the parser's arena. */
struct stanza {
	const char *name;   /* "ns local" (or "local" outside any namespace) */
	const char **attrs; /* name, value, ..., NULL */
	const char *text;   /* character data directly inside; never NULL */
	size_t text_len;
	struct stanza *parent;
	struct stanza *child; /* first child */
	struct stanza *last;  /* last child */
	struct stanza *next;  /* next sibling */
};

struct stanza_arena_chunk;

struct stanza_handlers {
	/* The stream header arrived (attrs as in struct stanza). */
	void (*open)(void *ud, const char **attrs);
	/* A top-level element is complete; st is valid during the call. */
	void (*element)(void *ud, struct stanza *st);
	/* The peer closed its stream (</stream:stream>). */
	void (*close)(void *ud);
};

struct stanza_parser {
	XML_Parser xp;
	const struct stanza_handlers *h;
	void *ud;
	int depth;
	bool stopped;
	struct stanza *cur; /* open element, NULL between stanzas */
	struct stanza_arena_chunk *arena;
	char *text; /* pending character data of the open elements */
	size_t text_len, text_cap;
	/* Releasing the expat parser of an idle stream (it is some 10 KiB):
	 * the stream header's namespace declarations are kept, and a new
	 * parser is primed with an equivalent header when data arrives. */
	char *ns_decls;     /* " xmlns='...' xmlns:p='...'" of the header */
	size_t ns_len;
	unsigned long long fed;     /* bytes given to the current expat parser */
	unsigned long long idle_at; /* where the last top-level element ended */
	bool released;
	bool priming;
};

int stanza_parser_init(struct stanza_parser *p, const struct stanza_handlers *h, void *ud);
void stanza_parser_free(struct stanza_parser *p);
/* Forgets the current stream and expects a new one (after STARTTLS and
 * SASL success). Must not be called from a handler. */
void stanza_parser_reset(struct stanza_parser *p);
/* From a handler: stop parsing the current buffer; stanza_parser_feed
 * returns 1 and the rest of the buffer is dropped. Used where the stream
 * restarts, after which the server sends nothing until we do. */
void stanza_parser_stop(struct stanza_parser *p);
/* Parses len bytes. Returns 0, 1 if a handler stopped the parser, or -1
 * for malformed XML. */
int stanza_parser_feed(struct stanza_parser *p, const char *data, size_t len);
/* Frees the expat parser if the stream sits between stanzas with nothing
 * half-parsed; the next stanza_parser_feed makes a new one. Returns true if
 * it did. Not from a handler. */
bool stanza_parser_release(struct stanza_parser *p);
const char *stanza_parser_error(struct stanza_parser *p);

/* The first child named name ("ns local"), or NULL. */
struct stanza *stanza_child(const struct stanza *st, const char *name);
/* The value of attribute name, or NULL. */
const char *stanza_attr(const struct stanza *st, const char *name);
bool stanza_is(const struct stanza *st, const char *name);

#endif

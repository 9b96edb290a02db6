/* The XML stream parser: expat underneath, restricted XML (RFC 6120 §11)
 * and hard limits on top. It turns bytes into stream-open / stanza /
 * stream-close events. It never allocates per byte: stanza trees live in one
 * arena that is reset after each stanza callback. */
#ifndef NATTER_XML_STREAM_H
#define NATTER_XML_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "xml/xml.h"

enum xml_stream_result {
	XS_OK = 0,
	XS_STOPPED,           /* a callback asked to stop (xml_stream_stop) */
	XS_NOT_WELL_FORMED,   /* <not-well-formed/> */
	XS_RESTRICTED,        /* DTD, entity declaration, PI, comment: <restricted-xml/> */
	XS_POLICY,            /* stanza size, depth or attribute limit: <policy-violation/> */
	XS_BAD_FORMAT,        /* e.g. text after the stream's end */
	XS_UNSUPPORTED_ENCODING /* not UTF-8 (RFC 6120 §11.6) */
};

struct xml_stream_limits {
	size_t max_stanza_size; /* bytes of one stanza (and of any gap between them) */
	int max_depth;          /* nesting below the stream root */
	int max_attributes;     /* per element */
};

struct xml_stream_handlers {
	/* The stream header arrived. root holds its attributes; default_ns is
	 * the default namespace declared on it ("" if none). Valid only during
	 * the call. */
	void (*open)(void *ud, const struct xml_node *root, const char *default_ns);
	/* A complete top-level element. The tree and arena belong to the
	 * parser and are reset when the call returns: copy or serialise what
	 * must outlive it. The handler may add nodes in arena a. */
	void (*stanza)(void *ud, struct xml_node *stanza, struct arena *a);
	/* The peer closed the stream (</stream:stream>). */
	void (*close)(void *ud);
};

struct xml_stream;

struct xml_stream *xml_stream_new(const struct xml_stream_limits *limits,
				  const struct xml_stream_handlers *h, void *ud);
void xml_stream_free(struct xml_stream *s);

/* Feeds bytes. Returns XS_OK when everything was consumed, or the reason
 * parsing ended; after an error the stream must not be fed again. */
enum xml_stream_result xml_stream_feed(struct xml_stream *s, const char *data, size_t len);

/* Called from a handler: after the current event, forget all state and
 * expect a fresh stream header (after STARTTLS or SASL success). Bytes after
 * that event in the current feed are discarded: the RFC forbids a peer to
 * send any before it has seen our answer. */
void xml_stream_restart(struct xml_stream *s);

/* Called from a handler: stop parsing; xml_stream_feed returns XS_STOPPED. */
void xml_stream_stop(struct xml_stream *s);

/* Frees the parser between stanzas of an idle stream (it holds about
 * 10 KiB); the next feed makes a new one and replays the stream header
 * from the namespace declarations kept. Returns 0 when released, -1 when
 * the stream is not at a stanza boundary (or is not a released-able
 * stream: no header yet, closed, failed). */
int xml_stream_release(struct xml_stream *s);

/* Whether the parser is released now. A released stream takes
 * whitespace and simple empty elements with their own xmlns (a stream
 * management ack, a CSI state) without making a new parser; anything
 * else makes one. */
bool xml_stream_released(const struct xml_stream *s);

/* The stream error condition (RFC 6120 §4.9.3) for a result that ends
 * the stream, e.g. "not-well-formed"; NULL for XS_OK and XS_STOPPED. */
const char *xml_stream_condition(enum xml_stream_result r);

/* Expat's description of the last parse error, for logs. */
const char *xml_stream_error_text(const struct xml_stream *s);

#endif

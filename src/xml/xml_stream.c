#include "xml/xml_stream.h"

#include <expat.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

/* Expat joins namespace and local name with this; a space can appear in
 * neither a valid URI nor a name, and we split at the last one. */
#define NS_SEP ' '

/* Longest unfinished token that is reparsed on every feed; see
 * xml_stream_feed. No legitimate XMPP tag comes near it. */
#define REPARSE_EVERY_FEED 8192

/* A light scan of the fed bytes, enough to tell when a tag ends: outside
 * markup, inside a tag, inside a quoted attribute value. */
enum { MARKUP_TEXT, MARKUP_TAG, MARKUP_SQUOTE, MARKUP_DQUOTE };

struct xml_stream {
	XML_Parser parser;
	struct xml_stream_limits limits;
	const struct xml_stream_handlers *h;
	void *ud;

	struct arena arena;       /* the current stanza's tree */
	struct xml_node *stanza;  /* root of the stanza being built */
	struct xml_node *current; /* innermost open element */
	struct buf text;          /* pending character data of current */
	int level;                /* 0 outside the root, 1 inside it, 2+ in a stanza */
	char default_ns[256];     /* default namespace declared on the root */

	long long fed;            /* bytes fed since the last (re)start */
	unsigned char lead[2];    /* the first two of those bytes */
	long long boundary;       /* end of the last stanza or inter-stanza text */
	long long last_event;     /* end of the last event expat reported */
	enum xml_stream_result result;
	bool restart;
	bool stop;
	bool closed;
	bool resuming;            /* parsing our own copy of the header */
	unsigned char markup;     /* where the fed bytes stand: MARKUP_* */
	struct buf held;          /* input held back from expat; see xml_stream_feed */
	struct buf root_ns;       /* the root's declarations: "prefix\0uri\0"... */
};

static void split_name(struct arena *a, const char *qname, const char **ns, const char **local)
{
	const char *sep = strrchr(qname, NS_SEP);
	if (sep == NULL) {
		*ns = "";
		*local = arena_strdup(a, qname);
	} else {
		*ns = arena_strndup(a, qname, (size_t)(sep - qname));
		*local = arena_strdup(a, sep + 1);
	}
}

static void fail(struct xml_stream *s, enum xml_stream_result r)
{
	if (s->result == XS_OK)
		s->result = r;
	XML_StopParser(s->parser, XML_FALSE);
}

static long long event_end(struct xml_stream *s)
{
	return (long long)XML_GetCurrentByteIndex(s->parser) + XML_GetCurrentByteCount(s->parser);
}

static void mark_event(struct xml_stream *s)
{
	s->last_event = event_end(s);
}

static void flush_text(struct xml_stream *s)
{
	if (s->text.len > 0 && s->current != NULL)
		xml_add_text(&s->arena, s->current, s->text.data, s->text.len);
	s->text.len = 0;
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct xml_stream *s = ud;
	if (s->stop || s->result != XS_OK)
		return;
	mark_event(s);
	int n_atts = 0;
	while (atts[n_atts * 2] != NULL)
		n_atts++;
	if (n_atts > s->limits.max_attributes || s->level > s->limits.max_depth) {
		fail(s, XS_POLICY);
		return;
	}
	/* The stream header is bounded like a stanza, however it was split. */
	if (event_end(s) - s->boundary > (long long)s->limits.max_stanza_size) {
		fail(s, XS_POLICY);
		return;
	}
	flush_text(s);
	const char *ns, *local;
	split_name(&s->arena, name, &ns, &local);
	struct xml_node *n = s->level <= 1 ? xml_new(&s->arena, ns, local)
					   : xml_add_child(&s->arena, s->current, ns, local);
	for (int i = 0; i < n_atts; i++) {
		const char *ans, *alocal;
		split_name(&s->arena, atts[i * 2], &ans, &alocal);
		xml_set_attr_ns(&s->arena, n, ans, alocal, atts[i * 2 + 1]);
	}
	if (s->level == 0) {
		s->level = 1;
		s->boundary = event_end(s);
		if (s->resuming) {
			/* Our own copy of the header: the peer sent it long ago. */
			s->resuming = false;
			arena_reset(&s->arena);
			return;
		}
		s->h->open(s->ud, n, s->default_ns);
		arena_reset(&s->arena);
		if (s->restart || s->stop)
			XML_StopParser(s->parser, XML_FALSE);
		return;
	}
	if (s->level == 1)
		s->stanza = n;
	s->current = n;
	s->level++;
}

static void on_end(void *ud, const XML_Char *name)
{
	struct xml_stream *s = ud;
	(void)name;
	if (s->stop || s->result != XS_OK)
		return;
	mark_event(s);
	if (s->level == 1) {
		s->level = 0;
		s->closed = true;
		s->h->close(s->ud);
		if (s->restart || s->stop)
			XML_StopParser(s->parser, XML_FALSE);
		return;
	}
	flush_text(s);
	s->level--;
	if (s->level > 1) {
		s->current = s->current->parent;
		return;
	}
	/* A whole stanza. */
	long long end = event_end(s);
	if (end - s->boundary > (long long)s->limits.max_stanza_size) {
		fail(s, XS_POLICY);
		return;
	}
	s->boundary = end;
	struct xml_node *stanza = s->stanza;
	s->stanza = s->current = NULL;
	s->h->stanza(s->ud, stanza, &s->arena);
	arena_reset(&s->arena);
	if (s->restart || s->stop)
		XML_StopParser(s->parser, XML_FALSE);
}

static void on_text(void *ud, const XML_Char *data, int len)
{
	struct xml_stream *s = ud;
	if (s->stop || s->result != XS_OK)
		return;
	mark_event(s);
	if (s->level <= 1) {
		/* Between stanzas: whitespace keep-alives. They move the boundary
		 * so that a long-lived stream never trips the size limit. */
		s->boundary = event_end(s);
		return;
	}
	buf_append(&s->text, data, (size_t)len);
}

static void on_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct xml_stream *s = ud;
	if (s->level == 0 && !s->resuming && s->root_ns.len < 4096) {
		buf_append(&s->root_ns, prefix ? prefix : "", strlen(prefix ? prefix : "") + 1);
		buf_append(&s->root_ns, uri ? uri : "", strlen(uri ? uri : "") + 1);
	}
	if (s->level == 0 && prefix == NULL) {
		/* Expat passes NULL for xmlns='' (no default namespace). */
		if (uri == NULL)
			uri = "";
		size_t n = strlen(uri);
		if (n >= sizeof s->default_ns)
			n = sizeof s->default_ns - 1;
		memcpy(s->default_ns, uri, n);
		s->default_ns[n] = '\0';
	}
}

/* A forced parser encoding makes expat ignore the declared one, so a
 * declaration of anything but UTF-8 is refused here (RFC 6120 §11.6). */
static void on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
			int standalone)
{
	(void)version, (void)standalone;
	mark_event(ud);
	if (encoding != NULL && strcasecmp(encoding, "UTF-8") != 0)
		fail(ud, XS_UNSUPPORTED_ENCODING);
}

static void on_restricted_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
				  const XML_Char *pubid, int has_internal)
{
	(void)name, (void)sysid, (void)pubid, (void)has_internal;
	fail(ud, XS_RESTRICTED);
}

static void on_restricted_entity(void *ud, const XML_Char *name, int is_param,
				 const XML_Char *value, int value_len, const XML_Char *base,
				 const XML_Char *sysid, const XML_Char *pubid,
				 const XML_Char *notation)
{
	(void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid,
		(void)pubid, (void)notation;
	fail(ud, XS_RESTRICTED);
}

static void on_restricted_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	(void)target, (void)data;
	fail(ud, XS_RESTRICTED);
}

static void on_restricted_comment(void *ud, const XML_Char *data)
{
	(void)data;
	fail(ud, XS_RESTRICTED);
}

static void setup_parser(struct xml_stream *s)
{
	XML_SetUserData(s->parser, s);
	XML_SetElementHandler(s->parser, on_start, on_end);
	XML_SetCharacterDataHandler(s->parser, on_text);
	XML_SetStartNamespaceDeclHandler(s->parser, on_ns_start);
	XML_SetXmlDeclHandler(s->parser, on_xml_decl);
	XML_SetStartDoctypeDeclHandler(s->parser, on_restricted_doctype);
	XML_SetEntityDeclHandler(s->parser, on_restricted_entity);
	XML_SetProcessingInstructionHandler(s->parser, on_restricted_pi);
	XML_SetCommentHandler(s->parser, on_restricted_comment);
	XML_SetParamEntityParsing(s->parser, XML_PARAM_ENTITY_PARSING_NEVER);
#ifdef NATTER_HAVE_REPARSE_DEFERRAL
	XML_SetReparseDeferralEnabled(s->parser, XML_FALSE); /* ours is in xml_stream_feed */
#endif
}

static void reset_state(struct xml_stream *s)
{
	arena_reset(&s->arena);
	s->stanza = s->current = NULL;
	s->text.len = 0;
	s->level = 0;
	s->default_ns[0] = '\0';
	s->fed = s->boundary = s->last_event = 0;
	s->restart = s->stop = s->closed = s->resuming = false;
	s->markup = MARKUP_TEXT;
	buf_free(&s->held);
	s->result = XS_OK;
	s->root_ns.len = 0;
}

/* A parser for a new stream header (xml_stream_restart), state reset. */
static void fresh_parser(struct xml_stream *s)
{
	if (s->parser != NULL) {
		XML_ParserReset(s->parser, "UTF-8");
	} else if ((s->parser = XML_ParserCreateNS("UTF-8", NS_SEP)) == NULL) {
		fatal("XML_ParserCreateNS failed");
	}
	setup_parser(s);
	reset_state(s);
}

/* The first quote or '>' in p[0..n), or NULL. */
static const char *tag_stop(const char *p, size_t n)
{
	for (const char *end = p + n; p < end; p++)
		if (*p == '>' || *p == '\'' || *p == '"')
			return p;
	return NULL;
}

/* Follows data through the markup scan and says whether a tag ended in
 * it: a '>' outside quoted attribute values after a '<'. Then the token
 * expat may be holding back is complete, and must be parsed now. */
static bool tag_ends(struct xml_stream *s, const char *data, size_t n)
{
	const char *p = data, *end = data + n;
	bool ended = false;
	while (p < end) {
		const char *hit;
		switch (s->markup) {
		case MARKUP_TEXT:
			hit = memchr(p, '<', (size_t)(end - p));
			if (hit == NULL)
				return ended;
			s->markup = MARKUP_TAG;
			break;
		case MARKUP_TAG:
			hit = tag_stop(p, (size_t)(end - p));
			if (hit == NULL)
				return ended;
			if (*hit == '>') {
				s->markup = MARKUP_TEXT;
				ended = true;
			} else {
				s->markup = *hit == '\'' ? MARKUP_SQUOTE : MARKUP_DQUOTE;
			}
			break;
		default:
			hit = memchr(p, s->markup == MARKUP_SQUOTE ? '\'' : '"', (size_t)(end - p));
			if (hit == NULL)
				return ended;
			s->markup = MARKUP_TAG;
			break;
		}
		p = hit + 1;
	}
	return ended;
}

struct xml_stream *xml_stream_new(const struct xml_stream_limits *limits,
				  const struct xml_stream_handlers *h, void *ud)
{
	struct xml_stream *s = xcalloc(1, sizeof *s);
	s->limits = *limits;
	s->h = h;
	s->ud = ud;
	arena_init(&s->arena);
	buf_init(&s->text);
	buf_init(&s->root_ns);
	/* Forcing UTF-8 stops expat from switching to a declared encoding;
	 * on_xml_decl refuses the declaration itself. */
	s->parser = XML_ParserCreateNS("UTF-8", NS_SEP);
	if (s->parser == NULL)
		fatal("XML_ParserCreateNS failed");
	setup_parser(s);
	reset_state(s);
	return s;
}

void xml_stream_free(struct xml_stream *s)
{
	if (s == NULL)
		return;
	if (s->parser != NULL)
		XML_ParserFree(s->parser);
	arena_reset(&s->arena);
	buf_free(&s->text);
	buf_free(&s->root_ns);
	buf_free(&s->held);
	free(s);
}

void xml_stream_restart(struct xml_stream *s) { s->restart = true; }

void xml_stream_stop(struct xml_stream *s) { s->stop = true; }

const char *xml_stream_error_text(const struct xml_stream *s)
{
	return s->parser ? XML_ErrorString(XML_GetErrorCode(s->parser)) : "";
}

/* The root's qualified name as the peer wrote it, from its declarations:
 * "stream" under the default namespace, else "PREFIX:stream" for the
 * prefix bound to the streams namespace. Returns -1 if there is none. */
static int root_qname(const struct xml_stream *s, struct buf *out)
{
	for (size_t i = 0; i < s->root_ns.len;) {
		const char *prefix = s->root_ns.data + i;
		const char *uri = prefix + strlen(prefix) + 1;
		i = (size_t)(uri - s->root_ns.data) + strlen(uri) + 1;
		if (strcmp(uri, "http://etherx.jabber.org/streams") != 0)
			continue;
		if (prefix[0] != '\0') {
			buf_puts(out, prefix);
			buf_puts(out, ":");
		}
		buf_puts(out, "stream");
		return 0;
	}
	return -1;
}

int xml_stream_release(struct xml_stream *s)
{
	if (s->parser == NULL || s->level != 1 || s->closed || s->result != XS_OK ||
	    s->fed != s->boundary || s->held.len > 0 || s->stanza != NULL || s->restart ||
	    s->stop)
		return -1;
	struct buf probe;
	buf_init(&probe);
	int ok = root_qname(s, &probe);
	buf_free(&probe);
	if (ok != 0)
		return -1;
	XML_ParserFree(s->parser);
	s->parser = NULL;
	buf_free(&s->text);
	arena_reset(&s->arena);
	return 0;
}

bool xml_stream_released(const struct xml_stream *s)
{
	return s->parser == NULL;
}

/* Makes a new parser and replays the stream header from what was kept,
 * so the peer's next stanza parses as if the old parser had stayed. */
static enum xml_stream_result resume(struct xml_stream *s)
{
	struct buf h;
	buf_init(&h);
	buf_puts(&h, "<");
	root_qname(s, &h);
	for (size_t i = 0; i < s->root_ns.len;) {
		const char *prefix = s->root_ns.data + i;
		const char *uri = prefix + strlen(prefix) + 1;
		i = (size_t)(uri - s->root_ns.data) + strlen(uri) + 1;
		buf_puts(&h, prefix[0] ? " xmlns:" : " xmlns");
		buf_puts(&h, prefix);
		buf_puts(&h, "='");
		buf_append_escaped(&h, uri, strlen(uri));
		buf_puts(&h, "'");
	}
	buf_puts(&h, ">");
	s->parser = XML_ParserCreateNS("UTF-8", NS_SEP);
	if (s->parser == NULL)
		fatal("XML_ParserCreateNS failed");
	setup_parser(s);
	s->level = 0;
	s->resuming = true;
	s->fed = (long long)h.len;
	s->boundary = s->last_event = 0;
	enum XML_Status st = XML_Parse(s->parser, h.data, (int)h.len, XML_FALSE);
	buf_free(&h);
	if (st != XML_STATUS_OK || s->level != 1 || s->result != XS_OK)
		return XS_NOT_WELL_FORMED; /* cannot happen: we wrote it */
	return XS_OK;
}

/* Expat switches to UTF-16 on a byte order mark or a NUL among the first
 * two bytes of a document, whatever encoding it was told to use. Records
 * those bytes as they arrive (n more of them in data) and says whether
 * they announce UTF-16. */
static bool utf16_lead(struct xml_stream *s, const char *data, int n)
{
	for (int i = 0; i < n && s->fed + i < 2; i++)
		s->lead[s->fed + i] = (unsigned char)data[i];
	if (s->fed + n < 2)
		return false;
	unsigned bom = (unsigned)s->lead[0] << 8 | s->lead[1];
	return s->lead[0] == 0 || s->lead[1] == 0 || bom == 0xFEFF || bom == 0xFFFE;
}

/* --- the light path: what an idle client sends, without a parser --- */

/* Longest element the light path takes; anything longer goes to expat. */
#define LIGHT_MAX 512

static bool light_name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (!first && ((c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'));
}

static size_t light_space(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
		i++;
	return i;
}

/* Parses one complete empty element at p: '<' name, attributes with
 * plain names and printable ASCII values without '<', '&' or the quote,
 * one of them xmlns (no prefixes anywhere, no duplicates), '/>'. Returns
 * its length with the node built in s->arena (*out), or 0: not that
 * simple, or not complete in n bytes; expat decides then. */
static size_t light_element(struct xml_stream *s, const char *p, size_t n, struct xml_node **out)
{
	size_t i = 1, start;
	if (n > LIGHT_MAX)
		n = LIGHT_MAX;
	if (n < 4 || p[0] != '<' || !light_name_char(p[1], true))
		return 0;
	while (i < n && light_name_char(p[i], false))
		i++;
	const char *name = p + 1;
	size_t name_len = i - 1;
	struct {
		const char *name, *value;
		size_t name_len, value_len;
	} at[8];
	int n_at = 0;
	const char *ns = NULL;
	size_t ns_len = 0;
	for (;;) {
		size_t sp = light_space(p + i, n - i);
		i += sp;
		if (i + 1 < n && p[i] == '/' && p[i + 1] == '>')
			break;
		if (sp == 0 || i >= n || !light_name_char(p[i], true) || n_at == 8)
			return 0;
		start = i;
		while (i < n && light_name_char(p[i], false))
			i++;
		size_t an_len = i - start;
		i += light_space(p + i, n - i);
		if (i >= n || p[i] != '=')
			return 0;
		i++;
		i += light_space(p + i, n - i);
		if (i >= n || (p[i] != '\'' && p[i] != '"'))
			return 0;
		char q = p[i++];
		size_t vstart = i;
		while (i < n && p[i] != q) {
			if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '<' || p[i] == '&')
				return 0;
			i++;
		}
		if (i >= n)
			return 0;
		for (int k = 0; k < n_at; k++)
			if (at[k].name_len == an_len && memcmp(at[k].name, p + start, an_len) == 0)
				return 0; /* a duplicate: expat says what is wrong */
		if (an_len == 5 && memcmp(p + start, "xmlns", 5) == 0) {
			if (ns != NULL)
				return 0;
			ns = p + vstart;
			ns_len = i - vstart;
		}
		at[n_at].name = p + start;
		at[n_at].name_len = an_len;
		at[n_at].value = p + vstart;
		at[n_at].value_len = i - vstart;
		n_at++;
		i++; /* the quote */
	}
	if (ns == NULL || ns_len == 0 || n_at > s->limits.max_attributes)
		return 0;
	if (memchr(ns, NS_SEP, ns_len) != NULL)
		return 0; /* expat refuses a namespace holding its separator */
	static const char xml_ns[] = "http://www.w3.org/XML/1998/namespace",
			  xmlns_ns[] = "http://www.w3.org/2000/xmlns/";
	if ((ns_len == sizeof xml_ns - 1 && memcmp(ns, xml_ns, ns_len) == 0) ||
	    (ns_len == sizeof xmlns_ns - 1 && memcmp(ns, xmlns_ns, ns_len) == 0))
		return 0; /* reserved: expat refuses them */
	struct xml_node *node = xml_new(&s->arena, arena_strndup(&s->arena, ns, ns_len),
					arena_strndup(&s->arena, name, name_len));
	for (int k = 0; k < n_at; k++) {
		if (at[k].value == ns)
			continue; /* a namespace declaration, not an attribute */
		xml_set_attr_ns(&s->arena, node, "",
				arena_strndup(&s->arena, at[k].name, at[k].name_len),
				arena_strndup(&s->arena, at[k].value, at[k].value_len));
	}
	*out = node;
	return i + 2;
}

/* With the parser released (xml_stream_release): takes the whitespace
 * and simple empty elements at the start of the input (a stream
 * management ack, a CSI state, a keepalive) and hands the elements to the
 * stanza handler, so an idle client's traffic does not rebuild expat
 * (about 10 KiB). Returns how many bytes it took; the rest, if any, goes
 * to expat as usual. */
static size_t light_feed(struct xml_stream *s, const char *data, size_t len)
{
	size_t used = 0;
	while (used < len && !s->stop && !s->restart && !s->closed && s->result == XS_OK) {
		used += light_space(data + used, len - used);
		struct xml_node *el;
		size_t n = used < len ? light_element(s, data + used, len - used, &el) : 0;
		if (n == 0)
			break;
		used += n;
		s->h->stanza(s->ud, el, &s->arena);
		arena_reset(&s->arena);
	}
	return used;
}

enum xml_stream_result xml_stream_feed(struct xml_stream *s, const char *data, size_t len)
{
	if (s->closed && len > 0)
		return XS_BAD_FORMAT;
	if (s->parser == NULL && len > 0 && !s->restart) {
		size_t used = light_feed(s, data, len);
		data += used;
		len -= used;
		if (s->stop || s->result != XS_OK)
			return s->stop ? XS_STOPPED : s->result;
		if (s->restart) {
			/* As in the loop below: the rest of this feed is dropped. */
			fresh_parser(s);
			return XS_OK;
		}
	}
	if (s->restart) {
		/* Restart asked for between two feeds (an answer that came
		 * back from a directory thread): the new header starts here. */
		fresh_parser(s);
	}
	if (s->parser == NULL && len > 0) {
		enum xml_stream_result r = resume(s);
		if (r != XS_OK)
			return r;
	}
	/* Expat takes an int length: feed very large inputs in slices. */
	while (len > 0) {
		int n = len > (1 << 20) ? (1 << 20) : (int)len;
		if (s->fed < 2 && utf16_lead(s, data, n)) {
			s->result = XS_UNSUPPORTED_ENCODING;
			return s->result;
		}
		/* Expat reparses an unfinished token from its start on every
		 * call, so a long token fed in tiny pieces would cost the square
		 * of its length. Once the unfinished part is longer than any
		 * legitimate tag, its next bytes are held here until they
		 * double it, which keeps the total linear. A tag that ends in
		 * this slice is parsed at once, so a complete stanza never waits
		 * for bytes the peer will not send before it gets an answer.
		 * (Expat >= 2.6 has a deferral of its own with no such
		 * exception; setup_parser turns it off.) */
		bool ended = tag_ends(s, data, (size_t)n);
		long long pending = s->fed - s->last_event;
		if (!ended && pending > REPARSE_EVERY_FEED &&
		    (long long)(s->held.len + (size_t)n) < pending) {
			buf_append(&s->held, data, (size_t)n);
			if (s->fed + (long long)s->held.len - s->boundary >
			    (long long)s->limits.max_stanza_size)
				return XS_POLICY;
			data += n;
			len -= (size_t)n;
			continue;
		}
		const char *chunk = data;
		int chunk_len = n;
		if (s->held.len > 0) {
			buf_append(&s->held, data, (size_t)n);
			chunk = s->held.data;
			chunk_len = (int)s->held.len;
		}
		s->fed += chunk_len;
		enum XML_Status st = XML_Parse(s->parser, chunk, chunk_len, XML_FALSE);
		buf_free(&s->held);
		if (s->restart) {
			XML_ParserReset(s->parser, "UTF-8");
			setup_parser(s);
			reset_state(s);
			return XS_OK;
		}
		if (s->stop)
			return XS_STOPPED;
		if (s->result != XS_OK)
			return s->result;
		if (st != XML_STATUS_OK)
			return XS_NOT_WELL_FORMED;
		/* Expat buffers an unfinished token internally: bound it too. */
		if (s->fed - s->boundary > (long long)s->limits.max_stanza_size)
			return XS_POLICY;
		data += n;
		len -= (size_t)n;
	}
	return XS_OK;
}

const char *xml_stream_condition(enum xml_stream_result r)
{
	switch (r) {
	case XS_NOT_WELL_FORMED:
		return "not-well-formed";
	case XS_RESTRICTED:
		return "restricted-xml";
	case XS_POLICY:
		return "policy-violation";
	case XS_BAD_FORMAT:
		return "bad-format";
	case XS_UNSUPPORTED_ENCODING:
		return "unsupported-encoding";
	default:
		return NULL;
	}
}

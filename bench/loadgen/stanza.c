#include "stanza.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE 4096

struct stanza_arena_chunk {
	struct stanza_arena_chunk *next;
	size_t used, cap;
	char data[];
};

/* Bump allocation for the element being built; released as a whole when
 * the top-level element has been handed over, so an idle connection holds
 * no chunk. */
static void *stanza_alloc(struct stanza_parser *p, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	struct stanza_arena_chunk *c = p->arena;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > CHUNK_SIZE ? n : CHUNK_SIZE;
		c = malloc(sizeof *c + cap);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = p->arena;
		p->arena = c;
	}
	void *r = c->data + c->used;
	c->used += n;
	return r;
}

static void stanza_arena_free(struct stanza_parser *p)
{
	while (p->arena) {
		struct stanza_arena_chunk *next = p->arena->next;
		free(p->arena);
		p->arena = next;
	}
}

static char *stanza_strdup(struct stanza_parser *p, const char *s, size_t n)
{
	char *r = stanza_alloc(p, n + 1);
	if (r) {
		if (n)
			memcpy(r, s, n);
		r[n] = '\0';
	}
	return r;
}

static void stanza_oom(struct stanza_parser *p)
{
	XML_StopParser(p->xp, XML_FALSE);
}

/* The end of the current event, in bytes from the start of the input. */
static unsigned long long stanza_event_end(struct stanza_parser *p)
{
	return (unsigned long long)XML_GetCurrentByteIndex(p->xp) +
	       (unsigned long long)XML_GetCurrentByteCount(p->xp);
}

static void stanza_decls_append(struct stanza_parser *p, const char *s, size_t n)
{
	char *d = realloc(p->ns_decls, p->ns_len + n + 1);
	if (!d)
		return;
	memcpy(d + p->ns_len, s, n);
	p->ns_len += n;
	d[p->ns_len] = '\0';
	p->ns_decls = d;
}

static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct stanza_parser *p = ud;
	if (p->depth != 0 || p->priming)
		return;
	stanza_decls_append(p, " xmlns", 6);
	if (prefix) {
		stanza_decls_append(p, ":", 1);
		stanza_decls_append(p, prefix, strlen(prefix));
	}
	stanza_decls_append(p, "='", 2);
	for (const char *c = uri ? uri : ""; *c; c++) {
		switch (*c) {
		case '&': stanza_decls_append(p, "&amp;", 5); break;
		case '<': stanza_decls_append(p, "&lt;", 4); break;
		case '\'': stanza_decls_append(p, "&apos;", 6); break;
		default: stanza_decls_append(p, c, 1); break;
		}
	}
	stanza_decls_append(p, "'", 1);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct stanza_parser *p = ud;
	int depth = p->depth++;
	if (depth == 0) {
		p->idle_at = stanza_event_end(p);
		if (p->h->open && !p->priming)
			p->h->open(p->ud, attrs);
		return;
	}
	struct stanza *st = stanza_alloc(p, sizeof *st);
	if (!st) {
		stanza_oom(p);
		return;
	}
	memset(st, 0, sizeof *st);
	st->name = stanza_strdup(p, name, strlen(name));
	size_t n = 0;
	while (attrs[n])
		n++;
	st->attrs = stanza_alloc(p, (n + 1) * sizeof *st->attrs);
	if (!st->name || !st->attrs) {
		stanza_oom(p);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!(st->attrs[i] = stanza_strdup(p, attrs[i], strlen(attrs[i])))) {
			stanza_oom(p);
			return;
		}
	}
	st->attrs[n] = NULL;
	/* Remember where this element's own text starts in the pending text;
	 * text_len is reused for that until the element ends. */
	st->text_len = p->text_len;
	st->parent = p->cur;
	if (p->cur) {
		if (p->cur->last)
			p->cur->last->next = st;
		else
			p->cur->child = st;
		p->cur->last = st;
	}
	p->cur = st;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct stanza_parser *p = ud;
	(void)name;
	int depth = --p->depth;
	if (depth == 0) {
		if (p->h->close)
			p->h->close(p->ud);
		return;
	}
	struct stanza *st = p->cur;
	if (!st)
		return;
	size_t start = st->text_len;
	st->text_len = p->text_len - start;
	st->text = stanza_strdup(p, p->text + start, st->text_len);
	if (!st->text) {
		stanza_oom(p);
		return;
	}
	p->text_len = start;
	p->cur = st->parent;
	if (depth == 1) {
		p->idle_at = stanza_event_end(p);
		p->h->element(p->ud, st);
		p->cur = NULL;
		p->text_len = 0;
		stanza_arena_free(p);
		if (p->text_cap > CHUNK_SIZE) {
			free(p->text);
			p->text = NULL;
			p->text_cap = 0;
		}
	}
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct stanza_parser *p = ud;
	/* Whitespace between stanzas (keepalives) is of no interest, but it
	 * leaves nothing half-parsed either. */
	if (!p->cur) {
		if (p->depth == 1)
			p->idle_at = stanza_event_end(p);
		return;
	}
	if (len <= 0)
		return;
	if (p->text_cap - p->text_len < (size_t)len) {
		size_t cap = p->text_cap ? p->text_cap : 256;
		while (cap - p->text_len < (size_t)len)
			cap *= 2;
		char *t = realloc(p->text, cap);
		if (!t) {
			stanza_oom(p);
			return;
		}
		p->text = t;
		p->text_cap = cap;
	}
	memcpy(p->text + p->text_len, s, (size_t)len);
	p->text_len += (size_t)len;
}

static void stanza_parser_setup(struct stanza_parser *p)
{
	XML_SetUserData(p->xp, p);
	XML_SetElementHandler(p->xp, on_start, on_end);
	XML_SetCharacterDataHandler(p->xp, on_text);
	XML_SetNamespaceDeclHandler(p->xp, on_ns_decl, NULL);
	/* Expat >= 2.6 (and Debian's patched 2.5) may hold back a token that
	 * arrived in pieces until more bytes come; a stanza split across two
	 * reads would then wait for the next one, which shows up as latency
	 * that is the generator's, not the server's. The server under test is
	 * not an adversary, so always reparse. */
#ifdef NATTER_HAVE_REPARSE_DEFERRAL
	XML_SetReparseDeferralEnabled(p->xp, XML_FALSE);
#endif
	p->depth = 0;
	p->stopped = false;
	p->cur = NULL;
	p->text_len = 0;
	p->fed = p->idle_at = 0;
	stanza_arena_free(p);
}

int stanza_parser_init(struct stanza_parser *p, const struct stanza_handlers *h, void *ud)
{
	memset(p, 0, sizeof *p);
	p->h = h;
	p->ud = ud;
	p->xp = XML_ParserCreateNS("UTF-8", ' ');
	if (!p->xp)
		return -1;
	stanza_parser_setup(p);
	return 0;
}

void stanza_parser_free(struct stanza_parser *p)
{
	if (p->xp)
		XML_ParserFree(p->xp);
	p->xp = NULL;
	stanza_arena_free(p);
	free(p->text);
	p->text = NULL;
	p->text_cap = p->text_len = 0;
	free(p->ns_decls);
	p->ns_decls = NULL;
	p->ns_len = 0;
}

void stanza_parser_reset(struct stanza_parser *p)
{
	free(p->ns_decls);
	p->ns_decls = NULL;
	p->ns_len = 0;
	p->released = false;
	if (!p->xp)
		p->xp = XML_ParserCreateNS("UTF-8", ' ');
	else
		XML_ParserReset(p->xp, "UTF-8");
	if (p->xp)
		stanza_parser_setup(p);
}

bool stanza_parser_release(struct stanza_parser *p)
{
	if (!p->xp || p->stopped || p->depth != 1 || p->cur || p->idle_at != p->fed)
		return false;
	XML_ParserFree(p->xp);
	p->xp = NULL;
	free(p->text);
	p->text = NULL;
	p->text_cap = p->text_len = 0;
	p->released = true;
	return true;
}

/* A new parser, inside a stream like the one released: an element in a
 * namespace of our own carrying the original header's declarations. */
static int stanza_parser_revive(struct stanza_parser *p)
{
	static const char open[] = "<lg:s xmlns:lg='urn:x-natter-load:stream'";
	p->xp = XML_ParserCreateNS("UTF-8", ' ');
	if (!p->xp)
		return -1;
	stanza_parser_setup(p);
	p->released = false;
	p->priming = true;
	enum XML_Status st = XML_Parse(p->xp, open, sizeof open - 1, XML_FALSE);
	if (st == XML_STATUS_OK && p->ns_len)
		st = XML_Parse(p->xp, p->ns_decls, (int)p->ns_len, XML_FALSE);
	if (st == XML_STATUS_OK)
		st = XML_Parse(p->xp, ">", 1, XML_FALSE);
	p->priming = false;
	p->fed = sizeof open - 1 + p->ns_len + 1;
	return st == XML_STATUS_OK && p->depth == 1 ? 0 : -1;
}

void stanza_parser_stop(struct stanza_parser *p)
{
	p->stopped = true;
	if (p->xp)
		XML_StopParser(p->xp, XML_FALSE);
}

int stanza_parser_feed(struct stanza_parser *p, const char *data, size_t len)
{
	if (p->stopped)
		return 1;
	if (p->released && stanza_parser_revive(p) < 0)
		return -1;
	if (!p->xp)
		return -1;
	p->fed += len;
	if (XML_Parse(p->xp, data, (int)len, XML_FALSE) == XML_STATUS_OK)
		return 0;
	return p->stopped ? 1 : -1;
}

const char *stanza_parser_error(struct stanza_parser *p)
{
	return p->xp ? XML_ErrorString(XML_GetErrorCode(p->xp)) : "out of memory";
}

struct stanza *stanza_child(const struct stanza *st, const char *name)
{
	for (struct stanza *c = st->child; c; c = c->next)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

const char *stanza_attr(const struct stanza *st, const char *name)
{
	for (const char **a = st->attrs; a && a[0]; a += 2)
		if (strcmp(a[0], name) == 0)
			return a[1];
	return NULL;
}

bool stanza_is(const struct stanza *st, const char *name)
{
	return strcmp(st->name, name) == 0;
}

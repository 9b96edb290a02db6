/* Client state indication (XEP-0352). While a client says it is inactive
 * (a phone app in the background), the stanzas it does not need at once
 * are held on its session, older ones replaced by newer ones where only
 * the last counts (a contact's presence, a chat state), and written in
 * order when it becomes active again or when something it needs at once
 * arrives. docs/mobile.md says what is held and what passes. */
#ifndef NATTER_CSI_H
#define NATTER_CSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "xml/xml.h"

#define NS_CSI "urn:xmpp:csi:0"

/* The session's one write path for stanzas: what CSI releases and what it
 * never held both end there, so a held stanza is not yet "sent" for
 * stream management. arg is the session. */
typedef void csi_write_fn(void *arg, const char *data, size_t len);

/* What to do with a stanza for an inactive client. */
enum csi_class {
	CSI_URGENT,   /* write now, after everything held (in order) */
	CSI_PASS,     /* write now, after what is held from the same sender */
	CSI_HOLD,     /* hold, in order */
	CSI_COLLAPSE  /* hold, replacing a held one with the same key */
};

struct csi_item;
struct csi_nick;

/* Lives in the session (struct c2s); zeroed memory plus csi_init is a
 * valid, active state. Owned by the session's loop only. */
struct csi {
	bool inactive;           /* the client said <inactive/> last */
	int n;                   /* stanzas held */
	int cap;                 /* room in items */
	int n_nicks;             /* entries in nicks */
	size_t bytes;            /* their size, bookkeeping included */
	struct csi_item **items; /* held stanzas, oldest first (heap) */
	struct csi_nick *nicks;  /* the client's own nick per room (heap) */
	csi_write_fn *write;
	void *arg;
};

/* Room nicks remembered per session for mentions (the oldest is forgotten). */
#define CSI_MAX_NICKS 32

/* Prepares c for a new session: active, nothing held; write(arg, ...) is
 * where stanzas go. */
void csi_init(struct csi *c, csi_write_fn *write, void *arg);

/* A top-level element in the urn:xmpp:csi:0 namespace from the client of
 * a bound (or binding) session. <inactive/> starts holding; <active/>
 * writes what is held, in order, before it returns, so whatever the
 * client asks next is answered after it (XEP-0352 §5.1). Returns 0, or -1
 * for any other element (the caller closes the stream with
 * <unsupported-stanza-type/>). */
int csi_nonza(struct csi *c, const struct xml_node *el);

/* As <inactive/>: the client starts inactive (inline in Bind 2). */
void csi_set_inactive(struct csi *c);

/* A serialised stanza for the client (bare is its account, "local@domain",
 * for mentions; lim gives the bounds). Written at once, or held while the
 * client is inactive. data is copied when held; it stays the caller's. */
void csi_deliver(struct csi *c, const char *bare, const struct config_limits *lim,
		 const char *data, size_t len);

/* Writes everything held, in order. */
void csi_flush(struct csi *c);

/* The client's stream ended but its session lives on (detached for
 * stream management): what is held goes to the write path now, in order,
 * where stream management keeps it with the unacknowledged stanzas, and
 * the state is active again, as a resumed stream starts (XEP-0352: the
 * state is not restored on resumption). */
void csi_end(struct csi *c);

/* Moves src's learnt room nicks to dst (whose own are freed): a resumed
 * session keeps its mentions, whichever loop it moved to. */
void csi_move_nicks(struct csi *dst, struct csi *src);

/* Frees what is held without writing it (the session is gone) and the
 * nicks; c may be initialised again. */
void csi_free(struct csi *c);

/* The class of stanza st for an inactive client of account bare; *key is
 * set to a collapse key (allocated in a) for CSI_COLLAPSE, else NULL.
 * Exported for the unit test. */
enum csi_class csi_classify(const struct csi *c, const char *bare, const struct xml_node *st,
			    struct arena *a, const char **key);

#endif

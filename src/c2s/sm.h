/* Stream management (XEP-0198, urn:xmpp:sm:3): the counters and the queue
 * of stanzas the client has not acknowledged, the protocol's elements, and
 * each loop's table of sessions that have no connection now.
 *
 * A session (struct c2s) that enabled stream management owns one struct
 * sm. Every stanza written to the client is first kept in the queue; the
 * client's <a h/> releases them. When the connection drops without a
 * closing </stream:stream>, a resumable session is detached: it stays in
 * the registry and in its loop's table (sm_table_*), keeps its presence,
 * and stanzas for it are only queued, until a <resume/> attaches a new
 * connection (on any loop) or stream_management.resume_timeout runs out.
 * The session lifecycle lives in c2s.c; this file knows no struct c2s.
 *
 * For XEP-0386/0388 (Bind 2 and SASL2 carry enable and resume inline),
 * c2s.c has two entry points beside the top-level elements' handling:
 *  - c2s_sm_enable(s, want_resume, out): on a bound session, turns stream
 *    management on and appends <enabled/> (or <failed/>) to out, for Bind
 *    2 to put inside its <bound/>;
 *  - c2s_sm_resume(s, previd, h): on an authenticated stream that has not
 *    bound, asks the session's owner loop to hand the session over. The
 *    answer comes later (the session may live on another loop), from
 *    resume_finish(): <resumed/> followed by the unacknowledged stanzas, or
 *    <failed/>. SASL2 wraps that answer in its <success/>, so the one
 *    write of <resumed/>/<failed/> in resume_finish() is where it hooks in.
 * The elements themselves are built by sm_write_enabled(),
 * sm_write_resumed() and sm_write_failed() below. */
#ifndef NATTER_SM_H
#define NATTER_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "router/router.h"

#define NS_SM "urn:xmpp:sm:3"

struct loop;

struct sm {
	uint32_t in;              /* stanzas from the client handled: our h */
	uint32_t acked;           /* our stanzas the client acknowledged: its h */
	struct refbuf **ring;     /* stanzas not acknowledged, oldest first */
	uint32_t head, len, cap;  /* ring position, count, size (power of two) */
	uint32_t written;         /* of them, from the oldest, written to the
				   * current connection; the rest wait for one */
	uint32_t since_request;   /* written since our last <r/> */
	size_t bytes;             /* bytes in the ring */
	bool resumable;
	bool request_pending;     /* our <r/> is unanswered */
	bool ack_held;            /* an <a/> waits for the store (durability) */
	bool ack_again;           /* another <r/> came while it waited */
	uint32_t last_a;          /* h of our last <a/> */
	uint64_t last_a_end;      /* conn->out_total just after it */
	unsigned char key[ROUTER_SM_KEY]; /* the secret of the SM id */
};

/* A new state; resumable sessions get a random key. Owned by the session;
 * sm_free releases it and the stanzas it still holds. */
struct sm *sm_new(bool resumable);
void sm_free(struct sm *sm);

/* The SM id for <enabled id/> and <resume previd/>: the key in hex (32
 * characters and a NUL in out). */
void sm_id(const struct sm *sm, char out[2 * ROUTER_SM_KEY + 1]);

/* Parses an SM id; returns 0, or -1 when it cannot be one. */
int sm_parse_id(const char *id, unsigned char key[ROUTER_SM_KEY]);

/* Parses an 'h' attribute (an xs:unsignedInt); returns 0, or -1. */
int sm_parse_h(const char *text, uint32_t *h);

/* Appends one stanza (a reference is taken) to the queue. Returns 0, or
 * -1 when the queue is now over its bounds (limits in cfg): the stanza is
 * kept all the same, and the caller ends the session. */
int sm_push(struct sm *sm, const struct config_sm *cfg, struct refbuf *stanza);

/* Moves every stanza of from to the end of sm's queue (stanzas that came
 * for a session while its resumption was under way). from is left empty. */
void sm_append(struct sm *sm, struct sm *from);

/* The client acknowledged h stanzas in all: releases them. Returns 0, or
 * -1 when h is more than was sent (handled-count-too-high); nothing is
 * released then. */
int sm_ack(struct sm *sm, uint32_t h);

/* How many stanzas were sent or queued in all: the send-count. */
uint32_t sm_sent(const struct sm *sm);

/* Calls fn for each stanza not yet written to the current connection, in
 * order, and counts them as written. */
void sm_each_unwritten(struct sm *sm, void (*fn)(void *arg, struct refbuf *stanza), void *arg);

/* Takes the queue's stanzas out, oldest first, for the end of a session;
 * fn gets each one's reference and releases it. */
void sm_drain(struct sm *sm, void (*fn)(void *arg, struct refbuf *stanza), void *arg);

/* Frees the ring of an empty queue (an idle session keeps nothing);
 * returns whether it did. */
bool sm_trim(struct sm *sm);

/* <enabled/>: with id, resume='true' and max=resume_timeout when sm is
 * resumable. */
void sm_write_enabled(struct buf *b, const struct sm *sm, int resume_timeout);

/* <resumed previd h/>. */
void sm_write_resumed(struct buf *b, const struct sm *sm);

/* <failed/> with the stanza error condition; h >= 0 adds the 'h'
 * attribute; too_high adds <handled-count-too-high h send-count/> (with
 * the client's h in claimed and our count in sent). */
void sm_write_failed(struct buf *b, const char *condition, long long h, bool too_high,
		     uint32_t claimed, uint32_t sent);

/* --- each loop's sessions without a connection --- */

/* Records session (a struct c2s *) under its registry id. */
void sm_table_put(struct loop *l, uint64_t id, void *session);

/* The session recorded under id, or NULL. */
void *sm_table_get(struct loop *l, uint64_t id);

/* Forgets id (a session or a forward). */
void sm_table_del(struct loop *l, uint64_t id);

/* A session resumed on another connection, perhaps of another loop, had
 * id: for a few seconds, stanzas that senders addressed to id before the
 * registry changed are passed on to (to_session, to_loop). */
void sm_table_forward(struct loop *l, uint64_t id, uint64_t to_session, int to_loop);

/* Where stanzas for id go now: 0 and *t, or -1. Expired forwards are
 * dropped here. */
int sm_table_get_forward(struct loop *l, uint64_t id, struct router_target *t);

/* Drops expired forwards (the loop's sweep, once a second). */
void sm_table_sweep(struct loop *l);

/* Removes and returns one session of the loop (shutdown), or NULL. */
void *sm_table_pop(struct loop *l);

/* Frees the table (the loop stops; it holds no sessions then). */
void sm_table_free(struct loop *l);

#endif

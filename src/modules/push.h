/* XEP-0357 push notifications (mod_push.c): the state shared by every
 * loop, created and freed with the server. */
#ifndef NATTER_PUSH_H
#define NATTER_PUSH_H

struct loop;
struct server;

/* Allocates srv->push (the per-registration notification state and the
 * table of which session enabled which registration). */
void push_init(struct server *srv);

/* Frees srv->push; after the loops stopped and iqreq_free (whose failed
 * requests release their arguments without touching it). */
void push_free(struct server *srv);

/* Once a second on each client loop: sends the notifications that were
 * held back (folded) for registrations whose minimum interval has passed
 * and whose previous notification was answered, from the loop that took
 * the last message for them. */
void push_sweep(struct loop *l);

#endif

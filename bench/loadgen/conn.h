/* One client connection and its login: TCP from a rotating loopback source
 * address, stream header, STARTTLS (no verification), a new stream, SASL
 * (SCRAM-SHA-1 or PLAIN), a new stream, resource binding, the legacy
 * session if the server requires it, then roster get and initial presence
 * sent together. The connection is online when the roster result arrives.
 *
 * A connection belongs to one worker and is used on its thread only. The
 * scenario learns about it through struct conn_ops and may keep the
 * pointer until its closed callback returns; the worker frees it then. */
#ifndef LOADGEN_CONN_H
#define LOADGEN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "sasl.h"
#include "stanza.h"
#include "worker.h"

enum conn_state {
	CONN_CONNECTING,
	CONN_STREAM1,   /* plain stream, waiting for features */
	CONN_STARTTLS,  /* waiting for <proceed/> */
	CONN_HANDSHAKE, /* TLS handshake */
	CONN_STREAM2,   /* TLS stream, waiting for mechanisms */
	CONN_SASL,
	CONN_SASL2,     /* SASL2 <authenticate/> sent (XEP-0388), no restart after */
	CONN_STREAM3,   /* authenticated stream, waiting for bind */
	CONN_BIND,
	CONN_SESSION,
	CONN_SM_ENABLE, /* <enable/> sent (XEP-0198), waiting for <enabled/> */
	CONN_SM_RESUME, /* <resume/> sent, waiting for <resumed/> */
	CONN_ROSTER,    /* roster get and presence sent */
	CONN_ONLINE,
	CONN_CLOSING,   /* </stream:stream> sent, waiting for the server's */
	CONN_CLOSED,    /* handle closing; no more callbacks but closed */
};

struct conn_ops {
	/* The roster result of the login (query may be NULL), just before
	 * online. */
	void (*roster)(struct conn *c, struct stanza *query);
	/* Login complete. */
	void (*online)(struct conn *c);
	/* A stanza arrived after resource binding (pings and roster pushes
	 * are already answered). */
	void (*stanza)(struct conn *c, struct stanza *st);
	/* The connection is gone; c->failed says whether it failed and
	 * c->fail_kind how. Called once; c is freed afterwards. */
	void (*closed)(struct conn *c);
	/* Optional: a request (iq get or set) other than a ping or a roster
	 * push. Returns true when it has answered; otherwise the connection
	 * answers service-unavailable. ops->stanza still sees the iq. */
	bool (*iq)(struct conn *c, struct stanza *st);
	/* Optional: the initial presence sent with the login's roster get
	 * (e.g. with entity capabilities, XEP-0115); NULL is <presence/>. */
	const char *initial_presence;
};

/* What a client carries from one connection to the next (the reconnect
 * scenario, idle --sm): the TLS session, stream management's id and
 * inbound count, the FAST token. Owned by the scenario, which points
 * c->carry at it right after conn_open; the connection keeps it current
 * as the protocol goes, so it is up to date whenever the link is cut. */
struct conn_carry {
	/* what the next connection does */
	bool sm_enable;        /* a new session enables SM with resume='true' */
	bool sasl2;            /* SASL2 (XEP-0388) + Bind 2 (XEP-0386) + FAST */
	bool resume;           /* resume: SM <resume/>, and the FAST token (sasl2) */
	bool offer_tls;        /* offer `tls` (TLS session resumption) */
	/* state */
	SSL_SESSION *tls;      /* TLS session of the last connection online */
	char sm_id[256];       /* SM resumption id; "" = none */
	uint32_t h_in;         /* stanzas received since SM was enabled */
	char token[512];       /* FAST token; "" = none */
	unsigned fast_count;   /* authentications with the token (its count) */
	char ua_id[37];        /* SASL2 user-agent id (a UUID) */
	/* what the last connection did */
	bool tls_resumed;      /* its TLS handshake resumed */
	bool fast_used;        /* it authenticated with the FAST token */
	bool sm_resumed;       /* it resumed the SM session */
	bool sm_rebound;       /* its SASL2 resume failed and Bind 2 made a new session */
};

/* Frees what a carry owns (its TLS session). */
void conn_carry_clear(struct conn_carry *k);

struct conn {
	struct worker *w;
	const struct conn_ops *ops;
	void *data;              /* the scenario's */
	unsigned user;           /* account number: users_prefix + user */
	enum conn_state state;
	bool was_online;
	bool failed;
	enum fail_kind fail_kind;
	bool restart;            /* stream restart pending after the parse */
	bool session_required;
	bool dirty;
	bool sm_counting;        /* SM on: count inbound stanzas, answer <r/> */
	bool fast_auth;          /* this SASL2 authentication uses the FAST token */
	bool sasl2_sm;           /* SASL2 offers SM inline (resume, Bind 2 enable) */
	struct conn_carry *carry; /* NULL: a plain login (see struct conn_carry) */
	uv_tcp_t tcp;
	SSL *ssl;
	BIO *rbio, *wbio;        /* network side of TLS, memory BIOs */
	struct stanza_parser parser;
	char *out;               /* plaintext waiting for the next flush */
	size_t out_len, out_cap;
	size_t unsent;           /* bytes handed to uv_write, not yet written */
	struct sasl_scram *scram;
	char *jid;               /* full JID from binding, malloc'd */
	unsigned roster_items;   /* items in the login roster result */
	unsigned roster_both;    /* ... with subscription='both' */
	uint64_t t_start;        /* uv_hrtime() at open */
	uint64_t t_online;
	uint64_t deadline;       /* login or close deadline, uv_hrtime() */
	uint64_t t_last_read;    /* uv_hrtime() of the last bytes received */
	struct conn *next, *prev;  /* worker's list */
	struct conn *dirty_next;
};

/* Opens a connection for account `user` on w. Never NULL except out of
 * memory; failures arrive later through ops->closed. */
struct conn *conn_open(struct worker *w, unsigned user, const struct conn_ops *ops, void *data);
/* Queues plaintext; written (encrypted) before the loop next sleeps.
 * Ignored once the stream is closing. */
void conn_send(struct conn *c, const char *data, size_t len);
void conn_sendf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues s escaped for an attribute value or character data (&, <, >,
 * quotes): for ids and addresses echoed back from parsed XML. */
void conn_send_escaped(struct conn *c, const char *s);
/* Bytes queued and not yet accepted by the kernel. */
size_t conn_backlog(const struct conn *c);
/* Ends the stream politely: </stream:stream>, then waits (at most 2 s)
 * for the server's before closing the socket. Not a failure. */
void conn_close(struct conn *c);
/* Closes at once with a TCP reset, as a lost network would end it (no
 * </stream:stream>, no TLS close_notify); not a failure. */
void conn_cut(struct conn *c);
/* Closes at once, counting a failure of the given kind. */
void conn_fail(struct conn *c, enum fail_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Writes out every dirty connection of w (from the prepare/check hooks). */
void conn_flush_all(struct worker *w);
/* Enforces login and close deadlines and releases the XML parsers of idle
 * connections (from the sweep timer). */
void conn_sweep(struct worker *w, uint64_t now);
/* Closes every connection of w politely (at exit). */
void conn_close_all(struct worker *w);
/* Closes every connection of w at once. */
void conn_abort_all(struct worker *w);
/* "user42" for account 42, into out. */
void conn_username(const struct opts *o, unsigned user, char *out, size_t cap);

#endif

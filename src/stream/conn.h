/* A network connection: TCP through libuv, optional TLS through OpenSSL
 * memory BIOs, and batched output. Protocol code (c2s, later s2s) sits on
 * top through struct conn_ops and never touches sockets or TLS records.
 *
 * Lifetime: a connection belongs to the loop that accepted it. conn_close
 * starts closing; the memory is freed by libuv's close callback on a later
 * loop iteration, so a conn pointer stays valid for the rest of the current
 * callback even after conn_close. */
#ifndef NATTER_CONN_H
#define NATTER_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/server.h"

struct conn;

struct conn_ops {
	/* Plaintext bytes from the peer. */
	void (*data)(struct conn *c, const char *data, size_t len);
	/* The TLS handshake finished (STARTTLS or direct TLS). */
	void (*tls_ready)(struct conn *c);
	/* The peer went away or the connection failed; the protocol layer
	 * releases its state. Called exactly once, before the memory goes. */
	void (*closed)(struct conn *c);
	/* Outgoing connections (conn_connect): the TCP connect finished;
	 * status 0 or a libuv error (then closed follows). */
	void (*connected)(struct conn *c, int status);
	/* The server stops: queue what the peer should read last (RFC 6120
	 * <system-shutdown/>). Optional. */
	void (*shutdown)(struct conn *c);
};

/* Called once by conn_when_written: written is true when every byte queued
 * before the call has reached the socket, false when the connection ended
 * first (then c is going away: release arg, write nothing). */
typedef void conn_written_fn(struct conn *c, void *arg, bool written);
struct conn_watch;

struct conn {
	uint64_t id;
	struct loop *loop;
	uv_tcp_t tcp;
	const struct conn_ops *ops;
	void *owner;              /* the protocol session (struct c2s *) */
	SSL *ssl;                 /* NULL until TLS starts */
	const char *tls_in;       /* ciphertext not yet taken by the TLS engine */
	size_t tls_in_len;        /* (points into the loop's read buffer) */
	struct buf tls_out;       /* ciphertext the engine produced, to send */
	struct buf out;           /* plaintext waiting for the next flush */
	struct conn *next_dirty;
	bool dirty;
	bool tls_ready;
	bool closing;             /* no more input; close once output is written */
	bool closed;              /* uv_close called */
	bool tls_shutdown;        /* close_notify queued */
	bool cut;                 /* ends at the next flush, whatever is queued */
	size_t queued;            /* bytes handed to libuv, not yet written */
	size_t held;              /* out + tls_out + queued, as counted in the loop */
	uint64_t out_total;       /* plaintext bytes ever queued by conn_write */
	uint64_t out_flushed;     /* of those, handed to TLS or the socket */
	uint64_t out_written;     /* of those, written to the socket */
	struct conn_watch *watch; /* conn_when_written, or NULL */
	unsigned long long close_by; /* closing: cut at this time (now_ms) */
	struct conn *close_prev, *close_next; /* the loop's closing connections */
	char peer[64];            /* peer address, for logs and rate limits */
};

/* Accepts a pending connection on listener into a new conn. */
struct conn *conn_accept(struct loop *l, uv_stream_t *listener, const struct conn_ops *ops);

/* Starts a TCP connection to addr (port set) for a protocol session
 * (owner). ops->connected reports the outcome. NULL on immediate failure. */
struct conn *conn_connect(struct loop *l, const struct sockaddr *addr, const struct conn_ops *ops,
			  void *owner);

/* Begins TLS as the client, with ssl (tls_new_client_s2s; taken over by
 * the connection). Queued plaintext is sent in the clear first. Returns 0
 * or -1. */
int conn_start_tls_client(struct conn *c, SSL *ssl);

/* Begins TLS as server for an incoming server-to-server connection
 * (tls_new_server_s2s). Returns 0 or -1. */
int conn_start_tls_s2s(struct conn *c, bool direct);

/* Queues bytes; they go out when the loop finishes this iteration. */
void conn_write(struct conn *c, const void *data, size_t len);

/* Writes whatever is queued now (used before switching to TLS). */
void conn_flush(struct conn *c);

/* Begins TLS as server on this connection. Queued plaintext is sent in the
 * clear first. direct is true on a direct TLS port. Returns 0 or -1. */
int conn_start_tls(struct conn *c, bool direct);

/* Ends the connection: input is ignored from now on, queued output is
 * written (TLS: then close_notify), and the socket closes. A peer that
 * does not take the output within limits.close_timeout is cut; a TLS
 * connection whose handshake has not finished is cut at once, since
 * nothing can be written to it. Either way ops->closed runs from the
 * loop, never from inside this call. */
void conn_close(struct conn *c);

/* Calls fn(c, arg, true) once every byte queued on c so far has been
 * written to the socket (not merely queued), or fn(c, arg, false) if the
 * connection ends first. One watch per connection: returns -1 if one is
 * already set. fn may queue more output and set a new watch. */
int conn_when_written(struct conn *c, conn_written_fn *fn, void *arg);

/* Cuts the loop's closing connections whose close_timeout has passed
 * (called by the loop's sweep timer). */
void conn_sweep(struct loop *l);

/* Flushes every dirty connection of the loop (called by the loop's check
 * handle, once per iteration). */
void conn_flush_dirty(struct loop *l);

/* Looks up a live connection of loop l by id; NULL when gone. */
struct conn *conn_find(struct loop *l, uint64_t id);

/* Calls fn for every live connection of the loop. fn must not close
 * connections. */
void conn_each(struct loop *l, void (*fn)(struct conn *c, void *arg), void *arg);

/* Frees the connection's output buffer if it holds nothing (idle). */
void conn_trim(struct conn *c);

/* The server stops: every connection gets its protocol's last words
 * (ops->shutdown), written at once. conn_close_all follows. */
void conn_shutdown_all(struct loop *l);

/* Closes every connection of the loop (shutdown). */
void conn_close_all(struct loop *l);

#endif

/* The server context and its event loops.
 *
 * One process, one event loop per core (DESIGN.md). Each loop owns the
 * connections it accepted (SO_REUSEPORT gives every loop its own listening
 * sockets) and the sessions on them; nothing of a connection is touched by
 * another thread. A stanza for a session on another loop crosses by that
 * loop's inbox and a uv_async wake-up ("deliver to owner"). */
#ifndef NATTER_SERVER_H
#define NATTER_SERVER_H

#include <gsasl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "storage/storage.h"
#include "tls/tls.h"

struct conn;
struct loop;
struct s2s;
struct s2s_loop;
struct router;
struct authfail;
struct storeq;
struct pending;
struct mam;
struct push;
struct journal_writer;
struct sm_table;

enum inbox_kind {
	INBOX_DELIVER,  /* write bytes to the session */
	INBOX_KICK,     /* close the session with the stream error 'condition' */
	INBOX_CALL      /* run call(loop, arg): work finished elsewhere (a
			 * directory thread) coming back to its loop. Also run
			 * while the loop stops (loop->stopping), so arg is
			 * always released by call. */
};

struct inbox_item {
	enum inbox_kind kind;
	uint64_t session;       /* connection id of the target */
	struct refbuf *bytes;   /* INBOX_DELIVER: owned by the item */
	const char *condition;  /* INBOX_KICK: a static string */
	void (*call)(struct loop *l, void *arg); /* INBOX_CALL */
	void *arg;
	struct inbox_item *next;
};

/* Connection ids are kept in a per-loop open-addressing table. */
struct conn_table {
	struct conn **slots;
	size_t cap;   /* power of two */
	size_t count;
};

struct loop {
	struct server *srv;
	int index;
	uv_loop_t uv;
	uv_thread_t thread;
	uv_async_t wake;          /* inbox and stop requests */
	uv_check_t flush;         /* writes batched per loop iteration */
	uv_idle_t kick;           /* active while output waits: no blocking poll */
	uv_timer_t sweep;         /* releases idle sessions' memory */
	pthread_mutex_t inbox_lock;
	struct inbox_item *inbox_head, *inbox_tail;
	bool stopping;            /* set under inbox_lock */
	bool call_stopping;       /* on_wake runs INBOX_CALL items of a stopping loop */
	struct storage *store;    /* this loop's own storage handle */
	struct s2s_loop *s2s;     /* federation: DNS and outgoing links (s2s.c) */
	struct room_loop *muc;    /* the chat rooms this loop owns (room.c) */
	int iqs_waiting;          /* iqs held until the store caught up (deliver.c) */
	/* The message deliver_stanza handles now, as the sender's archive
	 * stored it (mod_mam, from HOOK_MESSAGE_SENT to HOOK_MESSAGE_DELIVER):
	 * the recipient's entry refers to it. Saved and cleared around each
	 * deliver_stanza, so it never outlives its stanza. */
	struct {
		const void *st;
		long long id;
	} archived_sent;
	struct sm_table *sm;      /* sessions without a connection (c2s/sm.h) */
	uv_tcp_t *listeners;
	void *listener_data;      /* per listener: its config (server.c) */
	size_t n_listeners;
	struct conn_table conns;  /* every live connection of this loop */
	struct conn *dirty;       /* connections with output to flush */
	struct conn *closing_head, *closing_tail; /* closing, by close_by */
	size_t out_held;          /* bytes queued for all this loop's peers */
	size_t out_freed;         /* bytes of cut queues freed since the last trim */
	/* Scratch buffers for reads: a read is handled to completion before
	 * the next begins, so no connection holds a buffer while idle. */
	char readbuf[65536];
	char plainbuf[65536];
};

struct server {
	struct config *cfg;
	struct tls tls;
	Gsasl *gsasl;
	struct router *router;
	struct authfail *authfail;
	struct blocking_cache *blocking_cache; /* mod_blocking's, see blocking.h */
	struct directory **directories; /* one per host with auth ldap (directory.h) */
	size_t n_directories;
	void *control;             /* the control socket's handle (control.c) */
	struct s2s *s2s;           /* federation, when s2s.enabled (s2s.c) */
	struct muc *muc;           /* chat services and public rooms (muc.c) */
	struct storeq *storeq;     /* the storage thread (storeq.h) */
	struct mam *mam;           /* archive ids, preferences (mod_mam.c) */
	struct push *push;         /* push notifications in flight (mod_push.c) */
	struct iqreq *iqreq;       /* iq requests the server sent (iqreq.h) */
	struct caps *caps;         /* entity capabilities seen (caps.h) */
	struct pubsub *pubsub;     /* PEP and pubsub services (pubsub.h) */
	/* Rosters change by read-modify-write from any loop (both sides of a
	 * subscription): changes to one account's roster are serialised by
	 * one of these, picked by hashing the account (roster_lock). */
	pthread_mutex_t roster_locks[64];
	/* The loops' driver (pending.h: map writes through the storage
	 * thread, seen at once); store_driver is the one underneath, which
	 * the storage thread and start-up use. */
	const struct storage_driver *storage;
	const struct storage_driver *store_driver;
	struct pending *pending;
	struct loop *loops;        /* n_loops client loops, then the service loop */
	int n_loops;
	/* The service loop: an event loop of its own thread with no
	 * listeners, for background work that touches rosters and sessions
	 * (applying directory groups, the control socket) so that it never
	 * delays a client loop. Its index (n_loops) matches no session. */
	struct loop *service;
	uint64_t next_conn_id;     /* atomically incremented */
	/* Stopping (server.c, on_signal): the client loops first tell what
	 * must reach sessions on other loops (rooms' 332); the loops stop
	 * once each has (shutdown_pending reaches 0: shutdown_go on the main
	 * thread), or after SHUTDOWN_ANNOUNCE_MS. */
	int shutdown_pending;      /* atomic */
	bool shutdown_begun, loops_stopped; /* main thread only */
	uv_async_t shutdown_go;
	uv_timer_t shutdown_timer;
	/* The archive-all journal (journal_writer.h): one writer per entry of
	 * cfg->hosts, NULL where it is off; the signing key they share. */
	struct journal_writer **journals;
	EVP_PKEY *journal_key;
	unsigned char fast_key[32]; /* FAST tokens are derived from it (fast.h) */
};

/* Builds everything from cfg (TLS contexts, storage, listeners) and runs
 * the loops until SIGINT/SIGTERM. Once ready it logs each host's
 * certificate fingerprints and, when ctl is not NULL, the next steps for a
 * new operator, with ctl as the natterctl command to type (e.g.
 * "./build/natterctl -c etc/natter.yaml"). Returns the process exit code. */
int server_run(struct config *cfg, const char *ctl);

/* Queues an item for the loop that owns the session; wakes it. Takes
 * ownership of item. Safe from any thread. */
void loop_post(struct loop *to, struct inbox_item *item);

/* The loop running the calling thread's code is always passed explicitly;
 * this is for code that has only a connection. */
uint64_t server_new_conn_id(struct server *srv);

/* Runs call(to, arg) on loop `to`, soon (INBOX_CALL). Safe from any thread. */
void loop_call(struct loop *to, void (*call)(struct loop *l, void *arg), void *arg);

/* Returns 1 if loop l is shutting down (then INBOX_CALL callbacks only
 * release what they hold). */
bool loop_stopping(struct loop *l);

#endif

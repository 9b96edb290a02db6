/* Worker threads and the run they belong to.
 *
 * A run is one invocation of a scenario: options, the shared TLS context
 * and SCRAM cache, and T workers. Each worker is a thread with its own
 * libuv loop that owns its connections outright; nothing about a
 * connection is touched by another thread. The main thread coordinates:
 * it sends commands (worker_command), reads the workers' counters (single
 * writer atomics) and sleeps in run_wait, which also notices SIGINT,
 * SIGTERM, the end of stdin and the --duration cap. */
#ifndef LOADGEN_WORKER_H
#define LOADGEN_WORKER_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "hist.h"
#include "opts.h"

struct conn;
struct worker;

/* Why a connection ended badly; each has a counter. */
enum fail_kind {
	FAIL_CONNECT,  /* bind/connect refused or failed */
	FAIL_TLS,      /* handshake failed */
	FAIL_AUTH,     /* SASL <failure/> or bad server signature */
	FAIL_STREAM,   /* <stream:error/> */
	FAIL_TIMEOUT,  /* not online within --login-timeout */
	FAIL_PROTOCOL, /* unexpected or malformed XML, missing features */
	FAIL_CLOSED,   /* the server closed a connection we did not close */
	FAIL_UNSUPPORTED, /* the server lacks a feature the run needs (SM, SASL2, FAST) */
	FAIL_KINDS
};

/* Counters of one worker: written by that worker only, read by the main
 * thread at any time. */
struct counters {
	_Atomic uint64_t started;   /* connections opened */
	_Atomic uint64_t online;    /* connections online now */
	_Atomic uint64_t logins;    /* logins completed */
	_Atomic uint64_t login_failed; /* connections that failed before online */
	_Atomic uint64_t tls_resumed;  /* handshakes that resumed a session */
	_Atomic uint64_t pings;        /* server pings (XEP-0199) answered */
	_Atomic uint64_t closed;    /* connections fully closed */
	_Atomic uint64_t fail[FAIL_KINDS];
	struct hist login_us;       /* connect to roster result */
};

/* Commands from the main thread. Scenarios define theirs from
 * CMD_SCENARIO on. */
enum {
	CMD_NONE,
	CMD_EXIT,
	CMD_SCENARIO,
};

struct scenario_hooks {
	/* Runs on the worker's thread for every command but CMD_EXIT, and
	 * for CMD_EXIT before the worker closes its connections (stop timers
	 * there). */
	void (*command)(struct worker *w, int cmd);
};

struct run {
	const struct opts *o;
	struct sasl_cache *cache;
	SSL_CTX *ssl_ctx;
	struct sockaddr_in server;
	_Atomic uint32_t src_next; /* source address rotation */
	struct worker **w;
	unsigned nw;
	const struct scenario_hooks *hooks;
	void *scen;                /* the scenario's shared state */
	uint64_t t_start;          /* uv_hrtime() at run_start */
	uint64_t t_deadline;       /* t_start + --duration */
	int sigfd;
	bool interrupted;          /* signal or stdin EOF seen */
	bool capped;               /* --duration reached */
	bool stdin_open;
	bool stopped;              /* workers joined */
	double last_progress;      /* run_elapsed() of the last progress line */
	char first_error[256];
};

struct worker {
	struct run *run;
	unsigned id;
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t async;
	_Atomic int cmd;           /* command posted by the main thread */
	_Atomic unsigned cmd_seq;  /* bumped with every command */
	_Atomic unsigned cmd_done; /* cmd_seq of the last command handled */
	uv_prepare_t prep;    /* flushes output before the loop sleeps */
	uv_check_t check;     /* ... and after I/O callbacks */
	uv_timer_t sweep;     /* login and close deadlines */
	uv_timer_t exit_timer;
	bool exiting;
	struct conn *conns;   /* every open connection */
	struct conn *dirty;   /* connections with output to flush */
	struct counters ctr;
	void *scen;           /* the scenario's per-worker state */
	_Atomic bool error_set;
	char error[256];      /* first failure seen, for the summary */
	char rbuf[65536];     /* socket reads (used synchronously) */
	char pbuf[65536];     /* decrypted bytes */
	char wbuf[65536];     /* encrypted bytes on their way out */
	unsigned serial;      /* for unique resources */
	_Atomic int step_sent; /* the last rate step this worker sent all of */
	SSL_SESSION *session; /* --tls-resume: the session to offer next */
};

/* Sets up r: TLS context, SCRAM cache, signal handling, T workers
 * (threads started, idle). Returns 0 or -1 with a message on stderr. */
int run_start(struct run *r, const struct opts *o, const struct scenario_hooks *hooks,
	      void *scen);
/* Sends cmd to every worker and waits until each has handled it. */
void run_command(struct run *r, int cmd);
/* Sleeps up to seconds (0 = just poll). Returns false as soon as the run
 * should stop: interrupted or past --duration. */
bool run_wait(struct run *r, double seconds);
/* Waits up to seconds until every worker has sent all of rate step
 * `step` (worker_step_sent): its last tick may run after the step's end
 * on a busy machine, and what it sends then belongs to the step. Returns
 * false when the wait ran out or the run should stop. */
bool run_wait_step_sent(struct run *r, int step, double seconds);
/* Stops every worker (closing connections politely, bounded) and joins
 * the threads; counters stay readable. Idempotent. */
void run_stop(struct run *r);
/* Stops (if needed) and frees everything run_start made. */
void run_free(struct run *r);
double run_elapsed(const struct run *r);
/* Sums a counter over the workers: field is an offsetof in struct counters. */
uint64_t run_sum(const struct run *r, size_t field);
uint64_t run_failures(const struct run *r);
/* Merges every worker's login histogram into out. */
void run_login_hist(const struct run *r, struct hist *out);
/* The first failure any worker saw, or NULL. */
const char *run_first_error(struct run *r);
/* Splits n items over the workers: how many worker id gets. */
unsigned run_share(const struct run *r, unsigned n, unsigned id);

/* From a worker thread: record a failure message (the first one is kept). */
void worker_note_error(struct worker *w, const char *msg);
/* From a worker thread: w has sent all it will of rate step `step`. */
void worker_step_sent(struct worker *w, int step);
/* Bumps one of w's own counters. */
void worker_count(_Atomic uint64_t *c, int64_t n);
uint64_t counter_get(_Atomic uint64_t *c);

#endif

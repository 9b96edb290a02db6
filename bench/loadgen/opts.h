/* natter-load's command line: one table of options shared by every
 * scenario, parsed into struct opts. */
#ifndef LOADGEN_OPTS_H
#define LOADGEN_OPTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define OPTS_MAX_RATES 64
#define OPTS_MAX_PIDS 16

enum opts_mech { MECH_SCRAM_SHA1, MECH_PLAIN };

/* How the reconnect scenario's clients come back. */
enum opts_mode {
	MODE_FULL,   /* full TLS handshake, SASL, bind, roster and presence */
	MODE_RESUME, /* TLS resumption, SASL (SCRAM), XEP-0198 resume */
	MODE_FAST,   /* TLS resumption, SASL2 with a FAST token, inline SM resume */
};

struct opts {
	const char *scenario;

	/* server */
	const char *host;   /* numeric IPv4 */
	int port;
	const char *domain;
	bool direct_tls;    /* TLS from the first byte (XEP-0368) */
	bool tls_resume;    /* resume the worker's last TLS session */

	/* accounts */
	const char *users_prefix;
	unsigned first_user;
	const char *password;
	enum opts_mech mech;
	const char *resource;

	/* sources */
	uint32_t src_base;  /* host order, first address used */
	uint32_t src_count; /* how many consecutive usable addresses */

	/* generator */
	unsigned threads;
	unsigned concurrency;   /* logins in flight */
	double duration;        /* hard cap of the whole run, seconds */
	double login_timeout;   /* per connection, connect to roster result */
	bool quiet;

	/* idle */
	unsigned clients;
	bool clients_given;
	double hold;
	bool stdin_eof;         /* end the hold when stdin closes */
	bool sm;                /* idle: enable stream management (XEP-0198) */

	/* reconnect (also --clients) */
	enum opts_mode mode;
	unsigned reconnect_concurrency; /* reconnects in flight after the cut */

	/* login */
	unsigned logins;
	unsigned users;         /* login: user pool; presence: U */

	/* chat */
	unsigned pairs;
	unsigned rates[OPTS_MAX_RATES];
	unsigned nrates;
	bool rates_given;       /* --rates on the command line */
	double step_seconds;
	double drain_seconds;
	double stop_p99_ms;
	unsigned body_size;
	unsigned max_queue_kb;  /* per-connection unsent bytes before skipping */

	/* muc (also --rates, --step-seconds, --drain-seconds, --stop-p99-ms,
	 * --body-size, --max-queue-kb) */
	unsigned rooms;
	unsigned room_size;     /* occupants per room */
	unsigned senders;       /* occupants per room that send */
	const char *muc_service; /* the chat service's domain */
	const char *room_prefix; /* rooms are PREFIX1, PREFIX2, ... */
	char muc_service_buf[300];

	/* presence */
	unsigned contacts;
	bool setup_rosters;
	bool setup_only;
	double seconds;         /* measured churn phase */
	unsigned churn;         /* users in a logout/login cycle at once; 0 = U/10 */

	/* mam (also --users: accounts the archive is spread over) */
	unsigned messages;      /* messages in the archive (each in two users' archives) */
	unsigned heavy;         /* users 1..heavy take part in extra messages; measured */
	unsigned heavy_every;   /* every Nth message goes to a heavy user */
	unsigned deep;          /* how far back the deep page starts */
	unsigned page;          /* results per page (RSM max) */
	unsigned queries;       /* measured queries of each kind per measured user */
	bool fill;              /* send the archive's messages over XMPP first */
	unsigned fill_rate;     /* ... at most this many per second */

	/* pep (also --contacts, --rates in publishes/s, --setup-rosters) */
	bool contacts_given;

	int server_pids[OPTS_MAX_PIDS];
	unsigned nserver_pids;
};

/* Fills o from argv (argv[1] is the scenario). Returns 0, 1 when help was
 * printed, or -1 after printing an error to stderr. */
int opts_parse(struct opts *o, int argc, char **argv);
void opts_usage(FILE *f);

#endif

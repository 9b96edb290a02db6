/* presence: U users, each a mutual contact (subscription 'both') of its R
 * neighbours on a ring (u±1 .. u±R/2), all log in; then for --seconds,
 * --churn users at a time (a tenth by default) log out and straight back
 * in, and every presence
 * stanza received anywhere is counted. Logging out sends 'unavailable' to
 * the online contacts, logging in sends 'available' to them and probes
 * them, so one cycle fans out to about 3R stanzas.
 *
 * --setup-rosters first builds the rosters over XMPP, as clients would:
 * every user puts its neighbours on its roster (roster set), asks each for
 * a subscription, and approves every request it gets, until each roster
 * shows R contacts with subscription 'both'. It is idempotent. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "scenario.h"

enum {
	CMD_PRES_LOGIN = CMD_SCENARIO, /* log every user in */
	CMD_PRES_SUBSCRIBE,            /* setup: subscribe to the neighbours */
	CMD_PRES_RETRY,                /* setup: ask again where no answer came */
	CMD_PRES_LOGOUT,               /* log every user out */
	CMD_PRES_CHURN,                /* start cycling */
	CMD_PRES_CALM,                 /* stop starting cycles */
};

#define PRES_SETUP_TICK_MS 10
#define PRES_STALL_SECONDS 10.0
#define PRES_RETRY_SECONDS 2.0
#define PRES_RETRIES 3

enum pres_state { P_IDLE, P_LOGIN, P_ONLINE, P_CYCLE_OUT, P_CYCLE_IN };

struct pres_user {
	struct conn *c;
	unsigned idx;          /* 0 .. U-1 */
	enum pres_state state;
	bool subscribed;       /* setup requests sent */
	bool complete;         /* setup: R contacts seen as 'both' */
	unsigned got_count;
	uint8_t *got;          /* setup: bit per contact seen as 'both' */
};

struct pres_worker {
	_Atomic bool *done;    /* shared: done[u] when user u's setup is complete */
	unsigned nusers;
	struct pres_user *users;
	unsigned next;         /* login: next user to open */
	unsigned inflight, conc;
	unsigned churn;        /* its share of --churn */
	bool setup;            /* approve requests, track 'both' */
	bool churning;
	unsigned rr;           /* next user to consider for a cycle */
	unsigned cycling;
	unsigned sub_next;     /* setup: next user to send requests for */
	unsigned in_setup;     /* setup: users that asked and are not complete */
	uv_timer_t timer;
	bool timer_ready;
	_Atomic uint64_t complete;     /* users whose setup is complete */
	_Atomic uint64_t both_seen;    /* setup: (user, contact) seen as 'both' */
	_Atomic uint64_t pushes;       /* roster pushes received */
	_Atomic uint64_t resent;       /* setup: subscription requests repeated */
	_Atomic uint64_t available;    /* presence stanzas received */
	_Atomic uint64_t unavailable;
	_Atomic uint64_t subscription; /* subscribe, subscribed, ... */
	_Atomic uint64_t cycles;       /* logout + login completed */
	_Atomic uint64_t cycling_now;
	_Atomic uint64_t roster_items; /* summed over logins */
	_Atomic uint64_t roster_both;
};

/* Contacts per user after rounding (even, fewer than U). */
static unsigned pres_contacts(const struct opts *o)
{
	unsigned r = o->contacts + (o->contacts & 1);
	if (o->users < 2)
		return 0;
	if (r > o->users - 1)
		r = (o->users - 1) & ~1u;
	return r;
}

static unsigned pres_neighbour(const struct opts *o, unsigned u, unsigned k)
{
	unsigned half = pres_contacts(o) / 2, n = o->users;
	unsigned d = k % half + 1;
	return k < half ? (u + d) % n : (u + n - d) % n;
}

/* The contact number (0 .. R-1) of bare JID `jid` for user u, or -1. */
static int pres_contact_index(const struct opts *o, unsigned u, const char *jid)
{
	size_t pl = strlen(o->users_prefix);
	if (strncmp(jid, o->users_prefix, pl) != 0)
		return -1;
	char *end;
	unsigned long num = strtoul(jid + pl, &end, 10);
	if (end == jid + pl || *end != '@' || strcmp(end + 1, o->domain) != 0 || num < o->first_user)
		return -1;
	unsigned v = (unsigned)(num - o->first_user), n = o->users, half = pres_contacts(o) / 2;
	if (v >= n || v == u)
		return -1;
	unsigned fwd = (v + n - u) % n, back = (u + n - v) % n;
	if (fwd >= 1 && fwd <= half)
		return (int)(fwd - 1);
	if (back >= 1 && back <= half)
		return (int)(half + back - 1);
	return -1;
}

static void pres_fill(struct worker *w);
static void pres_cycle_more(struct worker *w);

static void pres_mark(struct worker *w, struct pres_user *p, const char *jid, const char *sub)
{
	struct pres_worker *pw = w->scen;
	const struct opts *o = w->run->o;
	if (!p->got || p->complete || !jid || !sub || strcmp(sub, "both") != 0)
		return;
	int k = pres_contact_index(o, p->idx, jid);
	if (k < 0 || (p->got[k / 8] & (1u << (k % 8))))
		return;
	p->got[k / 8] |= (uint8_t)(1u << (k % 8));
	worker_count(&pw->both_seen, 1);
	if (++p->got_count == pres_contacts(o)) {
		p->complete = true;
		if (p->subscribed)
			pw->in_setup--;
		atomic_store_explicit(&pw->done[p->idx], true, memory_order_relaxed);
		worker_count(&pw->complete, 1);
	}
}

static void pres_on_roster(struct conn *c, struct stanza *q)
{
	struct pres_worker *pw = c->w->scen;
	struct pres_user *p = c->data;
	worker_count(&pw->roster_items, c->roster_items);
	worker_count(&pw->roster_both, c->roster_both);
	for (struct stanza *it = q ? q->child : NULL; it; it = it->next)
		pres_mark(c->w, p, stanza_attr(it, "jid"), stanza_attr(it, "subscription"));
}

static void pres_on_online(struct conn *c)
{
	struct worker *w = c->w;
	struct pres_worker *pw = w->scen;
	struct pres_user *p = c->data;
	if (p->state == P_LOGIN) {
		p->state = P_ONLINE;
		pw->inflight--;
		pres_fill(w);
	} else if (p->state == P_CYCLE_IN) {
		p->state = P_ONLINE;
		pw->cycling--;
		worker_count(&pw->cycling_now, -1);
		worker_count(&pw->cycles, 1);
		pres_cycle_more(w);
	}
}

static void pres_on_closed(struct conn *c)
{
	struct worker *w = c->w;
	struct pres_worker *pw = w->scen;
	struct pres_user *p = c->data;
	p->c = NULL;
	switch (p->state) {
	case P_CYCLE_OUT:
		if (!w->exiting) {
			p->state = P_CYCLE_IN;
			p->c = conn_open(w, w->run->o->first_user + p->idx, c->ops, p);
			break;
		}
		/* fall through */
	case P_CYCLE_IN:
		p->state = P_IDLE;
		pw->cycling--;
		worker_count(&pw->cycling_now, -1);
		pres_cycle_more(w);
		break;
	case P_LOGIN:
		p->state = P_IDLE;
		pw->inflight--;
		pres_fill(w);
		break;
	default:
		p->state = P_IDLE;
		break;
	}
}

static void pres_on_stanza(struct conn *c, struct stanza *st)
{
	struct worker *w = c->w;
	struct pres_worker *pw = w->scen;
	struct pres_user *p = c->data;
	if (stanza_is(st, NS_CLIENT " iq")) {
		const char *type = stanza_attr(st, "type");
		struct stanza *q = stanza_child(st, NS_ROSTER " query");
		if (q && type && strcmp(type, "set") == 0)
			worker_count(&pw->pushes, 1);
		if (pw->setup && q && type && strcmp(type, "set") == 0)
			for (struct stanza *it = q->child; it; it = it->next)
				pres_mark(w, p, stanza_attr(it, "jid"), stanza_attr(it, "subscription"));
		return;
	}
	if (!stanza_is(st, NS_CLIENT " presence"))
		return;
	const char *type = stanza_attr(st, "type");
	if (!type) {
		worker_count(&pw->available, 1);
	} else if (strcmp(type, "unavailable") == 0) {
		worker_count(&pw->unavailable, 1);
	} else {
		worker_count(&pw->subscription, 1);
		const char *from = stanza_attr(st, "from");
		/* Approve to the bare JID (RFC 6121 3.1.4): some servers stamp
		 * the requester's full JID on the request. */
		if (pw->setup && strcmp(type, "subscribe") == 0 && from && !strpbrk(from, "'&<"))
			conn_sendf(c, "<presence to='%.*s' type='subscribed'/>",
				   (int)strcspn(from, "/"), from);
	}
}

static const struct conn_ops pres_ops = {
	.roster = pres_on_roster,
	.online = pres_on_online,
	.stanza = pres_on_stanza,
	.closed = pres_on_closed,
};

static void pres_fill(struct worker *w)
{
	struct pres_worker *pw = w->scen;
	if (w->exiting)
		return;
	while (pw->inflight < pw->conc && pw->next < pw->nusers) {
		struct pres_user *p = &pw->users[pw->next++];
		if (p->state != P_IDLE)
			continue;
		p->state = P_LOGIN;
		pw->inflight++;
		p->c = conn_open(w, w->run->o->first_user + p->idx, &pres_ops, p);
	}
}

static void pres_cycle_more(struct worker *w)
{
	struct pres_worker *pw = w->scen;
	if (w->exiting || !pw->churning)
		return;
	for (unsigned looked = 0; pw->cycling < pw->churn && looked < pw->nusers; looked++) {
		struct pres_user *p = &pw->users[pw->rr++ % pw->nusers];
		if (p->state != P_ONLINE || !p->c)
			continue;
		p->state = P_CYCLE_OUT;
		pw->cycling++;
		worker_count(&pw->cycling_now, 1);
		conn_close(p->c);
	}
}

/* Setup: users put their neighbours on the roster and ask for
 * subscriptions, a window of them at a time: a user leaves the window when
 * its roster is complete. The window (at least R + 1 users, so a user's
 * neighbours are never all waiting outside it) keeps a slow server's queue
 * short instead of handing it U*R requests at once. */
static void pres_on_setup_tick(uv_timer_t *t)
{
	struct worker *w = t->data;
	struct pres_worker *pw = w->scen;
	const struct opts *o = w->run->o;
	unsigned r = pres_contacts(o);
	unsigned window = pw->conc > r + 1 ? pw->conc : r + 1;
	for (; pw->in_setup < window && pw->sub_next < pw->nusers; pw->sub_next++) {
		struct pres_user *p = &pw->users[pw->sub_next];
		if (!p->c || p->state != P_ONLINE || p->complete || p->subscribed)
			continue;
		p->subscribed = true;
		pw->in_setup++;
		for (unsigned k = 0; k < r; k++) {
			if (p->got[k / 8] & (1u << (k % 8)))
				continue;
			char user[64];
			conn_username(o, o->first_user + pres_neighbour(o, p->idx, k), user, sizeof user);
			conn_sendf(p->c,
				   "<iq type='set' id='rs%u'><query xmlns='" NS_ROSTER "'>"
				   "<item jid='%s@%s'/></query></iq>"
				   "<presence to='%s@%s' type='subscribe'/>",
				   k, user, o->domain, user, o->domain);
		}
	}
	if (pw->sub_next >= pw->nusers)
		uv_timer_stop(t);
}

/* Setup: where no 'both' came in time, ask again, in both directions: the
 * incomplete user asks its missing contacts, and every neighbour of an
 * incomplete user asks it. A repeated request the contact has already
 * approved is answered by the server (RFC 6121 3.1.3); one the server has
 * lost track of reaches the contact, which approves it. Either repairs a
 * roster whose update the server lost. */
static void pres_retry(struct worker *w)
{
	struct pres_worker *pw = w->scen;
	const struct opts *o = w->run->o;
	unsigned r = pres_contacts(o);
	for (unsigned i = 0; i < pw->nusers; i++) {
		struct pres_user *p = &pw->users[i];
		if (!p->c || p->state != P_ONLINE || !p->subscribed)
			continue;
		for (unsigned k = 0; k < r; k++) {
			unsigned v = pres_neighbour(o, p->idx, k);
			bool mine = !p->complete && !(p->got[k / 8] & (1u << (k % 8)));
			if (!mine && atomic_load_explicit(&pw->done[v], memory_order_relaxed))
				continue;
			char user[64];
			conn_username(o, o->first_user + v, user, sizeof user);
			conn_sendf(p->c, "<presence to='%s@%s' type='subscribe'/>", user, o->domain);
			worker_count(&pw->resent, 1);
		}
	}
}

static void pres_command(struct worker *w, int cmd)
{
	struct pres_worker *pw = w->scen;
	switch (cmd) {
	case CMD_PRES_LOGIN:
		if (!pw->timer_ready) {
			uv_timer_init(&w->loop, &pw->timer);
			pw->timer.data = w;
			pw->timer_ready = true;
		}
		pw->next = 0;
		pres_fill(w);
		break;
	case CMD_PRES_SUBSCRIBE:
		pw->sub_next = 0;
		uv_timer_start(&pw->timer, pres_on_setup_tick, PRES_SETUP_TICK_MS, PRES_SETUP_TICK_MS);
		break;
	case CMD_PRES_RETRY:
		pres_retry(w);
		break;
	case CMD_PRES_LOGOUT:
		uv_timer_stop(&pw->timer);
		pw->setup = false;
		for (unsigned i = 0; i < pw->nusers; i++)
			if (pw->users[i].c)
				conn_close(pw->users[i].c);
		break;
	case CMD_PRES_CHURN:
		pw->churning = true;
		pres_cycle_more(w);
		break;
	case CMD_PRES_CALM:
		pw->churning = false;
		break;
	case CMD_EXIT:
		pw->churning = false;
		if (pw->timer_ready)
			uv_close((uv_handle_t *)&pw->timer, NULL);
		break;
	}
}

static const struct scenario_hooks pres_hooks = { .command = pres_command };

static uint64_t pres_sum(struct run *r, size_t field)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < r->nw; i++)
		sum += counter_get((_Atomic uint64_t *)((char *)r->w[i]->scen + field));
	return sum;
}

#define PRES_SUM(r, f) pres_sum((r), offsetof(struct pres_worker, f))

static uint64_t pres_received(struct run *r)
{
	return PRES_SUM(r, available) + PRES_SUM(r, unavailable);
}

/* Waits until no presence has arrived for `quiet` seconds, at most `cap`
 * seconds: the fan-out of a mass login takes a moment to finish. */
static void pres_settle(struct run *r, double quiet, double cap)
{
	uint64_t last = pres_received(r);
	double t_change = run_elapsed(r), t_end = t_change + cap;
	while (run_elapsed(r) < t_end && run_wait(r, 0.05)) {
		uint64_t now = pres_received(r);
		if (now != last) {
			last = now;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change >= quiet) {
			break;
		}
	}
}

/* Logs everyone out and waits (bounded) until every connection is closed. */
static void pres_logout(struct run *r)
{
	run_command(r, CMD_PRES_LOGOUT);
	double t_end = run_elapsed(r) + 5;
	while (run_sum(r, offsetof(struct counters, started)) > run_sum(r, offsetof(struct counters, closed)) &&
	       run_elapsed(r) < t_end && run_wait(r, 0.02))
		;
}

/* The setup phase; returns the number of users whose roster is complete. */
static uint64_t pres_setup(struct run *r, struct pres_worker *pws, double *secs)
{
	const struct opts *o = r->o;
	double t0 = run_elapsed(r);
	for (unsigned i = 0; i < r->nw; i++)
		pws[i].setup = true;
	uint64_t base = scenario_logins_done(r);
	run_command(r, CMD_PRES_LOGIN);
	scenario_wait_logins(r, base, o->users);
	run_command(r, CMD_PRES_SUBSCRIBE);
	/* Progress is anything the server still sends about subscriptions: a
	 * slow server gets there bit by bit, and only a silent one is asked
	 * again (or, silent for long, given up on). */
	uint64_t last = 0;
	double t_change = run_elapsed(r), t_retry = t_change;
	unsigned retries = 0;
	for (;;) {
		uint64_t done = PRES_SUM(r, complete);
		if (done >= o->users)
			break;
		uint64_t seen = PRES_SUM(r, both_seen) + PRES_SUM(r, pushes) + PRES_SUM(r, subscription);
		if (seen != last) {
			last = seen;
			t_change = t_retry = run_elapsed(r);
		}
		if (run_elapsed(r) - t_retry > PRES_RETRY_SECONDS && retries < PRES_RETRIES) {
			run_command(r, CMD_PRES_RETRY);
			retries++;
			t_retry = run_elapsed(r);
		}
		if (run_elapsed(r) - t_change > PRES_STALL_SECONDS) {
			fprintf(stderr, "presence: roster setup stalled at %llu of %u users\n",
				(unsigned long long)done, o->users);
			break;
		}
		scenario_progress(r, "roster setup: %llu of %u users complete", (unsigned long long)done,
				  o->users);
		if (!run_wait(r, 0.05))
			break;
	}
	uint64_t complete = PRES_SUM(r, complete);
	*secs = run_elapsed(r) - t0;
	fprintf(stderr, "presence: rosters of %llu of %u users complete (%u contacts each, "
			"subscription both) in %.2f s; %llu requests repeated\n",
		(unsigned long long)complete, o->users, pres_contacts(o), *secs,
		(unsigned long long)PRES_SUM(r, resent));
	pres_logout(r);
	return complete;
}

int presence_run(const struct opts *o)
{
	struct run r;
	struct cpu_mark m0, m1, mc0, mc1;
	unsigned contacts = pres_contacts(o);
	unsigned churn = o->churn ? o->churn : (o->users / 10 ? o->users / 10 : 1);
	if (contacts == 0) {
		fprintf(stderr, "natter-load: presence needs --users of at least 3 and --contacts of at least 1\n");
		return 1;
	}
	if (run_start(&r, o, &pres_hooks, NULL) < 0) {
		run_free(&r);
		return 1;
	}
	struct pres_worker *pws = calloc(r.nw, sizeof *pws);
	_Atomic bool *done = calloc(o->users, sizeof *done);
	for (unsigned i = 0; i < r.nw; i++) {
		struct pres_worker *pw = &pws[i];
		pw->done = done;
		pw->nusers = run_share(&r, o->users, i);
		pw->conc = run_share(&r, o->concurrency, i);
		if (pw->conc == 0)
			pw->conc = 1;
		pw->churn = run_share(&r, churn, i);
		if (pw->churn == 0)
			pw->churn = 1;
		pw->users = calloc(pw->nusers + 1, sizeof *pw->users);
		for (unsigned k = 0; k < pw->nusers; k++) {
			pw->users[k].idx = i + r.nw * k;
			pw->users[k].got = calloc(contacts / 8 + 1, 1);
		}
		r.w[i]->scen = pw;
	}
	cpu_mark(&m0, o);
	double setup_s = 0;
	uint64_t setup_complete = 0;
	if (o->setup_rosters)
		setup_complete = pres_setup(&r, pws, &setup_s);

	uint64_t logins = 0, cycles = 0, got = 0, avail = 0, unavail = 0, login_presence = 0;
	double login_s = 0, churn_s = 0, roster_avg = 0, both_avg = 0;
	bool measured = !o->setup_only && !r.interrupted && !r.capped;
	mc0 = mc1 = m0;
	if (measured) {
		double t0 = run_elapsed(&r);
		uint64_t base = scenario_logins_done(&r);
		uint64_t rx0 = pres_received(&r);
		uint64_t ri0 = PRES_SUM(&r, roster_items), rb0 = PRES_SUM(&r, roster_both);
		run_command(&r, CMD_PRES_LOGIN);
		scenario_wait_logins(&r, base, o->users);
		login_s = run_elapsed(&r) - t0;
		logins = run_sum(&r, offsetof(struct counters, online));
		if (logins) {
			roster_avg = (double)(PRES_SUM(&r, roster_items) - ri0) / (double)logins;
			both_avg = (double)(PRES_SUM(&r, roster_both) - rb0) / (double)logins;
		}
		pres_settle(&r, 0.3, 3);
		login_presence = pres_received(&r) - rx0;
		fprintf(stderr, "presence: %llu of %u users online in %.2f s, roster %.1f items "
				"(%.1f both); %llu presence stanzas received during login\n",
			(unsigned long long)logins, o->users, login_s, roster_avg, both_avg,
			(unsigned long long)login_presence);

		uint64_t c0 = PRES_SUM(&r, cycles), a0 = PRES_SUM(&r, available),
			 u0 = PRES_SUM(&r, unavailable);
		cpu_mark(&mc0, o);
		run_command(&r, CMD_PRES_CHURN);
		double cs = run_elapsed(&r);
		while (run_elapsed(&r) - cs < o->seconds) {
			scenario_progress(&r, "presence: %llu cycles, %llu presence stanzas",
					  (unsigned long long)(PRES_SUM(&r, cycles) - c0),
					  (unsigned long long)(pres_received(&r) - a0 - u0));
			if (!run_wait(&r, o->seconds - (run_elapsed(&r) - cs) < 0.5
						  ? o->seconds - (run_elapsed(&r) - cs)
						  : 0.5))
				break;
		}
		cpu_mark(&mc1, o);
		churn_s = run_elapsed(&r) - cs;
		cycles = PRES_SUM(&r, cycles) - c0;
		avail = PRES_SUM(&r, available) - a0;
		unavail = PRES_SUM(&r, unavailable) - u0;
		got = avail + unavail;
		run_command(&r, CMD_PRES_CALM);
		double t_end = run_elapsed(&r) + 5;
		while (PRES_SUM(&r, cycling_now) > 0 && run_elapsed(&r) < t_end && run_wait(&r, 0.02))
			;
	}
	cpu_mark(&m1, o);
	run_stop(&r);

	double rx_rate = churn_s > 0 ? (double)got / churn_s : 0;
	double cyc_rate = churn_s > 0 ? (double)cycles / churn_s : 0;
	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "presence");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_u64(&rp, "users", o->users);
	report_u64(&rp, "contacts", contacts);
	report_num(&rp, "seconds", o->seconds);
	report_u64(&rp, "churn", churn);
	report_bool(&rp, "setup_rosters", o->setup_rosters);
	report_end(&rp, '}');
	if (o->setup_rosters) {
		report_obj(&rp, "setup");
		report_u64(&rp, "users_complete", setup_complete);
		report_num(&rp, "seconds", setup_s);
		report_u64(&rp, "requests_repeated", PRES_SUM(&r, resent));
		report_u64(&rp, "subscription_stanzas_received", PRES_SUM(&r, subscription));
		report_end(&rp, '}');
	}
	report_u64(&rp, "online", logins);
	report_num(&rp, "login_s", login_s);
	report_num(&rp, "roster_items_avg", roster_avg);
	report_num(&rp, "roster_both_avg", both_avg);
	report_u64(&rp, "login_presence_received", login_presence);
	report_num(&rp, "churn_s", churn_s);
	report_u64(&rp, "cycles", cycles);
	report_num(&rp, "cycles_per_s", cyc_rate);
	report_u64(&rp, "presence_received", got);
	report_u64(&rp, "available_received", avail);
	report_u64(&rp, "unavailable_received", unavail);
	report_num(&rp, "presence_per_s", rx_rate);
	report_num(&rp, "presence_per_cycle", cycles ? (double)got / (double)cycles : 0);
	report_num(&rp, "churn_generator_cpu_cores", cpu_cores(&mc0, &mc1));
	if (cpu_server_cores(&mc0, &mc1) >= 0) {
		double server_s = mc1.server - mc0.server;
		report_num(&rp, "churn_server_cpu_cores", cpu_server_cores(&mc0, &mc1));
		/* The rate depends on how fast each cycle turns around (a server
		 * that answers </stream:stream> late slows it); per CPU second is
		 * the cost. */
		report_num(&rp, "presence_per_server_cpu_s", server_s > 0 ? (double)got / server_s : 0);
	}
	report_common(&rp, &r, &m0, &m1);
	report_close(&rp);

	if (measured)
		fprintf(stderr, "presence: %llu cycles in %.1f s (%.0f/s), %llu presence stanzas "
				"received = %.0f/s (%.1f per cycle)\n",
			(unsigned long long)cycles, churn_s, cyc_rate, (unsigned long long)got, rx_rate,
			cycles ? (double)got / (double)cycles : 0);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m1);
	run_free(&r);
	for (unsigned i = 0; i < o->threads; i++) {
		for (unsigned k = 0; k < pws[i].nusers; k++)
			free(pws[i].users[k].got);
		free(pws[i].users);
	}
	free(pws);
	free(done);
	return 0;
}

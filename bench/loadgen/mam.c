/* mam: message archive (XEP-0313) query latency on a large archive.
 *
 * The archive: --messages M one-to-one chat messages among --users U
 * accounts, laid out by mam_pair() below, so that every message is in two
 * archives (its sender's and its recipient's) and the first --heavy H
 * accounts, the measured ones, take part in many more messages than the
 * others (every --heavy-every'th message goes to one of them). The same
 * layout is written by the peers' bulk loaders (bench/peers/SERVER/server.sh
 * archive); with --fill natter-load makes it over XMPP instead: every user
 * logs in and the messages are sent in order (message i from its sender to
 * its recipient's bare JID), at most --fill-rate a second with a bounded
 * number in flight, until every one has arrived.
 *
 * The measurement: each heavy user's client (one query in flight each)
 * first walks its archive back from the newest message, --page results at
 * a time (RSM <before/>, then <before>FIRST</before> with the <first/> of
 * the page before, as a client scrolling back does), until --deep messages
 * back; the <first/> it has then is the id of the message --deep back.
 * Then it alternates, --queries times each:
 *   latest: <set><max>PAGE</max><before/></set>, the newest page;
 *   deep:   <set><max>PAGE</max><before>ID</before></set>, the page just
 *           older than the message --deep back.
 * Latency is from writing the <iq/> to reading its result (every <result/>
 * message of the page comes before it). Paging by id needs nothing but
 * RSM, so it is the same method on every server; no server-side <index/>
 * or time range is assumed. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "scenario.h"

enum { CMD_MAM_LOGIN = CMD_SCENARIO, CMD_MAM_FILL, CMD_MAM_QUERY };

#define NS_MAM "urn:xmpp:mam:2"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define MAM_TICK_MS 1
/* Fill messages sent and not yet received, over all workers: keeps a slow
 * server's queues (and the generator's) short. */
#define MAM_FILL_WINDOW 4000
#define MAM_STALL_SECONDS 15.0

enum mam_phase { Q_IDLE, Q_WALK, Q_LATEST, Q_DEEP, Q_DONE };

struct mam_user {
	struct conn *c;
	unsigned idx;         /* 0 .. U-1; account first_user + idx */
	bool measured;        /* one of the heavy users */
	enum mam_phase q;
	char *before;         /* walk: <first/> of the last page */
	char *deep_id;        /* the id of the message --deep back */
	unsigned seen;        /* walk: results so far */
	unsigned results;     /* results of the query in flight */
	unsigned done_latest, done_deep;
	uint64_t t_sent;
	unsigned qseq;
	char qid[32];
};

/* Counters several workers write: real atomic adds. */
struct mam_shared {
	_Atomic uint64_t fill_sent;
	_Atomic uint64_t fill_received;
	_Atomic uint64_t fill_errors;
	_Atomic uint64_t clients_done;
	_Atomic uint64_t unsupported;
};

struct mam_worker {
	struct mam_shared *sh;
	unsigned nusers;
	struct mam_user *users;  /* users[k].idx = worker id + threads * k */
	bool all;                /* log in every user (fill), not just the measured */
	unsigned next, inflight, conc;
	uv_timer_t tick;
	bool tick_ready;
	bool filling;
	uint64_t fill_start;
	double rate;             /* this worker's share of --fill-rate */
	uint64_t cursor;         /* fill: next message index to look at */
	uint64_t accounted;      /* fill: messages due so far */
	struct hist walk, latest, deep;
	_Atomic uint64_t walk_pages, walk_seen, deep_reached, archive_short;
	_Atomic uint64_t latest_results, deep_results, short_pages, errors;
};

/* The archive's layout: message i (0 .. M-1) goes from user s to user r
 * (0-based; accounts first_user + s, first_user + r):
 *   s = i mod U;
 *   every heavy_every'th message (i mod heavy_every = 0) goes to heavy user
 *     r = (i / heavy_every) mod H, and when that is s, s becomes s+1 mod U;
 *   any other goes to r = (s + 1 + (i / U) mod (U - 1)) mod U.
 * bench/peers/SERVER/server.sh archive writes the same (keep them in step). */
static void mam_pair(const struct opts *o, uint64_t i, unsigned *s, unsigned *r)
{
	unsigned u = o->users;
	*s = (unsigned)(i % u);
	if (i % o->heavy_every == 0) {
		*r = (unsigned)((i / o->heavy_every) % o->heavy);
		if (*r == *s)
			*s = (*s + 1) % u;
	} else {
		*r = (unsigned)((*s + 1 + (i / u) % (u - 1)) % u);
	}
}

static void mam_fill_logins(struct worker *w);

static struct mam_user *mam_user_of(struct worker *w, unsigned idx)
{
	struct mam_worker *mw = w->scen;
	unsigned k = idx / w->run->nw;
	return k < mw->nusers ? &mw->users[k] : NULL;
}

static void mam_on_online(struct conn *c)
{
	struct mam_worker *mw = c->w->scen;
	mw->inflight--;
	mam_fill_logins(c->w);
}

static void mam_on_closed(struct conn *c)
{
	struct mam_worker *mw = c->w->scen;
	struct mam_user *p = c->data;
	p->c = NULL;
	if (!c->was_online) {
		mw->inflight--;
		mam_fill_logins(c->w);
	}
	if (p->measured && p->q != Q_DONE && p->q != Q_IDLE) {
		p->q = Q_DONE;
		atomic_fetch_add(&mw->sh->clients_done, 1);
	}
}

static void mam_send_query(struct conn *c, struct mam_user *p, const char *before)
{
	const struct opts *o = c->w->run->o;
	snprintf(p->qid, sizeof p->qid, "q%u-%u", p->idx, ++p->qseq);
	p->results = 0;
	conn_sendf(c, "<iq type='set' id='%s'><query xmlns='" NS_MAM "' queryid='%s'>"
		      "<set xmlns='" NS_RSM "'><max>%u</max>",
		   p->qid, p->qid, o->page);
	if (before && *before) {
		conn_send(c, "<before>", 8);
		conn_send_escaped(c, before);
		conn_send(c, "</before></set></query></iq>", 28);
	} else {
		conn_send(c, "<before/></set></query></iq>", 28);
	}
	p->t_sent = uv_hrtime();
}

/* The next measured query: latest and deep alternate until each has run
 * --queries times (deep only where the walk got that far). */
static void mam_next(struct conn *c, struct mam_user *p)
{
	struct mam_worker *mw = c->w->scen;
	const struct opts *o = c->w->run->o;
	bool more_latest = p->done_latest < o->queries;
	bool more_deep = p->deep_id && p->done_deep < o->queries;
	if (!more_latest && !more_deep) {
		p->q = Q_DONE;
		atomic_fetch_add(&mw->sh->clients_done, 1);
		return;
	}
	if (more_latest && (!more_deep || p->q != Q_LATEST)) {
		p->q = Q_LATEST;
		mam_send_query(c, p, NULL);
	} else {
		p->q = Q_DEEP;
		mam_send_query(c, p, p->deep_id);
	}
}

static const char *mam_condition(const struct stanza *st)
{
	const struct stanza *e = stanza_child(st, NS_CLIENT " error");
	if (!e || !e->child)
		return "no condition";
	const char *sp = strchr(e->child->name, ' ');
	return sp ? sp + 1 : e->child->name;
}

static void mam_on_result(struct conn *c, struct mam_user *p, struct stanza *st)
{
	struct worker *w = c->w;
	struct mam_worker *mw = w->scen;
	const struct opts *o = w->run->o;
	uint64_t us = (uv_hrtime() - p->t_sent) / 1000;
	const char *type = stanza_attr(st, "type");
	if (!type || strcmp(type, "result") != 0) {
		const char *cond = mam_condition(st);
		char msg[200];
		snprintf(msg, sizeof msg, "%s%u: archive query refused: %s", o->users_prefix, o->first_user + p->idx, cond);
		worker_note_error(w, msg);
		worker_count(&mw->errors, 1);
		if (strcmp(cond, "feature-not-implemented") == 0 ||
		    strcmp(cond, "service-unavailable") == 0)
			atomic_fetch_add(&mw->sh->unsupported, 1);
		p->q = Q_DONE;
		atomic_fetch_add(&mw->sh->clients_done, 1);
		return;
	}
	const struct stanza *fin = stanza_child(st, NS_MAM " fin");
	const struct stanza *set = fin ? stanza_child(fin, NS_RSM " set") : NULL;
	const struct stanza *first = set ? stanza_child(set, NS_RSM " first") : NULL;
	const char *complete = fin ? stanza_attr(fin, "complete") : NULL;
	bool end = (complete && strcmp(complete, "true") == 0) || !first || !first->text_len;
	if (p->results < o->page && !(p->q == Q_WALK && end))
		worker_count(&mw->short_pages, 1);
	switch (p->q) {
	case Q_WALK:
		hist_add(&mw->walk, us);
		worker_count(&mw->walk_pages, 1);
		worker_count(&mw->walk_seen, p->results);
		p->seen += p->results;
		if (first && first->text_len) {
			free(p->before);
			p->before = strdup(first->text);
		}
		if (p->seen >= o->deep && first && first->text_len) {
			p->deep_id = strdup(first->text);
			worker_count(&mw->deep_reached, 1);
		} else if (end) {
			worker_count(&mw->archive_short, 1);
		} else {
			mam_send_query(c, p, p->before);
			return;
		}
		p->q = Q_IDLE;
		mam_next(c, p);
		return;
	case Q_LATEST:
		hist_add(&mw->latest, us);
		worker_count(&mw->latest_results, p->results);
		p->done_latest++;
		break;
	case Q_DEEP:
		hist_add(&mw->deep, us);
		worker_count(&mw->deep_results, p->results);
		p->done_deep++;
		break;
	default:
		return;
	}
	mam_next(c, p);
}

static void mam_on_stanza(struct conn *c, struct stanza *st)
{
	struct mam_worker *mw = c->w->scen;
	struct mam_user *p = c->data;
	if (stanza_is(st, NS_CLIENT " message")) {
		const struct stanza *res = stanza_child(st, NS_MAM " result");
		if (res) {
			const char *qid = stanza_attr(res, "queryid");
			if (qid && strcmp(qid, p->qid) == 0)
				p->results++;
			return;
		}
		const char *type = stanza_attr(st, "type");
		if (type && strcmp(type, "error") == 0) {
			atomic_fetch_add(&mw->sh->fill_errors, 1);
			return;
		}
		const struct stanza *body = stanza_child(st, NS_CLIENT " body");
		if (body && strncmp(body->text, "mam ", 4) == 0)
			atomic_fetch_add(&mw->sh->fill_received, 1);
	} else if (stanza_is(st, NS_CLIENT " iq") && p->q != Q_IDLE && p->q != Q_DONE) {
		const char *id = stanza_attr(st, "id");
		if (id && strcmp(id, p->qid) == 0)
			mam_on_result(c, p, st);
	}
}

static const struct conn_ops mam_ops = {
	.online = mam_on_online,
	.stanza = mam_on_stanza,
	.closed = mam_on_closed,
};

static void mam_fill_logins(struct worker *w)
{
	struct mam_worker *mw = w->scen;
	if (w->exiting)
		return;
	while (mw->inflight < mw->conc && mw->next < mw->nusers) {
		struct mam_user *p = &mw->users[mw->next++];
		if (p->c || !(mw->all || p->measured))
			continue;
		mw->inflight++;
		p->c = conn_open(w, w->run->o->first_user + p->idx, &mam_ops, p);
	}
}

/* Fill: sends the messages whose sender lives on this worker, in order,
 * as the rate and the window allow. A sender that is offline is skipped
 * (counted as an error: the archive will be short by that message). */
static void mam_on_tick(uv_timer_t *t)
{
	struct worker *w = t->data;
	struct mam_worker *mw = w->scen;
	struct mam_shared *sh = mw->sh;
	const struct opts *o = w->run->o;
	if (!mw->filling)
		return;
	uint64_t due = (uint64_t)(mw->rate * (double)(uv_hrtime() - mw->fill_start) / 1e9) + 1;
	while (mw->accounted < due && mw->cursor < o->messages) {
		uint64_t sent = atomic_load(&sh->fill_sent);
		uint64_t back = atomic_load(&sh->fill_received) + atomic_load(&sh->fill_errors);
		if (sent > back + MAM_FILL_WINDOW)
			break;
		unsigned s, r;
		mam_pair(o, mw->cursor, &s, &r);
		if (s % w->run->nw != w->id) {
			mw->cursor++;
			continue;
		}
		struct mam_user *p = mam_user_of(w, s);
		struct conn *c = p ? p->c : NULL;
		if (c && c->state == CONN_ONLINE &&
		    conn_backlog(c) > (size_t)o->max_queue_kb * 1024)
			break;
		if (!c || c->state != CONN_ONLINE) {
			atomic_fetch_add(&sh->fill_sent, 1);
			atomic_fetch_add(&sh->fill_errors, 1);
		} else {
			char user[64];
			conn_username(o, o->first_user + r, user, sizeof user);
			conn_sendf(c, "<message to='%s@%s' type='chat' id='f%llu'><body>mam %llu from %u to %u"
				      "</body></message>",
				   user, o->domain, (unsigned long long)mw->cursor,
				   (unsigned long long)mw->cursor, s, r);
			atomic_fetch_add(&sh->fill_sent, 1);
		}
		mw->cursor++;
		mw->accounted++;
	}
	if (mw->cursor >= o->messages) {
		mw->filling = false;
		uv_timer_stop(&mw->tick);
	}
}

static void mam_command(struct worker *w, int cmd)
{
	struct mam_worker *mw = w->scen;
	const struct opts *o = w->run->o;
	if (cmd == CMD_MAM_LOGIN) {
		if (!mw->tick_ready) {
			uv_timer_init(&w->loop, &mw->tick);
			mw->tick.data = w;
			mw->tick_ready = true;
		}
		mw->next = 0;
		mam_fill_logins(w);
	} else if (cmd == CMD_MAM_FILL) {
		mw->rate = (double)o->fill_rate / w->run->nw;
		mw->fill_start = uv_hrtime();
		mw->filling = true;
		uv_timer_start(&mw->tick, mam_on_tick, MAM_TICK_MS, MAM_TICK_MS);
	} else if (cmd == CMD_MAM_QUERY) {
		for (unsigned k = 0; k < mw->nusers; k++) {
			struct mam_user *p = &mw->users[k];
			if (!p->measured)
				continue;
			if (!p->c || p->c->state != CONN_ONLINE) {
				p->q = Q_DONE;
				atomic_fetch_add(&mw->sh->clients_done, 1);
				continue;
			}
			p->q = Q_WALK;
			mam_send_query(p->c, p, NULL);
		}
	} else if (cmd == CMD_EXIT && mw->tick_ready) {
		mw->filling = false;
		uv_close((uv_handle_t *)&mw->tick, NULL);
	}
}

static const struct scenario_hooks mam_hooks = { .command = mam_command };

static uint64_t mam_sum(struct run *r, size_t field)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < r->nw; i++)
		sum += counter_get((_Atomic uint64_t *)((char *)r->w[i]->scen + field));
	return sum;
}

#define MAM_SUM(r, f) mam_sum((r), offsetof(struct mam_worker, f))

/* Measured queries answered so far, all workers. */
static uint64_t mam_measured(struct run *r)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < r->nw; i++) {
		struct mam_worker *mw = r->w[i]->scen;
		n += hist_count(&mw->latest) + hist_count(&mw->deep);
	}
	return n;
}

/* Fill over XMPP; returns seconds taken (every message arrived, or the
 * server stopped making progress). */
static double mam_fill(struct run *r, struct mam_shared *sh)
{
	const struct opts *o = r->o;
	double t0 = run_elapsed(r);
	run_command(r, CMD_MAM_FILL);
	uint64_t last = 0;
	double t_change = t0;
	for (;;) {
		uint64_t back = atomic_load(&sh->fill_received) + atomic_load(&sh->fill_errors);
		if (back >= o->messages)
			break;
		if (back != last) {
			last = back;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change > MAM_STALL_SECONDS) {
			fprintf(stderr, "natter-load: mam: fill stalled at %llu of %u messages\n",
				(unsigned long long)back, o->messages);
			break;
		}
		scenario_progress(r, "mam: filling: %llu of %u messages sent, %llu arrived",
				  (unsigned long long)atomic_load(&sh->fill_sent), o->messages,
				  (unsigned long long)atomic_load(&sh->fill_received));
		if (!run_wait(r, 0.05))
			break;
	}
	return run_elapsed(r) - t0;
}

/* Waits until every measured client is done, or none has made progress
 * for a while. */
static void mam_wait_queries(struct run *r, struct mam_shared *sh, uint64_t clients)
{
	uint64_t last = 0;
	double t_change = run_elapsed(r);
	for (;;) {
		if (atomic_load(&sh->clients_done) >= clients)
			return;
		uint64_t n = MAM_SUM(r, walk_pages) + mam_measured(r);
		if (n != last) {
			last = n;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change > MAM_STALL_SECONDS) {
			fprintf(stderr, "natter-load: mam: queries stalled\n");
			return;
		}
		scenario_progress(r, "mam: %llu walk pages, %llu measured queries, %llu of %llu clients done",
				  (unsigned long long)MAM_SUM(r, walk_pages),
				  (unsigned long long)mam_measured(r),
				  (unsigned long long)atomic_load(&sh->clients_done),
				  (unsigned long long)clients);
		if (!run_wait(r, 0.05))
			return;
	}
}

int mam_run(const struct opts *o)
{
	struct run r;
	struct mam_shared sh = { 0 };
	struct cpu_mark m0, m1, mq0, mq1;
	if (run_start(&r, o, &mam_hooks, &sh) < 0) {
		run_free(&r);
		return 1;
	}
	struct mam_worker *mws = calloc(r.nw, sizeof *mws);
	for (unsigned i = 0; i < r.nw; i++) {
		struct mam_worker *mw = &mws[i];
		mw->sh = &sh;
		mw->all = o->fill;
		mw->nusers = run_share(&r, o->users, i);
		mw->conc = run_share(&r, o->concurrency, i);
		if (mw->conc == 0)
			mw->conc = 1;
		mw->users = calloc(mw->nusers + 1, sizeof *mw->users);
		for (unsigned k = 0; k < mw->nusers; k++) {
			mw->users[k].idx = i + r.nw * k;
			mw->users[k].measured = mw->users[k].idx < o->heavy;
		}
		r.w[i]->scen = mw;
	}
	/* What the layout gives the measured users (the smallest of them). */
	uint64_t *per = calloc(o->heavy, sizeof *per);
	for (uint64_t i = 0; i < o->messages; i++) {
		unsigned s, t;
		mam_pair(o, i, &s, &t);
		if (s < o->heavy)
			per[s]++;
		if (t < o->heavy)
			per[t]++;
	}
	uint64_t heavy_min = per[0];
	for (unsigned k = 1; k < o->heavy; k++)
		if (per[k] < heavy_min)
			heavy_min = per[k];
	free(per);

	cpu_mark(&m0, o);
	run_command(&r, CMD_MAM_LOGIN);
	uint64_t logins = o->fill ? o->users : o->heavy;
	scenario_wait_logins(&r, 0, logins);
	double login_s = run_elapsed(&r);
	uint64_t online = run_sum(&r, offsetof(struct counters, online));
	double fill_s = 0;
	if (o->fill && online && !r.interrupted && !r.capped) {
		fill_s = mam_fill(&r, &sh);
		/* Archives may be written behind delivery. */
		run_wait(&r, 1.0);
		fprintf(stderr, "mam: %llu of %u messages sent over XMPP in %.2f s (%.0f/s), %llu bounced or unsent\n",
			(unsigned long long)atomic_load(&sh.fill_received), o->messages, fill_s,
			fill_s > 0 ? (double)atomic_load(&sh.fill_received) / fill_s : 0,
			(unsigned long long)atomic_load(&sh.fill_errors));
	}
	cpu_mark(&mq0, o);
	double tq = run_elapsed(&r);
	if (online && !r.interrupted && !r.capped) {
		run_command(&r, CMD_MAM_QUERY);
		mam_wait_queries(&r, &sh, o->heavy);
	}
	double query_s = run_elapsed(&r) - tq;
	cpu_mark(&mq1, o);
	cpu_mark(&m1, o);
	run_stop(&r);

	struct hist *walk = calloc(1, sizeof *walk), *latest = calloc(1, sizeof *latest),
		    *deep = calloc(1, sizeof *deep);
	for (unsigned i = 0; i < r.nw; i++) {
		hist_merge(walk, &mws[i].walk);
		hist_merge(latest, &mws[i].latest);
		hist_merge(deep, &mws[i].deep);
	}
	uint64_t nlatest = hist_count(latest), ndeep = hist_count(deep);
	uint64_t unsupported = atomic_load(&sh.unsupported);

	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "mam");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_u64(&rp, "users", o->users);
	report_u64(&rp, "messages", o->messages);
	report_u64(&rp, "heavy", o->heavy);
	report_u64(&rp, "heavy_every", o->heavy_every);
	report_u64(&rp, "deep", o->deep);
	report_u64(&rp, "page", o->page);
	report_u64(&rp, "queries", o->queries);
	report_bool(&rp, "fill", o->fill);
	report_u64(&rp, "fill_rate", o->fill_rate);
	report_end(&rp, '}');
	report_u64(&rp, "online", online);
	report_num(&rp, "login_s", login_s);
	report_obj(&rp, "archive");
	report_u64(&rp, "messages", o->messages);
	report_u64(&rp, "archived_copies", 2ull * o->messages);
	report_u64(&rp, "measured_user_messages_min", heavy_min);
	if (o->fill) {
		report_num(&rp, "fill_s", fill_s);
		report_u64(&rp, "fill_received", atomic_load(&sh.fill_received));
		report_u64(&rp, "fill_errors", atomic_load(&sh.fill_errors));
		report_num(&rp, "fill_msgs_per_s",
			   fill_s > 0 ? (double)atomic_load(&sh.fill_received) / fill_s : 0);
	}
	report_end(&rp, '}');
	report_bool(&rp, "supported", unsupported == 0 && MAM_SUM(&r, walk_pages) > 0);
	report_obj(&rp, "walk");
	report_u64(&rp, "pages", MAM_SUM(&r, walk_pages));
	report_u64(&rp, "messages_seen", MAM_SUM(&r, walk_seen));
	report_u64(&rp, "clients_reached_deep", MAM_SUM(&r, deep_reached));
	report_u64(&rp, "clients_archive_short", MAM_SUM(&r, archive_short));
	report_hist_ms(&rp, "page_ms", walk);
	report_end(&rp, '}');
	report_hist_ms(&rp, "latest_page_ms", latest);
	report_hist_ms(&rp, "deep_page_ms", deep);
	report_num(&rp, "latest_results_avg", nlatest ? (double)MAM_SUM(&r, latest_results) / (double)nlatest : 0);
	report_num(&rp, "deep_results_avg", ndeep ? (double)MAM_SUM(&r, deep_results) / (double)ndeep : 0);
	report_u64(&rp, "short_pages", MAM_SUM(&r, short_pages));
	report_u64(&rp, "query_errors", MAM_SUM(&r, errors));
	report_u64(&rp, "unsupported", unsupported);
	report_num(&rp, "query_s", query_s);
	report_num(&rp, "query_generator_cpu_cores", cpu_cores(&mq0, &mq1));
	if (cpu_server_cores(&mq0, &mq1) >= 0)
		report_num(&rp, "query_server_cpu_cores", cpu_server_cores(&mq0, &mq1));
	report_common(&rp, &r, &m0, &m1);
	report_close(&rp);

	fprintf(stderr, "mam: walk %llu pages to %u back (%llu of %u clients got there); "
			"latest page p50 %.2f p99 %.2f ms (%llu); %u back p50 %.2f p99 %.2f ms (%llu)\n",
		(unsigned long long)MAM_SUM(&r, walk_pages), o->deep,
		(unsigned long long)MAM_SUM(&r, deep_reached), o->heavy,
		hist_quantile_us(latest, 0.5) / 1000, hist_quantile_us(latest, 0.99) / 1000,
		(unsigned long long)nlatest, o->deep, hist_quantile_us(deep, 0.5) / 1000,
		hist_quantile_us(deep, 0.99) / 1000, (unsigned long long)ndeep);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m1);
	run_free(&r);
	for (unsigned i = 0; i < o->threads; i++) {
		for (unsigned k = 0; k < mws[i].nusers; k++) {
			free(mws[i].users[k].before);
			free(mws[i].users[k].deep_id);
		}
		free(mws[i].users);
	}
	free(mws);
	free(walk);
	free(latest);
	free(deep);
	return 0;
}

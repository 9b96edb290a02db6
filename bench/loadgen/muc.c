/* muc: --rooms rooms of --room-size occupants each (XEP-0045). The first
 * occupant of every room logs in, joins and so creates the room; where the
 * server locks a new room (status 201) it submits the instant-room form
 * (XEP-0045 §10.1.2) before anyone else comes in. Then every other occupant
 * logs in and joins. Then the first --senders occupants of each room send
 * groupchat messages at an aggregate offered rate (messages sent per
 * second, all rooms together) that rises step by step, as in chat: each
 * body carries its send time (monotonic ns, one clock for every thread of
 * this process) and step number, and every occupant that receives the
 * message, the sender's own echo included, turns that into end-to-end
 * latency. What counts is the deliveries: one message to a room of N is N
 * stanzas the server writes.
 *
 * Occupant g (0-based; account first_user + g) is in room g / room_size
 * and lives on worker g % threads. Sending is driven by a 1 ms timer per
 * worker over that worker's senders, as chat.c does. */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "scenario.h"

enum { CMD_MUC_OWNERS = CMD_SCENARIO, CMD_MUC_JOIN, CMD_MUC_STEP };

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER NS_MUC "#user"
#define NS_MUC_OWNER NS_MUC "#owner"
#define MUC_TICK_MS 1
#define MUC_LEAD_NS 20000000ull
#define MUC_P99_BOUND_MS 50.0

/* One worker's account of one step. */
struct muc_step {
	_Atomic uint64_t sent;
	_Atomic uint64_t expected;         /* deliveries due: occupants of the room per message */
	_Atomic uint64_t received;         /* deliveries of this step's messages, whenever */
	_Atomic uint64_t skipped;          /* due but not sent: backlog or sender offline */
	_Atomic uint64_t behind;           /* due but not sent: the generator fell behind */
	_Atomic uint64_t errors;           /* bounced (type='error') */
	_Atomic uint64_t delivered_window; /* deliveries received during the step */
	struct hist lat;
};

struct muc_occ {
	struct conn *c;    /* NULL when not connected */
	unsigned g;        /* occupant number, 0 .. rooms * room_size - 1 */
	unsigned room;
	bool joined;
	bool left;         /* joined, then gone: no longer counted in the room */
	char *occ_jid;     /* room@service/nick, malloc'd */
};

/* Shared by every thread: the main thread writes the step before
 * CMD_MUC_STEP; the room counters are bumped by whichever worker sees the
 * event (several writers, so real atomic adds). */
struct muc_shared {
	int step;
	unsigned rate; /* aggregate messages sent per second */
	uint64_t start, end;
	unsigned nsenders; /* over all workers */
	_Atomic uint64_t *room_in;   /* occupants in each room now */
	_Atomic uint64_t rooms_ready; /* rooms others may join */
	_Atomic uint64_t joined;      /* joins completed */
	_Atomic uint64_t join_failed; /* error presence, or gone before joining */
	_Atomic uint64_t presence;    /* presence stanzas received (the join fan-out) */
};

struct muc_worker {
	struct muc_shared *sh;
	unsigned nocc;
	struct muc_occ *occ;       /* this worker's occupants */
	struct muc_occ **senders;  /* ... those that send */
	unsigned nsenders;
	bool owners_only;          /* first phase: open room creators only */
	unsigned next, inflight, conc;
	struct muc_step *steps;    /* one per rate */
	uv_timer_t tick;
	bool tick_ready;
	bool sending;
	int step;
	uint64_t start, end;
	double rate;               /* this worker's share, msgs/s */
	uint64_t accounted;
	unsigned rr;
	uint64_t seq;
	const char *pad;
};

static void muc_fill(struct worker *w);

static bool muc_is_owner(const struct opts *o, const struct muc_occ *p)
{
	return p->g % o->room_size == 0;
}

static void muc_room_jid(const struct opts *o, unsigned room, char *out, size_t cap)
{
	snprintf(out, cap, "%s%u@%s", o->room_prefix, room + 1, o->muc_service);
}

static void muc_on_online(struct conn *c)
{
	struct worker *w = c->w;
	struct muc_worker *mw = w->scen;
	const struct opts *o = w->run->o;
	struct muc_occ *p = c->data;
	char room[256], nick[64];
	mw->inflight--;
	muc_room_jid(o, p->room, room, sizeof room);
	conn_username(o, o->first_user + p->g, nick, sizeof nick);
	free(p->occ_jid);
	size_t n = strlen(room) + strlen(nick) + 2;
	p->occ_jid = malloc(n);
	snprintf(p->occ_jid, n, "%s/%s", room, nick);
	/* No discussion history: joins are setup, not what is measured. */
	conn_sendf(c, "<presence to='%s'><x xmlns='" NS_MUC "'><history maxstanzas='0'/></x></presence>",
		   p->occ_jid);
	muc_fill(w);
}

static void muc_on_closed(struct conn *c)
{
	struct muc_worker *mw = c->w->scen;
	struct muc_occ *p = c->data;
	p->c = NULL;
	if (!c->was_online) {
		mw->inflight--;
		atomic_fetch_add(&mw->sh->join_failed, 1);
		muc_fill(c->w);
	} else if (p->joined && !p->left) {
		p->left = true;
		atomic_fetch_sub(&mw->sh->room_in[p->room], 1);
	} else if (!p->joined) {
		atomic_fetch_add(&mw->sh->join_failed, 1);
	}
}

static bool muc_has_status(const struct stanza *x, const char *code)
{
	for (const struct stanza *s = x ? x->child : NULL; s; s = s->next) {
		const char *v = stanza_is(s, NS_MUC_USER " status") ? stanza_attr(s, "code") : NULL;
		if (v && strcmp(v, code) == 0)
			return true;
	}
	return false;
}

/* The name of an error's condition element, for the first-error message. */
static const char *muc_condition(const struct stanza *st)
{
	const struct stanza *e = stanza_child(st, NS_CLIENT " error");
	if (!e || !e->child)
		return "no condition";
	const char *sp = strchr(e->child->name, ' ');
	return sp ? sp + 1 : e->child->name;
}

static void muc_on_presence(struct conn *c, struct muc_occ *p, struct stanza *st)
{
	struct worker *w = c->w;
	struct muc_worker *mw = w->scen;
	const struct opts *o = w->run->o;
	const char *from = stanza_attr(st, "from");
	const char *type = stanza_attr(st, "type");
	atomic_fetch_add_explicit(&mw->sh->presence, 1, memory_order_relaxed);
	if (!from || !p->occ_jid || strcmp(from, p->occ_jid) != 0 || p->joined)
		return;
	if (type && strcmp(type, "error") == 0) {
		char msg[320];
		snprintf(msg, sizeof msg, "%s: join refused: %s", p->occ_jid, muc_condition(st));
		worker_note_error(w, msg);
		p->joined = p->left = true; /* never in the room */
		atomic_fetch_add(&mw->sh->join_failed, 1);
		return;
	}
	if (type)
		return;
	p->joined = true;
	atomic_fetch_add(&mw->sh->room_in[p->room], 1);
	atomic_fetch_add(&mw->sh->joined, 1);
	if (!muc_is_owner(o, p))
		return;
	const struct stanza *x = stanza_child(st, NS_MUC_USER " x");
	if (muc_has_status(x, "201")) {
		/* A new room; some servers lock it until its owner configures it.
		 * The instant room: accept the default configuration. */
		char room[256];
		muc_room_jid(o, p->room, room, sizeof room);
		conn_sendf(c, "<iq type='set' to='%s' id='muc-create'><query xmlns='" NS_MUC_OWNER "'>"
			      "<x xmlns='jabber:x:data' type='submit'/></query></iq>", room);
	} else {
		atomic_fetch_add(&mw->sh->rooms_ready, 1);
	}
}

static void muc_on_message(struct conn *c, struct stanza *st)
{
	struct muc_worker *mw = c->w->scen;
	uint64_t now = uv_hrtime();
	const struct stanza *body = stanza_child(st, NS_CLIENT " body");
	unsigned long long t = 0;
	int step = -1;
	if (body && strncmp(body->text, "t=", 2) == 0) {
		char *end;
		t = strtoull(body->text + 2, &end, 10);
		if (strncmp(end, " s=", 3) == 0)
			step = (int)strtol(end + 3, NULL, 10);
	}
	if (step < 0 || step >= (int)c->w->run->o->nrates)
		return; /* the subject, or anything not ours */
	struct muc_step *s = &mw->steps[step];
	const char *type = stanza_attr(st, "type");
	if (type && strcmp(type, "error") == 0) {
		worker_count(&s->errors, 1);
		return;
	}
	if (!t)
		return;
	worker_count(&s->received, 1);
	hist_add(&s->lat, now > t ? (now - t) / 1000 : 0);
	if (mw->step >= 0 && now >= mw->start && now < mw->end)
		worker_count(&mw->steps[mw->step].delivered_window, 1);
}

static void muc_on_stanza(struct conn *c, struct stanza *st)
{
	struct muc_occ *p = c->data;
	if (stanza_is(st, NS_CLIENT " message")) {
		muc_on_message(c, st);
	} else if (stanza_is(st, NS_CLIENT " presence")) {
		muc_on_presence(c, p, st);
	} else if (stanza_is(st, NS_CLIENT " iq")) {
		const char *id = stanza_attr(st, "id"), *type = stanza_attr(st, "type");
		struct muc_worker *mw = c->w->scen;
		if (!id || strcmp(id, "muc-create") != 0 || !type)
			return;
		if (strcmp(type, "result") == 0) {
			atomic_fetch_add(&mw->sh->rooms_ready, 1);
		} else if (strcmp(type, "error") == 0) {
			char msg[320];
			snprintf(msg, sizeof msg, "%s: instant room refused: %s", p->occ_jid,
				 muc_condition(st));
			worker_note_error(c->w, msg);
		}
	}
}

static const struct conn_ops muc_ops = {
	.online = muc_on_online,
	.stanza = muc_on_stanza,
	.closed = muc_on_closed,
};

static void muc_fill(struct worker *w)
{
	struct muc_worker *mw = w->scen;
	const struct opts *o = w->run->o;
	if (w->exiting)
		return;
	while (mw->inflight < mw->conc && mw->next < mw->nocc) {
		struct muc_occ *p = &mw->occ[mw->next++];
		if (p->c || p->joined || muc_is_owner(o, p) != mw->owners_only)
			continue;
		mw->inflight++;
		p->c = conn_open(w, o->first_user + p->g, &muc_ops, p);
	}
}

static void muc_send_one(struct worker *w, struct muc_worker *mw, struct muc_step *s)
{
	const struct opts *o = w->run->o;
	struct muc_occ *p = mw->senders[mw->rr++ % mw->nsenders];
	struct conn *c = p->c;
	if (!c || c->state != CONN_ONLINE || !p->joined || p->left ||
	    conn_backlog(c) > (size_t)o->max_queue_kb * 1024) {
		worker_count(&s->skipped, 1);
		return;
	}
	char room[256], prefix[64];
	muc_room_jid(o, p->room, room, sizeof room);
	int n = snprintf(prefix, sizeof prefix, "t=%llu s=%d ", (unsigned long long)uv_hrtime(), mw->step);
	int pad = (int)o->body_size > n ? (int)o->body_size - n : 0;
	conn_sendf(c, "<message to='%s' type='groupchat' id='g%llx'><body>%s%.*s</body></message>", room,
		   (unsigned long long)++mw->seq, prefix, pad, mw->pad);
	worker_count(&s->sent, 1);
	worker_count(&s->expected, (int64_t)atomic_load(&mw->sh->room_in[p->room]));
}

static void muc_on_tick(uv_timer_t *t)
{
	struct worker *w = t->data;
	struct muc_worker *mw = w->scen;
	uint64_t now = uv_hrtime();
	if (!mw->sending || now < mw->start)
		return;
	uint64_t until = now < mw->end ? now : mw->end;
	/* Rounded to nearest (the first message half an interval in), so a
	 * step of a few messages a second still sends all of them within its
	 * window, and the workers' shares do not each add one. */
	uint64_t due = (uint64_t)floor(mw->rate * (double)(until - mw->start) / 1e9 + 0.5);
	if (due > mw->accounted) {
		struct muc_step *s = &mw->steps[mw->step];
		uint64_t n = due - mw->accounted;
		uint64_t burst = (uint64_t)(mw->rate / 100.0) + 1;
		if (n > burst) {
			worker_count(&s->behind, (int64_t)(n - burst));
			mw->accounted += n - burst;
			n = burst;
		}
		mw->accounted += n;
		for (uint64_t i = 0; i < n; i++)
			muc_send_one(w, mw, s);
	}
	if (now >= mw->end) {
		worker_step_sent(w, mw->step);
		mw->sending = false;
		uv_timer_stop(&mw->tick);
	}
}

static void muc_command(struct worker *w, int cmd)
{
	struct muc_worker *mw = w->scen;
	if (cmd == CMD_MUC_OWNERS || cmd == CMD_MUC_JOIN) {
		if (!mw->tick_ready) {
			uv_timer_init(&w->loop, &mw->tick);
			mw->tick.data = w;
			mw->tick_ready = true;
		}
		mw->owners_only = cmd == CMD_MUC_OWNERS;
		mw->next = 0;
		muc_fill(w);
	} else if (cmd == CMD_MUC_STEP) {
		mw->step = mw->sh->step;
		mw->start = mw->sh->start;
		mw->end = mw->sh->end;
		mw->rate = (double)mw->sh->rate * mw->nsenders / (mw->sh->nsenders ? mw->sh->nsenders : 1);
		mw->accounted = 0;
		mw->sending = mw->nsenders > 0;
		if (mw->sending)
			uv_timer_start(&mw->tick, muc_on_tick, MUC_TICK_MS, MUC_TICK_MS);
		else
			worker_step_sent(w, mw->step);
	} else if (cmd == CMD_EXIT && mw->tick_ready) {
		mw->sending = false;
		uv_close((uv_handle_t *)&mw->tick, NULL);
	}
}

static const struct scenario_hooks muc_hooks = { .command = muc_command };

/* One step, all workers merged. */
struct muc_result {
	unsigned offered;
	uint64_t sent, expected, received, skipped, behind, errors, window;
	double seconds;
	double p50, p90, p99, p999, max, mean; /* ms */
	double gen_cores, server_cores;
};

static uint64_t muc_sum(struct run *r, int step, size_t field)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < r->nw; i++) {
		struct muc_worker *mw = r->w[i]->scen;
		sum += counter_get((_Atomic uint64_t *)((char *)&mw->steps[step] + field));
	}
	return sum;
}

#define MUC_SUM(r, i, f) muc_sum((r), (i), offsetof(struct muc_step, f))

static void muc_collect(struct run *r, int step, struct muc_result *res, struct hist *h)
{
	hist_reset(h);
	for (unsigned i = 0; i < r->nw; i++) {
		struct muc_worker *mw = r->w[i]->scen;
		hist_merge(h, &mw->steps[step].lat);
	}
	res->sent = MUC_SUM(r, step, sent);
	res->expected = MUC_SUM(r, step, expected);
	res->received = MUC_SUM(r, step, received);
	res->skipped = MUC_SUM(r, step, skipped);
	res->behind = MUC_SUM(r, step, behind);
	res->errors = MUC_SUM(r, step, errors);
	res->window = MUC_SUM(r, step, delivered_window);
	res->p50 = hist_quantile_us(h, 0.5) / 1000.0;
	res->p90 = hist_quantile_us(h, 0.9) / 1000.0;
	res->p99 = hist_quantile_us(h, 0.99) / 1000.0;
	res->p999 = hist_quantile_us(h, 0.999) / 1000.0;
	res->max = (double)hist_max_us(h) / 1000.0;
	res->mean = hist_mean_us(h) / 1000.0;
}

static uint64_t muc_lost(const struct muc_result *s)
{
	uint64_t got = s->received + s->errors;
	return s->expected > got ? s->expected - got : 0;
}

static double muc_delivered_per_s(const struct muc_result *s)
{
	return s->seconds > 0 ? (double)s->window / s->seconds : 0;
}

/* A step counts when everything offered was sent and every occupant got
 * every message, without bounces, with p99 under the bound. */
static bool muc_step_ok(const struct muc_result *s, double p99_ms)
{
	return s->sent > 0 && muc_lost(s) == 0 && s->errors == 0 &&
	       (double)s->sent >= 0.95 * s->offered * s->seconds && s->p99 < p99_ms;
}

static void muc_report_step(struct report *rp, const struct opts *o, const struct muc_result *s)
{
	double deliv = muc_delivered_per_s(s);
	report_obj(rp, NULL);
	report_u64(rp, "offered_per_s", s->offered);
	report_u64(rp, "offered_deliveries_per_s", (uint64_t)s->offered * o->room_size);
	report_num(rp, "seconds", s->seconds);
	report_u64(rp, "sent", s->sent);
	report_num(rp, "sent_per_s", s->seconds > 0 ? (double)s->sent / s->seconds : 0);
	report_u64(rp, "deliveries_expected", s->expected);
	report_u64(rp, "delivered", s->received);
	report_num(rp, "delivered_per_s", deliv);
	report_u64(rp, "lost", muc_lost(s));
	report_u64(rp, "skipped_backlog", s->skipped);
	report_u64(rp, "skipped_generator_behind", s->behind);
	report_u64(rp, "errors", s->errors);
	report_obj(rp, "latency_ms");
	report_num(rp, "mean", s->mean);
	report_num(rp, "p50", s->p50);
	report_num(rp, "p90", s->p90);
	report_num(rp, "p99", s->p99);
	report_num(rp, "p999", s->p999);
	report_num(rp, "max", s->max);
	report_end(rp, '}');
	report_num(rp, "generator_cpu_cores", s->gen_cores);
	if (s->server_cores >= 0) {
		report_num(rp, "server_cpu_cores", s->server_cores);
		report_num(rp, "server_cpu_us_per_delivery", deliv > 0 ? s->server_cores * 1e6 / deliv : 0);
	}
	report_end(rp, '}');
}

/* Waits until the joins have settled: every one done or failed, or no
 * progress for longer than a login may take. */
static void muc_wait_joins(struct run *r, struct muc_shared *sh, uint64_t expected, bool rooms)
{
	uint64_t last = 0;
	double t_change = run_elapsed(r);
	for (;;) {
		uint64_t done = rooms ? atomic_load(&sh->rooms_ready)
				      : atomic_load(&sh->joined) + atomic_load(&sh->join_failed);
		if (done >= expected)
			return;
		if (done != last) {
			last = done;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change > r->o->login_timeout + 5) {
			fprintf(stderr, "natter-load: muc: %s stalled at %llu of %llu\n",
				rooms ? "room creation" : "joins", (unsigned long long)done,
				(unsigned long long)expected);
			return;
		}
		scenario_progress(r, "muc: %s %llu of %llu, %llu presence stanzas received",
				  rooms ? "rooms ready" : "joined", (unsigned long long)done,
				  (unsigned long long)expected, (unsigned long long)atomic_load(&sh->presence));
		if (!run_wait(r, 0.02))
			return;
	}
}

/* Waits until no presence has arrived for `quiet` seconds (at most `cap`):
 * a joiner's own presence comes back before the server has finished
 * telling everyone else, and that backlog must not land in the first step. */
static void muc_settle(struct run *r, struct muc_shared *sh, double quiet, double cap)
{
	uint64_t last = atomic_load(&sh->presence);
	double t_change = run_elapsed(r), t_end = t_change + cap;
	while (run_elapsed(r) < t_end && run_wait(r, 0.05)) {
		uint64_t now = atomic_load(&sh->presence);
		if (now != last) {
			last = now;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change >= quiet) {
			break;
		}
	}
}

/* Runs the rate steps; returns how many ran. */
static unsigned muc_steps(struct run *r, struct muc_shared *sh, struct muc_result *res)
{
	const struct opts *o = r->o;
	struct cpu_mark ms, me;
	struct hist *h = calloc(1, sizeof *h);
	unsigned nsteps = 0;
	for (unsigned i = 0; i < o->nrates && !r->interrupted && !r->capped; i++) {
		struct muc_result *s = &res[i];
		s->offered = o->rates[i];
		sh->step = (int)i;
		sh->rate = o->rates[i];
		sh->start = uv_hrtime() + MUC_LEAD_NS;
		sh->end = sh->start + (uint64_t)(o->step_seconds * 1e9);
		run_command(r, CMD_MUC_STEP);
		run_wait(r, (double)(sh->start - uv_hrtime()) / 1e9);
		cpu_mark(&ms, o);
		bool whole = run_wait(r, (double)(sh->end - uv_hrtime()) / 1e9);
		cpu_mark(&me, o);
		s->seconds = (double)((whole ? sh->end : uv_hrtime()) - sh->start) / 1e9;
		s->gen_cores = cpu_cores(&ms, &me);
		s->server_cores = cpu_server_cores(&ms, &me);
		run_wait_step_sent(r, (int)i, o->drain_seconds);
		uint64_t drain_end = uv_hrtime() + (uint64_t)(o->drain_seconds * 1e9);
		while (uv_hrtime() < drain_end) {
			uint64_t got = MUC_SUM(r, (int)i, received) + MUC_SUM(r, (int)i, errors);
			if (got >= MUC_SUM(r, (int)i, expected) || !run_wait(r, 0.01))
				break;
		}
		muc_collect(r, (int)i, s, h);
		nsteps = i + 1;
		fprintf(stderr, "muc: offered %6u msgs/s (%8llu deliveries/s) delivered %9.0f/s lost %llu "
				"skipped %llu+%llu  p50 %7.2f ms  p99 %7.2f ms  gen CPU %3.0f%%",
			s->offered, (unsigned long long)s->offered * o->room_size, muc_delivered_per_s(s),
			(unsigned long long)muc_lost(s), (unsigned long long)s->skipped,
			(unsigned long long)s->behind, s->p50, s->p99, 100 * s->gen_cores);
		if (s->server_cores >= 0)
			fprintf(stderr, "  server CPU %3.0f%%", 100 * s->server_cores);
		fputc('\n', stderr);
		if (!whole)
			break;
		if (s->p99 > o->stop_p99_ms || muc_lost(s) * 100 > s->expected ||
		    (double)s->sent < 0.8 * s->offered * s->seconds)
			break;
	}
	free(h);
	return nsteps;
}

static void muc_report(struct run *r, struct muc_shared *sh, const struct muc_result *res,
		       unsigned nsteps, double login_s, const struct cpu_mark *m0,
		       const struct cpu_mark *m1)
{
	const struct opts *o = r->o;
	const struct muc_result *best = NULL;
	for (unsigned i = 0; i < nsteps; i++)
		if (muc_step_ok(&res[i], MUC_P99_BOUND_MS) && (!best || res[i].offered > best->offered))
			best = &res[i];
	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "muc");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_str(&rp, "service", o->muc_service);
	report_u64(&rp, "rooms", o->rooms);
	report_u64(&rp, "room_size", o->room_size);
	report_u64(&rp, "senders_per_room", o->senders);
	scenario_step_params(&rp, o);
	report_end(&rp, '}');
	report_u64(&rp, "rooms_ready", atomic_load(&sh->rooms_ready));
	report_u64(&rp, "joined", atomic_load(&sh->joined));
	report_u64(&rp, "join_failed", atomic_load(&sh->join_failed));
	report_num(&rp, "join_s", login_s);
	report_u64(&rp, "join_presence_received", atomic_load(&sh->presence));
	report_arr(&rp, "steps");
	for (unsigned i = 0; i < nsteps; i++)
		muc_report_step(&rp, o, &res[i]);
	report_end(&rp, ']');
	report_u64(&rp, "max_rate_p99_under_50ms", best ? best->offered : 0);
	report_num(&rp, "delivered_per_s_p99_under_50ms", best ? muc_delivered_per_s(best) : 0);
	if (best && best->server_cores >= 0 && muc_delivered_per_s(best) > 0)
		report_num(&rp, "server_cpu_us_per_delivery_p99_under_50ms",
			   best->server_cores * 1e6 / muc_delivered_per_s(best));
	report_common(&rp, r, m0, m1);
	report_close(&rp);
	fprintf(stderr, "muc: rooms of %u: highest rate with p99 < 50 ms: %u msgs/s = %.0f deliveries/s\n",
		o->room_size, best ? best->offered : 0, best ? muc_delivered_per_s(best) : 0);
}

static void muc_setup_workers(struct run *r, struct muc_shared *sh, struct muc_worker *mws,
			      const char *pad)
{
	const struct opts *o = r->o;
	unsigned total = o->rooms * o->room_size;
	for (unsigned i = 0; i < r->nw; i++) {
		struct muc_worker *mw = &mws[i];
		mw->sh = sh;
		mw->pad = pad;
		mw->step = -1;
		mw->nocc = run_share(r, total, i);
		mw->conc = run_share(r, o->concurrency, i);
		if (mw->conc == 0)
			mw->conc = 1;
		mw->occ = calloc(mw->nocc + 1, sizeof *mw->occ);
		mw->senders = calloc(mw->nocc + 1, sizeof *mw->senders);
		mw->steps = calloc(o->nrates, sizeof *mw->steps);
		for (unsigned k = 0; k < mw->nocc; k++) {
			struct muc_occ *p = &mw->occ[k];
			p->g = i + r->nw * k;
			p->room = p->g / o->room_size;
			if (p->g % o->room_size < o->senders)
				mw->senders[mw->nsenders++] = p;
		}
		sh->nsenders += mw->nsenders;
		r->w[i]->scen = mw;
	}
}

int muc_run(const struct opts *o)
{
	struct run r;
	struct muc_shared sh = { .step = -1 };
	struct cpu_mark m0, m1;
	if (o->rooms == 0 || o->room_size == 0 || o->senders == 0) {
		fprintf(stderr, "natter-load: --rooms, --room-size and --senders must be at least 1\n");
		return 1;
	}
	if (run_start(&r, o, &muc_hooks, &sh) < 0) {
		run_free(&r);
		return 1;
	}
	char *pad = malloc(o->body_size + 1);
	memset(pad, 'x', o->body_size);
	pad[o->body_size] = '\0';
	sh.room_in = calloc(o->rooms, sizeof *sh.room_in);
	struct muc_worker *mws = calloc(r.nw, sizeof *mws);
	muc_setup_workers(&r, &sh, mws, pad);

	cpu_mark(&m0, o);
	run_command(&r, CMD_MUC_OWNERS);
	muc_wait_joins(&r, &sh, o->rooms, true);
	run_command(&r, CMD_MUC_JOIN);
	muc_wait_joins(&r, &sh, (uint64_t)o->rooms * o->room_size, false);
	muc_settle(&r, &sh, 0.5, 30);
	double join_s = run_elapsed(&r);
	if (!o->quiet)
		fprintf(stderr, "muc: %llu rooms ready, %llu of %u occupants in after %.2f s "
				"(%llu presence stanzas received)\n",
			(unsigned long long)atomic_load(&sh.rooms_ready),
			(unsigned long long)atomic_load(&sh.joined), o->rooms * o->room_size, join_s,
			(unsigned long long)atomic_load(&sh.presence));

	struct muc_result *res = calloc(o->nrates, sizeof *res);
	unsigned nsteps = atomic_load(&sh.joined) ? muc_steps(&r, &sh, res) : 0;
	cpu_mark(&m1, o);
	run_stop(&r);
	muc_report(&r, &sh, res, nsteps, join_s, &m0, &m1);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m1);
	run_free(&r);
	for (unsigned i = 0; i < o->threads; i++) {
		for (unsigned k = 0; k < mws[i].nocc; k++)
			free(mws[i].occ[k].occ_jid);
		free(mws[i].occ);
		free(mws[i].senders);
		free(mws[i].steps);
	}
	free(mws);
	free(sh.room_in);
	free(res);
	free(pad);
	return 0;
}

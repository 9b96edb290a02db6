/* chat: P pairs of online users send each other ~100-byte messages at an
 * aggregate offered rate that rises step by step. Each message carries its
 * send time (monotonic ns) and step number in the body; the receiving
 * partner turns that into end-to-end latency. A pair lives on one worker,
 * so both ends use the same clock and the same counters.
 *
 * Sending is driven by a 1 ms timer per worker: on each tick the worker
 * sends what its share of the rate says is due, round-robin over its
 * connections, so the load is spread and a late tick catches up (up to
 * 10 ms worth; beyond that the generator is behind and the shortfall is
 * counted as skipped, like a connection whose unsent backlog is over
 * --max-queue-kb). */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "scenario.h"

enum { CMD_CHAT_START = CMD_SCENARIO, CMD_CHAT_STEP };

#define CHAT_TICK_MS 1
#define CHAT_LEAD_NS 20000000ull /* between announcing a step and its start */

/* One worker's account of one step. */
struct chat_step {
	_Atomic uint64_t sent;
	_Atomic uint64_t received;         /* of this step's messages, whenever */
	_Atomic uint64_t skipped;          /* due but not sent: backlog over --max-queue-kb or partner offline */
	_Atomic uint64_t behind;           /* due but not sent: the generator fell behind */
	_Atomic uint64_t errors;           /* bounced (type='error') */
	_Atomic uint64_t delivered_window; /* any message received during the step */
	struct hist lat;
};

struct chat_peer {
	struct conn *c; /* NULL when not connected */
	struct chat_peer *partner;
	unsigned user;
};

/* Written by the main thread before CMD_CHAT_STEP. */
struct chat_shared {
	int step;
	unsigned rate; /* aggregate msgs/s */
	uint64_t start, end;
};

struct chat_worker {
	const struct chat_shared *sh;
	unsigned npairs;
	struct chat_peer *peers; /* 2 * npairs; peers[2k] and peers[2k+1] are partners */
	unsigned next, inflight, conc;
	struct chat_step *steps; /* one per rate */
	uv_timer_t tick;
	bool tick_ready;
	bool sending;
	int step;           /* the step of the current window, -1 before any */
	uint64_t start, end;
	double rate;        /* this worker's share, msgs/s */
	uint64_t accounted; /* due messages sent or skipped in this step */
	unsigned rr;
	uint64_t seq;
	char *pad;
};

static void chat_fill(struct worker *w);

static void chat_on_online(struct conn *c)
{
	struct chat_worker *cw = c->w->scen;
	cw->inflight--;
	chat_fill(c->w);
}

static void chat_on_closed(struct conn *c)
{
	struct chat_worker *cw = c->w->scen;
	struct chat_peer *p = c->data;
	p->c = NULL;
	if (!c->was_online) {
		cw->inflight--;
		chat_fill(c->w);
	}
}

static void chat_count(_Atomic uint64_t *c)
{
	worker_count(c, 1);
}

static void chat_on_stanza(struct conn *c, struct stanza *st)
{
	struct chat_worker *cw = c->w->scen;
	if (!stanza_is(st, NS_CLIENT " message"))
		return;
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
		step = cw->step;
	if (step < 0)
		return;
	struct chat_step *s = &cw->steps[step];
	const char *type = stanza_attr(st, "type");
	if (type && strcmp(type, "error") == 0) {
		chat_count(&s->errors);
		return;
	}
	if (!t)
		return;
	chat_count(&s->received);
	hist_add(&s->lat, now > t ? (now - t) / 1000 : 0);
	if (cw->step >= 0 && now >= cw->start && now < cw->end)
		chat_count(&cw->steps[cw->step].delivered_window);
}

static const struct conn_ops chat_ops = {
	.online = chat_on_online,
	.stanza = chat_on_stanza,
	.closed = chat_on_closed,
};

static void chat_fill(struct worker *w)
{
	struct chat_worker *cw = w->scen;
	if (w->exiting)
		return;
	while (cw->inflight < cw->conc && cw->next < 2 * cw->npairs) {
		struct chat_peer *p = &cw->peers[cw->next++];
		cw->inflight++;
		p->c = conn_open(w, p->user, &chat_ops, p);
	}
}

static void chat_send_one(struct worker *w, struct chat_worker *cw, struct chat_step *s)
{
	const struct opts *o = w->run->o;
	struct chat_peer *p = &cw->peers[cw->rr++ % (2 * cw->npairs)];
	struct conn *from = p->c, *to = p->partner->c;
	if (!from || !to || from->state != CONN_ONLINE || to->state != CONN_ONLINE ||
	    conn_backlog(from) > (size_t)o->max_queue_kb * 1024) {
		chat_count(&s->skipped);
		return;
	}
	char prefix[64];
	int n = snprintf(prefix, sizeof prefix, "t=%llu s=%d ", (unsigned long long)uv_hrtime(),
			 cw->step);
	int pad = (int)o->body_size > n ? (int)o->body_size - n : 0;
	conn_sendf(from, "<message to='%s' type='chat' id='m%llx'><body>%s%.*s</body></message>",
		   to->jid, (unsigned long long)++cw->seq, prefix, pad, cw->pad);
	chat_count(&s->sent);
}

static void chat_on_tick(uv_timer_t *t)
{
	struct worker *w = t->data;
	struct chat_worker *cw = w->scen;
	uint64_t now = uv_hrtime();
	if (!cw->sending || now < cw->start)
		return;
	uint64_t until = now < cw->end ? now : cw->end;
	uint64_t due = (uint64_t)(cw->rate * (double)(until - cw->start) / 1e9);
	if (due > cw->accounted) {
		struct chat_step *s = &cw->steps[cw->step];
		uint64_t n = due - cw->accounted;
		uint64_t burst = (uint64_t)(cw->rate / 100.0) + 1;
		if (n > burst) {
			worker_count(&s->behind, (int64_t)(n - burst));
			cw->accounted += n - burst;
			n = burst;
		}
		cw->accounted += n;
		if (cw->npairs)
			for (uint64_t i = 0; i < n; i++)
				chat_send_one(w, cw, s);
		else
			worker_count(&s->skipped, (int64_t)n);
	}
	if (now >= cw->end) {
		worker_step_sent(w, cw->step);
		cw->sending = false;
		uv_timer_stop(&cw->tick);
	}
}

static void chat_command(struct worker *w, int cmd)
{
	struct chat_worker *cw = w->scen;
	const struct run *r = w->run;
	if (cmd == CMD_CHAT_START) {
		uv_timer_init(&w->loop, &cw->tick);
		cw->tick.data = w;
		cw->tick_ready = true;
		chat_fill(w);
	} else if (cmd == CMD_CHAT_STEP) {
		cw->step = cw->sh->step;
		cw->start = cw->sh->start;
		cw->end = cw->sh->end;
		cw->rate = (double)cw->sh->rate * cw->npairs / (r->o->pairs ? r->o->pairs : 1);
		cw->accounted = 0;
		cw->sending = true;
		uv_timer_start(&cw->tick, chat_on_tick, CHAT_TICK_MS, CHAT_TICK_MS);
	} else if (cmd == CMD_EXIT && cw->tick_ready) {
		cw->sending = false;
		uv_close((uv_handle_t *)&cw->tick, NULL);
	}
}

static const struct scenario_hooks chat_hooks = { .command = chat_command };

/* One step, all workers merged. */
struct chat_result {
	unsigned offered;
	uint64_t sent, received, skipped, behind, errors, window;
	double seconds;
	double p50, p90, p99, p999, max, mean; /* ms */
	double gen_cores, server_cores;
};

static uint64_t chat_sum(struct run *r, int step, size_t field)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < r->nw; i++) {
		struct chat_worker *cw = r->w[i]->scen;
		sum += counter_get((_Atomic uint64_t *)((char *)&cw->steps[step] + field));
	}
	return sum;
}

static void chat_collect(struct run *r, int step, struct chat_result *res, struct hist *h)
{
	hist_reset(h);
	for (unsigned i = 0; i < r->nw; i++) {
		struct chat_worker *cw = r->w[i]->scen;
		hist_merge(h, &cw->steps[step].lat);
	}
	res->sent = chat_sum(r, step, offsetof(struct chat_step, sent));
	res->received = chat_sum(r, step, offsetof(struct chat_step, received));
	res->skipped = chat_sum(r, step, offsetof(struct chat_step, skipped));
	res->behind = chat_sum(r, step, offsetof(struct chat_step, behind));
	res->errors = chat_sum(r, step, offsetof(struct chat_step, errors));
	res->window = chat_sum(r, step, offsetof(struct chat_step, delivered_window));
	res->p50 = hist_quantile_us(h, 0.5) / 1000.0;
	res->p90 = hist_quantile_us(h, 0.9) / 1000.0;
	res->p99 = hist_quantile_us(h, 0.99) / 1000.0;
	res->p999 = hist_quantile_us(h, 0.999) / 1000.0;
	res->max = (double)hist_max_us(h) / 1000.0;
	res->mean = hist_mean_us(h) / 1000.0;
}

static uint64_t chat_lost(const struct chat_result *s)
{
	uint64_t got = s->received + s->errors;
	return s->sent > got ? s->sent - got : 0;
}

/* A step counts when everything offered was sent and arrived, without
 * bounces, with p99 under the bound. */
static bool chat_step_ok(const struct chat_result *s, double p99_ms)
{
	return s->sent > 0 && chat_lost(s) == 0 && s->errors == 0 &&
	       (double)s->sent >= 0.95 * s->offered * s->seconds && s->p99 < p99_ms;
}

static void chat_report_step(struct report *rp, const struct chat_result *s)
{
	report_obj(rp, NULL);
	report_u64(rp, "offered_per_s", s->offered);
	report_num(rp, "seconds", s->seconds);
	report_u64(rp, "sent", s->sent);
	report_num(rp, "sent_per_s", s->seconds > 0 ? (double)s->sent / s->seconds : 0);
	report_u64(rp, "delivered", s->received);
	report_num(rp, "delivered_per_s", s->seconds > 0 ? (double)s->window / s->seconds : 0);
	report_u64(rp, "lost", chat_lost(s));
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
	if (s->server_cores >= 0)
		report_num(rp, "server_cpu_cores", s->server_cores);
	report_end(rp, '}');
}

int chat_run(const struct opts *o)
{
	struct run r;
	struct chat_shared sh = { .step = -1 };
	struct cpu_mark m0, m1, ms, me;
	if (o->pairs == 0) {
		fprintf(stderr, "natter-load: --pairs must be at least 1\n");
		return 1;
	}
	if (run_start(&r, o, &chat_hooks, &sh) < 0) {
		run_free(&r);
		return 1;
	}
	char *pad = malloc(o->body_size + 1);
	memset(pad, 'x', o->body_size);
	pad[o->body_size] = '\0';
	struct chat_worker *cws = calloc(r.nw, sizeof *cws);
	for (unsigned i = 0; i < r.nw; i++) {
		struct chat_worker *cw = &cws[i];
		cw->sh = &sh;
		cw->pad = pad;
		cw->step = -1;
		cw->npairs = run_share(&r, o->pairs, i);
		cw->conc = run_share(&r, o->concurrency, i);
		if (cw->conc == 0)
			cw->conc = 1;
		cw->peers = calloc(2 * (size_t)cw->npairs + 1, sizeof *cw->peers);
		cw->steps = calloc(o->nrates, sizeof *cw->steps);
		for (unsigned k = 0; k < cw->npairs; k++) {
			unsigned g = i + r.nw * k;
			cw->peers[2 * k].user = o->first_user + 2 * g;
			cw->peers[2 * k + 1].user = o->first_user + 2 * g + 1;
			cw->peers[2 * k].partner = &cw->peers[2 * k + 1];
			cw->peers[2 * k + 1].partner = &cw->peers[2 * k];
		}
		r.w[i]->scen = cw;
	}
	cpu_mark(&m0, o);
	run_command(&r, CMD_CHAT_START);
	scenario_wait_logins(&r, 0, 2ull * o->pairs);
	double login_s = run_elapsed(&r);
	uint64_t online = run_sum(&r, offsetof(struct counters, online));
	if (!o->quiet)
		fprintf(stderr, "chat: %llu of %u users online after %.2f s\n",
			(unsigned long long)online, 2 * o->pairs, login_s);

	struct chat_result *res = calloc(o->nrates, sizeof *res);
	struct hist *h = calloc(1, sizeof *h);
	unsigned nsteps = 0;
	for (unsigned i = 0; i < o->nrates && online > 0 && !r.interrupted && !r.capped; i++) {
		struct chat_result *s = &res[i];
		s->offered = o->rates[i];
		sh.step = (int)i;
		sh.rate = o->rates[i];
		sh.start = uv_hrtime() + CHAT_LEAD_NS;
		sh.end = sh.start + (uint64_t)(o->step_seconds * 1e9);
		run_command(&r, CMD_CHAT_STEP);
		run_wait(&r, (double)(sh.start - uv_hrtime()) / 1e9);
		cpu_mark(&ms, o);
		bool whole = run_wait(&r, (double)(sh.end - uv_hrtime()) / 1e9);
		cpu_mark(&me, o);
		s->seconds = (double)((whole ? sh.end : uv_hrtime()) - sh.start) / 1e9;
		s->gen_cores = cpu_cores(&ms, &me);
		s->server_cores = cpu_server_cores(&ms, &me);
		/* Let the step's messages arrive before judging it. */
		run_wait_step_sent(&r, (int)i, o->drain_seconds);
		uint64_t drain_end = uv_hrtime() + (uint64_t)(o->drain_seconds * 1e9);
		while (uv_hrtime() < drain_end) {
			uint64_t sent = chat_sum(&r, (int)i, offsetof(struct chat_step, sent));
			uint64_t got = chat_sum(&r, (int)i, offsetof(struct chat_step, received)) +
				       chat_sum(&r, (int)i, offsetof(struct chat_step, errors));
			if (got >= sent || !run_wait(&r, 0.01))
				break;
		}
		chat_collect(&r, (int)i, s, h);
		nsteps = i + 1;
		fprintf(stderr, "chat: offered %7u/s sent %8.0f/s delivered %8.0f/s lost %llu "
				"skipped %llu+%llu  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  gen CPU %3.0f%%",
			s->offered, s->seconds > 0 ? (double)s->sent / s->seconds : 0,
			s->seconds > 0 ? (double)s->window / s->seconds : 0,
			(unsigned long long)chat_lost(s), (unsigned long long)s->skipped,
			(unsigned long long)s->behind, s->p50, s->p99, s->max, 100 * s->gen_cores);
		if (s->server_cores >= 0)
			fprintf(stderr, "  server CPU %3.0f%%", 100 * s->server_cores);
		fputc('\n', stderr);
		if (!whole)
			break;
		/* Past saturation, higher rates only measure the backlog. */
		if (s->p99 > o->stop_p99_ms || chat_lost(s) * 100 > s->sent ||
		    (double)s->sent < 0.8 * s->offered * s->seconds)
			break;
	}
	cpu_mark(&m1, o);
	run_stop(&r);

	unsigned best100 = 0, best10 = 0;
	double deliv100 = 0, deliv10 = 0;
	for (unsigned i = 0; i < nsteps; i++) {
		double d = res[i].seconds > 0 ? (double)res[i].window / res[i].seconds : 0;
		if (chat_step_ok(&res[i], 100) && res[i].offered > best100) {
			best100 = res[i].offered;
			deliv100 = d;
		}
		if (chat_step_ok(&res[i], 10) && res[i].offered > best10) {
			best10 = res[i].offered;
			deliv10 = d;
		}
	}

	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "chat");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_u64(&rp, "pairs", o->pairs);
	scenario_step_params(&rp, o);
	report_end(&rp, '}');
	report_u64(&rp, "online", online);
	report_num(&rp, "login_s", login_s);
	report_arr(&rp, "steps");
	for (unsigned i = 0; i < nsteps; i++)
		chat_report_step(&rp, &res[i]);
	report_end(&rp, ']');
	report_u64(&rp, "max_rate_p99_under_100ms", best100);
	report_num(&rp, "delivered_per_s_p99_under_100ms", deliv100);
	report_u64(&rp, "max_rate_p99_under_10ms", best10);
	report_num(&rp, "delivered_per_s_p99_under_10ms", deliv10);
	report_common(&rp, &r, &m0, &m1);
	report_close(&rp);

	fprintf(stderr, "chat: highest offered rate with p99 < 100 ms: %u msgs/s; with p99 < 10 ms: %u msgs/s\n",
		best100, best10);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m1);
	run_free(&r);
	for (unsigned i = 0; i < o->threads; i++) {
		free(cws[i].peers);
		free(cws[i].steps);
	}
	free(cws);
	free(res);
	free(h);
	free(pad);
	return 0;
}

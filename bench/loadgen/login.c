/* login: C connectors each repeat connect, full login, close, until L
 * logins are done; accounts rotate over --users. The rate is logins
 * completed over the time from the first connect to the last login.
 *
 * A connector is free again as soon as its login completes: the polite
 * close (our </stream:stream>, then the server's, at most 2 s) goes on in
 * the background, so a server that is slow to close does not throttle the
 * login rate. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "conn.h"
#include "scenario.h"

enum { CMD_LOGIN_START = CMD_SCENARIO };

struct login_worker {
	unsigned total;
	unsigned next;
	unsigned inflight;     /* connections logging in */
	unsigned open;         /* connections not yet closed */
	unsigned conc;
	_Atomic bool finished; /* every connection of this worker is done */
	_Atomic uint64_t t_last_login; /* uv_hrtime() of its last login */
};

static void login_fill(struct worker *w);

static void login_on_online(struct conn *c)
{
	struct login_worker *lw = c->w->scen;
	atomic_store_explicit(&lw->t_last_login, c->t_online, memory_order_relaxed);
	lw->inflight--;
	conn_close(c);
	login_fill(c->w);
}

static void login_on_closed(struct conn *c)
{
	struct login_worker *lw = c->w->scen;
	lw->open--;
	if (!c->was_online)
		lw->inflight--;
	login_fill(c->w);
}

static const struct conn_ops login_ops = {
	.online = login_on_online,
	.closed = login_on_closed,
};

static void login_fill(struct worker *w)
{
	struct login_worker *lw = w->scen;
	const struct opts *o = w->run->o;
	if (w->exiting)
		return;
	while (lw->inflight < lw->conc && lw->next < lw->total) {
		unsigned g = w->id + w->run->nw * lw->next++;
		lw->inflight++;
		lw->open++;
		conn_open(w, o->first_user + g % o->users, &login_ops, NULL);
	}
	if (lw->next == lw->total && lw->open == 0)
		atomic_store_explicit(&lw->finished, true, memory_order_release);
}

static void login_command(struct worker *w, int cmd)
{
	if (cmd == CMD_LOGIN_START)
		login_fill(w);
}

static const struct scenario_hooks login_hooks = { .command = login_command };

int login_run(const struct opts *o)
{
	struct run r;
	struct cpu_mark m0, m1;
	if (o->users == 0) {
		fprintf(stderr, "natter-load: --users must be at least 1\n");
		return 1;
	}
	if (run_start(&r, o, &login_hooks, NULL) < 0) {
		run_free(&r);
		return 1;
	}
	struct login_worker *lws = calloc(r.nw, sizeof *lws);
	for (unsigned i = 0; i < r.nw; i++) {
		lws[i].total = run_share(&r, o->logins, i);
		lws[i].conc = run_share(&r, o->concurrency, i);
		if (lws[i].conc == 0)
			lws[i].conc = 1;
		r.w[i]->scen = &lws[i];
	}
	cpu_mark(&m0, o);
	uint64_t t0 = uv_hrtime();
	run_command(&r, CMD_LOGIN_START);
	for (;;) {
		unsigned done = 0;
		for (unsigned i = 0; i < r.nw; i++)
			done += atomic_load_explicit(&lws[i].finished, memory_order_acquire);
		if (done == r.nw)
			break;
		scenario_progress(&r, "login: %llu logins, %llu failed",
				  (unsigned long long)run_sum(&r, offsetof(struct counters, logins)),
				  (unsigned long long)run_sum(&r, offsetof(struct counters, login_failed)));
		if (!run_wait(&r, 0.02))
			break;
	}
	cpu_mark(&m1, o);
	uint64_t t_last = t0;
	for (unsigned i = 0; i < r.nw; i++) {
		uint64_t t = atomic_load_explicit(&lws[i].t_last_login, memory_order_relaxed);
		if (t > t_last)
			t_last = t;
	}
	run_stop(&r);
	uint64_t logins = run_sum(&r, offsetof(struct counters, logins));
	uint64_t failed = run_sum(&r, offsetof(struct counters, login_failed));
	double secs = (double)(t_last - t0) / 1e9;
	double rate = secs > 0 ? (double)logins / secs : 0;
	struct hist *h = calloc(1, sizeof *h);
	run_login_hist(&r, h);

	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "login");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_u64(&rp, "logins", o->logins);
	report_u64(&rp, "users", o->users);
	report_end(&rp, '}');
	report_u64(&rp, "logins", logins);
	report_u64(&rp, "login_failed", failed);
	report_num(&rp, "seconds", secs);
	report_num(&rp, "logins_per_s", rate);
	report_num(&rp, "p50_ms", hist_quantile_us(h, 0.5) / 1000.0);
	report_num(&rp, "p99_ms", hist_quantile_us(h, 0.99) / 1000.0);
	report_common(&rp, &r, &m0, &m1);
	report_close(&rp);

	fprintf(stderr, "login: %llu logins (%llu failed) in %.2f s = %.0f logins/s; "
			"login time p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		(unsigned long long)logins, (unsigned long long)failed, secs, rate,
		hist_quantile_us(h, 0.5) / 1000.0, hist_quantile_us(h, 0.99) / 1000.0,
		(double)hist_max_us(h) / 1000.0);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m1);
	free(h);
	run_free(&r);
	free(lws);
	return 0;
}

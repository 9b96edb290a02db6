/* idle: K clients log in (C at a time) and stay connected, silent, for the
 * hold time; the driver measures the server's memory meanwhile. "ready" on
 * stderr says every login has finished. With --sm each client enables
 * stream management with resumption (XEP-0198) before its roster get, so
 * the server's memory per idle client can be compared with and without
 * it; a server without it fails the logins as unsupported (exit 3). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "conn.h"
#include "scenario.h"

enum { CMD_IDLE_START = CMD_SCENARIO };

struct idle_worker {
	unsigned total;    /* clients of this worker */
	unsigned next;     /* how many it has opened */
	unsigned inflight; /* logins in progress */
	unsigned conc;     /* its share of --concurrency */
	struct conn_carry *carry; /* --sm: one per client */
};

static void idle_fill(struct worker *w);

static void idle_on_online(struct conn *c)
{
	struct idle_worker *iw = c->w->scen;
	iw->inflight--;
	idle_fill(c->w);
}

static void idle_on_closed(struct conn *c)
{
	struct idle_worker *iw = c->w->scen;
	if (!c->was_online) {
		iw->inflight--;
		idle_fill(c->w);
	}
}

static const struct conn_ops idle_ops = {
	.online = idle_on_online,
	.closed = idle_on_closed,
};

static void idle_fill(struct worker *w)
{
	struct idle_worker *iw = w->scen;
	const struct run *r = w->run;
	if (w->exiting)
		return;
	while (iw->inflight < iw->conc && iw->next < iw->total) {
		unsigned g = w->id + r->nw * iw->next++;
		iw->inflight++;
		struct conn *c = conn_open(w, r->o->first_user + g, &idle_ops, NULL);
		if (c && iw->carry) {
			iw->carry[iw->next - 1].sm_enable = true;
			c->carry = &iw->carry[iw->next - 1];
		}
	}
}

static void idle_command(struct worker *w, int cmd)
{
	if (cmd == CMD_IDLE_START)
		idle_fill(w);
}

static const struct scenario_hooks idle_hooks = { .command = idle_command };

int idle_run(const struct opts *o)
{
	struct run r;
	struct cpu_mark m0, m1, m2;
	if (run_start(&r, o, &idle_hooks, NULL) < 0) {
		run_free(&r);
		return 1;
	}
	struct idle_worker *iws = calloc(r.nw, sizeof *iws);
	for (unsigned i = 0; i < r.nw; i++) {
		iws[i].total = run_share(&r, o->clients, i);
		iws[i].conc = run_share(&r, o->concurrency, i);
		if (iws[i].conc == 0)
			iws[i].conc = 1;
		if (o->sm)
			iws[i].carry = calloc(iws[i].total ? iws[i].total : 1, sizeof *iws[i].carry);
		r.w[i]->scen = &iws[i];
	}
	cpu_mark(&m0, o);
	run_command(&r, CMD_IDLE_START);
	scenario_wait_logins(&r, 0, o->clients);
	cpu_mark(&m1, o);
	double login_s = m1.wall - m0.wall;
	uint64_t logged_in = run_sum(&r, offsetof(struct counters, logins));
	uint64_t failed = run_sum(&r, offsetof(struct counters, login_failed));
	uint64_t unsupported = run_sum(&r, offsetof(struct counters, fail[FAIL_UNSUPPORTED]));
	fprintf(stderr, "ready logged_in=%llu failed=%llu in %.2f s\n", (unsigned long long)logged_in,
		(unsigned long long)failed, login_s);
	fflush(stderr);
	double hold_start = run_elapsed(&r);
	if (!r.interrupted && !r.capped)
		run_wait(&r, o->hold);
	double held = run_elapsed(&r) - hold_start;
	uint64_t online_end = run_sum(&r, offsetof(struct counters, online));
	cpu_mark(&m2, o);
	run_stop(&r);

	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "idle");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_u64(&rp, "clients", o->clients);
	report_num(&rp, "hold_s", o->hold);
	report_bool(&rp, "sm", o->sm);
	report_end(&rp, '}');
	report_bool(&rp, "supported", unsupported == 0);
	report_u64(&rp, "logged_in", logged_in);
	report_u64(&rp, "login_failed", failed);
	report_num(&rp, "login_s", login_s);
	report_num(&rp, "logins_per_s", login_s > 0 ? (double)logged_in / login_s : 0);
	report_num(&rp, "held_s", held);
	report_u64(&rp, "online_at_end", online_end);
	report_num(&rp, "hold_cpu_cores", cpu_cores(&m1, &m2));
	report_common(&rp, &r, &m0, &m2);
	report_close(&rp);

	fprintf(stderr, "idle: %llu of %u clients logged in in %.2f s (%.0f/s), %llu failed; "
			"held %.1f s, %llu still online\n",
		(unsigned long long)logged_in, o->clients, login_s,
		login_s > 0 ? (double)logged_in / login_s : 0, (unsigned long long)failed, held,
		(unsigned long long)online_end);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m2);
	run_free(&r);
	for (unsigned i = 0; i < r.nw; i++) {
		for (unsigned j = 0; iws[i].carry && j < iws[i].total; j++)
			conn_carry_clear(&iws[i].carry[j]);
		free(iws[i].carry);
	}
	free(iws);
	return unsupported ? 3 : 0;
}

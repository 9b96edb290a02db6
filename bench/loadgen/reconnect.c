/* reconnect: K clients log in (--concurrency at a time); then all of them
 * lose their connections at once, each with a TCP reset as when a phone's
 * network goes (no </stream:stream>, no TLS close_notify), and come back,
 * at most --reconnect-concurrency at a time, the way --mode says:
 *
 *   full    full TLS handshake, SASL (SCRAM-SHA-1, cached keys), a new
 *           resource, roster and presence: what a client without stream
 *           management does;
 *   resume  TLS session resumption (the ticket of its first connection),
 *           SASL, then XEP-0198 <resume previd h/> of the session enabled
 *           at the first login (<enable resume='true'/>);
 *   fast    TLS session resumption, then SASL2 (XEP-0388) with the FAST
 *           token (XEP-0484, HT-SHA-256-NONE) obtained at the first login
 *           (<request-token/>) and SM <resume/> inline, with Bind 2
 *           (XEP-0386) enabling SM as the fallback when the resume fails;
 *           against a server with SASL2 and FAST but no SM, FAST and Bind 2
 *           make a new session every time (roster and presence again).
 *
 * A reconnect's latency runs from its connect to online (the roster
 * result, or <resumed/>); "all back" runs from the cut to the last client
 * online. Server CPU (--server-pid) is measured over the reconnect phase.
 * A server lacking what the mode needs fails the first logins with
 * FAIL_UNSUPPORTED; the run then reports supported=false and exits 3. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "conn.h"
#include "scenario.h"

#define EXIT_UNSUPPORTED 3

enum { CMD_RC_LOGIN = CMD_SCENARIO, CMD_RC_CUT };

struct rc_client {
	struct conn_carry carry;
	struct conn *c; /* its live connection, or NULL */
	unsigned user;
};

struct rc_worker {
	struct rc_client *cl;
	unsigned n;
	unsigned next;        /* next client to connect in this phase */
	unsigned inflight;
	unsigned conc;
	bool reconnecting;    /* after the cut */
	_Atomic uint64_t t_cut;  /* uv_hrtime() of this worker's cut */
	_Atomic uint64_t t_last; /* uv_hrtime() of its last reconnect online */
	_Atomic uint64_t back, failed, tls_resumed, fast_used, sm_resumed, sm_rebound;
	struct hist rc_us;    /* connect to online, per reconnect */
	struct hist cut_us;   /* cut to online, per reconnect */
};

static void rc_fill(struct worker *w);

static void rc_uuid(char out[37])
{
	unsigned char b[16];
	RAND_bytes(b, sizeof b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

static void rc_on_online(struct conn *c)
{
	struct rc_worker *rw = c->w->scen;
	rw->inflight--;
	if (rw->reconnecting) {
		const struct conn_carry *k = c->carry;
		uint64_t t_cut = atomic_load_explicit(&rw->t_cut, memory_order_relaxed);
		hist_add(&rw->rc_us, (c->t_online - c->t_start) / 1000);
		hist_add(&rw->cut_us, (c->t_online - t_cut) / 1000);
		worker_count(&rw->back, 1);
		worker_count(&rw->tls_resumed, k->tls_resumed);
		worker_count(&rw->fast_used, k->fast_used);
		worker_count(&rw->sm_resumed, k->sm_resumed);
		worker_count(&rw->sm_rebound, k->sm_rebound);
		atomic_store_explicit(&rw->t_last, c->t_online, memory_order_relaxed);
	}
	rc_fill(c->w);
}

static void rc_on_closed(struct conn *c)
{
	struct rc_worker *rw = c->w->scen;
	struct rc_client *cl = c->data;
	if (cl->c == c)
		cl->c = NULL;
	/* Cut by us, or lost after it was online: not a login in flight. */
	if (c->was_online)
		return;
	rw->inflight--;
	if (rw->reconnecting)
		worker_count(&rw->failed, 1);
	rc_fill(c->w);
}

static const struct conn_ops rc_ops = {
	.online = rc_on_online,
	.closed = rc_on_closed,
};

/* What the next connection of cl does, by mode and phase. */
static void rc_prepare(const struct opts *o, struct conn_carry *k, bool reconnecting)
{
	k->sm_enable = o->mode == MODE_RESUME;
	k->sasl2 = o->mode == MODE_FAST;
	k->resume = reconnecting && o->mode != MODE_FULL;
	k->offer_tls = reconnecting && (o->mode != MODE_FULL || o->tls_resume);
	k->tls_resumed = k->fast_used = k->sm_resumed = k->sm_rebound = false;
}

static void rc_fill(struct worker *w)
{
	struct rc_worker *rw = w->scen;
	const struct opts *o = w->run->o;
	if (w->exiting)
		return;
	while (rw->inflight < rw->conc && rw->next < rw->n) {
		struct rc_client *cl = &rw->cl[rw->next++];
		rc_prepare(o, &cl->carry, rw->reconnecting);
		rw->inflight++;
		struct conn *c = conn_open(w, cl->user, &rc_ops, cl);
		if (!c) {
			rw->inflight--;
			continue;
		}
		/* Before any callback: the connect completes on a later turn. */
		c->carry = &cl->carry;
		cl->c = c;
	}
}

/* Every connection of this worker goes at once, then they come back. */
static void rc_cut(struct worker *w)
{
	struct rc_worker *rw = w->scen;
	rw->reconnecting = true;
	atomic_store_explicit(&rw->t_cut, uv_hrtime(), memory_order_relaxed);
	for (unsigned i = 0; i < rw->n; i++) {
		struct conn *c = rw->cl[i].c;
		rw->cl[i].c = NULL;
		if (c)
			conn_cut(c);
	}
	rw->next = 0;
	rw->inflight = 0;
	rc_fill(w);
}

static void rc_command(struct worker *w, int cmd)
{
	if (cmd == CMD_RC_LOGIN)
		rc_fill(w);
	else if (cmd == CMD_RC_CUT)
		rc_cut(w);
}

static const struct scenario_hooks rc_hooks = { .command = rc_command };

static const char *rc_mode_name(enum opts_mode m)
{
	return m == MODE_FAST ? "fast" : m == MODE_RESUME ? "resume" : "full";
}

static uint64_t rc_sum(struct rc_worker *rws, unsigned nw, size_t field)
{
	uint64_t t = 0;
	for (unsigned i = 0; i < nw; i++)
		t += atomic_load_explicit((_Atomic uint64_t *)((char *)&rws[i] + field),
					  memory_order_relaxed);
	return t;
}

int reconnect_run(const struct opts *o)
{
	struct run r;
	struct cpu_mark m0, m1, m2, m3;
	if (run_start(&r, o, &rc_hooks, NULL) < 0) {
		run_free(&r);
		return 1;
	}
	struct rc_worker *rws = calloc(r.nw, sizeof *rws);
	for (unsigned i = 0; i < r.nw; i++) {
		struct rc_worker *rw = &rws[i];
		rw->n = run_share(&r, o->clients, i);
		rw->cl = calloc(rw->n ? rw->n : 1, sizeof *rw->cl);
		rw->conc = run_share(&r, o->concurrency, i);
		if (rw->conc == 0)
			rw->conc = 1;
		for (unsigned j = 0; j < rw->n; j++) {
			rw->cl[j].user = o->first_user + i + r.nw * j;
			rc_uuid(rw->cl[j].carry.ua_id);
		}
		r.w[i]->scen = rw;
	}

	/* The first logins (unmeasured beyond their count and time). */
	cpu_mark(&m0, o);
	run_command(&r, CMD_RC_LOGIN);
	scenario_wait_logins(&r, 0, o->clients);
	cpu_mark(&m1, o);
	uint64_t logged_in = run_sum(&r, offsetof(struct counters, logins));
	uint64_t login_failed = run_sum(&r, offsetof(struct counters, login_failed));
	uint64_t unsupported = run_sum(&r, offsetof(struct counters, fail[FAIL_UNSUPPORTED]));
	bool supported = unsupported == 0;
	fprintf(stderr, "reconnect (%s): %llu of %u logged in in %.2f s, %llu failed\n",
		rc_mode_name(o->mode), (unsigned long long)logged_in, o->clients, m1.wall - m0.wall,
		(unsigned long long)login_failed);

	uint64_t base_done = scenario_logins_done(&r);
	bool measured = false;
	if (supported && logged_in > 0 && !r.interrupted && !r.capped) {
		/* Let the server finish what logins set off (presence, acks). */
		run_wait(&r, 1.0);
		for (unsigned i = 0; i < r.nw; i++) {
			rws[i].conc = run_share(&r, o->reconnect_concurrency, i);
			if (rws[i].conc == 0)
				rws[i].conc = 1;
		}
		base_done = scenario_logins_done(&r);
		cpu_mark(&m2, o);
		run_command(&r, CMD_RC_CUT);
		scenario_wait_logins(&r, base_done, o->clients);
		cpu_mark(&m3, o);
		measured = true;
	} else {
		m2 = m1;
		m3 = m1;
	}
	uint64_t t_cut = 0, t_last = 0;
	for (unsigned i = 0; i < r.nw; i++) {
		uint64_t c = atomic_load_explicit(&rws[i].t_cut, memory_order_relaxed);
		uint64_t l = atomic_load_explicit(&rws[i].t_last, memory_order_relaxed);
		if (c && (!t_cut || c < t_cut))
			t_cut = c;
		if (l > t_last)
			t_last = l;
	}
	run_stop(&r);

	uint64_t back = rc_sum(rws, r.nw, offsetof(struct rc_worker, back));
	uint64_t failed = rc_sum(rws, r.nw, offsetof(struct rc_worker, failed));
	double all_back_s = measured && t_last > t_cut ? (double)(t_last - t_cut) / 1e9 : 0;
	double rate = all_back_s > 0 ? (double)back / all_back_s : 0;
	double server_cpu = m3.server >= 0 && m2.server >= 0 ? m3.server - m2.server : -1;
	struct hist *rc = calloc(1, sizeof *rc), *cut = calloc(1, sizeof *cut);
	for (unsigned i = 0; i < r.nw; i++) {
		hist_merge(rc, &rws[i].rc_us);
		hist_merge(cut, &rws[i].cut_us);
	}

	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "reconnect");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_str(&rp, "mode", rc_mode_name(o->mode));
	report_u64(&rp, "clients", o->clients);
	report_u64(&rp, "reconnect_concurrency", o->reconnect_concurrency);
	report_end(&rp, '}');
	report_bool(&rp, "supported", supported);
	report_u64(&rp, "logged_in", logged_in);
	report_u64(&rp, "login_failed", login_failed);
	report_num(&rp, "login_s", m1.wall - m0.wall);
	report_u64(&rp, "reconnects", back);
	report_u64(&rp, "reconnect_failed", failed);
	report_num(&rp, "all_back_s", all_back_s);
	report_num(&rp, "reconnects_per_s", rate);
	report_num(&rp, "p50_ms", hist_quantile_us(rc, 0.5) / 1000.0);
	report_num(&rp, "p99_ms", hist_quantile_us(rc, 0.99) / 1000.0);
	report_hist_ms(&rp, "reconnect_ms", rc);
	report_hist_ms(&rp, "cut_to_online_ms", cut);
	report_u64(&rp, "tls_resumed", rc_sum(rws, r.nw, offsetof(struct rc_worker, tls_resumed)));
	report_u64(&rp, "fast_used", rc_sum(rws, r.nw, offsetof(struct rc_worker, fast_used)));
	report_u64(&rp, "sm_resumed", rc_sum(rws, r.nw, offsetof(struct rc_worker, sm_resumed)));
	report_u64(&rp, "sm_rebound", rc_sum(rws, r.nw, offsetof(struct rc_worker, sm_rebound)));
	report_num(&rp, "reconnect_wall_s", m3.wall - m2.wall);
	report_num(&rp, "reconnect_generator_cpu_cores", cpu_cores(&m2, &m3));
	if (server_cpu >= 0) {
		report_num(&rp, "reconnect_server_cpu_s", server_cpu);
		report_num(&rp, "server_cpu_us_per_reconnect", back ? server_cpu * 1e6 / (double)back : 0);
		report_num(&rp, "reconnect_server_cpu_cores", cpu_server_cores(&m2, &m3));
	}
	report_common(&rp, &r, &m0, &m3);
	report_close(&rp);

	if (measured)
		fprintf(stderr,
			"reconnect (%s): %llu back (%llu failed) in %.2f s = %.0f/s; latency p50 %.1f ms, "
			"p99 %.1f ms; TLS resumed %llu, FAST %llu, SM resumed %llu, rebound %llu",
			rc_mode_name(o->mode), (unsigned long long)back, (unsigned long long)failed,
			all_back_s, rate, hist_quantile_us(rc, 0.5) / 1000.0,
			hist_quantile_us(rc, 0.99) / 1000.0,
			(unsigned long long)rc_sum(rws, r.nw, offsetof(struct rc_worker, tls_resumed)),
			(unsigned long long)rc_sum(rws, r.nw, offsetof(struct rc_worker, fast_used)),
			(unsigned long long)rc_sum(rws, r.nw, offsetof(struct rc_worker, sm_resumed)),
			(unsigned long long)rc_sum(rws, r.nw, offsetof(struct rc_worker, sm_rebound)));
	if (measured && server_cpu >= 0 && back)
		fprintf(stderr, "; server CPU %.0f us per reconnect", server_cpu * 1e6 / (double)back);
	if (measured)
		fputc('\n', stderr);
	if (!supported)
		fprintf(stderr, "reconnect (%s): the server lacks what this mode needs\n",
			rc_mode_name(o->mode));
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m3);
	for (unsigned i = 0; i < r.nw; i++) {
		for (unsigned j = 0; j < rws[i].n; j++)
			conn_carry_clear(&rws[i].cl[j].carry);
		free(rws[i].cl);
	}
	free(rc);
	free(cut);
	run_free(&r);
	free(rws);
	return supported ? 0 : EXIT_UNSUPPORTED;
}

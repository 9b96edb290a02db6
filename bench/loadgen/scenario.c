#include "scenario.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

void scenario_progress(struct run *r, const char *fmt, ...)
{
	double now = run_elapsed(r);
	if (r->o->quiet || now - r->last_progress < 1.0)
		return;
	r->last_progress = now;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%6.1fs] ", now);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

uint64_t scenario_logins_done(struct run *r)
{
	return run_sum(r, offsetof(struct counters, logins)) +
	       run_sum(r, offsetof(struct counters, login_failed));
}

bool scenario_wait_logins(struct run *r, uint64_t base_done, uint64_t expected)
{
	uint64_t last = 0;
	double t_change = run_elapsed(r);
	for (;;) {
		uint64_t done = scenario_logins_done(r) - base_done;
		if (done >= expected)
			return true;
		/* Every connection ends within --login-timeout; no progress for
		 * longer means none is left to finish. */
		if (done != last) {
			last = done;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change > r->o->login_timeout + 5) {
			fprintf(stderr, "natter-load: logins stalled at %llu of %llu\n",
				(unsigned long long)done, (unsigned long long)expected);
			return false;
		}
		scenario_progress(r, "logging in: %llu of %llu done, %llu online, %llu failed",
				  (unsigned long long)done, (unsigned long long)expected,
				  (unsigned long long)run_sum(r, offsetof(struct counters, online)),
				  (unsigned long long)run_sum(r, offsetof(struct counters, login_failed)));
		if (!run_wait(r, 0.02))
			return false;
	}
}

void scenario_params(struct report *rp, const struct opts *o)
{
	report_str(rp, "host", o->host);
	report_u64(rp, "port", (uint64_t)o->port);
	report_str(rp, "domain", o->domain);
	report_bool(rp, "direct_tls", o->direct_tls);
	report_bool(rp, "tls_resume", o->tls_resume);
	report_str(rp, "mech", o->mech == MECH_PLAIN ? "PLAIN" : "SCRAM-SHA-1");
	report_u64(rp, "threads", o->threads);
	report_u64(rp, "concurrency", o->concurrency);
	report_u64(rp, "src_addresses", o->src_count);
	report_num(rp, "duration_cap_s", o->duration);
}

void scenario_step_params(struct report *rp, const struct opts *o)
{
	report_num(rp, "step_seconds", o->step_seconds);
	report_u64(rp, "body_size", o->body_size);
	report_arr(rp, "rates");
	for (unsigned i = 0; i < o->nrates; i++)
		report_u64(rp, NULL, o->rates[i]);
	report_end(rp, ']');
}

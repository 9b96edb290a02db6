#include "report.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "sasl.h"

static void report_sep(struct report *rp, const char *key)
{
	if (rp->comma[rp->depth])
		fputc(',', rp->f);
	rp->comma[rp->depth] = true;
	if (key)
		fprintf(rp->f, "\"%s\":", key);
}

void report_open(struct report *rp, FILE *f)
{
	memset(rp, 0, sizeof *rp);
	rp->f = f;
	fputc('{', f);
}

void report_close(struct report *rp)
{
	fputs("}\n", rp->f);
	fflush(rp->f);
}

static void report_push(struct report *rp, const char *key, char opener)
{
	report_sep(rp, key);
	fputc(opener, rp->f);
	if (rp->depth + 1 < REPORT_MAX_DEPTH)
		rp->depth++;
	rp->comma[rp->depth] = false;
}

void report_obj(struct report *rp, const char *key)
{
	report_push(rp, key, '{');
}

void report_arr(struct report *rp, const char *key)
{
	report_push(rp, key, '[');
}

void report_end(struct report *rp, char closer)
{
	fputc(closer, rp->f);
	if (rp->depth > 0)
		rp->depth--;
}

void report_u64(struct report *rp, const char *key, uint64_t v)
{
	report_sep(rp, key);
	fprintf(rp->f, "%llu", (unsigned long long)v);
}

void report_num(struct report *rp, const char *key, double v)
{
	report_sep(rp, key);
	if (!isfinite(v))
		fputs("null", rp->f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(rp->f, "%.0f", v);
	else
		fprintf(rp->f, "%.3f", v);
}

void report_str(struct report *rp, const char *key, const char *s)
{
	report_sep(rp, key);
	if (!s) {
		fputs("null", rp->f);
		return;
	}
	fputc('"', rp->f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(rp->f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(rp->f, "\\u%04x", *p);
		else
			fputc(*p, rp->f);
	}
	fputc('"', rp->f);
}

void report_bool(struct report *rp, const char *key, bool v)
{
	report_sep(rp, key);
	fputs(v ? "true" : "false", rp->f);
}

/* utime + stime of one process, in seconds; -1 if it is gone. */
static double cpu_of_pid(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields are
	 * counted from the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long ut = 0, st = 0;
	char *tok = strtok(p + 1, " ");
	for (int field = 3; tok; field++, tok = strtok(NULL, " ")) {
		if (field == 14)
			ut = strtoull(tok, NULL, 10);
		if (field == 15) {
			st = strtoull(tok, NULL, 10);
			break;
		}
	}
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

void cpu_mark(struct cpu_mark *m, const struct opts *o)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	m->wall = (double)uv_hrtime() / 1e9;
	m->user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	m->sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	m->max_rss_kb = ru.ru_maxrss;
	m->server = -1;
	for (unsigned i = 0; i < o->nserver_pids; i++) {
		double s = cpu_of_pid(o->server_pids[i]);
		if (s >= 0)
			m->server = (m->server < 0 ? 0 : m->server) + s;
	}
}

double cpu_cores(const struct cpu_mark *a, const struct cpu_mark *b)
{
	double wall = b->wall - a->wall;
	return wall > 0 ? (b->user + b->sys - a->user - a->sys) / wall : 0;
}

double cpu_server_cores(const struct cpu_mark *a, const struct cpu_mark *b)
{
	double wall = b->wall - a->wall;
	if (a->server < 0 || b->server < 0 || wall <= 0)
		return -1;
	return (b->server - a->server) / wall;
}

void report_hist_ms(struct report *rp, const char *key, const struct hist *h)
{
	report_obj(rp, key);
	report_u64(rp, "count", hist_count(h));
	report_num(rp, "mean", hist_mean_us(h) / 1000.0);
	report_num(rp, "p50", hist_quantile_us(h, 0.50) / 1000.0);
	report_num(rp, "p90", hist_quantile_us(h, 0.90) / 1000.0);
	report_num(rp, "p99", hist_quantile_us(h, 0.99) / 1000.0);
	report_num(rp, "p999", hist_quantile_us(h, 0.999) / 1000.0);
	report_num(rp, "max", (double)hist_max_us(h) / 1000.0);
	report_end(rp, '}');
}

static const char *const fail_names[FAIL_KINDS] = {
	[FAIL_CONNECT] = "connect",
	[FAIL_TLS] = "tls",
	[FAIL_AUTH] = "auth",
	[FAIL_STREAM] = "stream_error",
	[FAIL_TIMEOUT] = "timeout",
	[FAIL_PROTOCOL] = "protocol",
	[FAIL_CLOSED] = "closed_by_server",
	[FAIL_UNSUPPORTED] = "unsupported",
};

void report_common(struct report *rp, struct run *r, const struct cpu_mark *start,
		   const struct cpu_mark *end)
{
	double wall = end->wall - start->wall;
	report_obj(rp, "generator");
	report_u64(rp, "threads", r->nw);
	report_num(rp, "wall_s", wall);
	report_num(rp, "cpu_user_s", end->user - start->user);
	report_num(rp, "cpu_sys_s", end->sys - start->sys);
	report_num(rp, "cpu_cores", cpu_cores(start, end));
	report_num(rp, "cpu_percent_of_threads",
		   100.0 * cpu_cores(start, end) / (r->nw ? r->nw : 1));
	report_u64(rp, "max_rss_kb", (uint64_t)end->max_rss_kb);
	report_u64(rp, "pbkdf2_runs", sasl_cache_misses(r->cache));
	report_bool(rp, "interrupted", r->interrupted);
	report_bool(rp, "duration_cap_hit", r->capped);
	report_end(rp, '}');
	if (end->server >= 0) {
		report_obj(rp, "server");
		report_num(rp, "cpu_s", end->server - start->server);
		report_num(rp, "cpu_cores", cpu_server_cores(start, end));
		report_end(rp, '}');
	}
	report_obj(rp, "connections");
	report_u64(rp, "opened", run_sum(r, offsetof(struct counters, started)));
	report_u64(rp, "logins", run_sum(r, offsetof(struct counters, logins)));
	report_u64(rp, "login_failed", run_sum(r, offsetof(struct counters, login_failed)));
	report_u64(rp, "tls_resumed", run_sum(r, offsetof(struct counters, tls_resumed)));
	report_u64(rp, "pings_answered", run_sum(r, offsetof(struct counters, pings)));
	report_u64(rp, "failed", run_failures(r));
	report_end(rp, '}');
	report_obj(rp, "errors");
	for (int k = 0; k < FAIL_KINDS; k++)
		report_u64(rp, fail_names[k],
			   run_sum(r, offsetof(struct counters, fail) + (size_t)k * sizeof(_Atomic uint64_t)));
	report_str(rp, "first", run_first_error(r));
	report_end(rp, '}');
	struct hist *h = calloc(1, sizeof *h);
	if (h) {
		run_login_hist(r, h);
		report_hist_ms(rp, "login_ms", h);
		free(h);
	}
}

void report_cpu_line(const struct cpu_mark *start, const struct cpu_mark *end)
{
	fprintf(stderr, "generator CPU: %.2f s user + %.2f s sys over %.2f s = %.0f%% of a core",
		end->user - start->user, end->sys - start->sys, end->wall - start->wall,
		100.0 * cpu_cores(start, end));
	double s = cpu_server_cores(start, end);
	if (s >= 0)
		fprintf(stderr, "; server CPU %.0f%% of a core", 100.0 * s);
	fputc('\n', stderr);
}

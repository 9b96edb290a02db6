/* Results: one JSON object on stdout per run (a tiny writer, keys in the
 * order written), CPU accounting of the generator (getrusage) and, when
 * --server-pid is given, of the server (/proc/PID/stat). */
#ifndef LOADGEN_REPORT_H
#define LOADGEN_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "hist.h"
#include "worker.h"

#define REPORT_MAX_DEPTH 16

struct report {
	FILE *f;
	int depth;
	bool comma[REPORT_MAX_DEPTH];
};

/* A point in time with the CPU seconds used so far. */
struct cpu_mark {
	double wall;       /* monotonic seconds */
	double user, sys;  /* this process */
	double server;     /* the --server-pid processes, -1 if none given */
	long max_rss_kb;   /* this process's peak */
};

void report_open(struct report *rp, FILE *f);
void report_close(struct report *rp);
/* key is NULL inside arrays. */
void report_obj(struct report *rp, const char *key);
void report_arr(struct report *rp, const char *key);
void report_end(struct report *rp, char closer);
void report_u64(struct report *rp, const char *key, uint64_t v);
void report_num(struct report *rp, const char *key, double v);
void report_str(struct report *rp, const char *key, const char *s);
void report_bool(struct report *rp, const char *key, bool v);

void cpu_mark(struct cpu_mark *m, const struct opts *o);
/* Generator CPU between two marks as a fraction of one core. */
double cpu_cores(const struct cpu_mark *a, const struct cpu_mark *b);
/* Server CPU between two marks as a fraction of one core; -1 unknown. */
double cpu_server_cores(const struct cpu_mark *a, const struct cpu_mark *b);

/* The parts every scenario reports: "generator" (threads, CPU, peak RSS,
 * PBKDF2 runs), "connections" and "errors" with the first message, and the
 * login-time histogram as "login_ms". */
void report_common(struct report *rp, struct run *r, const struct cpu_mark *start,
		   const struct cpu_mark *end);
/* {"count","mean","p50","p90","p99","p999","max"} in milliseconds. */
void report_hist_ms(struct report *rp, const char *key, const struct hist *h);
/* One line on stderr: CPU of the generator (and server) over the run. */
void report_cpu_line(const struct cpu_mark *start, const struct cpu_mark *end);

#endif

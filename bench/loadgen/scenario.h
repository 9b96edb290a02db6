/* The scenarios. Each runs on the main thread as the coordinator of a run
 * (worker.h), prints one JSON object on stdout and a summary on stderr,
 * and returns the process exit status: 0 when the run completed (even
 * with failed connections: the JSON says how many), 1 when it could not
 * run at all. */
#ifndef LOADGEN_SCENARIO_H
#define LOADGEN_SCENARIO_H

#include "opts.h"
#include "report.h"
#include "worker.h"

int idle_run(const struct opts *o);
int login_run(const struct opts *o);
int chat_run(const struct opts *o);
int muc_run(const struct opts *o);
int presence_run(const struct opts *o);
int mam_run(const struct opts *o);
int pep_run(const struct opts *o);
int reconnect_run(const struct opts *o);

/* Shared by the scenarios. */

/* Logs progress on stderr at most once a second unless --quiet. */
void scenario_progress(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Waits until every worker's logins are finished (online or failed) for
 * `expected` connections in total; false if interrupted or capped. */
bool scenario_wait_logins(struct run *r, uint64_t base_done, uint64_t expected);
/* Logins finished so far (online or failed), all workers. */
uint64_t scenario_logins_done(struct run *r);
/* Writes the options every scenario shares into "params". */
void scenario_params(struct report *rp, const struct opts *o);
/* Writes the stepped scenarios' options (step_seconds, body_size, rates)
 * into "params". */
void scenario_step_params(struct report *rp, const struct opts *o);

#endif

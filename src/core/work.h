/* Blocking work off the event loops (DESIGN.md: password hashing, ...):
 * libuv's thread pool runs work(arg); done(loop, arg) then runs on the
 * loop that submitted it. done always runs, also while the loop stops
 * (loop_stopping(l) is then true), so it can release arg. */
#ifndef NATTER_WORK_H
#define NATTER_WORK_H

struct loop;

/* Returns 0, or -1 if the work could not be queued (done is not called). */
int work_submit(struct loop *l, void (*work)(void *arg), void (*done)(struct loop *l, void *arg),
		void *arg);

#endif

/* The storage thread (DESIGN.md, "Storage off the loops"): per-message
 * writes (the archive, offline messages, room history) and the archive's
 * reads run here, never on an event loop; so do the loops' map writes
 * (pending.h), as jobs of their own.
 *
 * One thread with its own storage handle takes the jobs in the order they
 * were submitted, runs as many as are waiting (up to STOREQ_BATCH) inside
 * one transaction (group commit; under load it waits a moment for a
 * fuller batch, see STOREQ_LINGER_US), commits, and only then reports each job
 * done on the loop that submitted it. A job is durable once its done
 * callback runs with rc >= 0: that is when a message counts as accepted.
 * Because jobs run in order, a read submitted after a write sees it. */
#ifndef NATTER_STOREQ_H
#define NATTER_STOREQ_H

#include <stdbool.h>
#include <stddef.h>

#include "storage/storage.h"

struct loop;
struct storeq;

/* Jobs taken into one transaction at most (about 70 ms of archive
 * writes: what a query arriving meanwhile may wait behind). */
#define STOREQ_BATCH 8192
/* Group commit under load: when jobs that no loop waits for (loop NULL:
 * archive writes) keep coming (the last commit ended less than
 * STOREQ_LINGER_US ago), the thread waits up to that long for
 * STOREQ_GROUP of them before it starts a transaction. An idle queue, or
 * one holding a job with a loop (a query, an iq held for durability),
 * runs at once; lingering adds at most this to a write's latency.
 * Measured (docs/performance.md, issue 12 run 3): with 2,000 chatting
 * accounts, 10 ms and 2,048 made commits of a few hundred rows, each
 * rewriting a leaf per owner, and the archive kept up with 25,000
 * msgs/s; 50 ms and 8,192 keep up with 30,000. */
#define STOREQ_GROUP 8192
#define STOREQ_LINGER_US 50000
/* Attempts to begin a batch's transaction while the store is locked. */
#define STOREQ_BEGIN_TRIES 12

/* Jobs queued (or running) at most, and the bytes they hold at most (as
 * their submitters counted them, each job's own size included);
 * storeq_submit waits for room beyond either (a loop that writes faster
 * than the store stops reading its clients meanwhile). A job bigger than
 * the byte bound goes in alone when the queue is empty.
 * The queue must absorb the thread's pauses: at 40,000 msgs/s (two
 * archive jobs each, about 450 bytes) a batch that ends with a
 * checkpoint held the thread for up to 0.5 s (it shares the cores with
 * the loops), 40,000 jobs; with room for 32,768 the loops waited for it
 * (up to 84 ms, p99 146 ms at 38,000 msgs/s; docs/performance.md, run
 * 11). Full of chat messages the queue holds about 55 MiB; of big
 * stanzas, the byte bound. */
#define STOREQ_MAX_PENDING 131072
#define STOREQ_MAX_BYTES (64u << 20)

struct storeq_job {
	/* Runs on the storage thread inside the batch's transaction; returns
	 * >= 0 or -1. It must not call begin/end (user_del takes a
	 * savepoint of the batch). */
	int (*run)(struct storage *st, const struct storage_driver *drv, void *arg);
	/* Runs on `loop` once the batch is committed, with run's result (-1
	 * for every job of a batch whose commit failed); the jobs of one
	 * batch for one loop come back together, in order. With no loop, or
	 * when that loop has stopped, it runs on another thread with l NULL:
	 * then it only releases arg (and may log). May be NULL (then arg is
	 * freed with free()). */
	void (*done)(struct loop *l, void *arg, int rc);
	struct loop *loop;  /* where done runs; NULL: on the storage thread */
	void *arg;
	size_t bytes;       /* held by arg, for STOREQ_MAX_BYTES (0: small) */
	int rc;             /* set by the storage thread */
	struct storeq_job *next;
};

/* Opens the thread's own handle with drv under data_dir and starts it.
 * Returns NULL and a message in err on failure. */
struct storeq *storeq_start(const struct storage_driver *drv, const char *data_dir, char *err,
			    size_t errlen);

/* Queues job (owned by the queue until done ran; job->arg by the caller's
 * callbacks). Safe from any thread except the storage thread's done
 * callbacks; waits while STOREQ_MAX_PENDING jobs are queued. */
void storeq_submit(struct storeq *q, struct storeq_job *job);

/* Convenience: allocates the job. */
void storeq_call(struct storeq *q, struct loop *l,
		 int (*run)(struct storage *st, const struct storage_driver *drv, void *arg),
		 void (*done)(struct loop *l, void *arg, int rc), void *arg);
/* The same for an arg that holds `bytes` (a stanza's copy). */
void storeq_call_sized(struct storeq *q, struct loop *l,
		       int (*run)(struct storage *st, const struct storage_driver *drv, void *arg),
		       void (*done)(struct loop *l, void *arg, int rc), void *arg, size_t bytes);

/* Whether some job submitted so far is not committed yet. A caller that
 * must answer only after everything before is durable queues behind them
 * (any job: they run in order) when this is true. */
bool storeq_busy(struct storeq *q);

/* Waits until every job submitted before the call has run and had its
 * done callback (those with a loop: posted to it). For rare operations
 * that must not overtake queued writes (deleting an account); not from
 * the storage thread. */
void storeq_flush(struct storeq *q);

/* The queue now (natterctl storage, tests). */
struct storeq_stats {
	size_t jobs;          /* waiting or running */
	size_t bytes;         /* what they hold, against STOREQ_MAX_BYTES */
	size_t waiting;       /* submitters waiting for room now */
	unsigned long long waits; /* submissions that had to wait, so far */
};
void storeq_stats(struct storeq *q, struct storeq_stats *out);

/* Runs what is queued, then stops the thread and closes its handle. Call
 * after the loops stopped (done callbacks then release only) and before
 * they are freed. NULL is fine. */
void storeq_stop(struct storeq *q);

#endif

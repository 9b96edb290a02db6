#include "storage/storeq.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"

struct storeq {
	const struct storage_driver *drv;
	struct storage *st;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t more;
	pthread_cond_t room;            /* signalled when a batch is taken */
	struct storeq_job *head, *tail; /* under lock */
	size_t pending;                 /* queued or in the running batch; under lock */
	size_t pending_bytes;           /* what they hold (storeq_cost); under lock */
	size_t waiting;                 /* submitters waiting for room; under lock */
	unsigned long long waits;       /* submissions that waited; under lock */
	uint64_t warned_ns;             /* when a wait was last logged; under lock */
	size_t queued;                  /* in the list, not taken yet; under lock */
	size_t awaited;                 /* of those, jobs with a loop waiting */
	bool lingering;                 /* the thread waits for a fuller batch */
	unsigned long long submitted;   /* jobs submitted so far (atomic) */
	unsigned long long committed;   /* jobs committed so far (atomic) */
	unsigned long long finished;    /* and handed back; under lock */
	size_t flushing;                /* storeq_flush callers waiting; under lock */
	bool stop;                      /* under lock */
};

/* A loop that waited for room is logged at most this often. */
#define STOREQ_WARN_EVERY_NS (60ull * 1000000000u)

/* What a job counts against STOREQ_MAX_BYTES. */
static size_t storeq_cost(const struct storeq_job *job)
{
	return sizeof *job + job->bytes;
}

/* On the job's loop: report and free the job. */
static void storeq_done_one(struct loop *l, struct storeq_job *job)
{
	if (job->done != NULL)
		job->done(l, job->arg, job->rc);
	else
		free(job->arg);
	free(job);
}

/* On a loop: the done callbacks of one batch's jobs for that loop, in
 * order (one wake-up per loop and batch, not per job). */
static void storeq_done_call(struct loop *l, void *arg)
{
	struct storeq_job *job = arg;
	while (job != NULL) {
		struct storeq_job *next = job->next;
		storeq_done_one(l, job);
		job = next;
	}
}

/* Hands the batch's jobs back: those without a loop are finished here,
 * the others go to their loops, one list per loop. */
static void storeq_finish(struct storeq_job *batch)
{
	struct {
		struct loop *loop;
		struct storeq_job *head, *tail;
	} per[8];
	int n = 0;
	while (batch != NULL) {
		struct storeq_job *job = batch;
		batch = batch->next;
		job->next = NULL;
		if (job->loop == NULL) {
			storeq_done_one(NULL, job);
			continue;
		}
		int i = 0;
		while (i < n && per[i].loop != job->loop)
			i++;
		if (i == n) {
			if (n == (int)(sizeof per / sizeof *per)) {
				/* More loops than slots: flush them all first. */
				for (int k = 0; k < n; k++)
					loop_call(per[k].loop, storeq_done_call, per[k].head);
				n = i = 0;
			}
			per[n].loop = job->loop;
			per[n].head = per[n].tail = NULL;
			n++;
		}
		if (per[i].tail)
			per[i].tail->next = job;
		else
			per[i].head = job;
		per[i].tail = job;
	}
	/* A stopped loop runs the call here with l NULL (loop_post). */
	for (int k = 0; k < n; k++)
		loop_call(per[k].loop, storeq_done_call, per[k].head);
}

/* Runs one batch in a transaction. A store locked by another process
 * (a backup, natterctl) is waited for, up to STOREQ_BEGIN_TRIES of the
 * driver's own waits (SQLite's busy timeout: 5 s); beyond, the jobs still
 * run, each committing alone. */
static void storeq_run_batch(struct storeq *q, struct storeq_job *batch)
{
	bool txn = false;
	for (int tries = 1; !txn && tries <= STOREQ_BEGIN_TRIES; tries++) {
		txn = q->drv->begin(q->st) == 0;
		if (!txn)
			log_warn("storage thread: cannot begin a transaction (%d of %d tries)",
				 tries, STOREQ_BEGIN_TRIES);
	}
	for (struct storeq_job *j = batch; j; j = j->next)
		j->rc = j->run(q->st, q->drv, j->arg);
	if (txn && q->drv->end(q->st, 1) != 0) {
		log_error("storage thread: a batch of writes could not be committed");
		for (struct storeq_job *j = batch; j; j = j->next)
			j->rc = -1;
	}
}

static uint64_t storeq_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under sustained load (the previous commit ended less than
 * STOREQ_LINGER_US ago) of jobs no loop waits for (archive writes), waits
 * up to that long for STOREQ_GROUP jobs, so that one commit covers many:
 * a commit rewrites every page the batch touched, and archive writes
 * touch one index leaf per owner. Idle, or when a loop waits for a job (a
 * query, a held iq or ack), jobs run at once. Called and returns with
 * q->lock held. */
static void storeq_linger(struct storeq *q, uint64_t last_commit)
{
	uint64_t now = storeq_now_ns();
	if (q->queued >= STOREQ_GROUP || q->awaited > 0 || q->flushing > 0 ||
	    now - last_commit > STOREQ_LINGER_US * 1000u)
		return;
	uint64_t until_ns = now + STOREQ_LINGER_US * 1000u;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += STOREQ_LINGER_US * 1000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	q->lingering = true;
	while (q->queued < STOREQ_GROUP && q->awaited == 0 && q->flushing == 0 && !q->stop &&
	       storeq_now_ns() < until_ns) {
		if (pthread_cond_timedwait(&q->more, &q->lock, &until) == ETIMEDOUT)
			break;
	}
	q->lingering = false;
}

static void *storeq_thread(void *arg)
{
	struct storeq *q = arg;
	uint64_t last_commit = 0;
	pthread_setname_np(pthread_self(), "natter-store");
	for (;;) {
		pthread_mutex_lock(&q->lock);
		while (q->head == NULL && !q->stop)
			pthread_cond_wait(&q->more, &q->lock);
		if (q->head == NULL) {
			pthread_mutex_unlock(&q->lock);
			return NULL;
		}
		storeq_linger(q, last_commit);
		struct storeq_job *batch = q->head, *last = batch;
		size_t n = 1;
		size_t awaited = batch->loop != NULL, bytes = storeq_cost(batch);
		while (last->next != NULL && n < STOREQ_BATCH) {
			last = last->next;
			n++;
			awaited += last->loop != NULL;
			bytes += storeq_cost(last);
		}
		q->awaited -= awaited;
		q->head = last->next;
		if (q->head == NULL)
			q->tail = NULL;
		last->next = NULL;
		q->queued -= n;
		pthread_mutex_unlock(&q->lock);

		storeq_run_batch(q, batch);
		last_commit = storeq_now_ns();
		__atomic_add_fetch(&q->committed, n, __ATOMIC_RELEASE);
		storeq_finish(batch);
		pthread_mutex_lock(&q->lock);
		q->pending -= n;
		q->pending_bytes -= bytes;
		q->finished += n;
		pthread_cond_broadcast(&q->room);
		pthread_mutex_unlock(&q->lock);
	}
}

struct storeq *storeq_start(const struct storage_driver *drv, const char *data_dir, char *err,
			    size_t errlen)
{
	struct storeq *q = xcalloc(1, sizeof *q);
	q->drv = drv;
	q->st = drv->open(data_dir, err, errlen);
	if (q->st == NULL) {
		free(q);
		return NULL;
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->more, NULL);
	pthread_cond_init(&q->room, NULL);
	if (pthread_create(&q->thread, NULL, storeq_thread, q) != 0) {
		snprintf(err, errlen, "cannot start the storage thread");
		drv->close(q->st);
		pthread_mutex_destroy(&q->lock);
		pthread_cond_destroy(&q->more);
		free(q);
		return NULL;
	}
	return q;
}

void storeq_submit(struct storeq *q, struct storeq_job *job)
{
	job->next = NULL;
	size_t cost = storeq_cost(job);
	pthread_mutex_lock(&q->lock);
	/* Backpressure: a loop that outruns the store waits here, and so
	 * stops reading its clients, rather than queueing without bound. */
	uint64_t waited_from = 0;
	size_t full_jobs = 0, full_bytes = 0;
	while ((q->pending >= STOREQ_MAX_PENDING ||
		(q->pending > 0 && q->pending_bytes + cost > STOREQ_MAX_BYTES)) &&
	       !q->stop) {
		if (waited_from == 0) {
			waited_from = storeq_now_ns();
			full_jobs = q->pending;
			full_bytes = q->pending_bytes;
			q->waits++;
		}
		q->waiting++;
		pthread_cond_wait(&q->room, &q->lock);
		q->waiting--;
	}
	/* An operator hears of it, once a minute at most (a full queue
	 * stalls a whole loop; natterctl storage counts every wait). */
	char warning[200] = "";
	if (waited_from != 0) {
		uint64_t now = storeq_now_ns();
		if (q->warned_ns == 0 || now - q->warned_ns >= STOREQ_WARN_EVERY_NS) {
			q->warned_ns = now;
			snprintf(warning, sizeof warning,
				 "storage: the queue was full (%zu jobs, %zu bytes); an event loop "
				 "waited %.1f ms for room (%llu waits so far)",
				 full_jobs, full_bytes, (double)(now - waited_from) / 1e6,
				 q->waits);
		}
	}
	if (q->tail)
		q->tail->next = job;
	else
		q->head = job;
	q->tail = job;
	q->pending++;
	q->pending_bytes += cost;
	q->queued++;
	q->awaited += job->loop != NULL;
	__atomic_add_fetch(&q->submitted, 1, __ATOMIC_RELEASE);
	/* A lingering thread wakes for a full group only (or its deadline),
	 * or for a job a loop waits on. */
	if (!q->lingering || q->queued >= STOREQ_GROUP || job->loop != NULL)
		pthread_cond_signal(&q->more);
	pthread_mutex_unlock(&q->lock);
	if (warning[0] != '\0')
		log_warn("%s", warning);
}

void storeq_call_sized(struct storeq *q, struct loop *l,
		       int (*run)(struct storage *st, const struct storage_driver *drv, void *arg),
		       void (*done)(struct loop *l, void *arg, int rc), void *arg, size_t bytes)
{
	struct storeq_job *job = xcalloc(1, sizeof *job);
	job->run = run;
	job->done = done;
	job->loop = l;
	job->arg = arg;
	job->bytes = bytes;
	storeq_submit(q, job);
}

void storeq_call(struct storeq *q, struct loop *l,
		 int (*run)(struct storage *st, const struct storage_driver *drv, void *arg),
		 void (*done)(struct loop *l, void *arg, int rc), void *arg)
{
	storeq_call_sized(q, l, run, done, arg, 0);
}

bool storeq_busy(struct storeq *q)
{
	return __atomic_load_n(&q->committed, __ATOMIC_ACQUIRE) <
	       __atomic_load_n(&q->submitted, __ATOMIC_ACQUIRE);
}

void storeq_flush(struct storeq *q)
{
	pthread_mutex_lock(&q->lock);
	unsigned long long target = __atomic_load_n(&q->submitted, __ATOMIC_ACQUIRE);
	q->flushing++;
	pthread_cond_signal(&q->more);
	while (q->finished < target && !q->stop)
		pthread_cond_wait(&q->room, &q->lock);
	q->flushing--;
	pthread_mutex_unlock(&q->lock);
}

void storeq_stats(struct storeq *q, struct storeq_stats *out)
{
	pthread_mutex_lock(&q->lock);
	out->jobs = q->pending;
	out->bytes = q->pending_bytes;
	out->waiting = q->waiting;
	out->waits = q->waits;
	pthread_mutex_unlock(&q->lock);
}

void storeq_stop(struct storeq *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_signal(&q->more);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thread, NULL);
	q->drv->close(q->st);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->more);
	pthread_cond_destroy(&q->room);
	free(q);
}

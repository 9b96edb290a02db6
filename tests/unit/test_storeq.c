/* Tests of src/storage/storeq.c's bounds: a submitter waits while the
 * queued jobs hold STOREQ_MAX_BYTES, the jobs still run in order, a wait
 * is logged (once a minute at most), and a job bigger than the bound
 * goes in alone rather than never. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "storage/storeq.h"
#include "store_files.h"

#define MAX_JOBS 16

struct fixture {
	char dir[64], data_dir[128];
	struct storeq *q;
	/* The gate: a job that holds the storage thread until opened. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started, open;
	/* The jobs that ran, in the order they ran. */
	int ran[MAX_JOBS];
	int n_ran;
	/* What the submitting thread has handed over so far. */
	int submitted;
	size_t each; /* bytes per job it submits */
	int count;   /* jobs it submits */
};

struct job {
	struct fixture *f;
	int tag;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[512];
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/natter-storeq-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->data_dir, sizeof f->data_dir, "%s/data", f->dir);
	f->q = storeq_start(storage_driver_find("sqlite"), f->data_dir, err, sizeof err);
	if (f->q == NULL)
		fail_msg("storeq_start: %s", err);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	storeq_stop(f->q);
	store_dir_remove(f->data_dir, f->dir);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	free(f);
	return 0;
}

static int job_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	(void)st;
	(void)drv;
	struct job *j = arg;
	struct fixture *f = j->f;
	pthread_mutex_lock(&f->lock);
	if (f->n_ran < MAX_JOBS)
		f->ran[f->n_ran++] = j->tag;
	if (j->tag == 0) { /* the gate */
		f->started = true;
		pthread_cond_broadcast(&f->cond);
		while (!f->open)
			pthread_cond_wait(&f->cond, &f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void submit(struct fixture *f, int tag, size_t bytes)
{
	struct job *j = malloc(sizeof *j);
	assert_non_null(j);
	j->f = f;
	j->tag = tag;
	storeq_call_sized(f->q, NULL, job_run, NULL, j, bytes);
}

/* Submits the gate and returns once it holds the storage thread. */
static void close_gate(struct fixture *f)
{
	pthread_mutex_lock(&f->lock);
	f->started = f->open = false;
	pthread_mutex_unlock(&f->lock);
	submit(f, 0, 0);
	pthread_mutex_lock(&f->lock);
	while (!f->started)
		pthread_cond_wait(&f->cond, &f->lock);
	pthread_mutex_unlock(&f->lock);
}

static void open_gate(struct fixture *f)
{
	pthread_mutex_lock(&f->lock);
	f->open = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

static void *submitter(void *arg)
{
	struct fixture *f = arg;
	for (int i = 1; i <= f->count; i++) {
		submit(f, i, f->each);
		__atomic_store_n(&f->submitted, i, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* Waits (up to 10 s) until a submitter waits for room. */
static void await_waiting(struct fixture *f)
{
	struct storeq_stats s;
	for (int i = 0; i < 10000; i++) {
		storeq_stats(f->q, &s);
		if (s.waiting == 1)
			return;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	fail_msg("no submitter waits for room (%zu jobs, %zu bytes queued)", s.jobs, s.bytes);
}

/* Counts the lines of the file at fd that contain what. */
static int count_lines(int fd, const char *what)
{
	char buf[8192];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	int count = 0;
	for (char *p = buf; (p = strstr(p, what)) != NULL; p++)
		count++;
	return count;
}

/* Four jobs of a quarter of the bound each behind a job that holds the
 * thread: three go in, the fourth waits until the first has run, and
 * the wait is logged; a second wait within the minute is counted, not
 * logged. */
static void test_bytes_bound_waits_for_room(void **state)
{
	struct fixture *f = *state;
	struct storeq_stats s;
	char path[160];
	snprintf(path, sizeof path, "%s/stderr", f->dir);
	int log_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int saved = dup(2);
	assert_true(log_fd >= 0 && saved >= 0);
	assert_int_equal(dup2(log_fd, 2), 2);
	for (int round = 1; round <= 2; round++) {
		f->n_ran = 0;
		__atomic_store_n(&f->submitted, 0, __ATOMIC_RELEASE);
		close_gate(f);
		f->each = STOREQ_MAX_BYTES / 4;
		f->count = 4;
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, submitter, f), 0);
		await_waiting(f);
		assert_int_equal(__atomic_load_n(&f->submitted, __ATOMIC_ACQUIRE), 3);
		storeq_stats(f->q, &s);
		assert_int_equal(s.jobs, 4);
		assert_true(s.bytes > 3 * f->each && s.bytes <= STOREQ_MAX_BYTES);
		open_gate(f);
		assert_int_equal(pthread_join(t, NULL), 0);
		storeq_flush(f->q);
		assert_int_equal(f->n_ran, 5);
		for (int i = 0; i < 5; i++)
			assert_int_equal(f->ran[i], i);
		storeq_stats(f->q, &s);
		assert_int_equal(s.jobs, 0);
		assert_int_equal(s.bytes, 0);
		assert_int_equal(s.waiting, 0);
		assert_int_equal(s.waits, (unsigned long long)round);
	}
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	assert_int_equal(count_lines(log_fd, "the queue was full"), 1);
	close(log_fd);
	unlink(path);
}

/* A job bigger than the bound waits for an empty queue, then goes in. */
static void test_big_job_goes_in_alone(void **state)
{
	struct fixture *f = *state;
	struct storeq_stats s;
	close_gate(f);
	f->each = 2 * (size_t)STOREQ_MAX_BYTES;
	f->count = 1;
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, submitter, f), 0);
	await_waiting(f);
	assert_int_equal(__atomic_load_n(&f->submitted, __ATOMIC_ACQUIRE), 0);
	open_gate(f);
	assert_int_equal(pthread_join(t, NULL), 0);
	storeq_flush(f->q);
	assert_int_equal(f->n_ran, 2);
	assert_int_equal(f->ran[1], 1);
	/* Into an empty queue it goes at once. */
	submit(f, 2, 2 * (size_t)STOREQ_MAX_BYTES);
	storeq_flush(f->q);
	assert_int_equal(f->n_ran, 3);
	storeq_stats(f->q, &s);
	assert_int_equal(s.waits, 1);
	assert_int_equal(s.bytes, 0);
}

int main(void)
{
	log_set_level(LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bytes_bound_waits_for_room, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_job_goes_in_alone, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for src/router/router.c: the session registry. Binding and
 * conflicts, presence, the RFC 6121 §8.5.2.1.1 choice of sessions for a
 * message to a bare JID, growth to many accounts, and use from several
 * threads at once. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/router.h"

static int setup(void **state)
{
	*state = router_new();
	return 0;
}

static int teardown(void **state)
{
	router_free(*state);
	return 0;
}

static void bind_ok(struct router *r, const char *bare, const char *res, uint64_t id, int loop)
{
	struct router_target old;
	assert_int_equal(router_bind(r, bare, res, id, loop, &old), 0);
}

/* The session ids chosen for a message to bare, sorted, as a string like
 * "1,3" so a test reads as the rule it checks. */
static const char *bare_targets(struct router *r, const char *bare, int max, int *n_sessions)
{
	static char out[512];
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_bare_message(r, bare, t, max, n_sessions);
	assert_in_range(n, 0, max);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && t[j - 1].session > t[j].session; j--) {
			struct router_target x = t[j];
			t[j] = t[j - 1];
			t[j - 1] = x;
		}
	out[0] = '\0';
	for (int i = 0; i < n; i++)
		snprintf(out + strlen(out), sizeof out - strlen(out), "%s%llu", i ? "," : "",
			 (unsigned long long)t[i].session);
	return out;
}

static void test_bind_and_find_full(void **state)
{
	struct router *r = *state;
	struct router_target t;
	bind_ok(r, "juliet@example.com", "balcony", 7, 2);
	assert_int_equal(router_find_full(r, "juliet@example.com", "balcony", &t), 0);
	assert_int_equal(t.session, 7);
	assert_int_equal(t.loop, 2);
	/* A new session is unavailable with priority 0 until it sends presence. */
	assert_false(t.available);
	assert_int_equal(t.priority, 0);
	assert_int_equal(router_find_full(r, "juliet@example.com", "garden", &t), -1);
	assert_int_equal(router_find_full(r, "romeo@example.com", "balcony", &t), -1);
	/* Lookups are exact: the caller normalises. */
	assert_int_equal(router_find_full(r, "juliet@example.com", "Balcony", &t), -1);
}

static void test_unavailable_session_gets_nothing(void **state)
{
	struct router *r = *state;
	struct router_target t[4];
	int n;
	bind_ok(r, "juliet@example.com", "balcony", 1, 0);
	assert_string_equal(bare_targets(r, "juliet@example.com", 4, &n), "");
	assert_int_equal(n, 1);
	assert_int_equal(router_find_available(r, "juliet@example.com", t, 4), 0);
	assert_string_equal(bare_targets(r, "nobody@example.com", 4, &n), "");
	assert_int_equal(n, 0);
}

static void test_set_presence(void **state)
{
	struct router *r = *state;
	struct router_target t;
	bind_ok(r, "juliet@example.com", "balcony", 1, 0);
	router_set_presence(r, "juliet@example.com", "balcony", 1, true, 5);
	assert_int_equal(router_find_full(r, "juliet@example.com", "balcony", &t), 0);
	assert_true(t.available);
	assert_int_equal(t.priority, 5);
	router_set_presence(r, "juliet@example.com", "balcony", 1, false, 0);
	assert_int_equal(router_find_full(r, "juliet@example.com", "balcony", &t), 0);
	assert_false(t.available);
	/* Unknown sessions and accounts are ignored. */
	router_set_presence(r, "juliet@example.com", "garden", 1, true, 1);
	router_set_presence(r, "nobody@example.com", "x", 1, true, 1);
	assert_int_equal(router_find_full(r, "juliet@example.com", "garden", &t), -1);
}

static void test_highest_priority_wins(void **state)
{
	struct router *r = *state;
	int n;
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 0);
	bind_ok(r, "j@e", "c", 3, 1);
	router_set_presence(r, "j@e", "a", 1, true, 5);
	router_set_presence(r, "j@e", "b", 2, true, 10);
	router_set_presence(r, "j@e", "c", 3, true, 7);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "2");
	assert_int_equal(n, 3);
}

static void test_ties_all_get_it(void **state)
{
	struct router *r = *state;
	int n;
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 0);
	bind_ok(r, "j@e", "c", 3, 1);
	bind_ok(r, "j@e", "d", 4, 1);
	router_set_presence(r, "j@e", "a", 1, true, 10);
	router_set_presence(r, "j@e", "b", 2, true, 3);
	router_set_presence(r, "j@e", "c", 3, true, 10);
	router_set_presence(r, "j@e", "d", 4, true, 10);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "1,3,4");
	assert_int_equal(n, 4);
	/* At most max are written. */
	assert_int_equal(strlen(bare_targets(r, "j@e", 2, &n)), 3);
	assert_int_equal(n, 4);
}

static void test_zero_priority_counts(void **state)
{
	struct router *r = *state;
	int n;
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 0);
	router_set_presence(r, "j@e", "a", 1, true, 0);
	router_set_presence(r, "j@e", "b", 2, true, -1);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "1");
}

static void test_negative_priority_never_gets_bare_messages(void **state)
{
	struct router *r = *state;
	struct router_target t[8];
	int n;
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 0);
	router_set_presence(r, "j@e", "a", 1, true, -1);
	router_set_presence(r, "j@e", "b", 2, true, -128);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "");
	assert_int_equal(n, 2);
	/* They are still available for presence and iq fan-out. */
	assert_int_equal(router_find_available(r, "j@e", t, 8), 2);
}

static void test_unavailable_excluded_even_with_higher_priority(void **state)
{
	struct router *r = *state;
	int n;
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 0);
	bind_ok(r, "j@e", "c", 3, 0);
	router_set_presence(r, "j@e", "a", 1, true, 1);
	router_set_presence(r, "j@e", "b", 2, true, 50);
	router_set_presence(r, "j@e", "b", 2, false, 50);
	router_set_presence(r, "j@e", "c", 3, false, 100);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "1");
	assert_int_equal(n, 3);
	router_set_presence(r, "j@e", "a", 1, false, 1);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "");
}

static void test_find_available(void **state)
{
	struct router *r = *state;
	struct router_target t[8];
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 1);
	bind_ok(r, "j@e", "c", 3, 2);
	bind_ok(r, "k@e", "a", 4, 2);
	router_set_presence(r, "j@e", "a", 1, true, -5);
	router_set_presence(r, "j@e", "c", 3, true, 2);
	router_set_presence(r, "k@e", "a", 4, true, 2);
	int n = router_find_available(r, "j@e", t, 8);
	assert_int_equal(n, 2);
	uint64_t sum = 0;
	for (int i = 0; i < n; i++) {
		assert_true(t[i].available);
		sum += t[i].session;
	}
	assert_int_equal(sum, 1 + 3);
	assert_int_equal(router_find_available(r, "j@e", t, 1), 1);
	assert_int_equal(router_find_available(r, "nobody@e", t, 8), 0);
}

static void test_conflict_replaces_and_returns_old(void **state)
{
	struct router *r = *state;
	struct router_target old, t;
	bind_ok(r, "j@e", "phone", 1, 3);
	router_set_presence(r, "j@e", "phone", 1, true, 4);
	memset(&old, 0, sizeof old);
	assert_int_equal(router_bind(r, "j@e", "phone", 2, 5, &old), 1);
	assert_int_equal(old.session, 1);
	assert_int_equal(old.loop, 3);
	assert_true(old.available);
	assert_int_equal(old.priority, 4);
	/* The new session replaced it and starts afresh. */
	assert_int_equal(router_find_full(r, "j@e", "phone", &t), 0);
	assert_int_equal(t.session, 2);
	assert_int_equal(t.loop, 5);
	assert_false(t.available);
	assert_int_equal(t.priority, 0);
	int n;
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "");
	assert_int_equal(n, 1);
}

static void test_stale_session_id_leaves_new_session(void **state)
{
	struct router *r = *state;
	struct router_target old, t;
	int n;
	bind_ok(r, "j@e", "phone", 1, 0);
	assert_int_equal(router_bind(r, "j@e", "phone", 2, 0, &old), 1);
	/* The replaced connection closes later and cleans up with its id. */
	router_set_presence(r, "j@e", "phone", 1, true, 9);
	router_unbind(r, "j@e", "phone", 1);
	assert_int_equal(router_find_full(r, "j@e", "phone", &t), 0);
	assert_int_equal(t.session, 2);
	assert_false(t.available);
	router_unbind(r, "j@e", "phone", 2);
	assert_int_equal(router_find_full(r, "j@e", "phone", &t), -1);
	assert_string_equal(bare_targets(r, "j@e", 8, &n), "");
	assert_int_equal(n, 0);
}

static void test_unbind(void **state)
{
	struct router *r = *state;
	struct router_target t;
	int n;
	bind_ok(r, "j@e", "a", 1, 0);
	bind_ok(r, "j@e", "b", 2, 0);
	router_unbind(r, "j@e", "a", 1);
	assert_int_equal(router_find_full(r, "j@e", "a", &t), -1);
	assert_int_equal(router_find_full(r, "j@e", "b", &t), 0);
	bare_targets(r, "j@e", 8, &n);
	assert_int_equal(n, 1);
	/* The id must match the resource too. */
	router_unbind(r, "j@e", "a", 2);
	assert_int_equal(router_find_full(r, "j@e", "b", &t), 0);
	router_unbind(r, "j@e", "b", 2);
	router_unbind(r, "j@e", "b", 2);
	router_unbind(r, "nobody@e", "b", 2);
	bare_targets(r, "j@e", 8, &n);
	assert_int_equal(n, 0);
	/* The account can come back. */
	bind_ok(r, "j@e", "a", 3, 0);
	assert_int_equal(router_find_full(r, "j@e", "a", &t), 0);
	assert_int_equal(t.session, 3);
}

static void test_accounts_are_separate(void **state)
{
	struct router *r = *state;
	struct router_target t;
	int n;
	bind_ok(r, "a@e", "r", 1, 0);
	bind_ok(r, "b@e", "r", 2, 0);
	bind_ok(r, "a@f", "r", 3, 0);
	router_set_presence(r, "a@e", "r", 1, true, 1);
	assert_int_equal(router_find_full(r, "b@e", "r", &t), 0);
	assert_int_equal(t.session, 2);
	assert_false(t.available);
	assert_string_equal(bare_targets(r, "a@e", 8, &n), "1");
	assert_string_equal(bare_targets(r, "a@f", 8, &n), "");
	router_unbind(r, "a@e", "r", 1);
	assert_int_equal(router_find_full(r, "a@f", "r", &t), 0);
}

/* Enough accounts to grow every shard's table several times. */
static void test_many_accounts(void **state)
{
	struct router *r = *state;
	const int n = 50000;
	char bare[64];
	struct router_target t;
	for (int i = 0; i < n; i++) {
		snprintf(bare, sizeof bare, "user%d@example.com", i);
		bind_ok(r, bare, "res", (uint64_t)i + 1, i % 4);
		if (i % 3 == 0)
			router_set_presence(r, bare, "res", (uint64_t)i + 1, true, i % 7);
	}
	for (int i = 0; i < n; i++) {
		snprintf(bare, sizeof bare, "user%d@example.com", i);
		assert_int_equal(router_find_full(r, bare, "res", &t), 0);
		assert_int_equal(t.session, (uint64_t)i + 1);
		assert_int_equal(t.loop, i % 4);
		assert_int_equal(t.available, i % 3 == 0);
	}
	for (int i = 0; i < n; i += 2) {
		snprintf(bare, sizeof bare, "user%d@example.com", i);
		router_unbind(r, bare, "res", (uint64_t)i + 1);
	}
	for (int i = 0; i < n; i++) {
		snprintf(bare, sizeof bare, "user%d@example.com", i);
		assert_int_equal(router_find_full(r, bare, "res", &t), i % 2 ? 0 : -1);
	}
	/* Left for router_free with half the accounts still bound. */
}

/* --- threads --- */

#define THREADS 8
#define ROUNDS 2000
#define ACCOUNTS 64

struct worker {
	struct router *r;
	int id;
	int errors;
};

/* Each worker owns its accounts and churns them; all of them also share
 * one account, each with its own resource. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char bare[64], res[32];
	struct router_target t, out[ROUTER_MAX_TARGETS];
	snprintf(res, sizeof res, "w%d", w->id);
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t id = (uint64_t)w->id << 32 | (uint64_t)round;
		snprintf(bare, sizeof bare, "t%d-u%d@example.com", w->id, round % ACCOUNTS);
		struct router_target old;
		int replaced = router_bind(w->r, bare, "res", id, w->id, &old);
		/* The account was last bound ACCOUNTS rounds ago, and is still
		 * bound unless that round unbound it. */
		if (replaced != (round >= ACCOUNTS && (round - ACCOUNTS) % 3 != 0))
			w->errors++;
		if (replaced && old.session != ((uint64_t)w->id << 32 | (uint64_t)(round - ACCOUNTS)))
			w->errors++;
		router_set_presence(w->r, bare, "res", id, true, round % 5);
		if (router_find_full(w->r, bare, "res", &t) != 0 || t.session != id || !t.available)
			w->errors++;
		int n_sessions;
		int n = router_find_bare_message(w->r, bare, out, ROUTER_MAX_TARGETS, &n_sessions);
		if (n != 1 || n_sessions != 1 || out[0].session != id)
			w->errors++;
		if (round % 3 == 0)
			router_unbind(w->r, bare, "res", id);

		router_bind(w->r, "shared@example.com", res, id, w->id, &old);
		router_set_presence(w->r, "shared@example.com", res, id, true, 1);
		if (router_find_full(w->r, "shared@example.com", res, &t) != 0 || t.session != id)
			w->errors++;
		n = router_find_available(w->r, "shared@example.com", out, ROUTER_MAX_TARGETS);
		if (n < 1 || n > THREADS)
			w->errors++;
		if (round % 2 == 0)
			router_unbind(w->r, "shared@example.com", res, id);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct router *r = *state;
	pthread_t th[THREADS];
	struct worker w[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ r, i, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(w[i].errors, 0);
	}
	/* Every worker left its last shared session bound (odd last round). */
	struct router_target out[ROUTER_MAX_TARGETS];
	int n_sessions;
	int n = router_find_bare_message(r, "shared@example.com", out, ROUTER_MAX_TARGETS,
					 &n_sessions);
	assert_int_equal(n, THREADS);
	assert_int_equal(n_sessions, THREADS);
	/* And each own account holds exactly the session of its last round,
	 * or none if that round unbound it. */
	for (int i = 0; i < THREADS; i++) {
		for (int a = 0; a < ACCOUNTS; a++) {
			int last = a + (ROUNDS - 1 - a) / ACCOUNTS * ACCOUNTS;
			char bare[64];
			struct router_target t;
			snprintf(bare, sizeof bare, "t%d-u%d@example.com", i, a);
			int rc = router_find_full(r, bare, "res", &t);
			if (last % 3 == 0) {
				assert_int_equal(rc, -1);
			} else {
				assert_int_equal(rc, 0);
				assert_int_equal(t.session, (uint64_t)i << 32 | (uint64_t)last);
			}
		}
	}
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_bind_and_find_full),
		T(test_unavailable_session_gets_nothing),
		T(test_set_presence),
		T(test_highest_priority_wins),
		T(test_ties_all_get_it),
		T(test_zero_priority_counts),
		T(test_negative_priority_never_gets_bare_messages),
		T(test_unavailable_excluded_even_with_higher_priority),
		T(test_find_available),
		T(test_conflict_replaces_and_returns_old),
		T(test_stale_session_id_leaves_new_session),
		T(test_unbind),
		T(test_accounts_are_separate),
		T(test_many_accounts),
		T(test_threads),
	};
	return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}

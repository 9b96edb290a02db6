/* Unit tests for src/c2s/sm.c: the unacknowledged queue and its counters
 * (wrapping at 2^32 as XEP-0198 says), SM ids and h values, and a loop's
 * table of detached sessions and forwards. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "c2s/sm.h"
#include "core/server.h"

static const struct config_sm cfg = { .resume_timeout = 300, .max_unacked = 20,
				      .max_unacked_size = 1000, .request_every = 5 };

static void push_n(struct sm *sm, int n, int *over)
{
	for (int i = 0; i < n; i++) {
		char text[16];
		int len = snprintf(text, sizeof text, "<m%d/>", i);
		struct refbuf *r = refbuf_new(text, (size_t)len);
		*over |= sm_push(sm, &cfg, r) != 0;
		refbuf_release(r);
	}
}

static void count_one(void *arg, struct refbuf *r)
{
	(void)r;
	(*(int *)arg)++;
}

static void release_one(void *arg, struct refbuf *r)
{
	(*(int *)arg)++;
	refbuf_release(r);
}

static void test_ack_releases_and_refuses_too_high(void **state)
{
	(void)state;
	struct sm *sm = sm_new(true);
	int over = 0;
	push_n(sm, 10, &over);
	assert_false(over);
	assert_int_equal(sm_sent(sm), 10);
	int written = 0;
	sm_each_unwritten(sm, count_one, &written);
	assert_int_equal(written, 10);
	assert_int_equal(sm_ack(sm, 4), 0);
	assert_int_equal(sm->len, 6);
	assert_int_equal(sm->written, 6);
	assert_int_equal(sm_ack(sm, 11), -1); /* more than was sent */
	assert_int_equal(sm->len, 6);
	assert_int_equal(sm_ack(sm, 10), 0);
	assert_int_equal(sm->len, 0);
	assert_int_equal(sm->bytes, 0);
	sm_trim(sm);
	assert_null(sm->ring);
	sm_free(sm);
}

static void test_counters_wrap(void **state)
{
	(void)state;
	struct sm *sm = sm_new(false);
	sm->acked = UINT32_MAX - 2;
	int over = 0;
	push_n(sm, 6, &over);
	assert_int_equal(sm_sent(sm), 3); /* wrapped */
	assert_int_equal(sm_ack(sm, 1), 0);
	assert_int_equal(sm->len, 2);
	assert_int_equal(sm_ack(sm, 4), -1);
	sm_free(sm);
}

static void test_bounds_and_drain(void **state)
{
	(void)state;
	struct sm *sm = sm_new(true);
	int over = 0;
	push_n(sm, 20, &over);
	assert_false(over);
	push_n(sm, 1, &over);
	assert_true(over);           /* past max_unacked: kept all the same */
	assert_int_equal(sm->len, 21);
	struct sm *early = sm_new(false);
	int o2 = 0;
	push_n(early, 3, &o2);
	sm_append(sm, early);
	assert_int_equal(early->len, 0);
	assert_int_equal(sm->len, 24);
	int drained = 0;
	sm_drain(sm, release_one, &drained);
	assert_int_equal(drained, 24);
	assert_int_equal(sm->len, 0);
	sm_free(early);
	sm_free(sm);
}

static void test_ids_and_h(void **state)
{
	(void)state;
	struct sm *a = sm_new(true), *b = sm_new(true);
	char ia[33], ib[33];
	sm_id(a, ia);
	sm_id(b, ib);
	assert_int_equal(strlen(ia), 32);
	assert_string_not_equal(ia, ib);
	unsigned char key[ROUTER_SM_KEY];
	assert_int_equal(sm_parse_id(ia, key), 0);
	assert_memory_equal(key, a->key, ROUTER_SM_KEY);
	assert_int_equal(sm_parse_id("zz", key), -1);
	assert_int_equal(sm_parse_id(NULL, key), -1);
	ia[5] = 'G';
	assert_int_equal(sm_parse_id(ia, key), -1);
	uint32_t h;
	assert_int_equal(sm_parse_h("4294967295", &h), 0);
	assert_int_equal(h, UINT32_MAX);
	assert_int_equal(sm_parse_h("4294967296", &h), -1);
	assert_int_equal(sm_parse_h("-1", &h), -1);
	assert_int_equal(sm_parse_h("", &h), -1);
	assert_int_equal(sm_parse_h("12x", &h), -1);
	assert_int_equal(sm_parse_h(NULL, &h), -1);
	sm_free(a);
	sm_free(b);
}

static void test_table(void **state)
{
	(void)state;
	struct loop *l = calloc(1, sizeof *l);
	int sessions[300];
	for (int i = 0; i < 300; i++)
		sm_table_put(l, (uint64_t)i * 7 + 1, &sessions[i]);
	for (int i = 0; i < 300; i++)
		assert_ptr_equal(sm_table_get(l, (uint64_t)i * 7 + 1), &sessions[i]);
	assert_null(sm_table_get(l, 2));
	sm_table_del(l, 8);
	assert_null(sm_table_get(l, 8));
	sm_table_forward(l, 8, 99, 1);
	struct router_target t;
	assert_int_equal(sm_table_get_forward(l, 8, &t), 0);
	assert_int_equal(t.session, 99);
	assert_int_equal(t.loop, 1);
	assert_null(sm_table_get(l, 8));
	assert_int_equal(sm_table_get_forward(l, 1, &t), -1); /* a session */
	int popped = 0;
	while (sm_table_pop(l) != NULL)
		popped++;
	assert_int_equal(popped, 299);
	sm_table_free(l);
	free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ack_releases_and_refuses_too_high),
		cmocka_unit_test(test_counters_wrap),
		cmocka_unit_test(test_bounds_and_drain),
		cmocka_unit_test(test_ids_and_h),
		cmocka_unit_test(test_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

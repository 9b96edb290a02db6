/* Unit tests for src/core/buf.c (growable and reference-counted buffers)
 * and src/core/arena.c (the per-stanza and per-connection allocator),
 * including allocations larger than an arena chunk. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdalign.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"

/* --- buf --- */

static void test_buf_init_empty(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	buf_append(&b, "x", 0);
	assert_int_equal(b.len, 0);
	buf_free(&b);
	buf_free(&b);
	assert_null(b.data);
}

static void test_buf_append_and_puts(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_append(&b, "ab\0cd", 5);
	buf_puts(&b, "ef");
	buf_puts(&b, "");
	assert_int_equal(b.len, 7);
	assert_memory_equal(b.data, "ab\0cdef", 7);
	assert_true(b.cap >= b.len);
	buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
}

static void test_buf_growth(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	for (int i = 0; i < 100000; i++) {
		char c = (char)('a' + i % 26);
		buf_append(&b, &c, 1);
		assert_true(b.cap >= b.len);
	}
	assert_int_equal(b.len, 100000);
	for (int i = 0; i < 100000; i++)
		assert_int_equal(b.data[i], 'a' + i % 26);
	/* One large append well beyond the current capacity. */
	static char big[1 << 20];
	memset(big, 'z', sizeof big);
	buf_append(&b, big, sizeof big);
	assert_int_equal(b.len, 100000 + sizeof big);
	assert_int_equal(b.data[b.len - 1], 'z');
	assert_int_equal(b.data[99999], 'a' + 99999 % 26);
	buf_free(&b);
}

static void test_buf_reserve(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_reserve(&b, 1000);
	assert_true(b.cap >= 1000);
	assert_int_equal(b.len, 0);
	char *p = b.data;
	size_t cap = b.cap;
	/* Appends within the reservation do not move the data. */
	for (size_t i = 0; i < cap; i++)
		buf_append(&b, "x", 1);
	assert_ptr_equal(b.data, p);
	buf_reserve(&b, 0);
	assert_int_equal(b.cap, cap);
	buf_reserve(&b, 1);
	assert_true(b.cap >= cap + 1);
	buf_free(&b);
}

static void test_buf_printf(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<");
	buf_printf(&b, "%s:%d/%05.1f", "x", -42, 3.14159);
	buf_printf(&b, "%s", "");
	assert_int_equal(b.len, 12);
	assert_memory_equal(b.data, "<x:-42/003.1", 12);
	/* Longer than any first guess at the size. */
	buf_printf(&b, "%5000d", 7);
	assert_int_equal(b.len, 12 + 5000);
	assert_int_equal(b.data[b.len - 1], '7');
	assert_int_equal(b.data[12], ' ');
	buf_free(&b);
}

static void test_buf_append_escaped(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	const char s[] = "a&b<c>d\"e'f\0g";
	buf_append_escaped(&b, s, sizeof s - 1);
	const char want[] = "a&amp;b&lt;c&gt;d&quot;e&apos;f\0g";
	assert_int_equal(b.len, sizeof want - 1);
	assert_memory_equal(b.data, want, sizeof want - 1);
	b.len = 0;
	buf_append_escaped(&b, "&&", 2);
	buf_append_escaped(&b, "plain \xe2\x98\xba", 9);
	buf_append_escaped(&b, "", 0);
	assert_int_equal(b.len, 19);
	assert_memory_equal(b.data, "&amp;&amp;plain \xe2\x98\xba", 19);
	buf_free(&b);
}

static void test_buf_consume(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "hello world");
	buf_consume(&b, 6);
	assert_int_equal(b.len, 5);
	assert_memory_equal(b.data, "world", 5);
	buf_consume(&b, 0);
	assert_int_equal(b.len, 5);
	buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	buf_puts(&b, "again");
	buf_consume(&b, 5);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

/* --- refbuf --- */

static void test_refbuf_copies(void **state)
{
	(void)state;
	char src[] = "<message/>";
	struct refbuf *r = refbuf_new(src, 10);
	src[0] = 'X';
	assert_int_equal(r->len, 10);
	assert_memory_equal(r->data, "<message/>", 10);
	assert_int_equal(atomic_load(&r->refs), 1);
	refbuf_release(r);
	refbuf_release(NULL);
	struct refbuf *e = refbuf_new("", 0);
	assert_int_equal(e->len, 0);
	refbuf_release(e);
}

static void test_refbuf_refcount(void **state)
{
	(void)state;
	struct refbuf *r = refbuf_new("abc", 3);
	assert_ptr_equal(refbuf_ref(r), r);
	assert_ptr_equal(refbuf_ref(r), r);
	assert_int_equal(atomic_load(&r->refs), 3);
	refbuf_release(r);
	refbuf_release(r);
	/* Still alive for the last holder (ASan would see a use after free). */
	assert_int_equal(atomic_load(&r->refs), 1);
	assert_memory_equal(r->data, "abc", 3);
	refbuf_release(r);
}

#define HOLDERS 8
#define SHARED 2000

/* Fan-out: one stanza, many recipients on other threads, each releasing
 * its reference when done. */
static void *holder_main(void *arg)
{
	struct refbuf **bufs = arg;
	for (int i = 0; i < SHARED; i++) {
		if (bufs[i]->len != 5 || memcmp(bufs[i]->data, "stnza", 5) != 0)
			return (void *)1;
		refbuf_release(bufs[i]);
	}
	return NULL;
}

static void test_refbuf_threads(void **state)
{
	(void)state;
	static struct refbuf *bufs[SHARED];
	pthread_t th[HOLDERS];
	for (int i = 0; i < SHARED; i++) {
		bufs[i] = refbuf_new("stnza", 5);
		for (int h = 1; h < HOLDERS; h++)
			refbuf_ref(bufs[i]);
	}
	for (int h = 0; h < HOLDERS; h++)
		assert_int_equal(pthread_create(&th[h], NULL, holder_main, bufs), 0);
	for (int h = 0; h < HOLDERS; h++) {
		void *ret;
		assert_int_equal(pthread_join(th[h], &ret), 0);
		assert_null(ret);
	}
}

/* --- arena --- */

static void test_arena_small_allocations(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	char *prev = NULL;
	for (int i = 0; i < 10000; i++) {
		size_t n = (size_t)(i % 37) + 1;
		char *p = arena_alloc(&a, n);
		assert_non_null(p);
		assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
		memset(p, i & 0xff, n);
		assert_true(p != prev);
		prev = p;
	}
	assert_true(a.total >= 10000);
	arena_reset(&a);
	assert_null(a.head);
	assert_int_equal(a.total, 0);
	assert_int_equal(a.used, 0);
}

static void test_arena_strdup(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	char *s = arena_strdup(&a, "hello");
	char *t = arena_strndup(&a, "world!!!", 5);
	char *e = arena_strdup(&a, "");
	char *n = arena_strndup(&a, "a\0b", 3);
	assert_string_equal(s, "hello");
	assert_string_equal(t, "world");
	assert_string_equal(e, "");
	assert_memory_equal(n, "a\0b\0", 4);
	arena_reset(&a);
}

/* A block larger than half a chunk gets a chunk of its own, behind the
 * current one: the current chunk keeps serving small allocations. */
static void test_arena_large_keeps_current_chunk(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	char *small = arena_alloc(&a, 16);
	memset(small, 's', 16);
	void *head = a.head;
	size_t used = a.used;
	char *big = arena_alloc(&a, 100000);
	memset(big, 'B', 100000);
	assert_ptr_equal(a.head, head);
	assert_int_equal(a.used, used);
	char *small2 = arena_alloc(&a, 16);
	assert_int_equal(a.used, used + 16);
	assert_true(small2 == small + 16);
	memset(small2, 't', 16);
	for (int i = 0; i < 16; i++)
		assert_int_equal(small[i], 's');
	assert_int_equal(big[0], 'B');
	assert_int_equal(big[99999], 'B');
	assert_true(a.total >= 100000 + 32);
	arena_reset(&a);
}

static void test_arena_large_first(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	/* Just over half a chunk, exactly a chunk, and just over a chunk. */
	size_t sizes[] = { 2049, 4096, 4097, 1 << 20, 3000, 8 };
	char *p[6];
	for (int i = 0; i < 6; i++) {
		p[i] = arena_alloc(&a, sizes[i]);
		assert_int_equal((uintptr_t)p[i] % alignof(max_align_t), 0);
		memset(p[i], 'a' + i, sizes[i]);
	}
	for (int i = 0; i < 6; i++) {
		assert_int_equal(p[i][0], 'a' + i);
		assert_int_equal(p[i][sizes[i] - 1], 'a' + i);
	}
	arena_reset(&a);
	/* Usable again after a reset. */
	char *q = arena_alloc(&a, 1 << 16);
	memset(q, 0, 1 << 16);
	arena_reset(&a);
}

static void test_arena_many_large(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	char *small[200], *big[200];
	for (int i = 0; i < 200; i++) {
		small[i] = arena_strdup(&a, "small");
		big[i] = arena_alloc(&a, 3000 + (size_t)i * 97);
		memset(big[i], i & 0xff, 3000 + (size_t)i * 97);
	}
	for (int i = 0; i < 200; i++) {
		assert_string_equal(small[i], "small");
		assert_int_equal((unsigned char)big[i][0], i & 0xff);
		assert_int_equal((unsigned char)big[i][2999 + (size_t)i * 97], i & 0xff);
	}
	arena_reset(&a);
}

static void test_arena_zero_size(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a);
	assert_non_null(arena_alloc(&a, 0));
	char *p = arena_alloc(&a, 8);
	memset(p, 1, 8);
	arena_reset(&a);
	arena_reset(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_init_empty),
		cmocka_unit_test(test_buf_append_and_puts),
		cmocka_unit_test(test_buf_growth),
		cmocka_unit_test(test_buf_reserve),
		cmocka_unit_test(test_buf_printf),
		cmocka_unit_test(test_buf_append_escaped),
		cmocka_unit_test(test_buf_consume),
		cmocka_unit_test(test_refbuf_copies),
		cmocka_unit_test(test_refbuf_refcount),
		cmocka_unit_test(test_refbuf_threads),
		cmocka_unit_test(test_arena_small_allocations),
		cmocka_unit_test(test_arena_strdup),
		cmocka_unit_test(test_arena_large_keeps_current_chunk),
		cmocka_unit_test(test_arena_large_first),
		cmocka_unit_test(test_arena_many_large),
		cmocka_unit_test(test_arena_zero_size),
	};
	return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}

/* Unit tests for src/dns/dns.c: RFC 2782 ordering of SRV records (with a
 * deterministic random source), SRV rdata parsing, resolver strings, and
 * the parts of the asynchronous path that need no DNS server (IP literals,
 * a resolver that does not answer, dns_free with lookups pending). The
 * lookups against a real server are in tests/integration/test_dns.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <uv.h>

#include "dns/dns.h"

/* xorshift64: the same sequence on every run. */
static unsigned test_rnd(void *arg)
{
	uint64_t *s = arg;
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (unsigned)(*s >> 32);
}

static struct dns_srv rec(const char *target, uint16_t priority, uint16_t weight)
{
	struct dns_srv s = { .priority = priority, .weight = weight, .port = 5269 };
	strcpy(s.target, target);
	return s;
}

static void test_order_priorities_strict(void **state)
{
	(void)state;
	uint64_t seed = 42;
	for (int run = 0; run < 1000; run++) {
		struct dns_srv r[] = {
			rec("a", 20, 5), rec("b", 0, 0), rec("c", 10, 1), rec("d", 0, 7),
			rec("e", 20, 0), rec("f", 10, 9), rec("g", 65535, 3),
		};
		size_t n = sizeof r / sizeof r[0];
		dns_srv_order(r, n, test_rnd, &seed);
		for (size_t i = 1; i < n; i++)
			assert_true(r[i - 1].priority <= r[i].priority);
		/* Every record is still there, once. */
		unsigned seen = 0;
		for (size_t i = 0; i < n; i++)
			seen |= 1u << (r[i].target[0] - 'a');
		assert_int_equal(seen, 0x7f);
		assert_string_equal(r[n - 1].target, "g");
	}
}

/* Weights 1 and 3 at one priority: the heavy one first 3 times in 4. */
static void test_order_weight_distribution(void **state)
{
	(void)state;
	uint64_t seed = 0x1234567;
	const int runs = 40000;
	int heavy_first = 0;
	for (int run = 0; run < runs; run++) {
		struct dns_srv r[] = { rec("light", 5, 1), rec("heavy", 5, 3) };
		dns_srv_order(r, 2, test_rnd, &seed);
		heavy_first += strcmp(r[0].target, "heavy") == 0;
	}
	double share = (double)heavy_first / runs;
	assert_true(share > 0.73 && share < 0.77);
}

/* The first pick of three is proportional to weight, for each record. */
static void test_order_weight_three(void **state)
{
	(void)state;
	uint64_t seed = 99;
	const int runs = 60000;
	int first[3] = { 0 };
	for (int run = 0; run < runs; run++) {
		struct dns_srv r[] = { rec("0", 1, 10), rec("1", 1, 30), rec("2", 1, 60) };
		dns_srv_order(r, 3, test_rnd, &seed);
		first[r[0].target[0] - '0']++;
	}
	assert_true(first[0] > runs * 0.08 && first[0] < runs * 0.12);
	assert_true(first[1] > runs * 0.27 && first[1] < runs * 0.33);
	assert_true(first[2] > runs * 0.57 && first[2] < runs * 0.63);
}

/* A weight-0 record among heavier ones has a small chance (RFC 2782),
 * here 1 in 6 against weight 5; it is never lost. */
static void test_order_weight_zero_chosen(void **state)
{
	(void)state;
	uint64_t seed = 7;
	const int runs = 30000;
	int zero_first = 0;
	for (int run = 0; run < runs; run++) {
		struct dns_srv r[] = { rec("five", 0, 5), rec("zero", 0, 0) };
		dns_srv_order(r, 2, test_rnd, &seed);
		zero_first += strcmp(r[0].target, "zero") == 0;
		assert_true(strcmp(r[0].target, r[1].target) != 0);
	}
	assert_true(zero_first > 0);
	double share = (double)zero_first / runs;
	assert_true(share > 0.14 && share < 0.19);
}

/* Only weight 0 at a priority: no selection to make, every record kept. */
static void test_order_all_weight_zero(void **state)
{
	(void)state;
	uint64_t seed = 1;
	struct dns_srv r[] = { rec("x", 3, 0), rec("y", 3, 0), rec("z", 1, 0) };
	dns_srv_order(r, 3, test_rnd, &seed);
	assert_string_equal(r[0].target, "z");
	assert_string_equal(r[1].target, "x");
	assert_string_equal(r[2].target, "y");
	dns_srv_order(r, 0, test_rnd, &seed);
}

static void test_srv_parse(void **state)
{
	(void)state;
	static const unsigned char good[] = {
		0, 10, 0, 20, 0x14, 0x95,                         /* 10 20 5269 */
		4, 'C', 'h', 'a', 't', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0,
	};
	static const unsigned char dot[] = { 0, 0, 0, 0, 0, 0, 0 };
	static const unsigned char pointer[] = { 0, 0, 0, 0, 0, 1, 0xc0, 12 };
	static const unsigned char trailing[] = { 0, 0, 0, 0, 0, 1, 1, 'a', 0, 9 };
	static const unsigned char unterminated[] = { 0, 0, 0, 0, 0, 1, 3, 'a', 'b', 'c' };
	static const unsigned char dotted[] = { 0, 0, 0, 0, 0, 1, 3, 'a', '.', 'c', 0 };
	struct dns_srv s;

	assert_int_equal(dns_srv_parse(good, sizeof good, &s), 0);
	assert_int_equal(s.priority, 10);
	assert_int_equal(s.weight, 20);
	assert_int_equal(s.port, 5269);
	assert_string_equal(s.target, "chat.example.com");
	assert_int_equal(dns_srv_parse(dot, sizeof dot, &s), 0);
	assert_string_equal(s.target, "");
	assert_int_equal(dns_srv_parse(pointer, sizeof pointer, &s), -1);
	assert_int_equal(dns_srv_parse(trailing, sizeof trailing, &s), -1);
	assert_int_equal(dns_srv_parse(unterminated, sizeof unterminated, &s), -1);
	assert_int_equal(dns_srv_parse(dotted, sizeof dotted, &s), -1);
	assert_int_equal(dns_srv_parse(good, 6, &s), -1);
}

static void test_parse_resolver(void **state)
{
	(void)state;
	char addr[64], err[256];
	uint16_t port;

	assert_int_equal(dns_parse_resolver("192.0.2.53", addr, sizeof addr, &port, err, sizeof err), 0);
	assert_string_equal(addr, "192.0.2.53");
	assert_int_equal(port, 53);
	assert_int_equal(dns_parse_resolver("::1@5353", addr, sizeof addr, &port, err, sizeof err), 0);
	assert_string_equal(addr, "::1");
	assert_int_equal(port, 5353);
	assert_int_equal(dns_parse_resolver("ns.example.com", addr, sizeof addr, &port, err, sizeof err), -1);
	assert_non_null(strstr(err, "not a numeric"));
	assert_int_equal(dns_parse_resolver("127.0.0.1@", addr, sizeof addr, &port, err, sizeof err), -1);
	assert_int_equal(dns_parse_resolver("127.0.0.1@70000", addr, sizeof addr, &port, err, sizeof err), -1);
	assert_int_equal(dns_parse_resolver("127.0.0.1@-5", addr, sizeof addr, &port, err, sizeof err), -1);
	assert_int_equal(dns_parse_resolver("@53", addr, sizeof addr, &port, err, sizeof err), -1);
}

static void test_new_bad_resolver(void **state)
{
	(void)state;
	uv_loop_t uv;
	char err[256] = "";
	assert_int_equal(uv_loop_init(&uv), 0);
	assert_null(dns_new(&uv, "not-an-address@53", err, sizeof err));
	assert_non_null(strstr(err, "not-an-address"));
	assert_int_equal(uv_loop_close(&uv), 0);
}

struct outcome {
	int calls;
	enum dns_status st;
	size_t n;
	struct dns_candidate c[4];
};

static void record_outcome(void *arg, enum dns_status st, const struct dns_candidate *c, size_t n)
{
	struct outcome *o = arg;
	o->calls++;
	o->st = st;
	o->n = n;
	if (n > 0)
		memcpy(o->c, c, (n < 4 ? n : 4) * sizeof *c);
}

/* A UDP port on 127.0.0.1 where nothing answers. */
static const char *silent_resolver(void)
{
	return "127.0.0.1@9";
}

/* Runs uv until every outcome has its callback (dns's deadline bounds it). */
static void run_until(uv_loop_t *uv, struct outcome *o, size_t n)
{
	for (;;) {
		size_t done = 0;
		for (size_t i = 0; i < n; i++)
			done += o[i].calls > 0;
		if (done == n)
			return;
		uv_run(uv, UV_RUN_ONCE);
	}
}

static void finish_loop(uv_loop_t *uv, struct dns *d)
{
	dns_free(d);
	uv_run(uv, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(uv), 0);
}

static void test_resolve_ip_literals(void **state)
{
	(void)state;
	uv_loop_t uv;
	char err[256];
	struct outcome o[2] = { 0 };
	assert_int_equal(uv_loop_init(&uv), 0);
	struct dns *d = dns_new(&uv, silent_resolver(), err, sizeof err);
	assert_non_null(d);

	dns_resolve_s2s(d, "192.0.2.7", record_outcome, &o[0]);
	dns_resolve_s2s(d, "[2001:db8::7]", record_outcome, &o[1]);
	assert_int_equal(o[0].calls + o[1].calls, 0); /* never from inside the call */
	run_until(&uv, o, 2);

	assert_int_equal(o[0].calls, 1);
	assert_int_equal(o[0].st, DNS_OK);
	assert_int_equal(o[0].n, 1);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&o[0].c[0].addr;
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 5269);
	assert_int_equal(o[0].c[0].port, 5269);
	assert_false(o[0].c[0].direct_tls);
	assert_string_equal(o[0].c[0].host, "192.0.2.7");

	assert_int_equal(o[1].calls, 1);
	assert_int_equal(o[1].st, DNS_OK);
	assert_int_equal(o[1].n, 1);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&o[1].c[0].addr;
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(o[1].c[0].addrlen, sizeof *sin6);
	assert_int_equal(ntohs(sin6->sin6_port), 5269);
	finish_loop(&uv, d);
}

/* A resolver that never answers: DNS_ERROR within the deadline, once. */
static void test_resolve_timeout_is_error(void **state)
{
	(void)state;
	uv_loop_t uv;
	char err[256];
	struct outcome o = { 0 };
	assert_int_equal(uv_loop_init(&uv), 0);
	struct dns *d = dns_new(&uv, silent_resolver(), err, sizeof err);
	assert_non_null(d);
	dns_set_timeout(d, 400);
	uint64_t start = uv_now(&uv);
	dns_resolve_s2s(d, "nowhere.nattertest", record_outcome, &o);
	run_until(&uv, &o, 1);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.st, DNS_ERROR);
	assert_int_equal(o.n, 0);
	assert_true(uv_now(&uv) - start < 5000);
	/* Nothing more arrives later. */
	uv_run(&uv, UV_RUN_NOWAIT);
	assert_int_equal(o.calls, 1);
	finish_loop(&uv, d);
}

/* dns_free with lookups pending (and one finished but not yet called
 * back): no callback ever, nothing leaks (ASan builds check). */
static void test_free_cancels_without_callback(void **state)
{
	(void)state;
	uv_loop_t uv;
	char err[256];
	struct outcome o[3] = { 0 };
	assert_int_equal(uv_loop_init(&uv), 0);
	struct dns *d = dns_new(&uv, silent_resolver(), err, sizeof err);
	assert_non_null(d);
	dns_resolve_s2s(d, "a.nattertest", record_outcome, &o[0]);
	dns_resolve_s2s(d, "b.nattertest", record_outcome, &o[1]);
	dns_resolve_s2s(d, "192.0.2.1", record_outcome, &o[2]);
	finish_loop(&uv, d);
	assert_int_equal(o[0].calls + o[1].calls + o[2].calls, 0);
}

/* dns_free from inside a callback stops the others' callbacks. */
struct free_in_cb {
	struct dns *d;
	int calls;
};

static void free_from_callback(void *arg, enum dns_status st, const struct dns_candidate *c,
			       size_t n)
{
	struct free_in_cb *f = arg;
	(void)st;
	(void)c;
	(void)n;
	f->calls++;
	dns_free(f->d);
}

static void test_free_inside_callback(void **state)
{
	(void)state;
	uv_loop_t uv;
	char err[256];
	assert_int_equal(uv_loop_init(&uv), 0);
	struct free_in_cb f = { 0 };
	f.d = dns_new(&uv, silent_resolver(), err, sizeof err);
	assert_non_null(f.d);
	dns_resolve_s2s(f.d, "192.0.2.1", free_from_callback, &f);
	dns_resolve_s2s(f.d, "192.0.2.2", free_from_callback, &f);
	uv_run(&uv, UV_RUN_DEFAULT);
	assert_int_equal(f.calls, 1);
	assert_int_equal(uv_loop_close(&uv), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_priorities_strict),
		cmocka_unit_test(test_order_weight_distribution),
		cmocka_unit_test(test_order_weight_three),
		cmocka_unit_test(test_order_weight_zero_chosen),
		cmocka_unit_test(test_order_all_weight_zero),
		cmocka_unit_test(test_srv_parse),
		cmocka_unit_test(test_parse_resolver),
		cmocka_unit_test(test_new_bad_resolver),
		cmocka_unit_test(test_resolve_ip_literals),
		cmocka_unit_test(test_resolve_timeout_is_error),
		cmocka_unit_test(test_free_cancels_without_callback),
		cmocka_unit_test(test_free_inside_callback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

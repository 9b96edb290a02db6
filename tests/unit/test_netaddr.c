/* Unit tests for src/core/netaddr.c: which peers count as one address for
 * the per-address limits (IPv6 by prefix, IPv4 and IPv4-mapped alike). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "core/netaddr.h"

static int same(const char *a, const char *b, int prefix)
{
	unsigned char ka[16], kb[16];
	netaddr_key(a, prefix, ka);
	netaddr_key(b, prefix, kb);
	return memcmp(ka, kb, 16) == 0;
}

static void test_ipv4_is_itself(void **state)
{
	(void)state;
	assert_true(same("192.0.2.7", "192.0.2.7", 56));
	assert_false(same("192.0.2.7", "192.0.2.8", 56));
	assert_false(same("127.0.0.1", "127.0.0.2", 32));
	/* The same peer seen on a dual-stack socket. */
	assert_true(same("192.0.2.7", "::ffff:192.0.2.7", 48));
}

static void test_ipv6_prefix_56(void **state)
{
	(void)state;
	/* One /56: its 256 /64s are one address. */
	assert_true(same("2001:db8:0:100::1", "2001:db8:0:1ff:ffff:ffff:ffff:ffff", 56));
	assert_true(same("2001:db8:0:100::1", "2001:db8:0:142::9", 56));
	assert_false(same("2001:db8:0:100::1", "2001:db8:0:200::1", 56));
	assert_false(same("2001:db8:0:1ff::1", "2001:db8:0:200::1", 56));
}

static void test_ipv6_prefix_48_and_64(void **state)
{
	(void)state;
	assert_true(same("2001:db8:1::1", "2001:db8:1:ffff::1", 48));
	assert_false(same("2001:db8:1::1", "2001:db8:2::1", 48));
	assert_false(same("2001:db8:0:100::1", "2001:db8:0:101::1", 64));
	assert_true(same("2001:db8:0:100::1", "2001:db8:0:100:1:2:3:4", 64));
	/* A prefix that is not a multiple of 8 cuts inside a byte. */
	assert_true(same("2001:db8:0:100::", "2001:db8:0:13f::", 58));
	assert_false(same("2001:db8:0:100::", "2001:db8:0:140::", 58));
	assert_false(same("::1", "::2", 128));
}

static void test_key_text(void **state)
{
	(void)state;
	char out[NETADDR_KEY_STR_MAX];
	netaddr_key_str("2001:db8:0:1a2:3:4:5:6", 56, out, sizeof out);
	assert_string_equal(out, "2001:db8:0:100::/56");
	netaddr_key_str("2001:db8:77:1a2::5", 48, out, sizeof out);
	assert_string_equal(out, "2001:db8:77::/48");
	netaddr_key_str("192.0.2.7", 56, out, sizeof out);
	assert_string_equal(out, "192.0.2.7");
	netaddr_key_str("::ffff:192.0.2.7", 56, out, sizeof out);
	assert_string_equal(out, "192.0.2.7");
	netaddr_key_str("fe80::1", 64, out, sizeof out);
	assert_string_equal(out, "fe80::/64");
	netaddr_key_str("not-an-address", 56, out, sizeof out);
	assert_string_equal(out, "?not-an-address");
}

static void test_other_text_never_equals_an_address(void **state)
{
	(void)state;
	assert_false(same("peer-x", "ff00::", 56));
	assert_false(same("peer-x", "peer-y", 56));
	assert_true(same("peer-x", "peer-x", 56));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_is_itself),
		cmocka_unit_test(test_ipv6_prefix_56),
		cmocka_unit_test(test_ipv6_prefix_48_and_64),
		cmocka_unit_test(test_key_text),
		cmocka_unit_test(test_other_text_never_equals_an_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

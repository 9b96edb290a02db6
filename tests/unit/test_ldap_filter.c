/* Unit tests for src/directory/filter.c (RFC 4515 escaping of usernames
 * in LDAP filters) and ldap_dn_normalise from src/directory/ldap.c (DN
 * comparison for group members). Neither needs a directory server. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "directory/directory.h"
#include "directory/ldap.h"

/* --- directory_filter_escape --- */

static void test_escape_plain(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(directory_filter_escape("alice", out, sizeof out), 0);
	assert_string_equal(out, "alice");
	assert_int_equal(directory_filter_escape("", out, sizeof out), 0);
	assert_string_equal(out, "");
	/* Characters that are harmless in a filter value stay as they are. */
	assert_int_equal(directory_filter_escape("a.b-c_d@e=f&g|h!~%u", out, sizeof out), 0);
	assert_string_equal(out, "a.b-c_d@e=f&g|h!~%u");
}

static void test_escape_injection(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(directory_filter_escape("*)(uid=*", out, sizeof out), 0);
	assert_string_equal(out, "\\2a\\29\\28uid=\\2a");
	assert_int_equal(directory_filter_escape("*", out, sizeof out), 0);
	assert_string_equal(out, "\\2a");
}

static void test_escape_backslash(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(directory_filter_escape("a\\b", out, sizeof out), 0);
	assert_string_equal(out, "a\\5cb");
	/* An already escaped value is escaped again, not trusted. */
	assert_int_equal(directory_filter_escape("\\2a", out, sizeof out), 0);
	assert_string_equal(out, "\\5c2a");
}

static void test_escape_utf8_kept(void **state)
{
	(void)state;
	char out[64];
	/* é (2 bytes), € (3 bytes), 😀 (4 bytes). */
	const char *s = "J\xc3\xa9r\xc3\xb4me\xe2\x82\xac\xf0\x9f\x98\x80";
	assert_int_equal(directory_filter_escape(s, out, sizeof out), 0);
	assert_string_equal(out, s);
}

static void test_escape_invalid_utf8(void **state)
{
	(void)state;
	char out[64];
	/* A lone Latin-1 byte. */
	assert_int_equal(directory_filter_escape("J\xe9r", out, sizeof out), 0);
	assert_string_equal(out, "J\\e9r");
	/* A lone continuation byte. */
	assert_int_equal(directory_filter_escape("a\x80z", out, sizeof out), 0);
	assert_string_equal(out, "a\\80z");
	/* Overlong encoding of '*' must not sneak a wildcard through. */
	assert_int_equal(directory_filter_escape("\xc0\xaa", out, sizeof out), 0);
	assert_string_equal(out, "\\c0\\aa");
	/* A UTF-16 surrogate (U+D800) is not UTF-8. */
	assert_int_equal(directory_filter_escape("\xed\xa0\x80", out, sizeof out), 0);
	assert_string_equal(out, "\\ed\\a0\\80");
	/* Beyond U+10FFFF. */
	assert_int_equal(directory_filter_escape("\xf4\x90\x80\x80", out, sizeof out), 0);
	assert_string_equal(out, "\\f4\\90\\80\\80");
	/* A sequence cut short by the end of the string. */
	assert_int_equal(directory_filter_escape("x\xe2\x82", out, sizeof out), 0);
	assert_string_equal(out, "x\\e2\\82");
	/* A truncated lead byte followed by a valid character. */
	assert_int_equal(directory_filter_escape("\xc3(", out, sizeof out), 0);
	assert_string_equal(out, "\\c3\\28");
}

static void test_escape_overflow(void **state)
{
	(void)state;
	char out[8];
	/* Exactly fits: 7 bytes and the NUL. */
	assert_int_equal(directory_filter_escape("abcdefg", out, sizeof out), 0);
	assert_string_equal(out, "abcdefg");
	assert_int_equal(directory_filter_escape("abcdefgh", out, sizeof out), -1);
	/* "ab\2a" is 5 bytes, "ab\2a\2a" 8: one too many. */
	assert_int_equal(directory_filter_escape("ab*", out, sizeof out), 0);
	assert_string_equal(out, "ab\\2a");
	assert_int_equal(directory_filter_escape("ab**", out, sizeof out), -1);
	/* A multibyte character is never cut in half. */
	assert_int_equal(directory_filter_escape("abcde\xe2\x82\xac", out, sizeof out), -1);
	assert_int_equal(directory_filter_escape("", out, 0), -1);
	assert_int_equal(directory_filter_escape("", out, 1), 0);
	assert_string_equal(out, "");
}

/* --- directory_user_filter --- */

static void test_user_filter(void **state)
{
	(void)state;
	char out[128];
	assert_int_equal(directory_user_filter("(&(objectClass=person)(uid=%u))", "alice", out,
					       sizeof out),
			 0);
	assert_string_equal(out, "(&(objectClass=person)(uid=alice))");
	assert_int_equal(directory_user_filter("(uid=%u)", "*)(uid=*", out, sizeof out), 0);
	assert_string_equal(out, "(uid=\\2a\\29\\28uid=\\2a)");
}

static void test_user_filter_multiple(void **state)
{
	(void)state;
	char out[128];
	assert_int_equal(directory_user_filter("(|(uid=%u)(mail=%u)(cn=%u*))", "b*b", out,
					       sizeof out),
			 0);
	assert_string_equal(out, "(|(uid=b\\2ab)(mail=b\\2ab)(cn=b\\2ab*))");
	/* Other % sequences are left alone; %u at the very end works. */
	assert_int_equal(directory_user_filter("(x=50%)(y=%%u)(z=%u", "q", out, sizeof out), 0);
	assert_string_equal(out, "(x=50%)(y=%q)(z=q");
	assert_int_equal(directory_user_filter("(uid=%u)", "", out, sizeof out), 0);
	assert_string_equal(out, "(uid=)");
}

static void test_user_filter_overflow(void **state)
{
	(void)state;
	char out[16];
	/* "(uid=alice)" is 11 bytes. */
	assert_int_equal(directory_user_filter("(uid=%u)", "alice", out, sizeof out), 0);
	assert_string_equal(out, "(uid=alice)");
	assert_int_equal(directory_user_filter("(uid=%u)", "alicealice", out, sizeof out), -1);
	assert_int_equal(directory_user_filter("(uid=%u)(%u)", "abcd", out, sizeof out), -1);
	assert_int_equal(directory_user_filter("(uid=%u)", "a***", out, sizeof out), -1);
	assert_int_equal(directory_user_filter("(description=too long)", "", out, sizeof out),
			 -1);
}

/* --- ldap_dn_normalise --- */

static void test_dn_normalise_case_and_spaces(void **state)
{
	(void)state;
	char out[256];
	assert_int_equal(
		ldap_dn_normalise("CN=Staff, OU=Groups , DC=Example,DC=Org", out, sizeof out), 0);
	assert_string_equal(out, "cn=staff,ou=groups,dc=example,dc=org");
	assert_int_equal(ldap_dn_normalise("uid = Alice ,ou = People,dc=example,dc=org", out,
					   sizeof out),
			 0);
	assert_string_equal(out, "uid=alice,ou=people,dc=example,dc=org");
}

static void test_dn_normalise_equal_forms(void **state)
{
	(void)state;
	char a[256], b[256];
	assert_int_equal(ldap_dn_normalise("cn=Bob Smith,ou=People,dc=example,dc=org", a,
					   sizeof a),
			 0);
	assert_int_equal(ldap_dn_normalise("CN=bob smith , ou=people, DC=EXAMPLE, dc=org", b,
					   sizeof b),
			 0);
	assert_string_equal(a, b);
	/* An escaped comma stays part of the value, however it is escaped. */
	assert_int_equal(ldap_dn_normalise("cn=Smith\\, Bob,dc=example", a, sizeof a), 0);
	assert_int_equal(ldap_dn_normalise("cn=Smith\\2C Bob,dc=example", b, sizeof b), 0);
	assert_string_equal(a, b);
	assert_string_equal(a, "cn=smith\\2c bob,dc=example");
	/* A multivalued RDN keeps both halves. */
	assert_int_equal(ldap_dn_normalise("cn=A+uid=b,dc=x", a, sizeof a), 0);
	assert_string_equal(a, "cn=a+uid=b,dc=x");
}

/* Active Directory's ranged attributes (member;range=LOW-HIGH). */
static void test_range_next(void **state)
{
	(void)state;
	long next = 0;
	assert_int_equal(ldap_range_next("member;range=0-1499", &next), 1);
	assert_int_equal(next, 1500);
	assert_int_equal(ldap_range_next("Member;Range=1500-2999", &next), 1);
	assert_int_equal(next, 3000);
	assert_int_equal(ldap_range_next("member;range=3000-*", &next), 0);
	assert_int_equal(ldap_range_next("member", &next), -1);
	assert_int_equal(ldap_range_next("memberUid", &next), -1);
	assert_int_equal(ldap_range_next("member;range=0-", &next), -1);
	assert_int_equal(ldap_range_next("member;range=0-12x", &next), -1);
	assert_int_equal(ldap_range_next("member;range=", &next), -1);
}

static void test_dn_normalise_errors(void **state)
{
	(void)state;
	char out[256];
	char small[8];
	assert_int_equal(ldap_dn_normalise("not a dn", out, sizeof out), -1);
	assert_int_equal(ldap_dn_normalise("cn=a,,dc=b", out, sizeof out), -1);
	assert_int_equal(ldap_dn_normalise("=x,dc=b", out, sizeof out), -1);
	assert_int_equal(ldap_dn_normalise("cn=toolong,dc=example", small, sizeof small), -1);
	assert_int_equal(ldap_dn_normalise("cn=abc", small, sizeof small), 0);
	assert_string_equal(small, "cn=abc");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_plain),
		cmocka_unit_test(test_escape_injection),
		cmocka_unit_test(test_escape_backslash),
		cmocka_unit_test(test_escape_utf8_kept),
		cmocka_unit_test(test_escape_invalid_utf8),
		cmocka_unit_test(test_escape_overflow),
		cmocka_unit_test(test_user_filter),
		cmocka_unit_test(test_user_filter_multiple),
		cmocka_unit_test(test_user_filter_overflow),
		cmocka_unit_test(test_dn_normalise_case_and_spaces),
		cmocka_unit_test(test_dn_normalise_equal_forms),
		cmocka_unit_test(test_dn_normalise_errors),
		cmocka_unit_test(test_range_next),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for src/jid/jid.c: RFC 7622 address parsing with the PRECIS
 * profiles (RFC 8265) and IDNA2008 domain names. One test per behaviour;
 * most are tables. Non-ASCII text is written as UTF-8 in this file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "jid/jid.h"

struct valid_case {
	const char *in;
	const char *local;
	const char *domain;
	const char *resource;
};

/* An input of explicit length, so embedded NUL bytes survive. */
struct raw {
	const char *s;
	size_t n;
};
#define RAW(lit) { (lit), sizeof(lit) - 1 }

static void expect_jid(const char *in, size_t n, const char *local,
		       const char *domain, const char *resource)
{
	struct jid j;

	if (jid_parse(&j, in, n) != 0)
		fail_msg("rejected valid JID \"%s\"", in);
	assert_string_equal(j.local, local);
	assert_string_equal(j.domain, domain);
	assert_string_equal(j.resource, resource);
}

static void expect_table(const struct valid_case *t, size_t count)
{
	for (size_t i = 0; i < count; i++)
		expect_jid(t[i].in, strlen(t[i].in), t[i].local, t[i].domain,
			   t[i].resource);
}

static void expect_invalid(const char *in, size_t n)
{
	struct jid j;

	if (jid_parse(&j, in, n) != -1)
		fail_msg("accepted invalid JID \"%.*s\" as %s@%s/%s", (int)n,
			 in, j.local, j.domain, j.resource);
	assert_string_equal(j.domain, "");
}

static void expect_invalid_table(const char *const *t, size_t count)
{
	for (size_t i = 0; i < count; i++)
		expect_invalid(t[i], strlen(t[i]));
}

typedef int (*prep_fn)(const char *, size_t, char *, size_t);

static void expect_prep(prep_fn fn, const char *in, const char *want)
{
	char out[JID_PART_MAX + 1];
	int n = fn(in, strlen(in), out, sizeof out);

	if (want == NULL) {
		if (n != -1)
			fail_msg("accepted invalid part \"%s\" as \"%s\"", in,
				 out);
		return;
	}
	if (n < 0)
		fail_msg("rejected valid part \"%s\"", in);
	assert_int_equal(n, (int)strlen(want));
	assert_string_equal(out, want);
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const struct valid_case rfc7622_valid[] = {
	{ "juliet@example.com", "juliet", "example.com", "" },
	{ "juliet@example.com/foo", "juliet", "example.com", "foo" },
	{ "juliet@example.com/foo bar", "juliet", "example.com", "foo bar" },
	{ "juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar" },
	{ "foo\\20bar@example.com", "foo\\20bar", "example.com", "" },
	{ "fussball@example.com", "fussball", "example.com", "" },
	{ "fußball@example.com", "fußball", "example.com", "" },
	{ "π@example.com", "π", "example.com", "" },
	{ "Σ@example.com/foo", "σ", "example.com", "foo" },
	{ "σ@example.com/foo", "σ", "example.com", "foo" },
	{ "ς@example.com/foo", "ς", "example.com", "foo" },
	{ "king@example.com/♚", "king", "example.com", "♚" },
	{ "example.com", "", "example.com", "" },
	{ "example.com/foobar", "", "example.com", "foobar" },
	{ "a.example.com/b@example.net", "", "a.example.com", "b@example.net" },
};

/* RFC 7622 section 3.5.1. */
static void test_rfc7622_valid_examples(void **state)
{
	(void)state;
	expect_table(rfc7622_valid, COUNT(rfc7622_valid));
}

/* RFC 7622 section 3.5.2, less "juliet@example.com/ foo": see
 * test_resource_leading_space. */
static void test_rfc7622_invalid_examples(void **state)
{
	static const char *const t[] = {
		"\"juliet\"@example.com",
		"foo bar@example.com",
		"@example.com/",
		"henryⅣ@example.com",
		"♚@example.com",
		"juliet@",
		"/foobar",
	};

	(void)state;
	expect_invalid_table(t, COUNT(t));
}

/* OpaqueString allows U+0020 anywhere; the RFC 7622 example list calls a
 * leading space invalid, but no normative rule says so. */
static void test_resource_leading_space(void **state)
{
	(void)state;
	expect_jid("juliet@example.com/ foo", 23, "juliet", "example.com",
		   " foo");
}

static void test_localpart_case_mapped(void **state)
{
	static const struct valid_case t[] = {
		{ "JuLiEt@example.com", "juliet", "example.com", "" },
		{ "ΣΑΣ@example.com", "σας", "example.com", "" },
		{ "ÄÖÜ@example.com", "äöü", "example.com", "" },
		{ "\xc4\xb0@example.com", "i\xcc\x87", "example.com", "" },
		{ "\xe1\xbe\x88@example.com", "\xe1\xbe\x80", "example.com", "" },
		{ "ß@example.com", "ß", "example.com", "" },
	};

	(void)state;
	expect_table(t, COUNT(t));
	/* The lower case of DŽ is still a compatibility digraph. */
	expect_prep(jid_prep_local, "\xc7\x85", NULL);
}

static void test_resource_case_preserved(void **state)
{
	static const struct valid_case t[] = {
		{ "a@example.com/Home", "a", "example.com", "Home" },
		{ "a@example.com/ΣΑΣ", "a", "example.com", "ΣΑΣ" },
		{ "a@example.com/ＦＵＬＬ", "a", "example.com", "ＦＵＬＬ" },
	};

	(void)state;
	expect_table(t, COUNT(t));
}

/* UsernameCaseMapped maps fullwidth and halfwidth forms; the '@' this can
 * produce is still refused. */
static void test_localpart_width_mapped(void **state)
{
	static const struct valid_case t[] = {
		{ "ＪＵＬＩＥＴ@example.com", "juliet", "example.com", "" },
		{ "ｶ@example.com", "カ", "example.com", "" },
		{ "ｶﾞ@example.com", "ガ", "example.com", "" },
	};

	(void)state;
	expect_table(t, COUNT(t));
	expect_prep(jid_prep_local, "a＠b", NULL);
	expect_prep(jid_prep_local, "a／b", NULL);
	expect_prep(jid_prep_local, "a：b", NULL);
}

static void test_nfc(void **state)
{
	static const struct valid_case t[] = {
		{ "a\xcc\x81@example.com/e\xcc\x81", "á", "example.com", "é" },
		{ "x@example.com/\xe2\x84\xab", "x", "example.com", "Å" },
		{ "\xe1\x84\x80\xe1\x85\xa1@example.com", "가", "example.com", "" },
		{ "A\xcc\x8a@example.com", "å", "example.com", "" },
	};

	(void)state;
	expect_table(t, COUNT(t));
}

static void test_invalid_utf8(void **state)
{
	static const char *const bad[] = {
		"\xc0\xaf",         /* overlong '/' */
		"\xe0\x80\xaf",     /* overlong '/' */
		"\xed\xa0\x80",     /* surrogate */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"\xe2\x82",         /* truncated */
		"\x80",             /* stray continuation */
		"\xff",
		"a\xc3",
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < COUNT(bad); i++) {
		snprintf(buf, sizeof buf, "%s@example.com", bad[i]);
		expect_invalid(buf, strlen(buf));
		snprintf(buf, sizeof buf, "a@example.com/%s", bad[i]);
		expect_invalid(buf, strlen(buf));
		snprintf(buf, sizeof buf, "a@exa%smple.com", bad[i]);
		expect_invalid(buf, strlen(buf));
		expect_prep(jid_prep_local, bad[i], NULL);
		expect_prep(jid_prep_domain, bad[i], NULL);
		expect_prep(jid_prep_resource, bad[i], NULL);
	}
}

static void test_nul_rejected(void **state)
{
	static const struct raw t[] = {
		RAW("a\0b@example.com"),
		RAW("a@exam\0ple.com"),
		RAW("a@example.com/r\0"),
		RAW("a@example.com\0"),
		RAW("\0"),
	};
	char out[16];

	(void)state;
	for (size_t i = 0; i < COUNT(t); i++)
		expect_invalid(t[i].s, t[i].n);
	assert_int_equal(jid_prep_resource("a\0b", 3, out, sizeof out), -1);
	assert_int_equal(jid_prep_local("a\0b", 3, out, sizeof out), -1);
	assert_int_equal(jid_prep_domain("a\0b", 3, out, sizeof out), -1);
}

/* Builds "<rep * count>" into buf. */
static char *repeat(char *buf, const char *rep, size_t count)
{
	size_t n = strlen(rep);

	for (size_t i = 0; i < count; i++)
		memcpy(buf + i * n, rep, n);
	buf[count * n] = '\0';
	return buf;
}

static void expect_prep_len(prep_fn fn, const char *in, int want)
{
	char out[JID_PART_MAX + 1];

	assert_int_equal(fn(in, strlen(in), out, sizeof out), want);
}

/* 1023 bytes after normalisation, whatever the raw length. */
static void test_part_length_limits(void **state)
{
	static char in[1 << 15];
	char label[64];
	char name[300];
	struct jid j;

	(void)state;
	expect_prep_len(jid_prep_local, repeat(in, "a", 1023), 1023);
	expect_prep_len(jid_prep_local, repeat(in, "a", 1024), -1);
	expect_prep_len(jid_prep_local, repeat(in, "é", 511), 1022);
	expect_prep_len(jid_prep_local, repeat(in, "é", 512), -1);
	/* 3069 raw bytes that map down to 1023. */
	expect_prep_len(jid_prep_local, repeat(in, "Ａ", 1023), 1023);
	expect_prep_len(jid_prep_local, repeat(in, "Ａ", 1024), -1);
	expect_prep_len(jid_prep_resource, repeat(in, "R", 1023), 1023);
	expect_prep_len(jid_prep_resource, repeat(in, "R", 1024), -1);
	expect_prep_len(jid_prep_resource, repeat(in, "😀", 255), 1020);
	expect_prep_len(jid_prep_resource, repeat(in, "😀", 256), -1);
	expect_prep_len(jid_prep_resource, repeat(in, "x", 1 << 14), -1);

	/* DNS bounds the domainpart well below 1023: 63-byte labels, 253
	 * bytes in all. */
	repeat(label, "a", 63);
	snprintf(name, sizeof name, "%s.example", label);
	expect_prep_len(jid_prep_domain, name, 71);
	snprintf(name, sizeof name, "a%s.example", label);
	expect_prep_len(jid_prep_domain, name, -1);
	snprintf(name, sizeof name, "%s.%s.%s.%.61s", label, label, label,
		 label);
	expect_prep_len(jid_prep_domain, name, 253);
	snprintf(name, sizeof name, "%s.%s.%s.%.62s", label, label, label,
		 label);
	expect_prep_len(jid_prep_domain, name, -1);

	/* A whole JID with maximal local and resource parts, then one byte
	 * too many in each. */
	memset(in, 'a', 1023);
	in[1023] = '@';
	memcpy(in + 1024, label, 63);
	in[1024 + 63] = '/';
	memset(in + 1024 + 64, 'r', 1024);
	assert_int_equal(jid_parse(&j, in, 1024 + 64 + 1023), 0);
	assert_int_equal(strlen(j.local), 1023);
	assert_int_equal(strlen(j.resource), 1023);
	expect_invalid(in, 1024 + 64 + 1024);
	expect_invalid(repeat(in, "a", 1024), 1024);
	in[1024] = '@';
	memcpy(in + 1025, "example.com", 11);
	expect_invalid(in, 1036);
}

static void test_separators(void **state)
{
	static const struct valid_case t[] = {
		{ "a@example.com/b@c/d", "a", "example.com", "b@c/d" },
		{ "example.com/a@b", "", "example.com", "a@b" },
		{ "example.com//", "", "example.com", "/" },
		{ "a@example.com/@", "a", "example.com", "@" },
	};
	static const char *const bad[] = {
		"a@b@example.com",
		"a@@example.com",
	};

	(void)state;
	expect_table(t, COUNT(t));
	expect_invalid_table(bad, COUNT(bad));
}

static void test_empty_parts(void **state)
{
	static const char *const bad[] = {
		"@example.com", "a@example.com/", "a@/r", "/", "@", "@/",
		"a@", "a@.", ".", "a@./r", "example.com/",
	};

	(void)state;
	expect_invalid_table(bad, COUNT(bad));
	expect_invalid("", 0);
	expect_invalid(NULL, 0);
	expect_prep(jid_prep_local, "", NULL);
	expect_prep(jid_prep_domain, "", NULL);
	expect_prep(jid_prep_resource, "", NULL);
}

static void test_control_chars(void **state)
{
	static const char *const bad[] = {
		"a\tb", "a\nb", "\x01", "a\x7f", "a\xc2\x85",   /* U+0085 */
		"a\u200bb",                             /* ZWSP */
		"a\u202eb",                             /* RLO */
		"a\xef\xbb\xbf",                                 /* BOM */
		"a\u00adb",                                 /* SHY */
	};

	(void)state;
	for (size_t i = 0; i < COUNT(bad); i++) {
		expect_prep(jid_prep_local, bad[i], NULL);
		expect_prep(jid_prep_resource, bad[i], NULL);
	}
}

/* Spaces are refused in a localpart; in a resourcepart every Zs becomes
 * U+0020. */
static void test_spaces(void **state)
{
	(void)state;
	expect_prep(jid_prep_local, "a b", NULL);
	expect_prep(jid_prep_local, " a", NULL);
	expect_prep(jid_prep_local, "a\u00a0b", NULL);
	expect_prep(jid_prep_local, "a\u3000b", NULL);
	expect_prep(jid_prep_resource, "a b", "a b");
	expect_prep(jid_prep_resource, " ", " ");
	expect_prep(jid_prep_resource, "a\u00a0b", "a b");
	expect_prep(jid_prep_resource, "a\u3000b", "a b");
	expect_prep(jid_prep_resource, "a\u2003b", "a b");
}

static void test_localpart_ascii(void **state)
{
	static const char *const bad[] = {
		"a\"b", "a&b", "a'b", "a/b", "a:b", "a<b", "a>b", "a@b",
	};
	static const char *const good =
		"!#$%*+-.0123456789;=?[\\]^_`abcxyz{|}~";

	(void)state;
	for (size_t i = 0; i < COUNT(bad); i++)
		expect_prep(jid_prep_local, bad[i], NULL);
	expect_prep(jid_prep_local, good, good);
	expect_prep(jid_prep_resource, "a\"&'/:<>@b", "a\"&'/:<>@b");
}

/* IdentifierClass refuses symbols, punctuation and compatibility forms
 * outside ASCII; FreeformClass takes them. */
static void test_symbols_and_compat(void **state)
{
	static const struct {
		const char *in;
		const char *resource;
	} t[] = {
		{ "♚", "♚" },       /* So */
		{ "€", "€" },       /* Sc */
		{ "a¿b", "a¿b" },   /* Po */
		{ "Ⅳ", "Ⅳ" },       /* Nl, compat */
		{ "ﬁ", "ﬁ" },       /* compat ligature */
		{ "²", "²" },       /* No */
		{ "😀", "😀" },
	};

	(void)state;
	for (size_t i = 0; i < COUNT(t); i++) {
		expect_prep(jid_prep_local, t[i].in, NULL);
		expect_prep(jid_prep_resource, t[i].in, t[i].resource);
	}
	expect_prep(jid_prep_local, "日本語", "日本語");
	expect_prep(jid_prep_local, "россия", "россия");
	expect_prep(jid_prep_local, "١٢٣", NULL); /* AN first: Bidi Rule */
}

static void test_unassigned_and_private(void **state)
{
	static const char *const bad[] = {
		"a\xcd\xb8",         /* U+0378 unassigned */
		"a\xee\x80\x80",     /* U+E000 private use */
		"a\xef\xbf\xbf",     /* U+FFFF noncharacter */
		"a\xf3\xa0\x80\x81", /* U+E0001 language tag */
		"\xe1\x84\x80",      /* U+1100 old Hangul jamo alone */
		"a\u0640b",     /* U+0640 tatweel, RFC 5892 exception */
	};

	(void)state;
	for (size_t i = 0; i < COUNT(bad); i++) {
		expect_prep(jid_prep_local, bad[i], NULL);
		expect_prep(jid_prep_resource, bad[i], NULL);
	}
}

/* RFC 5892 appendix A, which PRECIS uses for CONTEXTJ and CONTEXTO. */
static void test_context_rules(void **state)
{
	(void)state;
	/* ZWNJ after a virama; ZWNJ and ZWJ with no reason to be there. */
	expect_prep(jid_prep_local, "क्\u200cष", "क्\u200cष");
	expect_prep(jid_prep_local, "क्\u200dष", "क्\u200dष");
	expect_prep(jid_prep_local, "a\u200cb", NULL);
	expect_prep(jid_prep_local, "a\u200db", NULL);
	/* ZWNJ between a dual-joining and a right-joining Arabic letter. */
	expect_prep(jid_prep_resource, "\u0628\u200c\u0627",
		    "\u0628\u200c\u0627");
	expect_prep(jid_prep_resource, "\u0627\u200c\u0628", NULL);
	/* MIDDLE DOT only between two 'l' (Catalan). */
	expect_prep(jid_prep_local, "l·l", "l·l");
	expect_prep(jid_prep_local, "a·b", NULL);
	expect_prep(jid_prep_resource, "·", NULL);
	/* Greek keraia before Greek; Hebrew geresh after Hebrew. */
	expect_prep(jid_prep_resource, "\u0375α", "\u0375α");
	expect_prep(jid_prep_resource, "\u0375a", NULL);
	expect_prep(jid_prep_resource, "א\u05f3", "א\u05f3");
	expect_prep(jid_prep_resource, "a\u05f3", NULL);
	/* Katakana middle dot needs kana or Han somewhere. */
	expect_prep(jid_prep_local, "カ・カ", "カ・カ");
	expect_prep(jid_prep_resource, "a・b", NULL);
	/* Arabic-Indic and extended Arabic-Indic digits do not mix. */
	expect_prep(jid_prep_resource, "\u0660\u0661", "\u0660\u0661");
	expect_prep(jid_prep_resource, "\u06f0\u06f1", "\u06f0\u06f1");
	expect_prep(jid_prep_resource, "\u0660\u06f1", NULL);
}

/* RFC 5893 applies to localparts holding right-to-left code points. */
static void test_bidi_rule(void **state)
{
	(void)state;
	expect_prep(jid_prep_local, "אב", "אב");
	expect_prep(jid_prep_local, "א1", "א1");
	expect_prep(jid_prep_local, "عربي", "عربي");
	expect_prep(jid_prep_local, "aא", NULL);
	expect_prep(jid_prep_local, "אa", NULL);
	expect_prep(jid_prep_local, "1א", NULL);
	expect_prep(jid_prep_local, "א-", NULL);
	expect_prep(jid_prep_local, "א1\u0661", NULL);
	/* No Bidi Rule for OpaqueString. */
	expect_prep(jid_prep_resource, "aא", "aא");
}

static void test_domain_idna(void **state)
{
	static const struct {
		const char *in;
		const char *want;
	} t[] = {
		{ "EXAMPLE.com", "example.com" },
		{ "Bücher.example", "bücher.example" },
		{ "BÜCHER.example", "bücher.example" },
		{ "xn--bcher-kva.example", "bücher.example" },
		{ "XN--BCHER-KVA.EXAMPLE", "bücher.example" },
		{ "Bu\u0308cher.example", "bücher.example" },
		{ "ＥＸＡＭＰＬＥ．com", "example.com" },
		{ "example。com", "example.com" },
		{ "faß.de", "faß.de" },
		{ "日本語.jp", "日本語.jp" },
		{ "a-b.c-d.example", "a-b.c-d.example" },
		{ "1a.example", "1a.example" },
		{ "localhost", "localhost" },
	};

	(void)state;
	for (size_t i = 0; i < COUNT(t); i++)
		expect_prep(jid_prep_domain, t[i].in, t[i].want);
}

static void test_domain_invalid(void **state)
{
	static const char *const bad[] = {
		"exa mple.com", "a@b", "a_b.example", "-a.example",
		"a-.example", "a..b", ".example", "example.com..",
		"xn--zz.example", "xn--.example", "a\u200db.example",
		"aא.example", "a/b", "a:b", "[", "[]", "a\\b", "☃ .example",
		"a.example。",
	};

	(void)state;
	for (size_t i = 0; i < COUNT(bad); i++)
		expect_prep(jid_prep_domain, bad[i], NULL);
}

/* RFC 7622 section 3.2: one trailing dot is stripped before anything else. */
static void test_domain_trailing_dot(void **state)
{
	static const struct valid_case t[] = {
		{ "juliet@example.com./r", "juliet", "example.com", "r" },
		{ "Bücher.example.", "", "bücher.example", "" },
		{ "192.0.2.1.", "", "192.0.2.1", "" },
		{ "[::1].", "", "[::1]", "" },
	};

	(void)state;
	expect_table(t, COUNT(t));
	expect_prep(jid_prep_domain, "example.com..", NULL);
	expect_prep(jid_prep_domain, ".", NULL);
}

static void test_domain_ip_literals(void **state)
{
	static const struct {
		const char *in;
		const char *want;
	} t[] = {
		{ "[::1]", "[::1]" },
		{ "[2001:DB8::1]", "[2001:DB8::1]" },
		{ "[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]" },
		{ "192.0.2.1", "192.0.2.1" },
		{ "１９２．０．２．１", "192.0.2.1" },
		{ "[::1", NULL },
		{ "::1", NULL },
		{ "[192.0.2.1]", NULL },
		{ "[v1.x]", NULL },
		{ "[::1%eth0]", NULL },
		{ "[::1]x", NULL },
		/* Names a resolver would read as an address, and numeric
		 * top-level labels. */
		{ "127.1", NULL },
		{ "0x7f000001", NULL },
		{ "2130706433", NULL },
		{ "192.0.2.256", NULL },
		{ "192.0.02.1", NULL },
		{ "example.123", NULL },
	};

	(void)state;
	for (size_t i = 0; i < COUNT(t); i++)
		expect_prep(jid_prep_domain, t[i].in, t[i].want);
	expect_jid("juliet@[2001:db8::1]/r", 22, "juliet", "[2001:db8::1]",
		   "r");
}

static void test_format(void **state)
{
	struct jid j;
	char out[3 * (JID_PART_MAX + 1)];

	(void)state;
	assert_int_equal(jid_parse(&j, "Juliet@Example.com/Balcony", 26), 0);
	assert_int_equal(jid_format(&j, out, sizeof out), 26);
	assert_string_equal(out, "juliet@example.com/Balcony");
	assert_int_equal(jid_format_bare(&j, out, sizeof out), 18);
	assert_string_equal(out, "juliet@example.com");

	/* Exact fit, then one byte short: out is left alone. */
	assert_int_equal(jid_format(&j, out, 27), 26);
	strcpy(out, "untouched");
	assert_int_equal(jid_format(&j, out, 26), -1);
	assert_string_equal(out, "untouched");
	assert_int_equal(jid_format_bare(&j, out, 18), -1);
	assert_int_equal(jid_format(&j, out, 0), -1);

	assert_int_equal(jid_parse(&j, "example.com/r", 13), 0);
	assert_int_equal(jid_format(&j, out, sizeof out), 13);
	assert_string_equal(out, "example.com/r");
	assert_int_equal(jid_format_bare(&j, out, sizeof out), 11);
	assert_string_equal(out, "example.com");
}

static void test_prep_cap(void **state)
{
	char out[8];

	(void)state;
	assert_int_equal(jid_prep_local("abc", 3, out, 3), -1);
	assert_int_equal(jid_prep_local("abc", 3, out, 4), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(jid_prep_domain("ab.cd", 5, out, 5), -1);
	assert_int_equal(jid_prep_domain("ab.cd", 5, out, 6), 5);
	assert_int_equal(jid_prep_resource("é", 2, out, 2), -1);
	assert_int_equal(jid_prep_resource("é", 2, out, 3), 2);
	/* in need not be NUL terminated. */
	assert_int_equal(jid_prep_local("ABCDEF", 2, out, sizeof out), 2);
	assert_string_equal(out, "ab");
}

/* Every accepted address formats to a string that parses back to itself. */
static void test_roundtrip(void **state)
{
	static const char *const t[] = {
		"ΣΑΣ@Bücher.example./ΣΑΣ",
		"ＪＵＬＩＥＴ@ＥＸＡＭＰＬＥ．com/ＦＵＬＬ",
		"a@[::1]/b@c/d",
		"xn--bcher-kva.example/x y",
		"ｶﾞ@１９２．０．２．１/\xe2\x84\xab",
	};
	struct jid a, b;
	char out[3 * (JID_PART_MAX + 1)];

	(void)state;
	for (size_t i = 0; i < COUNT(rfc7622_valid) + COUNT(t); i++) {
		const char *in = i < COUNT(t) ? t[i]
					      : rfc7622_valid[i - COUNT(t)].in;
		int n;

		assert_int_equal(jid_parse(&a, in, strlen(in)), 0);
		n = jid_format(&a, out, sizeof out);
		assert_true(n > 0);
		assert_int_equal(jid_parse(&b, out, (size_t)n), 0);
		assert_memory_equal(&a, &b, sizeof a);
	}
}

static void *parse_many(void *arg)
{
	size_t *errors = arg;
	struct jid j;

	for (int round = 0; round < 200; round++) {
		for (size_t i = 0; i < COUNT(rfc7622_valid); i++) {
			const struct valid_case *c = &rfc7622_valid[i];

			if (jid_parse(&j, c->in, strlen(c->in)) != 0 ||
			    strcmp(j.local, c->local) != 0 ||
			    strcmp(j.domain, c->domain) != 0 ||
			    strcmp(j.resource, c->resource) != 0)
				(*errors)++;
		}
	}
	return NULL;
}

/* No shared state: threads parsing at once all get the right answer. */
static void test_threads(void **state)
{
	pthread_t th[4];
	size_t errors[4] = { 0 };

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, parse_many,
						&errors[i]), 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(errors[i], 0);
	}
}

/* RFC 8266: spaces mapped, trimmed, collapsed; NFKC; case only in the
 * comparison form. */
static void test_nickname(void **state)
{
	(void)state;
	char out[JID_PART_MAX + 1];
	assert_int_equal(jid_prep_nickname("  Alice   Smith ", 16, out, sizeof out), 11);
	assert_string_equal(out, "Alice Smith");
	assert_true(jid_nickname_key("  Alice   Smith ", 16, out, sizeof out) > 0);
	assert_string_equal(out, "alice smith");
	/* Fullwidth letters and a no-break space become their plain forms. */
	const char *wide = "\xef\xbc\xa1" "li\xc2\xa0" "ce";
	assert_true(jid_prep_nickname(wide, strlen(wide), out, sizeof out) > 0);
	assert_string_equal(out, "Ali ce");
	char a[JID_PART_MAX + 1], b[JID_PART_MAX + 1];
	assert_true(jid_nickname_key("ALICE", 5, a, sizeof a) > 0);
	assert_true(jid_nickname_key("\xef\xbd\x81" "lice", 7, b, sizeof b) > 0);
	assert_string_equal(a, b);
	assert_int_equal(jid_prep_nickname("   ", 3, out, sizeof out), -1);
	assert_int_equal(jid_prep_nickname("a\x07b", 3, out, sizeof out), -1);
	assert_int_equal(jid_prep_nickname("", 0, out, sizeof out), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc7622_valid_examples),
		cmocka_unit_test(test_rfc7622_invalid_examples),
		cmocka_unit_test(test_resource_leading_space),
		cmocka_unit_test(test_localpart_case_mapped),
		cmocka_unit_test(test_resource_case_preserved),
		cmocka_unit_test(test_localpart_width_mapped),
		cmocka_unit_test(test_nfc),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_nul_rejected),
		cmocka_unit_test(test_part_length_limits),
		cmocka_unit_test(test_separators),
		cmocka_unit_test(test_empty_parts),
		cmocka_unit_test(test_control_chars),
		cmocka_unit_test(test_spaces),
		cmocka_unit_test(test_localpart_ascii),
		cmocka_unit_test(test_symbols_and_compat),
		cmocka_unit_test(test_unassigned_and_private),
		cmocka_unit_test(test_context_rules),
		cmocka_unit_test(test_bidi_rule),
		cmocka_unit_test(test_domain_idna),
		cmocka_unit_test(test_domain_invalid),
		cmocka_unit_test(test_domain_trailing_dot),
		cmocka_unit_test(test_domain_ip_literals),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_prep_cap),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_nickname),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

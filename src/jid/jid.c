/* XMPP addresses (RFC 7622). The PRECIS rules (RFC 8264, RFC 8265) for the
 * localpart and resourcepart are computed here from ICU's character
 * properties; the domainpart goes through libidn2 (IDNA2008 with UTS #46
 * mapping). The reasons behind each choice, and where this departs from the
 * letter of the RFCs, are in docs/decisions/0002-jid-normalisation.md. */
#include "jid/jid.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <idn2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uscript.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

/* Normalisation may shrink a part (a fullwidth letter is 3 bytes and maps to
 * 1), so a raw part may be up to three times the normalised limit. Anything
 * longer cannot normalise to a valid part in practice and is refused before
 * any work is done. */
#define JID_RAW_MAX (3 * JID_PART_MAX)
/* UTF-16 working buffers: a UTF-8 string never has more UTF-16 units than
 * bytes, so a raw part always fits; mappings that grow past this fail. */
#define JID_WORK_MAX JID_RAW_MAX
/* A whole address: three raw parts and two separators. */
#define JID_INPUT_MAX (3 * JID_RAW_MAX + 2)

/* libidn2: UTS #46 non-transitional mapping (lower-cases, maps fullwidth
 * forms and ideographic full stops) followed by IDNA2008 validation. STD3
 * rules are not asked for because libidn2 2.3 then drops disallowed ASCII
 * silently ("a b" becomes "ab"); the LDH check below refuses it instead. */
#define JID_IDN2_FLAGS (IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL)

/* RFC 8264 section 8 derived property values. FREE_PVAL stands for
 * "FREE_PVAL in FreeformClass, ID_DIS in IdentifierClass". */
enum precis_prop {
	PRECIS_PVALID,
	PRECIS_FREE_PVAL,
	PRECIS_CONTEXTJ,
	PRECIS_CONTEXTO,
	PRECIS_DISALLOWED,
	PRECIS_UNASSIGNED
};

enum precis_class { PRECIS_IDENTIFIER, PRECIS_FREEFORM };

/* Checks that s[0..n) is well-formed UTF-8 (Unicode table 3-7: no overlong
 * forms, surrogates or values above U+10FFFF) and holds no NUL byte. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xbf;
		size_t need;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else {
			return false;
		}
		if (n - i - 1 < need || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		i += need + 1;
	}
	return true;
}

/* Common entry check for the three jid_prep_* functions. */
static bool raw_part_ok(const char *in, size_t n, const char *out, size_t cap)
{
	return in != NULL && out != NULL && cap > 0 && n > 0 &&
	       n <= JID_RAW_MAX && utf8_valid((const unsigned char *)in, n);
}

/* Copies s[0..n) and a NUL into out, refusing parts over the RFC 7622 limit
 * or a buffer that is too small. */
static int copy_out(const char *s, size_t n, char *out, size_t cap)
{
	if (n == 0 || n > JID_PART_MAX || n >= cap)
		return -1;
	memcpy(out, s, n);
	out[n] = '\0';
	return (int)n;
}

static int32_t utf8_to_utf16(const char *in, size_t n, UChar *out)
{
	UErrorCode err = U_ZERO_ERROR;
	int32_t len = 0;

	u_strFromUTF8(out, JID_WORK_MAX, &len, in, (int32_t)n, &err);
	if (U_FAILURE(err) || len > JID_WORK_MAX)
		return -1;
	return len;
}

static int utf16_to_out(const UChar *s, int32_t n, char *out, size_t cap)
{
	char buf[JID_PART_MAX + 1];
	UErrorCode err = U_ZERO_ERROR;
	int32_t len = 0;

	u_strToUTF8(buf, (int32_t)sizeof buf, &len, s, n, &err);
	if (U_FAILURE(err) || len < 0 || (size_t)len >= sizeof buf)
		return -1;
	return copy_out(buf, (size_t)len, out, cap);
}

/* Appends c to out[*o..cap); false when it does not fit. */
static bool put_cp(UChar *out, int32_t *o, int32_t cap, UChar32 c)
{
	bool fail = false;

	U16_APPEND(out, *o, cap, c, fail);
	return !fail;
}

/* RFC 5892 section 2.6, which RFC 8264 applies unchanged (category F).
 * Returns -1 for code points that are not exceptions. */
static int exception_property(UChar32 c)
{
	switch (c) {
	case 0x00df: case 0x03c2: case 0x06fd: case 0x06fe: case 0x0f0b:
	case 0x3007:
		return PRECIS_PVALID;
	case 0x00b7: case 0x0375: case 0x05f3: case 0x05f4: case 0x30fb:
		return PRECIS_CONTEXTO;
	case 0x0640: case 0x07fa: case 0x302e: case 0x302f: case 0x303b:
		return PRECIS_DISALLOWED;
	default:
		break;
	}
	if ((c >= 0x0660 && c <= 0x0669) || (c >= 0x06f0 && c <= 0x06f9))
		return PRECIS_CONTEXTO;
	if (c >= 0x3031 && c <= 0x3035)
		return PRECIS_DISALLOWED;
	return -1;
}

/* Category Q: toNFKC(cp) != cp. A code point with only a canonical
 * decomposition (U+00E9) is not in Q because NFKC recomposes it. */
static bool has_compat(const UNormalizer2 *nfkc, UChar32 c)
{
	UChar buf[2];
	int32_t len = 0;
	UErrorCode err = U_ZERO_ERROR;
	UBool same;

	U16_APPEND_UNSAFE(buf, len, c);
	same = unorm2_isNormalized(nfkc, buf, len, &err);
	return U_FAILURE(err) || !same;
}

/* The derived property of RFC 8264 section 8, in its order of steps; the
 * categories of section 9 are read from ICU's Unicode data. Category G
 * (BackwardCompatible) is empty in every published version. */
static enum precis_prop precis_property(const UNormalizer2 *nfkc, UChar32 c)
{
	int exc = exception_property(c);
	int8_t gc;
	int32_t hst;

	if (exc >= 0)
		return (enum precis_prop)exc;
	gc = u_charType(c);
	if (gc == U_UNASSIGNED &&
	    !u_hasBinaryProperty(c, UCHAR_NONCHARACTER_CODE_POINT))
		return PRECIS_UNASSIGNED;
	if (c >= 0x21 && c <= 0x7e)
		return PRECIS_PVALID;
	if (u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL))
		return PRECIS_CONTEXTJ;
	hst = u_getIntPropertyValue(c, UCHAR_HANGUL_SYLLABLE_TYPE);
	if (hst == U_HST_LEADING_JAMO || hst == U_HST_VOWEL_JAMO ||
	    hst == U_HST_TRAILING_JAMO)
		return PRECIS_DISALLOWED;
	if (u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT) ||
	    u_hasBinaryProperty(c, UCHAR_NONCHARACTER_CODE_POINT))
		return PRECIS_DISALLOWED;
	if (gc == U_CONTROL_CHAR)
		return PRECIS_DISALLOWED;
	if (has_compat(nfkc, c))
		return PRECIS_FREE_PVAL;
	switch (gc) {
	case U_LOWERCASE_LETTER: case U_UPPERCASE_LETTER:
	case U_OTHER_LETTER: case U_DECIMAL_DIGIT_NUMBER:
	case U_MODIFIER_LETTER: case U_NON_SPACING_MARK:
	case U_COMBINING_SPACING_MARK:
		return PRECIS_PVALID;
	case U_TITLECASE_LETTER: case U_LETTER_NUMBER:
	case U_OTHER_NUMBER: case U_ENCLOSING_MARK:
	case U_SPACE_SEPARATOR:
	case U_MATH_SYMBOL: case U_CURRENCY_SYMBOL:
	case U_MODIFIER_SYMBOL: case U_OTHER_SYMBOL:
	case U_CONNECTOR_PUNCTUATION: case U_DASH_PUNCTUATION:
	case U_START_PUNCTUATION: case U_END_PUNCTUATION:
	case U_INITIAL_PUNCTUATION: case U_FINAL_PUNCTUATION:
	case U_OTHER_PUNCTUATION:
		return PRECIS_FREE_PVAL;
	default:
		return PRECIS_DISALLOWED;
	}
}

static bool script_is(UChar32 c, UScriptCode want)
{
	UErrorCode err = U_ZERO_ERROR;
	UScriptCode sc = uscript_getScript(c, &err);

	return U_SUCCESS(err) && sc == want;
}

/* RFC 5892 appendix A.1: ZERO WIDTH NON-JOINER. s[start..end) is the ZWNJ. */
static bool zwnj_ok(const UChar *s, int32_t n, int32_t start, int32_t end)
{
	int32_t i = start;
	UChar32 c;
	int32_t jt;
	bool left = false, right = false;

	if (i > 0) {
		U16_PREV(s, 0, i, c);
		if (u_getCombiningClass(c) == 9)
			return true;
	}
	i = start;
	while (i > 0) {
		U16_PREV(s, 0, i, c);
		jt = u_getIntPropertyValue(c, UCHAR_JOINING_TYPE);
		if (jt == U_JT_TRANSPARENT)
			continue;
		left = jt == U_JT_LEFT_JOINING || jt == U_JT_DUAL_JOINING;
		break;
	}
	i = end;
	while (i < n) {
		U16_NEXT(s, i, n, c);
		jt = u_getIntPropertyValue(c, UCHAR_JOINING_TYPE);
		if (jt == U_JT_TRANSPARENT)
			continue;
		right = jt == U_JT_RIGHT_JOINING || jt == U_JT_DUAL_JOINING;
		break;
	}
	return left && right;
}

/* True when some code point in s lies in [lo, hi]. */
static bool has_range(const UChar *s, int32_t n, UChar32 lo, UChar32 hi)
{
	for (int32_t i = 0; i < n;) {
		UChar32 c;

		U16_NEXT(s, i, n, c);
		if (c >= lo && c <= hi)
			return true;
	}
	return false;
}

/* The contextual rules of RFC 5892 appendix A for the CONTEXTJ or CONTEXTO
 * code point c at s[start..end). */
static bool context_ok(const UChar *s, int32_t n, int32_t start, int32_t end,
		       UChar32 c)
{
	UChar32 before = -1, after = -1;
	int32_t i;

	if (start > 0) {
		i = start;
		U16_PREV(s, 0, i, before);
	}
	if (end < n) {
		i = end;
		U16_NEXT(s, i, n, after);
	}
	switch (c) {
	case 0x200c:
		return zwnj_ok(s, n, start, end);
	case 0x200d:
		return before >= 0 && u_getCombiningClass(before) == 9;
	case 0x00b7:
		return before == 0x6c && after == 0x6c;
	case 0x0375:
		return after >= 0 && script_is(after, USCRIPT_GREEK);
	case 0x05f3: case 0x05f4:
		return before >= 0 && script_is(before, USCRIPT_HEBREW);
	case 0x30fb:
		for (i = 0; i < n;) {
			UChar32 d;

			U16_NEXT(s, i, n, d);
			if (script_is(d, USCRIPT_HIRAGANA) ||
			    script_is(d, USCRIPT_KATAKANA) ||
			    script_is(d, USCRIPT_HAN))
				return true;
		}
		return false;
	default:
		break;
	}
	if (c >= 0x0660 && c <= 0x0669)
		return !has_range(s, n, 0x06f0, 0x06f9);
	if (c >= 0x06f0 && c <= 0x06f9)
		return !has_range(s, n, 0x0660, 0x0669);
	return false;
}

/* The behavioural rules (RFC 8264 section 7 step 6): every code point of the
 * enforced string must be allowed by the string class. */
static int precis_check(const UChar *s, int32_t n, enum precis_class cls)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&err);

	if (U_FAILURE(err))
		return -1;
	for (int32_t i = 0; i < n;) {
		int32_t start = i;
		UChar32 c;

		U16_NEXT(s, i, n, c);
		switch (precis_property(nfkc, c)) {
		case PRECIS_PVALID:
			break;
		case PRECIS_FREE_PVAL:
			if (cls != PRECIS_FREEFORM)
				return -1;
			break;
		case PRECIS_CONTEXTJ:
		case PRECIS_CONTEXTO:
			if (!context_ok(s, n, start, i, c))
				return -1;
			break;
		default:
			return -1;
		}
	}
	return 0;
}

/* The Bidi Rule (RFC 5893 section 2), which UsernameCaseMapped applies to
 * strings holding right-to-left code points. Such a string must be an RTL
 * label: an LTR label may not hold R, AL or AN at all (rule 5). */
static int bidi_check(const UChar *s, int32_t n)
{
	bool rtl = false, en = false, an = false;
	int32_t i = 0, last = -1;
	UChar32 c;

	while (i < n) {
		int32_t d;

		U16_NEXT(s, i, n, c);
		d = u_charDirection(c);
		if (d == U_RIGHT_TO_LEFT || d == U_RIGHT_TO_LEFT_ARABIC ||
		    d == U_ARABIC_NUMBER)
			rtl = true;
	}
	if (!rtl)
		return 0;
	i = 0;
	U16_NEXT(s, i, n, c);
	if (u_charDirection(c) != U_RIGHT_TO_LEFT &&
	    u_charDirection(c) != U_RIGHT_TO_LEFT_ARABIC)
		return -1;
	for (i = 0; i < n;) {
		int32_t d;

		U16_NEXT(s, i, n, c);
		d = u_charDirection(c);
		switch (d) {
		case U_RIGHT_TO_LEFT: case U_RIGHT_TO_LEFT_ARABIC:
		case U_ARABIC_NUMBER: case U_EUROPEAN_NUMBER:
		case U_EUROPEAN_NUMBER_SEPARATOR:
		case U_COMMON_NUMBER_SEPARATOR:
		case U_EUROPEAN_NUMBER_TERMINATOR:
		case U_OTHER_NEUTRAL: case U_BOUNDARY_NEUTRAL:
		case U_DIR_NON_SPACING_MARK:
			break;
		default:
			return -1;
		}
		en = en || d == U_EUROPEAN_NUMBER;
		an = an || d == U_ARABIC_NUMBER;
		if (d != U_DIR_NON_SPACING_MARK)
			last = d;
	}
	if (en && an)
		return -1;
	if (last != U_RIGHT_TO_LEFT && last != U_RIGHT_TO_LEFT_ARABIC &&
	    last != U_EUROPEAN_NUMBER && last != U_ARABIC_NUMBER)
		return -1;
	return 0;
}

/* RFC 7622 section 3.3.1: code points that IdentifierClass allows but a
 * localpart may not hold. */
static bool local_excluded(const UChar *s, int32_t n)
{
	for (int32_t i = 0; i < n; i++) {
		switch (s[i]) {
		case '"': case '&': case '\'': case '/':
		case ':': case '<': case '>': case '@':
			return true;
		default:
			break;
		}
	}
	return false;
}

/* UsernameCaseMapped width mapping: fullwidth and halfwidth forms become
 * their decomposition mapping (always a single code point today). */
static int32_t map_width(const UChar *in, int32_t n, UChar *out)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&err);
	int32_t o = 0;

	if (U_FAILURE(err))
		return -1;
	for (int32_t i = 0; i < n;) {
		UChar32 c;
		int32_t dt;

		U16_NEXT(in, i, n, c);
		dt = u_getIntPropertyValue(c, UCHAR_DECOMPOSITION_TYPE);
		if (dt == U_DT_WIDE || dt == U_DT_NARROW) {
			UChar d[8];
			int32_t dn = unorm2_getRawDecomposition(nfkc, c, d,
								8, &err);

			if (U_FAILURE(err) || dn <= 0 || dn > 8 ||
			    o + dn > JID_WORK_MAX)
				return -1;
			memcpy(out + o, d, (size_t)dn * sizeof *d);
			o += dn;
		} else if (!put_cp(out, &o, JID_WORK_MAX, c)) {
			return -1;
		}
	}
	return o;
}

/* OpaqueString additional mapping: every Zs code point becomes U+0020. */
static int32_t map_spaces(const UChar *in, int32_t n, UChar *out)
{
	int32_t o = 0;

	for (int32_t i = 0; i < n;) {
		UChar32 c;

		U16_NEXT(in, i, n, c);
		if (u_charType(c) == U_SPACE_SEPARATOR)
			c = 0x20;
		if (!put_cp(out, &o, JID_WORK_MAX, c))
			return -1;
	}
	return o;
}

/* Unicode toLowerCase() with the root locale, so the result never depends
 * on the process locale (no Turkish dotless i by accident). */
static int32_t map_lower(const UChar *in, int32_t n, UChar *out)
{
	UErrorCode err = U_ZERO_ERROR;
	int32_t len = u_strToLower(out, JID_WORK_MAX, in, n, "", &err);

	if (U_FAILURE(err) || len > JID_WORK_MAX)
		return -1;
	return len;
}

static int32_t map_nfc(const UChar *in, int32_t n, UChar *out)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *nfc = unorm2_getNFCInstance(&err);
	int32_t len;

	if (U_FAILURE(err))
		return -1;
	len = unorm2_normalize(nfc, in, n, out, JID_WORK_MAX, &err);
	if (U_FAILURE(err) || len > JID_WORK_MAX)
		return -1;
	return len;
}

/* One application of a profile's mapping rules to in[0..n), result in out;
 * tmp is scratch. in, out and tmp must not overlap. */
static int32_t precis_map(enum precis_class cls, const UChar *in, int32_t n,
			  UChar *out, UChar *tmp)
{
	int32_t len;

	if (cls == PRECIS_IDENTIFIER) {
		len = map_width(in, n, out);
		if (len >= 0)
			len = map_lower(out, len, tmp);
	} else {
		len = map_spaces(in, n, tmp);
	}
	if (len >= 0)
		len = map_nfc(tmp, len, out);
	return len;
}

/* Enforcement of UsernameCaseMapped (IdentifierClass) or OpaqueString
 * (FreeformClass) on UTF-8 input; the result is written as UTF-8. */
static int precis_enforce(enum precis_class cls, const char *in, size_t n,
			  char *out, size_t cap)
{
	UChar src[JID_WORK_MAX], res[JID_WORK_MAX], tmp[JID_WORK_MAX];
	int32_t sn, rn;

	if (!raw_part_ok(in, n, out, cap))
		return -1;
	sn = utf8_to_utf16(in, n, src);
	if (sn <= 0)
		return -1;
	rn = precis_map(cls, src, sn, res, tmp);
	if (rn <= 0)
		return -1;
	/* RFC 8264 section 7: the rules must leave their own output alone;
	 * a string that moves again would give two different identities. */
	sn = precis_map(cls, res, rn, src, tmp);
	if (sn != rn || memcmp(src, res, (size_t)rn * sizeof *res) != 0)
		return -1;
	if (precis_check(res, rn, cls) < 0)
		return -1;
	if (cls == PRECIS_IDENTIFIER &&
	    (bidi_check(res, rn) < 0 || local_excluded(res, rn)))
		return -1;
	return utf16_to_out(res, rn, out, cap);
}

/* Prepares and enforces a localpart: PRECIS UsernameCaseMapped (RFC 8265
 * section 3.3) without the characters RFC 7622 section 3.3.1 excludes.
 * Called by jid_parse and by code that builds a JID from a bare username
 * (SASL authzid, registration). in need not be NUL terminated; out receives
 * a NUL-terminated string owned by the caller. Returns its length, or -1. */
/* Fast paths for all-ASCII parts, by far the common case on the stanza
 * path. They give exactly what the full PRECIS/IDNA code gives for such
 * input, and return -2 ("ask the full code") for anything they do not
 * cover. */

/* IdentifierClass allows every printable ASCII character; the
 * UsernameCaseMapped profile lower-cases; RFC 7622 §3.3.1 excludes these. */
static int ascii_local(const char *in, size_t n, char *out, size_t cap)
{
	if (n == 0 || n > JID_PART_MAX || n + 1 > cap)
		return -2;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)in[i];
		if (ch < 0x21 || ch > 0x7e)
			return -2;
		if (strchr("\"&'/:<>@", ch) != NULL)
			return -1;
		out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
	}
	out[n] = '\0';
	return (int)n;
}

/* FreeformClass allows space and every printable ASCII character;
 * OpaqueString maps nothing for them. */
static int ascii_resource(const char *in, size_t n, char *out, size_t cap)
{
	if (n == 0 || n > JID_PART_MAX || n + 1 > cap)
		return -2;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)in[i];
		if (ch < 0x20 || ch > 0x7e)
			return -2;
	}
	memcpy(out, in, n);
	out[n] = '\0';
	return (int)n;
}

/* LDH host names without A-labels: lower-cased, checked label by label.
 * Anything else (IDNs, A-labels, IP literals, numeric names) goes the full
 * way. */
static int ascii_domain(const char *in, size_t n, char *out, size_t cap)
{
	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > 253 || n + 1 > cap || (in[0] >= '0' && in[0] <= '9'))
		return -2; /* a leading digit may be an address in disguise (0x7f000001) */
	size_t label = 0;
	bool letter = false;
	for (size_t i = 0; i <= n; i++) {
		unsigned char ch = i < n ? (unsigned char)in[i] : '.';
		if (ch == '.') {
			if (label == 0 || label > 63 || out[i - 1] == '-' || out[i - label] == '-')
				return -2;
			if (label >= 4 && memcmp(out + i - label + 2, "--", 2) == 0)
				return -2; /* xn-- and other reserved forms */
			if (i == n && !letter)
				return -2; /* an all-numeric last label */
			if (i < n)
				out[i] = '.';
			label = 0;
			letter = false;
			continue;
		}
		if (ch >= 'A' && ch <= 'Z')
			ch += 32;
		if (ch >= 'a' && ch <= 'z')
			letter = true;
		else if (!(ch >= '0' && ch <= '9') && ch != '-')
			return -2;
		out[i] = (char)ch;
		label++;
	}
	out[n] = '\0';
	return (int)n;
}

int jid_prep_local(const char *in, size_t n, char *out, size_t cap)
{
	int r = ascii_local(in, n, out, cap);
	return r != -2 ? r : precis_enforce(PRECIS_IDENTIFIER, in, n, out, cap);
}

/* Prepares and enforces a resourcepart: PRECIS OpaqueString (RFC 8265
 * section 4.2). Case is kept; any character but controls, default
 * ignorables and unassigned code points may appear, '@' and '/' included.
 * Same ownership and return value as jid_prep_local. */
int jid_prep_resource(const char *in, size_t n, char *out, size_t cap)
{
	int r = ascii_resource(in, n, out, cap);
	return r != -2 ? r : precis_enforce(PRECIS_FREEFORM, in, n, out, cap);
}

/* "[IPv6]" or a dotted-quad IPv4 address; s is NUL terminated, n bytes. */
static bool ip_literal(const char *s, size_t n)
{
	char inner[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];

	if (s[0] != '[')
		return inet_pton(AF_INET, s, addr) == 1;
	if (n < 3 || s[n - 1] != ']' || n - 2 >= sizeof inner)
		return false;
	memcpy(inner, s + 1, n - 2);
	inner[n - 2] = '\0';
	return inet_pton(AF_INET6, inner, addr) == 1;
}

/* Each label of the A-label form is 1..63 letters, digits and hyphens, not
 * starting or ending with a hyphen, and the name fits in DNS. libidn2 lets
 * other ASCII through when STD3 rules are off, so this is the check that
 * refuses spaces, '@', '_' and empty labels. */
static bool ldh_name(const char *s)
{
	size_t total = strlen(s), label = 0;

	if (total == 0 || total > 253)
		return false;
	for (size_t i = 0; i <= total; i++) {
		char c = s[i];

		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (label == 0 && c == '-')
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
		label++;
	}
	return true;
}

/* A name the resolver would take for an IPv4 address ("127.1",
 * "0x7f000001") or one with an all-numeric top-level label: never a host
 * name (RFC 3696 section 2), and letting it through would let a peer
 * smuggle an address past code that only expects names. */
static bool numeric_name(const char *s)
{
	struct in_addr addr;
	const char *tld = strrchr(s, '.');

	if (inet_aton(s, &addr) != 0)
		return true;
	tld = tld != NULL ? tld + 1 : s;
	return strspn(tld, "0123456789") == strlen(tld);
}

/* Prepares a domainpart (RFC 7622 section 3.2): one trailing dot stripped,
 * then either an IP literal, kept byte for byte, or an IDNA2008 name,
 * returned as lower-case U-labels. Same ownership and return value as
 * jid_prep_local. libidn2 allocates internally; everything is freed here. */
int jid_prep_domain(const char *in, size_t n, char *out, size_t cap)
{
	char buf[JID_RAW_MAX + 1];
	uint8_t *alabel = NULL, *again = NULL;
	char *ulabel = NULL;
	int len = -1;

	if (!raw_part_ok(in, n, out, cap))
		return -1;
	int fast = ascii_domain(in, n, out, cap);
	if (fast != -2)
		return fast;
	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > JID_RAW_MAX)
		return -1;
	memcpy(buf, in, n);
	buf[n] = '\0';
	if (ip_literal(buf, n))
		return copy_out(buf, n, out, cap);
	if (buf[0] == '[')
		return -1;

	if (idn2_lookup_u8((const uint8_t *)buf, &alabel, JID_IDN2_FLAGS) !=
		    IDN2_OK ||
	    !ldh_name((const char *)alabel))
		goto done;
	if (numeric_name((const char *)alabel)) {
		/* Fullwidth digits map to a dotted quad: keep it as a literal. */
		if (ip_literal((const char *)alabel, strlen((char *)alabel)))
			len = copy_out((const char *)alabel,
				       strlen((char *)alabel), out, cap);
		goto done;
	}
	if (idn2_to_unicode_8z8z((const char *)alabel, &ulabel, 0) != IDN2_OK)
		goto done;
	/* Our output must parse back to itself: looking the U-labels up
	 * again has to give the same A-labels. */
	if (idn2_lookup_u8((const uint8_t *)ulabel, &again, JID_IDN2_FLAGS) !=
		    IDN2_OK ||
	    strcmp((const char *)again, (const char *)alabel) != 0)
		goto done;
	for (char *p = ulabel; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	len = copy_out(ulabel, strlen(ulabel), out, cap);
done:
	idn2_free(alabel);
	idn2_free(again);
	idn2_free(ulabel);
	return len;
}

/* Splits and normalises a JID (RFC 7622 section 3.1): the first '/' starts
 * the resourcepart, which may hold '@' and '/'; before it, the first '@'
 * ends the localpart. Called on every address read from the network or
 * from configuration. s need not be NUL terminated. On success *out holds
 * three NUL-terminated parts (local and resource "" when absent) and 0 is
 * returned; on failure *out is zeroed and -1 is returned, which the caller
 * turns into <jid-malformed/>. */
int jid_parse(struct jid *out, const char *s, size_t n)
{
	const char *slash, *at, *dom;
	size_t head, dn;

	if (out == NULL)
		return -1;
	memset(out, 0, sizeof *out);
	if (s == NULL || n == 0 || n > JID_INPUT_MAX || memchr(s, '\0', n))
		goto fail;
	slash = memchr(s, '/', n);
	head = slash != NULL ? (size_t)(slash - s) : n;
	at = memchr(s, '@', head);
	dom = at != NULL ? at + 1 : s;
	dn = head - (size_t)(dom - s);
	if (at != NULL &&
	    jid_prep_local(s, (size_t)(at - s), out->local, sizeof out->local) < 0)
		goto fail;
	if (jid_prep_domain(dom, dn, out->domain, sizeof out->domain) < 0)
		goto fail;
	if (slash != NULL &&
	    jid_prep_resource(slash + 1, n - head - 1, out->resource,
			      sizeof out->resource) < 0)
		goto fail;
	return 0;
fail:
	memset(out, 0, sizeof *out);
	return -1;
}

static int format_parts(const struct jid *j, bool full, char *out, size_t cap)
{
	size_t ln = strnlen(j->local, sizeof j->local);
	size_t dn = strnlen(j->domain, sizeof j->domain);
	size_t rn = full ? strnlen(j->resource, sizeof j->resource) : 0;
	size_t need = dn + (ln > 0 ? ln + 1 : 0) + (rn > 0 ? rn + 1 : 0);
	size_t o = 0;

	if (out == NULL || need >= cap || ln > JID_PART_MAX ||
	    dn > JID_PART_MAX || rn > JID_PART_MAX)
		return -1;
	if (ln > 0) {
		memcpy(out, j->local, ln);
		out[ln] = '@';
		o = ln + 1;
	}
	memcpy(out + o, j->domain, dn);
	o += dn;
	if (rn > 0) {
		out[o++] = '/';
		memcpy(out + o, j->resource, rn);
		o += rn;
	}
	out[o] = '\0';
	return (int)o;
}

/* Writes the full JID of j, a parsed address, as a NUL-terminated string
 * into the caller's out. Returns the length without the NUL, or -1 when
 * cap is too small (out is then left untouched). */
int jid_format(const struct jid *j, char *out, size_t cap)
{
	return format_parts(j, true, out, cap);
}

/* As jid_format, without the resourcepart: the bare JID used for rosters,
 * storage keys and routing to an account. */
int jid_format_bare(const struct jid *j, char *out, size_t cap)
{
	return format_parts(j, false, out, cap);
}

/* --- nicknames (RFC 8266) --- */

static int32_t map_nfkc(const UChar *in, int32_t n, UChar *out)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&err);
	if (U_FAILURE(err))
		return -1;
	int32_t len = unorm2_normalize(nfkc, in, n, out, JID_WORK_MAX, &err);
	if (U_FAILURE(err) || len > JID_WORK_MAX)
		return -1;
	return len;
}

/* The Nickname profile's additional mapping (RFC 8266 §2.2): spaces are
 * ASCII spaces (map_spaces did that), none at either end, never two in a
 * row. In place; returns the new length. */
static int32_t trim_spaces(UChar *s, int32_t n)
{
	int32_t o = 0;
	for (int32_t i = 0; i < n; i++) {
		if (s[i] == 0x20 && (o == 0 || s[o - 1] == 0x20))
			continue;
		s[o++] = s[i];
	}
	if (o > 0 && s[o - 1] == 0x20)
		o--;
	return o;
}

/* Enforcement (compare false) or the comparison form (compare true, case
 * mapped too) of a nickname, as UTF-8. */
static int nickname(const char *in, size_t n, char *out, size_t cap, bool compare)
{
	UChar src[JID_WORK_MAX], res[JID_WORK_MAX], tmp[JID_WORK_MAX];
	if (!raw_part_ok(in, n, out, cap))
		return -1;
	int32_t sn = utf8_to_utf16(in, n, src);
	if (sn <= 0)
		return -1;
	int32_t len = map_spaces(src, sn, tmp);
	if (len < 0)
		return -1;
	len = trim_spaces(tmp, len);
	if (len > 0 && compare) {
		len = map_lower(tmp, len, src);
		if (len > 0)
			len = map_nfkc(src, len, res);
	} else if (len > 0) {
		len = map_nfkc(tmp, len, res);
	}
	if (len <= 0 || precis_check(res, len, PRECIS_FREEFORM) < 0 || bidi_check(res, len) < 0)
		return -1;
	return utf16_to_out(res, len, out, cap);
}

int jid_prep_nickname(const char *in, size_t n, char *out, size_t cap)
{
	return nickname(in, n, out, cap, false);
}

int jid_nickname_key(const char *in, size_t n, char *out, size_t cap)
{
	return nickname(in, n, out, cap, true);
}

/* LDAP filter building for directory accounts: RFC 4515 escaping of the
 * username a client sent, so that it can only ever be a value, never
 * filter syntax (no "*)(uid=*" tricks). */
#include <string.h>

#include "directory/directory.h"

/* Length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) starting at s, or 0 if the bytes
 * there are not one. */
static size_t filter_utf8_len(const unsigned char *s)
{
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (s[0] >= 0xe0 && s[0] <= 0xef) {
		unsigned char lo = s[0] == 0xe0 ? 0xa0 : 0x80;
		unsigned char hi = s[0] == 0xed ? 0x9f : 0xbf;
		if (s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80)
			return 0;
		return 3;
	}
	if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		unsigned char lo = s[0] == 0xf0 ? 0x90 : 0x80;
		unsigned char hi = s[0] == 0xf4 ? 0x8f : 0xbf;
		if (s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
			return 0;
		return 4;
	}
	return 0;
}

/* Escapes value into out at *pos; -1 when it does not fit (with room for
 * the final NUL). */
static int filter_escape_at(const char *value, char *out, size_t cap, size_t *pos)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)value;
	size_t o = *pos;

	while (*s) {
		size_t n = filter_utf8_len(s);
		int special = *s == '*' || *s == '(' || *s == ')' || *s == '\\';
		if (n == 0 || special) {
			/* An invalid byte is escaped on its own; the bytes after
			 * it are looked at afresh. */
			if (o + 3 >= cap)
				return -1;
			out[o++] = '\\';
			out[o++] = hex[*s >> 4];
			out[o++] = hex[*s & 0x0f];
			s++;
			continue;
		}
		if (o + n >= cap)
			return -1;
		memcpy(out + o, s, n);
		o += n;
		s += n;
	}
	*pos = o;
	return 0;
}

/* value is a C string, so it cannot carry a NUL; the \00 of RFC 4515 has
 * nothing to do here. out is NUL-terminated on success and left
 * unspecified on -1. */
int directory_filter_escape(const char *value, char *out, size_t cap)
{
	size_t pos = 0;

	if (cap == 0 || filter_escape_at(value, out, cap, &pos) < 0)
		return -1;
	out[pos] = '\0';
	return 0;
}

/* Only "%u" is special in the pattern; any other '%' is copied as it
 * stands, so filters like (description=50%) keep working. */
int directory_user_filter(const char *pattern, const char *user, char *out, size_t cap)
{
	size_t pos = 0;

	if (cap == 0)
		return -1;
	for (const char *p = pattern; *p; p++) {
		if (p[0] == '%' && p[1] == 'u') {
			if (filter_escape_at(user, out, cap, &pos) < 0)
				return -1;
			p++;
			continue;
		}
		if (pos + 1 >= cap)
			return -1;
		out[pos++] = *p;
	}
	out[pos] = '\0';
	return 0;
}

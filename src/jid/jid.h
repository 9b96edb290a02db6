/* XMPP addresses (RFC 7622): parsing and normalisation.
 *
 * localpart: PRECIS UsernameCaseMapped (RFC 8265) minus "&'/:<>@
 * domainpart: IDNA2008 (RFC 5890-5892) via libidn2, stored as lower-case
 *             U-labels; an IP literal is kept as is
 * resourcepart: PRECIS OpaqueString (RFC 8265)
 * Each part is 1..1023 bytes after normalisation. */
#ifndef NATTER_JID_H
#define NATTER_JID_H

#include <stddef.h>

#define JID_PART_MAX 1023

struct jid {
	char local[JID_PART_MAX + 1];    /* "" when absent */
	char domain[JID_PART_MAX + 1];
	char resource[JID_PART_MAX + 1]; /* "" when absent */
};

/* Parses and normalises s (n bytes, need not be NUL terminated) into *out.
 * Returns 0, or -1 when s is not a valid JID (the caller answers with
 * <jid-malformed/>). */
int jid_parse(struct jid *out, const char *s, size_t n);

/* Normalise one part into out (cap bytes incl. NUL). Return the length, or
 * -1 when the part is invalid or does not fit. */
int jid_prep_local(const char *in, size_t n, char *out, size_t cap);
int jid_prep_domain(const char *in, size_t n, char *out, size_t cap);
int jid_prep_resource(const char *in, size_t n, char *out, size_t cap);

/* A nickname (a chat room's nick) enforced by the PRECIS Nickname profile
 * (RFC 8266): spaces mapped, trimmed and collapsed, NFKC. jid_nickname_key
 * is its comparison form (case mapped too): two nicks are the same when
 * their keys are. Both return the length, or -1 for an invalid nickname. */
int jid_prep_nickname(const char *in, size_t n, char *out, size_t cap);
int jid_nickname_key(const char *in, size_t n, char *out, size_t cap);

/* Writes "local@domain/resource" (parts omitted when empty) into out;
 * returns the length, or -1 if cap is too small. */
int jid_format(const struct jid *j, char *out, size_t cap);
/* Same without the resource. */
int jid_format_bare(const struct jid *j, char *out, size_t cap);

#endif

/* Who counts as one address for the per-address limits (failed logins,
 * unauthenticated streams, in-band registration): an IPv4 address, or an
 * IPv6 network of a configurable prefix, because one subscriber usually
 * holds a whole /64 or /56 and could otherwise pose as millions. */
#ifndef NATTER_NETADDR_H
#define NATTER_NETADDR_H

#include <stddef.h>

/* Longest text netaddr_key_str() writes, with its NUL. */
#define NETADDR_KEY_STR_MAX 64

/* Fills key with the identity of the numeric address addr (as conn.c
 * writes peers): IPv4 and IPv4-mapped IPv6 as IPv4-mapped IPv6, other IPv6
 * cut to its first v6_prefix bits (0..128), the rest zero. Anything else is
 * hashed into a key that no address has. */
void netaddr_key(const char *addr, int v6_prefix, unsigned char key[16]);

/* The same identity as text, for tables keyed by strings and for logs:
 * "192.0.2.7", or "2001:db8:0:100::/56". out gets NETADDR_KEY_STR_MAX
 * bytes at most, always NUL terminated. */
void netaddr_key_str(const char *addr, int v6_prefix, char *out, size_t size);

#endif

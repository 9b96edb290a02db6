#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Clears every bit of a 16-byte address after the first bits. */
static void netaddr_mask(unsigned char a[16], int bits)
{
	if (bits < 0)
		bits = 0;
	for (int i = 0; i < 16; i++) {
		int keep = bits - 8 * i;
		if (keep >= 8)
			continue;
		a[i] &= keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
	}
}

void netaddr_key(const char *addr, int v6_prefix, unsigned char key[16])
{
	struct in_addr v4;
	struct in6_addr v6;
	memset(key, 0, 16);
	if (inet_pton(AF_INET, addr, &v4) == 1) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &v4, 4);
	} else if (inet_pton(AF_INET6, addr, &v6) == 1) {
		memcpy(key, &v6, 16);
		if (!IN6_IS_ADDR_V4MAPPED(&v6))
			netaddr_mask(key, v6_prefix);
	} else {
		/* Not expected from conn.c; FNV-1a keeps such peers apart. */
		unsigned long long h = 14695981039346656037ULL;
		for (const char *p = addr; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		memcpy(key + 8, &h, sizeof h);
		key[0] = 0xff; /* a multicast prefix: never a peer's address */
		key[1] = 0xfe;
	}
}

void netaddr_key_str(const char *addr, int v6_prefix, char *out, size_t size)
{
	unsigned char key[16];
	struct in6_addr probe;
	char text[INET6_ADDRSTRLEN];
	netaddr_key(addr, v6_prefix, key);
	if (inet_pton(AF_INET, addr, &probe) != 1 && inet_pton(AF_INET6, addr, &probe) != 1) {
		snprintf(out, size, "?%.*s", NETADDR_KEY_STR_MAX - 2, addr);
	} else if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)key)) {
		inet_ntop(AF_INET, key + 12, text, sizeof text);
		snprintf(out, size, "%s", text);
	} else {
		inet_ntop(AF_INET6, key, text, sizeof text);
		snprintf(out, size, "%s/%d", text, v6_prefix);
	}
}

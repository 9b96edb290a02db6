/* Asynchronous DNS for server-to-server federation (docs/dns.md).
 *
 * One struct dns per event loop: a libunbound context whose result pipe is
 * watched by a uv_poll on that loop, so lookups never block the loop and
 * every callback runs on it. libunbound's cache honours the records' TTLs.
 * Nothing here is shared between loops. */
#ifndef NATTER_DNS_H
#define NATTER_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct dns;

/* The port of the RFC 6120 §3.2.2 fallback (no SRV records at all). */
#define DNS_S2S_DEFAULT_PORT 5269
/* SRV records kept per lookup (both services together); more are ignored. */
#define DNS_MAX_SRV 32
/* Addresses kept per SRV target and address family. */
#define DNS_MAX_ADDRS 8
/* A whole dns_resolve_s2s() gives up after this long (DNS_ERROR). */
#define DNS_DEFAULT_TIMEOUT_MS 30000

/* One SRV record (RFC 2782), as dns_srv_order() sorts them. */
struct dns_srv {
	char target[256];  /* host name without the final dot; "" is the root "." */
	uint16_t port, priority, weight;
	bool direct_tls;   /* from _xmpps-server._tcp (XEP-0368) */
	uint32_t ttl;
};

/* TLSA records (RFC 6698) kept per SRV target. */
#define DNS_MAX_TLSA 4

/* One TLSA record: certificate usage, selector, matching type, data. */
struct dns_tlsa {
	uint8_t usage, selector, mtype;
	uint8_t len;
	unsigned char data[64];
};

/* One address to try, in the order they are to be tried. */
struct dns_candidate {
	struct sockaddr_storage addr; /* port filled in */
	socklen_t addrlen;
	char host[256];      /* the SRV target (or the domain itself for the fallback) */
	uint16_t port;
	bool direct_tls;     /* from _xmpps-server._tcp (XEP-0368): TLS from the first byte */
	uint32_t ttl;        /* the smaller of the SRV and the address record's TTL */
	/* DANE (RFC 7673), only with a trust anchor (dns_set_trust_anchor):
	 * the DNSSEC-secure TLSA records of _port._tcp.host, found through a
	 * secure SRV record. tlsa_bogus: the TLSA answer failed validation,
	 * so this candidate must not be used. */
	struct dns_tlsa tlsa[DNS_MAX_TLSA];
	uint8_t n_tlsa;
	bool tlsa_bogus;
};

enum dns_status {
	DNS_OK,
	DNS_NO_SERVICE, /* the domain says it offers no XMPP federation (SRV target ".") */
	DNS_NOT_FOUND,  /* no address at all */
	DNS_ERROR       /* resolver failure or timeout */
};

/* c[0..n-1] is valid only during the call (n > 0 only with DNS_OK). */
typedef void (*dns_s2s_cb)(void *arg, enum dns_status st, const struct dns_candidate *c,
			   size_t n);

/* Creates the resolver of one event loop; called on (or before starting)
 * the thread that runs uv. resolver: NULL = the servers of /etc/resolv.conf,
 * else "ADDR[@PORT]" (IPv4 or IPv6, default port 53) every query is
 * forwarded to. Returns NULL on failure with a message in err. The caller
 * owns the result and releases it with dns_free() on the same loop. */
struct dns *dns_new(uv_loop_t *uv, const char *resolver, char *err, size_t errlen);

/* Turns DNSSEC validation on with the trust anchor(s) in file (DS or
 * DNSKEY records, zone-file format), and with it the TLSA lookups of
 * dns_resolve_s2s. Before any lookup. Returns 0, or -1 with err. */
int dns_set_trust_anchor(struct dns *d, const char *file, char *err, size_t errlen);

/* Cancels every pending lookup WITHOUT calling its callback, and closes the
 * uv handles; the memory goes when libuv has closed them, so the loop must
 * run once more (as it does when it shuts down). NULL is ignored. Safe from
 * inside a dns_s2s_cb. */
void dns_free(struct dns *d);

/* Sets how long one dns_resolve_s2s() may take before it reports
 * DNS_ERROR; affects lookups started afterwards. */
void dns_set_timeout(struct dns *d, uint64_t ms);

/* Finds where to connect for server-to-server traffic to domain (RFC 6120
 * §3.2, XEP-0368): _xmpps-server._tcp and _xmpp-server._tcp SRV records are
 * asked in parallel and merged in RFC 2782 order (dns_srv_order); a set that
 * is one record with target "." means that protocol is not offered (both so,
 * or one so and the other empty: DNS_NO_SERVICE); no SRV records at all
 * fall back to the domain itself, port 5269, STARTTLS. Then every target's
 * AAAA and A are asked in parallel; candidates are, per target in SRV order,
 * its IPv6 addresses and then its IPv4 addresses. An IP literal domain
 * (192.0.2.1, [2001:db8::1]) is used as it is, port 5269.
 * Calls cb exactly once, always later from the loop (never from inside this
 * call), unless dns_free() comes first. domain is copied. */
void dns_resolve_s2s(struct dns *d, const char *domain, dns_s2s_cb cb, void *arg);

/* Orders recs[0..n-1] in place for trying (RFC 2782): priority ascending;
 * within one priority a weighted random choice, one record after another,
 * where a record's chance is its weight out of the weights left, and a
 * weight-0 record gets a small chance (as if it weighed 1 against the
 * others' sum + 1) while heavier ones remain. rnd returns a uniformly random
 * unsigned (called with rndarg). Pure: no I/O, used by unit tests. */
void dns_srv_order(struct dns_srv *recs, size_t n, unsigned (*rnd)(void *), void *rndarg);

/* Parses SRV rdata (RFC 2782 wire format, as libunbound returns it) into
 * *out (direct_tls and ttl untouched). Returns 0, or -1 if malformed. */
int dns_srv_parse(const unsigned char *rdata, size_t len, struct dns_srv *out);

/* Checks and splits "ADDR[@PORT]" into a numeric address (addrlen bytes)
 * and a port (53 when absent). Returns 0, or -1 with a message in err. */
int dns_parse_resolver(const char *resolver, char *addr, size_t addrlen, uint16_t *port,
		       char *err, size_t errlen);

/* Sets up a libunbound context the way natter uses it (forwarder or
 * resolv.conf, localhost allowed, no DNSSEC validation). For natterctl's
 * synchronous checks too. Returns a struct ub_ctx * (void * keeps unbound.h
 * out of this header), or NULL with a message in err. */
void *dns_ub_ctx_new(const char *resolver, char *err, size_t errlen);

#endif

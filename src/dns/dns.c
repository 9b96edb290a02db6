/* Asynchronous DNS for server-to-server federation: SRV (RFC 2782, RFC 6120
 * §3.2, XEP-0368) and address lookups with libunbound, driven by a libuv
 * loop. See dns.h for the contracts and docs/dns.md for the operator's side.
 *
 * A lookup (struct dns_req) goes through two phases: both SRV queries in
 * parallel, then AAAA and A of every target in parallel. libunbound runs
 * the queries in its own thread (ub_ctx_async) and writes the answers to a
 * pipe; a uv_poll on that pipe calls ub_process(), which calls
 * dns_on_answer() for each. Finished lookups wait on a list that a uv_idle
 * hands to their callbacks, so a callback never runs inside ub_process()
 * (where dns_free() would pull the context away) nor inside
 * dns_resolve_s2s(). */
#include "dns/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <idn2.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unbound.h>

#include "core/log.h"
#include "core/util.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_SRV 33
#define DNS_TYPE_TLSA 52
#define DNS_CLASS_IN 1
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_NXDOMAIN 3

/* How often pending lookups are checked against their deadline. */
#define DNS_TICK_MS 250

enum dns_query_kind {
	DNS_Q_SRV_TLS,   /* _xmpps-server._tcp */
	DNS_Q_SRV_TCP,   /* _xmpp-server._tcp */
	DNS_Q_AAAA,
	DNS_Q_A,
	DNS_Q_TLSA
};

/* What the TLSA query of one target said. */
enum dns_tlsa_state { DNS_TLSA_NONE, DNS_TLSA_SECURE, DNS_TLSA_BOGUS };

struct dns_tlsa_set {
	enum dns_tlsa_state state;
	struct dns_tlsa rec[DNS_MAX_TLSA];
	uint8_t n;
};

/* What one SRV query said. */
enum dns_srv_state {
	DNS_SRV_NONE,    /* no such name or no SRV records */
	DNS_SRV_RECORDS, /* usable records (added to the lookup's list) */
	DNS_SRV_DOT,     /* the one record "." : service not offered */
	DNS_SRV_FAILED   /* resolver failure */
};

enum dns_phase { DNS_PHASE_SRV, DNS_PHASE_ADDR };

/* One outstanding libunbound query; its address is the callback's mydata. */
struct dns_query {
	struct dns_req *req;
	int async_id;
	bool pending;
	uint8_t kind;     /* enum dns_query_kind */
	uint8_t target;   /* index into req->srv for address queries */
};

/* The addresses found for one SRV record. */
struct dns_addrs {
	unsigned char v6[DNS_MAX_ADDRS][16];
	unsigned char v4[DNS_MAX_ADDRS][4];
	size_t n6, n4;
	uint32_t ttl6, ttl4;
	bool failed; /* an address query failed (not merely empty) */
};

struct dns_req {
	struct dns *d;
	struct dns_req *prev, *next; /* on d->active (both) or d->done (next only) */
	char domain[256];            /* A-labels, no final dot */
	dns_s2s_cb cb;
	void *arg;
	uint64_t deadline;           /* uv_now() milliseconds */
	enum dns_phase phase;
	enum dns_status status;      /* set when finished */
	size_t pending;              /* queries still out */
	enum dns_srv_state srv_state[2];
	bool srv_secure[2];          /* the SRV answer was DNSSEC-validated */
	struct dns_query q[2 + 3 * DNS_MAX_SRV];
	struct dns_tlsa_set tlsa[DNS_MAX_SRV]; /* tlsa[i] belongs to srv[i] */
	struct dns_srv srv[DNS_MAX_SRV];
	size_t n_srv;
	struct dns_addrs addrs[DNS_MAX_SRV]; /* addrs[i] belongs to srv[i] */
	struct dns_candidate *cands;
	size_t n_cands;
};

struct dns {
	uv_loop_t *uv;
	struct ub_ctx *ub;
	uv_poll_t poll;          /* libunbound's answer pipe */
	uv_idle_t idle;          /* runs callbacks of finished lookups */
	uv_timer_t timer;        /* deadlines, while lookups are active */
	int open_handles;        /* freed when the last one is closed */
	bool closing;            /* dns_free() was called */
	uint64_t timeout_ms;
	uint64_t rng;            /* xorshift state for SRV weights */
	bool dnssec;             /* a trust anchor is set: TLSA lookups too */
	struct dns_req *active;  /* lookups with queries out */
	struct dns_req *done_head, *done_tail; /* waiting for their callback */
};

/* --- pure helpers --- */

/* Moves recs[from] to recs[to] (to <= from), shifting the others up. */
static void dns_srv_move(struct dns_srv *recs, size_t from, size_t to)
{
	if (from == to)
		return;
	struct dns_srv tmp = recs[from];
	memmove(&recs[to + 1], &recs[to], (from - to) * sizeof *recs);
	recs[to] = tmp;
}

/* RFC 2782 draws a number in [0, sum] and takes the first record whose
 * running sum reaches it, with the weight-0 records first. Read literally
 * that favours whichever record comes first (weights 1 and 3 would give
 * 40/60, not 25/75); we draw 0 only when weight-0 records remain, so a
 * weight-w record gets exactly w chances out of sum (+1 for the zeros). */
void dns_srv_order(struct dns_srv *recs, size_t n, unsigned (*rnd)(void *), void *rndarg)
{
	/* Insertion sort: stable, and n is small (a handful of records). */
	for (size_t i = 1; i < n; i++) {
		size_t j = i;
		while (j > 0 && recs[j - 1].priority > recs[i].priority)
			j--;
		dns_srv_move(recs, i, j);
	}
	for (size_t start = 0; start < n;) {
		size_t end = start + 1;
		while (end < n && recs[end].priority == recs[start].priority)
			end++;
		for (size_t pos = start; pos + 1 < end; pos++) {
			uint64_t sum = 0;
			bool zeros = false;
			for (size_t i = pos; i < end; i++) {
				sum += recs[i].weight;
				zeros |= recs[i].weight == 0;
			}
			if (sum == 0)
				break; /* only weight 0 left: any order will do */
			uint64_t r = rnd(rndarg);
			r = zeros ? r % (sum + 1) : 1 + r % sum;
			size_t pick = pos;
			uint64_t running = 0;
			for (size_t i = pos; i < end; i++) {
				if (r == 0 ? recs[i].weight == 0
					   : (running += recs[i].weight) >= r) {
					pick = i;
					break;
				}
			}
			dns_srv_move(recs, pick, pos);
		}
		start = end;
	}
}

int dns_srv_parse(const unsigned char *rdata, size_t len, struct dns_srv *out)
{
	if (len < 7)
		return -1;
	out->priority = (uint16_t)(rdata[0] << 8 | rdata[1]);
	out->weight = (uint16_t)(rdata[2] << 8 | rdata[3]);
	out->port = (uint16_t)(rdata[4] << 8 | rdata[5]);
	size_t at = 6, o = 0;
	for (;;) {
		if (at >= len)
			return -1;
		size_t l = rdata[at++];
		if (l == 0)
			break;
		/* > 63 is a compression pointer or garbage: SRV targets are
		 * never compressed (RFC 2782) and libunbound expands names. */
		if (l > 63 || at + l > len || o + l + 2 > sizeof out->target)
			return -1;
		if (o > 0)
			out->target[o++] = '.';
		for (size_t i = 0; i < l; i++) {
			unsigned char c = rdata[at + i];
			if (c <= ' ' || c > '~' || c == '.' || c == '\\')
				return -1; /* not a host name we could use */
			out->target[o++] = (char)tolower(c);
		}
		at += l;
	}
	if (at != len)
		return -1;
	out->target[o] = '\0';
	return 0;
}

int dns_parse_resolver(const char *resolver, char *addr, size_t addrlen, uint16_t *port,
		       char *err, size_t errlen)
{
	const char *at = strrchr(resolver, '@');
	size_t alen = at ? (size_t)(at - resolver) : strlen(resolver);
	unsigned char bin[sizeof(struct in6_addr)];

	*port = 53;
	if (at) {
		char *end;
		long p = strtol(at + 1, &end, 10);
		if (at[1] == '\0' || *end != '\0' || p < 1 || p > 65535 || !isdigit((unsigned char)at[1])) {
			snprintf(err, errlen, "resolver '%s': the port must be 1..65535", resolver);
			return -1;
		}
		*port = (uint16_t)p;
	}
	if (alen == 0 || alen >= addrlen) {
		snprintf(err, errlen, "resolver '%s': expected ADDR[@PORT]", resolver);
		return -1;
	}
	memcpy(addr, resolver, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1) {
		snprintf(err, errlen, "resolver '%s': '%s' is not a numeric IPv4 or IPv6 address",
			 resolver, addr);
		return -1;
	}
	return 0;
}

void *dns_ub_ctx_new(const char *resolver, char *err, size_t errlen)
{
	struct ub_ctx *ub = ub_ctx_create();
	int rc;

	if (!ub) {
		snprintf(err, errlen, "cannot create a libunbound context");
		return NULL;
	}
	/* A forwarder on 127.0.0.1 (a local unbound or dnsmasq, the tests'
	 * resolver) is a normal setup; libunbound refuses it by default. */
	rc = ub_ctx_set_option(ub, "do-not-query-localhost:", "no");
	if (rc == 0 && resolver) {
		char addr[INET6_ADDRSTRLEN], fwd[INET6_ADDRSTRLEN + 8];
		uint16_t port;
		if (dns_parse_resolver(resolver, addr, sizeof addr, &port, err, errlen) < 0) {
			ub_ctx_delete(ub);
			return NULL;
		}
		snprintf(fwd, sizeof fwd, "%s@%u", addr, (unsigned)port);
		rc = ub_ctx_set_fwd(ub, fwd);
	} else if (rc == 0) {
		rc = ub_ctx_resolvconf(ub, NULL);
	}
	/* No trust anchor is configured, so answers are not DNSSEC-validated
	 * (they come back neither secure nor bogus). Validation, and DANE
	 * (TLSA) for s2s certificates on top of it, are future work that
	 * starts with ub_ctx_add_ta_autr() here. */
	if (rc != 0) {
		snprintf(err, errlen, "cannot set up the resolver%s%s: %s",
			 resolver ? " " : "", resolver ? resolver : "", ub_strerror(rc));
		ub_ctx_delete(ub);
		return NULL;
	}
	return ub;
}

/* --- lookups --- */

static unsigned dns_rnd(void *arg)
{
	struct dns *d = arg;
	d->rng ^= d->rng << 13;
	d->rng ^= d->rng >> 7;
	d->rng ^= d->rng << 17;
	return (unsigned)(d->rng >> 32);
}

static void dns_on_answer(void *mydata, int err, struct ub_result *res);
static void dns_on_idle(uv_idle_t *h);

static void dns_unlink_active(struct dns_req *req)
{
	struct dns *d = req->d;
	if (req->prev)
		req->prev->next = req->next;
	else
		d->active = req->next;
	if (req->next)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
}

static void dns_req_free(struct dns_req *req)
{
	free(req->cands);
	free(req);
}

/* Queues req for its callback. Queries still out are cancelled, so no
 * answer can arrive for it afterwards. */
static void dns_finish(struct dns_req *req, enum dns_status st)
{
	struct dns *d = req->d;
	for (size_t i = 0; i < sizeof req->q / sizeof req->q[0]; i++) {
		if (req->q[i].pending) {
			ub_cancel(d->ub, req->q[i].async_id);
			req->q[i].pending = false;
		}
	}
	req->pending = 0;
	dns_unlink_active(req);
	req->status = st;
	if (st != DNS_OK)
		req->n_cands = 0;
	if (d->done_tail)
		d->done_tail->next = req;
	else
		d->done_head = req;
	d->done_tail = req;
	if (!uv_is_active((uv_handle_t *)&d->idle))
		uv_idle_start(&d->idle, dns_on_idle);
}

/* Sends one query; on failure the slot stays idle and false is returned. */
static bool dns_ask(struct dns_req *req, struct dns_query *q, const char *name, int rrtype)
{
	q->req = req;
	int rc = ub_resolve_async(req->d->ub, name, rrtype, DNS_CLASS_IN, q, dns_on_answer,
				  &q->async_id);
	if (rc != 0) {
		log_warn("dns: cannot ask for %s: %s", name, ub_strerror(rc));
		return false;
	}
	q->pending = true;
	req->pending++;
	return true;
}

static void dns_start_addresses(struct dns_req *req)
{
	req->phase = DNS_PHASE_ADDR;
	for (size_t i = 0; i < req->n_srv; i++) {
		struct dns_query *q6 = &req->q[2 + 2 * i], *q4 = q6 + 1;
		q6->kind = DNS_Q_AAAA;
		q4->kind = DNS_Q_A;
		q6->target = q4->target = (uint8_t)i;
		if (!dns_ask(req, q6, req->srv[i].target, DNS_TYPE_AAAA))
			req->addrs[i].failed = true;
		if (!dns_ask(req, q4, req->srv[i].target, DNS_TYPE_A))
			req->addrs[i].failed = true;
		/* RFC 7673: TLSA at the target, only behind a secure SRV. */
		int kind = req->srv[i].direct_tls ? DNS_Q_SRV_TLS : DNS_Q_SRV_TCP;
		if (req->d->dnssec && req->srv_secure[kind] && req->srv_state[kind] == DNS_SRV_RECORDS) {
			char name[300];
			struct dns_query *qt = &req->q[2 + 2 * DNS_MAX_SRV + i];
			qt->kind = DNS_Q_TLSA;
			qt->target = (uint8_t)i;
			snprintf(name, sizeof name, "_%u._tcp.%s", (unsigned)req->srv[i].port,
				 req->srv[i].target);
			if (!dns_ask(req, qt, name, DNS_TYPE_TLSA))
				req->tlsa[i].state = DNS_TLSA_BOGUS;
		}
	}
}

static void dns_take_tlsa(struct dns_req *req, const struct dns_query *q, int err,
			  const struct ub_result *res)
{
	struct dns_tlsa_set *t = &req->tlsa[q->target];
	if (err != 0 || res->bogus) {
		/* RFC 7673 §3: an unusable answer must not be read as "no TLSA". */
		t->state = DNS_TLSA_BOGUS;
		log_info("dns: TLSA %s: %s", res ? res->qname : "?",
			 err ? ub_strerror(err) : res->why_bogus ? res->why_bogus : "bogus");
		return;
	}
	if (!res->secure || !res->havedata)
		return;
	for (size_t i = 0; res->data[i] && t->n < DNS_MAX_TLSA; i++) {
		const unsigned char *d = (const unsigned char *)res->data[i];
		int len = res->len[i];
		if (len < 4 || len - 3 > (int)sizeof t->rec[0].data)
			continue;
		struct dns_tlsa *r = &t->rec[t->n++];
		r->usage = d[0];
		r->selector = d[1];
		r->mtype = d[2];
		r->len = (uint8_t)(len - 3);
		memcpy(r->data, d + 3, (size_t)(len - 3));
	}
	if (t->n > 0)
		t->state = DNS_TLSA_SECURE;
}

/* Both SRV answers are in: decide between the records, the fallback, "no
 * service" and failure. */
static void dns_srv_done(struct dns_req *req)
{
	enum dns_srv_state tls = req->srv_state[DNS_Q_SRV_TLS];
	enum dns_srv_state tcp = req->srv_state[DNS_Q_SRV_TCP];

	if (req->n_srv > 0) {
		dns_srv_order(req->srv, req->n_srv, dns_rnd, req->d);
	} else if (tls == DNS_SRV_FAILED || tcp == DNS_SRV_FAILED) {
		/* A failed query may hide records: neither "no service" nor
		 * the fallback would be a safe guess. */
		dns_finish(req, DNS_ERROR);
		return;
	} else if (tls == DNS_SRV_DOT || tcp == DNS_SRV_DOT) {
		dns_finish(req, DNS_NO_SERVICE);
		return;
	} else {
		struct dns_srv *s = &req->srv[req->n_srv++];
		snprintf(s->target, sizeof s->target, "%s", req->domain);
		s->port = DNS_S2S_DEFAULT_PORT;
		s->direct_tls = false;
		s->ttl = UINT32_MAX;
	}
	dns_start_addresses(req);
	if (req->pending == 0)
		dns_finish(req, DNS_ERROR);
}

/* idx: s is req->srv[idx] (SIZE_MAX: a literal, no TLSA). */
static void dns_add_candidate(struct dns_req *req, const struct dns_srv *s, size_t idx,
			      int family, const unsigned char *a, uint32_t ttl)
{
	struct dns_candidate *c = &req->cands[req->n_cands++];
	memset(c, 0, sizeof *c);
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c->addr;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(s->port);
		memcpy(&sin6->sin6_addr, a, 16);
		c->addrlen = sizeof *sin6;
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&c->addr;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(s->port);
		memcpy(&sin->sin_addr, a, 4);
		c->addrlen = sizeof *sin;
	}
	snprintf(c->host, sizeof c->host, "%s", s->target);
	c->port = s->port;
	c->direct_tls = s->direct_tls;
	c->ttl = s->ttl < ttl ? s->ttl : ttl;
	if (idx < req->n_srv) {
		const struct dns_tlsa_set *t = &req->tlsa[idx];
		c->tlsa_bogus = t->state == DNS_TLSA_BOGUS;
		if (t->state == DNS_TLSA_SECURE) {
			memcpy(c->tlsa, t->rec, sizeof c->tlsa);
			c->n_tlsa = t->n;
		}
	}
}

static void dns_addresses_done(struct dns_req *req)
{
	bool failed = false;
	req->cands = xcalloc(req->n_srv * 2 * DNS_MAX_ADDRS, sizeof *req->cands);
	for (size_t i = 0; i < req->n_srv; i++) {
		const struct dns_addrs *a = &req->addrs[i];
		for (size_t k = 0; k < a->n6; k++)
			dns_add_candidate(req, &req->srv[i], i, AF_INET6, a->v6[k], a->ttl6);
		for (size_t k = 0; k < a->n4; k++)
			dns_add_candidate(req, &req->srv[i], i, AF_INET, a->v4[k], a->ttl4);
		failed |= a->failed;
	}
	if (req->n_cands > 0)
		dns_finish(req, DNS_OK);
	else
		dns_finish(req, failed ? DNS_ERROR : DNS_NOT_FOUND);
}

/* An answer that is neither data nor a clean "no such data". */
static bool dns_answer_failed(int err, const struct ub_result *res)
{
	return err != 0 || res->bogus ||
	       (res->rcode != DNS_RCODE_NOERROR && res->rcode != DNS_RCODE_NXDOMAIN);
}

static void dns_take_srv(struct dns_req *req, enum dns_query_kind kind, int err,
			 const struct ub_result *res)
{
	enum dns_srv_state *state = &req->srv_state[kind];
	if (dns_answer_failed(err, res)) {
		*state = DNS_SRV_FAILED;
		log_debug("dns: SRV %s: %s", res ? res->qname : "?",
			  err ? ub_strerror(err) : "server failure");
		return;
	}
	*state = DNS_SRV_NONE;
	if (!res->havedata)
		return;
	size_t count = 0;
	while (res->data[count])
		count++;
	for (size_t i = 0; i < count; i++) {
		struct dns_srv s;
		if (dns_srv_parse((const unsigned char *)res->data[i], (size_t)res->len[i], &s) < 0) {
			log_debug("dns: SRV %s: malformed record ignored", res->qname);
			continue;
		}
		if (s.target[0] == '\0') {
			/* RFC 2782: "." alone means "decidedly not available";
			 * among other records it means nothing. */
			if (count == 1)
				*state = DNS_SRV_DOT;
			continue;
		}
		if (req->n_srv == DNS_MAX_SRV)
			break;
		s.direct_tls = kind == DNS_Q_SRV_TLS;
		s.ttl = res->ttl < 0 ? 0 : (uint32_t)res->ttl;
		req->srv[req->n_srv++] = s;
		*state = DNS_SRV_RECORDS;
	}
}

static void dns_take_addresses(struct dns_req *req, const struct dns_query *q, int err,
			       const struct ub_result *res)
{
	struct dns_addrs *a = &req->addrs[q->target];
	if (dns_answer_failed(err, res)) {
		a->failed = true;
		return;
	}
	if (!res->havedata)
		return;
	uint32_t ttl = res->ttl < 0 ? 0 : (uint32_t)res->ttl;
	for (size_t i = 0; res->data[i]; i++) {
		if (q->kind == DNS_Q_AAAA && res->len[i] == 16 && a->n6 < DNS_MAX_ADDRS)
			memcpy(a->v6[a->n6++], res->data[i], 16);
		else if (q->kind == DNS_Q_A && res->len[i] == 4 && a->n4 < DNS_MAX_ADDRS)
			memcpy(a->v4[a->n4++], res->data[i], 4);
	}
	if (q->kind == DNS_Q_AAAA)
		a->ttl6 = ttl;
	else
		a->ttl4 = ttl;
}

/* libunbound's callback, from inside ub_process() on the loop. */
static void dns_on_answer(void *mydata, int err, struct ub_result *res)
{
	struct dns_query *q = mydata;
	struct dns_req *req = q->req;

	q->pending = false;
	req->pending--;
	if (q->kind == DNS_Q_SRV_TLS || q->kind == DNS_Q_SRV_TCP) {
		dns_take_srv(req, q->kind, err, res);
		req->srv_secure[q->kind] = err == 0 && res != NULL && res->secure;
	} else if (q->kind == DNS_Q_TLSA) {
		dns_take_tlsa(req, q, err, res);
	} else {
		dns_take_addresses(req, q, err, res);
	}
	if (res)
		ub_resolve_free(res);
	if (req->pending > 0)
		return;
	if (req->phase == DNS_PHASE_SRV)
		dns_srv_done(req);
	else
		dns_addresses_done(req);
}

static void dns_on_readable(uv_poll_t *h, int status, int events)
{
	struct dns *d = h->data;
	(void)events;
	if (status < 0) {
		log_warn("dns: polling the resolver failed: %s", uv_strerror(status));
		return;
	}
	int rc = ub_process(d->ub);
	if (rc != 0)
		log_warn("dns: %s", ub_strerror(rc));
}

static void dns_on_idle(uv_idle_t *h)
{
	struct dns *d = h->data;
	while (d->done_head && !d->closing) {
		struct dns_req *req = d->done_head;
		d->done_head = req->next;
		if (!d->done_head)
			d->done_tail = NULL;
		req->next = NULL;
		/* The callback may start lookups or call dns_free(); d stays
		 * allocated until its handles are closed, after this returns. */
		req->cb(req->arg, req->status, req->cands, req->n_cands);
		dns_req_free(req);
	}
	if (!d->closing && !d->done_head)
		uv_idle_stop(&d->idle);
}

static void dns_on_tick(uv_timer_t *h)
{
	struct dns *d = h->data;
	uint64_t now = uv_now(d->uv);
	struct dns_req *req = d->active, *next;
	for (; req; req = next) {
		next = req->next;
		if (req->deadline <= now) {
			log_debug("dns: lookup of %s timed out", req->domain);
			dns_finish(req, DNS_ERROR);
		}
	}
	if (!d->active)
		uv_timer_stop(&d->timer);
}

/* Puts domain into out as A-labels without a final dot. Returns 0 or -1. */
static int dns_ascii_domain(const char *domain, char *out, size_t outlen)
{
	char *ascii = NULL;
	size_t n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0 || n >= outlen)
		return -1;
	memcpy(out, domain, n);
	out[n] = '\0';
	bool plain = true;
	for (size_t i = 0; i < n; i++)
		plain &= (unsigned char)out[i] < 0x80;
	if (!plain) {
		if (idn2_to_ascii_8z(out, &ascii, IDN2_NONTRANSITIONAL) != IDN2_OK)
			return -1;
		n = strlen(ascii);
		if (n >= outlen) {
			idn2_free(ascii);
			return -1;
		}
		memcpy(out, ascii, n + 1);
		idn2_free(ascii);
	}
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)out[i]);
	return 0;
}

/* An IP literal domain (RFC 6120 §3.2.1 allows them) needs no lookup.
 * Returns true and fills req's candidate if domain is one. */
static bool dns_ip_literal(struct dns_req *req, const char *domain)
{
	char buf[INET6_ADDRSTRLEN + 2];
	unsigned char bin[16];
	size_t n = strlen(domain);
	struct dns_srv s = { .port = DNS_S2S_DEFAULT_PORT, .ttl = UINT32_MAX };
	int family = 0;

	if (inet_pton(AF_INET, domain, bin) == 1) {
		family = AF_INET;
	} else if (n > 2 && n < sizeof buf && domain[0] == '[' && domain[n - 1] == ']') {
		memcpy(buf, domain + 1, n - 2);
		buf[n - 2] = '\0';
		if (inet_pton(AF_INET6, buf, bin) == 1)
			family = AF_INET6;
	}
	if (!family)
		return false;
	snprintf(s.target, sizeof s.target, "%s", domain);
	req->cands = xcalloc(1, sizeof *req->cands);
	dns_add_candidate(req, &s, SIZE_MAX, family, bin, UINT32_MAX);
	return true;
}

void dns_resolve_s2s(struct dns *d, const char *domain, dns_s2s_cb cb, void *arg)
{
	struct dns_req *req = xcalloc(1, sizeof *req);
	char name[sizeof req->domain + 32];

	req->d = d;
	req->cb = cb;
	req->arg = arg;
	req->deadline = uv_now(d->uv) + d->timeout_ms;
	req->next = d->active;
	if (d->active)
		d->active->prev = req;
	d->active = req;

	if (dns_ip_literal(req, domain)) {
		dns_finish(req, DNS_OK);
		return;
	}
	if (dns_ascii_domain(domain, req->domain, sizeof req->domain) < 0) {
		log_debug("dns: '%s' is not a domain name that can be looked up", domain);
		dns_finish(req, DNS_NOT_FOUND);
		return;
	}
	static const char *const services[2] = {
		[DNS_Q_SRV_TLS] = "_xmpps-server._tcp.",
		[DNS_Q_SRV_TCP] = "_xmpp-server._tcp.",
	};
	for (int k = DNS_Q_SRV_TLS; k <= DNS_Q_SRV_TCP; k++) {
		req->q[k].kind = (uint8_t)k;
		snprintf(name, sizeof name, "%s%s", services[k], req->domain);
		if (!dns_ask(req, &req->q[k], name, DNS_TYPE_SRV))
			req->srv_state[k] = DNS_SRV_FAILED;
	}
	if (req->pending == 0) {
		dns_finish(req, DNS_ERROR);
		return;
	}
	if (!uv_is_active((uv_handle_t *)&d->timer))
		uv_timer_start(&d->timer, dns_on_tick, DNS_TICK_MS, DNS_TICK_MS);
}

int dns_set_trust_anchor(struct dns *d, const char *file, char *err, size_t errlen)
{
	int rc = ub_ctx_add_ta_file(d->ub, file);
	if (rc != 0) {
		snprintf(err, errlen, "DNSSEC trust anchor %s: %s", file, ub_strerror(rc));
		return -1;
	}
	d->dnssec = true;
	return 0;
}

void dns_set_timeout(struct dns *d, uint64_t ms)
{
	d->timeout_ms = ms;
}

/* --- life cycle --- */

struct dns *dns_new(uv_loop_t *uv, const char *resolver, char *err, size_t errlen)
{
	struct ub_ctx *ub = dns_ub_ctx_new(resolver, err, errlen);
	if (!ub)
		return NULL;
	/* A thread, not the default forked process: natterd is threaded and
	 * a fork would copy every loop's state. */
	int rc = ub_ctx_async(ub, 1);
	if (rc != 0) {
		snprintf(err, errlen, "cannot make the resolver asynchronous: %s", ub_strerror(rc));
		ub_ctx_delete(ub);
		return NULL;
	}
	struct dns *d = xcalloc(1, sizeof *d);
	d->uv = uv;
	d->ub = ub;
	d->timeout_ms = DNS_DEFAULT_TIMEOUT_MS;
	if (getrandom(&d->rng, sizeof d->rng, 0) != (ssize_t)sizeof d->rng || d->rng == 0)
		d->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)d;
	rc = uv_poll_init(uv, &d->poll, ub_fd(ub));
	if (rc < 0) {
		snprintf(err, errlen, "cannot watch the resolver: %s", uv_strerror(rc));
		ub_ctx_delete(ub);
		free(d);
		return NULL;
	}
	uv_idle_init(uv, &d->idle);
	uv_timer_init(uv, &d->timer);
	d->poll.data = d->idle.data = d->timer.data = d;
	d->open_handles = 3;
	uv_poll_start(&d->poll, UV_READABLE, dns_on_readable);
	return d;
}

static void dns_on_close(uv_handle_t *h)
{
	struct dns *d = h->data;
	if (--d->open_handles == 0)
		free(d);
}

void dns_free(struct dns *d)
{
	if (!d || d->closing)
		return;
	d->closing = true;
	/* libuv forgets the pipe on uv_close(), before libunbound closes it. */
	uv_close((uv_handle_t *)&d->poll, dns_on_close);
	uv_close((uv_handle_t *)&d->idle, dns_on_close);
	uv_close((uv_handle_t *)&d->timer, dns_on_close);
	/* Deleting the context drops every query without a callback. */
	ub_ctx_delete(d->ub);
	d->ub = NULL;
	while (d->active) {
		struct dns_req *req = d->active;
		d->active = req->next;
		dns_req_free(req);
	}
	while (d->done_head) {
		struct dns_req *req = d->done_head;
		d->done_head = req->next;
		dns_req_free(req);
	}
	d->done_tail = NULL;
}

/* Server-to-server links (s2s.h).
 *
 * Outgoing (struct s2s_out): resolve (dns.c), connect to each candidate in
 * turn, STARTTLS (or direct TLS), then authenticate: SASL EXTERNAL when the
 * remote offers it (our certificate is valid for our domain), else dialback
 * (XEP-0220). Stanzas wait in a queue until then and bounce if the link
 * cannot come up.
 *
 * Incoming (struct s2s_in): STARTTLS, then the remote proves each domain it
 * sends from: SASL EXTERNAL with a valid certificate, or dialback (verified
 * at once when its certificate is valid for the domain, XEP-0344; else by
 * asking the remote's authoritative server over our outgoing link). Every
 * stanza must come from a domain verified on that link, or the stream ends
 * with <invalid-from/> (the bug class of CVE-2012-3525).
 *
 * Dialback keys: HMAC-SHA256 over "receiving originating stream-id" with
 * SHA-256(secret) as the key (XEP-0185). */
#include "muc/muc.h"
#include "s2s/s2s.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c2s/c2s.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "dns/dns.h"
#include "modules/pubsub_service.h"
#include "muc/muc.h"
#include "router/deliver.h"
#include "stream/conn.h"
#include "tls/tls.h"
#include "xml/xml_parse.h"
#include "xml/xml_stream.h"

#define NS_DIALBACK_FEATURE "urn:xmpp:features:dialback"
/* Writes a string literal. */
#define SEND_LIT(c, lit) conn_write((c), (lit), sizeof(lit) - 1)
/* Domain pairs one incoming link may carry (piggybacking). */
#define S2S_MAX_PAIRS 16
/* Dialback verifications one incoming link may have outstanding: each
 * makes natter connect out, so a peer must not ask for thousands. */
#define S2S_MAX_VERIFYING 8
/* Seconds an incoming link may take to authenticate. */
#define S2S_AUTH_TIMEOUT 60

/* --- process-wide state --- */

struct s2s_info {
	struct s2s_info *next;
	char local[JID_PART_MAX + 1];
	char remote[JID_PART_MAX + 1];
	bool outgoing;
	char auth[16];         /* "EXTERNAL", "dialback", "" (not yet) */
	char tls[16];          /* "TLSv1.3", "none" */
	unsigned long long last; /* now_ms of the last stanza */
};

struct s2s {
	unsigned char key[32]; /* SHA-256 of the dialback secret */
	pthread_mutex_t lock;  /* infos */
	struct s2s_info *infos;
};

struct pending {
	struct pending *next;
	struct refbuf *bytes;
	bool bounce; /* an error goes back to the sender if the link fails */
};

/* A db:verify we asked on an outgoing link for one of our incoming links. */
struct verify {
	struct verify *next;
	char id[128];     /* the incoming stream's id */
	char key[128];
	char from[JID_PART_MAX + 1]; /* the local domain (receiving) */
	int loop;         /* where the incoming link lives */
	uint64_t conn;
	bool sent;
};

enum out_state {
	OUT_RESOLVING,
	OUT_CONNECTING,
	OUT_OPEN,     /* header sent, waiting for the remote's header and features */
	OUT_STARTTLS, /* <starttls/> sent */
	OUT_AUTH,     /* SASL EXTERNAL or dialback sent */
	OUT_READY,
	OUT_DEAD
};

struct s2s_out {
	struct s2s_out *next;
	struct loop *loop;
	char local[JID_PART_MAX + 1];
	char remote[JID_PART_MAX + 1];
	enum out_state state;
	struct conn *conn;
	struct xml_stream *xs;
	struct dns_candidate *cands;
	size_t n_cands, next_cand;
	bool tls;
	bool dane;           /* this connection's certificate must match TLSA */
	bool authenticated;  /* SASL success: the next features end the setup */
	bool dialback_sent;
	bool refused_any;    /* some candidate answered at all */
	char stream_id[128];
	struct pending *q_head, *q_tail;
	int q_len;
	struct verify *verifies;
	uv_timer_t *timer;   /* connect timeout, then idle timeout */
	uv_timer_t *attempt; /* one TCP connect: a silent address is passed over */
	bool resolving;      /* a DNS lookup will call back with this link */
	bool zombie;         /* destroyed while resolving: freed by on_resolved */
	struct s2s_info *info;
};

struct s2s_loop {
	struct dns *dns;
	struct s2s_out *outs;
	bool shutting;  /* the loop stops: no new connections */
};

enum in_state { IN_HEADER, IN_OPEN, IN_CLOSED };

struct s2s_in {
	struct conn *conn;
	struct loop *loop;
	struct xml_stream *xs;
	enum in_state state;
	bool direct;
	bool secure;
	bool sasl_done;
	bool header_sent;
	char id[33];
	char local[JID_PART_MAX + 1];    /* the stream's 'to' */
	char claimed[JID_PART_MAX + 1];  /* the stream's 'from', if any */
	struct {
		char remote[JID_PART_MAX + 1];
		char local[JID_PART_MAX + 1];
	} pairs[S2S_MAX_PAIRS];
	int n_pairs;
	int verifying;        /* db:verify asked, no answer yet */
	uv_timer_t timer;
	struct s2s_info *info;
	/* Remote resources that sent available presence to local accounts
	 * over this link: they get an unavailable when it goes (RFC 6121
	 * §4.5.2 for a link lost). "remote-full\0local-bare" each. */
	char **avail;
	int n_avail;
};

static const struct xml_stream_limits *limits_of(struct server *srv,
						 struct xml_stream_limits *out)
{
	out->max_stanza_size = srv->cfg->limits.max_stanza_size;
	out->max_depth = srv->cfg->limits.max_depth;
	out->max_attributes = srv->cfg->limits.max_attributes;
	return out;
}

/* --- policy --- */

static const struct config_remote *remote_policy(const struct server *srv, const char *domain)
{
	const struct config_s2s *c = &srv->cfg->s2s;
	for (size_t i = 0; i < c->n_remotes; i++)
		if (strcmp(c->remotes[i].domain, domain) == 0)
			return &c->remotes[i];
	return NULL;
}

/* The host a local domain belongs to: a host itself, or the host whose
 * chat service (muc.h) or pubsub service (pubsub_service.h) it is; NULL
 * for any other domain. A service's links use its host's certificate,
 * and dialback keys of its own. */
static const struct config_host *local_host(const struct server *srv, const char *domain)
{
	const struct config_host *h = config_find_host(srv->cfg, domain);
	if (h == NULL)
		h = muc_service_host(srv, domain);
	return h ? h : pubsub_service_host(srv, domain);
}

bool s2s_allowed(const struct server *srv, const char *remote)
{
	const struct config_s2s *c = &srv->cfg->s2s;
	if (!c->enabled || local_host(srv, remote) != NULL)
		return false;
	if (c->allow && !word_in_list(c->allow, remote))
		return false;
	if (c->deny && word_in_list(c->deny, remote))
		return false;
	const struct config_remote *r = remote_policy(srv, remote);
	return r == NULL || r->auth != S2S_AUTH_REFUSE;
}

static bool dialback_allowed(const struct server *srv, const char *remote)
{
	const struct config_remote *r = remote_policy(srv, remote);
	if (r != NULL && r->auth == S2S_AUTH_CERTIFICATE)
		return false;
	if (r != NULL && r->auth == S2S_AUTH_DIALBACK)
		return true;
	return srv->cfg->s2s.dialback;
}

static bool tls_required(const struct server *srv, const char *remote)
{
	const struct config_remote *r = remote_policy(srv, remote);
	if (r != NULL && r->require_tls >= 0)
		return r->require_tls;
	return srv->cfg->s2s.require_tls;
}

/* --- dialback keys --- */

static void dialback_key(const struct server *srv, const char *receiving, const char *originating,
			 const char *id, char out[65])
{
	unsigned char mac[32];
	unsigned len = sizeof mac;
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "%s %s %s", receiving, originating, id);
	HMAC(EVP_sha256(), srv->s2s->key, sizeof srv->s2s->key, (const unsigned char *)b.data,
	     b.len, mac, &len);
	buf_free(&b);
	static const char hex[] = "0123456789abcdef";
	for (unsigned i = 0; i < 32; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[64] = '\0';
}

/* --- link list for natterctl s2s --- */

static struct s2s_info *info_new(struct server *srv, const char *local, const char *remote,
				 bool outgoing)
{
	struct s2s_info *i = xcalloc(1, sizeof *i);
	snprintf(i->local, sizeof i->local, "%s", local);
	snprintf(i->remote, sizeof i->remote, "%s", remote);
	i->outgoing = outgoing;
	snprintf(i->tls, sizeof i->tls, "none");
	i->last = now_ms();
	pthread_mutex_lock(&srv->s2s->lock);
	i->next = srv->s2s->infos;
	srv->s2s->infos = i;
	pthread_mutex_unlock(&srv->s2s->lock);
	return i;
}

static void info_set(struct server *srv, struct s2s_info *i, const char *local,
		     const char *remote, const char *auth, SSL *ssl)
{
	if (i == NULL)
		return;
	pthread_mutex_lock(&srv->s2s->lock);
	if (local)
		snprintf(i->local, sizeof i->local, "%s", local);
	if (remote)
		snprintf(i->remote, sizeof i->remote, "%s", remote);
	if (auth)
		snprintf(i->auth, sizeof i->auth, "%s", auth);
	if (ssl)
		snprintf(i->tls, sizeof i->tls, "%s", SSL_get_version(ssl));
	pthread_mutex_unlock(&srv->s2s->lock);
}

static void info_free(struct server *srv, struct s2s_info *i)
{
	if (i == NULL)
		return;
	pthread_mutex_lock(&srv->s2s->lock);
	for (struct s2s_info **p = &srv->s2s->infos; *p; p = &(*p)->next) {
		if (*p == i) {
			*p = i->next;
			break;
		}
	}
	pthread_mutex_unlock(&srv->s2s->lock);
	free(i);
}

void s2s_list(struct server *srv, struct buf *out)
{
	if (srv->s2s == NULL)
		return;
	unsigned long long now = now_ms();
	pthread_mutex_lock(&srv->s2s->lock);
	for (struct s2s_info *i = srv->s2s->infos; i; i = i->next)
		buf_printf(out, "%-30s %-3s %-9s %-8s %6llus  %s\n", i->remote[0] ? i->remote : "?",
			   i->outgoing ? "out" : "in", i->auth[0] ? i->auth : "-", i->tls,
			   (now - i->last) / 1000, i->local[0] ? i->local : "?");
	pthread_mutex_unlock(&srv->s2s->lock);
}

/* --- setup --- */

int s2s_init(struct server *srv)
{
	srv->s2s = xcalloc(1, sizeof *srv->s2s);
	pthread_mutex_init(&srv->s2s->lock, NULL);
	const char *secret = srv->cfg->s2s.secret;
	unsigned char random_secret[32];
	if (secret == NULL) {
		if (RAND_bytes(random_secret, sizeof random_secret) != 1)
			return -1;
		EVP_Digest(random_secret, sizeof random_secret, srv->s2s->key, NULL, EVP_sha256(),
			   NULL);
	} else {
		EVP_Digest(secret, strlen(secret), srv->s2s->key, NULL, EVP_sha256(), NULL);
	}
	return 0;
}

void s2s_free(struct server *srv)
{
	if (srv->s2s == NULL)
		return;
	while (srv->s2s->infos) {
		struct s2s_info *i = srv->s2s->infos;
		srv->s2s->infos = i->next;
		free(i);
	}
	pthread_mutex_destroy(&srv->s2s->lock);
	free(srv->s2s);
	srv->s2s = NULL;
}

int s2s_loop_init(struct loop *l, char *err, size_t errlen)
{
	struct s2s_loop *sl = xcalloc(1, sizeof *sl);
	sl->dns = dns_new(&l->uv, l->srv->cfg->dns.resolver, err, errlen);
	if (sl->dns == NULL) {
		free(sl);
		return -1;
	}
	dns_set_timeout(sl->dns, (uint64_t)l->srv->cfg->s2s.connect_timeout * 1000);
	const char *anchor = l->srv->cfg->dns.trust_anchor_file;
	if (anchor != NULL && dns_set_trust_anchor(sl->dns, anchor, err, errlen) != 0) {
		dns_free(sl->dns);
		free(sl);
		return -1;
	}
	l->s2s = sl;
	return 0;
}

static void out_release(struct s2s_out *o);

/* Called on the loop's own thread as it stops (before its connections
 * close), or by loop_free for a loop that never ran. */
void s2s_loop_free(struct loop *l)
{
	struct s2s_loop *sl = l->s2s;
	if (sl == NULL)
		return;
	sl->shutting = true;
	dns_free(sl->dns); /* pending lookups end without their callbacks */
	while (sl->outs) {
		struct s2s_out *o = sl->outs;
		sl->outs = o->next;
		o->resolving = false;
		out_release(o);
	}
	free(sl);
	l->s2s = NULL;
}

/* --- outgoing links --- */

static const struct conn_ops out_ops;
static void out_fail(struct s2s_out *o, const char *condition, const char *why);
static void on_connect_timeout(uv_timer_t *t);
static void on_attempt_timeout(uv_timer_t *t);
static void out_try_next(struct s2s_out *o);

static struct loop *owner_loop(struct server *srv, const char *remote)
{
	return &srv->loops[str_hash(remote) % (unsigned)srv->n_loops];
}

static void on_timer_closed(uv_handle_t *h) { free(h); }

static void out_stop_timer(struct s2s_out *o)
{
	if (o->timer != NULL) {
		uv_close((uv_handle_t *)o->timer, on_timer_closed);
		o->timer = NULL;
	}
	if (o->attempt != NULL) {
		uv_close((uv_handle_t *)o->attempt, on_timer_closed);
		o->attempt = NULL;
	}
}

/* How long one address may take to accept TCP before the next is tried:
 * an address that drops packets (a broken IPv6 route, a firewall) would
 * otherwise use up the whole connect_timeout (RFC 8305 waits 250 ms before
 * racing; natter tries in turn, with a longer wait that suits server
 * links). */
static uint64_t attempt_ms(const struct s2s_out *o)
{
	uint64_t whole = (uint64_t)o->loop->srv->cfg->s2s.connect_timeout * 1000;
	return whole / 3 < 2000 ? whole / 3 : 2000;
}

static void out_send_header(struct s2s_out *o)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
		     "xmlns:stream='http://etherx.jabber.org/streams' "
		     "xmlns:db='jabber:server:dialback' version='1.0' from='");
	buf_append_escaped(&b, o->local, strlen(o->local));
	buf_puts(&b, "' to='");
	buf_append_escaped(&b, o->remote, strlen(o->remote));
	buf_puts(&b, "'>");
	conn_write(o->conn, b.data, b.len);
	buf_free(&b);
	o->state = OUT_OPEN;
}

static void out_flush_queue(struct s2s_out *o)
{
	while (o->q_head) {
		struct pending *p = o->q_head;
		o->q_head = p->next;
		conn_write(o->conn, p->bytes->data, p->bytes->len);
		refbuf_release(p->bytes);
		free(p);
	}
	o->q_tail = NULL;
	o->q_len = 0;
}

static void send_verifies(struct s2s_out *o)
{
	for (struct verify *v = o->verifies; v; v = v->next) {
		if (v->sent)
			continue;
		struct buf b;
		buf_init(&b);
		buf_puts(&b, "<db:verify from='");
		buf_append_escaped(&b, v->from, strlen(v->from));
		buf_puts(&b, "' to='");
		buf_append_escaped(&b, o->remote, strlen(o->remote));
		buf_puts(&b, "' id='");
		buf_append_escaped(&b, v->id, strlen(v->id));
		buf_puts(&b, "'>");
		buf_append_escaped(&b, v->key, strlen(v->key));
		buf_puts(&b, "</db:verify>");
		conn_write(o->conn, b.data, b.len);
		buf_free(&b);
		v->sent = true;
	}
}

static void on_idle(uv_timer_t *t)
{
	struct s2s_out *o = t->data;
	if (o->conn == NULL)
		return;
	unsigned long long idle = now_ms() - o->info->last;
	unsigned long long limit = (unsigned long long)o->loop->srv->cfg->s2s.idle_timeout * 1000;
	if (idle + 50 < limit) {
		uv_timer_start(t, on_idle, limit - idle, 0);
		return;
	}
	log_info("s2s %s -> %s: idle, closing", o->local, o->remote);
	SEND_LIT(o->conn, "</stream:stream>");
	conn_close(o->conn);
}

static void out_ready(struct s2s_out *o, const char *method)
{
	o->state = OUT_READY;
	info_set(o->loop->srv, o->info, NULL, NULL, method, o->conn->ssl);
	log_info("s2s %s -> %s: authenticated with %s (%s), %d stanza(s) waiting", o->local,
		 o->remote, method, o->conn->ssl ? SSL_get_version(o->conn->ssl) : "no TLS",
		 o->q_len);
	out_flush_queue(o);
	uv_timer_stop(o->timer);
	uv_timer_start(o->timer, on_idle, (uint64_t)o->loop->srv->cfg->s2s.idle_timeout * 1000, 0);
}

static void out_dialback(struct s2s_out *o)
{
	char key[65];
	dialback_key(o->loop->srv, o->remote, o->local, o->stream_id, key);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<db:result from='");
	buf_append_escaped(&b, o->local, strlen(o->local));
	buf_puts(&b, "' to='");
	buf_append_escaped(&b, o->remote, strlen(o->remote));
	buf_printf(&b, "'>%s</db:result>", key);
	conn_write(o->conn, b.data, b.len);
	buf_free(&b);
	o->dialback_sent = true;
	o->state = OUT_AUTH;
}

static bool has_mechanism(const struct xml_node *features, const char *name, struct arena *a)
{
	struct xml_node *mechs = xml_child(features, NS_SASL, "mechanisms");
	for (struct xml_node *m = mechs ? mechs->children : NULL; m; m = m->next)
		if (m->name && strcmp(m->name, "mechanism") == 0 && strcmp(xml_text(a, m), name) == 0)
			return true;
	return false;
}

/* The client side of TLS for the current candidate, with its TLSA
 * records when DNSSEC gave some (DANE, RFC 7673). */
static SSL *out_new_ssl(struct s2s_out *o, bool direct)
{
	SSL *ssl = tls_new_client_s2s(&o->loop->srv->tls, local_host(o->loop->srv, o->local)->domain,
				      o->remote, direct);
	const struct dns_candidate *cand = &o->cands[o->next_cand - 1];
	o->dane = false;
	if (ssl == NULL || cand->n_tlsa == 0)
		return ssl;
	unsigned char recs[DNS_MAX_TLSA][67];
	unsigned lens[DNS_MAX_TLSA];
	for (size_t i = 0; i < cand->n_tlsa; i++) {
		const struct dns_tlsa *t = &cand->tlsa[i];
		recs[i][0] = t->usage;
		recs[i][1] = t->selector;
		recs[i][2] = t->mtype;
		memcpy(recs[i] + 3, t->data, t->len);
		lens[i] = 3u + t->len;
	}
	if (tls_client_dane(ssl, o->remote, cand->host, (const unsigned char (*)[67])recs, lens,
			    cand->n_tlsa) != 0) {
		/* TLSA records exist but none can be used (unknown usage
		 * or type): RFC 6698 §4.1 treats that as no TLSA at all. */
		log_info("s2s %s -> %s: no usable TLSA record for %s", o->local, o->remote,
			 cand->host);
		SSL_free(ssl);
		return tls_new_client_s2s(&o->loop->srv->tls,
					  local_host(o->loop->srv, o->local)->domain, o->remote, direct);
	}
	o->dane = true;
	return ssl;
}

static void out_features(struct s2s_out *o, struct xml_node *f, struct arena *a)
{
	struct server *srv = o->loop->srv;
	/* db:verify needs no authentication, but does need TLS first where
	 * TLS is required. */
	if (o->tls || !tls_required(srv, o->remote))
		send_verifies(o);
	if (o->authenticated) {
		out_ready(o, "EXTERNAL");
		return;
	}
	if (!o->tls) {
		if (xml_child(f, NS_TLS, "starttls") != NULL) {
			SEND_LIT(o->conn, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
			o->state = OUT_STARTTLS;
			return;
		}
		/* Secure TLSA records make TLS mandatory (RFC 7673 §3). */
		if (tls_required(srv, o->remote) || o->cands[o->next_cand - 1].n_tlsa > 0) {
			out_fail(o, "remote-server-not-found", "the remote server does not offer TLS");
			return;
		}
	}
	char why[160] = "no TLS";
	bool cert_ok;
	if (o->dane) {
		/* Secure TLSA records decide, whatever the CAs say (RFC 7673). */
		if (tls_dane_verified(o->conn->ssl, why, sizeof why) != 1) {
			char msg[256];
			snprintf(msg, sizeof msg, "its certificate does not match its TLSA records "
						  "(DANE: %s)", why);
			out_fail(o, "remote-server-not-found", msg);
			return;
		}
		log_info("s2s %s -> %s: certificate matches its TLSA record (DANE)", o->local,
			 o->remote);
		cert_ok = true;
	} else {
		cert_ok = o->tls && tls_peer_verified(&srv->tls, o->conn->ssl, o->remote, why,
						      sizeof why) == 1;
	}
	if (!cert_ok) {
		if (!dialback_allowed(srv, o->remote)) {
			char msg[256];
			snprintf(msg, sizeof msg, "its certificate is not valid (%s)", why);
			out_fail(o, "remote-server-not-found", msg);
			return;
		}
		log_info("s2s %s -> %s: remote certificate not valid (%s); dialback", o->local,
			 o->remote, why);
	}
	if (o->tls && has_mechanism(f, "EXTERNAL", a)) {
		char b64[4 * JID_PART_MAX / 3 + 8];
		EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)o->local,
				(int)strlen(o->local));
		struct buf b;
		buf_init(&b);
		buf_printf(&b, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
			       "mechanism='EXTERNAL'>%s</auth>", b64);
		conn_write(o->conn, b.data, b.len);
		buf_free(&b);
		o->state = OUT_AUTH;
		return;
	}
	if (dialback_allowed(srv, o->remote) &&
	    (xml_child(f, NS_DIALBACK_FEATURE, "dialback") != NULL || o->stream_id[0])) {
		out_dialback(o);
		return;
	}
	out_fail(o, "remote-server-not-found", "no way to authenticate (no EXTERNAL, no dialback)");
}

/* A db:verify answer from the remote's authoritative server: back to the
 * incoming link that asked. */
struct verify_answer {
	uint64_t conn;
	bool valid;
	char local[JID_PART_MAX + 1];
	char remote[JID_PART_MAX + 1];
};

static void in_dialback_answer(struct loop *l, void *arg);

static void out_verify_answer(struct s2s_out *o, struct xml_node *st)
{
	const char *id = xml_attr(st, "id");
	const char *type = xml_attr(st, "type");
	for (struct verify **p = &o->verifies; *p; p = &(*p)->next) {
		struct verify *v = *p;
		if (!v->sent || id == NULL || strcmp(v->id, id) != 0)
			continue;
		struct verify_answer *ans = xcalloc(1, sizeof *ans);
		ans->conn = v->conn;
		ans->valid = type != NULL && strcmp(type, "valid") == 0;
		snprintf(ans->local, sizeof ans->local, "%s", v->from);
		snprintf(ans->remote, sizeof ans->remote, "%s", o->remote);
		loop_call(&o->loop->srv->loops[v->loop], in_dialback_answer, ans);
		*p = v->next;
		free(v);
		return;
	}
}

static void out_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct s2s_out *o = ud;
	if (xml_is(st, NS_STREAMS, "features")) {
		out_features(o, st, a);
	} else if (xml_is(st, NS_TLS, "proceed") && o->state == OUT_STARTTLS) {
		xml_stream_restart(o->xs);
		SSL *ssl = out_new_ssl(o, false);
		if (ssl == NULL || conn_start_tls_client(o->conn, ssl) != 0)
			out_fail(o, "remote-server-not-found", "cannot start TLS");
	} else if (xml_is(st, NS_TLS, "failure")) {
		out_fail(o, "remote-server-not-found", "the remote server refused STARTTLS");
	} else if (xml_is(st, NS_SASL, "success") && o->state == OUT_AUTH) {
		o->authenticated = true;
		xml_stream_restart(o->xs);
		out_send_header(o);
	} else if (xml_is(st, NS_SASL, "failure") && o->state == OUT_AUTH) {
		if (dialback_allowed(o->loop->srv, o->remote) && o->stream_id[0]) {
			log_info("s2s %s -> %s: SASL EXTERNAL refused; dialback", o->local, o->remote);
			out_dialback(o);
		} else {
			out_fail(o, "remote-server-not-found", "SASL EXTERNAL refused");
		}
	} else if (xml_is(st, NS_DIALBACK, "result")) {
		const char *type = xml_attr(st, "type");
		if (type != NULL && strcmp(type, "valid") == 0)
			out_ready(o, "dialback");
		else
			out_fail(o, "remote-server-not-found", "dialback refused");
	} else if (xml_is(st, NS_DIALBACK, "verify")) {
		out_verify_answer(o, st);
	} else if (xml_is(st, NS_STREAMS, "error")) {
		struct xml_node *cond = xml_first_element(st);
		char why[128];
		snprintf(why, sizeof why, "stream error <%s/>", cond ? cond->name : "?");
		out_fail(o, "remote-server-not-found", why);
	}
	/* Anything else on an outgoing stream is ignored (RFC 6120 §4.2:
	 * stanzas travel the other way). */
}

static void out_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct s2s_out *o = ud;
	(void)default_ns;
	const char *id = xml_attr(root, "id");
	snprintf(o->stream_id, sizeof o->stream_id, "%s", id ? id : "");
	const char *version = xml_attr(root, "version");
	if (version == NULL && !o->tls) {
		/* A pre-1.0 server sends no features: dialback at once. */
		if (tls_required(o->loop->srv, o->remote))
			out_fail(o, "remote-server-not-found", "the remote server is pre-XMPP 1.0");
		else if (dialback_allowed(o->loop->srv, o->remote))
			out_dialback(o);
	}
}

static void out_close_stream(void *ud)
{
	struct s2s_out *o = ud;
	if (o->conn != NULL) {
		SEND_LIT(o->conn, "</stream:stream>");
		conn_close(o->conn);
	}
}

static const struct xml_stream_handlers out_handlers = {
	.open = out_open,
	.stanza = out_stanza,
	.close = out_close_stream,
};

static void out_data(struct conn *c, const char *data, size_t len)
{
	struct s2s_out *o = c->owner;
	if (o == NULL || o->xs == NULL)
		return;
	if (xml_stream_feed(o->xs, data, len) > XS_STOPPED) {
		log_info("s2s %s -> %s: bad XML from the remote server", o->local, o->remote);
		conn_close(c);
	}
}

static void out_tls_ready(struct conn *c)
{
	struct s2s_out *o = c->owner;
	if (o == NULL)
		return;
	o->tls = true;
	out_send_header(o);
}

static void out_unlink(struct s2s_out *o)
{
	struct s2s_loop *sl = o->loop->s2s;
	for (struct s2s_out **p = &sl->outs; *p; p = &(*p)->next) {
		if (*p == o) {
			*p = o->next;
			break;
		}
	}
}

/* Frees a link whose loop stops: nothing bounces, nothing reconnects. */
static void out_release(struct s2s_out *o)
{
	while (o->q_head) {
		struct pending *p = o->q_head;
		o->q_head = p->next;
		refbuf_release(p->bytes);
		free(p);
	}
	while (o->verifies) {
		struct verify *v = o->verifies;
		o->verifies = v->next;
		free(v);
	}
	if (o->conn != NULL) {
		o->conn->owner = NULL;
		conn_close(o->conn);
		o->conn = NULL;
	}
	out_stop_timer(o);
	xml_stream_free(o->xs);
	free(o->cands);
	info_free(o->loop->srv, o->info);
	free(o);
}

/* The memory goes on a later loop iteration: out_destroy may run inside
 * the link's own parser callback. */
static void out_free_later(struct loop *l, void *arg)
{
	struct s2s_out *o = arg;
	(void)l;
	xml_stream_free(o->xs);
	free(o->cands);
	free(o);
}

static void out_destroy(struct s2s_out *o)
{
	out_unlink(o);
	out_stop_timer(o);
	if (o->xs != NULL)
		xml_stream_stop(o->xs);
	info_free(o->loop->srv, o->info);
	o->info = NULL;
	if (o->resolving) {
		o->zombie = true;
		return;
	}
	loop_call(o->loop, out_free_later, o);
}

static void out_closed(struct conn *c)
{
	struct s2s_out *o = c->owner;
	if (o == NULL)
		return;
	c->owner = NULL;
	o->conn = NULL;
	xml_stream_free(o->xs);
	o->xs = NULL;
	struct s2s_loop *sl = o->loop->s2s;
	if (sl->shutting)
		return;
	if (o->state == OUT_READY) {
		log_info("s2s %s -> %s: link closed", o->local, o->remote);
		if (o->q_head == NULL && o->verifies == NULL) {
			out_destroy(o);
			return;
		}
		/* Stanzas queued meanwhile: a new connection carries them. */
		o->next_cand = 0;
		uv_timer_stop(o->timer);
		uv_timer_start(o->timer, on_connect_timeout,
			       (uint64_t)o->loop->srv->cfg->s2s.connect_timeout * 1000, 0);
	}
	out_try_next(o);
}

static void out_connected(struct conn *c, int status)
{
	struct s2s_out *o = c->owner;
	if (o == NULL)
		return;
	if (o->attempt != NULL)
		uv_timer_stop(o->attempt);
	if (status != 0) {
		log_debug("s2s %s -> %s: connect to %s: %s", o->local, o->remote, c->peer,
			  uv_strerror(status));
		return; /* out_closed follows and tries the next */
	}
	o->refused_any = true;
	struct xml_stream_limits xl;
	o->xs = xml_stream_new(limits_of(o->loop->srv, &xl), &out_handlers, o);
	const struct dns_candidate *cand = &o->cands[o->next_cand - 1];
	if (cand->direct_tls) {
		SSL *ssl = out_new_ssl(o, true);
		if (ssl == NULL || conn_start_tls_client(c, ssl) != 0)
			conn_close(c);
		return;
	}
	out_send_header(o);
}

static void out_shutdown(struct conn *c)
{
	struct s2s_out *o = c->owner;
	if (o == NULL || o->state < OUT_OPEN || o->state == OUT_DEAD)
		return;
	SEND_LIT(c, "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
		    "</stream:error></stream:stream>");
	conn_close(c);
}

static const struct conn_ops out_ops = {
	.data = out_data,
	.tls_ready = out_tls_ready,
	.closed = out_closed,
	.connected = out_connected,
	.shutdown = out_shutdown,
};

static void out_try_next(struct s2s_out *o)
{
	o->authenticated = false;
	o->dialback_sent = false;
	o->tls = false;
	o->dane = false;
	o->stream_id[0] = '\0';
	for (struct verify *v = o->verifies; v; v = v->next)
		v->sent = false;
	while (o->next_cand < o->n_cands) {
		const struct dns_candidate *cand = &o->cands[o->next_cand++];
		if (cand->tlsa_bogus) {
			log_info("s2s %s -> %s: %s skipped: its TLSA answer failed DNSSEC validation",
				 o->local, o->remote, cand->host);
			continue;
		}
		log_debug("s2s %s -> %s: trying %s port %u%s", o->local, o->remote, cand->host,
			  cand->port, cand->direct_tls ? " (direct TLS)" : "");
		o->state = OUT_CONNECTING;
		o->conn = conn_connect(o->loop, (const struct sockaddr *)&cand->addr, &out_ops, o);
		if (o->conn != NULL) {
			if (o->attempt == NULL) {
				o->attempt = xcalloc(1, sizeof *o->attempt);
				uv_timer_init(&o->loop->uv, o->attempt);
				o->attempt->data = o;
			}
			uv_timer_start(o->attempt, on_attempt_timeout, attempt_ms(o), 0);
			return;
		}
	}
	out_fail(o, "remote-server-not-found", "no candidate could be reached");
}

static void on_attempt_timeout(uv_timer_t *t)
{
	struct s2s_out *o = t->data;
	if (o->state != OUT_CONNECTING || o->conn == NULL)
		return;
	log_info("s2s %s -> %s: %s does not answer; trying the next address", o->local, o->remote,
		 o->conn->peer);
	struct conn *c = o->conn;
	c->owner = NULL;
	o->conn = NULL;
	conn_close(c);
	out_try_next(o);
}

static void on_resolved(void *arg, enum dns_status st, const struct dns_candidate *c, size_t n)
{
	struct s2s_out *o = arg;
	o->resolving = false;
	if (o->zombie) {
		loop_call(o->loop, out_free_later, o);
		return;
	}
	if (st != DNS_OK || n == 0) {
		out_fail(o, st == DNS_ERROR ? "remote-server-timeout" : "remote-server-not-found",
			 st == DNS_NO_SERVICE ? "the domain offers no XMPP service (SRV '.')"
			 : st == DNS_ERROR    ? "DNS lookup failed"
					      : "no such domain");
		return;
	}
	o->cands = xmalloc(n * sizeof *o->cands);
	memcpy(o->cands, c, n * sizeof *c);
	o->n_cands = n;
	o->next_cand = 0;
	out_try_next(o);
}

static void on_connect_timeout(uv_timer_t *t)
{
	struct s2s_out *o = t->data;
	if (o->state == OUT_READY)
		return;
	out_fail(o, "remote-server-timeout", "timed out");
}

/* Bounces every queued stanza that asks for it with condition; the others
 * (presence broadcasts, errors, results) are dropped. Returns how many
 * bounced. */
static int bounce_queue(struct s2s_out *o, const char *condition)
{
	int bounced = 0;
	while (o->q_head) {
		struct pending *p = o->q_head;
		o->q_head = p->next;
		if (p->bounce) {
			bounced++;
			struct arena a;
			arena_init(&a);
			struct xml_node *st = xml_parse_element(&a, p->bytes->data, p->bytes->len);
			if (st != NULL)
				deliver_error(o->loop, st, &a,
					      strcmp(condition, "remote-server-timeout") == 0 ||
							      strcmp(condition, "resource-constraint") == 0
						      ? "wait"
						      : "cancel",
					      condition);
			arena_reset(&a);
		}
		refbuf_release(p->bytes);
		free(p);
	}
	o->q_tail = NULL;
	o->q_len = 0;
	return bounced;
}

static void out_fail(struct s2s_out *o, const char *condition, const char *why)
{
	if (o->state == OUT_DEAD)
		return;
	bool was_ready = o->state == OUT_READY;
	int queued = o->q_len;
	o->state = OUT_DEAD;
	int bounced = bounce_queue(o, condition);
	log_info("s2s %s -> %s: %s: %s; %d stanza(s) bounced with <%s/>, %d dropped", o->local,
		 o->remote, was_ready ? "link closed" : "cannot link", why, bounced, condition,
		 queued - bounced);
	while (o->verifies) {
		struct verify *v = o->verifies;
		o->verifies = v->next;
		struct verify_answer *ans = xcalloc(1, sizeof *ans);
		ans->conn = v->conn;
		snprintf(ans->local, sizeof ans->local, "%s", v->from);
		snprintf(ans->remote, sizeof ans->remote, "%s", o->remote);
		loop_call(&o->loop->srv->loops[v->loop], in_dialback_answer, ans);
		free(v);
	}
	if (o->conn != NULL) {
		struct conn *c = o->conn;
		c->owner = NULL;
		o->conn = NULL;
		conn_close(c);
	}
	out_destroy(o);
}

static struct s2s_out *out_find(struct loop *l, const char *local, const char *remote,
				bool create)
{
	struct s2s_loop *sl = l->s2s;
	for (struct s2s_out *o = sl->outs; o; o = o->next)
		if (o->state != OUT_DEAD && strcmp(o->local, local) == 0 &&
		    strcmp(o->remote, remote) == 0)
			return o;
	if (!create)
		return NULL;
	struct s2s_out *o = xcalloc(1, sizeof *o);
	o->loop = l;
	snprintf(o->local, sizeof o->local, "%s", local);
	snprintf(o->remote, sizeof o->remote, "%s", remote);
	o->state = OUT_RESOLVING;
	o->info = info_new(l->srv, local, remote, true);
	o->timer = xcalloc(1, sizeof *o->timer);
	uv_timer_init(&l->uv, o->timer);
	o->timer->data = o;
	uv_timer_start(o->timer, on_connect_timeout,
		       (uint64_t)l->srv->cfg->s2s.connect_timeout * 1000, 0);
	o->next = sl->outs;
	sl->outs = o;
	log_debug("s2s %s -> %s: new link", local, remote);
	o->resolving = true;
	dns_resolve_s2s(sl->dns, remote, on_resolved, o);
	return o;
}

/* On the owner loop: queue or write. */
struct out_item {
	char local[JID_PART_MAX + 1];
	char remote[JID_PART_MAX + 1];
	struct refbuf *bytes;   /* NULL for a verify */
	bool bounce;
	struct verify *verify;
};

static void out_enqueue(struct loop *l, struct out_item *it)
{
	struct s2s_out *o = out_find(l, it->local, it->remote, true);
	if (it->verify != NULL) {
		it->verify->next = o->verifies;
		o->verifies = it->verify;
		if (o->conn != NULL && o->state >= OUT_AUTH &&
		    (o->tls || !tls_required(l->srv, o->remote)))
			send_verifies(o);
		return;
	}
	o->info->last = now_ms();
	if (o->state == OUT_READY) {
		conn_write(o->conn, it->bytes->data, it->bytes->len);
		refbuf_release(it->bytes);
		return;
	}
	struct pending *p = xcalloc(1, sizeof *p);
	p->bytes = it->bytes;
	p->bounce = it->bounce;
	if (o->q_len >= l->srv->cfg->s2s.max_queue) {
		struct s2s_out tmp = { .loop = l, .q_head = p, .q_tail = p, .q_len = 1 };
		bounce_queue(&tmp, "resource-constraint");
		return;
	}
	if (o->q_tail)
		o->q_tail->next = p;
	else
		o->q_head = p;
	o->q_tail = p;
	o->q_len++;
}

static void on_out_item(struct loop *l, void *arg)
{
	struct out_item *it = arg;
	/* A stopping loop (its s2s state may already be gone): dropped. */
	if (loop_stopping(l) || l->s2s == NULL || l->s2s->shutting) {
		refbuf_release(it->bytes);
		free(it->verify);
		free(it);
		return;
	}
	out_enqueue(l, it);
	free(it);
}

static void out_submit(struct loop *l, struct out_item *it)
{
	struct loop *owner = owner_loop(l->srv, it->remote);
	if (owner == l)
		on_out_item(l, it);
	else
		loop_call(owner, on_out_item, it);
}

void s2s_send_bytes(struct loop *l, const char *local_domain, const char *remote_domain,
		    struct refbuf *bytes)
{
	if (!s2s_allowed(l->srv, remote_domain) || local_host(l->srv, local_domain) == NULL)
		return;
	struct out_item *it = xcalloc(1, sizeof *it);
	snprintf(it->local, sizeof it->local, "%s", local_domain);
	snprintf(it->remote, sizeof it->remote, "%s", remote_domain);
	it->bytes = refbuf_ref(bytes);
	out_submit(l, it);
}

void s2s_route(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
	       const struct jid *to)
{
	const char *type = xml_attr(st, "type");
	/* Presence comes here only when directed (a MUC join is one): its
	 * sender waits for an answer, so it bounces like a message or an iq
	 * (RFC 6120 §8.3.1). Broadcasts go by s2s_send_bytes and never do. */
	bool answerable = type == NULL || (strcmp(type, "error") != 0 && strcmp(type, "result") != 0);
	if (!s2s_allowed(l->srv, to->domain) || local_host(l->srv, from->domain) == NULL) {
		if (answerable)
			deliver_error(l, st, a, "cancel",
				      l->srv->cfg->s2s.enabled ? "not-allowed"
							       : "remote-server-not-found");
		return;
	}
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	struct out_item *it = xcalloc(1, sizeof *it);
	snprintf(it->local, sizeof it->local, "%s", from->domain);
	snprintf(it->remote, sizeof it->remote, "%s", to->domain);
	it->bytes = refbuf_new(b.data, b.len);
	it->bounce = answerable;
	buf_free(&b);
	out_submit(l, it);
}

/* --- incoming links --- */

static const struct conn_ops in_ops;

static void in_error(struct s2s_in *s, const char *condition)
{
	if (s->state == IN_CLOSED)
		return;
	if (!s->header_sent)
		SEND_LIT(s->conn, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
				    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
	log_info("s2s in %llu (%s, %s): stream error <%s/>", (unsigned long long)s->conn->id,
		 s->conn->peer, s->claimed[0] ? s->claimed : "?", condition);
	struct buf b;
	buf_init(&b);
	buf_printf(&b,
		   "<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
		   "</stream:stream>",
		   condition);
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
	s->state = IN_CLOSED;
	if (s->xs)
		xml_stream_stop(s->xs);
	conn_close(s->conn);
}

static bool in_pair_verified(const struct s2s_in *s, const char *remote, const char *local)
{
	for (int i = 0; i < s->n_pairs; i++)
		if (strcmp(s->pairs[i].remote, remote) == 0 && strcmp(s->pairs[i].local, local) == 0)
			return true;
	return false;
}

static void in_add_pair(struct s2s_in *s, const char *remote, const char *local,
			const char *method)
{
	if (in_pair_verified(s, remote, local) || s->n_pairs == S2S_MAX_PAIRS)
		return;
	snprintf(s->pairs[s->n_pairs].remote, sizeof s->pairs[0].remote, "%s", remote);
	snprintf(s->pairs[s->n_pairs].local, sizeof s->pairs[0].local, "%s", local);
	s->n_pairs++;
	info_set(s->loop->srv, s->info, local, remote, method, s->conn->ssl);
	uv_timer_stop(&s->timer);
	log_info("s2s in %llu (%s): %s verified for %s with %s", (unsigned long long)s->conn->id,
		 s->conn->peer, remote, local, method);
}

static void in_send_features(struct s2s_in *s)
{
	struct server *srv = s->loop->srv;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<stream:features>");
	bool need_tls = tls_required(srv, s->claimed[0] ? s->claimed : "");
	if (!s->secure) {
		buf_printf(&b, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>%s</starttls>",
			   need_tls ? "<required/>" : "");
	}
	if (!s->sasl_done && (s->secure || !need_tls)) {
		if (s->secure && s->claimed[0] &&
		    tls_peer_verified(&srv->tls, s->conn->ssl, s->claimed, NULL, 0) == 1)
			buf_puts(&b, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
				     "<mechanism>EXTERNAL</mechanism></mechanisms>");
		if (srv->cfg->s2s.dialback || srv->cfg->s2s.n_remotes > 0)
			buf_puts(&b, "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>");
	}
	buf_puts(&b, "</stream:features>");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
}

static void in_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct s2s_in *s = ud;
	struct server *srv = s->loop->srv;
	const char *to = xml_attr(root, "to");
	const char *from = xml_attr(root, "from");
	char domain[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	const struct config_host *host = NULL;
	/* local: the domain asked for, a host or a host's chat service. */
	if (to != NULL && jid_prep_domain(to, strlen(to), local, sizeof local) >= 0)
		host = local_host(srv, local);
	random_hex(s->id, 16);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
		     "xmlns:stream='http://etherx.jabber.org/streams' "
		     "xmlns:db='jabber:server:dialback' version='1.0' id='");
	buf_puts(&b, s->id);
	if (host != NULL) {
		buf_puts(&b, "' from='");
		buf_append_escaped(&b, local, strlen(local));
	}
	if (from != NULL) {
		buf_puts(&b, "' to='");
		buf_append_escaped(&b, from, strlen(from));
	}
	buf_puts(&b, "'>");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
	s->header_sent = true;
	if (!xml_is(root, NS_STREAMS, "stream") || strcmp(default_ns, NS_SERVER) != 0) {
		in_error(s, "invalid-namespace");
		return;
	}
	if (host == NULL) {
		in_error(s, "host-unknown");
		return;
	}
	snprintf(s->local, sizeof s->local, "%s", local);
	if (from != NULL && jid_prep_domain(from, strlen(from), domain, sizeof domain) >= 0) {
		if (!s2s_allowed(srv, domain)) {
			log_info("s2s in %llu (%s): %s is not allowed to federate",
				 (unsigned long long)s->conn->id, s->conn->peer, domain);
			in_error(s, "policy-violation");
			return;
		}
		snprintf(s->claimed, sizeof s->claimed, "%s", domain);
		info_set(srv, s->info, local, domain, NULL, NULL);
	}
	s->state = IN_OPEN;
	const char *version = xml_attr(root, "version");
	if (version != NULL && strtol(version, NULL, 10) >= 1)
		in_send_features(s);
	else if (tls_required(srv, s->claimed))
		in_error(s, "unsupported-version");
}

/* db:result from a remote server that wants to send from 'from' to 'to'. */
static void in_db_result(struct s2s_in *s, struct xml_node *st, struct arena *a)
{
	struct server *srv = s->loop->srv;
	const char *from = xml_attr(st, "from");
	const char *to = xml_attr(st, "to");
	char remote[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	if (from == NULL || to == NULL ||
	    jid_prep_domain(from, strlen(from), remote, sizeof remote) < 0 ||
	    jid_prep_domain(to, strlen(to), local, sizeof local) < 0) {
		in_error(s, "improper-addressing");
		return;
	}
	if (local_host(srv, local) == NULL) {
		in_error(s, "host-unknown");
		return;
	}
	if (!s2s_allowed(srv, remote)) {
		in_error(s, "policy-violation");
		return;
	}
	if (tls_required(srv, remote) && !s->secure) {
		in_error(s, "policy-violation");
		return;
	}
	char why[160];
	if (s->secure && tls_peer_verified(&srv->tls, s->conn->ssl, remote, why, sizeof why) == 1) {
		/* XEP-0344: the certificate already proves the domain. */
		struct buf b;
		buf_init(&b);
		buf_puts(&b, "<db:result type='valid' from='");
		buf_append_escaped(&b, local, strlen(local));
		buf_puts(&b, "' to='");
		buf_append_escaped(&b, remote, strlen(remote));
		buf_puts(&b, "'/>");
		conn_write(s->conn, b.data, b.len);
		buf_free(&b);
		in_add_pair(s, remote, local, "dialback");
		return;
	}
	if (!dialback_allowed(srv, remote)) {
		log_info("s2s in %llu (%s): %s has no valid certificate (%s) and dialback is off for "
			 "it", (unsigned long long)s->conn->id, s->conn->peer, remote, why);
		struct buf b;
		buf_init(&b);
		buf_puts(&b, "<db:result type='error' from='");
		buf_append_escaped(&b, local, strlen(local));
		buf_puts(&b, "' to='");
		buf_append_escaped(&b, remote, strlen(remote));
		buf_puts(&b, "'><error type='cancel'><not-authorized "
			     "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>");
		conn_write(s->conn, b.data, b.len);
		buf_free(&b);
		return;
	}
	/* Ask the remote's authoritative server (XEP-0220 §2.3). */
	if (s->verifying >= S2S_MAX_VERIFYING) {
		in_error(s, "policy-violation");
		return;
	}
	s->verifying++;
	struct out_item *it = xcalloc(1, sizeof *it);
	snprintf(it->local, sizeof it->local, "%s", local);
	snprintf(it->remote, sizeof it->remote, "%s", remote);
	struct verify *v = xcalloc(1, sizeof *v);
	snprintf(v->id, sizeof v->id, "%s", s->id);
	snprintf(v->key, sizeof v->key, "%s", xml_text(a, st));
	snprintf(v->from, sizeof v->from, "%s", local);
	v->loop = s->loop->index;
	v->conn = s->conn->id;
	it->verify = v;
	out_submit(s->loop, it);
}

static void in_dialback_answer(struct loop *l, void *arg)
{
	struct verify_answer *ans = arg;
	struct conn *c = loop_stopping(l) ? NULL : conn_find(l, ans->conn);
	struct s2s_in *s = c && c->ops == &in_ops ? c->owner : NULL;
	if (s != NULL && s->verifying > 0)
		s->verifying--;
	if (s != NULL && s->state == IN_OPEN) {
		struct buf b;
		buf_init(&b);
		buf_printf(&b, "<db:result type='%s' from='", ans->valid ? "valid" : "invalid");
		buf_append_escaped(&b, ans->local, strlen(ans->local));
		buf_puts(&b, "' to='");
		buf_append_escaped(&b, ans->remote, strlen(ans->remote));
		buf_puts(&b, "'/>");
		conn_write(s->conn, b.data, b.len);
		buf_free(&b);
		if (ans->valid)
			in_add_pair(s, ans->remote, ans->local, "dialback");
		else
			log_info("s2s in %llu (%s): dialback for %s failed",
				 (unsigned long long)c->id, c->peer, ans->remote);
	}
	free(ans);
}

/* db:verify: another server asks whether we sent this key (we are the
 * authoritative server for 'to'). */
static void in_db_verify(struct s2s_in *s, struct xml_node *st, struct arena *a)
{
	const char *from = xml_attr(st, "from");
	const char *to = xml_attr(st, "to");
	const char *id = xml_attr(st, "id");
	if (from == NULL || to == NULL || id == NULL) {
		in_error(s, "improper-addressing");
		return;
	}
	char expect[65];
	dialback_key(s->loop->srv, from, to, id, expect);
	const char *key = xml_text(a, st);
	bool valid = local_host(s->loop->srv, to) != NULL && strcmp(key, expect) == 0;
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "<db:verify type='%s' from='", valid ? "valid" : "invalid");
	buf_append_escaped(&b, to, strlen(to));
	buf_puts(&b, "' to='");
	buf_append_escaped(&b, from, strlen(from));
	buf_puts(&b, "' id='");
	buf_append_escaped(&b, id, strlen(id));
	buf_puts(&b, "'/>");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
}

static void in_sasl(struct s2s_in *s, struct xml_node *st, struct arena *a)
{
	struct server *srv = s->loop->srv;
	const char *mech = xml_attr(st, "mechanism");
	const char *fail = NULL;
	char authzid[JID_PART_MAX + 1] = "";
	const char *text = xml_text(a, st);
	if (text[0] != '\0' && strcmp(text, "=") != 0) {
		unsigned char raw[3 * JID_PART_MAX];
		size_t n = strlen(text);
		if (n > 4 * JID_PART_MAX / 3 + 4) {
			fail = "malformed-request";
		} else {
			int got = EVP_DecodeBlock(raw, (const unsigned char *)text, (int)n);
			while (got > 0 && n > 0 && text[n - 1] == '=') {
				got--;
				n--;
			}
			if (got <= 0 || jid_prep_domain((const char *)raw, (size_t)got, authzid,
							 sizeof authzid) < 0)
				fail = "malformed-request";
		}
	} else {
		snprintf(authzid, sizeof authzid, "%s", s->claimed);
	}
	if (fail == NULL && (mech == NULL || strcmp(mech, "EXTERNAL") != 0))
		fail = "invalid-mechanism";
	if (fail == NULL && (!s->secure || authzid[0] == '\0' || !s2s_allowed(srv, authzid) ||
			     tls_peer_verified(&srv->tls, s->conn->ssl, authzid, NULL, 0) != 1))
		fail = "not-authorized";
	if (fail != NULL) {
		struct buf b;
		buf_init(&b);
		buf_printf(&b, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><%s/></failure>",
			   fail);
		conn_write(s->conn, b.data, b.len);
		buf_free(&b);
		return;
	}
	SEND_LIT(s->conn, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
	s->sasl_done = true;
	in_add_pair(s, authzid, s->local, "EXTERNAL");
	xml_stream_restart(s->xs);
}

/* Rewrites the jabber:server namespace of a received stanza to
 * jabber:client, the one every delivery path speaks (and serialises
 * without an xmlns, which is right for both kinds of stream). */
static void to_client_ns(struct xml_node *n)
{
	for (; n != NULL; n = n->next) {
		if (n->ns != NULL && strcmp(n->ns, NS_SERVER) == 0)
			n->ns = NS_CLIENT;
		to_client_ns(n->children);
	}
}

/* Keeps track of who is available over this link (at most 4096 pairs). */
static void in_note_presence(struct s2s_in *s, const char *remote_full, const struct jid *to,
			     bool available)
{
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(to, bare, sizeof bare);
	size_t rl = strlen(remote_full), bl = strlen(bare);
	for (int i = 0; i < s->n_avail; i++) {
		if (strcmp(s->avail[i], remote_full) == 0 && strcmp(s->avail[i] + rl + 1, bare) == 0) {
			if (!available) {
				free(s->avail[i]);
				s->avail[i] = s->avail[--s->n_avail];
			}
			return;
		}
	}
	if (!available || s->n_avail >= 4096)
		return;
	char *e = xmalloc(rl + bl + 2);
	memcpy(e, remote_full, rl + 1);
	memcpy(e + rl + 1, bare, bl + 1);
	s->avail = xrealloc(s->avail, (size_t)(s->n_avail + 1) * sizeof *s->avail);
	s->avail[s->n_avail++] = e;
}

/* The link is gone: its remote resources are unavailable to whom they
 * were available. */
static void in_withdraw_presence(struct s2s_in *s)
{
	for (int i = 0; i < s->n_avail; i++) {
		const char *remote = s->avail[i];
		const char *local = remote + strlen(remote) + 1;
		struct jid from, to;
		if (!loop_stopping(s->loop) && jid_parse(&from, remote, strlen(remote)) == 0 &&
		    jid_parse(&to, local, strlen(local)) == 0) {
			struct arena a;
			arena_init(&a);
			struct xml_node *p = xml_new(&a, NS_CLIENT, "presence");
			xml_set_attr(&a, p, "type", "unavailable");
			xml_set_attr(&a, p, "from", remote);
			xml_set_attr(&a, p, "to", local);
			deliver_inbound(s->loop, p, &a, &from, &to);
			arena_reset(&a);
		}
		free(s->avail[i]);
	}
	free(s->avail);
	s->avail = NULL;
	s->n_avail = 0;
}

static void in_stanza_routed(struct s2s_in *s, struct xml_node *st, struct arena *a)
{
	const char *from_s = xml_attr(st, "from");
	const char *to_s = xml_attr(st, "to");
	struct jid from, to;
	if (from_s == NULL || to_s == NULL || jid_parse(&from, from_s, strlen(from_s)) != 0 ||
	    jid_parse(&to, to_s, strlen(to_s)) != 0) {
		in_error(s, "improper-addressing");
		return;
	}
	if (!in_pair_verified(s, from.domain, to.domain)) {
		/* RFC 6120 §4.9.3.9; the hole of CVE-2012-3525. */
		log_info("s2s in %llu (%s): stanza from %s to %s, a pair not verified on this link",
			 (unsigned long long)s->conn->id, s->conn->peer, from.domain, to.domain);
		in_error(s, local_host(s->loop->srv, to.domain) ? "invalid-from" : "host-unknown");
		return;
	}
	s->info->last = now_ms();
	to_client_ns(st);
	if (strcmp(st->name, "presence") == 0 && from.resource[0] != '\0') {
		const char *type = xml_attr(st, "type");
		if (type == NULL || strcmp(type, "unavailable") == 0)
			in_note_presence(s, from_s, &to, type == NULL);
	}
	deliver_inbound(s->loop, st, a, &from, &to);
}

static void in_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct s2s_in *s = ud;
	if (s->state != IN_OPEN)
		return;
	if (xml_is(st, NS_TLS, "starttls")) {
		if (s->secure) {
			in_error(s, "policy-violation");
			return;
		}
		SEND_LIT(s->conn, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
		xml_stream_restart(s->xs);
		if (conn_start_tls_s2s(s->conn, false) != 0)
			in_error(s, "internal-server-error");
		return;
	}
	if (!s->secure && tls_required(s->loop->srv, s->claimed)) {
		in_error(s, "policy-violation");
		return;
	}
	if (xml_is(st, NS_SASL, "auth")) {
		in_sasl(s, st, a);
	} else if (xml_is(st, NS_DIALBACK, "result")) {
		in_db_result(s, st, a);
	} else if (xml_is(st, NS_DIALBACK, "verify")) {
		in_db_verify(s, st, a);
	} else if (xml_is(st, NS_SERVER, "message") || xml_is(st, NS_SERVER, "presence") ||
		   xml_is(st, NS_SERVER, "iq")) {
		in_stanza_routed(s, st, a);
	} else if (xml_is(st, NS_STREAMS, "error")) {
		conn_close(s->conn);
	} else {
		in_error(s, "unsupported-stanza-type");
	}
}

static void in_close_stream(void *ud)
{
	struct s2s_in *s = ud;
	if (s->state == IN_CLOSED)
		return;
	SEND_LIT(s->conn, "</stream:stream>");
	s->state = IN_CLOSED;
	xml_stream_stop(s->xs);
	conn_close(s->conn);
}

static const struct xml_stream_handlers in_handlers = {
	.open = in_open,
	.stanza = in_stanza,
	.close = in_close_stream,
};

static void in_data(struct conn *c, const char *data, size_t len)
{
	struct s2s_in *s = c->owner;
	if (s->state == IN_CLOSED)
		return;
	const char *condition = xml_stream_condition(xml_stream_feed(s->xs, data, len));
	if (condition != NULL)
		in_error(s, condition);
}

static void in_tls_ready(struct conn *c)
{
	struct s2s_in *s = c->owner;
	s->secure = true;
	s->state = IN_HEADER;
}

static void in_withdraw_presence_free(struct s2s_in *s)
{
	for (int i = 0; i < s->n_avail; i++)
		free(s->avail[i]);
	free(s->avail);
	s->avail = NULL;
	s->n_avail = 0;
}

static void in_free(uv_handle_t *h)
{
	struct s2s_in *s = h->data;
	xml_stream_free(s->xs);
	free(s);
}

static void in_closed(struct conn *c)
{
	struct s2s_in *s = c->owner;
	s->state = IN_CLOSED;
	if (s->n_pairs > 0)
		log_info("s2s in %llu (%s): link from %s closed", (unsigned long long)c->id, c->peer,
			 s->pairs[0].remote);
	info_free(s->loop->srv, s->info);
	s->info = NULL;
	/* No s2s state any more: the loop is stopping. */
	if (s->loop->s2s != NULL && !s->loop->s2s->shutting)
		in_withdraw_presence(s);
	else
		in_withdraw_presence_free(s);
	uv_close((uv_handle_t *)&s->timer, in_free);
}

static void in_shutdown(struct conn *c)
{
	struct s2s_in *s = c->owner;
	if (s != NULL)
		in_error(s, "system-shutdown");
}

static const struct conn_ops in_ops = {
	.data = in_data,
	.tls_ready = in_tls_ready,
	.closed = in_closed,
	.shutdown = in_shutdown,
};

static void on_in_timeout(uv_timer_t *t)
{
	struct s2s_in *s = t->data;
	if (s->n_pairs == 0)
		in_error(s, "connection-timeout");
}

void s2s_accept(struct loop *l, uv_stream_t *listener, bool direct)
{
	struct s2s_in *s = xcalloc(1, sizeof *s);
	s->conn = conn_accept(l, listener, &in_ops);
	if (s->conn == NULL) {
		free(s);
		return;
	}
	s->conn->owner = s;
	s->loop = l;
	s->direct = direct;
	struct xml_stream_limits xl;
	s->xs = xml_stream_new(limits_of(l->srv, &xl), &in_handlers, s);
	s->info = info_new(l->srv, "", "", false);
	uv_timer_init(&l->uv, &s->timer);
	s->timer.data = s;
	uv_timer_start(&s->timer, on_in_timeout, S2S_AUTH_TIMEOUT * 1000, 0);
	log_debug("s2s in %llu: connection from %s", (unsigned long long)s->conn->id, s->conn->peer);
	if (direct && conn_start_tls_s2s(s->conn, true) != 0)
		in_error(s, "internal-server-error");
}

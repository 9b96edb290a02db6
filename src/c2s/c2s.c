#include "c2s/c2s.h"
#include "c2s/sm.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/authfail.h"
#include "auth/fast.h"
#include "c2s/csi.h"
#include "c2s/sasl2.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/server.h"
#include "core/util.h"
#include "directory/directory.h"
#include "jid/jid.h"
#include "modules/module.h"
#include "modules/offline.h"
#include "modules/presence.h"
#include "modules/register.h"
#include "router/deliver.h"
#include "router/hooks.h"
#include "router/router.h"
#include "storage/storeq.h"
#include "stream/conn.h"
#include "xml/xml_parse.h"
#include "xml/xml_stream.h"

enum c2s_state {
	C2S_HEADER,   /* waiting for the stream header */
	C2S_STARTTLS, /* TLS required: waiting for <starttls/> */
	C2S_TLS,      /* TLS handshake running */
	C2S_AUTH,     /* TLS up: waiting for <auth/> */
	C2S_SASL,     /* SASL exchange running */
	C2S_SASL_FAIL,/* failure answer delayed */
	C2S_SASL_WAIT,/* the directory checks the account (AUTH_PENDING) */
	C2S_BIND,     /* authenticated: waiting for resource binding */
	C2S_ACTIVE,   /* bound session */
	C2S_RESUMING, /* authenticated: an SM resumption is under way (sm.h) */
	C2S_DETACHED, /* no connection: waiting to be resumed (sm.h) */
	C2S_CLOSED
};

struct c2s {
	struct conn *conn;
	struct loop *loop;
	enum c2s_state state;
	bool direct;         /* direct TLS port */
	bool secure;         /* TLS established */
	bool authenticated;
	bool header_sent;
	bool registered;     /* in the router */
	bool available;
	bool ping_pending;
	int priority;
	int sasl_failures;
	bool fail_refused;   /* the delayed answer is temporary-auth-failure */
	unsigned char counted_prefix; /* counted as unauthenticated by authfail
				       * under this IPv6 prefix; 0 = not */
	uint64_t auth_deadline; /* uv_now() by which the stream must log in */
	unsigned auth_seq;   /* tells a directory answer for an aborted exchange */
	struct xml_stream *xs;
	const char *domain;  /* the virtual host (points into the config) */
	char stream_id[33];
	struct auth_session *auth; /* only while a SASL exchange runs */
	struct sasl2_request *sasl2; /* only while a SASL2 exchange runs,
				      * until its answer is written (sasl2.h) */
	struct sasl2_request *sasl2_resuming; /* a SASL2 success waiting for its
					       * inline resumption's answer */
	char *bare;          /* "local@domain" once authenticated (heap) */
	char *full;          /* "local@domain/resource" once bound (heap) */
	const char *resource;/* points into full */
	uv_timer_t timer;    /* auth deadline or SASL failure delay, then idle ping */
	char **directed;     /* JIDs sent directed available presence (heap) */
	int n_directed;
	unsigned long long last_input;
	unsigned long long ping_sent;
	char *photo_hash;    /* XEP-0153 hash from the directory (heap), or NULL */
	struct csi csi;      /* client state (XEP-0352): what waits while inactive */
	uint64_t id;         /* registry id once bound: the connection's id, or
			      * the last connection's while detached */
	struct sm *sm;       /* stream management, once enabled (sm.h) */
	bool ending;         /* the session ends with this connection: it was
			      * closed cleanly or by a stream error */
	bool moving;         /* being handed over to a resuming connection:
			      * it neither ends nor expires meanwhile */
	bool resume_pending; /* this connection's <resume/> awaits the hand-
			      * over (resume_finish), even if the stream
			      * ended meanwhile */
	struct c2s_held *held; /* what came after <resume/> before its answer */
};

/* Stanzas and SM elements a client sent after <resume/>, before natterd
 * answered it: nothing may overtake <resumed/> (XEP-0198), but a client
 * may pipeline, so they wait here, copied, and run once the answer is
 * written (replay_held). At most C2S_HELD_MAX bytes; more is a
 * policy-violation. */
struct c2s_held_stanza {
	struct xml_node *st;
	struct c2s_held_stanza *next;
};

struct c2s_held {
	struct arena a;
	struct c2s_held_stanza *first, **tail;
};

#define C2S_HELD_MAX (256 * 1024)

static void held_free(struct c2s_held *h)
{
	if (h == NULL)
		return;
	arena_reset(&h->a);
	free(h);
}

static void c2s_stanza(void *ud, struct xml_node *st, struct arena *a);
static void write_stanza(void *arg, const char *data, size_t len);
static void send_stanza(struct c2s *s, const char *data, size_t len);
static bool sm_intercept(struct c2s *s, struct xml_node *st);
static void hold_during_resume(struct c2s *s, struct xml_node *st);
static void replay_held(struct c2s *s);
static bool keeps_session(struct c2s *s);
static void detach(struct c2s *s);
static void end_sm(struct c2s *s);
static bool sm_tick(struct c2s *s);
static void send_directed_unavailable(struct c2s *s);
static void c2s_open(void *ud, const struct xml_node *root, const char *default_ns);
static void c2s_close_stream(void *ud);

static const struct xml_stream_handlers stream_handlers = {
	.open = c2s_open,
	.stanza = c2s_stanza,
	.close = c2s_close_stream,
};

static const struct config *cfg_of(struct c2s *s) { return s->loop->srv->cfg; }
static void uncount_unauthenticated(struct c2s *s);

static void end_auth(struct c2s *s)
{
	if (s->auth == NULL)
		return;
	auth_end(s->auth);
	free(s->auth);
	s->auth = NULL;
}

/* The bound session's address as parts, built on demand so the session
 * itself keeps only the string. */
static void session_jid(const struct c2s *s, struct jid *out)
{
	const char *at = strchr(s->bare, '@');
	snprintf(out->local, sizeof out->local, "%.*s", (int)(at - s->bare), s->bare);
	snprintf(out->domain, sizeof out->domain, "%s", at + 1);
	snprintf(out->resource, sizeof out->resource, "%s", s->resource);
}

static void send_str(struct c2s *s, const char *str) { conn_write(s->conn, str, strlen(str)); }

static void send_header(struct c2s *s, const char *from)
{
	struct buf b;
	buf_init(&b);
	random_hex(s->stream_id, 16);
	buf_puts(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		     "xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' version='1.0' id='");
	buf_puts(&b, s->stream_id);
	buf_puts(&b, "' from='");
	buf_append_escaped(&b, from, strlen(from));
	buf_puts(&b, "'>");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
	s->header_sent = true;
}

/* Sends a stream error and closes: RFC 6120 §4.9. app is an
 * application-specific condition element, or NULL. A stream error ends the
 * session, except a timeout: a resumable session is only detached then. */
static void stream_error_app(struct c2s *s, const char *condition, const char *app)
{
	if (s->state == C2S_CLOSED || s->conn == NULL)
		return;
	if (strcmp(condition, "connection-timeout") != 0)
		s->ending = true;
	if (!s->header_sent)
		send_header(s, s->domain ? s->domain : cfg_of(s)->hosts[0].domain);
	log_info("c2s %llu (%s): stream error <%s/>", (unsigned long long)s->conn->id,
		 s->conn->peer, condition);
	struct buf b;
	buf_init(&b);
	buf_printf(&b,
		   "<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>%s</stream:error>"
		   "</stream:stream>",
		   condition, app ? app : "");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
	s->state = C2S_CLOSED;
	uncount_unauthenticated(s);
	if (s->xs)
		xml_stream_stop(s->xs);
	conn_close(s->conn);
}

static void stream_error(struct c2s *s, const char *condition)
{
	stream_error_app(s, condition, NULL);
}

static void send_features(struct c2s *s)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<stream:features>");
	if (!s->secure) {
		buf_puts(&b, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>");
	} else if (!s->authenticated) {
		buf_puts(&b, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
		auth_write_mechanisms(&b, s->conn->ssl, cfg_of(s)->allow_plain,
				      config_find_host(cfg_of(s), s->domain));
		buf_puts(&b, "</mechanisms>");
		auth_write_cb_types(&b, s->conn->ssl);
		const struct config_host *host = config_find_host(cfg_of(s), s->domain);
		sasl2_write_feature(&b, s->conn->ssl, cfg_of(s), host);
		if (cfg_of(s)->allow_registration && host && host->auth == HOST_AUTH_INTERNAL)
			buf_puts(&b, "<register xmlns='" NS_REGISTER_FEATURE "'/>");
	} else {
		buf_puts(&b, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
			     "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"
			     "<ver xmlns='urn:xmpp:features:rosterver'/>"
			     "<sub xmlns='urn:xmpp:features:pre-approval'/>"
			     "<csi xmlns='" NS_CSI "'/>"
			     "<sm xmlns='" NS_SM "'/>");
	}
	if (s->secure) {
		char ver[64];
		disco_caps_ver(s->loop->srv, s->domain, ver, sizeof ver);
		buf_printf(&b, "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='%s' ver='%s'/>",
			   DISCO_CAPS_NODE, ver);
	}
	buf_puts(&b, "</stream:features>");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
}

static void c2s_open(void *ud, const struct xml_node *root, const char *default_ns)
{
	struct c2s *s = ud;
	const char *to = xml_attr(root, "to");
	char domain[JID_PART_MAX + 1];
	const struct config_host *host = NULL;
	if (to != NULL && jid_prep_domain(to, strlen(to), domain, sizeof domain) >= 0)
		host = config_find_host(cfg_of(s), domain);
	if (s->domain == NULL && host != NULL)
		s->domain = host->domain;
	send_header(s, host ? host->domain : (s->domain ? s->domain : cfg_of(s)->hosts[0].domain));
	if (!xml_is(root, NS_STREAMS, "stream") || strcmp(default_ns, NS_CLIENT) != 0) {
		stream_error(s, "invalid-namespace");
		return;
	}
	if (to == NULL || host == NULL) {
		stream_error(s, "host-unknown");
		return;
	}
	if (s->domain != host->domain) {
		/* A restarted stream must stay on the same host. */
		stream_error(s, "host-unknown");
		return;
	}
	const char *version = xml_attr(root, "version");
	if (version == NULL || strtol(version, NULL, 10) < 1) {
		stream_error(s, "unsupported-version");
		return;
	}
	s->state = !s->secure ? C2S_STARTTLS : !s->authenticated ? C2S_AUTH : C2S_BIND;
	send_features(s);
}

static void c2s_close_stream(void *ud)
{
	struct c2s *s = ud;
	if (s->state == C2S_CLOSED)
		return;
	s->ending = true; /* a clean close ends the session (XEP-0198 §7) */
	if (s->sm != NULL) {
		/* The client leaves knowingly: what it was sent counts as
		 * delivered, as without stream management; only what never
		 * reached its connection goes to offline storage (end_sm). */
		sm_ack(s->sm, s->sm->acked + s->sm->written);
	}
	send_str(s, "</stream:stream>");
	s->state = C2S_CLOSED;
	xml_stream_stop(s->xs);
	conn_close(s->conn);
}

/* --- STARTTLS and SASL --- */

/* The answer to a failed exchange, in the profile it was started in; it
 * ends a SASL2 exchange. */
static void sasl_failure(struct c2s *s, const char *condition)
{
	struct buf b;
	buf_init(&b);
	if (s->sasl2 != NULL) {
		if (s->sasl2->expired && strcmp(condition, "not-authorized") == 0)
			condition = "credentials-expired"; /* XEP-0484 §5.2 */
		sasl2_write_failure(&b, condition, NULL);
		sasl2_free(s->sasl2);
		s->sasl2 = NULL;
	} else {
		buf_printf(&b, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><%s/></failure>",
			   condition);
	}
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
}

static void handle_starttls(struct c2s *s, struct xml_node *st)
{
	if (xml_is(st, NS_SASL, "auth")) {
		/* No mechanism was offered before TLS (RFC 6120 §6.4.5). */
		sasl_failure(s, "encryption-required");
		return;
	}
	if (!xml_is(st, NS_TLS, "starttls")) {
		stream_error(s, "not-authorized");
		return;
	}
	send_str(s, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	xml_stream_restart(s->xs);
	if (conn_start_tls(s->conn, false) != 0) {
		stream_error(s, "internal-server-error");
		return;
	}
	s->state = C2S_TLS;
}

static void on_fail_delay(uv_timer_t *t);
static void arm_idle(struct c2s *s);
static void arm_auth_deadline(struct c2s *s);
static void sasl_result(struct c2s *s, enum auth_result r, struct buf *out);
static void sasl2_success(struct c2s *s, struct buf *out);
static void bind_session(struct c2s *s, const char *resource);
static void session_started(struct c2s *s);

static const struct conn_ops c2s_ops;

/* Which exchange a directory answer belongs to. */
struct auth_wait {
	uint64_t conn_id;
	unsigned seq;
};

static void on_directory_answer(struct loop *l, void *arg, enum dir_status st,
				const struct dir_user *u)
{
	struct auth_wait *w = arg;
	struct conn *c = loop_stopping(l) ? NULL : conn_find(l, w->conn_id);
	struct c2s *s = c && c->ops == &c2s_ops ? c->owner : NULL;
	unsigned seq = w->seq;
	free(w);
	if (s == NULL || s->state != C2S_SASL_WAIT || s->auth_seq != seq || s->auth == NULL)
		return;
	static const char *const why[] = { "ok", "the password is wrong", "no such user",
					   "the account is locked", "the directory is unavailable",
					   "the directory answered with an error" };
	if (st != DIR_OK)
		log_info("c2s %llu (%s): login of '%s' refused: %s", (unsigned long long)c->id, c->peer,
			 s->auth->authid, why[st]);
	struct buf out;
	buf_init(&out);
	enum auth_result r = auth_complete(s->auth, st == DIR_OK,
					   st == DIR_UNAVAILABLE || st == DIR_ERROR,
					   u ? u->local : NULL, &out);
	if (r == AUTH_SUCCESS && u && u->photo_hash[0]) {
		free(s->photo_hash);
		s->photo_hash = xstrdup(u->photo_hash);
	}
	sasl_result(s, r, &out);
	buf_free(&out);
}

static void on_internal_answer(struct loop *l, void *arg, bool ok, bool temporary)
{
	struct auth_wait *w = arg;
	struct conn *c = l == NULL || loop_stopping(l) ? NULL : conn_find(l, w->conn_id);
	struct c2s *s = c && c->ops == &c2s_ops ? c->owner : NULL;
	unsigned seq = w->seq;
	free(w);
	if (s == NULL || s->state != C2S_SASL_WAIT || s->auth_seq != seq || s->auth == NULL)
		return;
	struct buf out;
	buf_init(&out);
	sasl_result(s, auth_complete(s->auth, ok, temporary, NULL, &out), &out);
	buf_free(&out);
}

/* AUTH_PENDING: the mechanism finished; the account source decides (the
 * directory, or the internal store's PBKDF2 on a worker thread). */
static void ask_directory(struct c2s *s)
{
	struct directory *d = directory_of(s->loop->srv, s->domain);
	struct auth_wait *w = xmalloc(sizeof *w);
	w->conn_id = s->conn->id;
	w->seq = ++s->auth_seq;
	s->state = C2S_SASL_WAIT;
	if (d == NULL) {
		auth_check_internal(s->auth, on_internal_answer, w);
		return;
	}
	if (s->auth->pending == AUTH_PENDING_PASSWORD)
		directory_auth(d, s->loop, s->auth->authid, s->auth->password, on_directory_answer, w);
	else
		directory_lookup(d, s->loop, s->auth->authid, on_directory_answer, w);
}

/* Room for "authid@domain". */
#define AUTH_ACCOUNT_MAX (sizeof ((struct auth_session *)0)->authid + JID_PART_MAX + 2)

/* The keys of the attempt running on s for authfail: the peer's address
 * (IPv6 by prefix) and the account, "" while the mechanism has named none. */
static void attempt_keys(struct c2s *s, char *addr, char *account)
{
	netaddr_key_str(s->conn->peer, cfg_of(s)->limits.ipv6_prefix, addr, NETADDR_KEY_STR_MAX);
	account[0] = '\0';
	if (s->auth != NULL && s->auth->authid[0] != '\0')
		snprintf(account, AUTH_ACCOUNT_MAX, "%s@%s", s->auth->authid, s->domain);
}

/* Whether the address, or the account once named, has spent its budget of
 * failed logins (authfail.h). */
static bool over_budget(struct c2s *s)
{
	char addr[NETADDR_KEY_STR_MAX], account[AUTH_ACCOUNT_MAX];
	attempt_keys(s, addr, account);
	return authfail_blocked(s->loop->srv->authfail, &cfg_of(s)->limits, addr, account);
}

/* Ends the exchange as failed; the answer follows after delay ms (never
 * after the authentication deadline), and counts against the stream. */
static void fail_later(struct c2s *s, bool refused, unsigned delay)
{
	uint64_t now = uv_now(&s->loop->uv);
	uint64_t left = s->auth_deadline > now ? s->auth_deadline - now : 0;
	s->sasl_failures++;
	s->fail_refused = refused;
	s->state = C2S_SASL_FAIL;
	uv_timer_start(&s->timer, on_fail_delay, delay < left ? delay : left, 0);
}

/* An attempt while over budget: refused whatever the password, so that
 * guessing learns nothing; not recorded, so the budget keeps refilling. */
static void refuse_attempt(struct c2s *s)
{
	log_info("c2s %llu (%s): login refused unchecked for '%s': too many failed logins",
		 (unsigned long long)s->conn->id, s->conn->peer,
		 s->auth != NULL ? s->auth->authid : "");
	s->auth_seq++; /* a directory answer still on its way is dropped */
	end_auth(s);
	fail_later(s, true, AUTHFAIL_REFUSED_DELAY_MS);
}

static void sasl_result(struct c2s *s, enum auth_result r, struct buf *out)
{
	if ((r == AUTH_PENDING || r == AUTH_SUCCESS || r == AUTH_FAILURE) && over_budget(s)) {
		refuse_attempt(s);
		return;
	}
	switch (r) {
	case AUTH_CONTINUE:
		if (s->sasl2 != NULL) {
			struct buf b;
			buf_init(&b);
			sasl2_write_challenge(&b, out->data, out->len);
			conn_write(s->conn, b.data, b.len);
			buf_free(&b);
			s->state = C2S_SASL;
			return;
		}
		send_str(s, "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
		if (out->len == 0)
			send_str(s, "=");
		conn_write(s->conn, out->data, out->len);
		send_str(s, "</challenge>");
		s->state = C2S_SASL;
		return;
	case AUTH_PENDING:
		ask_directory(s);
		return;
	case AUTH_SUCCESS:
		s->bare = xmalloc(strlen(s->auth->authid) + strlen(s->domain) + 2);
		sprintf(s->bare, "%s@%s", s->auth->authid, s->domain);
		authfail_success(s->loop->srv->authfail, s->bare);
		uncount_unauthenticated(s);
		if (s->auth->principal[0])
			log_info("c2s %llu (%s): authenticated as %s with %s (Kerberos principal %s)",
				 (unsigned long long)s->conn->id, s->conn->peer, s->bare,
				 s->auth->mech, s->auth->principal);
		else
			log_info("c2s %llu (%s): authenticated as %s with %s",
				 (unsigned long long)s->conn->id, s->conn->peer, s->bare,
				 s->auth->mech);
		end_auth(s);
		s->authenticated = true;
		if (s->sasl2 != NULL) {
			sasl2_success(s, out);
			return;
		}
		send_str(s, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
		conn_write(s->conn, out->data, out->len);
		send_str(s, "</success>");
		s->state = C2S_HEADER;
		xml_stream_restart(s->xs);
		arm_idle(s);
		return;
	case AUTH_FAILURE: {
		char addr[NETADDR_KEY_STR_MAX], account[AUTH_ACCOUNT_MAX];
		attempt_keys(s, addr, account);
		/* The answer waits a little, longer for an address or account
		 * that keeps failing, so guessing passwords is slow; a stream
		 * on another loop may have spent the budget since the check
		 * above, and then this one is refused too. */
		unsigned delay;
		if (authfail_record(s->loop->srv->authfail, &cfg_of(s)->limits, addr, account,
				    &delay) < 0) {
			refuse_attempt(s);
			return;
		}
		log_info("c2s %llu (%s): authentication failed for '%s' with %s",
			 (unsigned long long)s->conn->id, s->conn->peer, s->auth->authid, s->auth->mech);
		end_auth(s);
		fail_later(s, false, delay);
		return;
	}
	case AUTH_INVALID_MECH:
		sasl_failure(s, "invalid-mechanism");
		break;
	case AUTH_MALFORMED:
		sasl_failure(s, "malformed-request");
		break;
	case AUTH_BAD_AUTHZID:
		sasl_failure(s, "invalid-authzid");
		break;
	case AUTH_TEMPORARY:
		sasl_failure(s, "temporary-auth-failure");
		break;
	}
	end_auth(s);
	s->state = C2S_AUTH;
}

/* The failure delay is over, or the deadline came first. The stream's
 * last allowed failure closes it. */
static void on_fail_delay(uv_timer_t *t)
{
	struct c2s *s = t->data;
	if (s->state != C2S_SASL_FAIL || uv_now(&s->loop->uv) >= s->auth_deadline) {
		arm_auth_deadline(s);
		return;
	}
	sasl_failure(s, s->fail_refused ? "temporary-auth-failure" : "not-authorized");
	s->state = C2S_AUTH;
	if (s->sasl_failures >= cfg_of(s)->limits.max_auth_failures) {
		stream_error(s, "policy-violation");
		return;
	}
	arm_auth_deadline(s);
}

static bool handle_sasl2(struct c2s *s, struct xml_node *st, struct arena *a);

static void handle_auth(struct c2s *s, struct xml_node *st, struct arena *a)
{
	if (handle_sasl2(s, st, a))
		return;
	struct buf out;
	buf_init(&out);
	if (xml_is(st, NS_SASL, "auth") && s->state == C2S_AUTH && over_budget(s)) {
		refuse_attempt(s);
	} else if (xml_is(st, NS_SASL, "auth") && s->state == C2S_AUTH) {
		const char *mech = xml_attr(st, "mechanism");
		end_auth(s);
		s->auth = xcalloc(1, sizeof *s->auth);
		s->auth->loop = s->loop;
		s->auth->domain = s->domain;
		sasl_result(s,
			    mech ? auth_start(s->auth, s->loop->srv->gsasl, s->conn->ssl,
					      cfg_of(s)->allow_plain, mech, xml_text(a, st), &out)
				 : AUTH_INVALID_MECH,
			    &out);
	} else if (xml_is(st, NS_SASL, "response") && s->state == C2S_SASL) {
		sasl_result(s, auth_step(s->auth, xml_text(a, st), &out), &out);
	} else if (s->state == C2S_SASL_WAIT) {
		/* Nothing may overtake the answer (RFC 6120 §6.4.5); an
		 * abort is honoured, and the directory's answer dropped. */
		if (!xml_is(st, NS_SASL, "abort")) {
			stream_error(s, "policy-violation");
		} else {
			s->auth_seq++;
			end_auth(s);
			sasl_failure(s, "aborted");
			s->state = C2S_AUTH;
		}
	} else if (s->state == C2S_SASL_FAIL && xml_is(st, NS_SASL, NULL)) {
		/* The delayed failure answers this exchange; an abort must not
		 * cut the delay short. */
	} else if (xml_is(st, NS_SASL, "abort")) {
		end_auth(s);
		sasl_failure(s, "aborted");
		s->state = C2S_AUTH;
	} else if (xml_is(st, NS_TLS, "starttls")) {
		stream_error(s, "policy-violation");
	} else if (xml_is(st, NS_CLIENT, "iq") && s->state == C2S_AUTH) {
		/* In-band registration (XEP-0077) is the one thing an
		 * unauthenticated stream may ask; the module says no when off. */
		register_preauth(s->loop, s->conn->id, s->conn->peer, s->domain, st, a, &out);
		conn_write(s->conn, out.data, out.len);
	} else if (xml_is(st, NS_SASL, NULL)) {
		sasl_failure(s, "malformed-request");
	} else {
		stream_error(s, "not-authorized");
	}
	buf_free(&out);
}

/* --- SASL2 (XEP-0388), Bind 2 (XEP-0386), FAST (XEP-0484) ---
 * The same exchange as legacy SASL (auth session, failure budgets and
 * delays, deadline, max_auth_failures), answered in the SASL2 profile
 * while s->sasl2 is set; the elements are read and written in sasl2.c. */

/* Stream management inline (XEP-0198 in SASL2 and Bind 2): the resumption
 * runs first (it may need the session's owner loop); its <resumed/> or
 * <failed/> comes back through resume_answer, which finishes the SASL2
 * success with it (sasl2_resume_answered). */
static int c2s_sm_enable(struct c2s *s, bool want_resume, struct buf *out);
static int c2s_sm_resume(struct c2s *s, const char *previd, const char *h_attr);

struct fast_wait {
	uint64_t conn_id;
	unsigned seq;
};

static void on_fast_answer(struct loop *l, struct fast_check *fc, void *arg)
{
	struct fast_wait *w = arg;
	struct conn *c = l == NULL ? NULL : conn_find(l, w->conn_id);
	struct c2s *s = c && c->ops == &c2s_ops ? c->owner : NULL;
	unsigned seq = w->seq;
	free(w);
	if (s == NULL || s->state != C2S_SASL_WAIT || s->auth_seq != seq || s->auth == NULL ||
	    s->sasl2 == NULL)
		return;
	struct buf out;
	buf_init(&out);
	enum auth_result r = AUTH_FAILURE;
	if (fc->outcome == FAST_OK) {
		r = AUTH_SUCCESS;
		buf_puts(&out, fc->responder);
		snprintf(s->sasl2->new_token, sizeof s->sasl2->new_token, "%s", fc->new_token);
		s->sasl2->new_expiry = fc->new_expiry;
	} else if (fc->outcome == FAST_STORE_ERROR) {
		r = AUTH_TEMPORARY;
	} else if (fc->outcome == FAST_EXPIRED) {
		s->sasl2->expired = true;
	}
	sasl_result(s, r, &out);
	buf_free(&out);
}

/* A token login: one storage job checks and rotates the token, then the
 * exchange ends as any other (sasl_result). */
static void fast_login(struct c2s *s)
{
	struct sasl2_request *r = s->sasl2;
	const struct config_host *host = config_find_host(cfg_of(s), s->domain);
	snprintf(s->auth->mech, sizeof s->auth->mech, "%s", r->mech);
	struct buf out;
	buf_init(&out);
	if (!fast_enabled(cfg_of(s)) || host == NULL || host->auth != HOST_AUTH_INTERNAL ||
	    !fast_mech_offered(r->mech, s->conn->ssl)) {
		sasl_result(s, AUTH_INVALID_MECH, &out);
		buf_free(&out);
		return;
	}
	struct fast_check *fc = xcalloc(1, sizeof *fc);
	int rc = r->initial ? fast_parse_initial(r->initial, fc->local, sizeof fc->local, fc->hash)
			    : -1;
	snprintf(fc->mech, sizeof fc->mech, "%s", r->mech);
	if (rc == -1 || (rc == 0 && fast_channel_binding(fc, s->conn->ssl) != 0)) {
		free(fc);
		sasl_result(s, AUTH_MALFORMED, &out);
		buf_free(&out);
		return;
	}
	snprintf(s->auth->authid, sizeof s->auth->authid, "%s", rc == 0 ? fc->local : "");
	if (rc != 0 || r->ua_id[0] == '\0') {
		/* An invalid user name, or no device to look the token up by
		 * (XEP-0484 §5.1: the client MUST send a user-agent id). */
		free(fc);
		sasl_result(s, AUTH_FAILURE, &out);
		buf_free(&out);
		return;
	}
	buf_free(&out);
	if (over_budget(s)) {
		free(fc);
		refuse_attempt(s);
		return;
	}
	snprintf(fc->domain, sizeof fc->domain, "%s", s->domain);
	snprintf(fc->device, sizeof fc->device, "%s", r->ua_id);
	snprintf(fc->software, sizeof fc->software, "%s", r->software);
	snprintf(fc->device_name, sizeof fc->device_name, "%s", r->device);
	fc->count = r->fast_count;
	fc->invalidate = r->fast_invalidate;
	/* Each use brings the next token (rotation), for the mechanism the
	 * client asks for if it is offered; an invalidation only when asked. */
	const char *next = r->request_token[0] && fast_mech_offered(r->request_token, s->conn->ssl)
				   ? r->request_token
			   : r->fast_invalidate ? ""
						: r->mech;
	snprintf(fc->next_mech, sizeof fc->next_mech, "%s", next);
	struct fast_wait *w = xmalloc(sizeof *w);
	w->conn_id = s->conn->id;
	w->seq = ++s->auth_seq;
	s->state = C2S_SASL_WAIT;
	fast_check(s->loop, fc, on_fast_answer, w);
}

static void sasl2_authenticate(struct c2s *s, struct xml_node *st, struct arena *a)
{
	const char *condition = "malformed-request";
	struct sasl2_request *r = sasl2_parse(st, a, &condition);
	end_auth(s);
	sasl2_free(s->sasl2);
	s->sasl2 = r != NULL ? r : xcalloc(1, sizeof *r);
	if (r == NULL) {
		sasl_failure(s, condition);
		return;
	}
	s->auth = xcalloc(1, sizeof *s->auth);
	s->auth->loop = s->loop;
	s->auth->domain = s->domain;
	if (over_budget(s)) {
		refuse_attempt(s);
		return;
	}
	if (strncmp(r->mech, "HT-", 3) == 0) {
		fast_login(s);
		return;
	}
	struct buf out;
	buf_init(&out);
	sasl_result(s,
		    auth_start(s->auth, s->loop->srv->gsasl, s->conn->ssl, cfg_of(s)->allow_plain,
			       r->mech, r->initial ? r->initial : "", &out),
		    &out);
	buf_free(&out);
}

/* Whether st belongs to the SASL2 profile, and then handles it: an
 * <authenticate/>, the exchange's <response/> and <abort/>. Anything else
 * while a SASL2 exchange runs ends the stream (XEP-0388 §2.5). */
static bool handle_sasl2(struct c2s *s, struct xml_node *st, struct arena *a)
{
	if (xml_is(st, NS_SASL2, "authenticate") && s->state == C2S_AUTH) {
		sasl2_authenticate(s, st, a);
		return true;
	}
	if (s->sasl2 == NULL && !xml_is(st, NS_SASL2, NULL))
		return false;
	if (s->sasl2 != NULL && s->state == C2S_SASL && xml_is(st, NS_SASL2, "response")) {
		struct buf out;
		buf_init(&out);
		char *input = sasl2_text(a, st);
		sasl_result(s, auth_step(s->auth, input, &out), &out);
		free(input);
		buf_free(&out);
	} else if (s->sasl2 != NULL && xml_is(st, NS_SASL2, "abort") &&
		   (s->state == C2S_SASL || s->state == C2S_SASL_WAIT)) {
		s->auth_seq++; /* an answer still on its way is dropped */
		end_auth(s);
		sasl_failure(s, "aborted");
		s->state = C2S_AUTH;
	} else if (s->sasl2 != NULL && s->state == C2S_SASL_FAIL &&
		   (xml_is(st, NS_SASL2, "response") || xml_is(st, NS_SASL2, "abort"))) {
		/* The delayed failure answers this exchange; an abort must not
		 * cut the delay short. */
	} else {
		stream_error(s, "policy-violation");
	}
	return true;
}

static void sasl2_finish(struct c2s *s);

static void on_token_stored(struct loop *l, void *arg, int rc)
{
	struct fast_wait *w = arg;
	struct conn *c = l == NULL ? NULL : conn_find(l, w->conn_id);
	struct c2s *s = c && c->ops == &c2s_ops ? c->owner : NULL;
	unsigned seq = w->seq;
	free(w);
	if (s == NULL || s->state != C2S_SASL_WAIT || s->auth_seq != seq || s->sasl2 == NULL)
		return;
	if (rc < 0)
		s->sasl2->new_token[0] = '\0'; /* not stored: not handed out */
	sasl2_finish(s);
}

/* The SASL2 exchange succeeded (s->bare is set). A token asked for at a
 * login by another mechanism is stored before <success/> hands it out,
 * so that a client never holds a token the server lost. */
static void sasl2_success(struct c2s *s, struct buf *out)
{
	struct sasl2_request *r = s->sasl2;
	if (out->len > 0) {
		r->additional = xmalloc(out->len + 1);
		memcpy(r->additional, out->data, out->len);
		r->additional[out->len] = '\0';
	}
	const struct config_host *host = config_find_host(cfg_of(s), s->domain);
	if (r->request_token[0] && strncmp(r->mech, "HT-", 3) != 0 && r->ua_id[0] &&
	    fast_enabled(cfg_of(s)) && host != NULL && host->auth == HOST_AUTH_INTERNAL &&
	    fast_mech_offered(r->request_token, s->conn->ssl)) {
		size_t local_len = (size_t)(strchr(s->bare, '@') - s->bare);
		char local[JID_PART_MAX + 1];
		snprintf(local, sizeof local, "%.*s", (int)local_len, s->bare);
		struct fast_wait *w = xmalloc(sizeof *w);
		w->conn_id = s->conn->id;
		w->seq = ++s->auth_seq;
		if (fast_issue(s->loop, s->domain, local, r->ua_id, r->software, r->device,
			       r->request_token, r->new_token, &r->new_expiry, on_token_stored,
			       w) == 0) {
			s->state = C2S_SASL_WAIT;
			return;
		}
		free(w);
		r->new_token[0] = '\0';
	}
	sasl2_finish(s);
}

/* Bind 2, <success/> and the new features, without a stream restart. */
static void sasl2_finish(struct c2s *s)
{
	struct sasl2_request *r = s->sasl2;
	s->sasl2 = NULL;
	if (r->sm_answer == NULL || !r->sm_resumed)
		s->state = C2S_BIND; /* a resumed session is ACTIVE already */
	if (r->sm_resume && r->sm_answer == NULL) {
		/* Answered through resume_answer, at once or from resume_finish. */
		s->sasl2_resuming = r;
		c2s_sm_resume(s, r->sm_previd, r->sm_h);
		return;
	}
	struct buf b, inl;
	buf_init(&b);
	buf_init(&inl);
	bool resumed = r->sm_answer != NULL && r->sm_resumed;
	if (r->sm_answer != NULL)
		buf_puts(&inl, r->sm_answer);
	if (!resumed && r->bind) {
		char resource[JID_PART_MAX + 1];
		sasl2_bind_resource(r, s->bare, resource, sizeof resource);
		bind_session(s, resource);
		if (r->carbons)
			router_set_interested(s->loop->srv->router, s->bare, s->resource,
					      s->conn->id, ROUTER_WANTS_CARBONS);
		if (r->inactive)
			csi_set_inactive(&s->csi);
		buf_puts(&inl, "<bound xmlns='" NS_BIND2 "'>");
		if (r->sm_enable)
			c2s_sm_enable(s, r->sm_enable_resume, &inl);
		buf_puts(&inl, "</bound>");
	}
	buf_puts(&b, "<success xmlns='" NS_SASL2 "'>");
	if (r->additional != NULL) {
		buf_puts(&b, "<additional-data>");
		buf_puts(&b, r->additional);
		buf_puts(&b, "</additional-data>");
	}
	const char *who = s->full ? s->full : s->bare;
	buf_puts(&b, "<authorization-identifier>");
	buf_append_escaped(&b, who, strlen(who));
	buf_puts(&b, "</authorization-identifier>");
	buf_append(&b, inl.data, inl.len);
	if (r->new_token[0]) {
		char when[40];
		datetime_format(r->new_expiry * 1000000LL, when, sizeof when);
		buf_printf(&b, "<token xmlns='" NS_FAST "' expiry='%s' token='%s'/>", when,
			   r->new_token);
	}
	buf_puts(&b, "</success>");
	/* XEP-0388 §2.6.1: features follow at once; no stream restart. */
	conn_write(s->conn, b.data, b.len);
	OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	buf_free(&inl);
	OPENSSL_cleanse(r->new_token, sizeof r->new_token);
	sasl2_free(r);
	if (s->state == C2S_ACTIVE)
		send_str(s, "<stream:features/>");
	else
		send_features(s);
	arm_idle(s);
	if (s->state == C2S_ACTIVE && !resumed)
		session_started(s);
}

/* The inline resumption's answer (el: <resumed/> or <failed/>): the SASL2
 * success goes out with it, binding a new session (Bind 2) when it
 * failed. A resumed session's stanzas follow (resume_finish). */
static void sasl2_resume_answered(struct c2s *s, const struct buf *el, bool resumed)
{
	struct sasl2_request *r = s->sasl2_resuming;
	s->sasl2_resuming = NULL;
	r->sm_answer = xmalloc(el->len + 1);
	memcpy(r->sm_answer, el->data, el->len);
	r->sm_answer[el->len] = '\0';
	r->sm_resumed = resumed;
	s->sasl2 = r;
	sasl2_finish(s);
}

/* --- the bound session --- */

static void iq_error(struct c2s *s, struct xml_node *st, struct arena *a, const char *type,
		     const char *cond)
{
	xml_set_attr(a, st, "to", NULL);
	xml_set_attr(a, st, "from", NULL);
	xml_set_attr(a, st, "type", "error");
	struct xml_node *err = xml_add_child(a, st, NS_CLIENT, "error");
	xml_set_attr(a, err, "type", type);
	xml_add_child(a, err, NS_STANZA_ERRORS, cond);
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	send_stanza(s, b.data, b.len);
	buf_free(&b);
}

static void kick_target(struct loop *l, const struct router_target *t, const char *condition)
{
	if (t->loop == l->index) {
		c2s_kick(l, t->session, condition);
		return;
	}
	struct inbox_item *item = xcalloc(1, sizeof *item);
	item->kind = INBOX_KICK;
	item->session = t->session;
	item->condition = condition;
	loop_post(&l->srv->loops[t->loop], item);
}

/* Binds resource to the authenticated stream: the session is in the
 * registry and active; a session of the same full JID ends. The caller
 * answers, then calls session_started. */
static void bind_session(struct c2s *s, const char *resource)
{
	size_t bare_len = strlen(s->bare);
	s->full = xmalloc(bare_len + strlen(resource) + 2);
	sprintf(s->full, "%s/%s", s->bare, resource);
	s->resource = s->full + bare_len + 1;
	s->id = s->conn->id;
	struct router_target old;
	if (router_bind(s->loop->srv->router, s->bare, s->resource, s->conn->id,
			s->loop->index, &old) == 1) {
		/* RFC 6120 §7.7.2.2: the new session wins; the old one ends. */
		kick_target(s->loop, &old, "conflict");
	}
	s->registered = true;
	s->state = C2S_ACTIVE;
	log_info("c2s %llu (%s): bound %s", (unsigned long long)s->conn->id, s->conn->peer,
		 s->full);
}

static void session_started(struct c2s *s)
{
	struct jid me;
	session_jid(s, &me);
	struct hook_ctx hc = { .loop = s->loop, .from = &me, .to = &me, .session = s->conn->id };
	hooks_run(HOOK_SESSION_STARTED, &hc);
}

static void handle_bind(struct c2s *s, struct xml_node *st, struct arena *a)
{
	const char *id = xml_attr(st, "id");
	const char *type = xml_attr(st, "type");
	struct xml_node *bind = xml_child(st, NS_BIND, "bind");
	if (!xml_is(st, NS_CLIENT, "iq") || bind == NULL || type == NULL ||
	    strcmp(type, "set") != 0 || id == NULL) {
		stream_error(s, "not-authorized");
		return;
	}
	struct xml_node *res = xml_child(bind, NS_BIND, "resource");
	const char *want = res ? xml_text(a, res) : "";
	char resource[JID_PART_MAX + 1];
	if (want[0] != '\0') {
		if (jid_prep_resource(want, strlen(want), resource, sizeof resource) < 0) {
			iq_error(s, st, a, "modify", "bad-request");
			return;
		}
	} else {
		random_hex(resource, 8);
	}
	bind_session(s, resource);
	const char *full = s->full;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<iq type='result' id='");
	buf_append_escaped(&b, id, strlen(id));
	buf_puts(&b, "'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>");
	buf_append_escaped(&b, full, strlen(full));
	buf_puts(&b, "</jid></bind></iq>");
	conn_write(s->conn, b.data, b.len);
	buf_free(&b);
	session_started(s);
}

/* Broadcast presence (no 'to'): availability and priority for routing,
 * and a copy to the account's other available resources. */
static void broadcast_presence(struct c2s *s, struct xml_node *st, struct arena *a)
{
	const char *type = xml_attr(st, "type");
	if (type != NULL && strcmp(type, "unavailable") != 0)
		return; /* subscriptions and probes need a 'to' */
	bool available = type == NULL;
	bool was_available = s->available;
	int priority = 0;
	struct xml_node *p = xml_child(st, NS_CLIENT, "priority");
	if (p != NULL) {
		long v = strtol(xml_text(a, p), NULL, 10);
		priority = v < -128 ? -128 : v > 127 ? 127 : (int)v;
	}
	if (available && s->photo_hash != NULL &&
	    xml_child(st, "vcard-temp:x:update", "x") == NULL) {
		/* XEP-0153 for the directory's photo: clients that never
		 * publish an avatar still show the one from the directory. */
		struct xml_node *x = xml_add_child(a, st, "vcard-temp:x:update", "x");
		struct xml_node *ph = xml_add_child(a, x, "vcard-temp:x:update", "photo");
		xml_add_text(a, ph, s->photo_hash, strlen(s->photo_hash));
	}
	s->available = available;
	s->priority = priority;
	router_set_presence(s->loop->srv->router, s->bare, s->resource, s->conn->id, available,
			    priority);
	struct jid from;
	session_jid(s, &from);
	presence_broadcast(s->loop, s->conn->id, &from, st, a, was_available);
	if (!available)
		send_directed_unavailable(s);
}

static bool is_our_ping_answer(struct c2s *s, struct xml_node *st)
{
	const char *id = xml_attr(st, "id");
	const char *type = xml_attr(st, "type");
	const char *to = xml_attr(st, "to");
	return strcmp(st->name, "iq") == 0 && id && type && strncmp(id, "natter-ping-", 12) == 0 &&
	       (strcmp(type, "result") == 0 || strcmp(type, "error") == 0) &&
	       (to == NULL || strcmp(to, s->domain) == 0);
}

/* RFC 6121 §4.6: who got directed presence gets unavailable when the
 * session goes away or becomes unavailable. */
static void note_directed(struct c2s *s, const char *to, bool available)
{
	for (int i = 0; i < s->n_directed; i++) {
		if (strcmp(s->directed[i], to) == 0) {
			if (!available) {
				free(s->directed[i]);
				s->directed[i] = s->directed[--s->n_directed];
			}
			return;
		}
	}
	if (!available || s->n_directed >= 64)
		return;
	s->directed = xrealloc(s->directed, (size_t)(s->n_directed + 1) * sizeof *s->directed);
	s->directed[s->n_directed++] = xstrdup(to);
}

static void send_directed_unavailable(struct c2s *s)
{
	struct arena a;
	arena_init(&a);
	struct jid from;
	session_jid(s, &from);
	for (int i = 0; i < s->n_directed; i++) {
		struct jid to;
		if (jid_parse(&to, s->directed[i], strlen(s->directed[i])) == 0) {
			struct xml_node *p = xml_new(&a, NS_CLIENT, "presence");
			xml_set_attr(&a, p, "type", "unavailable");
			xml_set_attr(&a, p, "from", s->full);
			xml_set_attr(&a, p, "to", s->directed[i]);
			presence_outbound(s->loop, p, &a, &from, &to);
		}
		free(s->directed[i]);
	}
	free(s->directed);
	s->directed = NULL;
	s->n_directed = 0;
	arena_reset(&a);
}

static void handle_active(struct c2s *s, struct xml_node *st, struct arena *a)
{
	if (!xml_is(st, NS_CLIENT, "message") && !xml_is(st, NS_CLIENT, "presence") &&
	    !xml_is(st, NS_CLIENT, "iq")) {
		stream_error(s, "unsupported-stanza-type");
		return;
	}
	if (is_our_ping_answer(s, st))
		return;
	const char *type = xml_attr(st, "type");
	bool is_iq = strcmp(st->name, "iq") == 0;
	if (is_iq) {
		/* RFC 6120 §8.2.3: a result or an error is never answered, even
		 * a malformed one (without an id, nothing could match it). */
		if (type != NULL && (strcmp(type, "result") == 0 || strcmp(type, "error") == 0) &&
		    xml_attr(st, "id") == NULL)
			return;
		/* RFC 6120 §8.2.3: get/set carry exactly one payload. */
		if (xml_attr(st, "id") == NULL || type == NULL ||
		    ((strcmp(type, "get") == 0 || strcmp(type, "set") == 0) &&
		     xml_element_count(st) != 1) ||
		    (strcmp(type, "get") != 0 && strcmp(type, "set") != 0 &&
		     strcmp(type, "result") != 0 && strcmp(type, "error") != 0)) {
			iq_error(s, st, a, "modify", "bad-request");
			return;
		}
		struct xml_node *payload = xml_first_element(st);
		if (payload && xml_is(payload, NS_SESSION, "session") && strcmp(type, "set") == 0 &&
		    xml_attr(st, "to") == NULL) {
			/* RFC 3921 session establishment, kept for old clients. */
			const char *id = xml_attr(st, "id");
			struct buf b;
			buf_init(&b);
			buf_puts(&b, "<iq type='result' id='");
			buf_append_escaped(&b, id, strlen(id));
			buf_puts(&b, "'/>");
			send_stanza(s, b.data, b.len);
			buf_free(&b);
			return;
		}
	}
	/* The server stamps 'from' with the session's full JID (RFC 6120
	 * §8.1.2.1), whatever the client wrote there. */
	xml_set_attr(a, st, "from", s->full);
	const char *to_str = xml_attr(st, "to");
	struct jid to;
	if (to_str != NULL && jid_parse(&to, to_str, strlen(to_str)) != 0) {
		if (type == NULL || strcmp(type, "error") != 0) {
			xml_set_attr(a, st, "to", NULL);
			xml_set_attr(a, st, "type", "error");
			struct xml_node *err = xml_add_child(a, st, NS_CLIENT, "error");
			xml_set_attr(a, err, "type", "modify");
			xml_add_child(a, err, NS_STANZA_ERRORS, "jid-malformed");
			xml_set_attr(a, st, "from", NULL);
			struct buf b;
			buf_init(&b);
			xml_serialize(st, NS_CLIENT, &b);
			send_stanza(s, b.data, b.len);
			buf_free(&b);
		}
		return;
	}
	if (to_str != NULL) {
		/* Forward the normalised address. */
		char norm[3 * JID_PART_MAX + 3];
		jid_format(&to, norm, sizeof norm);
		xml_set_attr(a, st, "to", norm);
	}
	if (strcmp(st->name, "presence") == 0 && to_str == NULL) {
		broadcast_presence(s, st, a);
		return;
	}
	if (strcmp(st->name, "presence") == 0 && (type == NULL || strcmp(type, "unavailable") == 0))
		note_directed(s, xml_attr(st, "to"), type == NULL);
	struct jid from;
	session_jid(s, &from);
	deliver_stanza(s->loop, st, a, &from, to_str ? &to : NULL);
}

static void c2s_stanza(void *ud, struct xml_node *st, struct arena *a)
{
	struct c2s *s = ud;
	if (s->authenticated && (xml_is(st, NS_SASL2, NULL) || s->state == C2S_SASL_WAIT)) {
		/* XEP-0388: no <authenticate/> after success, and nothing
		 * before the <success/> of a login that stores its token. */
		stream_error(s, "policy-violation");
		return;
	}
	if (s->resume_pending && s->state == C2S_RESUMING) {
		hold_during_resume(s, st);
		return;
	}
	if (sm_intercept(s, st))
		return;
	if ((s->state == C2S_BIND || s->state == C2S_ACTIVE) && xml_is(st, NS_CSI, NULL)) {
		/* Offered with the features after authentication. */
		if (csi_nonza(&s->csi, st) != 0)
			stream_error(s, "unsupported-stanza-type");
		return;
	}
	switch (s->state) {
	case C2S_STARTTLS:
		handle_starttls(s, st);
		break;
	case C2S_AUTH:
	case C2S_SASL:
	case C2S_SASL_FAIL:
	case C2S_SASL_WAIT:
		handle_auth(s, st, a);
		break;
	case C2S_BIND:
		handle_bind(s, st, a);
		break;
	case C2S_ACTIVE:
		handle_active(s, st, a);
		break;
	default:
		stream_error(s, "not-authorized");
		break;
	}
}

/* --- connection events --- */

static void on_data(struct conn *c, const char *data, size_t len)
{
	struct c2s *s = c->owner;
	if (s->state == C2S_CLOSED)
		return;
	s->last_input = now_ms();
	s->ping_pending = false;
	enum xml_stream_result r = xml_stream_feed(s->xs, data, len);
	if (r == XS_NOT_WELL_FORMED)
		log_debug("c2s %llu: %s", (unsigned long long)c->id, xml_stream_error_text(s->xs));
	const char *condition = xml_stream_condition(r);
	if (condition != NULL)
		stream_error(s, condition);
}

static void on_tls_ready(struct conn *c)
{
	struct c2s *s = c->owner;
	s->secure = true;
	if (s->state == C2S_TLS)
		s->state = C2S_HEADER;
	log_debug("c2s %llu: %s established%s", (unsigned long long)c->id, SSL_get_version(c->ssl),
		  SSL_session_reused(c->ssl) ? ", session resumed" : "");
}

static void free_c2s(uv_handle_t *h)
{
	struct c2s *s = h->data;
	xml_stream_free(s->xs);
	for (int i = 0; i < s->n_directed; i++)
		free(s->directed[i]);
	free(s->directed);
	free(s->bare);
	free(s->full);
	free(s->photo_hash);
	csi_free(&s->csi);
	sm_free(s->sm);
	sasl2_free(s->sasl2_resuming);
	held_free(s->held);
	free(s);
}

/* The session ends: out of the registry, unavailable to contacts, and
 * what stream management still held goes where the RFCs say. */
static void end_session(struct c2s *s)
{
	if (s->registered) {
		s->registered = false;
		router_unbind(s->loop->srv->router, s->bare, s->resource, s->id);
		log_info("c2s %llu: %s disconnected", (unsigned long long)s->id, s->full);
		struct jid full;
		session_jid(s, &full);
		presence_session_ended(s->loop, &full, s->available);
		send_directed_unavailable(s);
		end_sm(s);
		struct hook_ctx hc = { .loop = s->loop, .from = &full, .to = &full,
				       .session = s->id };
		hooks_run(HOOK_SESSION_ENDED, &hc);
	}
	end_sm(s);
}

static void on_closed(struct conn *c)
{
	struct c2s *s = c->owner;
	end_auth(s);
	sasl2_free(s->sasl2);
	s->sasl2 = NULL;
	uncount_unauthenticated(s);
	uv_timer_stop(&s->timer);
	if (keeps_session(s)) {
		detach(s);
		return;
	}
	end_session(s);
	s->state = C2S_CLOSED;
	uv_close((uv_handle_t *)&s->timer, free_c2s);
}

static void on_shutdown(struct conn *c)
{
	struct c2s *s = c->owner;
	if (s != NULL && s->state != C2S_CLOSED)
		stream_error(s, "system-shutdown");
}

static const struct conn_ops c2s_ops = {
	.data = on_data,
	.tls_ready = on_tls_ready,
	.closed = on_closed,
	.shutdown = on_shutdown,
};

/* --- timers: authentication deadline, then idle detection --- */

static void on_auth_timeout(uv_timer_t *t)
{
	struct c2s *s = t->data;
	if (!s->authenticated)
		stream_error(s, "connection-timeout");
}

/* The deadline is one instant fixed at connect: whatever ran on the timer
 * meanwhile (a failure delay), the stream still ends then. */
static void arm_auth_deadline(struct c2s *s)
{
	uint64_t now = uv_now(&s->loop->uv);
	uv_timer_start(&s->timer, on_auth_timeout,
		       s->auth_deadline > now ? s->auth_deadline - now : 0, 0);
}

/* Counts s among its address's streams that have not logged in; -1 when
 * the address already holds as many as it may. */
static int count_unauthenticated(struct c2s *s)
{
	const struct config_limits *lim = &cfg_of(s)->limits;
	char addr[NETADDR_KEY_STR_MAX];
	netaddr_key_str(s->conn->peer, lim->ipv6_prefix, addr, sizeof addr);
	if (authfail_stream_open(s->loop->srv->authfail, addr,
				 lim->max_unauthenticated_per_address) != 0)
		return -1;
	/* The prefix in force now, so a reload cannot make the release
	 * miss its count. */
	s->counted_prefix = (unsigned char)lim->ipv6_prefix;
	return 0;
}

static void uncount_unauthenticated(struct c2s *s)
{
	if (s->counted_prefix == 0)
		return;
	char addr[NETADDR_KEY_STR_MAX];
	netaddr_key_str(s->conn->peer, s->counted_prefix, addr, sizeof addr);
	authfail_stream_done(s->loop->srv->authfail, addr);
	s->counted_prefix = 0;
}

static void on_idle(uv_timer_t *t)
{
	struct c2s *s = t->data;
	const struct config_limits *lim = &cfg_of(s)->limits;
	unsigned long long now = now_ms();
	if (s->ping_pending) {
		if (now - s->ping_sent >= (unsigned long long)lim->ping_timeout * 1000) {
			stream_error(s, "connection-timeout");
			return;
		}
		uv_timer_start(t, on_idle, (uint64_t)lim->ping_timeout * 1000 - (now - s->ping_sent), 0);
		return;
	}
	unsigned long long idle_ms = (unsigned long long)lim->idle_timeout * 1000;
	if (now - s->last_input < idle_ms) {
		uv_timer_start(t, on_idle, idle_ms - (now - s->last_input), 0);
		return;
	}
	/* Silent too long: ask (XEP-0199); no answer in time ends it. */
	char id[24];
	random_hex(id, 4);
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "<iq type='get' from='%s' id='natter-ping-%s'><ping xmlns='urn:xmpp:ping'/></iq>",
		   s->domain, id);
	if (s->state != C2S_ACTIVE)
		b.len = 0, buf_puts(&b, " "); /* not bound: a whitespace probe */
	if (s->state == C2S_ACTIVE)
		send_stanza(s, b.data, b.len);
	else
		conn_write(s->conn, b.data, b.len);
	buf_free(&b);
	s->ping_pending = true;
	s->ping_sent = now;
	uv_timer_start(t, on_idle, (uint64_t)lim->ping_timeout * 1000, 0);
}

static void arm_idle(struct c2s *s)
{
	uv_timer_start(&s->timer, on_idle, (uint64_t)cfg_of(s)->limits.idle_timeout * 1000, 0);
}

void c2s_accept(struct loop *l, uv_stream_t *listener, bool direct)
{
	struct conn *c = conn_accept(l, listener, &c2s_ops);
	if (c == NULL)
		return;
	struct c2s *s = xcalloc(1, sizeof *s);
	s->conn = c;
	s->loop = l;
	s->direct = direct;
	s->state = C2S_HEADER;
	s->last_input = now_ms();
	c->owner = s;
	csi_init(&s->csi, write_stanza, s);
	const struct config_limits *lim = &l->srv->cfg->limits;
	struct xml_stream_limits xl = { lim->max_stanza_size, lim->max_depth, lim->max_attributes };
	s->xs = xml_stream_new(&xl, &stream_handlers, s);
	uv_timer_init(&l->uv, &s->timer);
	s->timer.data = s;
	s->auth_deadline = uv_now(&l->uv) + (uint64_t)lim->auth_timeout * 1000;
	arm_auth_deadline(s);
	log_debug("c2s %llu: connection from %s%s", (unsigned long long)c->id, c->peer,
		  direct ? " (direct TLS)" : "");
	if (count_unauthenticated(s) != 0) {
		log_info("c2s %llu (%s): too many connections not logged in from this address",
			 (unsigned long long)c->id, c->peer);
		/* A stream error needs a stream: only the STARTTLS port has
		 * one before TLS; the direct TLS port is simply closed. */
		if (direct)
			conn_close(c);
		else
			stream_error(s, "policy-violation");
		return;
	}
	if (direct && conn_start_tls(c, true) != 0)
		conn_close(c);
}

void c2s_write_unauthenticated(struct loop *l, uint64_t session, const char *data, size_t len)
{
	struct conn *c = conn_find(l, session);
	if (c == NULL || c->ops != &c2s_ops)
		return;
	struct c2s *s = c->owner;
	if (s->authenticated || s->state == C2S_CLOSED)
		return;
	conn_write(c, data, len);
}

/* The session registered as id on loop l: on its connection, or detached
 * (or resuming) without one. */
static struct c2s *find_session(struct loop *l, uint64_t id)
{
	struct conn *c = conn_find(l, id);
	if (c != NULL)
		return c->ops == &c2s_ops ? c->owner : NULL;
	return sm_table_get(l, id);
}

static int sm_deliver(struct c2s *s, const char *data, size_t len);
static void forward(struct loop *l, const struct router_target *t, const char *data, size_t len);
static void expire_soon(struct c2s *s);
static void on_resume_timeout(uv_timer_t *t);

int c2s_deliver(struct loop *l, uint64_t session, const char *data, size_t len)
{
	/* Resumed on another connection a moment ago (the old one may still
	 * be closing): the sender saw the old registry entry. */
	struct router_target t;
	if (sm_table_get_forward(l, session, &t) == 0) {
		forward(l, &t, data, len);
		return 0;
	}
	struct c2s *s = find_session(l, session);
	if (s == NULL)
		return -1;
	if (s->sm == NULL && s->state != C2S_ACTIVE)
		return -1;
	/* Client state indication first: what it holds is not sent yet, so
	 * stream management counts it only once it is written. */
	csi_deliver(&s->csi, s->bare, &cfg_of(s)->limits, data, len);
	return 0;
}

/* Where every stanza routed to the client goes once client state
 * indication lets it: stream management's queue, or the connection. */
static void write_stanza(void *arg, const char *data, size_t len)
{
	send_stanza(arg, data, len);
}

void c2s_kick(struct loop *l, uint64_t session, const char *condition)
{
	struct c2s *s = find_session(l, session);
	if (s == NULL)
		return;
	if (s->moving)
		return; /* it lives on with the resuming connection */
	if (s->conn == NULL) {
		/* Detached: it ends as if its time had run out. A conflict
		 * waits a turn of the loop, for the session replacing it to be
		 * bound first; any other kick ends it now, so that the kicker
		 * knows it is over (an account removal sweeps the account's
		 * stores once every loop has passed its kick: a detached session
		 * ending after that kept its messages offline). */
		s->ending = true;
		if (strcmp(condition, "conflict") == 0) {
			s->registered = false;
			expire_soon(s);
		} else if (s->state == C2S_DETACHED) {
			uv_timer_stop(&s->timer);
			on_resume_timeout(&s->timer);
		}
		return;
	}
	/* A replaced session is already out of the registry: it must not
	 * unbind (and announce unavailable for) the new one. */
	if (strcmp(condition, "conflict") == 0)
		s->registered = false;
	stream_error(s, condition);
}

/* A session silent this long gives back its parser and buffers. */
#define C2S_IDLE_RELEASE_MS 2000

struct sweep {
	unsigned long long now;
	int released;
};

static void sweep_one(struct conn *c, void *arg)
{
	struct sweep *sw = arg;
	if (c->ops != &c2s_ops)
		return;
	struct c2s *s = c->owner;
	/* Not while the directory decides a login: a stream restart may be
	 * pending for the parser. */
	if (s->state == C2S_CLOSED || s->state == C2S_SASL_WAIT ||
	    sw->now - s->last_input < C2S_IDLE_RELEASE_MS)
		return;
	if (s->sm != NULL && sm_tick(s))
		sw->released++;
	if (xml_stream_release(s->xs) == 0) {
		log_debug("c2s %llu: idle, parser released", (unsigned long long)c->id);
		sw->released++;
	}
	conn_trim(c);
}

void c2s_sweep(struct loop *l)
{
	struct sweep sw = { now_ms(), 0 };
	conn_each(l, sweep_one, &sw);
	sm_table_sweep(l);
	/* Parsers (and acknowledged stream-management queues, a second later)
	 * are freed in bulk when a crowd goes idle: hand the pages back to
	 * the system rather than keep them as free heap. */
	if (sw.released >= 64)
		heap_trim();
}

void c2s_kick_account(struct loop *l, const char *bare, const char *condition)
{
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_all(l->srv->router, bare, t, ROUTER_MAX_TARGETS);
	for (int i = 0; i < n; i++)
		kick_target(l, &t[i], condition);
}

/* --- stream management (XEP-0198): sessions that outlive connections ---
 *
 * A session with stream management keeps every stanza it writes until the
 * client acknowledges it (sm.h). When the connection drops without
 * </stream:stream> (a reset, a timeout), a resumable session is detached:
 * the struct c2s stays, without connection, parser or output buffer, in
 * its loop's table and in the registry, still available; what arrives for
 * it is queued and HOOK_MESSAGE_QUEUED runs for each message.
 *
 * Resumption moves the session to the connection, not the connection to
 * the session. The new connection may have been accepted by any loop
 * (SO_REUSEPORT); moving a socket, its TLS state and its parser between
 * loops would reach deep into conn.c, whereas a session is a handful of
 * fields. So the resuming stream asks the session's owner loop (through
 * its inbox when it is another one) to hand the session over: the owner
 * checks the account, the SM id and the client's h and moves the registry
 * entry to the new connection's id and loop; then, from the end of its
 * inbox, closes the old connection if it is still there, leaves a
 * short-lived forward for stanzas that senders had already addressed to
 * the old id, and posts the session's fields and queue back. Stanzas that reach the new connection before the
 * hand-over is complete wait in a queue of its own, appended after the
 * session's. */

static const struct config_sm *sm_cfg(struct c2s *s) { return &cfg_of(s)->sm; }

static void sm_write_one(void *arg, struct refbuf *r)
{
	struct c2s *s = arg;
	conn_write(s->conn, r->data, r->len);
}

static void sm_request(struct c2s *s)
{
	send_str(s, "<r xmlns='" NS_SM "'/>");
	s->sm->request_pending = true;
	s->sm->since_request = 0;
}

/* Writes what waits for the connection; asks for an ack once
 * stream_management.request_every stanzas went out since the last ask. */
static void sm_flush(struct c2s *s)
{
	sm_each_unwritten(s->sm, sm_write_one, s);
	if (!s->sm->request_pending && s->sm->since_request >= (uint32_t)sm_cfg(s)->request_every)
		sm_request(s);
}

/* Once a second for a session silent for a while: fewer stanzas than
 * request_every are unacknowledged, so ask now; at most one <r/> is ever
 * unanswered. An empty queue gives its memory back (returns true then). */
static bool sm_tick(struct c2s *s)
{
	if (s->state != C2S_ACTIVE)
		return false;
	if (!s->sm->request_pending && s->sm->written > 0)
		sm_request(s);
	return sm_trim(s->sm);
}


static void expire_soon(struct c2s *s)
{
	if (s->state == C2S_DETACHED)
		uv_timer_start(&s->timer, on_resume_timeout, 0, 0);
}

/* HOOK_MESSAGE_QUEUED for a message kept for a detached session. */
static void message_queued(struct c2s *s, const char *data, size_t len)
{
	struct arena a;
	arena_init(&a);
	struct xml_node *st = xml_parse_element(&a, data, len);
	const char *from = st ? xml_attr(st, "from") : NULL;
	struct jid fj, me;
	if (from != NULL && jid_parse(&fj, from, strlen(from)) == 0) {
		session_jid(s, &me);
		struct hook_ctx hc = { .loop = s->loop, .st = st, .a = &a, .from = &fj, .to = &me,
				       .session = s->id };
		hooks_run(HOOK_MESSAGE_QUEUED, &hc);
		log_debug("c2s %llu: message from %s queued for %s (detached)",
			  (unsigned long long)s->id, from, s->full);
	}
	arena_reset(&a);
}

static bool is_message(const char *data, size_t len)
{
	return len > 9 && memcmp(data, "<message", 8) == 0 &&
	       (data[8] == ' ' || data[8] == '>' || data[8] == '/');
}

/* A stanza for a session with stream management: kept until acknowledged,
 * written now if the session has a connection. Past the queue's bounds
 * the session ends (stanzas kept go to offline storage, end_sm). */
static int sm_deliver(struct c2s *s, const char *data, size_t len)
{
	struct refbuf *r = refbuf_new(data, len);
	int over = sm_push(s->sm, sm_cfg(s), r);
	refbuf_release(r);
	if (s->state == C2S_ACTIVE)
		sm_flush(s);
	else if (s->state == C2S_DETACHED && is_message(data, len))
		message_queued(s, data, len);
	if (over != 0 && !s->ending) {
		log_info("c2s %llu: %s holds too many unacknowledged stanzas (%u, %zu bytes)",
			 (unsigned long long)s->id, s->full ? s->full : s->bare, s->sm->len,
			 s->sm->bytes);
		s->ending = true;
		if (s->conn != NULL)
			stream_error(s, "resource-constraint");
		else
			expire_soon(s);
	}
	return 0;
}

static void send_stanza(struct c2s *s, const char *data, size_t len)
{
	if (s->sm == NULL)
		conn_write(s->conn, data, len);
	else
		sm_deliver(s, data, len);
}

static void forward(struct loop *l, const struct router_target *t, const char *data, size_t len)
{
	struct refbuf *r = refbuf_new(data, len);
	deliver_to_session(l, t, r);
	refbuf_release(r);
}

/* --- the end of a session with stream management --- */

struct bounce {
	struct loop *l;
	const struct jid *me; /* whose stanza it was; NULL: its 'to' */
	int kept, bounced, handed;
	/* The session bound to the same full JID since (RFC 6120 §7.7.2.2:
	 * it replaced this one), which takes the messages; NULL: none. */
	const struct router_target *successor;
};

/* A stanza for a session that can no longer take it: a chat or normal
 * message goes to offline storage (its stanza-id lets a device that
 * catches up from the archive skip it, offline.c), an iq get or set gets
 * service-unavailable (RFC 6121 §8.5.3.2.2), the rest is dropped
 * (presence, errors, results, carbons copies, groupchat, headlines). */
static void undeliverable(struct bounce *b, const char *data, size_t len)
{
	struct arena a;
	arena_init(&a);
	struct xml_node *st = xml_parse_element(&a, data, len);
	const char *type = st ? xml_attr(st, "type") : NULL;
	struct jid to;
	const struct jid *me = b->me;
	if (st != NULL && me == NULL) {
		const char *t = xml_attr(st, "to");
		if (t != NULL && jid_parse(&to, t, strlen(t)) == 0)
			me = &to;
	}
	if (st == NULL) {
	} else if (strcmp(st->name, "message") == 0) {
		bool plain = type == NULL || strcmp(type, "chat") == 0 || strcmp(type, "normal") == 0;
		bool carbon = xml_child(st, "urn:xmpp:carbons:2", "received") != NULL ||
			      xml_child(st, "urn:xmpp:carbons:2", "sent") != NULL;
		if (plain && !carbon) {
			if (me != NULL && offline_store(b->l, me, st) == 0)
				b->kept++;
			else
				deliver_error(b->l, st, &a, "cancel", "service-unavailable");
		}
	} else if (strcmp(st->name, "iq") == 0 && type != NULL &&
		   (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
		deliver_error(b->l, st, &a, "cancel", "service-unavailable");
		b->bounced++;
	}
	arena_reset(&a);
}

/* An unacknowledged stanza of a session that ends: a message goes to the
 * session that replaced it, as it was addressed to their full JID. */
static void bounce_one(void *arg, struct refbuf *r)
{
	struct bounce *b = arg;
	if (b->successor != NULL && is_message(r->data, r->len)) {
		deliver_to_session(b->l, b->successor, r);
		b->handed++;
	} else if (b->me != NULL) {
		undeliverable(b, r->data, r->len);
	}
	refbuf_release(r);
}

void c2s_undeliverable(struct loop *l, const char *data, size_t len)
{
	struct bounce b = { .l = l };
	undeliverable(&b, data, len);
	if (b.kept > 0)
		log_info("loop %d: a message for a session that just ended kept offline", l->index);
}

static void end_sm(struct c2s *s)
{
	struct sm *sm = s->sm;
	if (sm == NULL)
		return;
	s->sm = NULL;
	if (sm->resumable && s->bare != NULL)
		router_sm_ended(s->loop->srv->router, s->bare, sm->key, sm->in);
	uint32_t n = sm->len;
	struct jid me;
	if (s->full != NULL)
		session_jid(s, &me);
	struct bounce b = { .l = s->loop, .me = s->full != NULL ? &me : NULL };
	struct router_target next;
	if (s->full != NULL &&
	    router_find_full(s->loop->srv->router, s->bare, s->resource, &next) == 0 &&
	    next.session != s->id)
		b.successor = &next;
	sm_drain(sm, bounce_one, &b);
	if (n > 0)
		log_info("c2s %llu: %s ended with %u unacknowledged stanza(s): %d message(s) kept "
			 "offline, %d handed to the session that replaced it, %d iq(s) bounced",
			 (unsigned long long)s->id, s->full ? s->full : "(unbound)", n, b.kept,
			 b.handed, b.bounced);
	sm_free(sm);
}

/* Whether the connection's end leaves the session detached rather than
 * ended. */
static bool keeps_session(struct c2s *s)
{
	if (loop_stopping(s->loop))
		return false;
	if (s->moving)
		return true; /* resume_hand_over takes it */
	if (s->resume_pending)
		return true; /* the hand-over decides (resume_finish) */
	return s->registered && s->sm != NULL && s->sm->resumable && !s->ending &&
	       sm_cfg(s)->resume_timeout > 0;
}

static void detach(struct c2s *s)
{
	csi_end(&s->csi); /* held stanzas join the unacknowledged ones */
	s->conn = NULL;
	xml_stream_free(s->xs);
	s->xs = NULL;
	sm_table_put(s->loop, s->id, s);
	s->sm->written = 0;
	s->sm->since_request = 0;
	s->sm->request_pending = false;
	s->sm->ack_held = s->sm->ack_again = false;
	s->sm->last_a_end = 0;
	held_free(s->held); /* unacknowledged: the client sends them again */
	s->held = NULL;
	if (s->resume_pending)
		return;
	s->state = C2S_DETACHED;
	log_info("c2s %llu: %s detached, resumable for %d s (%u stanza(s) unacknowledged)",
		 (unsigned long long)s->id, s->full, sm_cfg(s)->resume_timeout, s->sm->len);
	uv_timer_start(&s->timer, on_resume_timeout, (uint64_t)sm_cfg(s)->resume_timeout * 1000, 0);
}

static void on_resume_timeout(uv_timer_t *t)
{
	struct c2s *s = t->data;
	if (s->moving)
		return;
	log_info("c2s %llu: %s %s", (unsigned long long)s->id, s->full,
		 s->ending ? "ends while detached" : "was not resumed in time");
	sm_table_del(s->loop, s->id);
	end_session(s);
	s->state = C2S_CLOSED;
	uv_close((uv_handle_t *)&s->timer, free_c2s);
}

void c2s_loop_shutdown(struct loop *l)
{
	struct c2s *s;
	while ((s = sm_table_pop(l)) != NULL) {
		uv_timer_stop(&s->timer);
		end_session(s);
		s->state = C2S_CLOSED;
		uv_close((uv_handle_t *)&s->timer, free_c2s);
	}
	sm_table_free(l);
}

/* --- acks --- */

/* An <a/> means the stanzas it counts are handled, and for a message that
 * means durable (docs/mobile.md): while the storage thread has writes in
 * hand (offline messages, the archive) the answer waits behind them, as
 * iq answers do (deliver.c). One answer waits at most per session; an
 * <r/> meanwhile is answered after it, with the count of then. */
struct ack_wait {
	uint64_t conn_id;
	uint32_t h;
};

static void write_a(struct c2s *s, uint32_t h)
{
	struct sm *sm = s->sm;
	/* An <r/> flood from a peer that does not read gets one answer
	 * while the last one with the same count is still unwritten. */
	if (h == sm->last_a && sm->last_a_end > 0 && s->conn->out_written < sm->last_a_end)
		return;
	char b[64];
	snprintf(b, sizeof b, "<a xmlns='" NS_SM "' h='%u'/>", h);
	send_str(s, b);
	sm->last_a = h;
	sm->last_a_end = s->conn->out_total;
}

static int ack_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	(void)st, (void)drv, (void)arg;
	return 0;
}

static void sm_answer(struct c2s *s);

static void ack_done(struct loop *l, void *arg, int rc)
{
	(void)rc;
	struct ack_wait *w = arg;
	struct conn *c = l == NULL || loop_stopping(l) ? NULL : conn_find(l, w->conn_id);
	struct c2s *s = c && c->ops == &c2s_ops ? c->owner : NULL;
	if (s != NULL && s->sm != NULL && s->sm->ack_held && s->state == C2S_ACTIVE) {
		s->sm->ack_held = false;
		write_a(s, w->h);
		if (s->sm->ack_again) {
			s->sm->ack_again = false;
			sm_answer(s);
		}
	}
	free(w);
}

static void sm_answer(struct c2s *s)
{
	struct sm *sm = s->sm;
	struct loop *l = s->loop;
	if (sm->ack_held) {
		sm->ack_again = true;
		return;
	}
	if (l->iqs_waiting > 0 || storeq_busy(l->srv->storeq)) {
		struct ack_wait *w = xmalloc(sizeof *w);
		w->conn_id = s->conn->id;
		w->h = sm->in;
		sm->ack_held = true;
		storeq_call(l->srv->storeq, l, ack_run, ack_done, w);
		return;
	}
	write_a(s, sm->in);
}

static void handle_a(struct c2s *s, struct xml_node *st)
{
	uint32_t h;
	if (sm_parse_h(xml_attr(st, "h"), &h) != 0) {
		stream_error(s, "invalid-xml");
		return;
	}
	if (sm_ack(s->sm, h) != 0) {
		/* XEP-0198 §4: more than was sent is a broken peer. */
		char app[160];
		snprintf(app, sizeof app,
			 "<handled-count-too-high xmlns='" NS_SM "' h='%u' send-count='%u'/>", h,
			 sm_sent(s->sm));
		stream_error_app(s, "undefined-condition", app);
		return;
	}
	s->sm->request_pending = false;
}

/* --- enable and resume --- */

/* A resumption's answer (<resumed/> or <failed/>): written, or inside the
 * SASL2 success that carried the <resume/> inline (XEP-0388). */
static void resume_answer(struct c2s *s, const struct buf *el, bool resumed)
{
	if (s->sasl2_resuming != NULL)
		sasl2_resume_answered(s, el, resumed);
	else
		conn_write(s->conn, el->data, el->len);
}

static void sm_send_failed(struct c2s *s, const char *condition)
{
	struct buf b;
	buf_init(&b);
	sm_write_failed(&b, condition, -1, false, 0, 0);
	resume_answer(s, &b, false);
	buf_free(&b);
}

/* <enable/> on a bound session, or Bind 2's inline enable (XEP-0386):
 * turns stream management on and writes <enabled/> to out. Returns 0, or
 * -1 with <failed/> in out (not bound, already enabled). */
static int c2s_sm_enable(struct c2s *s, bool want_resume, struct buf *out)
{
	if (s->state != C2S_ACTIVE || s->sm != NULL) {
		sm_write_failed(out, "unexpected-request", -1, false, 0, 0);
		return -1;
	}
	int timeout = sm_cfg(s)->resume_timeout;
	s->sm = sm_new(want_resume && timeout > 0);
	if (s->sm->resumable)
		router_set_sm_key(s->loop->srv->router, s->bare, s->resource, s->id, s->sm->key);
	sm_write_enabled(out, s->sm, timeout);
	log_debug("c2s %llu: stream management on%s", (unsigned long long)s->id,
		  s->sm->resumable ? ", resumable" : "");
	return 0;
}

/* A resumption on its way between loops: the request, then the answer. */
struct resume {
	uint64_t to;              /* the resuming connection */
	int to_loop;
	uint64_t from;            /* the session's registry id */
	uint32_t h;               /* what the client says it handled */
	unsigned char key[ROUTER_SM_KEY];
	char bare[2 * JID_PART_MAX + 2];
	/* the answer */
	const char *failed;       /* NULL: resumed */
	bool too_high;
	uint32_t send_count;
	char *full;
	bool available;
	int priority;
	char **directed;
	int n_directed;
	char *photo_hash;
	struct csi nicks;         /* only its room nicks (csi_move_nicks) */
	struct sm *sm;
};

/* Runs fn on loop index: here at once when l is that loop, else through
 * its inbox. */
static void run_on_loop(struct loop *l, int index, void (*fn)(struct loop *l, void *arg),
			void *arg)
{
	if (index == l->index)
		fn(l, arg);
	else
		loop_call(&l->srv->loops[index], fn, arg);
}

static void free_resume(struct resume *r)
{
	for (int i = 0; i < r->n_directed; i++)
		free(r->directed[i]);
	free(r->directed);
	free(r->full);
	free(r->photo_hash);
	csi_free(&r->nicks);
	sm_free(r->sm);
	free(r);
}

static void resume_finish(struct loop *l, void *arg);

/* On the session's owner loop: checks the request and hands the session
 * over (see the comment at the top of this part). */
static void resume_hand_over(struct loop *l, void *arg);

/* On the session's owner loop: checks the request and moves the registry
 * entry to the resuming connection (see the comment at the top of this
 * part). The session itself goes in a second step, resume_hand_over, run
 * from the end of this loop's inbox: a stanza that a sender addressed to
 * the old entry and posted here before the move is in the inbox before
 * that step, so it joins the session's queue ahead of what senders now
 * send to the new connection. */
static void resume_take(struct loop *l, void *arg)
{
	struct resume *r = arg;
	if (loop_stopping(l)) {
		free_resume(r);
		return;
	}
	struct c2s *old = find_session(l, r->from);
	if (old == NULL || old->sm == NULL || !old->sm->resumable || !old->registered ||
	    old->ending || old->moving || old->bare == NULL || strcmp(old->bare, r->bare) != 0 ||
	    memcmp(old->sm->key, r->key, ROUTER_SM_KEY) != 0) {
		r->failed = "item-not-found";
	} else if (sm_ack(old->sm, r->h) != 0) {
		r->failed = "undefined-condition";
		r->too_high = true;
		r->send_count = sm_sent(old->sm);
	} else {
		const char *resource = old->full + strlen(r->bare) + 1;
		router_move(l->srv->router, r->bare, resource, old->id, r->to, r->to_loop);
		old->moving = true;
		if (old->conn == NULL)
			uv_timer_stop(&old->timer);
		loop_call(l, resume_hand_over, r);
		return;
	}
	run_on_loop(l, r->to_loop, resume_finish, r);
}

/* Second step on the owner loop: the session's fields and queue go to the
 * resuming connection's loop; the old connection, if still there, closes;
 * stanzas still addressed to the old id are passed on for a while. */
static void resume_hand_over(struct loop *l, void *arg)
{
	struct resume *r = arg;
	if (loop_stopping(l)) {
		free_resume(r);
		return;
	}
	struct c2s *old = find_session(l, r->from);
	if (old == NULL || !old->moving) {
		/* Cannot happen: a moving session neither ends nor expires. */
		log_warn("c2s %llu: session to hand over is gone", (unsigned long long)r->from);
		r->failed = "item-not-found";
	} else {
		r->full = old->full;
		r->available = old->available;
		r->priority = old->priority;
		r->directed = old->directed;
		r->n_directed = old->n_directed;
		r->photo_hash = old->photo_hash;
		csi_end(&old->csi); /* what a half-dead connection held */
		csi_move_nicks(&r->nicks, &old->csi);
		r->sm = old->sm;
		old->full = NULL;
		old->resource = NULL;
		old->directed = NULL;
		old->n_directed = 0;
		old->photo_hash = NULL;
		old->sm = NULL;
		old->registered = false;
		old->moving = false;
		sm_table_del(l, old->id);
		sm_table_forward(l, old->id, r->to, r->to_loop);
		if (old->conn != NULL) {
			/* Half-dead: the new connection takes over. */
			log_info("c2s %llu: session resumed on another connection; this one closes",
				 (unsigned long long)old->conn->id);
			stream_error(old, "conflict");
		} else {
			uv_timer_stop(&old->timer);
			old->state = C2S_CLOSED;
			uv_close((uv_handle_t *)&old->timer, free_c2s);
		}
		if (r->to_loop != l->index)
			log_info("c2s: %s handed over from loop %d to loop %d", r->full, l->index,
				 r->to_loop);
	}
	run_on_loop(l, r->to_loop, resume_finish, r);
}

static void hold_during_resume(struct c2s *s, struct xml_node *st)
{
	if (s->held == NULL) {
		s->held = xcalloc(1, sizeof *s->held);
		arena_init(&s->held->a);
		s->held->tail = &s->held->first;
	}
	if (s->held->a.total > C2S_HELD_MAX) {
		stream_error(s, "policy-violation");
		return;
	}
	struct c2s_held_stanza *h = arena_alloc(&s->held->a, sizeof *h);
	h->st = xml_copy(&s->held->a, st);
	h->next = NULL;
	*s->held->tail = h;
	s->held->tail = &h->next;
}

/* After the answer to <resume/>: what the client pipelined behind it, in
 * order, as if it came now. */
static void replay_held(struct c2s *s)
{
	struct c2s_held *held = s->held;
	s->held = NULL;
	if (held == NULL)
		return;
	for (struct c2s_held_stanza *h = held->first; h != NULL; h = h->next) {
		if (s->conn == NULL || s->state == C2S_CLOSED)
			break;
		struct arena a;
		arena_init(&a);
		c2s_stanza(s, h->st, &a);
		arena_reset(&a);
	}
	held_free(held);
}

/* On the resuming connection's loop: <resumed/> and the stanzas again, or
 * <failed/>. The connection may have gone meanwhile: then the session
 * stays detached here. */
static void resume_finish(struct loop *l, void *arg)
{
	struct resume *r = arg;
	struct c2s *s = loop_stopping(l) ? NULL : find_session(l, r->to);
	if (s == NULL || !s->resume_pending) {
		if (r->failed == NULL && !loop_stopping(l)) {
			log_warn("c2s %llu: resumed session lost its connection", (unsigned long long)r->to);
			router_unbind(l->srv->router, r->bare, r->full + strlen(r->bare) + 1, r->to);
		}
		free_resume(r);
		return;
	}
	s->resume_pending = false;
	if (r->failed != NULL) {
		sm_free(s->sm);
		s->sm = NULL;
		if (s->conn == NULL) {
			sm_table_del(l, s->id);
			s->state = C2S_CLOSED;
			uv_close((uv_handle_t *)&s->timer, free_c2s);
		} else if (s->state == C2S_CLOSED) {
			/* A stream error meanwhile: the connection is closing. */
		} else {
			struct buf b;
			buf_init(&b);
			sm_write_failed(&b, r->failed, -1, r->too_high, r->h, r->send_count);
			s->state = C2S_BIND; /* it may bind a new session instead */
			log_info("c2s %llu (%s): resumption refused (%s)", (unsigned long long)s->id,
				 s->conn->peer, r->failed);
			resume_answer(s, &b, false);
			buf_free(&b);
			free_resume(r);
			replay_held(s);
			return;
		}
		free_resume(r);
		return;
	}
	s->full = r->full;
	s->resource = s->full + strlen(s->bare) + 1;
	s->available = r->available;
	s->priority = r->priority;
	s->directed = r->directed;
	s->n_directed = r->n_directed;
	if (s->photo_hash == NULL) {
		s->photo_hash = r->photo_hash;
		r->photo_hash = NULL;
	}
	uint64_t was = r->from;
	csi_move_nicks(&s->csi, &r->nicks);
	struct sm *early = s->sm;
	s->sm = r->sm;
	sm_append(s->sm, early);
	sm_free(early);
	s->sm->written = 0;
	s->sm->since_request = 0;
	s->sm->request_pending = false;
	s->sm->ack_held = s->sm->ack_again = false;
	s->sm->last_a_end = 0;
	s->registered = true;
	r->full = NULL;
	r->directed = NULL;
	r->n_directed = 0;
	r->sm = NULL;
	free_resume(r);
	if (s->conn == NULL) {
		s->state = C2S_DETACHED;
		uv_timer_start(&s->timer, on_resume_timeout,
			       s->ending ? 0 : (uint64_t)sm_cfg(s)->resume_timeout * 1000, 0);
		return;
	}
	if (s->state == C2S_CLOSED) {
		/* A stream error meanwhile (ending): the session is ours now,
		 * and ends with the closing connection, its unacknowledged
		 * stanzas going where end_sm sends them. */
		log_info("c2s %llu: %s resumed as its stream ended", (unsigned long long)s->id,
			 s->full);
		return;
	}
	s->state = C2S_ACTIVE;
	struct buf b;
	buf_init(&b);
	sm_write_resumed(&b, s->sm);
	log_info("c2s %llu (%s): resumed %s, %u stanza(s) to send again",
		 (unsigned long long)s->id, s->conn->peer, s->full, s->sm->len);
	resume_answer(s, &b, true);
	buf_free(&b);
	sm_flush(s);
	arm_idle(s);
	struct jid me;
	session_jid(s, &me);
	struct hook_ctx hc = { .loop = l, .from = &me, .to = &me, .session = s->id,
			       .previous = was };
	hooks_run(HOOK_SESSION_RESUMED, &hc);
	replay_held(s);
}

/* <resume/> on an authenticated stream that has not bound a resource, or
 * SASL2's inline resume (XEP-0388): finds the account's session by the
 * SM id and asks its loop to hand it over; the answer (<resumed/> and the
 * stanzas, or <failed/>) is written by resume_finish. Returns 0 when the
 * request is under way, -1 with <failed/> already written. */
static int c2s_sm_resume(struct c2s *s, const char *previd, const char *h_attr)
{
	unsigned char key[ROUTER_SM_KEY];
	uint32_t h;
	if (!s->authenticated || s->state != C2S_BIND || s->sm != NULL) {
		sm_send_failed(s, "unexpected-request");
		return -1;
	}
	struct router_target t;
	char resource[JID_PART_MAX + 1];
	if (sm_parse_h(h_attr, &h) != 0) {
		sm_send_failed(s, "bad-request");
		return -1;
	}
	if (sm_parse_id(previd, key) != 0 ||
	    router_find_sm(s->loop->srv->router, s->bare, key, &t, resource, sizeof resource) != 0 ||
	    t.loop < 0 || t.loop >= s->loop->srv->n_loops) {
		/* An ended session of this account tells the client how many
		 * of its stanzas were handled, so it resends only the rest. */
		uint32_t ended_h;
		bool ended = sm_parse_id(previd, key) == 0 &&
			     router_find_ended_sm(s->loop->srv->router, s->bare, key, &ended_h) == 0;
		log_info("c2s %llu (%s): resumption of an %s session refused",
			 (unsigned long long)s->conn->id, s->conn->peer, ended ? "ended" : "unknown");
		struct buf b;
		buf_init(&b);
		sm_write_failed(&b, "item-not-found", ended ? (long long)ended_h : -1, false, 0, 0);
		resume_answer(s, &b, false);
		buf_free(&b);
		return -1;
	}
	struct resume *r = xcalloc(1, sizeof *r);
	r->to = s->conn->id;
	r->to_loop = s->loop->index;
	r->from = t.session;
	r->h = h;
	memcpy(r->key, key, sizeof key);
	snprintf(r->bare, sizeof r->bare, "%s", s->bare);
	s->id = s->conn->id;
	s->state = C2S_RESUMING;
	s->resume_pending = true;
	s->sm = sm_new(false); /* holds what comes before the hand-over */
	run_on_loop(s->loop, t.loop, resume_take, r);
	return 0;
}

/* Stream management's elements, wherever they come; counts the client's
 * stanzas. Returns true when st was one of them (handled here). */
static bool sm_intercept(struct c2s *s, struct xml_node *st)
{
	if (!xml_is(st, NS_SM, NULL)) {
		if (s->sm != NULL && s->state == C2S_ACTIVE && xml_is(st, NS_CLIENT, NULL))
			s->sm->in++;
		return false;
	}
	if (strcmp(st->name, "enable") == 0) {
		if (!s->authenticated) {
			sm_send_failed(s, "unexpected-request");
			return true;
		}
		const char *res = xml_attr(st, "resume");
		struct buf b;
		buf_init(&b);
		c2s_sm_enable(s, res && (strcmp(res, "true") == 0 || strcmp(res, "1") == 0), &b);
		conn_write(s->conn, b.data, b.len);
		buf_free(&b);
	} else if (strcmp(st->name, "resume") == 0) {
		c2s_sm_resume(s, xml_attr(st, "previd"), xml_attr(st, "h"));
	} else if ((strcmp(st->name, "r") == 0 || strcmp(st->name, "a") == 0) && s->sm != NULL &&
		   s->state == C2S_ACTIVE) {
		if (st->name[0] == 'r')
			sm_answer(s);
		else
			handle_a(s, st);
	} else {
		stream_error(s, "unsupported-stanza-type");
	}
	return true;
}

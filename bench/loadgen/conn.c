#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define CLOSE_WAIT_NS 2000000000ull
/* An online connection silent this long gives back its XML parser. */
#define PARSER_IDLE_NS 1000000000ull
#define ID_BIND "lg-bind"
#define ID_SESSION "lg-sess"
#define ID_ROSTER "lg-roster"

static const char *const conn_state_names[] = {
	[CONN_CONNECTING] = "connecting",
	[CONN_STREAM1] = "stream-features",
	[CONN_STARTTLS] = "starttls",
	[CONN_HANDSHAKE] = "tls-handshake",
	[CONN_STREAM2] = "tls-stream-features",
	[CONN_SASL] = "sasl",
	[CONN_SASL2] = "sasl2",
	[CONN_STREAM3] = "bind-features",
	[CONN_BIND] = "bind",
	[CONN_SESSION] = "session",
	[CONN_SM_ENABLE] = "sm-enable",
	[CONN_SM_RESUME] = "sm-resume",
	[CONN_ROSTER] = "roster",
	[CONN_ONLINE] = "online",
	[CONN_CLOSING] = "closing",
	[CONN_CLOSED] = "closed",
};

/* A write that could not complete at once; owns a copy of its bytes. */
struct conn_wreq {
	uv_write_t req;
	struct conn *c;
	char data[];
};

static void conn_start_session(struct conn *c);
static void conn_go_online(struct conn *c);
static const char *conn_condition(const struct stanza *st);
static void conn_on_open(void *ud, const char **attrs);
static void conn_on_element(void *ud, struct stanza *st);
static void conn_on_close(void *ud);

static const struct stanza_handlers conn_xml = {
	.open = conn_on_open,
	.element = conn_on_element,
	.close = conn_on_close,
};

void conn_username(const struct opts *o, unsigned user, char *out, size_t cap)
{
	snprintf(out, cap, "%s%u", o->users_prefix, user);
}

static void conn_mark_dirty(struct conn *c)
{
	if (c->dirty || c->state == CONN_CLOSED)
		return;
	c->dirty = true;
	c->dirty_next = c->w->dirty;
	c->w->dirty = c;
}

static void conn_unmark_dirty(struct conn *c)
{
	if (!c->dirty)
		return;
	for (struct conn **p = &c->w->dirty; *p; p = &(*p)->dirty_next) {
		if (*p == c) {
			*p = c->dirty_next;
			break;
		}
	}
	c->dirty = false;
}

void conn_send(struct conn *c, const char *data, size_t len)
{
	/* Nothing may follow our </stream:stream>. */
	if (c->state == CONN_CLOSED || c->state == CONN_CLOSING || len == 0)
		return;
	if (c->out_cap - c->out_len < len) {
		size_t cap = c->out_cap ? c->out_cap : 512;
		while (cap - c->out_len < len)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (!p) {
			conn_fail(c, FAIL_PROTOCOL, "out of memory");
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	conn_mark_dirty(c);
}

void conn_sendf(struct conn *c, const char *fmt, ...)
{
	char small[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		conn_send(c, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big)
		return;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	conn_send(c, big, (size_t)n);
	free(big);
}

/* Appends s escaped for an attribute value: ids and addresses echoed back
 * to the server come from parsed (unescaped) XML. */
void conn_send_escaped(struct conn *c, const char *s)
{
	const char *start = s;
	for (; *s; s++) {
		const char *rep;
		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&apos;"; break;
		default: continue;
		}
		conn_send(c, start, (size_t)(s - start));
		conn_send(c, rep, strlen(rep));
		start = s + 1;
	}
	conn_send(c, start, (size_t)(s - start));
}

size_t conn_backlog(const struct conn *c)
{
	return c->out_len + c->tcp.write_queue_size;
}

static void conn_on_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct worker *w = c->w;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	worker_count(&w->ctr.closed, 1);
	if (c->ops->closed)
		c->ops->closed(c);
	stanza_parser_free(&c->parser);
	if (c->ssl) {
		/* OpenSSL marks the session of a connection freed without a
		 * close_notify as not resumable (ssl_clear_bad_session), and a
		 * session kept for resumption is that same object. A lost link
		 * does not make a session bad: RFC 8446 §6.1 dropped the rule. */
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(c->ssl);
	}
	if (c->scram) {
		sasl_scram_clear(c->scram);
		free(c->scram);
	}
	free(c->out);
	free(c->jid);
	free(c);
}

/* Closes the socket now; callbacks stop and ops->closed follows. */
static void conn_shut(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	if (c->state == CONN_ONLINE)
		worker_count(&c->w->ctr.online, -1);
	c->state = CONN_CLOSED;
	conn_unmark_dirty(c);
	stanza_parser_stop(&c->parser);
	uv_close((uv_handle_t *)&c->tcp, conn_on_closed);
}

void conn_cut(struct conn *c)
{
	uv_os_fd_t fd;
	if (c->state == CONN_CLOSED)
		return;
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
		struct linger l = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	}
	conn_shut(c);
}

void conn_carry_clear(struct conn_carry *k)
{
	if (k->tls)
		SSL_SESSION_free(k->tls);
	k->tls = NULL;
}

void conn_fail(struct conn *c, enum fail_kind kind, const char *fmt, ...)
{
	if (c->state == CONN_CLOSED)
		return;
	/* Once we have said goodbye, however the server answers is fine. */
	if (c->state == CONN_CLOSING) {
		conn_shut(c);
		return;
	}
	char msg[128], full[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	char user[64];
	conn_username(c->w->run->o, c->user, user, sizeof user);
	snprintf(full, sizeof full, "%s (%s): %s", user, conn_state_names[c->state], msg);
	worker_note_error(c->w, full);
	worker_count(&c->w->ctr.fail[kind], 1);
	if (!c->was_online)
		worker_count(&c->w->ctr.login_failed, 1);
	c->failed = true;
	c->fail_kind = kind;
	conn_shut(c);
}

void conn_close(struct conn *c)
{
	if (c->state >= CONN_CLOSING)
		return;
	/* Without a stream to end there is nothing to say. */
	if (c->state == CONN_CONNECTING || c->state == CONN_STARTTLS ||
	    c->state == CONN_HANDSHAKE) {
		conn_shut(c);
		return;
	}
	if (c->state == CONN_ONLINE)
		worker_count(&c->w->ctr.online, -1);
	conn_send(c, "</stream:stream>", 16);
	c->state = CONN_CLOSING;
	c->deadline = uv_hrtime() + CLOSE_WAIT_NS;
}

static void conn_on_write(uv_write_t *req, int status)
{
	struct conn_wreq *wr = (struct conn_wreq *)req;
	struct conn *c = wr->c;
	free(wr);
	if (status < 0 && status != UV_ECANCELED)
		conn_fail(c, FAIL_CLOSED, "write: %s", uv_strerror(status));
}

/* Writes bytes to the socket, directly if the kernel takes them, else
 * through a queued copy. */
static void conn_write_raw(struct conn *c, const char *p, size_t n)
{
	if (c->state == CONN_CLOSED || n == 0)
		return;
	uv_stream_t *s = (uv_stream_t *)&c->tcp;
	if (c->tcp.write_queue_size == 0) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
		int r = uv_try_write(s, &b, 1);
		if (r >= 0 && (size_t)r == n)
			return;
		if (r < 0 && r != UV_EAGAIN) {
			conn_fail(c, FAIL_CLOSED, "write: %s", uv_strerror(r));
			return;
		}
		if (r > 0) {
			p += r;
			n -= (size_t)r;
		}
	}
	struct conn_wreq *wr = malloc(sizeof *wr + n);
	if (!wr) {
		conn_fail(c, FAIL_PROTOCOL, "out of memory");
		return;
	}
	wr->c = c;
	memcpy(wr->data, p, n);
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)n);
	int r = uv_write(&wr->req, s, &b, 1, conn_on_write);
	if (r < 0) {
		free(wr);
		conn_fail(c, FAIL_CLOSED, "write: %s", uv_strerror(r));
	}
}

/* Encrypts what is queued (once the handshake is done) and writes every
 * TLS record waiting in the network BIO. */
static void conn_flush(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	if (c->out_len) {
		if (!c->ssl) {
			conn_write_raw(c, c->out, c->out_len);
			c->out_len = 0;
		} else if (SSL_is_init_finished(c->ssl)) {
			int r = SSL_write(c->ssl, c->out, (int)c->out_len);
			if (r <= 0) {
				conn_fail(c, FAIL_TLS, "SSL_write failed");
				return;
			}
			c->out_len = 0;
		}
	}
	if (c->ssl) {
		char *buf = c->w->wbuf;
		int n;
		while (c->state != CONN_CLOSED && BIO_ctrl_pending(c->wbio) > 0 &&
		       (n = BIO_read(c->wbio, buf, sizeof c->w->wbuf)) > 0)
			conn_write_raw(c, buf, (size_t)n);
	}
	/* Idle connections keep no output buffer. */
	if (c->out_len == 0 && c->out) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
}

void conn_flush_all(struct worker *w)
{
	while (w->dirty) {
		struct conn *c = w->dirty;
		w->dirty = c->dirty_next;
		c->dirty = false;
		conn_flush(c);
	}
}

static void conn_send_header(struct conn *c)
{
	const struct opts *o = c->w->run->o;
	/* FAST clients name themselves on the secure stream (XEP-0484 §4). */
	char from[400] = "";
	if (c->carry && c->carry->sasl2 && c->ssl) {
		char user[64];
		conn_username(o, c->user, user, sizeof user);
		snprintf(from, sizeof from, " from='%s@%s'", user, o->domain);
	}
	conn_sendf(c,
		   "<?xml version='1.0'?><stream:stream to='%s'%s version='1.0' xml:lang='en' "
		   "xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAM "'>",
		   o->domain, from);
}

static void conn_handshake(struct conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	conn_mark_dirty(c);
	if (r == 1) {
		if (SSL_session_reused(c->ssl))
			worker_count(&c->w->ctr.tls_resumed, 1);
		if (c->carry)
			c->carry->tls_resumed = SSL_session_reused(c->ssl);
		c->state = CONN_STREAM2;
		stanza_parser_reset(&c->parser);
		conn_send_header(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	char why[120];
	ERR_error_string_n(ERR_get_error(), why, sizeof why);
	conn_fail(c, FAIL_TLS, "TLS handshake: %s", why);
}

static void conn_tls_begin(struct conn *c)
{
	const struct opts *o = c->w->run->o;
	c->ssl = SSL_new(c->w->run->ssl_ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		c->rbio = c->wbio = NULL;
		conn_fail(c, FAIL_TLS, "cannot create TLS state");
		return;
	}
	/* An empty memory BIO means "no more yet", not end of file. */
	BIO_set_mem_eof_return(c->rbio, -1);
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_connect_state(c->ssl);
	SSL_set_tlsext_host_name(c->ssl, o->domain);
	if (c->carry && c->carry->offer_tls && c->carry->tls)
		SSL_set_session(c->ssl, c->carry->tls);
	else if (o->tls_resume && c->w->session)
		SSL_set_session(c->ssl, c->w->session);
	c->state = CONN_HANDSHAKE;
	conn_handshake(c);
}

/* Runs received plaintext through the XML parser, then does whatever a
 * handler left pending for after the parse. */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
	int r = stanza_parser_feed(&c->parser, data, len);
	if (c->state == CONN_CLOSED)
		return;
	if (r < 0) {
		conn_fail(c, FAIL_PROTOCOL, "bad XML: %s", stanza_parser_error(&c->parser));
		return;
	}
	if (r == 1 && c->restart) {
		c->restart = false;
		stanza_parser_reset(&c->parser);
		conn_send_header(c);
	} else if (r == 1 && c->state == CONN_STARTTLS) {
		conn_tls_begin(c);
	}
}

static void conn_read_tls(struct conn *c)
{
	struct worker *w = c->w;
	/* Only while input is waiting: an SSL_read that finds none has
	 * already set up its 16 KiB record buffer again, and it would stay
	 * allocated for as long as the connection idles. */
	while (c->state != CONN_CLOSED &&
	       (BIO_ctrl_pending(c->rbio) > 0 || SSL_pending(c->ssl) > 0)) {
		ERR_clear_error();
		int r = SSL_read(c->ssl, w->pbuf, sizeof w->pbuf);
		if (r > 0) {
			conn_feed(c, w->pbuf, (size_t)r);
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			conn_fail(c, FAIL_CLOSED, "TLS closed by server");
			return;
		}
		char why[120];
		ERR_error_string_n(ERR_get_error(), why, sizeof why);
		conn_fail(c, FAIL_TLS, "TLS read: %s", why);
		return;
	}
	/* Reading may have produced records to send (key updates, alerts). */
	if (c->state != CONN_CLOSED && BIO_ctrl_pending(c->wbio) > 0)
		conn_mark_dirty(c);
}

static void conn_on_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
	struct conn *c = h->data;
	(void)size;
	b->base = c->w->rbuf;
	b->len = sizeof c->w->rbuf;
}

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;
	if (n == 0 || c->state == CONN_CLOSED)
		return;
	if (n < 0) {
		conn_fail(c, FAIL_CLOSED, "connection closed by server: %s",
			  n == UV_EOF ? "end of file" : uv_strerror((int)n));
		return;
	}
	c->t_last_read = uv_hrtime();
	if (!c->ssl) {
		conn_feed(c, b->base, (size_t)n);
		return;
	}
	BIO_write(c->rbio, b->base, (int)n);
	if (c->state == CONN_HANDSHAKE) {
		conn_handshake(c);
		if (c->state == CONN_HANDSHAKE || c->state == CONN_CLOSED)
			return;
	}
	conn_read_tls(c);
}

static void conn_on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	free(req);
	if (c->state == CONN_CLOSED)
		return;
	if (status < 0) {
		conn_fail(c, FAIL_CONNECT, "connect: %s", uv_strerror(status));
		return;
	}
	int r = uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read);
	if (r < 0) {
		conn_fail(c, FAIL_CONNECT, "read: %s", uv_strerror(r));
		return;
	}
	if (c->w->run->o->direct_tls) {
		conn_tls_begin(c);
	} else {
		c->state = CONN_STREAM1;
		conn_send_header(c);
	}
}

/* A non-blocking socket bound to the next source address: bound without
 * a port (IP_BIND_ADDRESS_NO_PORT), so the kernel picks one per
 * destination at connect time and each source address has the whole
 * ephemeral range to itself. */
static int conn_socket(struct conn *c, char *err, size_t errlen)
{
	const struct run *r = c->w->run;
	const struct opts *o = r->o;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (o->src_count) {
		uint32_t i = atomic_fetch_add_explicit((_Atomic uint32_t *)&r->src_next, 1,
						       memory_order_relaxed) % o->src_count;
		struct sockaddr_in sin = { .sin_family = AF_INET };
		sin.sin_addr.s_addr = htonl(o->src_base + i);
		int one = 1;
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
			char a[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, &sin.sin_addr, a, sizeof a);
			snprintf(err, errlen, "bind %s: %s", a, strerror(errno));
			close(fd);
			return -1;
		}
	}
	return fd;
}

struct conn *conn_open(struct worker *w, unsigned user, const struct conn_ops *ops, void *data)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->w = w;
	c->ops = ops;
	c->data = data;
	c->user = user;
	c->state = CONN_CONNECTING;
	c->t_start = uv_hrtime();
	c->deadline = c->t_start + (uint64_t)(w->run->o->login_timeout * 1e9);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	worker_count(&w->ctr.started, 1);
	uv_tcp_init(&w->loop, &c->tcp);
	c->tcp.data = c;
	if (stanza_parser_init(&c->parser, &conn_xml, c) < 0) {
		conn_fail(c, FAIL_PROTOCOL, "cannot create XML parser");
		return c;
	}
	char err[128];
	int fd = conn_socket(c, err, sizeof err);
	if (fd < 0) {
		conn_fail(c, FAIL_CONNECT, "%s", err);
		return c;
	}
	int r = uv_tcp_open(&c->tcp, fd);
	if (r < 0) {
		close(fd);
		conn_fail(c, FAIL_CONNECT, "uv_tcp_open: %s", uv_strerror(r));
		return c;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_connect_t *req = malloc(sizeof *req);
	if (!req) {
		conn_fail(c, FAIL_CONNECT, "out of memory");
		return c;
	}
	req->data = c;
	r = uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)&w->run->server, conn_on_connect);
	if (r < 0) {
		free(req);
		conn_fail(c, FAIL_CONNECT, "connect: %s", uv_strerror(r));
	}
	return c;
}

/* The local name of the first child (a stream error or SASL failure
 * condition), for messages. */
static const char *conn_condition(const struct stanza *st)
{
	for (const struct stanza *ch = st->child; ch; ch = ch->next) {
		const char *sp = strchr(ch->name, ' ');
		const char *local = sp ? sp + 1 : ch->name;
		if (strcmp(local, "text") != 0)
			return local;
	}
	return "(none)";
}

static void conn_features_plain(struct conn *c, struct stanza *st)
{
	if (!stanza_is(st, NS_STREAM " features")) {
		conn_fail(c, FAIL_PROTOCOL, "expected stream features, got <%s>", st->name);
		return;
	}
	if (!stanza_child(st, NS_TLS " starttls")) {
		conn_fail(c, FAIL_PROTOCOL, "STARTTLS not offered");
		return;
	}
	conn_send(c, "<starttls xmlns='" NS_TLS "'/>", sizeof("<starttls xmlns='" NS_TLS "'/>") - 1);
	c->state = CONN_STARTTLS;
}

static void conn_starttls_answer(struct conn *c, struct stanza *st)
{
	if (stanza_is(st, NS_TLS " proceed")) {
		/* TLS starts after this element; conn_feed takes over. */
		stanza_parser_stop(&c->parser);
		return;
	}
	conn_fail(c, FAIL_TLS, "STARTTLS refused: <%s>", st->name);
}

static bool conn_mech_offered(const struct stanza *mechs, const char *name)
{
	for (const struct stanza *m = mechs->child; m; m = m->next)
		if (stanza_is(m, NS_SASL " mechanism") && strcmp(m->text, name) == 0)
			return true;
	return false;
}

static bool conn_child_text_is(const struct stanza *parent, const char *name, const char *text)
{
	for (const struct stanza *m = parent ? parent->child : NULL; m; m = m->next)
		if (stanza_is(m, name) && strcmp(m->text, text) == 0)
			return true;
	return false;
}

/* SASL2 (XEP-0388) with what a phone reconnecting sends in one go: the
 * FAST token (XEP-0484, HT-SHA-256-NONE) and SM <resume/> when it has
 * them, else SCRAM-SHA-1 asking for a token; always Bind 2 (XEP-0386),
 * enabling SM where the server offers it, which the server uses when there
 * is nothing to resume or the resume fails. Without SM inline in SASL2
 * every reconnect is a new session (FAST, Bind 2, roster and presence),
 * as a client does with such a server. Missing SASL2, FAST or Bind 2 ends the
 * connection as unsupported. */
static void conn_sasl2_start(struct conn *c, struct stanza *features)
{
	const struct opts *o = c->w->run->o;
	struct conn_carry *k = c->carry;
	struct stanza *auth = stanza_child(features, NS_SASL2 " authentication");
	struct stanza *inl = auth ? stanza_child(auth, NS_SASL2 " inline") : NULL;
	struct stanza *fast = inl ? stanza_child(inl, NS_FAST " fast") : NULL;
	if (!auth) {
		conn_fail(c, FAIL_UNSUPPORTED, "SASL2 (XEP-0388) not offered");
		return;
	}
	if (!fast || !conn_child_text_is(fast, NS_FAST " mechanism", "HT-SHA-256-NONE")) {
		conn_fail(c, FAIL_UNSUPPORTED, "FAST (XEP-0484) with HT-SHA-256-NONE not offered");
		return;
	}
	if (!stanza_child(inl, NS_BIND2 " bind")) {
		conn_fail(c, FAIL_UNSUPPORTED, "Bind 2 (XEP-0386) not offered inline");
		return;
	}
	c->sasl2_sm = stanza_child(inl, NS_SM " sm") != NULL;
	char user[64];
	conn_username(o, c->user, user, sizeof user);
	c->fast_auth = k->resume && k->token[0];
	const char *mech = c->fast_auth ? "HT-SHA-256-NONE" : "SCRAM-SHA-1";
	char *initial = NULL;
	if (c->fast_auth) {
		initial = sasl_ht_initial(user, k->token);
	} else if (conn_child_text_is(auth, NS_SASL2 " mechanism", mech)) {
		c->scram = calloc(1, sizeof *c->scram);
		initial = c->scram ? sasl_scram_start(c->scram, user) : NULL;
	} else if (conn_child_text_is(auth, NS_SASL2 " mechanism", "PLAIN")) {
		/* The first login only gets the token; it is not measured. */
		mech = "PLAIN";
		initial = sasl_plain_initial(user, o->password);
	} else {
		conn_fail(c, FAIL_UNSUPPORTED, "SASL2 offers neither SCRAM-SHA-1 nor PLAIN");
		return;
	}
	if (!initial) {
		conn_fail(c, FAIL_AUTH, "cannot start %s", mech);
		return;
	}
	conn_sendf(c,
		   "<authenticate xmlns='" NS_SASL2 "' mechanism='%s'>"
		   "<initial-response>%s</initial-response>"
		   "<user-agent id='%s'><software>natter-load</software><device>bench</device></user-agent>",
		   mech, initial, k->ua_id);
	free(initial);
	if (c->fast_auth)
		conn_sendf(c, "<fast xmlns='" NS_FAST "' count='%u'/>", ++k->fast_count);
	else
		conn_sendf(c, "<request-token xmlns='" NS_FAST "' mechanism='HT-SHA-256-NONE'/>");
	if (c->sasl2_sm && k->resume && k->sm_id[0]) {
		conn_sendf(c, "<resume xmlns='" NS_SM "' h='%u' previd='", k->h_in);
		conn_send_escaped(c, k->sm_id);
		conn_send(c, "'/>", 3);
	}
	conn_sendf(c, "<bind xmlns='" NS_BIND2 "'><tag>natter-load</tag>%s</bind></authenticate>",
		   c->sasl2_sm ? "<enable xmlns='" NS_SM "' resume='true'/>" : "");
	c->state = CONN_SASL2;
}

static void conn_features_auth(struct conn *c, struct stanza *st)
{
	const struct opts *o = c->w->run->o;
	if (!stanza_is(st, NS_STREAM " features")) {
		conn_fail(c, FAIL_PROTOCOL, "expected stream features, got <%s>", st->name);
		return;
	}
	if (c->carry && c->carry->sasl2) {
		conn_sasl2_start(c, st);
		return;
	}
	struct stanza *mechs = stanza_child(st, NS_SASL " mechanisms");
	const char *mech = o->mech == MECH_PLAIN ? "PLAIN" : "SCRAM-SHA-1";
	if (!mechs || !conn_mech_offered(mechs, mech)) {
		conn_fail(c, FAIL_AUTH, "mechanism %s not offered", mech);
		return;
	}
	char user[64];
	conn_username(o, c->user, user, sizeof user);
	char *initial;
	if (o->mech == MECH_PLAIN) {
		initial = sasl_plain_initial(user, o->password);
	} else {
		c->scram = calloc(1, sizeof *c->scram);
		initial = c->scram ? sasl_scram_start(c->scram, user) : NULL;
	}
	if (!initial) {
		conn_fail(c, FAIL_AUTH, "cannot start %s", mech);
		return;
	}
	conn_sendf(c, "<auth xmlns='" NS_SASL "' mechanism='%s'>%s</auth>", mech, initial);
	free(initial);
	c->state = CONN_SASL;
}

static void conn_sasl(struct conn *c, struct stanza *st)
{
	const struct opts *o = c->w->run->o;
	if (stanza_is(st, NS_SASL " challenge") && c->scram && !c->scram->have_signature) {
		const char *err;
		char *final = sasl_scram_final(c->scram, c->w->run->cache, o->password, st->text, &err);
		if (!final) {
			conn_fail(c, FAIL_AUTH, "SCRAM: %s", err);
			return;
		}
		conn_sendf(c, "<response xmlns='" NS_SASL "'>%s</response>", final);
		free(final);
	} else if (stanza_is(st, NS_SASL " challenge") && c->scram) {
		/* Some servers send server-final as a challenge and expect an
		 * empty response before <success/>. */
		if (!sasl_scram_verify(c->scram, st->text)) {
			conn_fail(c, FAIL_AUTH, "bad SCRAM server signature");
			return;
		}
		c->scram->verified = true;
		conn_send(c, "<response xmlns='" NS_SASL "'/>", sizeof("<response xmlns='" NS_SASL "'/>") - 1);
	} else if (stanza_is(st, NS_SASL " success")) {
		if (c->scram) {
			bool ok = st->text_len ? sasl_scram_verify(c->scram, st->text) : c->scram->verified;
			if (!ok) {
				conn_fail(c, FAIL_AUTH, "bad or missing SCRAM server signature");
				return;
			}
			sasl_scram_clear(c->scram);
			free(c->scram);
			c->scram = NULL;
		}
		c->state = CONN_STREAM3;
		c->restart = true;
		stanza_parser_stop(&c->parser);
	} else if (stanza_is(st, NS_SASL " failure")) {
		conn_fail(c, FAIL_AUTH, "SASL failure: %s", conn_condition(st));
	} else {
		conn_fail(c, FAIL_PROTOCOL, "unexpected <%s> during SASL", st->name);
	}
}

static void conn_features_bind(struct conn *c, struct stanza *st)
{
	const struct opts *o = c->w->run->o;
	if (!stanza_is(st, NS_STREAM " features")) {
		conn_fail(c, FAIL_PROTOCOL, "expected stream features, got <%s>", st->name);
		return;
	}
	struct conn_carry *k = c->carry;
	if (k && (k->sm_enable || k->resume) && !stanza_child(st, NS_SM " sm")) {
		conn_fail(c, FAIL_UNSUPPORTED, "stream management (XEP-0198) not offered");
		return;
	}
	if (k && k->resume && k->sm_id[0]) {
		conn_sendf(c, "<resume xmlns='" NS_SM "' h='%u' previd='", k->h_in);
		conn_send_escaped(c, k->sm_id);
		conn_send(c, "'/>", 3);
		c->state = CONN_SM_RESUME;
		return;
	}
	if (!stanza_child(st, NS_BIND " bind")) {
		conn_fail(c, FAIL_PROTOCOL, "resource binding not offered");
		return;
	}
	struct stanza *sess = stanza_child(st, NS_SESSION " session");
	c->session_required = sess && !stanza_child(sess, NS_SESSION " optional");
	conn_sendf(c,
		   "<iq type='set' id='" ID_BIND "'><bind xmlns='" NS_BIND "'>"
		   "<resource>%s-%u-%u</resource></bind></iq>",
		   o->resource, c->w->id, ++c->w->serial);
	c->state = CONN_BIND;
}

/* After binding (and the session, if required): ask for the roster and
 * announce presence in one write; the roster result completes the login. */
static void conn_start_session(struct conn *c)
{
	static const char roster_get[] = "<iq type='get' id='" ID_ROSTER "'><query xmlns='" NS_ROSTER "'/></iq>";
	const char *presence = c->ops->initial_presence ? c->ops->initial_presence : "<presence/>";
	conn_send(c, roster_get, sizeof roster_get - 1);
	conn_send(c, presence, strlen(presence));
	c->state = CONN_ROSTER;
}

/* Bound (and the session, if required): SM first when asked for, so the
 * roster result and presence already count. */
static void conn_after_bind(struct conn *c)
{
	if (c->carry && c->carry->sm_enable) {
		conn_sendf(c, "<enable xmlns='" NS_SM "' resume='true'/>");
		c->state = CONN_SM_ENABLE;
		return;
	}
	conn_start_session(c);
}

static bool conn_iq_is(const struct stanza *st, const char *id)
{
	const char *v = stanza_attr(st, "id");
	return stanza_is(st, NS_CLIENT " iq") && v && strcmp(v, id) == 0;
}

static bool conn_attr_is(const struct stanza *st, const char *name, const char *value)
{
	const char *v = stanza_attr(st, name);
	return v && strcmp(v, value) == 0;
}

static void conn_bind_answer(struct conn *c, struct stanza *st)
{
	if (!conn_iq_is(st, ID_BIND))
		return;
	struct stanza *b = stanza_child(st, NS_BIND " bind");
	struct stanza *jid = b ? stanza_child(b, NS_BIND " jid") : NULL;
	if (!conn_attr_is(st, "type", "result") || !jid || !jid->text_len) {
		conn_fail(c, FAIL_PROTOCOL, "resource binding failed");
		return;
	}
	c->jid = strdup(jid->text);
	if (c->session_required) {
		conn_send(c, "<iq type='set' id='" ID_SESSION "'><session xmlns='" NS_SESSION "'/></iq>",
			  sizeof("<iq type='set' id='" ID_SESSION "'><session xmlns='" NS_SESSION "'/></iq>") - 1);
		c->state = CONN_SESSION;
	} else {
		conn_after_bind(c);
	}
}

static void conn_session_answer(struct conn *c, struct stanza *st)
{
	if (!conn_iq_is(st, ID_SESSION))
		return;
	if (!conn_attr_is(st, "type", "result")) {
		conn_fail(c, FAIL_PROTOCOL, "session establishment failed");
		return;
	}
	conn_after_bind(c);
}

static void conn_roster_result(struct conn *c, struct stanza *st)
{
	if (!conn_attr_is(st, "type", "result")) {
		conn_fail(c, FAIL_PROTOCOL, "roster get failed");
		return;
	}
	struct stanza *q = stanza_child(st, NS_ROSTER " query");
	for (struct stanza *it = q ? q->child : NULL; it; it = it->next) {
		if (!stanza_is(it, NS_ROSTER " item"))
			continue;
		c->roster_items++;
		if (conn_attr_is(it, "subscription", "both"))
			c->roster_both++;
	}
	if (c->ops->roster)
		c->ops->roster(c, q);
	if (c->state == CONN_CLOSED)
		return;
	conn_go_online(c);
}

/* The login is complete (roster result, or SM resumed). */
static void conn_go_online(struct conn *c)
{
	struct worker *w = c->w;
	/* By now the server's TLS 1.3 tickets have arrived. */
	if (c->carry) {
		SSL_SESSION *sess = SSL_get1_session(c->ssl);
		if (sess && SSL_SESSION_is_resumable(sess)) {
			conn_carry_clear(c->carry);
			c->carry->tls = sess;
		} else if (sess) {
			SSL_SESSION_free(sess);
		}
	}
	if (w->run->o->tls_resume) {
		SSL_SESSION *sess = SSL_get1_session(c->ssl);
		if (sess && SSL_SESSION_is_resumable(sess)) {
			if (w->session)
				SSL_SESSION_free(w->session);
			w->session = sess;
		} else if (sess) {
			SSL_SESSION_free(sess);
		}
	}
	c->state = CONN_ONLINE;
	c->was_online = true;
	c->t_online = uv_hrtime();
	worker_count(&w->ctr.online, 1);
	worker_count(&w->ctr.logins, 1);
	hist_add(&w->ctr.login_us, (c->t_online - c->t_start) / 1000);
	if (c->ops->online)
		c->ops->online(c);
}

/* Answers what a client must answer: pings and roster pushes with a
 * result, any other request with service-unavailable. */
static void conn_answer_iq(struct conn *c, struct stanza *st)
{
	const char *type = stanza_attr(st, "type");
	if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
		return;
	const char *id = stanza_attr(st, "id");
	const char *from = stanza_attr(st, "from");
	bool ping = strcmp(type, "get") == 0 && stanza_child(st, NS_PING " ping");
	bool known = ping || (strcmp(type, "set") == 0 && stanza_child(st, NS_ROSTER " query"));
	if (ping)
		worker_count(&c->w->ctr.pings, 1);
	if (!known && c->ops->iq && c->ops->iq(c, st))
		return;
	conn_send(c, "<iq type='", 10);
	conn_send(c, known ? "result" : "error", known ? 6 : 5);
	conn_send(c, "' id='", 6);
	conn_send_escaped(c, id ? id : "");
	if (from) {
		conn_send(c, "' to='", 6);
		conn_send_escaped(c, from);
	}
	if (known)
		conn_send(c, "'/>", 3);
	else
		conn_sendf(c, "'><error type='cancel'><service-unavailable "
			      "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
}

static void conn_stanza(struct conn *c, struct stanza *st)
{
	if (stanza_is(st, NS_CLIENT " iq")) {
		if (c->state == CONN_ROSTER && conn_iq_is(st, ID_ROSTER)) {
			conn_roster_result(c, st);
			return;
		}
		conn_answer_iq(c, st);
	}
	if (c->ops->stanza)
		c->ops->stanza(c, st);
}

/* The <enabled/> of a new SM session: it must allow resumption. */
static bool conn_sm_enabled(struct conn *c, const struct stanza *en)
{
	const char *id = stanza_attr(en, "id");
	const char *res = stanza_attr(en, "resume");
	if (!id || !res || (strcmp(res, "true") != 0 && strcmp(res, "1") != 0)) {
		conn_fail(c, FAIL_UNSUPPORTED, "stream management enabled without resumption");
		return false;
	}
	snprintf(c->carry->sm_id, sizeof c->carry->sm_id, "%s", id);
	c->carry->h_in = 0;
	c->sm_counting = true;
	return true;
}

static void conn_sm(struct conn *c, struct stanza *st)
{
	if (c->state == CONN_SM_ENABLE && stanza_is(st, NS_SM " enabled")) {
		if (conn_sm_enabled(c, st))
			conn_start_session(c);
	} else if (c->state == CONN_SM_RESUME && stanza_is(st, NS_SM " resumed")) {
		c->carry->sm_resumed = true;
		c->sm_counting = true;
		conn_go_online(c);
	} else if (stanza_is(st, NS_SM " failed")) {
		conn_fail(c, FAIL_PROTOCOL, "stream management %s failed: %s",
			  c->state == CONN_SM_ENABLE ? "enable" : "resume", conn_condition(st));
	}
	/* Anything else before the answer (a stanza) is not ours to count. */
}

static void conn_sasl2(struct conn *c, struct stanza *st)
{
	const struct opts *o = c->w->run->o;
	struct conn_carry *k = c->carry;
	if (stanza_is(st, NS_SASL2 " challenge") && c->scram) {
		const char *err;
		char *final = sasl_scram_final(c->scram, c->w->run->cache, o->password, st->text, &err);
		if (!final) {
			conn_fail(c, FAIL_AUTH, "SCRAM: %s", err);
			return;
		}
		conn_sendf(c, "<response xmlns='" NS_SASL2 "'>%s</response>", final);
		free(final);
		return;
	}
	if (stanza_is(st, NS_SASL2 " failure")) {
		conn_fail(c, FAIL_AUTH, "SASL2 failure%s: %s", c->fast_auth ? " (FAST token)" : "",
			  conn_condition(st));
		return;
	}
	if (stanza_is(st, NS_SASL2 " continue")) {
		conn_fail(c, FAIL_UNSUPPORTED, "SASL2 <continue/> (tasks) not supported");
		return;
	}
	if (!stanza_is(st, NS_SASL2 " success")) {
		conn_fail(c, FAIL_PROTOCOL, "unexpected <%s> during SASL2", st->name);
		return;
	}
	/* The server proves itself in additional-data before we believe it. */
	struct stanza *ad = stanza_child(st, NS_SASL2 " additional-data");
	bool ok = c->fast_auth ? ad && sasl_ht_verify(k->token, ad->text)
		  : c->scram	 ? (ad && ad->text_len && sasl_scram_verify(c->scram, ad->text)) ||
				   c->scram->verified
				 : true; /* PLAIN proves nothing back */
	if (!ok) {
		conn_fail(c, FAIL_AUTH, "bad or missing server proof in SASL2 <success/>");
		return;
	}
	if (c->scram) {
		sasl_scram_clear(c->scram);
		free(c->scram);
		c->scram = NULL;
	}
	k->fast_used = c->fast_auth;
	struct stanza *tok = stanza_child(st, NS_FAST " token");
	const char *token = tok ? stanza_attr(tok, "token") : NULL;
	if (token && strlen(token) < sizeof k->token) {
		snprintf(k->token, sizeof k->token, "%s", token);
		k->fast_count = 0;
	} else if (!c->fast_auth) {
		conn_fail(c, FAIL_UNSUPPORTED, "no FAST token in SASL2 <success/>");
		return;
	}
	struct stanza *aid = stanza_child(st, NS_SASL2 " authorization-identifier");
	if (aid && aid->text_len) {
		free(c->jid);
		c->jid = strdup(aid->text);
	}
	c->state = CONN_ROSTER; /* no stream restart after SASL2 */
	struct stanza *resumed = stanza_child(st, NS_SM " resumed");
	if (resumed) {
		k->sm_resumed = true;
		c->sm_counting = true;
		conn_go_online(c);
		return;
	}
	struct stanza *bound = stanza_child(st, NS_BIND2 " bound");
	struct stanza *en = bound ? stanza_child(bound, NS_SM " enabled") : NULL;
	if (!bound || (c->sasl2_sm && !en)) {
		conn_fail(c, FAIL_UNSUPPORTED, "%s", bound ? "Bind 2 did not enable stream management"
							   : "SASL2 <success/> without <bound/>");
		return;
	}
	if (en && !conn_sm_enabled(c, en))
		return;
	k->sm_rebound = k->resume && c->sasl2_sm;
	conn_start_session(c);
}

static void conn_on_open(void *ud, const char **attrs)
{
	(void)ud;
	(void)attrs;
}

static void conn_on_element(void *ud, struct stanza *st)
{
	struct conn *c = ud;
	if (c->state == CONN_CLOSED)
		return;
	/* After our </stream:stream> the server may still deliver what was on
	 * its way (the presence of a contact, say): it did the work, so the
	 * scenario still counts it, but nothing is answered any more. */
	if (c->state == CONN_CLOSING) {
		if (c->was_online && c->ops->stanza && !stanza_is(st, NS_STREAM " error"))
			c->ops->stanza(c, st);
		return;
	}
	if (stanza_is(st, NS_STREAM " error")) {
		conn_fail(c, FAIL_STREAM, "stream error: %s", conn_condition(st));
		return;
	}
	/* Stream management: acks asked for are answered with what has come
	 * in; every stanza counts. */
	if (c->sm_counting) {
		if (stanza_is(st, NS_SM " r")) {
			conn_sendf(c, "<a xmlns='" NS_SM "' h='%u'/>", c->carry->h_in);
			return;
		}
		if (stanza_is(st, NS_SM " a"))
			return;
		if (stanza_is(st, NS_CLIENT " message") || stanza_is(st, NS_CLIENT " presence") ||
		    stanza_is(st, NS_CLIENT " iq"))
			c->carry->h_in++;
	}
	switch (c->state) {
	case CONN_STREAM1:
		conn_features_plain(c, st);
		break;
	case CONN_STARTTLS:
		conn_starttls_answer(c, st);
		break;
	case CONN_STREAM2:
		conn_features_auth(c, st);
		break;
	case CONN_SASL:
		conn_sasl(c, st);
		break;
	case CONN_SASL2:
		conn_sasl2(c, st);
		break;
	case CONN_SM_ENABLE:
	case CONN_SM_RESUME:
		conn_sm(c, st);
		break;
	case CONN_STREAM3:
		conn_features_bind(c, st);
		break;
	case CONN_BIND:
		conn_bind_answer(c, st);
		break;
	case CONN_SESSION:
		conn_session_answer(c, st);
		break;
	case CONN_ROSTER:
	case CONN_ONLINE:
		conn_stanza(c, st);
		break;
	default:
		conn_fail(c, FAIL_PROTOCOL, "unexpected <%s>", st->name);
		break;
	}
}

static void conn_on_close(void *ud)
{
	struct conn *c = ud;
	if (c->state == CONN_CLOSING)
		conn_shut(c);
	else
		conn_fail(c, FAIL_CLOSED, "server closed the stream");
}

void conn_sweep(struct worker *w, uint64_t now)
{
	for (struct conn *c = w->conns; c; c = c->next) {
		if (c->state == CONN_ONLINE && !c->parser.released &&
		    now - c->t_last_read > PARSER_IDLE_NS)
			stanza_parser_release(&c->parser);
		if (c->state == CONN_CLOSED || now < c->deadline)
			continue;
		if (c->state == CONN_CLOSING)
			conn_shut(c);
		else if (c->state != CONN_ONLINE)
			conn_fail(c, FAIL_TIMEOUT, "not online after %.0f s", w->run->o->login_timeout);
	}
}

void conn_close_all(struct worker *w)
{
	for (struct conn *c = w->conns; c; c = c->next)
		conn_close(c);
}

void conn_abort_all(struct worker *w)
{
	for (struct conn *c = w->conns; c; c = c->next)
		conn_shut(c);
}

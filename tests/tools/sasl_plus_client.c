/*
 * sasl_plus_client: a deliberately small XMPP client for the integration
 * tests, written because slixmpp only knows tls-unique channel binding and
 * so cannot exercise SCRAM-*-PLUS over TLS 1.3 (RFC 9266 tls-exporter).
 *
 *   sasl_plus_client HOST PORT DOMAIN USER PASSWORD MECH
 *                    [--tls12] [--direct] [--cb tls-exporter|tls-unique]
 *                    [--tamper-cb] [--resume]
 *
 * It connects over plain TCP, opens a stream to DOMAIN, negotiates STARTTLS
 * (or, with --direct, speaks TLS from the first byte with ALPN
 * "xmpp-client"), runs SASL mechanism MECH through GNU SASL, and on success
 * restarts the stream and binds a resource.
 *
 * Output (stdout), one fact per line:
 *   offered-cb: TYPE     for every XEP-0440 channel-binding type offered
 *   tls: VERSION         the negotiated TLS version
 *   success              SASL succeeded and the server signature verified
 *   bound: JID           the resource binding result
 *   failure: CONDITION   the server's SASL <failure/> condition
 *
 * Exit status: 0 success and bound; 1 the server sent a SASL <failure/>;
 * 2 anything else went wrong (network, TLS, protocol, stream error, the
 * mechanism was not offered); 3 the server's SCRAM signature did not verify.
 *
 * Channel-binding data is handed to GNU SASL only for -PLUS mechanisms
 * (--cb picks the type, tls-exporter by default); GNU SASL 2.2 refuses to
 * run a non-PLUS mechanism when it has binding data, so the gs2 "y" case is
 * tested with slixmpp instead.  --tamper-cb flips a bit of the binding data
 * so the server must refuse the proof.
 *
 * --resume logs in twice: the second connection offers the TLS session
 * (ticket) of the first, and each prints "resumed: yes" or "resumed: no"
 * after its handshake; the exit status is the second login's.
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <expat.h>
#include <gsasl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define NS_STREAM "http://etherx.jabber.org/streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SASL_CB "urn:xmpp:sasl-cb:0"
#define NS_STREAM_ERR "urn:ietf:params:xml:ns:xmpp-streams"

#define EXIT_SASL_FAILURE 1
#define EXIT_ERROR 2
#define EXIT_BAD_SERVER_SIGNATURE 3

#define IO_TIMEOUT_SECONDS 15
#define MAX_TOP_ELEMENT_BYTES (1024 * 1024)

/* One element of a top-level stanza or nonza.  Names are expat's
 * "namespace-uri local-name" form (separator ' '). */
struct node {
	char *name;
	char **attrs; /* name, value, ..., NULL; owned */
	char *text;   /* character data directly inside, owned, may be NULL */
	size_t text_len;
	struct node *parent;
	struct node *children; /* first child */
	struct node *next;     /* next sibling */
};

/* A queue of completed top-level elements, oldest first. */
struct node_queue {
	struct node *head;
	struct node *tail;
};

struct conn {
	int fd;
	SSL_CTX *ssl_ctx;
	SSL *ssl;         /* NULL until TLS is up */
	XML_Parser parser;
	int depth;        /* 0 outside the stream root, 1 inside it */
	bool stream_open; /* the peer's stream header arrived */
	bool stream_closed;
	size_t top_bytes; /* bytes fed while the current top element grows */
	struct node *cur; /* element being built, NULL at depth <= 1 */
	struct node_queue done;
	bool parse_error;
	SSL_SESSION *offer; /* a session to resume, or NULL */
};

struct options {
	const char *host;
	const char *port;
	const char *domain;
	const char *user;
	const char *password;
	const char *mech;
	bool tls12;
	bool direct;
	const char *cb_type; /* channel binding for -PLUS mechanisms */
	bool tamper_cb;
	bool resume;
};

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("sasl_plus_client: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(EXIT_ERROR);
}

static void
die_ssl(const char *what)
{
	unsigned long e;
	char buf[256];

	fprintf(stderr, "sasl_plus_client: %s\n", what);
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		fprintf(stderr, "  %s\n", buf);
	}
	exit(EXIT_ERROR);
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		die("out of memory");
	return p;
}

static char *
xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = xmalloc(n);

	memcpy(p, s, n);
	return p;
}

static void
node_free(struct node *n)
{
	while (n != NULL) {
		struct node *next = n->next;

		node_free(n->children);
		if (n->attrs != NULL) {
			for (char **a = n->attrs; *a != NULL; a++)
				free(*a);
			free(n->attrs);
		}
		free(n->name);
		free(n->text);
		free(n);
		n = next;
	}
}

/* The local part of an expat "uri local" name. */
static const char *
local_name(const char *name)
{
	const char *sp = strrchr(name, ' ');

	return sp ? sp + 1 : name;
}

static bool
node_is(const struct node *n, const char *ns, const char *local)
{
	size_t nl = strlen(ns);

	return strncmp(n->name, ns, nl) == 0 && n->name[nl] == ' ' &&
	    strcmp(n->name + nl + 1, local) == 0;
}

static struct node *
node_child(const struct node *n, const char *ns, const char *local)
{
	for (struct node *c = n->children; c != NULL; c = c->next)
		if (node_is(c, ns, local))
			return c;
	return NULL;
}

static const char *
node_attr(const struct node *n, const char *name)
{
	if (n->attrs == NULL)
		return NULL;
	for (char **a = n->attrs; a[0] != NULL; a += 2)
		if (strcmp(a[0], name) == 0)
			return a[1];
	return NULL;
}

static const char *
node_text(const struct node *n)
{
	return n->text ? n->text : "";
}

/* ---- XML stream reading ------------------------------------------------ */

static void XMLCALL
on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct conn *c = ud;
	struct node *n;
	size_t count = 0;

	if (c->depth == 0) {
		if (strcmp(name, NS_STREAM " stream") != 0) {
			fprintf(stderr, "sasl_plus_client: unexpected root <%s>\n",
			    name);
			c->parse_error = true;
			XML_StopParser(c->parser, XML_FALSE);
			return;
		}
		c->stream_open = true;
		c->depth = 1;
		return;
	}
	n = xmalloc(sizeof(*n));
	memset(n, 0, sizeof(*n));
	n->name = xstrdup(name);
	while (atts[count] != NULL)
		count++;
	n->attrs = xmalloc((count + 1) * sizeof(char *));
	for (size_t i = 0; i < count; i++)
		n->attrs[i] = xstrdup(atts[i]);
	n->attrs[count] = NULL;
	n->parent = c->cur;
	if (c->cur != NULL) {
		struct node **tail = &c->cur->children;

		while (*tail != NULL)
			tail = &(*tail)->next;
		*tail = n;
	}
	c->cur = n;
	c->depth++;
}

static void XMLCALL
on_end(void *ud, const XML_Char *name)
{
	struct conn *c = ud;
	struct node *n = c->cur;

	(void)name;
	c->depth--;
	if (c->depth == 0) {
		c->stream_closed = true;
		return;
	}
	c->cur = n->parent;
	if (c->depth == 1) {
		if (c->done.tail != NULL)
			c->done.tail->next = n;
		else
			c->done.head = n;
		c->done.tail = n;
		c->top_bytes = 0;
	}
}

static void XMLCALL
on_text(void *ud, const XML_Char *s, int len)
{
	struct conn *c = ud;
	struct node *n = c->cur;
	char *t;

	if (n == NULL || len <= 0)
		return; /* whitespace between top-level elements */
	t = realloc(n->text, n->text_len + (size_t)len + 1);
	if (t == NULL)
		die("out of memory");
	memcpy(t + n->text_len, s, (size_t)len);
	n->text_len += (size_t)len;
	t[n->text_len] = '\0';
	n->text = t;
}

/* Begins parsing a new stream from the peer (after connect, STARTTLS or
 * SASL success): the old parser and any half-built element are dropped. */
static void
conn_new_parser(struct conn *c)
{
	if (c->parser != NULL)
		XML_ParserFree(c->parser);
	/* The current element belongs to the node tree only once attached,
	 * so walk up to its top and free from there. */
	if (c->cur != NULL) {
		struct node *top = c->cur;

		while (top->parent != NULL)
			top = top->parent;
		node_free(top);
		c->cur = NULL;
	}
	node_free(c->done.head);
	c->done.head = c->done.tail = NULL;
	c->parser = XML_ParserCreateNS(NULL, ' ');
	if (c->parser == NULL)
		die("cannot create XML parser");
	XML_SetUserData(c->parser, c);
	XML_SetElementHandler(c->parser, on_start, on_end);
	XML_SetCharacterDataHandler(c->parser, on_text);
	c->depth = 0;
	c->stream_open = false;
	c->stream_closed = false;
	c->top_bytes = 0;
	c->parse_error = false;
}

static void
conn_send(struct conn *c, const char *data)
{
	size_t len = strlen(data);

	while (len > 0) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, data, (int)len);

			if (r <= 0)
				die_ssl("TLS write failed");
			n = r;
		} else {
			n = send(c->fd, data, len, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				die("send: %s", strerror(errno));
			}
		}
		data += n;
		len -= (size_t)n;
	}
}

/* Reads once from the socket into buf; returns the byte count, 0 on EOF. */
static size_t
conn_read_raw(struct conn *c, char *buf, size_t size)
{
	for (;;) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_read(c->ssl, buf, (int)size);

			if (r > 0)
				return (size_t)r;
			switch (SSL_get_error(c->ssl, r)) {
			case SSL_ERROR_ZERO_RETURN:
				return 0;
			case SSL_ERROR_WANT_READ:
			case SSL_ERROR_WANT_WRITE:
				/* SO_RCVTIMEO expired on the blocking socket. */
				die("timed out waiting for the server");
				break;
			case SSL_ERROR_SYSCALL:
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					die("timed out waiting for the server");
				/* An unclean close is still a close. */
				return 0;
			default:
				die_ssl("TLS read failed");
			}
		}
		n = recv(c->fd, buf, size, 0);
		if (n >= 0)
			return (size_t)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			die("timed out waiting for the server");
		die("recv: %s", strerror(errno));
	}
}

/*
 * Returns the next complete top-level element of the peer's stream (caller
 * frees it with node_free), or NULL when the stream or connection ended.
 * A buffered read is safe across STARTTLS because the server sends nothing
 * after <proceed/> until the client starts the TLS handshake.
 */
static struct node *
conn_next(struct conn *c)
{
	char buf[4096];

	while (c->done.head == NULL) {
		size_t n;

		if (c->stream_closed)
			return NULL;
		n = conn_read_raw(c, buf, sizeof(buf));
		if (n == 0)
			return NULL;
		c->top_bytes += n;
		if (c->top_bytes > MAX_TOP_ELEMENT_BYTES)
			die("server element larger than %d bytes",
			    MAX_TOP_ELEMENT_BYTES);
		if (XML_Parse(c->parser, buf, (int)n, XML_FALSE) ==
		    XML_STATUS_ERROR) {
			if (c->parse_error)
				exit(EXIT_ERROR);
			die("server sent bad XML: %s",
			    XML_ErrorString(XML_GetErrorCode(c->parser)));
		}
	}
	{
		struct node *n = c->done.head;

		c->done.head = n->next;
		if (c->done.head == NULL)
			c->done.tail = NULL;
		n->next = NULL;
		return n;
	}
}

/* Like conn_next, but a stream error, a closed stream or EOF is fatal. */
static struct node *
conn_expect(struct conn *c, const char *waiting_for)
{
	struct node *n = conn_next(c);

	if (n == NULL)
		die("connection closed while waiting for %s", waiting_for);
	if (node_is(n, NS_STREAM, "error")) {
		const char *cond = "unknown";

		for (struct node *k = n->children; k != NULL; k = k->next)
			if (strncmp(k->name, NS_STREAM_ERR " ",
			    strlen(NS_STREAM_ERR) + 1) == 0 &&
			    strcmp(local_name(k->name), "text") != 0) {
				cond = local_name(k->name);
				break;
			}
		printf("stream-error: %s\n", cond);
		fflush(stdout);
		node_free(n);
		exit(EXIT_ERROR);
	}
	return n;
}

static void
open_stream(struct conn *c, const char *domain)
{
	char header[512];
	int n;

	conn_new_parser(c);
	n = snprintf(header, sizeof(header),
	    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	    "xmlns:stream='" NS_STREAM "' to='%s' version='1.0'>", domain);
	if (n < 0 || (size_t)n >= sizeof(header))
		die("domain too long");
	conn_send(c, header);
}

/* ---- network and TLS --------------------------------------------------- */

static int
tcp_connect(const char *host, const char *port)
{
	struct addrinfo hints, *res, *ai;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_SECONDS };
	int fd = -1;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		die("%s:%s: %s", host, port, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		die("cannot connect to %s:%s", host, port);
	/* Timeouts make a silent server an error instead of a hang. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		die("setsockopt: %s", strerror(errno));
	return fd;
}

static void
tls_start(struct conn *c, const struct options *o)
{
	static const unsigned char alpn[] = "\x0bxmpp-client";

	c->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (c->ssl_ctx == NULL)
		die_ssl("SSL_CTX_new");
	/* The test server's certificates are self-signed: no verification;
	 * the tests compare certificates themselves where it matters. */
	SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_NONE, NULL);
	if (!SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION))
		die_ssl("set_min_proto_version");
	if (o->tls12 &&
	    !SSL_CTX_set_max_proto_version(c->ssl_ctx, TLS1_2_VERSION))
		die_ssl("set_max_proto_version");
	/* A peer closing without close_notify is an ordinary EOF here: the
	 * caller reports what it was waiting for. */
	SSL_CTX_set_options(c->ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* No session cache: a session is resumed only when --resume hands
	 * the first connection's to the second. */
	SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_OFF);
	c->ssl = SSL_new(c->ssl_ctx);
	if (c->ssl == NULL)
		die_ssl("SSL_new");
	if (!SSL_set_tlsext_host_name(c->ssl, o->domain))
		die_ssl("SNI");
	if (o->direct && SSL_set_alpn_protos(c->ssl, alpn, sizeof(alpn) - 1))
		die_ssl("ALPN");
	if (!SSL_set_fd(c->ssl, c->fd))
		die_ssl("SSL_set_fd");
	if (c->offer != NULL && !SSL_set_session(c->ssl, c->offer))
		die_ssl("SSL_set_session");
	if (SSL_connect(c->ssl) != 1)
		die_ssl("TLS handshake failed");
	printf("tls: %s\n", SSL_get_version(c->ssl));
	if (o->resume)
		printf("resumed: %s\n", SSL_session_reused(c->ssl) ? "yes" : "no");
}

/*
 * Computes the channel binding of type cb_type for the live TLS session and
 * returns it base64-encoded (caller frees with gsasl_free), or NULL when the
 * type is unknown.
 */
static char *
channel_binding(SSL *ssl, const char *cb_type, bool tamper)
{
	unsigned char data[EVP_MAX_MD_SIZE];
	size_t len;
	char *b64 = NULL;

	if (strcmp(cb_type, "tls-exporter") == 0) {
		static const char label[] = "EXPORTER-Channel-Binding";

		/* RFC 9266: 32 bytes, no context value. */
		len = 32;
		if (SSL_export_keying_material(ssl, data, len, label,
		    sizeof(label) - 1, NULL, 0, 0) != 1)
			die_ssl("SSL_export_keying_material");
	} else if (strcmp(cb_type, "tls-unique") == 0) {
		/* RFC 5929: the first Finished of the latest handshake, which
		 * is ours on a full handshake, the server's on a resumption. */
		if (SSL_session_reused(ssl))
			len = SSL_get_peer_finished(ssl, data, sizeof(data));
		else
			len = SSL_get_finished(ssl, data, sizeof(data));
		if (len == 0 || len > sizeof(data))
			die("no Finished message for tls-unique");
	} else {
		return NULL;
	}
	if (tamper)
		data[0] ^= 0x01;
	if (gsasl_base64_to((const char *)data, len, &b64, NULL) != GSASL_OK)
		die("base64 failed");
	return b64;
}

/* ---- protocol steps ---------------------------------------------------- */

/* Sends STARTTLS on a fresh stream and restarts the stream over TLS. */
static void
negotiate_starttls(struct conn *c, const struct options *o)
{
	struct node *features = conn_expect(c, "stream features");
	struct node *reply;

	if (!node_is(features, NS_STREAM, "features") ||
	    node_child(features, NS_TLS, "starttls") == NULL)
		die("server did not offer STARTTLS");
	node_free(features);
	conn_send(c, "<starttls xmlns='" NS_TLS "'/>");
	reply = conn_expect(c, "<proceed/>");
	if (!node_is(reply, NS_TLS, "proceed"))
		die("STARTTLS refused: <%s>", local_name(reply->name));
	node_free(reply);
	tls_start(c, o);
	open_stream(c, o->domain);
}

/* Returns the features after TLS, having checked that MECH is offered and
 * printed the advertised channel-binding types. */
static struct node *
read_sasl_features(struct conn *c, const struct options *o)
{
	struct node *features = conn_expect(c, "stream features");
	struct node *mechs, *cb;
	bool offered = false;

	if (!node_is(features, NS_STREAM, "features"))
		die("expected <features/>, got <%s>", features->name);
	mechs = node_child(features, NS_SASL, "mechanisms");
	if (mechs == NULL)
		die("no SASL mechanisms offered");
	for (struct node *m = mechs->children; m != NULL; m = m->next)
		if (node_is(m, NS_SASL, "mechanism") &&
		    strcmp(node_text(m), o->mech) == 0)
			offered = true;
	cb = node_child(features, NS_SASL_CB, "sasl-channel-binding");
	if (cb != NULL)
		for (struct node *t = cb->children; t != NULL; t = t->next) {
			const char *type = node_attr(t, "type");

			if (node_is(t, NS_SASL_CB, "channel-binding") && type)
				printf("offered-cb: %s\n", type);
		}
	fflush(stdout);
	if (!offered)
		die("mechanism %s not offered", o->mech);
	return features;
}

static void
send_sasl(struct conn *c, const char *element, const char *mech,
    const char *b64)
{
	size_t size = strlen(b64) + strlen(mech) + 128;
	char *buf = xmalloc(size);

	/* "=" is the RFC 6120 6.4.2 spelling of an empty response. */
	if (mech != NULL && *mech != '\0')
		snprintf(buf, size, "<%s xmlns='" NS_SASL "' mechanism='%s'>"
		    "%s</%s>", element, mech, *b64 ? b64 : "=", element);
	else
		snprintf(buf, size, "<%s xmlns='" NS_SASL "'>%s</%s>",
		    element, *b64 ? b64 : "", element);
	conn_send(c, buf);
	free(buf);
}

/*
 * Runs the SASL exchange; returns only on success (server verified), and
 * exits with the documented status otherwise.
 */
static void
authenticate(struct conn *c, const struct options *o)
{
	Gsasl *ctx = NULL;
	Gsasl_session *sess = NULL;
	char *out = NULL;
	char *cb = NULL;
	bool plus = strstr(o->mech, "-PLUS") != NULL;
	bool complete = false;
	int rc;

	rc = gsasl_init(&ctx);
	if (rc != GSASL_OK)
		die("gsasl_init: %s", gsasl_strerror(rc));
	rc = gsasl_client_start(ctx, o->mech, &sess);
	if (rc != GSASL_OK)
		die("gsasl_client_start(%s): %s", o->mech, gsasl_strerror(rc));
	if (gsasl_property_set(sess, GSASL_AUTHID, o->user) != GSASL_OK ||
	    gsasl_property_set(sess, GSASL_PASSWORD, o->password) != GSASL_OK)
		die("gsasl_property_set failed");
	if (plus) {
		const char *type = o->cb_type;

		cb = channel_binding(c->ssl, type, o->tamper_cb);
		if (cb == NULL)
			die("unknown channel binding type %s", type);
		/* Only the chosen type is set, so GNU SASL can pick no other. */
		rc = gsasl_property_set(sess, strcmp(type, "tls-unique") == 0 ?
		    GSASL_CB_TLS_UNIQUE : GSASL_CB_TLS_EXPORTER, cb);
		if (rc != GSASL_OK)
			die("gsasl_property_set(cb): %s", gsasl_strerror(rc));
	}

	rc = gsasl_step64(sess, "", &out);
	if (rc != GSASL_OK && rc != GSASL_NEEDS_MORE)
		die("SASL client start failed: %s", gsasl_strerror_name(rc));
	complete = rc == GSASL_OK;
	send_sasl(c, "auth", o->mech, out ? out : "");
	gsasl_free(out);
	out = NULL;

	for (;;) {
		struct node *n = conn_expect(c, "a SASL reply");

		if (node_is(n, NS_SASL, "challenge")) {
			rc = gsasl_step64(sess, node_text(n), &out);
			node_free(n);
			if (rc == GSASL_OK)
				complete = true;
			else if (rc != GSASL_NEEDS_MORE) {
				printf("client-error: %s\n",
				    gsasl_strerror_name(rc));
				fflush(stdout);
				exit(rc == GSASL_AUTHENTICATION_ERROR ?
				    EXIT_BAD_SERVER_SIGNATURE : EXIT_ERROR);
			}
			send_sasl(c, "response", "", out ? out : "");
			gsasl_free(out);
			out = NULL;
		} else if (node_is(n, NS_SASL, "success")) {
			const char *data = node_text(n);

			if (!complete) {
				/* The SCRAM server-final-message must verify. */
				if (*data == '\0' || strcmp(data, "=") == 0)
					rc = GSASL_MECHANISM_PARSE_ERROR;
				else
					rc = gsasl_step64(sess, data, &out);
				gsasl_free(out);
				out = NULL;
				if (rc != GSASL_OK) {
					printf("client-error: %s\n",
					    gsasl_strerror_name(rc));
					fflush(stdout);
					node_free(n);
					exit(EXIT_BAD_SERVER_SIGNATURE);
				}
			}
			node_free(n);
			break;
		} else if (node_is(n, NS_SASL, "failure")) {
			const char *cond = "unknown";

			for (struct node *k = n->children; k; k = k->next)
				if (strcmp(local_name(k->name), "text")) {
					cond = local_name(k->name);
					break;
				}
			printf("failure: %s\n", cond);
			fflush(stdout);
			node_free(n);
			exit(EXIT_SASL_FAILURE);
		} else {
			die("unexpected <%s> during SASL", n->name);
		}
	}
	printf("success\n");
	fflush(stdout);
	gsasl_free(cb);
	gsasl_finish(sess);
	gsasl_done(ctx);
}

static void
bind_resource(struct conn *c)
{
	struct node *features = conn_expect(c, "post-SASL features");
	struct node *iq, *bind, *jid;

	if (!node_is(features, NS_STREAM, "features") ||
	    node_child(features, NS_BIND, "bind") == NULL)
		die("no resource binding offered after SASL");
	node_free(features);
	conn_send(c, "<iq type='set' id='bind-1'><bind xmlns='" NS_BIND "'>"
	    "<resource>sasl-plus</resource></bind></iq>");
	iq = conn_expect(c, "the bind result");
	if (!node_is(iq, "jabber:client", "iq") ||
	    node_attr(iq, "type") == NULL ||
	    strcmp(node_attr(iq, "type"), "result") != 0)
		die("resource binding failed");
	bind = node_child(iq, NS_BIND, "bind");
	jid = bind ? node_child(bind, NS_BIND, "jid") : NULL;
	if (jid == NULL)
		die("bind result without <jid/>");
	printf("bound: %s\n", node_text(jid));
	fflush(stdout);
	node_free(iq);
}

static void
usage(void)
{
	fprintf(stderr, "usage: sasl_plus_client HOST PORT DOMAIN USER "
	    "PASSWORD MECH [--tls12] [--direct] "
	    "[--cb tls-exporter|tls-unique] [--tamper-cb] [--resume]\n");
	exit(EXIT_ERROR);
}

static void
parse_args(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->cb_type = "tls-exporter";
	if (argc < 7)
		usage();
	o->host = argv[1];
	o->port = argv[2];
	o->domain = argv[3];
	o->user = argv[4];
	o->password = argv[5];
	o->mech = argv[6];
	for (int i = 7; i < argc; i++) {
		if (strcmp(argv[i], "--tls12") == 0)
			o->tls12 = true;
		else if (strcmp(argv[i], "--direct") == 0)
			o->direct = true;
		else if (strcmp(argv[i], "--tamper-cb") == 0)
			o->tamper_cb = true;
		else if (strcmp(argv[i], "--resume") == 0)
			o->resume = true;
		else if (strcmp(argv[i], "--cb") == 0 && i + 1 < argc)
			o->cb_type = argv[++i];
		else
			usage();
	}
	if (strcmp(o->domain, "") == 0 || strchr(o->domain, '\'') ||
	    strchr(o->domain, '<') || strchr(o->domain, '&') ||
	    strchr(o->mech, '\'') || strchr(o->mech, '<'))
		die("DOMAIN and MECH must not need XML escaping");
}

/*
 * One whole login: connect, TLS (offering `offer` if not NULL), SASL, bind,
 * close. Returns the TLS session it ended with (its tickets have arrived by
 * the bind result), for the caller to free.
 */
static SSL_SESSION *
login_once(const struct options *o, SSL_SESSION *offer)
{
	struct conn c;
	struct node *features;
	SSL_SESSION *sess;

	memset(&c, 0, sizeof(c));
	c.offer = offer;
	c.fd = tcp_connect(o->host, o->port);
	if (o->direct)
		tls_start(&c, o);
	open_stream(&c, o->domain);
	if (!o->direct)
		negotiate_starttls(&c, o);
	features = read_sasl_features(&c, o);
	node_free(features);
	authenticate(&c, o);
	open_stream(&c, o->domain);
	bind_resource(&c);

	sess = SSL_get1_session(c.ssl);
	conn_send(&c, "</stream:stream>");
	SSL_shutdown(c.ssl);
	SSL_free(c.ssl);
	SSL_CTX_free(c.ssl_ctx);
	conn_new_parser(&c); /* frees anything still queued */
	XML_ParserFree(c.parser);
	close(c.fd);
	return sess;
}

int
main(int argc, char **argv)
{
	struct options o;
	SSL_SESSION *sess;

	parse_args(argc, argv, &o);
	if (o.resume) {
		struct options first = o;

		first.tamper_cb = false;
		sess = login_once(&first, NULL);
	} else {
		sess = login_once(&o, NULL);
	}
	if (o.resume) {
		SSL_SESSION *again;

		/* --tamper-cb is for the resumed login only. */
		again = login_once(&o, sess);

		SSL_SESSION_free(again);
	}
	SSL_SESSION_free(sess);
	return 0;
}

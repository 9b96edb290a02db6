/* The LDAP operations of directory accounts, on OpenLDAP's libldap
 * (ldap.h). Every call blocks its directory thread for at most about the
 * configured timeout: libldap is given a network timeout for connecting
 * (and the TLS handshake) and an API timeout for every result it waits
 * for, and each search carries the same limit to the server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <ldap.h>
#include <openssl/evp.h>

#include "core/log.h"
#include "directory/ldap.h"
#include "jid/jid.h"

/* Bounds the TLS handshake of one handle. libldap 2.5 with GnuTLS 3.7
 * (Debian 12) spins inside gnutls_handshake on a non-blocking socket whose
 * server accepted the TCP connection but never answers (a stopped or
 * wedged slapd): libldap's own network timeout is never checked again and
 * the thread burns CPU forever. While a handle connects or starts TLS, a
 * watchdog thread shuts the socket down once it has been set up for longer
 * than the timeout; the handshake then fails like any broken connection
 * (and libldap moves on to the next URI). libldap tells us the socket
 * through its connection callbacks: lc_add after the TCP connect, before
 * TLS; lc_del before it closes the socket, so a shut-down descriptor is
 * never one that has been closed and reused. */
struct ldap_watch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;                   /* socket being set up; -1 = none */
	struct timespec deadline; /* CLOCK_MONOTONIC, for fd */
	int seconds;              /* budget per socket */
	int done;                 /* the guarded call returned */
	int fired;                /* a socket was shut down */
	struct ldap_conncb cb;    /* registered on the handle; lc_arg = this */
};

struct ldap_conn {
	const struct config_ldap *cfg;
	char *bind_password; /* the service account's; NULL = anonymous */
	LDAP *search;        /* bound as the service account; NULL = closed */
	LDAP *bind;          /* user binds only; NULL = closed */
	char search_peer[64]; /* "address:port" of search, for messages */
	char bind_peer[64];
	struct ldap_watch search_watch; /* outlive their handles: libldap */
	struct ldap_watch bind_watch;   /* keeps pointers to cb */
};

static void ldap_watch_arm(struct ldap_watch *w, int fd)
{
	w->fd = fd;
	clock_gettime(CLOCK_MONOTONIC, &w->deadline);
	/* One second more than libldap's own timeouts, which give the
	 * better message when they work. */
	w->deadline.tv_sec += w->seconds + 1;
	pthread_cond_signal(&w->cv);
}

static int ldap_watch_add(LDAP *ld, Sockbuf *sb, LDAPURLDesc *srv, struct sockaddr *addr,
			  struct ldap_conncb *ctx)
{
	struct ldap_watch *w = ctx->lc_arg;
	ber_socket_t fd = -1;

	(void)ld;
	(void)srv;
	(void)addr;
	ber_sockbuf_ctrl(sb, LBER_SB_OPT_GET_FD, &fd);
	pthread_mutex_lock(&w->mu);
	ldap_watch_arm(w, fd);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

static void ldap_watch_del(LDAP *ld, Sockbuf *sb, struct ldap_conncb *ctx)
{
	struct ldap_watch *w = ctx->lc_arg;

	(void)ld;
	(void)sb;
	pthread_mutex_lock(&w->mu);
	w->fd = -1;
	pthread_mutex_unlock(&w->mu);
}

static void *ldap_watch_run(void *arg)
{
	struct ldap_watch *w = arg;
	pthread_setname_np(pthread_self(), "natter-ldapwatch");

	pthread_mutex_lock(&w->mu);
	while (!w->done) {
		if (w->fd < 0) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		if (pthread_cond_timedwait(&w->cv, &w->mu, &w->deadline) == ETIMEDOUT &&
		    !w->done && w->fd >= 0) {
			shutdown(w->fd, SHUT_RDWR);
			w->fd = -1;
			w->fired = 1;
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static int ldap_watch_init(struct ldap_watch *w, int seconds)
{
	pthread_condattr_t attr;

	w->fd = -1;
	w->seconds = seconds;
	w->cb.lc_add = ldap_watch_add;
	w->cb.lc_del = ldap_watch_del;
	w->cb.lc_arg = w;
	if (pthread_mutex_init(&w->mu, NULL) != 0)
		return -1;
	if (pthread_condattr_init(&attr) != 0) {
		pthread_mutex_destroy(&w->mu);
		return -1;
	}
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (pthread_cond_init(&w->cv, &attr) != 0) {
		pthread_condattr_destroy(&attr);
		pthread_mutex_destroy(&w->mu);
		return -1;
	}
	pthread_condattr_destroy(&attr);
	return 0;
}

static void ldap_watch_destroy(struct ldap_watch *w)
{
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
}

/* Starts watching (fd: a socket already set up, e.g. before StartTLS, or
 * -1 to wait for lc_add). Returns 0, or -1 if no thread could be started:
 * the call then goes unguarded, as libldap alone would do it. */
static int ldap_watch_start(struct ldap_watch *w, int fd, pthread_t *t)
{
	pthread_mutex_lock(&w->mu);
	w->done = 0;
	w->fired = 0;
	w->fd = -1;
	if (fd >= 0)
		ldap_watch_arm(w, fd);
	pthread_mutex_unlock(&w->mu);
	if (pthread_create(t, NULL, ldap_watch_run, w) != 0) {
		log_warn("directory: cannot start a TLS watchdog thread");
		return -1;
	}
	return 0;
}

/* Stops watching; returns whether the watchdog shut a socket down. */
static int ldap_watch_stop(struct ldap_watch *w, pthread_t t)
{
	int fired;

	pthread_mutex_lock(&w->mu);
	w->done = 1;
	w->fd = -1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(t, NULL);
	fired = w->fired;
	return fired;
}

/* Whether rc means the directory (or the way to it) is gone or too slow:
 * the handle is useless then and is dropped. */
static int ldap_rc_down(int rc)
{
	return rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR ||
	       rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY;
}

static void ldap_drop(LDAP **ld)
{
	if (*ld) {
		ldap_unbind_ext(*ld, NULL, NULL);
		*ld = NULL;
	}
}

/* "<where>: <what>[ (<libldap's diagnostic>)]" into err. The diagnostic
 * message carries the useful part of TLS failures (the certificate
 * problem), which the result code alone does not. */
static void ldap_set_err(LDAP *ld, const char *where, const char *what, int rc, char *err,
			 size_t errlen)
{
	char *diag = NULL;

	if (!err || errlen == 0)
		return;
	if (ld && rc != LDAP_SUCCESS)
		ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
	if (!what)
		what = ldap_err2string(rc);
	/* libldap leaves "(unknown error code)" after a failed TLS
	 * handshake, which says nothing; the details are only in its debug
	 * output. */
	if (diag && *diag && strcmp(diag, "(unknown error code)") != 0)
		snprintf(err, errlen, "%s: %s (%s)", where, what, diag);
	else
		snprintf(err, errlen, "%s: %s", where, what);
	if (diag)
		ldap_memfree(diag);
}

/* Records the address libldap ended up connected to (it tries the URIs of
 * the list in order), so messages name the server that failed. */
static void ldap_peer(LDAP *ld, char *out, size_t cap)
{
	int fd = -1;
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char addr[INET6_ADDRSTRLEN] = "";
	int port = 0;

	out[0] = '\0';
	if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0 ||
	    getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
		port = ntohs(sin->sin_port);
		snprintf(out, cap, "%s:%d", addr, port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof addr);
		port = ntohs(sin6->sin6_port);
		snprintf(out, cap, "[%s]:%d", addr, port);
	}
}

/* Opens one handle: options, connection (URIs in order) and StartTLS, no
 * bind. Returns the handle or NULL with err set and *st the status. */
static LDAP *ldap_handle_open(struct ldap_conn *c, struct ldap_watch *w, char *peer,
			      size_t peercap, enum dir_status *st, char *err, size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	LDAP *ld = NULL;
	int rc;
	int version = LDAP_VERSION3;
	int req = cfg->verify ? LDAP_OPT_X_TLS_DEMAND : LDAP_OPT_X_TLS_NEVER;
	int newctx = 0;
	struct timeval tv = { .tv_sec = cfg->timeout, .tv_usec = 0 };
	pthread_t wt;
	int watched, fired;

	*st = DIR_ERROR;
	peer[0] = '\0';
	rc = ldap_initialize(&ld, cfg->uri);
	if (rc != LDAP_SUCCESS) {
		/* A malformed URI list: config validation should have caught
		 * it, so this is no outage. */
		ldap_set_err(NULL, cfg->uri, NULL, rc, err, errlen);
		return NULL;
	}
	/* The TLS options go on this handle before anything connects; the
	 * new context makes them take effect (libldap otherwise keeps using
	 * the global one built from ldap.conf). */
	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMELIMIT, &cfg->timeout) != LDAP_OPT_SUCCESS ||
	    (cfg->ca_file &&
	     ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, cfg->ca_file) != LDAP_OPT_SUCCESS) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &newctx) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_CONNECT_CB, &w->cb) != LDAP_OPT_SUCCESS) {
		ldap_set_err(ld, cfg->uri, "cannot set the LDAP/TLS options", LDAP_OTHER, err,
			     errlen);
		ldap_unbind_ext(ld, NULL, NULL);
		return NULL;
	}
	/* libldap connects lazily; connecting now tells an unreachable
	 * directory from a failing operation, and lets us see whether TLS is
	 * already on (an ldaps:// URI) before deciding on StartTLS. */
	watched = ldap_watch_start(w, -1, &wt) == 0;
	rc = ldap_connect(ld);
	fired = watched && ldap_watch_stop(w, wt);
	if (rc != LDAP_SUCCESS) {
		ldap_set_err(ld, cfg->uri, fired ? "TLS handshake timed out" : NULL, rc, err,
			     errlen);
		ldap_unbind_ext(ld, NULL, NULL);
		*st = DIR_UNAVAILABLE;
		return NULL;
	}
	ldap_peer(ld, peer, peercap);
	if (cfg->starttls && !ldap_tls_inplace(ld)) {
		int fd = -1;
		ldap_get_option(ld, LDAP_OPT_DESC, &fd);
		watched = ldap_watch_start(w, fd, &wt) == 0;
		rc = ldap_start_tls_s(ld, NULL, NULL);
		fired = watched && ldap_watch_stop(w, wt);
		if (rc != LDAP_SUCCESS) {
			/* Never carry on in plain text: the passwords would go
			 * over the wire unprotected. */
			char what[160];
			if (fired)
				snprintf(what, sizeof what, "StartTLS: TLS handshake timed out");
			else if (rc == LDAP_CONNECT_ERROR)
				snprintf(what, sizeof what, "StartTLS: TLS handshake failed "
					 "(certificate not trusted, or not for this host name?)");
			else
				snprintf(what, sizeof what, "StartTLS failed: %s",
					 ldap_err2string(rc));
			ldap_set_err(ld, peer[0] ? peer : cfg->uri, what, rc, err, errlen);
			ldap_unbind_ext(ld, NULL, NULL);
			*st = DIR_UNAVAILABLE;
			return NULL;
		}
	}
	*st = DIR_OK;
	return ld;
}

struct ldap_conn *ldap_conn_new(const struct config_ldap *cfg, const char *bind_password)
{
	struct ldap_conn *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	c->cfg = cfg;
	if (ldap_watch_init(&c->search_watch, cfg->timeout) < 0) {
		free(c);
		return NULL;
	}
	if (ldap_watch_init(&c->bind_watch, cfg->timeout) < 0) {
		ldap_watch_destroy(&c->search_watch);
		free(c);
		return NULL;
	}
	if (bind_password) {
		c->bind_password = strdup(bind_password);
		if (!c->bind_password) {
			ldap_watch_destroy(&c->search_watch);
			ldap_watch_destroy(&c->bind_watch);
			free(c);
			return NULL;
		}
	}
	return c;
}

void ldap_conn_free(struct ldap_conn *c)
{
	if (!c)
		return;
	ldap_drop(&c->search);
	ldap_drop(&c->bind);
	ldap_watch_destroy(&c->search_watch);
	ldap_watch_destroy(&c->bind_watch);
	if (c->bind_password) {
		/* The service password should not linger in freed memory. */
		volatile char *p = c->bind_password;
		while (*p)
			*p++ = '\0';
		free(c->bind_password);
	}
	free(c);
}

/* A service account that cannot bind (wrong password, account disabled)
 * makes the directory as unusable as a dead server: DIR_UNAVAILABLE with
 * the reason, so the directory is marked down and retried with back-off
 * while the operator fixes it. */
enum dir_status ldap_conn_open(struct ldap_conn *c, char *err, size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	enum dir_status st;
	LDAP *ld;

	if (c->search)
		return DIR_OK;
	ld = ldap_handle_open(c, &c->search_watch, c->search_peer, sizeof c->search_peer, &st,
			      err, errlen);
	if (!ld)
		return st;
	if (cfg->bind_dn && *cfg->bind_dn) {
		struct berval cred = { 0, NULL };
		int rc;
		if (c->bind_password) {
			cred.bv_val = c->bind_password;
			cred.bv_len = strlen(c->bind_password);
		}
		rc = ldap_sasl_bind_s(ld, cfg->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
		if (rc != LDAP_SUCCESS) {
			char what[256];
			snprintf(what, sizeof what, "bind as %s: %s", cfg->bind_dn,
				 ldap_err2string(rc));
			ldap_set_err(ld, c->search_peer[0] ? c->search_peer : cfg->uri, what, rc,
				     err, errlen);
			ldap_unbind_ext(ld, NULL, NULL);
			return DIR_UNAVAILABLE;
		}
	}
	c->search = ld;
	return DIR_OK;
}

/* Maps a failed search result and drops the search handle when the
 * directory is down. */
static enum dir_status ldap_search_failed(struct ldap_conn *c, const char *what, int rc,
					  char *err, size_t errlen)
{
	char msg[256];

	snprintf(msg, sizeof msg, "%s: %s", what, ldap_err2string(rc));
	ldap_set_err(c->search, c->search_peer[0] ? c->search_peer : c->cfg->uri, msg, rc, err,
		     errlen);
	if (ldap_rc_down(rc)) {
		ldap_drop(&c->search);
		return DIR_UNAVAILABLE;
	}
	log_warn("directory: %s", err ? err : msg);
	return DIR_ERROR;
}

/* Valid UTF-8 that XML 1.0 can carry as text: no C0 controls except tab,
 * newline and carriage return, no U+FFFE/U+FFFF. Directory values go into
 * stanzas, where one bad byte would end the client's stream. */
static int ldap_xml_text_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned char b = p[i];
		size_t len;
		if (b < 0x80) {
			if (b < 0x20 && b != '\t' && b != '\n' && b != '\r')
				return 0;
			i++;
			continue;
		}
		if (b >= 0xc2 && b <= 0xdf)
			len = 2;
		else if (b >= 0xe0 && b <= 0xef)
			len = 3;
		else if (b >= 0xf0 && b <= 0xf4)
			len = 4;
		else
			return 0;
		if (i + len > n)
			return 0;
		for (size_t k = 1; k < len; k++)
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
		if (len == 3) {
			if ((b == 0xe0 && p[i + 1] < 0xa0) || (b == 0xed && p[i + 1] > 0x9f))
				return 0;
			if (b == 0xef && p[i + 1] == 0xbf && p[i + 2] >= 0xbe)
				return 0;
		} else if (len == 4) {
			if ((b == 0xf0 && p[i + 1] < 0x90) || (b == 0xf4 && p[i + 1] > 0x8f))
				return 0;
		}
		i += len;
	}
	return 1;
}

/* The first value of attr that is non-empty, usable as XML text and has
 * no NUL, or NULL. vals is what ldap_get_values_len returned. */
static const struct berval *ldap_text_value(struct berval **vals)
{
	for (size_t i = 0; vals && vals[i]; i++) {
		const struct berval *v = vals[i];
		if (v->bv_len > 0 && !memchr(v->bv_val, '\0', v->bv_len) &&
		    ldap_xml_text_ok(v->bv_val, v->bv_len))
			return v;
	}
	return NULL;
}

/* Copies a text value into out, cut at a character boundary if it does
 * not fit. */
static void ldap_copy_text(const struct berval *v, char *out, size_t cap)
{
	size_t n = v->bv_len;

	if (n >= cap) {
		n = cap - 1;
		while (n > 0 && ((unsigned char)v->bv_val[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out, v->bv_val, n);
	out[n] = '\0';
}

/* The username of entry e, normalised: among several values of the
 * username attribute, the one equal to what the user typed wins (so the
 * JID is the one they logged in with), else the first valid one. Returns
 * 0 or -1 if no value is a valid localpart. */
static int ldap_entry_local(LDAP *ld, LDAPMessage *e, const char *attr, const char *typed,
			    char *out, size_t cap)
{
	struct berval **vals = ldap_get_values_len(ld, e, attr);
	char want[JID_PART_MAX + 1] = "";
	char tmp[JID_PART_MAX + 1];
	int found = -1;

	if (!vals)
		return -1;
	if (typed && jid_prep_local(typed, strlen(typed), want, sizeof want) < 0)
		want[0] = '\0';
	for (size_t i = 0; vals[i]; i++) {
		if (memchr(vals[i]->bv_val, '\0', vals[i]->bv_len) ||
		    jid_prep_local(vals[i]->bv_val, vals[i]->bv_len, tmp, sizeof tmp) <= 0)
			continue;
		if (found < 0) {
			snprintf(out, cap, "%s", tmp);
			found = 0;
		}
		if (want[0] && strcmp(tmp, want) == 0) {
			snprintf(out, cap, "%s", tmp);
			break;
		}
	}
	ber_bvecfree(vals);
	return found;
}

static void ldap_sha1_hex(const struct berval *v, char out[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char hex[] = "0123456789abcdef";

	out[0] = '\0';
	if (EVP_Digest(v->bv_val, v->bv_len, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
		return;
	for (unsigned int i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0x0f];
	}
	out[40] = '\0';
}

/* The user filter for user, on the heap (the username's length is the
 * client's choice). NULL only when out of memory. */
static char *ldap_user_filter(const char *pattern, const char *user)
{
	size_t n = 1 + strlen(pattern);
	size_t ulen = 3 * strlen(user);
	char *f;

	for (const char *p = strstr(pattern, "%u"); p; p = strstr(p + 2, "%u"))
		n += ulen;
	f = malloc(n);
	if (f && directory_user_filter(pattern, user, f, n) < 0) {
		free(f);
		f = NULL;
	}
	return f;
}

/* Searches base_dn for the single entry of user. DIR_OK with *res holding
 * the result (the caller frees it) and *entry its entry; DIR_UNKNOWN for
 * none or several. */
static enum dir_status ldap_search_user(struct ldap_conn *c, const char *user, char **attrs,
					LDAPMessage **res, LDAPMessage **entry, char *err,
					size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	struct timeval tv = { .tv_sec = cfg->timeout, .tv_usec = 0 };
	enum dir_status st;
	char *filter;
	int rc;
	int n;

	*res = NULL;
	*entry = NULL;
	st = ldap_conn_open(c, err, errlen);
	if (st != DIR_OK)
		return st;
	filter = ldap_user_filter(cfg->user_filter, user);
	if (!filter) {
		snprintf(err, errlen, "out of memory");
		return DIR_ERROR;
	}
	/* Size limit 2: one entry is the answer, a second one is enough to
	 * know the filter is ambiguous. */
	rc = ldap_search_ext_s(c->search, cfg->base_dn, LDAP_SCOPE_SUBTREE, filter, attrs, 0,
			       NULL, NULL, &tv, 2, res);
	free(filter);
	if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
		if (*res) {
			ldap_msgfree(*res);
			*res = NULL;
		}
		return ldap_search_failed(c, "user search", rc, err, errlen);
	}
	n = *res ? ldap_count_entries(c->search, *res) : 0;
	if (n != 1) {
		snprintf(err, errlen, n == 0 ? "no such user" : "several entries match the user");
		if (n > 1)
			log_warn("directory %s: %d or more entries match user_filter for %s",
				 cfg->uri, n, user);
		if (*res) {
			ldap_msgfree(*res);
			*res = NULL;
		}
		return DIR_UNKNOWN;
	}
	*entry = ldap_first_entry(c->search, *res);
	return DIR_OK;
}

enum dir_status ldap_find_user(struct ldap_conn *c, const char *user, int with_photo,
			       struct ldap_user *out, char *err, size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	const char *photo = with_photo && cfg->vcard.enabled ? cfg->vcard.photo : NULL;
	char *attrs[4] = { cfg->username_attribute, cfg->name_attribute, NULL, NULL };
	LDAPMessage *res, *e;
	struct berval **vals;
	enum dir_status st;
	char *dn;

	memset(out, 0, sizeof *out);
	attrs[2] = (char *)photo;
	st = ldap_search_user(c, user, attrs, &res, &e, err, errlen);
	if (st != DIR_OK)
		return st;

	dn = ldap_get_dn(c->search, e);
	if (!dn || strlen(dn) >= sizeof out->dn) {
		snprintf(err, errlen, "the user's DN is missing or too long");
		log_warn("directory %s: user %s: DN missing or longer than %zu bytes", cfg->uri,
			 user, sizeof out->dn - 1);
		if (dn)
			ldap_memfree(dn);
		ldap_msgfree(res);
		return DIR_ERROR;
	}
	memcpy(out->dn, dn, strlen(dn) + 1);
	ldap_memfree(dn);

	if (ldap_entry_local(c->search, e, cfg->username_attribute, user, out->local,
			     sizeof out->local) < 0) {
		snprintf(err, errlen, "the entry has no %s that is a valid username",
			 cfg->username_attribute);
		log_warn("directory %s: %s: no %s value is a valid JID localpart", cfg->uri,
			 out->dn, cfg->username_attribute);
		ldap_msgfree(res);
		return DIR_UNKNOWN;
	}
	vals = ldap_get_values_len(c->search, e, cfg->name_attribute);
	if (vals) {
		const struct berval *v = ldap_text_value(vals);
		if (v)
			ldap_copy_text(v, out->name, sizeof out->name);
		ber_bvecfree(vals);
	}
	if (photo) {
		vals = ldap_get_values_len(c->search, e, photo);
		if (vals) {
			if (vals[0] && vals[0]->bv_len > 0)
				ldap_sha1_hex(vals[0], out->photo_hash);
			ber_bvecfree(vals);
		}
	}
	ldap_msgfree(res);

	if (cfg->locked_filter && *cfg->locked_filter) {
		struct timeval tv = { .tv_sec = cfg->timeout, .tv_usec = 0 };
		char *noattrs[] = { LDAP_NO_ATTRS, NULL };
		int rc = ldap_search_ext_s(c->search, out->dn, LDAP_SCOPE_BASE, cfg->locked_filter,
					   noattrs, 0, NULL, NULL, &tv, 1, &res);
		if (rc == LDAP_SUCCESS) {
			out->locked = ldap_count_entries(c->search, res) > 0;
		} else if (rc != LDAP_NO_SUCH_OBJECT) {
			/* The entry vanishing between the two searches is no
			 * reason to fail; anything else is. */
			if (res)
				ldap_msgfree(res);
			return ldap_search_failed(c, "locked_filter search", rc, err, errlen);
		}
		if (res)
			ldap_msgfree(res);
	}
	return DIR_OK;
}

enum dir_status ldap_check_password(struct ldap_conn *c, const char *dn, const char *password,
				    char *err, size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	struct berval cred;
	enum dir_status st;
	int rc;

	/* An empty password (or DN) would be an anonymous or unauthenticated
	 * bind, which servers answer with success (RFC 4513 §5.1). */
	if (!password || !*password || !dn || !*dn) {
		snprintf(err, errlen, "empty password or DN");
		return DIR_DENIED;
	}
	if (!c->bind) {
		c->bind = ldap_handle_open(c, &c->bind_watch, c->bind_peer, sizeof c->bind_peer,
					   &st, err, errlen);
		if (!c->bind)
			return st;
	}
	cred.bv_val = (char *)password;
	cred.bv_len = strlen(password);
	rc = ldap_sasl_bind_s(c->bind, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (rc == LDAP_SUCCESS)
		return DIR_OK;
	if (rc == LDAP_INVALID_CREDENTIALS) {
		snprintf(err, errlen, "invalid credentials");
		return DIR_DENIED;
	}
	{
		char what[160];
		snprintf(what, sizeof what, "bind: %s", ldap_err2string(rc));
		ldap_set_err(c->bind, c->bind_peer[0] ? c->bind_peer : cfg->uri, what, rc, err,
			     errlen);
	}
	if (ldap_rc_down(rc)) {
		ldap_drop(&c->bind);
		return DIR_UNAVAILABLE;
	}
	log_warn("directory: bind as %s: %s", dn, err);
	return DIR_ERROR;
}

/* The user filter with %u as a literal "*" (a presence/substring match,
 * deliberately not escaped). */
static char *ldap_list_filter(const char *pattern)
{
	size_t n = strlen(pattern) + 1;
	char *f = malloc(n);
	size_t o = 0;

	if (!f)
		return NULL;
	for (const char *p = pattern; *p; p++) {
		if (p[0] == '%' && p[1] == 'u') {
			f[o++] = '*';
			p++;
		} else {
			f[o++] = *p;
		}
	}
	f[o] = '\0';
	return f;
}

enum dir_status ldap_list_users(struct ldap_conn *c,
				void (*fn)(void *arg, const char *dn, const char *local,
					   const char *name),
				void *arg, char *err, size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	char *attrs[] = { cfg->username_attribute, cfg->name_attribute, NULL };
	struct timeval tv = { .tv_sec = cfg->timeout, .tv_usec = 0 };
	struct berval cookie = { 0, NULL };
	enum dir_status st;
	size_t skipped = 0;
	char first_skipped[256] = "";
	char *filter;

	st = ldap_conn_open(c, err, errlen);
	if (st != DIR_OK)
		return st;
	filter = ldap_list_filter(cfg->user_filter);
	if (!filter) {
		snprintf(err, errlen, "out of memory");
		return DIR_ERROR;
	}
	for (;;) {
		LDAPControl *page = NULL;
		LDAPControl *ctrls[2] = { NULL, NULL };
		LDAPControl **sctrls = NULL;
		LDAPMessage *res = NULL;
		int rc, code = LDAP_SUCCESS;

		/* Not critical: a server without paging answers in one go,
		 * and a size limit it hits then is reported below. */
		rc = ldap_create_page_control(c->search, 500, &cookie, 0, &page);
		if (rc != LDAP_SUCCESS) {
			st = ldap_search_failed(c, "paged results control", rc, err, errlen);
			break;
		}
		ctrls[0] = page;
		rc = ldap_search_ext_s(c->search, cfg->base_dn, LDAP_SCOPE_SUBTREE, filter, attrs,
				       0, ctrls, NULL, &tv, LDAP_NO_LIMIT, &res);
		ldap_control_free(page);
		if (rc == LDAP_SUCCESS && res)
			rc = ldap_parse_result(c->search, res, &code, NULL, NULL, NULL, &sctrls, 0);
		if (rc == LDAP_SUCCESS)
			rc = code;
		if (rc != LDAP_SUCCESS) {
			if (res)
				ldap_msgfree(res);
			if (sctrls)
				ldap_controls_free(sctrls);
			st = ldap_search_failed(c, "user list search", rc, err, errlen);
			break;
		}
		for (LDAPMessage *e = ldap_first_entry(c->search, res); e;
		     e = ldap_next_entry(c->search, e)) {
			char local[JID_PART_MAX + 1];
			char name[256] = "";
			char *dn = ldap_get_dn(c->search, e);
			struct berval **vals;
			if (!dn)
				continue;
			if (ldap_entry_local(c->search, e, cfg->username_attribute, NULL, local,
					     sizeof local) < 0) {
				if (skipped++ == 0)
					snprintf(first_skipped, sizeof first_skipped, "%s", dn);
				ldap_memfree(dn);
				continue;
			}
			vals = ldap_get_values_len(c->search, e, cfg->name_attribute);
			if (vals) {
				const struct berval *v = ldap_text_value(vals);
				if (v)
					ldap_copy_text(v, name, sizeof name);
				ber_bvecfree(vals);
			}
			fn(arg, dn, local, name);
			ldap_memfree(dn);
		}
		ldap_msgfree(res);

		if (cookie.bv_val)
			ber_memfree(cookie.bv_val);
		cookie.bv_val = NULL;
		cookie.bv_len = 0;
		{
			LDAPControl *resp = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, sctrls, NULL);
			ber_int_t count = 0;
			if (resp &&
			    ldap_parse_pageresponse_control(c->search, resp, &count, &cookie) !=
				    LDAP_SUCCESS) {
				cookie.bv_val = NULL;
				cookie.bv_len = 0;
			}
		}
		if (sctrls)
			ldap_controls_free(sctrls);
		if (cookie.bv_len == 0)
			break;
	}
	if (cookie.bv_val)
		ber_memfree(cookie.bv_val);
	free(filter);
	if (skipped)
		log_warn("directory %s: %zu entries skipped: their %s is no valid username "
			 "(first: %s)",
			 cfg->uri, skipped, cfg->username_attribute, first_skipped);
	return st;
}

/* Strips the optional "#'0101'B" uid of a uniqueMember value
 * (NameAndOptionalUID, RFC 4517 §3.3.21) in place. */
static void ldap_strip_uid(char *v)
{
	char *h = strrchr(v, '#');
	size_t n;

	if (!h || h[1] != '\'')
		return;
	n = strlen(h);
	if (n < 4 || h[n - 1] != 'B' || h[n - 2] != '\'')
		return;
	for (char *p = h + 2; p < h + n - 2; p++)
		if (*p != '0' && *p != '1')
			return;
	*h = '\0';
}

/* Appends the text values of attr to a NULL-free heap array. */
static int ldap_collect(LDAP *ld, LDAPMessage *e, const char *attr, int strip_uid,
			char ***arr, size_t *n)
{
	struct berval **vals = ldap_get_values_len(ld, e, attr);
	size_t count;
	char **grown;

	if (!vals)
		return 0;
	count = (size_t)ldap_count_values_len(vals);
	grown = realloc(*arr, (*n + count + 1) * sizeof *grown);
	if (!grown) {
		ber_bvecfree(vals);
		return -1;
	}
	*arr = grown;
	for (size_t i = 0; i < count; i++) {
		const struct berval *v = vals[i];
		char *s;
		if (v->bv_len == 0 || memchr(v->bv_val, '\0', v->bv_len) ||
		    !ldap_xml_text_ok(v->bv_val, v->bv_len))
			continue;
		s = strndup(v->bv_val, v->bv_len);
		if (!s) {
			ber_bvecfree(vals);
			return -1;
		}
		if (strip_uid)
			ldap_strip_uid(s);
		(*arr)[(*n)++] = s;
	}
	(*arr)[*n] = NULL;
	ber_bvecfree(vals);
	return 0;
}

int ldap_range_next(const char *attr, long *next)
{
	static const char prefix[] = "member;range=";
	if (strncasecmp(attr, prefix, sizeof prefix - 1) != 0)
		return -1;
	const char *dash = strchr(attr + sizeof prefix - 1, '-');
	if (dash == NULL || dash[1] == '\0')
		return -1;
	if (strcmp(dash + 1, "*") == 0)
		return 0;
	char *end;
	long high = strtol(dash + 1, &end, 10);
	if (*end != '\0' || high < 0)
		return -1;
	*next = high + 1;
	return 1;
}

/* Active Directory hands out the members of a large group in ranges
 * ("member;range=0-1499"); this reads the rest ("member;range=1500-*",
 * ...) until the range that ends in "*". e is the group's first answer. */
static enum dir_status ldap_collect_ranges(struct ldap_conn *c, const char *dn, LDAPMessage *e,
					   struct ldap_group *out, char *err, size_t errlen)
{
	struct timeval tv = { .tv_sec = c->cfg->timeout, .tv_usec = 0 };
	LDAPMessage *res = NULL;
	for (int round = 0; round < 10000 && e != NULL; round++) {
		BerElement *ber = NULL;
		long next = -1;
		int more = -1;
		for (char *a = ldap_first_attribute(c->search, e, &ber); a;
		     a = ldap_next_attribute(c->search, e, ber)) {
			int r = ldap_range_next(a, &next);
			if (r >= 0) {
				more = r;
				if (ldap_collect(c->search, e, a, 0, &out->member_dns,
						 &out->n_member_dns) < 0) {
					ldap_memfree(a);
					ber_free(ber, 0);
					if (res)
						ldap_msgfree(res);
					snprintf(err, errlen, "out of memory");
					return DIR_ERROR;
				}
			}
			ldap_memfree(a);
		}
		if (ber)
			ber_free(ber, 0);
		if (res) {
			ldap_msgfree(res);
			res = NULL;
		}
		if (more != 1)
			return DIR_OK;
		char want[64];
		snprintf(want, sizeof want, "member;range=%ld-*", next);
		char *attrs[] = { want, NULL };
		int rc = ldap_search_ext_s(c->search, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs,
					   0, NULL, NULL, &tv, 1, &res);
		if (rc != LDAP_SUCCESS) {
			if (res)
				ldap_msgfree(res);
			return ldap_search_failed(c, "group members read", rc, err, errlen);
		}
		e = ldap_first_entry(c->search, res);
	}
	if (res)
		ldap_msgfree(res);
	return DIR_OK;
}

/* out->name is the entry's cn, or NULL if it has none; member_uids are
 * memberUid values as stored (not normalised). The arrays are NULL when
 * empty. */
enum dir_status ldap_read_group(struct ldap_conn *c, const char *dn, struct ldap_group *out,
				char *err, size_t errlen)
{
	const struct config_ldap *cfg = c->cfg;
	char *attrs[] = { "cn", "objectClass", "member", "uniqueMember", "memberUid", NULL };
	static const char *const group_classes[] = { "groupOfNames", "groupOfUniqueNames",
						     "posixGroup", "group" };
	struct timeval tv = { .tv_sec = cfg->timeout, .tv_usec = 0 };
	LDAPMessage *res = NULL, *e;
	struct berval **vals;
	enum dir_status st;
	int rc;

	memset(out, 0, sizeof *out);
	st = ldap_conn_open(c, err, errlen);
	if (st != DIR_OK)
		return st;
	rc = ldap_search_ext_s(c->search, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL,
			       NULL, &tv, 1, &res);
	if (rc == LDAP_NO_SUCH_OBJECT) {
		if (res)
			ldap_msgfree(res);
		snprintf(err, errlen, "%s: no such entry", dn);
		return DIR_UNKNOWN;
	}
	if (rc != LDAP_SUCCESS) {
		if (res)
			ldap_msgfree(res);
		return ldap_search_failed(c, "group read", rc, err, errlen);
	}
	e = ldap_first_entry(c->search, res);
	if (!e) {
		/* Access control can hide an entry without an error. */
		ldap_msgfree(res);
		snprintf(err, errlen, "%s: no such entry", dn);
		return DIR_UNKNOWN;
	}
	vals = ldap_get_values_len(c->search, e, "objectClass");
	for (size_t i = 0; vals && vals[i] && !out->is_group; i++)
		for (size_t k = 0; k < sizeof group_classes / sizeof group_classes[0]; k++)
			if (vals[i]->bv_len == strlen(group_classes[k]) &&
			    strncasecmp(vals[i]->bv_val, group_classes[k], vals[i]->bv_len) == 0)
				out->is_group = 1;
	if (vals)
		ber_bvecfree(vals);
	vals = ldap_get_values_len(c->search, e, "cn");
	if (vals) {
		const struct berval *v = ldap_text_value(vals);
		if (v)
			out->name = strndup(v->bv_val, v->bv_len);
		ber_bvecfree(vals);
	}
	st = ldap_collect_ranges(c, dn, e, out, err, errlen);
	if (st != DIR_OK) {
		ldap_msgfree(res);
		ldap_group_free(out);
		return st;
	}
	if (ldap_collect(c->search, e, "member", 0, &out->member_dns, &out->n_member_dns) < 0 ||
	    ldap_collect(c->search, e, "uniqueMember", 1, &out->member_dns, &out->n_member_dns) <
		    0 ||
	    ldap_collect(c->search, e, "memberUid", 0, &out->member_uids, &out->n_member_uids) <
		    0) {
		ldap_msgfree(res);
		ldap_group_free(out);
		snprintf(err, errlen, "out of memory");
		return DIR_ERROR;
	}
	ldap_msgfree(res);
	return DIR_OK;
}

void ldap_group_free(struct ldap_group *g)
{
	if (!g)
		return;
	free(g->name);
	for (size_t i = 0; i < g->n_member_dns; i++)
		free(g->member_dns[i]);
	free(g->member_dns);
	for (size_t i = 0; i < g->n_member_uids; i++)
		free(g->member_uids[i]);
	free(g->member_uids);
	memset(g, 0, sizeof *g);
}

/* The first usable text value of attr in e (NULL attr: not mapped), as a
 * heap string, or NULL. */
static char *ldap_vcard_value(LDAP *ld, LDAPMessage *e, const char *attr)
{
	struct berval **vals;
	const struct berval *v;
	char *s = NULL;

	if (!attr || !*attr)
		return NULL;
	vals = ldap_get_values_len(ld, e, attr);
	if (!vals)
		return NULL;
	v = ldap_text_value(vals);
	if (v)
		s = strndup(v->bv_val, v->bv_len);
	ber_bvecfree(vals);
	return s;
}

static void ldap_vcard_elem(struct buf *b, const char *name, const char *value)
{
	buf_printf(b, "<%s>", name);
	buf_append_escaped(b, value, strlen(value));
	buf_printf(b, "</%s>", name);
}

enum dir_status ldap_read_vcard(struct ldap_conn *c, const char *user, struct buf *out,
				char *err, size_t errlen)
{
	const struct config_vcard_map *m = &c->cfg->vcard;
	enum { F_FN, F_GIVEN, F_FAMILY, F_NICK, F_EMAIL, F_TEL, F_TITLE, F_ORG, F_UNIT, F_N };
	const char *map[F_N] = { m->fn,  m->given, m->family, m->nickname, m->email,
				 m->tel, m->title, m->org,    m->orgunit };
	char *attrs[F_N + 2];
	char *v[F_N] = { NULL };
	size_t na = 0;
	LDAPMessage *res, *e;
	enum dir_status st;
	struct buf b;

	for (size_t i = 0; i < F_N; i++)
		if (map[i] && *map[i])
			attrs[na++] = (char *)map[i];
	if (m->photo && *m->photo)
		attrs[na++] = m->photo;
	if (na == 0)
		attrs[na++] = LDAP_NO_ATTRS;
	attrs[na] = NULL;

	st = ldap_search_user(c, user, attrs, &res, &e, err, errlen);
	if (st != DIR_OK)
		return st;
	for (size_t i = 0; i < F_N; i++)
		v[i] = ldap_vcard_value(c->search, e, map[i]);

	/* Fields in the order of the vcard-temp DTD (XEP-0054). */
	buf_init(&b);
	buf_puts(&b, "<vCard xmlns='vcard-temp'>");
	if (v[F_FN])
		ldap_vcard_elem(&b, "FN", v[F_FN]);
	if (v[F_FAMILY] || v[F_GIVEN]) {
		buf_puts(&b, "<N>");
		if (v[F_FAMILY])
			ldap_vcard_elem(&b, "FAMILY", v[F_FAMILY]);
		if (v[F_GIVEN])
			ldap_vcard_elem(&b, "GIVEN", v[F_GIVEN]);
		buf_puts(&b, "</N>");
	}
	if (v[F_NICK])
		ldap_vcard_elem(&b, "NICKNAME", v[F_NICK]);
	if (m->photo && *m->photo) {
		struct berval **vals = ldap_get_values_len(c->search, e, m->photo);
		if (vals && vals[0] && vals[0]->bv_len > 0 && vals[0]->bv_len < (1u << 30)) {
			size_t n = vals[0]->bv_len;
			unsigned char *b64 = malloc(4 * ((n + 2) / 3) + 1);
			if (b64) {
				/* EVP_EncodeBlock writes no line breaks, unlike
				 * the EVP_Encode* stream functions. */
				int len = EVP_EncodeBlock(b64, (const unsigned char *)vals[0]->bv_val,
							  (int)n);
				buf_puts(&b, "<PHOTO><TYPE>image/jpeg</TYPE><BINVAL>");
				buf_append(&b, b64, (size_t)len);
				buf_puts(&b, "</BINVAL></PHOTO>");
				free(b64);
			}
		}
		if (vals)
			ber_bvecfree(vals);
	}
	if (v[F_TEL]) {
		buf_puts(&b, "<TEL><WORK/><VOICE/>");
		ldap_vcard_elem(&b, "NUMBER", v[F_TEL]);
		buf_puts(&b, "</TEL>");
	}
	if (v[F_EMAIL]) {
		buf_puts(&b, "<EMAIL><INTERNET/><PREF/>");
		ldap_vcard_elem(&b, "USERID", v[F_EMAIL]);
		buf_puts(&b, "</EMAIL>");
	}
	if (v[F_TITLE])
		ldap_vcard_elem(&b, "TITLE", v[F_TITLE]);
	if (v[F_ORG] || v[F_UNIT]) {
		buf_puts(&b, "<ORG>");
		if (v[F_ORG])
			ldap_vcard_elem(&b, "ORGNAME", v[F_ORG]);
		if (v[F_UNIT])
			ldap_vcard_elem(&b, "ORGUNIT", v[F_UNIT]);
		buf_puts(&b, "</ORG>");
	}
	buf_puts(&b, "</vCard>");
	buf_append(out, b.data, b.len);
	buf_free(&b);
	for (size_t i = 0; i < F_N; i++)
		free(v[i]);
	ldap_msgfree(res);
	return DIR_OK;
}

/* ASCII lower case only: attribute types and hex escapes are ASCII, and
 * values differing beyond ASCII case are rare enough in group DNs that a
 * locale-dependent fold would do more harm than good. */
int ldap_dn_normalise(const char *dn, char *out, size_t cap)
{
	LDAPDN ldn = NULL;
	char *s = NULL;
	size_t n;

	if (!dn || cap == 0)
		return -1;
	if (ldap_str2dn(dn, &ldn, LDAP_DN_FORMAT_LDAP) != LDAP_SUCCESS)
		return -1;
	if (ldap_dn2str(ldn, &s, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS || !s) {
		ldap_dnfree(ldn);
		return -1;
	}
	ldap_dnfree(ldn);
	n = strlen(s);
	if (n >= cap) {
		ldap_memfree(s);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
	out[n] = '\0';
	ldap_memfree(s);
	return 0;
}

void ldap_conn_reset(struct ldap_conn *c)
{
	ldap_drop(&c->search);
	ldap_drop(&c->bind);
}

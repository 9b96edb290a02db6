#include "auth/auth.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "core/work.h"
#include "jid/jid.h"
#include "storage/storage.h"
#include "tls/tls.h"

static const char *const scram_mechs[] = { "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS",
					   "SCRAM-SHA-256", "SCRAM-SHA-1" };

static bool mech_is_plus(const char *mech)
{
	size_t n = strlen(mech);
	return n > 5 && strcmp(mech + n - 5, "-PLUS") == 0;
}

static bool host_directory(const struct config_host *host)
{
	return host != NULL && host->auth == HOST_AUTH_LDAP;
}

void auth_write_mechanisms(struct buf *out, SSL *ssl, bool allow_plain,
			   const struct config_host *host)
{
	bool plus = tls_cb_exporter_available(ssl);
	for (size_t i = 0; i < sizeof scram_mechs / sizeof *scram_mechs && !host_directory(host);
	     i++) {
		if (!plus && mech_is_plus(scram_mechs[i]))
			continue;
		buf_printf(out, "<mechanism>%s</mechanism>", scram_mechs[i]);
	}
	if (host && host->kerberos.keytab)
		buf_puts(out, "<mechanism>GSSAPI</mechanism>");
	if (allow_plain)
		buf_puts(out, "<mechanism>PLAIN</mechanism>");
}

void auth_write_cb_types(struct buf *out, SSL *ssl)
{
	char tmp[128];
	buf_puts(out, "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>");
	if (tls_cb_exporter_available(ssl))
		buf_puts(out, "<channel-binding type='tls-exporter'/>");
	/* tls-unique is accepted on TLS 1.3 too, but offered only where it
	 * is defined, so that XEP-0440 clients pick tls-exporter there. */
	if (tls_cb_unique_defined(ssl) && tls_cb_unique(ssl, tmp, sizeof tmp) == 0)
		buf_puts(out, "<channel-binding type='tls-unique'/>");
	buf_puts(out, "</sasl-channel-binding>");
}

/* name byte for byte, with control characters, quotes, backslashes and
 * bytes over 0x7e as \xNN, cut to fit out: safe in a log line. */
static void escape_for_log(const char *name, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c > 0x7e || c == '\'' || c == '\\')
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

/* A user name as the log shows it: normalised when it is a valid
 * username, else escaped. */
static void name_for_log(const char *name, size_t n, char *out, size_t cap)
{
	if (jid_prep_local(name, n, out, cap) < 0)
		escape_for_log(name, n, out, cap);
}

/* The parts of a SCRAM client-first message (RFC 5802 §7) that the log
 * needs, read before GNU SASL does, which may refuse the message before
 * it tells whose it was: the channel-binding flag and type (empty for "n"
 * and "y") and the user name, as name_for_log shows it. */
static void read_client_first(struct auth_session *as, const char *b64, char *cbflag,
			      char *cbname, size_t cbcap)
{
	char *msg = NULL;
	size_t len = 0;
	*cbflag = '\0';
	cbname[0] = '\0';
	if (gsasl_base64_from(b64, strlen(b64), &msg, &len) != GSASL_OK || msg == NULL)
		return;
	const char *end = msg + len;
	const char *c1 = memchr(msg, ',', len);
	const char *c2 = c1 ? memchr(c1 + 1, ',', (size_t)(end - c1 - 1)) : NULL;
	if (c1 != NULL) {
		*cbflag = msg[0];
		if (msg[0] == 'p' && c1 - msg > 2 && msg[1] == '=')
			escape_for_log(msg + 2, (size_t)(c1 - msg - 2), cbname, cbcap);
	}
	if (c2 != NULL && end - c2 > 3 && c2[1] == 'n' && c2[2] == '=') {
		/* saslname: "=2C" is ',' and "=3D" is '=' */
		const char *p = c2 + 3;
		const char *stop = memchr(p, ',', (size_t)(end - p));
		if (stop == NULL)
			stop = end;
		char user[1024];
		size_t u = 0;
		while (p < stop && u + 1 < sizeof user) {
			if (*p == '=' && stop - p >= 3 && (memcmp(p, "=2C", 3) == 0 ||
							   memcmp(p, "=3D", 3) == 0)) {
				user[u++] = p[1] == '2' ? ',' : '=';
				p += 3;
			} else {
				user[u++] = *p++;
			}
		}
		name_for_log(user, u, as->claimed, sizeof as->claimed);
	}
	gsasl_free(msg);
}

/* Fetches the account's secrets, reading the store once per exchange.
 * Returns 0, or -1 when the account does not exist or the store failed
 * (as->store_error). */
static int load_credentials(struct auth_session *as, Gsasl_session *gs,
			    struct user_credentials *cred)
{
	const char *authid = gsasl_property_fast(gs, GSASL_AUTHID);
	if (authid == NULL || as->scram_looked_up)
		return -1; /* what a first look-up found sets every property */
	as->scram_looked_up = true;
	if (jid_prep_local(authid, strlen(authid), as->authid, sizeof as->authid) < 0) {
		log_debug("SASL %s for '%s': not a valid username", as->mech, as->claimed);
		return -1;
	}
	const struct storage_driver *drv = as->loop->srv->storage;
	int rc = drv->user_get(as->loop->store, as->domain, as->authid, cred);
	if (rc < 0)
		as->store_error = true;
	log_debug("SASL %s for '%s': %s", as->mech, as->authid,
		  rc == 0  ? "the account's salt and keys are read from the store"
		  : rc > 0 ? "no such account"
			   : "the account store failed");
	return rc == 0 ? 0 : -1;
}

/* The store keeps keys as hex; gsasl 2.2's SCRAM server decodes these two
 * properties as base64, whatever its header comment says. */
static int hex_to_base64(const char *hex, char *out, size_t cap)
{
	unsigned char raw[64];
	size_t n = strlen(hex) / 2;
	if (n > sizeof raw || strlen(hex) % 2 != 0 || cap < 4 * ((n + 2) / 3) + 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		raw[i] = (unsigned char)v;
	}
	EVP_EncodeBlock((unsigned char *)out, raw, (int)n);
	return 0;
}

/* Whether realm is one whose users are accounts of host: the realms
 * listed, or the domain in upper case. */
static bool realm_accepted(const struct config_host *host, const char *realm)
{
	if (host->kerberos.realms == NULL) {
		size_t n = strlen(host->domain);
		if (strlen(realm) != n)
			return false;
		for (size_t i = 0; i < n; i++)
			if (realm[i] != toupper((unsigned char)host->domain[i]))
				return false;
		return true;
	}
	return word_in_list(host->kerberos.realms, realm);
}

/* The KDC vouched for the principal; map user@REALM to user@domain. */
static int validate_gssapi(struct auth_session *as, Gsasl_session *gs)
{
	const char *display = gsasl_property_fast(gs, GSASL_GSSAPI_DISPLAY_NAME);
	if (display == NULL)
		return GSASL_AUTHENTICATION_ERROR;
	snprintf(as->principal, sizeof as->principal, "%s", display);
	log_debug("SASL GSSAPI: the KDC vouches for principal '%s'", display);
	const char *at = strrchr(display, '@');
	if (at == NULL || at == display) {
		log_info("GSSAPI: principal '%s' refused: it has no realm", display);
		return GSASL_AUTHENTICATION_ERROR;
	}
	if (!realm_accepted(as->host, at + 1)) {
		log_info("GSSAPI: principal '%s' refused: realm %s is not accepted for %s "
			 "(kerberos.realms)", display, at + 1, as->domain);
		return GSASL_AUTHENTICATION_ERROR;
	}
	size_t ulen = (size_t)(at - display);
	if (memchr(display, '/', ulen) != NULL) {
		log_info("GSSAPI: principal '%s' refused: principals with an instance are not users",
			 display);
		return GSASL_AUTHENTICATION_ERROR;
	}
	if (jid_prep_local(display, ulen, as->authid, sizeof as->authid) < 0) {
		log_info("GSSAPI: principal '%s' refused: not a valid username", display);
		return GSASL_AUTHENTICATION_ERROR;
	}
	if (as->directory) {
		as->wait = true;
		as->pending = AUTH_PENDING_EXISTS;
		return GSASL_OK;
	}
	struct user_credentials cred;
	const struct storage_driver *drv = as->loop->srv->storage;
	int rc = drv->user_get(as->loop->store, as->domain, as->authid, &cred);
	if (rc < 0)
		as->store_error = true;
	if (rc == 1)
		log_info("GSSAPI: principal '%s' refused: no account %s@%s", display, as->authid,
			 as->domain);
	return rc == 0 ? GSASL_OK : GSASL_AUTHENTICATION_ERROR;
}

static int on_property(Gsasl *ctx, Gsasl_session *gs, Gsasl_property prop)
{
	(void)ctx;
	struct auth_session *as = gsasl_session_hook_get(gs);
	struct user_credentials cred;
	const struct scram_secret *sec;
	switch (prop) {
	case GSASL_SCRAM_ITER:
	case GSASL_SCRAM_SALT:
	case GSASL_SCRAM_STOREDKEY:
	case GSASL_SCRAM_SERVERKEY: {
		if (load_credentials(as, gs, &cred) != 0)
			return GSASL_AUTHENTICATION_ERROR;
		sec = strncmp(as->mech, "SCRAM-SHA-256", 13) == 0 ? &cred.sha256 : &cred.sha1;
		char iter[16];
		snprintf(iter, sizeof iter, "%u", sec->iterations);
		gsasl_property_set(gs, GSASL_SCRAM_ITER, iter);
		gsasl_property_set(gs, GSASL_SCRAM_SALT, sec->salt);
		char stored[96], server[96];
		if (hex_to_base64(sec->stored_key, stored, sizeof stored) != 0 ||
		    hex_to_base64(sec->server_key, server, sizeof server) != 0)
			return GSASL_AUTHENTICATION_ERROR;
		gsasl_property_set(gs, GSASL_SCRAM_STOREDKEY, stored);
		gsasl_property_set(gs, GSASL_SCRAM_SERVERKEY, server);
		return GSASL_OK;
	}
	case GSASL_VALIDATE_GSSAPI:
		return validate_gssapi(as, gs);
	case GSASL_VALIDATE_SIMPLE: {
		const char *password = gsasl_property_fast(gs, GSASL_PASSWORD);
		{
			/* The account source answers later: the directory
			 * (directory_auth), or PBKDF2 on a worker thread for the
			 * internal store (auth_check_internal). */
			const char *authid = gsasl_property_fast(gs, GSASL_AUTHID);
			if (authid == NULL || password == NULL ||
			    jid_prep_local(authid, strlen(authid), as->authid, sizeof as->authid) < 0) {
				log_debug("SASL %s: the user name is not a valid username", as->mech);
				return GSASL_AUTHENTICATION_ERROR;
			}
			log_debug("SASL %s for '%s': the %s checks the password", as->mech,
				  as->authid, as->directory ? "directory" : "account store");
			free(as->password);
			as->password = strdup(password);
			if (as->password == NULL)
				return GSASL_MALLOC_ERROR;
			as->wait = true;
			as->pending = AUTH_PENDING_PASSWORD;
			return GSASL_OK;
		}
	}
	default:
		return GSASL_NO_CALLBACK;
	}
}

int auth_init(Gsasl **ctx)
{
	if (gsasl_init(ctx) != GSASL_OK)
		return -1;
	gsasl_callback_set(*ctx, on_property);
	return 0;
}

void auth_done(Gsasl *ctx) { gsasl_done(ctx); }

static bool mech_offered(const char *mech, SSL *ssl, bool allow_plain,
			 const struct config_host *host)
{
	if (strcmp(mech, "PLAIN") == 0)
		return allow_plain;
	if (strcmp(mech, "GSSAPI") == 0)
		return host != NULL && host->kerberos.keytab != NULL;
	if (host_directory(host))
		return false;
	for (size_t i = 0; i < sizeof scram_mechs / sizeof *scram_mechs; i++)
		if (strcmp(mech, scram_mechs[i]) == 0)
			return !mech_is_plus(mech) || tls_cb_exporter_available(ssl);
	return false;
}

/* An authzid naming the same account is no request for another identity:
 * the user name the client authenticated with (GNU SASL's PLAIN puts it
 * there, as typed, when the client sent no authzid), or the bare username
 * or bare JID some clients send, compared once normalised (RFC 7622): so
 * 'Mallory' and 'Mallory@LOCALHOST' are mallory@localhost. */
static enum auth_result check_authzid(struct auth_session *as)
{
	const char *authzid = gsasl_property_fast(as->gs, GSASL_AUTHZID);
	if (authzid == NULL || authzid[0] == '\0')
		return AUTH_SUCCESS;
	size_t n = strlen(authzid);
	/* The very user name the client authenticated with (the directory
	 * may have mapped it to another localpart); GSSAPI has none. */
	const char *authcid = gsasl_property_fast(as->gs, GSASL_AUTHID);
	bool same = authcid != NULL && strcmp(as->mech, "GSSAPI") != 0 &&
		    strcmp(authzid, authcid) == 0;
	if (!same && memchr(authzid, '@', n) == NULL && memchr(authzid, '/', n) == NULL) {
		char local[sizeof as->authid];
		same = jid_prep_local(authzid, n, local, sizeof local) >= 0 &&
		       strcmp(local, as->authid) == 0;
	} else if (!same) {
		struct jid want;
		same = jid_parse(&want, authzid, n) == 0 && want.resource[0] == '\0' &&
		       strcmp(want.local, as->authid) == 0 && strcmp(want.domain, as->domain) == 0;
	}
	if (!same) {
		char shown[256];
		escape_for_log(authzid, n, shown, sizeof shown);
		log_info("SASL %s: authzid '%s' is not the account %s@%s", as->mech, shown,
			 as->authid, as->domain);
		return AUTH_BAD_AUTHZID;
	}
	return AUTH_SUCCESS;
}

/* Debug: which channel binding a SCRAM client chose, in words. */
static void log_binding(const struct auth_session *as, char flag, const char *cbname)
{
	if (flag == 'p')
		log_debug("SASL %s for '%s': channel binding %s", as->mech, as->claimed, cbname);
	else if (flag == 'y')
		log_debug("SASL %s for '%s': no channel binding; the client could bind but "
			  "saw no -PLUS mechanism", as->mech, as->claimed);
	else if (flag == 'n')
		log_debug("SASL %s for '%s': no channel binding", as->mech, as->claimed);
}

static enum auth_result step(struct auth_session *as, const char *input, struct buf *out)
{
	if (!as->first_seen && strncmp(as->mech, "SCRAM-", 6) == 0 && input[0] != '\0') {
		char flag, cbname[64];
		as->first_seen = true;
		read_client_first(as, input, &flag, cbname, sizeof cbname);
		log_binding(as, flag, cbname);
		/* A client that supports channel binding but saw no -PLUS
		 * offer says so with gs2 flag 'y'; since we do offer -PLUS,
		 * someone stripped it from our features (RFC 5802 §6):
		 * refuse. Only where we offer tls-unique too (TLS 1.2): every
		 * channel-binding client knows that type. On TLS 1.3 we offer
		 * only tls-exporter (RFC 9266), and a client that reads
		 * XEP-0440 and knows only tls-unique rightly says 'y'. */
		if (flag == 'y' && as->refuse_y) {
			snprintf(as->authid, sizeof as->authid, "%s", as->claimed);
			log_info("SASL %s for '%s': refused: the client says it saw no -PLUS "
				 "mechanism, but they were offered (a downgrade?)",
				 as->mech, as->claimed);
			return AUTH_FAILURE;
		}
	}
	char *output = NULL;
	int rc = gsasl_step64(as->gs, input, &output);
	if (output != NULL) {
		buf_puts(rc == GSASL_OK && as->wait ? &as->final : out, output);
		gsasl_free(output);
	}
	if (rc == GSASL_NEEDS_MORE)
		return AUTH_CONTINUE;
	if (rc == GSASL_OK && as->wait)
		return AUTH_PENDING;
	if (rc != GSASL_OK) {
		/* Refused before the account was read: the log names the user
		 * the client gave. */
		const char *given = gsasl_property_fast(as->gs, GSASL_AUTHID);
		if (as->authid[0] == '\0' && as->claimed[0] != '\0')
			snprintf(as->authid, sizeof as->authid, "%s", as->claimed);
		else if (as->authid[0] == '\0' && given != NULL)
			name_for_log(given, strlen(given), as->authid, sizeof as->authid);
		log_debug("SASL %s for '%s': refused (GNU SASL: %s)", as->mech, as->authid,
			  gsasl_strerror(rc));
		if (as->store_error)
			return AUTH_TEMPORARY;
		if (rc == GSASL_MECHANISM_PARSE_ERROR || rc == GSASL_BASE64_ERROR)
			return AUTH_MALFORMED;
		return AUTH_FAILURE;
	}
	if (as->authid[0] == '\0')
		return AUTH_FAILURE;
	return check_authzid(as);
}

/* The PLAIN password is kept only until the account source has answered. */
static void drop_password(struct auth_session *as)
{
	if (as->password) {
		OPENSSL_cleanse(as->password, strlen(as->password));
		free(as->password);
		as->password = NULL;
	}
}

enum auth_result auth_complete(struct auth_session *as, bool ok, bool temporary,
			       const char *local, struct buf *out)
{
	drop_password(as);
	as->wait = false;
	if (temporary)
		return AUTH_TEMPORARY;
	if (!ok)
		return AUTH_FAILURE;
	if (local != NULL)
		snprintf(as->authid, sizeof as->authid, "%s", local);
	enum auth_result r = check_authzid(as);
	if (r == AUTH_SUCCESS)
		buf_append(out, as->final.data, as->final.len);
	return r;
}

/* The PBKDF2 check of an internal account's PLAIN password, on a worker
 * thread: nothing here touches the loop. */
struct internal_check {
	struct user_credentials cred;
	char *password;
	bool ok;
	void (*done)(struct loop *l, void *arg, bool ok, bool temporary);
	void *arg;
};

static void internal_work(void *arg)
{
	struct internal_check *c = arg;
	c->ok = storage_credentials_check(&c->cred, c->password) == 1;
}

static void internal_done(struct loop *l, void *arg)
{
	struct internal_check *c = arg;
	OPENSSL_cleanse(c->password, strlen(c->password));
	free(c->password);
	OPENSSL_cleanse(&c->cred, sizeof c->cred);
	if (!loop_stopping(l))
		c->done(l, c->arg, c->ok, false);
	else
		c->done(NULL, c->arg, false, true);
	free(c);
}

void auth_check_internal(struct auth_session *as, void (*done)(struct loop *l, void *arg, bool ok,
							       bool temporary),
			 void *arg)
{
	struct loop *l = as->loop;
	struct user_credentials cred;
	int rc = l->srv->storage->user_get(l->store, as->domain, as->authid, &cred);
	if (rc != 0 || as->password == NULL) {
		/* No such account, or the store failed: no work to do. An
		 * unknown account still waits like a known one would not, but
		 * the failure delay that follows hides that (authfail). */
		done(l, arg, false, rc < 0);
		return;
	}
	struct internal_check *c = xcalloc(1, sizeof *c);
	c->cred = cred;
	c->password = xstrdup(as->password);
	c->done = done;
	c->arg = arg;
	OPENSSL_cleanse(&cred, sizeof cred);
	if (work_submit(l, internal_work, internal_done, c) != 0) {
		OPENSSL_cleanse(c->password, strlen(c->password));
		free(c->password);
		free(c);
		done(l, arg, false, true);
	}
}

int auth_kerberos_init(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const char *keytab = cfg->hosts[i].kerberos.keytab;
		if (keytab == NULL)
			continue;
		if (access(keytab, R_OK) != 0) {
			log_error("cannot read the kerberos keytab %s", keytab);
			return -1;
		}
		/* MIT's GSS-API acceptor reads it; one per process. */
		char value[4200];
		snprintf(value, sizeof value, "FILE:%s", keytab);
		setenv("KRB5_KTNAME", value, 1);
		log_info("kerberos: SASL GSSAPI with the keytab %s", keytab);
		return 0;
	}
	return 0;
}

enum auth_result auth_start(struct auth_session *as, Gsasl *ctx, SSL *ssl, bool allow_plain,
			    const char *mech, const char *initial, struct buf *out)
{
	snprintf(as->mech, sizeof as->mech, "%s", mech);
	as->authid[0] = '\0';
	as->claimed[0] = '\0';
	as->first_seen = false;
	as->scram_looked_up = false;
	as->store_error = false;
	as->host = config_find_host(as->loop->srv->cfg, as->domain);
	as->directory = host_directory(as->host);
	if (!mech_offered(mech, ssl, allow_plain, as->host))
		return AUTH_INVALID_MECH;
	char cb[128];
	as->refuse_y = !mech_is_plus(mech) && tls_cb_exporter_available(ssl) &&
		       tls_cb_unique_defined(ssl) && tls_cb_unique(ssl, cb, sizeof cb) == 0;
	if (gsasl_server_start(ctx, mech, &as->gs) != GSASL_OK)
		return AUTH_INVALID_MECH;
	gsasl_session_hook_set(as->gs, as);
	const struct config_kerberos *krb = as->host ? &as->host->kerberos : NULL;
	gsasl_property_set(as->gs, GSASL_SERVICE, krb && krb->service ? krb->service : "xmpp");
	gsasl_property_set(as->gs, GSASL_HOSTNAME, krb && krb->hostname ? krb->hostname : as->domain);
	/* Channel-binding data only for -PLUS: gsasl refuses a 'y' client
	 * whenever it has some, and refuse_y decides that case. tls-unique
	 * on TLS 1.3 too, for slixmpp and its kind (docs/decisions/0006). */
	if (mech_is_plus(mech) && tls_cb_exporter(ssl, cb, sizeof cb) == 0)
		gsasl_property_set(as->gs, GSASL_CB_TLS_EXPORTER, cb);
	if (mech_is_plus(mech) && tls_cb_unique(ssl, cb, sizeof cb) == 0)
		gsasl_property_set(as->gs, GSASL_CB_TLS_UNIQUE, cb);
	/* "=" is XMPP's way of sending an empty initial response. */
	if (strcmp(initial, "=") == 0)
		initial = "";
	return step(as, initial, out);
}

enum auth_result auth_step(struct auth_session *as, const char *input, struct buf *out)
{
	if (as->gs == NULL)
		return AUTH_MALFORMED;
	/* RFC 6120 §6.4.3: "=" is an empty response, as in <auth/>. */
	if (strcmp(input, "=") == 0)
		input = "";
	return step(as, input, out);
}

void auth_end(struct auth_session *as)
{
	if (as->gs != NULL)
		gsasl_finish(as->gs);
	as->gs = NULL;
	drop_password(as);
	buf_free(&as->final);
}

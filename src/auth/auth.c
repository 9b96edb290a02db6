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

static bool cb_available(SSL *ssl)
{
	char tmp[128];
	return tls_cb_exporter(ssl, tmp, sizeof tmp) == 0;
}

static bool host_directory(const struct config_host *host)
{
	return host != NULL && host->auth == HOST_AUTH_LDAP;
}

void auth_write_mechanisms(struct buf *out, SSL *ssl, bool allow_plain,
			   const struct config_host *host)
{
	bool plus = cb_available(ssl);
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
	if (tls_cb_exporter(ssl, tmp, sizeof tmp) == 0)
		buf_puts(out, "<channel-binding type='tls-exporter'/>");
	if (tls_cb_unique(ssl, tmp, sizeof tmp) == 0)
		buf_puts(out, "<channel-binding type='tls-unique'/>");
	buf_puts(out, "</sasl-channel-binding>");
}

/* Fetches the account's secrets once per exchange. Returns 0, or -1 when
 * the account does not exist or the store failed (as->store_error). */
static int load_credentials(struct auth_session *as, Gsasl_session *gs,
			    struct user_credentials *cred)
{
	const char *authid = gsasl_property_fast(gs, GSASL_AUTHID);
	if (authid == NULL)
		return -1;
	if (jid_prep_local(authid, strlen(authid), as->authid, sizeof as->authid) < 0)
		return -1;
	const struct storage_driver *drv = as->loop->srv->storage;
	int rc = drv->user_get(as->loop->store, as->domain, as->authid, cred);
	if (rc < 0)
		as->store_error = true;
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
	log_debug("SASL %s asks for property %d", as->mech, (int)prop);
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
			    jid_prep_local(authid, strlen(authid), as->authid, sizeof as->authid) < 0)
				return GSASL_AUTHENTICATION_ERROR;
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
			return !mech_is_plus(mech) || cb_available(ssl);
	return false;
}

/* A client that supports channel binding but saw no -PLUS offer says so
 * with gs2 flag 'y'; since we do offer -PLUS, that means someone stripped
 * it from our features (RFC 5802 §6): refuse. Only where we offer
 * tls-unique too (TLS 1.2): every channel-binding client knows that type.
 * On TLS 1.3 we offer only tls-exporter (RFC 9266), and a client that
 * knows only tls-unique rightly says 'y' (XEP-0440 §5). */
static bool downgrade_detected(SSL *ssl, const char *mech, const char *initial)
{
	char tmp[128];
	if (mech_is_plus(mech) || strncmp(mech, "SCRAM-", 6) != 0 ||
	    tls_cb_unique(ssl, tmp, sizeof tmp) != 0)
		return false;
	unsigned char first[4] = { 0 };
	char head[8] = { 0 };
	snprintf(head, sizeof head, "%.4s", initial);
	if (strlen(head) < 4)
		return false;
	if (EVP_DecodeBlock(first, (const unsigned char *)head, 4) < 1)
		return false;
	return first[0] == 'y';
}

/* An authzid naming the same account (as its bare JID, or as the bare
 * username some clients send) is no request for another identity. */
static enum auth_result check_authzid(struct auth_session *as)
{
	const char *authzid = gsasl_property_fast(as->gs, GSASL_AUTHZID);
	if (authzid != NULL && authzid[0] != '\0' && strcmp(authzid, as->authid) != 0) {
		struct jid want;
		if (jid_parse(&want, authzid, strlen(authzid)) != 0 || want.resource[0] ||
		    strcmp(want.local, as->authid) != 0 || strcmp(want.domain, as->domain) != 0) {
			log_info("SASL %s: authzid '%s' is not the account of '%s'", as->mech, authzid,
				 as->authid);
			return AUTH_BAD_AUTHZID;
		}
	}
	return AUTH_SUCCESS;
}

static enum auth_result step(struct auth_session *as, const char *input, struct buf *out)
{
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
		log_debug("SASL %s for '%s': %s", as->mech, as->authid, gsasl_strerror(rc));
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
	as->store_error = false;
	as->host = config_find_host(as->loop->srv->cfg, as->domain);
	as->directory = host_directory(as->host);
	if (!mech_offered(mech, ssl, allow_plain, as->host))
		return AUTH_INVALID_MECH;
	if (downgrade_detected(ssl, mech, initial))
		return AUTH_FAILURE;
	if (gsasl_server_start(ctx, mech, &as->gs) != GSASL_OK)
		return AUTH_INVALID_MECH;
	gsasl_session_hook_set(as->gs, as);
	const struct config_kerberos *krb = as->host ? &as->host->kerberos : NULL;
	gsasl_property_set(as->gs, GSASL_SERVICE, krb && krb->service ? krb->service : "xmpp");
	gsasl_property_set(as->gs, GSASL_HOSTNAME, krb && krb->hostname ? krb->hostname : as->domain);
	/* Channel-binding data only for -PLUS: gsasl refuses a 'y' client
	 * whenever it has some, and downgrade_detected decides that case. */
	char cb[128];
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

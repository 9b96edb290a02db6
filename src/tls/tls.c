#include "tls/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

static int host_index = -1; /* ex_data slot of struct tls_host on SSL_CTX */

/* ALPN protocol list in wire format: length byte, then the name. */
static const unsigned char alpn_client[] = "\x0bxmpp-client";
static const unsigned char alpn_server[] = "\x0bxmpp-server";

/* Mozilla's "intermediate" profile (Server Side TLS guidelines 5.8), for
 * c2s and s2s, both directions: TLS 1.2 and 1.3; on TLS 1.2 only ECDHE key
 * exchange with an AEAD cipher (no CBC, no SHA-1 MAC, no static RSA, no
 * finite-field DHE); the TLS 1.3 suites and groups it names. As a server,
 * natterd's order among them decides (make_ctx). docs/security.md says
 * the same. */
static const char profile_tls12_ciphers[] =
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char profile_tls13_suites[] =
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const char profile_groups[] = "X25519:P-256:P-384";

static bool apply_profile(SSL_CTX *ctx)
{
	return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
	       SSL_CTX_set_cipher_list(ctx, profile_tls12_ciphers) == 1 &&
	       SSL_CTX_set_ciphersuites(ctx, profile_tls13_suites) == 1 &&
	       SSL_CTX_set1_groups_list(ctx, profile_groups) == 1;
}

/* SSL app_data: what kind of connection, for the ALPN and SNI callbacks. */
enum tls_kind { TLS_C2S_STARTTLS, TLS_C2S_DIRECT, TLS_S2S_STARTTLS, TLS_S2S_DIRECT };

static enum tls_kind kind_of(SSL *ssl)
{
	return (enum tls_kind)(uintptr_t)SSL_get_app_data(ssl);
}

/* Session tickets (RFC 8446 §4.6.1, RFC 5077). A ticket is the session
 * encrypted under a key only natterd knows: AES-256-CBC and HMAC-SHA256,
 * named by 16 random bytes that lead the ticket, so a ticket finds its
 * key. The keys are shared by every context and every loop: a reconnect
 * may land on any loop (SO_REUSEPORT), and a certificate reload must not
 * cost every client a full handshake. They live in memory only, so a
 * restart invalidates every ticket. Two keys at a time: the current one
 * encrypts and decrypts, the previous one only decrypts (and its tickets
 * are renewed on TLS 1.2; TLS 1.3 always sends a new one). */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	bool set;
};

struct tls_tickets {
	pthread_mutex_t lock; /* guards cur and prev: loops read, main thread rotates */
	struct ticket_key cur, prev;
	unsigned long rotations;
	EVP_CIPHER *aes; /* AES-256-CBC, fetched once */
};

static const unsigned char sid_ctx_c2s[] = "natter-c2s";
static const unsigned char sid_ctx_s2s[] = "natter-s2s";

static int ticket_key_make(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_priv_bytes(k->aes, sizeof k->aes) != 1 ||
	    RAND_priv_bytes(k->hmac, sizeof k->hmac) != 1)
		return -1;
	k->set = true;
	return 0;
}

static struct tls_tickets *tickets_new(void)
{
	struct tls_tickets *tk = xcalloc(1, sizeof *tk);
	pthread_mutex_init(&tk->lock, NULL);
	tk->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	if (tk->aes == NULL || ticket_key_make(&tk->cur) != 0) {
		EVP_CIPHER_free(tk->aes);
		pthread_mutex_destroy(&tk->lock);
		free(tk);
		return NULL;
	}
	return tk;
}

static void tickets_free(struct tls_tickets *tk)
{
	if (tk == NULL)
		return;
	OPENSSL_cleanse(&tk->cur, sizeof tk->cur);
	OPENSSL_cleanse(&tk->prev, sizeof tk->prev);
	EVP_CIPHER_free(tk->aes);
	pthread_mutex_destroy(&tk->lock);
	free(tk);
}

void tls_rotate_ticket_keys(struct tls *t)
{
	struct tls_tickets *tk = t->tickets;
	struct ticket_key fresh;
	if (tk == NULL)
		return;
	if (ticket_key_make(&fresh) != 0) {
		log_warn("TLS session tickets: no random bytes for a new key; the current one stays");
		return;
	}
	pthread_mutex_lock(&tk->lock);
	tk->prev = tk->cur;
	tk->cur = fresh;
	unsigned long n = ++tk->rotations;
	pthread_mutex_unlock(&tk->lock);
	OPENSSL_cleanse(&fresh, sizeof fresh);
	log_info("TLS session tickets: key %lu is current; tickets of the key before are still "
		 "accepted, older ones no longer", n);
}

/* OpenSSL's ticket callback (SSL_CTX_set_tlsext_ticket_key_evp_cb): sets
 * up cctx and hctx with the current key to encrypt (enc = 1), or with the
 * key named `name` to decrypt. Returns 1, 2 (decrypted with the previous
 * key: renew), 0 (no such key, or not a c2s connection: full handshake),
 * or -1 on error. */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_host *h = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), host_index);
	struct tls_tickets *tk = h != NULL ? h->owner->tickets : NULL;
	if (tk == NULL || kind_of(ssl) >= TLS_S2S_STARTTLS)
		return 0;
	struct ticket_key k;
	int rc = 0;
	pthread_mutex_lock(&tk->lock);
	if (enc) {
		k = tk->cur;
		rc = 1;
	} else if (tk->cur.set && memcmp(name, tk->cur.name, sizeof k.name) == 0) {
		k = tk->cur;
		rc = 1;
	} else if (tk->prev.set && memcmp(name, tk->prev.name, sizeof k.name) == 0) {
		k = tk->prev;
		rc = 2;
	}
	pthread_mutex_unlock(&tk->lock);
	if (rc == 0) {
		log_debug("TLS: a session ticket of a retired key; full handshake");
		return 0;
	}
	int ok;
	if (enc) {
		memcpy(name, k.name, sizeof k.name);
		ok = RAND_bytes(iv, 16) == 1 &&
		     EVP_EncryptInit_ex2(cctx, tk->aes, k.aes, iv, NULL) == 1;
	} else {
		ok = EVP_DecryptInit_ex2(cctx, tk->aes, k.aes, iv, NULL) == 1;
	}
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	ok = ok && EVP_MAC_CTX_set_params(hctx, params) == 1;
	OPENSSL_cleanse(&k, sizeof k);
	return ok ? rc : -1;
}

/* Resumption on a server context: tickets only (no session cache, which
 * would be one more lock and up to 20,480 sessions held), valid for two
 * rotation periods at most; or none at all when tickets are off. */
static void setup_resumption(struct tls *t, SSL_CTX *ctx)
{
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_id_context(ctx, sid_ctx_c2s, sizeof sid_ctx_c2s - 1);
	if (t->tickets == NULL) {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		return;
	}
	SSL_CTX_set_timeout(ctx, 2L * t->ticket_rotation);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
	/* One ticket per handshake (OpenSSL sends two by default): a client
	 * reconnects with one, and each costs an encryption and a write. */
	SSL_CTX_set_num_tickets(ctx, 1);
}

/* Incoming s2s: ask for the peer's certificate, accept whatever comes;
 * tls_peer_verified decides once the peer says which domain it is. */
static int accept_any(int ok, X509_STORE_CTX *ctx)
{
	(void)ok, (void)ctx;
	return 1;
}

static void ssl_error_string(char *out, size_t cap)
{
	unsigned long e = ERR_get_error();
	if (e == 0)
		snprintf(out, cap, "unknown TLS error");
	else
		ERR_error_string_n(e, out, cap);
	ERR_clear_error();
}

static int mkdir_p(const char *path)
{
	char tmp[1024];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Writes a self-signed certificate and key for domain. */
static int generate_self_signed(const char *domain, const char *cert_path, const char *key_path,
				char *err, size_t errlen)
{
	int rc = -1;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f = NULL;
	if (key == NULL || x == NULL)
		goto out;
	X509_set_version(x, 2);
	unsigned char serial[16];
	char hex[33];
	random_hex(hex, sizeof serial);
	BIGNUM *bn = NULL;
	BN_hex2bn(&bn, hex);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)domain, -1,
				   -1, 0);
	X509_set_issuer_name(x, name);
	char san[1100];
	snprintf(san, sizeof san, "DNS:%s", domain);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	if (ext == NULL)
		goto out;
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (X509_sign(x, key, EVP_sha256()) == 0)
		goto out;
	int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL)
		goto out;
	if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
		goto out;
	fclose(f);
	f = fopen(cert_path, "w");
	if (f == NULL || !PEM_write_X509(f, x))
		goto out;
	rc = 0;
out:
	if (f)
		fclose(f);
	if (rc != 0)
		snprintf(err, errlen, "cannot create a self-signed certificate for %s in %s: %s",
			 domain, cert_path, errno ? strerror(errno) : "OpenSSL error");
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
	struct tls *t = arg;
	(void)alert;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	for (size_t i = 0; i < t->n_hosts; i++) {
		if (strcasecmp(t->hosts[i].domain, name) == 0) {
			SSL_set_SSL_CTX(ssl, __atomic_load_n(&t->hosts[i].ctx, __ATOMIC_ACQUIRE));
			if (kind_of(ssl) >= TLS_S2S_STARTTLS)
				SSL_set_verify(ssl, SSL_VERIFY_PEER, accept_any);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	/* Unknown name: keep the default certificate; the stream header's
	 * 'to' decides, and gets <host-unknown/> if it is not ours. */
	return SSL_TLSEXT_ERR_NOACK;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)arg;
	enum tls_kind k = kind_of(ssl);
	if (k != TLS_C2S_DIRECT && k != TLS_S2S_DIRECT) /* not a direct TLS port */
		return SSL_TLSEXT_ERR_NOACK;
	const unsigned char *want = k == TLS_C2S_DIRECT ? alpn_client : alpn_server;
	unsigned char *sel;
	if (SSL_select_next_proto(&sel, outlen, want, sizeof alpn_client - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* Outgoing s2s: our certificate for SASL EXTERNAL; the remote's is
 * checked after the handshake (tls_peer_verified), so that a failure can
 * fall back to dialback where policy allows. */
static SSL_CTX *make_client_ctx(struct tls_host *h, const char *cert, const char *key,
				char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL || !apply_profile(ctx) ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		char e[256];
		ssl_error_string(e, sizeof e);
		snprintf(err, errlen, "TLS client for %s: %s", h->domain, e);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	/* DANE (TLSA from DNSSEC) per connection: tls_client_dane. */
	SSL_CTX_dane_enable(ctx);
	SSL_CTX_set_ex_data(ctx, host_index, h);
	return ctx;
}

static SSL_CTX *make_ctx(struct tls *t, struct tls_host *h, const char *cert, const char *key,
			 char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || !apply_profile(ctx))
		goto fail;
	/* The profile's suites in natterd's order (AES-128-GCM first), unless
	 * the client puts ChaCha20 first (no AES hardware): OpenSSL's clients
	 * (and GnuTLS's) ask for AES-256-GCM with SHA-384 first, and SHA-384
	 * makes a TLS 1.3 handshake's key schedule about a sixth dearer, on
	 * both sides (bench/tls/resume_floor.c; docs/security.md). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
					 SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_ENABLE_PARTIAL_WRITE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		goto fail;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		goto fail;
	if (SSL_CTX_check_private_key(ctx) != 1)
		goto fail;
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_tlsext_servername_arg(ctx, t);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	SSL_CTX_set_ex_data(ctx, host_index, h);
	setup_resumption(t, ctx);
	return ctx;
fail: {
	char e[256];
	ssl_error_string(e, sizeof e);
	snprintf(err, errlen, "TLS for %s (%s, %s): %s", h->domain, cert, key, e);
	SSL_CTX_free(ctx);
	return NULL;
}
}

/* The certificate and key files of host ch: its own, or the self-signed
 * pair in data_dir (made if missing and create is set). Returns 0 or -1. */
static int host_paths(const struct config *cfg, const struct config_host *ch, bool create,
		      char *cert, char *key, size_t cap, char *err, size_t errlen)
{
	if (ch->tls_cert != NULL) {
		snprintf(cert, cap, "%s", ch->tls_cert);
		snprintf(key, cap, "%s", ch->tls_key);
		return 0;
	}
	char dir[1024];
	snprintf(dir, sizeof dir, "%s/certs", cfg->data_dir);
	snprintf(cert, cap, "%s/%s.crt", dir, ch->domain);
	snprintf(key, cap, "%s/%s.key", dir, ch->domain);
	if (!create || (access(cert, R_OK) == 0 && access(key, R_OK) == 0))
		return 0;
	if (mkdir_p(dir) != 0) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	if (generate_self_signed(ch->domain, cert, key, err, errlen) != 0)
		return -1;
	log_info("created a self-signed certificate for %s in %s", ch->domain, cert);
	return 0;
}

int tls_init(struct tls *t, const struct config *cfg, char *err, size_t errlen)
{
	if (host_index < 0)
		host_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	t->ticket_rotation = cfg->tls.ticket_rotation;
	if (cfg->tls.session_tickets && (t->tickets = tickets_new()) == NULL) {
		snprintf(err, errlen, "cannot make a TLS session ticket key");
		return -1;
	}
	t->n_hosts = cfg->n_hosts;
	t->hosts = xcalloc(cfg->n_hosts, sizeof *t->hosts);
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *ch = &cfg->hosts[i];
		struct tls_host *h = &t->hosts[i];
		h->owner = t;
		h->domain = xstrdup(ch->domain);
		char cert[1100], key[1100];
		if (host_paths(cfg, ch, true, cert, key, sizeof cert, err, errlen) != 0) {
			tls_free(t);
			return -1;
		}
		h->ctx = make_ctx(t, h, cert, key, err, errlen);
		if (h->ctx == NULL || (cfg->s2s.enabled &&
				       (h->client_ctx = make_client_ctx(h, cert, key, err, errlen)) == NULL)) {
			tls_free(t);
			return -1;
		}
	}
	if (cfg->s2s.enabled) {
		t->trust = X509_STORE_new();
		int ok = t->trust != NULL &&
			 (cfg->s2s.ca_file ? X509_STORE_load_file(t->trust, cfg->s2s.ca_file)
					   : X509_STORE_set_default_paths(t->trust));
		if (!ok) {
			char e[256];
			ssl_error_string(e, sizeof e);
			snprintf(err, errlen, "s2s ca_file %s: %s",
				 cfg->s2s.ca_file ? cfg->s2s.ca_file : "(system)", e);
			tls_free(t);
			return -1;
		}
	}
	return 0;
}

static void retire(struct tls *t, SSL_CTX *ctx)
{
	if (ctx == NULL)
		return;
	t->retired = xrealloc(t->retired, (t->n_retired + 1) * sizeof *t->retired);
	t->retired[t->n_retired++] = ctx;
}

int tls_reload(struct tls *t, const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX **fresh = xcalloc(2 * t->n_hosts + 1, sizeof *fresh);
	int rc = 0;
	for (size_t i = 0; i < t->n_hosts && rc == 0; i++) {
		struct tls_host *h = &t->hosts[i];
		const struct config_host *ch = config_find_host(cfg, h->domain);
		char cert[1100], key[1100];
		if (ch == NULL)
			continue; /* a host removed: served until the restart */
		if (host_paths(cfg, ch, false, cert, key, sizeof cert, err, errlen) != 0 ||
		    (fresh[2 * i] = make_ctx(t, h, cert, key, err, errlen)) == NULL ||
		    (h->client_ctx != NULL &&
		     (fresh[2 * i + 1] = make_client_ctx(h, cert, key, err, errlen)) == NULL))
			rc = -1;
	}
	if (rc != 0) {
		for (size_t i = 0; i < 2 * t->n_hosts; i++)
			SSL_CTX_free(fresh[i]);
		free(fresh);
		return -1;
	}
	/* Connections hold references to the contexts they use; a loop may
	 * have just read the old pointer, so the old contexts stay until exit. */
	for (size_t i = 0; i < t->n_hosts; i++) {
		struct tls_host *h = &t->hosts[i];
		if (fresh[2 * i] != NULL)
			retire(t, __atomic_exchange_n(&h->ctx, fresh[2 * i], __ATOMIC_ACQ_REL));
		if (fresh[2 * i + 1] != NULL)
			retire(t, __atomic_exchange_n(&h->client_ctx, fresh[2 * i + 1],
						      __ATOMIC_ACQ_REL));
	}
	free(fresh);
	return 0;
}

SSL *tls_new_server_s2s(struct tls *t, bool direct)
{
	SSL *ssl = SSL_new(__atomic_load_n(&t->hosts[0].ctx, __ATOMIC_ACQUIRE));
	if (ssl == NULL)
		return NULL;
	SSL_set_app_data(ssl, (void *)(uintptr_t)(direct ? TLS_S2S_DIRECT : TLS_S2S_STARTTLS));
	/* No resumption on s2s: the peer's certificate chain, which a ticket
	 * does not carry, is checked after every handshake. */
	SSL_set_session_id_context(ssl, sid_ctx_s2s, sizeof sid_ctx_s2s - 1);
	SSL_set_options(ssl, SSL_OP_NO_TICKET);
	SSL_set_num_tickets(ssl, 0);
	SSL_set_verify(ssl, SSL_VERIFY_PEER, accept_any);
	SSL_set_accept_state(ssl);
	return ssl;
}

SSL *tls_new_client_s2s(struct tls *t, const char *local_domain, const char *remote_domain,
			bool direct)
{
	SSL_CTX *ctx = NULL;
	for (size_t i = 0; i < t->n_hosts; i++)
		if (strcmp(t->hosts[i].domain, local_domain) == 0)
			ctx = __atomic_load_n(&t->hosts[i].client_ctx, __ATOMIC_ACQUIRE);
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	if (ssl == NULL)
		return NULL;
	SSL_set_tlsext_host_name(ssl, remote_domain);
	if (direct)
		SSL_set_alpn_protos(ssl, alpn_server, sizeof alpn_server - 1);
	SSL_set_connect_state(ssl);
	return ssl;
}

/* RFC 6120 §13.7.1.2 identities besides DNS-IDs: an XmppAddr
 * (id-on-xmppAddr, 1.3.6.1.5.5.7.8.5, UTF8String) naming the domain, or an
 * SRV-ID (id-on-dnsSRV, 1.3.6.1.5.5.7.8.7, IA5String) "_xmpp-server.domain"
 * (RFC 4985; no wildcards in either). */
static bool has_xmpp_identity(X509 *cert, const char *domain)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	char srv[300];
	snprintf(srv, sizeof srv, "_xmpp-server.%s", domain);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && !found; i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type != GEN_OTHERNAME)
			continue;
		char oid[64];
		OBJ_obj2txt(oid, sizeof oid, gn->d.otherName->type_id, 1);
		ASN1_TYPE *v = gn->d.otherName->value;
		const char *want = NULL;
		if (strcmp(oid, "1.3.6.1.5.5.7.8.5") == 0 && v->type == V_ASN1_UTF8STRING)
			want = domain;
		else if (strcmp(oid, "1.3.6.1.5.5.7.8.7") == 0 && v->type == V_ASN1_IA5STRING)
			want = srv;
		if (want == NULL)
			continue;
		const ASN1_STRING *str = v->value.asn1_string;
		size_t n = (size_t)ASN1_STRING_length(str);
		found = n == strlen(want) &&
			strncasecmp((const char *)ASN1_STRING_get0_data(str), want, n) == 0;
	}
	GENERAL_NAMES_free(names);
	return found;
}

int tls_client_dane(SSL *ssl, const char *remote_domain, const char *target,
		    const unsigned char (*records)[67], const unsigned *lens, size_t n)
{
	/* SSL_dane_enable sets SNI to its base domain: the XMPP domain it must
	 * be (RFC 7673 §4); the SRV target is a reference identity too. */
	if (SSL_dane_enable(ssl, remote_domain) <= 0)
		return -1;
	SSL_add1_host(ssl, target);
	size_t usable = 0;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *r = records[i];
		if (lens[i] < 3)
			continue;
		if (SSL_dane_tlsa_add(ssl, r[0], r[1], r[2], r + 3, lens[i] - 3) > 0)
			usable++;
	}
	return usable > 0 ? 0 : -1;
}

int tls_dane_verified(SSL *ssl, char *why, size_t whylen)
{
	long rc = SSL_get_verify_result(ssl);
	if (rc == X509_V_OK && SSL_get0_dane_authority(ssl, NULL, NULL) >= 0)
		return 1;
	snprintf(why, whylen, "%s", rc == X509_V_OK ? "no TLSA record matched"
						   : X509_verify_cert_error_string(rc));
	return 0;
}

int tls_peer_verified(struct tls *t, SSL *ssl, const char *domain, char *why, size_t whylen)
{
	char dummy[8];
	if (why == NULL) {
		why = dummy;
		whylen = sizeof dummy;
	}
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL) {
		snprintf(why, whylen, "no certificate");
		return 0;
	}
	if (t->trust == NULL) {
		snprintf(why, whylen, "no trust store");
		return 0;
	}
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int ok = ctx != NULL &&
		 X509_STORE_CTX_init(ctx, t->trust, cert, SSL_get_peer_cert_chain(ssl)) == 1;
	if (ok && X509_verify_cert(ctx) != 1) {
		snprintf(why, whylen, "certificate does not verify: %s",
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
		ok = 0;
	} else if (ok &&
		   X509_check_host(cert, domain, 0,
				   X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
					   X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
				   NULL) != 1 &&
		   !has_xmpp_identity(cert, domain)) {
		snprintf(why, whylen, "certificate is not for %s", domain);
		ok = 0;
	} else if (!ok) {
		snprintf(why, whylen, "cannot check the certificate");
	}
	X509_STORE_CTX_free(ctx);
	return ok ? 1 : 0;
}

void tls_free(struct tls *t)
{
	for (size_t i = 0; i < t->n_hosts; i++) {
		free(t->hosts[i].domain);
		SSL_CTX_free(t->hosts[i].ctx);
		SSL_CTX_free(t->hosts[i].client_ctx);
	}
	X509_STORE_free(t->trust);
	t->trust = NULL;
	tickets_free(t->tickets);
	t->tickets = NULL;
	for (size_t i = 0; i < t->n_retired; i++)
		SSL_CTX_free(t->retired[i]);
	free(t->retired);
	t->retired = NULL;
	t->n_retired = 0;
	free(t->hosts);
	t->hosts = NULL;
	t->n_hosts = 0;
}

SSL *tls_new_server(struct tls *t, bool direct)
{
	SSL *ssl = SSL_new(__atomic_load_n(&t->hosts[0].ctx, __ATOMIC_ACQUIRE));
	if (ssl == NULL)
		return NULL;
	/* app_data marks a direct TLS connection for the ALPN callback. */
	SSL_set_app_data(ssl, (void *)(uintptr_t)(direct ? TLS_C2S_DIRECT : TLS_C2S_STARTTLS));
	SSL_set_accept_state(ssl);
	return ssl;
}

const char *tls_domain(SSL *ssl)
{
	struct tls_host *h = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), host_index);
	return h ? h->domain : NULL;
}

static int base64(const unsigned char *in, size_t n, char *out, size_t cap)
{
	if (cap < 4 * ((n + 2) / 3) + 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	return 0;
}

int tls_cb_exporter(SSL *ssl, char *out, size_t cap)
{
	unsigned char km[32];
	static const char label[] = "EXPORTER-Channel-Binding";
	if (SSL_export_keying_material(ssl, km, sizeof km, label, sizeof label - 1, NULL, 0, 0) !=
	    1)
		return -1;
	return base64(km, sizeof km, out, cap);
}

bool tls_cb_exporter_available(SSL *ssl)
{
	return ssl != NULL && SSL_is_init_finished(ssl) && SSL_version(ssl) >= TLS1_2_VERSION;
}

bool tls_cb_unique_defined(SSL *ssl) { return SSL_version(ssl) < TLS1_3_VERSION; }

int tls_cb_unique(SSL *ssl, char *out, size_t cap)
{
	unsigned char fin[EVP_MAX_MD_SIZE];
	/* tls-unique is the first Finished message of the handshake: the
	 * client's in a full handshake, ours in a resumed one (RFC 5929).
	 * On TLS 1.3 the same rule picks the client's Finished, as CPython
	 * and other OpenSSL-based clients do. */
	size_t n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, fin, sizeof fin)
					   : SSL_get_peer_finished(ssl, fin, sizeof fin);
	if (n == 0)
		return -1;
	return base64(fin, n, out, cap);
}

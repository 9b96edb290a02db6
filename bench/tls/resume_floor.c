/* resume-floor: what a TLS 1.3 session resumption costs OpenSSL alone.
 *
 * A client and a server, both in this one thread, joined by memory BIOs
 * (no sockets, no XMPP, no natterd): one full handshake gives the client a
 * ticket, then N resumptions use it.
 * The settings are natterd's (src/tls/tls.c: TLS 1.3, its groups, its
 * suite order, one ticket per handshake, a P-256 certificate, no session
 * cache) and the client is OpenSSL's default, as natter-load's is; -s
 * sets the client's TLS 1.3 suites, in its order of preference (so -s
 * TLS_AES_256_GCM_SHA384 prices the suite natterd would otherwise get
 * from OpenSSL's clients). Each side's CPU is
 * the thread CPU time spent in its own calls, so the figures are the
 * least a reconnect can cost the server and the client before any of
 * TCP, XMPP, SASL or the session. docs/performance.md (Reconnects) uses
 * them to say what two shared cores allow.
 *
 *   build/resume-floor [-n RESUMPTIONS] [-s CLIENT_SUITES]
 */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "resume-floor: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A self-signed P-256 certificate for "localhost", made here. */
static void make_cert(SSL_CTX *ctx)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	if (key == NULL || x == NULL)
		die("key");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
				   -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, key);
	if (X509_sign(x, key, EVP_sha256()) == 0 || SSL_CTX_use_certificate(ctx, x) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, key) != 1)
		die("certificate");
	X509_free(x);
	EVP_PKEY_free(key);
}

/* The ticket key callback natterd installs (AES-256-CBC and HMAC-SHA256
 * under one key here), so the ticket's cost is the same. */
static unsigned char ticket_name[16] = "resume-floor-key";
static unsigned char ticket_aes[32], ticket_hmac[32];

static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	(void)ssl;
	int ok;
	if (enc) {
		memcpy(name, ticket_name, sizeof ticket_name);
		ok = RAND_bytes(iv, 16) == 1 &&
		     EVP_EncryptInit_ex2(cctx, EVP_aes_256_cbc(), ticket_aes, iv, NULL) == 1;
	} else {
		if (memcmp(name, ticket_name, sizeof ticket_name) != 0)
			return 0;
		ok = EVP_DecryptInit_ex2(cctx, EVP_aes_256_cbc(), ticket_aes, iv, NULL) == 1;
	}
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, ticket_hmac,
						  sizeof ticket_hmac),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	return ok && EVP_MAC_CTX_set_params(hctx, params) == 1 ? 1 : -1;
}

/* The session the client resumes: the first handshake's, used again and
 * again (natterd renews no ticket that its current key decrypted, and a
 * client without a session cache may use one ticket many times), as
 * natter-load's workers do. */
static SSL_SESSION *got_ticket;

/* One step of one side's handshake, unless it is done; adds its CPU. */
static void handshake_step(SSL *ssl, int *done, double *cpu_s, const char *what)
{
	if (*done)
		return;
	double t0 = thread_cpu();
	int rc = SSL_do_handshake(ssl);
	if (rc == 1)
		*done = 1;
	else if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ)
		die(what);
	*cpu_s += thread_cpu() - t0;
}

/* One connection; returns whether it resumed. Adds each side's CPU. */
static int connect_once(SSL_CTX *sctx, SSL_CTX *cctx, double *server_s, double *client_s)
{
	SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
	BIO *c_bio, *s_bio;
	if (c == NULL || s == NULL || BIO_new_bio_pair(&c_bio, 0, &s_bio, 0) != 1)
		die("connection");
	SSL_set_bio(c, c_bio, c_bio);
	SSL_set_bio(s, s_bio, s_bio);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	SSL_set_tlsext_host_name(c, "localhost");
	if (got_ticket != NULL)
		SSL_set_session(c, got_ticket);
	int c_done = 0, s_done = 0;
	for (int round = 0; round < 16 && !(c_done && s_done); round++) {
		handshake_step(c, &c_done, client_s, "client handshake");
		handshake_step(s, &s_done, server_s, "server handshake");
	}
	if (!c_done || !s_done)
		die("handshake did not finish");
	/* The client reads the server's ticket (sent after the handshake). */
	unsigned char byte;
	double t0 = thread_cpu();
	if (SSL_read(c, &byte, 1) > 0)
		die("unexpected data");
	*client_s += thread_cpu() - t0;
	int resumed = SSL_session_reused(c);
	if (got_ticket == NULL)
		got_ticket = SSL_get1_session(c);
	/* As natter-load does: an SSL freed without a close_notify sent
	 * takes its session out of use (OpenSSL marks it not resumable). */
	SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	t0 = thread_cpu();
	SSL_free(s);
	double t1 = thread_cpu();
	SSL_free(c);
	*server_s += t1 - t0;
	*client_s += thread_cpu() - t1;
	return resumed;
}

int main(int argc, char **argv)
{
	long n = 20000;
	const char *suites = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "n:s:")) != -1) {
		if (opt == 's')
			suites = optarg;
		else if (opt != 'n' || (n = atol(optarg)) <= 0) {
			fprintf(stderr, "usage: resume-floor [-n RESUMPTIONS] [-s CLIENT_SUITES]\n");
			return 2;
		}
	}
	RAND_bytes(ticket_aes, sizeof ticket_aes);
	RAND_bytes(ticket_hmac, sizeof ticket_hmac);
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
	if (sctx == NULL || cctx == NULL)
		die("context");
	make_cert(sctx);
	SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
	SSL_CTX_set1_groups_list(sctx, "X25519:P-256:P-384");
	SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_id_context(sctx, (const unsigned char *)"floor", 5);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(sctx, on_ticket_key);
	SSL_CTX_set_num_tickets(sctx, 1);
	SSL_CTX_set_options(sctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
					  SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_set_ciphersuites(sctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
				       "TLS_CHACHA20_POLY1305_SHA256");
	SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
	if (suites != NULL && SSL_CTX_set_ciphersuites(cctx, suites) != 1)
		die("-s: no such TLS 1.3 suites");
	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
	double full_s = 0, full_c = 0, s = 0, c = 0;
	if (connect_once(sctx, cctx, &full_s, &full_c) || got_ticket == NULL)
		die("no ticket from the first handshake");
	long resumed = 0;
	for (long i = 0; i < n; i++)
		resumed += connect_once(sctx, cctx, &s, &c);
	if (resumed != n)
		die("a resumption fell back to a full handshake");
	const SSL_CIPHER *suite = SSL_SESSION_get0_cipher(got_ticket);
	printf("%ld resumptions (%s, %s): server %.1f us, client %.1f us, both %.1f us each; "
	       "at most %.0f a second on one core for both sides, %.0f on two\n",
	       n, OpenSSL_version(OPENSSL_VERSION), SSL_CIPHER_get_name(suite), s * 1e6 / (double)n,
	       c * 1e6 / (double)n, (s + c) * 1e6 / (double)n, (double)n / (s + c),
	       2.0 * (double)n / (s + c));
	SSL_SESSION_free(got_ticket);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return 0;
}

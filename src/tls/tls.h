/* TLS contexts: one per virtual host, chosen by SNI; ALPN for XEP-0368;
 * channel-binding data for SASL -PLUS. Only this file and the connection
 * code touch OpenSSL objects; private keys are read here and nowhere else. */
#ifndef NATTER_TLS_H
#define NATTER_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

struct tls;
struct tls_tickets;

struct tls_host {
	struct tls *owner;   /* the struct tls this host belongs to */
	char *domain;
	SSL_CTX *ctx;        /* server side (c2s, incoming s2s) */
	SSL_CTX *client_ctx; /* outgoing s2s, presenting the same certificate */
};

struct tls {
	struct tls_host *hosts;
	size_t n_hosts;
	X509_STORE *trust;   /* CAs for remote servers (s2s.ca_file or the system's) */
	SSL_CTX **retired;   /* replaced by tls_reload; freed by tls_free */
	size_t n_retired;
	/* Session ticket keys shared by every context and every loop, so a
	 * ticket works whichever loop the reconnect lands on and survives a
	 * certificate reload; NULL when tls.session_tickets is off. */
	struct tls_tickets *tickets;
	int ticket_rotation; /* seconds; tls.ticket_rotation */
};

/* Builds a context per configured host. A host without tls_cert/tls_key
 * gets a self-signed ECDSA P-256 certificate, generated once and kept in
 * <data_dir>/certs/. Returns 0, or -1 with a message in err. */
int tls_init(struct tls *t, const struct config *cfg, char *err, size_t errlen);
void tls_free(struct tls *t);

/* Makes a new session ticket key current; the one it replaces still
 * decrypts tickets until the next rotation, older ones are erased. Called
 * every tls.ticket_rotation seconds by the main thread; safe while loops
 * handshake. Does nothing when tickets are off. */
void tls_rotate_ticket_keys(struct tls *t);

/* SIGHUP: reads every host's certificate and key again (the files named
 * in cfg, a freshly loaded configuration, or the self-signed ones in
 * data_dir) and swaps the new contexts in; new connections use them,
 * established ones keep theirs. All or nothing: on -1 (err says why) the
 * old contexts stay. Main thread only. */
int tls_reload(struct tls *t, const struct config *cfg, char *err, size_t errlen);

/* A new server-side SSL object for one connection, in accept state, on the
 * first host's context until SNI picks another. direct is true on a direct
 * TLS port, where ALPN "xmpp-client" is selected when offered. */
SSL *tls_new_server(struct tls *t, bool direct);

/* A server-side SSL object for an incoming server-to-server connection:
 * like tls_new_server, and it asks the peer for its certificate (checked
 * later, by tls_peer_verified, against the domain the peer claims); ALPN
 * "xmpp-server" on a direct TLS port. */
SSL *tls_new_server_s2s(struct tls *t, bool direct);

/* A client-side SSL object for an outgoing server-to-server link from
 * local_domain (whose certificate it presents) to remote_domain (SNI; ALPN
 * "xmpp-server" when direct). NULL on failure. */
SSL *tls_new_client_s2s(struct tls *t, const char *local_domain, const char *remote_domain,
			bool direct);

/* Whether the peer's certificate chains to t->trust and names domain:
 * a DNS-ID (RFC 6125, wildcards only as the whole leftmost label), an
 * XmppAddr or an SRV-ID "_xmpp-server.domain" (RFC 6120 §13.7.1.2). Returns 1
 * yes, 0 no; why (may be NULL) gets the reason. */
int tls_peer_verified(struct tls *t, SSL *ssl, const char *domain, char *why, size_t whylen);

/* DANE for an outgoing link (RFC 7673): the TLSA records found for the
 * SRV target (each: usage, selector, matching type, then the data; lens
 * are the whole lengths) are what the remote certificate must match.
 * Call before the handshake. Returns 0, or -1 if none is usable. */
int tls_client_dane(SSL *ssl, const char *remote_domain, const char *target,
		    const unsigned char (*records)[67], const unsigned *lens, size_t n);

/* After the handshake of a link set up with tls_client_dane: 1 if the
 * certificate matched a TLSA record, else 0 with the reason in why. */
int tls_dane_verified(SSL *ssl, char *why, size_t whylen);

/* The domain whose context the connection ended up on (after SNI). */
const char *tls_domain(SSL *ssl);

/* Channel binding data, base64 encoded into out (NUL terminated).
 * Return 0, or -1 when the type is not available on this connection.
 * tls_cb_unique gives the first Finished message of the handshake as
 * OpenSSL-based clients (CPython's ssl, so slixmpp) compute it: the
 * client's in a full handshake, the server's in a resumed one; on TLS 1.3
 * too, where RFC 5929 does not define it (docs/decisions/0006). */
int tls_cb_exporter(SSL *ssl, char *out, size_t cap);
/* Whether tls_cb_exporter works on this connection (its handshake is
 * done), without deriving the value: stream features ask four times per
 * connection, and each derivation is an HKDF. */
bool tls_cb_exporter_available(SSL *ssl);
int tls_cb_unique(SSL *ssl, char *out, size_t cap);
/* Whether tls-unique is a defined channel binding on this connection
 * (TLS 1.2; RFC 9266 leaves it undefined for TLS 1.3), so offered. */
bool tls_cb_unique_defined(SSL *ssl);

#endif

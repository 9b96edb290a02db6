/* SASL authentication with GNU SASL, over the internal credential store.
 * The store holds SCRAM secrets (salt, iterations, StoredKey, ServerKey)
 * for SHA-1 and SHA-256; PLAIN is checked by deriving the key again. */
#ifndef NATTER_AUTH_H
#define NATTER_AUTH_H

#include <gsasl.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/config.h"

struct loop;

enum auth_result {
	AUTH_CONTINUE,     /* send <challenge> with the output */
	AUTH_SUCCESS,      /* send <success> with the output; authid is set */
	AUTH_FAILURE,      /* <not-authorized/> */
	AUTH_INVALID_MECH, /* <invalid-mechanism/> */
	AUTH_MALFORMED,    /* <malformed-request/> */
	AUTH_BAD_AUTHZID,  /* <invalid-authzid/> */
	AUTH_TEMPORARY,    /* <temporary-auth-failure/> (store unavailable) */
	AUTH_PENDING       /* the mechanism is done; the account source (the
			    * directory) must answer: auth_pending_user, then
			    * auth_complete */
};

/* What the account source must check before an AUTH_PENDING exchange
 * succeeds. */
enum auth_pending_kind {
	AUTH_PENDING_PASSWORD, /* PLAIN: check as->password for as->authid */
	AUTH_PENDING_EXISTS    /* GSSAPI: the KDC vouched; does the account exist */
};

/* One SASL exchange on one connection. */
struct auth_session {
	struct loop *loop;
	const char *domain;       /* the virtual host being logged in to */
	const struct config_host *host;
	bool directory;           /* the host's accounts are in a directory */
	Gsasl_session *gs;
	char mech[32];
	char authid[1024];        /* normalised localpart, once known; after a
				   * failure, the user name the client gave
				   * (normalised, or escaped if it is no
				   * valid username), for the log */
	char claimed[1024];       /* SCRAM: the user name of the client-first
				   * message, as authid would hold it */
	bool first_seen;          /* SCRAM: the client-first message was read */
	bool scram_looked_up;     /* SCRAM: the account was read (once) */
	bool refuse_y;            /* SCRAM: gs2 flag 'y' means a downgrade */
	char principal[512];      /* GSSAPI: the client's Kerberos principal */
	char *password;           /* PLAIN on a directory host, until checked (heap) */
	bool wait;                /* AUTH_PENDING: the source must answer */
	enum auth_pending_kind pending;
	struct buf final;         /* server output held while pending */
	bool store_error;
};

/* Process-wide GNU SASL context. Returns 0 or -1. */
int auth_init(Gsasl **ctx);
void auth_done(Gsasl *ctx);

/* Appends the <mechanism/> elements offered on a TLS connection to host:
 * SCRAM (with -PLUS where channel binding is possible) and PLAIN if
 * allow_plain for internal accounts; for a directory host PLAIN alone (if
 * allow_plain: a directory does not hand out SCRAM secrets); GSSAPI where
 * the host has a keytab. */
void auth_write_mechanisms(struct buf *out, SSL *ssl, bool allow_plain,
			   const struct config_host *host);
/* Appends the XEP-0440 channel-binding types of this connection. */
void auth_write_cb_types(struct buf *out, SSL *ssl);

/* Starts mechanism mech with the client's initial response (base64, may be
 * "" or "=" for empty). out receives base64 to send. */
enum auth_result auth_start(struct auth_session *as, Gsasl *ctx, SSL *ssl, bool allow_plain,
			    const char *mech, const char *initial, struct buf *out);
/* Continues with a <response/>. */
enum auth_result auth_step(struct auth_session *as, const char *input, struct buf *out);
/* Finishes an AUTH_PENDING exchange with the account source's answer:
 * ok says the password matched / the account exists; temporary that the
 * source could not answer. local is the username as the source knows it
 * (normalised), or NULL to keep as->authid. Returns AUTH_SUCCESS (out gets
 * the held output), AUTH_FAILURE, AUTH_TEMPORARY or AUTH_BAD_AUTHZID. */
enum auth_result auth_complete(struct auth_session *as, bool ok, bool temporary,
			       const char *local, struct buf *out);

/* AUTH_PENDING with AUTH_PENDING_PASSWORD on a host with internal
 * accounts: reads the account's secrets (on the loop) and checks the PLAIN
 * password against them with PBKDF2 on a worker thread. done runs on the
 * loop afterwards (or at once, when there is no such account or the store
 * failed: temporary), with l NULL if the loop is stopping; as must still
 * be alive then or done must not touch it (c2s checks by connection id). */
void auth_check_internal(struct auth_session *as,
			 void (*done)(struct loop *l, void *arg, bool ok, bool temporary),
			 void *arg);

/* Sets GSS-API's keytab (KRB5_KTNAME) from the configuration, before any
 * thread starts. Returns 0, or -1 if the keytab cannot be read. */
int auth_kerberos_init(const struct config *cfg);

/* Releases the gsasl session. */
void auth_end(struct auth_session *as);

#endif

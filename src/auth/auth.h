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

struct loop;

enum auth_result {
	AUTH_CONTINUE,     /* send <challenge> with the output */
	AUTH_SUCCESS,      /* send <success> with the output; authid is set */
	AUTH_FAILURE,      /* <not-authorized/> */
	AUTH_INVALID_MECH, /* <invalid-mechanism/> */
	AUTH_MALFORMED,    /* <malformed-request/> */
	AUTH_BAD_AUTHZID,  /* <invalid-authzid/> */
	AUTH_TEMPORARY     /* <temporary-auth-failure/> (store unavailable) */
};

/* One SASL exchange on one connection. */
struct auth_session {
	struct loop *loop;
	const char *domain;       /* the virtual host being logged in to */
	Gsasl_session *gs;
	char mech[32];
	char authid[1024];        /* normalised localpart, once known */
	bool store_error;
};

/* Process-wide GNU SASL context. Returns 0 or -1. */
int auth_init(Gsasl **ctx);
void auth_done(Gsasl *ctx);

/* Appends the <mechanism/> elements offered on a TLS connection. */
void auth_write_mechanisms(struct buf *out, SSL *ssl, bool allow_plain);
/* Appends the XEP-0440 channel-binding types of this connection. */
void auth_write_cb_types(struct buf *out, SSL *ssl);

/* Starts mechanism mech with the client's initial response (base64, may be
 * "" or "=" for empty). out receives base64 to send. */
enum auth_result auth_start(struct auth_session *as, Gsasl *ctx, SSL *ssl, bool allow_plain,
			    const char *mech, const char *initial, struct buf *out);
/* Continues with a <response/>. */
enum auth_result auth_step(struct auth_session *as, const char *input, struct buf *out);
/* Releases the gsasl session. */
void auth_end(struct auth_session *as);

#endif

/* The client side of SASL PLAIN and SCRAM-SHA-1 (RFC 5802), on OpenSSL.
 *
 * Like real clients, SCRAM keeps the keys derived from the salted password
 * (per password, salt and iteration count, which is all they depend on) in
 * a cache shared by every worker thread, so a user logging in again costs
 * two HMACs, not a PBKDF2. */
#ifndef LOADGEN_SASL_H
#define LOADGEN_SASL_H

#include <stdbool.h>
#include <stddef.h>

struct sasl_cache;

struct sasl_cache *sasl_cache_new(void);
void sasl_cache_free(struct sasl_cache *c);
/* PBKDF2 runs (cache misses) so far. */
unsigned long sasl_cache_misses(struct sasl_cache *c);

/* One SCRAM exchange; lives on its connection from <auth/> to <success/>. */
struct sasl_scram {
	char *client_first_bare; /* "n=user,r=cnonce", malloc'd */
	char cnonce[40];
	unsigned char server_signature[20];
	bool have_signature;
	bool verified; /* the server's signature checked out */
};

/* Base64 of s (NUL-terminated, malloc'd; caller frees). */
char *sasl_b64_encode(const void *data, size_t len);
/* Decodes NUL-terminated base64 (whitespace allowed) into a malloc'd,
 * NUL-terminated buffer; *len gets the decoded length. NULL on bad input. */
unsigned char *sasl_b64_decode(const char *s, size_t *len);

/* The base64 initial response of PLAIN; caller frees. */
char *sasl_plain_initial(const char *user, const char *password);

/* HT-SHA-256-NONE (the Hashed Token mechanism, draft-ietf-kitten-sasl-ht,
 * without channel binding), as XEP-0484 FAST uses it: the base64 initial
 * response "user NUL HMAC-SHA-256(token, 'Initiator')"; caller frees. */
char *sasl_ht_initial(const char *user, const char *token);
/* Whether the server's final message (base64 additional data) is
 * HMAC-SHA-256(token, 'Responder'). */
bool sasl_ht_verify(const char *token, const char *final_b64);

/* Starts s and returns the base64 client-first message; caller frees. */
char *sasl_scram_start(struct sasl_scram *s, const char *user);
/* Given the server-first message (base64 challenge text), returns the
 * base64 client-final message (caller frees), or NULL with *err set to a
 * static reason. */
char *sasl_scram_final(struct sasl_scram *s, struct sasl_cache *cache, const char *password,
		       const char *challenge_b64, const char **err);
/* Checks the server-final message ("v=..." in base64) against the signature
 * computed by sasl_scram_final. */
bool sasl_scram_verify(const struct sasl_scram *s, const char *final_b64);
void sasl_scram_clear(struct sasl_scram *s);

#endif

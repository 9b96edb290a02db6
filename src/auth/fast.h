/* XEP-0484 FAST: tokens that a client got at a password login and uses
 * for the next logins with a Hashed Token mechanism (HT-SHA-256-*,
 * draft-schmaus-kitten-sasl-ht): one round trip, no PBKDF2.
 *
 * The store keeps no token. A device's record (map store "fast" of the
 * account, keyed by the SASL2 user-agent id) holds for each of its two
 * slots (XEP-0484 §7.1: "new", issued and not used yet, and "current")
 * a random nonce, the mechanism, the expiry and the last replay count;
 * the token is HMAC-SHA-256(fast key, account, device, nonce), the key
 * being DATA_DIR/fast.key, read once at start. A stolen database gives no
 * token, and a new key file revokes every token.
 *
 * Every check runs as one storage-thread job (storeq.h) that reads the
 * record, verifies, and rotates in the same job: two logins with one
 * token are checked one after the other, never both against the old
 * record. */
#ifndef NATTER_FAST_H
#define NATTER_FAST_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct loop;
struct server;
struct config;

#define FAST_MAP "fast"          /* the map store of each account */
#define FAST_DEVICE_MAX 128      /* bytes of a user-agent id kept */
#define FAST_TOKEN_MAX 64        /* base64url of 32 bytes, with room */

/* Reads DATA_DIR/fast.key, creating it (mode 0600) on first start.
 * Returns 0, or -1 with a message logged. */
int fast_init(struct server *srv);
void fast_free(struct server *srv);

/* Whether FAST is on (limits.fast_token_lifetime > 0). */
bool fast_enabled(const struct config *cfg);

/* Appends the <fast xmlns='urn:xmpp:fast:0'> inline feature with the HT
 * mechanisms this connection can do: -EXPR where tls-exporter works,
 * -UNIQ on TLS 1.2 and older, and -NONE. */
void fast_write_feature(struct buf *out, SSL *ssl);

/* Whether mech is an HT mechanism offered on this connection. */
bool fast_mech_offered(const char *mech, SSL *ssl);

/* Splits an HT initial response (base64 of "authcid NUL hash") into the
 * normalised local part and the 32-byte initiator hash. Returns 0, -1
 * when it is not base64 or not of that form (malformed-request), -2 when
 * the name is not a valid username (not-authorized). */
int fast_parse_initial(const char *b64, char *local, size_t local_cap, unsigned char hash[32]);

enum fast_outcome {
	FAST_OK,        /* token accepted; new_token may hold its successor */
	FAST_REFUSED,   /* no such token, another account's, used up, wrong
			 * mechanism or channel binding, stale count */
	FAST_EXPIRED,   /* it matched but is past its expiry: credentials-expired */
	FAST_STORE_ERROR
};

/* A token check, owned by fast_check until done runs (then freed). */
struct fast_check {
	/* in */
	char domain[1024];
	char local[1024];
	char device[FAST_DEVICE_MAX + 1];
	char software[65], device_name[65]; /* what the user-agent said */
	char mech[32];
	unsigned char hash[32];        /* the initiator's hash */
	unsigned char cb[64];          /* channel-binding data for mech */
	size_t cb_len;
	unsigned long long count;      /* 0: the client sent none */
	bool invalidate;               /* <fast invalidate='true'/> */
	char next_mech[32];            /* mechanism of the next token */
	/* out, valid in done */
	enum fast_outcome outcome;
	char responder[64];            /* base64 of the responder's hash */
	char new_token[FAST_TOKEN_MAX];/* "" when none was issued */
	long long new_expiry;          /* seconds since the epoch */
	/* private */
	struct server *srv;
	void (*done)(struct loop *l, struct fast_check *fc, void *arg);
	void *arg;
	unsigned long long now;
};

/* The channel-binding data of an HT mechanism on this connection into
 * fc->cb. Returns 0, or -1 when the connection cannot give it. */
int fast_channel_binding(struct fast_check *fc, SSL *ssl);

/* Checks fc's token on the storage thread and, when it is good, rotates
 * (or, with invalidate, forgets) it; done runs on l afterwards with fc
 * filled in (l NULL when the loop stopped: then only release arg). */
void fast_check(struct loop *l, struct fast_check *fc,
		void (*done)(struct loop *l, struct fast_check *fc, void *arg), void *arg);

/* Issues a token for the device after a login by another mechanism:
 * token receives it (base64url) and *expiry its expiry. The storage
 * thread writes the record; done runs on l once it is committed (rc < 0:
 * it was not, so the token must not be handed out; l NULL when the loop
 * stopped). Returns 0, or -1 when FAST is off or there is no device (done
 * does not run then). */
int fast_issue(struct loop *l, const char *domain, const char *local, const char *device,
	       const char *software, const char *device_name, const char *mech,
	       char token[FAST_TOKEN_MAX], long long *expiry,
	       void (*done)(struct loop *l, void *arg, int rc), void *arg);

/* Forgets every token of the account (a password change). Queued on the
 * storage thread; st/drv given: done at once on that handle instead. */
void fast_forget_account(struct loop *l, const char *domain, const char *local);

/* Appends a description of one device's record (a value of FAST_MAP)
 * for operators: last use, what the user-agent said, and the expiry of
 * each token held; no secret. */
void fast_describe(const void *value, size_t len, struct buf *out);

#endif

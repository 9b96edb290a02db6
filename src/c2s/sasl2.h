/* XEP-0388 (SASL2) and XEP-0386 (Bind 2): the elements of the extensible
 * SASL profile, read and written here; the exchange itself runs in c2s.c
 * over the same auth session, limits and failure budgets as legacy SASL
 * (RFC 6120 §6). */
#ifndef NATTER_SASL2_H
#define NATTER_SASL2_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth/fast.h"
#include "core/buf.h"
#include "core/config.h"
#include "xml/xml.h"

#define NS_SASL2 "urn:xmpp:sasl:2"
#define NS_BIND2 "urn:xmpp:bind:0"
#define NS_FAST "urn:xmpp:fast:0"
#define NS_CARBONS2 "urn:xmpp:carbons:2"
#define NS_SM3 "urn:xmpp:sm:3"

/* What one <authenticate/> asked for, copied out of the stanza's arena
 * (the answer may come after it is gone). Heap, owned by the c2s session
 * until the exchange ends. */
struct sasl2_request {
	char mech[32];
	char *initial;              /* base64, "" for an empty one; NULL: none sent */
	char ua_id[FAST_DEVICE_MAX + 1]; /* <user-agent id=...>, "" when none */
	char software[65];
	char device[65];
	bool bind;                  /* <bind xmlns='urn:xmpp:bind:0'/> inline */
	char tag[33];               /* its <tag/>, cleaned */
	bool carbons;               /* <enable xmlns='urn:xmpp:carbons:2'/> in bind */
	bool inactive;              /* <inactive xmlns='urn:xmpp:csi:0'/> in bind */
	bool sm_enable;             /* <enable xmlns='urn:xmpp:sm:3'/> in bind */
	bool sm_enable_resume;      /*   with resume='true' */
	bool sm_resume;             /* <resume xmlns='urn:xmpp:sm:3'/> inline */
	char sm_previd[128];
	char sm_h[24];
	bool fast;                  /* <fast xmlns='urn:xmpp:fast:0'/>: a token login */
	unsigned long long fast_count; /* its count, 0 when none */
	bool fast_invalidate;
	char request_token[32];     /* <request-token mechanism=.../>, "" none */
	/* Filled in on the way to the answer. */
	char *additional;           /* base64 success data (heap), or NULL */
	bool expired;               /* a FAST token past its expiry: the failure
				     * is credentials-expired */
	char new_token[FAST_TOKEN_MAX]; /* a FAST token for <success/>, "" none */
	long long new_expiry;       /* its expiry, seconds since the epoch */
};

/* Appends <authentication xmlns='urn:xmpp:sasl:2'> with the mechanisms
 * legacy SASL offers (auth_write_mechanisms) and the inline features:
 * Bind 2 (with carbons) and FAST when it is on. */
void sasl2_write_feature(struct buf *out, SSL *ssl, const struct config *cfg,
			 const struct config_host *host);

/* Reads <authenticate/> into a new request. Returns NULL with *condition
 * set to the SASL condition to fail with (malformed-request, or
 * invalid-mechanism when there is no mechanism attribute or an upgrade
 * task is asked for: none is offered). Elements it
 * does not know, inline or in <bind/>, are ignored (XEP-0388/0386
 * extensibility); each is logged at debug level. */
struct sasl2_request *sasl2_parse(struct xml_node *st, struct arena *a, const char **condition);
void sasl2_free(struct sasl2_request *r);

/* The element's text without whitespace (base64 may be wrapped), on the
 * heap (the caller frees). */
char *sasl2_text(struct arena *a, const struct xml_node *n);

/* Appends <challenge/> with base64 data. */
void sasl2_write_challenge(struct buf *out, const char *data, size_t len);
/* Appends <failure/> with a SASL condition (RFC 6120 §6.5) and a text
 * when not NULL. */
void sasl2_write_failure(struct buf *out, const char *condition, const char *text);

/* The Bind 2 resource of a device (XEP-0386 §2.2): the client's tag (or
 * "natter"), a dot, and 8 hex digits that are stable for one account and
 * user-agent id (so a device gets its resource back and replaces its own
 * stale session) or random when the client sent no id. */
void sasl2_bind_resource(const struct sasl2_request *r, const char *bare, char *out, size_t cap);

#endif

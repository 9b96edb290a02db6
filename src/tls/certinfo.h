/* What an operator needs to know about a host's certificate: the names it
 * is valid for, when it expires, and the fingerprints that clients show
 * when they ask a user to accept a self-signed certificate. Read-only:
 * nothing here touches private keys (those stay in tls.c). */
#ifndef NATTER_CERTINFO_H
#define NATTER_CERTINFO_H

#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "core/config.h"

struct certinfo {
	char subject_cn[256];  /* "" when the subject has no CN */
	char issuer_cn[256];   /* likewise for the issuer */
	char names[2048];      /* subjectAltNames, "DNS:a, IP:1.2.3.4, XmppAddr:b"; "" = none */
	char not_after[32];    /* "2036-12-02 15:11:38 UTC" */
	time_t expires;        /* the same, as a time; 0 if unreadable */
	bool self_signed;      /* issuer is subject and the signature is its own */
	char sha1[60];         /* "AB:CD:..." over the DER certificate */
	char sha256[96];       /* likewise */
	char spki_sha256[65];  /* lower-case hex over the public key: TLSA "3 1 1" */
};

/* Fills *ci from the certificate x (not consumed). Returns 0, or -1 if a
 * digest cannot be computed. */
int certinfo_from_x509(X509 *x, struct certinfo *ci);

/* Reads the first certificate of the PEM file at path (the leaf of a
 * chain file) into *ci. Returns 0, or -1 with the reason in err. */
int certinfo_read(const char *path, struct certinfo *ci, char *err, size_t errlen);

/* The certificate file host h serves: its tls_cert, or the self-signed one
 * natterd creates at <data_dir>/certs/<domain>.crt on its first start. */
void certinfo_path(const struct config *cfg, const struct config_host *h, char *out, size_t cap);

#endif

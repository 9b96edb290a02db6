#include "tls/certinfo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Appends "label:value" to out (", " between entries; label NULL: the
 * value alone), with bytes that are not printable ASCII shown as '?': a
 * name is for reading, never for a terminal to interpret. */
static void certinfo_append(char *out, size_t cap, const char *label, const unsigned char *v,
			    size_t n)
{
	size_t used = strlen(out);
	int w = label ? snprintf(out + used, cap - used, "%s%s:", used ? ", " : "", label) : 0;
	if (w < 0 || (size_t)w >= cap - used)
		return;
	used += (size_t)w;
	for (size_t i = 0; i < n && used + 1 < cap; i++)
		out[used++] = v[i] >= 0x20 && v[i] < 0x7f ? (char)v[i] : '?';
	out[used] = '\0';
}

static void certinfo_string(char *out, size_t cap, const char *label, const ASN1_STRING *s)
{
	certinfo_append(out, cap, label, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
}

/* An otherName: the two RFC 6120 §13.7.1.4 identities by name, others by
 * their OID. */
static void certinfo_othername(char *out, size_t cap, const OTHERNAME *on)
{
	char oid[64];
	OBJ_obj2txt(oid, sizeof oid, on->type_id, 1);
	const ASN1_TYPE *v = on->value;
	if (strcmp(oid, "1.3.6.1.5.5.7.8.5") == 0 && v->type == V_ASN1_UTF8STRING)
		certinfo_string(out, cap, "XmppAddr", v->value.asn1_string);
	else if (strcmp(oid, "1.3.6.1.5.5.7.8.7") == 0 && v->type == V_ASN1_IA5STRING)
		certinfo_string(out, cap, "SRV", v->value.asn1_string);
	else
		certinfo_append(out, cap, "otherName", (const unsigned char *)oid, strlen(oid));
}

static void certinfo_ip(char *out, size_t cap, const ASN1_OCTET_STRING *ip)
{
	char text[INET6_ADDRSTRLEN] = "?";
	int len = ASN1_STRING_length(ip);
	if (len == 4 || len == 16)
		inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), text, sizeof text);
	certinfo_append(out, cap, "IP", (const unsigned char *)text, strlen(text));
}

static void certinfo_cn(const X509_NAME *name, char *out, size_t cap)
{
	int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (at >= 0)
		certinfo_string(out, cap, NULL, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
}

static void certinfo_names(X509 *x, struct certinfo *ci)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type == GEN_DNS)
			certinfo_string(ci->names, sizeof ci->names, "DNS", gn->d.dNSName);
		else if (gn->type == GEN_IPADD)
			certinfo_ip(ci->names, sizeof ci->names, gn->d.iPAddress);
		else if (gn->type == GEN_OTHERNAME)
			certinfo_othername(ci->names, sizeof ci->names, gn->d.otherName);
		else if (gn->type == GEN_EMAIL)
			certinfo_string(ci->names, sizeof ci->names, "email", gn->d.rfc822Name);
		else if (gn->type == GEN_URI)
			certinfo_string(ci->names, sizeof ci->names, "URI",
					gn->d.uniformResourceIdentifier);
	}
	GENERAL_NAMES_free(names);

	certinfo_cn(X509_get_subject_name(x), ci->subject_cn, sizeof ci->subject_cn);
	certinfo_cn(X509_get_issuer_name(x), ci->issuer_cn, sizeof ci->issuer_cn);
}

/* "AB:CD:..." of the digest md over the DER certificate, as clients show it. */
static int certinfo_digest(X509 *x, const EVP_MD *md, char *out, size_t cap)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (X509_digest(x, md, d, &n) != 1 || cap < (size_t)n * 3)
		return -1;
	for (unsigned i = 0; i < n; i++)
		snprintf(out + 3 * i, 4, "%02X%s", d[i], i + 1 < n ? ":" : "");
	return 0;
}

static int certinfo_spki(X509 *x, struct certinfo *ci)
{
	unsigned char *der = NULL, md[32];
	int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	if (len <= 0)
		return -1;
	unsigned n = 0;
	int ok = EVP_Digest(der, (size_t)len, md, &n, EVP_sha256(), NULL) == 1 && n == 32;
	OPENSSL_free(der);
	if (!ok)
		return -1;
	for (int i = 0; i < 32; i++)
		snprintf(ci->spki_sha256 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void certinfo_expiry(X509 *x, struct certinfo *ci)
{
	struct tm tm;
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
		snprintf(ci->not_after, sizeof ci->not_after, "unreadable");
		return;
	}
	strftime(ci->not_after, sizeof ci->not_after, "%Y-%m-%d %H:%M:%S UTC", &tm);
	ci->expires = timegm(&tm);
}

int certinfo_from_x509(X509 *x, struct certinfo *ci)
{
	memset(ci, 0, sizeof *ci);
	certinfo_names(x, ci);
	certinfo_expiry(x, ci);
	/* Self-issued and verifiable with its own key: what a client cannot
	 * check against a CA and asks the user about. */
	EVP_PKEY *key = X509_get0_pubkey(x);
	ci->self_signed = X509_check_issued(x, x) == X509_V_OK && key != NULL &&
			  X509_verify(x, key) == 1;
	if (certinfo_digest(x, EVP_sha1(), ci->sha1, sizeof ci->sha1) != 0 ||
	    certinfo_digest(x, EVP_sha256(), ci->sha256, sizeof ci->sha256) != 0 ||
	    certinfo_spki(x, ci) != 0)
		return -1;
	return 0;
}

int certinfo_read(const char *path, struct certinfo *ci, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x == NULL) {
		snprintf(err, errlen, "%s: no PEM certificate in it", path);
		return -1;
	}
	int rc = certinfo_from_x509(x, ci);
	X509_free(x);
	if (rc != 0)
		snprintf(err, errlen, "%s: cannot compute its fingerprints", path);
	return rc;
}

void certinfo_path(const struct config *cfg, const struct config_host *h, char *out, size_t cap)
{
	if (h->tls_cert != NULL)
		snprintf(out, cap, "%s", h->tls_cert);
	else
		snprintf(out, cap, "%s/certs/%s.crt", cfg->data_dir, h->domain);
}

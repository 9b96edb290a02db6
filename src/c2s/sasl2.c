#include "c2s/sasl2.h"

#include <openssl/evp.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "c2s/csi.h"
#include "c2s/sm.h"
#include "core/log.h"
#include "core/util.h"

void sasl2_write_feature(struct buf *out, SSL *ssl, const struct config *cfg,
			 const struct config_host *host)
{
	buf_puts(out, "<authentication xmlns='" NS_SASL2 "'>");
	auth_write_mechanisms(out, ssl, cfg->allow_plain, host);
	buf_puts(out, "<inline>"
		      "<bind xmlns='" NS_BIND2 "'><inline>"
		      "<feature var='" NS_CARBONS2 "'/>"
		      "<feature var='" NS_CSI "'/>"
		      "<feature var='" NS_SM "'/>"
		      "</inline></bind>"
		      "<sm xmlns='" NS_SM "'/>");
	/* FAST only where natter keeps the accounts: a token must not
	 * outlive an account removed from a directory. */
	if (fast_enabled(cfg) && host != NULL && host->auth == HOST_AUTH_INTERNAL)
		fast_write_feature(out, ssl);
	buf_puts(out, "</inline></authentication>");
}

char *sasl2_text(struct arena *a, const struct xml_node *n)
{
	const char *t = xml_text(a, n);
	char *out = xmalloc(strlen(t) + 1);
	size_t o = 0;
	for (; *t; t++)
		if (*t != ' ' && *t != '\t' && *t != '\r' && *t != '\n')
			out[o++] = *t;
	out[o] = '\0';
	return out;
}

/* Copies printable text, at most cap - 1 bytes, cut on a character
 * boundary. */
static void copy_clean(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	for (; s && *s && o + 1 < cap; s++)
		out[o++] = (unsigned char)*s < 0x20 ? ' ' : *s;
	while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
		o--;
	if (o > 0 && (unsigned char)out[o - 1] >= 0xC0)
		o--;
	out[o] = '\0';
}

static bool truthy(const char *v) { return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0); }

static void read_bind(struct sasl2_request *r, const struct xml_node *bind, struct arena *a)
{
	r->bind = true;
	for (const struct xml_node *c = bind->children; c; c = c->next) {
		if (c->name == NULL)
			continue;
		if (xml_is(c, NS_BIND2, "tag")) {
			/* A resource part: printable ASCII letters, digits and a
			 * few marks, so that the resource stays a valid one. */
			const char *t = xml_text(a, c);
			size_t o = 0;
			for (; *t && o + 1 < sizeof r->tag; t++)
				if ((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
				    (*t >= '0' && *t <= '9') || *t == '-' || *t == '_' || *t == '.')
					r->tag[o++] = *t;
			r->tag[o] = '\0';
		} else if (xml_is(c, NS_CARBONS2, "enable")) {
			r->carbons = true;
		} else if (xml_is(c, NS_CSI, "inactive")) {
			r->inactive = true; /* XEP-0386 §3: the client starts inactive */
		} else if (xml_is(c, NS_SM3, "enable")) {
			r->sm_enable = true;
			r->sm_enable_resume = truthy(xml_attr(c, "resume"));
		} else {
			log_debug("SASL2: <%s xmlns='%s'/> in bind ignored", c->name,
				  c->ns ? c->ns : "");
		}
	}
}

struct sasl2_request *sasl2_parse(struct xml_node *st, struct arena *a, const char **condition)
{
	const char *mech = xml_attr(st, "mechanism");
	if (mech == NULL || mech[0] == '\0' || strlen(mech) >= sizeof ((struct sasl2_request *)0)->mech) {
		*condition = "invalid-mechanism";
		return NULL;
	}
	if (xml_attr(st, "upgrade") != NULL) {
		/* XEP-0388 §2.3: no <upgrade/> task is offered, so any asked
		 * for fails the authentication. */
		*condition = "invalid-mechanism";
		return NULL;
	}
	struct sasl2_request *r = xcalloc(1, sizeof *r);
	snprintf(r->mech, sizeof r->mech, "%s", mech);
	int n_initial = 0, n_bind = 0, n_fast = 0;
	for (const struct xml_node *c = st->children; c; c = c->next) {
		if (c->name == NULL)
			continue;
		if (xml_is(c, NS_SASL2, "initial-response")) {
			n_initial++;
			free(r->initial);
			r->initial = sasl2_text(a, c);
		} else if (xml_is(c, NS_SASL2, "user-agent")) {
			const char *id = xml_attr(c, "id");
			copy_clean(r->ua_id, sizeof r->ua_id, id);
			struct xml_node *sw = xml_child(c, NS_SASL2, "software");
			struct xml_node *dev = xml_child(c, NS_SASL2, "device");
			copy_clean(r->software, sizeof r->software, sw ? xml_text(a, sw) : "");
			copy_clean(r->device, sizeof r->device, dev ? xml_text(a, dev) : "");
		} else if (xml_is(c, NS_BIND2, "bind")) {
			n_bind++;
			read_bind(r, c, a);
		} else if (xml_is(c, NS_FAST, "fast")) {
			n_fast++;
			r->fast = true;
			const char *count = xml_attr(c, "count");
			if (count != NULL) {
				char *end;
				errno = 0;
				r->fast_count = strtoull(count, &end, 10);
				if (*end != '\0' || count[0] == '-' || r->fast_count == 0 ||
				    errno == ERANGE)
					n_fast = 99; /* a count is a positive integer */
			}
			r->fast_invalidate = truthy(xml_attr(c, "invalidate"));
		} else if (xml_is(c, NS_FAST, "request-token")) {
			copy_clean(r->request_token, sizeof r->request_token,
				   xml_attr(c, "mechanism"));
		} else if (xml_is(c, NS_SM3, "resume")) {
			r->sm_resume = true;
			copy_clean(r->sm_previd, sizeof r->sm_previd, xml_attr(c, "previd"));
			copy_clean(r->sm_h, sizeof r->sm_h, xml_attr(c, "h"));
		} else {
			log_debug("SASL2: inline <%s xmlns='%s'/> ignored", c->name,
				  c->ns ? c->ns : "");
		}
	}
	if (n_initial > 1 || n_bind > 1 || n_fast > 1) {
		*condition = "malformed-request";
		sasl2_free(r);
		return NULL;
	}
	return r;
}

void sasl2_free(struct sasl2_request *r)
{
	if (r == NULL)
		return;
	free(r->initial);
	free(r->additional);
	free(r->sm_answer);
	free(r);
}

void sasl2_write_challenge(struct buf *out, const char *data, size_t len)
{
	buf_puts(out, "<challenge xmlns='" NS_SASL2 "'>");
	buf_append(out, data, len);
	buf_puts(out, "</challenge>");
}

void sasl2_write_failure(struct buf *out, const char *condition, const char *text)
{
	buf_printf(out, "<failure xmlns='" NS_SASL2 "'><%s xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
		   condition);
	if (text != NULL) {
		buf_puts(out, "<text>");
		buf_append_escaped(out, text, strlen(text));
		buf_puts(out, "</text>");
	}
	buf_puts(out, "</failure>");
}

void sasl2_bind_resource(const struct sasl2_request *r, const char *bare, char *out, size_t cap)
{
	char suffix[17];
	if (r->ua_id[0] != '\0') {
		unsigned char md[32];
		unsigned int n = sizeof md;
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
		EVP_DigestUpdate(ctx, bare, strlen(bare) + 1);
		EVP_DigestUpdate(ctx, r->ua_id, strlen(r->ua_id));
		EVP_DigestFinal_ex(ctx, md, &n);
		EVP_MD_CTX_free(ctx);
		for (int i = 0; i < 4; i++)
			snprintf(suffix + 2 * i, 3, "%02x", md[i]);
	} else {
		random_hex(suffix, 4);
	}
	snprintf(out, cap, "%s.%s", r->tag[0] ? r->tag : "natter", suffix);
}

#include "auth/fast.h"

#include <errno.h>
#include <fcntl.h>
#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "jid/jid.h"
#include "storage/storeq.h"
#include "tls/tls.h"

#define NS_FAST "urn:xmpp:fast:0"

int fast_init(struct server *srv)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/fast.key", srv->cfg->data_dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		unsigned char key[32];
		if (RAND_bytes(key, sizeof key) != 1)
			return -1;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, key, sizeof key) != (ssize_t)sizeof key || fsync(fd) != 0) {
			log_error("cannot write the FAST key %s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			OPENSSL_cleanse(key, sizeof key);
			return -1;
		}
		close(fd);
		OPENSSL_cleanse(key, sizeof key);
		log_info("FAST: new token key %s", path);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0) {
		log_error("cannot read the FAST key %s: %s", path, strerror(errno));
		return -1;
	}
	ssize_t n = read(fd, srv->fast_key, sizeof srv->fast_key);
	close(fd);
	if (n != (ssize_t)sizeof srv->fast_key) {
		log_error("the FAST key %s is not %zu bytes", path, sizeof srv->fast_key);
		return -1;
	}
	return 0;
}

void fast_free(struct server *srv) { OPENSSL_cleanse(srv->fast_key, sizeof srv->fast_key); }

bool fast_enabled(const struct config *cfg) { return cfg->limits.fast_token_lifetime > 0; }

void fast_write_feature(struct buf *out, SSL *ssl)
{
	buf_puts(out, "<fast xmlns='" NS_FAST "'>");
	if (tls_cb_exporter_available(ssl))
		buf_puts(out, "<mechanism>HT-SHA-256-EXPR</mechanism>");
	if (tls_cb_unique_defined(ssl))
		buf_puts(out, "<mechanism>HT-SHA-256-UNIQ</mechanism>");
	buf_puts(out, "<mechanism>HT-SHA-256-NONE</mechanism></fast>");
}

bool fast_mech_offered(const char *mech, SSL *ssl)
{
	if (strcmp(mech, "HT-SHA-256-NONE") == 0)
		return true;
	if (strcmp(mech, "HT-SHA-256-EXPR") == 0)
		return tls_cb_exporter_available(ssl);
	if (strcmp(mech, "HT-SHA-256-UNIQ") == 0)
		return tls_cb_unique_defined(ssl);
	return false;
}

/* Strict base64 (no whitespace); returns the decoded length or -1. */
static long decode64(const char *b64, unsigned char *out, size_t cap)
{
	char *raw = NULL;
	size_t len = 0;
	if (gsasl_base64_from(b64, strlen(b64), &raw, &len) != GSASL_OK)
		return -1;
	long rc = -1;
	if (len <= cap) {
		memcpy(out, raw, len);
		rc = (long)len;
	}
	gsasl_free(raw);
	return rc;
}

int fast_channel_binding(struct fast_check *fc, SSL *ssl)
{
	char b64[128];
	fc->cb_len = 0;
	if (strcmp(fc->mech, "HT-SHA-256-NONE") == 0)
		return 0;
	int rc = strcmp(fc->mech, "HT-SHA-256-EXPR") == 0   ? tls_cb_exporter(ssl, b64, sizeof b64)
		 : strcmp(fc->mech, "HT-SHA-256-UNIQ") == 0 ? tls_cb_unique(ssl, b64, sizeof b64)
							    : -1;
	if (rc != 0)
		return -1;
	long n = decode64(b64, fc->cb, sizeof fc->cb);
	if (n < 0)
		return -1;
	fc->cb_len = (size_t)n;
	return 0;
}

int fast_parse_initial(const char *b64, char *local, size_t local_cap, unsigned char hash[32])
{
	unsigned char raw[1100];
	long n = decode64(b64, raw, sizeof raw);
	if (n < 34)
		return -1;
	const unsigned char *nul = memchr(raw, 0, (size_t)n);
	if (nul == NULL || raw + n - (nul + 1) != 32 || nul == raw)
		return -1;
	memcpy(hash, nul + 1, 32);
	if (jid_prep_local((const char *)raw, (size_t)(nul - raw), local, local_cap) < 0)
		return -2;
	return 0;
}

/* --- tokens and records --- */

/* The token of a slot: base64url (no padding) of HMAC(key, account NUL
 * device NUL nonce). */
static void derive_token(const unsigned char key[32], const char *domain, const char *local,
			 const char *device, const char *nonce, char out[FAST_TOKEN_MAX])
{
	struct buf m;
	buf_init(&m);
	buf_printf(&m, "%s@%s", local, domain);
	buf_append(&m, "", 1);
	buf_append(&m, device, strlen(device) + 1);
	buf_puts(&m, nonce);
	unsigned char mac[32];
	unsigned int maclen = sizeof mac;
	HMAC(EVP_sha256(), key, 32, (const unsigned char *)m.data, m.len, mac, &maclen);
	buf_free(&m);
	char b64[64];
	EVP_EncodeBlock((unsigned char *)b64, mac, 32);
	size_t o = 0;
	for (size_t i = 0; b64[i] && b64[i] != '=' && o + 1 < FAST_TOKEN_MAX; i++)
		out[o++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	out[o] = '\0';
	OPENSSL_cleanse(mac, sizeof mac);
}

/* HMAC(token, label || cb) as HT defines both hashes. */
static void ht_hash(const char *token, const char *label, const unsigned char *cb, size_t cb_len,
		    unsigned char out[32])
{
	unsigned char msg[16 + 64];
	size_t l = strlen(label);
	memcpy(msg, label, l);
	memcpy(msg + l, cb, cb_len);
	unsigned int n = 32;
	HMAC(EVP_sha256(), token, (int)strlen(token), msg, l + cb_len, out, &n);
}

struct slot {
	char mech[32];      /* "" when empty */
	char nonce[33];
	long long expiry;
	unsigned long long count;
};

struct record {
	long long last_used; /* microseconds since the epoch */
	char software[65];
	char device_name[65];
	struct slot fresh;   /* issued, not used yet */
	struct slot current; /* the last one used */
};

/* Field i of a tab-separated line into out. */
static void field(const char *s, size_t len, int i, char *out, size_t cap)
{
	const char *p = s, *end = s + len;
	for (; i > 0 && p < end; i--) {
		const char *t = memchr(p, '\t', (size_t)(end - p));
		p = t ? t + 1 : end;
	}
	const char *t = memchr(p, '\t', (size_t)(end - p));
	size_t n = (size_t)((t ? t : end) - p);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

static void parse_slot(const char *s, size_t len, int at, struct slot *sl)
{
	char tmp[40];
	field(s, len, at, sl->mech, sizeof sl->mech);
	if (strcmp(sl->mech, "-") == 0)
		sl->mech[0] = '\0';
	field(s, len, at + 1, sl->nonce, sizeof sl->nonce);
	field(s, len, at + 2, tmp, sizeof tmp);
	sl->expiry = strtoll(tmp, NULL, 10);
	field(s, len, at + 3, tmp, sizeof tmp);
	sl->count = strtoull(tmp, NULL, 10);
}

static int parse_record(const char *s, size_t len, struct record *r)
{
	char tmp[40];
	memset(r, 0, sizeof *r);
	field(s, len, 0, tmp, sizeof tmp);
	if (strcmp(tmp, "1") != 0)
		return -1;
	field(s, len, 1, tmp, sizeof tmp);
	r->last_used = strtoll(tmp, NULL, 10);
	field(s, len, 2, r->software, sizeof r->software);
	field(s, len, 3, r->device_name, sizeof r->device_name);
	parse_slot(s, len, 4, &r->fresh);
	parse_slot(s, len, 8, &r->current);
	return 0;
}

static void put_slot(struct buf *b, const struct slot *sl)
{
	if (sl->mech[0] == '\0')
		buf_puts(b, "\t-\t-\t0\t0");
	else
		buf_printf(b, "\t%s\t%s\t%lld\t%llu", sl->mech, sl->nonce, sl->expiry, sl->count);
}

static void format_record(const struct record *r, struct buf *b)
{
	buf_printf(b, "1\t%lld\t%s\t%s", r->last_used, r->software, r->device_name);
	put_slot(b, &r->fresh);
	put_slot(b, &r->current);
}

/* Copies s without tabs, newlines and control characters. */
static void clean_copy(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	for (; s && *s && o + 1 < cap; s++)
		out[o++] = (unsigned char)*s < 0x20 ? ' ' : *s;
	out[o] = '\0';
}

static void new_slot(struct slot *sl, const char *mech, long long expiry)
{
	snprintf(sl->mech, sizeof sl->mech, "%s", mech);
	random_hex(sl->nonce, 16);
	sl->expiry = expiry;
	sl->count = 0;
}

/* Microseconds since the epoch: when a device was last used, fine
 * enough that logins in one second still order. */
static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* --- the storage-thread jobs --- */

struct lru {
	int n;
	char oldest[FAST_DEVICE_MAX + 1];
	long long oldest_used;
	const char *skip;
};

static void lru_each(void *arg, const char *key, const void *value, size_t len)
{
	struct lru *l = arg;
	struct record r;
	if (strcmp(key, l->skip) == 0)
		return;
	l->n++;
	long long used = parse_record(value, len, &r) == 0 ? r.last_used : 0;
	if (l->oldest[0] == '\0' || used < l->oldest_used) {
		snprintf(l->oldest, sizeof l->oldest, "%s", key);
		l->oldest_used = used;
	}
}

/* Makes room for one more device: the least recently used go. */
static int evict(struct storage *st, const struct storage_driver *drv, const char *domain,
		 const char *local, const char *device, int max)
{
	for (int round = 0; round < 1000; round++) {
		struct lru l = { .skip = device };
		if (drv->map_list(st, domain, local, FAST_MAP, lru_each, &l) < 0)
			return -1;
		if (l.n < max)
			return 0;
		log_info("FAST: %s@%s holds %d device tokens; the least recently used goes", local,
			 domain, l.n);
		if (drv->map_del(st, domain, local, FAST_MAP, l.oldest) < 0)
			return -1;
	}
	return 0;
}

struct issue_job {
	char domain[1024], local[1024];
	char device[FAST_DEVICE_MAX + 1];
	char software[65], device_name[65];
	struct slot slot;
	int max;
	long long now;
	void (*done)(struct loop *l, void *arg, int rc);
	void *arg;
};

static int issue_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct issue_job *j = arg;
	struct buf v;
	buf_init(&v);
	struct record r;
	int rc = drv->map_get(st, j->domain, j->local, FAST_MAP, j->device, &v);
	if (rc != 0 || parse_record(v.data, v.len, &r) != 0)
		memset(&r, 0, sizeof r); /* a new device, or a record not read */
	if (rc == 1 && evict(st, drv, j->domain, j->local, j->device, j->max) < 0)
		rc = -1;
	/* XEP-0484 §4.4: the unused token issued before goes; the one in
	 * use stays until the new one is used. */
	r.fresh = j->slot;
	r.last_used = j->now;
	snprintf(r.software, sizeof r.software, "%s", j->software);
	snprintf(r.device_name, sizeof r.device_name, "%s", j->device_name);
	v.len = 0;
	format_record(&r, &v);
	int w = drv->map_put(st, j->domain, j->local, FAST_MAP, j->device, v.data, v.len);
	buf_free(&v);
	return w;
}

static void issue_done(struct loop *l, void *arg, int rc)
{
	struct issue_job *j = arg;
	j->done(l != NULL && !loop_stopping(l) ? l : NULL, j->arg, rc);
	free(j);
}

int fast_issue(struct loop *l, const char *domain, const char *local, const char *device,
	       const char *software, const char *device_name, const char *mech,
	       char token[FAST_TOKEN_MAX], long long *expiry,
	       void (*done)(struct loop *l, void *arg, int rc), void *arg)
{
	const struct config_limits *lim = &l->srv->cfg->limits;
	if (lim->fast_token_lifetime <= 0 || device == NULL || device[0] == '\0')
		return -1;
	struct issue_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", domain);
	snprintf(j->local, sizeof j->local, "%s", local);
	snprintf(j->device, sizeof j->device, "%s", device);
	clean_copy(j->software, sizeof j->software, software);
	clean_copy(j->device_name, sizeof j->device_name, device_name);
	j->now = now_us();
	j->max = lim->max_fast_tokens;
	new_slot(&j->slot, mech, (long long)time(NULL) + lim->fast_token_lifetime);
	derive_token(l->srv->fast_key, domain, local, j->device, j->slot.nonce, token);
	*expiry = j->slot.expiry;
	j->done = done;
	j->arg = arg;
	storeq_call(l->srv->storeq, l, issue_run, issue_done, j);
	return 0;
}

/* Whether the client's hash proves the token of slot sl. */
static bool slot_matches(const struct fast_check *fc, const struct slot *sl, char *token)
{
	if (sl->mech[0] == '\0')
		return false;
	derive_token(fc->srv->fast_key, fc->domain, fc->local, fc->device, sl->nonce, token);
	unsigned char want[32];
	ht_hash(token, "Initiator", fc->cb, fc->cb_len, want);
	bool ok = CRYPTO_memcmp(want, fc->hash, 32) == 0;
	OPENSSL_cleanse(want, sizeof want);
	return ok;
}

static int check_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct fast_check *fc = arg;
	struct buf v;
	buf_init(&v);
	struct record r;
	fc->outcome = FAST_REFUSED;
	int rc = drv->map_get(st, fc->domain, fc->local, FAST_MAP, fc->device, &v);
	if (rc != 0 || parse_record(v.data, v.len, &r) != 0) {
		if (rc < 0)
			fc->outcome = FAST_STORE_ERROR;
		buf_free(&v);
		return rc < 0 ? -1 : 0;
	}
	char token[FAST_TOKEN_MAX];
	struct slot *used = NULL;
	if (slot_matches(fc, &r.fresh, token))
		used = &r.fresh;
	else if (slot_matches(fc, &r.current, token))
		used = &r.current;
	const char *why = NULL;
	if (used == NULL)
		why = "no token of this device matches";
	else if (strcmp(used->mech, fc->mech) != 0)
		why = "the token was issued for another mechanism";
	else if (used->expiry <= (long long)fc->now)
		why = "the token has expired", fc->outcome = FAST_EXPIRED;
	else if (fc->count != 0 && fc->count <= used->count)
		why = "the replay count is not above the last one seen";
	if (why != NULL) {
		log_info("FAST login of %s@%s (device '%s') refused: %s", fc->local, fc->domain,
			 fc->device, why);
		OPENSSL_cleanse(token, sizeof token);
		buf_free(&v);
		return 0;
	}
	fc->outcome = FAST_OK;
	unsigned char resp[32];
	ht_hash(token, "Responder", fc->cb, fc->cb_len, resp);
	EVP_EncodeBlock((unsigned char *)fc->responder, resp, 32);
	OPENSSL_cleanse(token, sizeof token);
	/* The token used becomes current; an older current one is gone for
	 * good (XEP-0484 §4.4), and so is an unused fresh one when the
	 * current one was used. */
	if (fc->count != 0)
		used->count = fc->count;
	r.current = *used;
	memset(&r.fresh, 0, sizeof r.fresh);
	r.last_used = now_us();
	if (fc->invalidate) {
		log_info("FAST: %s@%s invalidated the token of device '%s'", fc->local, fc->domain,
			 fc->device);
		memset(&r.current, 0, sizeof r.current);
		if (fc->next_mech[0] == '\0') {
			int d = drv->map_del(st, fc->domain, fc->local, FAST_MAP, fc->device);
			buf_free(&v);
			return d < 0 ? -1 : 0;
		}
		/* A <request-token/> beside it: the device starts afresh. */
	}
	if (fc->next_mech[0] != '\0') {
		new_slot(&r.fresh, fc->next_mech, (long long)fc->now + fc->new_expiry);
		derive_token(fc->srv->fast_key, fc->domain, fc->local, fc->device, r.fresh.nonce,
			     fc->new_token);
		fc->new_expiry = r.fresh.expiry;
	}
	v.len = 0;
	format_record(&r, &v);
	int w = drv->map_put(st, fc->domain, fc->local, FAST_MAP, fc->device, v.data, v.len);
	buf_free(&v);
	return w;
}

static void check_done(struct loop *l, void *arg, int rc)
{
	struct fast_check *fc = arg;
	if (rc < 0) {
		fc->outcome = FAST_STORE_ERROR;
		fc->new_token[0] = '\0';
	}
	fc->done(l != NULL && !loop_stopping(l) ? l : NULL, fc, fc->arg);
	OPENSSL_cleanse(fc->new_token, sizeof fc->new_token);
	free(fc);
}

void fast_check(struct loop *l, struct fast_check *fc,
		void (*done)(struct loop *l, struct fast_check *fc, void *arg), void *arg)
{
	fc->srv = l->srv;
	fc->done = done;
	fc->arg = arg;
	fc->now = (unsigned long long)time(NULL);
	/* The lifetime of the next token rides in new_expiry until the job
	 * turns it into a date. */
	fc->new_expiry = l->srv->cfg->limits.fast_token_lifetime;
	fc->new_token[0] = '\0';
	if (fc->new_expiry <= 0) {
		fc->outcome = FAST_REFUSED;
		fc->done(l, fc, arg);
		free(fc);
		return;
	}
	storeq_call(l->srv->storeq, l, check_run, check_done, fc);
}

struct forget_job {
	char domain[1024], local[1024];
};

static int forget_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct forget_job *j = arg;
	return drv->map_del(st, j->domain, j->local, FAST_MAP, NULL) < 0 ? -1 : 0;
}

void fast_forget_account(struct loop *l, const char *domain, const char *local)
{
	struct forget_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", domain);
	snprintf(j->local, sizeof j->local, "%s", local);
	storeq_call(l->srv->storeq, NULL, forget_run, NULL, j);
}

static void describe_time(struct buf *out, long long secs)
{
	char when[40];
	datetime_format(secs * 1000000LL, when, sizeof when);
	buf_puts(out, when);
}

void fast_describe(const void *value, size_t len, struct buf *out)
{
	struct record r;
	if (parse_record(value, len, &r) != 0) {
		buf_puts(out, "(unreadable record)");
		return;
	}
	char when[40];
	datetime_format(r.last_used, when, sizeof when);
	buf_printf(out, "last used %s", when);
	buf_printf(out, ", software '%s', device '%s'", r.software, r.device_name);
	const struct slot *slots[] = { &r.current, &r.fresh };
	const char *names[] = { "in use", "issued" };
	for (int i = 0; i < 2; i++) {
		if (slots[i]->mech[0] == '\0')
			continue;
		buf_printf(out, "; %s: %s, expires ", names[i], slots[i]->mech);
		describe_time(out, slots[i]->expiry);
	}
}

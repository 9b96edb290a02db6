#include "sasl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <uv.h>

#define SHA1_LEN 20
#define CACHE_BUCKETS 65536

struct sasl_cache_entry {
	struct sasl_cache_entry *next;
	uint64_t hash;
	unsigned iterations;
	unsigned char client_key[SHA1_LEN];
	unsigned char stored_key[SHA1_LEN];
	unsigned char server_key[SHA1_LEN];
	size_t key_len;
	char key[]; /* password \0 salt */
};

struct sasl_cache {
	uv_mutex_t lock;
	unsigned long misses;
	struct sasl_cache_entry *bucket[CACHE_BUCKETS];
};

struct sasl_cache *sasl_cache_new(void)
{
	struct sasl_cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	uv_mutex_init(&c->lock);
	return c;
}

void sasl_cache_free(struct sasl_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < CACHE_BUCKETS; i++) {
		struct sasl_cache_entry *e = c->bucket[i];
		while (e) {
			struct sasl_cache_entry *next = e->next;
			free(e);
			e = next;
		}
	}
	uv_mutex_destroy(&c->lock);
	free(c);
}

unsigned long sasl_cache_misses(struct sasl_cache *c)
{
	uv_mutex_lock(&c->lock);
	unsigned long n = c->misses;
	uv_mutex_unlock(&c->lock);
	return n;
}

char *sasl_b64_encode(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	if (!out)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

unsigned char *sasl_b64_decode(const char *s, size_t *len)
{
	size_t n = strlen(s);
	char *clean = malloc(n + 1);
	if (!clean)
		return NULL;
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			clean[m++] = s[i];
	clean[m] = '\0';
	if (m % 4 != 0) {
		free(clean);
		return NULL;
	}
	unsigned char *out = malloc(m / 4 * 3 + 1);
	if (!out) {
		free(clean);
		return NULL;
	}
	int r = m ? EVP_DecodeBlock(out, (unsigned char *)clean, (int)m) : 0;
	if (r < 0) {
		free(clean);
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	size_t pad = 0;
	if (m >= 1 && clean[m - 1] == '=')
		pad++;
	if (m >= 2 && clean[m - 2] == '=')
		pad++;
	free(clean);
	*len = (size_t)r - pad;
	out[*len] = '\0';
	return out;
}

char *sasl_plain_initial(const char *user, const char *password)
{
	size_t ul = strlen(user), pl = strlen(password);
	char *raw = malloc(ul + pl + 2);
	if (!raw)
		return NULL;
	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, password, pl);
	char *out = sasl_b64_encode(raw, ul + pl + 2);
	free(raw);
	return out;
}

char *sasl_ht_initial(const char *user, const char *token)
{
	size_t ul = strlen(user);
	unsigned char raw[256 + EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (ul > 255)
		return NULL;
	memcpy(raw, user, ul);
	raw[ul] = '\0';
	if (!HMAC(EVP_sha256(), token, (int)strlen(token), (const unsigned char *)"Initiator", 9,
		  raw + ul + 1, &n))
		return NULL;
	return sasl_b64_encode(raw, ul + 1 + n);
}

bool sasl_ht_verify(const char *token, const char *final_b64)
{
	unsigned char expect[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	size_t got_len;
	unsigned char *got = sasl_b64_decode(final_b64, &got_len);
	bool ok = got && HMAC(EVP_sha256(), token, (int)strlen(token),
			      (const unsigned char *)"Responder", 9, expect, &n) &&
		  got_len == n && CRYPTO_memcmp(got, expect, n) == 0;
	free(got);
	return ok;
}

/* RFC 5802 saslname: ',' and '=' escaped. */
static void scram_saslname(char *out, size_t cap, const char *user)
{
	size_t j = 0;
	for (const char *p = user; *p && j + 4 < cap; p++) {
		if (*p == ',') {
			memcpy(out + j, "=2C", 3);
			j += 3;
		} else if (*p == '=') {
			memcpy(out + j, "=3D", 3);
			j += 3;
		} else {
			out[j++] = *p;
		}
	}
	out[j] = '\0';
}

char *sasl_scram_start(struct sasl_scram *s, const char *user)
{
	unsigned char rnd[18];
	memset(s, 0, sizeof *s);
	if (RAND_bytes(rnd, sizeof rnd) != 1)
		return NULL;
	/* 18 bytes give 24 base64 characters and no padding; '+' and '/' are
	 * printable and comma-free, as a nonce must be. */
	EVP_EncodeBlock((unsigned char *)s->cnonce, rnd, sizeof rnd);
	char name[256];
	scram_saslname(name, sizeof name, user);
	size_t n = strlen(name) + strlen(s->cnonce) + 8;
	s->client_first_bare = malloc(n);
	if (!s->client_first_bare)
		return NULL;
	snprintf(s->client_first_bare, n, "n=%s,r=%s", name, s->cnonce);
	size_t m = strlen(s->client_first_bare) + 4;
	char *first = malloc(m);
	if (!first)
		return NULL;
	snprintf(first, m, "n,,%s", s->client_first_bare);
	char *out = sasl_b64_encode(first, strlen(first));
	free(first);
	return out;
}

/* The value of attribute `name` in a SCRAM message, copied into out. */
static bool scram_attr(const char *msg, char name, char *out, size_t cap)
{
	const char *p = msg;
	while (p && *p) {
		if (p[0] == name && p[1] == '=') {
			const char *v = p + 2;
			const char *end = strchr(v, ',');
			size_t n = end ? (size_t)(end - v) : strlen(v);
			if (n + 1 > cap)
				return false;
			memcpy(out, v, n);
			out[n] = '\0';
			return true;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return false;
}

static uint64_t fnv1a(const char *s, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void hmac_sha1(const unsigned char *key, size_t keylen, const void *msg, size_t len,
		      unsigned char out[SHA1_LEN])
{
	unsigned int n = SHA1_LEN;
	HMAC(EVP_sha1(), key, (int)keylen, msg, len, out, &n);
}

/* Finds or computes the keys of (password, salt, iterations). They are a
 * function of exactly these, so clients of accounts that share a password
 * and salt (bulk-created benchmark accounts) share an entry; a client that
 * logged in before would have them at hand either way. The PBKDF2 runs
 * outside the lock; two threads missing at once both compute and one entry
 * wins, which is harmless. */
static const struct sasl_cache_entry *scram_keys(struct sasl_cache *c, const char *password,
						 const unsigned char *salt, size_t salt_len,
						 unsigned iterations)
{
	size_t pl = strlen(password);
	size_t klen = pl + 1 + salt_len;
	char *key = malloc(klen);
	if (!key)
		return NULL;
	memcpy(key, password, pl + 1);
	memcpy(key + pl + 1, salt, salt_len);
	uint64_t h = fnv1a(key, klen, 1469598103934665603ull) ^ iterations;
	size_t b = h % CACHE_BUCKETS;

	uv_mutex_lock(&c->lock);
	for (struct sasl_cache_entry *e = c->bucket[b]; e; e = e->next) {
		if (e->hash == h && e->iterations == iterations && e->key_len == klen &&
		    memcmp(e->key, key, klen) == 0) {
			uv_mutex_unlock(&c->lock);
			free(key);
			/* Entries are never removed before sasl_cache_free. */
			return e;
		}
	}
	c->misses++;
	uv_mutex_unlock(&c->lock);

	struct sasl_cache_entry *e = malloc(sizeof *e + klen);
	if (!e) {
		free(key);
		return NULL;
	}
	unsigned char salted[SHA1_LEN];
	if (PKCS5_PBKDF2_HMAC(password, (int)pl, salt, (int)salt_len, (int)iterations, EVP_sha1(),
			      SHA1_LEN, salted) != 1) {
		free(key);
		free(e);
		return NULL;
	}
	hmac_sha1(salted, SHA1_LEN, "Client Key", 10, e->client_key);
	SHA1(e->client_key, SHA1_LEN, e->stored_key);
	hmac_sha1(salted, SHA1_LEN, "Server Key", 10, e->server_key);
	e->hash = h;
	e->iterations = iterations;
	e->key_len = klen;
	memcpy(e->key, key, klen);
	free(key);
	uv_mutex_lock(&c->lock);
	e->next = c->bucket[b];
	c->bucket[b] = e;
	uv_mutex_unlock(&c->lock);
	return e;
}

char *sasl_scram_final(struct sasl_scram *s, struct sasl_cache *cache, const char *password,
		       const char *challenge_b64, const char **err)
{
	size_t sf_len;
	unsigned char *server_first = sasl_b64_decode(challenge_b64, &sf_len);
	char nonce[256], salt_b64[256], iter[32];
	char *out = NULL, *final = NULL, *auth = NULL;
	unsigned char *salt = NULL;
	*err = "bad server-first message";
	if (!server_first)
		return NULL;
	if (!scram_attr((char *)server_first, 'r', nonce, sizeof nonce) ||
	    !scram_attr((char *)server_first, 's', salt_b64, sizeof salt_b64) ||
	    !scram_attr((char *)server_first, 'i', iter, sizeof iter))
		goto done;
	if (strncmp(nonce, s->cnonce, strlen(s->cnonce)) != 0) {
		*err = "server nonce does not extend ours";
		goto done;
	}
	long iterations = strtol(iter, NULL, 10);
	if (iterations < 1 || iterations > 100000000) {
		*err = "bad iteration count";
		goto done;
	}
	size_t salt_len;
	salt = sasl_b64_decode(salt_b64, &salt_len);
	if (!salt)
		goto done;
	const struct sasl_cache_entry *k =
		scram_keys(cache, password, salt, salt_len, (unsigned)iterations);
	if (!k) {
		*err = "key derivation failed";
		goto done;
	}
	/* "biws" is base64("n,,"): no channel binding, no authzid. */
	size_t wp_len = strlen(nonce) + 16;
	size_t auth_len = strlen(s->client_first_bare) + sf_len + wp_len + 4;
	auth = malloc(auth_len);
	final = malloc(wp_len + 40);
	if (!auth || !final)
		goto done;
	int wp = snprintf(final, wp_len, "c=biws,r=%s", nonce);
	int al = snprintf(auth, auth_len, "%s,%s,%s", s->client_first_bare, (char *)server_first, final);
	unsigned char sig[SHA1_LEN], proof[SHA1_LEN];
	hmac_sha1(k->stored_key, SHA1_LEN, auth, (size_t)al, sig);
	for (int i = 0; i < SHA1_LEN; i++)
		proof[i] = k->client_key[i] ^ sig[i];
	hmac_sha1(k->server_key, SHA1_LEN, auth, (size_t)al, s->server_signature);
	s->have_signature = true;
	char proof_b64[32];
	EVP_EncodeBlock((unsigned char *)proof_b64, proof, SHA1_LEN);
	snprintf(final + wp, 40, ",p=%s", proof_b64);
	out = sasl_b64_encode(final, strlen(final));
	*err = NULL;
done:
	free(server_first);
	free(salt);
	free(auth);
	free(final);
	return out;
}

bool sasl_scram_verify(const struct sasl_scram *s, const char *final_b64)
{
	size_t n;
	unsigned char *msg = sasl_b64_decode(final_b64, &n);
	char v[64];
	bool ok = false;
	if (msg && s->have_signature && scram_attr((char *)msg, 'v', v, sizeof v)) {
		char expect[32];
		EVP_EncodeBlock((unsigned char *)expect, s->server_signature, SHA1_LEN);
		ok = strcmp(expect, v) == 0;
	}
	free(msg);
	return ok;
}

void sasl_scram_clear(struct sasl_scram *s)
{
	free(s->client_first_bare);
	memset(s, 0, sizeof *s);
}

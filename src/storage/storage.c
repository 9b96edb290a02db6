/* The storage interface (storage.h): the driver table chosen by name, and
 * the SCRAM secrets every driver stores instead of passwords.
 *
 * The secrets are derived as GNU SASL derives them (SASLprep with
 * unassigned code points allowed, then PBKDF2, then gsasl's own helper for
 * the keys), so what we store is what gsasl will compare against; only the
 * PBKDF2 is OpenSSL's (storage_salted). The layout matches
 * the gsasl properties the auth code hands over: GSASL_SCRAM_SALT is the
 * base64 salt, GSASL_SCRAM_ITER the count, GSASL_SCRAM_STOREDKEY and
 * GSASL_SCRAM_SERVERKEY lower-case hex. */
#include "storage/storage.h"

#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* RFC 5802 §5.1 asks for a random salt; 16 bytes is what the common servers
 * use and fits struct scram_secret's salt field as base64 (24 chars). */
#define STORAGE_SALT_BYTES 16

static const struct storage_driver *const storage_drivers[] = {
	&storage_sqlite_driver,
	NULL,
};

/* Looked up once at start from the "storage" config key; the table lives
 * for the whole program. */
const struct storage_driver *storage_driver_find(const char *name)
{
	for (size_t i = 0; storage_drivers[i]; i++)
		if (strcmp(storage_drivers[i]->name, name) == 0)
			return storage_drivers[i];
	return NULL;
}

static void storage_hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * n] = '\0';
}

/* SaltedPassword (RFC 5802 §3) into salted: PBKDF2 of the SASLprep'd
 * password, as gsasl_scram_secrets_from_password computes it (the unit
 * tests compare the two). OpenSSL's PBKDF2 keys its HMAC once; gsasl's
 * keys it again at every iteration, so its cost grew with the password's
 * length: a 190 KB password in SASL PLAIN took 4 s of a worker thread. */
static int storage_salted(Gsasl_hash hash, const char *password, unsigned iterations,
			  const unsigned char *salt, size_t saltlen, char *salted)
{
	char *prepped = NULL;
	int rc = gsasl_saslprep(password, GSASL_ALLOW_UNASSIGNED, &prepped, NULL);
	if (rc != GSASL_OK)
		return rc;
	size_t len = strlen(prepped);
	const EVP_MD *md = hash == GSASL_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
	int ok = len <= INT_MAX && iterations <= INT_MAX &&
		 PKCS5_PBKDF2_HMAC(prepped, (int)len, salt, (int)saltlen, (int)iterations, md,
				   (int)gsasl_hash_length(hash), (unsigned char *)salted) == 1;
	OPENSSL_cleanse(prepped, len);
	gsasl_free(prepped);
	return ok ? GSASL_OK : GSASL_CRYPTO_ERROR;
}

/* Derives StoredKey and ServerKey (hex, into stored/server, each at least
 * 2 * hash length + 1 bytes) of password with a raw salt. Returns the gsasl
 * code: GSASL_OK, GSASL_SASLPREP_ERROR for a password SASLprep refuses. */
static int storage_derive(Gsasl_hash hash, const char *password, unsigned iterations,
			  const unsigned char *salt, size_t saltlen, char *stored, char *server)
{
	char salted[GSASL_HASH_MAX_SIZE], client_key[GSASL_HASH_MAX_SIZE];
	char server_key[GSASL_HASH_MAX_SIZE], stored_key[GSASL_HASH_MAX_SIZE];
	size_t n = gsasl_hash_length(hash);

	int rc = storage_salted(hash, password, iterations, salt, saltlen, salted);
	if (rc == GSASL_OK)
		rc = gsasl_scram_secrets_from_salted_password(hash, salted, client_key, server_key,
							      stored_key);
	if (rc == GSASL_OK) {
		storage_hex((const unsigned char *)stored_key, n, stored);
		storage_hex((const unsigned char *)server_key, n, server);
	}
	OPENSSL_cleanse(salted, sizeof salted);
	OPENSSL_cleanse(client_key, sizeof client_key);
	OPENSSL_cleanse(server_key, sizeof server_key);
	OPENSSL_cleanse(stored_key, sizeof stored_key);
	return rc;
}

static int storage_secret_new(Gsasl_hash hash, const char *password, unsigned iterations,
			      struct scram_secret *out)
{
	unsigned char salt[STORAGE_SALT_BYTES];

	if (RAND_bytes(salt, sizeof salt) != 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)out->salt, salt, sizeof salt);
	out->iterations = iterations;
	if (storage_derive(hash, password, iterations, salt, sizeof salt, out->stored_key,
			   out->server_key) != GSASL_OK)
		return -1;
	return 0;
}

/* Called by natterctl and by in-band password changes, on a worker thread
 * (PBKDF2 is slow by design). A password SASLprep refuses (e.g. with
 * control characters) is an error. On -1 *out holds nothing usable. */
int storage_credentials_from_password(const char *password, unsigned iterations,
				      struct user_credentials *out)
{
	memset(out, 0, sizeof *out);
	if (iterations == 0 || strnlen(password, STORAGE_PASSWORD_MAX + 1) > STORAGE_PASSWORD_MAX ||
	    storage_secret_new(GSASL_HASH_SHA1, password, iterations, &out->sha1) < 0 ||
	    storage_secret_new(GSASL_HASH_SHA256, password, iterations, &out->sha256) < 0) {
		memset(out, 0, sizeof *out);
		return -1;
	}
	return 0;
}

/* Used where a password arrives in clear (SASL PLAIN over TLS, the admin
 * tool): recomputes StoredKey with the stored salt and count and compares
 * in constant time. Worker thread only. */
int storage_credentials_check(const struct user_credentials *cred, const char *password)
{
	const struct scram_secret *s = &cred->sha256;
	char stored[2 * GSASL_HASH_MAX_SIZE + 1], server[2 * GSASL_HASH_MAX_SIZE + 1];
	char *salt = NULL;
	size_t saltlen = 0;
	size_t keylen = 2 * GSASL_HASH_SHA256_SIZE;

	if (s->iterations == 0 || strnlen(s->stored_key, sizeof s->stored_key) != keylen ||
	    strnlen(s->salt, sizeof s->salt) == sizeof s->salt)
		return -1;
	if (strnlen(password, STORAGE_PASSWORD_MAX + 1) > STORAGE_PASSWORD_MAX)
		return 0; /* no stored password is that long */
	if (gsasl_base64_from(s->salt, strlen(s->salt), &salt, &saltlen) != GSASL_OK)
		return -1;
	int rc = storage_derive(GSASL_HASH_SHA256, password, s->iterations,
				(const unsigned char *)salt, saltlen, stored, server);
	gsasl_free(salt);
	if (rc == GSASL_SASLPREP_ERROR)
		return 0; /* no stored password can be one SASLprep refuses */
	if (rc != GSASL_OK)
		return -1;
	/* The stored hex may be upper case if written by another tool. */
	char want[2 * GSASL_HASH_SHA256_SIZE + 1];
	for (size_t i = 0; i < keylen; i++) {
		char c = s->stored_key[i];
		want[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
	}
	want[keylen] = '\0';
	int same = CRYPTO_memcmp(stored, want, keylen) == 0;
	OPENSSL_cleanse(stored, sizeof stored);
	OPENSSL_cleanse(server, sizeof server);
	return same ? 1 : 0;
}

/* The journal's Ed25519 signing key (journal.h). The private key is read
 * by natterd's journal writer only; natterctl reads the public half. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/journal.h"

static void key_error(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	char ssl[256] = "";
	if (e != 0)
		ERR_error_string_n(e, ssl, sizeof ssl);
	snprintf(err, errlen, "journal key %s: %s%s%s", path, what, ssl[0] ? ": " : "", ssl);
	ERR_clear_error();
}

static EVP_PKEY *key_read_private(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(err, errlen, "journal key %s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0) {
		fclose(f);
		snprintf(err, errlen, "journal key %s: readable by others (mode %03o); chmod 600 it",
			 path, (unsigned)(st.st_mode & 0777));
		return NULL;
	}
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (k == NULL || EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(k);
		key_error(err, errlen, "not an Ed25519 private key", path);
		return NULL;
	}
	return k;
}

/* Makes the pair: the private key file is created 0600 and exclusively,
 * so two natterd starting at once cannot both write one. */
static EVP_PKEY *key_create(const char *path, const char *pub_path, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	if (pc == NULL || EVP_PKEY_keygen_init(pc) != 1 || EVP_PKEY_keygen(pc, &k) != 1) {
		EVP_PKEY_CTX_free(pc);
		key_error(err, errlen, "cannot generate", path);
		return NULL;
	}
	EVP_PKEY_CTX_free(pc);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
	if (f == NULL) {
		snprintf(err, errlen, "journal key %s: cannot create: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		EVP_PKEY_free(k);
		return NULL;
	}
	int ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
	ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
	fclose(f);
	FILE *p = fopen(pub_path, "wb");
	if (p != NULL) {
		ok = PEM_write_PUBKEY(p, k) == 1 && ok;
		ok = fclose(p) == 0 && ok;
	} else {
		ok = 0;
	}
	if (!ok) {
		key_error(err, errlen, "cannot write the key pair", path);
		unlink(path);
		EVP_PKEY_free(k);
		return NULL;
	}
	return k;
}

EVP_PKEY *journal_key_load_or_create(const char *data_dir, char *err, size_t errlen)
{
	char path[4096], pub_path[4096];
	snprintf(path, sizeof path, "%s/journal.key", data_dir);
	snprintf(pub_path, sizeof pub_path, "%s/journal.pub", data_dir);
	if (access(path, F_OK) != 0 && errno == ENOENT)
		return key_create(path, pub_path, err, errlen);
	EVP_PKEY *k = key_read_private(path, err, errlen);
	if (k == NULL)
		return NULL;
	/* The public half is what an auditor gets: write it again if lost. */
	if (access(pub_path, F_OK) != 0) {
		FILE *p = fopen(pub_path, "wb");
		if (p != NULL) {
			PEM_write_PUBKEY(p, k);
			fclose(p);
		}
	}
	return k;
}

EVP_PKEY *journal_key_load_public(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(err, errlen, "journal public key %s: %s", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (k == NULL || EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(k);
		key_error(err, errlen, "not an Ed25519 public key", path);
		return NULL;
	}
	return k;
}

int journal_key_id(EVP_PKEY *key, uint8_t out[JOURNAL_HASH_LEN])
{
	uint8_t raw[32];
	size_t n = sizeof raw;
	unsigned int outlen = JOURNAL_HASH_LEN;
	if (EVP_PKEY_get_raw_public_key(key, raw, &n) != 1 || n != sizeof raw)
		return -1;
	return EVP_Digest(raw, n, out, &outlen, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

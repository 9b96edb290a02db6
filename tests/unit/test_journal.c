/* Unit tests for src/journal/journal.c (the record format and chain),
 * journal_key.c (signing) and journal_verify.c on segments built here,
 * record by record, so each tamper is exactly placed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal/journal.h"

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = NULL;
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	assert_non_null(pc);
	assert_int_equal(EVP_PKEY_keygen_init(pc), 1);
	assert_int_equal(EVP_PKEY_keygen(pc, &k), 1);
	EVP_PKEY_CTX_free(pc);
	return k;
}

static struct journal_msg sample(const char *body)
{
	struct journal_msg m = { .time_us = 1700000000123456LL, .how = "sent",
				 .from = "alice@localhost/r", .to = "bob@localhost",
				 .type = "chat", .id = "m1", .thread = NULL,
				 .subject = NULL, .body = (char *)body };
	return m;
}

static void test_message_round_trip(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	uint8_t chain[JOURNAL_HASH_LEN] = { 0 }, zero[JOURNAL_HASH_LEN] = { 0 };
	struct journal_msg m = sample("hello\nworld");
	journal_record_message(&b, 7, &m, chain);
	struct journal_rec r;
	const char *why = "";
	long n = journal_record_parse((const uint8_t *)b.data, b.len, &r, &why);
	assert_int_equal(n, (long)b.len);
	assert_int_equal(r.kind, JOURNAL_MESSAGE);
	assert_int_equal(r.seq, 7);
	assert_true(r.time_us == m.time_us);
	assert_int_equal(r.body.n, strlen("hello\nworld"));
	assert_memory_equal(r.body.p, "hello\nworld", r.body.n);
	assert_memory_equal(r.from.p, "alice@localhost/r", r.from.n);
	assert_int_equal(r.thread.n, 0);
	/* The stored hash is the chain from zero, and chain was advanced. */
	uint8_t h[JOURNAL_HASH_LEN];
	journal_record_chain((const uint8_t *)b.data, &r, zero, h);
	assert_memory_equal(h, r.hash, JOURNAL_HASH_LEN);
	assert_memory_equal(h, chain, JOURNAL_HASH_LEN);
	/* Any byte changed changes the hash. */
	b.data[JOURNAL_HEADER_LEN + 5] ^= 1; /* in "sent" */
	n = journal_record_parse((const uint8_t *)b.data, b.len, &r, &why);
	assert_true(n > 0);
	journal_record_chain((const uint8_t *)b.data, &r, zero, h);
	assert_memory_not_equal(h, r.hash, JOURNAL_HASH_LEN);
	buf_free(&b);
}

static void test_partial_and_bad_records(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	uint8_t chain[JOURNAL_HASH_LEN] = { 0 };
	struct journal_msg m = sample("x");
	journal_record_message(&b, 1, &m, chain);
	struct journal_rec r;
	const char *why = "";
	for (size_t cut = 0; cut < b.len; cut++)
		assert_int_equal(journal_record_parse((const uint8_t *)b.data, cut, &r, &why), 0);
	b.data[0] = 'X';
	assert_int_equal(journal_record_parse((const uint8_t *)b.data, b.len, &r, &why), -1);
	b.data[0] = 'N';
	/* A length that does not fit the fields. */
	b.data[4] += 1;
	assert_int_equal(journal_record_parse((const uint8_t *)b.data, b.len + 1, &r, &why), -1);
	buf_free(&b);
}

static void test_checkpoint_signature(void **state)
{
	(void)state;
	EVP_PKEY *key = new_key(), *other = new_key();
	uint8_t id[JOURNAL_HASH_LEN];
	assert_int_equal(journal_key_id(key, id), 0);
	struct buf b;
	buf_init(&b);
	uint8_t chain[JOURNAL_HASH_LEN];
	memset(chain, 0xab, sizeof chain);
	struct journal_rec cp = { .segment = 3, .reason = JOURNAL_CP_OPEN, .prev_segment = 2,
				  .prev_valid_len = 1000, .prev_torn = 5 };
	assert_int_equal(journal_record_checkpoint(&b, 9, 42, &cp, "localhost", key, id, chain), 0);
	struct journal_rec r;
	const char *why = "";
	assert_int_equal(journal_record_parse((const uint8_t *)b.data, b.len, &r, &why),
			 (long)b.len);
	assert_int_equal(r.segment, 3);
	assert_int_equal(r.prev_segment, 2);
	assert_int_equal(r.prev_valid_len, 1000);
	assert_int_equal(r.prev_torn, 5);
	uint8_t ab[JOURNAL_HASH_LEN];
	memset(ab, 0xab, sizeof ab);
	assert_memory_equal(r.prev_hash, ab, JOURNAL_HASH_LEN);
	assert_memory_equal(r.key_id, id, JOURNAL_HASH_LEN);
	assert_true(journal_record_signature_ok((const uint8_t *)b.data, &r, key));
	assert_false(journal_record_signature_ok((const uint8_t *)b.data, &r, other));
	b.data[30] ^= 1; /* the segment number */
	journal_record_parse((const uint8_t *)b.data, b.len, &r, &why);
	assert_false(journal_record_signature_ok((const uint8_t *)b.data, &r, key));
	buf_free(&b);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

static void test_parse_time(void **state)
{
	(void)state;
	int64_t t;
	assert_int_equal(journal_parse_time("1970-01-01", &t), 0);
	assert_true(t == 0);
	assert_int_equal(journal_parse_time("2024-05-01T10:00:00Z", &t), 0);
	assert_true(t == 1714557600LL * 1000000);
	assert_int_equal(journal_parse_time("2024-05-01T12:00:00+02:00", &t), 0);
	assert_true(t == 1714557600LL * 1000000);
	assert_int_equal(journal_parse_time("2024-05-01T10:00:00.25Z", &t), 0);
	assert_true(t == 1714557600LL * 1000000 + 250000);
	assert_int_equal(journal_parse_time("2024-05-01T10:00", &t), 0);
	assert_int_equal(journal_parse_time("yesterday", &t), -1);
	assert_int_equal(journal_parse_time("2024-13-01", &t), -1);
	assert_int_equal(journal_parse_time("2024-05-01T10:00:00Zjunk", &t), -1);
}

/* A journal of two segments, written as natterd's writer would. */
struct fixture {
	char dir[64];
	EVP_PKEY *key;
	uint8_t id[JOURNAL_HASH_LEN];
};

static void write_file(const char *dir, uint32_t num, const struct buf *b)
{
	char path[256];
	journal_segment_path(dir, num, path, sizeof path);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b->data, 1, b->len, f), b->len);
	fclose(f);
}

static void build(struct fixture *fx)
{
	snprintf(fx->dir, sizeof fx->dir, "/tmp/natter-unit-journal-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	fx->key = new_key();
	journal_key_id(fx->key, fx->id);
	uint8_t chain[JOURNAL_HASH_LEN] = { 0 };
	uint64_t seq = 0;
	struct buf b;
	buf_init(&b);
	struct journal_rec cp = { .segment = 1, .reason = JOURNAL_CP_OPEN };
	journal_record_checkpoint(&b, ++seq, 1, &cp, "localhost", fx->key, fx->id, chain);
	for (int i = 0; i < 3; i++) {
		struct journal_msg m = sample(i == 1 ? "second" : "other");
		journal_record_message(&b, ++seq, &m, chain);
	}
	struct journal_rec seal = { .segment = 1, .reason = JOURNAL_CP_SEAL };
	journal_record_checkpoint(&b, ++seq, 2, &seal, "localhost", fx->key, fx->id, chain);
	write_file(fx->dir, 1, &b);
	uint64_t len1 = b.len;
	b.len = 0;
	struct journal_rec open2 = { .segment = 2, .reason = JOURNAL_CP_OPEN, .prev_segment = 1,
				     .prev_valid_len = len1 };
	journal_record_checkpoint(&b, ++seq, 3, &open2, "localhost", fx->key, fx->id, chain);
	struct journal_msg m = sample("last");
	journal_record_message(&b, ++seq, &m, chain);
	write_file(fx->dir, 2, &b);
	buf_free(&b);
}

static void destroy(struct fixture *fx)
{
	char path[256];
	for (uint32_t i = 1; i <= 2; i++) {
		journal_segment_path(fx->dir, i, path, sizeof path);
		unlink(path);
	}
	rmdir(fx->dir);
	EVP_PKEY_free(fx->key);
}

/* Runs verify and returns its exit code; its report in out. */
static int run_verify(struct fixture *fx, char *out, size_t cap)
{
	FILE *f = fmemopen(out, cap, "w");
	int rc = journal_verify(fx->dir, "localhost", fx->key, f);
	fclose(f);
	return rc;
}

static void test_verify_intact(void **state)
{
	(void)state;
	struct fixture fx;
	build(&fx);
	char out[4096];
	assert_int_equal(run_verify(&fx, out, sizeof out), 0);
	assert_non_null(strstr(out, "OK "));
	assert_non_null(strstr(out, "7 record(s): 4 message(s)"));
	destroy(&fx);
}

static void flip(struct fixture *fx, uint32_t num, long at)
{
	char path[256];
	journal_segment_path(fx->dir, num, path, sizeof path);
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, at, SEEK_SET);
	int c = fgetc(f);
	fseek(f, at, SEEK_SET);
	fputc(c ^ 0x20, f);
	fclose(f);
}

static void test_verify_finds_an_edit(void **state)
{
	(void)state;
	struct fixture fx;
	build(&fx);
	/* The body "second" of record 3. */
	char path[256], data[4096];
	journal_segment_path(fx.dir, 1, path, sizeof path);
	FILE *f = fopen(path, "rb");
	size_t n = fread(data, 1, sizeof data, f);
	fclose(f);
	char *at = memmem(data, n, "second", 6);
	assert_non_null(at);
	flip(&fx, 1, at - data);
	char out[4096];
	assert_int_equal(run_verify(&fx, out, sizeof out), 1);
	assert_non_null(strstr(out, "seg-00000001.njl: record 3 (message)"));
	assert_non_null(strstr(out, "chain hash mismatch"));
	destroy(&fx);
}

static void test_verify_finds_a_missing_segment(void **state)
{
	(void)state;
	struct fixture fx;
	build(&fx);
	char path[256];
	journal_segment_path(fx.dir, 1, path, sizeof path);
	unlink(path);
	char out[4096];
	assert_int_equal(run_verify(&fx, out, sizeof out), 1);
	assert_non_null(strstr(out, "segment(s) 1..1 before it are missing"));
	destroy(&fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_round_trip),
		cmocka_unit_test(test_partial_and_bad_records),
		cmocka_unit_test(test_checkpoint_signature),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_verify_intact),
		cmocka_unit_test(test_verify_finds_an_edit),
		cmocka_unit_test(test_verify_finds_a_missing_segment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

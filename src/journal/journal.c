/* The journal's record format and chain (journal.h). Used by natterd's
 * writer and by natterctl's verify and export alike, so both read the
 * same bytes the same way. */
#include "journal/journal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/util.h"

void journal_msg_free(struct journal_msg *m)
{
	if (m == NULL)
		return;
	free(m->how);
	free(m->from);
	free(m->to);
	free(m->type);
	free(m->id);
	free(m->thread);
	free(m->subject);
	free(m->body);
	free(m);
}

static void put_u8(struct buf *b, uint8_t v)
{
	buf_append(b, &v, 1);
}

static void put_u32(struct buf *b, uint32_t v)
{
	uint8_t p[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	buf_append(b, p, 4);
}

static void put_u64(struct buf *b, uint64_t v)
{
	uint8_t p[8];
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	buf_append(b, p, 8);
}

static void put_str(struct buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	put_u32(b, (uint32_t)n);
	if (n)
		buf_append(b, s, n);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* out = SHA-256(prev || p[0..n)); out may be prev. An allocation
 * failure of OpenSSL is fatal here: a record without its hash must not
 * be written. */
static void chain_hash(const uint8_t *prev, const uint8_t *p, size_t n, uint8_t *out)
{
	uint8_t in[JOURNAL_HASH_LEN];
	memcpy(in, prev, sizeof in);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, in, sizeof in) != 1 || EVP_DigestUpdate(md, p, n) != 1 ||
	    EVP_DigestFinal_ex(md, out, NULL) != 1)
		abort();
	EVP_MD_CTX_free(md);
}

/* Starts a record at the end of out; returns where it starts. */
static size_t record_begin(struct buf *out, enum journal_kind kind, uint64_t seq, int64_t time_us)
{
	size_t start = out->len;
	buf_append(out, JOURNAL_MAGIC, 4);
	put_u32(out, 0); /* the length, set by record_end */
	put_u8(out, (uint8_t)kind);
	put_u64(out, seq);
	put_u64(out, (uint64_t)time_us);
	return start;
}

/* Sets the length and appends the chain hash. */
static void record_end(struct buf *out, size_t start, uint8_t chain[JOURNAL_HASH_LEN])
{
	uint32_t len = (uint32_t)(out->len - start + JOURNAL_HASH_LEN);
	uint8_t *p = (uint8_t *)out->data + start + 4;
	p[0] = (uint8_t)len;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 24);
	chain_hash(chain, (const uint8_t *)out->data + start, out->len - start, chain);
	buf_append(out, chain, JOURNAL_HASH_LEN);
}

void journal_record_message(struct buf *out, uint64_t seq, const struct journal_msg *m,
			    uint8_t chain[JOURNAL_HASH_LEN])
{
	size_t start = record_begin(out, JOURNAL_MESSAGE, seq, m->time_us);
	put_str(out, m->how);
	put_str(out, m->from);
	put_str(out, m->to);
	put_str(out, m->type);
	put_str(out, m->id);
	put_str(out, m->thread);
	put_str(out, m->subject);
	put_str(out, m->body);
	record_end(out, start, chain);
}

int journal_record_checkpoint(struct buf *out, uint64_t seq, int64_t time_us,
			      const struct journal_rec *r, const char *host, EVP_PKEY *key,
			      const uint8_t key_id[JOURNAL_HASH_LEN],
			      uint8_t chain[JOURNAL_HASH_LEN])
{
	size_t start = record_begin(out, JOURNAL_CHECKPOINT, seq, time_us);
	put_u32(out, r->segment);
	put_u8(out, r->reason);
	put_u32(out, r->prev_segment);
	put_u64(out, r->prev_valid_len);
	put_u64(out, r->prev_torn);
	buf_append(out, chain, JOURNAL_HASH_LEN);
	put_str(out, host);
	buf_append(out, key_id, JOURNAL_HASH_LEN);
	/* The signed length includes the length field, which counts the
	 * signature and hash that follow: set it before signing. */
	uint32_t len = (uint32_t)(out->len - start + JOURNAL_SIG_LEN + JOURNAL_HASH_LEN);
	uint8_t *lp = (uint8_t *)out->data + start + 4;
	lp[0] = (uint8_t)len;
	lp[1] = (uint8_t)(len >> 8);
	lp[2] = (uint8_t)(len >> 16);
	lp[3] = (uint8_t)(len >> 24);
	uint8_t sig[JOURNAL_SIG_LEN];
	size_t siglen = sizeof sig;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
		 EVP_DigestSign(md, sig, &siglen, (const uint8_t *)out->data + start,
				out->len - start) == 1 &&
		 siglen == JOURNAL_SIG_LEN;
	EVP_MD_CTX_free(md);
	if (!ok) {
		out->len = start;
		return -1;
	}
	buf_append(out, sig, JOURNAL_SIG_LEN);
	record_end(out, start, chain);
	return 0;
}

void journal_record_retention(struct buf *out, uint64_t seq, int64_t time_us,
			      uint32_t removed_below, uint32_t removed,
			      uint8_t chain[JOURNAL_HASH_LEN])
{
	size_t start = record_begin(out, JOURNAL_RETENTION, seq, time_us);
	put_u32(out, removed_below);
	put_u32(out, removed);
	record_end(out, start, chain);
}

/* A cursor over one record's fields; any read past end fails it. */
struct reader {
	const uint8_t *p, *end;
	bool bad;
};

static const uint8_t *take(struct reader *rd, size_t n)
{
	if (rd->bad || (size_t)(rd->end - rd->p) < n) {
		rd->bad = true;
		return NULL;
	}
	const uint8_t *at = rd->p;
	rd->p += n;
	return at;
}

static uint32_t take_u32(struct reader *rd)
{
	const uint8_t *p = take(rd, 4);
	return p ? get_u32(p) : 0;
}

static uint64_t take_u64(struct reader *rd)
{
	const uint8_t *p = take(rd, 8);
	return p ? get_u64(p) : 0;
}

static struct journal_str take_str(struct reader *rd)
{
	struct journal_str s = { "", 0 };
	uint32_t n = take_u32(rd);
	const uint8_t *p = take(rd, n);
	if (p != NULL) {
		s.p = (const char *)p;
		s.n = n;
	}
	return s;
}

long journal_record_parse(const uint8_t *buf, size_t avail, struct journal_rec *r,
			  const char **why)
{
	memset(r, 0, sizeof *r);
	if (avail < 8)
		return memcmp(buf, JOURNAL_MAGIC, avail < 4 ? avail : 4) == 0 ? 0 : -1;
	if (memcmp(buf, JOURNAL_MAGIC, 4) != 0) {
		*why = "no record starts here (bad magic)";
		return -1;
	}
	r->len = get_u32(buf + 4);
	if (r->len < JOURNAL_HEADER_LEN + JOURNAL_HASH_LEN || r->len > JOURNAL_RECORD_MAX) {
		*why = "impossible record length";
		return -1;
	}
	if (avail < r->len)
		return 0;
	r->kind = buf[8];
	r->seq = get_u64(buf + 9);
	r->time_us = (int64_t)get_u64(buf + 17);
	r->hash = buf + r->len - JOURNAL_HASH_LEN;
	struct reader rd = { buf + JOURNAL_HEADER_LEN, buf + r->len - JOURNAL_HASH_LEN, false };
	switch (r->kind) {
	case JOURNAL_MESSAGE:
		r->how = take_str(&rd);
		r->from = take_str(&rd);
		r->to = take_str(&rd);
		r->type = take_str(&rd);
		r->id = take_str(&rd);
		r->thread = take_str(&rd);
		r->subject = take_str(&rd);
		r->body = take_str(&rd);
		break;
	case JOURNAL_CHECKPOINT: {
		r->segment = take_u32(&rd);
		const uint8_t *reason = take(&rd, 1);
		r->reason = reason ? *reason : 0;
		r->prev_segment = take_u32(&rd);
		r->prev_valid_len = take_u64(&rd);
		r->prev_torn = take_u64(&rd);
		r->prev_hash = take(&rd, JOURNAL_HASH_LEN);
		r->host = take_str(&rd);
		r->key_id = take(&rd, JOURNAL_HASH_LEN);
		r->signed_len = (size_t)(rd.p - buf);
		r->sig = take(&rd, JOURNAL_SIG_LEN);
		break;
	}
	case JOURNAL_RETENTION:
		r->removed_below = take_u32(&rd);
		r->removed = take_u32(&rd);
		break;
	default:
		*why = "unknown record kind";
		return -1;
	}
	if (rd.bad || rd.p != rd.end) {
		*why = "fields do not fit the record length";
		return -1;
	}
	return (long)r->len;
}

void journal_record_chain(const uint8_t *buf, const struct journal_rec *r,
			  const uint8_t prev[JOURNAL_HASH_LEN], uint8_t out[JOURNAL_HASH_LEN])
{
	chain_hash(prev, buf, r->len - JOURNAL_HASH_LEN, out);
}

bool journal_record_signature_ok(const uint8_t *buf, const struct journal_rec *r, EVP_PKEY *pub)
{
	if (r->kind != JOURNAL_CHECKPOINT || r->sig == NULL)
		return false;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md != NULL && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pub) == 1 &&
		  EVP_DigestVerify(md, r->sig, JOURNAL_SIG_LEN, buf, r->signed_len) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

long journal_segments(const char *dir, uint32_t **nums)
{
	*nums = NULL;
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		unsigned num;
		char tail[8];
		/* Exactly seg-NNNNNNNN.njl: other files are not the journal's. */
		if (strlen(e->d_name) != 16 || sscanf(e->d_name, "seg-%8u.%3s", &num, tail) != 2 ||
		    strcmp(tail, "njl") != 0 || num == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			*nums = xrealloc(*nums, cap * sizeof **nums);
		}
		(*nums)[n++] = num;
	}
	closedir(d);
	if (n > 1)
		qsort(*nums, n, sizeof **nums, cmp_u32);
	return (long)n;
}

void journal_segment_path(const char *dir, uint32_t num, char *out, size_t cap)
{
	snprintf(out, cap, "%s/seg-%08u.njl", dir, num);
}

void journal_dir(const struct config *cfg, const struct config_host *h, char *out, size_t cap)
{
	if (h->journal.dir != NULL)
		snprintf(out, cap, "%s", h->journal.dir);
	else
		snprintf(out, cap, "%s/journal/%s", cfg->data_dir, h->domain);
}

void journal_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int digits_at(const char **s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)**s))
			return -1;
		v = v * 10 + (**s - '0');
		(*s)++;
	}
	*out = v;
	return 0;
}

int journal_parse_time(const char *s, int64_t *out_us)
{
	struct tm tm = { 0 };
	int y, mo, d, h = 0, mi = 0, sec = 0;
	int64_t frac_us = 0;
	if (digits_at(&s, 4, &y) || *s++ != '-' || digits_at(&s, 2, &mo) || *s++ != '-' ||
	    digits_at(&s, 2, &d))
		return -1;
	if (*s == 'T' || *s == 't' || *s == ' ') {
		s++;
		if (digits_at(&s, 2, &h) || *s++ != ':' || digits_at(&s, 2, &mi))
			return -1;
		if (*s == ':') {
			s++;
			if (digits_at(&s, 2, &sec))
				return -1;
			if (*s == '.') {
				s++;
				int64_t scale = 100000;
				if (!isdigit((unsigned char)*s))
					return -1;
				for (; isdigit((unsigned char)*s); s++) {
					frac_us += (*s - '0') * scale;
					scale /= 10;
				}
			}
		}
	}
	int offset = 0;
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		int sign = *s++ == '-' ? -1 : 1, oh, om;
		if (digits_at(&s, 2, &oh) || *s++ != ':' || digits_at(&s, 2, &om))
			return -1;
		offset = sign * (oh * 3600 + om * 60);
	}
	if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	*out_us = ((int64_t)t - offset) * 1000000 + frac_us;
	return 0;
}

int journal_reader_open(struct journal_reader *rd, const char *path)
{
	memset(rd, 0, sizeof *rd);
	rd->f = fopen(path, "rb");
	if (rd->f == NULL)
		return -1;
	if (fseeko(rd->f, 0, SEEK_END) == 0) {
		rd->size = (uint64_t)ftello(rd->f);
		rewind(rd->f);
	}
	rd->cap = 65536;
	rd->buf = xmalloc(rd->cap);
	return 0;
}

/* Makes at least want bytes available from pos (fewer at end of file).
 * Returns -1 on a read error. */
static int reader_fill(struct journal_reader *rd, size_t want)
{
	if (rd->len - rd->pos >= want)
		return 0;
	if (rd->pos > 0) {
		memmove(rd->buf, rd->buf + rd->pos, rd->len - rd->pos);
		rd->len -= rd->pos;
		rd->pos = 0;
	}
	if (want > rd->cap) {
		rd->cap = want;
		rd->buf = xrealloc(rd->buf, rd->cap);
	}
	while (rd->len < want) {
		size_t n = fread(rd->buf + rd->len, 1, rd->cap - rd->len, rd->f);
		if (n == 0)
			return ferror(rd->f) ? -1 : 0;
		rd->len += n;
	}
	return 0;
}

enum journal_next journal_reader_next(struct journal_reader *rd, struct journal_rec *r,
				      const uint8_t **bytes, uint64_t *offset, const char **why)
{
	*offset = rd->offset;
	if (reader_fill(rd, 8) < 0)
		return JOURNAL_NEXT_IO;
	size_t avail = rd->len - rd->pos;
	if (avail == 0)
		return JOURNAL_NEXT_END;
	*why = "no record starts here (bad magic)";
	long n = journal_record_parse(rd->buf + rd->pos, avail, r, why);
	if (n == 0 && avail >= 8) {
		if (reader_fill(rd, r->len) < 0)
			return JOURNAL_NEXT_IO;
		avail = rd->len - rd->pos;
		n = journal_record_parse(rd->buf + rd->pos, avail, r, why);
	}
	if (n == 0)
		return JOURNAL_NEXT_TORN;
	if (n < 0)
		return JOURNAL_NEXT_BAD;
	*bytes = rd->buf + rd->pos;
	rd->pos += (size_t)n;
	rd->offset += (uint64_t)n;
	return JOURNAL_NEXT_RECORD;
}

void journal_reader_close(struct journal_reader *rd)
{
	if (rd->f)
		fclose(rd->f);
	free(rd->buf);
	memset(rd, 0, sizeof *rd);
}

/* natterctl journal verify (journal.h): walks every segment, recomputes
 * the chain, checks the checkpoints' signatures and how each segment
 * joins the one before it, and names the place of every problem.
 *
 * After the first problem inside a segment its chain cannot be trusted
 * any more: the rest of that segment is only read for its framing (to
 * know where its whole records end), and checking starts again at the
 * next segment's signed opening checkpoint. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "journal/journal.h"

struct verify {
	FILE *out;
	EVP_PKEY *pub;
	const char *host;
	uint8_t key_id[JOURNAL_HASH_LEN];
	int problems;
	/* How the previous segment ended. */
	bool have_prev;
	bool prev_ok;          /* its chain held to its last whole record */
	uint32_t prev_num;
	uint8_t prev_chain[JOURNAL_HASH_LEN];
	uint64_t prev_valid;   /* bytes of whole records */
	uint64_t prev_size;
	uint64_t prev_last_seq;
	enum journal_next prev_end;
	/* Over the journal. */
	uint32_t first_num, first_prev; /* the first file and what it follows */
	uint32_t retention_below;
	uint64_t records, messages, checkpoints, first_seq, last_seq;
	uint64_t unsealed;     /* records after the last checkpoint */
	uint8_t last_reason;
};

__attribute__((format(printf, 2, 3)))
static void problem(struct verify *v, const char *fmt, ...)
{
	va_list ap;
	fputs("FAIL ", v->out);
	va_start(ap, fmt);
	vfprintf(v->out, fmt, ap);
	va_end(ap);
	fputc('\n', v->out);
	v->problems++;
}

__attribute__((format(printf, 2, 3)))
static void note(struct verify *v, const char *fmt, ...)
{
	va_list ap;
	fputs("note ", v->out);
	va_start(ap, fmt);
	vfprintf(v->out, fmt, ap);
	va_end(ap);
	fputc('\n', v->out);
}

static const char *kind_name(enum journal_kind k)
{
	return k == JOURNAL_MESSAGE ? "message" : k == JOURNAL_CHECKPOINT ? "checkpoint"
					       : "retention";
}

/* A checkpoint's own checks: signature, key, host, segment. Returns
 * false after reporting. */
static bool check_checkpoint(struct verify *v, const char *file, const uint8_t *bytes,
			     const struct journal_rec *r, uint64_t off, uint32_t num)
{
	if (memcmp(r->key_id, v->key_id, JOURNAL_HASH_LEN) != 0) {
		char id[2 * JOURNAL_HASH_LEN + 1];
		journal_hex(r->key_id, 8, id);
		problem(v, "%s: record %" PRIu64 " (offset %" PRIu64 "): checkpoint signed by another "
			"key (key id %s...), not by the public key given", file, r->seq, off, id);
		return false;
	}
	if (!journal_record_signature_ok(bytes, r, v->pub)) {
		problem(v, "%s: record %" PRIu64 " (offset %" PRIu64 "): bad checkpoint signature "
			"(the checkpoint was edited or forged)", file, r->seq, off);
		return false;
	}
	if (r->segment != num) {
		problem(v, "%s: record %" PRIu64 " (offset %" PRIu64 "): checkpoint of segment %u "
			"in the file of segment %u (segments renamed or moved)", file, r->seq, off,
			r->segment, num);
		return false;
	}
	if (v->host && (r->host.n != strlen(v->host) || memcmp(r->host.p, v->host, r->host.n))) {
		problem(v, "%s: record %" PRIu64 " (offset %" PRIu64 "): checkpoint of host %.*s, "
			"not %s", file, r->seq, off, (int)r->host.n, r->host.p, v->host);
		return false;
	}
	return true;
}

/* How the segment num, opened by checkpoint r, joins the previous file. */
static void check_join(struct verify *v, const char *file, const struct journal_rec *r,
		       uint32_t num)
{
	if (!v->have_prev) {
		v->first_num = num;
		v->first_prev = r->prev_segment;
		return;
	}
	if (num != v->prev_num + 1)
		problem(v, "%s: segment(s) %u..%u are missing between seg-%08u.njl and this one",
			file, v->prev_num + 1, num - 1, v->prev_num);
	else if (r->prev_segment != v->prev_num)
		problem(v, "%s: its opening checkpoint says it follows segment %u, but the file "
			"before it is segment %u", file, r->prev_segment, v->prev_num);
	uint64_t extra = v->prev_size - v->prev_valid;
	if (r->prev_valid_len != v->prev_valid)
		problem(v, "seg-%08u.njl: holds %" PRIu64 " bytes of whole records, but the "
			"opening checkpoint of %s says %" PRIu64 " (records cut from or added to "
			"its end)", v->prev_num, v->prev_valid, file, r->prev_valid_len);
	else if (extra != r->prev_torn)
		problem(v, "seg-%08u.njl: %" PRIu64 " byte(s) after its last whole record at "
			"offset %" PRIu64 ", but %s declares %" PRIu64 " (truncated tail)",
			v->prev_num, extra, v->prev_valid, file, r->prev_torn);
	else if (extra > 0)
		note(v, "seg-%08u.njl: truncated tail of %" PRIu64 " byte(s) at offset %" PRIu64
		     " (natterd stopped while writing); declared by the restart in %s", v->prev_num,
		     extra, v->prev_valid, file);
	if (v->prev_ok && r->prev_valid_len == v->prev_valid &&
	    memcmp(r->prev_hash, v->prev_chain, JOURNAL_HASH_LEN) != 0)
		problem(v, "%s: record %" PRIu64 " (offset 0): the chain hash it continues from does "
			"not match the end of seg-%08u.njl (that segment's records were replaced)",
			file, r->seq, v->prev_num);
	if (r->seq != v->prev_last_seq + 1)
		problem(v, "%s: record numbers jump from %" PRIu64 " (end of seg-%08u.njl) to "
			"%" PRIu64 " (records removed)", file, v->prev_last_seq, v->prev_num, r->seq);
}

static void verify_segment(struct verify *v, const char *dir, uint32_t num, bool last)
{
	char path[4200], file[32];
	journal_segment_path(dir, num, path, sizeof path);
	snprintf(file, sizeof file, "seg-%08u.njl", num);
	struct journal_reader rd;
	if (journal_reader_open(&rd, path) != 0) {
		problem(v, "%s: cannot open: %s", file, strerror(errno));
		v->prev_ok = false;
		return;
	}
	struct journal_rec r;
	const uint8_t *bytes;
	uint64_t off = 0, n_rec = 0, last_seq = 0;
	const char *why = "";
	bool ok = true;
	uint8_t chain[JOURNAL_HASH_LEN] = { 0 };
	enum journal_next st;
	while ((st = journal_reader_next(&rd, &r, &bytes, &off, &why)) == JOURNAL_NEXT_RECORD) {
		n_rec++;
		v->records++;
		if (r.kind == JOURNAL_MESSAGE)
			v->messages++;
		last_seq = r.seq;
		if (!ok)
			continue;
		if (n_rec == 1) {
			if (r.kind != JOURNAL_CHECKPOINT || r.reason != JOURNAL_CP_OPEN) {
				problem(v, "%s: record %" PRIu64 " (offset 0): a %s, but a segment must "
					"start with its signed opening checkpoint", file, r.seq,
					kind_name(r.kind));
				ok = false;
				continue;
			}
			check_join(v, file, &r, num);
			if (!check_checkpoint(v, file, bytes, &r, off, num)) {
				ok = false;
				continue;
			}
			if (v->first_seq == 0)
				v->first_seq = r.seq;
			memcpy(chain, r.prev_hash, JOURNAL_HASH_LEN);
			v->last_seq = r.seq - 1;
		}
		if (r.seq != v->last_seq + 1) {
			problem(v, "%s: record %" PRIu64 " at offset %" PRIu64 " where record %" PRIu64
				" was expected (records removed or reordered)", file, r.seq, off,
				v->last_seq + 1);
			ok = false;
			continue;
		}
		uint8_t h[JOURNAL_HASH_LEN];
		journal_record_chain(bytes, &r, chain, h);
		if (memcmp(h, r.hash, JOURNAL_HASH_LEN) != 0) {
			problem(v, "%s: record %" PRIu64 " (%s) at offset %" PRIu64 ": chain hash "
				"mismatch (the record was edited, or one before it replaced)", file,
				r.seq, kind_name(r.kind), off);
			ok = false;
			continue;
		}
		if (r.kind == JOURNAL_CHECKPOINT) {
			v->checkpoints++;
			if (n_rec > 1 && !check_checkpoint(v, file, bytes, &r, off, num)) {
				ok = false;
				continue;
			}
			if (memcmp(r.prev_hash, chain, JOURNAL_HASH_LEN) != 0) {
				problem(v, "%s: record %" PRIu64 " (offset %" PRIu64 "): checkpoint "
					"carries another chain hash than the records before it",
					file, r.seq, off);
				ok = false;
				continue;
			}
			v->unsealed = 0;
			v->last_reason = r.reason;
		} else {
			v->unsealed++;
			if (r.kind == JOURNAL_RETENTION && r.removed_below > v->retention_below)
				v->retention_below = r.removed_below;
		}
		memcpy(chain, h, JOURNAL_HASH_LEN);
		v->last_seq = r.seq;
	}
	if (n_rec == 0 && st != JOURNAL_NEXT_IO)
		problem(v, "%s: holds no whole record", file);
	if (st == JOURNAL_NEXT_IO)
		problem(v, "%s: read error at offset %" PRIu64 ": %s", file, off, strerror(errno));
	else if (st == JOURNAL_NEXT_BAD)
		problem(v, "%s: offset %" PRIu64 ": %s (the file was edited or overwritten there)",
			file, off, why);
	else if (st == JOURNAL_NEXT_TORN && last)
		problem(v, "%s: truncated tail: %" PRIu64 " byte(s) of an incomplete record at "
			"offset %" PRIu64 " (the file was cut, or natterd was killed while writing and "
			"has not restarted since)", file, rd.size - off, off);
	v->have_prev = true;
	v->prev_ok = ok;
	v->prev_num = num;
	memcpy(v->prev_chain, chain, JOURNAL_HASH_LEN);
	v->prev_valid = off;
	v->prev_size = rd.size;
	v->prev_last_seq = last_seq;
	v->prev_end = st;
	if (!ok)
		v->last_seq = last_seq; /* the next segment re-anchors */
	journal_reader_close(&rd);
}

int journal_verify(const char *dir, const char *host, EVP_PKEY *pub, FILE *out)
{
	struct verify v = { .out = out, .pub = pub, .host = host };
	if (journal_key_id(pub, v.key_id) != 0) {
		fprintf(out, "FAIL cannot read the public key\n");
		return 1;
	}
	uint32_t *nums;
	long n = journal_segments(dir, &nums);
	if (n < 0) {
		fprintf(out, "FAIL %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (n == 0) {
		fprintf(out, "FAIL %s: no journal segments\n", dir);
		free(nums);
		return 1;
	}
	for (long i = 0; i < n; i++)
		verify_segment(&v, dir, nums[i], i == n - 1);
	if (v.first_prev != 0 && v.retention_below < v.first_num)
		problem(&v, "seg-%08u.njl: segment(s) %u..%u before it are missing, and no "
			"retention record says they were removed", v.first_num, 1, v.first_num - 1);
	else if (v.first_prev != 0)
		note(&v, "segments below %u were removed by retention", v.first_num);
	if (v.unsealed > 0)
		note(&v, "seg-%08u.njl: the last %" PRIu64 " record(s) follow the last checkpoint: "
		     "protected by the chain only (natterd is running, or was killed)",
		     nums[n - 1], v.unsealed);
	else if (v.last_reason == JOURNAL_CP_SHUTDOWN)
		note(&v, "seg-%08u.njl: sealed by natterd's shutdown checkpoint", nums[n - 1]);
	fprintf(out, "%s %s: %ld segment(s) (%u..%u), %" PRIu64 " record(s): %" PRIu64
		" message(s), %" PRIu64 " checkpoint(s); seq %" PRIu64 "..%" PRIu64 "\n",
		v.problems ? "FAILED" : "OK", dir, n, nums[0], nums[n - 1], v.records, v.messages,
		v.checkpoints, v.first_seq, v.last_seq);
	if (v.problems)
		fprintf(out, "%d problem(s) found\n", v.problems);
	free(nums);
	return v.problems ? 1 : 0;
}

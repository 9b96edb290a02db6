/* natterctl journal export (journal.h): one user's or one room's messages
 * for a time range, as JSON or as an mbox of RFC 5322 messages.
 *
 * mbox is the "mboxrd" variant: each message starts with a "From " line;
 * a body line that starts with "From " after any number of '>' gets one
 * more '>' (so readers undo it exactly). Header fields are UTF-8 as RFC
 * 6532 allows, with line breaks and other control characters replaced by
 * spaces so that no value can start a new header field. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal/journal.h"

/* The bare part of a JID string. */
static size_t bare_len(struct journal_str s)
{
	const char *slash = memchr(s.p, '/', s.n);
	return slash ? (size_t)(slash - s.p) : s.n;
}

static bool is_bare(struct journal_str s, const char *jid)
{
	size_t n = bare_len(s);
	return jid != NULL && n == strlen(jid) && memcmp(s.p, jid, n) == 0;
}

static bool selected(const struct journal_filter *f, const struct journal_rec *r)
{
	if (r->kind != JOURNAL_MESSAGE || r->time_us < f->from_us || r->time_us >= f->to_us)
		return false;
	if (f->user && (is_bare(r->from, f->user) || is_bare(r->to, f->user)))
		return true;
	return f->room && (is_bare(r->to, f->room) || is_bare(r->from, f->room));
}

static void json_str(FILE *out, struct journal_str s)
{
	fputc('"', out);
	for (size_t i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", out);
		else if (c == '\r')
			fputs("\\r", out);
		else if (c == '\t')
			fputs("\\t", out);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void iso_time(int64_t us, char *out, size_t cap)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%06dZ", (int)(us % 1000000));
}

static void json_field(FILE *out, const char *name, struct journal_str s)
{
	if (s.n == 0)
		return;
	fprintf(out, ", \"%s\": ", name);
	json_str(out, s);
}

static void write_json(FILE *out, const struct journal_rec *r, uint32_t segment, bool first)
{
	char when[64];
	iso_time(r->time_us, when, sizeof when);
	fprintf(out, "%s  {\"seq\": %" PRIu64 ", \"segment\": %u, \"time\": \"%s\"", first ? "" : ",\n",
		r->seq, segment, when);
	json_field(out, "recorded", r->how);
	json_field(out, "from", r->from);
	json_field(out, "to", r->to);
	json_field(out, "type", r->type);
	json_field(out, "id", r->id);
	json_field(out, "thread", r->thread);
	json_field(out, "subject", r->subject);
	json_field(out, "body", r->body);
	fputc('}', out);
}

/* A header field value: control characters (CR, LF above all) as spaces. */
static void header_value(FILE *out, struct journal_str s)
{
	for (size_t i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		fputc(c < 0x20 || c == 0x7f ? ' ' : c, out);
	}
}

/* An addr-spec for a JID: its bare part, which has the local@domain form
 * (a domain alone gets no local part). */
static void header_address(FILE *out, struct journal_str s)
{
	struct journal_str bare = { s.p, bare_len(s) };
	fputs("\"", out);
	for (size_t i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c == '"' || c == '\\')
			fputc('\\', out);
		fputc(c < 0x20 || c == 0x7f ? ' ' : c, out);
	}
	fputs("\" <", out);
	header_value(out, bare);
	fputs(">", out);
}

/* host: the right side of each Message-ID, a domain (RFC 5322 3.6.4
 * allows no '@' in it). */
static void write_mbox(FILE *out, const struct journal_rec *r, const char *host)
{
	time_t t = (time_t)(r->time_us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char asc[64], date[64];
	strftime(asc, sizeof asc, "%a %b %e %H:%M:%S %Y", &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	struct journal_str from_bare = { r->from.p, bare_len(r->from) };
	fputs("From ", out);
	/* The envelope sender is one word: anything else there would end it. */
	for (size_t i = 0; i < from_bare.n; i++) {
		unsigned char c = (unsigned char)from_bare.p[i];
		fputc(c <= 0x20 || c == 0x7f ? '_' : c, out);
	}
	fprintf(out, " %s\n", asc);
	fputs("From: ", out);
	header_address(out, r->from);
	fputs("\nTo: ", out);
	header_address(out, r->to);
	fprintf(out, "\nDate: %s\n", date);
	fputs("Subject: ", out);
	if (r->subject.n)
		header_value(out, r->subject);
	else
		fputs("(chat message)", out);
	fprintf(out, "\nMessage-ID: <journal.%" PRIu64 "@%s>\n", r->seq, host);
	fputs("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
	      "Content-Transfer-Encoding: 8bit\n", out);
	fputs("X-XMPP-Type: ", out);
	header_value(out, r->type);
	fputs("\nX-Natter-Journal-Recorded: ", out);
	header_value(out, r->how);
	fprintf(out, "\nX-Natter-Journal-Seq: %" PRIu64 "\n", r->seq);
	if (r->id.n) {
		fputs("X-XMPP-Id: ", out);
		header_value(out, r->id);
		fputc('\n', out);
	}
	if (r->thread.n) {
		fputs("X-XMPP-Thread: ", out);
		header_value(out, r->thread);
		fputc('\n', out);
	}
	fputc('\n', out);
	/* Body lines, CRLF and CR as LF, mboxrd-quoted. */
	const char *p = r->body.p, *end = r->body.p + r->body.n;
	while (p < end) {
		const char *nl = p;
		while (nl < end && *nl != '\n' && *nl != '\r')
			nl++;
		const char *q = p;
		while (q < nl && *q == '>')
			q++;
		if (nl - q >= 5 && memcmp(q, "From ", 5) == 0)
			fputc('>', out);
		fwrite(p, 1, (size_t)(nl - p), out);
		fputc('\n', out);
		if (nl < end && *nl == '\r' && nl + 1 < end && nl[1] == '\n')
			nl++;
		p = nl + 1;
	}
	fputc('\n', out);
}

int journal_export(const char *dir, const struct journal_filter *f, enum journal_format fmt,
		   FILE *out, FILE *warn)
{
	uint32_t *nums;
	long n = journal_segments(dir, &nums);
	if (n < 0) {
		fprintf(warn, "natterctl: %s: cannot read the journal\n", dir);
		return 1;
	}
	bool first = true;
	uint64_t count = 0;
	/* The user's domain, or the room's chat service. */
	const char *jid = f->user ? f->user : f->room;
	const char *at = strchr(jid, '@');
	const char *host = at ? at + 1 : jid;
	if (fmt == JOURNAL_FORMAT_JSON)
		fputs("[\n", out);
	for (long i = 0; i < n; i++) {
		char path[4200];
		journal_segment_path(dir, nums[i], path, sizeof path);
		struct journal_reader rd;
		if (journal_reader_open(&rd, path) != 0) {
			fprintf(warn, "natterctl: warning: cannot open %s\n", path);
			continue;
		}
		struct journal_rec r;
		const uint8_t *bytes;
		uint64_t off;
		const char *why = "";
		uint8_t chain[JOURNAL_HASH_LEN] = { 0 };
		bool anchored = false;
		while (journal_reader_next(&rd, &r, &bytes, &off, &why) == JOURNAL_NEXT_RECORD) {
			if (!anchored && r.kind == JOURNAL_CHECKPOINT) {
				memcpy(chain, r.prev_hash, JOURNAL_HASH_LEN);
				anchored = true;
			}
			uint8_t h[JOURNAL_HASH_LEN];
			journal_record_chain(bytes, &r, chain, h);
			if (anchored && memcmp(h, r.hash, JOURNAL_HASH_LEN) != 0) {
				fprintf(warn, "natterctl: warning: seg-%08u.njl record %" PRIu64
					" at offset %" PRIu64 " does not match the chain (run "
					"natterctl journal verify)\n", nums[i], r.seq, off);
				anchored = false;
			}
			memcpy(chain, r.hash, JOURNAL_HASH_LEN);
			if (!selected(f, &r))
				continue;
			count++;
			if (fmt == JOURNAL_FORMAT_JSON) {
				write_json(out, &r, nums[i], first);
				first = false;
			} else {
				write_mbox(out, &r, host);
			}
		}
		journal_reader_close(&rd);
	}
	if (fmt == JOURNAL_FORMAT_JSON)
		fputs(first ? "]\n" : "\n]\n", out);
	free(nums);
	fprintf(warn, "natterctl: exported %" PRIu64 " message(s)\n", count);
	return ferror(out) ? 1 : 0;
}

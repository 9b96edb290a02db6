/* The journal writer thread (journal_writer.h).
 *
 * Loops put messages into a ring under a mutex; the writer takes all of
 * them at once, encodes them into one buffer (assigning seq numbers and
 * chain hashes in queue order), writes it with one write() and fsyncs
 * once: a busy server gets larger batches, not more fsyncs. */
#include "journal/journal_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "jid/jid.h"

struct journal_writer {
	char host[JID_PART_MAX + 1];
	char dir[4096];
	const struct config_journal *cfg; /* lives as long as the server's config */
	EVP_PKEY *key;                    /* the server's; not owned */
	uint8_t key_id[JOURNAL_HASH_LEN];
	pthread_t thread;
	bool running;
	/* Shared with the loops, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t nonempty, nonfull;
	struct journal_msg **ring;
	size_t cap, head, count;
	bool stop;
	bool failed;                      /* a write or fsync failed: refuse from now on */
	uint64_t refused;
	/* The writer thread's own. */
	struct journal_msg **batch;
	int fd;
	uint32_t segment;
	uint64_t seg_len;                 /* bytes in the segment file */
	uint64_t seq;                     /* of the last record written */
	uint8_t chain[JOURNAL_HASH_LEN];  /* of the last record written */
	uint64_t since_checkpoint;        /* records after the last checkpoint */
	int64_t last_checkpoint_us;
	int64_t last_retention_us;
	struct buf out;                   /* encoded, not yet written */
	uint64_t records, batches;
};

int64_t journal_writer_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int mkdir_p(const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Appends a checkpoint to w->out. */
static int add_checkpoint(struct journal_writer *w, enum journal_reason reason,
			  uint32_t prev_segment, uint64_t prev_valid_len, uint64_t prev_torn)
{
	struct journal_rec r = { .segment = w->segment, .reason = (uint8_t)reason,
				 .prev_segment = prev_segment, .prev_valid_len = prev_valid_len,
				 .prev_torn = prev_torn };
	int64_t now = journal_writer_now_us();
	if (journal_record_checkpoint(&w->out, w->seq + 1, now, &r, w->host, w->key, w->key_id,
				      w->chain) != 0)
		return -1;
	w->seq++;
	w->since_checkpoint = 0;
	w->last_checkpoint_us = now;
	return 0;
}

/* Writes and fsyncs w->out. Returns 0, or -1 (logged). */
static int flush_out(struct journal_writer *w)
{
	if (w->out.len == 0)
		return 0;
	if (write_all(w->fd, w->out.data, w->out.len) != 0 || fdatasync(w->fd) != 0) {
		log_error("journal %s: cannot write segment %u: %s", w->host, w->segment,
			  strerror(errno));
		return -1;
	}
	w->seg_len += w->out.len;
	w->out.len = 0;
	w->batches++;
	return 0;
}

/* Starts segment w->segment: written under a temporary name with its
 * opening checkpoint, fsynced, then renamed, so a segment file always
 * begins with a whole signed checkpoint. */
static int open_segment(struct journal_writer *w, uint32_t prev_segment, uint64_t prev_valid_len,
			uint64_t prev_torn, char *err, size_t errlen)
{
	char path[4200], tmp[4300];
	journal_segment_path(w->dir, w->segment, path, sizeof path);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	w->out.len = 0;
	if (add_checkpoint(w, JOURNAL_CP_OPEN, prev_segment, prev_valid_len, prev_torn) != 0) {
		snprintf(err, errlen, "journal %s: cannot sign a checkpoint", w->host);
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, w->out.data, w->out.len) != 0 || fsync(fd) != 0 ||
	    rename(tmp, path) != 0 || fsync_dir(w->dir) != 0) {
		snprintf(err, errlen, "journal %s: cannot create %s: %s", w->host, path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "journal %s: cannot open %s: %s", w->host, path,
			 strerror(errno));
		return -1;
	}
	w->fd = fd;
	w->seg_len = w->out.len;
	w->out.len = 0;
	return 0;
}

/* Seals the full segment and starts the next one. */
static int rotate(struct journal_writer *w)
{
	char err[512];
	if (add_checkpoint(w, JOURNAL_CP_SEAL, 0, 0, 0) != 0 || flush_out(w) != 0)
		return -1;
	close(w->fd);
	w->fd = -1;
	uint32_t prev = w->segment;
	uint64_t prev_len = w->seg_len;
	w->segment++;
	if (open_segment(w, prev, prev_len, 0, err, sizeof err) != 0) {
		log_error("%s", err);
		return -1;
	}
	log_info("journal %s: segment %u sealed, segment %u started", w->host, prev, w->segment);
	return 0;
}

/* Removes the oldest whole segments whose file was last written more than
 * retention_days ago (never the current one, and never one after a
 * segment that is kept), then records what it removed. */
static void retention(struct journal_writer *w, int64_t now_us)
{
	w->last_retention_us = now_us;
	if (w->cfg->retention_days == 0)
		return;
	uint32_t *nums;
	long n = journal_segments(w->dir, &nums);
	time_t limit = (time_t)(now_us / 1000000) - (time_t)w->cfg->retention_days * 86400;
	uint32_t removed = 0, below = 0;
	for (long i = 0; i < n && nums[i] < w->segment; i++) {
		char path[4200];
		struct stat st;
		journal_segment_path(w->dir, nums[i], path, sizeof path);
		if (stat(path, &st) != 0 || st.st_mtime >= limit)
			break;
		if (unlink(path) != 0) {
			log_error("journal %s: retention: cannot remove %s: %s", w->host, path,
				  strerror(errno));
			break;
		}
		removed++;
		below = nums[i] + 1;
	}
	free(nums);
	if (removed == 0)
		return;
	fsync_dir(w->dir);
	journal_record_retention(&w->out, w->seq + 1, now_us, below, removed, w->chain);
	w->seq++;
	w->since_checkpoint++;
	log_info("journal %s: retention removed %u segment(s) below %u", w->host, removed, below);
}

static void *writer_thread(void *arg)
{
	struct journal_writer *w = arg;
	const struct config_journal *cfg = w->cfg;
	pthread_setname_np(pthread_self(), "natter-journal");
	pthread_mutex_lock(&w->lock);
	for (;;) {
		if (w->count == 0 && !w->stop) {
			/* Sleep until a record comes or a checkpoint or the
			 * retention check falls due. */
			int64_t due = w->last_retention_us + 60 * 1000000LL;
			if (w->since_checkpoint > 0) {
				int64_t cp = w->last_checkpoint_us + cfg->checkpoint_interval * 1000000LL;
				if (cp < due)
					due = cp;
			}
			struct timespec ts = { .tv_sec = (time_t)(due / 1000000),
					       .tv_nsec = (long)(due % 1000000) * 1000 };
			pthread_cond_timedwait(&w->nonempty, &w->lock, &ts);
		}
		size_t n = w->count;
		for (size_t i = 0; i < n; i++)
			w->batch[i] = w->ring[(w->head + i) % w->cap];
		w->head = (w->head + n) % w->cap;
		w->count = 0;
		bool stopping = w->stop;
		bool failed = w->failed;
		pthread_cond_broadcast(&w->nonfull);
		pthread_mutex_unlock(&w->lock);

		int rc = 0;
		for (size_t i = 0; i < n; i++) {
			if (!failed && rc == 0) {
				journal_record_message(&w->out, w->seq + 1, w->batch[i], w->chain);
				w->seq++;
				w->records++;
				if (++w->since_checkpoint >= (uint64_t)cfg->checkpoint_records)
					rc = add_checkpoint(w, JOURNAL_CP_PERIODIC, 0, 0, 0);
				if (rc == 0 && w->seg_len + w->out.len >= cfg->segment_size) {
					rc = flush_out(w);
					if (rc == 0)
						rc = rotate(w);
				}
			}
			journal_msg_free(w->batch[i]);
		}
		int64_t now = journal_writer_now_us();
		if (!failed && rc == 0 && w->since_checkpoint > 0 &&
		    now - w->last_checkpoint_us >= cfg->checkpoint_interval * 1000000LL)
			rc = add_checkpoint(w, JOURNAL_CP_PERIODIC, 0, 0, 0);
		if (!failed && rc == 0 && now - w->last_retention_us >= 60 * 1000000LL)
			retention(w, now);
		if (!failed && rc == 0)
			rc = flush_out(w);

		pthread_mutex_lock(&w->lock);
		if (rc != 0 && !w->failed) {
			log_error("journal %s: writing failed; messages through the host are "
				  "refused until natterd is restarted", w->host);
			w->failed = true;
		}
		if (stopping && w->count == 0)
			break;
	}
	pthread_mutex_unlock(&w->lock);
	if (!w->failed && (add_checkpoint(w, JOURNAL_CP_SHUTDOWN, 0, 0, 0) != 0 || flush_out(w) != 0))
		log_error("journal %s: cannot write the shutdown checkpoint", w->host);
	log_info("journal %s: %llu record(s) in %llu batch(es), %llu refused; last seq %llu in "
		 "segment %u", w->host, (unsigned long long)w->records,
		 (unsigned long long)w->batches, (unsigned long long)w->refused,
		 (unsigned long long)w->seq, w->segment);
	return NULL;
}

/* Finds where the chain goes on: the last segment's last whole record
 * (its stored hash and seq), the bytes of whole records, and what follows
 * them (a torn record a crash left, or bytes that are no record). */
static int recover(struct journal_writer *w, uint32_t *last, uint64_t *valid, uint64_t *torn,
		   char *err, size_t errlen)
{
	uint32_t *nums;
	long n = journal_segments(w->dir, &nums);
	if (n < 0) {
		snprintf(err, errlen, "journal %s: cannot read %s: %s", w->host, w->dir,
			 strerror(errno));
		return -1;
	}
	*last = 0;
	*valid = *torn = 0;
	memset(w->chain, 0, sizeof w->chain);
	w->seq = 0;
	if (n == 0) {
		free(nums);
		return 0;
	}
	*last = nums[n - 1];
	free(nums);
	char path[4200];
	journal_segment_path(w->dir, *last, path, sizeof path);
	struct journal_reader rd;
	if (journal_reader_open(&rd, path) != 0) {
		snprintf(err, errlen, "journal %s: cannot open %s: %s", w->host, path,
			 strerror(errno));
		return -1;
	}
	struct journal_rec r;
	const uint8_t *bytes;
	uint64_t off = 0;
	const char *why = "";
	enum journal_next st;
	while ((st = journal_reader_next(&rd, &r, &bytes, &off, &why)) == JOURNAL_NEXT_RECORD) {
		memcpy(w->chain, r.hash, JOURNAL_HASH_LEN);
		w->seq = r.seq;
	}
	uint64_t size = rd.size;
	journal_reader_close(&rd);
	if (st == JOURNAL_NEXT_IO) {
		snprintf(err, errlen, "journal %s: cannot read %s: %s", w->host, path,
			 strerror(errno));
		return -1;
	}
	*valid = off;
	*torn = size - off;
	if (st == JOURNAL_NEXT_TORN)
		log_warn("journal %s: %s ends with %llu byte(s) of a torn record at offset %llu "
			 "(natterd stopped while writing); the next segment declares them",
			 w->host, path, (unsigned long long)*torn, (unsigned long long)off);
	else if (st == JOURNAL_NEXT_BAD)
		log_error("journal %s: %s: %s at offset %llu; the chain goes on from the record "
			  "before (natterctl journal verify shows the damage)",
			  w->host, path, why, (unsigned long long)off);
	return 0;
}

static struct journal_writer *writer_new(const struct config *cfg, const struct config_host *h,
					 EVP_PKEY *key, char *err, size_t errlen)
{
	struct journal_writer *w = xcalloc(1, sizeof *w);
	snprintf(w->host, sizeof w->host, "%s", h->domain);
	journal_dir(cfg, h, w->dir, sizeof w->dir);
	w->cfg = &h->journal;
	w->key = key;
	w->fd = -1;
	w->cap = (size_t)h->journal.queue_size;
	w->ring = xcalloc(w->cap, sizeof *w->ring);
	w->batch = xcalloc(w->cap, sizeof *w->batch);
	buf_init(&w->out);
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->nonempty, NULL);
	pthread_cond_init(&w->nonfull, NULL);
	uint32_t last;
	uint64_t valid, torn;
	if (journal_key_id(key, w->key_id) != 0) {
		snprintf(err, errlen, "journal %s: cannot read the signing key", w->host);
		return w;
	}
	if (mkdir_p(w->dir) != 0) {
		snprintf(err, errlen, "journal %s: cannot create %s: %s", w->host, w->dir,
			 strerror(errno));
		return w;
	}
	if (recover(w, &last, &valid, &torn, err, errlen) != 0)
		return w;
	/* Every start begins a new segment: files once written are never
	 * reopened for writing, so a torn tail stays as evidence. */
	w->segment = last + 1;
	if (open_segment(w, last, valid, torn, err, errlen) != 0)
		return w;
	w->last_retention_us = 0; /* checked at once */
	if (pthread_create(&w->thread, NULL, writer_thread, w) != 0) {
		snprintf(err, errlen, "journal %s: cannot start its thread", w->host);
		return w;
	}
	w->running = true;
	log_info("journal %s: recording in %s, segment %u, next seq %llu", w->host, w->dir,
		 w->segment, (unsigned long long)w->seq + 1);
	return w;
}

static void writer_free(struct journal_writer *w)
{
	if (w == NULL)
		return;
	if (w->running) {
		pthread_mutex_lock(&w->lock);
		w->stop = true;
		pthread_cond_signal(&w->nonempty);
		pthread_mutex_unlock(&w->lock);
		pthread_join(w->thread, NULL);
	}
	for (size_t i = 0; i < w->count; i++)
		journal_msg_free(w->ring[(w->head + i) % w->cap]);
	if (w->fd >= 0)
		close(w->fd);
	buf_free(&w->out);
	free(w->ring);
	free(w->batch);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->nonempty);
	pthread_cond_destroy(&w->nonfull);
	free(w);
}

int journal_writer_start_all(struct server *srv, char *err, size_t errlen)
{
	const struct config *cfg = srv->cfg;
	bool any = false;
	for (size_t i = 0; i < cfg->n_hosts; i++)
		any = any || cfg->hosts[i].journal.enabled;
	if (!any)
		return 0;
	if (mkdir_p(cfg->data_dir) != 0) {
		snprintf(err, errlen, "cannot create %s: %s", cfg->data_dir, strerror(errno));
		return -1;
	}
	srv->journal_key = journal_key_load_or_create(cfg->data_dir, err, errlen);
	if (srv->journal_key == NULL)
		return -1;
	srv->journals = xcalloc(cfg->n_hosts, sizeof *srv->journals);
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		if (!cfg->hosts[i].journal.enabled)
			continue;
		err[0] = '\0';
		srv->journals[i] = writer_new(cfg, &cfg->hosts[i], srv->journal_key, err, errlen);
		if (!srv->journals[i]->running)
			return -1;
	}
	return 0;
}

void journal_writer_stop_all(struct server *srv)
{
	for (size_t i = 0; srv->journals && i < srv->cfg->n_hosts; i++)
		writer_free(srv->journals[i]);
	free(srv->journals);
	srv->journals = NULL;
	EVP_PKEY_free(srv->journal_key);
	srv->journal_key = NULL;
}

struct journal_writer *journal_writer_of(const struct server *srv, const char *domain)
{
	if (srv->journals == NULL)
		return NULL;
	for (size_t i = 0; i < srv->cfg->n_hosts; i++)
		if (srv->journals[i] && strcmp(srv->cfg->hosts[i].domain, domain) == 0)
			return srv->journals[i];
	return NULL;
}

enum status journal_writer_submit(struct journal_writer *w, struct journal_msg *m)
{
	pthread_mutex_lock(&w->lock);
	if (!w->failed && w->count == w->cap && w->cfg->queue_wait_ms > 0) {
		int64_t due = journal_writer_now_us() + w->cfg->queue_wait_ms * 1000LL;
		struct timespec ts = { .tv_sec = (time_t)(due / 1000000),
				       .tv_nsec = (long)(due % 1000000) * 1000 };
		while (!w->failed && w->count == w->cap &&
		       pthread_cond_timedwait(&w->nonfull, &w->lock, &ts) == 0)
			;
	}
	if (w->failed || w->count == w->cap || w->stop) {
		w->refused++;
		pthread_mutex_unlock(&w->lock);
		journal_msg_free(m);
		return ERROR;
	}
	w->ring[(w->head + w->count) % w->cap] = m;
	w->count++;
	pthread_cond_signal(&w->nonempty);
	pthread_mutex_unlock(&w->lock);
	return OK;
}

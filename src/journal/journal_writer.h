/* The journal writer: one thread per host with a journal, fed by the
 * event loops through a bounded queue, appending records and fsyncing
 * them in batches (group commit). No event loop touches the disk. */
#ifndef NATTER_JOURNAL_WRITER_H
#define NATTER_JOURNAL_WRITER_H

#include <stdint.h>

#include "core/status.h"
#include "journal/journal.h"

struct server;
struct journal_writer;

/* Called once by server_run() before the loops start (it may block on
 * the disk: no loop runs yet). For every host with journal.enabled it
 * loads or makes the signing key, recovers the chain from the last
 * segment (a torn last record is left where it is and declared in the
 * new segment's opening checkpoint), opens a new segment and starts the
 * writer thread. Returns 0, or -1 with a message in err. */
int journal_writer_start_all(struct server *srv, char *err, size_t errlen);

/* Called once after every loop has stopped: each writer drains its queue,
 * seals the segment with a shutdown checkpoint, fsyncs and ends. */
void journal_writer_stop_all(struct server *srv);

/* The writer of the host domain (normalised), or NULL when the host has
 * no journal. Any thread. */
struct journal_writer *journal_writer_of(const struct server *srv, const char *domain);

/* Hands m to the writer; takes ownership of m in every case. Called on
 * an event loop. When the queue is full it waits up to queue_wait_ms for
 * room (the one bounded wait a loop makes for the journal), then gives
 * up. Returns OK when m is queued, ERROR when it is not (queue still
 * full, or the writer failed to write): the caller must then refuse the
 * message, so that nothing passes unrecorded. */
enum status journal_writer_submit(struct journal_writer *w, struct journal_msg *m);

/* Microseconds since 1970 UTC, now. */
int64_t journal_writer_now_us(void);

#endif

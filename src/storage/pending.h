/* The event loops' storage handles (DESIGN.md, "Storage off the loops"):
 * no loop waits for the store's write lock, which the storage thread
 * holds for a whole batch of archive writes (tens of milliseconds under
 * load; a loop's own write used to wait that long, or seconds when
 * batches followed one another, stalling every session of the loop).
 *
 * A loop's map write (map_put, map_del: rosters, subscriptions, vCards,
 * private XML, PEP and PubSub nodes and items, room configurations, the
 * last logout) is queued to the storage thread (storeq.h) and kept
 * meanwhile in a table that every loop shares and consults before the
 * store: the next read on any loop sees the write at once, and the entry
 * leaves the table once the write is committed. Everything else (reads,
 * accounts, lists, the archive) goes to the driver underneath; SQLite's
 * readers do not wait for its writer. Map writes of one key commit in
 * the order they were made, and after the jobs queued before them.
 *
 * What this changes for a caller: a map write is durable a moment after
 * the call returns (with the next batch), so a kill -9 in that moment
 * loses it; begin and end group nothing and cannot undo (each write is
 * its own job, and the storage thread batches jobs anyway). */
#ifndef NATTER_PENDING_H
#define NATTER_PENDING_H

#include <stdbool.h>
#include <stddef.h>

#include "storage/storage.h"

struct pending;
struct storeq;

/* The shared table in front of drv, writing through q. pending_free
 * after storeq_stop, which commits what is queued (its jobs update the
 * table until then). */
struct pending *pending_new(const struct storage_driver *drv, struct storeq *q);
void pending_free(struct pending *p);

/* A loop's handle: drv's own handle on data_dir with p in front, used
 * with storage_pending_driver (and closed by its close). NULL and a
 * message in err on failure. */
struct storage *pending_open(struct pending *p, const char *data_dir, char *err,
			     size_t errlen);

/* Map writes queued through handle st (a pending_open handle) so far: a
 * caller compares two readings to learn whether it wrote in between. */
unsigned long long pending_queued(struct storage *st);

/* An account removed in-band: from now on, map writes for it are dropped
 * (its sessions, on any loop, may write until they are closed, and what
 * they wrote would outlive it, for an account made again with its name
 * to find). Until pending_account_exists: its sessions are closed and
 * what they stored is swept, or a registration made it again, or a
 * user_get through a pending_open handle found it (natterctl made it,
 * and it logs in). */
void pending_account_removed(struct pending *p, const char *domain, const char *local);
void pending_account_exists(struct pending *p, const char *domain, const char *local);
/* Whether local@domain is marked removed (pending_account_removed). */
bool pending_account_is_removed(struct pending *p, const char *domain, const char *local);

/* Map writes not committed yet (a gauge for tests and natterctl). */
size_t pending_count(struct pending *p);

/* The driver of pending_open's handles. Its open always fails (the table
 * is needed: pending_open). user_del first waits until the writes queued
 * before it are committed, so that none lands after it. */
extern const struct storage_driver storage_pending_driver;

#endif

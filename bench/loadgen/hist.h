/* Latency histograms: log-linear buckets over microseconds, precise to
 * better than 1 %, fixed size, mergeable.
 *
 * One thread (the worker that owns the histogram) adds; another (the
 * coordinator) may read at any time. Buckets are relaxed atomics written
 * by load+store, so the writer pays no locked instruction and a reader
 * sees each bucket either before or after an add, never torn. */
#ifndef LOADGEN_HIST_H
#define LOADGEN_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_BUCKETS 4096

struct hist {
	_Atomic uint64_t count;
	_Atomic uint64_t sum_us;
	_Atomic uint64_t max_us;
	_Atomic uint32_t bucket[HIST_BUCKETS];
};

/* Called by the owning thread only. */
void hist_add(struct hist *h, uint64_t us);
/* Adds every sample of src to dst (dst owned by the caller). */
void hist_merge(struct hist *dst, const struct hist *src);
void hist_reset(struct hist *h);
uint64_t hist_count(const struct hist *h);
/* The value (microseconds) below which fraction q (0..1) of the samples
 * lie; 0 for an empty histogram. */
double hist_quantile_us(const struct hist *h, double q);
double hist_mean_us(const struct hist *h);
uint64_t hist_max_us(const struct hist *h);

#endif

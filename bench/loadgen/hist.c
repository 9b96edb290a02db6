#include "hist.h"

#include <string.h>

#define SUB (1u << HIST_SUB_BITS)

static unsigned hist_index(uint64_t v)
{
	if (v < 2 * SUB)
		return (unsigned)v;
	unsigned top = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = top - HIST_SUB_BITS;
	unsigned idx = 2 * SUB + (shift - 1) * SUB + (unsigned)((v >> shift) - SUB);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of bucket idx, in microseconds. */
static double hist_value(unsigned idx)
{
	if (idx < 2 * SUB)
		return idx;
	unsigned shift = (idx - 2 * SUB) / SUB + 1;
	uint64_t low = ((uint64_t)((idx - 2 * SUB) % SUB) + SUB) << shift;
	return (double)low + (double)((uint64_t)1 << shift) / 2.0;
}

static void bump64(_Atomic uint64_t *p, uint64_t n)
{
	atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

void hist_add(struct hist *h, uint64_t us)
{
	_Atomic uint32_t *b = &h->bucket[hist_index(us)];
	atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	bump64(&h->sum_us, us);
	if (us > atomic_load_explicit(&h->max_us, memory_order_relaxed))
		atomic_store_explicit(&h->max_us, us, memory_order_relaxed);
	/* Last, so a reader that sees the count sees the sample's bucket
	 * (or a later state) on the same cache-coherent machine. */
	atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
			      memory_order_release);
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	uint64_t n = atomic_load_explicit(&src->count, memory_order_acquire);
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		uint32_t v = atomic_load_explicit(&src->bucket[i], memory_order_relaxed);
		if (v)
			atomic_store_explicit(&dst->bucket[i],
					      atomic_load_explicit(&dst->bucket[i], memory_order_relaxed) + v,
					      memory_order_relaxed);
	}
	bump64(&dst->sum_us, atomic_load_explicit(&src->sum_us, memory_order_relaxed));
	uint64_t m = atomic_load_explicit(&src->max_us, memory_order_relaxed);
	if (m > atomic_load_explicit(&dst->max_us, memory_order_relaxed))
		atomic_store_explicit(&dst->max_us, m, memory_order_relaxed);
	bump64(&dst->count, n);
}

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof *h);
}

uint64_t hist_count(const struct hist *h)
{
	return atomic_load_explicit(&h->count, memory_order_acquire);
}

double hist_quantile_us(const struct hist *h, double q)
{
	/* Sum the buckets rather than trust count: a concurrent writer may
	 * have bumped one but not the other. */
	uint64_t total = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
	if (total == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)total);
	if (rank >= total)
		rank = total - 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		if (seen > rank) {
			double v = hist_value(i);
			double m = (double)hist_max_us(h);
			return v > m ? m : v;
		}
	}
	return (double)hist_max_us(h);
}

double hist_mean_us(const struct hist *h)
{
	uint64_t n = hist_count(h);
	return n ? (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / (double)n : 0;
}

uint64_t hist_max_us(const struct hist *h)
{
	return atomic_load_explicit(&h->max_us, memory_order_relaxed);
}

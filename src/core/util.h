/* Small helpers used everywhere. */
#ifndef NATTER_UTIL_H
#define NATTER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Allocation that never returns NULL: out of memory is fatal (abort with a
 * log line), since no caller could recover meaningfully. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Hands free heap back to the system after a crowd of connections or
 * queues was freed: malloc_trim(0) under glibc's allocator. Under jemalloc
 * (natterd's, docs/decisions/0011), nothing: its background thread
 * returns unused pages within dirty_decay_ms anyway, and a purge in the
 * middle of a reconnect storm only makes the next allocations fault the
 * pages back in. */
void heap_trim(void);

/* What the allocator holds: bytes the program has allocated and not freed,
 * and bytes of memory the allocator keeps resident (jemalloc's
 * stats.resident; glibc: in use plus free heap it has not returned).
 * Names the allocator ("jemalloc", "glibc", or "sanitizer" in a build
 * with AddressSanitizer). For `natterctl memory`. */
struct heap_stats {
	const char *allocator;
	size_t in_use;
	size_t held;
};
void heap_stats(struct heap_stats *out);

/* Logs and aborts: for impossible states only. */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* FNV-1a of a string, for picking a bucket, lock or owner loop (not for
 * anything an adversary must not steer). str_hash_more goes on from h,
 * so that several strings hash as one. */
#define STR_HASH_INIT 2166136261u
uint32_t str_hash_more(uint32_t h, const char *s);
static inline uint32_t str_hash(const char *s) { return str_hash_more(STR_HASH_INIT, s); }

/* Monotonic milliseconds. */
unsigned long long now_ms(void);

/* Whether word is one of the words of list (separated by spaces, tabs or
 * commas, as config values like s2s.allow and kerberos.realms are).
 * Exact, case-sensitive. A NULL list holds nothing. */
bool word_in_list(const char *list, const char *word);

/* Fills out with n random bytes as 2n lower-case hex digits plus NUL. */
void random_hex(char *out, size_t n);

/* A count a client wrote: decimal digits only, no sign, no space (what
 * xs:nonNegativeInteger allows, less a '+'). One past LONG_MAX reads as
 * LONG_MAX: as good as no bound. Returns 0, or -1 when v (may be NULL) is
 * not one. */
int parse_count(const char *v, long *out);

/* XEP-0082 DateTime ("2026-12-04T18:20:00Z", optional fraction, Z or
 * +hh:mm / -hh:mm) as microseconds since the epoch in *usec. Returns 0, or
 * -1 when s is not one (nothing after it is accepted). */
int datetime_parse(const char *s, long long *usec);

/* Writes usec (microseconds since the epoch) as an XEP-0082 DateTime in UTC
 * with milliseconds ("2026-12-04T18:20:00.123Z") into out (>= 25 bytes). */
void datetime_format(long long usec, char *out, size_t cap);

#endif

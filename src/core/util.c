#include "core/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		fatal("out of memory (%zu bytes)", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		fatal("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		fatal("out of memory (%zu bytes)", n);
	return q;
}

char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(xmalloc(n), s, n);
}

uint32_t str_hash_more(uint32_t h, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);

/* A symbol of whichever allocator is linked or preloaded (jemalloc's
 * mallctl, the sanitizers' statistics), or NULL. Both callers are rare
 * (a sweep that freed a crowd, a natterctl command), so no cache. */
static void *allocator_symbol(const char *name)
{
	return dlsym(RTLD_DEFAULT, name);
}

void heap_trim(void)
{
	if (allocator_symbol("mallctl") == NULL)
		malloc_trim(0);
}

void heap_stats(struct heap_stats *out)
{
	mallctl_fn ctl;
	size_t (*asan_in_use)(void), (*asan_heap)(void);
	*(void **)&ctl = allocator_symbol("mallctl");
	*(void **)&asan_in_use = allocator_symbol("__sanitizer_get_current_allocated_bytes");
	*(void **)&asan_heap = allocator_symbol("__sanitizer_get_heap_size");
	if (ctl != NULL) {
		/* The statistics are a snapshot taken at each new epoch. */
		uint64_t epoch = 1;
		size_t len = sizeof epoch, in_use = 0, held = 0, n = sizeof(size_t);
		ctl("epoch", &epoch, &len, &epoch, sizeof epoch);
		if (ctl("stats.allocated", &in_use, &n, NULL, 0) != 0)
			in_use = 0;
		/* Freed blocks that a thread keeps in its cache still count as
		 * allocated; they go back to the arena only when that thread
		 * allocates again, which an idle loop may not do for long.
		 * 4096: every arena (MALLCTL_ARENAS_ALL). */
		size_t cached = 0;
		if (ctl("stats.arenas.4096.tcache_bytes", &cached, &n, NULL, 0) == 0 &&
		    cached <= in_use)
			in_use -= cached;
		if (ctl("stats.resident", &held, &n, NULL, 0) != 0)
			held = 0;
		*out = (struct heap_stats){ "jemalloc", in_use, held };
	} else if (asan_in_use != NULL && asan_heap != NULL) {
		*out = (struct heap_stats){ "sanitizer", asan_in_use(), asan_heap() };
	} else {
		struct mallinfo2 mi = mallinfo2();
		*out = (struct heap_stats){ "glibc", mi.uordblks + mi.hblkhd, mi.arena + mi.hblkhd };
	}
}

void fatal(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_error("fatal: %s", msg);
	abort();
}

unsigned long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000ULL;
}

void random_hex(char *out, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char raw[64];
	while (n > 0) {
		size_t k = n < sizeof raw ? n : sizeof raw;
		if (RAND_bytes(raw, (int)k) != 1)
			fatal("RAND_bytes failed");
		for (size_t i = 0; i < k; i++) {
			*out++ = digits[raw[i] >> 4];
			*out++ = digits[raw[i] & 15];
		}
		n -= k;
	}
	*out = '\0';
}

bool word_in_list(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; p && *p;) {
		p += strspn(p, " \t,");
		size_t len = strcspn(p, " \t,");
		if (len == n && len > 0 && strncmp(p, word, n) == 0)
			return true;
		p += len;
	}
	return false;
}

int datetime_parse(const char *s, long long *usec)
{
	struct tm tm = { 0 };
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL || strlen(s) < 19 || s[4] != '-' || s[10] != 'T')
		return -1;
	long long frac = 0;
	if (*p == '.') {
		int digits = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
			if (digits < 6)
				frac = frac * 10 + (*p - '0');
		}
		if (digits == 0)
			return -1;
		for (; digits < 6; digits++)
			frac *= 10;
	}
	long long offset = 0;
	if (*p == 'Z') {
		p++;
	} else if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '2' && p[2] >= '0' &&
		   p[2] <= (p[1] == '2' ? '3' : '9') && p[3] == ':' && p[4] >= '0' &&
		   p[4] <= '5' && p[5] >= '0' && p[5] <= '9') {
		/* XEP-0082's TZD: hh is an hour, 00 to 23. */
		offset = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 +
			 ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
		if (*p == '+')
			offset = -offset;
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1 && tm.tm_year != 69)
		return -1;
	*usec = ((long long)t + offset) * 1000000 + frac;
	return 0;
}

void datetime_format(long long usec, char *out, size_t cap)
{
	time_t t = (time_t)(usec / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char day[24];
	strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, cap, "%s.%03dZ", day, (int)(usec / 1000 % 1000));
}

int parse_count(const char *v, long *out)
{
	if (v == NULL || *v < '0' || *v > '9')
		return -1;
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (*end != '\0')
		return -1;
	*out = errno == ERANGE ? LONG_MAX : n;
	return 0;
}

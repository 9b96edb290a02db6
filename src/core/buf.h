/* Growable byte buffers, and reference-counted immutable ones for sharing
 * one serialised stanza between many recipients (and threads). */
#ifndef NATTER_BUF_H
#define NATTER_BUF_H

#include <stdatomic.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with XML escaping (&, <, >, and both quotes so the result fits
 * in text and in attribute values alike). */
void buf_append_escaped(struct buf *b, const char *s, size_t n);
/* How many bytes buf_append_escaped(b, s, n) appends. */
size_t buf_escaped_len(const char *s, size_t n);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);

/* Immutable bytes shared by reference count; safe to pass between threads.
 * Created with refbuf_new (refcount 1); each holder calls refbuf_release
 * once; the last one frees it. */
struct refbuf {
	atomic_int refs;
	size_t len;
	char data[];
};

/* Takes a copy of data. */
struct refbuf *refbuf_new(const void *data, size_t len);
struct refbuf *refbuf_ref(struct refbuf *r);
void refbuf_release(struct refbuf *r);

#endif

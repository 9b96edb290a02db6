#include "stream/conn.h"

#include <limits.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

struct write_req {
	uv_write_t req;
	struct conn *conn;
	size_t len;
	uint64_t plain_end;       /* out_flushed when this write was made */
	char data[];
};

struct conn_watch {
	uint64_t mark;            /* out_total when the watch was set */
	conn_written_fn *fn;
	void *arg;
};

/* Past the total limit, a peer holding less than this is spared: the
 * ones cut are those that make the total large. */
#define CONN_FAIR_SHARE (64u << 10)

/* --- the id table: open addressing with linear probing --- */

static size_t id_hash(uint64_t id, size_t cap)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (size_t)id & (cap - 1);
}

static void table_insert(struct conn_table *t, struct conn *c);

static void table_grow(struct conn_table *t)
{
	struct conn **old = t->slots;
	size_t old_cap = t->cap;
	t->cap = old_cap ? old_cap * 2 : 64;
	t->slots = xcalloc(t->cap, sizeof *t->slots);
	t->count = 0;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i] != NULL)
			table_insert(t, old[i]);
	free(old);
}

static void table_insert(struct conn_table *t, struct conn *c)
{
	if ((t->count + 1) * 2 > t->cap)
		table_grow(t);
	size_t i = id_hash(c->id, t->cap);
	while (t->slots[i] != NULL)
		i = (i + 1) & (t->cap - 1);
	t->slots[i] = c;
	t->count++;
}

static void table_remove(struct conn_table *t, uint64_t id)
{
	if (t->cap == 0)
		return;
	size_t i = id_hash(id, t->cap);
	while (t->slots[i] != NULL && t->slots[i]->id != id)
		i = (i + 1) & (t->cap - 1);
	if (t->slots[i] == NULL)
		return;
	t->slots[i] = NULL;
	t->count--;
	/* Re-insert the rest of the cluster so probing still finds them. */
	for (size_t j = (i + 1) & (t->cap - 1); t->slots[j] != NULL; j = (j + 1) & (t->cap - 1)) {
		struct conn *c = t->slots[j];
		t->slots[j] = NULL;
		t->count--;
		table_insert(t, c);
	}
}

struct conn *conn_find(struct loop *l, uint64_t id)
{
	struct conn_table *t = &l->conns;
	if (t->cap == 0)
		return NULL;
	for (size_t i = id_hash(id, t->cap); t->slots[i] != NULL; i = (i + 1) & (t->cap - 1))
		if (t->slots[i]->id == id)
			return t->slots[i]->closed ? NULL : t->slots[i];
	return NULL;
}

/* --- output --- */

static void on_kick(uv_idle_t *idle) { (void)idle; }

static const struct config_limits *limits_of(struct conn *c) { return &c->loop->srv->cfg->limits; }

/* Brings the loop's count of queued bytes up to date with this
 * connection's buffers and writes in flight. */
static void account(struct conn *c)
{
	size_t now = c->closed ? 0 : c->out.len + c->tls_out.len + c->queued;
	c->loop->out_held += now - c->held;
	c->held = now;
}

/* The limit for all peers of one loop: the configured total, shared. */
static size_t loop_share(struct conn *c)
{
	int loops = c->loop->srv->n_loops > 0 ? c->loop->srv->n_loops : 1;
	return limits_of(c)->max_queued_total / (size_t)loops;
}

static void closing_unlink(struct conn *c)
{
	struct loop *l = c->loop;
	if (c->close_prev == NULL && l->closing_head != c)
		return;
	if (c->close_prev)
		c->close_prev->close_next = c->close_next;
	else
		l->closing_head = c->close_next;
	if (c->close_next)
		c->close_next->close_prev = c->close_prev;
	else
		l->closing_tail = c->close_prev;
	c->close_prev = c->close_next = NULL;
}

static void watch_end(struct conn *c, bool written)
{
	struct conn_watch *w = c->watch;
	if (w == NULL)
		return;
	c->watch = NULL;
	conn_written_fn *fn = w->fn;
	void *arg = w->arg;
	free(w);
	fn(c, arg, written);
}

static void mark_dirty(struct conn *c)
{
	if (c->dirty || c->closed)
		return;
	/* Output queued from a timer would otherwise wait for the next I/O
	 * event: an active idle handle makes this iteration's poll return at
	 * once, and the check handle then flushes. */
	if (c->loop->dirty == NULL)
		uv_idle_start(&c->loop->kick, on_kick);
	c->dirty = true;
	c->next_dirty = c->loop->dirty;
	c->loop->dirty = c;
}

/* Ends the connection at the next flush, dropping what is queued. Safe
 * inside protocol callbacks: the close itself happens from the loop. */
static void cut(struct conn *c)
{
	c->cut = true;
	c->closing = true;
	c->out.len = 0;
	account(c);
	mark_dirty(c);
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->closed || c->cut)
		return;
	buf_append(&c->out, data, len);
	c->out_total += len;
	account(c);
	/* A peer that stops reading must not make us buffer without end,
	 * nor many of them together. */
	if (c->held > limits_of(c)->max_queued_output ||
	    (c->loop->out_held > loop_share(c) && c->held > CONN_FAIR_SHARE)) {
		log_info("conn %llu (%s): peer does not read; %zu bytes queued, closing",
			 (unsigned long long)c->id, c->peer, c->held);
		cut(c);
		return;
	}
	mark_dirty(c);
}

static void on_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	table_remove(&c->loop->conns, c->id);
	if (c->ssl)
		SSL_free(c->ssl); /* frees the BIO */
	c->loop->out_freed += c->out.cap + c->tls_out.cap;
	buf_free(&c->out);
	buf_free(&c->tls_out);
	free(c);
}

static void really_close(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	closing_unlink(c);
	watch_end(c, false);
	c->ops->closed(c);
	/* Writes still in flight are cancelled by uv_close; their memory
	 * goes back before on_closed runs. */
	c->loop->out_freed += c->queued;
	account(c);
	uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	struct conn *c = req->data;
	free(req);
	really_close(c);
}

static void maybe_finish_close(struct conn *c)
{
	if (!c->closing || c->closed || c->queued > 0 || c->out.len > 0)
		return;
	uv_shutdown_t *req = xmalloc(sizeof *req);
	req->data = c;
	if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
		free(req);
		really_close(c);
	}
}

static void on_written(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->conn;
	c->queued -= w->len;
	uint64_t plain_end = w->plain_end;
	free(w);
	if (c->closed)
		return;
	account(c);
	if (status < 0) {
		log_debug("conn %llu: write failed: %s", (unsigned long long)c->id,
			  uv_strerror(status));
		really_close(c);
		return;
	}
	if (plain_end > c->out_written)
		c->out_written = plain_end;
	if (c->watch != NULL && c->out_written >= c->watch->mark && !c->closing)
		watch_end(c, true);
	maybe_finish_close(c);
}

/* Hands a copy of data to libuv; the copy is freed when written. */
static void write_copy(struct conn *c, const char *data, size_t len)
{
	struct write_req *w = xmalloc(sizeof *w + len);
	memcpy(w->data, data, len);
	w->conn = c;
	w->len = len;
	w->plain_end = c->out_flushed;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
	c->queued += len;
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
		c->queued -= len;
		free(w);
		really_close(c);
	}
}

static void send_raw(struct conn *c, const char *data, size_t len)
{
	if (len == 0 || c->closed)
		return;
	c->out_flushed += len;
	write_copy(c, data, len);
}

/* The TLS engine talks to the network through this BIO: reads take from
 * the slice of the loop's read buffer being handled, writes append to the
 * connection's tls_out. Nothing is buffered in OpenSSL's memory BIOs, so
 * an idle connection keeps no ciphertext buffers at all. */
static int bio_conn_write(BIO *b, const char *data, int len)
{
	struct conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	buf_append(&c->tls_out, data, (size_t)len);
	return len;
}

static int bio_conn_read(BIO *b, char *out, int len)
{
	struct conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (c->tls_in_len == 0) {
		BIO_set_retry_read(b);
		return -1;
	}
	size_t n = c->tls_in_len < (size_t)len ? c->tls_in_len : (size_t)len;
	memcpy(out, c->tls_in, n);
	c->tls_in += n;
	c->tls_in_len -= n;
	return (int)n;
}

static long bio_conn_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b, (void)num, (void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_conn_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* The method table is made once per process and never changes after, like
 * OpenSSL's own BIO_s_mem(). */
static BIO_METHOD *bio_conn_table;
static pthread_once_t bio_conn_once = PTHREAD_ONCE_INIT;

static void bio_conn_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "natter conn");
	if (m == NULL)
		fatal("BIO_meth_new failed");
	BIO_meth_set_write(m, bio_conn_write);
	BIO_meth_set_read(m, bio_conn_read);
	BIO_meth_set_ctrl(m, bio_conn_ctrl);
	BIO_meth_set_create(m, bio_conn_create);
	bio_conn_table = m;
}

static BIO_METHOD *bio_conn_method(void)
{
	pthread_once(&bio_conn_once, bio_conn_method_init);
	return bio_conn_table;
}

/* Moves whatever the TLS engine produced to the socket. */
static void drain_tls(struct conn *c)
{
	size_t pending = c->tls_out.len;
	if (pending == 0 || c->closed)
		return;
	c->tls_out.len = 0;
	write_copy(c, c->tls_out.data, pending);
	/* Ciphertext is copied out: a big burst keeps no big buffer. */
	if (c->tls_out.cap > 65536)
		buf_free(&c->tls_out);
	account(c);
}

void conn_flush(struct conn *c)
{
	if (c->closed || c->cut)
		return;
	if (c->ssl == NULL) {
		send_raw(c, c->out.data, c->out.len);
		c->out.len = 0;
	} else {
		/* Partial writes are on: each call writes at most one record. The
		 * memory BIO takes everything, so loop until all is encrypted. */
		size_t done = 0;
		while (c->tls_ready && done < c->out.len) {
			size_t chunk = c->out.len - done;
			int n = SSL_write(c->ssl, c->out.data + done, chunk > INT_MAX ? INT_MAX : (int)chunk);
			if (n <= 0) {
				done = c->out.len; /* a broken TLS session: nothing can be sent */
				break;
			}
			done += (size_t)n;
		}
		buf_consume(&c->out, done);
		c->out_flushed += done;
		if (c->closing && c->tls_ready && c->out.len == 0 && !c->tls_shutdown) {
			c->tls_shutdown = true;
			SSL_shutdown(c->ssl); /* queues close_notify */
		}
		drain_tls(c);
	}
	account(c);
	maybe_finish_close(c);
}

void conn_flush_dirty(struct loop *l)
{
	while (l->dirty != NULL) {
		struct conn *c = l->dirty;
		l->dirty = c->next_dirty;
		c->dirty = false;
		c->next_dirty = NULL;
		if (c->cut) {
			really_close(c);
			continue;
		}
		conn_flush(c);
		if (!c->closed && !c->closing && c->watch != NULL && c->out_written >= c->watch->mark)
			watch_end(c, true);
		/* An idle connection keeps no output buffer. */
		if (c->out.len == 0 && c->out.cap > 16384)
			buf_free(&c->out);
	}
}

/* --- input --- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	(void)suggested;
	struct conn *c = h->data;
	*b = uv_buf_init(c->loop->readbuf, sizeof c->loop->readbuf);
}

/* Marks c closing and gives it close_timeout to finish. Reading goes on
 * (the input is dropped) so that a peer who goes away is noticed. */
static void begin_close(struct conn *c)
{
	struct loop *l = c->loop;
	c->closing = true;
	c->close_by = now_ms() + (unsigned long long)limits_of(c)->close_timeout * 1000;
	c->close_next = NULL;
	c->close_prev = l->closing_tail;
	if (l->closing_tail)
		l->closing_tail->close_next = c;
	else
		l->closing_head = c;
	l->closing_tail = c;
}

static void tls_input(struct conn *c, const char *data, size_t len)
{
	c->tls_in = data;
	c->tls_in_len = len;
	for (;;) {
		if (c->closing || c->closed)
			break;
		int n = SSL_read(c->ssl, c->loop->plainbuf, sizeof c->loop->plainbuf);
		/* Handshake records, tickets, alerts: out before anything else
		 * can touch this connection. */
		drain_tls(c);
		if (!c->tls_ready && SSL_is_init_finished(c->ssl)) {
			c->tls_ready = true;
			c->ops->tls_ready(c);
			if (c->out.len > 0)
				mark_dirty(c);
		}
		if (n > 0) {
			c->ops->data(c, c->loop->plainbuf, (size_t)n);
			continue;
		}
		int err = SSL_get_error(c->ssl, n);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			break;
		if (err == SSL_ERROR_ZERO_RETURN) {
			log_debug("conn %llu: TLS closed by peer", (unsigned long long)c->id);
		} else {
			char e[200];
			unsigned long code = ERR_get_error();
			ERR_error_string_n(code, e, sizeof e);
			log_info("conn %llu (%s): TLS failed: %s", (unsigned long long)c->id, c->peer,
				 code ? e : "connection error");
			ERR_clear_error();
		}
		c->tls_in_len = 0;
		drain_tls(c); /* the alert, if the engine made one */
		begin_close(c);
		maybe_finish_close(c);
		return;
	}
	/* Whatever was not taken belongs to a record OpenSSL already buffered
	 * or to a connection that is closing: the slice goes with this read. */
	c->tls_in_len = 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;
	if (n == 0 || c->closed)
		return;
	if (n < 0) {
		if (n != UV_EOF)
			log_debug("conn %llu: read: %s", (unsigned long long)c->id, uv_strerror((int)n));
		really_close(c);
		return;
	}
	if (c->closing)
		return; /* read only to see the peer go */
	if (c->ssl != NULL)
		tls_input(c, b->base, (size_t)n);
	else
		c->ops->data(c, b->base, (size_t)n);
}

struct conn *conn_accept(struct loop *l, uv_stream_t *listener, const struct conn_ops *ops)
{
	struct conn *c = xcalloc(1, sizeof *c);
	c->loop = l;
	c->ops = ops;
	c->id = server_new_conn_id(l->srv);
	buf_init(&c->out);
	uv_tcp_init(&l->uv, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
		uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
		return NULL;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
		else
			uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
	}
	table_insert(&l->conns, c);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	return c;
}

static int attach_tls(struct conn *c, SSL *ssl)
{
	c->ssl = ssl;
	if (c->ssl == NULL)
		return -1;
	BIO *bio = BIO_new(bio_conn_method());
	if (bio == NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
		return -1;
	}
	BIO_set_data(bio, c);
	SSL_set_bio(c->ssl, bio, bio);
	return 0;
}

int conn_start_tls_s2s(struct conn *c, bool direct)
{
	conn_flush(c);
	return attach_tls(c, tls_new_server_s2s(&c->loop->srv->tls, direct));
}

int conn_start_tls_client(struct conn *c, SSL *ssl)
{
	conn_flush(c);
	if (attach_tls(c, ssl) != 0)
		return -1;
	/* The client speaks first: ClientHello now. */
	SSL_do_handshake(c->ssl);
	drain_tls(c);
	return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	free(req);
	if (c->closed)
		return;
	if (status == 0) {
		uv_tcp_nodelay(&c->tcp, 1);
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
	c->ops->connected(c, status);
	if (status != 0)
		really_close(c);
}

struct conn *conn_connect(struct loop *l, const struct sockaddr *addr, const struct conn_ops *ops,
			  void *owner)
{
	struct conn *c = xcalloc(1, sizeof *c);
	c->loop = l;
	c->ops = ops;
	c->owner = owner;
	c->id = server_new_conn_id(l->srv);
	buf_init(&c->out);
	uv_tcp_init(&l->uv, &c->tcp);
	c->tcp.data = c;
	if (addr->sa_family == AF_INET6)
		uv_ip6_name((const struct sockaddr_in6 *)addr, c->peer, sizeof c->peer);
	else
		uv_ip4_name((const struct sockaddr_in *)addr, c->peer, sizeof c->peer);
	uv_connect_t *req = xmalloc(sizeof *req);
	req->data = c;
	if (uv_tcp_connect(req, &c->tcp, addr, on_connect) != 0) {
		free(req);
		uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
		return NULL;
	}
	table_insert(&l->conns, c);
	return c;
}

int conn_start_tls(struct conn *c, bool direct)
{
	conn_flush(c);
	return attach_tls(c, tls_new_server(&c->loop->srv->tls, direct));
}

void conn_close(struct conn *c)
{
	if (c->closing || c->closed)
		return;
	if (c->ssl != NULL && !c->tls_ready) {
		/* Nothing queued can be written before the handshake ends,
		 * and a peer that has not finished it will not read it. */
		cut(c);
		return;
	}
	begin_close(c);
	mark_dirty(c);
}

int conn_when_written(struct conn *c, conn_written_fn *fn, void *arg)
{
	if (c->watch != NULL || c->closed)
		return -1;
	struct conn_watch *w = xmalloc(sizeof *w);
	w->mark = c->out_total;
	w->fn = fn;
	w->arg = arg;
	c->watch = w;
	/* Everything is out already: say so from the loop, not from here. */
	mark_dirty(c);
	return 0;
}

void conn_sweep(struct loop *l)
{
	unsigned long long now = now_ms();
	while (l->closing_head != NULL && l->closing_head->close_by <= now) {
		struct conn *c = l->closing_head;
		log_info("conn %llu (%s): did not take its last %zu bytes in time; cut",
			 (unsigned long long)c->id, c->peer, c->held);
		really_close(c); /* unlinks it */
	}
	/* Queues of peers that were cut may leave whole pages of free heap:
	 * give them back rather than keep the peak. */
	if (l->out_freed > (1u << 20)) {
		l->out_freed = 0;
		heap_trim();
	}
}

void conn_each(struct loop *l, void (*fn)(struct conn *c, void *arg), void *arg)
{
	for (size_t i = 0; i < l->conns.cap; i++) {
		struct conn *c = l->conns.slots[i];
		if (c != NULL && !c->closed)
			fn(c, arg);
	}
}

void conn_trim(struct conn *c)
{
	if (c->out.len == 0 && !c->dirty)
		buf_free(&c->out);
	if (c->tls_out.len == 0)
		buf_free(&c->tls_out);
}

void conn_shutdown_all(struct loop *l)
{
	for (size_t i = 0; i < l->conns.cap; i++) {
		struct conn *c = l->conns.slots[i];
		if (c == NULL || c->closed || c->closing || c->ops->shutdown == NULL)
			continue;
		c->ops->shutdown(c);
		/* libuv writes at once when the socket takes it; what it does
		 * not take is lost with the close that follows. */
		conn_flush(c);
	}
}

void conn_close_all(struct loop *l)
{
	for (size_t i = 0; i < l->conns.cap; i++) {
		struct conn *c = l->conns.slots[i];
		if (c != NULL && !c->closed)
			really_close(c);
	}
}

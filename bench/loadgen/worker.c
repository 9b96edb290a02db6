#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "sasl.h"

#define SWEEP_MS 200
#define EXIT_GRACE_MS 2500

void worker_count(_Atomic uint64_t *c, int64_t n)
{
	/* Single writer: a plain read-modify-write through relaxed atomics. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)n,
			      memory_order_relaxed);
}

uint64_t counter_get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void worker_note_error(struct worker *w, const char *msg)
{
	if (atomic_load_explicit(&w->error_set, memory_order_relaxed))
		return;
	snprintf(w->error, sizeof w->error, "%s", msg);
	atomic_store_explicit(&w->error_set, true, memory_order_release);
}

static void worker_close_handles(struct worker *w)
{
	uv_close((uv_handle_t *)&w->async, NULL);
	uv_close((uv_handle_t *)&w->prep, NULL);
	uv_close((uv_handle_t *)&w->check, NULL);
	uv_close((uv_handle_t *)&w->sweep, NULL);
	uv_close((uv_handle_t *)&w->exit_timer, NULL);
}

static void worker_flush(struct worker *w)
{
	conn_flush_all(w);
	if (w->exiting && !w->conns && !uv_is_closing((uv_handle_t *)&w->async))
		worker_close_handles(w);
}

static void worker_on_prepare(uv_prepare_t *h)
{
	worker_flush(h->data);
}

static void worker_on_check(uv_check_t *h)
{
	worker_flush(h->data);
}

static void worker_on_sweep(uv_timer_t *t)
{
	conn_sweep(t->data, uv_hrtime());
}

static void worker_on_exit_timer(uv_timer_t *t)
{
	conn_abort_all(t->data);
}

static void worker_begin_exit(struct worker *w)
{
	if (w->exiting)
		return;
	w->exiting = true;
	if (w->run->hooks->command)
		w->run->hooks->command(w, CMD_EXIT);
	conn_close_all(w);
	uv_timer_start(&w->exit_timer, worker_on_exit_timer, EXIT_GRACE_MS, 0);
}

static void worker_on_async(uv_async_t *a)
{
	struct worker *w = a->data;
	unsigned seq = atomic_load_explicit(&w->cmd_seq, memory_order_acquire);
	if (seq == atomic_load_explicit(&w->cmd_done, memory_order_relaxed))
		return;
	int cmd = atomic_load_explicit(&w->cmd, memory_order_relaxed);
	if (cmd == CMD_EXIT)
		worker_begin_exit(w);
	else if (!w->exiting && w->run->hooks->command)
		w->run->hooks->command(w, cmd);
	atomic_store_explicit(&w->cmd_done, seq, memory_order_release);
}

static void worker_close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void worker_main(void *arg)
{
	struct worker *w = arg;
	uv_run(&w->loop, UV_RUN_DEFAULT);
	/* Anything a scenario forgot to close. */
	uv_walk(&w->loop, worker_close_walk, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
	if (w->session)
		SSL_SESSION_free(w->session);
	w->session = NULL;
}

static struct worker *worker_new(struct run *r, unsigned id)
{
	struct worker *w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->run = r;
	w->id = id;
	atomic_init(&w->step_sent, -1);
	if (uv_loop_init(&w->loop) != 0) {
		free(w);
		return NULL;
	}
	uv_async_init(&w->loop, &w->async, worker_on_async);
	uv_prepare_init(&w->loop, &w->prep);
	uv_check_init(&w->loop, &w->check);
	uv_timer_init(&w->loop, &w->sweep);
	uv_timer_init(&w->loop, &w->exit_timer);
	w->async.data = w->prep.data = w->check.data = w->sweep.data = w->exit_timer.data = w;
	uv_prepare_start(&w->prep, worker_on_prepare);
	uv_check_start(&w->check, worker_on_check);
	uv_timer_start(&w->sweep, worker_on_sweep, SWEEP_MS, SWEEP_MS);
	return w;
}

static int worker_accept_any_cert(X509_STORE_CTX *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	return 1;
}

static void run_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int run_start(struct run *r, const struct opts *o, const struct scenario_hooks *hooks,
	      void *scen)
{
	memset(r, 0, sizeof *r);
	r->o = o;
	r->hooks = hooks;
	r->scen = scen;
	r->sigfd = -1;
	run_raise_nofile();
	signal(SIGPIPE, SIG_IGN);

	/* Signals go to the main thread's signalfd only: blocked here,
	 * before the workers inherit the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	r->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (r->sigfd < 0) {
		fprintf(stderr, "natter-load: signalfd: %s\n", strerror(errno));
		return -1;
	}
	if (uv_ip4_addr(o->host, o->port, &r->server) != 0) {
		fprintf(stderr, "natter-load: --host must be a numeric IPv4 address: %s\n", o->host);
		return -1;
	}
	r->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!r->ssl_ctx) {
		fprintf(stderr, "natter-load: cannot create a TLS context\n");
		return -1;
	}
	/* Benchmark servers have self-signed certificates. Without a
	 * callback OpenSSL would still build and check the chain (and the
	 * certificate's own signature) on every handshake only to ignore the
	 * result; the callback skips that work, which is the generator's, not
	 * the server's. */
	SSL_CTX_set_verify(r->ssl_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_cert_verify_callback(r->ssl_ctx, worker_accept_any_cert, NULL);
	SSL_CTX_set_mode(r->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Sessions are kept by hand (--tls-resume), one per worker. */
	SSL_CTX_set_session_cache_mode(r->ssl_ctx, SSL_SESS_CACHE_OFF);
	if (o->direct_tls)
		SSL_CTX_set_alpn_protos(r->ssl_ctx, (const unsigned char *)"\x0bxmpp-client", 12);
	r->cache = sasl_cache_new();
	if (!r->cache)
		return -1;
	r->stdin_open = o->stdin_eof;
	r->t_start = uv_hrtime();
	r->t_deadline = r->t_start + (uint64_t)(o->duration * 1e9);
	r->nw = o->threads;
	r->w = calloc(r->nw, sizeof *r->w);
	if (!r->w)
		return -1;
	for (unsigned i = 0; i < r->nw; i++) {
		r->w[i] = worker_new(r, i);
		if (!r->w[i]) {
			fprintf(stderr, "natter-load: cannot create worker %u\n", i);
			r->nw = i;
			return -1;
		}
	}
	for (unsigned i = 0; i < r->nw; i++) {
		if (uv_thread_create(&r->w[i]->thread, worker_main, r->w[i]) != 0) {
			fprintf(stderr, "natter-load: cannot start worker %u\n", i);
			return -1;
		}
	}
	return 0;
}

static void run_nap(void)
{
	struct timespec ts = { 0, 200000 };
	nanosleep(&ts, NULL);
}

void run_command(struct run *r, int cmd)
{
	for (unsigned i = 0; i < r->nw; i++) {
		struct worker *w = r->w[i];
		atomic_store_explicit(&w->cmd, cmd, memory_order_relaxed);
		atomic_fetch_add_explicit(&w->cmd_seq, 1, memory_order_release);
		uv_async_send(&w->async);
	}
	for (unsigned i = 0; i < r->nw; i++) {
		struct worker *w = r->w[i];
		unsigned seq = atomic_load_explicit(&w->cmd_seq, memory_order_relaxed);
		while (atomic_load_explicit(&w->cmd_done, memory_order_acquire) != seq)
			run_nap();
	}
}

bool run_wait(struct run *r, double seconds)
{
	uint64_t now = uv_hrtime();
	uint64_t until = now + (uint64_t)(seconds > 0 ? seconds * 1e9 : 0);
	for (;;) {
		if (r->interrupted || r->capped)
			return false;
		if (now >= r->t_deadline) {
			r->capped = true;
			return false;
		}
		uint64_t end = until < r->t_deadline ? until : r->t_deadline;
		int ms = end > now ? (int)((end - now + 999999) / 1000000) : 0;
		struct pollfd pf[2] = { { .fd = r->sigfd, .events = POLLIN },
					{ .fd = 0, .events = POLLIN } };
		int n = poll(pf, r->stdin_open ? 2 : 1, ms);
		if (n > 0 && (pf[0].revents & POLLIN)) {
			struct signalfd_siginfo si;
			if (read(r->sigfd, &si, sizeof si) > 0)
				r->interrupted = true;
		}
		if (n > 0 && r->stdin_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			char buf[512];
			ssize_t k = read(0, buf, sizeof buf);
			if (k <= 0 && !(k < 0 && errno == EINTR)) {
				r->stdin_open = false;
				r->interrupted = true;
			}
		}
		now = uv_hrtime();
		if (r->interrupted)
			return false;
		if (now >= until && until < r->t_deadline)
			return true;
	}
}

bool run_wait_step_sent(struct run *r, int step, double seconds)
{
	uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
	for (;;) {
		unsigned i = 0;
		while (i < r->nw && atomic_load(&r->w[i]->step_sent) >= step)
			i++;
		if (i == r->nw)
			return true;
		if (uv_hrtime() >= end || !run_wait(r, 0.001))
			return false;
	}
}

void worker_step_sent(struct worker *w, int step)
{
	atomic_store(&w->step_sent, step);
}

void run_stop(struct run *r)
{
	if (!r->w || r->stopped)
		return;
	r->stopped = true;
	run_command(r, CMD_EXIT);
	for (unsigned i = 0; i < r->nw; i++)
		uv_thread_join(&r->w[i]->thread);
}

void run_free(struct run *r)
{
	run_stop(r);
	for (unsigned i = 0; r->w && i < r->nw; i++)
		free(r->w[i]);
	free(r->w);
	r->w = NULL;
	if (r->ssl_ctx)
		SSL_CTX_free(r->ssl_ctx);
	sasl_cache_free(r->cache);
	if (r->sigfd >= 0)
		close(r->sigfd);
	r->ssl_ctx = NULL;
	r->cache = NULL;
	r->sigfd = -1;
}

double run_elapsed(const struct run *r)
{
	return (double)(uv_hrtime() - r->t_start) / 1e9;
}

uint64_t run_sum(const struct run *r, size_t field)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < r->nw; i++)
		sum += counter_get((_Atomic uint64_t *)((char *)&r->w[i]->ctr + field));
	return sum;
}

uint64_t run_failures(const struct run *r)
{
	uint64_t sum = 0;
	for (int k = 0; k < FAIL_KINDS; k++)
		sum += run_sum(r, offsetof(struct counters, fail) + (size_t)k * sizeof(_Atomic uint64_t));
	return sum;
}

void run_login_hist(const struct run *r, struct hist *out)
{
	for (unsigned i = 0; i < r->nw; i++)
		hist_merge(out, &r->w[i]->ctr.login_us);
}

const char *run_first_error(struct run *r)
{
	if (r->first_error[0])
		return r->first_error;
	for (unsigned i = 0; r->w && i < r->nw; i++) {
		if (atomic_load_explicit(&r->w[i]->error_set, memory_order_acquire)) {
			snprintf(r->first_error, sizeof r->first_error, "%s", r->w[i]->error);
			return r->first_error;
		}
	}
	return NULL;
}

unsigned run_share(const struct run *r, unsigned n, unsigned id)
{
	return n / r->nw + (id < n % r->nw ? 1 : 0);
}

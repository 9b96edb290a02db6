#include "core/server.h"

#include <pthread.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/fast.h"
#include "auth/authfail.h"
#include "c2s/c2s.h"
#include "core/control.h"
#include "core/log.h"
#include "core/util.h"
#include "directory/directory.h"
#include "journal/journal_writer.h"
#include "modules/blocking.h"
#include "modules/mam.h"
#include "modules/push.h"
#include "modules/caps.h"
#include "modules/module.h"
#include "modules/pubsub.h"
#include "muc/muc.h"
#include "router/iqreq.h"
#include "router/router.h"
#include "s2s/s2s.h"
#include "storage/pending.h"
#include "storage/storeq.h"
#include "stream/conn.h"
#include "tls/certinfo.h"

struct listener_data {
	struct loop *loop;
	const struct config_listener *cfg;
};

uint64_t server_new_conn_id(struct server *srv)
{
	return __atomic_add_fetch(&srv->next_conn_id, 1, __ATOMIC_RELAXED);
}

void loop_post(struct loop *to, struct inbox_item *item)
{
	item->next = NULL;
	pthread_mutex_lock(&to->inbox_lock);
	if (to->stopping) {
		pthread_mutex_unlock(&to->inbox_lock);
		if (item->kind == INBOX_CALL) {
			/* The loop no longer runs: release here, in this thread. */
			item->call(NULL, item->arg);
		}
		refbuf_release(item->bytes);
		free(item);
		return;
	}
	if (to->inbox_tail)
		to->inbox_tail->next = item;
	else
		to->inbox_head = item;
	to->inbox_tail = item;
	pthread_mutex_unlock(&to->inbox_lock);
	uv_async_send(&to->wake);
}

void loop_call(struct loop *to, void (*call)(struct loop *l, void *arg), void *arg)
{
	struct inbox_item *item = xcalloc(1, sizeof *item);
	item->kind = INBOX_CALL;
	item->call = call;
	item->arg = arg;
	loop_post(to, item);
}

bool loop_stopping(struct loop *l)
{
	return l == NULL || l->call_stopping;
}

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void on_wake(uv_async_t *a)
{
	struct loop *l = a->data;
	pthread_mutex_lock(&l->inbox_lock);
	struct inbox_item *item = l->inbox_head;
	l->inbox_head = l->inbox_tail = NULL;
	bool stopping = l->stopping;
	pthread_mutex_unlock(&l->inbox_lock);
	/* From here on loop_stopping() says so, for every late callback
	 * (directory answers, worker threads' results) too. */
	if (stopping)
		l->call_stopping = true;
	while (item != NULL) {
		struct inbox_item *next = item->next;
		if (item->kind == INBOX_CALL) {
			item->call(l, item->arg);
		} else if (item->kind == INBOX_DELIVER) {
			/* Posted before the stop (loop_post refuses them after):
			 * what still has its session goes out ahead of the
			 * <system-shutdown/> below (rooms' 332, announce_shutdown). */
			if (c2s_deliver(l, item->session, item->bytes->data, item->bytes->len) != 0) {
				log_debug("loop %d: session %llu gone before delivery", l->index,
					  (unsigned long long)item->session);
				if (!stopping)
					c2s_undeliverable(l, item->bytes->data, item->bytes->len);
			}
		} else if (item->kind == INBOX_KICK && !stopping) {
			c2s_kick(l, item->session, item->condition);
		}
		refbuf_release(item->bytes);
		free(item);
		item = next;
	}
	if (stopping) {
		muc_loop_shutdown(l); /* occupants hear of it (332) */
		c2s_loop_shutdown(l); /* detached sessions end */
		conn_shutdown_all(l); /* <system-shutdown/> to every peer */
		s2s_loop_free(l);     /* its links let go of their connections */
		muc_loop_free(l);
		conn_close_all(l);
		/* The remaining handles (listeners, timers, wake, check) close
		 * here; free_c2s and friends run as their close callbacks. */
		uv_walk(&l->uv, close_handle, NULL);
	}
}

static void on_check(uv_check_t *c)
{
	struct loop *l = c->data;
	conn_flush_dirty(l);
	uv_idle_stop(&l->kick);
}

static void on_sweep(uv_timer_t *t)
{
	struct loop *l = t->data;
	conn_sweep(l);
	c2s_sweep(l);
	if (l == l->srv->service)
		mam_sweep(l);
	else
		push_sweep(l);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener_data *ld = server->data;
	if (status < 0) {
		log_warn("accept on port %d: %s", ld->cfg->port, uv_strerror(status));
		return;
	}
	switch (ld->cfg->type) {
	case LISTENER_C2S:
	case LISTENER_C2S_TLS:
		c2s_accept(ld->loop, server, ld->cfg->type == LISTENER_C2S_TLS);
		break;
	case LISTENER_S2S:
	case LISTENER_S2S_TLS:
		s2s_accept(ld->loop, server, ld->cfg->type == LISTENER_S2S_TLS);
		break;
	}
}

static int open_listener(struct loop *l, const struct config_listener *cl, uv_tcp_t *h,
			 char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int family = strchr(cl->address, ':') ? AF_INET6 : AF_INET;
	if (family == AF_INET6)
		uv_ip6_addr(cl->address, cl->port, (struct sockaddr_in6 *)&ss);
	else
		uv_ip4_addr(cl->address, cl->port, (struct sockaddr_in *)&ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	if (fd < 0)
		goto fail;
	/* Each loop has its own socket on the same port; the kernel spreads
	 * new connections across them. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (bind(fd, (struct sockaddr *)&ss, len) != 0)
		goto fail;
	uv_tcp_init(&l->uv, h);
	if (uv_tcp_open(h, fd) != 0) {
		uv_close((uv_handle_t *)h, NULL);
		goto fail;
	}
	struct listener_data *ld = &((struct listener_data *)l->listener_data)[h - l->listeners];
	ld->loop = l;
	ld->cfg = cl;
	h->data = ld;
	int rc = uv_listen((uv_stream_t *)h, 1024, on_connection);
	if (rc != 0) {
		snprintf(err, errlen, "listen on %s:%d: %s", cl->address, cl->port, uv_strerror(rc));
		return -1;
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot listen on %s:%d: %s", cl->address, cl->port, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* SO_REUSEPORT would let a second natterd (same user) share the port
 * silently and take half the connections: refuse to start when something
 * already accepts there. */
static int port_taken(const struct config_listener *cl)
{
	struct sockaddr_storage ss;
	bool v6 = strchr(cl->address, ':') != NULL;
	const char *probe = cl->address;
	if (strcmp(probe, "0.0.0.0") == 0)
		probe = "127.0.0.1";
	else if (strcmp(probe, "::") == 0)
		probe = "::1";
	if (v6)
		uv_ip6_addr(probe, cl->port, (struct sockaddr_in6 *)&ss);
	else
		uv_ip4_addr(probe, cl->port, (struct sockaddr_in *)&ss);
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int taken = connect(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return taken;
}

/* A client loop (listen) or the service loop (no listeners). */
static int loop_init(struct server *srv, struct loop *l, int index, bool listen, char *err,
		     size_t errlen)
{
	l->srv = srv;
	l->index = index;
	uv_loop_init(&l->uv);
	pthread_mutex_init(&l->inbox_lock, NULL);
	uv_async_init(&l->uv, &l->wake, on_wake);
	l->wake.data = l;
	uv_check_init(&l->uv, &l->flush);
	l->flush.data = l;
	uv_check_start(&l->flush, on_check);
	uv_idle_init(&l->uv, &l->kick);
	uv_timer_init(&l->uv, &l->sweep);
	l->sweep.data = l;
	uv_timer_start(&l->sweep, on_sweep, 1000, 1000);
	l->store = pending_open(srv->pending, srv->cfg->data_dir, err, errlen);
	if (l->store == NULL)
		return -1;
	if (listen && srv->cfg->s2s.enabled && s2s_loop_init(l, err, errlen) != 0)
		return -1;
	l->n_listeners = listen ? srv->cfg->n_listeners : 0;
	l->listeners = xcalloc(l->n_listeners, sizeof *l->listeners);
	l->listener_data = xcalloc(l->n_listeners, sizeof(struct listener_data));
	for (size_t i = 0; i < l->n_listeners; i++)
		if (open_listener(l, &srv->cfg->listeners[i], &l->listeners[i], err, errlen) != 0)
			return -1;
	return 0;
}

static void loop_free(struct loop *l)
{
	if (l->srv == NULL)
		return;
	s2s_loop_free(l); /* a loop that never ran */
	muc_loop_free(l);
	/* Close whatever is still open (an aborted start) and let callbacks run. */
	uv_walk(&l->uv, close_handle, NULL);
	uv_run(&l->uv, UV_RUN_DEFAULT);
	uv_loop_close(&l->uv);
	if (l->store)
		l->srv->storage->close(l->store);
	free(l->listeners);
	free(l->listener_data);
	free(l->conns.slots);
	pthread_mutex_destroy(&l->inbox_lock);
}

static void loop_thread(void *arg)
{
	struct loop *l = arg;
	/* Named for top -H, perf and gdb: "natter-loop0", ... */
	char name[16];
	snprintf(name, sizeof name, "natter-loop%d", l->index);
	pthread_setname_np(pthread_self(), name);
	uv_run(&l->uv, UV_RUN_DEFAULT);
}

/* Each host's certificate as clients receive it (the leaf loaded into its
 * context): clients that cannot check a self-signed certificate ask the
 * user to compare one of these fingerprints. Main thread only (contexts
 * change under tls_reload there). */
static void server_log_certificates(const struct server *srv)
{
	for (size_t i = 0; i < srv->tls.n_hosts; i++) {
		const struct tls_host *h = &srv->tls.hosts[i];
		X509 *x = SSL_CTX_get0_certificate(h->ctx);
		struct certinfo ci;
		if (x == NULL || certinfo_from_x509(x, &ci) != 0) {
			log_warn("host %s: cannot read back its certificate", h->domain);
			continue;
		}
		log_info("host %s: certificate %s%s, expires %s, SHA-256 %s, SHA-1 %s", h->domain,
			 ci.self_signed ? "self-signed for " : "for ",
			 ci.names[0] ? ci.names : ci.subject_cn, ci.not_after, ci.sha256, ci.sha1);
	}
}

/* The next steps for a new operator, true to the configuration: accounts
 * are added with natterctl only where natter keeps them, and a user is
 * told to accept a certificate only when it is self-signed, with the
 * fingerprint to compare. */
static void server_hints(const struct server *srv, const char *ctl)
{
	const struct config *cfg = srv->cfg;
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *h = &cfg->hosts[i];
		if (h->auth == HOST_AUTH_LDAP)
			log_info("host %s: accounts come from the directory (%s): users log in as "
				 "NAME@%s with their directory password", h->domain, h->ldap.uri,
				 h->domain);
		else
			log_info("host %s: add a user with: %s user add alice@%s", h->domain, ctl,
				 h->domain);
	}
	const struct config_host *first = &cfg->hosts[0];
	X509 *x = SSL_CTX_get0_certificate(srv->tls.hosts[0].ctx);
	struct certinfo ci;
	char accept[256] = "";
	if (x != NULL && certinfo_from_x509(x, &ci) == 0 && ci.self_signed)
		snprintf(accept, sizeof accept, " (its certificate is self-signed: accept it if the "
			 "client shows SHA-256 %s)", ci.sha256);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->type != LISTENER_C2S)
			continue;
		bool any = strcmp(l->address, "0.0.0.0") == 0 || strcmp(l->address, "::") == 0;
		log_info("then connect any XMPP client as %s@%s to %s port %d%s",
			 first->auth == HOST_AUTH_LDAP ? "NAME" : "alice", first->domain,
			 any ? "this machine" : l->address, l->port, accept);
	}
}

/* SIGHUP (STYLE.md habit 7): the file is read and validated again; the
 * keys that can change while running take effect, the certificates are
 * read again; a file with an error changes nothing. Everything else
 * (hosts, listeners, storage, federation, directories) needs a restart. */
static void server_reload(struct server *srv)
{
	struct config *cfg = srv->cfg;
	struct config fresh;
	char err[1024];
	if (cfg->path == NULL) {
		log_info("SIGHUP: natterd runs on the built-in defaults; nothing to reload");
		return;
	}
	if (config_load(&fresh, cfg->path, err, sizeof err) != 0) {
		log_error("SIGHUP: %s; the running configuration stays", err);
		return;
	}
	if (tls_reload(&srv->tls, &fresh, err, sizeof err) != 0) {
		log_error("SIGHUP: %s; the running configuration stays", err);
		config_free(&fresh);
		return;
	}
	server_log_certificates(srv);
	/* Said before a new log_level may silence it. */
	log_info("SIGHUP: reloaded %s: certificates, log_level, allow_plain, allow_registration, "
		 "registration_interval, registrations_per_hour, scram_iterations, hide_version, hide_os_version, limits "
		 "(other keys need a restart)",
		 cfg->path);
	/* Plain values that every reader takes afresh each time. */
	cfg->log_level = fresh.log_level;
	log_set_level(fresh.log_level);
	cfg->allow_plain = fresh.allow_plain;
	cfg->hide_version = fresh.hide_version;
	cfg->hide_os_version = fresh.hide_os_version;
	cfg->allow_registration = fresh.allow_registration;
	cfg->registration_interval = fresh.registration_interval;
	cfg->registrations_per_hour = fresh.registrations_per_hour;
	cfg->scram_iterations = fresh.scram_iterations;
	cfg->limits = fresh.limits;
	config_free(&fresh);
}

/* Every tls.ticket_rotation seconds on the main thread. */
static void on_ticket_rotation(uv_timer_t *timer)
{
	struct server *srv = timer->data;
	tls_rotate_ticket_keys(&srv->tls);
}

/* How long the client loops have to announce the shutdown (rooms' 332
 * to their occupants on every loop) before the loops stop regardless. */
#define SHUTDOWN_ANNOUNCE_MS 2000

/* Main thread: every loop stops (on_wake) and so does the main loop. */
static void stop_loops(struct server *srv)
{
	if (srv->loops_stopped)
		return;
	srv->loops_stopped = true;
	uv_timer_stop(&srv->shutdown_timer);
	for (int i = 0; i <= srv->n_loops; i++) {
		struct loop *l = &srv->loops[i];
		pthread_mutex_lock(&l->inbox_lock);
		l->stopping = true;
		pthread_mutex_unlock(&l->inbox_lock);
		uv_async_send(&l->wake);
	}
	uv_stop(srv->shutdown_timer.loop);
}

static void on_shutdown_go(uv_async_t *a)
{
	stop_loops(a->data);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
	log_warn("shutdown: not every loop announced it within %d ms; stopping", SHUTDOWN_ANNOUNCE_MS);
	stop_loops(t->data);
}

/* On each client loop (l NULL if it already stopped): what it posts to
 * other loops here reaches their inboxes before they stop, since they
 * stop only once every loop has been through this. */
static void announce_shutdown(struct loop *l, void *arg)
{
	struct server *srv = arg;
	if (l != NULL)
		muc_loop_shutdown(l); /* occupants hear of it (332) */
	if (__atomic_sub_fetch(&srv->shutdown_pending, 1, __ATOMIC_ACQ_REL) == 0)
		uv_async_send(&srv->shutdown_go);
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct server *srv = sig->data;
	if (signum == SIGHUP) {
		server_reload(srv);
		return;
	}
	if (srv->shutdown_begun) {
		log_info("signal %d: stopping now", signum);
		stop_loops(srv);
		return;
	}
	log_info("signal %d: shutting down", signum);
	srv->shutdown_begun = true;
	__atomic_store_n(&srv->shutdown_pending, srv->n_loops, __ATOMIC_RELEASE);
	uv_timer_start(&srv->shutdown_timer, on_shutdown_timeout, SHUTDOWN_ANNOUNCE_MS, 0);
	for (int i = 0; i < srv->n_loops; i++)
		loop_call(&srv->loops[i], announce_shutdown, srv);
}

int server_run(struct config *cfg, const char *ctl)
{
	struct server srv;
	memset(&srv, 0, sizeof srv);
	srv.cfg = cfg;
	char err[1024];
	int rc = 1;
	signal(SIGPIPE, SIG_IGN);
	srv.store_driver = storage_driver_find(cfg->storage);
	srv.storage = &storage_pending_driver;
	if (srv.store_driver == NULL) {
		log_error("unknown storage driver '%s'", cfg->storage);
		return 1;
	}
	if (auth_kerberos_init(cfg) != 0)
		return 1;
	if (auth_init(&srv.gsasl) != 0) {
		log_error("cannot initialise GNU SASL");
		return 1;
	}
	if (tls_init(&srv.tls, cfg, err, sizeof err) != 0) {
		log_error("%s", err);
		fast_free(&srv);
	auth_done(srv.gsasl);
		return 1;
	}
	srv.router = router_new();
	srv.authfail = authfail_new();
	srv.blocking_cache = blocking_cache_new();
	for (size_t i = 0; i < sizeof srv.roster_locks / sizeof *srv.roster_locks; i++)
		pthread_mutex_init(&srv.roster_locks[i], NULL);
	srv.storeq = storeq_start(srv.store_driver, cfg->data_dir, err, sizeof err);
	if (srv.storeq != NULL)
		srv.pending = pending_new(srv.store_driver, srv.storeq);
	if (srv.storeq == NULL || mam_init(&srv, err, sizeof err) != 0) {
		log_error("%s", err);
		goto out;
	}
	if (fast_init(&srv) != 0)
		goto out;
	if (muc_init(&srv, err, sizeof err) != 0) {
		log_error("%s", err);
		goto out;
	}
	srv.iqreq = iqreq_new();
	push_init(&srv);
	srv.caps = caps_new(cfg->limits.caps_cache_size);
	if ((srv.pubsub = pubsub_new(cfg, err, sizeof err)) == NULL) {
		log_error("%s", err);
		goto out;
	}
	if (journal_writer_start_all(&srv, err, sizeof err) != 0) {
		log_error("%s", err);
		goto out;
	}
	if (cfg->s2s.enabled && s2s_init(&srv) != 0) {
		log_error("cannot set up federation");
		goto out;
	}
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		if (port_taken(&cfg->listeners[i])) {
			log_error("cannot listen on %s:%d: another process already listens there",
				  cfg->listeners[i].address, cfg->listeners[i].port);
			goto out;
		}
	}
	srv.n_loops = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
	/* One more: the service loop (server.h), after the client loops. */
	srv.loops = xcalloc((size_t)srv.n_loops + 1, sizeof *srv.loops);
	srv.service = &srv.loops[srv.n_loops];
	for (int i = 0; i <= srv.n_loops; i++) {
		if (loop_init(&srv, &srv.loops[i], i, i < srv.n_loops, err, sizeof err) != 0) {
			log_error("%s", err);
			goto out;
		}
		if (i < srv.n_loops)
			muc_loop_start(&srv.loops[i]);
	}
	if (directory_start(&srv) != 0 || control_start(&srv) != 0)
		goto out;
	uv_loop_t main_loop;
	uv_loop_init(&main_loop);
	uv_signal_t sigs[3];
	int signums[3] = { SIGINT, SIGTERM, SIGHUP };
	for (int i = 0; i < 3; i++) {
		uv_signal_init(&main_loop, &sigs[i]);
		sigs[i].data = &srv;
		uv_signal_start(&sigs[i], on_signal, signums[i]);
	}
	uv_async_init(&main_loop, &srv.shutdown_go, on_shutdown_go);
	srv.shutdown_go.data = &srv;
	uv_timer_init(&main_loop, &srv.shutdown_timer);
	srv.shutdown_timer.data = &srv;
	uv_timer_t rotation;
	uv_timer_init(&main_loop, &rotation);
	rotation.data = &srv;
	if (srv.tls.tickets != NULL) {
		uint64_t ms = (uint64_t)cfg->tls.ticket_rotation * 1000;
		uv_timer_start(&rotation, on_ticket_rotation, ms, ms);
	}
	for (int i = 0; i <= srv.n_loops; i++)
		uv_thread_create(&srv.loops[i].thread, loop_thread, &srv.loops[i]);
	for (size_t i = 0; i < cfg->n_listeners; i++)
		log_info("listening on %s:%d (%s)", cfg->listeners[i].address, cfg->listeners[i].port,
			 (const char *const[]){ "c2s, STARTTLS", "c2s, direct TLS", "s2s, STARTTLS",
						"s2s, direct TLS" }[cfg->listeners[i].type]);
	server_log_certificates(&srv);
	log_info("natterd ready: %zu host(s), %d event loop(s), data in %s", cfg->n_hosts,
		 srv.n_loops, cfg->data_dir);
	if (ctl != NULL)
		server_hints(&srv, ctl);
	uv_run(&main_loop, UV_RUN_DEFAULT);
	for (int i = 0; i <= srv.n_loops; i++)
		uv_thread_join(&srv.loops[i].thread);
	for (int i = 0; i < 3; i++)
		uv_close((uv_handle_t *)&sigs[i], NULL);
	uv_close((uv_handle_t *)&rotation, NULL);
	uv_close((uv_handle_t *)&srv.shutdown_go, NULL);
	uv_close((uv_handle_t *)&srv.shutdown_timer, NULL);
	uv_run(&main_loop, UV_RUN_DEFAULT);
	uv_loop_close(&main_loop);
	rc = 0;
out:
	/* After the loops stopped (whatever a directory thread still posts
	 * is released by loop_post), before their handles are freed. */
	directory_stop(&srv);
	/* What the loops queued is committed (its done callbacks only
	 * release: the loops stopped). */
	storeq_stop(srv.storeq);
	for (int i = 0; srv.loops && i <= srv.n_loops; i++)
		loop_free(&srv.loops[i]);
	pending_free(srv.pending); /* after the handles in front of it */
	control_free(&srv);
	/* After the loops: nothing submits any more; the queues drain. */
	journal_writer_stop_all(&srv);
	s2s_free(&srv);
	muc_free(&srv);
	mam_free(&srv);
	/* In-flight requests release what they hold (caps' included). */
	iqreq_free(srv.iqreq);
	push_free(&srv);
	caps_free(srv.caps);
	pubsub_free(srv.pubsub);
	free(srv.loops);
	router_free(srv.router);
	authfail_free(srv.authfail);
	blocking_cache_free(srv.blocking_cache);
	for (size_t i = 0; i < sizeof srv.roster_locks / sizeof *srv.roster_locks; i++)
		pthread_mutex_destroy(&srv.roster_locks[i]);
	tls_free(&srv.tls);
	fast_free(&srv);
	auth_done(srv.gsasl);
	log_info("natterd stopped");
	return rc;
}

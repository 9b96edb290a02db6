#include "core/control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "directory/directory.h"
#include "muc/muc.h"
#include "s2s/s2s.h"
#include "storage/pending.h"
#include "storage/storeq.h"

/* Longest command line read. */
#define CONTROL_LINE_MAX 512

struct control_client {
	uv_pipe_t pipe;
	struct server *srv;
	char line[CONTROL_LINE_MAX];
	size_t len;
	bool answered;
	int pending;       /* directory refreshes still running */
	bool failed;
	struct buf answer;
};

int control_path(const char *data_dir, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/natterd.sock", data_dir);
	return n < 0 || (size_t)n >= cap || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path)
		       ? -1
		       : 0;
}

static void on_client_closed(uv_handle_t *h)
{
	struct control_client *c = h->data;
	buf_free(&c->answer);
	free(c);
}

static void on_written(uv_write_t *req, int status)
{
	(void)status;
	uv_close((uv_handle_t *)req->handle, on_client_closed);
	free(req->data);
	free(req);
}

/* Sends the answer: the summary line first, then the details. */
static void reply(struct control_client *c, const char *first)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, first);
	buf_puts(&b, "\n");
	buf_append(&b, c->answer.data, c->answer.len);
	uv_write_t *req = xcalloc(1, sizeof *req);
	req->data = b.data;
	uv_buf_t ub = uv_buf_init(b.data, (unsigned)b.len);
	if (uv_write(req, (uv_stream_t *)&c->pipe, &ub, 1, on_written) != 0) {
		free(b.data);
		free(req);
		uv_close((uv_handle_t *)&c->pipe, on_client_closed);
	}
}

static void on_refreshed(struct loop *l, void *arg, enum dir_status st, const char *summary)
{
	struct control_client *c = arg;
	(void)l;
	buf_printf(&c->answer, "%s %s\n", st == DIR_OK ? "refreshed" : "failed", summary);
	if (st != DIR_OK)
		c->failed = true;
	if (--c->pending == 0)
		reply(c, c->failed ? "error: a directory refresh failed" : "ok");
}

static void on_room_done(void *arg, bool ok, const char *text)
{
	struct control_client *c = arg;
	if (ok) {
		buf_puts(&c->answer, text);
		reply(c, "ok");
		return;
	}
	char first[600];
	snprintf(first, sizeof first, "error: %s", text);
	first[strcspn(first, "\n")] = '\0';
	reply(c, first);
}

static void run_command(struct control_client *c)
{
	struct server *srv = c->srv;
	c->line[strcspn(c->line, "\r\n")] = '\0';
	log_info("control: '%s'", c->line);
	if (strcmp(c->line, "directory refresh") == 0) {
		if (srv->n_directories == 0) {
			reply(c, "error: no host takes its accounts from a directory");
			return;
		}
		c->pending = (int)srv->n_directories;
		for (size_t i = 0; i < srv->n_directories; i++)
			directory_refresh(srv->directories[i], srv->service, on_refreshed, c);
		return;
	}
	if (strcmp(c->line, "s2s") == 0) {
		buf_printf(&c->answer, "%-30s %-3s %-9s %-8s %7s  %s\n", "REMOTE", "DIR", "AUTH", "TLS",
			   "IDLE", "LOCAL");
		s2s_list(srv, &c->answer);
		reply(c, srv->s2s ? "ok" : "ok (federation is off)");
		return;
	}
	if (strncmp(c->line, "room", 4) == 0 && (c->line[4] == ' ' || c->line[4] == '\0')) {
		muc_control(srv, c->line + 4, on_room_done, c);
		return;
	}
	if (strcmp(c->line, "memory") == 0) {
		struct heap_stats h;
		heap_stats(&h);
		buf_printf(&c->answer, "allocator %s\nheap_in_use %zu\nheap_held %zu\n", h.allocator,
			   h.in_use, h.held);
		reply(c, "ok");
		return;
	}
	if (strcmp(c->line, "storage") == 0) {
		struct storeq_stats q;
		storeq_stats(srv->storeq, &q);
		buf_printf(&c->answer,
			   "jobs_queued %zu\njobs_bytes %zu\nloop_waits %llu\n"
			   "writes_uncommitted %zu\n",
			   q.jobs, q.bytes, q.waits, pending_count(srv->pending));
		reply(c, "ok");
		return;
	}
	if (strcmp(c->line, "ping") == 0) {
		reply(c, "ok");
		return;
	}
	reply(c, "error: unknown command");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct control_client *c = h->data;
	(void)suggested;
	*b = uv_buf_init(c->line + c->len, (unsigned)(sizeof c->line - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct control_client *c = s->data;
	(void)b;
	if (c->answered)
		return;
	if (n < 0) {
		uv_close((uv_handle_t *)s, on_client_closed);
		return;
	}
	c->len += (size_t)n;
	c->line[c->len] = '\0';
	if (strchr(c->line, '\n') == NULL && c->len < sizeof c->line - 1)
		return;
	c->answered = true;
	uv_read_stop(s);
	run_command(c);
}

static bool peer_allowed(uv_pipe_t *p)
{
	uv_os_fd_t fd;
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (uv_fileno((uv_handle_t *)p, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void on_connection(uv_stream_t *server, int status)
{
	if (status != 0)
		return;
	struct control_client *c = xcalloc(1, sizeof *c);
	c->srv = server->data;
	buf_init(&c->answer);
	uv_pipe_init(server->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 || !peer_allowed(&c->pipe)) {
		log_warn("control: connection refused (not natterd's user)");
		uv_close((uv_handle_t *)&c->pipe, on_client_closed);
		return;
	}
	uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

int control_start(struct server *srv)
{
	char path[256];
	if (control_path(srv->cfg->data_dir, path, sizeof path) != 0) {
		log_error("data_dir is too long for the control socket's path");
		return -1;
	}
	struct stat sb;
	/* A socket left by a natterd that died; another running natterd on
	 * the same data_dir was refused earlier (its ports are taken). */
	if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode))
		unlink(path);
	uv_pipe_t *p = xcalloc(1, sizeof *p);
	uv_pipe_init(&srv->service->uv, p, 0);
	p->data = srv;
	mode_t old = umask(0177);
	int rc = uv_pipe_bind(p, path);
	umask(old);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)p, 8, on_connection);
	if (rc != 0) {
		log_error("control socket %s: %s", path, uv_strerror(rc));
		srv->control = p; /* closed with the service loop, freed by control_free */
		return -1;
	}
	srv->control = p;
	chmod(path, 0600);
	log_info("control socket %s", path);
	return 0;
}

void control_free(struct server *srv)
{
	char path[256];
	if (srv->control == NULL)
		return;
	if (control_path(srv->cfg->data_dir, path, sizeof path) == 0)
		unlink(path);
	free(srv->control);
	srv->control = NULL;
}

#include "core/work.h"

#include <stdlib.h>
#include <uv.h>

#include "core/server.h"
#include "core/util.h"

struct work {
	uv_work_t req;
	struct loop *loop;
	void (*work)(void *arg);
	void (*done)(struct loop *l, void *arg);
	void *arg;
};

static void run(uv_work_t *req)
{
	struct work *w = req->data;
	w->work(w->arg);
}

static void after(uv_work_t *req, int status)
{
	struct work *w = req->data;
	(void)status; /* UV_ECANCELED: done still releases arg */
	w->done(w->loop, w->arg);
	free(w);
}

int work_submit(struct loop *l, void (*work)(void *arg), void (*done)(struct loop *l, void *arg),
		void *arg)
{
	struct work *w = xcalloc(1, sizeof *w);
	w->loop = l;
	w->work = work;
	w->done = done;
	w->arg = arg;
	w->req.data = w;
	if (uv_queue_work(&l->uv, &w->req, run, after) != 0) {
		free(w);
		return -1;
	}
	return 0;
}

#include "router/hooks.h"

#include <pthread.h>
#include <stdlib.h>

#include "modules/module.h"

/* Every module's handlers, grouped by event and sorted by priority once,
 * at the first run: modules are compiled in, so the table never changes. */
#define HOOKS_MAX 64

static struct {
	pthread_once_t once;
	const struct module_hook *by_event[HOOK__COUNT][HOOKS_MAX];
	int n[HOOK__COUNT];
} hooks = { .once = PTHREAD_ONCE_INIT };

static void hooks_build(void)
{
	for (const struct module *const *m = modules_all; *m; m++) {
		for (const struct module_hook *h = (*m)->hooks; h && h->handle; h++) {
			int *n = &hooks.n[h->event];
			if (*n == HOOKS_MAX)
				abort(); /* a compile-time table outgrew HOOKS_MAX */
			/* Insertion keeps equal priorities in modules_all order. */
			int i = *n;
			while (i > 0 && hooks.by_event[h->event][i - 1]->priority > h->priority) {
				hooks.by_event[h->event][i] = hooks.by_event[h->event][i - 1];
				i--;
			}
			hooks.by_event[h->event][i] = h;
			(*n)++;
		}
	}
}

enum status hooks_run(enum hook_event event, struct hook_ctx *c)
{
	pthread_once(&hooks.once, hooks_build);
	for (int i = 0; i < hooks.n[event]; i++) {
		if (hooks.by_event[event][i]->handle(c) == DONE)
			return DONE;
	}
	return OK;
}

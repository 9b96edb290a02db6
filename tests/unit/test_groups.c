/* Unit tests for src/directory/groups.c: auto-buddy groups applied to the
 * stored rosters of a real SQLite store, on a server context with a
 * router but no listeners. Sessions are registered on a second loop that
 * never runs, so what they would be sent (roster pushes, presence) stays in
 * that loop's inbox for the test to read. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/server.h"
#include "directory/groups.h"
#include "modules/blocking.h"
#include "modules/roster.h"
#include "router/router.h"
#include "storage/storage.h"

#define DOMAIN "localhost"

struct fixture {
	struct config cfg;
	struct server srv;
	struct loop *loops;  /* [0] applies, [1] holds the sessions */
	char dir[64];
	char data_dir[128];
	struct groups_state *gs;
};

static void on_wake(uv_async_t *h)
{
	(void)h;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[512];
	assert_non_null(f);
	config_defaults(&f->cfg);
	f->srv.cfg = &f->cfg;
	f->srv.router = router_new();
	f->srv.blocking_cache = blocking_cache_new();
	f->srv.storage = storage_driver_find("sqlite");
	for (size_t i = 0; i < sizeof f->srv.roster_locks / sizeof *f->srv.roster_locks; i++)
		pthread_mutex_init(&f->srv.roster_locks[i], NULL);
	f->loops = calloc(2, sizeof *f->loops);
	assert_non_null(f->loops);
	f->srv.loops = f->loops;
	f->srv.n_loops = 2;
	snprintf(f->dir, sizeof f->dir, "/tmp/natter-groups-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->data_dir, sizeof f->data_dir, "%s/data", f->dir);
	for (int i = 0; i < 2; i++) {
		struct loop *l = &f->loops[i];
		l->srv = &f->srv;
		l->index = i;
		pthread_mutex_init(&l->inbox_lock, NULL);
		assert_int_equal(uv_loop_init(&l->uv), 0);
		assert_int_equal(uv_async_init(&l->uv, &l->wake, on_wake), 0);
	}
	f->loops[0].store = f->srv.storage->open(f->data_dir, err, sizeof err);
	if (f->loops[0].store == NULL)
		fail_msg("open: %s", err);
	f->gs = groups_state_new();
	*state = f;
	return 0;
}

static void drain(struct loop *l)
{
	while (l->inbox_head) {
		struct inbox_item *it = l->inbox_head;
		l->inbox_head = it->next;
		refbuf_release(it->bytes);
		free(it);
	}
	l->inbox_tail = NULL;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	groups_state_free(f->gs);
	f->srv.storage->close(f->loops[0].store);
	for (int i = 0; i < 2; i++) {
		drain(&f->loops[i]);
		uv_close((uv_handle_t *)&f->loops[i].wake, NULL);
		uv_run(&f->loops[i].uv, UV_RUN_DEFAULT);
		uv_loop_close(&f->loops[i].uv);
		pthread_mutex_destroy(&f->loops[i].inbox_lock);
	}
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	for (size_t i = 0; i < sizeof f->srv.roster_locks / sizeof *f->srv.roster_locks; i++)
		pthread_mutex_destroy(&f->srv.roster_locks[i]);
	blocking_cache_free(f->srv.blocking_cache);
	router_free(f->srv.router);
	config_free(&f->cfg);
	free(f->loops);
	free(f);
	return 0;
}

/* --- building snapshots --- */

struct snap_buf {
	struct dir_snapshot s;
	struct dir_group g[8];
	char *members[8][16];
};

static const char *display_name(void *arg, const char *local)
{
	(void)arg;
	if (strcmp(local, "alice") == 0)
		return "Alice Liddell";
	if (strcmp(local, "bob") == 0)
		return "Bob";
	return NULL;
}

/* Fills b from n specs "Name:m1,m2,m3"; snap_free releases them. */
static void snap_fill(struct snap_buf *b, int n, va_list ap)
{
	memset(b, 0, sizeof *b);
	for (int i = 0; i < n; i++) {
		char *copy = strdup(va_arg(ap, const char *)), *save = NULL;
		char *colon = strchr(copy, ':');
		*colon = '\0';
		b->g[i].name = strdup(copy);
		b->g[i].members = b->members[i];
		for (char *m = strtok_r(colon + 1, ",", &save); m; m = strtok_r(NULL, ",", &save))
			b->members[i][b->g[i].n_members++] = strdup(m);
		free(copy);
	}
	b->s.groups = b->g;
	b->s.n_groups = (size_t)n;
	b->s.name_of = display_name;
}

static void snap_free(struct snap_buf *b)
{
	for (size_t i = 0; i < b->s.n_groups; i++) {
		free(b->g[i].name);
		for (size_t k = 0; k < b->g[i].n_members; k++)
			free(b->g[i].members[k]);
	}
}

/* Applies the groups given as specs (snap_fill); returns groups_apply's. */
static int apply(struct fixture *f, int n, ...)
{
	struct snap_buf b;
	va_list ap;
	va_start(ap, n);
	snap_fill(&b, n, ap);
	va_end(ap);
	int rc = groups_apply(&f->loops[0], f->gs, DOMAIN, &b.s);
	snap_free(&b);
	return rc;
}

/* --- reading rosters --- */

struct dump {
	char s[2048];
};

static void dump_item(void *arg, struct roster_item *it)
{
	struct dump *d = arg;
	static const char *const subs[] = { "none", "to", "from", "both" };
	size_t n = strlen(d->s);
	n += (size_t)snprintf(d->s + n, sizeof d->s - n, "%s%s %s%s%s", n ? ";" : "", it->jid,
			      subs[it->sub & 3], it->managed ? " managed" : "",
			      it->ask ? " ask" : "");
	if (it->name)
		n += (size_t)snprintf(d->s + n, sizeof d->s - n, " '%s'", it->name);
	for (int i = 0; i < it->n_groups; i++)
		n += (size_t)snprintf(d->s + n, sizeof d->s - n, " [%s]", it->groups[i]);
}

/* owner's roster as one line: "jid sub [managed] ['name'] [group]...;..." */
static const char *roster_of(struct fixture *f, const char *local)
{
	static struct dump d;
	char owner[128];
	struct arena a;
	arena_init(&a);
	d.s[0] = '\0';
	snprintf(owner, sizeof owner, "%s@" DOMAIN, local);
	assert_true(roster_each(&f->loops[0], owner, &a, dump_item, &d) >= 0);
	arena_reset(&a);
	return d.s;
}

static bool indexed(struct fixture *f, const char *local)
{
	struct buf b;
	buf_init(&b);
	int rc = f->srv.storage->map_get(f->loops[0].store, DOMAIN, "", "dirgroups", local, &b);
	buf_free(&b);
	assert_true(rc >= 0);
	return rc == 0;
}

static void put_item(struct fixture *f, const char *owner_local, const char *contact,
		     unsigned sub, bool managed)
{
	char owner[128];
	struct arena a;
	struct roster_item it;
	arena_init(&a);
	snprintf(owner, sizeof owner, "%s@" DOMAIN, owner_local);
	roster_new_item(&a, contact, &it);
	it.sub = sub;
	it.managed = managed;
	assert_int_equal(roster_save(&f->loops[0], owner, &it, &a), 0);
	arena_reset(&a);
}

/* --- sessions --- */

static void online(struct fixture *f, const char *local, const char *res, uint64_t id,
		   bool wants_roster)
{
	char bare[128], p[256];
	struct router_target old;
	snprintf(bare, sizeof bare, "%s@" DOMAIN, local);
	assert_int_equal(router_bind(f->srv.router, bare, res, id, 1, &old), 0);
	router_set_presence(f->srv.router, bare, res, id, true, 0);
	int n = snprintf(p, sizeof p, "<presence from='%s/%s'><show>away</show></presence>", bare,
			 res);
	struct refbuf *r = refbuf_new(p, (size_t)n);
	router_set_presence_stanza(f->srv.router, bare, res, id, r);
	refbuf_release(r);
	if (wants_roster)
		router_set_interested(f->srv.router, bare, res, id, ROUTER_WANTS_ROSTER);
}

/* Everything queued for session id, concatenated; the inbox is emptied. */
static char *sent_to(struct fixture *f, uint64_t id)
{
	static char out[8192];
	struct loop *l = &f->loops[1];
	out[0] = '\0';
	struct inbox_item **pp = &l->inbox_head, *last = NULL;
	while (*pp) {
		struct inbox_item *it = *pp;
		if (it->session == id && it->kind == INBOX_DELIVER) {
			size_t n = strlen(out);
			snprintf(out + n, sizeof out - n, "%.*s\n", (int)it->bytes->len,
				 it->bytes->data);
			*pp = it->next;
			refbuf_release(it->bytes);
			free(it);
		} else {
			last = it;
			pp = &it->next;
		}
	}
	l->inbox_tail = last;
	return out;
}

/* --- tests --- */

static void test_first_apply_adds_every_pair(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(apply(f, 1, "Team:alice,bob,carol"), 6);
	assert_string_equal(roster_of(f, "alice"),
			    "bob@localhost both managed 'Bob' [Team];"
			    "carol@localhost both managed [Team]");
	assert_string_equal(roster_of(f, "carol"),
			    "alice@localhost both managed 'Alice Liddell' [Team];"
			    "bob@localhost both managed 'Bob' [Team]");
	assert_true(indexed(f, "alice"));
	assert_true(indexed(f, "carol"));
	/* Nothing changed: nothing is written. */
	assert_int_equal(apply(f, 1, "Team:alice,bob,carol"), 0);
}

static void test_shared_groups_and_order(void **state)
{
	struct fixture *f = *state;
	/* "bob2@d" sorts before "bob@d": the merge must still meet them. */
	assert_int_equal(apply(f, 2, "Sales:bob,bob2,alice", "All:bob2,bob"), 6);
	assert_string_equal(roster_of(f, "bob"),
			    "alice@localhost both managed 'Alice Liddell' [Sales];"
			    "bob2@localhost both managed [All] [Sales]");
	/* The directory listing groups in another order is no change. */
	assert_int_equal(apply(f, 2, "All:bob2,bob", "Sales:alice,bob,bob2"), 0);
	/* A duplicate group name is one group on the item. */
	assert_int_equal(apply(f, 3, "All:bob2,bob", "Sales:alice,bob,bob2", "All:bob,bob2"), 0);
}

static void test_leaving_removes_and_keeps_own_items(void **state)
{
	struct fixture *f = *state;
	put_item(f, "alice", "dave@elsewhere.example", SUB_TO, false);
	assert_int_equal(apply(f, 1, "Team:alice,bob,carol"), 6);
	assert_int_equal(apply(f, 1, "Team:alice,bob"), 4);
	assert_string_equal(roster_of(f, "alice"),
			    "bob@localhost both managed 'Bob' [Team];"
			    "dave@elsewhere.example to");
	assert_string_equal(roster_of(f, "carol"), "");
	assert_false(indexed(f, "carol"));
	assert_true(indexed(f, "alice"));
	/* The whole group goes. */
	assert_int_equal(apply(f, 0), 2);
	assert_string_equal(roster_of(f, "alice"), "dave@elsewhere.example to");
	assert_false(indexed(f, "alice"));
	assert_false(indexed(f, "bob"));
}

static void test_existing_item_is_adopted(void **state)
{
	struct fixture *f = *state;
	put_item(f, "alice", "bob@localhost", SUB_TO, false);
	put_item(f, "bob", "alice@localhost", SUB_FROM, false);
	assert_int_equal(apply(f, 1, "Team:alice,bob"), 2);
	assert_string_equal(roster_of(f, "alice"), "bob@localhost both managed 'Bob' [Team]");
}

static void test_restart_finds_owners_left_behind(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(apply(f, 2, "Team:alice,bob", "Ops:carol,dave"), 4);
	/* A new process: the memory of the last apply is gone. */
	groups_state_free(f->gs);
	f->gs = groups_state_new();
	assert_int_equal(apply(f, 1, "Team:alice,bob"), 2);
	assert_string_equal(roster_of(f, "carol"), "");
	assert_string_equal(roster_of(f, "dave"), "");
	assert_false(indexed(f, "carol"));
	assert_string_equal(roster_of(f, "alice"), "bob@localhost both managed 'Bob' [Team]");
	/* An item removed behind the directory's back comes back on the
	 * first apply after a restart. */
	char owner[] = "alice@" DOMAIN;
	struct arena a;
	arena_init(&a);
	assert_int_equal(roster_remove(&f->loops[0], owner, "bob@" DOMAIN, &a), 0);
	arena_reset(&a);
	groups_state_free(f->gs);
	f->gs = groups_state_new();
	assert_int_equal(apply(f, 1, "Team:alice,bob"), 1);
	assert_string_equal(roster_of(f, "alice"), "bob@localhost both managed 'Bob' [Team]");
}

static void test_managed_flag_is_stored(void **state)
{
	struct fixture *f = *state;
	struct arena a;
	struct roster_item it;
	arena_init(&a);
	/* An item as stored before the flag existed: sub both, ask, approved. */
	assert_int_equal(f->srv.storage->map_put(f->loops[0].store, DOMAIN, "alice", "roster",
						 "bob@" DOMAIN, "310Bob\0G\0", 9),
			 0);
	assert_int_equal(roster_load(&f->loops[0], "alice@" DOMAIN, "bob@" DOMAIN, &a, &it), 1);
	assert_true(it.ask);
	assert_false(it.managed);
	assert_string_equal(it.name, "Bob");
	assert_int_equal(it.n_groups, 1);
	it.managed = true;
	assert_int_equal(roster_save(&f->loops[0], "alice@" DOMAIN, &it, &a), 0);
	assert_int_equal(roster_load(&f->loops[0], "alice@" DOMAIN, "bob@" DOMAIN, &a, &it), 1);
	assert_true(it.ask);
	assert_true(it.managed);
	/* Clients never see the flag. */
	struct buf b;
	buf_init(&b);
	xml_serialize(roster_item_node(&a, &it), NS_ROSTER, &b);
	buf_append(&b, "", 1);
	assert_null(strstr(b.data, "managed"));
	buf_free(&b);
	arena_reset(&a);
}

static void test_presence_follows_pairs(void **state)
{
	struct fixture *f = *state;
	online(f, "alice", "home", 1, true);
	online(f, "bob", "work", 2, false);
	assert_int_equal(apply(f, 1, "Team:alice,bob,carol"), 6);
	const char *a = sent_to(f, 1);
	assert_non_null(strstr(a, "jid='bob@localhost'"));  /* roster push */
	assert_non_null(strstr(a, "from='bob@localhost/work'><show>away"));
	const char *b = sent_to(f, 2);
	assert_null(strstr(b, "<iq")); /* never fetched the roster: no push */
	assert_non_null(strstr(b, "from='alice@localhost/home'><show>away"));
	/* Nothing changed: nothing is sent. */
	assert_int_equal(apply(f, 1, "Team:alice,bob,carol"), 0);
	assert_string_equal(sent_to(f, 1), "");
	/* bob leaves: each gets the other's resources unavailable. */
	assert_int_equal(apply(f, 1, "Team:alice,carol"), 4);
	a = sent_to(f, 1);
	assert_non_null(strstr(a, "subscription='remove'"));
	assert_non_null(strstr(a, "type='unavailable' from='bob@localhost/work'"));
	b = sent_to(f, 2);
	assert_non_null(strstr(b, "type='unavailable' from='alice@localhost/home'"));
}

static void test_many_members(void **state)
{
	struct fixture *f = *state;
	char *members[60];
	char name[] = "All";
	for (int i = 0; i < 60; i++) {
		members[i] = malloc(16);
		snprintf(members[i], 16, "u%02d", i);
	}
	struct dir_group g = { .name = name, .members = members, .n_members = 60 };
	struct dir_snapshot snap = { &g, 1, display_name, NULL };
	assert_int_equal(groups_apply(&f->loops[0], f->gs, DOMAIN, &snap), 60 * 59);
	assert_int_equal(groups_apply(&f->loops[0], f->gs, DOMAIN, &snap), 0);
	g.n_members = 59; /* u59 leaves */
	assert_int_equal(groups_apply(&f->loops[0], f->gs, DOMAIN, &snap), 2 * 59);
	for (int i = 0; i < 60; i++)
		free(members[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_first_apply_adds_every_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_groups_and_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leaving_removes_and_keeps_own_items, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_existing_item_is_adopted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_finds_owners_left_behind, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_managed_flag_is_stored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_presence_follows_pairs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_members, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Auto-buddy groups (iChat Server's "automatically add buddies"): applies
 * a snapshot of the directory's groups to the stored rosters of one host.
 *
 * Every member of a group has every other member in the roster with
 * subscription both, under the group's name (an item in several groups
 * carries each name), marked as managed by the directory. Items the
 * directory no longer asks for are removed. Changes are pushed to the
 * online sessions (roster push) and presence follows them: a new pair sees
 * each other's current presence, a removed pair gets unavailable. */
#ifndef NATTER_GROUPS_H
#define NATTER_GROUPS_H

#include <stddef.h>

struct loop;
struct groups_state;

struct dir_group {
	char *name;       /* roster group name */
	char **members;   /* normalised localparts, sorted, unique */
	size_t n_members;
	char **owners;    /* the room_owners group's localparts, sorted, unique */
	size_t n_owners;
};

struct dir_snapshot {
	struct dir_group *groups;
	size_t n_groups;
	/* Display name for a member's roster item (the name attribute), or
	 * NULL for none. */
	const char *(*name_of)(void *arg, const char *local);
	void *name_arg;
};

/* Per-host memory of what was applied last; NULL before the first apply. */
struct groups_state *groups_state_new(void);
void groups_state_free(struct groups_state *gs);

/* Applies snap to the rosters of domain, on loop l (the caller's loop;
 * stored rosters are changed under roster_lock). The first call after
 * start reconciles every member's roster and every roster that still holds
 * managed items from before; later calls touch only accounts whose wanted
 * contacts changed. Returns the number of roster items added, changed or
 * removed, or -1 on a store error (the next refresh tries again). */
int groups_apply(struct loop *l, struct groups_state *gs, const char *domain,
		 const struct dir_snapshot *snap);

#endif

/* Arena allocator: many small allocations freed at once. One arena per
 * stanza (its tree) and per connection for state that lives as long as it. */
#ifndef NATTER_ARENA_H
#define NATTER_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
	struct arena_chunk *head; /* newest chunk first */
	size_t used;              /* bytes used in head */
	size_t total;             /* bytes handed out, for limits */
};

void arena_init(struct arena *a);
/* Returns size bytes aligned for any type, owned by the arena; never NULL
 * (out of memory is fatal). */
void *arena_alloc(struct arena *a, size_t size);
/* Copies n bytes of s and adds a NUL. */
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_strdup(struct arena *a, const char *s);
/* Frees every chunk; the arena can be used again afterwards. */
void arena_reset(struct arena *a);

#endif

#include "modules/caps.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "router/iqreq.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DATA "jabber:x:data"
#define CAPS_VER_MAX 64
/* Owners whose last items a resource was sent, remembered per resource. */
#define CAPS_MAX_SERVED 32

struct caps_ver {
	char ver[CAPS_VER_MAX];
	char **nodes;         /* what it wants notifications of */
	int n_nodes;
	int next;             /* hash chain, -1 ends */
	bool used;
};

struct caps_res {
	struct caps_res *next; /* hash chain */
	char *bare;
	char *resource;
	char ver[CAPS_VER_MAX];
	uint32_t served[CAPS_MAX_SERVED];
	int n_served;
};

struct caps_waiter {
	struct jid *who;
	char *owner;
	caps_known_fn *known;
};

struct caps_pending {
	struct caps_pending *next;
	struct caps *caps;
	char ver[CAPS_VER_MAX];
	char node[256];
	struct caps_waiter w[CAPS_MAX_WAITERS];
	int n;
};

struct caps {
	pthread_mutex_t lock;
	struct caps_ver *vers;  /* cap entries, reused oldest first */
	int *ver_buckets;       /* cap buckets of ver indexes */
	int cap, ring;
	struct caps_res **res_buckets;
	size_t n_res_buckets, n_res;
	struct caps_pending *pending;
};

struct caps *caps_new(int cache_size)
{
	struct caps *c = xcalloc(1, sizeof *c);
	pthread_mutex_init(&c->lock, NULL);
	c->cap = cache_size;
	c->vers = xcalloc((size_t)cache_size, sizeof *c->vers);
	c->ver_buckets = xmalloc((size_t)cache_size * sizeof *c->ver_buckets);
	for (int i = 0; i < cache_size; i++)
		c->ver_buckets[i] = -1;
	c->n_res_buckets = 4096;
	c->res_buckets = xcalloc(c->n_res_buckets, sizeof *c->res_buckets);
	return c;
}

static void caps_ver_clear(struct caps_ver *v)
{
	for (int i = 0; i < v->n_nodes; i++)
		free(v->nodes[i]);
	free(v->nodes);
	v->nodes = NULL;
	v->n_nodes = 0;
	v->used = false;
}

static void caps_pending_free(struct caps_pending *p)
{
	for (int i = 0; i < p->n; i++) {
		free(p->w[i].who);
		free(p->w[i].owner);
	}
	free(p);
}

void caps_free(struct caps *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < c->cap; i++)
		caps_ver_clear(&c->vers[i]);
	for (size_t i = 0; i < c->n_res_buckets; i++) {
		while (c->res_buckets[i]) {
			struct caps_res *r = c->res_buckets[i];
			c->res_buckets[i] = r->next;
			free(r->bare);
			free(r->resource);
			free(r);
		}
	}
	/* Requests still in flight own their pending entry: iqreq_free
	 * reports them, which frees them, before this runs. */
	pthread_mutex_destroy(&c->lock);
	free(c->vers);
	free(c->ver_buckets);
	free(c->res_buckets);
	free(c);
}

/* --- versions (lock held) --- */

static struct caps_ver *caps_ver_find(struct caps *c, const char *ver)
{
	for (int i = c->ver_buckets[str_hash(ver) % (uint32_t)c->cap]; i >= 0; i = c->vers[i].next)
		if (strcmp(c->vers[i].ver, ver) == 0)
			return &c->vers[i];
	return NULL;
}

static void caps_ver_unlink(struct caps *c, int idx)
{
	int *p = &c->ver_buckets[str_hash(c->vers[idx].ver) % (uint32_t)c->cap];
	while (*p >= 0 && *p != idx)
		p = &c->vers[*p].next;
	if (*p == idx)
		*p = c->vers[idx].next;
}

/* Takes ownership of nodes. */
static void caps_ver_add(struct caps *c, const char *ver, char **nodes, int n)
{
	int idx = c->ring;
	c->ring = (c->ring + 1) % c->cap;
	if (c->vers[idx].used) {
		caps_ver_unlink(c, idx);
		caps_ver_clear(&c->vers[idx]);
	}
	struct caps_ver *v = &c->vers[idx];
	snprintf(v->ver, sizeof v->ver, "%s", ver);
	v->nodes = nodes;
	v->n_nodes = n;
	v->used = true;
	uint32_t b = str_hash(ver) % (uint32_t)c->cap;
	v->next = c->ver_buckets[b];
	c->ver_buckets[b] = idx;
}

static bool caps_ver_wants(const struct caps_ver *v, const char *node)
{
	for (int i = 0; v && node && i < v->n_nodes; i++)
		if (strcmp(v->nodes[i], node) == 0)
			return true;
	return false;
}

/* --- resources (lock held) --- */

static struct caps_res **caps_res_slot(struct caps *c, const char *bare, const char *resource)
{
	struct caps_res **p = &c->res_buckets[str_hash(bare) % c->n_res_buckets];
	while (*p && (strcmp((*p)->bare, bare) != 0 || strcmp((*p)->resource, resource) != 0))
		p = &(*p)->next;
	return p;
}

static struct caps_res *caps_res_find(struct caps *c, const struct jid *who)
{
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(who, bare, sizeof bare);
	return *caps_res_slot(c, bare, who->resource);
}

/* --- the hash (XEP-0115 §5.1) --- */

struct caps_strs {
	const char **v;
	int n, cap;
};

static void strs_add(struct arena *a, struct caps_strs *s, const char *str)
{
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 16;
		const char **v = arena_alloc(a, (size_t)cap * sizeof *v);
		if (s->n)
			memcpy(v, s->v, (size_t)s->n * sizeof *v);
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = str;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static bool strs_sort_unique(struct caps_strs *s)
{
	if (s->n > 1)
		qsort(s->v, (size_t)s->n, sizeof *s->v, cmp_str);
	for (int i = 1; i < s->n; i++)
		if (strcmp(s->v[i], s->v[i - 1]) == 0)
			return false;
	return true;
}

static const char *attr_or_empty(const struct xml_node *n, const char *name)
{
	const char *v = xml_attr(n, name);
	return v ? v : "";
}

static const char *xml_lang(const struct xml_node *n)
{
	for (const struct xml_attr *at = n->attrs; at; at = at->next)
		if (strcmp(at->ns, NS_XML) == 0 && strcmp(at->name, "lang") == 0)
			return at->value;
	return "";
}

static char *join(struct arena *a, const char *const *parts, int n)
{
	size_t len = 1;
	for (int i = 0; i < n; i++)
		len += strlen(parts[i]);
	char *s = arena_alloc(a, len);
	s[0] = '\0';
	for (int i = 0; i < n; i++)
		strcat(s, parts[i]);
	return s;
}

struct caps_field {
	const char *var;
	const char *text; /* "var<value<value<..." */
};

struct caps_fields {
	struct caps_field *v;
	int n, cap;
};

static void fields_add(struct arena *a, struct caps_fields *f, const char *var, const char *text)
{
	if (f->n == f->cap) {
		int cap = f->cap ? f->cap * 2 : 16;
		struct caps_field *v = arena_alloc(a, (size_t)cap * sizeof *v);
		if (f->n)
			memcpy(v, f->v, (size_t)f->n * sizeof *v);
		f->v = v;
		f->cap = cap;
	}
	f->v[f->n].var = var;
	f->v[f->n].text = text;
	f->n++;
}

static int cmp_field(const void *x, const void *y)
{
	return strcmp(((const struct caps_field *)x)->var, ((const struct caps_field *)y)->var);
}

/* Each string, followed by '<' (§5.1). */
static void put_each(struct buf *b, const struct caps_strs *s)
{
	for (int i = 0; i < s->n; i++) {
		buf_puts(b, s->v[i]);
		buf_puts(b, "<");
	}
}

/* The buffer's text, copied into the arena; frees the buffer. */
static const char *buf_to_arena(struct arena *a, struct buf *b)
{
	char *s = arena_alloc(a, b->len + 1);
	memcpy(s, b->data ? b->data : "", b->len);
	s[b->len] = '\0';
	buf_free(b);
	return s;
}

/* One extended form (XEP-0128) as §5.1 step 5 writes it, in *out with
 * its FORM_TYPE in *type; returns false when it has no FORM_TYPE
 * (ignored) or is malformed (*bad). Linear in the form's size: a client
 * answers the server's disco#info with whatever form it likes. */
static bool form_string(const struct xml_node *x, struct arena *a, bool *bad, const char **type,
			const char **out)
{
	const char *form_type = NULL;
	struct caps_fields fields = { 0 };
	for (struct xml_node *f = x->children; f; f = f->next) {
		if (!xml_is(f, NS_DATA, "field"))
			continue;
		const char *var = xml_attr(f, "var");
		if (var == NULL) {
			*bad = true;
			return false;
		}
		struct caps_strs values = { 0 };
		for (struct xml_node *v = f->children; v; v = v->next)
			if (xml_is(v, NS_DATA, "value"))
				strs_add(a, &values, xml_text(a, v));
		if (strcmp(var, "FORM_TYPE") == 0) {
			if (form_type != NULL || values.n != 1) {
				*bad = true;
				return false;
			}
			form_type = values.v[0];
			continue;
		}
		if (values.n > 1)
			qsort(values.v, (size_t)values.n, sizeof *values.v, cmp_str);
		struct buf b;
		buf_init(&b);
		buf_puts(&b, var);
		buf_puts(&b, "<");
		put_each(&b, &values);
		fields_add(a, &fields, var, buf_to_arena(a, &b));
	}
	if (form_type == NULL)
		return false;
	if (fields.n > 1)
		qsort(fields.v, (size_t)fields.n, sizeof *fields.v, cmp_field);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, form_type);
	buf_puts(&b, "<");
	for (int i = 0; i < fields.n; i++)
		buf_puts(&b, fields.v[i].text);
	*type = form_type;
	*out = buf_to_arena(a, &b);
	return true;
}

int caps_hash(const struct xml_node *query, struct arena *a, char *out, size_t cap)
{
	struct caps_strs ids = { 0 }, feats = { 0 }, forms = { 0 }, form_types = { 0 };
	bool bad = false;
	for (struct xml_node *n = query->children; n; n = n->next) {
		if (xml_is(n, NS_DISCO_INFO, "identity")) {
			const char *p[7] = { attr_or_empty(n, "category"), "/", attr_or_empty(n, "type"),
					     "/", xml_lang(n), "/", attr_or_empty(n, "name") };
			strs_add(a, &ids, join(a, p, 7));
		} else if (xml_is(n, NS_DISCO_INFO, "feature")) {
			strs_add(a, &feats, attr_or_empty(n, "var"));
		} else if (xml_is(n, NS_DATA, "x")) {
			const char *type, *f;
			if (form_string(n, a, &bad, &type, &f)) {
				strs_add(a, &form_types, type);
				strs_add(a, &forms, f);
			}
		}
	}
	/* Forms sort by FORM_TYPE: "type<..." orders as the types do
	 * unless one type is a prefix of another, which §5.4 refuses
	 * (two forms of one FORM_TYPE) in the common case. */
	if (bad || !strs_sort_unique(&ids) || !strs_sort_unique(&feats) ||
	    !strs_sort_unique(&form_types) || !strs_sort_unique(&forms) || cap < 29)
		return -1;
	struct buf b;
	buf_init(&b);
	/* Sorted as values, each followed by '<' (§5.1: '<' sorts after
	 * characters such as '#'). */
	put_each(&b, &ids);
	put_each(&b, &feats);
	for (int i = 0; i < forms.n; i++)
		buf_puts(&b, forms.v[i]);
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)(b.data ? b.data : ""), b.len, md);
	buf_free(&b);
	EVP_EncodeBlock((unsigned char *)out, md, sizeof md);
	return 0;
}

/* --- learning a ver --- */

static void caps_on_info(struct loop *l, void *arg, struct xml_node *reply, struct arena *a)
{
	struct caps_pending *p = arg;
	struct caps *c = p->caps;
	pthread_mutex_lock(&c->lock);
	for (struct caps_pending **pp = &c->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	struct xml_node *q = NULL;
	const char *type = reply ? xml_attr(reply, "type") : NULL;
	if (type != NULL && strcmp(type, "result") == 0)
		q = xml_child(reply, NS_DISCO_INFO, "query");
	char ver[32] = "";
	if (q == NULL || l == NULL || loop_stopping(l) || caps_hash(q, a, ver, sizeof ver) != 0 ||
	    strcmp(ver, p->ver) != 0) {
		if (q != NULL)
			log_info("caps: the disco#info answer for ver %s does not verify", p->ver);
		caps_pending_free(p);
		return;
	}
	char **nodes = NULL;
	int n = 0, cap = 0;
	static const char suffix[] = "+notify";
	for (struct xml_node *f = q->children; f; f = f->next) {
		const char *var = xml_is(f, NS_DISCO_INFO, "feature") ? xml_attr(f, "var") : NULL;
		size_t len = var ? strlen(var) : 0;
		if (len <= sizeof suffix - 1 || strcmp(var + len - (sizeof suffix - 1), suffix) != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			nodes = xrealloc(nodes, (size_t)cap * sizeof *nodes);
		}
		nodes[n] = xmalloc(len - (sizeof suffix - 1) + 1);
		memcpy(nodes[n], var, len - (sizeof suffix - 1));
		nodes[n][len - (sizeof suffix - 1)] = '\0';
		n++;
	}
	pthread_mutex_lock(&c->lock);
	if (caps_ver_find(c, p->ver) == NULL) {
		caps_ver_add(c, p->ver, nodes, n);
		nodes = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	for (int i = 0; nodes && i < n; i++)
		free(nodes[i]);
	free(nodes);
	for (int i = 0; i < p->n; i++)
		p->w[i].known(l, p->w[i].who, p->w[i].owner);
	caps_pending_free(p);
}

/* Remembers a waiter (lock held). */
static void caps_wait(struct caps_pending *p, const struct jid *who, caps_known_fn *known,
		      const char *owner)
{
	if (p->n == CAPS_MAX_WAITERS || known == NULL)
		return;
	struct caps_waiter *w = &p->w[p->n++];
	w->who = xmalloc(sizeof *w->who);
	*w->who = *who;
	w->owner = xstrdup(owner ? owner : "");
	w->known = known;
}

enum caps_state caps_presence(struct loop *l, const struct jid *who, struct xml_node *st,
			      struct arena *a, bool *fresh, caps_known_fn *known,
			      const char *owner)
{
	struct caps *c = l->srv->caps;
	*fresh = false;
	struct xml_node *cel = xml_child(st, NS_CAPS, "c");
	const char *hash = cel ? xml_attr(cel, "hash") : NULL;
	const char *node = cel ? xml_attr(cel, "node") : NULL;
	const char *ver = cel ? xml_attr(cel, "ver") : NULL;
	/* Only sha-1, the one every client uses; legacy caps (no hash) name
	 * no verifiable version. */
	if (hash == NULL || strcmp(hash, "sha-1") != 0 || node == NULL || ver == NULL ||
	    strlen(ver) >= CAPS_VER_MAX || strlen(node) > 200 || ver[0] == '\0') {
		caps_forget(l->srv, who);
		return CAPS_NONE;
	}
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(who, bare, sizeof bare);
	enum caps_state state;
	struct caps_pending *ask = NULL;
	pthread_mutex_lock(&c->lock);
	struct caps_res **slot = caps_res_slot(c, bare, who->resource);
	struct caps_res *r = *slot;
	if (r == NULL && c->n_res < CAPS_MAX_RESOURCES) {
		r = xcalloc(1, sizeof *r);
		r->bare = xstrdup(bare);
		r->resource = xstrdup(who->resource);
		*slot = r;
		c->n_res++;
	}
	if (r != NULL && strcmp(r->ver, ver) != 0) {
		snprintf(r->ver, sizeof r->ver, "%s", ver);
		r->n_served = 0;
		*fresh = true;
	}
	if (caps_ver_find(c, ver) != NULL) {
		state = CAPS_KNOWN;
	} else {
		state = CAPS_PENDING;
		struct caps_pending *p = c->pending;
		while (p && strcmp(p->ver, ver) != 0)
			p = p->next;
		if (p == NULL) {
			p = xcalloc(1, sizeof *p);
			p->caps = c;
			snprintf(p->ver, sizeof p->ver, "%s", ver);
			snprintf(p->node, sizeof p->node, "%s#%s", node, ver);
			p->next = c->pending;
			c->pending = p;
			ask = p;
		}
		caps_wait(p, who, known, owner);
	}
	pthread_mutex_unlock(&c->lock);
	if (ask != NULL) {
		struct xml_node *iq = xml_new(a, NS_CLIENT, "iq");
		char to[3 * JID_PART_MAX + 3];
		jid_format(who, to, sizeof to);
		xml_set_attr(a, iq, "type", "get");
		/* From the local domain: owner's (who's own, for a local
		 * session). */
		const char *at = owner ? strchr(owner, '@') : NULL;
		xml_set_attr(a, iq, "from", at ? at + 1 : who->domain);
		xml_set_attr(a, iq, "to", to);
		struct xml_node *qn = xml_add_child(a, iq, NS_DISCO_INFO, "query");
		xml_set_attr(a, qn, "node", ask->node);
		/* The answer may come on another loop; the pending entry
		 * is found there by its pointer, taken off the list first. */
		iqreq_send(l, iq, a, who, caps_on_info, ask);
	}
	return state;
}

void caps_forget(struct server *srv, const struct jid *who)
{
	struct caps *c = srv->caps;
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(who, bare, sizeof bare);
	pthread_mutex_lock(&c->lock);
	struct caps_res **slot = caps_res_slot(c, bare, who->resource);
	struct caps_res *r = *slot;
	if (r != NULL) {
		*slot = r->next;
		c->n_res--;
	}
	pthread_mutex_unlock(&c->lock);
	if (r != NULL) {
		free(r->bare);
		free(r->resource);
		free(r);
	}
}

bool caps_wants(struct server *srv, const struct jid *who, const char *node)
{
	struct caps *c = srv->caps;
	pthread_mutex_lock(&c->lock);
	struct caps_res *r = caps_res_find(c, who);
	bool wants = r && caps_ver_wants(caps_ver_find(c, r->ver), node);
	pthread_mutex_unlock(&c->lock);
	return wants;
}

int caps_each(struct server *srv, const char *bare, const char *node, int max,
	      void (*fn)(void *arg, const char *full, bool wants), void *arg)
{
	struct caps *c = srv->caps;
	/* Copied under the lock, called without it: fn delivers. */
	char **fulls = xcalloc((size_t)max, sizeof *fulls);
	bool *wants = xcalloc((size_t)max, sizeof *wants);
	int n = 0;
	pthread_mutex_lock(&c->lock);
	for (struct caps_res *r = c->res_buckets[str_hash(bare) % c->n_res_buckets]; r && n < max;
	     r = r->next) {
		if (strcmp(r->bare, bare) != 0)
			continue;
		size_t len = strlen(bare) + strlen(r->resource) + 2;
		fulls[n] = xmalloc(len);
		snprintf(fulls[n], len, "%s/%s", bare, r->resource);
		wants[n] = caps_ver_wants(caps_ver_find(c, r->ver), node);
		n++;
	}
	pthread_mutex_unlock(&c->lock);
	for (int i = 0; i < n; i++) {
		fn(arg, fulls[i], wants[i]);
		free(fulls[i]);
	}
	free(fulls);
	free(wants);
	return n;
}

bool caps_first_for(struct server *srv, const struct jid *who, const char *owner)
{
	struct caps *c = srv->caps;
	uint32_t h = str_hash(owner);
	bool first = false;
	pthread_mutex_lock(&c->lock);
	struct caps_res *r = caps_res_find(c, who);
	if (r != NULL) {
		first = true;
		for (int i = 0; i < r->n_served; i++)
			if (r->served[i] == h)
				first = false;
		if (first && r->n_served < CAPS_MAX_SERVED)
			r->served[r->n_served++] = h;
	}
	pthread_mutex_unlock(&c->lock);
	return first;
}

#include "muc/muc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "directory/groups.h"
#include "modules/module.h"
#include "muc/room.h"
#include "router/deliver.h"
#include "storage/pending.h"
#include "xml/xml_parse.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

struct public_room {
	struct public_room *next;
	char *jid;
};

struct creator {
	struct creator *next;
	char *bare;
	int rooms;
};

struct muc {
	struct creator *creators;   /* rooms each account made, that exist */
	struct muc_service *services;
	size_t n_services;
	pthread_mutex_t lock;       /* guards rooms */
	struct public_room *rooms;  /* public rooms that exist, any service */
};

int muc_init(struct server *srv, char *err, size_t errlen)
{
	const struct config *cfg = srv->cfg;
	struct muc *m = xcalloc(1, sizeof *m);
	pthread_mutex_init(&m->lock, NULL);
	m->services = xcalloc(cfg->n_hosts ? cfg->n_hosts : 1, sizeof *m->services);
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *h = &cfg->hosts[i];
		if (!h->muc.enabled)
			continue;
		struct muc_service *s = &m->services[m->n_services];
		s->host = h;
		int n = h->muc.domain ? snprintf(s->domain, sizeof s->domain, "%s", h->muc.domain)
				      : snprintf(s->domain, sizeof s->domain, "conference.%s", h->domain);
		if (n < 0 || (size_t)n >= sizeof s->domain) {
			snprintf(err, errlen, "host %s: the chat service's domain is too long", h->domain);
			free(m->services);
			free(m);
			return -1;
		}
		if (config_find_host(cfg, s->domain) != NULL) {
			snprintf(err, errlen, "host %s: chat service domain %s is a host", h->domain,
				 s->domain);
			free(m->services);
			free(m);
			return -1;
		}
		m->n_services++;
		log_info("host %s: chat rooms at %s", h->domain, s->domain);
	}
	srv->muc = m;
	return 0;
}

void muc_free(struct server *srv)
{
	struct muc *m = srv->muc;
	if (m == NULL)
		return;
	while (m->creators) {
		struct creator *c = m->creators;
		m->creators = c->next;
		free(c->bare);
		free(c);
	}
	while (m->rooms) {
		struct public_room *r = m->rooms;
		m->rooms = r->next;
		free(r->jid);
		free(r);
	}
	pthread_mutex_destroy(&m->lock);
	free(m->services);
	free(m);
	srv->muc = NULL;
}

void muc_loop_free(struct loop *l) { room_loop_free(l); }

void muc_loop_shutdown(struct loop *l) { room_loop_shutdown(l); }

static const struct muc_service *find_service(const struct server *srv, const char *domain)
{
	const struct muc *m = srv->muc;
	for (size_t i = 0; m && i < m->n_services; i++)
		if (strcmp(m->services[i].domain, domain) == 0)
			return &m->services[i];
	return NULL;
}

const struct config_host *muc_service_host(const struct server *srv, const char *domain)
{
	const struct muc_service *s = find_service(srv, domain);
	return s ? s->host : NULL;
}

const char *muc_service_domain(const struct server *srv, const char *host_domain)
{
	const struct muc *m = srv->muc;
	for (size_t i = 0; m && i < m->n_services; i++)
		if (strcmp(m->services[i].host->domain, host_domain) == 0)
			return m->services[i].domain;
	return NULL;
}

void muc_public_set(struct server *srv, const char *room, bool present)
{
	struct muc *m = srv->muc;
	pthread_mutex_lock(&m->lock);
	struct public_room **p = &m->rooms;
	while (*p && strcmp((*p)->jid, room) != 0)
		p = &(*p)->next;
	if (present && *p == NULL) {
		struct public_room *r = xcalloc(1, sizeof *r);
		r->jid = xstrdup(room);
		*p = r;
	} else if (!present && *p != NULL) {
		struct public_room *r = *p;
		*p = r->next;
		free(r->jid);
		free(r);
	}
	pthread_mutex_unlock(&m->lock);
}

bool muc_creator_take(struct server *srv, const char *bare, int delta, int max)
{
	struct muc *m = srv->muc;
	bool ok = true;
	pthread_mutex_lock(&m->lock);
	struct creator **p = &m->creators;
	while (*p && strcmp((*p)->bare, bare) != 0)
		p = &(*p)->next;
	int now = *p ? (*p)->rooms : 0;
	if (delta > 0 && now + delta > max) {
		ok = false;
	} else if (now + delta <= 0) {
		if (*p) {
			struct creator *c = *p;
			*p = c->next;
			free(c->bare);
			free(c);
		}
	} else if (*p) {
		(*p)->rooms = now + delta;
	} else {
		struct creator *c = xcalloc(1, sizeof *c);
		c->bare = xstrdup(bare);
		c->rooms = delta;
		*p = c;
	}
	pthread_mutex_unlock(&m->lock);
	return ok;
}

void muc_public_each(struct server *srv, const char *service,
		     void (*fn)(void *arg, const char *room), void *arg)
{
	struct muc *m = srv->muc;
	size_t sl = strlen(service);
	pthread_mutex_lock(&m->lock);
	for (struct public_room *r = m->rooms; r; r = r->next) {
		const char *at = strchr(r->jid, '@');
		if (at && strlen(at + 1) == sl && strcmp(at + 1, service) == 0)
			fn(arg, r->jid);
	}
	pthread_mutex_unlock(&m->lock);
}

/* --- the service itself --- */

struct items_ctx {
	struct iq_ctx *c;
	struct xml_node *q;
};

static void add_room_item(void *arg, const char *room)
{
	struct items_ctx *ic = arg;
	struct xml_node *it = xml_add_child(ic->c->a, ic->q, NS_DISCO_ITEMS, "item");
	xml_set_attr(ic->c->a, it, "jid", room);
	const char *at = strchr(room, '@');
	char name[JID_PART_MAX + 1];
	snprintf(name, sizeof name, "%.*s", (int)(at - room), room);
	xml_set_attr(ic->c->a, it, "name", name);
}

static void service_iq(struct loop *l, const struct muc_service *svc, struct xml_node *st,
		       struct arena *a, const struct jid *from, const struct jid *to)
{
	const char *type = xml_attr(st, "type");
	if (type == NULL || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
		return; /* results and errors to the service end here */
	struct iq_ctx c = { .loop = l, .iq = st, .a = a, .from = from, .to = to,
			    .writes = pending_queued(l->store) };
	c.payload = xml_first_element(st);
	if (c.payload == NULL || strcmp(type, "get") != 0) {
		module_error(&c, "cancel", "service-unavailable");
		return;
	}
	if (xml_is(c.payload, NS_DISCO_INFO, "query") && xml_attr(c.payload, "node") == NULL) {
		struct xml_node *q = xml_new(a, NS_DISCO_INFO, "query");
		struct xml_node *id = xml_add_child(a, q, NS_DISCO_INFO, "identity");
		xml_set_attr(a, id, "category", "conference");
		xml_set_attr(a, id, "type", "text");
		xml_set_attr(a, id, "name", "Chatrooms");
		static const char *const features[] = { NS_MUC, NS_DISCO_INFO, NS_DISCO_ITEMS,
							"urn:xmpp:occupant-id:0", "urn:xmpp:sid:0",
							NULL };
		for (const char *const *f = features; *f; f++) {
			struct xml_node *fe = xml_add_child(a, q, NS_DISCO_INFO, "feature");
			xml_set_attr(a, fe, "var", *f);
		}
		module_reply(&c, q);
	} else if (xml_is(c.payload, NS_DISCO_ITEMS, "query") &&
		   xml_attr(c.payload, "node") == NULL) {
		struct items_ctx ic = { &c, xml_new(a, NS_DISCO_ITEMS, "query") };
		muc_public_each(l->srv, svc->domain, add_room_item, &ic);
		module_reply(&c, ic.q);
	} else {
		module_error(&c, "cancel", "service-unavailable");
	}
}

/* --- to the room's owner loop --- */

struct room_post {
	const struct muc_service *svc;
	struct jid from, to;
	size_t len;
	char bytes[];
};

struct loop *muc_owner_loop(struct server *srv, const char *room)
{
	return &srv->loops[str_hash(room) % (unsigned)srv->n_loops];
}

size_t muc_service_count(const struct server *srv) { return srv->muc ? srv->muc->n_services : 0; }

const struct muc_service *muc_service_at(const struct server *srv, size_t i)
{
	return &srv->muc->services[i];
}

void muc_loop_start(struct loop *l) { room_load_all(l); }

static void on_room_post(struct loop *l, void *arg)
{
	struct room_post *p = arg;
	if (!loop_stopping(l)) {
		struct arena a;
		arena_init(&a);
		struct xml_node *st = xml_parse_element(&a, p->bytes, p->len);
		if (st != NULL)
			room_handle(l, p->svc, st, &a, &p->from, &p->to);
		arena_reset(&a);
	}
	free(p);
}

bool muc_route(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
	       const struct jid *to)
{
	if (to == NULL)
		return false;
	const struct muc_service *svc = find_service(l->srv, to->domain);
	if (svc == NULL)
		return false;
	if (to->local[0] == '\0') {
		if (strcmp(st->name, "iq") == 0 && to->resource[0] == '\0')
			service_iq(l, svc, st, a, from, to);
		else if (strcmp(st->name, "presence") != 0)
			deliver_error(l, st, a, "cancel", "service-unavailable");
		return true;
	}
	char room[2 * JID_PART_MAX + 2];
	if (jid_format_bare(to, room, sizeof room) < 0)
		return true;
	struct loop *owner = muc_owner_loop(l->srv, room);
	if (owner == l) {
		room_handle(l, svc, st, a, from, to);
		return true;
	}
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	struct room_post *p = xmalloc(sizeof *p + b.len);
	p->svc = svc;
	p->from = *from;
	p->to = *to;
	p->len = b.len;
	memcpy(p->bytes, b.data, b.len);
	buf_free(&b);
	loop_call(owner, on_room_post, p);
	return true;
}

/* --- natterctl room --- */

enum ctl_op { CTL_LIST, CTL_INFO, CTL_CREATE, CTL_DESTROY };

/* One natterctl room command: sent to the loops concerned, answered on
 * the service loop, where the control socket lives. */
struct ctl {
	struct server *srv;
	enum ctl_op op;
	const struct muc_service *svc;
	char room[2 * JID_PART_MAX + 2];
	char extra[2 * JID_PART_MAX + 2]; /* create: owner; destroy: reason */
	int pending;
	bool failed;
	struct buf out;
	muc_control_done *done;
	void *arg;
};

struct ctl_part {
	struct ctl *ctl;
	bool failed;
	struct buf out;
};

static void ctl_merge(struct loop *l, void *arg)
{
	struct ctl_part *p = arg;
	struct ctl *c = p->ctl;
	(void)l;
	buf_append(&c->out, p->out.data ? p->out.data : "", p->out.len);
	c->failed |= p->failed;
	buf_free(&p->out);
	free(p);
	if (--c->pending > 0)
		return;
	buf_append(&c->out, "", 1);
	c->done(c->arg, !c->failed, c->out.data);
	buf_free(&c->out);
	free(c);
}

static void ctl_on_loop(struct loop *l, void *arg)
{
	struct ctl *c = arg;
	struct ctl_part *p = xcalloc(1, sizeof *p);
	p->ctl = c;
	buf_init(&p->out);
	if (!loop_stopping(l)) {
		switch (c->op) {
		case CTL_LIST:
			room_list(l, &p->out);
			break;
		case CTL_INFO:
			p->failed = room_info(l, c->room, &p->out) != 0;
			break;
		case CTL_CREATE:
			p->failed = room_admin_create(l, c->svc, c->room, c->extra[0] ? c->extra : NULL,
						      &p->out) != 0;
			break;
		case CTL_DESTROY:
			p->failed = room_admin_destroy(l, c->room, c->extra[0] ? c->extra : NULL,
						       &p->out) != 0;
			break;
		}
	} else {
		p->failed = true;
	}
	loop_call(c->srv->service, ctl_merge, p);
}

void muc_control(struct server *srv, const char *args, muc_control_done *done, void *arg)
{
	char verb[16] = "", room[2 * JID_PART_MAX + 2] = "";
	int used = 0;
	sscanf(args, " %15s %n", verb, &used);
	const char *rest = args + used;
	size_t rl = strcspn(rest, " ");
	if (rl < sizeof room)
		snprintf(room, sizeof room, "%.*s", (int)rl, rest);
	const char *extra = rest[rl] ? rest + rl + 1 : "";
	struct ctl *c = xcalloc(1, sizeof *c);
	c->srv = srv;
	c->done = done;
	c->arg = arg;
	buf_init(&c->out);
	static const char *const verbs[] = { "list", "info", "create", "destroy" };
	int op = -1;
	for (int i = 0; i < 4; i++)
		if (strcmp(verb, verbs[i]) == 0)
			op = i;
	const char *why = NULL;
	struct jid j;
	if (op < 0)
		why = "usage: room list | info ROOM | create ROOM [OWNER] | destroy ROOM [REASON]";
	else if (op != CTL_LIST &&
		 (room[0] == '\0' || jid_parse(&j, room, strlen(room)) != 0 || j.local[0] == '\0' ||
		  j.resource[0] != '\0' || (c->svc = find_service(srv, j.domain)) == NULL))
		why = "the room must be a bare JID of a chat service (ROOM@conference.DOMAIN)";
	if (why != NULL) {
		done(arg, false, why);
		buf_free(&c->out);
		free(c);
		return;
	}
	c->op = (enum ctl_op)op;
	if (op != CTL_LIST)
		jid_format_bare(&j, c->room, sizeof c->room);
	snprintf(c->extra, sizeof c->extra, "%s", extra);
	if (op == CTL_CREATE && c->extra[0]) {
		/* The owner is an account: a bare JID, normalised. */
		struct jid oj;
		if (jid_parse(&oj, extra, strlen(extra)) != 0 || oj.local[0] == '\0' ||
		    oj.resource[0] != '\0') {
			done(arg, false, "the owner must be a bare JID (user@domain)");
			buf_free(&c->out);
			free(c);
			return;
		}
		jid_format_bare(&oj, c->extra, sizeof c->extra);
	}
	if (op == CTL_LIST) {
		buf_printf(&c->out, "%-40s %5s  %-10s %-6s %s\n", "ROOM", "USERS", "KIND", "LISTED",
			   "NAME");
		c->pending = srv->n_loops;
		for (int i = 0; i < srv->n_loops; i++)
			loop_call(&srv->loops[i], ctl_on_loop, c);
	} else {
		c->pending = 1;
		loop_call(muc_owner_loop(srv, c->room), ctl_on_loop, c);
	}
}

/* --- rooms of directory groups --- */

struct dir_room {
	const struct muc_service *svc;
	char room[2 * JID_PART_MAX + 2];
	char *name;
	bool members_only;
	char **members, **owners; /* bare JIDs */
	size_t n_members, n_owners;
};

static char **bare_jids(char *const *locals, size_t n, const char *domain)
{
	char **v = xcalloc(n ? n : 1, sizeof *v);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(locals[i]) + strlen(domain) + 2;
		v[i] = xmalloc(len);
		snprintf(v[i], len, "%s@%s", locals[i], domain);
	}
	return v;
}

static void dir_room_free(struct dir_room *d)
{
	for (size_t i = 0; i < d->n_members; i++)
		free(d->members[i]);
	for (size_t i = 0; i < d->n_owners; i++)
		free(d->owners[i]);
	free(d->members);
	free(d->owners);
	free(d->name);
	free(d);
}

static void on_dir_room(struct loop *l, void *arg)
{
	struct dir_room *d = arg;
	if (!loop_stopping(l))
		room_directory_sync(l, d->svc, d->room, d->name, d->members_only, d->members,
				    d->n_members, d->owners, d->n_owners);
	dir_room_free(d);
}

/* The room's localpart for a group: room_name, or the group's name in
 * lower case with spaces as dashes; NULL when neither makes a localpart. */
static bool room_local(const struct config_group *cg, const char *group_name, char *out,
		       size_t cap)
{
	char raw[JID_PART_MAX + 1];
	snprintf(raw, sizeof raw, "%s", cg->room_name ? cg->room_name : group_name);
	if (cg->room_name == NULL)
		for (char *p = raw; *p; p++)
			*p = *p == ' ' ? '-' : (char)tolower((unsigned char)*p);
	return jid_prep_local(raw, strlen(raw), out, cap) >= 0;
}

void muc_directory_rooms(struct server *srv, const char *domain, const struct config_group *cfg,
			 const struct dir_snapshot *snap)
{
	const struct muc_service *svc = NULL;
	for (size_t i = 0; srv->muc && i < srv->muc->n_services; i++)
		if (strcmp(srv->muc->services[i].host->domain, domain) == 0)
			svc = &srv->muc->services[i];
	for (size_t i = 0; i < snap->n_groups; i++) {
		const struct config_group *cg = &cfg[i];
		const struct dir_group *g = &snap->groups[i];
		if (!cg->room)
			continue;
		char local[JID_PART_MAX + 1];
		if (svc == NULL || !room_local(cg, g->name, local, sizeof local)) {
			log_warn("muc: no room for directory group '%s': %s", g->name,
				 svc ? "its name is not a room name (set room_name)"
				     : "the host has no chat service");
			continue;
		}
		struct dir_room *d = xcalloc(1, sizeof *d);
		d->svc = svc;
		snprintf(d->room, sizeof d->room, "%s@%s", local, svc->domain);
		d->name = xstrdup(g->name);
		d->members_only = cg->room_members_only;
		d->members = bare_jids(g->members, g->n_members, domain);
		d->n_members = g->n_members;
		d->owners = bare_jids(g->owners, g->n_owners, domain);
		d->n_owners = g->n_owners;
		loop_call(muc_owner_loop(srv, d->room), on_dir_room, d);
	}
}

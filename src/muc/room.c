#include "muc/room.h"

#include <openssl/rand.h>
#include <limits.h>
#include <openssl/evp.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "modules/mam.h"
#include "modules/module.h"
#include "router/deliver.h"
#include "router/hooks.h"
#include "router/router.h"
#include "s2s/s2s.h"
#include "storage/pending.h"
#include "storage/storage.h"
#include "storage/storeq.h"
#include "xml/xml_parse.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define NS_DATA "jabber:x:data"

#define ROOM_BUCKETS 256

enum role { ROLE_NONE, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR };
enum affil { AFF_OUTCAST, AFF_NONE, AFF_MEMBER, AFF_ADMIN, AFF_OWNER };

static const char *const role_names[] = { "none", "visitor", "participant", "moderator", NULL };
static const char *const affil_names[] = { "outcast", "none", "member", "admin", "owner", NULL };

/* An affiliation other than none, kept whether or not its JID is in. */
struct affiliation {
	struct affiliation *next, *prev; /* in the order they were given */
	char *bare;
	enum affil affil;
	bool directory;    /* given by a directory group (room_directory_sync) */
};

/* One nick in the room: a person, with one or more of their sessions. */
struct occupant {
	struct occupant *next;
	char *nick;        /* enforced by the Nickname profile (RFC 8266) */
	char *key;         /* its comparison form: one nick, one key */
	char *bare;        /* the real bare JID */
	char **jids;       /* the real full JIDs of its sessions */
	int n_jids;
	char *extra;       /* the children of its last presence (show, status,
			    * caps), serialised, to repeat to joiners */
	enum role role;
	enum affil affil;
	double tokens;     /* groupchat messages it may send now */
	unsigned long long refilled; /* when tokens was last brought up to date */
	char id[44];       /* occupant-id (XEP-0421) */
};

/* A mediated invitation the room passed on (XEP-0045 §7.8.2): only its
 * invitee may decline it, and the decline goes to its inviter only, so
 * that nobody can make the room send declines to whom they like. */
struct invitation {
	struct invitation *next;
	char *invitee;     /* bare JID */
	char *inviter;     /* bare JID of the occupant who invited */
};

/* Pending invitations a room remembers; a new one past this forgets the
 * oldest (whose decline is then not passed on). */
#define MAX_INVITATIONS 128

struct past {
	struct refbuf *bytes; /* the message as broadcast, without 'to' */
	time_t stamp;
};

/* What the owner sets with the muc#roomconfig form (XEP-0045 §10.2). */
struct room_config {
	char *name, *desc;          /* NULL when unset */
	char *password;             /* NULL: none */
	bool persistent, hidden, members_only, moderated, non_anonymous;
	bool subject_locked;        /* only moderators change the subject */
	bool invites_locked;        /* only moderators invite */
	int max_users;              /* 0: the service's limit */
	int history;                /* messages shown to joiners; -1: the service's */
};

struct room {
	struct room *next;          /* the loop's hash chain */
	char *jid;                  /* bare room JID */
	char *creator;              /* bare JID counted in muc_creator_take, or NULL */
	const struct muc_service *svc;
	struct occupant *occ;
	int n_occ;
	char *subject;              /* NULL when never set */
	char *subject_nick;
	struct past *hist;          /* ring of svc's history size */
	int hist_len, hist_head;
	struct affiliation *affils; /* owners, admins, members, outcasts */
	struct affiliation *affils_tail;
	void *affil_index;          /* tsearch(3) tree of affils by bare JID: a
				     * lookup costs log n, whatever JIDs a
				     * client chose (a hash could be steered) */
	int n_affils;               /* at most muc.max_affiliations, except
				     * what the directory and the store give */
	struct invitation *invited; /* pending mediated invitations, oldest
				     * first, at most MAX_INVITATIONS */
	int n_invited;
	struct room_config cfg;
	const char *reason;         /* while a kick or ban is announced: its reason */
	const char *actor;          /* and the nick of the moderator or admin who
				     * did it, when in the room */
	unsigned char secret[16];   /* salts occupant-ids */
	unsigned long long next_sid;
};

struct room_loop {
	struct room *buckets[ROOM_BUCKETS];
	bool told_shutdown; /* room_loop_shutdown ran */
};

static size_t bucket_of(const char *jid)
{
	return str_hash(jid) % ROOM_BUCKETS;
}

static struct room *room_find(struct loop *l, const char *jid)
{
	struct room_loop *rl = l->muc;
	if (rl == NULL)
		return NULL;
	for (struct room *r = rl->buckets[bucket_of(jid)]; r; r = r->next)
		if (strcmp(r->jid, jid) == 0)
			return r;
	return NULL;
}

static struct room *room_create(struct loop *l, const struct muc_service *svc, const char *jid)
{
	if (l->muc == NULL)
		l->muc = xcalloc(1, sizeof(struct room_loop));
	struct room_loop *rl = l->muc;
	struct room *r = xcalloc(1, sizeof *r);
	r->jid = xstrdup(jid);
	r->svc = svc;
	r->cfg.history = -1;
	int cap = svc->host->muc.history;
	r->hist = cap > 0 ? xcalloc((size_t)cap, sizeof *r->hist) : NULL;
	if (RAND_bytes(r->secret, sizeof r->secret) != 1)
		fatal("RAND_bytes failed");
	size_t b = bucket_of(jid);
	r->next = rl->buckets[b];
	rl->buckets[b] = r;
	muc_public_set(l->srv, jid, true);
	log_info("muc: room %s created", jid);
	return r;
}

static void occupant_free(struct occupant *o)
{
	for (int i = 0; i < o->n_jids; i++)
		free(o->jids[i]);
	free(o->jids);
	free(o->nick);
	free(o->key);
	free(o->bare);
	free(o->extra);
	free(o);
}

static void invitation_free(struct invitation *v)
{
	free(v->invitee);
	free(v->inviter);
	free(v);
}

/* For tdestroy(3) of an index whose entries have another owner (a room's
 * list of affiliations, a request's arena). */
static void index_node_keep(void *node)
{
	(void)node;
}

static void room_free(struct room *r)
{
	while (r->occ) {
		struct occupant *o = r->occ;
		r->occ = o->next;
		occupant_free(o);
	}
	while (r->invited) {
		struct invitation *v = r->invited;
		r->invited = v->next;
		invitation_free(v);
	}
	tdestroy(r->affil_index, index_node_keep);
	while (r->affils) {
		struct affiliation *f = r->affils;
		r->affils = f->next;
		free(f->bare);
		free(f);
	}
	for (int i = 0; i < r->hist_len; i++)
		refbuf_release(r->hist[i].bytes);
	free(r->hist);
	free(r->subject);
	free(r->subject_nick);
	free(r->cfg.name);
	free(r->cfg.desc);
	free(r->cfg.password);
	free(r->creator);
	free(r->jid);
	free(r);
}

static void room_destroy(struct loop *l, struct room *r)
{
	struct room_loop *rl = l->muc;
	struct room **p = &rl->buckets[bucket_of(r->jid)];
	while (*p != r)
		p = &(*p)->next;
	*p = r->next;
	muc_public_set(l->srv, r->jid, false);
	if (r->creator)
		muc_creator_take(l->srv, r->creator, -1, 0);
	log_info("muc: room %s ended", r->jid);
	room_free(r);
}

void room_loop_free(struct loop *l)
{
	struct room_loop *rl = l->muc;
	if (rl == NULL)
		return;
	for (size_t i = 0; i < ROOM_BUCKETS; i++) {
		while (rl->buckets[i]) {
			struct room *r = rl->buckets[i];
			rl->buckets[i] = r->next;
			muc_public_set(l->srv, r->jid, false);
			room_free(r);
		}
	}
	free(rl);
	l->muc = NULL;
}

/* --- affiliations --- */

static int affil_cmp(const void *x, const void *y)
{
	return strcmp(((const struct affiliation *)x)->bare, ((const struct affiliation *)y)->bare);
}

static struct affiliation *affil_entry(const struct room *r, const char *bare)
{
	struct affiliation key = { .bare = (char *)bare };
	struct affiliation **f = tfind(&key, &r->affil_index, affil_cmp);
	return f ? *f : NULL;
}

static enum affil affil_of(const struct room *r, const char *bare)
{
	const struct affiliation *f = affil_entry(r, bare);
	return f ? f->affil : AFF_NONE;
}

/* Gives bare the affiliation a (none: takes it out). No limit here: the
 * callers that take a client's word check muc.max_affiliations first. */
static void affil_set(struct room *r, const char *bare, enum affil a)
{
	struct affiliation *f = affil_entry(r, bare);
	if (f && a == AFF_NONE) {
		tdelete(f, &r->affil_index, affil_cmp);
		*(f->prev ? &f->prev->next : &r->affils) = f->next;
		*(f->next ? &f->next->prev : &r->affils_tail) = f->prev;
		r->n_affils--;
		free(f->bare);
		free(f);
	} else if (f) {
		f->affil = a;
	} else if (a != AFF_NONE) {
		f = xcalloc(1, sizeof *f);
		f->bare = xstrdup(bare);
		f->affil = a;
		if (tsearch(f, &r->affil_index, affil_cmp) == NULL)
			fatal("out of memory");
		f->prev = r->affils_tail;
		*(f->prev ? &f->prev->next : &r->affils) = f;
		r->affils_tail = f;
		r->n_affils++;
	}
}

static int count_affil(const struct room *r, enum affil a)
{
	int n = 0;
	for (const struct affiliation *f = r->affils; f; f = f->next)
		n += f->affil == a;
	return n;
}

/* The role an affiliation brings in an unmoderated room. */
static enum role default_role(enum affil a)
{
	return a >= AFF_ADMIN ? ROLE_MODERATOR : ROLE_PARTICIPANT;
}

/* Who asks for an admin or owner change: the affiliation holds whether
 * or not they are in the room; the role only while they are. */
struct actor {
	enum affil affil;
	enum role role;
	const char *bare;            /* their bare JID */
	const struct occupant *me;   /* the asking session's place, or NULL */
	const char *nick;            /* a copy of me's nick (the request's
				      * arena): it outlives me, whom a ban
				      * of their own JID puts out */
};

/* The role an affiliation brings in this room. */
static enum role role_in(const struct room *r, enum affil a)
{
	enum role role = default_role(a);
	return r->cfg.moderated && a < AFF_MEMBER ? ROLE_VISITOR : role;
}

static int name_index(const char *const *names, const char *name)
{
	for (int i = 0; name && names[i]; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

/* --- history in the store --- */

#define STORE_MUC_HISTORY "muc_history"

/* The room's localpart, for its entries in the store. */
static void room_local_of(const struct room *r, char *out, size_t cap)
{
	const char *at = strchr(r->jid, '@');
	snprintf(out, cap, "%.*s", (int)(at - r->jid), r->jid);
}

/* Whether the room keeps its messages in the archive (XEP-0313): a
 * persistent room of a host with archives. Its history for joiners is
 * then the archive's newest messages. */
static bool room_archives(const struct room *r)
{
	return r->cfg.persistent && r->svc->host->mam.enabled;
}

/* A change to a room's history store, made on the storage thread
 * (storeq.h): the loop never waits for the store's write lock. */
struct history_job {
	char domain[JID_PART_MAX + 1];
	char local[JID_PART_MAX + 1];
	int keep;   /* entries the store keeps, the newest; 0: none */
	size_t len; /* of value; 0: nothing to add */
	char value[];
};

static void history_last_id(void *arg, long long id, long long stamp, const void *value,
			    size_t len)
{
	(void)stamp;
	(void)value;
	(void)len;
	*(long long *)arg = id;
}

/* Adds the value, then drops the oldest entries beyond keep: the store
 * holds what the ring does, also when the history got smaller since. */
static int history_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct history_job *j = arg;
	if (j->keep <= 0)
		return drv->list_trim(st, j->domain, j->local, STORE_MUC_HISTORY, LLONG_MAX);
	if (j->len > 0 &&
	    drv->list_push(st, j->domain, j->local, STORE_MUC_HISTORY, j->value, j->len, NULL) != 0)
		return -1;
	int n = drv->list_count(st, j->domain, j->local, STORE_MUC_HISTORY);
	if (n <= j->keep)
		return n < 0 ? -1 : 0;
	long long last = 0;
	if (drv->list_page(st, j->domain, j->local, STORE_MUC_HISTORY, 0, n - j->keep,
			   history_last_id, &last) < 0)
		return -1;
	return last > 0 ? drv->list_trim(st, j->domain, j->local, STORE_MUC_HISTORY, last) : 0;
}

static void history_done(struct loop *l, void *arg, int rc)
{
	(void)l;
	struct history_job *j = arg;
	if (rc < 0)
		log_warn("muc: room %s@%s: cannot store its history", j->local, j->domain);
	free(j);
}

static void history_store(struct loop *l, const struct room *r, int keep, const void *value,
			  size_t len)
{
	struct history_job *j = xmalloc(sizeof *j + len);
	snprintf(j->domain, sizeof j->domain, "%s", r->svc->domain);
	room_local_of(r, j->local, sizeof j->local);
	j->keep = keep;
	j->len = len;
	if (len > 0)
		memcpy(j->value, value, len);
	storeq_call_sized(l->srv->storeq, NULL, history_run, history_done, j, sizeof *j + len);
}

/* Keeps a message for joiners: in the ring, and for a persistent room in
 * the store too (l NULL: it comes from the store). An archiving room's
 * message goes to its archive (aid, its stanza-id), which keeps it after
 * it leaves the ring; otherwise the history store keeps the ring's
 * newest entries. */
static void history_add(struct loop *l, struct room *r, struct refbuf *bytes, time_t stamp,
			long long aid, const char *nick, const char *body)
{
	if (l != NULL && aid > 0 && room_archives(r)) {
		char local[JID_PART_MAX + 1];
		room_local_of(r, local, sizeof local);
		mam_archive_room(l, r->svc->domain, local, aid, nick, body, bytes->data,
				 bytes->len);
	}
	int cap = r->svc->host->muc.history;
	if (cap <= 0)
		return;
	if (l != NULL && r->cfg.persistent && !room_archives(r))
		history_store(l, r, cap, bytes->data, bytes->len);
	int slot = (r->hist_head + r->hist_len) % cap;
	if (r->hist_len == cap) {
		refbuf_release(r->hist[r->hist_head].bytes);
		slot = r->hist_head;
		r->hist_head = (r->hist_head + 1) % cap;
	} else {
		r->hist_len++;
	}
	r->hist[slot].bytes = refbuf_ref(bytes);
	r->hist[slot].stamp = stamp;
}

/* A room that stops being persistent, or ends, leaves no history behind:
 * neither its history store nor its archive. Queued after the room's
 * last messages, so none of them lands after it. */
static void history_forget(struct loop *l, struct room *r)
{
	char local[JID_PART_MAX + 1];
	room_local_of(r, local, sizeof local);
	history_store(l, r, 0, NULL, 0);
	mam_forget_archive(l, r->svc->domain, local);
}

/* --- configuration and persistence --- */

static const char *const whois_values[] = { "moderators", "anyone", NULL };

static void form_field(struct arena *a, struct xml_node *x, const char *var, const char *type,
		       const char *label, const char *value)
{
	struct xml_node *f = xml_add_child(a, x, NS_DATA, "field");
	xml_set_attr(a, f, "var", var);
	if (type)
		xml_set_attr(a, f, "type", type);
	if (label)
		xml_set_attr(a, f, "label", label);
	struct xml_node *v = xml_add_child(a, f, NS_DATA, "value");
	if (value)
		xml_add_text(a, v, value, strlen(value));
}

static void form_bool(struct arena *a, struct xml_node *x, const char *var, const char *label,
		      bool on)
{
	form_field(a, x, var, "boolean", label, on ? "1" : "0");
}

/* The muc#roomconfig form with the room's settings, into q. */
static void config_form(struct arena *a, struct xml_node *q, const struct room *r)
{
	const struct room_config *c = &r->cfg;
	struct xml_node *x = xml_add_child(a, q, NS_DATA, "x");
	xml_set_attr(a, x, "type", "form");
	struct xml_node *t = xml_add_child(a, x, NS_DATA, "title");
	xml_add_text(a, t, "Room configuration", 18);
	form_field(a, x, "FORM_TYPE", "hidden", NULL, "http://jabber.org/protocol/muc#roomconfig");
	form_field(a, x, "muc#roomconfig_roomname", "text-single", "Name", c->name);
	form_field(a, x, "muc#roomconfig_roomdesc", "text-single", "Description", c->desc);
	form_bool(a, x, "muc#roomconfig_persistentroom", "Keep the room when it is empty",
		  c->persistent);
	form_bool(a, x, "muc#roomconfig_publicroom", "List the room publicly", !c->hidden);
	form_bool(a, x, "muc#roomconfig_membersonly", "Members only", c->members_only);
	form_bool(a, x, "muc#roomconfig_moderatedroom", "Only participants with voice speak",
		  c->moderated);
	form_bool(a, x, "muc#roomconfig_passwordprotectedroom", "Password required",
		  c->password != NULL);
	form_field(a, x, "muc#roomconfig_roomsecret", "text-private", "Password", c->password);
	struct xml_node *who = xml_add_child(a, x, NS_DATA, "field");
	xml_set_attr(a, who, "var", "muc#roomconfig_whois");
	xml_set_attr(a, who, "type", "list-single");
	xml_set_attr(a, who, "label", "Who may see real JIDs");
	struct xml_node *v = xml_add_child(a, who, NS_DATA, "value");
	const char *w = whois_values[c->non_anonymous];
	xml_add_text(a, v, w, strlen(w));
	for (int i = 0; whois_values[i]; i++) {
		struct xml_node *o = xml_add_child(a, who, NS_DATA, "option");
		struct xml_node *ov = xml_add_child(a, o, NS_DATA, "value");
		xml_add_text(a, ov, whois_values[i], strlen(whois_values[i]));
	}
	char n[16];
	snprintf(n, sizeof n, "%d", c->max_users ? c->max_users : r->svc->host->muc.max_occupants);
	form_field(a, x, "muc#roomconfig_maxusers", "text-single", "Most occupants", n);
	snprintf(n, sizeof n, "%d", c->history >= 0 ? c->history : r->svc->host->muc.history);
	form_field(a, x, "muc#maxhistoryfetch", "text-single", "Messages shown to joiners", n);
	form_bool(a, x, "muc#roomconfig_changesubject", "Occupants may change the subject",
		  !c->subject_locked);
	form_bool(a, x, "muc#roomconfig_allowinvites", "Occupants may invite", !c->invites_locked);
}

/* The first value of field var in a submitted form, or NULL. */
static const char *form_value(struct arena *a, const struct xml_node *x, const char *var)
{
	for (const struct xml_node *f = x->children; f; f = f->next) {
		const char *v = xml_is(f, NS_DATA, "field") ? xml_attr(f, "var") : NULL;
		if (v != NULL && strcmp(v, var) == 0) {
			const struct xml_node *val = xml_child(f, NS_DATA, "value");
			return val ? xml_text(a, val) : "";
		}
	}
	return NULL;
}

static bool form_true(const char *v) { return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0); }

static void set_text(char **field, const char *v)
{
	free(*field);
	*field = v && v[0] ? xstrdup(v) : NULL;
}

/* The longest room name or description, in bytes. */
#define ROOM_TEXT_MAX 1024

/* Applies a submitted muc#roomconfig form, all of it or, when a value
 * does not fit, none of it: returns NULL, or the error condition
 * (not-acceptable) with the room as it was. */
static const char *config_apply(struct room *r, struct arena *a, const struct xml_node *x)
{
	/* Checked into a copy first; its texts are the room's own or the
	 * form's (in a), and only what differs is copied at the end. */
	struct room_config c = r->cfg;
	const struct config_muc *mc = &r->svc->host->muc;
	const char *v;
	long n = 0;
	if ((v = form_value(a, x, "muc#roomconfig_maxusers")) != NULL) {
		if (parse_count(v, &n) != 0 || n < 1 || n > mc->max_occupants)
			return "not-acceptable";
		c.max_users = (int)n;
	}
	if ((v = form_value(a, x, "muc#maxhistoryfetch")) != NULL) {
		if (parse_count(v, &n) != 0)
			return "not-acceptable";
		c.history = n > mc->history ? mc->history : (int)n;
	}
	if ((v = form_value(a, x, "muc#roomconfig_whois")) != NULL) {
		int w = name_index(whois_values, v);
		if (w < 0)
			return "not-acceptable";
		c.non_anonymous = w == 1;
	}
	/* Name and description go into every disco#info answer about the
	 * room: bounded. */
	if ((v = form_value(a, x, "muc#roomconfig_roomname")) != NULL) {
		if (strlen(v) > ROOM_TEXT_MAX)
			return "not-acceptable";
		c.name = v[0] ? (char *)v : NULL;
	}
	if ((v = form_value(a, x, "muc#roomconfig_roomdesc")) != NULL) {
		if (strlen(v) > ROOM_TEXT_MAX)
			return "not-acceptable";
		c.desc = v[0] ? (char *)v : NULL;
	}
	if ((v = form_value(a, x, "muc#roomconfig_persistentroom")) != NULL)
		c.persistent = form_true(v);
	if ((v = form_value(a, x, "muc#roomconfig_publicroom")) != NULL)
		c.hidden = !form_true(v);
	if ((v = form_value(a, x, "muc#roomconfig_membersonly")) != NULL)
		c.members_only = form_true(v);
	if ((v = form_value(a, x, "muc#roomconfig_moderatedroom")) != NULL)
		c.moderated = form_true(v);
	if ((v = form_value(a, x, "muc#roomconfig_changesubject")) != NULL)
		c.subject_locked = !form_true(v);
	if ((v = form_value(a, x, "muc#roomconfig_allowinvites")) != NULL)
		c.invites_locked = !form_true(v);
	const char *secret = form_value(a, x, "muc#roomconfig_roomsecret");
	const char *protect = form_value(a, x, "muc#roomconfig_passwordprotectedroom");
	if (protect != NULL && !form_true(protect))
		c.password = NULL;
	else if (secret != NULL && secret[0])
		c.password = (char *)secret;
	else if (protect != NULL && c.password == NULL)
		return "not-acceptable"; /* protected, but with no password */
	/* Everything fits: now the room changes. */
	struct room_config *rc = &r->cfg;
	char **texts[][2] = { { &rc->name, &c.name }, { &rc->desc, &c.desc },
			      { &rc->password, &c.password } };
	for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
		if (*texts[i][0] != *texts[i][1])
			set_text(texts[i][0], *texts[i][1]);
		*texts[i][1] = *texts[i][0];
	}
	*rc = c;
	return NULL;
}

#define STORE_MUC "muc"

/* The room's settings and affiliations as stored, into b (initialised). */
static void room_serialize(const struct room *r, struct buf *b)
{
	const struct room_config *c = &r->cfg;
	buf_init(b);
	buf_printf(b, "<room persistent='%d' hidden='%d' members_only='%d' moderated='%d' "
		      "non_anonymous='%d' subject_locked='%d' invites_locked='%d' "
		      "max_users='%d' history='%d'",
		   c->persistent, c->hidden, c->members_only, c->moderated, c->non_anonymous,
		   c->subject_locked, c->invites_locked, c->max_users, c->history);
	/* Kept so that occupant-ids stay the same across restarts (XEP-0421). */
	buf_puts(b, " secret='");
	for (size_t i = 0; i < sizeof r->secret; i++)
		buf_printf(b, "%02x", r->secret[i]);
	buf_puts(b, "'");
	const char *texts[][2] = { { "name", c->name }, { "desc", c->desc },
				   { "password", c->password },
				   { "subject", r->subject }, { "subject_nick", r->subject_nick } };
	for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
		if (texts[i][1] == NULL)
			continue;
		buf_printf(b, " %s='", texts[i][0]);
		buf_append_escaped(b, texts[i][1], strlen(texts[i][1]));
		buf_puts(b, "'");
	}
	buf_puts(b, ">");
	for (const struct affiliation *f = r->affils; f; f = f->next) {
		buf_printf(b, "<affiliation a='%s' dir='%d' jid='", affil_names[f->affil],
			   f->directory);
		buf_append_escaped(b, f->bare, strlen(f->bare));
		buf_puts(b, "'/>");
	}
	buf_puts(b, "</room>");
}

/* Writes a persistent room's settings to the store, or takes a room that
 * is no longer persistent out of it. */
static void room_save(struct loop *l, struct room *r)
{
	const char *at = strchr(r->jid, '@');
	char local[JID_PART_MAX + 1];
	snprintf(local, sizeof local, "%.*s", (int)(at - r->jid), r->jid);
	const struct storage_driver *drv = l->srv->storage;
	if (!r->cfg.persistent) {
		drv->map_del(l->store, r->svc->domain, "", STORE_MUC, local);
		history_forget(l, r);
		return;
	}
	struct buf b;
	room_serialize(r, &b);
	if (drv->map_put(l->store, r->svc->domain, "", STORE_MUC, local, b.data, b.len) != 0)
		log_warn("muc: room %s: cannot store its settings", r->jid);
	buf_free(&b);
}

static bool attr_flag(const struct xml_node *n, const char *name)
{
	const char *v = xml_attr(n, name);
	return v && strcmp(v, "1") == 0;
}

static const char *attr_text(const struct xml_node *n, const char *name)
{
	const char *v = xml_attr(n, name);
	return v && v[0] ? v : NULL;
}

struct history_load {
	struct room *r;
};

static void history_entry(void *arg, long long id, long long stamp, const void *value, size_t len)
{
	(void)id;
	struct history_load *hl = arg;
	struct refbuf *rb = refbuf_new(value, len);
	/* Entries past the ring's size (a smaller history since) drop out of
	 * the ring here and out of the store at the next message. */
	history_add(NULL, hl->r, rb, (time_t)stamp, 0, NULL, NULL);
	refbuf_release(rb);
}

static void archived_entry(void *arg, long long id, const void *value, size_t len, int outgoing,
			   const char *with)
{
	(void)outgoing;
	(void)with;
	struct history_load *hl = arg;
	/* Back to the stream's default namespace (mam_archive_room added it). */
	static const char ns[] = "<message xmlns='" NS_CLIENT "'";
	struct buf b;
	buf_init(&b);
	if (len > sizeof ns && memcmp(value, ns, sizeof ns - 1) == 0) {
		buf_puts(&b, "<message");
		buf_append(&b, (const char *)value + sizeof ns - 1, len - (sizeof ns - 1));
	} else {
		buf_append(&b, value, len);
	}
	struct refbuf *rb = refbuf_new(b.data, b.len);
	buf_free(&b);
	history_add(NULL, hl->r, rb, (time_t)(id / 1000000), 0, NULL, NULL);
	refbuf_release(rb);
}

struct load_ctx {
	struct loop *l;
	const struct muc_service *svc;
	int n;
};

static void load_one(void *arg, const char *key, const void *value, size_t len)
{
	struct load_ctx *lc = arg;
	char jid[2 * JID_PART_MAX + 2];
	snprintf(jid, sizeof jid, "%s@%s", key, lc->svc->domain);
	if (muc_owner_loop(lc->l->srv, jid) != lc->l)
		return;
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_parse_element(&a, value, len);
	if (n == NULL || strcmp(n->name, "room") != 0) {
		log_warn("muc: room %s: stored settings do not parse; skipped", jid);
		arena_reset(&a);
		return;
	}
	struct room *r = room_create(lc->l, lc->svc, jid);
	struct room_config *c = &r->cfg;
	c->persistent = true;
	c->hidden = attr_flag(n, "hidden");
	c->members_only = attr_flag(n, "members_only");
	c->moderated = attr_flag(n, "moderated");
	c->non_anonymous = attr_flag(n, "non_anonymous");
	c->subject_locked = attr_flag(n, "subject_locked");
	c->invites_locked = attr_flag(n, "invites_locked");
	const char *v = xml_attr(n, "secret");
	for (size_t i = 0; v && strlen(v) == 2 * sizeof r->secret && i < sizeof r->secret; i++) {
		unsigned byte;
		if (sscanf(v + 2 * i, "%2x", &byte) == 1)
			r->secret[i] = (unsigned char)byte;
	}
	v = xml_attr(n, "max_users");
	c->max_users = v ? atoi(v) : 0;
	v = xml_attr(n, "history");
	c->history = v ? atoi(v) : -1;
	set_text(&c->name, attr_text(n, "name"));
	set_text(&c->desc, attr_text(n, "desc"));
	set_text(&c->password, attr_text(n, "password"));
	set_text(&r->subject, attr_text(n, "subject"));
	set_text(&r->subject_nick, attr_text(n, "subject_nick"));
	for (const struct xml_node *f = n->children; f; f = f->next) {
		int aff = f->name && strcmp(f->name, "affiliation") == 0
				  ? name_index(affil_names, xml_attr(f, "a"))
				  : -1;
		const char *bare = f->name ? xml_attr(f, "jid") : NULL;
		if (aff >= 0 && bare) {
			affil_set(r, bare, (enum affil)aff);
			struct affiliation *af = affil_entry(r, bare);
			if (af != NULL)
				af->directory = attr_flag(f, "dir");
		}
	}
	if (c->hidden)
		muc_public_set(lc->l->srv, jid, false);
	struct history_load hl = { r };
	lc->l->srv->storage->list_fetch(lc->l->store, lc->svc->domain, key, STORE_MUC_HISTORY,
					history_entry, &hl);
	if (room_archives(r) && r->svc->host->muc.history > 0) {
		/* At start, before any client: the one read on the loop. */
		struct archive_query q = { .from_end = true, .max = r->svc->host->muc.history,
					   .max_bytes = SIZE_MAX };
		bool complete;
		lc->l->srv->storage->archive_query(lc->l->store, lc->svc->domain, key, &q,
						   archived_entry, &hl, &complete, NULL);
	}
	lc->n++;
	arena_reset(&a);
}

void room_load_all(struct loop *l)
{
	for (size_t i = 0; i < muc_service_count(l->srv); i++) {
		struct load_ctx lc = { l, muc_service_at(l->srv, i), 0 };
		l->srv->storage->map_list(l->store, lc.svc->domain, "", STORE_MUC, load_one, &lc);
		if (lc.n > 0)
			log_info("muc: %d persistent room(s) of %s on loop %d", lc.n, lc.svc->domain,
				 l->index);
	}
}

/* --- occupants --- */

/* The occupant whose nick is nick, as the Nickname profile compares
 * (RFC 8266 §2.4: "Alice" and "ALICE" are one nick). */
static struct occupant *by_nick(const struct room *r, const char *nick)
{
	char key[JID_PART_MAX + 1];
	if (jid_nickname_key(nick, strlen(nick), key, sizeof key) < 0)
		return NULL;
	for (struct occupant *o = r->occ; o; o = o->next)
		if (strcmp(o->key, key) == 0)
			return o;
	return NULL;
}

/* Sets o's nick (already enforced) and its key. */
static void set_nick(struct occupant *o, const char *nick)
{
	char key[JID_PART_MAX + 1];
	if (jid_nickname_key(nick, strlen(nick), key, sizeof key) < 0)
		snprintf(key, sizeof key, "%s", nick); /* cannot happen: enforced */
	free(o->nick);
	free(o->key);
	o->nick = xstrdup(nick);
	o->key = xstrdup(key);
}

/* The occupant one of whose sessions is full; *idx its index. */
static struct occupant *by_jid(struct room *r, const char *full, int *idx)
{
	for (struct occupant *o = r->occ; o; o = o->next)
		for (int i = 0; i < o->n_jids; i++)
			if (strcmp(o->jids[i], full) == 0) {
				if (idx)
					*idx = i;
				return o;
			}
	return NULL;
}

static void occupant_id(const struct room *r, const char *bare, char *out, size_t cap)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	struct buf in;
	buf_init(&in);
	buf_append(&in, r->secret, sizeof r->secret);
	buf_puts(&in, bare);
	if (EVP_Digest(in.data, in.len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len < 16)
		fatal("SHA-256 failed");
	buf_free(&in);
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	for (size_t i = 0; i < 16 && n + 2 < cap; i++) {
		out[n++] = hex[md[i] >> 4];
		out[n++] = hex[md[i] & 15];
	}
	out[n] = '\0';
}

static void add_session(struct occupant *o, const char *full)
{
	o->jids = xrealloc(o->jids, (size_t)(o->n_jids + 1) * sizeof *o->jids);
	o->jids[o->n_jids++] = xstrdup(full);
}

/* The children of a presence worth repeating (not the MUC join element). */
static char *presence_extra(const struct xml_node *st)
{
	struct buf b;
	buf_init(&b);
	for (const struct xml_node *c = st->children; c; c = c->next) {
		if (c->name == NULL || xml_is(c, NS_MUC, "x") || xml_is(c, NS_MUC_USER, "x"))
			continue;
		xml_serialize(c, NS_CLIENT, &b);
	}
	buf_append(&b, "", 1);
	return b.data; /* the caller frees it */
}

/* --- writing to occupants --- */

static struct refbuf *with_to(const char *bytes, size_t len, const char *to);

/* bytes (a stanza without 'to') with to='full', to that session. */
static void send_to(struct loop *l, const struct room *r, const char *full, const char *bytes,
		    size_t len)
{
	struct jid j;
	if (jid_parse(&j, full, strlen(full)) != 0)
		return;
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(&j, bare, sizeof bare);
	if (config_find_host(l->srv->cfg, j.domain) == NULL) {
		/* An occupant from another server: over federation, from the
		 * room's service domain. */
		struct refbuf *rb = with_to(bytes, len, full);
		s2s_send_bytes(l, r->svc->domain, j.domain, rb);
		refbuf_release(rb);
		return;
	}
	struct router_target t;
	if (router_find_full(l->srv->router, bare, j.resource, &t) != 0)
		return; /* gone: its unavailable presence is on its way */
	struct refbuf *rb = with_to(bytes, len, full);
	deliver_to_session(l, &t, rb);
	refbuf_release(rb);
}

/* bytes (a stanza without 'to') with to='to' inserted after its name. */
static struct refbuf *with_to(const char *bytes, size_t len, const char *to)
{
	size_t name_end = 1;
	while (name_end < len && bytes[name_end] != ' ' && bytes[name_end] != '>' &&
	       bytes[name_end] != '/')
		name_end++;
	struct buf b;
	buf_init(&b);
	buf_append(&b, bytes, name_end);
	buf_puts(&b, " to='");
	buf_append_escaped(&b, to, strlen(to));
	buf_puts(&b, "'");
	buf_append(&b, bytes + name_end, len - name_end);
	struct refbuf *rb = refbuf_new(b.data, b.len);
	buf_free(&b);
	return rb;
}

static void send_to_occupant(struct loop *l, const struct room *r, const struct occupant *o,
			     const struct buf *b)
{
	for (int i = 0; i < o->n_jids; i++)
		send_to(l, r, o->jids[i], b->data, b->len);
}

/* Presence of o from its room JID into b (initialised here). type is NULL
 * or "unavailable"; with_jid shows the real JID (to moderators and to o);
 * codes are status codes; new_nick for a nick change (303). */
static void presence_of(struct buf *b, const struct room *r, const struct occupant *o,
			const char *type, bool with_jid, const int *codes, int n_codes,
			const char *new_nick)
{
	buf_init(b);
	buf_puts(b, "<presence from='");
	buf_append_escaped(b, r->jid, strlen(r->jid));
	buf_puts(b, "/");
	buf_append_escaped(b, o->nick, strlen(o->nick));
	buf_puts(b, "'");
	if (type)
		buf_printf(b, " type='%s'", type);
	buf_puts(b, ">");
	if (type == NULL && o->extra)
		buf_puts(b, o->extra);
	buf_printf(b, "<x xmlns='" NS_MUC_USER "'><item affiliation='%s' role='%s'",
		   affil_names[o->affil], type ? "none" : role_names[o->role]);
	if (with_jid && o->n_jids > 0) {
		buf_puts(b, " jid='");
		buf_append_escaped(b, o->jids[0], strlen(o->jids[0]));
		buf_puts(b, "'");
	}
	if (new_nick) {
		buf_puts(b, " nick='");
		buf_append_escaped(b, new_nick, strlen(new_nick));
		buf_puts(b, "'");
	}
	if (type != NULL && (r->reason != NULL || r->actor != NULL)) {
		buf_puts(b, ">");
		if (r->actor != NULL) {
			buf_puts(b, "<actor nick='");
			buf_append_escaped(b, r->actor, strlen(r->actor));
			buf_puts(b, "'/>");
		}
		if (r->reason != NULL) {
			buf_puts(b, "<reason>");
			buf_append_escaped(b, r->reason, strlen(r->reason));
			buf_puts(b, "</reason>");
		}
		buf_puts(b, "</item>");
	} else {
		buf_puts(b, "/>");
	}
	for (int i = 0; i < n_codes; i++)
		buf_printf(b, "<status code='%d'/>", codes[i]);
	buf_printf(b, "</x><occupant-id xmlns='" NS_OCCUPANT_ID "' id='%s'/></presence>", o->id);
}

/* o's presence to everybody in the room: one serialisation for those who
 * see real JIDs, one for those who do not, one for o itself (status 110
 * and self_codes). */
static void broadcast_presence(struct loop *l, struct room *r, const struct occupant *o,
			       const char *type, const int *codes, int n_codes,
			       const int *self_codes, int n_self, const char *new_nick)
{
	struct buf plain, with_jid, self;
	bool have_plain = false, have_jid = false;
	int all[8];
	int n = 0;
	for (int i = 0; i < n_codes && n < 7; i++)
		all[n++] = codes[i];
	all[n++] = 110;
	for (int i = 0; i < n_self && n < 8; i++)
		all[n++] = self_codes[i];
	presence_of(&self, r, o, type, true, all, n, new_nick);
	for (struct occupant *p = r->occ; p; p = p->next) {
		if (p == o)
			continue;
		if (p->role == ROLE_MODERATOR || r->cfg.non_anonymous) {
			if (!have_jid)
				presence_of(&with_jid, r, o, type, true, codes, n_codes, new_nick);
			have_jid = true;
			send_to_occupant(l, r, p, &with_jid);
		} else {
			if (!have_plain)
				presence_of(&plain, r, o, type, false, codes, n_codes, new_nick);
			have_plain = true;
			send_to_occupant(l, r, p, &plain);
		}
	}
	send_to_occupant(l, r, o, &self);
	buf_free(&self);
	if (have_jid)
		buf_free(&with_jid);
	if (have_plain)
		buf_free(&plain);
}

/* --- history and subject --- */

/* What the joiner asked for in <history/> (XEP-0045 §7.2.15). */
struct history_want {
	long maxstanzas, maxchars; /* -1: no bound */
	time_t not_before;
};

/* An attribute of <history/> that is not a non-negative integer (for
 * since: not an XEP-0082 DateTime) counts as absent, all four alike: the
 * joiner gets what it would have got without it, which the room's own
 * history size bounds anyway. A seconds longer than the epoch asks for
 * everything, and cannot overflow. */
static void history_want(const struct xml_node *join, struct history_want *w)
{
	w->maxstanzas = -1;
	w->maxchars = -1;
	w->not_before = 0;
	const struct xml_node *h = join ? xml_child(join, NS_MUC, "history") : NULL;
	if (h == NULL)
		return;
	long n;
	if (parse_count(xml_attr(h, "maxstanzas"), &n) == 0)
		w->maxstanzas = n;
	if (parse_count(xml_attr(h, "maxchars"), &n) == 0)
		w->maxchars = n;
	if (parse_count(xml_attr(h, "seconds"), &n) == 0) {
		time_t now = time(NULL);
		w->not_before = n >= now ? 0 : now - n;
	}
	const char *v = xml_attr(h, "since");
	long long usec;
	if (v != NULL && datetime_parse(v, &usec) == 0 && usec / 1000000 > w->not_before)
		w->not_before = (time_t)(usec / 1000000);
}

/* The past message with a delay stamp into b (initialised here). */
static void delayed(struct buf *b, const struct room *r, const struct past *p)
{
	static const char end[] = "</message>";
	const char *v = p->bytes->data;
	size_t len = p->bytes->len;
	buf_init(b);
	if (len < sizeof end - 1)
		return;
	char when[32];
	struct tm tm;
	gmtime_r(&p->stamp, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	buf_append(b, v, len - (sizeof end - 1));
	buf_puts(b, "<delay xmlns='urn:xmpp:delay' from='");
	buf_append_escaped(b, r->jid, strlen(r->jid));
	buf_printf(b, "' stamp='%s'/>", when);
	buf_puts(b, end);
}

static void send_history(struct loop *l, struct room *r, const char *full,
			 const struct history_want *w)
{
	int cap = r->svc->host->muc.history;
	int first = r->hist_len;
	int limit = r->cfg.history >= 0 ? r->cfg.history : cap;
	long chars = 0;
	/* From the newest back, as far as every limit allows. */
	while (first > 0) {
		const struct past *p = &r->hist[(r->hist_head + first - 1) % cap];
		if ((w->maxstanzas >= 0 && r->hist_len - first >= w->maxstanzas) ||
		    r->hist_len - first >= limit)
			break;
		if (p->stamp < w->not_before)
			break;
		struct buf b;
		delayed(&b, r, p);
		chars += (long)b.len;
		buf_free(&b);
		if (w->maxchars >= 0 && chars > w->maxchars)
			break;
		first--;
	}
	for (int i = first; i < r->hist_len; i++) {
		struct buf b;
		delayed(&b, r, &r->hist[(r->hist_head + i) % cap]);
		send_to(l, r, full, b.data, b.len);
		buf_free(&b);
	}
}

static void send_subject(struct loop *l, struct room *r, const char *full)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<message type='groupchat' from='");
	buf_append_escaped(&b, r->jid, strlen(r->jid));
	if (r->subject_nick) {
		buf_puts(&b, "/");
		buf_append_escaped(&b, r->subject_nick, strlen(r->subject_nick));
	}
	buf_printf(&b, "' id='subject-%llu'>", r->next_sid);
	if (r->subject && r->subject[0]) {
		buf_puts(&b, "<subject>");
		buf_append_escaped(&b, r->subject, strlen(r->subject));
		buf_puts(&b, "</subject>");
	} else {
		buf_puts(&b, "<subject/>");
	}
	buf_puts(&b, "</message>");
	send_to(l, r, full, b.data, b.len);
	buf_free(&b);
}

/* --- presence --- */

static void join(struct loop *l, const struct muc_service *svc, struct room *r,
		 const char *room_jid, struct xml_node *st, struct arena *a, const char *full,
		 const char *bare, const char *nick, bool nick_changed)
{
	bool created = false;
	struct occupant *o = r ? by_nick(r, nick) : NULL;
	if (o != NULL && strcmp(o->bare, bare) != 0) {
		deliver_error(l, st, a, "cancel", "conflict");
		return;
	}
	if (o == NULL && r != NULL) {
		enum affil af = affil_of(r, bare);
		const struct xml_node *x = xml_child(st, NS_MUC, "x");
		const struct xml_node *pw = x ? xml_child(x, NS_MUC, "password") : NULL;
		int max = r->cfg.max_users ? r->cfg.max_users : svc->host->muc.max_occupants;
		if (af == AFF_OUTCAST) {
			deliver_error(l, st, a, "auth", "forbidden");
			return;
		}
		if (r->cfg.members_only && af < AFF_MEMBER) {
			deliver_error(l, st, a, "auth", "registration-required");
			return;
		}
		if (r->cfg.password != NULL &&
		    (pw == NULL || strcmp(xml_text(a, pw), r->cfg.password) != 0)) {
			deliver_error(l, st, a, "auth", "not-authorized");
			return;
		}
		if (r->n_occ >= max && af < AFF_ADMIN) {
			deliver_error(l, st, a, "wait", "service-unavailable");
			return;
		}
	}
	if (r == NULL) {
		if (!muc_creator_take(l->srv, bare, 1, svc->host->muc.max_rooms_per_account)) {
			deliver_error(l, st, a, "cancel", "not-allowed");
			return;
		}
		r = room_create(l, svc, room_jid);
		r->creator = xstrdup(bare);
		affil_set(r, bare, AFF_OWNER);
		created = true;
	}
	bool first_session = o == NULL;
	if (o == NULL) {
		o = xcalloc(1, sizeof *o);
		set_nick(o, nick);
		o->bare = xstrdup(bare);
		o->affil = affil_of(r, bare);
		o->role = role_in(r, o->affil);
		occupant_id(r, bare, o->id, sizeof o->id);
		o->tokens = svc->host->muc.message_burst;
		o->refilled = now_ms();
		struct occupant **tail = &r->occ;
		while (*tail)
			tail = &(*tail)->next;
		*tail = o;
		r->n_occ++;
	}
	add_session(o, full);
	free(o->extra);
	o->extra = presence_extra(st);
	/* 1. who is there */
	for (struct occupant *p = r->occ; p; p = p->next) {
		if (p == o)
			continue;
		struct buf b;
		presence_of(&b, r, p, NULL, o->role == ROLE_MODERATOR || r->cfg.non_anonymous, NULL,
			    0, NULL);
		send_to(l, r, full, b.data, b.len);
		buf_free(&b);
	}
	/* 2. the newcomer, to everybody (itself last, with 110) */
	int self_codes[3], n_self = 0;
	if (r->cfg.non_anonymous)
		self_codes[n_self++] = 100;
	if (created)
		self_codes[n_self++] = 201;
	if (nick_changed)
		self_codes[n_self++] = 210; /* the service changed the nick (RFC 8266) */
	if (first_session) {
		broadcast_presence(l, r, o, NULL, NULL, 0, self_codes, n_self, NULL);
	} else {
		int codes[] = { 110 };
		struct buf b;
		presence_of(&b, r, o, NULL, true, codes, 1, NULL);
		send_to(l, r, full, b.data, b.len);
		buf_free(&b);
	}
	/* 3. the discussion so far, 4. the subject */
	struct history_want w;
	history_want(xml_child(st, NS_MUC, "x"), &w);
	send_history(l, r, full, &w);
	send_subject(l, r, full);
	log_debug("muc: %s joined %s as %s", full, r->jid, nick);
}

static void remove_occupant(struct loop *l, struct room *r, struct occupant *o, int code,
			    const char *reason, const char *actor);

static void leave(struct loop *l, struct room *r, struct occupant *o, int idx)
{
	const char *full = o->jids[idx];
	if (o->n_jids > 1) {
		/* Another session keeps the nick: only this one is told. */
		int codes[] = { 110 };
		struct buf b;
		presence_of(&b, r, o, "unavailable", true, codes, 1, NULL);
		send_to(l, r, full, b.data, b.len);
		buf_free(&b);
		free(o->jids[idx]);
		o->jids[idx] = o->jids[--o->n_jids];
		return;
	}
	remove_occupant(l, r, o, 0, NULL, NULL);
}

/* Puts o out of the room with all its sessions; code (kick 307, ban 301,
 * membership 321, or 0 for a plain leave) tells everybody, o included,
 * why, with the reason and the nick of the actor who did it (XEP-0045
 * §8.2, §9.1) when given. o is freed; r stays, even when it is a
 * temporary room that empties: room_handle ends it once the stanza is
 * handled, so that no caller has its room freed under it. */
static void remove_occupant(struct loop *l, struct room *r, struct occupant *o, int code,
			    const char *reason, const char *actor)
{
	int codes[] = { code };
	r->reason = reason;
	r->actor = actor;
	broadcast_presence(l, r, o, "unavailable", codes, code ? 1 : 0, NULL, 0, NULL);
	r->reason = NULL;
	r->actor = NULL;
	struct occupant **p = &r->occ;
	while (*p != o)
		p = &(*p)->next;
	*p = o->next;
	r->n_occ--;
	occupant_free(o);
}

static void change_nick(struct loop *l, struct room *r, struct occupant *o, struct xml_node *st,
			struct arena *a, const char *nick)
{
	struct occupant *other = by_nick(r, nick);
	if (other != NULL && other != o) {
		deliver_error(l, st, a, "cancel", "conflict");
		return;
	}
	static const int changed[] = { 303 };
	broadcast_presence(l, r, o, "unavailable", changed, 1, NULL, 0, nick);
	set_nick(o, nick);
	free(o->extra);
	o->extra = presence_extra(st);
	broadcast_presence(l, r, o, NULL, NULL, 0, NULL, 0, NULL);
}

static void room_presence(struct loop *l, const struct muc_service *svc, struct room *r,
			  const char *room_jid, struct xml_node *st, struct arena *a,
			  const char *full, const char *bare, const struct jid *to)
{
	const char *type = xml_attr(st, "type");
	int idx = 0;
	struct occupant *o = r ? by_jid(r, full, &idx) : NULL;
	if (type != NULL && strcmp(type, "unavailable") == 0) {
		if (o != NULL)
			leave(l, r, o, idx);
		return;
	}
	if (type != NULL)
		return; /* errors, probes, subscriptions: nothing for a room */
	char nick[JID_PART_MAX + 1];
	if (to->resource[0] == '\0' ||
	    jid_prep_nickname(to->resource, strlen(to->resource), nick, sizeof nick) < 0) {
		deliver_error(l, st, a, "modify", "jid-malformed");
		return;
	}
	if (o == NULL) {
		join(l, svc, r, room_jid, st, a, full, bare, nick,
		     strcmp(nick, to->resource) != 0);
	} else if (strcmp(o->nick, nick) != 0) {
		change_nick(l, r, o, st, a, nick);
	} else {
		free(o->extra);
		o->extra = presence_extra(st);
		broadcast_presence(l, r, o, NULL, NULL, 0, NULL, 0, NULL);
	}
}

/* --- messages --- */

/* Takes out what only the room may say: its stanza-id (XEP-0359) and any
 * occupant-id (XEP-0421) the sender made up. */
static void drop_our_stanza_ids(struct room *r, struct xml_node *st)
{
	struct xml_node **pp = &st->children;
	st->last = NULL;
	while (*pp) {
		struct xml_node *c = *pp;
		const char *by = xml_is(c, NS_SID, "stanza-id") ? xml_attr(c, "by") : NULL;
		if ((by != NULL && strcmp(by, r->jid) == 0) || xml_is(c, NS_OCCUPANT_ID, NULL)) {
			*pp = c->next;
			continue;
		}
		st->last = c;
		pp = &c->next;
	}
}

static void groupchat(struct loop *l, struct room *r, struct occupant *o, struct xml_node *st,
		      struct arena *a)
{
	if (o->role < ROLE_PARTICIPANT) {
		deliver_error(l, st, a, "auth", "forbidden");
		return;
	}
	const struct config_muc *mc = &r->svc->host->muc;
	unsigned long long now = now_ms();
	o->tokens += (double)(now - o->refilled) * mc->message_rate / 1000.0;
	if (o->tokens > mc->message_burst)
		o->tokens = mc->message_burst;
	o->refilled = now;
	if (o->tokens < 1.0) {
		deliver_error(l, st, a, "wait", "resource-constraint");
		return;
	}
	o->tokens -= 1.0;
	struct xml_node *subject = xml_child(st, NS_CLIENT, "subject");
	bool has_body = xml_child(st, NS_CLIENT, "body") != NULL;
	if (subject != NULL && !has_body && r->cfg.subject_locked && o->role != ROLE_MODERATOR) {
		deliver_error(l, st, a, "auth", "forbidden");
		return;
	}
	if (subject != NULL && !has_body) {
		free(r->subject);
		free(r->subject_nick);
		r->subject = xstrdup(xml_text(a, subject));
		r->subject_nick = xstrdup(o->nick);
		if (r->cfg.persistent)
			room_save(l, r);
	}
	struct jid real, room;
	const char *sender = xml_attr(st, "from");
	bool hook = sender != NULL && jid_parse(&real, sender, strlen(sender)) == 0 &&
		    jid_parse(&room, r->jid, strlen(r->jid)) == 0;
	char from[3 * JID_PART_MAX + 3];
	snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
	xml_set_attr(a, st, "from", from);
	xml_set_attr(a, st, "to", NULL);
	drop_our_stanza_ids(r, st);
	char sid[40];
	long long aid = 0;
	if (room_archives(r) && has_body) {
		aid = mam_new_id(l->srv);
		snprintf(sid, sizeof sid, "%lld", aid);
	} else {
		snprintf(sid, sizeof sid, "%llu-", ++r->next_sid);
		random_hex(sid + strlen(sid), 8);
	}
	struct xml_node *s = xml_add_child(a, st, NS_SID, "stanza-id");
	xml_set_attr(a, s, "id", sid);
	xml_set_attr(a, s, "by", r->jid);
	struct xml_node *oid = xml_add_child(a, st, NS_OCCUPANT_ID, "occupant-id");
	xml_set_attr(a, oid, "id", o->id);
	if (hook) {
		struct hook_ctx hc = { .loop = l, .st = st, .a = a, .from = &real, .to = &room };
		/* DONE: a handler refused it (and told the sender). */
		if (hooks_run(HOOK_ROOM_MESSAGE, &hc) == DONE)
			return;
	}
	/* Serialised once, for every occupant alike. */
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	for (struct occupant *p = r->occ; p; p = p->next)
		send_to_occupant(l, r, p, &b);
	if (has_body) {
		struct refbuf *rb = refbuf_new(b.data, b.len);
		struct xml_node *body = xml_child(st, NS_CLIENT, "body");
		history_add(l, r, rb, time(NULL), aid, o->nick, xml_text(a, body));
		refbuf_release(rb);
	}
	buf_free(&b);
}

static void private_message(struct loop *l, struct room *r, struct occupant *o,
			    struct xml_node *st, struct arena *a, const char *nick)
{
	struct occupant *to = by_nick(r, nick);
	if (to == NULL) {
		deliver_error(l, st, a, "cancel", "item-not-found");
		return;
	}
	/* A local sender's private message is a message it sent (its
	 * archive, the journal), to the occupant JID it wrote to. */
	struct jid real, occupant;
	const char *sender = xml_attr(st, "from");
	char to_jid[3 * JID_PART_MAX + 3];
	snprintf(to_jid, sizeof to_jid, "%s/%s", r->jid, to->nick);
	if (sender != NULL && jid_parse(&real, sender, strlen(sender)) == 0 &&
	    real.local[0] != '\0' && config_find_host(l->srv->cfg, real.domain) != NULL &&
	    jid_parse(&occupant, to_jid, strlen(to_jid)) == 0) {
		struct hook_ctx hc = { .loop = l, .st = st, .a = a, .from = &real, .to = &occupant };
		if (hooks_run(HOOK_MESSAGE_SENT, &hc) == DONE)
			return;
	}
	char from[3 * JID_PART_MAX + 3];
	snprintf(from, sizeof from, "%s/%s", r->jid, o->nick);
	xml_set_attr(a, st, "from", from);
	xml_set_attr(a, st, "to", NULL);
	if (xml_child(st, NS_MUC_USER, "x") == NULL)
		xml_add_child(a, st, NS_MUC_USER, "x");
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	send_to_occupant(l, r, to, &b);
	buf_free(&b);
}

/* To a bare JID: its available sessions on this server get bytes (a
 * message without 'to'). Remote JIDs are not reached yet. */
static void send_to_bare(struct loop *l, const char *bare, const struct buf *b)
{
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_available(l->srv->router, bare, t, ROUTER_MAX_TARGETS);
	if (n <= 0)
		return;
	struct refbuf *rb = with_to(b->data, b->len, bare);
	for (int i = 0; i < n; i++)
		deliver_to_session(l, &t[i], rb);
	refbuf_release(rb);
}

/* Takes out the pending invitation of invitee by inviter (bare JIDs);
 * returns whether there was one. */
static bool invitation_take(struct room *r, const char *invitee, const char *inviter)
{
	for (struct invitation **p = &r->invited; *p; p = &(*p)->next) {
		struct invitation *v = *p;
		if (strcmp(v->invitee, invitee) == 0 && strcmp(v->inviter, inviter) == 0) {
			*p = v->next;
			invitation_free(v);
			r->n_invited--;
			return true;
		}
	}
	return false;
}

/* Remembers that inviter invited invitee (bare JIDs), as the newest
 * invitation; past MAX_INVITATIONS the oldest is forgotten. */
static void invitation_add(struct room *r, const char *invitee, const char *inviter)
{
	invitation_take(r, invitee, inviter);
	struct invitation *v = xcalloc(1, sizeof *v);
	v->invitee = xstrdup(invitee);
	v->inviter = xstrdup(inviter);
	struct invitation **p = &r->invited;
	while (*p)
		p = &(*p)->next;
	*p = v;
	if (++r->n_invited > MAX_INVITATIONS) {
		struct invitation *old = r->invited;
		r->invited = old->next;
		invitation_free(old);
		r->n_invited--;
	}
}

/* Mediated invitations and their declines (XEP-0045 §7.8.2). A decline
 * is passed on only from the invitee of a pending invitation to its
 * inviter, once: the room is no relay for whatever anyone writes to
 * whomever they name. */
static void invite_or_decline(struct loop *l, struct room *r, struct occupant *o,
			      struct xml_node *st, struct arena *a, const char *full)
{
	struct xml_node *x = xml_child(st, NS_MUC_USER, "x");
	struct xml_node *inv = x ? xml_child(x, NS_MUC_USER, "invite") : NULL;
	struct xml_node *dec = x ? xml_child(x, NS_MUC_USER, "decline") : NULL;
	struct xml_node *item = inv ? inv : dec;
	const char *target = item ? xml_attr(item, "to") : NULL;
	struct jid tj;
	char bare[2 * JID_PART_MAX + 2];
	if (target == NULL || jid_parse(&tj, target, strlen(target)) != 0 ||
	    jid_format_bare(&tj, bare, sizeof bare) < 0) {
		deliver_error(l, st, a, "modify", inv || dec ? "jid-malformed" : "feature-not-implemented");
		return;
	}
	if (inv != NULL) {
		if (o == NULL) {
			deliver_error(l, st, a, "modify", "not-acceptable");
			return;
		}
		if (r->cfg.invites_locked && o->role != ROLE_MODERATOR) {
			deliver_error(l, st, a, "auth", "forbidden");
			return;
		}
		if (r->cfg.members_only && affil_of(r, bare) < AFF_MEMBER) {
			if (o->affil < AFF_ADMIN) {
				deliver_error(l, st, a, "auth", "forbidden");
				return;
			}
			if (affil_of(r, bare) == AFF_NONE &&
			    r->n_affils >= r->svc->host->muc.max_affiliations) {
				deliver_error(l, st, a, "wait", "resource-constraint");
				return;
			}
			affil_set(r, bare, AFF_MEMBER);
			if (r->cfg.persistent)
				room_save(l, r);
		}
		invitation_add(r, bare, o->bare);
	} else {
		struct jid fj;
		char decliner[2 * JID_PART_MAX + 2];
		if (jid_parse(&fj, full, strlen(full)) != 0 ||
		    jid_format_bare(&fj, decliner, sizeof decliner) < 0 ||
		    !invitation_take(r, decliner, bare)) {
			deliver_error(l, st, a, "cancel", "item-not-found");
			return;
		}
	}
	const struct xml_node *why = xml_child(item, NS_MUC_USER, "reason");
	const char *reason = why ? xml_text(a, why) : NULL;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<message from='");
	buf_append_escaped(&b, r->jid, strlen(r->jid));
	buf_printf(&b, "'><x xmlns='" NS_MUC_USER "'><%s from='", inv ? "invite" : "decline");
	buf_append_escaped(&b, full, strlen(full));
	buf_puts(&b, "'>");
	if (reason) {
		buf_puts(&b, "<reason>");
		buf_append_escaped(&b, reason, strlen(reason));
		buf_puts(&b, "</reason>");
	}
	buf_printf(&b, "</%s>", inv ? "invite" : "decline");
	if (inv && r->cfg.password) {
		buf_puts(&b, "<password>");
		buf_append_escaped(&b, r->cfg.password, strlen(r->cfg.password));
		buf_puts(&b, "</password>");
	}
	buf_puts(&b, "</x></message>");
	if (tj.resource[0])
		send_to(l, r, target, b.data, b.len);
	else
		send_to_bare(l, bare, &b);
	buf_free(&b);
}

static void room_message(struct loop *l, struct room *r, struct xml_node *st, struct arena *a,
			 const char *full, const struct jid *to)
{
	const char *type = xml_attr(st, "type");
	if (type != NULL && strcmp(type, "error") == 0)
		return;
	struct occupant *o = r ? by_jid(r, full, NULL) : NULL;
	bool is_groupchat = type != NULL && strcmp(type, "groupchat") == 0;
	if (r != NULL && !is_groupchat && to->resource[0] == '\0' &&
	    xml_child(st, NS_MUC_USER, "x") != NULL) {
		invite_or_decline(l, r, o, st, a, full);
		return;
	}
	if (o == NULL) {
		deliver_error(l, st, a, "modify", "not-acceptable");
		return;
	}
	/* A subject is kept, saved and given to every joiner: no larger
	 * than a body may be. */
	const struct xml_node *body = xml_child(st, NS_CLIENT, "body");
	const struct xml_node *subject = xml_child(st, NS_CLIENT, "subject");
	size_t max = r->svc->host->muc.max_message_size;
	if ((body != NULL && strlen(xml_text(a, body)) > max) ||
	    (subject != NULL && strlen(xml_text(a, subject)) > max)) {
		deliver_error(l, st, a, "modify", "not-acceptable");
		return;
	}
	if (to->resource[0] == '\0') {
		if (is_groupchat)
			groupchat(l, r, o, st, a);
		else
			deliver_error(l, st, a, "cancel", "feature-not-implemented");
		return;
	}
	if (is_groupchat) {
		deliver_error(l, st, a, "modify", "bad-request");
		return;
	}
	private_message(l, r, o, st, a, to->resource);
}

/* --- iq --- */

/* Whether an occupant with affiliation a has no place in the room: banned,
 * or not a member of a members-only room. */
static bool put_out(const struct room *r, enum affil a)
{
	return a == AFF_OUTCAST || (a < AFF_MEMBER && r->cfg.members_only);
}

/* One item of a muc#admin set, checked: a role by nick, or an
 * affiliation by bare JID (XEP-0045 §§8-10). */
struct admin_change {
	const char *nick;   /* a role change: the occupant's nick (arena) */
	const char *bare;   /* an affiliation change: the bare JID (arena) */
	enum role role;
	enum affil affil;
	const char *reason; /* NULL: none given */
};

/* An affiliation as the items checked so far leave it. */
struct planned {
	const char *bare;   /* arena */
	enum affil affil;
};

/* The room as the items checked so far would leave it. */
struct admin_plan {
	void *planned;      /* tsearch(3) tree of struct planned by bare;
			     * the nodes are freed, the entries are arena */
	int owners;
	int n_affils;
	struct actor actor; /* the asker's rights */
};

static int planned_cmp(const void *x, const void *y)
{
	return strcmp(((const struct planned *)x)->bare, ((const struct planned *)y)->bare);
}

static enum affil plan_affil(const struct admin_plan *p, const struct room *r, const char *bare)
{
	struct planned key = { .bare = bare };
	struct planned **e = tfind(&key, &p->planned, planned_cmp);
	return e ? (*e)->affil : affil_of(r, bare);
}

static void plan_affil_set(struct admin_plan *p, struct arena *a, const char *bare,
			   enum affil now, enum affil aff)
{
	struct planned key = { .bare = bare };
	struct planned **e = tfind(&key, &p->planned, planned_cmp);
	if (e == NULL) {
		struct planned *n = arena_alloc(a, sizeof *n);
		n->bare = bare;
		e = tsearch(n, &p->planned, planned_cmp);
		if (e == NULL)
			fatal("out of memory");
	}
	(*e)->affil = aff;
	p->owners += (aff == AFF_OWNER) - (now == AFF_OWNER);
	p->n_affils += (aff != AFF_NONE) - (now != AFF_NONE);
}

/* Checks one <item/> of a muc#admin set against the room and the asker's
 * rights as the earlier items leave them (p), and notes in p what it
 * changes. Returns NULL with *ch filled, or the error condition with
 * *etype its type. Changes nothing in the room. */
static const char *admin_check(const struct room *r, struct admin_plan *p,
			       const struct xml_node *item, struct arena *a,
			       struct admin_change *ch, const char **etype)
{
	struct actor *actor = &p->actor;
	const char *nick = xml_attr(item, "nick");
	const char *jid = xml_attr(item, "jid");
	int role = name_index(role_names, xml_attr(item, "role"));
	int aff = name_index(affil_names, xml_attr(item, "affiliation"));
	const struct xml_node *why = xml_child(item, NS_MUC_ADMIN, "reason");
	memset(ch, 0, sizeof *ch);
	ch->reason = why ? xml_text(a, why) : NULL;
	*etype = "cancel";
	if (nick != NULL && role >= 0 && aff < 0) {
		struct occupant *t = by_nick(r, nick);
		enum affil t_affil = t ? plan_affil(p, r, t->bare) : AFF_NONE;
		if (t == NULL || put_out(r, t_affil))
			return "item-not-found"; /* or put out by an earlier item */
		*etype = "auth";
		if (actor->role != ROLE_MODERATOR)
			return "forbidden";
		*etype = "cancel";
		bool grant_mod = role == ROLE_MODERATOR || t->role == ROLE_MODERATOR;
		if (grant_mod && actor->affil < AFF_ADMIN)
			return "not-allowed";
		if (t_affil >= AFF_ADMIN && role < ROLE_MODERATOR)
			return "not-allowed";
		ch->nick = arena_strdup(a, t->nick);
		ch->role = (enum role)role;
		if (t == actor->me)
			actor->role = (enum role)role;
		return NULL;
	}
	if (jid != NULL && aff >= 0 && role < 0) {
		struct jid j;
		char bare[2 * JID_PART_MAX + 2];
		*etype = "modify";
		if (jid_parse(&j, jid, strlen(jid)) != 0 || jid_format_bare(&j, bare, sizeof bare) < 0)
			return "jid-malformed";
		*etype = "auth";
		if (actor->affil < AFF_ADMIN)
			return "forbidden";
		*etype = "cancel";
		enum affil now = plan_affil(p, r, bare);
		if ((aff >= AFF_ADMIN || now >= AFF_ADMIN) && actor->affil != AFF_OWNER)
			return "not-allowed";
		if (now == AFF_OWNER && aff != AFF_OWNER && p->owners == 1)
			return "conflict"; /* a room keeps one owner at least */
		ch->bare = arena_strdup(a, bare);
		ch->affil = (enum affil)aff;
		plan_affil_set(p, a, ch->bare, now, ch->affil);
		if (strcmp(bare, actor->bare) == 0) {
			actor->affil = ch->affil;
			if (actor->me != NULL)
				actor->role = put_out(r, ch->affil) ? ROLE_NONE : role_in(r, ch->affil);
		}
		return NULL;
	}
	*etype = "modify";
	return "bad-request";
}

/* Makes one checked change; by is the actor's nick or NULL. The room
 * stays, even emptied (room_handle ends it afterwards). */
static void admin_apply(struct loop *l, struct room *r, const struct admin_change *ch,
			const char *by)
{
	if (ch->nick != NULL) {
		struct occupant *t = by_nick(r, ch->nick);
		if (t == NULL)
			return; /* an earlier item put them out already */
		if (ch->role == ROLE_NONE) {
			remove_occupant(l, r, t, 307, ch->reason, by);
			return;
		}
		t->role = ch->role;
		broadcast_presence(l, r, t, NULL, NULL, 0, NULL, 0, NULL);
		return;
	}
	affil_set(r, ch->bare, ch->affil);
	for (struct occupant *t = r->occ, *next; t; t = next) {
		next = t->next;
		if (strcmp(t->bare, ch->bare) != 0)
			continue;
		t->affil = ch->affil;
		if (put_out(r, ch->affil)) {
			/* Banned (301), or no longer a member of a members-only
			 * room (321). */
			remove_occupant(l, r, t, ch->affil == AFF_OUTCAST ? 301 : 321, ch->reason, by);
			continue;
		}
		t->role = role_in(r, t->affil);
		broadcast_presence(l, r, t, NULL, NULL, 0, NULL, 0, NULL);
	}
}

static void admin_list(struct iq_ctx *c, struct room *r, const struct actor *actor,
		       const struct xml_node *item)
{
	int role = name_index(role_names, xml_attr(item, "role"));
	int aff = name_index(affil_names, xml_attr(item, "affiliation"));
	struct arena *a = c->a;
	struct xml_node *q = xml_new(a, NS_MUC_ADMIN, "query");
	if (aff >= 0) {
		if (actor->affil < AFF_ADMIN) {
			module_error(c, "auth", "forbidden");
			return;
		}
		for (const struct affiliation *f = r->affils; f; f = f->next) {
			if ((int)f->affil != aff)
				continue;
			struct xml_node *it = xml_add_child(a, q, NS_MUC_ADMIN, "item");
			xml_set_attr(a, it, "affiliation", affil_names[f->affil]);
			xml_set_attr(a, it, "jid", f->bare);
		}
	} else if (role > ROLE_NONE) {
		if (actor->role != ROLE_MODERATOR) {
			module_error(c, "auth", "forbidden");
			return;
		}
		for (const struct occupant *o = r->occ; o; o = o->next) {
			if ((int)o->role != role)
				continue;
			struct xml_node *it = xml_add_child(a, q, NS_MUC_ADMIN, "item");
			xml_set_attr(a, it, "affiliation", affil_names[o->affil]);
			xml_set_attr(a, it, "role", role_names[o->role]);
			xml_set_attr(a, it, "nick", o->nick);
			xml_set_attr(a, it, "jid", o->jids[0]);
		}
	} else {
		module_error(c, "modify", "bad-request");
		return;
	}
	module_reply(c, q);
}

static void room_admin(struct iq_ctx *c, struct room *r, const struct actor *actor, bool get)
{
	const struct xml_node *item = xml_child(c->payload, NS_MUC_ADMIN, "item");
	if (item == NULL) {
		module_error(c, "modify", "bad-request");
		return;
	}
	if (get) {
		admin_list(c, r, actor, item);
		return;
	}
	/* Each item is checked, in order, against the room and the asker's
	 * rights as the earlier items would leave them (an owner who bans
	 * themselves has no rights left for the next item); then all of them
	 * are made, or none when one does not pass. */
	size_t n = 0;
	for (const struct xml_node *it = item; it; it = it->next)
		n += xml_is(it, NS_MUC_ADMIN, "item");
	struct admin_change *ch = arena_alloc(c->a, n * sizeof *ch);
	struct admin_plan p = { .owners = count_affil(r, AFF_OWNER), .n_affils = r->n_affils,
				.actor = *actor };
	const char *etype = NULL, *cond = NULL;
	size_t k = 0;
	for (; item && !cond; item = item->next) {
		if (xml_is(item, NS_MUC_ADMIN, "item"))
			cond = admin_check(r, &p, item, c->a, &ch[k++], &etype);
	}
	tdestroy(p.planned, index_node_keep);
	/* A cap on what a room keeps in memory and writes with each save
	 * of a persistent room. The asker gets under it by removing some,
	 * so it is resource-constraint (as for the blocking list), not
	 * not-allowed, which says the change is never allowed. A room above
	 * it (the directory's, or a cap lowered since) may still shrink. */
	if (cond == NULL && p.n_affils > r->svc->host->muc.max_affiliations &&
	    p.n_affils > r->n_affils) {
		etype = "wait";
		cond = "resource-constraint";
	}
	if (cond) {
		module_error(c, etype, cond);
		return;
	}
	bool affiliations = false;
	for (size_t i = 0; i < k; i++) {
		admin_apply(c->loop, r, &ch[i], actor->nick);
		affiliations |= ch[i].bare != NULL;
	}
	if (affiliations && r->cfg.persistent)
		room_save(c->loop, r); /* once for the whole set */
	/* After the presences it causes, as XEP-0045's examples show them. */
	module_reply(c, NULL);
}

/* An iq to an occupant (room/nick): a self-ping (XEP-0410) is answered
 * here; anything else goes to the occupant's first session, from the
 * sender's room JID, and its answer comes back the same way. */
static void occupant_iq(struct loop *l, struct room *r, struct xml_node *st, struct arena *a,
			const char *full, const struct jid *from, const struct jid *to)
{
	const char *type = xml_attr(st, "type");
	bool request = strcmp(type, "get") == 0 || strcmp(type, "set") == 0;
	struct iq_ctx c = { .loop = l, .iq = st, .a = a, .from = from, .to = to,
			    .writes = pending_queued(l->store) };
	struct occupant *o = r ? by_jid(r, full, NULL) : NULL;
	if (o == NULL) {
		if (request)
			module_error(&c, "cancel", "not-acceptable");
		return;
	}
	struct occupant *t = by_nick(r, to->resource);
	const struct xml_node *payload = xml_first_element(st);
	if (request && t == o && payload && xml_is(payload, "urn:xmpp:ping", "ping")) {
		module_reply(&c, NULL);
		return;
	}
	if (t == NULL) {
		if (request)
			module_error(&c, "cancel", "item-not-found");
		return;
	}
	char sender[3 * JID_PART_MAX + 3];
	snprintf(sender, sizeof sender, "%s/%s", r->jid, o->nick);
	xml_set_attr(a, st, "from", sender);
	xml_set_attr(a, st, "to", NULL);
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	send_to(l, r, t->jids[0], b.data, b.len);
	buf_free(&b);
}

static void add_feature(struct arena *a, struct xml_node *q, const char *var)
{
	struct xml_node *f = xml_add_child(a, q, NS_DISCO_INFO, "feature");
	xml_set_attr(a, f, "var", var);
}

/* Tells the occupants the configuration changed (104), and if the room
 * became non-anonymous (172) or semi-anonymous (173). */
static void config_changed(struct loop *l, struct room *r, bool was_non_anonymous)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<message type='groupchat' from='");
	buf_append_escaped(&b, r->jid, strlen(r->jid));
	buf_printf(&b, "' id='config-%llu'><x xmlns='" NS_MUC_USER "'><status code='104'/>",
		   ++r->next_sid);
	if (r->cfg.non_anonymous != was_non_anonymous)
		buf_printf(&b, "<status code='%d'/>", r->cfg.non_anonymous ? 172 : 173);
	buf_puts(&b, "</x></message>");
	for (struct occupant *o = r->occ; o; o = o->next)
		send_to_occupant(l, r, o, &b);
	buf_free(&b);
}

/* Ends the room (XEP-0045 §10.9): everybody gets an unavailable presence
 * with <destroy/> (and the alternate venue), and the store forgets it. */
static void destroy_room(struct loop *l, struct room *r, const char *venue, const char *reason)
{
	for (struct occupant *o = r->occ; o; o = o->next) {
		struct buf b;
		buf_init(&b);
		buf_puts(&b, "<presence type='unavailable' from='");
		buf_append_escaped(&b, r->jid, strlen(r->jid));
		buf_puts(&b, "/");
		buf_append_escaped(&b, o->nick, strlen(o->nick));
		buf_printf(&b, "'><x xmlns='" NS_MUC_USER "'><item affiliation='%s' role='none'/>"
			       "<destroy", affil_names[o->affil]);
		if (venue) {
			buf_puts(&b, " jid='");
			buf_append_escaped(&b, venue, strlen(venue));
			buf_puts(&b, "'");
		}
		buf_puts(&b, ">");
		if (reason) {
			buf_puts(&b, "<reason>");
			buf_append_escaped(&b, reason, strlen(reason));
			buf_puts(&b, "</reason>");
		}
		buf_puts(&b, "</destroy></x></presence>");
		send_to_occupant(l, r, o, &b);
		buf_free(&b);
	}
	r->cfg.persistent = false;
	room_save(l, r); /* out of the store */
	log_info("muc: room %s destroyed%s%s", r->jid, reason ? ": " : "", reason ? reason : "");
	room_destroy(l, r);
}

/* muc#owner: the configuration form, its submission or cancellation (an
 * instant room is usable as created), and destruction. Owners only. */
static void room_owner(struct iq_ctx *c, struct room *r, bool get)
{
	struct arena *a = c->a;
	const struct xml_node *x = xml_child(c->payload, NS_DATA, "x");
	const struct xml_node *d = xml_child(c->payload, NS_MUC_OWNER, "destroy");
	if (get) {
		struct xml_node *q = xml_new(a, NS_MUC_OWNER, "query");
		config_form(a, q, r);
		module_reply(c, q);
		return;
	}
	if (d != NULL) {
		/* The alternate venue goes to every occupant as a JID to join:
		 * it must be one (normalised). */
		const char *venue = xml_attr(d, "jid");
		char alt[3 * JID_PART_MAX + 3];
		struct jid vj;
		if (venue != NULL && (jid_parse(&vj, venue, strlen(venue)) != 0 ||
				      jid_format(&vj, alt, sizeof alt) < 0)) {
			module_error(c, "modify", "bad-request");
			return;
		}
		const struct xml_node *why = xml_child(d, NS_MUC_OWNER, "reason");
		module_reply(c, NULL);
		destroy_room(c->loop, r, venue ? alt : NULL, why ? xml_text(a, why) : NULL);
		return;
	}
	const char *xt = x ? xml_attr(x, "type") : NULL;
	if (xt == NULL || (strcmp(xt, "submit") != 0 && strcmp(xt, "cancel") != 0)) {
		module_error(c, "modify", "bad-request");
		return;
	}
	if (strcmp(xt, "cancel") == 0) {
		module_reply(c, NULL);
		return;
	}
	bool was_persistent = r->cfg.persistent;
	bool was_non_anonymous = r->cfg.non_anonymous;
	bool was_members_only = r->cfg.members_only;
	const char *err = config_apply(r, a, x);
	if (err != NULL) {
		module_error(c, "modify", err);
		return;
	}
	muc_public_set(c->loop->srv, r->jid, !r->cfg.hidden);
	if (r->cfg.persistent || was_persistent)
		room_save(c->loop, r);
	module_reply(c, NULL);
	config_changed(c->loop, r, was_non_anonymous);
	if (r->cfg.members_only && !was_members_only) {
		/* Those who are not members leave (322). */
		for (struct occupant *o = r->occ, *next; o; o = next) {
			next = o->next;
			if (o->affil < AFF_MEMBER)
				remove_occupant(c->loop, r, o, 322, NULL, NULL);
		}
	}
}

static void room_iq(struct loop *l, struct room *r, struct xml_node *st, struct arena *a,
		    const char *full, const struct jid *from, const struct jid *to)
{
	const char *type = xml_attr(st, "type");
	if (type == NULL)
		return;
	if (to->resource[0] != '\0') {
		occupant_iq(l, r, st, a, full, from, to);
		return;
	}
	if (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)
		return;
	struct iq_ctx c = { .loop = l, .iq = st, .a = a, .from = from, .to = to,
			    .writes = pending_queued(l->store) };
	c.payload = xml_first_element(st);
	if (r == NULL) {
		module_error(&c, "cancel", "item-not-found");
		return;
	}
	if (c.payload == NULL) {
		module_error(&c, "modify", "bad-request");
		return;
	}
	bool get = strcmp(type, "get") == 0;
	if (get && xml_is(c.payload, NS_DISCO_INFO, "query") && !xml_attr(c.payload, "node")) {
		struct xml_node *q = xml_new(a, NS_DISCO_INFO, "query");
		struct xml_node *id = xml_add_child(a, q, NS_DISCO_INFO, "identity");
		xml_set_attr(a, id, "category", "conference");
		xml_set_attr(a, id, "type", "text");
		xml_set_attr(a, id, "name", to->local);
		const struct room_config *rc = &r->cfg;
		const char *features[] = {
			NS_MUC,
			rc->hidden ? "muc_hidden" : "muc_public",
			rc->persistent ? "muc_persistent" : "muc_temporary",
			rc->members_only ? "muc_membersonly" : "muc_open",
			rc->moderated ? "muc_moderated" : "muc_unmoderated",
			rc->non_anonymous ? "muc_nonanonymous" : "muc_semianonymous",
			rc->password ? "muc_passwordprotected" : "muc_unsecured",
			NS_SID, NS_OCCUPANT_ID, room_archives(r) ? NS_MAM : NULL, NULL
		};
		for (const char *const *f = features; *f; f++)
			add_feature(a, q, *f);
		if (rc->name)
			xml_set_attr(a, id, "name", rc->name);
		struct xml_node *x = xml_add_child(a, q, NS_DATA, "x");
		xml_set_attr(a, x, "type", "result");
		struct xml_node *fld = xml_add_child(a, x, NS_DATA, "field");
		xml_set_attr(a, fld, "var", "FORM_TYPE");
		xml_set_attr(a, fld, "type", "hidden");
		struct xml_node *v = xml_add_child(a, fld, NS_DATA, "value");
		static const char form[] = "http://jabber.org/protocol/muc#roominfo";
		xml_add_text(a, v, form, sizeof form - 1);
		fld = xml_add_child(a, x, NS_DATA, "field");
		xml_set_attr(a, fld, "var", "muc#roominfo_occupants");
		v = xml_add_child(a, fld, NS_DATA, "value");
		char n[16];
		snprintf(n, sizeof n, "%d", r->n_occ);
		xml_add_text(a, v, n, strlen(n));
		module_reply(&c, q);
		return;
	}
	if (get && xml_is(c.payload, NS_DISCO_ITEMS, "query")) {
		/* Semi-anonymous: occupants are not listed to outsiders. */
		module_reply(&c, xml_new(a, NS_DISCO_ITEMS, "query"));
		return;
	}
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(from, bare, sizeof bare);
	struct occupant *me = by_jid(r, full, NULL);
	struct actor actor = { affil_of(r, bare), me ? me->role : ROLE_NONE, bare, me,
			       me ? arena_strdup(a, me->nick) : NULL };
	if (xml_is(c.payload, NS_MUC_ADMIN, "query")) {
		room_admin(&c, r, &actor, get);
		return;
	}
	if (xml_is(c.payload, NS_MAM, "query") && room_archives(r)) {
		/* The archive is for those who may read the room. */
		if (actor.affil == AFF_OUTCAST ||
		    (r->cfg.members_only && actor.affil < AFF_MEMBER && me == NULL)) {
			module_error(&c, "auth", "forbidden");
			return;
		}
		if (get) {
			mam_query_form(&c);
			return;
		}
		char local[JID_PART_MAX + 1];
		room_local_of(r, local, sizeof local);
		mam_query(&c, r->svc->domain, local, r->jid);
		return;
	}
	if (xml_is(c.payload, NS_MUC_OWNER, "query")) {
		if (actor.affil != AFF_OWNER) {
			module_error(&c, "auth", "forbidden");
			return;
		}
		room_owner(&c, r, get);
		return;
	}
	module_error(&c, "cancel", "service-unavailable");
}

void room_handle(struct loop *l, const struct muc_service *svc, struct xml_node *st,
		 struct arena *a, const struct jid *from, const struct jid *to)
{
	char full[3 * JID_PART_MAX + 3], bare[2 * JID_PART_MAX + 2], room_jid[2 * JID_PART_MAX + 2];
	if (jid_format(from, full, sizeof full) < 0 || jid_format_bare(from, bare, sizeof bare) < 0 ||
	    jid_format_bare(to, room_jid, sizeof room_jid) < 0)
		return;
	struct room *r = room_find(l, room_jid);
	if (strcmp(st->name, "presence") == 0)
		room_presence(l, svc, r, room_jid, st, a, full, bare, to);
	else if (strcmp(st->name, "message") == 0)
		room_message(l, r, st, a, full, to);
	else if (strcmp(st->name, "iq") == 0)
		room_iq(l, r, st, a, full, from, to);
	/* A temporary room that is empty now ends (XEP-0045 §10.1.3): the
	 * last one out left, was kicked or banned, or the room stopped
	 * being persistent while empty. Here, after the stanza, and only
	 * here: nothing above holds the room any more. */
	r = room_find(l, room_jid);
	if (r != NULL && r->n_occ == 0 && !r->cfg.persistent)
		room_destroy(l, r);
}

/* --- natterctl room (through muc_control) --- */

static void room_line(const struct room *r, struct buf *out)
{
	buf_printf(out, "%-40s %5d  %-10s %-6s %s\n", r->jid, r->n_occ,
		   r->cfg.persistent ? "persistent" : "temporary", r->cfg.hidden ? "hidden" : "public",
		   r->cfg.name ? r->cfg.name : "");
}

void room_list(struct loop *l, struct buf *out)
{
	struct room_loop *rl = l->muc;
	for (size_t i = 0; rl && i < ROOM_BUCKETS; i++)
		for (const struct room *r = rl->buckets[i]; r; r = r->next)
			room_line(r, out);
}

int room_info(struct loop *l, const char *jid, struct buf *out)
{
	struct room *r = room_find(l, jid);
	if (r == NULL) {
		buf_printf(out, "no room %s\n", jid);
		return -1;
	}
	const struct room_config *c = &r->cfg;
	buf_printf(out, "room         %s\n", r->jid);
	buf_printf(out, "name         %s\n", c->name ? c->name : "");
	buf_printf(out, "description  %s\n", c->desc ? c->desc : "");
	buf_printf(out, "kind         %s, %s, %s, %s, %s, %s\n",
		   c->persistent ? "persistent" : "temporary", c->hidden ? "hidden" : "public",
		   c->members_only ? "members-only" : "open",
		   c->moderated ? "moderated" : "unmoderated",
		   c->non_anonymous ? "non-anonymous" : "semi-anonymous",
		   c->password ? "password" : "no password");
	buf_printf(out, "subject      %s\n", r->subject ? r->subject : "");
	buf_printf(out, "occupants    %d\n", r->n_occ);
	for (const struct occupant *o = r->occ; o; o = o->next)
		buf_printf(out, "  %-20s %-11s %-7s %s\n", o->nick, role_names[o->role],
			   affil_names[o->affil], o->jids[0]);
	buf_puts(out, "affiliations\n");
	for (const struct affiliation *f = r->affils; f; f = f->next)
		buf_printf(out, "  %-7s %s\n", affil_names[f->affil], f->bare);
	return 0;
}

int room_admin_create(struct loop *l, const struct muc_service *svc, const char *jid,
		      const char *owner, struct buf *out)
{
	if (room_find(l, jid) != NULL) {
		buf_printf(out, "room %s exists already\n", jid);
		return -1;
	}
	struct room *r = room_create(l, svc, jid);
	r->cfg.persistent = true;
	if (owner != NULL)
		affil_set(r, owner, AFF_OWNER);
	room_save(l, r);
	room_line(r, out);
	return 0;
}

int room_admin_destroy(struct loop *l, const char *jid, const char *reason, struct buf *out)
{
	struct room *r = room_find(l, jid);
	if (r == NULL) {
		buf_printf(out, "no room %s\n", jid);
		return -1;
	}
	destroy_room(l, r, NULL, reason);
	buf_printf(out, "destroyed %s\n", jid);
	return 0;
}

/* --- rooms of directory groups --- */

static bool listed(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

/* Gives bare the affiliation a on the directory's behalf; tells the room
 * when someone present changes. */
static void directory_affil(struct loop *l, struct room *r, const char *bare, enum affil a)
{
	affil_set(r, bare, a);
	struct affiliation *f = affil_entry(r, bare);
	if (f != NULL)
		f->directory = true;
	for (struct occupant *o = r->occ; o; o = o->next) {
		if (strcmp(o->bare, bare) != 0 || o->affil == a)
			continue;
		o->affil = a;
		o->role = role_in(r, a);
		broadcast_presence(l, r, o, NULL, NULL, 0, NULL, 0, NULL);
	}
}

void room_directory_sync(struct loop *l, const struct muc_service *svc, const char *jid,
			 const char *name, bool members_only, char *const *members, size_t n_members,
			 char *const *owners, size_t n_owners)
{
	struct room *r = room_find(l, jid);
	if (r == NULL) {
		r = room_create(l, svc, jid);
		log_info("muc: room %s made for directory group '%s'", jid, name);
	}
	r->cfg.persistent = true;
	r->cfg.members_only = members_only;
	set_text(&r->cfg.name, name);
	for (size_t i = 0; i < n_owners; i++)
		if (affil_of(r, owners[i]) != AFF_OWNER)
			directory_affil(l, r, owners[i], AFF_OWNER);
	for (size_t i = 0; i < n_members; i++) {
		enum affil now = affil_of(r, members[i]);
		/* A ban or a higher affiliation set in the room stays. */
		if (now == AFF_NONE && !listed(owners, n_owners, members[i]))
			directory_affil(l, r, members[i], AFF_MEMBER);
	}
	/* Who the directory gave an affiliation and no longer lists. */
	for (struct affiliation *f = r->affils, *next; f; f = next) {
		next = f->next;
		if (!f->directory || listed(members, n_members, f->bare) ||
		    listed(owners, n_owners, f->bare))
			continue;
		char *bare = xstrdup(f->bare);
		bool was_owner = f->affil == AFF_OWNER;
		affil_set(r, bare, AFF_NONE); /* frees f */
		for (struct occupant *o = r->occ, *on; o; o = on) {
			on = o->next;
			if (strcmp(o->bare, bare) != 0)
				continue;
			if (members_only) {
				remove_occupant(l, r, o, 321, NULL, NULL); /* persistent: r stays */
			} else {
				o->affil = AFF_NONE;
				o->role = role_in(r, AFF_NONE);
				broadcast_presence(l, r, o, NULL, NULL, 0, NULL, 0, NULL);
			}
		}
		log_info("muc: %s left the directory group of %s%s", bare, jid,
			 was_owner ? " (was an owner)" : "");
		free(bare);
	}
	room_save(l, r);
}

void room_loop_shutdown(struct loop *l)
{
	struct room_loop *rl = l->muc;
	static const int shutdown_code[] = { 332 };
	if (rl == NULL || rl->told_shutdown)
		return;
	rl->told_shutdown = true;
	for (size_t i = 0; i < ROOM_BUCKETS; i++) {
		for (struct room *r = rl->buckets[i]; r; r = r->next) {
			for (struct occupant *o = r->occ; o; o = o->next) {
				struct buf b;
				presence_of(&b, r, o, "unavailable", true, shutdown_code, 1, NULL);
				send_to_occupant(l, r, o, &b);
				buf_free(&b);
			}
		}
	}
}

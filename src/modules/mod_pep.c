/* XEP-0163: Personal Eventing Protocol. Every account is a pubsub service
 * (pubsub.h) at its bare JID; this module answers its iqs, learns the
 * entity capabilities of online resources (caps.h) so that notifications
 * go to those that want them, and sends the last items to resources that
 * come online (§4.3). It also keeps two older protocols in step with PEP:
 *  - XEP-0411: bookmarks stored as XEP-0048 private XML (XEP-0049) are
 *    published to the XEP-0402 node urn:xmpp:bookmarks:1, and a private
 *    XML get of storage:bookmarks is answered from that node;
 *  - XEP-0398: a vCard set with a PHOTO publishes the XEP-0084 avatar
 *    (data and metadata nodes).
 * Both run before the owning module (mod_private, mod_vcard) and then
 * decline, so that module still answers and stores as before. */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "modules/caps.h"
#include "modules/module.h"
#include "modules/pubsub.h"
#include "modules/pubsub_service.h"
#include "modules/roster.h"
#include "xml/xml_parse.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_PRIVATE "jabber:iq:private"
#define NS_BOOKMARKS_48 "storage:bookmarks"
#define NS_BOOKMARKS "urn:xmpp:bookmarks:1"
#define NS_VCARD "vcard-temp"
#define NS_AVATAR_DATA "urn:xmpp:avatar:data"
#define NS_AVATAR_META "urn:xmpp:avatar:metadata"

/* Bookmarks converted at once, either way. */
#define PEP_MAX_BOOKMARKS 256

static bool own_account(const struct iq_ctx *c)
{
	return strcmp(c->to->local, c->from->local) == 0 &&
	       strcmp(c->to->domain, c->from->domain) == 0;
}

static void pep_avatar_to_vcard(struct iq_ctx *c, const struct pubsub_host *h);

static enum status pep_iq(struct iq_ctx *c)
{
	char bare[2 * JID_PART_MAX + 2];
	struct pubsub_host h;
	pubsub_pep_host(c->loop->srv, c->to, bare, sizeof bare, &h);
	enum status st = pubsub_iq(c, &h);
	if (st == OK)
		pep_avatar_to_vcard(c, &h);
	return st;
}

/* --- XEP-0411: XEP-0048 bookmarks in private XML <-> XEP-0402 --- */

static const struct pubsub_options bookmark_options = {
	.access = "whitelist", .max_items = -1, .persist = 1, .send_last = 0,
};

static enum status pep_private_set(struct iq_ctx *c)
{
	struct xml_node *st = xml_first_element(c->payload);
	if (!own_account(c) || xml_element_count(c->payload) != 1 ||
	    !xml_is(st, NS_BOOKMARKS_48, "storage"))
		return DECLINED;
	char bare[2 * JID_PART_MAX + 2];
	struct pubsub_host h;
	pubsub_pep_host(c->loop->srv, c->to, bare, sizeof bare, &h);
	const char *keep[PEP_MAX_BOOKMARKS];
	int n = 0;
	for (struct xml_node *b = st->children; b && n < PEP_MAX_BOOKMARKS; b = b->next) {
		const char *jid = xml_is(b, NS_BOOKMARKS_48, "conference") ? xml_attr(b, "jid")
									   : NULL;
		struct jid room;
		if (jid == NULL || jid_parse(&room, jid, strlen(jid)) != 0 ||
		    room.resource[0] != '\0' || strlen(jid) > PUBSUB_NAME_MAX)
			continue;
		struct xml_node *item = xml_new(c->a, NS_PUBSUB, "item");
		xml_set_attr(c->a, item, "id", jid);
		struct xml_node *conf = xml_add_child(c->a, item, NS_BOOKMARKS, "conference");
		const char *name = xml_attr(b, "name");
		const char *autojoin = xml_attr(b, "autojoin");
		if (name)
			xml_set_attr(c->a, conf, "name", name);
		if (autojoin)
			xml_set_attr(c->a, conf, "autojoin",
				     strcmp(autojoin, "1") == 0 || strcmp(autojoin, "true") == 0
					     ? "true"
					     : "false");
		struct xml_node *nick = xml_child(b, NS_BOOKMARKS_48, "nick");
		struct xml_node *pw = xml_child(b, NS_BOOKMARKS_48, "password");
		if (nick) {
			const char *t = xml_text(c->a, nick);
			xml_add_text(c->a, xml_add_child(c->a, conf, NS_BOOKMARKS, "nick"), t,
				     strlen(t));
		}
		if (pw) {
			const char *t = xml_text(c->a, pw);
			xml_add_text(c->a, xml_add_child(c->a, conf, NS_BOOKMARKS, "password"), t,
				     strlen(t));
		}
		if (pubsub_publish_item(c->loop, &h, NS_BOOKMARKS, item, &bookmark_options) == 0)
			keep[n++] = jid;
	}
	pubsub_retract_others(c->loop, &h, NS_BOOKMARKS, keep, n);
	return DECLINED; /* mod_private stores it too */
}

static enum status pep_private_get(struct iq_ctx *c)
{
	struct xml_node *el = xml_first_element(c->payload);
	if (!own_account(c) || xml_element_count(c->payload) != 1 ||
	    !xml_is(el, NS_BOOKMARKS_48, "storage"))
		return DECLINED;
	char bare[2 * JID_PART_MAX + 2];
	struct pubsub_host h;
	pubsub_pep_host(c->loop->srv, c->to, bare, sizeof bare, &h);
	struct xml_node *items[PEP_MAX_BOOKMARKS];
	int n = pubsub_items(c->loop, &h, NS_BOOKMARKS, c->a, items, PEP_MAX_BOOKMARKS);
	if (n <= 0)
		return DECLINED; /* no XEP-0402 bookmarks: private XML as stored */
	struct xml_node *q = xml_new(c->a, NS_PRIVATE, "query");
	struct xml_node *st = xml_add_child(c->a, q, NS_BOOKMARKS_48, "storage");
	for (int i = 0; i < n; i++) {
		struct xml_node *conf = xml_child(items[i], NS_BOOKMARKS, "conference");
		if (conf == NULL)
			continue;
		struct xml_node *b = xml_add_child(c->a, st, NS_BOOKMARKS_48, "conference");
		xml_set_attr(c->a, b, "jid", xml_attr(items[i], "id"));
		if (xml_attr(conf, "name"))
			xml_set_attr(c->a, b, "name", xml_attr(conf, "name"));
		const char *aj = xml_attr(conf, "autojoin");
		xml_set_attr(c->a, b, "autojoin",
			     aj && (strcmp(aj, "true") == 0 || strcmp(aj, "1") == 0) ? "true"
										     : "false");
		static const char *const kids[] = { "nick", "password" };
		for (int k = 0; k < 2; k++) {
			struct xml_node *v = xml_child(conf, NS_BOOKMARKS, kids[k]);
			if (v) {
				const char *t = xml_text(c->a, v);
				xml_add_text(c->a, xml_add_child(c->a, b, NS_BOOKMARKS_48, kids[k]),
					     t, strlen(t));
			}
		}
	}
	module_reply(c, q);
	return OK;
}

/* --- XEP-0398: the vCard's PHOTO becomes the XEP-0084 avatar --- */

static const struct pubsub_options avatar_options = {
	.access = "open", .max_items = 0, .persist = 1, .send_last = -1,
};

static enum status pep_vcard_set(struct iq_ctx *c)
{
	struct loop *l = c->loop;
	if (!own_account(c))
		return DECLINED;
	struct buf b;
	buf_init(&b);
	xml_serialize(c->payload, NS_CLIENT, &b);
	bool fits = b.len <= l->srv->cfg->limits.max_vcard_size;
	buf_free(&b);
	if (!fits)
		return DECLINED; /* mod_vcard refuses it */
	struct xml_node *photo = xml_child(c->payload, NS_VCARD, "PHOTO");
	struct xml_node *bin = photo ? xml_child(photo, NS_VCARD, "BINVAL") : NULL;
	struct xml_node *type = photo ? xml_child(photo, NS_VCARD, "TYPE") : NULL;
	if (bin == NULL)
		return DECLINED;
	/* The base64 without the line breaks vCards carry. */
	const char *raw = xml_text(c->a, bin);
	size_t len = strlen(raw), k = 0;
	char *b64 = arena_alloc(c->a, len + 1);
	for (size_t i = 0; i < len; i++)
		if (raw[i] != ' ' && raw[i] != '\n' && raw[i] != '\r' && raw[i] != '\t')
			b64[k++] = raw[i];
	b64[k] = '\0';
	if (k == 0 || k % 4 != 0)
		return DECLINED;
	unsigned char *bytes = arena_alloc(c->a, k / 4 * 3 + 1);
	int n = EVP_DecodeBlock(bytes, (const unsigned char *)b64, (int)k);
	if (n < 0)
		return DECLINED;
	/* EVP_DecodeBlock counts the padding as bytes. */
	n -= (k >= 1 && b64[k - 1] == '=') + (k >= 2 && b64[k - 2] == '=');
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1(bytes, (size_t)n, md);
	char id[2 * SHA_DIGEST_LENGTH + 1];
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(id + 2 * i, 3, "%02x", md[i]);
	char bare[2 * JID_PART_MAX + 2];
	struct pubsub_host h;
	pubsub_pep_host(l->srv, c->to, bare, sizeof bare, &h);
	struct xml_node *data = xml_new(c->a, NS_PUBSUB, "item");
	xml_set_attr(c->a, data, "id", id);
	xml_add_text(c->a, xml_add_child(c->a, data, NS_AVATAR_DATA, "data"), b64, k);
	if (pubsub_publish_item(l, &h, NS_AVATAR_DATA, data, &avatar_options) != 0)
		return DECLINED;
	struct xml_node *meta = xml_new(c->a, NS_PUBSUB, "item");
	xml_set_attr(c->a, meta, "id", id);
	struct xml_node *m = xml_add_child(c->a, meta, NS_AVATAR_META, "metadata");
	struct xml_node *info = xml_add_child(c->a, m, NS_AVATAR_META, "info");
	char num[24];
	snprintf(num, sizeof num, "%d", n);
	xml_set_attr(c->a, info, "bytes", num);
	xml_set_attr(c->a, info, "id", id);
	const char *t = type ? xml_text(c->a, type) : "";
	xml_set_attr(c->a, info, "type", t[0] ? t : "image/png");
	pubsub_publish_item(l, &h, NS_AVATAR_META, meta, &avatar_options);
	return DECLINED; /* mod_vcard stores the vCard */
}

/* --- XEP-0398 the other way: a new XEP-0084 avatar becomes the PHOTO --- */

/* After the owner published avatar metadata (pep_iq answered): the image
 * it names, from the data node, replaces the vCard's PHOTO, so that
 * vCard-based clients (XEP-0153) see the new avatar; metadata without
 * <info/> (avatar turned off) removes it. The vCard is written to the
 * store directly, so this does not publish again (pep_vcard_set). */
static void pep_avatar_to_vcard(struct iq_ctx *c, const struct pubsub_host *h)
{
	struct loop *l = c->loop;
	struct xml_node *pub = xml_child(c->payload, NS_PUBSUB, "publish");
	const char *node = pub ? xml_attr(pub, "node") : NULL;
	if (node == NULL || strcmp(node, NS_AVATAR_META) != 0 || !own_account(c) ||
	    strcmp(xml_attr(c->iq, "type"), "set") != 0)
		return;
	struct xml_node *item = xml_child(pub, NS_PUBSUB, "item");
	struct xml_node *meta = item ? xml_child(item, NS_AVATAR_META, "metadata") : NULL;
	const char *item_id = item ? xml_attr(item, "id") : NULL;
	if (meta == NULL || item_id == NULL)
		return;
	/* Only if the publish went through: the node's newest item is it. */
	struct xml_node *have[256];
	int n = pubsub_items(l, h, NS_AVATAR_META, c->a, have, 256);
	if (n <= 0 || xml_attr(have[n - 1], "id") == NULL ||
	    strcmp(xml_attr(have[n - 1], "id"), item_id) != 0)
		return;
	/* The first inline image (an <info/> without url). */
	struct xml_node *info = NULL;
	for (struct xml_node *i = meta->children; i; i = i->next)
		if (xml_is(i, NS_AVATAR_META, "info") && xml_attr(i, "url") == NULL &&
		    xml_attr(i, "id") != NULL) {
			info = i;
			break;
		}
	const char *b64 = NULL;
	if (info != NULL) {
		struct xml_node *data[256];
		int m = pubsub_items(l, h, NS_AVATAR_DATA, c->a, data, 256);
		for (int i = 0; i < m; i++) {
			const char *id = xml_attr(data[i], "id");
			struct xml_node *d = xml_child(data[i], NS_AVATAR_DATA, "data");
			if (id != NULL && d != NULL && strcmp(id, xml_attr(info, "id")) == 0)
				b64 = xml_text(c->a, d);
		}
		if (b64 == NULL)
			return; /* the data was not published first: nothing to show */
	}
	const struct storage_driver *drv = l->srv->storage;
	struct buf b;
	buf_init(&b);
	int rc = drv->map_get(l->store, c->to->domain, c->to->local, "vcard", "vcard", &b);
	struct xml_node *v = rc == 0 ? xml_parse_element(c->a, b.data, b.len) : NULL;
	if (rc < 0 || (rc == 0 && (v == NULL || !xml_is(v, NS_VCARD, "vCard")))) {
		buf_free(&b);
		return; /* unreadable or no store: leave it */
	}
	if (v == NULL)
		v = xml_new(c->a, NS_VCARD, "vCard");
	struct xml_node **pp = &v->children;
	v->last = NULL;
	while (*pp) {
		if (xml_is(*pp, NS_VCARD, "PHOTO")) {
			*pp = (*pp)->next;
			continue;
		}
		v->last = *pp;
		pp = &(*pp)->next;
	}
	if (info != NULL) {
		struct xml_node *photo = xml_add_child(c->a, v, NS_VCARD, "PHOTO");
		const char *type = xml_attr(info, "type");
		type = type ? type : "image/png";
		xml_add_text(c->a, xml_add_child(c->a, photo, NS_VCARD, "TYPE"), type, strlen(type));
		xml_add_text(c->a, xml_add_child(c->a, photo, NS_VCARD, "BINVAL"), b64, strlen(b64));
	}
	buf_free(&b);
	buf_init(&b);
	xml_serialize(v, NS_CLIENT, &b);
	if (b.len <= l->srv->cfg->limits.max_vcard_size)
		drv->map_put(l->store, c->to->domain, c->to->local, "vcard", "vcard", b.data, b.len);
	buf_free(&b);
}

/* --- who gets the last items (XEP-0163 §4.3) --- */

static void send_last_of(struct loop *l, const char *owner, const struct jid *who)
{
	struct jid o;
	if (jid_parse(&o, owner, strlen(owner)) != 0 || !caps_first_for(l->srv, who, owner))
		return;
	char bare[2 * JID_PART_MAX + 2];
	struct pubsub_host h;
	pubsub_pep_host(l->srv, &o, bare, sizeof bare, &h);
	pubsub_send_last(l, &h, who);
}

struct subscribed_to {
	struct loop *l;
	struct arena *a;
	const char **owners; /* local contacts who is subscribed to */
	int n, max;
};

/* Collects only: roster_each's callback must not use the store. */
static void collect_subscribed_to(void *arg, struct roster_item *it)
{
	struct subscribed_to *s = arg;
	char domain[JID_PART_MAX + 1];
	const char *at = strchr(it->jid, '@');
	if (!(it->sub & SUB_TO) || at == NULL || s->n >= s->max)
		return;
	snprintf(domain, sizeof domain, "%s", at + 1);
	/* A remote contact's server sends its own PEP items. */
	if (config_find_host(s->l->srv->cfg, domain) != NULL)
		s->owners[s->n++] = arena_strdup(s->a, it->jid);
}

/* A local resource's caps are known: its own account's last items and
 * those of every local contact it is subscribed to. */
static void pep_local_known(struct loop *l, const struct jid *who, const char *owner)
{
	(void)owner;
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(who, bare, sizeof bare);
	send_last_of(l, bare, who);
	struct arena a;
	arena_init(&a);
	struct subscribed_to s = { .l = l, .a = &a, .max = l->srv->cfg->limits.max_roster_items };
	s.owners = arena_alloc(&a, (size_t)s.max * sizeof *s.owners);
	roster_each(l, bare, &a, collect_subscribed_to, &s);
	for (int i = 0; i < s.n; i++)
		send_last_of(l, s.owners[i], who);
	arena_reset(&a);
}

static void pep_remote_known(struct loop *l, const struct jid *who, const char *owner)
{
	send_last_of(l, owner, who);
}

static enum status pep_broadcast(struct hook_ctx *c)
{
	const char *type = xml_attr(c->st, "type");
	if (type != NULL) {
		if (strcmp(type, "unavailable") == 0)
			caps_forget(c->loop->srv, c->from);
		return OK;
	}
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, bare, sizeof bare);
	bool fresh;
	if (caps_presence(c->loop, c->from, c->st, c->a, &fresh, pep_local_known, bare) ==
	    CAPS_KNOWN)
		pep_local_known(c->loop, c->from, bare);
	return OK;
}

static enum status pep_presence_in(struct hook_ctx *c)
{
	struct loop *l = c->loop;
	/* Local senders are handled at their broadcast. */
	if (c->from->resource[0] == '\0' || config_find_host(l->srv->cfg, c->from->domain))
		return OK;
	const char *type = xml_attr(c->st, "type");
	if (type != NULL) {
		if (strcmp(type, "unavailable") == 0)
			caps_forget(l->srv, c->from);
		return OK;
	}
	char owner[2 * JID_PART_MAX + 2];
	jid_format_bare(c->to, owner, sizeof owner);
	bool fresh;
	if (caps_presence(l, c->from, c->st, c->a, &fresh, pep_remote_known, owner) == CAPS_KNOWN)
		pep_remote_known(l, c->from, owner);
	return OK;
}

static enum status pep_session_ended(struct hook_ctx *c)
{
	caps_forget(c->loop->srv, c->from);
	return OK;
}

/* The account's PEP nodes go with its stores; what it owns or subscribed
 * to on its host's pubsub service goes here. */
static enum status pep_account_deleted(struct hook_ctx *c)
{
	struct pubsub_host h;
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, bare, sizeof bare);
	if (pubsub_service_of(c->loop->srv, c->from->domain, &h))
		pubsub_owner_gone(c->loop, &h, bare);
	return OK;
}

static const char *const features[] = {
	NS_PUBSUB,
	NS_PUBSUB "#access-open",
	NS_PUBSUB "#access-presence",
	NS_PUBSUB "#access-roster",
	NS_PUBSUB "#access-whitelist",
	NS_PUBSUB "#auto-create",
	NS_PUBSUB "#config-node",
	NS_PUBSUB "#create-and-configure",
	NS_PUBSUB "#create-nodes",
	NS_PUBSUB "#delete-items",
	NS_PUBSUB "#delete-nodes",
	NS_PUBSUB "#filtered-notifications",
	NS_PUBSUB "#item-ids",
	NS_PUBSUB "#last-published",
	NS_PUBSUB "#manage-subscriptions",
	NS_PUBSUB "#member-affiliation",
	NS_PUBSUB "#modify-affiliations",
	NS_PUBSUB "#outcast-affiliation",
	NS_PUBSUB "#persistent-items",
	NS_PUBSUB "#presence-notifications",
	NS_PUBSUB "#publish",
	NS_PUBSUB "#publish-options",
	NS_PUBSUB "#publisher-affiliation",
	NS_PUBSUB "#purge-nodes",
	NS_PUBSUB "#retract-items",
	NS_PUBSUB "#retrieve-affiliations",
	NS_PUBSUB "#retrieve-default",
	NS_PUBSUB "#retrieve-items",
	NS_PUBSUB "#retrieve-subscriptions",
	NS_PUBSUB "#subscribe",
	NS_BOOKMARKS "#compat",
	"urn:xmpp:pep-vcard-conversion:0",
	NULL,
};

static const struct module_iq iqs[] = {
	{ "get", NS_PUBSUB, "pubsub", IQ_ACCOUNT, pep_iq },
	{ "set", NS_PUBSUB, "pubsub", IQ_ACCOUNT, pep_iq },
	{ "get", NS_PUBSUB_OWNER, "pubsub", IQ_ACCOUNT, pep_iq },
	{ "set", NS_PUBSUB_OWNER, "pubsub", IQ_ACCOUNT, pep_iq },
	{ "get", NS_DISCO_INFO, "query", IQ_ACCOUNT, pep_iq },
	{ "get", NS_DISCO_ITEMS, "query", IQ_ACCOUNT, pep_iq },
	{ "get", NS_PRIVATE, "query", IQ_ACCOUNT, pep_private_get },
	{ "set", NS_PRIVATE, "query", IQ_ACCOUNT, pep_private_set },
	{ "set", NS_VCARD, "vCard", IQ_ACCOUNT, pep_vcard_set },
	{ NULL, NULL, NULL, 0, NULL },
};

static const struct module_hook hooks[] = {
	{ HOOK_PRESENCE_BROADCAST, 50, pep_broadcast },
	{ HOOK_PRESENCE_DELIVER, 50, pep_presence_in },
	{ HOOK_SESSION_ENDED, 50, pep_session_ended },
	{ HOOK_ACCOUNT_DELETED, 50, pep_account_deleted },
	{ 0, 0, NULL },
};

const struct module mod_pep = { .name = "pep", .features = features, .iqs = iqs, .hooks = hooks };

/* Publish-subscribe (XEP-0060): the node engine shared by PEP, every
 * account's own service (XEP-0163, mod_pep.c), and the pubsub service of
 * each host (pubsub_service.c).
 *
 * A node is a record (its configuration, affiliations, subscriptions and
 * the ids of its items in publication order) in map store "pubsub_nodes"
 * of the service's storage owner, keyed by node name; its items are in map
 * store "pubsub_items:NODE", keyed by item id. PEP nodes belong to the
 * account (so deleting the account deletes them); a service's to
 * (service domain, ""). Nothing is cached: every request reads the store.
 * Changes to one node are serialised across loops by a lock picked by
 * hashing (service, node). The storage calls are the ps_store_* functions
 * of pubsub.c, so that they can move to a storage thread. */
#ifndef NATTER_PUBSUB_H
#define NATTER_PUBSUB_H

#include <pthread.h>
#include <stdbool.h>

#include "core/arena.h"
#include "core/config.h"
#include "jid/jid.h"
#include "modules/module.h"
#include "xml/xml.h"

struct loop;
struct server;
struct pubsub;

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_OWNER "http://jabber.org/protocol/pubsub#owner"
#define NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"
#define NS_PUBSUB_ERRORS "http://jabber.org/protocol/pubsub#errors"

/* Longest node name and item id, in bytes. */
#define PUBSUB_NAME_MAX 256

/* A service: an account's PEP service or a host's pubsub service. */
struct pubsub_host {
	bool pep;
	const char *jid;    /* its JID: the account's bare JID, or the service domain */
	const char *domain; /* its storage owner: the account's domain and */
	const char *local;  /* local part, or the service domain and "" */
	const struct config_host *host; /* the host it belongs to */
};

/* The server-wide state: locks and the services. Returns NULL and a
 * message in err when a service's domain does not fit. */
struct pubsub *pubsub_new(const struct config *cfg, char *err, size_t errlen);
void pubsub_free(struct pubsub *p);

/* Fills h for the PEP service of account (a bare JID, kept by the
 * caller while h is used). */
void pubsub_pep_host(struct server *srv, const struct jid *account, char *bare, size_t cap,
		     struct pubsub_host *h);

/* Answers an iq get/set to service h: <pubsub/> in NS_PUBSUB or
 * NS_PUBSUB_OWNER, disco#info with a node, disco#items. Returns DECLINED
 * for any other payload (a disco#info without node: the caller's). */
enum status pubsub_iq(struct iq_ctx *c, const struct pubsub_host *h);

/* Node configuration options for pubsub_publish_item (XEP-0223). */
struct pubsub_options {
	const char *access;  /* NULL: leave as is (presence for a new node) */
	int max_items;       /* 0: leave; -1: the limit ("max") */
	int persist;         /* -1: leave; else 0 or 1 */
	int send_last;       /* -1: leave */
};

/* Publishes item (an <item/> with one payload element, in any arena) to
 * node of h as the owner, creating the node with opts when missing, and
 * notifies. For the server's own conversions (bookmarks, avatars).
 * Returns 0 or -1. */
int pubsub_publish_item(struct loop *l, const struct pubsub_host *h, const char *node,
			struct xml_node *item, const struct pubsub_options *opts);

/* Retracts every item of node not named in keep (n_keep ids), with
 * notifications. Returns 0 or -1. */
int pubsub_retract_others(struct loop *l, const struct pubsub_host *h, const char *node,
			  const char *const *keep, int n_keep);

/* The node's items, oldest first, as <item/> elements (NS_PUBSUB) in a;
 * at most max. Returns how many (0 when the node does not exist), -1 on a
 * store error. */
int pubsub_items(struct loop *l, const struct pubsub_host *h, const char *node,
		 struct arena *a, struct xml_node **out, int max);

/* Sends who (a full JID) the last item of each node of h whose
 * notifications its caps want and that it may see (XEP-0163 §4.3). */
void pubsub_send_last(struct loop *l, const struct pubsub_host *h, const struct jid *who);

/* Deletes the nodes of a pubsub service that only owner (a bare JID)
 * owns, and owner's subscriptions and affiliations elsewhere in it. */
void pubsub_owner_gone(struct loop *l, const struct pubsub_host *h, const char *owner);


/* --- the host's pubsub services (the list is built by pubsub_new) --- */

struct pubsub_service {
	const struct config_host *host;
	char domain[JID_PART_MAX + 1];
};

struct pubsub {
	/* Changes to one node, across loops: by hash of (service, node). */
	pthread_mutex_t locks[64];
	/* The count of nodes each creator has (a service's STORE_CREATORS):
	 * taken while a node's lock is held, so never one of those. */
	pthread_mutex_t creators_lock;
	struct pubsub_service *services;
	size_t n_services;
};

#endif

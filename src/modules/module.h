/* Feature modules: each is a table naming its disco features and the iq
 * payloads it answers (STYLE.md habit 2). Compiled in; the list is
 * modules.c. A module never reaches into another module's state. */
#ifndef NATTER_MODULE_H
#define NATTER_MODULE_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/status.h"
#include "jid/jid.h"
#include "router/hooks.h"
#include "xml/xml.h"

struct loop;
struct config_host;
struct server;

/* One iq addressed to the server (to_account false: to the domain) or to
 * an account's bare JID that the server answers on its behalf. */
struct iq_ctx {
	struct loop *loop;
	struct xml_node *iq;        /* the request, from already stamped */
	struct xml_node *payload;   /* its single child element */
	struct arena *a;
	const struct jid *from;
	const struct jid *to;       /* domain only, or bare JID */
	bool to_account;
	/* pending_queued(loop->store) when the iq came: module_reply holds a
	 * result until the map writes made since are committed. */
	unsigned long long writes;
};

enum iq_target { IQ_SERVER = 1, IQ_ACCOUNT = 2 };

struct module_iq {
	const char *type;   /* "get" or "set" */
	const char *ns;     /* payload namespace */
	const char *name;   /* payload element name */
	unsigned targets;   /* IQ_SERVER | IQ_ACCOUNT */
	/* Returns OK when it answered (module_reply / module_error). */
	enum status (*handle)(struct iq_ctx *c);
};

struct module {
	const char *name;
	const char *const *features; /* NULL-terminated disco features */
	const struct module_iq *iqs; /* terminated by an entry with type NULL */
	const struct module_hook *hooks; /* terminated by handle NULL (hooks.h) */
	/* Whether the module serves host h (its features are shown, its
	 * handlers answer); NULL: every host. */
	bool (*on_host)(const struct config_host *h);
};

/* Whether m serves the host of domain (a host's domain; false for others
 * when m has on_host). */
bool module_on_host(const struct module *m, struct loop *l, const char *domain);

/* NULL-terminated list of every compiled-in module. */
extern const struct module *const modules_all[];

/* Finds and runs the handler for c->iq. Returns OK if one answered,
 * DECLINED if none matched (the caller answers service-unavailable). */
enum status module_dispatch_iq(struct iq_ctx *c);

/* The node the server's entity capabilities (XEP-0115) are published under. */
#define DISCO_CAPS_NODE "https://natter.chat"

/* Writes the XEP-0115 verification string of the host domain (base64
 * SHA-1 over the server's disco identity and the features of every module
 * shown there) into out (>= 29 bytes). */
void disco_caps_ver(const struct server *srv, const char *domain, char *out, size_t cap);

/* Sends <iq type='result'/> for c->iq with payload (may be NULL). */
/* Sends the result; when the handler queued map writes (pending.h), once
 * they are committed (and an error instead if they could not be), so
 * that a result means what it set is durable, and results stay in order
 * with the iqs held behind the store (deliver.c). */
void module_reply(struct iq_ctx *c, struct xml_node *payload);
/* Sends an error reply with a stanza error condition. */
void module_error(struct iq_ctx *c, const char *type, const char *condition);

#endif

#include <stdlib.h>
#include <string.h>

#include "core/server.h"
#include "core/util.h"
#include "modules/module.h"
#include "router/deliver.h"
#include "storage/pending.h"
#include "storage/storeq.h"
#include "xml/xml_parse.h"

extern const struct module mod_pep;
extern const struct module mod_ping;
extern const struct module mod_disco;
extern const struct module mod_roster;
extern const struct module mod_blocking;
extern const struct module mod_version;
extern const struct module mod_time;
extern const struct module mod_last;
extern const struct module mod_vcard;
extern const struct module mod_private;
extern const struct module mod_register;
extern const struct module mod_offline;
extern const struct module mod_carbons;
extern const struct module mod_mam;
extern const struct module mod_journal;
extern const struct module mod_push;

/* mod_pep comes first: it answers disco#items and node queries to
 * accounts, and sees private XML and vCard sets before mod_private and
 * mod_vcard do (for XEP-0411 and XEP-0398), then declines. */
const struct module *const modules_all[] = { &mod_pep, &mod_disco, &mod_ping, &mod_roster, &mod_blocking,
					      &mod_version, &mod_time, &mod_last, &mod_vcard,
					      &mod_private, &mod_register, &mod_offline,
					      &mod_carbons, &mod_mam, &mod_journal, &mod_push,
					      NULL };

bool module_on_host(const struct module *m, struct loop *l, const char *domain)
{
	if (m->on_host == NULL)
		return true;
	const struct config_host *h = config_find_host(l->srv->cfg, domain);
	return h != NULL && m->on_host(h);
}

enum status module_dispatch_iq(struct iq_ctx *c)
{
	const char *type = xml_attr(c->iq, "type");
	if (c->payload == NULL || type == NULL)
		return DECLINED;
	unsigned target = c->to_account ? IQ_ACCOUNT : IQ_SERVER;
	c->writes = pending_queued(c->loop->store);
	for (const struct module *const *m = modules_all; *m; m++) {
		for (const struct module_iq *h = (*m)->iqs; h && h->type; h++) {
			if ((h->targets & target) && strcmp(h->type, type) == 0 &&
			    xml_is(c->payload, h->ns, h->name) &&
			    module_on_host(*m, c->loop, c->to->domain)) {
				enum status st = h->handle(c);
				if (st != DECLINED)
					return OK;
			}
		}
	}
	return DECLINED;
}

static void reply_from(struct iq_ctx *c, struct xml_node *reply)
{
	char to_str[3 * JID_PART_MAX + 3];
	if (c->to_account)
		jid_format_bare(c->to, to_str, sizeof to_str);
	else
		jid_format(c->to, to_str, sizeof to_str);
	xml_set_attr(c->a, reply, "from", to_str);
}

/* A result held until the writes before it are committed: copies of the
 * request and the result, with their own arena. */
struct held_reply {
	struct arena a;
	struct xml_node *iq, *result;
	struct jid to;
};

static int held_reply_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	(void)st, (void)drv, (void)arg;
	return 0;
}

static void held_reply_done(struct loop *l, void *arg, int rc)
{
	struct held_reply *h = arg;
	if (l != NULL) {
		l->iqs_waiting--;
		if (rc < 0)
			deliver_error(l, h->iq, &h->a, "wait", "internal-server-error");
		else
			deliver_to_jid(l, h->result, &h->to);
	}
	arena_reset(&h->a);
	free(h);
}

void module_reply(struct iq_ctx *c, struct xml_node *payload)
{
	struct xml_node *r = xml_new(c->a, NS_CLIENT, "iq");
	const char *id = xml_attr(c->iq, "id");
	xml_set_attr(c->a, r, "type", "result");
	if (id)
		xml_set_attr(c->a, r, "id", id);
	reply_from(c, r);
	xml_set_attr(c->a, r, "to", xml_attr(c->iq, "from"));
	if (payload != NULL) {
		payload->parent = r;
		r->children = r->last = payload;
	}
	struct loop *l = c->loop;
	if (pending_queued(l->store) == c->writes) {
		deliver_to_jid(l, r, c->from);
		return;
	}
	struct held_reply *h = xcalloc(1, sizeof *h);
	arena_init(&h->a);
	h->iq = xml_copy(&h->a, c->iq);
	h->result = xml_copy(&h->a, r);
	h->to = *c->from;
	l->iqs_waiting++;
	storeq_call(l->srv->storeq, l, held_reply_run, held_reply_done, h);
}

void module_error(struct iq_ctx *c, const char *type, const char *condition)
{
	deliver_error(c->loop, c->iq, c->a, type, condition);
}

/* The archive-all journal's module (docs/archive.md, "The journal"): it
 * hands every message through a host with a journal to the host's journal
 * writer, shows the journal's disco feature on such hosts, and tells each
 * session at login that it is recorded.
 *
 * Each message is recorded once per host:
 *   - HOOK_MESSAGE_SENT: a local account sent it (to anyone: a local
 *     account, another domain, the server): recorded in the sender's
 *     host's journal, and in the recipient's when that is another local
 *     host with a journal;
 *   - HOOK_MESSAGE_DELIVER: only when the sender is not a local account
 *     (another domain, a room), since a local sender's message was
 *     recorded when it was sent;
 *   - HOOK_ROOM_MESSAGE: each groupchat message a room accepted, once,
 *     in the journal of the room service's host.
 * A message with neither a body nor a subject (chat states, receipts,
 * markers) is not recorded: it carries no conversation.
 *
 * When the writer cannot take a message (its queue stayed full for
 * queue_wait_ms, or writing failed) the message is refused with
 * wait/resource-constraint and goes nowhere: nothing passes unrecorded. */
#include <stdlib.h>
#include <string.h>

#include "core/server.h"
#include "core/util.h"
#include "journal/journal_writer.h"
#include "modules/module.h"
#include "muc/muc.h"
#include "router/deliver.h"

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static char *child_text(struct arena *a, const struct xml_node *st, const char *name)
{
	const struct xml_node *n = xml_child(st, NS_CLIENT, name);
	return n ? xstrdup(xml_text(a, n)) : NULL;
}

/* The record for st, or NULL when it carries no body and no subject. */
static struct journal_msg *journal_capture(const struct hook_ctx *c, const char *how)
{
	struct xml_node *st = c->st;
	if (xml_child(st, NS_CLIENT, "body") == NULL && xml_child(st, NS_CLIENT, "subject") == NULL)
		return NULL;
	char from[3 * JID_PART_MAX + 3], to[3 * JID_PART_MAX + 3];
	if (jid_format(c->from, from, sizeof from) < 0 || jid_format(c->to, to, sizeof to) < 0)
		return NULL;
	struct journal_msg *m = xcalloc(1, sizeof *m);
	m->time_us = journal_writer_now_us();
	m->how = xstrdup(how);
	m->from = xstrdup(from);
	m->to = xstrdup(to);
	const char *type = xml_attr(st, "type");
	m->type = xstrdup(type ? type : "normal");
	m->id = dup_or_null(xml_attr(st, "id"));
	m->thread = child_text(c->a, st, "thread");
	m->subject = child_text(c->a, st, "subject");
	m->body = child_text(c->a, st, "body");
	return m;
}

/* Records st in host's journal, if it has one. Returns OK (recorded or
 * nothing to record) or ERROR (refused by the writer). */
static enum status journal_record(const struct hook_ctx *c, const char *host, const char *how)
{
	struct journal_writer *w = journal_writer_of(c->loop->srv, host);
	if (w == NULL)
		return OK;
	struct journal_msg *m = journal_capture(c, how);
	if (m == NULL)
		return OK;
	return journal_writer_submit(w, m);
}

static bool journal_local_account(const struct hook_ctx *c, const struct jid *j)
{
	return j->local[0] != '\0' && config_find_host(c->loop->srv->cfg, j->domain) != NULL;
}

static enum status journal_refuse(struct hook_ctx *c)
{
	deliver_error(c->loop, c->st, c->a, "wait", "resource-constraint");
	return DONE;
}

static enum status journal_on_sent(struct hook_ctx *c)
{
	if (journal_record(c, c->from->domain, "sent") != OK)
		return journal_refuse(c);
	if (strcmp(c->to->domain, c->from->domain) != 0 &&
	    journal_record(c, c->to->domain, "sent") != OK)
		return journal_refuse(c);
	return OK;
}

static enum status journal_on_deliver(struct hook_ctx *c)
{
	if (journal_local_account(c, c->from))
		return OK;
	if (journal_record(c, c->to->domain, c->offline ? "offline" : "received") != OK)
		return journal_refuse(c);
	return OK;
}

/* The stanza is already the occupants' copy (from the room nick): the
 * refusal goes to the real sender as a new error message. */
static enum status journal_on_room(struct hook_ctx *c)
{
	const struct config_host *h = muc_service_host(c->loop->srv, c->to->domain);
	if (h == NULL || journal_record(c, h->domain, "groupchat") == OK)
		return OK;
	char room[2 * JID_PART_MAX + 2], sender[3 * JID_PART_MAX + 3];
	jid_format_bare(c->to, room, sizeof room);
	jid_format(c->from, sender, sizeof sender);
	struct arena a;
	arena_init(&a);
	struct xml_node *m = xml_new(&a, NS_CLIENT, "message");
	xml_set_attr(&a, m, "from", room);
	xml_set_attr(&a, m, "to", sender);
	xml_set_attr(&a, m, "type", "error");
	xml_set_attr(&a, m, "id", xml_attr(c->st, "id"));
	struct xml_node *err = xml_add_child(&a, m, NS_CLIENT, "error");
	xml_set_attr(&a, err, "type", "wait");
	xml_add_child(&a, err, NS_STANZA_ERRORS, "resource-constraint");
	deliver_to_jid(c->loop, m, c->from);
	arena_reset(&a);
	return DONE;
}

/* The login notice: a message from the server to the new session. */
static enum status journal_on_session(struct hook_ctx *c)
{
	const struct config_host *h = config_find_host(c->loop->srv->cfg, c->from->domain);
	if (h == NULL || !h->journal.enabled || h->journal.notice == NULL)
		return OK;
	char to[3 * JID_PART_MAX + 3];
	jid_format(c->from, to, sizeof to);
	struct arena a;
	arena_init(&a);
	struct xml_node *m = xml_new(&a, NS_CLIENT, "message");
	xml_set_attr(&a, m, "from", h->domain);
	xml_set_attr(&a, m, "to", to);
	xml_set_attr(&a, m, "type", "normal");
	xml_set_attr(&a, m, "id", "journal-notice");
	struct xml_node *subject = xml_add_child(&a, m, NS_CLIENT, "subject");
	xml_add_text(&a, subject, "Message journal", strlen("Message journal"));
	struct xml_node *body = xml_add_child(&a, m, NS_CLIENT, "body");
	xml_add_text(&a, body, h->journal.notice, strlen(h->journal.notice));
	xml_add_child(&a, m, NS_JOURNAL, "journal");
	deliver_to_jid(c->loop, m, c->from);
	arena_reset(&a);
	return OK;
}

/* The disco feature shows on hosts whose journal is on. */
static bool journal_on_host(const struct config_host *h)
{
	return h->journal.enabled;
}

static const char *const features[] = { NS_JOURNAL, NULL };

/* Early (priority -100): a message the journal refuses must stop before
 * any other module acts on it (archives, carbons). */
static const struct module_hook hooks[] = {
	{ HOOK_MESSAGE_SENT, -100, journal_on_sent },
	{ HOOK_MESSAGE_DELIVER, -100, journal_on_deliver },
	{ HOOK_ROOM_MESSAGE, -100, journal_on_room },
	{ HOOK_SESSION_STARTED, 100, journal_on_session },
	{ 0, 0, NULL },
};

const struct module mod_journal = { .name = "journal", .features = features, .hooks = hooks,
				    .on_host = journal_on_host };

/* XEP-0012: Last Activity.
 *
 * To the server: seconds since natterd started. To an account's bare JID
 * (answered by the server, XEP-0012 §4): 0 while the account has an
 * available session, else seconds since its last session ended, which
 * presence.c records at every session end. Only the account itself and
 * contacts allowed to see its presence (subscription from or both) may
 * ask. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/server.h"
#include "modules/module.h"
#include "modules/roster.h"
#include "router/router.h"

#define NS_LAST "jabber:iq:last"

/* Written by presence.c: map store "account", key "last", the logout time
 * as decimal seconds since the epoch. */
#define STORE_ACCOUNT "account"
#define KEY_LAST "last"

/* Seconds the process has run: now (CLOCK_BOOTTIME) minus its start time,
 * which /proc/self/stat gives in clock ticks after boot (field 22). Read
 * each time rather than remembered, so the module keeps no state. Returns
 * 0 or -1 (no /proc). */
static int last_uptime(long long *out)
{
	char line[2048];
	FILE *f = fopen("/proc/self/stat", "re");
	if (f == NULL)
		return -1;
	char *got = fgets(line, sizeof line, f);
	fclose(f);
	if (got == NULL)
		return -1;
	/* Field 2 is the command name in parentheses and may hold spaces or
	 * ')': the fields after it are counted from the last ')'. */
	char *p = strrchr(line, ')');
	if (p == NULL)
		return -1;
	char *save = NULL, *tok;
	int field = 2;
	unsigned long long start = 0;
	for (tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		if (++field == 22)
			break;
	if (tok == NULL)
		return -1;
	start = strtoull(tok, NULL, 10);
	long hz = sysconf(_SC_CLK_TCK);
	struct timespec now;
	if (hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &now) != 0)
		return -1;
	long long up = (long long)now.tv_sec - (long long)(start / (unsigned long long)hz);
	*out = up < 0 ? 0 : up;
	return 0;
}

static void reply_seconds(struct iq_ctx *c, long long seconds)
{
	char s[32];
	snprintf(s, sizeof s, "%lld", seconds);
	struct xml_node *q = xml_new(c->a, NS_LAST, "query");
	xml_set_attr(c->a, q, "seconds", s);
	module_reply(c, q);
}

static enum status last_server(struct iq_ctx *c)
{
	long long up;
	if (last_uptime(&up) != 0) {
		module_error(c, "cancel", "service-unavailable");
		return OK;
	}
	reply_seconds(c, up);
	return OK;
}

/* The account itself, or a contact the account shares its presence with.
 * Returns 1 allowed, 0 not, -1 store error. */
static int last_allowed(struct iq_ctx *c, const char *owner, const char *requester)
{
	if (strcmp(owner, requester) == 0)
		return 1;
	struct roster_item it;
	int rc = roster_load(c->loop, owner, requester, c->a, &it);
	if (rc <= 0)
		return rc;
	return (it.sub & SUB_FROM) != 0;
}

static enum status last_account(struct iq_ctx *c)
{
	char owner[2 * JID_PART_MAX + 2], requester[2 * JID_PART_MAX + 2];
	jid_format_bare(c->to, owner, sizeof owner);
	jid_format_bare(c->from, requester, sizeof requester);
	switch (last_allowed(c, owner, requester)) {
	case 1:
		break;
	case 0:
		module_error(c, "auth", "forbidden");
		return OK;
	default:
		module_error(c, "wait", "internal-server-error");
		return OK;
	}

	struct router_target t[1];
	if (router_find_available(c->loop->srv->router, owner, t, 1) > 0) {
		reply_seconds(c, 0);
		return OK;
	}

	struct server *srv = c->loop->srv;
	struct buf b;
	buf_init(&b);
	int rc = srv->storage->map_get(c->loop->store, c->to->domain, c->to->local, STORE_ACCOUNT,
				       KEY_LAST, &b);
	long long stamp = -1;
	if (rc == 0) {
		char *end;
		buf_append(&b, "", 1);
		stamp = strtoll(b.data, &end, 10);
		if (end == b.data || *end != '\0' || stamp < 0) {
			log_error("last activity of %s: unreadable stamp", owner);
			stamp = -1;
		}
	}
	buf_free(&b);
	if (rc < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	if (stamp < 0) {
		/* Never logged in (or the record is unusable). */
		module_error(c, "cancel", "item-not-found");
		return OK;
	}
	long long ago = (long long)time(NULL) - stamp;
	reply_seconds(c, ago < 0 ? 0 : ago);
	return OK;
}

static const char *const features[] = { NS_LAST, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_LAST, "query", IQ_SERVER, last_server },
	{ "get", NS_LAST, "query", IQ_ACCOUNT, last_account },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_last = { "last", features, iqs, NULL, NULL };

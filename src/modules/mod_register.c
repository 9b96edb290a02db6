/* XEP-0077: In-Band Registration (register.h).
 *
 * After login, to the server or to the account itself: get says the
 * account is registered, set changes its password or, with <remove/>,
 * deletes it. Before login, register_preauth() creates accounts when the
 * operator allows it (allow_registration), at most one per address per
 * registration_interval and registrations_per_hour from all addresses
 * together (so many addresses do not make many accounts).
 *
 * Passwords become SCRAM keys with storage_credentials_from_password()
 * (PBKDF2, milliseconds), always on a worker thread (work.h); the storage
 * thread writes them (storeq.h), and the answer follows once they are
 * committed. */
#include "modules/register.h"
#include "auth/fast.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "c2s/c2s.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/server.h"
#include "core/util.h"
#include "core/work.h"
#include "jid/jid.h"
#include "modules/module.h"
#include "router/hooks.h"
#include "modules/presence.h"
#include "router/deliver.h"
#include "storage/pending.h"
#include "storage/storeq.h"

/* Longest password accepted, in bytes (as natterctl). */
#define REGISTER_PASSWORD_MAX 1023

/* Addresses remembered by the rate limit. */
#define REGISTER_RATE_SLOTS 256

struct register_slot {
	unsigned char key[16]; /* netaddr_key(): IPv4-mapped, or an IPv6 prefix */
	bool used;
	unsigned long long at; /* now_ms() of the address's last registration */
};

/* What register_rate_take() changed, so a failed registration can give
 * its turn back. */
struct register_turn {
	size_t slot;
	unsigned long long at;
	bool had;                /* the address was in the slot before */
	unsigned long long prev; /* its time then */
	bool addr_took;          /* the address's turn was taken */
	unsigned long long step; /* what the server-wide turn added, or 0 */
};

/* The one piece of process-wide state in the modules, because the limit
 * is per address across every loop and struct server has no place for
 * module state. The table is fixed: when every slot is taken the address
 * registered longest ago is forgotten, so memory never grows. The same
 * lock makes "does the account exist, then create it" one step for all
 * loops of this process. */
static struct {
	pthread_mutex_t lock;
	struct register_slot slots[REGISTER_RATE_SLOTS];
	/* Server-wide: the time (now_ms()) when the hour's budget would be
	 * fully spent at the pace taken so far; registrations_per_hour may
	 * come at once, then one per hour/registrations_per_hour. */
	unsigned long long server_busy_until;
} register_state = { .lock = PTHREAD_MUTEX_INITIALIZER };

#define REGISTER_HOUR_MS (3600 * 1000ULL)

/* The address's slot in the table, or NULL; *oldest gets the slot to
 * reuse for a new address. Under register_state.lock. */
static struct register_slot *register_rate_find(const unsigned char key[16],
						struct register_slot **oldest)
{
	struct register_slot *mine = NULL;
	*oldest = NULL;
	for (size_t i = 0; i < REGISTER_RATE_SLOTS; i++) {
		struct register_slot *s = &register_state.slots[i];
		if (s->used && memcmp(s->key, key, 16) == 0)
			mine = s;
		if (*oldest == NULL || ((*oldest)->used && (!s->used || s->at < (*oldest)->at)))
			*oldest = s;
	}
	return mine;
}

/* Takes a turn to register for the address key: one per interval_s seconds
 * per address (0 = no limit), per_hour from all addresses together (0 =
 * no limit). Returns 0 (turn filled in) or -1 when either says no; then
 * nothing was taken. */
static int register_rate_take(const unsigned char key[16], int interval_s, int per_hour,
			      struct register_turn *turn)
{
	unsigned long long now = now_ms();
	unsigned long long step = per_hour > 0 ? REGISTER_HOUR_MS / (unsigned)per_hour : 0;
	memset(turn, 0, sizeof *turn);
	pthread_mutex_lock(&register_state.lock);
	struct register_slot *oldest;
	struct register_slot *mine = register_rate_find(key, &oldest);
	unsigned long long busy = register_state.server_busy_until;
	if (busy < now)
		busy = now;
	if ((interval_s > 0 && mine != NULL &&
	     now - mine->at < (unsigned long long)interval_s * 1000) ||
	    (step > 0 && busy + step > now + REGISTER_HOUR_MS)) {
		pthread_mutex_unlock(&register_state.lock);
		return -1;
	}
	if (step > 0) {
		register_state.server_busy_until = busy + step;
		turn->step = step;
	}
	if (interval_s > 0) {
		turn->had = mine != NULL;
		turn->prev = mine != NULL ? mine->at : 0;
		if (mine == NULL)
			mine = oldest;
		memcpy(mine->key, key, 16);
		mine->used = true;
		mine->at = now;
		turn->slot = (size_t)(mine - register_state.slots);
		turn->at = now;
		turn->addr_took = true;
	}
	pthread_mutex_unlock(&register_state.lock);
	return 0;
}

/* A registration that failed after taking its turn does not count. */
static void register_rate_give_back(const unsigned char key[16], const struct register_turn *turn)
{
	pthread_mutex_lock(&register_state.lock);
	struct register_slot *s = &register_state.slots[turn->slot];
	register_state.server_busy_until -= turn->step;
	if (turn->addr_took && s->used && s->at == turn->at && memcmp(s->key, key, 16) == 0) {
		s->used = turn->had;
		s->at = turn->prev;
	}
	pthread_mutex_unlock(&register_state.lock);
}

/* On the storage thread: whether local@domain has an account (user_get's
 * 0 found, 1 not found, -1 error), its keys wiped at once. */
static int account_lookup(struct storage *st, const struct storage_driver *drv,
			  const char *domain, const char *local)
{
	struct user_credentials cred;
	int rc = drv->user_get(st, domain, local, &cred);
	explicit_bzero(&cred, sizeof cred);
	return rc;
}

/* The text of q's child name, or NULL when absent or empty. */
static const char *register_field(struct arena *a, const struct xml_node *q, const char *name)
{
	struct xml_node *n = xml_child(q, NS_REGISTER, name);
	const char *text = n != NULL ? xml_text(a, n) : NULL;
	return text != NULL && text[0] != '\0' ? text : NULL;
}

/* Wipes the arena copy xml_text() made of a password. */
static void register_wipe(const char *text)
{
	if (text != NULL)
		explicit_bzero((char *)text, strlen(text));
}

/* --- after login: jabber:iq:register handlers --- */

/* Only the sender's own account: iq to its own domain or bare JID. */
static bool register_own(const struct iq_ctx *c)
{
	if (strcmp(c->to->domain, c->from->domain) != 0)
		return false;
	return !c->to_account || strcmp(c->to->local, c->from->local) == 0;
}

static enum status register_get(struct iq_ctx *c)
{
	if (!register_own(c)) {
		module_error(c, "auth", "forbidden");
		return OK;
	}
	struct xml_node *q = xml_new(c->a, NS_REGISTER, "query");
	xml_add_child(c->a, q, NS_REGISTER, "registered");
	struct xml_node *u = xml_add_child(c->a, q, NS_REGISTER, "username");
	xml_add_text(c->a, u, c->from->local, strlen(c->from->local));
	xml_add_child(c->a, q, NS_REGISTER, "password");
	module_reply(c, q);
	return OK;
}

/* An account removal on its way through the storage thread. */
struct removal {
	struct server *srv;
	struct jid who;  /* the requester */
	char *id;        /* the request's id, or NULL */
	int loops_left;  /* (atomic) loops yet to pass the kick */
	char bare[2 * JID_PART_MAX + 2];
	char asked[2 * JID_PART_MAX + 2]; /* the JID asked: the answer's from */
	char full[3 * JID_PART_MAX + 3];
};

/* On the storage thread, after every write queued before it (the hooks'
 * deletions among them): the account and its stores go in one savepoint
 * of the batch. */
static int removal_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct removal *r = arg;
	return drv->user_del(st, r->who.domain, r->who.local);
}

/* What a session of the removed account stored after the removal was
 * queued, before it was closed (archived messages; its map writes were
 * dropped), goes too (user_del deletes the stores with or without the
 * account row), unless the name was registered again meanwhile
 * (natterctl). */
static int removal_sweep_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct removal *r = arg;
	int rc = account_lookup(st, drv, r->who.domain, r->who.local);
	if (rc != 1)
		return rc < 0 ? -1 : 0;
	return drv->user_del(st, r->who.domain, r->who.local) < 0 ? -1 : 0;
}

static void removal_free(struct removal *r)
{
	free(r->id);
	free(r);
}

/* The sweep is committed: nothing of the account's is left to write,
 * and the table forgets the removal (it would grow with every one). */
static void removal_swept(struct loop *l, void *arg, int rc)
{
	(void)l;
	struct removal *r = arg;
	if (rc < 0)
		log_error("account %s: stores written after its removal could not be deleted",
			  r->bare);
	pending_account_exists(r->srv->pending, r->who.domain, r->who.local);
	removal_free(r);
}

/* On each client loop, after the kick of the account's sessions there
 * (it came first through the same inbox): once every loop has passed,
 * none of them writes any more, and the sweep goes after their writes. */
static void removal_passed(struct loop *l, void *arg)
{
	struct removal *r = arg;
	if (__atomic_sub_fetch(&r->loops_left, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (l == NULL || loop_stopping(l)) {
		removal_free(r); /* stopping: the sweep would find no store */
		return;
	}
	storeq_call(l->srv->storeq, l, removal_sweep_run, removal_swept, r);
}

/* The removal is committed: the result goes out before the account's
 * sessions are closed (XEP-0077 §3.2; they no longer have an account). */
static void removal_done(struct loop *l, void *arg, int rc)
{
	struct removal *r = arg;
	if (l == NULL || loop_stopping(l)) {
		removal_free(r);
		return;
	}
	switch (rc) {
	case 0:
		log_info("account %s removed in-band", r->bare);
		deliver_iq_answer(l, r->asked, r->full, r->id, NULL, NULL, NULL);
		c2s_kick_account(l, r->bare, "not-authorized");
		r->loops_left = l->srv->n_loops;
		for (int i = 0; i < l->srv->n_loops; i++)
			loop_call(&l->srv->loops[i], removal_passed, r);
		return;
	case 1:
		deliver_iq_answer(l, r->asked, r->full, r->id, "cancel", "registration-required",
				  NULL);
		break;
	default:
		deliver_iq_answer(l, r->asked, r->full, r->id, "wait", "internal-server-error",
				  NULL);
		break;
	}
	/* Not removed: its sessions go on, and their writes are kept again. */
	pending_account_exists(l->srv->pending, r->who.domain, r->who.local);
	removal_free(r);
}

/* XEP-0077 §3.2. The account goes on the storage thread, behind the
 * writes queued before (no loop waits for them, nor for the store's
 * write lock); the answer follows its commit. */
static void register_remove(struct iq_ctx *c)
{
	if (xml_element_count(c->payload) != 1) {
		module_error(c, "modify", "bad-request");
		return;
	}
	struct loop *l = c->loop;
	pending_account_removed(l->srv->pending, c->from->domain, c->from->local);
	presence_account_removed(l, c->from);
	struct jid account = *c->from;
	account.resource[0] = '\0';
	struct hook_ctx hc = { .loop = l, .from = &account, .to = &account };
	hooks_run(HOOK_ACCOUNT_DELETED, &hc);
	struct removal *r = xcalloc(1, sizeof *r);
	const char *id = xml_attr(c->iq, "id");
	r->srv = l->srv;
	r->who = *c->from;
	r->id = id ? xstrdup(id) : NULL;
	jid_format_bare(c->from, r->bare, sizeof r->bare);
	jid_format_bare(c->to, r->asked, sizeof r->asked);
	jid_format(c->from, r->full, sizeof r->full);
	storeq_call(l->srv->storeq, l, removal_run, removal_done, r);
}

/* A password change waiting for its PBKDF2 on a worker thread. */
struct password_change {
	char *password;
	unsigned iterations;
	struct user_credentials cred;
	int rc;
	char *id;        /* the request's id, or NULL */
	char *requester; /* full JID the answer goes to */
	char *account;   /* the JID it comes from: the one asked (the
			  * account, or its server) */
	struct jid who;
};

static void password_work(void *arg)
{
	struct password_change *p = arg;
	p->rc = storage_credentials_from_password(p->password, p->iterations, &p->cred);
}

/* The answer to a request answered after a worker finished. */
static void answer_later(struct loop *l, const struct password_change *p, const char *etype,
			 const char *condition)
{
	deliver_iq_answer(l, p->account, p->requester, p->id, etype, condition, NULL);
}

static void password_free(struct password_change *p)
{
	explicit_bzero(&p->cred, sizeof p->cred);
	free(p->id);
	free(p->requester);
	free(p->account);
	free(p);
}

/* On the storage thread: the new keys replace the old, unless the
 * account went meanwhile (1; user_put would make it again). */
static int password_put_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct password_change *p = arg;
	int rc = account_lookup(st, drv, p->who.domain, p->who.local);
	if (rc != 0)
		return rc;
	return drv->user_put(st, p->who.domain, p->who.local, &p->cred);
}

/* The new keys are committed (rc 0): the answer says so. */
static void password_put_done(struct loop *l, void *arg, int rc)
{
	struct password_change *p = arg;
	if (l != NULL && !loop_stopping(l)) {
		if (rc < 0) {
			answer_later(l, p, "wait", "internal-server-error");
		} else if (rc == 1) {
			answer_later(l, p, "cancel", "registration-required");
		} else {
			log_info("account %s@%s changed its password in-band", p->who.local,
				 p->who.domain);
			/* The FAST tokens the old password got end with it. */
			fast_forget_account(l, p->who.domain, p->who.local);
			answer_later(l, p, NULL, NULL);
		}
	}
	password_free(p);
}

static void password_done(struct loop *l, void *arg)
{
	struct password_change *p = arg;
	register_wipe(p->password);
	free(p->password);
	p->password = NULL;
	if (loop_stopping(l)) {
		password_free(p);
	} else if (p->rc != 0) {
		answer_later(l, p, "modify", "not-acceptable"); /* SASLprep refused it */
		password_free(p);
	} else {
		/* Written by the storage thread: the loop never waits for the
		 * store's write lock. */
		storeq_call(l->srv->storeq, l, password_put_run, password_put_done, p);
	}
}

/* XEP-0077 §3.3: <username/> must name the sender's own account. The new
 * keys are derived on a worker thread (PBKDF2 takes milliseconds); the
 * answer follows from there. */
static void register_password(struct iq_ctx *c)
{
	const char *user = register_field(c->a, c->payload, "username");
	const char *pass = register_field(c->a, c->payload, "password");
	char local[JID_PART_MAX + 1];
	struct loop *l = c->loop;

	if (user == NULL || pass == NULL || strlen(pass) > REGISTER_PASSWORD_MAX) {
		module_error(c, "modify", "bad-request");
	} else if (jid_prep_local(user, strlen(user), local, sizeof local) < 0 ||
		   strcmp(local, c->from->local) != 0) {
		module_error(c, "auth", "forbidden");
	} else {
		char buf[3 * JID_PART_MAX + 3];
		struct password_change *p = xcalloc(1, sizeof *p);
		const char *id = xml_attr(c->iq, "id");
		p->password = xstrdup(pass);
		p->iterations = (unsigned)l->srv->cfg->scram_iterations;
		p->id = id ? xstrdup(id) : NULL;
		jid_format(c->from, buf, sizeof buf);
		p->requester = xstrdup(buf);
		jid_format_bare(c->to, buf, sizeof buf);
		p->account = xstrdup(buf);
		p->who = *c->from;
		if (work_submit(l, password_work, password_done, p) != 0) {
			register_wipe(p->password);
			free(p->password);
			free(p->id);
			free(p->requester);
			free(p->account);
			free(p);
			module_error(c, "wait", "internal-server-error");
		}
	}
	register_wipe(pass);
}

static enum status register_set(struct iq_ctx *c)
{
	const struct config_host *host = config_find_host(c->loop->srv->cfg, c->from->domain);
	if (!register_own(c))
		module_error(c, "auth", "forbidden");
	else if (host != NULL && host->auth != HOST_AUTH_INTERNAL)
		/* The directory owns passwords and accounts. */
		module_error(c, "cancel", "not-allowed");
	else if (xml_child(c->payload, NS_REGISTER, "remove") != NULL)
		register_remove(c);
	else
		register_password(c);
	return OK;
}

/* --- before login --- */

/* The reply iq: the request's id, no addresses (the stream has none yet). */
static struct xml_node *preauth_iq(struct arena *a, const struct xml_node *req, const char *type)
{
	struct xml_node *r = xml_new(a, NS_CLIENT, "iq");
	const char *id = xml_attr(req, "id");
	xml_set_attr(a, r, "type", type);
	if (id != NULL)
		xml_set_attr(a, r, "id", id);
	return r;
}

static void preauth_error(struct arena *a, const struct xml_node *req, const char *type,
			  const char *condition, struct buf *reply)
{
	struct xml_node *r = preauth_iq(a, req, "error");
	struct xml_node *err = xml_add_child(a, r, NS_CLIENT, "error");
	xml_set_attr(a, err, "type", type);
	xml_add_child(a, err, NS_STANZA_ERRORS, condition);
	xml_serialize(r, NS_CLIENT, reply);
}

static void preauth_form(struct arena *a, const struct xml_node *req, const char *domain,
			 struct buf *reply)
{
	struct xml_node *r = preauth_iq(a, req, "result");
	struct xml_node *q = xml_add_child(a, r, NS_REGISTER, "query");
	struct xml_node *ins = xml_add_child(a, q, NS_REGISTER, "instructions");
	struct buf text;
	buf_init(&text);
	buf_printf(&text, "Choose a username and password for an account on %s.", domain);
	xml_add_text(a, ins, text.data, text.len);
	buf_free(&text);
	xml_add_child(a, q, NS_REGISTER, "username");
	xml_add_child(a, q, NS_REGISTER, "password");
	xml_serialize(r, NS_CLIENT, reply);
}

/* XEP-0077 §3.1: creates the account. Returns the error condition to
 * answer (its type in *etype), or NULL when the account was created. */
/* A registration waiting for its keys (PBKDF2 on a worker thread). */
struct preauth_job {
	uint64_t session;
	char *id;         /* the request's id, or NULL */
	char *password;
	unsigned iterations;
	struct user_credentials cred;
	int rc;
	char domain[JID_PART_MAX + 1];
	char local[JID_PART_MAX + 1];
	char peer[64];
	unsigned char key[16];
	struct register_turn turn;
	bool took;
};

static void preauth_work(void *arg)
{
	struct preauth_job *j = arg;
	j->rc = storage_credentials_from_password(j->password, j->iterations, &j->cred);
}

static void preauth_answer(struct loop *l, const struct preauth_job *j, const char *etype,
			   const char *cond)
{
	struct arena a;
	arena_init(&a);
	struct buf b;
	buf_init(&b);
	struct xml_node *r = xml_new(&a, NS_CLIENT, "iq");
	xml_set_attr(&a, r, "type", cond ? "error" : "result");
	if (j->id)
		xml_set_attr(&a, r, "id", j->id);
	if (cond) {
		struct xml_node *err = xml_add_child(&a, r, NS_CLIENT, "error");
		xml_set_attr(&a, err, "type", etype);
		xml_add_child(&a, err, NS_STANZA_ERRORS, cond);
	}
	xml_serialize(r, NS_CLIENT, &b);
	c2s_write_unauthenticated(l, j->session, b.data, b.len);
	buf_free(&b);
	arena_reset(&a);
}

static void preauth_job_free(struct preauth_job *j)
{
	register_wipe(j->password);
	free(j->password);
	explicit_bzero(&j->cred, sizeof j->cred);
	free(j->id);
	free(j);
}

/* The end of a registration: answered (unless the loop stopped, l NULL
 * or stopping), and an address's turn given back when it failed. */
static void preauth_finish(struct loop *l, struct preauth_job *j, const char *etype,
			   const char *cond)
{
	if (cond != NULL && j->took)
		register_rate_give_back(j->key, &j->turn);
	if (l != NULL && !loop_stopping(l))
		preauth_answer(l, j, etype, cond);
	preauth_job_free(j);
}

/* On the storage thread, natterd's one writer of the store: creates
 * local@domain unless it exists (user_put replaces), so two requests
 * for one name cannot both succeed. 0 created, 1 taken, -1 error. */
static int preauth_create_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct preauth_job *j = arg;
	int rc = account_lookup(st, drv, j->domain, j->local);
	if (rc == 1)
		return drv->user_put(st, j->domain, j->local, &j->cred) == 0 ? 0 : -1;
	return rc == 0 ? 1 : -1;
}

static void preauth_created(struct loop *l, void *arg, int rc)
{
	struct preauth_job *j = arg;
	if (rc == 0) {
		log_info("account %s@%s registered in-band from %s", j->local, j->domain, j->peer);
		if (l != NULL)
			pending_account_exists(l->srv->pending, j->domain, j->local);
		preauth_finish(l, j, NULL, NULL);
	} else {
		preauth_finish(l, j, rc > 0 ? "cancel" : "wait",
			       rc > 0 ? "conflict" : "internal-server-error");
	}
}

static void preauth_done(struct loop *l, void *arg)
{
	struct preauth_job *j = arg;
	if (loop_stopping(l))
		preauth_finish(l, j, "cancel", "internal-server-error");
	else if (j->rc != 0)
		preauth_finish(l, j, "modify", "not-acceptable"); /* SASLprep refused it */
	else
		storeq_call(l->srv->storeq, l, preauth_create_run, preauth_created, j);
}

/* Checks a registration request; when it may go ahead, hands the key
 * derivation to a worker and returns NULL with *job set. Otherwise
 * returns the error condition (and *etype). */
static const char *preauth_create(struct loop *l, const char *peer_addr, const char *domain,
				  struct xml_node *iq, struct xml_node *q, struct arena *a,
				  const char **etype, struct preauth_job **job)
{
	const struct config *cfg = l->srv->cfg;
	const char *user = register_field(a, q, "username");
	const char *pass = register_field(a, q, "password");
	const char *cond = NULL;
	char local[JID_PART_MAX + 1];
	struct user_credentials cred;
	int rc;

	*etype = "cancel";
	*job = NULL;
	if (xml_child(q, NS_REGISTER, "remove") != NULL) {
		*etype = "auth";
		cond = "not-authorized"; /* log in first */
		goto out;
	}
	if (user == NULL || pass == NULL || strlen(pass) > REGISTER_PASSWORD_MAX ||
	    jid_prep_local(user, strlen(user), local, sizeof local) < 0) {
		*etype = "modify";
		cond = "not-acceptable";
		goto out;
	}
	/* A name already taken is refused without using the address's turn. */
	rc = l->srv->storage->user_get(l->store, domain, local, &cred);
	explicit_bzero(&cred, sizeof cred);
	if (rc != 1) {
		*etype = rc == 0 ? "cancel" : "wait";
		cond = rc == 0 ? "conflict" : "internal-server-error";
		goto out;
	}
	struct preauth_job *j = xcalloc(1, sizeof *j);
	netaddr_key(peer_addr, cfg->limits.ipv6_prefix, j->key);
	if (register_rate_take(j->key, cfg->registration_interval, cfg->registrations_per_hour,
			       &j->turn) != 0) {
		log_info("registration from %s refused: rate limit", peer_addr);
		free(j);
		*etype = "wait";
		cond = "resource-constraint";
		goto out;
	}
	j->took = true;
	const char *id = xml_attr(iq, "id");
	j->id = id ? xstrdup(id) : NULL;
	j->password = xstrdup(pass);
	j->iterations = (unsigned)cfg->scram_iterations;
	snprintf(j->domain, sizeof j->domain, "%s", domain);
	snprintf(j->local, sizeof j->local, "%s", local);
	snprintf(j->peer, sizeof j->peer, "%s", peer_addr);
	*job = j;
out:
	register_wipe(pass);
	return cond;
}

int register_preauth(struct loop *l, uint64_t session, const char *peer_addr, const char *domain,
		     struct xml_node *iq, struct arena *a, struct buf *reply)
{
	const struct config *cfg = l->srv->cfg;
	const char *type = xml_attr(iq, "type");
	bool get = type != NULL && strcmp(type, "get") == 0;
	bool set = type != NULL && strcmp(type, "set") == 0;
	if (!get && !set)
		return 0; /* results and errors are never answered */
	struct xml_node *q = xml_first_element(iq);
	const struct config_host *host = config_find_host(cfg, domain);
	/* Directory accounts are made in the directory, not here. */
	if (!cfg->allow_registration || host == NULL || host->auth != HOST_AUTH_INTERNAL ||
	    q == NULL || xml_element_count(iq) != 1 || !xml_is(q, NS_REGISTER, "query")) {
		preauth_error(a, iq, "cancel", "service-unavailable", reply);
		return 0;
	}
	if (get) {
		preauth_form(a, iq, domain, reply);
		return 0;
	}
	const char *etype;
	struct preauth_job *job;
	const char *cond = preauth_create(l, peer_addr, domain, iq, q, a, &etype, &job);
	if (cond != NULL) {
		preauth_error(a, iq, etype, cond, reply);
		return 0;
	}
	job->session = session;
	if (work_submit(l, preauth_work, preauth_done, job) != 0) {
		if (job->took)
			register_rate_give_back(job->key, &job->turn);
		preauth_job_free(job);
		preauth_error(a, iq, "wait", "internal-server-error", reply);
		return 0;
	}
	return 1;
}

static const char *const features[] = { NS_REGISTER, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_REGISTER, "query", IQ_SERVER | IQ_ACCOUNT, register_get },
	{ "set", NS_REGISTER, "query", IQ_SERVER | IQ_ACCOUNT, register_set },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_register = { .name = "register", .features = features, .iqs = iqs };

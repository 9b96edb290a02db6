/* pep: how fast a server tells a user's contacts that the user changed
 * avatar (XEP-0163 PEP, XEP-0084 avatar metadata).
 *
 * Account first_user is the publisher; the next --contacts R accounts are
 * its contacts, subscription both (made over XMPP first with
 * --setup-rosters, or already in the server's store). The publisher logs
 * in with a plain <presence/>, then every contact with entity capabilities
 * (XEP-0115) whose features include urn:xmpp:avatar:metadata+notify. Every
 * contact advertises the same capabilities, hence the same ver hash, so a
 * server that caches by hash asks one of them; each contact answers
 * disco#info for the node with those features. A first publish checks
 * how many contacts the server notifies.
 *
 * Then the publisher publishes new avatar metadata (an <info/> whose id
 * carries a sequence number) at each offered rate of --rates (publishes a
 * second) in turn for --step-seconds, from a 1 ms timer as chat does. Each
 * contact that receives the notification turns it into latency (publish
 * written to notification read, one monotonic clock for the whole
 * process); the publish is complete when every contact online has it, and
 * its publish-to-last-notification time is what a user sees as "everyone
 * has my new avatar". */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "conn.h"
#include "scenario.h"

enum {
	CMD_PEP_LOGIN_PUBLISHER = CMD_SCENARIO,
	CMD_PEP_LOGIN_CONTACTS,
	CMD_PEP_SUBSCRIBE, /* setup: the publisher asks every contact */
	CMD_PEP_RETRY,     /* setup: ... asks again those not yet 'both' */
	CMD_PEP_LOGOUT,
	CMD_PEP_PUBLISH,   /* the publisher publishes once (the check) */
	CMD_PEP_STEP,
};

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_EVENT NS_PUBSUB "#event"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_CAPS "http://jabber.org/protocol/caps"
#define NS_AVATAR_META "urn:xmpp:avatar:metadata"
#define PEP_CAPS_NODE "https://natter.invalid/natter-load"
#define PEP_TICK_MS 1
#define PEP_LEAD_NS 20000000ull
#define PEP_P99_BOUND_MS 200.0
#define PEP_STALL_SECONDS 60.0
#define PEP_RETRY_SECONDS 3.0
#define PEP_RETRIES 5

/* Everyone's: written by whichever worker sees the event. */
struct pep_shared {
	int step;
	unsigned rate;              /* publishes per second */
	uint64_t start, end;
	unsigned max_pub;           /* size of the arrays below */
	_Atomic uint64_t *t_pub;    /* publish n written at (uv_hrtime) */
	_Atomic uint64_t *got;      /* notifications of publish n received */
	_Atomic uint64_t *last;     /* the last of them arrived at */
	_Atomic uint64_t next_pub;  /* publishes so far (the next n) */
	_Atomic uint64_t contacts_online;
	_Atomic uint64_t disco;     /* disco#info requests answered */
	_Atomic uint64_t pub_ok, pub_err, unsupported;
	_Atomic uint64_t both;      /* setup: contacts 'both' in the publisher's roster */
	_Atomic uint64_t publisher_both; /* in the publisher's login roster */
	unsigned setup_retries;
	char presence[512];         /* the contacts' initial presence, with caps */
	char ver[64];
};

/* One worker's account of one step. */
struct pep_step {
	_Atomic uint64_t published;
	_Atomic uint64_t skipped;
	_Atomic uint64_t behind;
	_Atomic uint64_t received;         /* notifications of this step's publishes */
	_Atomic uint64_t delivered_window; /* any notification received during the step */
	_Atomic uint64_t duplicates;       /* a publish notified to a contact again */
	struct hist lat;                   /* per notification */
};

struct pep_user {
	struct conn *c;
	unsigned idx;       /* 0 = the publisher, 1..R the contacts */
	bool online;
	uint8_t *seen;      /* contacts: bit per publish already notified */
};

struct pep_worker {
	struct pep_shared *sh;
	unsigned nusers;
	struct pep_user *users;   /* users[k].idx = worker id + threads * k */
	bool contacts_phase;      /* logging in contacts (else the publisher) */
	unsigned next, inflight, conc;
	struct pep_step *steps;   /* one per rate, and one more for the check */
	uv_timer_t tick;
	bool tick_ready;
	bool sending;
	int step;
	uint64_t start, end;
	uint64_t accounted;
	char *setup_bits;         /* publisher: contacts seen as 'both' */
};

static struct conn_ops pep_contact_ops;
static const struct conn_ops pep_publisher_ops;

static void pep_logins(struct worker *w);

/* XEP-0115 5.1: the ver string of one identity and our three features,
 * in byte order. */
static void pep_caps_ver(char *out, size_t cap)
{
	static const char s[] = "client/pc//natter-load<" NS_CAPS "<" NS_DISCO_INFO "<" NS_AVATAR_META "+notify<";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	unsigned char b64[64];
	EVP_Digest(s, sizeof s - 1, md, &len, EVP_sha1(), NULL);
	EVP_EncodeBlock(b64, md, (int)len);
	snprintf(out, cap, "%s", (const char *)b64);
}

static void pep_on_online(struct conn *c)
{
	struct pep_worker *pw = c->w->scen;
	struct pep_user *p = c->data;
	pw->inflight--;
	p->online = true;
	if (p->idx > 0)
		atomic_fetch_add(&pw->sh->contacts_online, 1);
	pep_logins(c->w);
}

static void pep_on_roster(struct conn *c, struct stanza *q)
{
	struct pep_worker *pw = c->w->scen;
	struct pep_user *p = c->data;
	(void)q;
	if (p->idx == 0)
		atomic_store(&pw->sh->publisher_both, c->roster_both);
}

static void pep_on_closed(struct conn *c)
{
	struct pep_worker *pw = c->w->scen;
	struct pep_user *p = c->data;
	p->c = NULL;
	if (!c->was_online) {
		pw->inflight--;
		pep_logins(c->w);
	} else if (p->online && p->idx > 0) {
		atomic_fetch_sub(&pw->sh->contacts_online, 1);
	}
	p->online = false;
}

/* Contacts answer disco#info with the features their caps announce. */
static bool pep_on_iq(struct conn *c, struct stanza *st)
{
	struct pep_worker *pw = c->w->scen;
	const char *type = stanza_attr(st, "type");
	const struct stanza *q = stanza_child(st, NS_DISCO_INFO " query");
	if (!q || !type || strcmp(type, "get") != 0)
		return false;
	const char *id = stanza_attr(st, "id"), *from = stanza_attr(st, "from");
	const char *node = stanza_attr(q, "node");
	conn_send(c, "<iq type='result' id='", 22);
	conn_send_escaped(c, id ? id : "");
	if (from) {
		conn_send(c, "' to='", 6);
		conn_send_escaped(c, from);
	}
	conn_send(c, "'><query xmlns='" NS_DISCO_INFO "'", sizeof("'><query xmlns='" NS_DISCO_INFO "'") - 1);
	if (node) {
		conn_send(c, " node='", 7);
		conn_send_escaped(c, node);
		conn_send(c, "'", 1);
	}
	conn_sendf(c, "><identity category='client' type='pc' name='natter-load'/>"
		      "<feature var='" NS_CAPS "'/><feature var='" NS_DISCO_INFO "'/>"
		      "<feature var='" NS_AVATAR_META "+notify'/></query></iq>");
	atomic_fetch_add(&pw->sh->disco, 1);
	return true;
}

static unsigned pep_user_number(const struct opts *o, const char *jid)
{
	size_t pl = strlen(o->users_prefix);
	if (!jid || strncmp(jid, o->users_prefix, pl) != 0)
		return 0;
	char *end;
	unsigned long n = strtoul(jid + pl, &end, 10);
	if (end == jid + pl || *end != '@' || n <= o->first_user || n > o->first_user + o->contacts)
		return 0;
	return (unsigned)(n - o->first_user);
}

static void pep_notification(struct conn *c, const struct stanza *ev)
{
	struct pep_worker *pw = c->w->scen;
	struct pep_user *p = c->data;
	struct pep_shared *sh = pw->sh;
	uint64_t now = uv_hrtime();
	const struct stanza *items = stanza_child(ev, NS_PUBSUB_EVENT " items");
	const char *node = items ? stanza_attr(items, "node") : NULL;
	if (!node || strcmp(node, NS_AVATAR_META) != 0)
		return;
	for (const struct stanza *it = items->child; it; it = it->next) {
		const char *id = stanza_is(it, NS_PUBSUB_EVENT " item") ? stanza_attr(it, "id") : NULL;
		if (!id || strncmp(id, "lg", 2) != 0)
			continue;
		char *end;
		unsigned long n = strtoul(id + 2, &end, 10);
		int step = -1;
		if (*end == 's')
			step = (int)strtol(end + 1, NULL, 10);
		if (n >= sh->max_pub || step < 0 || step > (int)c->w->run->o->nrates)
			continue;
		uint64_t t = atomic_load_explicit(&sh->t_pub[n], memory_order_acquire);
		if (!t)
			continue;
		struct pep_step *s = &pw->steps[step];
		/* Some servers tell a contact of the same item twice (the last
		 * item again, once they have resolved its capabilities): count
		 * each publish once per contact. */
		if (p->seen[n / 8] & (1u << (n % 8))) {
			worker_count(&s->duplicates, 1);
			continue;
		}
		p->seen[n / 8] |= (uint8_t)(1u << (n % 8));
		worker_count(&s->received, 1);
		hist_add(&s->lat, now > t ? (now - t) / 1000 : 0);
		if (pw->step >= 0 && now >= pw->start && now < pw->end)
			worker_count(&pw->steps[pw->step].delivered_window, 1);
		atomic_fetch_add(&sh->got[n], 1);
		uint64_t prev = atomic_load(&sh->last[n]);
		while (prev < now && !atomic_compare_exchange_weak(&sh->last[n], &prev, now))
			;
	}
}

static const char *pep_condition(const struct stanza *st)
{
	const struct stanza *e = stanza_child(st, NS_CLIENT " error");
	if (!e || !e->child)
		return "no condition";
	const char *sp = strchr(e->child->name, ' ');
	return sp ? sp + 1 : e->child->name;
}

static void pep_on_stanza(struct conn *c, struct stanza *st)
{
	struct worker *w = c->w;
	struct pep_worker *pw = w->scen;
	struct pep_shared *sh = pw->sh;
	const struct opts *o = w->run->o;
	struct pep_user *p = c->data;
	const char *type = stanza_attr(st, "type");
	if (stanza_is(st, NS_CLIENT " message")) {
		const struct stanza *ev = stanza_child(st, NS_PUBSUB_EVENT " event");
		if (ev && p->idx > 0)
			pep_notification(c, ev);
		return;
	}
	if (stanza_is(st, NS_CLIENT " presence")) {
		const char *from = stanza_attr(st, "from");
		if (!type || !from || strpbrk(from, "'&<"))
			return;
		int bare = (int)strcspn(from, "/");
		/* Setup: the publisher asked; approve it and ask back. The
		 * publisher approves the contacts' requests. */
		if (strcmp(type, "subscribe") == 0) {
			conn_sendf(c, "<presence to='%.*s' type='subscribed'/>", bare, from);
			if (p->idx > 0)
				conn_sendf(c, "<presence to='%.*s' type='subscribe'/>", bare, from);
		}
		return;
	}
	if (!stanza_is(st, NS_CLIENT " iq") || !type)
		return;
	struct stanza *q = stanza_child(st, NS_ROSTER " query");
	if (p->idx == 0 && q && strcmp(type, "set") == 0 && pw->setup_bits) {
		for (struct stanza *it = q->child; it; it = it->next) {
			const char *sub = stanza_attr(it, "subscription");
			unsigned k = pep_user_number(o, stanza_attr(it, "jid"));
			if (k && sub && strcmp(sub, "both") == 0 && !pw->setup_bits[k]) {
				pw->setup_bits[k] = 1;
				atomic_fetch_add(&sh->both, 1);
			}
		}
		return;
	}
	const char *id = stanza_attr(st, "id");
	if (p->idx == 0 && id && strncmp(id, "pub", 3) == 0) {
		if (strcmp(type, "result") == 0) {
			atomic_fetch_add(&sh->pub_ok, 1);
		} else if (strcmp(type, "error") == 0) {
			const char *cond = pep_condition(st);
			char msg[200];
			snprintf(msg, sizeof msg, "publish refused: %s", cond);
			worker_note_error(w, msg);
			atomic_fetch_add(&sh->pub_err, 1);
			if (strcmp(cond, "feature-not-implemented") == 0 ||
			    strcmp(cond, "service-unavailable") == 0)
				atomic_fetch_add(&sh->unsupported, 1);
		}
	}
}

static const struct conn_ops pep_publisher_ops = {
	.roster = pep_on_roster,
	.online = pep_on_online,
	.stanza = pep_on_stanza,
	.closed = pep_on_closed,
};

static void pep_logins(struct worker *w)
{
	struct pep_worker *pw = w->scen;
	if (w->exiting)
		return;
	while (pw->inflight < pw->conc && pw->next < pw->nusers) {
		struct pep_user *p = &pw->users[pw->next++];
		if (p->c || (p->idx > 0) != pw->contacts_phase)
			continue;
		pw->inflight++;
		p->c = conn_open(w, w->run->o->first_user + p->idx,
				 p->idx ? &pep_contact_ops : &pep_publisher_ops, p);
	}
}

/* Publishes one avatar change as publish number n of step `step`. */
static void pep_publish(struct worker *w, struct conn *c, int step)
{
	struct pep_worker *pw = w->scen;
	struct pep_shared *sh = pw->sh;
	uint64_t n = atomic_load(&sh->next_pub);
	if (n >= sh->max_pub)
		return;
	atomic_store(&sh->next_pub, n + 1);
	atomic_store_explicit(&sh->t_pub[n], uv_hrtime(), memory_order_release);
	/* The id of an avatar is the SHA-1 of its image; a new image each
	 * time, so the id is made unique (and carries n and the step). */
	conn_sendf(c, "<iq type='set' id='pub%llu'><pubsub xmlns='" NS_PUBSUB "'>"
		      "<publish node='" NS_AVATAR_META "'><item id='lg%llus%d'>"
		      "<metadata xmlns='" NS_AVATAR_META "'><info bytes='12345' id='lg%llus%d' "
		      "height='64' width='64' type='image/png'/></metadata></item></publish></pubsub></iq>",
		   (unsigned long long)n, (unsigned long long)n, step, (unsigned long long)n, step);
	worker_count(&pw->steps[step].published, 1);
}

static void pep_on_tick(uv_timer_t *t)
{
	struct worker *w = t->data;
	struct pep_worker *pw = w->scen;
	const struct opts *o = w->run->o;
	uint64_t now = uv_hrtime();
	if (!pw->sending || now < pw->start)
		return;
	uint64_t until = now < pw->end ? now : pw->end;
	uint64_t due = (uint64_t)((double)pw->sh->rate * (double)(until - pw->start) / 1e9 + 0.5);
	struct pep_step *s = &pw->steps[pw->step];
	struct conn *c = pw->users[0].c;
	if (due > pw->accounted) {
		uint64_t n = due - pw->accounted;
		uint64_t burst = pw->sh->rate / 100 + 1;
		if (n > burst) {
			worker_count(&s->behind, (int64_t)(n - burst));
			pw->accounted += n - burst;
			n = burst;
		}
		pw->accounted += n;
		for (uint64_t i = 0; i < n; i++) {
			if (!c || c->state != CONN_ONLINE || conn_backlog(c) > (size_t)o->max_queue_kb * 1024)
				worker_count(&s->skipped, 1);
			else
				pep_publish(w, c, pw->step);
		}
	}
	if (now >= pw->end) {
		worker_step_sent(w, pw->step);
		pw->sending = false;
		uv_timer_stop(&pw->tick);
	}
}

static void pep_command(struct worker *w, int cmd)
{
	struct pep_worker *pw = w->scen;
	const struct opts *o = w->run->o;
	struct pep_user *pub = pw->nusers && pw->users[0].idx == 0 ? &pw->users[0] : NULL;
	switch (cmd) {
	case CMD_PEP_LOGIN_PUBLISHER:
	case CMD_PEP_LOGIN_CONTACTS:
		if (!pw->tick_ready) {
			uv_timer_init(&w->loop, &pw->tick);
			pw->tick.data = w;
			pw->tick_ready = true;
		}
		pw->contacts_phase = cmd == CMD_PEP_LOGIN_CONTACTS;
		pw->next = 0;
		pep_logins(w);
		break;
	case CMD_PEP_SUBSCRIBE:
	case CMD_PEP_RETRY:
		if (!pub || !pub->c)
			break;
		for (unsigned k = 1; k <= o->contacts; k++) {
			if (cmd == CMD_PEP_RETRY && pw->setup_bits[k])
				continue;
			char user[64];
			conn_username(o, o->first_user + k, user, sizeof user);
			conn_sendf(pub->c, "<iq type='set' id='rs%u'><query xmlns='" NS_ROSTER "'>"
					   "<item jid='%s@%s'/></query></iq><presence to='%s@%s' type='subscribe'/>",
				   k, user, o->domain, user, o->domain);
		}
		break;
	case CMD_PEP_LOGOUT:
		for (unsigned k = 0; k < pw->nusers; k++)
			if (pw->users[k].c)
				conn_close(pw->users[k].c);
		break;
	case CMD_PEP_PUBLISH:
		if (pub && pub->c && pub->c->state == CONN_ONLINE)
			pep_publish(w, pub->c, (int)o->nrates);
		break;
	case CMD_PEP_STEP:
		/* Every worker counts the step's window; the publisher's sends. */
		pw->step = pw->sh->step;
		pw->start = pw->sh->start;
		pw->end = pw->sh->end;
		pw->accounted = 0;
		if (!pub) {
			worker_step_sent(w, pw->step);
			break;
		}
		pw->sending = true;
		uv_timer_start(&pw->tick, pep_on_tick, PEP_TICK_MS, PEP_TICK_MS);
		break;
	case CMD_EXIT:
		pw->sending = false;
		if (pw->tick_ready)
			uv_close((uv_handle_t *)&pw->tick, NULL);
		break;
	}
}

static const struct scenario_hooks pep_hooks = { .command = pep_command };

static uint64_t pep_sum(struct run *r, int step, size_t field)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < r->nw; i++) {
		struct pep_worker *pw = r->w[i]->scen;
		sum += counter_get((_Atomic uint64_t *)((char *)&pw->steps[step] + field));
	}
	return sum;
}

#define PEP_SUM(r, i, f) pep_sum((r), (i), offsetof(struct pep_step, f))

/* One step, all workers merged. */
struct pep_result {
	unsigned offered;
	uint64_t published, skipped, behind, received, window, expected, duplicates;
	uint64_t complete, incomplete; /* publishes every contact online got, or not */
	double seconds;
	double gen_cores, server_cores;
	struct hist lat;  /* per notification */
	struct hist full; /* publish to the last notification, complete publishes */
};

/* Folds the publishes [n0, n1) into res: complete when `expect` contacts
 * got it. */
static void pep_collect(struct run *r, struct pep_shared *sh, int step, uint64_t n0, uint64_t n1,
			uint64_t expect, struct pep_result *res)
{
	hist_reset(&res->lat);
	hist_reset(&res->full);
	for (unsigned i = 0; i < r->nw; i++) {
		struct pep_worker *pw = r->w[i]->scen;
		hist_merge(&res->lat, &pw->steps[step].lat);
	}
	res->published = PEP_SUM(r, step, published);
	res->skipped = PEP_SUM(r, step, skipped);
	res->behind = PEP_SUM(r, step, behind);
	res->received = PEP_SUM(r, step, received);
	res->window = PEP_SUM(r, step, delivered_window);
	res->duplicates = PEP_SUM(r, step, duplicates);
	res->expected = (n1 - n0) * expect;
	res->complete = res->incomplete = 0;
	for (uint64_t n = n0; n < n1; n++) {
		uint64_t t = atomic_load(&sh->t_pub[n]);
		if (expect && atomic_load(&sh->got[n]) >= expect && t) {
			res->complete++;
			hist_add(&res->full, (atomic_load(&sh->last[n]) - t) / 1000);
		} else {
			res->incomplete++;
		}
	}
}

/* Waits until the notifications of publishes up to n1 are in (or drain
 * seconds pass). */
static void pep_drain(struct run *r, struct pep_shared *sh, uint64_t n0, uint64_t n1, uint64_t expect,
		      double seconds)
{
	uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
	while (uv_hrtime() < end) {
		bool all = true;
		for (uint64_t n = n0; n < n1 && all; n++)
			all = atomic_load(&sh->got[n]) >= expect;
		if (all || !run_wait(r, 0.01))
			return;
	}
}

/* Waits until nothing has happened for `quiet` seconds (at most `cap`):
 * disco#info queries answered, contacts logged in. */
static void pep_settle(struct run *r, struct pep_shared *sh, double quiet, double cap)
{
	uint64_t last = atomic_load(&sh->disco) + scenario_logins_done(r);
	double t_change = run_elapsed(r), t_end = t_change + cap;
	while (run_elapsed(r) < t_end && run_wait(r, 0.05)) {
		uint64_t now = atomic_load(&sh->disco) + scenario_logins_done(r);
		if (now != last) {
			last = now;
			t_change = run_elapsed(r);
		} else if (run_elapsed(r) - t_change >= quiet) {
			break;
		}
	}
}

static double pep_q(const struct hist *h, double q)
{
	return hist_quantile_us(h, q) / 1000.0;
}

static bool pep_step_ok(const struct pep_result *s)
{
	return s->published > 0 && s->incomplete == 0 &&
	       (double)s->published >= 0.95 * s->offered * s->seconds && pep_q(&s->full, 0.99) < PEP_P99_BOUND_MS;
}

static void pep_report_step(struct report *rp, const struct pep_result *s, uint64_t contacts)
{
	report_obj(rp, NULL);
	report_u64(rp, "offered_per_s", s->offered);
	report_u64(rp, "offered_notifications_per_s", (uint64_t)s->offered * contacts);
	report_num(rp, "seconds", s->seconds);
	report_u64(rp, "published", s->published);
	report_u64(rp, "notifications_expected", s->expected);
	report_u64(rp, "notifications", s->received);
	report_u64(rp, "duplicates", s->duplicates);
	report_num(rp, "notifications_per_s", s->seconds > 0 ? (double)s->window / s->seconds : 0);
	report_u64(rp, "publishes_complete", s->complete);
	report_u64(rp, "publishes_incomplete", s->incomplete);
	report_u64(rp, "skipped_backlog", s->skipped);
	report_u64(rp, "skipped_generator_behind", s->behind);
	report_hist_ms(rp, "notification_ms", &s->lat);
	report_hist_ms(rp, "publish_to_last_ms", &s->full);
	report_num(rp, "generator_cpu_cores", s->gen_cores);
	if (s->server_cores >= 0) {
		report_num(rp, "server_cpu_cores", s->server_cores);
		double d = s->seconds > 0 ? (double)s->window / s->seconds : 0;
		report_num(rp, "server_cpu_us_per_notification", d > 0 ? s->server_cores * 1e6 / d : 0);
	}
	report_end(rp, '}');
}

/* Setup over XMPP: everyone logs in, the publisher asks every contact,
 * each approves and asks back, the publisher approves; done when the
 * publisher's roster shows every contact as 'both'. Then everyone logs
 * out, so the measured logins see the rosters as a new session would. */
static double pep_setup(struct run *r, struct pep_shared *sh)
{
	const struct opts *o = r->o;
	double t0 = run_elapsed(r);
	uint64_t base = scenario_logins_done(r);
	run_command(r, CMD_PEP_LOGIN_PUBLISHER);
	scenario_wait_logins(r, base, 1);
	run_command(r, CMD_PEP_LOGIN_CONTACTS);
	scenario_wait_logins(r, base, 1ull + o->contacts);
	run_command(r, CMD_PEP_SUBSCRIBE);
	/* A busy server may take its time; one that has gone quiet is asked
	 * again for what is missing (a request it lost, or one that reached a
	 * contact before it was online). */
	uint64_t last = 0;
	double t_change = run_elapsed(r), t_retry = t_change;
	unsigned retries = 0;
	while (atomic_load(&sh->both) < o->contacts) {
		uint64_t b = atomic_load(&sh->both);
		if (b != last) {
			last = b;
			t_change = t_retry = run_elapsed(r);
		} else if (run_elapsed(r) - t_retry > PEP_RETRY_SECONDS && retries < PEP_RETRIES) {
			run_command(r, CMD_PEP_RETRY);
			retries++;
			t_retry = run_elapsed(r);
		} else if (run_elapsed(r) - t_change > PEP_STALL_SECONDS) {
			fprintf(stderr, "pep: roster setup stalled at %llu of %u contacts\n",
				(unsigned long long)b, o->contacts);
			break;
		}
		scenario_progress(r, "pep: roster setup: %llu of %u contacts both", (unsigned long long)b,
				  o->contacts);
		if (!run_wait(r, 0.05))
			break;
	}
	sh->setup_retries = retries;
	run_command(r, CMD_PEP_LOGOUT);
	double t_end = run_elapsed(r) + 5;
	while (run_sum(r, offsetof(struct counters, started)) > run_sum(r, offsetof(struct counters, closed)) &&
	       run_elapsed(r) < t_end && run_wait(r, 0.02))
		;
	return run_elapsed(r) - t0;
}

static unsigned pep_steps(struct run *r, struct pep_shared *sh, struct pep_result *res)
{
	const struct opts *o = r->o;
	struct cpu_mark ms, me;
	unsigned nsteps = 0;
	for (unsigned i = 0; i < o->nrates && !r->interrupted && !r->capped; i++) {
		struct pep_result *s = &res[i];
		uint64_t expect = atomic_load(&sh->contacts_online);
		uint64_t n0 = atomic_load(&sh->next_pub);
		s->offered = o->rates[i];
		sh->step = (int)i;
		sh->rate = o->rates[i];
		sh->start = uv_hrtime() + PEP_LEAD_NS;
		sh->end = sh->start + (uint64_t)(o->step_seconds * 1e9);
		run_command(r, CMD_PEP_STEP);
		run_wait(r, (double)(sh->start - uv_hrtime()) / 1e9);
		cpu_mark(&ms, o);
		bool whole = run_wait(r, (double)(sh->end - uv_hrtime()) / 1e9);
		cpu_mark(&me, o);
		s->seconds = (double)((whole ? sh->end : uv_hrtime()) - sh->start) / 1e9;
		s->gen_cores = cpu_cores(&ms, &me);
		s->server_cores = cpu_server_cores(&ms, &me);
		run_wait_step_sent(r, (int)i, o->drain_seconds);
		uint64_t n1 = atomic_load(&sh->next_pub);
		pep_drain(r, sh, n0, n1, expect, o->drain_seconds);
		pep_collect(r, sh, (int)i, n0, n1, expect, s);
		nsteps = i + 1;
		fprintf(stderr, "pep: offered %5u publishes/s (%7llu notifications/s) delivered %8.0f/s, "
				"%llu of %llu publishes reached all %llu; notification p50 %.2f p99 %.2f ms; "
				"publish to last p50 %.2f p99 %.2f ms  gen CPU %3.0f%%",
			s->offered, (unsigned long long)s->offered * expect,
			s->seconds > 0 ? (double)s->window / s->seconds : 0, (unsigned long long)s->complete,
			(unsigned long long)(n1 - n0), (unsigned long long)expect, pep_q(&s->lat, 0.5),
			pep_q(&s->lat, 0.99), pep_q(&s->full, 0.5), pep_q(&s->full, 0.99), 100 * s->gen_cores);
		if (s->server_cores >= 0)
			fprintf(stderr, "  server CPU %3.0f%%", 100 * s->server_cores);
		fputc('\n', stderr);
		if (!whole || pep_q(&s->full, 0.99) > o->stop_p99_ms || s->incomplete * 100 > n1 - n0 ||
		    (double)s->published < 0.8 * s->offered * s->seconds)
			break;
	}
	return nsteps;
}

int pep_run(const struct opts *o)
{
	struct run r;
	struct pep_shared *sh = calloc(1, sizeof *sh);
	struct cpu_mark m0, m1;
	if (o->contacts == 0) {
		fprintf(stderr, "natter-load: pep needs --contacts of at least 1\n");
		free(sh);
		return 1;
	}
	pep_caps_ver(sh->ver, sizeof sh->ver);
	snprintf(sh->presence, sizeof sh->presence,
		 "<presence><c xmlns='" NS_CAPS "' hash='sha-1' node='" PEP_CAPS_NODE "' ver='%s'/></presence>",
		 sh->ver);
	pep_contact_ops = pep_publisher_ops;
	pep_contact_ops.iq = pep_on_iq;
	pep_contact_ops.initial_presence = sh->presence;
	sh->step = -1;
	double max_pub = 2;
	for (unsigned i = 0; i < o->nrates; i++)
		max_pub += o->rates[i] * o->step_seconds + 1;
	sh->max_pub = (unsigned)max_pub;
	sh->t_pub = calloc(sh->max_pub, sizeof *sh->t_pub);
	sh->got = calloc(sh->max_pub, sizeof *sh->got);
	sh->last = calloc(sh->max_pub, sizeof *sh->last);
	if (run_start(&r, o, &pep_hooks, sh) < 0) {
		run_free(&r);
		return 1;
	}
	unsigned total = o->contacts + 1;
	struct pep_worker *pws = calloc(r.nw, sizeof *pws);
	for (unsigned i = 0; i < r.nw; i++) {
		struct pep_worker *pw = &pws[i];
		pw->sh = sh;
		pw->step = -1;
		pw->nusers = run_share(&r, total, i);
		pw->conc = run_share(&r, o->concurrency, i);
		if (pw->conc == 0)
			pw->conc = 1;
		pw->users = calloc(pw->nusers + 1, sizeof *pw->users);
		pw->steps = calloc(o->nrates + 1, sizeof *pw->steps);
		for (unsigned k = 0; k < pw->nusers; k++) {
			pw->users[k].idx = i + r.nw * k;
			pw->users[k].seen = calloc(sh->max_pub / 8 + 1, 1);
		}
		if (i == 0)
			pw->setup_bits = calloc(total, 1);
		r.w[i]->scen = pw;
	}
	cpu_mark(&m0, o);
	double setup_s = 0;
	if (o->setup_rosters)
		setup_s = pep_setup(&r, sh);
	uint64_t base = scenario_logins_done(&r);
	double t0 = run_elapsed(&r);
	run_command(&r, CMD_PEP_LOGIN_PUBLISHER);
	scenario_wait_logins(&r, base, 1);
	run_command(&r, CMD_PEP_LOGIN_CONTACTS);
	scenario_wait_logins(&r, base, total);
	pep_settle(&r, sh, 1.0, 30);
	double login_s = run_elapsed(&r) - t0;
	uint64_t online = atomic_load(&sh->contacts_online);

	/* The check: one publish, and who hears of it. */
	struct pep_result *check = calloc(1, sizeof *check);
	uint64_t n0 = atomic_load(&sh->next_pub);
	run_command(&r, CMD_PEP_PUBLISH);
	uint64_t tc = uv_hrtime();
	while (atomic_load(&sh->next_pub) == n0 && uv_hrtime() - tc < 1000000000ull && run_wait(&r, 0.005))
		;
	uint64_t n1 = atomic_load(&sh->next_pub);
	pep_drain(&r, sh, n0, n1, online, 5.0);
	uint64_t notified = n1 > n0 ? atomic_load(&sh->got[n0]) : 0;
	pep_collect(&r, sh, (int)o->nrates, n0, n1, online, check);
	bool published = atomic_load(&sh->pub_ok) > 0;
	fprintf(stderr, "pep: publisher with %llu contacts both, %llu of %u contacts online (caps ver %s, "
			"%llu disco#info answered) in %.2f s; the first publish %s and reached %llu\n",
		(unsigned long long)atomic_load(&sh->publisher_both), (unsigned long long)online, o->contacts,
		sh->ver, (unsigned long long)atomic_load(&sh->disco), login_s,
		published ? "was accepted" : "was not accepted", (unsigned long long)notified);

	struct pep_result *res = calloc(o->nrates, sizeof *res);
	unsigned nsteps = 0;
	if (published && notified > 0)
		nsteps = pep_steps(&r, sh, res);
	cpu_mark(&m1, o);
	run_stop(&r);

	const struct pep_result *best = NULL;
	for (unsigned i = 0; i < nsteps; i++)
		if (pep_step_ok(&res[i]) && (!best || res[i].offered > best->offered))
			best = &res[i];
	struct report rp;
	report_open(&rp, stdout);
	report_str(&rp, "scenario", "pep");
	report_obj(&rp, "params");
	scenario_params(&rp, o);
	report_u64(&rp, "contacts", o->contacts);
	report_bool(&rp, "setup_rosters", o->setup_rosters);
	scenario_step_params(&rp, o);
	report_end(&rp, '}');
	report_str(&rp, "caps_ver", sh->ver);
	if (o->setup_rosters) {
		report_obj(&rp, "setup");
		report_num(&rp, "seconds", setup_s);
		report_u64(&rp, "contacts_both", atomic_load(&sh->both));
		report_u64(&rp, "retries", sh->setup_retries);
		report_end(&rp, '}');
	}
	report_u64(&rp, "publisher_roster_both", atomic_load(&sh->publisher_both));
	report_u64(&rp, "contacts_online", online);
	report_num(&rp, "login_s", login_s);
	report_u64(&rp, "disco_info_answered", atomic_load(&sh->disco));
	report_bool(&rp, "supported", published && atomic_load(&sh->unsupported) == 0);
	report_u64(&rp, "first_publish_notified", notified);
	report_hist_ms(&rp, "first_publish_to_last_ms", &check->full);
	report_u64(&rp, "publish_ok", atomic_load(&sh->pub_ok));
	report_u64(&rp, "publish_errors", atomic_load(&sh->pub_err));
	report_u64(&rp, "unsupported", atomic_load(&sh->unsupported));
	report_arr(&rp, "steps");
	for (unsigned i = 0; i < nsteps; i++)
		pep_report_step(&rp, &res[i], online);
	report_end(&rp, ']');
	report_u64(&rp, "max_rate_p99_under_200ms", best ? best->offered : 0);
	report_num(&rp, "notifications_per_s_p99_under_200ms",
		   best && best->seconds > 0 ? (double)best->window / best->seconds : 0);
	if (nsteps) {
		report_num(&rp, "publish_to_last_p50_ms_first_step", pep_q(&res[0].full, 0.5));
		report_num(&rp, "publish_to_last_p99_ms_first_step", pep_q(&res[0].full, 0.99));
	}
	report_common(&rp, &r, &m0, &m1);
	report_close(&rp);
	fprintf(stderr, "pep: %llu contacts: highest rate with every publish reaching all and p99 publish "
			"to last < %.0f ms: %u publishes/s = %.0f notifications/s\n",
		(unsigned long long)online, PEP_P99_BOUND_MS, best ? best->offered : 0,
		best && best->seconds > 0 ? (double)best->window / best->seconds : 0);
	if (run_first_error(&r))
		fprintf(stderr, "first error: %s\n", run_first_error(&r));
	report_cpu_line(&m0, &m1);
	run_free(&r);
	for (unsigned i = 0; i < o->threads; i++) {
		for (unsigned k = 0; k < pws[i].nusers; k++)
			free(pws[i].users[k].seen);
		free(pws[i].users);
		free(pws[i].steps);
		free(pws[i].setup_bits);
	}
	free(pws);
	free(res);
	free(check);
	free(sh->t_pub);
	free(sh->got);
	free(sh->last);
	free(sh);
	return 0;
}

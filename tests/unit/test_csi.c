/* Unit tests for src/c2s/csi.c (client state indication, XEP-0352): which
 * stanzas wait for an inactive client and which pass, collapsing, the
 * order of what is released, the bounds, room nicks for mentions. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "c2s/csi.h"
#include "core/buf.h"
#include "xml/xml_parse.h"

#define BARE "bob@localhost"
#define ME "bob@localhost/phone"

/* What the session would have written: the stanzas' ids, in order. */
struct out {
	struct buf ids;
	int writes;
};

static void record(void *arg, const char *data, size_t len)
{
	struct out *o = arg;
	struct arena a;
	arena_init(&a);
	struct xml_node *st = xml_parse_element(&a, data, len);
	assert_non_null(st);
	const char *id = xml_attr(st, "id");
	buf_puts(&o->ids, id ? id : "?");
	buf_puts(&o->ids, " ");
	o->writes++;
	arena_reset(&a);
}

static const char *written(struct out *o)
{
	buf_append(&o->ids, "", 1);
	o->ids.len--;
	return o->ids.data ? o->ids.data : "";
}

static struct config_limits limits(int stanzas, size_t bytes)
{
	struct config_limits lim;
	memset(&lim, 0, sizeof lim);
	lim.csi_max_held_stanzas = stanzas;
	lim.csi_max_held_bytes = bytes;
	return lim;
}

static void deliver(struct csi *c, const struct config_limits *lim, const char *xml)
{
	csi_deliver(c, BARE, lim, xml, strlen(xml));
}

/* The arena the stanzas of test_classes live in. */
static struct arena class_arena;

static enum csi_class class_of(const struct csi *c, const char *xml, const char **key_out)
{
	struct xml_node *st = xml_parse_element(&class_arena, xml, strlen(xml));
	assert_non_null(st);
	const char *key;
	enum csi_class cls = csi_classify(c, BARE, st, &class_arena, &key);
	if (key_out)
		*key_out = key;
	return cls;
}

static void test_classes(void **state)
{
	(void)state;
	struct csi c;
	csi_init(&c, record, NULL);
	arena_init(&class_arena);
	const char *key;
	/* presence */
	assert_int_equal(class_of(&c, "<presence from='a@x/r'/>", &key), CSI_COLLAPSE);
	assert_string_equal(key, "pa@x/r");
	assert_int_equal(class_of(&c, "<presence from='a@x/r' type='unavailable'/>", &key),
			 CSI_COLLAPSE);
	assert_int_equal(class_of(&c, "<presence from='a@x' type='subscribe'/>", NULL), CSI_URGENT);
	assert_int_equal(class_of(&c, "<presence from='a@x' type='unsubscribed'/>", NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<presence from='r@c/bob'><x xmlns='http://jabber.org/"
				      "protocol/muc#user'><status code='110'/></x></presence>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<presence from='r@c/al'><x xmlns='http://jabber.org/"
				      "protocol/muc#user'><status code='100'/></x></presence>",
				  NULL),
			 CSI_COLLAPSE);
	/* iq */
	assert_int_equal(class_of(&c, "<iq from='a@x/r' type='get' id='1'/>", NULL), CSI_PASS);
	/* messages */
	assert_int_equal(class_of(&c, "<message from='a@x/r'><body>hi</body></message>", NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='a@x/r' type='error'/>", NULL), CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='a@x/r'><composing xmlns='http://jabber.org/"
				      "protocol/chatstates'/><thread>t</thread></message>",
				  &key),
			 CSI_COLLAPSE);
	assert_string_equal(key, "ca@x/r");
	assert_int_equal(class_of(&c, "<message from='a@x/r'><received xmlns='urn:xmpp:receipts' "
				      "id='m'/></message>",
				  &key),
			 CSI_HOLD);
	assert_null(key);
	assert_int_equal(class_of(&c, "<message from='a@x/r'><displayed xmlns='urn:xmpp:chat-"
				      "markers:0' id='m'/><active xmlns='http://jabber.org/"
				      "protocol/chatstates'/></message>",
				  NULL),
			 CSI_HOLD);
	assert_int_equal(class_of(&c, "<message from='a@x/r'><encrypted xmlns='eu.siacs."
				      "conversations.axolotl'/></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='a@x/r'><openpgp xmlns='urn:xmpp:"
				      "openpgp:0'>x</openpgp></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='a@x/r'><propose xmlns='urn:xmpp:jingle-"
				      "message:0' id='c'/></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='a@x'><result xmlns='urn:xmpp:mam:2' "
				      "id='1'/></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='r@c' type='groupchat'><subject>s</subject>"
				      "</message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='a@x/r'><received xmlns='urn:xmpp:receipts' "
				      "id='m'/><delay xmlns='urn:xmpp:delay' stamp='s'>Offline Storage"
				      "</delay></message>",
				  NULL),
			 CSI_URGENT);
	/* room messages: a mention passes */
	assert_int_equal(class_of(&c, "<message from='r@c/al' type='groupchat'><body>hello"
				      "</body></message>",
				  NULL),
			 CSI_HOLD);
	assert_int_equal(class_of(&c, "<message from='r@c/al' type='groupchat'><body>hey Bob!"
				      "</body></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='r@c/al' type='groupchat'><body>hey you"
				      "</body><reference xmlns='urn:xmpp:reference:0' type='mention' "
				      "uri='xmpp:bob@localhost'/></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='r@c/al' type='groupchat'><body>I sent you "
				      "an OMEMO encrypted message</body><encrypted xmlns='eu.siacs."
				      "conversations.axolotl'/></message>",
				  NULL),
			 CSI_URGENT);
	/* carbons follow what they carry */
	assert_int_equal(class_of(&c, "<message from='bob@localhost'><received xmlns='urn:xmpp:"
				      "carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message "
				      "xmlns='jabber:client' from='a@x/r'><body>b</body></message>"
				      "</forwarded></received></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<message from='bob@localhost'><sent xmlns='urn:xmpp:"
				      "carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message "
				      "xmlns='jabber:client' to='a@x/r'><paused xmlns='http://jabber."
				      "org/protocol/chatstates'/></message></forwarded></sent></message>",
				  &key),
			 CSI_HOLD);
	assert_null(key);
	/* PEP: one item of one node replaces the same item */
	assert_int_equal(class_of(&c, "<message from='a@x'><event xmlns='http://jabber.org/"
				      "protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'>"
				      "<item id='h1'><metadata xmlns='urn:xmpp:avatar:metadata'/></item>"
				      "</items></event></message>",
				  &key),
			 CSI_COLLAPSE);
	assert_string_equal(key, "ea@x\nurn:xmpp:avatar:metadata\nh1");
	assert_int_equal(class_of(&c, "<message from='a@x'><event xmlns='http://jabber.org/"
				      "protocol/pubsub#event'><items node='n'><retract id='h1'/>"
				      "</items></event></message>",
				  NULL),
			 CSI_HOLD);
	assert_int_equal(class_of(&c, "<message from='a@x' type='headline'><event xmlns='http://"
				      "jabber.org/protocol/pubsub#event'><items node='n'><item id='i'/>"
				      "</items></event><delay xmlns='urn:xmpp:delay' stamp='x'/></message>",
				  NULL),
			 CSI_COLLAPSE);
	/* anything unknown passes */
	assert_int_equal(class_of(&c, "<message from='a@x/r'><x xmlns='jabber:x:conference' "
				      "jid='r@c'/></message>",
				  NULL),
			 CSI_URGENT);
	assert_int_equal(class_of(&c, "<a/>", NULL), CSI_URGENT);
	csi_free(&c);
	arena_reset(&class_arena);
}

static void test_collapse_and_order(void **state)
{
	(void)state;
	struct out o = { 0 };
	struct csi c;
	struct config_limits lim = limits(256, 1 << 20);
	csi_init(&c, record, &o);
	deliver(&c, &lim, "<presence id='a0' from='a@x/r'/>");
	assert_string_equal(written(&o), "a0 ");
	struct arena a;
	arena_init(&a);
	assert_int_equal(csi_nonza(&c, xml_parse_element(&a, "<x xmlns='urn:xmpp:csi:0'/>", 27)),
			 -1);
	assert_int_equal(csi_nonza(&c, xml_parse_element(&a, "<inactive xmlns='urn:xmpp:csi:0'/>",
							  34)),
			 0);
	deliver(&c, &lim, "<presence id='a1' from='a@x/r'/>");
	deliver(&c, &lim, "<presence id='b1' from='b@x/r'/>");
	deliver(&c, &lim, "<message id='cs1' from='b@x/r'><composing xmlns='http://jabber.org/"
			  "protocol/chatstates'/></message>");
	deliver(&c, &lim, "<presence id='a2' from='a@x/r'/>");
	deliver(&c, &lim, "<message id='cs2' from='b@x/r'><paused xmlns='http://jabber.org/"
			  "protocol/chatstates'/></message>");
	assert_string_equal(written(&o), "a0 ");
	assert_int_equal(c.n, 3);
	/* An iq from a: a's held presence first; b's stays. */
	deliver(&c, &lim, "<iq id='q1' from='a@x/r' type='get'/>");
	assert_string_equal(written(&o), "a0 a2 q1 ");
	/* An iq from the server, with nothing of its sender held. */
	deliver(&c, &lim, "<iq id='q2' from='localhost' type='result'/>");
	assert_string_equal(written(&o), "a0 a2 q1 q2 ");
	deliver(&c, &lim, "<presence id='a3' from='a@x/r'/>");
	/* A body: everything held, in order, then it. */
	deliver(&c, &lim, "<message id='m1' from='c@x/r'><body>x</body></message>");
	assert_string_equal(written(&o), "a0 a2 q1 q2 b1 cs2 a3 m1 ");
	assert_int_equal(c.n, 0);
	assert_int_equal(c.bytes, 0);
	deliver(&c, &lim, "<presence id='a4' from='a@x/r'/>");
	assert_int_equal(csi_nonza(&c, xml_parse_element(&a, "<active xmlns='urn:xmpp:csi:0'/>",
							  32)),
			 0);
	assert_string_equal(written(&o), "a0 a2 q1 q2 b1 cs2 a3 m1 a4 ");
	deliver(&c, &lim, "<presence id='a5' from='a@x/r'/>");
	assert_string_equal(written(&o), "a0 a2 q1 q2 b1 cs2 a3 m1 a4 a5 ");
	/* The stream ends (stream management keeps the session): what is
	 * held is released, and the session is active again. */
	assert_int_equal(csi_nonza(&c, xml_parse_element(&a, "<inactive xmlns='urn:xmpp:csi:0'/>",
							  34)),
			 0);
	deliver(&c, &lim, "<presence id='a6' from='a@x/r'/>");
	csi_end(&c);
	assert_false(c.inactive);
	deliver(&c, &lim, "<presence id='a7' from='a@x/r'/>");
	assert_string_equal(written(&o), "a0 a2 q1 q2 b1 cs2 a3 m1 a4 a5 a6 a7 ");
	arena_reset(&a);
	csi_free(&c);
	buf_free(&o.ids);
}

static void test_bounds(void **state)
{
	(void)state;
	struct out o = { 0 };
	struct csi c;
	struct config_limits lim = limits(3, 1 << 20);
	csi_init(&c, record, &o);
	c.inactive = true;
	char xml[128];
	for (int i = 0; i < 7; i++) {
		snprintf(xml, sizeof xml, "<presence id='p%d' from='c%d@x/r'/>", i, i);
		deliver(&c, &lim, xml);
		assert_true(c.n <= 3);
	}
	assert_string_equal(written(&o), "p0 p1 p2 p3 p4 p5 ");
	csi_flush(&c);
	assert_string_equal(written(&o), "p0 p1 p2 p3 p4 p5 p6 ");
	/* Bytes: a stanza larger than the whole bound is written at once,
	 * after what was held. */
	lim = limits(100, 200);
	deliver(&c, &lim, "<presence id='s1' from='s@x/r'/>");
	assert_true(c.bytes <= 200);
	char big[400];
	snprintf(big, sizeof big, "<presence id='big' from='s@x/r2'><status>%0300d</status>"
				  "</presence>", 0);
	deliver(&c, &lim, big);
	assert_string_equal(written(&o), "p0 p1 p2 p3 p4 p5 p6 s1 big ");
	assert_int_equal(c.n, 0);
	/* Zero: nothing is held at all. */
	lim = limits(0, 4096);
	deliver(&c, &lim, "<presence id='z' from='s@x/r'/>");
	assert_string_equal(written(&o), "p0 p1 p2 p3 p4 p5 p6 s1 big z ");
	csi_free(&c);
	buf_free(&o.ids);
}

static void test_room_nick_learnt(void **state)
{
	(void)state;
	struct out o = { 0 };
	struct csi c;
	struct config_limits lim = limits(256, 1 << 20);
	csi_init(&c, record, &o);
	/* Joined while active: the self-presence teaches the nick. */
	deliver(&c, &lim, "<presence id='j' from='r@c/Phonie'><x xmlns='http://jabber.org/"
			  "protocol/muc#user'><status code='110'/></x></presence>");
	c.inactive = true;
	deliver(&c, &lim, "<message id='g1' from='r@c/al' type='groupchat'><body>hi all</body>"
			  "</message>");
	deliver(&c, &lim, "<message id='g2' from='other@c/al' type='groupchat'><body>phonie?"
			  "</body></message>");
	assert_string_equal(written(&o), "j ");
	deliver(&c, &lim, "<message id='g3' from='r@c/al' type='groupchat'><body>PHONIE?</body>"
			  "</message>");
	assert_string_equal(written(&o), "j g1 g2 g3 ");
	/* Left the room: the nick is forgotten. */
	deliver(&c, &lim, "<presence id='l' from='r@c/Phonie' type='unavailable'><x xmlns='http:"
			  "//jabber.org/protocol/muc#user'><status code='110'/></x></presence>");
	deliver(&c, &lim, "<message id='g4' from='r@c/al' type='groupchat'><body>phonie?</body>"
			  "</message>");
	assert_string_equal(written(&o), "j g1 g2 g3 l ");
	assert_int_equal(c.n, 1);
	/* Many rooms: bounded. */
	char xml[200];
	for (int i = 0; i < 3 * CSI_MAX_NICKS; i++) {
		snprintf(xml, sizeof xml, "<presence id='r%d' from='r%d@c/n'><x xmlns='http://jabber."
					  "org/protocol/muc#user'><status code='110'/></x></presence>",
			 i, i);
		deliver(&c, &lim, xml);
		assert_true(c.n_nicks <= CSI_MAX_NICKS);
	}
	csi_free(&c);
	buf_free(&o.ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes),
		cmocka_unit_test(test_collapse_and_order),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_room_nick_learnt),
	};
	return cmocka_run_group_tests_name("csi", tests, NULL, NULL);
}

"""PEP (XEP-0163): every account is a pubsub service at its bare JID."""


import pytest

from imlib import accounts, mutual, assert_not_delivered
from natterlib import NS_CLIENT, proc_status_kib, q, raw_login
from peplib import (
    NS_DISCO_INFO, NS_PUBSUB, NS_PUBSUB_OWNER, affiliations_xml, caps_query,
    event_items, event_item_ids, event_of, event_payload, event_retract_ids,
    expect_error, form, get_items, pep_connect, publish, publish_xml,
    send_caps_presence, subscribe_xml)

NS_TUNE = "http://jabber.org/protocol/tune"
NS_MOOD = "http://jabber.org/protocol/mood"
NS_NICK = "http://jabber.org/protocol/nick"
TUNE = "<tune xmlns='%s'><artist>Yes</artist><title>%s</title></tune>"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def test_publish_notifies_contact_with_caps(net, server):
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    bob = await pep_connect(net, server, "bob", interests=[NS_TUNE])
    await mutual(alice, bob)
    item_id = await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "Roundabout"))
    got = await bob.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                              "tune notification from alice")
    assert event_item_ids(got) == [item_id]
    assert event_payload(got).find(q(NS_TUNE, "title")).text == "Roundabout"
    # The publisher's own resource wants it too.
    await alice.inbox.get(event_items(NS_TUNE, frm="alice@localhost"))
    items = await get_items(bob, "alice@localhost", NS_TUNE)
    assert [i.get("id") for i in items] == [item_id]


async def test_no_notification_without_notify_or_subscription(net, server):
    """carol wants tune but has no presence subscription; bob is a
    contact without +notify: neither is notified."""
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    bob = await pep_connect(net, server, "bob", interests=[NS_MOOD])
    carol = await pep_connect(net, server, "carol", interests=[NS_TUNE])
    await mutual(alice, bob)
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "Siberian Khatru"))
    await alice.inbox.get(event_items(NS_TUNE))
    for who in (bob, carol):
        await assert_not_delivered(who, event_items(NS_TUNE), "a tune event",
                                   alice, "m-" + who.boundjid.user)


async def test_retract_notifies_and_items_max(net, server):
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    bob = await pep_connect(net, server, "bob", interests=[NS_TUNE])
    await mutual(alice, bob)
    opts = {"pubsub#max_items": "3"}
    for i in range(4):
        await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "t%d" % i), "i%d" % i,
                      options=opts if i == 0 else None)
        await bob.inbox.get(event_items(NS_TUNE))
    items = await get_items(bob, "alice@localhost", NS_TUNE)
    assert [i.get("id") for i in items] == ["i1", "i2", "i3"]
    items = await get_items(bob, "alice@localhost", NS_TUNE, max_items=1)
    assert [i.get("id") for i in items] == ["i3"]
    # 2^32 + 1 is more than there are, not 1 (atoi wrapped it).
    items = await get_items(bob, "alice@localhost", NS_TUNE, max_items=4294967297)
    assert [i.get("id") for i in items] == ["i1", "i2", "i3"]
    for bad in ("abc", "0", "3x"):
        await expect_error(bob, "alice@localhost", "<pubsub xmlns='%s'><items node='%s'"
                           " max_items='%s'/></pubsub>" % (NS_PUBSUB, NS_TUNE, bad),
                           "get", "bad-request")
    items = await get_items(bob, "alice@localhost", NS_TUNE, ids=["i2"])
    assert [i.get("id") for i in items] == ["i2"]
    await alice.iq(None, "<pubsub xmlns='%s'><retract node='%s' notify='true'>"
                   "<item id='i2'/></retract></pubsub>" % (NS_PUBSUB, NS_TUNE),
                   "set")
    got = await bob.inbox.get(
        lambda s: event_items(NS_TUNE)(s) and event_retract_ids(s) == ["i2"],
        "retract event")
    assert got is not None
    items = await get_items(alice, None, NS_TUNE)
    assert [i.get("id") for i in items] == ["i1", "i3"]
    await expect_error(alice, None, "<pubsub xmlns='%s'><retract node='%s'>"
                       "<item id='nope'/></retract></pubsub>" % (NS_PUBSUB, NS_TUNE),
                       "set", "item-not-found")


async def test_presence_access_model(net, server):
    alice = await pep_connect(net, server, "alice")
    carol = await pep_connect(net, server, "carol")
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "x"))
    await expect_error(carol, "alice@localhost",
                       "<pubsub xmlns='%s'><items node='%s'/></pubsub>"
                       % (NS_PUBSUB, NS_TUNE), "get", "not-authorized",
                       "presence-subscription-required")
    await expect_error(carol, "alice@localhost",
                       "<pubsub xmlns='%s'><items node='nothing'/></pubsub>"
                       % NS_PUBSUB, "get", "item-not-found")


async def test_open_whitelist_and_roster_models(net, server):
    """open: a stranger reads; whitelist: a contact does not until the
    owner makes him a member, a stranger never; roster: only the allowed
    group; disco#items lists only what the asker may see."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    await mutual(alice, bob)
    await publish(alice, "open-node", "<x xmlns='urn:test'/>",
                  options={"pubsub#access_model": "open"})
    assert len(await get_items(carol, "alice@localhost", "open-node")) == 1
    await publish(alice, "secret", "<x xmlns='urn:test'/>",
                  options={"pubsub#access_model": "whitelist"})
    await expect_error(bob, "alice@localhost",
                       "<pubsub xmlns='%s'><items node='secret'/></pubsub>"
                       % NS_PUBSUB, "get", "not-allowed", "closed-node")
    # An affiliation lets bob in; carol, without one, stays out.
    await alice.iq(None, affiliations_xml("secret", {"bob@localhost": "member"}),
                   "set")
    assert len(await get_items(bob, "alice@localhost", "secret")) == 1
    await expect_error(carol, "alice@localhost",
                       "<pubsub xmlns='%s'><items node='secret'/></pubsub>"
                       % NS_PUBSUB, "get", "not-allowed", "closed-node")
    await publish(alice, "friends", "<x xmlns='urn:test'/>",
                  options={"pubsub#access_model": "roster",
                           "pubsub#roster_groups_allowed": "Friends"})
    await expect_error(bob, "alice@localhost",
                       "<pubsub xmlns='%s'><items node='friends'/></pubsub>"
                       % NS_PUBSUB, "get", "not-authorized",
                       "not-in-roster-group")
    await alice.iq(None, "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'>"
                   "<group>Friends</group></item></query>", "set")
    assert len(await get_items(bob, "alice@localhost", "friends")) == 1
    # disco#items lists what the asker may see.
    reply = await carol.iq("alice@localhost",
                           "<query xmlns='http://jabber.org/protocol/disco#items'/>")
    nodes = [i.get("node") for i in reply.xml.iter(
        "{http://jabber.org/protocol/disco#items}item")]
    assert nodes == ["open-node"]


async def test_publish_options_precondition(net, server):
    alice = await pep_connect(net, server, "alice")
    await publish(alice, "n", "<x xmlns='urn:test'/>",
                  options={"pubsub#access_model": "open",
                           "pubsub#persist_items": "true",
                           "pubsub#max_items": "max"})
    await publish(alice, "n", "<x xmlns='urn:test'/>",
                  options={"pubsub#access_model": "open"})
    await expect_error(alice, None, publish_xml(
        "n", "<x xmlns='urn:test'/>", options={"pubsub#access_model": "whitelist"}),
        "set", "conflict", "precondition-not-met")


async def test_disco_info_on_account(net, server):
    alice = await pep_connect(net, server, "alice")
    reply = await alice.iq("alice@localhost",
                           "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    ids = [(i.get("category"), i.get("type")) for i in reply.xml.iter(
        "{http://jabber.org/protocol/disco#info}identity")]
    feats = [f.get("var") for f in reply.xml.iter(
        "{http://jabber.org/protocol/disco#info}feature")]
    assert ("pubsub", "pep") in ids
    assert NS_PUBSUB + "#publish-options" in feats


async def test_last_item_on_coming_online(net, server):
    """bob comes online after alice published: he gets her last item;
    so does alice's own new session."""
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    bob = await pep_connect(net, server, "bob", interests=[NS_TUNE])
    await mutual(alice, bob)
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "first"), "a")
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "last"), "b")
    await bob.close()
    bob2 = await pep_connect(net, server, "bob", "r2", interests=[NS_TUNE])
    got = await bob2.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                               "last tune of alice")
    assert event_item_ids(got) == ["b"]
    alice2 = await pep_connect(net, server, "alice", "r2", interests=[NS_TUNE])
    got = await alice2.inbox.get(event_items(NS_TUNE, frm="alice@localhost"))
    assert event_item_ids(got) == ["b"]


async def test_delete_and_purge(net, server):
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "x"), "a")
    await alice.inbox.get(event_items(NS_TUNE))
    await alice.iq(None, "<pubsub xmlns='%s#owner'><purge node='%s'/></pubsub>"
                   % (NS_PUBSUB, NS_TUNE), "set")
    await alice.inbox.get(event_of(NS_TUNE, "purge"), "purge event")
    assert await get_items(alice, None, NS_TUNE) == []
    await alice.iq(None, "<pubsub xmlns='%s#owner'><delete node='%s'/></pubsub>"
                   % (NS_PUBSUB, NS_TUNE), "set")
    await alice.inbox.get(event_of(NS_TUNE, "delete"), "delete event")
    await expect_error(alice, None, "<pubsub xmlns='%s'><items node='%s'/></pubsub>"
                       % (NS_PUBSUB, NS_TUNE), "get", "item-not-found")


async def test_bad_requests(net, server):
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    P = NS_PUBSUB
    await expect_error(alice, None, "<pubsub xmlns='%s'><publish node='n'/></pubsub>" % P,
                       "set", "bad-request", "item-required")
    await expect_error(alice, None, "<pubsub xmlns='%s'><publish node='n'><item/></publish>"
                       "</pubsub>" % P, "set", "bad-request", "payload-required")
    await expect_error(alice, None, "<pubsub xmlns='%s'><publish><item><x xmlns='urn:t'/>"
                       "</item></publish></pubsub>" % P, "set", "bad-request",
                       "nodeid-required")
    await expect_error(alice, None, "<pubsub xmlns='%s'><publish node=''><item><x xmlns='urn:t'/>"
                       "</item></publish></pubsub>" % P, "set", "bad-request",
                       "nodeid-required")
    await expect_error(alice, None, "<pubsub xmlns='%s'><publish node='%s'><item><x xmlns='urn:t'/>"
                       "</item></publish></pubsub>" % (P, "n" * 300), "set", "bad-request",
                       "nodeid-required")
    await expect_error(bob, "alice@localhost", publish_xml("n", "<x xmlns='urn:t'/>"),
                       "set", "forbidden")
    await publish(alice, "n", "<x xmlns='urn:t'/>")
    await expect_error(bob, "alice@localhost", "<pubsub xmlns='%s#owner'><configure node='n'/>"
                       "</pubsub>" % P, "get", "forbidden")
    await expect_error(alice, None, "<pubsub xmlns='%s'><bogus/></pubsub>" % P, "get",
                       "feature-not-implemented")
    await net.assert_served(server)


async def test_limits(net, natter_factory):
    server = natter_factory(limits={"pubsub_max_items": 5,
                                    "pubsub_max_item_size": 2048,
                                    "pubsub_max_nodes": 2})
    accounts(server, "alice")
    alice = await pep_connect(net, server, "alice")
    await expect_error(alice, None, publish_xml("n", "<x xmlns='urn:t'>%s</x>" % ("a" * 3000)),
                       "set", "not-acceptable", "payload-too-big")
    await expect_error(alice, None, publish_xml("n", "<x xmlns='urn:t'/>",
                                                options={"pubsub#max_items": "6"}),
                       "set", "not-acceptable", "max-items-exceeded")
    # A count is digits only: strtol used to take these as 5.
    for bad in (" 5", "+5", "5 ", "0", "abc"):
        await expect_error(alice, None, publish_xml("n", "<x xmlns='urn:t'/>",
                                                    options={"pubsub#max_items": bad}),
                           "set", "not-acceptable")
    await publish(alice, "n1", "<x xmlns='urn:t'/>", options={"pubsub#max_items": "max"})
    await publish(alice, "n2", "<x xmlns='urn:t'/>")
    await expect_error(alice, None, publish_xml("n3", "<x xmlns='urn:t'/>"),
                       "set", "not-allowed", "max-nodes-exceeded")
    for i in range(8):
        await publish(alice, "n1", "<x xmlns='urn:t'/>", "i%d" % i)
    assert len(await get_items(alice, None, "n1")) == 5
    await net.assert_served(server)


NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_OMEMO_DEVICES = "eu.siacs.conversations.axolotl.devicelist"


async def test_notifications_cross_loops(net, natter_factory):
    """Four loops: sessions land on different ones; every contact still
    gets the event."""
    server = natter_factory(workers=4)
    accounts(server, "alice", "bob", "carol")
    alice = await pep_connect(net, server, "alice", interests=[NS_MOOD])
    others = [await pep_connect(net, server, n, "r%d" % i, interests=[NS_MOOD])
              for n in ("bob", "carol") for i in range(2)]
    await mutual(alice, others[0])
    await mutual(alice, others[2])
    await publish(alice, NS_MOOD, "<mood xmlns='%s'><happy/></mood>" % NS_MOOD)
    for c in others:
        await c.inbox.get(event_items(NS_MOOD, frm="alice@localhost"),
                          "mood event on %s" % c.boundjid)


async def test_bookmarks_private_to_pep_and_back(net, server):
    """XEP-0411: XEP-0048 bookmarks in private XML show up as XEP-0402
    items (whitelist), and a private get answers from PEP."""
    alice = await pep_connect(net, server, "alice", interests=[NS_BOOKMARKS])
    bob = await pep_connect(net, server, "bob")
    await mutual(alice, bob)
    await alice.iq(None, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                   "<conference jid='room@conference.localhost' name='Room' autojoin='true'>"
                   "<nick>al</nick></conference></storage></query>", "set")
    items = await get_items(alice, None, NS_BOOKMARKS)
    assert [i.get("id") for i in items] == ["room@conference.localhost"]
    conf = items[0].find(q(NS_BOOKMARKS, "conference"))
    assert conf.get("autojoin") == "true" and conf.get("name") == "Room"
    assert conf.find(q(NS_BOOKMARKS, "nick")).text == "al"
    await expect_error(bob, "alice@localhost", "<pubsub xmlns='%s'><items node='%s'/></pubsub>"
                       % (NS_PUBSUB, NS_BOOKMARKS), "get", "not-allowed", "closed-node")
    # A XEP-0402 client adds one; the XEP-0048 view has both.
    await publish(alice, NS_BOOKMARKS, "<conference xmlns='%s' name='Two' autojoin='false'/>"
                  % NS_BOOKMARKS, "two@conference.localhost",
                  options={"pubsub#access_model": "whitelist",
                           "pubsub#persist_items": "true",
                           "pubsub#max_items": "max",
                           "pubsub#send_last_published_item": "never"})
    reply = await alice.iq(None, "<query xmlns='jabber:iq:private'>"
                           "<storage xmlns='storage:bookmarks'/></query>")
    jids = sorted(c.get("jid") for c in reply.xml.iter("{storage:bookmarks}conference"))
    assert jids == ["room@conference.localhost", "two@conference.localhost"]


async def test_vcard_photo_publishes_avatar(net, server):
    """XEP-0398: a vCard with a PHOTO publishes XEP-0084 data and
    metadata, readable by anyone (open)."""
    import base64
    import hashlib
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    b64 = base64.b64encode(png).decode()
    alice = await pep_connect(net, server, "alice")
    carol = await pep_connect(net, server, "carol")
    await alice.iq(None, "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
                   "<BINVAL>%s\n%s</BINVAL></PHOTO></vCard>" % (b64[:40], b64[40:]), "set")
    sha = hashlib.sha1(png).hexdigest()
    meta = await get_items(carol, "alice@localhost", "urn:xmpp:avatar:metadata")
    info = meta[0].find(q("urn:xmpp:avatar:metadata", "metadata")).find(
        q("urn:xmpp:avatar:metadata", "info"))
    assert (meta[0].get("id"), info.get("bytes"), info.get("type")) == (
        sha, str(len(png)), "image/png")
    data = await get_items(carol, "alice@localhost", "urn:xmpp:avatar:data", ids=[sha])
    assert base64.b64decode(data[0].find(q("urn:xmpp:avatar:data", "data")).text) == png
    # The vCard itself is stored as before.
    reply = await alice.iq(None, "<vCard xmlns='vcard-temp'/>")
    assert reply.xml.find(q("vcard-temp", "vCard")).find(q("vcard-temp", "PHOTO")) is not None


async def test_avatar_with_slixmpp_plugin(net, server):
    """XEP-0084 with slixmpp's own plugin (publish data + metadata, the
    contact's plugin gets the metadata event)."""
    alice = await pep_connect(net, server, "alice", plugins=("xep_0084",))
    bob = await pep_connect(net, server, "bob", plugins=("xep_0084",))
    await send_caps_presence(bob)
    await mutual(alice, bob)
    data = b"\x89PNG fake avatar"
    await alice["xep_0084"].publish_avatar(data)
    import hashlib
    sha = hashlib.sha1(data).hexdigest()
    await alice["xep_0084"].publish_avatar_metadata(
        [{"id": sha, "type": "image/png", "bytes": len(data)}])
    got = await bob.inbox.get(event_items("urn:xmpp:avatar:metadata",
                                          frm="alice@localhost"), "avatar metadata")
    assert event_item_ids(got) == [sha]
    reply = await bob["xep_0084"].retrieve_avatar("alice@localhost", sha)
    assert reply["pubsub"]["items"]["item"]["id"] == sha


async def test_avatar_becomes_vcard_photo(net, server):
    """XEP-0398 the other way: an XEP-0084 avatar (slixmpp's plugin, data
    then metadata) becomes the vCard PHOTO that vCard-based clients read;
    metadata without <info/> (avatar off) removes it."""
    import base64
    import hashlib
    alice = await pep_connect(net, server, "alice", plugins=("xep_0084",))
    carol = await pep_connect(net, server, "carol")
    await alice.iq(None, "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>", "set")
    data = b"\x89PNG another avatar"
    sha = hashlib.sha1(data).hexdigest()
    await alice["xep_0084"].publish_avatar(data)
    await alice["xep_0084"].publish_avatar_metadata(
        [{"id": sha, "type": "image/png", "bytes": len(data)}])
    reply = await carol.iq("alice@localhost", "<vCard xmlns='vcard-temp'/>")
    vcard = reply.xml.find(q("vcard-temp", "vCard"))
    photo = vcard.find(q("vcard-temp", "PHOTO"))
    assert photo is not None, "no PHOTO after the avatar was published"
    assert photo.findtext(q("vcard-temp", "TYPE")) == "image/png"
    assert base64.b64decode(photo.findtext(q("vcard-temp", "BINVAL"))) == data
    assert vcard.findtext(q("vcard-temp", "FN")) == "Alice", "the rest stays"
    await publish(alice, "urn:xmpp:avatar:metadata",
                  "<metadata xmlns='urn:xmpp:avatar:metadata'/>", "off")
    reply = await carol.iq("alice@localhost", "<vCard xmlns='vcard-temp'/>")
    vcard = reply.xml.find(q("vcard-temp", "vCard"))
    assert vcard.find(q("vcard-temp", "PHOTO")) is None
    assert vcard.findtext(q("vcard-temp", "FN")) == "Alice"


async def test_omemo_devicelist_open(net, server):
    """XEP-0384: device list and bundle published open, fetched by a
    stranger."""
    alice = await pep_connect(net, server, "alice")
    carol = await pep_connect(net, server, "carol")
    await publish(alice, NS_OMEMO_DEVICES, "<list xmlns='eu.siacs.conversations.axolotl'>"
                  "<device id='1234'/></list>", "current",
                  options={"pubsub#access_model": "open"})
    await publish(alice, NS_OMEMO_DEVICES.replace("devicelist", "bundles:1234"),
                  "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic "
                  "signedPreKeyId='1'>AAAA</signedPreKeyPublic></bundle>", "current",
                  options={"pubsub#access_model": "open"})
    await publish(alice, "urn:xmpp:omemo:2:devices", "<devices xmlns='urn:xmpp:omemo:2'>"
                  "<device id='1234'/></devices>", "current",
                  options={"pubsub#access_model": "open", "pubsub#max_items": "max"})
    for node in (NS_OMEMO_DEVICES, "eu.siacs.conversations.axolotl.bundles:1234",
                 "urn:xmpp:omemo:2:devices"):
        items = await get_items(carol, "alice@localhost", node)
        assert [i.get("id") for i in items] == ["current"], node


async def test_explicit_subscription_to_pep_node(net, server):
    """bob, a contact whose caps want no tune, subscribes to alice's tune
    node with <subscribe/> (XEP-0060 6.1): he gets its last item at once
    (6.1.7) and each new one, until he unsubscribes.  carol, no contact,
    may not subscribe to a node of the presence access model."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    await mutual(alice, bob)
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "first"), "t1")
    reply = await bob.iq("alice@localhost", subscribe_xml(NS_TUNE, bob), "set")
    sub = reply.xml.find(q(NS_PUBSUB, "pubsub")).find(q(NS_PUBSUB, "subscription"))
    assert (sub.get("node"), sub.get("jid"), sub.get("subscription")) == (
        NS_TUNE, bob.boundjid.full, "subscribed")
    got = await bob.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                              "the last tune, on subscribing")
    assert event_item_ids(got) == ["t1"]
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "second"), "t2")
    got = await bob.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                              "the new tune, as a subscriber")
    assert event_item_ids(got) == ["t2"]
    reply = await bob.iq("alice@localhost",
                         "<pubsub xmlns='%s'><subscriptions/></pubsub>" % NS_PUBSUB)
    assert [(s.get("node"), s.get("jid")) for s in reply.xml.iter(
        q(NS_PUBSUB, "subscription"))] == [(NS_TUNE, bob.boundjid.full)]
    await bob.iq("alice@localhost", subscribe_xml(NS_TUNE, bob, "unsubscribe"), "set")
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "third"), "t3")
    await assert_not_delivered(bob, event_items(NS_TUNE), "a tune event after "
                               "unsubscribing", alice, "m-unsubscribed")
    await expect_error(carol, "alice@localhost", subscribe_xml(NS_TUNE, carol), "set",
                       "not-authorized", "presence-subscription-required")


async def test_user_nickname(net, server):
    """XEP-0172: alice publishes her nickname; bob, a contact whose caps
    want nick+notify, gets it as an event and reads it back with an items
    request; a new nickname replaces it (PEP keeps one item)."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob", interests=[NS_NICK])
    await mutual(alice, bob)
    for nick in ("Al", "Alice"):
        await publish(alice, NS_NICK, "<nick xmlns='%s'>%s</nick>" % (NS_NICK, nick))
        got = await bob.inbox.get(event_items(NS_NICK, frm="alice@localhost"),
                                  "alice's nickname %s" % nick)
        payload = event_payload(got)
        assert (payload.tag, payload.text) == (q(NS_NICK, "nick"), nick)
        items = await get_items(bob, "alice@localhost", NS_NICK)
        assert [i.findtext(q(NS_NICK, "nick")) for i in items] == [nick]


async def test_persist_items_false_keeps_last_only(net, server):
    """pubsub#persist_items false: the node keeps its last item only (to
    send to who comes online), whatever max_items says, yet every publish
    is notified; true keeps max_items.  Configuring a node to false drops
    all but its last item (docs/pubsub.md)."""
    kept, gone = "urn:test:kept", "urn:test:gone"
    alice = await pep_connect(net, server, "alice", interests=[kept, gone])
    for node, persist in ((kept, "true"), (gone, "false")):
        for i in range(3):
            await publish(alice, node, "<x xmlns='urn:test'>%d</x>" % i, "i%d" % i,
                          options={"pubsub#persist_items": persist,
                                   "pubsub#max_items": "5"})
            got = await alice.inbox.get(event_items(node), "event of %s" % node)
            assert event_item_ids(got) == ["i%d" % i]
    assert [i.get("id") for i in await get_items(alice, None, kept)] == ["i0", "i1", "i2"]
    assert [i.get("id") for i in await get_items(alice, None, gone)] == ["i2"]
    await alice.iq(None, "<pubsub xmlns='%s'><configure node='%s'>%s</configure>"
                   "</pubsub>" % (NS_PUBSUB_OWNER, kept, form(
                       NS_PUBSUB + "#node_config", {"pubsub#persist_items": "0"})),
                   "set")
    assert [i.get("id") for i in await get_items(alice, None, kept)] == ["i2"]


async def test_known_caps_ver_not_asked_again(net, server):
    """XEP-0115 caps cache: natterd asks alice's client for the disco#info
    of her ver once.  bob, announcing that same ver later (his first was
    another, which natterd did ask him about), and a second session of
    alice are not asked: each gets alice's last tune at once, which
    natterd sends only for a ver it knows wants tune+notify (for an
    unknown one, after the answer to its query)."""
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    asked = await alice.inbox.get(caps_query("localhost"), "natterd's caps query to alice")
    node = asked.xml.find(q(NS_DISCO_INFO, "query")).get("node")
    bob = await pep_connect(net, server, "bob")
    asked = await bob.inbox.get(caps_query("localhost"),
                                "natterd's query for bob's first caps")
    assert asked.xml.find(q(NS_DISCO_INFO, "query")).get("node") != node
    await mutual(alice, bob)
    await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "known"), "t1")
    await alice.inbox.get(event_items(NS_TUNE), "alice's own event: her ver is known")
    await bob["xep_0030"].add_feature(NS_TUNE + "+notify")
    await send_caps_presence(bob)
    got = await bob.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                              "alice's last tune once bob's caps want it")
    assert event_item_ids(got) == ["t1"]
    assert not bob.inbox.find(caps_query("localhost")), \
        "bob was asked for a known ver:\n" + bob.inbox.describe()
    alice2 = await pep_connect(net, server, "alice", "r2", interests=[NS_TUNE])
    got = await alice2.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                                 "the last tune on alice's second session")
    assert event_item_ids(got) == ["t1"]
    assert not alice2.inbox.find(caps_query("localhost")), \
        "alice/r2 was asked for a known ver:\n" + alice2.inbox.describe()


async def test_caps_answer_with_a_huge_form(server):
    """natterd asks a client for the disco#info of a caps ver it does
    not know (XEP-0115), and the client may answer with anything under
    the stanza limit: here one XEP-0128 form of 15,000 empty fields,
    240 KB. Hashing it used to copy the field list and the growing text
    once per field, quadratic (2 GB and 5 s on the optimised build); now
    it is linear: natterd's peak memory hardly moves, the ver fails
    verification, and the client's ping is answered."""
    mallory = await raw_login(server.c2s_port, "alice@localhost", "alice-secret",
                              resource="caps")
    await mallory.send("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1'"
                       " node='http://example.org/caps' ver='Zm9vYmFyYmF6cXV4cXV1eHh4eHg='/>"
                       "</presence>")
    while True:
        asked = await mallory.next()
        query = asked.find(q(NS_DISCO_INFO, "query"))
        if asked.tag == q(NS_CLIENT, "iq") and asked.get("type") == "get" \
                and query is not None:
            break
    peak_before = proc_status_kib(server.proc.pid, "VmHWM") // 1024
    form_xml = ("<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
                "<value>urn:example:huge</value></field>" + "<field var='a'/>" * 15000
                + "</x>")
    await mallory.send("<iq type='result' id='%s' to='localhost'><query xmlns='%s' node='%s'>"
                       "<identity category='client' type='pc'/>%s</query></iq>"
                       % (asked.get("id"), NS_DISCO_INFO, query.get("node"), form_xml))
    await mallory.ping_server("after-huge-form")
    grown = proc_status_kib(server.proc.pid, "VmHWM") // 1024 - peak_before
    assert grown < 100, "natterd's peak RSS grew by %d MiB for one 240 KB answer" % grown

"""The pubsub service (XEP-0060) at pubsub.DOMAIN.

test_create_policy_for_remote_users federates two natterd (fedlib's
natter-a and natter-b, with dnsmasq); run the file under
`flock /tmp/natter-fed.lock` like test_pep_federation.py."""

import pytest

import fedlib
from fedlib import NATTER_A, NATTER_B, diagnose
from imlib import accounts, assert_not_delivered, connect
from natterlib import q
from peplib import (
    NS_DATA, NS_PUBSUB, NS_PUBSUB_OWNER, affiliations_xml, event_items,
    event_item_ids, expect_error, form, get_items, pep_connect, publish,
    publish_xml, subscribe_xml)
from test_federation import natter_config

SVC = "pubsub.localhost"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol", "dave")


async def create(client, node, config=None, service=SVC):
    conf = "<configure>%s</configure>" % form(
        NS_PUBSUB + "#node_config", config) if config else ""
    await client.iq(service, "<pubsub xmlns='%s'><create node='%s'/>%s</pubsub>"
                    % (NS_PUBSUB, node, conf), "set")


def items_xml(node):
    return "<pubsub xmlns='%s'><items node='%s'/></pubsub>" % (NS_PUBSUB, node)


async def owner_list(client, node, what):
    """The owner's subscriptions or affiliations get (XEP-0060 8.8.1,
    8.9.1) of node: {jid: state}."""
    reply = await client.iq(SVC, "<pubsub xmlns='%s'><%s node='%s'/></pubsub>"
                            % (NS_PUBSUB_OWNER, what, node))
    attr = what[:-1]
    return {e.get("jid"): e.get(attr) for e in reply.xml.iter(q(NS_PUBSUB_OWNER, attr))}


async def own_list(client, what, service=SVC):
    """The requester's own subscriptions or affiliations (5.6, 5.7):
    {node: state}."""
    reply = await client.iq(service, "<pubsub xmlns='%s'><%s/></pubsub>" % (NS_PUBSUB, what))
    attr = what[:-1]
    return {e.get("node"): e.get(attr) for e in reply.xml.iter(q(NS_PUBSUB, attr))}


async def test_disco_lists_the_service(net, server):
    alice = await pep_connect(net, server, "alice")
    reply = await alice.iq("localhost", "<query xmlns='http://jabber.org/protocol/disco#items'/>")
    jids = [i.get("jid") for i in reply.xml.iter("{http://jabber.org/protocol/disco#items}item")]
    assert SVC in jids
    reply = await alice.iq(SVC, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    ids = [(i.get("category"), i.get("type")) for i in reply.xml.iter(
        "{http://jabber.org/protocol/disco#info}identity")]
    assert ids == [("pubsub", "service")]


async def test_owner_and_subscriber_use_cases(net, server):
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    await create(alice, "news", {"pubsub#max_items": "2", "pubsub#title": "News"})
    await expect_error(alice, SVC, "<pubsub xmlns='%s'><create node='news'/></pubsub>"
                       % NS_PUBSUB, "set", "conflict")
    reply = await bob.iq(SVC, "<pubsub xmlns='%s'><subscribe node='news' jid='%s'/></pubsub>"
                         % (NS_PUBSUB, bob.boundjid.full), "set")
    sub = reply.xml.find(q(NS_PUBSUB, "pubsub")).find(q(NS_PUBSUB, "subscription"))
    assert sub.get("subscription") == "subscribed"
    await publish(alice, "news", "<entry xmlns='http://www.w3.org/2005/Atom'>hi</entry>",
                  "e1", to=SVC)
    got = await bob.inbox.get(event_items("news", frm=SVC), "news event")
    assert event_item_ids(got) == ["e1"]
    # Only owners and publishers publish; non-owners do not configure.
    await expect_error(bob, SVC, publish_xml("news", "<x xmlns='urn:t'/>"), "set", "forbidden")
    await expect_error(bob, SVC, "<pubsub xmlns='%s'><configure node='news'/></pubsub>"
                       % NS_PUBSUB_OWNER, "get", "forbidden")
    await alice.iq(SVC, "<pubsub xmlns='%s'><affiliations node='news'><affiliation "
                   "jid='carol@localhost' affiliation='publisher'/></affiliations></pubsub>"
                   % NS_PUBSUB_OWNER, "set")
    await publish(carol, "news", "<x xmlns='urn:t'/>", "e2", to=SVC)
    await publish(carol, "news", "<x xmlns='urn:t'/>", "e3", to=SVC)
    assert [i.get("id") for i in await get_items(bob, SVC, "news")] == ["e2", "e3"]
    reply = await alice.iq(SVC, "<pubsub xmlns='%s'><subscriptions node='news'/></pubsub>"
                           % NS_PUBSUB_OWNER)
    subs = [s.get("jid") for s in reply.xml.iter(q(NS_PUBSUB_OWNER, "subscription"))]
    assert subs == [bob.boundjid.full]
    reply = await bob.iq(SVC, "<pubsub xmlns='%s'><subscriptions/></pubsub>" % NS_PUBSUB)
    assert [s.get("node") for s in reply.xml.iter(q(NS_PUBSUB, "subscription"))] == ["news"]
    # Configure: the form, then a change.
    reply = await alice.iq(SVC, "<pubsub xmlns='%s'><configure node='news'/></pubsub>"
                           % NS_PUBSUB_OWNER)
    assert reply.xml.find(".//{%s}x" % NS_DATA) is not None
    await alice.iq(SVC, "<pubsub xmlns='%s'><configure node='news'>%s</configure></pubsub>"
                   % (NS_PUBSUB_OWNER, form(NS_PUBSUB + "#node_config",
                                            {"pubsub#max_items": "1"})), "set")
    assert [i.get("id") for i in await get_items(bob, SVC, "news")] == ["e3"]
    await bob.iq(SVC, "<pubsub xmlns='%s'><unsubscribe node='news' jid='%s'/></pubsub>"
                 % (NS_PUBSUB, bob.boundjid.full), "set")
    await expect_error(bob, SVC, "<pubsub xmlns='%s'><unsubscribe node='news' jid='%s'/>"
                       "</pubsub>" % (NS_PUBSUB, bob.boundjid.full), "set",
                       "unexpected-request", "not-subscribed")
    await alice.iq(SVC, "<pubsub xmlns='%s'><purge node='news'/></pubsub>"
                   % NS_PUBSUB_OWNER, "set")
    assert await get_items(bob, SVC, "news") == []
    await alice.iq(SVC, "<pubsub xmlns='%s'><delete node='news'/></pubsub>"
                   % NS_PUBSUB_OWNER, "set")
    await expect_error(bob, SVC, "<pubsub xmlns='%s'><items node='news'/></pubsub>"
                       % NS_PUBSUB, "get", "item-not-found")
    await expect_error(alice, SVC, publish_xml("gone", "<x xmlns='urn:t'/>"), "set",
                       "item-not-found")


async def test_create_policy_admins(net, natter_factory):
    server = natter_factory(hosts=[{"domain": "localhost",
                                    "pubsub": {"create": "admins",
                                               "admins": "alice@localhost"}}])
    accounts(server, "alice", "bob")
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    await create(alice, "a")
    await expect_error(bob, SVC, "<pubsub xmlns='%s'><create node='b'/></pubsub>"
                       % NS_PUBSUB, "set", "forbidden")
    # An instant node gets a generated name.
    reply = await alice.iq(SVC, "<pubsub xmlns='%s'><create/></pubsub>" % NS_PUBSUB, "set")
    assert reply.xml.find(".//{%s}create" % NS_PUBSUB).get("node")


async def test_node_limit_per_creator(net, natter_factory):
    server = natter_factory(limits={"pubsub_max_nodes": 2})
    accounts(server, "alice")
    alice = await pep_connect(net, server, "alice")
    await create(alice, "a")
    await create(alice, "b")
    await expect_error(alice, SVC, "<pubsub xmlns='%s'><create node='c'/></pubsub>"
                       % NS_PUBSUB, "set", "not-allowed", "max-nodes-exceeded")
    await net.assert_served(server)


async def test_subscription_limit(net, natter_factory):
    """pubsub_max_subscriptions counts subscriptions and affiliations of a
    node (the owner's is one): beyond, XEP-0060 §6.1.3.9's error."""
    server = accounts(natter_factory(limits={"pubsub_max_subscriptions": 2}),
                      "alice", "bob", "carol")
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    await create(alice, "news")
    await bob.iq(SVC, subscribe_xml("news", bob), "set")
    await expect_error(carol, SVC, subscribe_xml("news", carol), "set",
                       "policy-violation", "too-many-subscriptions")
    await net.assert_served(server)


async def test_notification_fan_out_limit(net, natter_factory):
    """One publish notifies pubsub_max_notifications recipients at most."""
    server = accounts(natter_factory(workers=1, limits={"pubsub_max_notifications": 1}),
                      "alice", "bob", "carol")
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    await create(alice, "news")
    for who in (bob, carol):
        await who.iq(SVC, subscribe_xml("news", who), "set")
    await publish(alice, "news", "<entry xmlns='urn:t'>hi</entry>", "e1", to=SVC)
    # One loop: each notification is in its recipient's stream before the
    # answer to a ping sent after the publish's result.
    for who in (bob, carol):
        await who.ping()
    got = [who for who in (bob, carol) if who.inbox.find(event_items("news", frm=SVC))]
    assert len(got) == 1, "notifications sent: %d, limit 1" % len(got)


@pytest.mark.natter_config(limits={"pubsub_max_nodes": 1000})
async def test_many_instant_nodes(net, natter):
    """Regression: creating a node counted its creator under one of the 64
    node locks while holding the node's own, and 1 instant node in 64
    deadlocked its loop. 300 in a row hit that bucket with a probability
    of 99 %; every one must get its answer."""
    accounts(natter, "alice")
    alice = await pep_connect(net, natter, "alice")
    names = set()
    for _ in range(300):
        reply = await alice.iq(SVC, "<pubsub xmlns='%s'><create/></pubsub>"
                               % NS_PUBSUB, "set")
        names.add(reply.xml.find(q(NS_PUBSUB, "pubsub")).find(
            q(NS_PUBSUB, "create")).get("node"))
    assert len(names) == 300


async def test_whitelist_admits_members_and_publishers(net, server):
    """A whitelist node (XEP-0060 4.5): bob, a member, subscribes and reads
    but may not publish; carol, a publisher, publishes and reads; dave,
    without an affiliation, neither reads, subscribes nor sees the node
    in disco#items (closed-node).  Set back to none, bob is out again and
    his subscription gets no more notifications."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    dave = await pep_connect(net, server, "dave")
    await create(alice, "club", {"pubsub#access_model": "whitelist"})
    await alice.iq(SVC, affiliations_xml("club", {"bob@localhost": "member",
                                                  "carol@localhost": "publisher"}), "set")
    await bob.iq(SVC, subscribe_xml("club", bob), "set")
    await publish(carol, "club", "<x xmlns='urn:t'/>", "c1", to=SVC)
    got = await bob.inbox.get(event_items("club", frm=SVC), "carol's item at bob")
    assert event_item_ids(got) == ["c1"]
    for who in (bob, carol):
        assert [i.get("id") for i in await get_items(who, SVC, "club")] == ["c1"]
    await expect_error(bob, SVC, publish_xml("club", "<x xmlns='urn:t'/>"), "set",
                       "forbidden")
    for payload, type_ in ((items_xml("club"), "get"), (subscribe_xml("club", dave), "set")):
        await expect_error(dave, SVC, payload, type_, "not-allowed", "closed-node")
    reply = await dave.iq(SVC, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
    assert [i.get("node") for i in reply.xml.iter(
        "{http://jabber.org/protocol/disco#items}item")] == []
    await alice.iq(SVC, affiliations_xml("club", {"bob@localhost": "none"}), "set")
    await expect_error(bob, SVC, items_xml("club"), "get", "not-allowed", "closed-node")
    await publish(carol, "club", "<x xmlns='urn:t'/>", "c2", to=SVC)
    await assert_not_delivered(bob, event_items("club"), "an event of a node bob "
                               "may no longer see", carol, "m-not-member")


async def test_owner_affiliations_and_outcast(net, server):
    """The owner lists the node's affiliations (XEP-0060 8.9.1) and each
    user their own (5.7).  An outcast (8.9.2) may neither read nor
    subscribe (forbidden, 4.1): bob's subscription ends, he is told so
    (8.8.4) and gets no notification; set to none, bob reads again and
    is no longer listed."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    carol = await pep_connect(net, server, "carol")
    await create(alice, "news")
    await bob.iq(SVC, subscribe_xml("news", bob), "set")
    await alice.iq(SVC, affiliations_xml("news", {"carol@localhost": "publisher",
                                                  "bob@localhost": "outcast"}), "set")
    await bob.inbox.get(told(bob, "none", "news"), "being told the subscription ended")
    assert await owner_list(alice, "news", "subscriptions") == {}
    assert await own_list(bob, "subscriptions") == {}
    assert await owner_list(alice, "news", "affiliations") == {
        "alice@localhost": "owner", "carol@localhost": "publisher",
        "bob@localhost": "outcast"}
    assert await own_list(carol, "affiliations") == {"news": "publisher"}
    assert await own_list(alice, "affiliations") == {"news": "owner"}
    await expect_error(bob, SVC, "<pubsub xmlns='%s'><affiliations node='news'/>"
                       "</pubsub>" % NS_PUBSUB_OWNER, "get", "forbidden")
    for payload, type_ in ((items_xml("news"), "get"), (subscribe_xml("news", bob), "set")):
        await expect_error(bob, SVC, payload, type_, "forbidden")
    await publish(carol, "news", "<x xmlns='urn:t'/>", "e1", to=SVC)
    await assert_not_delivered(bob, event_items("news"), "an event as an outcast",
                               carol, "m-outcast")
    await alice.iq(SVC, affiliations_xml("news", {"bob@localhost": "none"}), "set")
    assert await owner_list(alice, "news", "affiliations") == {
        "alice@localhost": "owner", "carol@localhost": "publisher"}
    assert await own_list(bob, "affiliations") == {}
    assert [i.get("id") for i in await get_items(bob, SVC, "news")] == ["e1"]


async def test_node_keeps_an_owner(net, server):
    """The last owner cannot give up a node (nor be made an outcast):
    conflict, as in a chat room (XEP-0045 10.6), and nothing changes.
    With a second owner, the first may go. An account stays the owner of
    its own PEP nodes."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    await create(alice, "news")
    for aff in ("none", "outcast", "member"):
        await expect_error(alice, SVC, affiliations_xml(
            "news", {"alice@localhost": aff}), "set", "conflict")
    assert await owner_list(alice, "news", "affiliations") == {
        "alice@localhost": "owner"}
    await alice.iq(SVC, affiliations_xml(
        "news", {"bob@localhost": "owner", "alice@localhost": "none"}), "set")
    assert await owner_list(bob, "news", "affiliations") == {
        "bob@localhost": "owner"}
    await publish(alice, "mood", "<mood xmlns='http://jabber.org/protocol/mood'>"
                  "<happy/></mood>", "m1")
    await expect_error(alice, "alice@localhost", affiliations_xml(
        "mood", {"alice@localhost": "none"}), "set", "conflict")


@pytest.mark.parametrize("verb", ["delete", "purge"])
async def test_owner_request_without_a_node(net, server, verb):
    """A delete or purge that names no node gets bad-request with
    nodeid-required (XEP-0060 8.4.3.1, 8.5.3.1), at the service and at
    one's own PEP, and the server keeps serving. (It used to read the
    missing name: a null pointer in the node's lock hash.)"""
    alice = await pep_connect(net, server, "alice")
    await create(alice, "news")
    for to in (SVC, "alice@localhost"):
        await expect_error(alice, to, "<pubsub xmlns='%s'><%s/></pubsub>" % (
            NS_PUBSUB_OWNER, verb), "set", "bad-request", "nodeid-required")
    assert "news" in await own_list(alice, "affiliations")
    await net.assert_served(server)


def told(client, state, node="news"):
    """A message from the service telling client its subscription to
    node is now state (XEP-0060 8.8.4)."""
    def match(s):
        sub = s.xml.find("{%s}pubsub/{%s}subscription" % (NS_PUBSUB, NS_PUBSUB))
        return (s.xml.get("from") == SVC and sub is not None and sub.get("node") == node
                and sub.get("jid") == client.boundjid.full
                and sub.get("subscription") == state)
    return match


async def test_owner_manages_subscriptions(net, server):
    """The owner subscribes bob (XEP-0060 8.8.2): bob is told (8.8.4),
    gets notifications, and both lists show it; set to none, bob is told,
    the subscription is gone from both lists and the notifications stop."""
    alice = await pep_connect(net, server, "alice")
    bob = await pep_connect(net, server, "bob")
    await create(alice, "news")
    change = "<pubsub xmlns='%s'><subscriptions node='news'><subscription jid='%s' " \
             "subscription='%%s'/></subscriptions></pubsub>" % (NS_PUBSUB_OWNER,
                                                                 bob.boundjid.full)
    await alice.iq(SVC, change % "subscribed", "set")
    await bob.inbox.get(told(bob, "subscribed"), "being told of the subscription")
    assert await owner_list(alice, "news", "subscriptions") == {
        bob.boundjid.full: "subscribed"}
    assert await own_list(bob, "subscriptions") == {"news": "subscribed"}
    await publish(alice, "news", "<x xmlns='urn:t'/>", "e1", to=SVC)
    got = await bob.inbox.get(event_items("news", frm=SVC), "the event, subscribed by alice")
    assert event_item_ids(got) == ["e1"]
    await alice.iq(SVC, change % "none", "set")
    await bob.inbox.get(told(bob, "none"), "being told the subscription ended")
    assert await owner_list(alice, "news", "subscriptions") == {}
    assert await own_list(bob, "subscriptions") == {}
    await publish(alice, "news", "<x xmlns='urn:t'/>", "e2", to=SVC)
    await assert_not_delivered(bob, event_items("news"), "an event after alice "
                               "ended bob's subscription", alice, "m-unsubscribed")
    await expect_error(bob, SVC, change % "subscribed", "set", "forbidden")


@pytest.mark.parametrize("policy", ["local", "all"])
async def test_create_policy_for_remote_users(natter_factory, test_ca, dns, net, policy):
    """create: local (the default) lets the host's users create nodes and
    refuses a user of another server with forbidden (XEP-0060 8.1.1:
    insufficient privileges); all lets him, and makes him the node's
    owner.  bob is a user of a second natterd (natter-b), federated with
    the service's host."""
    config = natter_config(test_ca, dns, NATTER_A)
    config["hosts"][0]["pubsub"] = {"create": policy}
    a = accounts(natter_factory(extra_listeners=[fedlib.s2s_listener(NATTER_A)], **config),
                 "alice")
    b = accounts(natter_factory(extra_listeners=[fedlib.s2s_listener(NATTER_B)],
                                **natter_config(test_ca, dns, NATTER_B)), "bob")
    service = "pubsub." + NATTER_A
    with dns.changed():
        dns.add_srv(service, "s2s." + NATTER_A)
        dns.apply()
        async with diagnose(a, b, dns=dns):
            alice = await connect(net, a, "alice")
            bob = await connect(net, b, "bob")
            await create(alice, "local-node", service=service)
            create_xml = "<pubsub xmlns='%s'><create node='remote-node'/></pubsub>" % NS_PUBSUB
            if policy == "local":
                await expect_error(bob, service, create_xml, "set", "forbidden")
            else:
                await bob.iq(service, create_xml, "set", timeout=20)
                assert await own_list(bob, "affiliations", service) == {
                    "remote-node": "owner"}

"""The pubsub service (XEP-0060) at pubsub.DOMAIN."""

import pytest

from imlib import accounts
from natterlib import q
from peplib import (
    NS_DATA, NS_PUBSUB, NS_PUBSUB_OWNER, event_items, event_item_ids, event_of,
    expect_error, form, get_items, pep_connect, publish, publish_xml)

SVC = "pubsub.localhost"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def create(client, node, config=None):
    conf = "<configure>%s</configure>" % form(
        NS_PUBSUB + "#node_config", config) if config else ""
    await client.iq(SVC, "<pubsub xmlns='%s'><create node='%s'/>%s</pubsub>"
                    % (NS_PUBSUB, node, conf), "set")


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


def subscribe_xml(node, client):
    return "<pubsub xmlns='%s'><subscribe node='%s' jid='%s'/></pubsub>" % (
        NS_PUBSUB, node, client.boundjid.full)


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

"""PEP (XEP-0163) across federation: natter's users and the users of
Prosody 0.12 and ejabberd 23.01 (fedlib's peers) as each other's contacts.

natter's side of it: a remote contact's presence carries XEP-0115 caps;
natterd asks the remote full JID for the disco#info of an unknown ver over
s2s (caps.c, iqreq.c), notifies the resources whose features include
NODE+notify when its user publishes, sends the last item to a contact
coming online, and answers a remote stranger's items request on an open
node.  The other way, the peer's PEP service notifies natter's user and
natterd only routes (the peer asks natter's user's client for its
disco#info through natterd).

Clients are slixmpp with its disco, pubsub, caps and PEP plugins at their
defaults (peplib.pep_connect), +notify for the nodes they want.  Run under
`flock /tmp/natter-fed.lock` like test_interop.py."""

from fedlib import NATTER_A, diagnose, fed_connect, unique_name
from imlib import accounts, assert_not_delivered, msg, pres, roster_get, \
    send_presence_type
from natterlib import q
from peplib import (
    NS_PUBSUB, caps_query, event_item_ids, event_items, event_payload,
    expect_error, pep_connect, publish, send_caps_presence)
from test_interop import natter, peer  # noqa: F401 (fixtures)

NS_TUNE = "http://jabber.org/protocol/tune"
NS_MOOD = "http://jabber.org/protocol/mood"
TUNE = "<tune xmlns='%s'><artist>Yes</artist><title>%%s</title></tune>" % NS_TUNE

# s2s links are made on first use (DNS, TCP, TLS, SASL EXTERNAL) each way.
TIMEOUT = 20

# The peers as fedlib configures them have no PEP service: Prosody's
# "pep" module and ejabberd's mod_pubsub (whose default plugins lack
# "pep") are loaded only where a test needs the peer's own PEP.
PEER_PEP = {
    "prosody": '"pep";',
    "ejabberd": "  mod_pubsub:\n    plugins:\n      - flat\n      - pep\n",
}


async def peer_pep_connect(net, peer, name, resource="r", interests=()):
    """A session of NAME on the peer with slixmpp's PEP plugins and
    +notify for interests; it has fetched its roster (Prosody delivers
    subscription answers only to such sessions, RFC 6121 2.1.6) and sent
    its caps presence."""
    peer.add_user(name)
    client = await pep_connect(net, peer, name, resource, interests=interests,
                               available=False, password=peer.password(name),
                               mechanism=peer.sasl_mechanism)
    await roster_get(client)
    await send_caps_presence(client)
    return client


async def subscribe(user, contact):
    """imlib.subscribe with federation's timeouts: user subscribes to
    contact's presence; returns when user has the 'subscribed'."""
    await send_presence_type(user, contact.boundjid.bare, "subscribe")
    await contact.inbox.get(pres(frm_bare=user.boundjid.bare, type="subscribe"),
                            "subscribe from %s" % user.boundjid.bare,
                            timeout=TIMEOUT)
    await send_presence_type(contact, user.boundjid.bare, "subscribed")
    await user.inbox.get(pres(frm_bare=contact.boundjid.bare, type="subscribed"),
                         "subscribed from %s" % contact.boundjid.bare,
                         timeout=TIMEOUT)


async def mutual(a, b):
    await subscribe(a, b)
    await subscribe(b, a)


async def round_trip(sender, recipient, msg_id):
    """A message over the s2s link from sender's server to recipient's:
    what sender's server sent that way before it has been processed by the
    other side (one stream, in order)."""
    sender.send_raw("<message to='%s' id='%s' type='chat'><body>sync</body>"
                    "</message>" % (recipient.boundjid.full, msg_id))
    await recipient.inbox.get(msg(id=msg_id), "message %s" % msg_id,
                              timeout=TIMEOUT)


async def test_natter_publish_notifies_remote_contact(natter, peer, net, dns):
    """alice (natter) and bob (peer) are mutual contacts.  natterd learns
    the caps of bob's two resources by asking each of them for disco#info
    over s2s; alice publishes a tune: bob/r, with tune+notify, gets the
    event, bob/quiet, with mood+notify only, does not."""
    name = unique_name("alice")
    accounts(natter, name)
    async with diagnose(natter, peer, dns=dns):
        # No +notify for alice: her caps ver must not be bob's, or natterd
        # would know his from hers and ask nobody.
        alice = await pep_connect(net, natter, name)
        bob_name = unique_name("bob")
        bob = await peer_pep_connect(net, peer, bob_name, interests=[NS_TUNE])
        quiet = await peer_pep_connect(net, peer, bob_name, "quiet",
                                       interests=[NS_MOOD])
        await mutual(alice, bob)
        # bob's presence reached natterd with the subscription; each ver
        # is unknown there, so natterd asks the resource itself.
        for who in (bob, quiet):
            await who.inbox.get(caps_query(NATTER_A),
                                "natterd's disco#info query for the caps of %s"
                                % who.boundjid, timeout=TIMEOUT)
        # The answers went back on the peer -> natter stream before these.
        await round_trip(bob, alice, "sync-r")
        await round_trip(quiet, alice, "sync-quiet")
        item_id = await publish(alice, NS_TUNE, TUNE % "Roundabout", "t1")
        got = await bob.inbox.get(event_items(NS_TUNE, frm=alice.boundjid.bare),
                                  "alice's tune event", timeout=TIMEOUT)
        assert event_item_ids(got) == [item_id] == ["t1"]
        assert event_payload(got).find(q(NS_TUNE, "title")).text == "Roundabout"
        await assert_not_delivered(quiet, event_items(NS_TUNE), "a tune event",
                                   alice, "after-tune")


async def test_remote_publish_notifies_natter_contact(natter, peer, net, dns):
    """The other way: bob publishes on his own server's PEP service (the
    peer's "pep"/mod_pubsub, loaded for this test); alice, his contact on
    natter with tune+notify in her caps, gets the event from his bare JID.
    The peer learns alice's caps by asking her client through natterd.
    Whether the peer knew them when bob published (a notification) or
    learnt them after (the last item, XEP-0163 4.3.2), alice has the event
    with bob's item."""
    name = unique_name("alice")
    accounts(natter, name)
    with peer.configured(extra_modules=PEER_PEP[peer.name]):
        async with diagnose(natter, peer, dns=dns):
            alice = await pep_connect(net, natter, name, interests=[NS_TUNE])
            bob = await peer_pep_connect(net, peer, unique_name("bob"),
                                         interests=[NS_TUNE])
            await mutual(alice, bob)
            item_id = await publish(bob, NS_TUNE, TUNE % "Heart of the Sunrise",
                                    "p1")
            got = await alice.inbox.get(
                event_items(NS_TUNE, frm=bob.boundjid.bare),
                "bob's tune event from %s" % peer.name, timeout=TIMEOUT)
            assert event_item_ids(got) == [item_id] == ["p1"]
            assert event_payload(got).find(q(NS_TUNE, "title")).text == \
                "Heart of the Sunrise"


async def test_last_item_to_remote_contact_coming_online(natter, peer, net, dns):
    """alice published twice while bob (peer) was offline; bob's new
    session, with tune+notify, gets her last item only: natterd sends it
    once it has learnt the caps of bob's new resource, which it asks that
    resource for over s2s."""
    name = unique_name("alice")
    accounts(natter, name)
    async with diagnose(natter, peer, dns=dns):
        # Caps of her own unlike bob2's (see above).
        alice = await pep_connect(net, natter, name)
        bob_name = unique_name("bob")
        bob = await fed_connect(net, peer, bob_name, available=True)
        await mutual(alice, bob)
        await bob.close()
        await alice.inbox.get(pres(frm=bob.boundjid.full, type="unavailable"),
                              "bob offline", timeout=TIMEOUT)
        await publish(alice, NS_TUNE, TUNE % "first", "a")
        await publish(alice, NS_TUNE, TUNE % "last", "b")
        bob2 = await peer_pep_connect(net, peer, bob_name, "r2",
                                      interests=[NS_TUNE])
        await bob2.inbox.get(caps_query(NATTER_A),
                             "natterd's disco#info query for bob2's caps",
                             timeout=TIMEOUT)
        got = await bob2.inbox.get(event_items(NS_TUNE, frm=alice.boundjid.bare),
                                   "alice's last tune", timeout=TIMEOUT)
        assert event_item_ids(got) == ["b"]
        assert event_payload(got).find(q(NS_TUNE, "title")).text == "last"


async def test_open_node_read_by_remote_stranger(natter, peer, net, dns):
    """bob (peer), no contact of alice's, reads her open node over s2s
    and sees it in her disco#items; her presence-access node refuses him
    with XEP-0060's presence-subscription-required."""
    name = unique_name("alice")
    accounts(natter, name)
    async with diagnose(natter, peer, dns=dns):
        alice = await pep_connect(net, natter, name)
        await publish(alice, "urn:example:open", "<x xmlns='urn:example'>hi</x>",
                      "o1", options={"pubsub#access_model": "open"})
        await publish(alice, NS_TUNE, TUNE % "private")
        bob = await fed_connect(net, peer, unique_name("bob"), available=True)
        reply = await bob.iq(alice.boundjid.bare,
                             "<pubsub xmlns='%s'><items node='urn:example:open'/>"
                             "</pubsub>" % NS_PUBSUB, timeout=TIMEOUT)
        items = reply.xml.find("%s/%s" % (q(NS_PUBSUB, "pubsub"),
                                          q(NS_PUBSUB, "items")))
        assert items is not None and items.get("node") == "urn:example:open"
        got = items.findall(q(NS_PUBSUB, "item"))
        assert [i.get("id") for i in got] == ["o1"]
        assert got[0].findtext("{urn:example}x") == "hi"
        reply = await bob.iq(alice.boundjid.bare,
                             "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                             timeout=TIMEOUT)
        nodes = [i.get("node") for i in reply.xml.iter(
            "{http://jabber.org/protocol/disco#items}item")]
        assert nodes == ["urn:example:open"]
        await expect_error(bob, alice.boundjid.bare,
                           "<pubsub xmlns='%s'><items node='%s'/></pubsub>"
                           % (NS_PUBSUB, NS_TUNE), "get", "not-authorized",
                           "presence-subscription-required")

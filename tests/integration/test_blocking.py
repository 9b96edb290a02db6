"""Blocking (XEP-0191): the blocklist (get, block, unblock, unblock all,
pushes) and its enforcement in both directions for messages, presence and
iq.

These tests run natterd with one event loop: showing that something from
a blocked account was NOT delivered uses a marker from a third account
sent after the blocked stanza was processed, and with one loop nothing can
overtake.
"""

import xml.etree.ElementTree as ET

import pytest

from imlib import (
    NS_BLOCKING, NS_BLOCKING_ERRORS, accounts, any_pres, blocking_push,
    connect, error_child, error_condition, iq_error, msg, mutual, pres,
    send_available)
from natterlib import NS_PING, q, stanza_error_condition

pytestmark = pytest.mark.natter_config(workers=1)

ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def blocklist(client):
    result = await client.iq(None, "<blocklist xmlns='%s'/>" % NS_BLOCKING)
    node = result.xml.find(q(NS_BLOCKING, "blocklist"))
    assert node is not None, ET.tostring(result.xml, "unicode")
    return sorted(i.get("jid") for i in node.findall(q(NS_BLOCKING, "item")))


async def block(client, *jids):
    items = "".join("<item jid='%s'/>" % j for j in jids)
    return await client.iq(None, "<block xmlns='%s'>%s</block>"
                           % (NS_BLOCKING, items), "set")


async def unblock(client, *jids):
    items = "".join("<item jid='%s'/>" % j for j in jids)
    return await client.iq(None, "<unblock xmlns='%s'>%s</unblock>"
                           % (NS_BLOCKING, items), "set")


def push_jids(stanza, kind):
    node = stanza.xml.find(q(NS_BLOCKING, kind))
    return sorted(i.get("jid") for i in node.findall(q(NS_BLOCKING, "item")))


async def nothing_before_marker(recipient, marker_sender, pred, what,
                                marker_id):
    """With one event loop: everything processed before marker_sender
    sends its marker has reached recipient first."""
    marker_sender.send_raw("<message to='%s' id='%s' type='chat'><body>m"
                           "</body></message>"
                           % (recipient.boundjid.full, marker_id))
    before = await recipient.inbox.before_marker(marker_id)
    bad = [s for s in before if pred(s)]
    assert not bad, "%s received %s:\n%s" % (
        recipient.boundjid, what, recipient.inbox.describe(bad))


# ------------------------------------------------------------ blocklist ---

async def test_blocklist_starts_empty(server, net):
    bob = await connect(net, server, "bob")
    assert await blocklist(bob) == []


async def test_block_and_unblock_with_pushes(server, net):
    # Both sessions fetched the blocklist and the roster: "interested"
    # either way XEP-0191's pushes "a la roster pushes" are read.
    one = await connect(net, server, "bob", "one", roster=True)
    two = await connect(net, server, "bob", "two", roster=True)
    assert await blocklist(one) == []
    assert await blocklist(two) == []

    await block(one, ALICE, CAROL)
    for session in (one, two):
        push = await session.inbox.get(blocking_push("block"), "block push")
        assert push_jids(push, "block") == [ALICE, CAROL]
        assert push.xml.get("from") in (None, BOB)
    assert await blocklist(two) == [ALICE, CAROL]

    await unblock(two, CAROL)
    for session in (one, two):
        push = await session.inbox.get(blocking_push("unblock"),
                                       "unblock push")
        assert push_jids(push, "unblock") == [CAROL]
    assert await blocklist(one) == [ALICE]

    # An empty <unblock/> clears the list, and the push says so.
    await block(one, CAROL)
    await unblock(one)
    for session in (one, two):
        push = await session.inbox.get(
            lambda s: blocking_push("unblock")(s) and
            push_jids(s, "unblock") == [], "unblock-all push")
    assert await blocklist(two) == []


async def test_blocklist_persists(server, net):
    bob = await connect(net, server, "bob")
    await block(bob, ALICE)
    await bob.close()
    again = await connect(net, server, "bob", "again")
    assert await blocklist(again) == [ALICE]


async def test_block_without_items_is_bad_request(server, net):
    bob = await connect(net, server, "bob")
    error = await iq_error(bob, None, "<block xmlns='%s'/>" % NS_BLOCKING,
                           "set")
    assert error_condition(error) == "bad-request"


async def test_block_invalid_jid_is_jid_malformed(server, net):
    bob = await connect(net, server, "bob")
    error = await iq_error(bob, None, "<block xmlns='%s'><item jid='a@b@c'/>"
                           "</block>" % NS_BLOCKING, "set")
    assert error_condition(error) == "jid-malformed"
    assert await blocklist(bob) == []


async def test_blocklist_is_private(server, net):
    bob = await connect(net, server, "bob")
    await block(bob, ALICE)
    carol = await connect(net, server, "carol")
    error = await iq_error(carol, BOB, "<blocklist xmlns='%s'/>"
                           % NS_BLOCKING)
    assert error_condition(error) in ("forbidden", "service-unavailable")
    assert ALICE not in ET.tostring(error.xml, "unicode")


# --------------------------------------------------- inbound enforcement --

async def test_messages_from_blocked_bounce(server, net):
    bob = await connect(net, server, "bob", available=True)
    alice = await connect(net, server, "alice", available=True)
    carol = await connect(net, server, "carol")
    await block(bob, ALICE)

    for to in (BOB, BOB + "/r"):
        alice.send_raw("<message to='%s' id='b-%s' type='chat'><body>let "
                       "me in</body></message>" % (to, len(to)))
        bounce = await alice.inbox.get(msg(id="b-%s" % len(to),
                                           type="error"), "the bounce")
        assert stanza_error_condition(bounce.xml) == "service-unavailable"
    await nothing_before_marker(bob, carol, msg(frm_bare=ALICE),
                                "a message from a blocked account", "m1")

    # Offline storage does not take them either.
    await bob.close()
    alice.send_raw("<message to='%s' id='b-off' type='chat'><body>later"
                   "</body></message>" % BOB)
    bounce = await alice.inbox.get(msg(id="b-off", type="error"),
                                   "the bounce of an offline message")
    assert stanza_error_condition(bounce.xml) == "service-unavailable"
    back = await connect(net, server, "bob", "back", available=True)
    assert not back.inbox.find(msg(id="b-off"))


async def test_iq_from_blocked_is_service_unavailable(server, net):
    bob = await connect(net, server, "bob", available=True)
    alice = await connect(net, server, "alice")
    await block(bob, ALICE)
    for to in (BOB + "/r", BOB):
        error = await iq_error(alice, to, "<ping xmlns='%s'/>" % NS_PING)
        assert error_condition(error) == "service-unavailable", to
    assert bob.server_pings.empty(), "a blocked iq reached bob"


async def test_presence_from_blocked_is_dropped(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    carol = await connect(net, server, "carol")
    await mutual(alice, bob)
    await block(bob, ALICE)
    bob.inbox.take(any_pres(ALICE))
    alice.inbox.take(lambda s: True)

    # Broadcast, directed and subscription presence: all dropped, and
    # no error goes back for presence.
    await send_available(alice, show="chat")
    await send_available(alice, status="directed", to=BOB + "/r")
    alice.send_raw("<presence to='%s' type='subscribe'/>" % BOB)
    await alice.barrier()
    await nothing_before_marker(bob, carol, any_pres(ALICE),
                                "presence from a blocked account", "m1")
    assert not alice.inbox.find(pres(type="error")), alice.inbox.describe()


async def test_blocking_sends_unavailable_to_the_blocked(server, net):
    # XEP-0191 3.3: the blocked contact sees the user go unavailable, and
    # 3.4: after unblocking, gets the current presence again.
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await mutual(alice, bob)
    await send_available(bob, status="here")
    await alice.inbox.get(pres(frm=BOB + "/r", type="available"), "bob")
    alice.inbox.take(any_pres(BOB))

    await block(bob, ALICE)
    await alice.inbox.get(pres(frm=BOB + "/r", type="unavailable"),
                          "bob's unavailable presence at the block")
    await unblock(bob, ALICE)
    got = await alice.inbox.get(pres(frm=BOB + "/r", type="available"),
                                "bob's presence after the unblock")
    assert got.xml.findtext("{jabber:client}status") == "here"


async def test_blocked_contacts_presence_is_not_probed(server, net):
    # bob blocked alice: when bob logs in, alice's presence is not
    # delivered to him even though he is subscribed to her.
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await mutual(alice, bob)
    await block(bob, ALICE)
    await bob.close()
    again = await connect(net, server, "bob", "again", roster=True)
    await send_available(again)
    assert not again.inbox.find(any_pres(ALICE)), again.inbox.describe()


# -------------------------------------------------- outbound enforcement --

async def test_message_to_blocked_is_not_acceptable(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    carol = await connect(net, server, "carol")
    await block(bob, ALICE)
    bob.send_raw("<message to='%s' id='out-1' type='chat'><body>psst"
                 "</body></message>" % ALICE)
    bounce = await bob.inbox.get(msg(id="out-1", type="error"), "the error")
    assert stanza_error_condition(bounce.xml) == "not-acceptable"
    assert bounce.xml.find("{jabber:client}error/{%s}blocked"
                           % NS_BLOCKING_ERRORS) is not None, \
        "no <blocked xmlns='%s'/> in the error" % NS_BLOCKING_ERRORS
    await nothing_before_marker(alice, carol, msg(frm_bare=BOB),
                                "a message from an account that blocked "
                                "her", "m1")


async def test_iq_to_blocked_is_not_acceptable(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob")
    await block(bob, ALICE)
    error = await iq_error(bob, ALICE + "/r", "<ping xmlns='%s'/>" % NS_PING)
    assert error_condition(error) == "not-acceptable"
    assert error_child(error, NS_BLOCKING_ERRORS, "blocked") is not None
    assert alice.server_pings.empty(), "the iq reached alice"


async def test_presence_to_blocked_is_dropped(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    carol = await connect(net, server, "carol")
    await mutual(alice, bob)
    await block(bob, ALICE)
    alice.inbox.take(any_pres(BOB))
    await send_available(bob, show="away")
    await send_available(bob, to=ALICE + "/r", status="directed")
    await nothing_before_marker(alice, carol, any_pres(BOB),
                                "presence from an account that blocked her",
                                "m1")


async def test_unblock_restores_communication(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await block(bob, ALICE)
    await unblock(bob, ALICE)
    alice.send_raw("<message to='%s/r' id='again-1' type='chat'><body>ok?"
                   "</body></message>" % BOB)
    await bob.inbox.get(msg(id="again-1"), "the message after unblocking")
    bob.send_raw("<message to='%s/r' id='again-2' type='chat'><body>ok!"
                 "</body></message>" % ALICE)
    await alice.inbox.get(msg(id="again-2"), "the reply")


async def test_blocking_is_per_account_not_global(server, net):
    alice = await connect(net, server, "alice", available=True)
    carol = await connect(net, server, "carol", available=True)
    bob = await connect(net, server, "bob")
    await block(bob, ALICE)
    alice.send_raw("<message to='%s/r' id='free-1' type='chat'><body>hi"
                   "</body></message>" % CAROL)
    await carol.inbox.get(msg(id="free-1"), "alice's message to carol")

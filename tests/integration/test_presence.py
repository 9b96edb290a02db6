"""Subscriptions (RFC 6121 section 3) and presence (RFC 6121 section 4),
including the three-account scenario of issue 3.

Accounts are alice, bob, carol and dave@localhost; every session's
resource is 'r' unless a test needs more than one.
"""

import pytest

from imlib import (
    accounts, any_pres, assert_not_delivered, await_push, connect,
    drop_connection, is_subscription, msg, mutual, pres, restart_on_same_data,
    roster_get, roster_set, send_available, send_presence_type, subscribe)

ALICE, BOB = "alice@localhost", "bob@localhost"
CAROL, DAVE = "carol@localhost", "dave@localhost"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol", "dave")


def child_text(stanza, name):
    node = stanza.xml.find("{jabber:client}%s" % name)
    return None if node is None else node.text


# --------------------------------------------------- the scenario --

async def test_three_accounts_alice_adds_bob_and_carol(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)

    # alice adds bob and asks for his presence (RFC 6121 3.1.1-3.1.3).
    await roster_set(alice, BOB, name="Bob", groups=["Friends"])
    await await_push(alice, BOB, subscription="none", ask=None)
    await send_presence_type(alice, BOB, "subscribe")
    item = await await_push(alice, BOB, subscription="none",
                            ask="subscribe")
    assert item["name"] == "Bob" and item["groups"] == ["Friends"]
    request = await bob.inbox.get(pres(type="subscribe", frm_bare=ALICE),
                                  "alice's subscription request")
    # The request is stamped with the user's bare JID (RFC 6121 3.1.2).
    assert request.xml.get("from") == ALICE

    # alice adds carol, who is offline: the request waits for her.
    await roster_set(alice, CAROL, name="Carol")
    await send_presence_type(alice, CAROL, "subscribe")
    await await_push(alice, CAROL, subscription="none", ask="subscribe")

    # bob accepts while online (RFC 6121 3.1.5).
    await send_presence_type(bob, ALICE, "subscribed")
    await await_push(bob, ALICE, subscription="from")
    await alice.inbox.get(pres(frm=BOB, type="subscribed"),
                          "bob's approval")
    await await_push(alice, BOB, subscription="to", ask=None)
    # ...and alice gets bob's current presence right away (3.1.6).
    await alice.inbox.get(pres(frm=BOB + "/r", type="available"),
                          "bob's presence after the approval")

    # carol logs in later; the pending request arrives with her initial
    # presence (RFC 6121 3.1.3, "when the contact next becomes available").
    carol = await connect(net, server, "carol", roster=True)
    await send_available(carol, status="back")
    request = await carol.inbox.get(pres(type="subscribe", frm_bare=ALICE),
                                    "alice's stored request")
    assert request.xml.get("from") == ALICE
    await send_presence_type(carol, ALICE, "subscribed")
    await await_push(carol, ALICE, subscription="from")
    await alice.inbox.get(pres(frm=CAROL, type="subscribed"),
                          "carol's approval")
    await await_push(alice, CAROL, subscription="to", ask=None)
    carols = await alice.inbox.get(pres(frm=CAROL + "/r", type="available"),
                                   "carol's presence after the approval")
    assert child_text(carols, "status") == "back"

    # Presence now flows from bob and carol to alice only.
    await send_available(bob, show="away", status="lunch")
    away = await alice.inbox.get(pres(frm=BOB + "/r"), "bob away")
    assert (child_text(away, "show"), child_text(away, "status")) == \
        ("away", "lunch")
    await assert_not_delivered(carol, any_pres(BOB), "bob's presence",
                               bob, "m1")

    # alice's own changes reach neither: they are not subscribed to her.
    await send_available(alice, show="dnd")
    for contact in (bob, carol):
        await assert_not_delivered(contact, any_pres(ALICE),
                                   "alice's presence", alice,
                                   "m2-" + contact.boundjid.user)

    # bob asks back and alice approves: 'both' for alice and bob, and
    # alice's presence now reaches bob, still not carol.
    await send_presence_type(bob, ALICE, "subscribe")
    await alice.inbox.get(pres(frm=BOB, type="subscribe"), "bob's request")
    await send_presence_type(alice, BOB, "subscribed")
    await await_push(alice, BOB, subscription="both")
    await await_push(bob, ALICE, subscription="both", ask=None)
    await bob.inbox.get(pres(frm=ALICE, type="subscribed"),
                        "alice's approval")
    dnd = await bob.inbox.get(pres(frm=ALICE + "/r", type="available"),
                              "alice's current presence")
    assert child_text(dnd, "show") == "dnd"
    await send_available(alice, show="chat")
    chat = await bob.inbox.get(pres(frm=ALICE + "/r", type="available"),
                               "alice's new presence")
    assert child_text(chat, "show") == "chat"
    await assert_not_delivered(carol, any_pres(ALICE), "alice's presence",
                               alice, "m3")

    # carol logs out: alice sees her go.
    await carol.close()
    await alice.inbox.get(pres(frm=CAROL + "/r", type="unavailable"),
                          "carol's unavailable presence")

    # The rosters say the same thing.
    _, items = await roster_get(alice)
    assert {j: i["subscription"] for j, i in items.items()} == \
        {BOB: "both", CAROL: "to"}
    assert items[BOB]["ask"] is None and items[CAROL]["ask"] is None
    _, items = await roster_get(bob)
    assert {j: i["subscription"] for j, i in items.items()} == \
        {ALICE: "both"}
    carol2 = await connect(net, server, "carol", "again")
    _, items = await roster_get(carol2)
    assert {j: i["subscription"] for j, i in items.items()} == \
        {ALICE: "from"}

    # alice logs in on a second device: she gets bob's presence (a probe
    # answered by the server) and not carol's (offline).
    phone = await connect(net, server, "alice", "phone", roster=True)
    await send_available(phone)
    away = await phone.inbox.get(pres(frm=BOB + "/r", type="available"),
                                 "bob's presence for the new session")
    assert child_text(away, "show") == "away"
    assert not phone.inbox.find(pres(frm=CAROL + "/r", type="available"))


# ------------------------------------------------------- subscriptions ----

async def test_subscribe_sets_pending_out(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await send_presence_type(alice, BOB, "subscribe")
    # Without a prior roster set, the server creates the item.
    await await_push(alice, BOB, subscription="none", ask="subscribe")
    await bob.inbox.get(pres(frm=ALICE, type="subscribe"), "request")
    _, items = await roster_get(alice)
    assert items[BOB]["ask"] == "subscribe"
    # bob's roster shows nothing for a mere pending-in (RFC 6121 3.1.3).
    _, items = await roster_get(bob)
    assert ALICE not in items or items[ALICE]["subscription"] == "none"


async def test_request_waits_for_offline_contact_and_is_repeated(server,
                                                                 net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    await send_presence_type(alice, BOB, "subscribe")

    # Not yet available: no request (it comes with initial presence).
    bob = await connect(net, server, "bob", roster=True)
    await assert_not_delivered(bob, is_subscription, "a request before "
                               "initial presence", alice, "m1")
    await send_available(bob)
    await bob.inbox.get(pres(frm=ALICE, type="subscribe"), "stored request")
    await bob.close()

    # Not answered: it is presented again at the next login.
    bob = await connect(net, server, "bob", "again", roster=True,
                        available=True)
    await bob.inbox.get(pres(frm=ALICE, type="subscribe"),
                        "the request again")
    await send_presence_type(bob, ALICE, "subscribed")
    await await_push(alice, BOB, subscription="to")
    await bob.close()

    # Answered: never again.
    bob = await connect(net, server, "bob", "third", roster=True,
                        available=True)
    await assert_not_delivered(bob, pres(type="subscribe"),
                               "an answered request", alice, "m2")


async def test_pending_request_survives_restart(natter_factory, net):
    first = accounts(natter_factory(), "alice", "bob")
    alice = await connect(net, first, "alice", roster=True, available=True)
    await send_presence_type(alice, BOB, "subscribe")
    await await_push(alice, BOB, ask="subscribe")
    await alice.close()

    second = restart_on_same_data(natter_factory, first)
    bob = await connect(net, second, "bob", roster=True, available=True)
    await bob.inbox.get(pres(frm=ALICE, type="subscribe"),
                        "the request stored before the restart")
    alice = await connect(net, second, "alice")
    _, items = await roster_get(alice)
    assert items[BOB]["ask"] == "subscribe"


async def test_subscribe_when_already_subscribed_is_answered_by_server(
        server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(alice, bob)
    await await_push(alice, BOB, subscription="to")
    bob.inbox.take(is_subscription)

    # RFC 6121 3.1.3: the contact already approved, so his server answers
    # for him (the auto-reply 'subscribed' finds alice in state "To" and
    # changes nothing, Appendix A.3.2) and does not bother him.
    await send_presence_type(alice, BOB, "subscribe")
    await assert_not_delivered(bob, is_subscription, "a repeated request",
                               alice, "m1")
    _, items = await roster_get(alice)
    assert items[BOB]["subscription"] == "to"
    assert items[BOB]["ask"] is None
    _, items = await roster_get(bob)
    assert items[ALICE]["subscription"] == "from"


async def test_contact_denies_request(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await send_presence_type(alice, BOB, "subscribe")
    await bob.inbox.get(pres(frm=ALICE, type="subscribe"), "request")
    await send_presence_type(bob, ALICE, "unsubscribed")
    await alice.inbox.get(pres(frm=BOB, type="unsubscribed"), "the refusal")
    await await_push(alice, BOB, subscription="none", ask=None)
    # A denied request is not presented again.
    bob2 = await connect(net, server, "bob", "two", available=True)
    await assert_not_delivered(bob2, pres(type="subscribe"),
                               "a denied request", alice, "m1")


async def test_preapproval(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    assert "preapproval" in bob.features, \
        "no <sub xmlns='urn:xmpp:features:pre-approval'/> (RFC 6121 3.4)"

    # bob approves before alice asks (RFC 6121 3.4).
    await send_presence_type(bob, ALICE, "subscribed")
    item = await await_push(bob, ALICE)
    assert item["approved"] and item["subscription"] == "none"
    # Nothing reaches alice for a pre-approval.
    await assert_not_delivered(alice, is_subscription, "a pre-approval",
                               bob, "m0")

    await send_presence_type(alice, BOB, "subscribe")
    await alice.inbox.get(pres(frm=BOB, type="subscribed"),
                          "automatic approval")
    await await_push(alice, BOB, subscription="to", ask=None)
    await alice.inbox.get(pres(frm=BOB + "/r", type="available"),
                          "bob's presence")
    item = await await_push(bob, ALICE, subscription="from")
    assert not item["approved"]
    await assert_not_delivered(bob, pres(type="subscribe"),
                               "a pre-approved request", alice, "m1")


async def test_user_unsubscribes(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(alice, bob)
    await await_push(alice, BOB, subscription="to")
    await await_push(bob, ALICE, subscription="from")
    alice.inbox.take(any_pres(BOB))

    # RFC 6121 3.3: alice no longer wants bob's presence.
    await send_presence_type(alice, BOB, "unsubscribe")
    await await_push(alice, BOB, subscription="none")
    await bob.inbox.get(pres(frm=ALICE, type="unsubscribe"), "unsubscribe")
    await await_push(bob, ALICE, subscription="none")
    await alice.inbox.get(pres(frm=BOB + "/r", type="unavailable"),
                          "bob's resources going unavailable for alice")
    alice.inbox.take(any_pres(BOB))
    await send_available(bob, show="xa")
    await assert_not_delivered(alice, any_pres(BOB), "bob's presence",
                               bob, "m1")


async def test_contact_cancels_subscription(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(alice, bob)
    await await_push(alice, BOB, subscription="to")
    alice.inbox.take(any_pres(BOB))

    # RFC 6121 3.2: bob revokes alice's subscription.
    await send_presence_type(bob, ALICE, "unsubscribed")
    await await_push(bob, ALICE, subscription="none")
    await alice.inbox.get(pres(frm=BOB, type="unsubscribed"), "revocation")
    await await_push(alice, BOB, subscription="none")
    await alice.inbox.get(pres(frm=BOB + "/r", type="unavailable"),
                          "bob's resources going unavailable for alice")
    alice.inbox.take(any_pres(BOB))
    await send_available(bob, show="away")
    await assert_not_delivered(alice, any_pres(BOB), "bob's presence",
                               bob, "m1")


async def test_subscribe_to_nonexistent_account_is_refused(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    await send_presence_type(alice, "nobody@localhost", "subscribe")
    await alice.inbox.get(pres(frm="nobody@localhost", type="unsubscribed"),
                          "unsubscribed from the non-existent account")
    await await_push(alice, "nobody@localhost", subscription="none",
                     ask=None)


async def test_subscription_stanzas_are_stamped_with_bare_jid(server, net):
    alice = await connect(net, server, "alice", "laptop", roster=True,
                          available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    # Even addressed to bob's full JID, the request is about the account.
    await send_presence_type(alice, BOB + "/r", "subscribe")
    request = await bob.inbox.get(pres(type="subscribe"), "request")
    assert request.xml.get("from") == ALICE
    await send_presence_type(bob, ALICE + "/laptop", "subscribed")
    approval = await alice.inbox.get(pres(type="subscribed"), "approval")
    assert approval.xml.get("from") == BOB
    await await_push(alice, BOB, subscription="to")


# ------------------------------------------------------------- presence ---

async def test_initial_presence_goes_to_subscribers_only(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    carol = await connect(net, server, "carol", roster=True, available=True)
    dave = await connect(net, server, "dave", roster=True, available=True)
    await subscribe(bob, alice)      # bob sees alice: alice has 'from'
    await subscribe(alice, carol)    # alice sees carol: alice has 'to'
    for c in (bob, carol, dave):
        c.inbox.take(any_pres(ALICE))

    # A new resource of alice comes online.
    laptop = await connect(net, server, "alice", "laptop", roster=True)
    await send_available(laptop, show="chat", status="hi", priority=7)
    got = await bob.inbox.get(pres(frm=ALICE + "/laptop"), "broadcast")
    assert got.xml.get("type") is None
    assert (child_text(got, "show"), child_text(got, "status"),
            child_text(got, "priority")) == ("chat", "hi", "7")
    for other in (carol, dave):
        await assert_not_delivered(other, any_pres(ALICE),
                                   "alice's presence", laptop,
                                   "m-" + other.boundjid.user)


async def test_probes_bring_contacts_presence(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(alice, bob)
    await send_available(bob, show="away", status="in a meeting")
    bob_phone = await connect(net, server, "bob", "phone")
    await send_available(bob_phone, priority=-1)
    carol = await connect(net, server, "carol", roster=True, available=True)
    await subscribe(carol, alice)   # carol sees alice, not the reverse

    fresh = await connect(net, server, "alice", "fresh", roster=True)
    await send_available(fresh)
    got = await fresh.inbox.get(pres(frm=BOB + "/r"), "bob/r's presence")
    assert (child_text(got, "show"), child_text(got, "status")) == \
        ("away", "in a meeting")
    got = await fresh.inbox.get(pres(frm=BOB + "/phone"),
                                "bob/phone's presence")
    assert child_text(got, "priority") == "-1"
    assert not fresh.inbox.find(pres(frm_bare=CAROL, type="available")), \
        "alice is not subscribed to carol's presence"


async def test_probe_of_offline_contact_is_answered_unavailable(server,
                                                                 net):
    # RFC 6121 4.3.2: a contact with no available resource is reported
    # unavailable (from the bare JID) to the prober.
    alice = await connect(net, server, "alice", roster=True, available=True)
    carol = await connect(net, server, "carol", roster=True, available=True)
    await subscribe(alice, carol)
    await carol.close()
    fresh = await connect(net, server, "alice", "fresh", roster=True)
    await send_available(fresh)
    got = await fresh.inbox.get(pres(frm_bare=CAROL, type="unavailable"),
                                "carol reported unavailable")
    assert got.xml.get("type") == "unavailable"
    assert not fresh.inbox.find(pres(frm_bare=CAROL, type="available"))


async def test_own_resources_see_each_other(server, net):
    one = await connect(net, server, "alice", "one", roster=True,
                        available=True)
    one.inbox.take(any_pres(ALICE))
    two = await connect(net, server, "alice", "two", roster=True)
    await send_available(two, status="second")
    got = await one.inbox.get(pres(frm=ALICE + "/two"), "two's presence")
    assert child_text(got, "status") == "second"
    await two.inbox.get(pres(frm=ALICE + "/one", type="available"),
                        "one's presence for the new resource")

    await two.close()
    await one.inbox.get(pres(frm=ALICE + "/two", type="unavailable"),
                        "two going offline")


async def test_presence_is_echoed_to_its_own_resource(server, net):
    # RFC 6121 4.2.2: initial presence goes to all of the user's available
    # resources, "including the resource that generated the presence
    # notification in the first place".
    alice = await connect(net, server, "alice", roster=True)
    await send_available(alice, status="me")
    got = await alice.inbox.get(pres(frm=ALICE + "/r"), "own presence")
    assert child_text(got, "status") == "me"


async def test_unavailable_on_logout(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(bob, alice)
    await alice.close()
    await bob.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                        "alice's unavailable presence at logout")


async def test_unavailable_on_dropped_connection(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(bob, alice)
    drop_connection(alice)
    await bob.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                        "alice's unavailable presence after the drop")
    # The session is gone: a message to her bare JID is not delivered to
    # a dead session but handled as offline (no error for chat).
    bob.send_raw("<message to='%s' id='after-drop' type='chat'><body>x"
                 "</body></message>" % ALICE)
    await bob.barrier()
    assert not bob.inbox.find(msg(id="after-drop", type="error"))


async def test_unavailable_broadcast_without_logout(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(bob, alice)
    bob.inbox.take(any_pres(ALICE))
    alice.send_raw("<presence type='unavailable'><status>brb</status>"
                   "</presence>")
    got = await bob.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                              "unavailable")
    assert child_text(got, "status") == "brb"
    # Coming back is initial presence again.
    await send_available(alice, status="back")
    got = await bob.inbox.get(pres(frm=ALICE + "/r", type="available"),
                              "available again")
    assert child_text(got, "status") == "back"


async def test_directed_presence_and_its_unavailable(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    dave = await connect(net, server, "dave", roster=True, available=True)
    # No subscription between them: only directed presence reaches dave.
    await send_available(alice, status="for dave", to=DAVE + "/r")
    got = await dave.inbox.get(pres(frm=ALICE + "/r", type="available"),
                               "directed presence")
    assert child_text(got, "status") == "for dave"
    await send_available(alice, status="broadcast")
    await assert_not_delivered(dave, any_pres(ALICE), "broadcast presence",
                               alice, "m1")
    # RFC 6121 4.6.3: at logout the recipient of directed presence is
    # told the user went away.
    await alice.close()
    await dave.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                         "unavailable to the directed-presence recipient")


async def test_directed_presence_unavailable_on_broadcast_unavailable(
        server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    dave = await connect(net, server, "dave", roster=True, available=True)
    await send_available(alice, to=DAVE)
    await dave.inbox.get(pres(frm=ALICE + "/r", type="available"),
                         "directed presence to the bare JID")
    alice.send_raw("<presence type='unavailable'/>")
    await dave.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                         "unavailable to the directed-presence recipient")


async def test_presence_to_offline_account_is_silently_dropped(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    for to in (BOB, BOB + "/gone", "nobody@localhost"):
        alice.send_raw("<presence to='%s'/>" % to)
    await alice.barrier()
    errors = alice.inbox.find(pres(type="error"))
    assert not errors, alice.inbox.describe(errors)


async def test_presence_subscription_survives_relogin(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await mutual(alice, bob)
    await alice.close()
    await bob.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                        "unavailable")
    alice = await connect(net, server, "alice", "back", roster=True)
    await send_available(alice, status="again")
    got = await bob.inbox.get(pres(frm=ALICE + "/back", type="available"),
                              "alice back")
    assert child_text(got, "status") == "again"
    await alice.inbox.get(pres(frm=BOB + "/r", type="available"),
                          "bob's presence for alice's new session")


@pytest.mark.natter_config(workers=2)
async def test_simultaneous_mutual_subscriptions_end_in_both(natter, net):
    """Regression: both sides of a subscription change rosters from their
    own event loops; with two loops, a read-modify-write of one roster item
    from both at once lost an update (one side stayed 'from' or 'to')."""
    names = ["m%d" % i for i in range(16)]
    accounts(natter, *names)
    clients = [await connect(net, natter, n, roster=True, available=True)
               for n in names]
    pairs = [(clients[i], clients[i + 1]) for i in range(0, len(clients), 2)]
    # Everyone asks at once, then everyone approves what they were asked.
    for a, b in pairs:
        a.send_raw("<presence to='%s' type='subscribe'/>" % b.boundjid.bare)
        b.send_raw("<presence to='%s' type='subscribe'/>" % a.boundjid.bare)
    for a, b in pairs:
        for me, other in ((a, b), (b, a)):
            await me.inbox.get(pres(frm_bare=other.boundjid.bare,
                                    type="subscribe"), "the request")
    # Both answers of a pair cross: each changes both rosters.
    for a, b in pairs:
        a.send_raw("<presence to='%s' type='subscribed'/>" % b.boundjid.bare)
        b.send_raw("<presence to='%s' type='subscribed'/>" % a.boundjid.bare)
    for a, b in pairs:
        for me, other in ((a, b), (b, a)):
            await me.inbox.get(pres(frm_bare=other.boundjid.bare,
                                    type="subscribed"), "the approval")
    for a, b in pairs:
        for me, other in ((a, b), (b, a)):
            _, items = await roster_get(me)
            state = items[other.boundjid.bare]
            assert state["subscription"] == "both", (me.boundjid, state)

"""Rosters (RFC 6121 section 2): get, set, update, remove, pushes to the
interested resources, versioning (XEP-0237), the item limit, and removal
cancelling subscriptions both ways (RFC 6121 2.5.2)."""

import pytest

from imlib import (
    NS_ROSTER, accounts, any_pres, assert_not_delivered, await_push,
    connect, error_condition, iq_error, mutual, pres, roster_get,
    roster_push, roster_set, send_available)

ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def test_new_account_has_empty_roster_with_version(server, net):
    alice = await connect(net, server, "alice")
    query, items = await roster_get(alice)
    assert query is not None, "roster result without <query/>"
    assert items == {}
    # The server advertises versioning, so every result carries 'ver'.
    assert "rosterver" in alice.features, \
        "no <ver xmlns='urn:xmpp:features:rosterver'/> stream feature"
    assert query.get("ver") is not None


async def test_set_then_get_keeps_name_and_groups(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB, name="Bobby", groups=["Friends", "Work"])
    item = await await_push(alice, BOB)
    assert item == {"jid": BOB, "subscription": "none", "ask": None,
                    "approved": False, "name": "Bobby",
                    "groups": ["Friends", "Work"]}

    _, items = await roster_get(alice)
    assert items[BOB]["name"] == "Bobby"
    assert items[BOB]["groups"] == ["Friends", "Work"]
    assert items[BOB]["subscription"] == "none"
    assert items[BOB]["ask"] is None


async def test_roster_survives_logout(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB, name="Bob", groups=["G"])
    await roster_set(alice, CAROL)
    await alice.close()

    again = await connect(net, server, "alice", "other")
    _, items = await roster_get(again)
    assert set(items) == {BOB, CAROL}
    assert items[BOB]["name"] == "Bob" and items[BOB]["groups"] == ["G"]


async def test_update_replaces_name_and_groups(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB, name="Bob", groups=["A", "B"])
    await await_push(alice, BOB, name="Bob")
    await roster_set(alice, BOB, name="Robert", groups=["C"])
    item = await await_push(alice, BOB, name="Robert")
    assert item["groups"] == ["C"]
    _, items = await roster_get(alice)
    assert items[BOB]["name"] == "Robert"
    assert items[BOB]["groups"] == ["C"]


async def test_client_cannot_set_subscription_state(server, net):
    # RFC 6121 2.1.2.5 / 2.3.3: the server ignores 'subscription' values
    # other than "remove" and 'ask' in a roster set.
    alice = await connect(net, server, "alice", roster=True)
    await alice.iq(None, "<query xmlns='%s'><item jid='%s' subscription="
                   "'both' ask='subscribe'/></query>" % (NS_ROSTER, BOB),
                   "set")
    item = await await_push(alice, BOB)
    assert item["subscription"] == "none" and item["ask"] is None
    _, items = await roster_get(alice)
    assert items[BOB]["subscription"] == "none"
    assert items[BOB]["ask"] is None


async def test_remove_item(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB, name="Bob")
    await await_push(alice, BOB, subscription="none")
    await roster_set(alice, BOB, remove=True)
    await await_push(alice, BOB, subscription="remove")
    _, items = await roster_get(alice)
    assert BOB not in items


async def test_remove_unknown_item_is_item_not_found(server, net):
    alice = await connect(net, server, "alice", roster=True)
    error = await iq_error(alice, None, "<query xmlns='%s'><item jid='%s' "
                           "subscription='remove'/></query>"
                           % (NS_ROSTER, CAROL), "set")
    assert error_condition(error) == "item-not-found"


@pytest.mark.parametrize("payload, condition", [
    # two items in one set (RFC 6121 2.3.3)
    ("<item jid='bob@localhost'/><item jid='carol@localhost'/>",
     "bad-request"),
    # the same group twice
    ("<item jid='bob@localhost'><group>G</group><group>G</group></item>",
     "bad-request"),
    # an empty group name
    ("<item jid='bob@localhost'><group></group></item>", "not-acceptable"),
    # no item at all
    ("", "bad-request"),
])
async def test_malformed_roster_set_is_refused(server, net, payload,
                                               condition):
    alice = await connect(net, server, "alice", roster=True)
    error = await iq_error(alice, None, "<query xmlns='%s'>%s</query>"
                           % (NS_ROSTER, payload), "set")
    assert error_condition(error) == condition
    _, items = await roster_get(alice)
    assert items == {}, "a refused set changed the roster"


@pytest.mark.parametrize("type_", ["get", "set"])
async def test_someone_elses_roster_is_out_of_reach(server, net, type_):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, CAROL, name="secret friend")
    bob = await connect(net, server, "bob")
    payload = "<query xmlns='%s'%s</query>" % (
        NS_ROSTER, "><item jid='%s'/>" % BOB if type_ == "set" else ">")
    error = await iq_error(bob, ALICE, payload, type_)
    assert error_condition(error) in ("forbidden", "service-unavailable")
    assert "secret friend" not in str(error)
    _, items = await roster_get(alice)
    assert set(items) == {CAROL}


async def test_push_goes_to_every_interested_resource(server, net):
    one = await connect(net, server, "alice", "one", roster=True)
    two = await connect(net, server, "alice", "two", roster=True)
    quiet = await connect(net, server, "alice", "quiet")  # no roster get
    await roster_set(one, BOB, name="Bob")
    for session in (one, two):
        item = await await_push(session, BOB)
        assert item["name"] == "Bob"
    # A resource that never asked for the roster gets no pushes
    # (RFC 6121 2.1.6: only "interested resources").
    await assert_not_delivered(quiet, roster_push(), "a roster push",
                               one, "after-push")


async def test_pushes_carry_increasing_versions(server, net):
    alice = await connect(net, server, "alice")
    query, _ = await roster_get(alice)
    versions = [query.get("ver")]
    for contact in (BOB, CAROL):
        await roster_set(alice, contact)
        stanza = await alice.inbox.get(roster_push(contact), "push")
        ver = stanza.xml.find("{%s}query" % NS_ROSTER).get("ver")
        assert ver, "roster push without 'ver' (XEP-0237)"
        versions.append(ver)
    assert len(set(versions)) == 3, "version did not change: %s" % versions
    query, _ = await roster_get(alice)
    assert query.get("ver") == versions[-1]


async def test_get_with_current_version_returns_empty_result(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB)
    query, _ = await roster_get(alice)
    ver = query.get("ver")

    again = await connect(net, server, "alice", "again")
    result = await again.iq(None, "<query xmlns='%s' ver='%s'/>"
                            % (NS_ROSTER, ver))
    assert result["type"] == "result"
    assert result.xml.find("{%s}query" % NS_ROSTER) is None, (
        "XEP-0237: a current version gets an empty result, not the roster")
    # ...and the session is interested from then on.
    await roster_set(alice, CAROL)
    await await_push(again, CAROL)


async def test_get_with_stale_version_brings_the_changes(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB)
    query, _ = await roster_get(alice)
    old = query.get("ver")
    await roster_set(alice, CAROL, name="Carol")
    await alice.close()

    again = await connect(net, server, "alice", "again")
    result = await again.iq(None, "<query xmlns='%s' ver='%s'/>"
                            % (NS_ROSTER, old))
    query = result.xml.find("{%s}query" % NS_ROSTER)
    if query is not None:
        # The whole roster...
        jids = {i.get("jid") for i in query.findall("{%s}item" % NS_ROSTER)}
        assert jids == {BOB, CAROL}
        assert query.get("ver") not in (None, old)
    else:
        # ...or the changes as pushes (XEP-0237 section 3).
        item = await await_push(again, CAROL)
        assert item["name"] == "Carol"


async def test_unknown_version_gets_full_roster(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB)
    _, items = await roster_get(alice, ver="no-such-version")
    assert set(items) == {BOB}


@pytest.mark.natter_config(limits={"max_roster_items": 2})
async def test_item_limit_is_resource_constraint(server, natter, net):
    accounts(natter, "dave")
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB)
    await roster_set(alice, CAROL)
    error = await iq_error(alice, None, "<query xmlns='%s'><item jid="
                           "'dave@localhost'/></query>" % NS_ROSTER, "set")
    assert error_condition(error) == "resource-constraint"
    assert error.xml.find("{jabber:client}error").get("type") == "wait"
    _, items = await roster_get(alice)
    assert set(items) == {BOB, CAROL}
    # Editing an existing item at the limit is still allowed.
    await roster_set(alice, BOB, name="still fine")
    _, items = await roster_get(alice)
    assert items[BOB]["name"] == "still fine"


@pytest.mark.natter_config(limits={"max_roster_items": 1})
async def test_removing_an_item_frees_a_slot(server, net):
    alice = await connect(net, server, "alice", roster=True)
    await roster_set(alice, BOB)
    error = await iq_error(alice, None, "<query xmlns='%s'><item jid='%s'/>"
                           "</query>" % (NS_ROSTER, CAROL), "set")
    assert error_condition(error) == "resource-constraint"
    await roster_set(alice, BOB, remove=True)
    await roster_set(alice, CAROL)
    _, items = await roster_get(alice)
    assert set(items) == {CAROL}


async def test_remove_cancels_subscriptions_both_ways(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await mutual(alice, bob)
    await await_push(alice, BOB, subscription="both")
    await await_push(bob, ALICE, subscription="both")
    bob.inbox.take(any_pres(ALICE))
    alice.inbox.take(any_pres(BOB))

    await roster_set(alice, BOB, remove=True)
    await await_push(alice, BOB, subscription="remove")

    # RFC 6121 2.5.2: bob gets unsubscribe and unsubscribed from alice's
    # bare JID, loses both directions, and alice's resources go
    # unavailable for him (and his for her).
    await bob.inbox.get(pres(frm=ALICE, type="unsubscribe"), "unsubscribe")
    await bob.inbox.get(pres(frm=ALICE, type="unsubscribed"), "unsubscribed")
    await await_push(bob, ALICE, subscription="none")
    await bob.inbox.get(pres(frm=ALICE + "/r", type="unavailable"),
                        "unavailable from alice/r")
    await alice.inbox.get(pres(frm=BOB + "/r", type="unavailable"),
                          "unavailable from bob/r")

    _, items = await roster_get(bob)
    assert items[ALICE]["subscription"] == "none"
    assert items[ALICE]["ask"] is None
    _, items = await roster_get(alice)
    assert BOB not in items

    # No presence flows any more, either way.
    bob.inbox.take(any_pres(ALICE))
    alice.inbox.take(any_pres(BOB))
    await send_available(alice, show="away")
    await assert_not_delivered(bob, any_pres(ALICE), "alice's presence",
                               alice, "m-after-away")
    await send_available(bob, show="dnd")
    await assert_not_delivered(alice, any_pres(BOB), "bob's presence",
                               bob, "m-after-dnd")


async def test_remove_pending_request_withdraws_it(server, net):
    # An item with only a pending request out: removing it sends
    # 'unsubscribe', so bob is no longer asked at his next login.
    alice = await connect(net, server, "alice", roster=True, available=True)
    await send_available_and_subscribe(alice, BOB)
    await await_push(alice, BOB, ask="subscribe")
    await roster_set(alice, BOB, remove=True)
    await await_push(alice, BOB, subscription="remove")

    bob = await connect(net, server, "bob", roster=True)
    bob.send_raw("<presence/>")
    await bob.barrier()
    await assert_not_delivered(bob, pres(frm_bare=ALICE, type="subscribe"),
                               "a withdrawn subscription request", alice,
                               "m-after-login")


async def send_available_and_subscribe(client, contact):
    client.send_raw("<presence to='%s' type='subscribe'/>" % contact)
    await client.barrier()

"""Message Archive Management (XEP-0313) for chat rooms: a persistent
room's groupchat messages are kept in the ROOM's archive, queried at the
room's JID; their stanza-id (XEP-0359) is by the room and is the archive
id; a members-only room's archive is for members; join history still
works and matches the archive; the archive survives a restart.

The room helpers are test_muc's and test_muc_admin's (join() waits for the
subject that ends a join, say() for the sender's reflection, so a message
the sender has seen reflected has been archived); the query helpers are
test_mam's.
"""

import pytest

from imlib import accounts, jid_of
from test_mam import (
    NS_MAM, NS_SID, describe, disco_features, mam_query, mam_error, msg_ids,
    restart, bodies)
from test_muc import ROOM, body_of, join, online, say
from test_muc_admin import admin_set, configure

ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


def room_sid(stanza, room=ROOM):
    """The one stanza-id by the room on a groupchat message."""
    found = [e.get("id") for e in stanza.xml.findall("{%s}stanza-id"
                                                      % NS_SID)
             if e.get("by") == room]
    assert len(found) == 1 and found[0], (
        "a groupchat message carries exactly one <stanza-id by='%s'/> "
        "(XEP-0359, XEP-0313 6.1), got %s:\n%s" % (room, found,
                                                   describe(stanza)))
    return found[0]


async def persistent_room(client, nick="alice", **config):
    """client creates ROOM and makes it persistent (and whatever else
    config says)."""
    await join(client, nick)
    await configure(client, persistentroom=True, **config)


async def test_room_disco_lists_mam(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await persistent_room(alice)
    features = await disco_features(bob, ROOM)
    assert NS_MAM in features, (
        "a room with an archive advertises %s (XEP-0313 7); has %s"
        % (NS_MAM, sorted(features)))


async def test_groupchat_is_archived_by_the_room(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await persistent_room(alice)
    await join(bob, "bob")
    await say(alice, "first", msg_id="g1")
    await say(bob, "second", msg_id="g2")
    items, fin = await mam_query(alice, to=ROOM)
    assert bodies(items) == ["first", "second"], (
        "the room's archive holds its groupchat, in order: %r" % items)
    for item, nick in zip(items, ("alice", "bob")):
        assert item.outer.get("from") == ROOM, (
            "room archive results come from the room's JID (XEP-0313 "
            "6.1.1):\n%s" % describe(item.outer))
        inner = item.message
        assert (inner.get("from"), inner.get("type")) == (
            "%s/%s" % (ROOM, nick), "groupchat"), (
            "the forwarded message is from the occupant JID:\n%s"
            % describe(item.outer))
        assert item.stamp, describe(item.outer)
    assert fin.complete, repr(fin)


async def test_groupchat_stanza_id_is_the_room_archive_id(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await persistent_room(alice)
    await join(bob, "bob")
    mine = await say(alice, "counted", msg_id="s1")
    theirs = await bob.inbox.get(
        lambda s: body_of(s) == "counted" and s.xml.get("type") ==
        "groupchat", "alice's message as bob gets it")
    sid = room_sid(mine)
    assert room_sid(theirs) == sid, "both copies carry one stanza-id"
    items, _ = await mam_query(bob, to=ROOM)
    assert [i.id for i in items] == [sid], (
        "the room's archive id is the stanza-id occupants got: %s vs %r"
        % (sid, items))


async def test_groupchat_is_not_in_the_users_archive(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await persistent_room(alice)
    await join(bob, "bob")
    await say(alice, "room only", msg_id="r1")
    await bob.inbox.get(lambda s: body_of(s) == "room only",
                        "the groupchat at bob")
    bob.send_raw("<message to='%s' id='direct' type='chat'><body>direct"
                 "</body></message>" % ALICE)
    await alice.inbox.get(lambda s: s.xml.get("id") == "direct",
                          "bob's direct message")
    for who in (alice, bob):
        items, _ = await mam_query(who)
        assert msg_ids(items) == ["direct"], (
            "%s: groupchat belongs to the room's archive, not the user's "
            "(XEP-0313 6): %r" % (who.boundjid.bare, items))


async def test_members_only_room_archive_is_for_members(server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await persistent_room(alice, membersonly=True)
    await admin_set(alice, jid=CAROL, affiliation="member")
    await say(alice, "members talk", msg_id="mo1")
    await mam_error(bob, "forbidden", to=ROOM)
    items, _ = await mam_query(carol, to=ROOM)
    assert bodies(items) == ["members talk"], (
        "a member (not in the room) reads the archive: %r" % items)


async def test_join_history_matches_the_archive_tail(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await persistent_room(alice)
    reflections = [await say(alice, "h%d" % n, msg_id="h%d" % n)
                   for n in range(6)]
    joined = await join(bob, "bob", history="<history maxstanzas='3'/>")
    history = [body_of(s) for s in joined.history]
    assert history == ["h3", "h4", "h5"], (
        "maxstanzas=3 gives the last three messages: %s" % history)
    items, _ = await mam_query(bob, to=ROOM, max_=3, before=True)
    assert bodies(items) == history, (
        "the archive's last page and the join history differ: %r vs %s"
        % (items, history))
    for stanza in joined.history:
        found = [e.get("id") for e in stanza.xml.findall(
            "{%s}stanza-id" % NS_SID) if e.get("by") == ROOM]
        if found:
            assert found[0] in [i.id for i in items], (
                "a history message's stanza-id is not its archive id:\n%s"
                % describe(stanza))
    assert [room_sid(r) for r in reflections[3:]] == [i.id for i in items]


async def test_room_archive_pages_with_rsm(server, net):
    alice, = await online(net, server, "alice")
    await persistent_room(alice)
    for n in range(5):
        await say(alice, "p%d" % n, msg_id="p%d" % n)
    first, fin = await mam_query(alice, to=ROOM, max_=2)
    assert bodies(first) == ["p0", "p1"] and not fin.complete, (first, fin)
    rest, fin = await mam_query(alice, to=ROOM, max_=10, after=fin.last)
    assert bodies(rest) == ["p2", "p3", "p4"] and fin.complete, (rest, fin)


async def test_room_archive_survives_restart(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob")
    alice, = await online(net, server, "alice")
    await persistent_room(alice)
    for n in range(3):
        await say(alice, "kept%d" % n, msg_id="k%d" % n)
    before, _ = await mam_query(alice, to=ROOM)
    server = restart(natter_factory, server)
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    items, _ = await mam_query(alice, to=ROOM)
    assert [(i.id, i.body) for i in items] == [(i.id, i.body)
                                                for i in before], (
        "the room's archive after a restart: %r, before: %r"
        % (items, before))
    await say(alice, "after", msg_id="k-after")
    items, _ = await mam_query(alice, to=ROOM)
    assert bodies(items) == ["kept0", "kept1", "kept2", "after"], items

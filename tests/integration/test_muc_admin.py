"""Multi-user chat (XEP-0045), second slice: what owners, admins and
moderators do (muc#admin: kick, ban, voice, affiliations and their lists;
muc#owner: the room configuration form and what each setting does,
destroying a room), persistent rooms across restarts, mediated
invitations, iq to occupants, the service's limits, and `natterctl room`.

Like test_muc.py, the tests speak raw stanzas through slixmpp sessions and
imlib's Inbox and reuse test_muc's helpers (join() waits for the subject
message that ends a join, so nothing here sleeps).  A stanza that must not
arrive is shown absent by a later stanza from the same room: a room handles
its stanzas in order.
"""

import re

import pytest
from slixmpp.exceptions import IqError

from imlib import (
    NS_DISCO_INFO, NS_VERSION, accounts, connect, iq_error, jid_of, msg,
    pres, restart_on_same_data)
from natterlib import NS_CLIENT, q, stanza_error_condition
from test_muc import (
    NS_DATA, NS_MUC, NS_MUC_OWNER, NS_MUC_USER, ROOM, SERVICE, assert_error,
    body_of, describe, disco, features_of, from_room, item_of,
    items_of, join, join_error, join_stanza, leave, muc_host,
    occupant_id, online, others_see_join, say, status_codes)

NS_MUC_ADMIN = NS_MUC + "#admin"
NS_PING = "urn:xmpp:ping"
FORM_TYPE = NS_MUC + "#roomconfig"

# The muc#roomconfig fields docs/muc.md promises (XEP-0045 10.2).
CONFIG_FIELDS = [
    "muc#roomconfig_roomname", "muc#roomconfig_roomdesc",
    "muc#roomconfig_persistentroom", "muc#roomconfig_publicroom",
    "muc#roomconfig_membersonly", "muc#roomconfig_moderatedroom",
    "muc#roomconfig_passwordprotectedroom", "muc#roomconfig_roomsecret",
    "muc#roomconfig_whois", "muc#roomconfig_maxusers", "muc#maxhistoryfetch",
    "muc#roomconfig_changesubject", "muc#roomconfig_allowinvites"]


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol", "dave")


# ------------------------------------------------------------ helpers ----

def admin_query(*items):
    """A muc#admin query with the given items, each a dict of attributes
    (a 'reason' key becomes a <reason/> child)."""
    body = ""
    for item in items:
        attrs = "".join(" %s='%s'" % (k, v) for k, v in item.items()
                        if k != "reason")
        reason = ("<reason>%s</reason>" % item["reason"]
                  if "reason" in item else "")
        body += "<item%s>%s</item>" % (attrs, reason)
    return "<query xmlns='%s'>%s</query>" % (NS_MUC_ADMIN, body)


async def admin_set(client, room=ROOM, **item):
    return await client.iq(room, admin_query(item), "set")


async def admin_error(client, condition, etype, room=ROOM, type_="set",
                      **item):
    error = await iq_error(client, room, admin_query(item), type_)
    assert_error(error, condition, etype, room)
    return error


async def admin_list(client, room=ROOM, **item):
    """The items of a muc#admin list (XEP-0045 9.5, 8.5), as dicts."""
    result = await client.iq(room, admin_query(item))
    query = result.xml.find(q(NS_MUC_ADMIN, "query"))
    return [dict(i.attrib) for i in query.findall(q(NS_MUC_ADMIN, "item"))]


def config_submit(**fields):
    """A muc#owner submit of the given fields; a key without '#' is a
    muc#roomconfig_ field (roomname -> muc#roomconfig_roomname)."""
    body = ("<field var='FORM_TYPE'><value>%s</value></field>" % FORM_TYPE)
    for key, value in fields.items():
        var = key if "#" in key else "muc#roomconfig_" + key
        if isinstance(value, bool):
            value = "1" if value else "0"
        body += "<field var='%s'><value>%s</value></field>" % (var, value)
    return ("<query xmlns='%s'><x xmlns='%s' type='submit'>%s</x></query>"
            % (NS_MUC_OWNER, NS_DATA, body))


async def configure(client, room=ROOM, **fields):
    reply = await client.iq(room, config_submit(**fields), "set")
    assert reply["type"] == "result", describe(reply)
    return reply


async def iq_error_or_result(client, to, payload, type_):
    try:
        return await client.iq(to, payload, type_)
    except IqError as e:
        return e.iq


async def config_changed(client, room=ROOM):
    """The status-104 message occupants get after a configuration change
    (XEP-0045 10.2.1)."""
    return await client.inbox.get(
        lambda s: s.xml.tag == q(NS_CLIENT, "message")
        and s.xml.get("from") == room and 104 in status_codes(s),
        "configuration-change message (status 104) from %s" % room)


def has(pred_item=None, frm=None, type=None, code=None):
    """A presence from frm of the given type whose muc#user item matches
    pred_item (a dict of expected attributes) and that has status code."""
    def match(s):
        if not pres(frm=frm, type=type)(s):
            return False
        item = item_of(s) or {}
        if pred_item and any(item.get(k) != v for k, v in pred_item.items()):
            return False
        return code is None or code in status_codes(s)
    return match


async def presence_with(client, what, **kw):
    return await client.inbox.get(has(**kw), what)


def muc_x_child(stanza, name):
    x = stanza.xml.find(q(NS_MUC_USER, "x"))
    return None if x is None else x.find(q(NS_MUC_USER, name))


def send_groupchat(client, body, msg_id, room=ROOM):
    client.send_raw("<message to='%s' type='groupchat' id='%s'><body>%s"
                    "</body></message>" % (room, msg_id, body))


async def groupchat_error(client, body, msg_id, condition, etype,
                          room=ROOM):
    send_groupchat(client, body, msg_id, room)
    error = await client.inbox.get(
        msg(id=msg_id, type="error"),
        "error answering groupchat %s" % msg_id)
    assert_error(error, condition, etype, room)
    return error


async def room_with(net, server, *names, room=ROOM):
    """Sessions for names, each joined to room under its own name, in
    order (the first creates and owns it); returns the sessions."""
    clients = await online(net, server, *names)
    for client, name in zip(clients, names):
        await join(client, name, room=room)
    return clients


# ------------------------------------------------------------ muc#admin --

async def test_kick_tells_everybody_with_307(server, net):
    alice, bob, carol = await room_with(net, server, "alice", "bob", "carol")
    await admin_set(alice, nick="bob", role="none", reason="calm down")
    own = await presence_with(bob, "own unavailable presence after the kick",
                              frm=ROOM + "/bob", type="unavailable")
    assert {307, 110} <= status_codes(own), (
        "the kicked occupant gets status 307 and 110 (XEP-0045 8.2):\n%s"
        % describe(own))
    assert item_of(own).get("role") == "none", describe(own)
    reason = own.xml.find("{%s}x/{%s}item/{%s}reason" % ((NS_MUC_USER,) * 3))
    assert reason is not None and reason.text == "calm down", (
        "the kick's reason goes to the kicked one (XEP-0045 8.2):\n%s" % describe(own))
    actor = own.xml.find("{%s}x/{%s}item/{%s}actor" % ((NS_MUC_USER,) * 3))
    assert actor is not None and actor.get("nick") == "alice", (
        "the kick names the moderator by nick (XEP-0045 8.2, <actor/>):\n%s"
        % describe(own))
    for who in (alice, carol):
        seen = await presence_with(who, "bob's unavailable after the kick",
                                   frm=ROOM + "/bob", type="unavailable")
        codes = status_codes(seen)
        assert 307 in codes and 110 not in codes, (
            "%s: the others get status 307 (XEP-0045 8.2):\n%s"
            % (who.boundjid, describe(seen)))
    await groupchat_error(bob, "back?", "k1", "not-acceptable", "modify")


async def test_participant_cannot_kick(server, net):
    alice, bob, carol = await room_with(net, server, "alice", "bob", "carol")
    await admin_error(bob, "forbidden", "auth", nick="carol", role="none")
    reflection = await say(carol, "still here")
    assert reflection.xml.get("from") == ROOM + "/carol"


async def test_kicking_an_admin_is_not_allowed(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_set(alice, jid=jid_of("bob"), affiliation="admin")
    seen = await presence_with(
        alice, "bob's presence as admin and moderator (XEP-0045 10.6)",
        frm=ROOM + "/bob", type="available",
        pred_item={"affiliation": "admin", "role": "moderator"})
    assert item_of(seen).get("jid") == bob.boundjid.full, describe(seen)
    await admin_error(alice, "not-allowed", "cancel", nick="bob", role="none")
    await admin_error(bob, "not-allowed", "cancel", nick="alice",
                      role="none")


async def test_ban_removes_with_301_and_rejoin_is_forbidden(server, net):
    alice, bob, carol = await room_with(net, server, "alice", "bob", "carol")
    await admin_set(alice, jid=jid_of("bob"), affiliation="outcast")
    own = await presence_with(bob, "own unavailable presence after the ban",
                              frm=ROOM + "/bob", type="unavailable")
    assert {301, 110} <= status_codes(own), (
        "the banned occupant gets status 301 and 110 (XEP-0045 9.1):\n%s"
        % describe(own))
    seen = await presence_with(carol, "bob's unavailable after the ban",
                               frm=ROOM + "/bob", type="unavailable")
    assert 301 in status_codes(seen), describe(seen)
    for got in (own, seen):
        actor = got.xml.find("{%s}x/{%s}item/{%s}actor" % ((NS_MUC_USER,) * 3))
        assert actor is not None and actor.get("nick") == "alice", (
            "the ban names the admin by nick (XEP-0045 9.1, <actor/>):\n%s"
            % describe(got))
    error = await join_error(bob, ROOM + "/bob")
    assert_error(error, "forbidden", "auth", ROOM + "/bob")


async def test_ban_presence_names_the_outcast_affiliation(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_set(alice, jid=jid_of("bob"), affiliation="outcast")
    for who in (alice, bob):
        got = await presence_with(who, "bob's unavailable after the ban",
                                  frm=ROOM + "/bob", type="unavailable",
                                  code=301)
        assert item_of(got).get("affiliation") == "outcast", (
            "%s: the ban presence carries affiliation='outcast' (XEP-0045 "
            "9.1, example 110):\n%s" % (who.boundjid, describe(got)))


async def test_voice_revoked_and_granted(server, net):
    alice, bob, carol = await room_with(net, server, "alice", "bob", "carol")
    await admin_set(alice, nick="bob", role="visitor")
    for who in (alice, bob, carol):
        await presence_with(
            who, "bob's presence as visitor (XEP-0045 8.4)",
            frm=ROOM + "/bob", type="available",
            pred_item={"role": "visitor"})
    await groupchat_error(bob, "muted?", "v1", "forbidden", "auth")
    await admin_set(alice, nick="bob", role="participant")
    for who in (alice, carol):
        await presence_with(
            who, "bob's presence as participant again (XEP-0045 8.3)",
            frm=ROOM + "/bob", type="available",
            pred_item={"role": "participant"})
    await say(bob, "voice back")


async def test_membership_granted_by_jid(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_set(alice, jid=jid_of("bob"), affiliation="member")
    await presence_with(bob, "own presence as member (XEP-0045 9.3)",
                        frm=ROOM + "/bob", type="available",
                        pred_item={"affiliation": "member",
                                   "role": "participant"})
    await admin_set(alice, jid=jid_of("carol"), affiliation="member")
    carol, = await online(net, server, "carol")
    joined = await join(carol, "carol")
    assert item_of(joined.self).get("affiliation") == "member", (
        "carol was made a member before she came:\n%s"
        % describe(joined.self))


async def test_revoked_member_leaves_members_only_room_with_321(
        server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, membersonly=True)
    await admin_set(alice, jid=jid_of("bob"), affiliation="member")
    await join(bob, "bob")
    await admin_set(alice, jid=jid_of("bob"), affiliation="none")
    # The room answers alice's iq after the presences it causes.
    changed = alice.inbox.find(pres(frm=ROOM + "/bob"))
    assert changed and changed[-1].xml.get("type") == "unavailable" and \
        321 in status_codes(changed[-1]), (
            "a member whose membership is revoked in a members-only room is "
            "removed with status 321 (XEP-0045 9.4); alice got:\n%s"
            % "\n".join(describe(s) for s in changed))


async def test_affiliation_lists_for_admins_only(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_set(alice, jid=jid_of("dave"), affiliation="outcast")
    await admin_set(alice, jid=jid_of("carol"), affiliation="member")
    outcasts = await admin_list(alice, affiliation="outcast")
    assert outcasts == [{"affiliation": "outcast", "jid": jid_of("dave")}], (
        "the ban list (XEP-0045 9.5) has dave only: %s" % outcasts)
    members = await admin_list(alice, affiliation="member")
    assert members == [{"affiliation": "member", "jid": jid_of("carol")}], (
        "the member list (XEP-0045 9.5) has carol only: %s" % members)
    owners = await admin_list(alice, affiliation="owner")
    assert [o["jid"] for o in owners] == [jid_of("alice")], owners
    await admin_error(bob, "forbidden", "auth", type_="get",
                      affiliation="outcast")


async def test_moderator_list(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    moderators = await admin_list(alice, role="moderator")
    assert [(m.get("nick"), m.get("role"), m.get("jid"))
            for m in moderators] == [
        ("alice", "moderator", alice.boundjid.full)], (
        "the moderator list (XEP-0045 8.5) has alice only: %s" % moderators)
    await admin_error(bob, "forbidden", "auth", type_="get",
                      role="moderator")


async def test_last_owner_cannot_drop_ownership(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_error(alice, "conflict", "cancel", jid=jid_of("alice"),
                      affiliation="admin")
    await admin_set(alice, jid=jid_of("bob"), affiliation="owner")
    await admin_set(alice, jid=jid_of("alice"), affiliation="admin")
    owners = await admin_list(bob, affiliation="owner")
    assert [o["jid"] for o in owners] == [jid_of("bob")], (
        "with a second owner, alice may step down (XEP-0045 10.5): %s"
        % owners)


async def test_last_occupant_banned_by_an_owner_outside_the_room(
        server, net):
    # Found by a hostile-input campaign: the ban emptied the temporary
    # room, which ended under the admin request still handling it (a
    # use-after-free). The room now ends after the request: alice gets
    # her result and bob his 301.
    alice, bob = await room_with(net, server, "alice", "bob")
    await leave(alice, "alice")
    reply = await admin_set(alice, jid=jid_of("bob"), affiliation="outcast")
    assert reply["type"] == "result", describe(reply)
    own = await presence_with(bob, "own unavailable presence after the ban",
                              frm=ROOM + "/bob", type="unavailable", code=301)
    assert 110 in status_codes(own), describe(own)
    error = await iq_error(alice, ROOM, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", (
        "the temporary room ends with its last occupant (XEP-0045 10.1.3):"
        "\n%s" % describe(error))
    await net.assert_served(server)


async def test_last_member_revoked_by_an_owner_outside_the_room(server, net):
    # The same use-after-free through a members-only room: the last
    # occupant loses membership (321) and the room empties.
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, membersonly=True)
    await admin_set(alice, jid=jid_of("bob"), affiliation="member")
    await join(bob, "bob")
    await leave(alice, "alice")
    reply = await admin_set(alice, jid=jid_of("bob"), affiliation="none")
    assert reply["type"] == "result", describe(reply)
    await presence_with(bob, "own unavailable presence with 321",
                        frm=ROOM + "/bob", type="unavailable", code=321)
    error = await iq_error(alice, ROOM, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", \
        describe(error)
    await net.assert_served(server)


async def test_owner_who_bans_themselves_has_no_rights_left_in_that_set(
        server, net):
    # Found by a hostile-input campaign: the next item read the nick of
    # the actor the ban had freed, and went on with owner rights. Items
    # are checked in order against what the earlier ones leave (here: an
    # outcast, whose next item is forbidden), and a set is made whole or
    # not at all.
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_set(alice, jid=jid_of("carol"), affiliation="owner")
    error = await iq_error(alice, ROOM, admin_query(
        {"jid": jid_of("alice"), "affiliation": "outcast"},
        {"nick": "bob", "role": "visitor"}), "set")
    assert_error(error, "forbidden", "auth", ROOM)
    owners = sorted(o["jid"] for o in await admin_list(
        alice, affiliation="owner"))
    assert owners == [jid_of("alice"), jid_of("carol")], (
        "a refused set changes nothing: alice is still an owner: %s" % owners)
    participants = [p["nick"] for p in await admin_list(
        alice, role="participant")]
    assert participants == ["bob"], participants
    await say(alice, "still here")
    await net.assert_served(server)


async def test_owner_may_ban_themselves_while_another_owner_remains(
        server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await admin_set(alice, jid=jid_of("bob"), affiliation="owner")
    await admin_set(alice, jid=jid_of("alice"), affiliation="outcast",
                    reason="leaving for good")
    own = await presence_with(alice, "own unavailable presence after the ban",
                              frm=ROOM + "/alice", type="unavailable",
                              code=301)
    actor = own.xml.find("{%s}x/{%s}item/{%s}actor" % ((NS_MUC_USER,) * 3))
    assert actor is not None and actor.get("nick") == "alice", describe(own)
    outcasts = [o["jid"] for o in await admin_list(bob,
                                                   affiliation="outcast")]
    assert outcasts == [jid_of("alice")], outcasts
    await net.assert_served(server)


async def test_admin_set_is_made_whole_or_not_at_all(server, net):
    alice, = await room_with(net, server, "alice")
    error = await iq_error(alice, ROOM, admin_query(
        {"jid": jid_of("carol"), "affiliation": "member"},
        {"jid": "not@@a jid", "affiliation": "member"}), "set")
    assert_error(error, "jid-malformed", "modify", ROOM)
    members = await admin_list(alice, affiliation="member")
    assert members == [], (
        "the set was refused, yet its first item was made: %s" % members)


async def test_affiliations_per_room_are_bounded(natter_factory, net):
    # Found by a hostile-input campaign: an owner could add members
    # without end, each one rewriting a persistent room's record.
    server = accounts(natter_factory(**muc_host(max_affiliations=4)),
                      "alice", "bob")
    alice, = await room_with(net, server, "alice")
    await alice.iq(ROOM, admin_query(*(
        {"jid": "m%d@example.org" % i, "affiliation": "member"}
        for i in range(3))), "set")
    error = await iq_error(alice, ROOM, admin_query(
        {"jid": "m3@example.org", "affiliation": "member"},
        {"jid": "m4@example.org", "affiliation": "outcast"}), "set")
    assert_error(error, "resource-constraint", "wait", ROOM)
    members = sorted(m["jid"] for m in await admin_list(
        alice, affiliation="member"))
    assert members == ["m%d@example.org" % i for i in range(3)], (
        "a set past muc.max_affiliations changes nothing: %s" % members)
    assert await admin_list(alice, affiliation="outcast") == []
    # A set that stays within the bound, one out and one in, passes.
    await alice.iq(ROOM, admin_query(
        {"jid": "m0@example.org", "affiliation": "none"},
        {"jid": "m3@example.org", "affiliation": "member"}), "set")
    await net.assert_served(server)


async def test_affiliations_set_together_survive_restart(natter_factory,
                                                         net):
    # A persistent room is saved once per admin set, after all its items.
    server = accounts(natter_factory(), "alice", "bob")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    await alice.iq(ROOM, admin_query(
        {"jid": jid_of("bob"), "affiliation": "member"},
        {"jid": jid_of("carol"), "affiliation": "outcast"},
        {"jid": jid_of("dave"), "affiliation": "admin"}), "set")
    server = restart_on_same_data(natter_factory, server)
    alice, = await online(net, server, "alice")
    got = {a: [m["jid"] for m in await admin_list(alice, affiliation=a)]
           for a in ("member", "outcast", "admin")}
    assert got == {"member": [jid_of("bob")], "outcast": [jid_of("carol")],
                   "admin": [jid_of("dave")]}, got


# ------------------------------------------------------------ muc#owner --

async def test_config_form(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    result = await alice.iq(ROOM, "<query xmlns='%s'/>" % NS_MUC_OWNER)
    form = result.xml.find(q(NS_MUC_OWNER, "query") + "/" + q(NS_DATA, "x"))
    assert form is not None and form.get("type") == "form", (
        "the owner gets a jabber:x:data form (XEP-0045 10.2):\n%s"
        % describe(result))
    fields = {f.get("var"): f for f in form.findall(q(NS_DATA, "field"))}
    assert fields["FORM_TYPE"].findtext(q(NS_DATA, "value")) == FORM_TYPE, \
        describe(result)
    missing = [v for v in CONFIG_FIELDS if v not in fields]
    assert not missing, "the form lacks %s:\n%s" % (missing,
                                                    describe(result))
    error = await iq_error(bob, ROOM, "<query xmlns='%s'/>" % NS_MUC_OWNER)
    assert_error(error, "forbidden", "auth", ROOM)


async def test_config_name_shows_in_disco_info(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, roomname="Tea Room")
    info = await disco(bob, ROOM, NS_DISCO_INFO)
    names = [i.get("name") for i in info.findall(q(NS_DISCO_INFO,
                                                     "identity"))]
    assert names == ["Tea Room"], (
        "the room's identity carries the configured name (XEP-0045 6.4), "
        "got %s" % names)


async def test_persistent_room_survives_empty_and_restart(
        natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob")
    alice, = await online(net, server, "alice")
    first = await join(alice, "alice")
    oid = occupant_id(first.self)
    await configure(alice, roomname="Archive", persistentroom=True)
    await leave(alice, "alice")
    assert ROOM in await items_of(alice, SERVICE), (
        "a persistent room stays when its last occupant leaves")
    server = restart_on_same_data(natter_factory, server)
    alice, bob = await online(net, server, "alice", "bob")
    info = await disco(bob, ROOM, NS_DISCO_INFO)
    assert "muc_persistent" in features_of(info), describe(info)
    names = [i.get("name") for i in info.findall(q(NS_DISCO_INFO,
                                                     "identity"))]
    assert names == ["Archive"], "name after the restart: %s" % names
    count = [f.findtext(q(NS_DATA, "value"))
             for f in info.iter(q(NS_DATA, "field"))
             if f.get("var") == "muc#roominfo_occupants"]
    assert count == ["0"], "the room comes back empty: %s" % count
    again = await join(alice, "alice")
    codes = status_codes(again.self)
    assert 201 not in codes, "the room existed already:\n%s" % describe(
        again.self)
    assert (item_of(again.self).get("affiliation"),
            item_of(again.self).get("role")) == ("owner", "moderator"), (
        "alice is still the owner:\n%s" % describe(again.self))
    assert occupant_id(again.self) == oid, (
        "the same account keeps its occupant-id across restarts (XEP-0421 "
        "4)")


async def test_affiliations_of_persistent_room_survive_restart(
        natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob", "carol")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    # Given after the room became persistent: docs/muc.md says persistent
    # rooms keep their affiliations in the store.
    await admin_set(alice, jid=jid_of("bob"), affiliation="member")
    await admin_set(alice, jid=jid_of("carol"), affiliation="outcast")
    server = restart_on_same_data(natter_factory, server)
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    members = [m["jid"] for m in await admin_list(alice,
                                                  affiliation="member")]
    outcasts = [m["jid"] for m in await admin_list(alice,
                                                   affiliation="outcast")]
    assert (members, outcasts) == ([jid_of("bob")], [jid_of("carol")]), (
        "affiliations given in a persistent room are lost at restart: "
        "members %s, outcasts %s" % (members, outcasts))
    error = await join_error(carol, ROOM + "/carol")
    assert_error(error, "forbidden", "auth", ROOM + "/carol")


async def test_hidden_room_is_not_listed(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, publicroom=False)
    assert ROOM not in await items_of(bob, SERVICE), (
        "a hidden room is not in the service's disco#items (XEP-0045 6.3)")
    info = await disco(bob, ROOM, NS_DISCO_INFO)
    assert "muc_hidden" in features_of(info), describe(info)
    await configure(alice, publicroom=True)
    assert ROOM in await items_of(bob, SERVICE)


async def test_members_only_room(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, membersonly=True)
    error = await join_error(bob, ROOM + "/bob")
    assert_error(error, "registration-required", "auth", ROOM + "/bob")
    await admin_set(alice, jid=jid_of("bob"), affiliation="member")
    joined = await join(bob, "bob")
    assert item_of(joined.self).get("affiliation") == "member", \
        describe(joined.self)


async def test_password_protected_room(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, passwordprotectedroom=True, roomsecret="s3cret")
    info = await disco(bob, ROOM, NS_DISCO_INFO)
    assert "muc_passwordprotected" in features_of(info), describe(info)
    error = await join_error(bob, ROOM + "/bob")
    assert_error(error, "not-authorized", "auth", ROOM + "/bob")
    error = await join_error(bob, ROOM + "/bob", join_stanza(
        ROOM, "bob", "<password>wrong</password>"))
    assert_error(error, "not-authorized", "auth", ROOM + "/bob")
    await join(bob, "bob", history="<password>s3cret</password>")


async def test_password_is_asked_of_admins_too(server, net):
    # XEP-0045 7.2.6: without the right password the service MUST deny
    # access; docs/muc.md names no exception (unlike a full room's).
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, passwordprotectedroom=True, roomsecret="s3cret")
    await admin_set(alice, jid=jid_of("bob"), affiliation="admin")
    bob.send_raw(join_stanza(ROOM, "bob"))
    got = await bob.inbox.get(
        lambda s: pres(frm=ROOM + "/bob")(s)
        and (s.xml.get("type") == "error" or 110 in status_codes(s)),
        "an answer to bob's join without the password")
    assert got.xml.get("type") == "error", (
        "bob, an admin, got into the password-protected room without the "
        "password:\n%s" % describe(got))
    assert_error(got, "not-authorized", "auth", ROOM + "/bob")


async def test_moderated_room_makes_newcomers_visitors(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, moderatedroom=True)
    joined = await join(bob, "bob")
    assert item_of(joined.self).get("role") == "visitor", (
        "in a moderated room a newcomer without affiliation is a visitor "
        "(XEP-0045 5.1.1):\n%s" % describe(joined.self))
    await groupchat_error(bob, "hello", "m1", "forbidden", "auth")


async def test_whois_anyone_shows_real_jids(server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    await join(bob, "bob")
    await configure(alice, whois="anyone")
    for who in (alice, bob):
        note = await config_changed(who)
        assert {104, 172} <= status_codes(note), (
            "becoming non-anonymous is announced with 104 and 172 "
            "(XEP-0045 10.2.1):\n%s" % describe(note))
    joined = await join(carol, "carol")
    assert 100 in status_codes(joined.self), (
        "a joiner of a non-anonymous room gets status 100 (XEP-0045 "
        "7.2.4):\n%s" % describe(joined.self))
    seen = {nick: item_of(p).get("jid")
            for nick, p in joined.occupants().items()}
    assert seen == {"alice": alice.boundjid.full, "bob": bob.boundjid.full}, (
        "in a non-anonymous room everybody sees real JIDs: %s" % seen)
    newcomer = await others_see_join(bob, "carol")
    assert item_of(newcomer).get("jid") == carol.boundjid.full, (
        "bob, a participant, sees carol's real JID:\n%s" % describe(newcomer))


async def test_privacy_status_codes_follow_the_change(server, net):
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, whois="anyone")
    assert 172 in status_codes(await config_changed(alice))
    await configure(alice, roomname="Renamed")
    codes = status_codes(await config_changed(alice))
    assert 172 not in codes, (
        "172 says the room became non-anonymous; a change of name in a room "
        "that already was is 104 alone (XEP-0045 10.2.1): %s" % codes)
    await configure(alice, whois="moderators")
    codes = status_codes(await config_changed(alice))
    assert 173 in codes, (
        "a room that becomes semi-anonymous says so with 173 (XEP-0045 "
        "10.2.1): %s" % codes)


async def test_maxusers_lowers_the_limit(server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    await configure(alice, maxusers=2)
    await join(bob, "bob")
    error = await join_error(carol, ROOM + "/carol")
    assert_error(error, "service-unavailable", "wait", ROOM + "/carol")


async def test_subject_locked_for_participants(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, changesubject=False)
    await join(bob, "bob")
    bob.send_raw("<message to='%s' type='groupchat' id='s1'><subject>Mine"
                 "</subject></message>" % ROOM)
    error = await bob.inbox.get(msg(id="s1", type="error"),
                                "error for bob's subject change")
    assert_error(error, "forbidden", "auth", ROOM)


async def test_config_value_out_of_range_is_not_acceptable(server, net):
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    for fields in ({"maxusers": 0}, {"maxusers": 200 + 1},
                   {"whois": "everybody"}):
        error = await iq_error(alice, ROOM, config_submit(**fields), "set")
        assert_error(error, "not-acceptable", "modify", ROOM)


async def test_config_cancel_is_a_result(server, net):
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    reply = await alice.iq(ROOM, "<query xmlns='%s'><x xmlns='%s' "
                           "type='cancel'/></query>" % (NS_MUC_OWNER, NS_DATA),
                           "set")
    assert reply["type"] == "result", describe(reply)


async def test_refused_configuration_changes_nothing(server, net):
    # Found by a hostile-input campaign: the fields before the one that
    # did not fit were applied, and nobody was told (no 104, no 172).
    alice, bob = await room_with(net, server, "alice", "bob")
    error = await iq_error(alice, ROOM, config_submit(
        whois="anyone", roomname="CHANGED", passwordprotectedroom=True),
        "set")
    assert_error(error, "not-acceptable", "modify", ROOM)
    info = await disco(bob, ROOM, NS_DISCO_INFO)
    names = [i.get("name") for i in info.findall(q(NS_DISCO_INFO,
                                                     "identity"))]
    assert names == ["room"] and "muc_semianonymous" in features_of(info), (
        "a refused form changed the room:\n%s" % describe(info))
    await configure(alice, roomname="Fine")
    codes = status_codes(await config_changed(bob))
    assert 172 not in codes, codes


async def test_maxusers_must_be_a_plain_count(server, net):
    # '1e3' was read as 1 by strtol.
    alice, = await room_with(net, server, "alice")
    for value in ("1e3", "-5", "+5", " 5", "5x", "", "99999999999999999999"):
        error = await iq_error(alice, ROOM, config_submit(maxusers=value),
                               "set")
        assert_error(error, "not-acceptable", "modify", ROOM)
    result = await alice.iq(ROOM, "<query xmlns='%s'/>" % NS_MUC_OWNER)
    got = [f.findtext(q(NS_DATA, "value"))
           for f in result.xml.iter(q(NS_DATA, "field"))
           if f.get("var") == "muc#roomconfig_maxusers"]
    assert got == ["200"], "maxusers changed by refused forms: %s" % got


async def test_room_name_and_description_are_bounded(server, net):
    """They go into every disco#info answer about the room: at most 1,024
    bytes each (a 200 KB name was taken and handed out)."""
    alice, = await room_with(net, server, "alice")
    await configure(alice, roomname="n" * 1024, roomdesc="d" * 1024)
    for field in ("roomname", "roomdesc"):
        error = await iq_error(alice, ROOM, config_submit(**{field: "x" * 1025}), "set")
        assert_error(error, "not-acceptable", "modify", ROOM)
    info = await alice.iq(ROOM, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    names = [i.get("name") for i in info.xml.iter(
        "{http://jabber.org/protocol/disco#info}identity")]
    assert names == ["n" * 1024], names


# -------------------------------------------------------------- destroy --

DESTROY = ("<query xmlns='%s'><destroy jid='elsewhere@%s'><reason>moved"
           "</reason></destroy></query>" % (NS_MUC_OWNER, SERVICE))


def assert_destroyed_presence(stanza, nick, venue, reason):
    assert stanza.xml.get("from") == "%s/%s" % (ROOM, nick), describe(stanza)
    d = muc_x_child(stanza, "destroy")
    assert d is not None and d.get("jid") == venue and d.findtext(
        q(NS_MUC_USER, "reason")) == reason, (
        "the unavailable presence carries <destroy jid='%s'><reason>%s"
        "</reason></destroy> (XEP-0045 10.9):\n%s"
        % (venue, reason, describe(stanza)))


async def test_destroy_tells_every_occupant(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    reply = await alice.iq(ROOM, DESTROY, "set")
    assert reply["type"] == "result", describe(reply)
    for who, nick in ((alice, "alice"), (bob, "bob")):
        got = await presence_with(who, "own unavailable with <destroy/>",
                                  frm="%s/%s" % (ROOM, nick),
                                  type="unavailable")
        assert_destroyed_presence(got, nick, "elsewhere@" + SERVICE, "moved")
    error = await iq_error(bob, ROOM, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", \
        describe(error)


async def test_destroyed_persistent_room_stays_gone(natter_factory, net):
    server = accounts(natter_factory(), "alice")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    await alice.iq(ROOM, DESTROY, "set")
    server = restart_on_same_data(natter_factory, server)
    alice, = await online(net, server, "alice")
    error = await iq_error(alice, ROOM, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", (
        "a destroyed persistent room came back after the restart:\n%s"
        % describe(error))
    joined = await join(alice, "alice")
    assert 201 in status_codes(joined.self), describe(joined.self)


def no_archive_host(history):
    """natter_factory overrides: a host without archives (mam off), whose
    persistent rooms keep their history in the store of their own."""
    return {"hosts": [{"domain": "localhost", "mam": {"enabled": False},
                       "muc": {"history": history}}]}


async def test_history_of_persistent_room_without_archive_survives_restart(
        natter_factory, net):
    server = accounts(natter_factory(**no_archive_host(3)), "alice", "bob")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    for n in range(1, 6):
        await say(alice, "m%d" % n)
    server = restart_on_same_data(natter_factory, server, keep_config=True)
    bob, = await online(net, server, "bob")
    joined = await join(bob, "bob")
    assert [body_of(s) for s in joined.history] == ["m3", "m4", "m5"], (
        "with muc.history 3 and no archive, a persistent room's joiners "
        "get its last three messages after a restart:\n%s"
        % "\n".join(describe(s) for s in joined.history))
    # Restarted twice: the store holds the last three, no more (what fell
    # out of the ring fell out of the store).
    await say(bob, "m6")
    server = restart_on_same_data(natter_factory, server, keep_config=True)
    alice, = await online(net, server, "alice")
    joined = await join(alice, "alice")
    assert [body_of(s) for s in joined.history] == ["m4", "m5", "m6"], (
        "\n".join(describe(s) for s in joined.history))


async def test_destroyed_room_leaves_no_history_in_the_store(natter_factory,
                                                             net):
    server = accounts(natter_factory(**no_archive_host(5)), "alice")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    await say(alice, "before")
    await alice.iq(ROOM, DESTROY, "set")
    # A room of the same name, persistent again: the old one's history
    # is gone from the store, so the restart cannot bring it back.
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    await say(alice, "after")
    server = restart_on_same_data(natter_factory, server, keep_config=True)
    alice, = await online(net, server, "alice")
    joined = await join(alice, "alice")
    assert [body_of(s) for s in joined.history] == ["after"], (
        "\n".join(describe(s) for s in joined.history))


async def test_owner_outside_the_room_may_destroy_it(server, net):
    # XEP-0045 5.2: affiliations do not depend on presence in the room;
    # an owner's privileges (10.2, 10.9) are an owner's, in or out.
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    await leave(alice, "alice")
    reply = await iq_error_or_result(alice, ROOM, DESTROY, "set")
    assert reply.xml.get("type") == "result", (
        "the owner of an empty persistent room cannot destroy it without "
        "joining it first:\n%s" % describe(reply))


async def test_destroy_alternate_venue_must_be_a_jid(server, net):
    alice, = await room_with(net, server, "alice")
    error = await iq_error(alice, ROOM, "<query xmlns='%s'><destroy jid='"
                           "not@@a jid'/></query>" % NS_MUC_OWNER, "set")
    assert_error(error, "bad-request", "modify", ROOM)
    await say(alice, "the room is still there")


# ---------------------------------------------------------- invitations --

def invite(room, to, reason=None):
    why = "<reason>%s</reason>" % reason if reason else ""
    return ("<message to='%s' id='inv'><x xmlns='%s'><invite to='%s'>%s"
            "</invite></x></message>" % (room, NS_MUC_USER, to, why))


async def invitation(client, room=ROOM):
    return await client.inbox.get(
        lambda s: s.xml.tag == q(NS_CLIENT, "message")
        and s.xml.get("from") == room
        and muc_x_child(s, "invite") is not None,
        "mediated invitation from %s" % room)


async def test_invitation_reaches_the_invitee(server, net):
    alice, carol = await online(net, server, "alice", "carol")
    carol2 = await connect(net, server, "carol", "second", available=True)
    await join(alice, "alice")
    alice.send_raw(invite(ROOM, jid_of("carol"), "come in"))
    for session in (carol, carol2):
        got = await invitation(session)
        inv = muc_x_child(got, "invite")
        assert (inv.get("from"), inv.findtext(q(NS_MUC_USER, "reason"))) == (
            alice.boundjid.full, "come in"), (
            "%s: the invitation names the inviter and the reason (XEP-0045 "
            "7.8.2):\n%s" % (session.boundjid, describe(got)))


async def test_invitation_carries_the_password(server, net):
    alice, carol = await online(net, server, "alice", "carol")
    await join(alice, "alice")
    await configure(alice, passwordprotectedroom=True, roomsecret="pw")
    alice.send_raw(invite(ROOM, jid_of("carol")))
    got = await invitation(carol)
    assert muc_x_child(got, "password") is not None and muc_x_child(
        got, "password").text == "pw", (
        "an invitation to a password room carries the password (XEP-0045 "
        "7.8.2):\n%s" % describe(got))


async def test_decline_reaches_the_inviter(server, net):
    alice, carol = await online(net, server, "alice", "carol")
    await join(alice, "alice")
    alice.send_raw(invite(ROOM, jid_of("carol")))
    await invitation(carol)
    carol.send_raw("<message to='%s'><x xmlns='%s'><decline to='%s'><reason>"
                   "busy</reason></decline></x></message>"
                   % (ROOM, NS_MUC_USER, jid_of("alice")))
    got = await alice.inbox.get(
        lambda s: s.xml.get("from") == ROOM
        and muc_x_child(s, "decline") is not None,
        "carol's decline through the room (XEP-0045 7.8.2)")
    dec = muc_x_child(got, "decline")
    assert (dec.get("from"), dec.findtext(q(NS_MUC_USER, "reason"))) == (
        carol.boundjid.full, "busy"), describe(got)


async def test_decline_without_invitation_is_not_passed_on(server, net):
    # Found by a hostile-input campaign: anyone could make the room send
    # a decline to any JID. A decline goes only from the invitee of a
    # pending invitation to its inviter, once.
    alice, bob = await room_with(net, server, "alice", "bob")
    carol, = await online(net, server, "carol")
    decline = ("<message to='%s' id='d%%d'><x xmlns='%s'><decline to='%%s'>"
               "<reason>forged</reason></decline></x></message>"
               % (ROOM, NS_MUC_USER))
    carol.send_raw(decline % (1, bob.boundjid.full))
    error = await carol.inbox.get(msg(id="d1", type="error"),
                                  "error for a decline of no invitation")
    assert_error(error, "item-not-found", "cancel", ROOM)
    alice.send_raw(invite(ROOM, jid_of("carol")))
    await invitation(carol)
    carol.send_raw(decline % (2, jid_of("alice")))
    await alice.inbox.get(
        lambda s: s.xml.get("from") == ROOM
        and muc_x_child(s, "decline") is not None,
        "carol's decline of alice's invitation")
    carol.send_raw(decline % (3, jid_of("alice")))
    error = await carol.inbox.get(msg(id="d3", type="error"),
                                  "error for a second decline")
    assert_error(error, "item-not-found", "cancel", ROOM)
    # The room handles stanzas in order: what it sent before these
    # reflections has arrived.
    for who, expected in ((alice, 1), (bob, 0)):
        await say(who, "after the declines")
        got = [s for s in who.inbox.seen
               if muc_x_child(s, "decline") is not None]
        assert len(got) == expected, (
            "%s got %d declines through the room, expected %d:\n%s"
            % (who.boundjid, len(got), expected,
               "\n".join(map(describe, got))))
    await net.assert_served(server)


async def test_owner_invitation_to_members_only_room_makes_member(
        server, net):
    alice, carol = await online(net, server, "alice", "carol")
    await join(alice, "alice")
    await configure(alice, membersonly=True)
    alice.send_raw(invite(ROOM, jid_of("carol")))
    await invitation(carol)
    joined = await join(carol, "carol")
    assert item_of(joined.self).get("affiliation") == "member", (
        "an owner's invitation into a members-only room makes the invitee "
        "a member (XEP-0045 7.8.2):\n%s" % describe(joined.self))


async def test_locked_invitations_are_forbidden_to_participants(
        server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    carol, = await online(net, server, "carol")
    await configure(alice, allowinvites=False)
    bob.send_raw(invite(ROOM, jid_of("carol")))
    error = await bob.inbox.get(msg(id="inv", type="error"),
                                "error for bob's invitation")
    assert_error(error, "forbidden", "auth", ROOM)
    alice.send_raw(invite(ROOM, jid_of("carol"), "from a moderator"))
    got = await invitation(carol)
    assert muc_x_child(got, "invite").get("from") == alice.boundjid.full


# --------------------------------------------------- iq to occupants ----

async def test_self_ping_is_answered_by_the_room(server, net):
    alice, = await room_with(net, server, "alice")
    reply = await alice.iq(ROOM + "/alice", "<ping xmlns='%s'/>" % NS_PING)
    assert reply["type"] == "result" and reply["from"] == ROOM + "/alice", \
        describe(reply)


async def test_ping_from_non_occupant_is_not_acceptable(server, net):
    alice, = await room_with(net, server, "alice")
    bob, = await online(net, server, "bob")
    error = await iq_error(bob, ROOM + "/alice",
                           "<ping xmlns='%s'/>" % NS_PING)
    assert_error(error, "not-acceptable", "cancel", ROOM + "/alice")


async def test_iq_between_occupants_goes_through_the_room(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    pending = alice.loop.create_task(
        bob.iq(ROOM + "/alice", "<query xmlns='%s'/>" % NS_VERSION))
    got = await alice.inbox.get(
        lambda s: s.xml.tag == q(NS_CLIENT, "iq")
        and s.xml.find(q(NS_VERSION, "query")) is not None,
        "bob's version request through the room (XEP-0045 7.5)")
    assert (got.xml.get("from"), got.xml.get("to"), got.xml.get("type")) == (
        ROOM + "/bob", alice.boundjid.full, "get"), describe(got)
    alice.send_raw("<iq type='result' to='%s/bob' id='%s'><query xmlns='%s'>"
                   "<name>natter-test</name></query></iq>"
                   % (ROOM, got.xml.get("id"), NS_VERSION))
    reply = await pending
    assert reply["from"] == ROOM + "/alice", describe(reply)
    assert reply.xml.findtext(q(NS_VERSION, "query") + "/" + q(
        NS_VERSION, "name")) == "natter-test", describe(reply)


# --------------------------------------------------------------- limits --

async def test_max_rooms_per_account(natter_factory, net):
    server = accounts(natter_factory(**muc_host(max_rooms_per_account=1)),
                      "alice")
    alice, = await online(net, server, "alice")
    one, two = "one@" + SERVICE, "two@" + SERVICE
    await join(alice, "alice", room=one)
    error = await join_error(alice, two + "/alice")
    assert_error(error, "not-allowed", "cancel", two + "/alice")
    await leave(alice, "alice", room=one)
    # Answered by room one's loop after it ended the room.
    error = await iq_error(alice, one, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", \
        describe(error)
    joined = await join(alice, "alice", room=two)
    assert 201 in status_codes(joined.self), describe(joined.self)


async def test_max_message_size(natter_factory, net):
    server = accounts(natter_factory(**muc_host(max_message_size=1024)),
                      "alice")
    alice, = await room_with(net, server, "alice")
    await groupchat_error(alice, "x" * 1025, "big", "not-acceptable",
                          "modify")
    await say(alice, "y" * 1024)


async def test_subject_is_bounded_by_max_message_size(natter_factory, net):
    server = accounts(natter_factory(**muc_host(max_message_size=1024)),
                      "alice")
    alice, = await room_with(net, server, "alice")
    alice.send_raw("<message to='%s' type='groupchat' id='s1'><subject>%s"
                   "</subject></message>" % (ROOM, "x" * 1025))
    error = await alice.inbox.get(msg(id="s1", type="error"),
                                  "error for a subject past the bound")
    assert_error(error, "not-acceptable", "modify", ROOM)
    alice.send_raw("<message to='%s' type='groupchat' id='s2'><subject>%s"
                   "</subject></message>" % (ROOM, "y" * 1024))
    got = await alice.inbox.get(
        lambda s: from_room(ROOM)(s) and s.xml.findtext(
            q(NS_CLIENT, "subject")) == "y" * 1024,
        "the subject within the bound, broadcast")
    assert got.xml.get("type") == "groupchat", describe(got)
    await net.assert_served(server)


async def test_message_rate_limit(natter_factory, net):
    server = accounts(natter_factory(**muc_host(message_rate=1,
                                                message_burst=3)), "alice")
    alice, = await room_with(net, server, "alice")
    # One write, so that the four arrive well within the second it takes
    # to earn a fourth token.
    alice.send_raw("".join(
        "<message to='%s' type='groupchat' id='q%d'><body>quick%d</body>"
        "</message>" % (ROOM, n, n) for n in range(1, 5)))
    error = await alice.inbox.get(msg(id="q4", type="error"),
                                  "error for the fourth quick message")
    assert_error(error, "resource-constraint", "wait", ROOM)
    got = [body_of(s) for s in alice.inbox.find(from_room(ROOM))
           if s.xml.get("type") == "groupchat" and body_of(s)]
    assert got == ["quick1", "quick2", "quick3"], (
        "the burst of three passes: %s" % got)


# ------------------------------------------------------- natterctl room --

def ctl_ok(server, *args):
    proc = server.ctl("room", *args, check=True)
    return proc.stdout


async def test_ctl_room_create(server, net):
    out = ctl_ok(server, "create", ROOM, jid_of("alice"))
    assert ROOM in out, out
    listed = ctl_ok(server, "list")
    line = [ln for ln in listed.splitlines() if ln.startswith(ROOM)]
    assert line and "persistent" in line[0], listed
    alice, = await online(net, server, "alice")
    joined = await join(alice, "alice")
    assert (item_of(joined.self).get("affiliation"),
            201 in status_codes(joined.self)) == ("owner", False), (
        "the named owner joins the made room as its owner:\n%s"
        % describe(joined.self))


async def test_ctl_room_list_counts_occupants(server, net):
    await room_with(net, server, "alice", "bob")
    carol, = await online(net, server, "carol")
    await join(carol, "carol", room="other@" + SERVICE)
    listed = ctl_ok(server, "list")
    counts = {}
    for ln in listed.splitlines():
        fields = ln.split()
        if fields and "@" in fields[0]:     # not "ok", not the header
            counts[fields[0]] = int(fields[1])
    assert counts == {ROOM: 2, "other@" + SERVICE: 1}, repr(listed)


async def test_ctl_room_info(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    # bob a member first: a room made members-only lets only members stay.
    await admin_set(alice, jid=jid_of("bob"), affiliation="member")
    await configure(alice, roomname="Lobby", membersonly=True)
    await admin_set(alice, jid=jid_of("carol"), affiliation="member")
    out = ctl_ok(server, "info", ROOM)
    assert re.search(r"^name\s+Lobby$", out, re.M), out
    assert "members-only" in out, out
    assert re.search(r"^occupants\s+2$", out, re.M), out
    assert re.search(r"^\s+alice\s+moderator\s+owner\s+%s$"
                     % re.escape(alice.boundjid.full), out, re.M), out
    assert re.search(r"^\s+bob\s+participant\s+member\s+%s$"
                     % re.escape(bob.boundjid.full), out, re.M), out
    assert re.search(r"^\s+member\s+%s$" % re.escape(jid_of("carol")),
                     out, re.M), out


async def test_ctl_room_destroy_tells_occupants(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    ctl_ok(server, "destroy", ROOM, "closing", "time")
    for who, nick in ((alice, "alice"), (bob, "bob")):
        got = await presence_with(who, "unavailable with <destroy/>",
                                  frm="%s/%s" % (ROOM, nick),
                                  type="unavailable")
        d = muc_x_child(got, "destroy")
        assert d is not None and d.findtext(
            q(NS_MUC_USER, "reason")) == "closing time", describe(got)
    assert ROOM not in ctl_ok(server, "list")


async def test_ctl_room_create_owner_must_be_a_bare_jid(server, net):
    proc = server.ctl("room", "create", ROOM, jid_of("alice") + "/desk")
    if proc.returncode != 0:
        return      # refused: fine
    alice, = await online(net, server, "alice")
    joined = await join(alice, "alice")
    assert item_of(joined.self).get("affiliation") == "owner", (
        "natterctl room create accepted the full JID %s/desk as owner but "
        "alice is not the owner (neither refused nor taken as the bare "
        "JID):\n%s\n%s" % (jid_of("alice"), describe(joined.self),
                            server.ctl("room", "info", ROOM).stdout))


BAD_ARGS = [
    (), ("frob",), ("info",), ("info", "not a jid"),
    ("info", "room@localhost"), ("info", ROOM + "/nick"),
    ("info", "missing@" + SERVICE), ("destroy", "missing@" + SERVICE),
    ("create", ROOM, "a", "b")]


def test_ctl_room_bad_arguments(server):
    for args in BAD_ARGS:
        proc = server.ctl("room", *args)
        assert proc.returncode != 0 and (proc.stderr.strip()
                                         or proc.stdout.strip()), (
            "natterctl room %s: rc %d, stdout %r, stderr %r"
            % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
    ctl_ok(server, "create", ROOM)
    proc = server.ctl("room", "create", ROOM)
    assert proc.returncode != 0 and "exists" in proc.stdout + proc.stderr, (
        proc.stdout, proc.stderr)


async def test_room_made_members_only_removes_non_members_with_322(server, net):
    alice, bob = await room_with(net, server, "alice", "bob")
    await configure(alice, membersonly=True)
    own = await presence_with(bob, "bob removed when the room became members-only",
                              frm=ROOM + "/bob", type="unavailable")
    assert {322, 110} <= status_codes(own), (
        "non-members leave a room that becomes members-only with 322 "
        "(XEP-0045 10.2.1):\n%s" % describe(own))
    seen = await presence_with(alice, "bob's removal, as alice sees it",
                               frm=ROOM + "/bob", type="unavailable")
    assert 322 in status_codes(seen), describe(seen)


async def test_shutdown_tells_occupants_with_332(natter_factory, net):
    # Two loops, eight occupants: the kernel spreads the connections over
    # both (all on the room's loop: 1 in 128), so some 332s cross from the
    # room's loop to another, which must not stop before they arrive.
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    server = accounts(natter_factory(workers=2), *names)
    clients = await room_with(net, server, *names)
    assert server.stop() == []  # SIGTERM, and a clean exit
    for client, name in zip(clients, names):
        own = await presence_with(client, "%s's unavailable as natterd stops" % name,
                                  frm=ROOM + "/" + name, type="unavailable")
        assert 332 in status_codes(own), (
            "occupants hear that the service stops (status 332, XEP-0045 "
            "status code registry):\n%s" % describe(own))

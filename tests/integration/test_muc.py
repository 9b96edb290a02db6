"""Multi-user chat (XEP-0045), first slice: the service at
conference.DOMAIN and its discovery, temporary public open rooms made by
joining them, occupant presence with roles, affiliations and occupant-ids
(XEP-0421), groupchat with room stanza-ids (XEP-0359), private messages,
subject, discussion history with delay stamps (XEP-0203), leaving, nick
changes, and the errors of each.

Most tests speak raw stanzas through slixmpp sessions and imlib's Inbox, so
that what is asserted is the wire format XEP-0045 describes; one test
joins and chats with slixmpp's own XEP-0045 plugin, as a client ships.

A join is over when the subject message arrives (XEP-0045 7.2.15: occupant
presences, own presence, history, then the subject, always sent, empty
when none is set), so join() waits for it and returns what came before,
in arrival order; nothing here waits by sleeping.
"""

import asyncio
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from slixmpp import JID

from imlib import (
    NS_DELAY, NS_DISCO_INFO, NS_DISCO_ITEMS, accounts, bare, connect,
    drop_connection, iq_error, msg, now_utc, parse_stamp, pres)
from natterlib import (
    IO_TIMEOUT, NS_CLIENT, q, stanza_error_condition)

SERVICE = "conference.localhost"
ROOM = "room@" + SERVICE

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_DATA = "jabber:x:data"

ROOM_FEATURES = [NS_MUC, "muc_public", "muc_temporary", "muc_open",
                 "muc_unmoderated", "muc_semianonymous", "muc_unsecured"]


def muc_host(**muc):
    """natter_factory overrides for the default host with a muc: map."""
    return {"hosts": [{"domain": "localhost", "muc": muc}]}


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def online(net, server, *names):
    """Logged-in, available sessions, one per name."""
    return [await connect(net, server, name, available=True)
            for name in names]


# ------------------------------------------------------------ stanzas ----

def describe(stanza):
    xml = stanza.xml if hasattr(stanza, "xml") else stanza
    return ET.tostring(xml, encoding="unicode")


def describe_all(stanzas):
    return "\n".join("  " + describe(s) for s in stanzas) or "  (nothing)"


def muc_x(stanza):
    return stanza.xml.find(q(NS_MUC_USER, "x"))


def item_of(stanza):
    """The attributes of the muc#user <item/> (XEP-0045 7.2.3), or None
    when the stanza has none."""
    x = muc_x(stanza)
    item = None if x is None else x.find(q(NS_MUC_USER, "item"))
    return None if item is None else dict(item.attrib)


def status_codes(stanza):
    x = muc_x(stanza)
    if x is None:
        return set()
    return {int(s.get("code")) for s in x.findall(q(NS_MUC_USER, "status"))}


def occupant_id(stanza):
    """The XEP-0421 occupant-id, asserting there is exactly one."""
    found = stanza.xml.findall(q(NS_OCCUPANT_ID, "occupant-id"))
    assert len(found) == 1 and found[0].get("id"), (
        "expected exactly one <occupant-id xmlns='%s' id='...'/> "
        "(XEP-0421), got %d:\n%s" % (NS_OCCUPANT_ID, len(found),
                                     describe(stanza)))
    return found[0].get("id")


def stanza_ids(stanza, by=ROOM):
    return [e.get("id") for e in stanza.xml.findall(q(NS_SID, "stanza-id"))
            if e.get("by") == by]


def error_type(stanza):
    err = stanza.xml.find(q(NS_CLIENT, "error"))
    return None if err is None else err.get("type")


def is_subject(stanza):
    """The subject message of XEP-0045 7.2.15/8.1: groupchat with a
    <subject/> and no <body/>."""
    xml = stanza.xml
    return (xml.tag == q(NS_CLIENT, "message")
            and xml.get("type") == "groupchat"
            and xml.find(q(NS_CLIENT, "subject")) is not None
            and xml.find(q(NS_CLIENT, "body")) is None)


def body_of(stanza):
    return stanza.xml.findtext(q(NS_CLIENT, "body"))


def late(client, room=ROOM):
    """For failure messages: what the room sent that is still unread,
    e.g. history sent after the subject."""
    return describe_all([s for s in client.inbox.pending
                         if from_room(room)(s)])


def from_room(room):
    """A message or presence from the room or one of its occupants (the
    Inbox also holds iq replies, which are not the room speaking)."""
    return lambda s: bare(s.xml.get("from")) == room and s.xml.tag in (
        q(NS_CLIENT, "message"), q(NS_CLIENT, "presence"))


def assert_error(stanza, condition, etype, frm):
    assert stanza.xml.get("type") == "error", describe(stanza)
    got = stanza_error_condition(stanza.xml)
    assert (got, error_type(stanza)) == (condition, etype), (
        "expected <%s/> of type %s, got <%s/> of type %s:\n%s"
        % (condition, etype, got, error_type(stanza), describe(stanza)))
    assert stanza.xml.get("from") == frm, (
        "the error must come from the address the client wrote, %s:\n%s"
        % (frm, describe(stanza)))


# ------------------------------------------------------------- joining ---

class Join:
    """What a joiner received from the room, in order, up to and including
    the subject message."""

    def __init__(self, room, nick, stanzas):
        self.room, self.nick, self.stanzas = room, nick, stanzas
        self.subject = stanzas[-1]
        selves = [s for s in stanzas if s.xml.tag == q(NS_CLIENT, "presence")
                  and 110 in status_codes(s)]
        assert len(selves) == 1, (
            "expected one own presence with status 110 before the subject "
            "(XEP-0045 7.2.3), got %d:\n%s" % (len(selves),
                                               describe_all(stanzas)))
        self.self = selves[0]
        self.others = [s for s in stanzas
                       if s.xml.tag == q(NS_CLIENT, "presence")
                       and s is not self.self]
        self.history = [s for s in stanzas if s.xml.tag == q(NS_CLIENT,
                                                             "message")
                        and s is not self.subject]

    def occupants(self):
        """{nick: presence} of the occupants announced to the joiner."""
        return {s.xml.get("from").split("/", 1)[1]: s for s in self.others}


def join_stanza(room, nick, history=""):
    return ("<presence to='%s/%s'><x xmlns='%s'>%s</x></presence>"
            % (room, nick, NS_MUC, history))


async def collect_until(client, pred, what, room):
    """Waits for the first stanza matching pred; returns the stanzas from
    room that arrived before it and it, in order, consuming them."""
    inbox = client.inbox
    last = await inbox.get(pred, what)
    end = next(i for i in range(len(inbox.seen) - 1, -1, -1)
               if inbox.seen[i] is last)
    pending = set(map(id, inbox.pending))
    got = [s for s in inbox.seen[:end] if id(s) in pending
           and from_room(room)(s)] + [last]
    taken = set(map(id, got))
    inbox.pending = [s for s in inbox.pending if id(s) not in taken]
    return got


async def join(client, nick, room=ROOM, history=""):
    """Joins room as nick (XEP-0045 7.2.2) and waits for the join to end
    with the subject message; returns a Join."""
    client.send_raw(join_stanza(room, nick, history))

    def done(s):
        return from_room(room)(s) and (
            is_subject(s) or s.xml.get("type") == "error")
    got = await collect_until(
        client, done, "subject message from %s ending the join as %s "
        "(XEP-0045 7.2.15)" % (room, nick), room)
    assert got[-1].xml.get("type") != "error", (
        "join of %s/%s refused:\n%s" % (room, nick, describe(got[-1])))
    return Join(room, nick, got)


async def join_error(client, to, stanza=None):
    """Sends a join (or the given presence) to `to`; returns the presence
    error that answers it."""
    client.send_raw(stanza or "<presence to='%s'><x xmlns='%s'/></presence>"
                    % (to, NS_MUC))
    got = await client.inbox.get(
        lambda s: s.xml.tag == q(NS_CLIENT, "presence")
        and s.xml.get("type") == "error",
        "presence error answering the presence to %s" % to)
    return got


async def others_see_join(client, nick, room=ROOM):
    """The newcomer's presence an existing occupant receives."""
    return await client.inbox.get(
        pres(frm="%s/%s" % (room, nick), type="available"),
        "presence of newcomer %s in %s" % (nick, room))


async def say(client, body, room=ROOM, msg_id=None, extra=""):
    """Sends a groupchat message and waits for its reflection (XEP-0045
    7.4: the sender gets its own message too); returns the reflection."""
    msg_id = msg_id or "gc-%s" % body
    client.send_raw("<message to='%s' type='groupchat' id='%s'><body>%s"
                    "</body>%s</message>" % (room, msg_id, body, extra))
    return await client.inbox.get(
        lambda s: from_room(room)(s) and body_of(s) == body
        and s.xml.get("type") == "groupchat",
        "reflection of own groupchat message %r" % body)


async def leave(client, nick, room=ROOM):
    """Sends unavailable presence and waits for the own unavailable with
    status 110 (XEP-0045 7.14)."""
    client.send_raw("<presence to='%s/%s' type='unavailable'/>"
                    % (room, nick))
    return await client.inbox.get(
        lambda s: pres(frm="%s/%s" % (room, nick), type="unavailable")(s)
        and 110 in status_codes(s),
        "own unavailable presence with status 110 after leaving %s" % room)


# ---------------------------------------------------------- discovery ----

async def disco(client, to, ns):
    result = await client.iq(to, "<query xmlns='%s'/>" % ns)
    return result.xml.find(q(ns, "query"))


async def items_of(client, to):
    query = await disco(client, to, NS_DISCO_ITEMS)
    return [i.get("jid") for i in query.findall(q(NS_DISCO_ITEMS, "item"))]


def identities_of(info):
    return {(i.get("category"), i.get("type"))
            for i in info.findall(q(NS_DISCO_INFO, "identity"))}


def features_of(info):
    return {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}


async def test_service_is_listed_in_server_disco_items(server, net):
    alice = await connect(net, server, "alice")
    listed = await items_of(alice, "localhost")
    assert SERVICE in listed, (
        "disco#items on localhost should list the chat service %s (XEP-0045 "
        "6.1), got %s" % (SERVICE, listed))


async def test_service_disco_info(server, net):
    alice = await connect(net, server, "alice")
    info = await disco(alice, SERVICE, NS_DISCO_INFO)
    assert ("conference", "text") in identities_of(info), (
        "the service's identity should be conference/text (XEP-0045 6.2), "
        "got %s" % identities_of(info))
    assert NS_MUC in features_of(info), sorted(features_of(info))


async def test_room_disco_info(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    info = await disco(bob, ROOM, NS_DISCO_INFO)
    assert ("conference", "text") in identities_of(info), (
        "a room's identity should be conference/text (XEP-0045 6.4), got %s"
        % identities_of(info))
    features = features_of(info)
    missing = [f for f in ROOM_FEATURES if f not in features]
    assert not missing, "room disco#info lacks %s (XEP-0045 6.4); has %s" % (
        missing, sorted(features))
    # Services that add these MUST say so (XEP-0359 3, XEP-0421 3).
    for feature in (NS_SID, NS_OCCUPANT_ID):
        assert feature in features, "room adds %s elements but does not " \
            "advertise the feature; has %s" % (feature, sorted(features))


async def test_disco_info_on_missing_room_is_item_not_found(server, net):
    alice = await connect(net, server, "alice")
    error = await iq_error(alice, "nosuchroom@" + SERVICE,
                           "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", (
        "disco#info on a room that does not exist should be <item-not-found/>"
        ":\n%s" % describe(error))


async def test_service_disco_items_lists_existing_rooms(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    assert await items_of(bob, SERVICE) == [], "no room exists yet"
    await join(alice, "alice", room="one@" + SERVICE)
    await join(alice, "alice", room="two@" + SERVICE)
    listed = sorted(await items_of(bob, SERVICE))
    assert listed == ["one@" + SERVICE, "two@" + SERVICE], (
        "disco#items on the service should list the two public rooms "
        "(XEP-0045 6.3), got %s" % listed)


# ------------------------------------------------------------ joining ----

async def test_first_joiner_creates_room_and_owns_it(server, net):
    alice, = await online(net, server, "alice")
    joined = await join(alice, "alice")
    own = joined.self
    assert own.xml.get("from") == ROOM + "/alice", describe(own)
    assert {110, 201} <= status_codes(own), (
        "the creator's own presence needs status 110 and 201 (XEP-0045 "
        "10.1.1):\n%s" % describe(own))
    item = item_of(own)
    assert item and (item.get("affiliation"), item.get("role")) == (
        "owner", "moderator"), "the creator is owner and moderator:\n%s" \
        % describe(own)
    assert item.get("jid") == alice.boundjid.full, (
        "a moderator sees real JIDs, its own included: jid=%s expected:\n%s"
        % (alice.boundjid.full, describe(own)))
    occupant_id(own)
    assert joined.others == [] and joined.history == [], (
        "a new room has no one else and no history:\n%s"
        % describe_all(joined.stanzas))
    subject = joined.subject
    assert subject.xml.get("from") == ROOM, (
        "with no subject set, the empty subject comes from the room "
        "itself:\n%s" % describe(subject))
    assert not subject.xml.findtext(q(NS_CLIENT, "subject")), describe(subject)


async def test_instant_room_form_is_accepted(server, net):
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    reply = await alice.iq(ROOM, "<query xmlns='%s'><x xmlns='%s' "
                           "type='submit'/></query>" % (NS_MUC_OWNER, NS_DATA),
                           "set")
    assert reply["type"] == "result", (
        "an owner's instant-room submit should get a result (XEP-0045 "
        "10.1.2):\n%s" % describe(reply))


async def test_later_joiner_gets_occupants_then_self_then_subject(
        server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    # No instant-room form is sent: natter's rooms are open at once.
    await join(alice, "alice")
    await join(bob, "bob")
    seen_by_alice = await others_see_join(alice, "bob")
    joined = await join(carol, "carol")

    kinds = []
    for s in joined.stanzas:
        kinds.append("self" if s is joined.self else
                     "subject" if s is joined.subject else
                     "occupant" if any(s is o for o in joined.others)
                     else "other")
    assert kinds == ["occupant", "occupant", "self", "subject"], (
        "XEP-0045 7.2.3: each occupant's presence, then the joiner's own, "
        "then (7.2.15) the subject; got %s:\n%s"
        % (kinds, describe_all(joined.stanzas)))

    occupants = joined.occupants()
    assert sorted(occupants) == ["alice", "bob"], sorted(occupants)
    assert item_of(occupants["alice"]) == {
        "affiliation": "owner", "role": "moderator"}, (
        "a participant sees affiliation and role but no real JID in a "
        "semi-anonymous room (XEP-0045 7.2.3):\n%s"
        % describe(occupants["alice"]))
    assert item_of(occupants["bob"]) == {
        "affiliation": "none", "role": "participant"}, describe(
            occupants["bob"])
    for s in joined.others:
        occupant_id(s)

    own = item_of(joined.self)
    assert (own.get("affiliation"), own.get("role")) == (
        "none", "participant"), describe(joined.self)
    assert 201 not in status_codes(joined.self), (
        "201 is only for the creator:\n%s" % describe(joined.self))
    occupant_id(joined.self)

    # The moderator sees the newcomers' real JIDs.
    assert item_of(seen_by_alice).get("jid") == bob.boundjid.full, (
        "the owner (a moderator) should see bob's real JID:\n%s"
        % describe(seen_by_alice))
    seen = await others_see_join(alice, "carol")
    assert item_of(seen).get("jid") == carol.boundjid.full, describe(seen)
    assert 110 not in status_codes(seen), describe(seen)
    seen = await others_see_join(bob, "carol")
    assert "jid" not in item_of(seen), (
        "a participant must not see carol's real JID:\n%s" % describe(seen))


async def test_occupant_id_is_stable_per_account(server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    own = (await join(bob, "bob")).self
    first = occupant_id(await others_see_join(alice, "bob"))
    assert occupant_id(own) == first, (
        "bob's own presence and the one others see carry the same "
        "occupant-id:\n%s" % describe(own))
    await leave(bob, "bob")
    await join(bob, "robert")
    again = occupant_id(await others_see_join(alice, "robert"))
    assert again == first, (
        "the occupant-id of one bare JID in one room must not change when "
        "it rejoins under another nick (XEP-0421 4): %s then %s"
        % (first, again))
    await join(carol, "carol")
    other = occupant_id(await others_see_join(alice, "carol"))
    assert other != first, "two accounts share the occupant-id %s" % first


async def test_nick_in_use_is_conflict(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    error = await join_error(bob, ROOM + "/alice")
    assert_error(error, "conflict", "cancel", ROOM + "/alice")


async def test_join_without_nick_is_jid_malformed(server, net):
    alice, = await online(net, server, "alice")
    error = await join_error(alice, ROOM)
    assert_error(error, "jid-malformed", "modify", ROOM)


@pytest.mark.parametrize("to", [
    "bad:room@%s/nick" % SERVICE,           # ':' is not allowed (RFC 7622)
    "room@%s/%s" % (SERVICE, "n" * 1024),   # over 1023 bytes
])
async def test_invalid_room_or_nick_is_jid_malformed(server, net, to):
    alice, = await online(net, server, "alice")
    error = await join_error(alice, to)
    got = stanza_error_condition(error.xml)
    assert got == "jid-malformed", (
        "a join to the invalid address %s... should get <jid-malformed/>, "
        "got <%s/>:\n%s" % (to[:40], got, describe(error)))


async def test_full_room_is_service_unavailable(natter_factory, net):
    server = accounts(natter_factory(**muc_host(max_occupants=2)),
                      "alice", "bob", "carol")
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    await join(bob, "bob")
    error = await join_error(carol, ROOM + "/carol")
    assert_error(error, "service-unavailable", "wait", ROOM + "/carol")


# ------------------------------------------------------------ messages ---

async def test_groupchat_is_reflected_to_all_with_stanza_id(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    alice_oid = occupant_id((await join(bob, "bob")).occupants()["alice"])
    forged = ("<stanza-id xmlns='%s' by='%s' id='forged'/>"
              "<occupant-id xmlns='%s' id='forged'/>"
              % (NS_SID, ROOM, NS_OCCUPANT_ID))
    mine = await say(alice, "hello", msg_id="m1", extra=forged)
    theirs = await bob.inbox.get(
        lambda s: from_room(ROOM)(s) and body_of(s) == "hello",
        "alice's groupchat message")
    for copy, who in ((mine, alice), (theirs, bob)):
        xml = copy.xml
        assert (xml.get("from"), xml.get("to"), xml.get("type")) == (
            ROOM + "/alice", who.boundjid.full, "groupchat"), describe(copy)
        ids = stanza_ids(copy)
        assert len(ids) == 1 and ids[0] != "forged", (
            "expected one room-assigned <stanza-id by='%s'/> and the forged "
            "one removed (XEP-0359 3):\n%s" % (ROOM, describe(copy)))
        assert occupant_id(copy) == alice_oid, (
            "the room replaces a forged occupant-id with alice's (XEP-0421 "
            "4):\n%s" % describe(copy))
    assert mine.xml.get("id") == "m1", (
        "the sender's id is kept on its reflection (XEP-0045 7.4):\n%s"
        % describe(mine))
    assert stanza_ids(mine) == stanza_ids(theirs), (
        "both copies of one message carry the room's one stanza-id")
    second = await say(alice, "again", msg_id="m2")
    assert stanza_ids(second)[0] != stanza_ids(mine)[0], (
        "two messages got the same stanza-id %s" % stanza_ids(mine))


async def test_groupchat_from_non_occupant_is_not_acceptable(server, net):
    alice, carol = await online(net, server, "alice", "carol")
    await join(alice, "alice")
    carol.send_raw("<message to='%s' type='groupchat' id='x1'><body>intruder"
                   "</body></message>" % ROOM)
    error = await carol.inbox.get(msg(id="x1", type="error"),
                                  "error for a groupchat from a non-occupant")
    assert_error(error, "not-acceptable", "modify", ROOM)
    # The room handles its stanzas in order: alice's own message comes
    # after anything the room would have broadcast of carol's.
    await say(alice, "after")
    leaked = [s for s in alice.inbox.seen if body_of(s) == "intruder"]
    assert not leaked, "a non-occupant's message reached the room:\n%s" \
        % describe_all(leaked)


async def test_private_message_between_occupants(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await join(bob, "bob")
    alice.send_raw("<message to='%s/bob' type='chat' id='pm1'><body>psst"
                   "</body></message>" % ROOM)
    got = await bob.inbox.get(msg(id="pm1"), "alice's private message")
    xml = got.xml
    assert (xml.get("from"), xml.get("to"), xml.get("type"),
            body_of(got)) == (ROOM + "/alice", bob.boundjid.full, "chat",
                              "psst"), (
        "a private message comes from the sender's occupant JID to the "
        "recipient's real JID (XEP-0045 7.5):\n%s" % describe(got))
    assert muc_x(got) is not None, (
        "the room adds <x xmlns='%s'/> to private messages (XEP-0045 7.5)"
        ":\n%s" % (NS_MUC_USER, describe(got)))


async def test_private_message_to_absent_nick_is_item_not_found(
        server, net):
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    alice.send_raw("<message to='%s/nobody' type='chat' id='pm2'><body>hi"
                   "</body></message>" % ROOM)
    error = await alice.inbox.get(msg(id="pm2", type="error"),
                                  "error for a private message to nobody")
    assert_error(error, "item-not-found", "cancel", ROOM + "/nobody")


async def test_subject_is_broadcast_and_given_to_joiners(server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    await join(bob, "bob")
    alice.send_raw("<message to='%s' type='groupchat'><subject>Plans"
                   "</subject></message>" % ROOM)
    for who in (alice, bob):
        got = await who.inbox.get(
            lambda s: from_room(ROOM)(s) and is_subject(s),
            "the new subject (XEP-0045 8.1)")
        assert got.xml.get("from") == ROOM + "/alice", describe(got)
        assert got.xml.findtext(q(NS_CLIENT, "subject")) == "Plans", \
            describe(got)
    joined = await join(carol, "carol")
    subject = joined.subject
    assert (subject.xml.get("from"),
            subject.xml.findtext(q(NS_CLIENT, "subject"))) == (
        ROOM + "/alice", "Plans"), (
        "a joiner gets the current subject from the nick that set it "
        "(XEP-0045 7.2.15):\n%s" % describe(subject))
    assert joined.history == [], (
        "a subject change is not discussion history:\n%s"
        % describe_all(joined.history))


# ------------------------------------------------------------- history ---

async def test_history_goes_to_joiners_with_delay(natter_factory, net):
    server = accounts(natter_factory(**muc_host(history=3)), "alice", "bob")
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    for n in range(1, 6):
        await say(alice, "m%d" % n)
    joined = await join(bob, "bob")
    bodies = [body_of(s) for s in joined.history]
    assert bodies == ["m3", "m4", "m5"], (
        "with muc.history 3 a joiner gets the last three messages, oldest "
        "first, before the subject (XEP-0045 7.2.14), got %s; after the "
        "subject came:\n%s" % (bodies, late(bob)))
    order = joined.stanzas
    assert order.index(joined.self) < order.index(joined.history[0]), (
        "history comes after the joiner's own presence:\n%s"
        % describe_all(order))
    assert order[-1] is joined.subject, "the subject comes last"
    for s in joined.history:
        assert (s.xml.get("from"), s.xml.get("type")) == (
            ROOM + "/alice", "groupchat"), describe(s)
        delays = s.xml.findall(q(NS_DELAY, "delay"))
        assert len(delays) == 1 and delays[0].get("from") == ROOM, (
            "each history message has <delay xmlns='%s' from='%s'/> "
            "(XEP-0045 7.2.14, XEP-0203):\n%s" % (NS_DELAY, ROOM,
                                                 describe(s)))
        stamp = parse_stamp(delays[0].get("stamp"))
        assert abs(now_utc() - stamp) < timedelta(seconds=60), (
            "stamp %s is not when the message was sent" % stamp)


async def test_history_limited_by_maxstanzas(server, net):
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "alice")
    for n in range(1, 4):
        await say(alice, "m%d" % n)
    none = await join(bob, "bob", history="<history maxstanzas='0'/>")
    assert none.history == [], "maxstanzas='0' asks for no history:\n%s" \
        % describe_all(none.history)
    two = await join(carol, "carol", history="<history maxstanzas='2'/>")
    assert [body_of(s) for s in two.history] == ["m2", "m3"], (
        "maxstanzas='2' asks for the last two messages, before the subject:"
        "\n%s\nafter the subject came:\n%s"
        % (describe_all(two.history), late(carol)))


async def test_history_limited_by_maxchars_and_since(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await say(alice, "m1")
    none = await join(bob, "bob", history="<history maxchars='0'/>")
    assert none.history == [], "maxchars='0' asks for no history:\n%s" \
        % describe_all(none.history)
    await leave(bob, "bob")
    future = (now_utc() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    none = await join(bob, "bob", history="<history since='%s'/>" % future)
    assert none.history == [], "nothing was sent since %s:\n%s" % (
        future, describe_all(none.history))


HISTORY_NOT_COUNTS = [
    "seconds='-9223372036854775808'", "seconds='-100'", "seconds='abc'",
    "seconds='99999999999999999999'", "maxstanzas='-5'", "maxstanzas='abc'",
    "maxstanzas='2x'", "maxchars='-1'", "maxchars=''", "since='yesterday'"]


async def test_history_attributes_that_are_not_counts_count_as_absent(
        server, net):
    # Found by a hostile-input campaign: seconds='-9223372036854775808'
    # overflowed (UBSan aborts natterd), and maxstanzas='-5' gave all the
    # history where 'abc' gave none. An attribute that is not a
    # non-negative integer (since: not a DateTime) counts as absent, and
    # a huge seconds asks for everything.
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    for n in range(1, 4):
        await say(alice, "m%d" % n)
    for attrs in HISTORY_NOT_COUNTS:
        joined = await join(bob, "bob", history="<history %s/>" % attrs)
        assert [body_of(s) for s in joined.history] == ["m1", "m2", "m3"], (
            "<history %s/> is as if absent: all three messages, got:\n%s"
            % (attrs, describe_all(joined.history)))
        await leave(bob, "bob")
    await net.assert_served(server)


# ---------------------------------------------------- leaving, nicks ----

async def test_leaving_is_announced(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await join(bob, "bob")
    own = await leave(bob, "bob")
    assert item_of(own).get("role") == "none", (
        "the leaver's own unavailable presence has role none (XEP-0045 "
        "7.14):\n%s" % describe(own))
    seen = await alice.inbox.get(pres(frm=ROOM + "/bob", type="unavailable"),
                                 "bob's unavailable presence")
    assert item_of(seen) and item_of(seen).get("role") == "none", (
        "others get the leaver's unavailable presence with role none:\n%s"
        % describe(seen))
    assert 110 not in status_codes(seen), describe(seen)


async def test_last_one_out_ends_the_room(server, net):
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    assert ROOM in await items_of(alice, SERVICE)
    await leave(alice, "alice")
    listed = await items_of(alice, SERVICE)
    assert ROOM not in listed, (
        "a temporary room ends when its last occupant leaves (XEP-0045 "
        "10.1.3), yet it is still listed: %s" % listed)
    error = await iq_error(alice, ROOM, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    assert stanza_error_condition(error.xml) == "item-not-found", \
        describe(error)
    again = await join(alice, "alice")
    assert 201 in status_codes(again.self), (
        "joining again creates the room anew (status 201):\n%s"
        % describe(again.self))


@pytest.mark.parametrize("how", ["dropped", "closed"])
async def test_disconnect_leaves_the_room(server, net, how):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await join(bob, "bob")
    if how == "dropped":
        drop_connection(bob)        # a reset, no goodbye
    else:
        await bob.close()           # </stream:stream>, no unavailable
    seen = await alice.inbox.get(
        pres(frm=ROOM + "/bob", type="unavailable"),
        "bob's unavailable presence after his connection %s" % how)
    assert item_of(seen) and item_of(seen).get("role") == "none", \
        describe(seen)


async def test_nick_change(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await join(bob, "bob")
    await others_see_join(alice, "bob")
    bob.send_raw("<presence to='%s/robert'/>" % ROOM)
    for who, own in ((alice, False), (bob, True)):
        got = await collect_until(
            who, pres(frm=ROOM + "/robert", type="available"),
            "presence from the new nick robert", ROOM)
        old = [s for s in got if pres(frm=ROOM + "/bob",
                                      type="unavailable")(s)]
        assert len(old) == 1, (
            "%s: an unavailable presence from the old nick comes before the "
            "new nick's presence (XEP-0045 7.6):\n%s"
            % (who.boundjid, describe_all(got)))
        codes = status_codes(old[0])
        assert 303 in codes and item_of(old[0]).get("nick") == "robert", (
            "the old nick's unavailable presence has status 303 and "
            "item nick='robert':\n%s" % describe(old[0]))
        assert (110 in codes) == own, describe(old[0])
        assert (110 in status_codes(got[-1])) == own, describe(got[-1])
    await say(bob, "renamed")
    seen = await alice.inbox.get(lambda s: body_of(s) == "renamed",
                                 "bob's message under his new nick")
    assert seen.xml.get("from") == ROOM + "/robert", describe(seen)


async def test_nick_change_to_taken_nick_is_conflict(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    await join(alice, "alice")
    await join(bob, "bob")
    error = await join_error(bob, ROOM + "/alice",
                             "<presence to='%s/alice'/>" % ROOM)
    assert_error(error, "conflict", "cancel", ROOM + "/alice")
    await say(bob, "still bob")
    seen = await alice.inbox.get(lambda s: body_of(s) == "still bob",
                                 "bob's message after the refused change")
    assert seen.xml.get("from") == ROOM + "/bob", describe(seen)


# -------------------------------------------------------- configuration --

async def test_disabled_service_is_not_served(natter_factory, net):
    server = accounts(natter_factory(**muc_host(enabled=False)), "alice")
    alice, = await online(net, server, "alice")
    assert SERVICE not in await items_of(alice, "localhost")
    error = await join_error(alice, ROOM + "/alice")
    assert stanza_error_condition(error.xml) == "remote-server-not-found", (
        "with muc disabled, %s is an unknown remote domain:\n%s"
        % (SERVICE, describe(error)))
    assert error.xml.get("from") == ROOM + "/alice", (
        "the bounce comes from the address the presence was sent to "
        "(RFC 6120 8.3.1):\n%s" % describe(error))


async def test_service_domain_is_configurable(natter_factory, net):
    server = accounts(natter_factory(**muc_host(domain="rooms.localhost")),
                      "alice")
    alice, = await online(net, server, "alice")
    listed = await items_of(alice, "localhost")
    assert "rooms.localhost" in listed and SERVICE not in listed, listed
    joined = await join(alice, "alice", room="room@rooms.localhost")
    assert 201 in status_codes(joined.self), describe(joined.self)


# ------------------------------------------------- slixmpp as shipped ---

async def test_slixmpp_muc_plugin_joins_and_chats(server, net):
    alice, bob = await online(net, server, "alice", "bob")
    for client in (alice, bob):
        client.register_plugin("xep_0045")
    room = JID(ROOM)
    await alice.plugin["xep_0045"].join_muc_wait(room, "alice",
                                                 timeout=IO_TIMEOUT)
    alice.send_message(mto=room, mbody="before bob", mtype="groupchat")
    await alice.inbox.get(lambda s: body_of(s) == "before bob",
                          "reflection of alice's message")
    _, _, occupants, history = await bob.plugin["xep_0045"].join_muc_wait(
        room, "bob", timeout=IO_TIMEOUT)
    # slixmpp counts its own presence among the occupants.
    nicks = sorted(p["from"].resource for p in occupants)
    assert nicks == ["alice", "bob"], occupants
    assert [m["body"] for m in history] == ["before bob"], (
        "slixmpp's join did not take alice's message as history: %s"
        % history)
    assert sorted(bob.plugin["xep_0045"].get_roster(room)) == [
        "alice", "bob"]

    got = alice.loop.create_future()
    alice.add_event_handler(
        "muc::%s::message" % ROOM,
        lambda m: got.done() or m["body"] != "hi" or got.set_result(m))
    bob.send_message(mto=room, mbody="hi", mtype="groupchat")
    message = await asyncio_wait(got, "bob's groupchat through slixmpp")
    assert message["from"] == JID(ROOM + "/bob"), message
    assert message["mucnick"] == "bob"


async def asyncio_wait(future, what):
    try:
        return await asyncio.wait_for(future, IO_TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError("no %s within %.0fs" % (what, IO_TIMEOUT)) \
            from None


async def test_nicks_compare_by_the_nickname_profile(server, net):
    """RFC 8266: "Alice" and "ALICE" are one nick, so another account gets
    conflict; a nick the profile changes (spaces trimmed and collapsed) is
    the enforced one, and the joiner is told with status 210."""
    alice, bob, carol = await online(net, server, "alice", "bob", "carol")
    await join(alice, "Alice")
    error = await join_error(bob, ROOM + "/ALICE")
    assert_error(error, "conflict", "cancel", ROOM + "/ALICE")
    carol.send_raw(join_stanza(ROOM, "  Carol   Jones "))
    own = await carol.inbox.get(
        lambda s: s.xml.get("from") == ROOM + "/Carol Jones" and 110 in status_codes(s),
        "carol's own presence under the enforced nick")
    assert 210 in status_codes(own), (
        "a nick the service changed comes with status 210 (XEP-0045 7.2.3):\n%s"
        % describe(own))

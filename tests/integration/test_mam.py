"""Message Archive Management (XEP-0313, urn:xmpp:mam:2) for accounts:
what is archived and what is not, stanza-ids on delivered messages
(XEP-0359), queries with the data form fields (with, start, end,
before-id, after-id, ids, XEP-0431 full text) and result set management
(XEP-0059), preferences (XEP-0441), multi-device catch-up together with
offline storage and carbons, retention (`natterctl mam expire`,
`mam.archive_expiry`, deleted accounts), durability across SIGKILL, and
hostile queries.  Chat-room archives are test_mam_rooms.py.

Queries are raw stanzas (mam_query below), not slixmpp's plugin, so that
what is asserted is the wire format; one test runs the plugin as a client
ships it.  A MAM query is answered on the querier's connection in order,
so a query sent after a message on the same connection sees it archived
(the server answers only after its writes are committed); the recipient's
archive is queried once the recipient has the message (its stanza-id is
the archive id, so the entry exists) or, for an offline recipient, after
the sender's round trip (offline storage is committed before the next
stanza is handled).  Absence is shown with a later marker message from
the same sender: one sender's messages are handled in order.
"""

import asyncio
import itertools
import math
import sqlite3
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from imlib import (
    NS_DELAY, NS_DISCO_INFO, NS_REGISTER, accounts, connect, error_condition,
    jid_of, msg, now_utc, parse_stamp, restart_on_same_data, roster_set,
    send_available)
from natterlib import IO_TIMEOUT, NS_CLIENT, q
from test_muc import ROOM, join, say
from test_muc_admin import configure

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DATA = "jabber:x:data"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FULLTEXT = "urn:xmpp:fulltext:0"
FULLTEXT_FIELD = "{%s}fulltext" % NS_FULLTEXT

ALICE, BOB, CAROL, DAVE = (jid_of(n) for n in ("alice", "bob", "carol",
                                                 "dave"))

# The query form's fields (XEP-0313 4.1, mam:2#extended; XEP-0431).
FORM_FIELDS = ["with", "start", "end", "before-id", "after-id", "ids",
               FULLTEXT_FIELD]


def mam_host(**mam):
    """Overrides for the one host `localhost` with a mam: block (as
    test_muc.muc_host does for muc:)."""
    return {"hosts": [{"domain": "localhost", "mam": mam}]}


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol", "dave")


# ------------------------------------------------------------- helpers ---

def describe(stanza):
    xml = stanza.xml if hasattr(stanza, "xml") else stanza
    text = ET.tostring(xml, encoding="unicode")
    return text if len(text) < 1500 else text[:1500] + "..."


def send(client, to, msg_id, body=None, mtype="chat", extra=""):
    """A message with the given id; body None means no <body/>."""
    client.send_raw("<message to='%s' id='%s'%s>%s%s</message>" % (
        to, msg_id, " type='%s'" % mtype if mtype else "",
        "<body>%s</body>" % body if body is not None else "", extra))


async def send_settled(client, to, ids, body="text of %s"):
    """One chat message per id, then a round trip: the server has handled
    them all; none bounced."""
    for msg_id in ids:
        send(client, to, msg_id, body % msg_id if "%s" in body else body)
    await client.barrier()
    bounced = client.inbox.find(msg(type="error"))
    assert not bounced, "messages bounced:\n%s" % client.inbox.describe(
        bounced)


def stanza_ids(xml, by):
    """The ids of the XEP-0359 <stanza-id/> elements with this `by`."""
    return [e.get("id") for e in xml.findall(q(NS_SID, "stanza-id"))
            if e.get("by") == by]


def the_stanza_id(stanza, by):
    """The one stanza-id by `by` on a delivered message."""
    found = stanza_ids(stanza.xml, by)
    assert len(found) == 1 and found[0], (
        "a message delivered to a local account carries exactly one "
        "<stanza-id xmlns='%s' by='%s' id='...'/> (XEP-0359), got %s:\n%s"
        % (NS_SID, by, found, describe(stanza)))
    return found[0]


class Item:
    """One archived message as a query returned it: <message><result
    queryid id><forwarded><delay/><message/></forwarded></result>."""

    def __init__(self, stanza):
        self.outer = stanza.xml
        result = self.outer.find(q(NS_MAM, "result"))
        self.id = result.get("id")
        self.queryid = result.get("queryid")
        forwarded = result.find(q(NS_FORWARD, "forwarded"))
        assert forwarded is not None, (
            "a result carries <forwarded xmlns='%s'/> (XEP-0313 4.2):\n%s"
            % (NS_FORWARD, describe(stanza)))
        self.delay = forwarded.find(q(NS_DELAY, "delay"))
        self.message = forwarded.find(q(NS_CLIENT, "message"))
        assert self.message is not None, (
            "<forwarded/> holds the archived <message/>:\n%s"
            % describe(stanza))

    @property
    def stamp(self):
        return None if self.delay is None else self.delay.get("stamp")

    @property
    def body(self):
        return self.message.findtext(q(NS_CLIENT, "body"))

    @property
    def msg_id(self):
        return self.message.get("id")

    def __repr__(self):
        return "<%s %s from=%s to=%s body=%r>" % (
            self.id, self.msg_id, self.message.get("from"),
            self.message.get("to"), self.body)


class Fin:
    """The <fin/> of a query's iq result and its RSM <set/>."""

    def __init__(self, iq):
        self.iq = iq
        self.xml = iq.xml.find(q(NS_MAM, "fin"))
        assert self.xml is not None, (
            "the iq result of a query holds <fin xmlns='%s'/> (XEP-0313 "
            "4.3):\n%s" % (NS_MAM, describe(iq)))
        self.complete = self.xml.get("complete") in ("true", "1")
        rsm = self.xml.find(q(NS_RSM, "set"))
        self.rsm = rsm
        self.first = None if rsm is None else rsm.findtext(q(NS_RSM, "first"))
        self.last = None if rsm is None else rsm.findtext(q(NS_RSM, "last"))
        count = None if rsm is None else rsm.findtext(q(NS_RSM, "count"))
        self.count = None if count is None else int(count)

    def __repr__(self):
        return "<fin complete=%s first=%s last=%s count=%s>" % (
            self.complete, self.first, self.last, self.count)


_query_ids = itertools.count(1)


def form_field(x, var, values, ftype=None):
    field = ET.SubElement(x, q(NS_DATA, "field"), var=var)
    if ftype:
        field.set("type", ftype)
    for value in values:
        ET.SubElement(field, q(NS_DATA, "value")).text = value


def stamp_of(value):
    """An XEP-0082 DateTime for a datetime (UTC, with microseconds when
    it has any); text is passed as it is."""
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc)
        if value.microsecond:
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def query_element(queryid, with_=None, start=None, end=None, before_id=None,
                  after_id=None, ids=None, fulltext=None, max_=None,
                  after=None, before=None, fields=()):
    """<query xmlns='urn:xmpp:mam:2' queryid=...> with a submitted form
    for the given fields and an RSM <set/> for max/after/before (before
    True is an empty <before/>: the last page).  fields: more (var,
    [values]) pairs, sent as they are."""
    query = ET.Element(q(NS_MAM, "query"))
    if queryid is not None:
        query.set("queryid", queryid)
    given = [(var, values) for var, values in (
        ("with", [with_] if with_ is not None else None),
        ("start", [stamp_of(start)] if start is not None else None),
        ("end", [stamp_of(end)] if end is not None else None),
        ("before-id", [before_id] if before_id is not None else None),
        ("after-id", [after_id] if after_id is not None else None),
        ("ids", list(ids) if ids is not None else None),
        (FULLTEXT_FIELD, [fulltext] if fulltext is not None else None),
    ) if values is not None] + list(fields)
    if given:
        x = ET.SubElement(query, q(NS_DATA, "x"), type="submit")
        form_field(x, "FORM_TYPE", [NS_MAM], "hidden")
        for var, values in given:
            form_field(x, var, values,
                       "list-multi" if var == "ids" else None)
    if max_ is not None or after is not None or before is not None:
        rsm = ET.SubElement(query, q(NS_RSM, "set"))
        if max_ is not None:
            ET.SubElement(rsm, q(NS_RSM, "max")).text = str(max_)
        if after is not None:
            ET.SubElement(rsm, q(NS_RSM, "after")).text = after
        if before is True:
            ET.SubElement(rsm, q(NS_RSM, "before"))
        elif before is not None:
            ET.SubElement(rsm, q(NS_RSM, "before")).text = before
    return query


async def mam_query(client, to=None, timeout=IO_TIMEOUT, **kwargs):
    """Queries an archive (own with to None, or the given JID) and returns
    (items, fin): the result messages for this queryid, in arrival order,
    and the <fin/>.  Raises IqError for an error reply.  kwargs are
    query_element's: with_, start, end, before_id, after_id, ids,
    fulltext, max_, after, before, fields."""
    queryid = "mamq-%d" % next(_query_ids)
    got = []
    name = "mam results " + queryid

    def collect(stanza):
        result = stanza.xml.find(q(NS_MAM, "result"))
        if result is not None and result.get("queryid") == queryid:
            got.append(stanza)
    client.register_handler(Callback(name, MatchXPath(
        "%s/%s" % (q(NS_CLIENT, "message"), q(NS_MAM, "result"))), collect))
    try:
        reply = await client.iq(to, query_element(queryid, **kwargs), "set",
                                timeout=timeout)
    finally:
        client.remove_handler(name)
    inbox = getattr(client, "inbox", None)
    if inbox is not None:   # results are not messages the tests wait for
        taken = set(map(id, got))
        inbox.take(lambda s: id(s) in taken)
    archive = JID(to).bare if to else client.boundjid.bare
    for stanza in got:
        assert stanza.xml.get("from") in (archive, None), (
            "results come from the archive's JID %s (XEP-0313 4.2):\n%s"
            % (archive, describe(stanza)))
    return [Item(s) for s in got], Fin(reply)


async def mam_error(client, conditions, to=None, **kwargs):
    """Sends the query, requires an error with one of the conditions;
    returns the error iq."""
    if isinstance(conditions, str):
        conditions = (conditions,)
    try:
        items, fin = await mam_query(client, to, **kwargs)
    except IqError as e:
        got = error_condition(e.iq)
        assert got in conditions, (
            "expected <%s/>, got <%s/>:\n%s"
            % ("/> or <".join(conditions), got, describe(e.iq)))
        return e.iq
    raise AssertionError("expected <%s/>, got a result with %d item(s), "
                         "%r" % ("/> or <".join(conditions), len(items), fin))


async def mam_all(client, to=None, page=50, **kwargs):
    """Every item of a query, paging forward with RSM <after/>; checks
    that pages chain (no item twice) and the last says complete."""
    items, after = [], None
    for _ in range(10000):
        got, fin = await mam_query(client, to, max_=page, after=after,
                                   **kwargs)
        items.extend(got)
        if fin.complete or not got:
            assert fin.complete, "an empty page must be the last: %r" % fin
            break
        assert fin.last == got[-1].id, (
            "<last/> names the page's last item: %r, %r" % (fin, got[-1]))
        after = fin.last
    ids = [i.id for i in items]
    assert len(ids) == len(set(ids)), "an item came twice while paging: %s" \
        % ids
    return items


def bodies(items):
    return [i.body for i in items]


def msg_ids(items):
    return [i.msg_id for i in items]


def id_order_key(archive_id):
    """Archive ids are opaque (XEP-0313); natter's are compared as numbers
    when they are numbers, else as text, to check they increase."""
    return (0, int(archive_id), "") if archive_id.isdigit() else (
        1, 0, archive_id)


def assert_increasing(items, what):
    keys = [id_order_key(i.id) for i in items]
    bad = [(a.id, b.id) for a, b, ka, kb in zip(items, items[1:], keys,
                                                 keys[1:]) if not ka < kb]
    assert not bad, "%s: archive ids do not strictly increase in "\
        "chronological order: %s" % (what, bad[:10])


def restart(natter_factory, server, kill=False):
    """Restarts natterd on the same data with the same configuration
    (hosts with their mam: block, limits)."""
    return restart_on_same_data(natter_factory, server, kill=kill, keep_config=True)


async def chat(net, server, *names):
    """Available sessions, one per name (resource 'r')."""
    return [await connect(net, server, name, available=True)
            for name in names]


async def delivered(client, msg_id):
    return await client.inbox.get(msg(id=msg_id), "message %s" % msg_id)


async def disco_features(client, to):
    result = await client.iq(to, "<query xmlns='%s'/>" % NS_DISCO_INFO)
    info = result.xml.find(q(NS_DISCO_INFO, "query"))
    return {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}


async def assert_served(net, server):
    await net.assert_served(server)


# ----------------------------------------------------------- discovery ---

@pytest.mark.parametrize("where", ["account", "domain"])
async def test_disco_lists_mam_and_stanza_ids(server, net, where):
    alice = await connect(net, server, "alice")
    features = await disco_features(alice,
                                    ALICE if where == "account" else
                                    "localhost")
    for feature in (NS_MAM, NS_SID):
        assert feature in features, (
            "disco#info on %s lacks %s (XEP-0313 7, XEP-0359 3); has %s"
            % (where, feature, sorted(features)))


@pytest.mark.natter_config(**mam_host(enabled=False))
async def test_disabled_mam_is_not_advertised_and_refused(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    for where in (ALICE, "localhost"):
        features = await disco_features(alice, where)
        assert NS_MAM not in features, (
            "with mam.enabled false, %s still advertises %s" % (where,
                                                                 NS_MAM))
    send(bob, ALICE, "off-1", "not kept")
    await delivered(alice, "off-1")
    await mam_error(alice, "service-unavailable")


async def test_query_form_lists_the_fields(server, net):
    alice = await connect(net, server, "alice")
    result = await alice.iq(None, "<query xmlns='%s'/>" % NS_MAM)
    form = result.xml.find("%s/%s" % (q(NS_MAM, "query"), q(NS_DATA, "x")))
    assert form is not None and form.get("type") == "form", (
        "an iq get of an empty query returns the search form (XEP-0313 "
        "4.1.1):\n%s" % describe(result))
    fields = {f.get("var"): f for f in form.findall(q(NS_DATA, "field"))}
    assert "FORM_TYPE" in fields and fields["FORM_TYPE"].findtext(
        q(NS_DATA, "value")) == NS_MAM, describe(result)
    missing = [v for v in FORM_FIELDS if v not in fields]
    assert not missing, "the form lacks %s:\n%s" % (missing,
                                                    describe(result))


# ----------------------------------------------------- what is archived --

async def test_chat_between_local_accounts_is_in_both_archives(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    before = now_utc()
    send(alice, BOB, "c1", "hello bob")
    got = await delivered(bob, "c1")
    sid = the_stanza_id(got, BOB)

    for who, archive in ((alice, ALICE), (bob, BOB)):
        items, fin = await mam_query(who)
        assert msg_ids(items) == ["c1"], (
            "%s's archive should hold exactly c1: %r" % (archive, items))
        item = items[0]
        assert item.outer.get("from") == archive, (
            "results come from the account's bare JID (XEP-0313 4.2):\n%s"
            % describe(item.outer))
        assert item.outer.get("to") in (who.boundjid.full, None), \
            describe(item.outer)
        assert item.id and item.queryid and item.queryid.startswith("mamq-")
        inner = item.message
        assert (inner.get("from"), bare_of(inner.get("to")), inner.get(
            "type"), item.body) == (ALICE + "/r", BOB, "chat", "hello bob"), (
            "the archived message is the original:\n%s"
            % describe(item.outer))
        assert item.stamp, "a result has <delay stamp=.../> (XEP-0313 4.2)"
        stamp = parse_stamp(item.stamp)
        assert before - timedelta(seconds=2) <= stamp <= now_utc() + \
            timedelta(seconds=2), "stamp %s is not when it was sent" % stamp
        assert fin.complete, "one item, one page: complete='true' %r" % fin
        assert (fin.first, fin.last) == (item.id, item.id), repr(fin)
        if fin.count is not None:
            assert fin.count == 1, repr(fin)
        if who is bob:
            assert item.id == sid, (
                "bob's archive id %s is the stanza-id %s he was given "
                "(XEP-0359, XEP-0313 3.1)" % (item.id, sid))


def bare_of(jid):
    return (jid or "").split("/", 1)[0]


async def test_query_to_own_bare_jid_is_the_same_as_without_to(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["t1", "t2"])
    without, _ = await mam_query(alice)
    with_to, _ = await mam_query(alice, to=ALICE)
    assert [(i.id, i.msg_id) for i in without] == \
        [(i.id, i.msg_id) for i in with_to] and msg_ids(without) == \
        ["t1", "t2"], (without, with_to)


@pytest.mark.parametrize("mtype", ["normal", None])
async def test_normal_and_untyped_messages_are_archived(server, net, mtype):
    alice, bob = await chat(net, server, "alice", "bob")
    send(alice, BOB, "n1", "a letter", mtype=mtype)
    await delivered(bob, "n1")
    for who in (alice, bob):
        items, _ = await mam_query(who)
        assert msg_ids(items) == ["n1"], "%s: %r" % (who.boundjid, items)


async def test_message_to_offline_account_is_archived_with_stanza_id(
        server, net):
    alice = await connect(net, server, "alice")
    await send_settled(alice, BOB, ["off1"])
    own, _ = await mam_query(alice)
    assert msg_ids(own) == ["off1"], own
    bob = await connect(net, server, "bob")
    # Filtered by contact: not a catch-up, which would make the offline
    # copy redundant (test_device_catches_up_from_mam_without_duplicates).
    items, _ = await mam_query(bob, with_=ALICE)
    assert msg_ids(items) == ["off1"], (
        "a message that went to offline storage is in the recipient's "
        "archive too: %r" % items)
    await send_available(bob)
    copy = await delivered(bob, "off1")
    assert copy.xml.find(q(NS_DELAY, "delay")) is not None, describe(copy)
    assert the_stanza_id(copy, BOB) == items[0].id, (
        "the offline copy carries bob's archive id as its stanza-id")


NOT_ARCHIVED = {
    "headline": dict(mtype="headline", body="news"),
    "error": dict(mtype="error", body="oops"),
    "groupchat": dict(mtype="groupchat", body="room talk"),
    "chat-state-only": dict(
        body=None, extra="<composing xmlns='http://jabber.org/protocol/"
        "chatstates'/>"),
    "no-store": dict(body="forget me",
                     extra="<no-store xmlns='%s'/>" % NS_HINTS),
    "no-permanent-store": dict(
        body="forget me later",
        extra="<no-permanent-store xmlns='%s'/>" % NS_HINTS),
}


@pytest.mark.parametrize("kind", sorted(NOT_ARCHIVED))
async def test_not_archived(server, net, kind):
    alice, bob = await chat(net, server, "alice", "bob")
    spec = dict(mtype="chat", body=None, extra="")
    spec.update(NOT_ARCHIVED[kind])
    send(alice, BOB + "/r", "x-" + kind, spec["body"], spec["mtype"],
         spec["extra"])
    send(alice, BOB + "/r", "marker", "archived marker")
    await delivered(bob, "marker")
    for who in (alice, bob):
        items, _ = await mam_query(who)
        assert msg_ids(items) == ["marker"], (
            "%s: a %s message must not be archived; the archive holds %r"
            % (who.boundjid.bare, kind, items))


async def test_delivered_message_has_one_stanza_id_by_the_recipient(
        server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    send(alice, BOB, "s1", "one")
    send(alice, BOB, "s2", "two")
    first = the_stanza_id(await delivered(bob, "s1"), BOB)
    second = the_stanza_id(await delivered(bob, "s2"), BOB)
    assert first != second, "two messages got one stanza-id %s" % first
    items, _ = await mam_query(bob)
    assert [(i.msg_id, i.id) for i in items] == [("s1", first),
                                                 ("s2", second)], items


async def test_spoofed_stanza_id_is_replaced(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    send(alice, BOB, "spoof", "trust me", extra=(
        "<stanza-id xmlns='%s' by='%s' id='forged-1'/>" % (NS_SID, BOB)))
    got = await delivered(bob, "spoof")
    sid = the_stanza_id(got, BOB)
    assert sid != "forged-1", (
        "the sender's stanza-id by %s reached bob; the server must strip it "
        "(XEP-0359 3):\n%s" % (BOB, describe(got)))
    items, _ = await mam_query(bob)
    assert [i.id for i in items] == [sid], (sid, items)


# ----------------------------------------------------------- filtering ---

async def test_with_bare_jid_matches_both_directions(server, net):
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    send(alice, BOB, "a-b", "to bob")
    await delivered(bob, "a-b")
    send(carol, ALICE, "c-a", "from carol")
    await delivered(alice, "c-a")
    send(bob, ALICE, "b-a", "from bob")
    await delivered(alice, "b-a")
    send(alice, CAROL, "a-c", "to carol")
    await delivered(carol, "a-c")
    items, fin = await mam_query(alice, with_=BOB)
    assert msg_ids(items) == ["a-b", "b-a"], (
        "with=%s gives the messages to and from bob, in order: %r"
        % (BOB, items))
    assert fin.complete
    items, _ = await mam_query(alice, with_=CAROL)
    assert msg_ids(items) == ["c-a", "a-c"], items


async def test_with_full_jid_matches_that_resource_only(server, net):
    alice, = await chat(net, server, "alice")
    one = await connect(net, server, "bob", "one", available=True)
    two = await connect(net, server, "bob", "two", available=True)
    send(one, ALICE, "from-one", "1")
    await delivered(alice, "from-one")
    send(two, ALICE, "from-two", "2")
    await delivered(alice, "from-two")
    send(alice, BOB + "/one", "to-one", "3")
    await delivered(one, "to-one")
    items, _ = await mam_query(alice, with_=BOB + "/one")
    assert msg_ids(items) == ["from-one", "to-one"], (
        "with a full JID only that resource's messages match (XEP-0313 "
        "4.1.1): %r" % items)
    items, _ = await mam_query(alice, with_=BOB)
    assert msg_ids(items) == ["from-one", "from-two", "to-one"], items


async def wait_past_second():
    """The wall clock's next whole second T, at least 50 ms away, once it
    is 50 ms past.  This waits for the clock, not for the server: stamps
    before and after T differ whatever resolution the archive keeps."""
    target = math.ceil(time.time() + 0.05)
    await asyncio.sleep(max(0.0, target + 0.05 - time.time()))
    return datetime.fromtimestamp(target, timezone.utc)


async def test_start_and_end_select_by_time(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["early1", "early2"])
    boundary = await wait_past_second()
    await send_settled(alice, BOB, ["late1", "late2"])

    items, _ = await mam_query(alice, start=boundary)
    assert msg_ids(items) == ["late1", "late2"], (
        "start=%s gives what was archived from then on: %r"
        % (stamp_of(boundary), items))
    just_before = boundary - timedelta(milliseconds=1)
    items, _ = await mam_query(alice, end=just_before)
    assert msg_ids(items) == ["early1", "early2"], (
        "end=%s gives what was archived until then: %r"
        % (stamp_of(just_before), items))
    future = now_utc() + timedelta(hours=1)
    items, fin = await mam_query(alice, start=future)
    assert items == [] and fin.complete, (items, fin)
    items, _ = await mam_query(alice, start=boundary - timedelta(hours=1),
                               end=future)
    assert msg_ids(items) == ["early1", "early2", "late1", "late2"], items


async def test_start_accepts_a_numeric_offset(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["z1"])
    # XEP-0082 allows a zone offset instead of Z: one hour ago at +02:00.
    earlier = (now_utc() - timedelta(hours=1)).astimezone(
        timezone(timedelta(hours=2)))
    items, _ = await mam_query(alice, start=earlier.strftime(
        "%Y-%m-%dT%H:%M:%S+02:00"))
    assert msg_ids(items) == ["z1"], items


async def test_after_id_and_before_id(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["m%d" % n for n in range(6)])
    every, _ = await mam_query(alice)
    ids = [i.id for i in every]
    assert msg_ids(every) == ["m%d" % n for n in range(6)], every
    items, _ = await mam_query(alice, after_id=ids[1])
    assert msg_ids(items) == ["m2", "m3", "m4", "m5"], (
        "after-id excludes the named message and gives those after it "
        "(XEP-0313 4.1.1.1): %r" % items)
    items, _ = await mam_query(alice, before_id=ids[3])
    assert msg_ids(items) == ["m0", "m1", "m2"], items
    items, _ = await mam_query(alice, after_id=ids[0], before_id=ids[4])
    assert msg_ids(items) == ["m1", "m2", "m3"], items


async def test_ids_field_returns_exactly_those(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["i%d" % n for n in range(5)])
    every, _ = await mam_query(alice)
    wanted = [every[3].id, every[0].id]
    items, fin = await mam_query(alice, ids=wanted)
    assert msg_ids(items) == ["i0", "i3"], (
        "ids gives those messages, in archive order: %r" % items)
    assert fin.complete


async def test_fulltext_requires_every_word(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    texts = {"f1": "the quick brown fox", "f2": "a Quick red fox",
             "f3": "lazy dog", "f4": "quick thinking"}
    for msg_id, body in texts.items():
        send(alice, BOB, msg_id, body)
    await alice.barrier()
    for words, expected in (("quick fox", ["f1", "f2"]),
                            ("brown fox", ["f1"]),
                            ("dog", ["f3"]),
                            ("cat", []),
                            ("fox dog", [])):
        items, fin = await mam_query(alice, fulltext=words)
        assert msg_ids(items) == expected, (
            "fulltext %r matches messages with every word (XEP-0431): got "
            "%s, expected %s" % (words, msg_ids(items), expected))
        assert fin.complete


async def test_fulltext_combines_with_with(server, net):
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    send(alice, BOB, "to-bob", "meeting tomorrow")
    send(alice, CAROL, "to-carol", "meeting today")
    await alice.barrier()
    items, _ = await mam_query(alice, with_=CAROL, fulltext="meeting")
    assert msg_ids(items) == ["to-carol"], items


# ------------------------------------------------- result set (XEP-0059) --

async def test_rsm_pages_forward(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    names = ["p%d" % n for n in range(7)]
    await send_settled(alice, BOB, names)
    pages, after = [], None
    for _ in range(3):
        items, fin = await mam_query(alice, max_=3, after=after)
        pages.append((msg_ids(items), fin))
        after = fin.last
    assert [p[0] for p in pages] == [names[0:3], names[3:6], names[6:]], (
        "max=3 with <after/> pages forward: %s" % [p[0] for p in pages])
    assert [p[1].complete for p in pages] == [False, False, True], (
        "only the last page says complete='true' (XEP-0313 4.3): %s"
        % [p[1] for p in pages])
    for _, fin in pages:
        if fin.count is not None:
            assert fin.count == 7, repr(fin)


async def test_rsm_first_and_last_name_the_page(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["r%d" % n for n in range(4)])
    items, fin = await mam_query(alice, max_=2)
    assert (fin.first, fin.last) == (items[0].id, items[-1].id), (items, fin)
    assert fin.count == 4, (
        "<count/> is the size of the whole result set (XEP-0059 2.6): %r"
        % fin)


async def test_rsm_pages_backward_from_the_end(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    names = ["b%d" % n for n in range(7)]
    await send_settled(alice, BOB, names)
    items, fin = await mam_query(alice, max_=3, before=True)
    assert msg_ids(items) == names[4:], (
        "<before/> with max=3 gives the last three, oldest first (XEP-0313 "
        "4.3.1): %r" % items)
    assert not fin.complete, repr(fin)
    items, fin = await mam_query(alice, max_=3, before=fin.first)
    assert msg_ids(items) == names[1:4], items
    assert not fin.complete, repr(fin)
    items, fin = await mam_query(alice, max_=3, before=fin.first)
    assert msg_ids(items) == names[:1], items
    assert fin.complete, (
        "the page that reaches the start, paging backward, is complete: %r"
        % fin)


@pytest.mark.parametrize("direction", ["after", "before"])
async def test_rsm_unknown_id_is_item_not_found(server, net, direction):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["u1"])
    await mam_error(alice, "item-not-found", max_=5,
                    **{direction: "no-such-archive-id"})


async def test_empty_result(server, net):
    alice = await connect(net, server, "alice")
    items, fin = await mam_query(alice)
    assert items == [] and fin.complete, (items, fin)
    assert (fin.first, fin.last) == (None, None), (
        "an empty result set has no <first/> or <last/> (XEP-0059 2.7): %r"
        % fin)
    if fin.count is not None:
        assert fin.count == 0, repr(fin)


@pytest.mark.natter_config(**mam_host(max_page=5))
async def test_max_is_capped_by_max_page(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["cap%d" % n for n in range(8)])
    items, fin = await mam_query(alice, max_=50)
    assert len(items) == 5 and not fin.complete, (
        "mam.max_page 5 caps max=50 at five: got %d, %r" % (len(items), fin))
    items, fin = await mam_query(alice)
    assert len(items) == 5 and not fin.complete, (
        "a query without max gets at most max_page: got %d, %r"
        % (len(items), fin))
    rest, fin = await mam_query(alice, after=fin.last, max_=50)
    assert msg_ids(rest) == ["cap5", "cap6", "cap7"] and fin.complete, rest


async def test_huge_max_is_capped_at_the_default_page(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["h%d" % n for n in range(105)])
    items, fin = await mam_query(alice, max_=100000)
    assert len(items) == 100 and not fin.complete, (
        "max=100000 is capped by max_page (100): got %d, %r"
        % (len(items), fin))
    assert msg_ids(items) == ["h%d" % n for n in range(100)]


# -------------------------------------------------------------- errors ---

async def test_another_users_archive_is_forbidden(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["private"])
    error = await mam_error(bob, "forbidden", to=ALICE)
    assert "private" not in ET.tostring(error.xml, "unicode")


@pytest.mark.parametrize("field,value", [
    ("start", "yesterday"),
    ("end", "2024-13-45T99:00:00Z"),
    ("start", "2024-01-01T00:00:00+29:59"),  # XEP-0082: the offset's hour is 00-23
    ("end", "2024-01-01T00:00:00-24:00"),
    ("with", "@@not a jid@@"),
    ("with", "alice@"),
])
async def test_malformed_field_is_bad_request(server, net, field, value):
    alice = await connect(net, server, "alice")
    await mam_error(alice, "bad-request", fields=[(field, [value])])
    await assert_served(net, server)


@pytest.mark.parametrize("value", ["abc", "", "5x", "-1"])
async def test_rsm_max_that_is_not_a_count_is_bad_request(server, net, value):
    """XEP-0059: <max/> is a non-negative integer; anything else used to
    read as 0 (an empty page)."""
    alice = await connect(net, server, "alice")
    await mam_error(alice, "bad-request", max_=value)
    await assert_served(net, server)


# --------------------------------------------------- preferences (0441) --

def prefs_element(default=None, always=(), never=()):
    prefs = ET.Element(q(NS_MAM, "prefs"))
    if default is not None:
        prefs.set("default", default)
    for name, jids in (("always", always), ("never", never)):
        node = ET.SubElement(prefs, q(NS_MAM, name))
        for jid in jids:
            ET.SubElement(node, q(NS_MAM, "jid")).text = jid
    return prefs


def parse_prefs(iq):
    prefs = iq.xml.find(q(NS_MAM, "prefs"))
    assert prefs is not None, "expected <prefs xmlns='%s'/>:\n%s" % (
        NS_MAM, describe(iq))

    def jids(name):
        node = prefs.find(q(NS_MAM, name))
        return [] if node is None else sorted(
            j.text for j in node.findall(q(NS_MAM, "jid")))
    return prefs.get("default"), jids("always"), jids("never")


async def get_prefs(client):
    return parse_prefs(await client.iq(None, ET.Element(q(NS_MAM, "prefs"))))


async def set_prefs(client, default, always=(), never=()):
    return parse_prefs(await client.iq(
        None, prefs_element(default, always, never), "set"))


@pytest.mark.parametrize("default", ["always", "never", "roster"])
async def test_prefs_default_is_the_hosts(natter_factory, net, default):
    server = accounts(natter_factory(**mam_host(default=default)), "alice")
    alice = await connect(net, server, "alice")
    assert await get_prefs(alice) == (default, [], []), (
        "an account that set no preferences has the host's mam.default")


async def test_prefs_default_is_always_without_config(server, net):
    alice = await connect(net, server, "alice")
    assert (await get_prefs(alice))[0] == "always"


async def test_prefs_set_returns_and_stores_them(server, net):
    alice = await connect(net, server, "alice")
    stored = await set_prefs(alice, "roster", always=[CAROL], never=[DAVE])
    assert stored == ("roster", [CAROL], [DAVE]), (
        "a prefs set answers the stored preferences (XEP-0441 3): %s"
        % (stored,))
    assert await get_prefs(alice) == ("roster", [CAROL], [DAVE])
    other = await connect(net, server, "alice", "other")
    assert await get_prefs(other) == ("roster", [CAROL], [DAVE])


async def incoming(recipient, *pairs):
    """Each (sender session, msg id) sends a chat message to recipient's
    full JID; returns once recipient has them all."""
    for sender, msg_id in pairs:
        send(sender, recipient.boundjid.full, msg_id, "text " + msg_id)
    for _, msg_id in pairs:
        await delivered(recipient, msg_id)


async def test_prefs_never_keeps_only_always(server, net):
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    await set_prefs(alice, "never", always=[CAROL])
    await incoming(alice, (bob, "from-bob"), (carol, "from-carol"))
    send(alice, BOB, "to-bob", "out")
    await delivered(bob, "to-bob")
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["from-carol"], (
        "default never keeps nothing but the <always/> contacts: %r" % items)
    items, _ = await mam_query(bob)
    assert msg_ids(items) == ["from-bob", "to-bob"], (
        "alice's preferences do not change bob's archive: %r" % items)


async def test_prefs_roster_keeps_roster_contacts_only(server, net):
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    await roster_set(alice, BOB, name="Bob")
    await set_prefs(alice, "roster")
    await incoming(alice, (bob, "from-bob"), (carol, "from-carol"))
    send(alice, CAROL, "to-carol", "out")
    await delivered(carol, "to-carol")
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["from-bob"], (
        "default roster keeps only messages with roster contacts: %r" % items)


async def test_prefs_never_list_wins_over_default(server, net):
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    await set_prefs(alice, "always", never=[BOB])
    await incoming(alice, (bob, "from-bob"), (carol, "from-carol"))
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["from-carol"], items


@pytest.mark.parametrize("default", ["never", "roster"])
async def test_host_default_applies_without_prefs(natter_factory, net,
                                                  default):
    server = accounts(natter_factory(**mam_host(default=default)),
                      "alice", "bob", "carol")
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    await roster_set(alice, BOB)
    await incoming(alice, (bob, "from-bob"), (carol, "from-carol"))
    items, _ = await mam_query(alice)
    expected = [] if default == "never" else ["from-bob"]
    assert msg_ids(items) == expected, (
        "mam.default %s: %r, expected %s" % (default, items, expected))


async def test_prefs_survive_restart(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob", "carol")
    alice = await connect(net, server, "alice")
    await set_prefs(alice, "always", never=[BOB])
    server = restart(natter_factory, server)
    alice, bob, carol = await chat(net, server, "alice", "bob", "carol")
    assert await get_prefs(alice) == ("always", [], [BOB])
    await incoming(alice, (bob, "from-bob"), (carol, "from-carol"))
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["from-carol"], items


# ---------------------------------------- devices: carbons, offline, MAM --

async def go_unavailable(client):
    """Unavailable presence, processed: the session gets nothing to the
    bare JID from now on."""
    client.send_raw("<presence type='unavailable'/>")
    await client.barrier()


def carbon_of(msg_id):
    """Matches a received carbon (XEP-0280) of message msg_id."""
    def match(stanza):
        return stanza.xml.tag == q(NS_CLIENT, "message") and carbon_inner(
            stanza) is not None and carbon_inner(stanza).get("id") == msg_id
    return match


def carbon_inner(stanza):
    return stanza.xml.find("%s/%s/%s" % (q(NS_CARBONS, "received"),
                                         q(NS_FORWARD, "forwarded"),
                                         q(NS_CLIENT, "message")))


@pytest.mark.parametrize("how", ["after-id", "rsm-after"])
async def test_device_catches_up_from_mam_without_duplicates(
        server, net, how):
    """Alice has a phone and a desk, both with carbons.  The desk gets m0
    itself and c0, sent to the phone, as a carbon whose message carries
    the same stanza-id as the phone's.  The desk leaves; bob writes while
    the phone is online (the desk misses them live) and while both are
    away (offline storage).  The desk comes back, asks MAM for everything
    after the last stanza-id it saw (the carbon's), before its initial
    presence, then goes available: it has every missed message exactly
    once, m0 and c0 not again, and what bob wrote after the query still
    comes by offline delivery."""
    phone = await connect(net, server, "alice", "phone", available=True)
    desk = await connect(net, server, "alice", "desk", available=True)
    bob, = await chat(net, server, "bob")
    for device in (phone, desk):
        await device.iq(None, "<enable xmlns='%s'/>" % NS_CARBONS, "set")
    send(bob, ALICE + "/desk", "m0", "seen by the desk")
    await delivered(desk, "m0")
    send(bob, ALICE + "/phone", "c0", "to the phone, carbon to the desk")
    on_phone = the_stanza_id(await delivered(phone, "c0"), ALICE)
    carbon = await desk.inbox.get(carbon_of("c0"), "the carbon of c0")
    assert carbon.xml.get("from") == ALICE, describe(carbon)
    last_seen = stanza_ids(carbon_inner(carbon), ALICE)
    assert last_seen == [on_phone], (
        "the carbon's message carries the archived message's one stanza-id "
        "by %s, %s as the phone got it (docs/archive.md):\n%s"
        % (ALICE, on_phone, describe(carbon)))
    last_seen = last_seen[0]
    await go_unavailable(desk)
    await desk.close()

    send(bob, ALICE, "m1", "phone only 1")
    send(bob, ALICE, "m2", "phone only 2")
    for msg_id in ("m1", "m2"):
        await delivered(phone, msg_id)
    await go_unavailable(phone)
    await phone.close()
    await send_settled(bob, ALICE, ["m3", "m4"])

    desk = await connect(net, server, "alice", "desk")
    if how == "after-id":
        items, fin = await mam_query(desk, after_id=last_seen)
    else:
        items, fin = await mam_query(desk, after=last_seen, max_=50)
    assert msg_ids(items) == ["m1", "m2", "m3", "m4"], (
        "MAM after the desk's last stanza-id %s (c0's carbon) gives what it "
        "missed, without m0 and c0 that it had: %r" % (last_seen, items))
    assert fin.complete, repr(fin)

    await send_settled(bob, ALICE, ["m5"])
    await send_available(desk)
    await delivered(desk, "m5")
    # Offline delivery is oldest first: m3 and m4, had they been pushed
    # again, would have come before m5.
    ids = ("m0", "c0", "m1", "m2", "m3", "m4", "m5")
    live = [s.xml.get("id") for s in desk.inbox.seen
            if s.xml.tag == q(NS_CLIENT, "message")
            and s.xml.find(q(NS_MAM, "result")) is None
            and s.xml.get("id") in ids]
    live += [carbon_inner(s).get("id") for s in desk.inbox.seen
             if carbon_inner(s) is not None]
    assert live == ["m5"], (
        "after a MAM catch-up the server pushed again what the desk had or "
        "the query already gave (or lost m5): live messages and carbons %s"
        % live)
    missed = msg_ids(items) + live
    assert sorted(missed) == ["m1", "m2", "m3", "m4", "m5"], missed


async def test_device_without_mam_gets_offline_messages(server, net):
    phone = await connect(net, server, "alice", "phone", available=True)
    bob, = await chat(net, server, "bob")
    send(bob, ALICE, "p1", "live")
    await delivered(phone, "p1")
    await go_unavailable(phone)
    await phone.close()
    await send_settled(bob, ALICE, ["o1", "o2"])
    desk = await connect(net, server, "alice", "desk", available=True)
    got = [await delivered(desk, "o1"), await delivered(desk, "o2")]
    sids = [the_stanza_id(s, ALICE) for s in got]
    assert not desk.inbox.find(msg(id="p1")), (
        "a message delivered live was pushed again offline")
    items, _ = await mam_query(desk)
    assert [(i.msg_id, i.id) for i in items][1:] == list(zip(
        ["o1", "o2"], sids)) and msg_ids(items)[0] == "p1", items


# ------------------------------------------------------------ retention ---

async def test_natterctl_mam_expire(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["e1", "e2"])
    await delivered(bob, "e2")
    server.ctl("mam", "expire", "--before", "2000-01-01T00:00:00Z",
               check=True)
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["e1", "e2"], (
        "expire --before 2000 removed newer messages: %r" % items)
    server.ctl("mam", "expire", "--before", "2100-01-01T00:00:00Z",
               check=True)
    for who in (alice, bob):
        items, fin = await mam_query(who)
        assert items == [] and fin.complete, (
            "%s: expire --before 2100 leaves an empty archive: %r"
            % (who.boundjid.bare, items))


async def test_natterctl_sees_what_natterd_holds(server, net):
    """A commit keeps most archive entries in natterd's log before they
    become blocks (docs/archive.md): natterctl, run meanwhile, deletes them
    too, and natterd does not write them back later."""
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["h1"])
    await delivered(bob, "h1")
    # Answered once committed (the storage thread runs jobs in order),
    # so h1's archive entries are committed; no archive is read.
    await alice.iq(None, "<query xmlns='jabber:iq:private'><note xmlns="
                   "'urn:example:held'>x</note></query>", "set")
    out = server.ctl("mam", "expire", "--before", "2100-01-01T00:00:00Z",
                     check=True).stdout
    assert "2 archived message(s) deleted" in out, (
        "natterctl deletes the sender's and the recipient's entry of h1, "
        "committed and not read since: %r" % out)
    for who in (alice, bob):
        items, fin = await mam_query(who)
        assert items == [] and fin.complete, (
            "%s: what natterctl deleted stays deleted: %r"
            % (who.boundjid.bare, items))


def _varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7f) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


LINK, TWIN, COPY = 4, 8, 16  # an entry's flags that add a link field


def _block_entries(data):
    """The entries of an archive block (storage_sqlite.c, "archive
    blocks"): [id, flags, with, link, resource, body, value]."""
    assert data[0] == 1, "block format %d" % data[0]
    pos, entries = 1, []
    while pos < len(data):
        eid = int.from_bytes(data[pos:pos + 8], "little", signed=True)
        flags = data[pos + 8]
        with_ = int.from_bytes(data[pos + 9:pos + 17], "little", signed=True)
        pos += 17
        link = 0
        if flags & (LINK | TWIN | COPY):
            link = int.from_bytes(data[pos:pos + 8], "little", signed=True)
            pos += 8
        fields = []
        for _ in range(3):
            n, pos = _varint(data, pos)
            fields.append(bytes(data[pos:pos + n]))
            pos += n
        entries.append([eid, flags, with_, link] + fields)
    return entries


def _block_bytes(entries):
    out = bytearray([1])
    for eid, flags, with_, link, *fields in entries:
        out += eid.to_bytes(8, "little", signed=True) + bytes([flags])
        out += with_.to_bytes(8, "little", signed=True)
        if flags & (LINK | TWIN | COPY):
            out += link.to_bytes(8, "little", signed=True)
        for f in fields:
            n = len(f)
            while True:
                out.append((n & 0x7f) | (0x80 if n > 0x7f else 0))
                n >>= 7
                if not n:
                    break
            out += f
    return bytes(out)


def age_archive(server, before_id, days):
    """Makes every archive entry below before_id (all accounts' and
    rooms') `days` older, as if archived then, in natterd's database
    while natterd is stopped: archive ids are the time of archiving
    (docs/archive.md), so the entry's id in its block, the links between
    the two entries of a local message and the full-text rows move
    together.  What the journal tests do with a segment file's mtime."""
    shift = days * 86400 * 1000000
    before_id = int(before_id)
    aged = 0
    db = sqlite3.connect(Path(server.config["data_dir"]) / "natter.db")
    try:
        with db:
            # Where each owner's full-text index reaches (owner 0: all):
            # an archive's words are indexed at its first search.
            upto = dict(db.execute("SELECT owner, upto FROM archive_text_upto"))

            def covered(owner, eid):
                return eid <= max(upto.get(0, 0), upto.get(owner, 0))

            # Every block: a link or a full-text row below before_id may
            # belong to an entry above it.
            blocks = db.execute("SELECT id, owner, data FROM archive_block").fetchall()
            for rowid, owner, data in blocks:
                entries = _block_entries(data)
                for e in entries:
                    # The words of a contentless full-text row, under the
                    # entry's id (a COPY: under its link); a LINK has none.
                    # Every entry's words are indexed from here on (the
                    # index's reach moves to the top below), under the
                    # aged id.
                    text_id = e[3] if e[1] & COPY else e[0]
                    if e[1] & 2 and not e[1] & LINK:
                        body = e[5].decode()
                        if covered(owner, e[0]) or (e[1] & TWIN and covered(e[2], e[3])):
                            db.execute("INSERT INTO archive_text (archive_text, rowid, body)"
                                       " VALUES ('delete', ?, ?)", (text_id, body))
                        new_id = text_id - shift if text_id < before_id else text_id
                        db.execute("INSERT INTO archive_text (rowid, body) VALUES (?, ?)",
                                   (new_id, body))
                    if e[3] and e[3] < before_id:
                        e[3] -= shift
                    if e[0] < before_id:
                        e[0] -= shift
                        aged += 1
                db.execute("UPDATE archive_block SET first_id = ?, last_id = ?, data = ?"
                           " WHERE id = ?", (entries[0][0], entries[-1][0],
                                             _block_bytes(entries), rowid))
            db.execute("DELETE FROM archive_text_upto")
            db.execute("INSERT INTO archive_text_upto (owner, upto)"
                       " SELECT 0, coalesce(max(last_id), 0) FROM archive_block")
    finally:
        db.close()
    return aged


@pytest.mark.natter_config(**mam_host(archive_expiry=2))
async def test_archive_expiry_deletes_older_messages(natter_factory, server,
                                                     net):
    """With archive_expiry 2 (days), natterd deletes at its start (and
    hourly) what was archived three days ago, in accounts' archives and
    rooms' alike, and keeps what is newer: a query after the expiry ran
    has only the recent messages."""
    alice, bob = await chat(net, server, "alice", "bob")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    send(alice, BOB, "old-out", "old to bob")
    await delivered(bob, "old-out")
    send(bob, ALICE, "old-in", "old from bob")
    await delivered(alice, "old-in")
    await say(alice, "old in the room", msg_id="old-room")
    send(alice, BOB, "new-out", "recent to bob")
    await delivered(bob, "new-out")
    await say(alice, "recent in the room", msg_id="new-room")
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["old-out", "old-in", "new-out"], items
    problems = server.stop()
    assert not problems, "natterd did not stop cleanly: %s" % problems
    # alice's entry of new-out is the first written after the old ones.
    aged = age_archive(server, items[-1].id, days=3)
    assert aged == 5, "alice's, bob's and the room's old entries: %d" % aged

    server = natter_factory(**{k: v for k, v in server.config.items()
                               if k != "listeners"})
    await server.await_log("mam: 5 archived message(s) of localhost expired")
    alice, bob = await chat(net, server, "alice", "bob")
    for who in (alice, bob):
        items, fin = await mam_query(who)
        assert msg_ids(items) == ["new-out"] and fin.complete, (
            "%s: archive_expiry 2 deletes the messages archived three days "
            "ago and keeps the recent one: %r" % (who.boundjid.bare, items))
    items, fin = await mam_query(alice, to=ROOM)
    assert msg_ids(items) == ["new-room"] and fin.complete, (
        "the room's archive expires too: %r" % items)
    items, _ = await mam_query(bob, fulltext="old")
    assert items == [], "the expired text is not found either: %r" % items


def fill_archive(server, local, n, needle_at):
    """Writes n entries (ids 1 to n, long before anything natterd
    archived) into local@localhost's archive in natterd's database while
    natterd is stopped, as blocks of 256 like natterd's, each a copy of
    the archive's newest entry (an outgoing message with a body, whose
    id and words are "seed"); the entry needle_at says "needle"
    instead."""
    db = sqlite3.connect(Path(server.config["data_dir"]) / "natter.db")
    try:
        with db:
            owner, = db.execute("SELECT id FROM archive_jid WHERE domain = 'localhost'"
                                " AND local = ?", (local,)).fetchone()
            data, = db.execute("SELECT data FROM archive_block WHERE owner = ?"
                               " ORDER BY last_id DESC LIMIT 1", (owner,)).fetchone()
            seed = _block_entries(data)[-1]
            assert seed[1] & 2 and b"seed" in seed[6], seed
            for first in range(1, n + 1, 256):
                entries = []
                for eid in range(first, min(first + 256, n + 1)):
                    e = [eid, seed[1] & ~(LINK | TWIN | COPY), seed[2], 0] + seed[4:]
                    if eid == needle_at:
                        e[5] = e[5].replace(b"seed", b"needle")
                        e[6] = e[6].replace(b"seed", b"needle")
                    entries.append(e)
                db.execute("INSERT INTO archive_block (owner, first_id, last_id, n, data)"
                           " VALUES (?, ?, ?, ?, ?)", (owner, entries[0][0], entries[-1][0],
                                                       len(entries), _block_bytes(entries)))
    finally:
        db.close()


async def big_archive(net, server):
    """alice sends bob "seed" ("seed words"), both archive it, natterd
    stops, and alice's archive gets 100,300 copies written beside it
    (fill_archive, "needle" at 100,200)."""
    alice, bob = await chat(net, server, "alice", "bob")
    send(alice, BOB, "seed", "seed words")
    await delivered(bob, "seed")
    for who in (alice, bob):
        items, _ = await mam_query(who)
        assert msg_ids(items) == ["seed"], items
    problems = server.stop()
    assert not problems, "natterd did not stop cleanly: %s" % problems
    fill_archive(server, "alice", 100300, needle_at=100200)


async def test_first_search_of_a_big_archive_is_done_in_parts(natter_factory, server,
                                                              net):
    """An archive's words are indexed at its first search, at most
    100,000 messages per query (docs/archive.md): the first search of an
    archive of 100,300 messages is answered with resource-constraint, type
    wait, and the next one, which indexes the rest, finds the one message
    with the word."""
    await big_archive(net, server)

    server = natter_factory(**{k: v for k, v in server.config.items()
                               if k != "listeners"})
    alice, = await chat(net, server, "alice")
    with pytest.raises(IqError) as e:
        await mam_query(alice, fulltext="needle", timeout=60)
    assert error_condition(e.value.iq) == "resource-constraint", e.value.iq
    assert e.value.iq["error"]["type"] == "wait", e.value.iq
    items, fin = await mam_query(alice, fulltext="needle", timeout=60)
    assert msg_ids(items) == ["needle"] and fin.complete, items
    items, fin = await mam_query(alice, fulltext="seed words", max_=2, before=True)
    assert msg_ids(items) == ["seed", "seed"] and not fin.complete, items


async def test_natterctl_mam_index_indexes_ahead(natter_factory, server, net):
    """`natterctl mam index` indexes the words no search has indexed yet,
    of every archive (docs/archive.md): after it, the first search of an
    archive of 100,300 messages is answered at once, and a second run
    finds nothing left to do."""
    await big_archive(net, server)
    out = server.ctl("mam", "index", check=True).stdout
    # alice's 100,300 and the message between the two, indexed once.
    assert out.strip() == "words of 100301 archived message(s) indexed", out
    out = server.ctl("mam", "index", "--user", ALICE, check=True).stdout
    assert out.strip() == "words of 0 archived message(s) indexed", out

    server = natter_factory(**{k: v for k, v in server.config.items()
                               if k != "listeners"})
    alice, bob = await chat(net, server, "alice", "bob")
    items, fin = await mam_query(alice, fulltext="needle")
    assert msg_ids(items) == ["needle"] and fin.complete, items
    items, _ = await mam_query(bob, fulltext="seed")
    assert msg_ids(items) == ["seed"], items


async def test_natterctl_user_del_removes_the_archive(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["d1"])
    await delivered(bob, "d1")
    await bob.close()
    server.ctl("user", "del", BOB, check=True)
    server.add_user(BOB, "bob-secret")
    bob = await connect(net, server, "bob")
    items, fin = await mam_query(bob)
    assert items == [] and fin.complete, (
        "a recreated account starts with an empty archive: %r" % items)
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["d1"], (
        "deleting bob leaves alice's own archive alone: %r" % items)


@pytest.mark.natter_config(allow_registration=True, registration_interval=0)
async def test_inband_removal_removes_the_archive(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["ib1"])
    await delivered(bob, "ib1")
    try:
        await bob.iq("localhost", "<query xmlns='%s'><remove/></query>"
                     % NS_REGISTER, "set")
    except AssertionError:
        pass    # XEP-0077 3.2: the stream may close before the result
    await bob.wait_closed()
    server.add_user(BOB, "bob-secret")
    bob = await connect(net, server, "bob")
    items, _ = await mam_query(bob)
    assert items == [], "a recreated account starts with an empty archive"


# ----------------------------------------------------------- durability ---

async def test_archive_survives_restart(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob")
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["before1", "before2"])
    await delivered(bob, "before2")
    old, _ = await mam_query(alice)
    server = restart(natter_factory, server)
    alice, bob = await chat(net, server, "alice", "bob")
    items, _ = await mam_query(alice)
    assert [(i.id, i.msg_id, i.body, i.stamp) for i in items] == \
        [(i.id, i.msg_id, i.body, i.stamp) for i in old], (
        "the archive after the restart differs:\n%r\n%r" % (old, items))
    send(alice, BOB, "after1", "new")
    await delivered(bob, "after1")
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["before1", "before2", "after1"], items
    assert_increasing(items, "alice after a restart")


async def test_200_messages_are_archived_before_fin_and_survive_kill(
        natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob")
    alice = await connect(net, server, "alice")
    names = ["d%03d" % n for n in range(200)]
    for name in names:
        send(alice, BOB, name, "durable " + name)
    # No round trip first: the query is answered once the 200 are written.
    items, fin = await mam_query(alice, max_=1, before=True)
    assert fin.count == 200, (
        "the fin after 200 sends counts all 200: %r" % fin)
    assert msg_ids(items) == ["d199"], items
    assert not alice.inbox.find(msg(type="error")), alice.inbox.describe()

    server = restart(natter_factory, server, kill=True)
    bob = await connect(net, server, "bob", available=True)
    for name in names:
        await delivered(bob, name)
    dup = [s.xml.get("id") for s in bob.inbox.seen
           if s.xml.get("id") in set(names)]
    assert len(dup) == 200, "offline messages came twice: %d" % len(dup)
    alice = await connect(net, server, "alice")
    items = await mam_all(alice, page=100)
    assert msg_ids(items) == names, (
        "alice's archive after SIGKILL: %d items, %d distinct"
        % (len(items), len(set(msg_ids(items)))))
    assert_increasing(items, "alice after SIGKILL")
    items = await mam_all(bob, page=100)
    assert msg_ids(items) == names, "bob's archive: %d items" % len(items)


SENDERS = ("carol", "dave", "erin", "frank")


@pytest.mark.natter_config(limits={"max_offline_messages": 1000000,
                                   "max_offline_size": 1073741824})
async def test_kill_during_concurrent_sends_keeps_archive_consistent(
        natter_factory, server, net):
    accounts(server, *[n for n in SENDERS if jid_of(n) not in (CAROL, DAVE)])
    confirmed = {name: set() for name in SENDERS}
    enough = asyncio.Event()
    sessions = {name: await connect(net, server, name) for name in SENDERS}

    async def push(name):
        client = sessions[name]
        n, last = 0, None
        while True:
            for _ in range(10):
                send(client, BOB, "%s-%d" % (name, n), "burst %d" % n)
                n += 1
            items, fin = await mam_query(client, after_id=last, max_=100)
            confirmed[name].update(msg_ids(items))
            if items:
                last = items[-1].id
            if all(len(c) >= 50 for c in confirmed.values()):
                enough.set()

    tasks = [asyncio.ensure_future(push(name)) for name in SENDERS]
    waiter = asyncio.ensure_future(enough.wait())
    done, _ = await asyncio.wait(tasks + [waiter], timeout=60,
                                 return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        for task in tasks:
            task.cancel()
        failed = [t for t in done if t in tasks]
        if failed:
            failed[0].result()      # a sender's query failed: raise it
        raise AssertionError("senders did not get 50 messages each "
                             "confirmed within 60s: %s" % {
                                 k: len(v) for k, v in confirmed.items()})
    server.proc.kill()      # while they still push
    seen = {name: set(ids) for name, ids in confirmed.items()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in sessions.values():
        client.abort()

    server = restart(natter_factory, server, kill=True)
    for name in SENDERS:
        client = await connect(net, server, name)
        items = await mam_all(client, page=100)
        got = msg_ids(items)
        assert len(got) == len(set(got)), "%s: duplicates in the archive" \
            % name
        assert_increasing(items, name)
        lost = seen[name] - set(got)
        assert not lost, (
            "%s: %d message(s) confirmed by a fin before the kill are gone: "
            "%s" % (name, len(lost), sorted(lost)[:10]))
    bob = await connect(net, server, "bob")
    items = await mam_all(bob, page=100)
    got = msg_ids(items)
    assert len(got) == len(set(got)), "bob: duplicates in the archive"
    assert_increasing(items, "bob")


# ------------------------------------------------------ hostile queries ---

@pytest.mark.parametrize("words", [
    '"apples', 'apples*', 'NEAR(apples pears)', 'apples -pears',
    '""', '*', 'apples OR', '(', 'a:b', "'; DROP TABLE mam; --",
    'pears^', '{apples}'])
async def test_fulltext_search_syntax_is_not_an_error(server, net, words):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["fts1"], body="apples and pears")
    items, fin = await mam_query(alice, fulltext=words)
    assert fin.complete, repr(fin)
    assert set(msg_ids(items)) <= {"fts1"}, items
    items, _ = await mam_query(alice)
    assert msg_ids(items) == ["fts1"]
    await assert_served(net, server)


async def test_fulltext_or_is_a_plain_word(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    texts = {"w1": "apples OR pears", "w2": "apples", "w3": "pears",
             "w4": "apples and pears"}
    for msg_id, body in texts.items():
        send(alice, BOB, msg_id, body)
    await alice.barrier()
    items, _ = await mam_query(alice, fulltext="apples OR pears")
    assert msg_ids(items) == ["w1"], (
        "OR is a word to match, not an operator: %r" % items)


async def test_long_with_is_refused(server, net):
    alice = await connect(net, server, "alice")
    await mam_error(alice, ("jid-malformed", "bad-request"),
                    with_="a" * 3000 + "@localhost")
    await assert_served(net, server)


async def test_thousand_ids_are_answered_or_refused(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["real1", "real2"])
    every, _ = await mam_query(alice)
    ids = ["missing-%d" % n for n in range(998)] + [i.id for i in every]
    try:
        items, fin = await mam_query(alice, ids=ids)
    except IqError as e:
        assert error_condition(e.iq) in ("policy-violation", "bad-request"), \
            describe(e.iq)
    else:
        assert msg_ids(items) == ["real1", "real2"], items
    await assert_served(net, server)


async def test_query_with_queryid_of_markup_is_answered(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    await send_settled(alice, BOB, ["qm1"])
    # The queryid is echoed: it must come back escaped, not as markup.
    queryid = "<x/>&'\""
    got = []
    alice.register_handler(Callback("odd queryid", MatchXPath(
        "%s/%s" % (q(NS_CLIENT, "message"), q(NS_MAM, "result"))),
        lambda s: got.append(s)))
    try:
        reply = await alice.iq(None, query_element(queryid), "set")
    finally:
        alice.remove_handler("odd queryid")
    assert reply.xml.find(q(NS_MAM, "fin")) is not None, describe(reply)
    assert [s.xml.find(q(NS_MAM, "result")).get("queryid") for s in got] \
        == [queryid], [describe(s) for s in got]
    await assert_served(net, server)


# ------------------------------------------------- slixmpp as shipped ---

async def test_slixmpp_plugin_retrieves_the_archive(server, net):
    alice, bob = await chat(net, server, "alice", "bob")
    names = ["sx%d" % n for n in range(5)]
    await send_settled(alice, BOB, names)
    send(alice, CAROL, "other", "not with bob")
    await alice.barrier()
    alice.register_plugin("xep_0313")
    result = await alice.plugin["xep_0313"].retrieve(
        jid=JID(ALICE), with_jid=JID(BOB), rsm={"max": 10},
        timeout=IO_TIMEOUT)
    got = [m["mam_result"]["forwarded"]["stanza"]["id"]
           for m in result["mam"]["results"]]
    assert got == names, (
        "slixmpp's MAM plugin, as a client ships it, with bob: %s" % got)

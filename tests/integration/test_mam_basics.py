"""Message archives (XEP-0313, docs/archive.md): what gets archived, the
stanza-ids, queries with RSM both ways and every form field, preferences,
the multi-device catch-up with offline storage, durability across kill -9,
retention and account deletion, rooms, and a host with archives off."""


import pytest
from slixmpp.exceptions import IqError

from imlib import (
    accounts, connect, msg, restart_on_same_data, send_available)
from smlib import sm_login

NS = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_FWD = "urn:xmpp:forward:0"
NS_DATA = "jabber:x:data"
ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


def form(**fields):
    if not fields:
        return ""
    out = ["<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
           "<value>%s</value></field>" % (NS_DATA, NS)]
    for var, value in fields.items():
        var = {"before_id": "before-id", "after_id": "after-id",
               "fulltext": "{urn:xmpp:fulltext:0}fulltext"}.get(var, var)
        values = value if isinstance(value, list) else [value]
        out.append("<field var='%s'>%s</field>" % (
            var, "".join("<value>%s</value>" % v for v in values)))
    out.append("</x>")
    return "".join(out)


class Page:
    def __init__(self, results, fin):
        self.results = results
        self.fin = fin.xml.find("{%s}fin" % NS)
        rsm = self.fin.find("{%s}set" % NS_RSM)
        self.first = rsm.findtext("{%s}first" % NS_RSM)
        self.last = rsm.findtext("{%s}last" % NS_RSM)
        self.count = int(rsm.findtext("{%s}count" % NS_RSM))
        self.complete = self.fin.get("complete") == "true"

    @property
    def ids(self):
        return [r.xml.find("{%s}result" % NS).get("id") for r in self.results]

    @property
    def bodies(self):
        return [forwarded(r).findtext("{jabber:client}body")
                for r in self.results]


def forwarded(result):
    return result.xml.find("{%s}result" % NS).find(
        "{%s}forwarded" % NS_FWD).find("{jabber:client}message")


_qid = [0]


async def query(client, to=None, rsm="", **fields):
    """Runs one MAM query; returns its Page (results in arrival order)."""
    _qid[0] += 1
    qid = "q%d" % _qid[0]
    payload = "<query xmlns='%s' queryid='%s'>%s%s</query>" % (
        NS, qid, form(**fields), rsm)
    fin = await client.iq(to, payload, "set")
    results = [s for s in client.inbox.seen
               if s.xml.find("{%s}result" % NS) is not None
               and s.xml.find("{%s}result" % NS).get("queryid") == qid]
    return Page(results, fin)


async def query_error(client, to=None, rsm="", **fields):
    payload = "<query xmlns='%s'>%s%s</query>" % (NS, form(**fields), rsm)
    try:
        await client.iq(to, payload, "set")
    except IqError as e:
        # Read from the XML: slixmpp's list of conditions predates some
        # of RFC 6120's (policy-violation).
        err = e.iq.xml.find("{jabber:client}error")
        conds = [c.tag.split("}")[1] for c in err
                 if c.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}")
                 and not c.tag.endswith("}text")]
        return conds[0] if conds else None
    raise AssertionError("expected an error")


def rsm(max_=None, after=None, before=None):
    out = "<set xmlns='%s'>" % NS_RSM
    if max_ is not None:
        out += "<max>%d</max>" % max_
    if after is not None:
        out += "<after>%s</after>" % after
    if before is not None:
        out += "<before>%s</before>" % before if before else "<before/>"
    return out + "</set>"


def chat(client, to, mid, body, extra=""):
    client.send_raw("<message to='%s' type='chat' id='%s'><body>%s</body>%s"
                    "</message>" % (to, mid, body, extra))


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def pair(net, server):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    return alice, bob


async def test_both_archives_and_the_stanza_id(server, net):
    alice, bob = await pair(net, server)
    chat(alice, BOB, "m1", "hello bob",
         "<stanza-id xmlns='%s' by='%s' id='forged'/>" % (NS_SID, BOB))
    got = await bob.inbox.get(msg(id="m1"), "m1")
    sids = [s for s in got.xml.findall("{%s}stanza-id" % NS_SID)
            if s.get("by") == BOB]
    assert len(sids) == 1 and sids[0].get("id") != "forged", got
    mine = await query(bob)
    assert mine.ids == [sids[0].get("id")], "the stanza-id is the archive id"
    assert forwarded(mine.results[0]).get("from") == alice.boundjid.full
    assert mine.results[0].xml.find("{%s}result" % NS).find(
        "{%s}forwarded" % NS_FWD).find("{urn:xmpp:delay}delay") is not None
    theirs = await query(alice)
    assert theirs.bodies == ["hello bob"] and theirs.complete


async def test_what_is_not_archived(server, net):
    alice, bob = await pair(net, server)
    alice.send_raw("<message to='%s' type='headline' id='h'><body>news</body>"
                   "</message>" % BOB)
    alice.send_raw("<message to='%s' type='chat' id='cs'><active xmlns="
                   "'http://jabber.org/protocol/chatstates'/></message>" % BOB)
    chat(alice, BOB, "ns", "secret", "<no-store xmlns='urn:xmpp:hints'/>")
    chat(alice, BOB, "ok", "kept")
    await bob.inbox.get(msg(id="ok"), "the last message")
    assert (await query(bob)).bodies == ["kept"]
    assert (await query(alice)).bodies == ["kept"]


async def test_paging_forward_and_backward(server, net):
    alice, bob = await pair(net, server)
    for i in range(7):
        chat(alice, BOB, "p%d" % i, "body %d" % i)
    await bob.inbox.get(msg(id="p6"), "p6")
    last = await query(bob, rsm=rsm(max_=3, before=""))
    assert last.bodies == ["body 4", "body 5", "body 6"]
    assert not last.complete and last.count == 7
    older = await query(bob, rsm=rsm(max_=3, before=last.first))
    assert older.bodies == ["body 1", "body 2", "body 3"] and not older.complete
    oldest = await query(bob, rsm=rsm(max_=3, before=older.first))
    assert oldest.bodies == ["body 0"] and oldest.complete
    first = await query(bob, rsm=rsm(max_=4))
    assert first.bodies == ["body %d" % i for i in range(4)] and not first.complete
    rest = await query(bob, rsm=rsm(max_=4, after=first.last))
    assert rest.bodies == ["body 4", "body 5", "body 6"] and rest.complete
    assert await query_error(bob, rsm=rsm(after="1234567")) == "item-not-found"
    capped = await query(bob, rsm=rsm(max_=100000))
    assert len(capped.ids) == 7


async def test_form_fields(server, net):
    alice, bob = await pair(net, server)
    carol = await connect(net, server, "carol", available=True)
    chat(alice, BOB, "a1", "the quick brown fox")
    await bob.inbox.get(msg(id="a1"), "a1")
    chat(carol, BOB, "c1", "lazy dog sleeps")
    await bob.inbox.get(msg(id="c1"), "c1")
    chat(alice, BOB, "a2", "quick thinking")
    await bob.inbox.get(msg(id="a2"), "a2")
    everything = await query(bob)
    ids = everything.ids
    assert everything.count == 3
    assert (await query(bob, **{"with": ALICE})).bodies == [
        "the quick brown fox", "quick thinking"]
    assert (await query(bob, **{"with": alice.boundjid.full})).count == 2
    assert (await query(bob, **{"with": ALICE + "/other"})).count == 0
    assert (await query(bob, after_id=ids[0])).ids == ids[1:]
    assert (await query(bob, before_id=ids[2])).ids == ids[:2]
    assert (await query(bob, ids=[ids[0], ids[2]])).ids == [ids[0], ids[2]]
    assert (await query(bob, fulltext="quick")).count == 2
    assert (await query(bob, fulltext="quick fox")).bodies == ["the quick brown fox"]
    for hostile in ('"', "fox*", "NEAR(quick fox)", "quick OR dog", "-fox", "(("):
        await query(bob, fulltext=hostile)  # an answer, never an error
    assert (await query(bob, start="2000-01-01T00:00:00Z")).count == 3
    assert (await query(bob, end="2000-01-01T00:00:00Z")).count == 0
    assert await query_error(bob, start="yesterday") == "bad-request"
    assert await query_error(bob, **{"with": "@@"}) in ("jid-malformed", "bad-request")
    assert await query_error(bob, to=ALICE) == "forbidden"
    assert await query_error(bob, ids=[str(i + 1) for i in range(300)]) == \
        "policy-violation"


async def test_preferences(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob", "carol")
    alice, bob = await pair(net, server)
    carol = await connect(net, server, "carol", available=True)
    reply = await bob.iq(None, "<prefs xmlns='%s' default='never'><always>"
                         "<jid>%s</jid></always><never/></prefs>" % (NS, CAROL),
                         "set")
    assert reply.xml.find("{%s}prefs" % NS).get("default") == "never"
    chat(alice, BOB, "x1", "from alice")
    await bob.inbox.get(msg(id="x1"), "x1")
    chat(carol, BOB, "x2", "from carol")
    got = await bob.inbox.get(msg(id="x2"), "x2")
    assert got.xml.find("{%s}stanza-id" % NS_SID) is not None
    assert (await query(bob)).bodies == ["from carol"]
    server = restart_on_same_data(natter_factory, server)
    bob = await connect(net, server, "bob")
    reply = await bob.iq(None, "<prefs xmlns='%s'/>" % NS)
    prefs = reply.xml.find("{%s}prefs" % NS)
    assert prefs.get("default") == "never"
    assert [j.text for j in prefs.iter("{%s}jid" % NS)] == [CAROL]


async def test_preferences_apply_on_every_loop_at_once(natter_factory, net):
    """Four loops share one cache of preferences: after each change's
    result, messages to bob delivered by senders on any loop follow it
    (eight senders: some land on other loops than bob's)."""
    server = accounts(natter_factory(workers=4), "alice", "bob")
    bob = await connect(net, server, "bob", available=True)
    senders = [await connect(net, server, "alice", "s%d" % i) for i in range(8)]
    kept = []
    for turn, default in enumerate(["always", "never", "always", "never", "always"]):
        await bob.iq(None, "<prefs xmlns='%s' default='%s'/>" % (NS, default), "set")
        for i, s in enumerate(senders):
            mid = "t%d-%d" % (turn, i)
            chat(s, BOB, mid, mid)
            await bob.inbox.get(msg(id=mid), mid)
            if default == "always":
                kept.append(mid)
    assert (await query(bob, rsm=rsm(max_=100))).bodies == kept


async def only_what_came_after(bob, device):
    """After device's catch-up query: a message bob sends now comes at its
    initial presence, and no offline copy of what the query gave comes
    again."""
    chat(bob, ALICE, "after", "after the query")
    await bob.barrier()
    await send_available(device)
    await device.inbox.get(msg(id="after"), "the message after the query")
    await device.ping()
    pushed = [s.xml.get("id") for s in device.inbox.seen
              if s.xml.tag.endswith("message") and s.xml.get("id")]
    assert pushed == ["after"], "offline copies pushed again: %s" % pushed


async def test_catch_up_gets_each_message_once(server, net):
    """Device B was away; some messages went to device A live, some to
    offline storage while both were away. B catches up from the archive
    before its initial presence: it gets every one exactly once, and the
    offline copies are not pushed again; a message after its query still
    comes."""
    bob = await connect(net, server, "bob")
    a = await connect(net, server, "alice", resource="A", available=True)
    chat(bob, ALICE, "seen", "seen by both")
    got = await a.inbox.get(msg(id="seen"), "seen")
    last_seen = [s.get("id") for s in got.xml.findall("{%s}stanza-id" % NS_SID)][0]
    chat(bob, ALICE, "live", "while B was away")
    await a.inbox.get(msg(id="live"), "live")
    a.disconnect()
    await a.disconnected
    chat(bob, ALICE, "off1", "both away 1")
    chat(bob, ALICE, "off2", "both away 2")
    await bob.barrier()
    b = await connect(net, server, "alice", resource="B")
    page = await query(b, after_id=last_seen)
    assert page.bodies == ["while B was away", "both away 1", "both away 2"]
    await only_what_came_after(bob, b)


@pytest.mark.natter_config(stream_management={"resume_timeout": 2})
async def test_unacknowledged_at_resume_timeout_come_once(server, net):
    """A phone got two messages and lost its connection before it
    acknowledged them (XEP-0198); the resumption time ran out, so they
    went to offline storage, and they are in the archive already. Another
    device that catches up from the archive gets each once: not archived
    again, and the offline copies not pushed again."""
    bob = await connect(net, server, "bob")
    phone = await sm_login(net, server, "alice", resource="phone")
    for mid in ("u1", "u2"):
        chat(bob, phone.jid, mid, "unacknowledged " + mid)
    got = []
    while len(got) < 2:
        got.append((await phone.next_stanza(answer=False)).get("id"))
    assert got == ["u1", "u2"]
    mark = server.log_mark()
    phone.cut()
    await server.await_log("2 message(s) kept offline", since=mark)
    desk = await connect(net, server, "alice", resource="desk")
    page = await query(desk)
    assert page.bodies == ["unacknowledged u1", "unacknowledged u2"], page.bodies
    await only_what_came_after(bob, desk)


async def test_without_a_query_offline_comes_as_before(server, net):
    bob = await connect(net, server, "bob")
    chat(bob, ALICE, "o1", "offline one")
    await bob.barrier()
    alice = await connect(net, server, "alice", available=True)
    got = await alice.inbox.get(msg(id="o1"), "the offline message")
    assert got.xml.find("{%s}stanza-id" % NS_SID) is not None


async def test_accepted_messages_survive_kill_9(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob")
    alice = await connect(net, server, "alice")
    for i in range(200):
        chat(alice, BOB, "k%d" % i, "kill %d" % i)
    page = await query(alice, rsm=rsm(max_=1, before=""))
    assert page.count == 200, "the query answers after the writes"
    server = restart_on_same_data(natter_factory, server, kill=True)
    bob = await connect(net, server, "bob", available=True)
    for i in range(200):
        await bob.inbox.get(msg(id="k%d" % i), "offline k%d" % i)
    alice = await connect(net, server, "alice")
    page = await query(alice, rsm=rsm(max_=100))
    rest = await query(alice, rsm=rsm(max_=100, after=page.last))
    bodies = page.bodies + rest.bodies
    assert bodies == ["kill %d" % i for i in range(200)] and rest.complete
    ids = page.ids + rest.ids
    assert ids == sorted(ids, key=int) and len(set(ids)) == 200


async def test_kill_9_under_load_leaves_a_sound_archive(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob", "carol")
    senders = [await connect(net, server, n) for n in ("alice", "carol")]
    for i in range(300):
        for k, s in enumerate(senders):
            chat(s, BOB, "l%d-%d" % (k, i), "load %d %d" % (k, i))
    seen = await query(senders[0], rsm=rsm(max_=0))
    for i in range(300, 600):
        for k, s in enumerate(senders):
            chat(s, BOB, "l%d-%d" % (k, i), "load %d %d" % (k, i))
    server = restart_on_same_data(natter_factory, server, kill=True)
    bob = await connect(net, server, "bob")
    ids, after = [], None
    while True:
        page = await query(bob, rsm=rsm(max_=100, after=after))
        ids += page.ids
        if page.complete:
            break
        after = page.last
    assert ids == sorted(ids, key=int) and len(set(ids)) == len(ids)
    # alice's query was answered after her first 300 were committed, in
    # her archive and in bob's: those survived the kill.
    assert seen.count >= 300
    assert len(ids) >= seen.count, (len(ids), seen.count)
    alice = await connect(net, server, "alice")
    assert (await query(alice, rsm=rsm(max_=0))).count >= seen.count


async def test_expire_and_account_deletion(server, net):
    alice, bob = await pair(net, server)
    chat(alice, BOB, "e1", "to expire")
    await bob.inbox.get(msg(id="e1"), "e1")
    # natterctl works on the store directly: a query first, which is
    # answered once the write is committed (decision 0008).
    assert (await query(bob)).count == 1
    out = server.ctl("mam", "expire", "--before", "2100-01-01T00:00:00Z",
                     "--user", BOB, check=True)
    assert "1 archived" in out.stdout
    assert (await query(bob)).count == 0
    assert (await query(alice)).count == 1
    alice.disconnect()
    await alice.disconnected
    server.ctl("user", "del", ALICE, check=True)
    accounts(server, "alice")
    alice = await connect(net, server, "alice")
    assert (await query(alice)).count == 0


@pytest.mark.natter_config(hosts=[{"domain": "localhost",
                                   "mam": {"enabled": False}}])
async def test_archives_off(server, net):
    alice, bob = await pair(net, server)
    chat(alice, BOB, "z", "unarchived")
    got = await bob.inbox.get(msg(id="z"), "z")
    assert got.xml.find("{%s}stanza-id" % NS_SID) is None
    assert await query_error(bob) == "service-unavailable"
    info = await bob.iq(BOB, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert NS not in [f.get("var") for f in info.xml.iter(
        "{http://jabber.org/protocol/disco#info}feature")]


async def test_room_archive(natter_factory, net):
    from test_muc import ROOM, online, join, say
    from test_muc_admin import configure
    server = accounts(natter_factory(), "alice", "bob")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    for i in range(3):
        await say(alice, "room %d" % i)
    page = await query(alice, to=ROOM)
    assert page.bodies == ["room %d" % i for i in range(3)]
    assert page.results[0].xml.get("from") == ROOM
    server = restart_on_same_data(natter_factory, server)
    alice, bob = await online(net, server, "alice", "bob")
    page = await query(bob, to=ROOM, rsm=rsm(max_=2, before=""))
    assert page.bodies == ["room 1", "room 2"] and page.count == 3
    # History for joiners comes from the same archive, same ids.
    joined = await join(bob, "bob")
    history = [s for s in joined.stanzas
               if s.xml.find("{jabber:client}body") is not None]
    sids = [h.xml.find("{%s}stanza-id" % NS_SID).get("id") for h in history]
    assert sids[-2:] == page.ids, (sids, page.ids)

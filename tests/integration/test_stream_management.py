"""Stream management (XEP-0198): acks both ways, sessions that outlive their
connection (detached, then resumed from anywhere, or ended with their
messages kept offline), refusals, and durability: an ack from natter means
the message is safe."""

import asyncio
import re
import xml.etree.ElementTree as ET

import pytest

from imlib import (
    NS_REGISTER, accounts, connect, msg, mutual, password_of, pres, send_available)
from natterlib import NS_CLIENT, NS_STREAM, q, stream_error_condition
from smlib import NS_SM, SmClient, authenticated, sm, sm_login, sm_resume

ALICE, BOB = "alice@localhost", "bob@localhost"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


def condition(failed):
    for child in failed:
        if child.tag.startswith("{%s}" % NS_STANZAS):
            return child.tag.split("}", 1)[1]
    return None


def chat(to, msg_id, body=None):
    return "<message to='%s' id='%s' type='chat'><body>%s</body></message>" % (
        to, msg_id, body or "text of " + msg_id)


async def messages(client, n, timeout=10, answer=True):
    """The next n messages (skipping other stanzas), by id; the server's
    <r/> are answered when answer."""
    got = []
    while len(got) < n:
        elem = await client.next_stanza(timeout, answer)
        if elem.tag == q(NS_CLIENT, "message"):
            got.append(elem.get("id"))
    return got


async def test_feature_offered_only_after_authentication(net, server):
    stream, features = await net.raw_tls(server)
    assert features.find(sm("sm")) is None, ET.tostring(features, "unicode")
    stream, features = await authenticated(net, server, "alice")
    assert features.find(sm("sm")) is not None, ET.tostring(features, "unicode")


async def test_enable_gives_an_unguessable_resumable_id(net, server):
    a = await sm_login(net, server, "alice")
    b = await sm_login(net, server, "alice", resource="two")
    assert a.enabled.get("resume") == "true"
    assert a.enabled.get("max") == "300"
    assert re.fullmatch("[0-9a-f]{32}", a.sm_id), a.sm_id
    assert a.sm_id != b.sm_id
    plain = await sm_login(net, server, "bob", resume=False)
    assert plain.enabled.get("id") is None and plain.enabled.get("resume") is None


async def test_acks_both_ways(net, server):
    a = await sm_login(net, server, "alice")
    for i in range(3):
        await a.send("<iq type='get' id='p%d' to='localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>" % i)
    assert await a.request_ack() == 3
    # The server asks on its own after stream_management.request_every (5)
    # stanzas, and the client's answer releases them.
    bob = await connect(net, server, "bob")
    for i in range(5):
        bob.send_raw(chat(a.jid, "m%d" % i))
    got = []
    while a.requests == 0:
        elem = await a.next()
        if elem.tag == q(NS_CLIENT, "message"):
            got.append(elem.get("id"))
    assert a.requests == 1
    # The client answered with h: 3 iq results and 5 messages.
    assert a.h >= 5
    # Answering every <r/> keeps the server's count exact: one more ask
    # of ours sees everything.
    await a.send("<iq type='get' id='last' to='localhost'>"
                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert await a.request_ack() == 4


@pytest.mark.natter_config(stream_management={"request_every": 4})
async def test_server_asks_on_its_own_schedule(net, server):
    """natter asks right after request_every stanzas, keeps at most one
    request unanswered, and asks a silent client about fewer (docs/mobile.md,
    "Acks both ways")."""
    a = await sm_login(net, server, "alice")
    bob = await connect(net, server, "bob")

    async def receive(n):
        """What comes until n more messages came: "m" per message, "r" per
        request (not answered)."""
        seen = []
        while seen.count("m") < n:
            elem = await a.next(answer=False)
            if elem.tag == sm("r"):
                seen.append("r")
            elif elem.tag == q(NS_CLIENT, "message"):
                seen.append("m")
        return seen

    for i in range(14):
        bob.send_raw(chat(a.jid, "m%d" % i))
    seen = await receive(14)
    # Our own <r/> is answered after everything sent before it: a barrier.
    assert await a.request_ack() == 0
    assert seen[:5] == ["m", "m", "m", "m", "r"], seen
    assert seen.count("r") == 1, ("one request unanswered at most", seen)
    # Answered, the next stanza out brings the next request (14 went out
    # since the last one).
    await a.ack()
    bob.send_raw(chat(a.jid, "m14"))
    assert await receive(1) == ["m"]
    assert (await a.next(answer=False)).tag == sm("r")
    await a.ack()
    # One stanza is fewer than request_every: natter asks once the client
    # has been silent for about two seconds.
    bob.send_raw(chat(a.jid, "m15"))
    assert await receive(1) == ["m"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    request = await a.next(timeout=10, answer=False)
    assert request.tag == sm("r"), ET.tostring(request, "unicode")
    assert loop.time() - started >= 0.5, "asked at once, not after a silence"
    await a.ack()
    assert await a.request_ack() == 0


async def test_enable_before_bind_or_twice_and_resume_before_auth(net, server):
    stream, _ = await authenticated(net, server, "alice")
    c = SmClient(stream, "alice")
    await c.send("<enable xmlns='%s'/>" % NS_SM)
    failed = await c.expect_sm("failed")
    assert condition(failed) == "unexpected-request"
    await stream.bind("r")
    await c.enable()
    await c.send("<enable xmlns='%s'/>" % NS_SM)
    assert condition(await c.expect_sm("failed")) == "unexpected-request"
    await c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, c.sm_id))
    assert condition(await c.expect_sm("failed")) == "unexpected-request"
    # Before authentication.
    raw, _ = await net.raw_tls(server)
    pre = SmClient(raw, "bob")
    await pre.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, c.sm_id))
    assert condition(await pre.expect_sm("failed")) == "unexpected-request"
    # The session still works.
    assert await c.request_ack() == 0


async def test_resume_after_the_connection_is_cut(net, server):
    """Unacknowledged stanzas are sent again, then what came while the
    session was detached, in order and once; presence stays available
    meanwhile; the new connection comes from another address."""
    a = await sm_login(net, server, "alice")
    await a.send("<presence/>")
    bob = await connect(net, server, "bob")
    for i in range(4):
        bob.send_raw(chat(a.jid, "m%d" % i))
    got = await messages(a, 4)
    assert got == ["m0", "m1", "m2", "m3"]
    # The client handled m0 and m1 only: say so, then lose the line.
    handled = a.h - 2
    await a.ack(handled)
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    for i in range(4, 8):
        bob.send_raw(chat(ALICE, "m%d" % i))  # to the bare JID: still online
    await bob.barrier()
    assert not bob.inbox.find(msg(type="error"))
    # Each message kept while detached went through HOOK_MESSAGE_QUEUED
    # (the log arrives through a pipe: awaited line by line).
    needle, since = "queued for %s (detached)" % a.jid, mark
    for _ in range(4):
        text = await server.await_log(needle, since=since)
        since = text.index(needle, since) + len(needle)
    assert server.log[mark:].count(needle) == 4
    a.h = handled
    b, answer = await sm_resume(net, server, a, source="127.0.0.2")
    assert answer.tag == sm("resumed"), ET.tostring(answer, "unicode")
    assert answer.get("previd") == a.sm_id
    assert answer.get("h") == "1"  # the presence
    got = await messages(b, 6)
    assert got == ["m2", "m3", "m4", "m5", "m6", "m7"]
    # Nothing more, nothing twice.
    await b.send("<iq type='get' id='x' to='localhost'>"
                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        elem = await b.next_stanza()
        assert elem.tag != q(NS_CLIENT, "message"), ET.tostring(elem, "unicode")
        if elem.get("id") == "x":
            break
    # The session goes on: the server's count went on from the old one.
    assert await b.request_ack() == 2


async def test_stanzas_pipelined_behind_resume(net, server):
    """A client that sends stanzas (and <r/>) right behind <resume/>,
    without waiting for <resumed/>: they wait until the answer and the
    stanzas sent again are written, then run in order. natterd used to end
    the stream with policy-violation and drop the session it was handing
    over, with its queued messages."""
    a = await sm_login(net, server, "alice")
    await a.send("<presence/>")
    bob = await connect(net, server, "bob")
    bob.send_raw(chat(a.jid, "q1"))
    assert await messages(a, 1, answer=False) == ["q1"]
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    stream, _ = await authenticated(net, server, "alice", "127.0.0.2")
    b = SmClient(stream, "alice")
    await b.send("<resume xmlns='%s' previd='%s' h='0'/>"
                 "<iq type='get' id='behind' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                 "<r xmlns='%s'/>%s" % (NS_SM, a.sm_id, NS_SM,
                                           chat(bob.boundjid.full, "from-b")))
    order = []
    while "a" not in order:
        elem = await b.next(answer=False)
        if elem.tag == sm("resumed"):
            order.append("resumed")
        elif elem.tag == q(NS_CLIENT, "message"):
            order.append(elem.get("id"))
        elif elem.tag == q(NS_CLIENT, "iq"):
            order.append(elem.get("id"))
        elif elem.tag == sm("a"):
            assert elem.get("h") == "2"  # the presence, then the ping
            order.append("a")
    assert order == ["resumed", "q1", "behind", "a"], order
    await bob.inbox.get(msg(id="from-b"), "alice's pipelined message")


async def test_stream_error_during_the_hand_over_keeps_the_messages(net, server):
    """A stream error between <resume/> and its answer (here: malformed
    XML in the same packet) ends the resuming stream; the session it was
    taking over ends with it, and its unacknowledged messages go to
    offline storage, not nowhere."""
    a = await sm_login(net, server, "alice")
    await a.send("<presence/>")
    bob = await connect(net, server, "bob")
    for i in range(3):
        bob.send_raw(chat(a.jid, "k%d" % i))
    assert await messages(a, 3, answer=False) == ["k0", "k1", "k2"]
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    stream, _ = await authenticated(net, server, "alice")
    await stream.send("<resume xmlns='%s' previd='%s' h='0'/><a b='1' b='2'/>"
                      % (NS_SM, a.sm_id))
    await server.await_log("kept offline", since=mark)
    alice = await connect(net, server, "alice", "back")
    await send_available(alice)
    for i in range(3):
        await alice.inbox.get(msg(id="k%d" % i), "k%d from offline storage" % i)


async def test_refusals(net, server):
    a = await sm_login(net, server, "alice")
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)

    async def refused(name, previd, h=0):
        stream, _ = await authenticated(net, server, name)
        c = SmClient(stream, name)
        await c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
        return c, await c.expect_sm("failed")

    # Unknown, forged, another account's.
    for name, previd in (("alice", "0" * 32), ("alice", "zz"),
                         ("alice", a.sm_id[:-1] + ("0" if a.sm_id[-1] != "0" else "1")),
                         ("bob", a.sm_id)):
        c, failed = await refused(name, previd)
        assert condition(failed) == "item-not-found", ET.tostring(failed, "unicode")
        assert failed.get("h") is None
        # The stream may bind a fresh session instead.
        await c.stream.bind("after-failed")
    # An h above what was sent: refused, and the session stays resumable.
    c, failed = await refused("alice", a.sm_id, h=5)
    assert condition(failed) == "undefined-condition"
    too_high = failed.find(sm("handled-count-too-high"))
    assert too_high is not None and too_high.get("h") == "5" and \
        too_high.get("send-count") == "0", ET.tostring(failed, "unicode")
    b, answer = await sm_resume(net, server, a)
    assert answer.tag == sm("resumed")
    # Twice on one stream.
    await b.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, a.sm_id))
    assert condition(await b.expect_sm("failed")) == "unexpected-request"
    # An <a/> above what was sent is a stream error.
    await b.send("<a xmlns='%s' h='7'/>" % NS_SM)
    err = await b.stream.expect(q(NS_STREAM, "error"))
    assert stream_error_condition(err) == "undefined-condition"
    th = err.find(sm("handled-count-too-high"))
    assert th is not None and th.get("h") == "7" and th.get("send-count") == "0"
    # Others are served all along.
    bob = await connect(net, server, "bob")
    await bob.barrier()


async def test_stale_h_is_refused_and_the_session_stays(net, server):
    """A resume whose h is below what the client already acknowledged
    (a stale count, e.g. from an old copy of the app's state) is refused:
    counted modulo 2^32 (XEP-0198 §4), it acknowledges more than was
    sent. The session stays resumable with the right count."""
    a = await sm_login(net, server, "alice")
    bob = await connect(net, server, "bob")
    for i in range(3):
        bob.send_raw(chat(a.jid, "s%d" % i))
    assert await messages(a, 3) == ["s0", "s1", "s2"]
    await a.ack()
    assert a.h == 3
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    stream, _ = await authenticated(net, server, "alice")
    c = SmClient(stream, "alice")
    await c.send("<resume xmlns='%s' previd='%s' h='1'/>" % (NS_SM, a.sm_id))
    failed = await c.expect_sm("failed")
    assert condition(failed) == "undefined-condition", ET.tostring(failed, "unicode")
    too_high = failed.find(sm("handled-count-too-high"))
    assert too_high is not None and too_high.get("h") == "1" and \
        too_high.get("send-count") == "3", ET.tostring(failed, "unicode")
    bob.send_raw(chat(a.jid, "s3"))
    await bob.barrier()
    b, answer = await sm_resume(net, server, a)
    assert answer.tag == sm("resumed"), ET.tostring(answer, "unicode")
    assert await messages(b, 1) == ["s3"]
    assert await b.request_ack() == 0


async def test_half_dead_connection_is_taken_over(net, server):
    a = await sm_login(net, server, "alice")
    b, answer = await sm_resume(net, server, a, source="127.0.0.3")
    assert answer.tag == sm("resumed")
    # The old connection gets <conflict/> and closes.
    err = await a.stream.expect(q(NS_STREAM, "error"))
    assert stream_error_condition(err) == "conflict"
    bob = await connect(net, server, "bob")
    bob.send_raw(chat(ALICE + "/sm", "after"))
    assert await messages(b, 1) == ["after"]


async def test_resume_works_from_any_loop(net, server):
    """natterd runs two loops (workers: 2) and the kernel spreads
    connections between them: over ten resumptions, at least one lands on
    the other loop, and each one gets exactly what was queued."""
    a = await sm_login(net, server, "alice")
    bob = await connect(net, server, "bob")
    mark = server.log_mark()
    for round_ in range(10):
        mark_round = server.log_mark()
        a.cut()
        await server.await_log("detached", since=mark_round)
        bob.send_raw(chat(ALICE + "/sm", "r%d" % round_))
        await bob.barrier()
        a, answer = await sm_resume(net, server, a,
                                    source="127.0.%d.%d" % (round_ + 1, round_ + 5))
        assert answer.tag == sm("resumed"), ET.tostring(answer, "unicode")
        assert await messages(a, 1) == ["r%d" % round_]
        await a.ack()
    await server.await_log("from loop", since=mark)


async def test_resumptions_while_messages_flow(net, server):
    """Eight sessions are cut and resumed three times each while another
    client keeps sending to all of them: every session gets exactly its
    messages, in order, whichever loops the connections land on (stanzas
    already addressed to an old connection are passed on, those that
    reach a new one early wait their turn)."""
    n = 8
    clients = [await sm_login(net, server, "alice", resource="s%d" % i) for i in range(n)]
    bob = await connect(net, server, "bob")
    sent = {i: [] for i in range(n)}
    got = {i: [] for i in range(n)}
    stop = asyncio.Event()

    async def sender():
        k = 0
        while not stop.is_set():
            for i in range(n):
                mid = "f%d-%d" % (i, k)
                bob.send_raw(chat("%s/s%d" % (ALICE, i), mid))
                sent[i].append(mid)
            k += 1
            await asyncio.sleep(0.005)

    async def reader(i, c):
        try:
            while True:
                elem = await c.next_stanza(timeout=5)
                if elem.tag == q(NS_CLIENT, "message"):
                    got[i].append(elem.get("id"))
        except (AssertionError, ConnectionError, OSError):
            pass

    async def churn(i):
        c = clients[i]
        for round_ in range(3):
            task = asyncio.ensure_future(reader(i, c))
            await asyncio.sleep(0.05 + 0.01 * i)
            await c.ack()
            c.cut()
            await asyncio.sleep(0.02)
            task.cancel()
            c, answer = await sm_resume(net, server, c, source="127.1.%d.%d" % (i, round_ + 1))
            assert answer.tag == sm("resumed"), ET.tostring(answer, "unicode")
        clients[i] = c
        return c

    mark = server.log_mark()
    sending = asyncio.ensure_future(sender())
    await asyncio.gather(*(churn(i) for i in range(n)))
    await server.await_log("from loop", since=mark)
    stop.set()
    await sending
    await bob.barrier()
    readers = [asyncio.ensure_future(reader(i, clients[i])) for i in range(n)]
    for i in range(n):
        deadline = asyncio.get_running_loop().time() + 15
        while len(got[i]) < len(sent[i]) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    for r in readers:
        r.cancel()
    for i in range(n):
        # Each <resume h/> counted exactly what the client had read, so
        # nothing comes twice and nothing is missing.
        assert got[i] == sent[i], (i, len(got[i]), len(sent[i]),
                                   [m for m in sent[i] if m not in got[i]][:5],
                                   len(got[i]) - len(set(got[i])))


async def test_clean_close_ends_the_session(net, server):
    a = await sm_login(net, server, "alice")
    await a.send("</stream:stream>")
    await a.stream.read_until_closed()
    stream, _ = await authenticated(net, server, "alice")
    c = SmClient(stream, "alice")
    await c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, a.sm_id))
    failed = await c.expect_sm("failed")
    assert condition(failed) == "item-not-found" and failed.get("h") == "0"


@pytest.mark.natter_config(stream_management={"resume_timeout": 2})
async def test_resumption_time_runs_out(net, server):
    """The session lives on while detached (available, iqs waiting), and
    when the time runs out it ends: unavailable to contacts, messages to
    offline storage, iqs answered with service-unavailable."""
    alice0 = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await mutual(alice0, bob)
    alice0.disconnect()
    await bob.inbox.get(pres(frm_bare=ALICE, type="unavailable"), "alice0 gone")
    a = await sm_login(net, server, "alice")
    await a.send("<presence/>")
    await bob.inbox.get(pres(frm=ALICE + "/sm"), "alice available")
    bob.send_raw(chat(a.jid, "m0"))
    bob.send_raw("<iq type='get' id='q0' to='%s'><query xmlns='jabber:iq:version'/></iq>"
                 % a.jid)
    got = []
    while len(got) < 2:
        elem = await a.next_stanza()
        if elem.tag != q(NS_CLIENT, "presence"):
            got.append(elem.get("id"))
    assert got == ["m0", "q0"]
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    bob.send_raw(chat(a.jid, "m1"))
    bob.send_raw("<iq type='get' id='q1' to='%s'><query xmlns='jabber:iq:version'/></iq>"
                 % a.jid)
    # A headline and a directed presence are neither kept nor bounced.
    bob.send_raw("<message type='headline' id='h1' to='%s'><body>news</body></message>"
                 % a.jid)
    bob.send_raw("<presence id='p1' to='%s'/>" % a.jid)
    bob.send_raw("<presence type='probe' to='%s'/>" % ALICE)
    # Still available while detached: a probe is answered with it.
    await bob.inbox.get(pres(frm=ALICE + "/sm", type=None), "alice still available")
    assert not bob.inbox.find(pres(frm=ALICE + "/sm", type="unavailable"))
    await server.await_log("was not resumed in time", since=mark, timeout=10)
    await bob.inbox.get(pres(frm=ALICE + "/sm", type="unavailable"), "unavailable")
    for iq_id in ("q0", "q1"):
        err = await bob.inbox.get(lambda s, i=iq_id: s.xml.get("id") == i, iq_id)
        assert err.xml.get("type") == "error"
        cond = err.xml.find("{%s}error/{%s}service-unavailable" % (NS_CLIENT, NS_STANZAS))
        assert cond is not None, ET.tostring(err.xml, "unicode")
    # The log line is written after the bounces; its pipe may lag bob's socket.
    await server.await_log(
        "2 message(s) kept offline, 0 handed to the session that replaced it, 2 iq(s) bounced",
        since=mark)
    await bob.barrier()
    assert not bob.inbox.find(lambda s: s.xml.get("id") in ("h1", "p1")), \
        "a headline or presence for an ended session is dropped, not bounced"
    # The resumption is refused now, telling how many of the client's
    # stanzas were handled (its presence); the messages wait offline.
    stream, _ = await authenticated(net, server, "alice")
    c = SmClient(stream, "alice")
    await c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, a.sm_id))
    failed = await c.expect_sm("failed")
    assert condition(failed) == "item-not-found"
    assert failed.get("h") == "1", ET.tostring(failed, "unicode")
    # Another account does not learn even that.
    stream, _ = await authenticated(net, server, "bob")
    c = SmClient(stream, "bob")
    await c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, a.sm_id))
    failed = await c.expect_sm("failed")
    assert condition(failed) == "item-not-found" and failed.get("h") is None
    alice = await connect(net, server, "alice", "new")
    await send_available(alice)
    for m in ("m0", "m1"):
        await alice.inbox.get(msg(id=m), m)
    await alice.barrier()
    assert not alice.inbox.find(msg(id="m0")) and not alice.inbox.find(msg(id="m1"))


@pytest.mark.natter_config(stream_management={"max_unacked": 10})
async def test_queue_bound_ends_the_session_without_losing_messages(net, server):
    a = await sm_login(net, server, "alice")
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    bob = await connect(net, server, "bob")
    for i in range(15):
        bob.send_raw(chat(a.jid, "o%d" % i))
    await bob.barrier()
    await server.await_log("too many unacknowledged", since=mark)
    await server.await_log("kept offline", since=mark)
    alice = await connect(net, server, "alice", "new")
    await send_available(alice)
    for i in range(15):
        await alice.inbox.get(msg(id="o%d" % i), "o%d" % i)
    # An attached client that never acks is closed with resource-constraint.
    a = await sm_login(net, server, "alice", resource="slow")
    for i in range(15):
        bob.send_raw(chat(a.jid, "p%d" % i))
    while True:
        elem = await a.next(answer=False)
        if elem.tag == q(NS_STREAM, "error"):
            break
    assert stream_error_condition(elem) == "resource-constraint"


async def test_ack_flood_is_bounded(net, server):
    """50,000 <r/> and 50,000 <a/> from a client that reads nothing
    meanwhile: an <a/> is queued only when the last one with the same
    count has been written, so the answers are far fewer than the
    requests; the <a/> cost nothing; others are served meanwhile."""
    a = await sm_login(net, server, "alice")
    burst = ("<r xmlns='%s'/>" % NS_SM) * 2000 + ("<a xmlns='%s' h='0'/>" % NS_SM) * 2000
    for _ in range(25):
        await a.send(burst)
    bob = await connect(net, server, "bob")
    await bob.barrier()
    await a.send("<iq type='get' id='after-flood' to='localhost'>"
                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        elem = await a.next()
        if elem.get("id") == "after-flood":
            break
    assert a.acks and set(a.acks) == {0}, a.acks[:10]
    assert len(a.acks) < 1000, len(a.acks)


# ------------------------------------------------------------ durability --

async def flood(sender, to, n, prefix="d"):
    for i in range(n):
        sender.send_raw(chat(to, "%s%d" % (prefix, i)))
    await sender.barrier()


async def test_durability_1000_messages_across_a_cut(net, server):
    """1,000 messages to an SM client whose connection is cut (RST) while
    they flow; after the resumption each has arrived exactly once."""
    a = await sm_login(net, server, "alice")
    bob = await connect(net, server, "bob")
    sending = asyncio.ensure_future(flood(bob, ALICE + "/sm", 1000))
    first = await messages(a, 300)
    mark = server.log_mark()
    a.cut()
    await sending
    await server.await_log("detached", since=mark)
    b, answer = await sm_resume(net, server, a, source="127.0.0.9")
    assert answer.tag == sm("resumed"), ET.tostring(answer, "unicode")
    rest = await messages(b, 700)
    got = first + rest
    assert got == ["d%d" % i for i in range(1000)]
    assert await b.request_ack() == 0
    # Nothing more comes.
    await b.send("<iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        elem = await b.next_stanza()
        assert elem.tag != q(NS_CLIENT, "message"), ET.tostring(elem, "unicode")
        if elem.get("id") == "end":
            break


@pytest.mark.natter_config(stream_management={"resume_timeout": 2},
                           limits={"max_offline_messages": 2000})
async def test_durability_1000_messages_past_the_resumption_time(net, server):
    a = await sm_login(net, server, "alice")
    bob = await connect(net, server, "bob")
    sending = asyncio.ensure_future(flood(bob, ALICE + "/sm", 1000))
    # Read but never acknowledged: all 1,000 are the server's to keep.
    await messages(a, 300, answer=False)
    mark = server.log_mark()
    a.cut()
    await sending
    await server.await_log("was not resumed in time", since=mark, timeout=10)
    await server.await_log("kept offline", since=mark)
    alice = await connect(net, server, "alice", "back")
    await send_available(alice)
    for i in range(1000):
        await alice.inbox.get(msg(id="d%d" % i), "d%d" % i)
    await alice.barrier()
    extra = alice.inbox.find(lambda s: s.xml.tag == q(NS_CLIENT, "message"))
    assert not extra, alice.inbox.describe(extra)


@pytest.mark.natter_config(limits={"max_offline_messages": 5000})
async def test_durability_acked_messages_survive_kill_9(net, natter_factory, server):
    """A sender with stream management gets <a h/> only for what is
    durable: natterd is killed with SIGKILL the moment an ack arrives,
    while the store is still busy with the messages sent after it; every
    message the sender saw acknowledged is delivered after the restart.
    (With the ack answered at once instead, this loses hundreds of
    acknowledged messages.)"""
    from imlib import restart_on_same_data
    bob = await sm_login(net, server, "bob")
    burst = "".join(chat(ALICE, "k%d" % i) for i in range(2000))
    await bob.send(burst + "<r xmlns='%s'/>" % NS_SM)
    await bob.send("".join(chat(ALICE, "k%d" % i) for i in range(2000, 3000)))
    while True:
        elem = await bob.next()
        if elem.tag == sm("a"):
            break
    server.proc.kill()  # at once: no await between the ack and the kill
    acked = int(elem.get("h"))
    assert acked >= 2000, acked
    server = restart_on_same_data(natter_factory, server, kill=True, keep_config=True)
    alice = await connect(net, server, "alice")
    await send_available(alice)
    for i in range(acked):
        await alice.inbox.get(msg(id="k%d" % i), "k%d of %d acknowledged" % (i, acked))


async def test_stopping_natterd_keeps_what_detached_sessions_held(
        net, natter_factory, server):
    """natterd stops (SIGTERM) with a session detached and one attached,
    both holding unacknowledged messages: they end, their messages go to
    offline storage, and the stop is clean (no leak, no error)."""
    from imlib import restart_on_same_data
    a = await sm_login(net, server, "alice", resource="away")
    b = await sm_login(net, server, "alice", resource="here")
    bob = await connect(net, server, "bob")
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    bob.send_raw(chat(ALICE + "/away", "s1"))
    bob.send_raw(chat(ALICE + "/here", "s2"))
    await bob.barrier()
    assert await messages(b, 1, answer=False) == ["s2"]
    server = restart_on_same_data(natter_factory, server, keep_config=True)
    alice = await connect(net, server, "alice", "new")
    await send_available(alice)
    for m in ("s1", "s2"):
        await alice.inbox.get(msg(id=m), m)


# ------------------------------------------------------- real clients --

async def test_slixmpp_at_its_defaults_resumes(net, server):
    """slixmpp's own XEP-0198 plugin, nothing configured: it enables
    resumption, loses its connection (RST), reconnects and resumes; a
    message sent meanwhile arrives once."""
    from imlib import drop_connection
    from natterlib import XmppClient
    client = XmppClient(ALICE + "/phone", "alice-secret", mechanism=None,
                        channel_binding=True)
    client.register_plugin("xep_0198")
    net._open.append(client)
    enabled = asyncio.get_running_loop().create_future()
    resumed = asyncio.get_running_loop().create_future()
    client.add_event_handler("sm_enabled", lambda e: enabled.done() or enabled.set_result(e))
    client.add_event_handler("session_resumed",
                             lambda e: resumed.done() or resumed.set_result(e))
    client.connect(("127.0.0.1", server.c2s_port))
    await asyncio.wait_for(enabled, 10)
    sm_id = client.plugin["xep_0198"].sm_id
    assert sm_id, "slixmpp did not get a resumable session"
    bob = await connect(net, server, "bob")
    bob.send_raw(chat(ALICE + "/phone", "before"))
    first = await asyncio.wait_for(client.messages.get(), 10)
    assert first["id"] == "before"
    mark = server.log_mark()
    drop_connection(client)
    await server.await_log("detached", since=mark)
    bob.send_raw(chat(ALICE + "/phone", "meanwhile"))
    await bob.barrier()
    client.connect(("127.0.0.1", server.c2s_port))
    await asyncio.wait_for(resumed, 10)
    got = await asyncio.wait_for(client.messages.get(), 10)
    assert got["id"] == "meanwhile"
    await bob.barrier()
    await asyncio.sleep(0)
    assert client.messages.empty(), client.messages.get_nowait()
    await server.await_log("resumed alice@localhost/phone", since=mark)


async def test_profanity_resumes_after_its_connection_drops(net, server):
    """Profanity 0.13 (libstrophe 0.12, Debian 12) at its defaults, but for
    accepting the self-signed certificate for good (`/tls always`): its
    connection is reset; it reconnects after its own delay (30 s by
    default) and resumes; a message sent meanwhile shows once."""
    import tempfile
    import shutil
    from pathlib import Path
    from test_profanity import Profanity
    from smlib import CuttableProxy
    proxy = await CuttableProxy(server.c2s_port).start()
    root = Path(tempfile.mkdtemp(prefix="natter-prof-"))
    alice = Profanity(root, root / "data").start()
    try:
        alice.server = server
        await alice.wait_for("Type '/help' to show complete help")
        alice.type("/connect %s server 127.0.0.1 port %d" % (ALICE, proxy.port))
        await alice.wait_for("Enter password:")
        alice.type("alice-secret")
        # Reconnecting must not ask again: trust this certificate for good.
        await alice.wait_for("Use '/tls allow' to accept this certificate.")
        alice.type("/tls always")
        await alice.wait_for("logged in successfully")
        await server.await_log("stream management on, resumable")
        bob = await connect(net, server, "bob")
        bob.send_raw(chat(ALICE, "b1", "before-the-cut-quince"))
        await alice.wait_for("<< chat message: %s/r (win 2)" % BOB)
        mark = server.log_mark()
        proxy.cut()
        await server.await_log("detached", since=mark)
        bob.send_raw(chat(ALICE, "b2", "while-away-marmalade"))
        await bob.barrier()
        await server.await_log("resumed alice@localhost/", since=mark, timeout=60)
        alice.type("/win 2")
        screen = await alice.wait_for("while-away-marmalade")
        assert screen.count("while-away-marmalade") == 1, screen
        assert screen.count("before-the-cut-quince") == 1, screen
        assert proxy.connections == 2
    finally:
        print(alice.describe())
        alice.kill()
        await proxy.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_fresh_login_with_the_same_resource_gets_the_detached_queue(
        net, server):
    """A client that logs in anew instead of resuming, with the resource
    its detached session had (Bind 2 derives it from the device's
    user-agent id; most clients keep theirs), replaces that session
    (RFC 6120 7.7.2.2). The messages the old session had not had
    acknowledged reach the new one, once, without waiting for a later
    login."""
    phone = await sm_login(net, server, "alice", resource="phone")
    await phone.send("<presence/>")
    bob = await connect(net, server, "bob")
    mark = server.log_mark()
    phone.cut()
    await server.await_log("detached", since=mark)
    for n in range(3):
        bob.send_raw(chat(ALICE + "/phone", "queued%d" % n))
    await bob.barrier()
    fresh = await connect(net, server, "alice", "phone", available=True)
    await server.await_log("3 handed to the session that replaced it", since=mark)
    # They may arrive right after the bind result, before the test's inbox
    # exists; the client's own queue has every message since it connected.
    got = [await asyncio.wait_for(fresh.messages.get(), 10) for _ in range(3)]
    assert [m["id"] for m in got] == ["queued0", "queued1", "queued2"], got
    bob.send_raw(chat(ALICE + "/phone", "after"))
    await fresh.inbox.get(lambda s: s.xml.get("id") == "after", "after")
    rest = [fresh.messages.get_nowait()["id"] for _ in range(fresh.messages.qsize())]
    assert rest == ["after"], rest


async def test_removed_account_keeps_nothing_of_a_detached_session(net, server):
    """An account removed in-band (XEP-0077) while one of its sessions is
    detached: that session ends, and the message it held unacknowledged
    is bounced to its sender, not kept offline where an account made
    again with the name would find it."""
    a = await sm_login(net, server, "alice")
    bob = await connect(net, server, "bob")
    bob.send_raw(chat(a.jid, "m0"))
    while (await a.next_stanza()).get("id") != "m0":
        pass
    mark = server.log_mark()
    a.cut()
    await server.await_log("detached", since=mark)
    laptop = await connect(net, server, "alice", "laptop")
    laptop.send_raw("<iq type='set' id='bye' to='localhost'><query xmlns='%s'>"
                    "<remove/></query></iq>" % NS_REGISTER)
    await laptop.wait_closed()
    bounce = await bob.inbox.get(msg(id="m0", type="error"), "m0 bounced")
    assert bounce.xml.find("{%s}error/{%s}service-unavailable"
                           % (NS_CLIENT, NS_STANZAS)) is not None, \
        ET.tostring(bounce.xml, "unicode")
    server.add_user("alice@localhost", password_of("alice"))
    again = await connect(net, server, "alice", "again")
    await send_available(again)
    await again.barrier()
    assert not again.inbox.find(msg(id="m0")), "the old account's message came back"

"""Offline messages (XEP-0160) with delay stamps (XEP-0203): stored for an
account with no available resource, delivered once at the next available
presence of priority >= 0, kept across a natterd restart and a crash,
limited by limits.max_offline_messages."""

import re
import ssl
import time
from datetime import timedelta

import pytest

from imlib import (
    NS_DELAY, accounts, connect, msg, now_utc, parse_stamp,
    restart_on_same_data, send_available)
from natterlib import (
    IO_TIMEOUT, blocking_login, raw_login, read_until, stanza_error_condition)

ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


def send(client, to, msg_id, body=None, mtype="chat", extra=""):
    client.send_raw("<message to='%s' id='%s'%s>%s%s</message>" % (
        to, msg_id, " type='%s'" % mtype if mtype else "",
        "<body>%s</body>" % body if body is not None else "", extra))


async def send_and_settle(client, to, ids, mtype="chat"):
    """Sends one message per id to `to`; returns once the server has
    processed them all and checks that none bounced."""
    for msg_id in ids:
        send(client, to, msg_id, "text of %s" % msg_id, mtype)
    await client.barrier()
    bounced = client.inbox.find(msg(type="error"))
    assert not bounced, "offline messages bounced:\n%s" % \
        client.inbox.describe(bounced)


def delay_of(stanza):
    delays = stanza.xml.findall("{%s}delay" % NS_DELAY)
    assert len(delays) == 1, "expected one <delay xmlns='urn:xmpp:delay'/> " \
        "(XEP-0203):\n%s" % stanza
    return delays[0]


async def collect_offline(client, ids):
    """The messages with the given ids, in arrival order; fails if they
    come in another order."""
    got = []
    for msg_id in ids:
        got.append(await client.inbox.get(msg(id=msg_id),
                                          "offline message %s" % msg_id))
    order = [s.xml.get("id") for s in client.inbox.seen
             if s.xml.get("id") in ids and s.xml.tag.endswith("message")]
    assert order == list(ids), "delivered out of order: %s" % order
    return got


async def test_message_to_offline_account_is_delivered_later(server, net):
    alice = await connect(net, server, "alice")
    sent_at = now_utc()
    send(alice, BOB, "o1", "are you there?")
    send(alice, BOB, "o2", "second")
    send(alice, BOB + "/some-resource", "o3", "to a full JID")
    await alice.barrier()
    assert not alice.inbox.find(msg(type="error")), alice.inbox.describe()

    bob = await connect(net, server, "bob")
    # Logged in but not available: nothing yet (XEP-0160 section 3).
    await bob.barrier()
    assert not bob.inbox.find(msg()), bob.inbox.describe()

    await send_available(bob)
    got = await collect_offline(bob, ["o1", "o2", "o3"])
    for stanza, body in zip(got, ["are you there?", "second",
                                  "to a full JID"]):
        xml = stanza.xml
        assert xml.get("from") == ALICE + "/r"
        assert xml.get("type") == "chat"
        assert xml.findtext("{jabber:client}body") == body
        stamp = parse_stamp(delay_of(stanza).get("stamp"))
        assert sent_at - timedelta(seconds=2) <= stamp <= \
            now_utc() + timedelta(seconds=2), "stamp %s is not when it " \
            "was sent (%s)" % (stamp, sent_at)
        from_attr = delay_of(stanza).get("from")
        assert from_attr in (None, "localhost", ALICE + "/r")


async def test_normal_messages_are_stored_headlines_are_not(server, net):
    alice = await connect(net, server, "alice")
    send(alice, BOB, "headline-1", "news", mtype="headline")
    send(alice, BOB, "normal-1", "a letter", mtype=None)
    send(alice, BOB, "normal-2", "typed normal", mtype="normal")
    await alice.barrier()
    assert not alice.inbox.find(msg(type="error")), alice.inbox.describe()

    bob = await connect(net, server, "bob", available=True)
    await collect_offline(bob, ["normal-1", "normal-2"])
    # Delivery happens while the server processes the presence: by the
    # time the presence round trip is back, everything stored is here.
    assert not bob.inbox.find(msg(id="headline-1")), \
        "a headline was stored offline (XEP-0160 section 3)"


async def test_error_and_groupchat_messages_are_not_stored(server, net):
    alice = await connect(net, server, "alice")
    send(alice, BOB, "err-1", "oops", mtype="error")
    send(alice, BOB, "gc-1", "room talk", mtype="groupchat")
    send(alice, BOB, "chat-1", "real")
    await alice.barrier()
    bob = await connect(net, server, "bob", available=True)
    await collect_offline(bob, ["chat-1"])
    assert not bob.inbox.find(msg(id="err-1"))
    assert not bob.inbox.find(msg(id="gc-1"))


async def test_delivered_only_once(server, net):
    alice = await connect(net, server, "alice")
    await send_and_settle(alice, BOB, ["once"])
    bob = await connect(net, server, "bob", "one", available=True)
    await collect_offline(bob, ["once"])

    # A second resource coming online gets nothing stored...
    two = await connect(net, server, "bob", "two", available=True)
    assert not two.inbox.find(msg(id="once"))
    # ...nor does a later login.
    await bob.close()
    await two.close()
    three = await connect(net, server, "bob", "three", available=True)
    assert not three.inbox.find(msg(id="once"))


async def test_not_stored_while_recipient_is_available(server, net):
    bob = await connect(net, server, "bob", available=True)
    alice = await connect(net, server, "alice")
    send(alice, BOB, "live-1", "now")
    await bob.inbox.get(msg(id="live-1"), "the live message")
    await bob.close()
    again = await connect(net, server, "bob", "again", available=True)
    assert not again.inbox.find(msg(id="live-1")), \
        "a message delivered live was stored offline as well"


async def test_negative_priority_session_does_not_get_them(server, net):
    alice = await connect(net, server, "alice")
    await send_and_settle(alice, BOB, ["before"])
    shy = await connect(net, server, "bob", "shy")
    await send_available(shy, priority=-1)
    assert not shy.inbox.find(msg()), shy.inbox.describe()

    # While only a negative-priority resource is available, messages to
    # the bare JID are stored too (RFC 6121 8.5.2.1.1).
    await send_and_settle(alice, BOB, ["during"])
    assert not shy.inbox.find(msg(id="during"))

    normal = await connect(net, server, "bob", "normal")
    await send_available(normal, priority=0)
    await collect_offline(normal, ["before", "during"])
    assert not shy.inbox.find(msg(id="before"))


async def test_offline_messages_survive_restart(natter_factory, net):
    first = accounts(natter_factory(), "alice", "bob")
    alice = await connect(net, first, "alice")
    await send_and_settle(alice, BOB, ["r1", "r2"])
    await alice.close()

    second = restart_on_same_data(natter_factory, first)
    bob = await connect(net, second, "bob", available=True)
    got = await collect_offline(bob, ["r1", "r2"])
    assert [s.xml.findtext("{jabber:client}body") for s in got] == \
        ["text of r1", "text of r2"]
    assert all(delay_of(s).get("stamp") for s in got)


async def test_offline_messages_survive_a_crash(natter_factory, net):
    # "A message acknowledged by the server is on disk before the next
    # event": once the sender's next round trip is answered, the message
    # must survive SIGKILL.
    first = accounts(natter_factory(), "alice", "bob")
    alice = await connect(net, first, "alice")
    await send_and_settle(alice, BOB, ["k1", "k2", "k3"])

    second = restart_on_same_data(natter_factory, first, kill=True)
    bob = await connect(net, second, "bob", available=True)
    await collect_offline(bob, ["k1", "k2", "k3"])


@pytest.mark.natter_config(limits={"max_offline_messages": 2})
async def test_quota_bounces_with_service_unavailable(server, net):
    alice = await connect(net, server, "alice")
    await send_and_settle(alice, BOB, ["q1", "q2"])
    send(alice, BOB, "q3", "one too many")
    bounce = await alice.inbox.get(msg(id="q3", type="error"), "the bounce")
    assert stanza_error_condition(bounce.xml) == "service-unavailable"
    assert bounce.xml.get("from") in (BOB, BOB + "/")

    # Another sender is limited by the same per-recipient quota.
    carol = await connect(net, server, "carol")
    send(carol, BOB, "q4", "me too")
    bounce = await carol.inbox.get(msg(id="q4", type="error"), "the bounce")
    assert stanza_error_condition(bounce.xml) == "service-unavailable"

    bob = await connect(net, server, "bob", available=True)
    await collect_offline(bob, ["q1", "q2"])
    assert not bob.inbox.find(msg(id="q3"))
    assert not bob.inbox.find(msg(id="q4"))

    # Delivered messages free the quota.
    await bob.close()
    await send_and_settle(alice, BOB, ["q5"])


@pytest.mark.natter_config(limits={"max_offline_messages": 0})
async def test_zero_quota_disables_storage(server, net):
    alice = await connect(net, server, "alice")
    send(alice, BOB, "z1", "nothing kept")
    bounce = await alice.inbox.get(msg(id="z1", type="error"), "the bounce")
    assert stanza_error_condition(bounce.xml) == "service-unavailable"


async def test_message_to_unknown_account_still_bounces(server, net):
    alice = await connect(net, server, "alice")
    send(alice, "nobody@localhost", "n1", "hello?")
    bounce = await alice.inbox.get(msg(id="n1", type="error"), "the bounce")
    assert stanza_error_condition(bounce.xml) == "service-unavailable"


# ------------------------------------------ a backlog bigger than a queue --
# Issue 10, item D: messages left the store as soon as they were queued, so
# a slow client that was cut, or a crash, lost them.

BIG_BODY = "b" * 30000


async def store_backlog(server, count):
    """count messages of 30 KB from alice to offline bob, stored."""
    alice = await raw_login(server.c2s_port, ALICE, "alice-secret")
    for i in range(count):
        await alice.send("<message to='%s' id='big%d' type='chat'><body>%s"
                         "</body></message>" % (BOB, i, BIG_BODY))
    await alice.ping_server("stored")
    await alice.close()


def message_ids(data):
    return re.findall(rb"<message[^>]* id='(big\d+)'", data)


async def test_slow_client_gets_whole_backlog(natter_factory, net):
    """500 stored messages of 30 KB go to a client that reads slowly, and
    another message arrives for it mid-download: it gets all 501, is never
    cut, and the store is empty afterwards. Before the fix the extra
    stanza found 8 MiB queued, the client was cut and ~370 were lost."""
    server = accounts(natter_factory(), "alice", "bob", "carol")
    await store_backlog(server, 500)
    bob = blocking_login(server, BOB, "bob-secret", rcvbuf=16384)
    bob.sendall(b"<presence/>")
    got = b""
    poked = False
    while got.count(b"Offline Storage</delay>") < 500:
        data = bob.recv(16384)
        assert data, "bob was cut after %d messages:\n%s" % (
            got.count(b"Offline Storage</delay>"), server.log[-2000:])
        got += data
        if not poked and len(got) > 2 << 20:
            carol = blocking_login(server, CAROL, "carol-secret")
            carol.sendall(("<message to='%s' id='poke' type='chat'><body>"
                           "mid-download</body></message>" % BOB).encode())
            poked = True
        time.sleep(0.002)  # the client's pace, not a wait for the server
    got += read_until(bob, b"id='poke'") if b"id='poke'" not in got else b""
    ids = message_ids(got)
    assert sorted(set(ids)) == sorted(b"big%d" % i for i in range(500))
    await server.await_log("delivered 500 offline message(s) to %s" % BOB)
    bob.close()
    # Nothing is left to deliver twice.
    again = await connect(net, server, "bob", available=True)
    await again.barrier()
    assert not again.inbox.find(msg()), again.inbox.describe()


async def test_crash_during_download_loses_nothing(natter_factory, net):
    """natterd is killed while a client that does not read is getting a
    backlog of 500 x 30 KB: what the client did not get is delivered after
    the restart. Before the fix the whole backlog left the store at login
    and a SIGKILL lost every message still in natterd's memory."""
    first = accounts(natter_factory(), "alice", "bob")
    await store_backlog(first, 500)
    bob = blocking_login(first, BOB, "bob-secret", rcvbuf=4096)
    bob.sendall(b"<presence/>")
    got = read_until(bob, b"Offline Storage</delay>")
    second = restart_on_same_data(natter_factory, first, kill=True)
    # What reached bob's socket before the kill is his.
    bob.settimeout(IO_TIMEOUT)
    try:
        while True:
            data = bob.recv(65536)
            if not data:
                break
            got += data
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    bob.close()
    first_ids = set(message_ids(got))
    assert len(first_ids) < 500, "the test needs a backlog bigger than " \
        "the socket buffers"
    later = await connect(net, second, "bob", available=True)
    second_ids = set()
    while first_ids | second_ids != {b"big%d" % i for i in range(500)}:
        stanza = await later.inbox.get(msg(), "offline message; have %d "
                                       "before and %d after the crash"
                                       % (len(first_ids), len(second_ids)))
        second_ids.add(stanza.xml.get("id").encode())

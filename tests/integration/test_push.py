"""Push notifications (XEP-0357, urn:xmpp:push:0): enable and disable,
the pubsub publish to the app server with the urn:xmpp:push:summary form
and the registration's publish-options, what the summary may say, the
folding of notifications, errors that disable a registration, durability
and bad input.

The app server is a real XMPP entity: a slixmpp client logged in as
pushsvc@localhost/app that receives the publish iqs and answers them
(natter has no XEP-0114 component support, so a client at a full JID is
the app server's address).  Absence of a notification is shown by a later
one: notifications of one registration, or of one message, reach the app
server in order, so anything sent by mistake arrives before it.

Debian's slixmpp (1.8.3) has no xep_0357 plugin; the enable of the
default-client test is sent by slixmpp at its defaults (no mechanism
pinned, its own channel binding), built by hand.
"""

import asyncio
import xml.etree.ElementTree as ET

import pytest

from imlib import (
    NS_REGISTER, accounts, connect, drop_connection, error_condition,
    iq_error, restart_on_same_data)
from natterlib import IO_TIMEOUT, NS_CLIENT, XmppClient, q
from test_config import check_config, line_of

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUMMARY = "urn:xmpp:push:summary"
IQREQ_TIMEOUT = 30  # seconds, IQREQ_TIMEOUT_MS in src/router/iqreq.h
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

ALICE, BOB = "alice@localhost", "bob@localhost"
APP = "pushsvc@localhost/app"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "pushsvc")


def push_host(**push):
    """Overrides for the host `localhost` with a push: block."""
    return {"hosts": [{"domain": "localhost", "push": push}]}


# ---------------------------------------------------------------- helpers --

def form(fields, form_type=PUBLISH_OPTIONS, ftype="submit"):
    items = [("FORM_TYPE", form_type)] + list(fields.items())
    return "<x xmlns='%s'%s>%s</x>" % (
        NS_DATA, " type='%s'" % ftype if ftype else "",
        "".join("<field var='%s'><value>%s</value></field>" % kv
                for kv in items))


def enable_xml(jid=APP, node="node-1", fields=None, **kw):
    attrs = ""
    if jid is not None:
        attrs += " jid='%s'" % jid
    if node is not None:
        attrs += " node='%s'" % node
    return "<enable xmlns='%s'%s>%s</enable>" % (
        NS_PUSH, attrs, form(fields, **kw) if fields is not None else "")


async def enable(client, **kw):
    reply = await client.iq(None, enable_xml(**kw), "set")
    assert reply["type"] == "result", reply


async def disable(client, jid=APP, node=None):
    reply = await client.iq(None, "<disable xmlns='%s' jid='%s'%s/>" % (
        NS_PUSH, jid, " node='%s'" % node if node else ""), "set")
    assert reply["type"] == "result", reply


def is_publish(node=None):
    """An iq set carrying a pubsub publish (to node, if given)."""
    def match(s):
        xml = s.xml
        if xml.tag != q(NS_CLIENT, "iq") or xml.get("type") != "set":
            return False
        pub = xml.find("%s/%s" % (q(NS_PUBSUB, "pubsub"),
                                  q(NS_PUBSUB, "publish")))
        return pub is not None and (node is None or pub.get("node") == node)
    return match


def form_fields(x):
    return {f.get("var"): [v.text or "" for v in f.findall(q(NS_DATA, "value"))]
            for f in x.findall(q(NS_DATA, "field"))}


class Notification:
    """A publish iq as the app server got it."""

    def __init__(self, stanza):
        self.stanza = stanza
        xml = stanza.xml
        self.id = xml.get("id")
        self.sender = xml.get("from")
        pubsub = xml.find(q(NS_PUBSUB, "pubsub"))
        publish = pubsub.find(q(NS_PUBSUB, "publish"))
        self.node = publish.get("node")
        items = publish.findall(q(NS_PUBSUB, "item"))
        assert len(items) == 1, ET.tostring(xml)
        notes = items[0].findall(q(NS_PUSH, "notification"))
        assert len(notes) == 1, ET.tostring(xml)
        forms = notes[0].findall(q(NS_DATA, "x"))
        assert len(forms) == 1, ET.tostring(xml)
        self.summary = {k: v[0] for k, v in form_fields(forms[0]).items()}
        assert self.summary.get("FORM_TYPE") == SUMMARY, ET.tostring(xml)
        opts = pubsub.find(q(NS_PUBSUB, "publish-options"))
        self.options = None
        if opts is not None:
            x = opts.find(q(NS_DATA, "x"))
            self.options = {k: v for k, v in form_fields(x).items()}

    @property
    def count(self):
        return int(self.summary["message-count"])


async def next_publish(app, node=None, what=None, timeout=IO_TIMEOUT):
    stanza = await app.inbox.get(
        is_publish(node), what or "a publish to node %s" % node, timeout)
    return Notification(stanza)


def answer(app, note, error=None):
    """The app server's answer: a result, or an error (type, condition)."""
    if error is None:
        app.send_raw("<iq type='result' id='%s' to='%s'/>"
                     % (note.id, note.sender))
    else:
        etype, cond = error
        app.send_raw("<iq type='error' id='%s' to='%s'><error type='%s'>"
                     "<%s xmlns='%s'/></error></iq>"
                     % (note.id, note.sender, etype, cond, NS_STANZAS))


async def answered(app, note, error=None):
    """Answers and waits until natter has processed the answer."""
    answer(app, note, error)
    await app.barrier()


def message(sender, to, body="hello", mid=None, extra=""):
    sender.send_raw("<message to='%s' type='chat'%s>%s%s</message>" % (
        to, " id='%s'" % mid if mid else "",
        "<body>%s</body>" % body if body is not None else "", extra))


async def phone(net, server, name="alice", **enable_kw):
    """A session that enables push and goes away."""
    client = await connect(net, server, name, "phone")
    await enable(client, **enable_kw)
    await client.close()
    return client


async def later_publish(app, bob, node):
    """Another message, and the notification it makes at node: whatever
    the messages before it made for other registrations reached the app
    server before this one (one batch per message, in order)."""
    message(bob, ALICE, "later")
    return await next_publish(app, node)


def publishes_before(app, note, node=None):
    """The publishes (to node, if given) the app server got before note."""
    index = next(i for i, s in enumerate(app.inbox.seen) if s is note.stanza)
    return [s for s in app.inbox.seen[:index] if is_publish(node)(s)]


# ------------------------------------------------------------------ tests --

async def test_account_advertises_push_with_slixmpp_defaults(server, net):
    alice = await net.login_stock(server, ALICE + "/phone", "alice-secret")
    alice.register_plugin("xep_0030")
    info = await alice["xep_0030"].get_info(jid=ALICE)
    features = info["disco_info"]["features"]
    assert NS_PUSH in features, features
    # The enable as a client at slixmpp's defaults sends it: no 'to'.
    reply = await alice.iq(None, enable_xml(fields={"secret": "s3"}), "set")
    assert reply["type"] == "result"


@pytest.mark.natter_config(**push_host(enabled=False))
async def test_push_off_for_the_host(server, net):
    alice = await connect(net, server, "alice")
    alice.register_plugin("xep_0030")
    info = await alice["xep_0030"].get_info(jid=ALICE)
    assert NS_PUSH not in info["disco_info"]["features"]
    err = await iq_error(alice, None, enable_xml(), "set")
    assert error_condition(err) == "service-unavailable"


async def test_offline_message_notifies_once_with_node_secret_and_count(
        server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server, node="yxs32", fields={"secret": "eruio234"})
    bob = await connect(net, server, "bob")

    message(bob, ALICE, "Wherefore art thou?")
    first = await next_publish(app, "yxs32")
    assert first.sender == ALICE, "published from the account's bare JID"
    assert first.stanza.xml.get("to") == APP
    assert first.options == {"FORM_TYPE": [PUBLISH_OPTIONS],
                             "secret": ["eruio234"]}
    assert first.count == 1
    # Private by default: neither sender nor body.
    assert "last-message-sender" not in first.summary, first.summary
    assert "last-message-body" not in first.summary, first.summary
    await answered(app, first)

    # A chat state alone wakes nobody and is not counted; the next
    # message with a body is the second.
    message(bob, ALICE, None, extra="<composing xmlns="
            "'http://jabber.org/protocol/chatstates'/>")
    message(bob, ALICE, "second")
    second = await next_publish(app, "yxs32")
    assert second.count == 2, second.summary
    assert publishes_before(app, second) == [first.stanza], (
        "one notification per message: %s" % app.inbox.describe())
    await answered(app, second)

    # An OMEMO message has no readable body but wakes the phone.
    message(bob, ALICE, None, extra="<encrypted xmlns='eu.siacs.conversations"
            ".axolotl'><header sid='1'/></encrypted>")
    third = await next_publish(app, "yxs32")
    assert third.count == 3
    await answered(app, third)


async def test_count_starts_again_when_a_session_comes_online(server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server)
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "one")
    note = await next_publish(app)
    assert note.count == 1
    await answered(app, note)
    again = await connect(net, server, "alice", "laptop")
    await again.close()
    message(bob, ALICE, "two")
    note = await next_publish(app)
    assert note.count == 1, "pending since a session last came online"
    await answered(app, note)


async def test_messages_while_one_is_in_flight_are_folded(server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server)
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "m1")
    first = await next_publish(app)
    # Not answered yet: four more arrive meanwhile.
    for i in range(2, 6):
        message(bob, ALICE, "m%d" % i)
    await bob.barrier()
    answer(app, first)
    folded = await next_publish(app)
    assert folded.count == 5, folded.summary
    await answered(app, folded)
    message(bob, ALICE, "m6")
    last = await next_publish(app)
    assert last.count == 6
    assert len(publishes_before(app, last)) == 2, (
        "the four messages in flight made one notification:\n%s"
        % app.inbox.describe(app.inbox.seen))
    await answered(app, last)


async def test_a_burst_makes_a_handful_of_notifications(server, net):
    """400 messages as fast as bob can send them, an app server that
    answers at once: the last notification counts all 400, and there are
    no more of them than one per min_interval (2 s) plus the first."""
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server)
    bob = await connect(net, server, "bob")
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(400):
        message(bob, ALICE, "burst %d" % i)
    await bob.barrier()
    notes = []
    while not notes or notes[-1].count < 400:
        note = await next_publish(app)
        notes.append(note)
        answer(app, note)
    elapsed = loop.time() - start
    counts = [n.count for n in notes]
    assert counts == sorted(counts) and counts[0] == 1, counts
    assert len(notes) <= 2 + elapsed / 2, (len(notes), elapsed, counts)
    print("400 messages in %.1fs: %d notifications %s" % (
        elapsed, len(notes), counts))


async def test_sender_and_body_only_when_the_client_opted_in(server, net):
    app = await connect(net, server, "pushsvc", "app")
    alice = await connect(net, server, "alice", "phone")
    await enable(alice, node="plain", fields={"secret": "a"})
    await enable(alice, node="chatty", fields={
        "secret": "b", "x-natter-include-sender": "true",
        "x-natter-include-body": "1"})
    await alice.close()
    bob = await connect(net, server, "bob", "desk")
    message(bob, ALICE, "the body")
    notes = {}
    for _ in range(2):
        note = await next_publish(app)
        notes[note.node] = note
    plain, chatty = notes["plain"], notes["chatty"]
    assert "last-message-body" not in plain.summary
    assert "last-message-sender" not in plain.summary
    assert chatty.summary["last-message-body"] == "the body"
    assert chatty.summary["last-message-sender"] == BOB + "/desk"
    # natter's own fields are not passed on: the app server would refuse
    # unknown publish-options (XEP-0060 7.1.5).
    assert chatty.options == {"FORM_TYPE": [PUBLISH_OPTIONS],
                              "secret": ["b"]}, chatty.options
    for note in (plain, chatty):
        answer(app, note)


@pytest.mark.natter_config(**push_host(include_sender="never",
                                       include_body="never"))
async def test_never_overrides_the_opt_in(server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server, fields={"x-natter-include-sender": "true",
                                     "x-natter-include-body": "true"})
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "secret words")
    note = await next_publish(app)
    assert "last-message-body" not in note.summary
    assert "last-message-sender" not in note.summary
    assert note.options is None, "only natter's fields: no publish-options"
    answer(app, note)


@pytest.mark.natter_config(**push_host(include_sender="always",
                                       include_body="always"))
async def test_always_includes_sender_and_body(server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server)
    bob = await connect(net, server, "bob", "desk")
    message(bob, ALICE, "x" * 600 + "tail")
    note = await next_publish(app)
    assert note.summary["last-message-sender"] == BOB + "/desk"
    body = note.summary["last-message-body"]
    assert body == "x" * 512, "the body is cut to 512 bytes: %d" % len(body)
    answer(app, note)


async def test_disable_stops_notifications(server, net):
    app = await connect(net, server, "pushsvc", "app")
    alice = await connect(net, server, "alice", "phone")
    await enable(alice, node="a")
    await enable(alice, node="b")
    await disable(alice, node="a")
    await alice.close()
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "one")
    note = await next_publish(app, "b")
    await answered(app, note)
    message(bob, ALICE, "two")
    later = await next_publish(app, "b")
    assert not publishes_before(app, later, "a"), (
        "a disabled registration was notified:\n%s"
        % app.inbox.describe(app.inbox.seen))
    await answered(app, later)


async def test_disable_without_node_removes_every_node_of_the_service(
        server, net):
    app = await connect(net, server, "pushsvc", "app")
    other = await connect(net, server, "pushsvc", "other")
    alice = await connect(net, server, "alice", "phone")
    await enable(alice, node="n1")
    await enable(alice, node="n2")
    await enable(alice, jid="pushsvc@localhost/other", node="n3")
    await disable(alice)
    await alice.close()
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "one")
    note = await next_publish(other, "n3")
    answer(other, note)
    # The publishes of one message go out in one go; app's would have
    # come before a round trip that follows other's.
    await other.barrier()
    await app.barrier()
    assert not app.inbox.find(is_publish()), app.inbox.describe()


async def test_error_reply_disables_the_registration(server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server, node="doomed")
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "one")
    note = await next_publish(app, "doomed")
    await answered(app, note, ("cancel", "item-not-found"))
    await phone(net, server, node="fresh")
    message(bob, ALICE, "two")
    await answered(app, await next_publish(app, "fresh"))
    fresh = await later_publish(app, bob, "fresh")
    assert publishes_before(app, fresh, "doomed") == [note.stanza], (
        "the refused registration was notified again:\n%s"
        % app.inbox.describe(app.inbox.seen))
    await answered(app, fresh)
    assert "registration" in server.log and "disabled" in server.log


async def test_wait_error_keeps_the_registration(server, net):
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server, node="busy")
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "one")
    note = await next_publish(app, "busy")
    await answered(app, note, ("wait", "resource-constraint"))
    message(bob, ALICE, "two")
    again = await next_publish(app, "busy")
    assert again.count == 2
    await answered(app, again)


async def test_no_answer_keeps_the_registration(server, net):
    """A notification the app server never answers times out (30 s,
    iqreq.h); the registration stays and what was folded meanwhile goes
    then. A late answer to the expired request changes nothing."""
    app = await connect(net, server, "pushsvc", "app")
    await phone(net, server, node="slow")
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "one")
    first = await next_publish(app, "slow")
    message(bob, ALICE, "two")
    await bob.barrier()
    later = await next_publish(app, "slow", timeout=IQREQ_TIMEOUT + 15)
    assert later.count == 2, later.summary
    assert "no answer from %s" % APP in server.log
    answer(app, first)
    await answered(app, later)
    message(bob, ALICE, "three")
    last = await next_publish(app, "slow")
    assert last.count == 3
    await answered(app, last)


@pytest.mark.parametrize("key,value", [
    ("include_body", "sometimes"), ("include_sender", "yes"),
    ("max_registrations", 0), ("max_registrations", 33),
    ("min_interval", -1), ("enabled", "maybe")])
def test_bad_push_keys_reported_with_file_and_line(natter_factory, key,
                                                    value):
    server = natter_factory(start=False, hosts=[
        {"domain": "localhost", "push": {key: value}}])
    proc = check_config(server.config_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    text = server.config_path.read_text()
    where = "%s:%d:" % (server.config_path, line_of(text, key + ":"))
    assert where in proc.stderr, "expected %r in:\n%s" % (where,
                                                          proc.stderr)


async def test_registrations_survive_a_restart(natter_factory, net):
    server = accounts(natter_factory(), "alice", "bob", "pushsvc")
    await phone(net, server, node="kept", fields={"secret": "k"})
    server = restart_on_same_data(natter_factory, server, keep_config=True)
    app = await connect(net, server, "pushsvc", "app")
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "after the restart")
    note = await next_publish(app, "kept")
    assert note.options["secret"] == ["k"]
    await answered(app, note)


@pytest.mark.natter_config(**push_host(max_registrations=2))
async def test_bad_enable_and_disable_requests(server, net):
    alice = await connect(net, server, "alice", "phone")
    cases = [
        (enable_xml(jid=None), "bad-request"),
        (enable_xml(node=None), "bad-request"),
        (enable_xml(node=""), "bad-request"),
        (enable_xml(jid="@bad@"), "jid-malformed"),
        (enable_xml(jid=ALICE), "bad-request"),
        (enable_xml(fields={"secret": "s"}, form_type="urn:example:other"),
         "bad-request"),
        (enable_xml(fields={"secret": "s"}, ftype="form"), "bad-request"),
        (enable_xml(node="n" * 1024), "not-acceptable"),
        (enable_xml(fields={"secret": "s" * 5000}), "not-acceptable"),
        ("<disable xmlns='%s'/>" % NS_PUSH, "bad-request"),
    ]
    for payload, condition in cases:
        err = await iq_error(alice, None, payload, "set")
        assert error_condition(err) == condition, (payload[:200], err)
    # Someone else's account: forbidden.
    err = await iq_error(alice, BOB, enable_xml(), "set")
    assert error_condition(err) == "forbidden"

    await enable(alice, node="n1")
    await enable(alice, node="n2")
    err = await iq_error(alice, None, enable_xml(node="n3"), "set")
    # slixmpp knows RFC 3920's conditions only: read the element itself.
    error = err.xml.find(q(NS_CLIENT, "error"))
    assert error.find(q(NS_STANZAS, "policy-violation")) is not None, \
        ET.tostring(err.xml)
    assert error.get("type") == "modify"
    # Updating one already there is no new registration.
    await enable(alice, node="n2", fields={"secret": "new"})
    await disable(alice, node="n1")
    await enable(alice, node="n3")
    await net.assert_served(server)


@pytest.mark.natter_config(allow_registration=True, registration_interval=0)
async def test_account_deletion_removes_registrations(server, net):
    app = await connect(net, server, "pushsvc", "app")
    alice = await connect(net, server, "alice", "phone")
    await enable(alice, node="old")
    try:
        await alice.iq("localhost", "<query xmlns='%s'><remove/></query>"
                       % NS_REGISTER, "set")
    except AssertionError:
        pass    # XEP-0077 3.2: the stream may close before the result
    await alice.wait_closed()
    server.add_user(ALICE, "alice-secret")
    await phone(net, server, node="new")
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "hello again")
    note = await next_publish(app, "new")
    assert note.count == 1
    await answered(app, note)
    note = await later_publish(app, bob, "new")
    assert not publishes_before(app, note, "old"), app.inbox.describe(
        app.inbox.seen)
    await answered(app, note)


async def sm_login(net, server, name, resource):
    """A slixmpp session with its stream management plugin (XEP-0198, at
    its defaults: resumable), once stream management is enabled."""
    client = XmppClient("%s@localhost/%s" % (name, resource),
                        name + "-secret", mechanism="SCRAM-SHA-256")
    client.register_plugin("xep_0198")
    enabled = asyncio.get_running_loop().create_future()
    client.add_event_handler(
        "sm_enabled", lambda e: enabled.done() or enabled.set_result(e))
    net._open.append(client)
    client.connect(("127.0.0.1", server.c2s_port))
    kind, detail = await asyncio.wait_for(asyncio.shield(client._outcome),
                                          IO_TIMEOUT)
    assert kind == "ok", (kind, detail)
    await asyncio.wait_for(enabled, IO_TIMEOUT)
    return client


async def test_message_queued_for_a_detached_session_notifies_its_registration(
        server, net):
    app = await connect(net, server, "pushsvc", "app")
    # A registration enabled by a session that is gone: not this path's.
    await phone(net, server, node="other-device")
    alice = await sm_login(net, server, "alice", "phone")
    await enable(alice, node="this-device", fields={"secret": "t"})
    await alice.available()
    mark = server.log_mark()
    drop_connection(alice)
    await server.await_log("detached", since=mark)
    bob = await connect(net, server, "bob")
    message(bob, ALICE, "while you were away")
    note = await next_publish(app, "this-device")
    assert note.options["secret"] == ["t"]
    assert note.count == 1
    await answered(app, note)
    message(bob, ALICE + "/phone", "again")
    later = await next_publish(app, "this-device")
    assert later.count == 2
    assert not publishes_before(app, later, "other-device"), (
        "only the registration the detached session enabled:\n%s"
        % app.inbox.describe(app.inbox.seen))
    await answered(app, later)


async def test_count_starts_again_when_a_detached_session_resumes(
        server, net):
    """A resumed session came online again: what it missed is fetched, so
    the next notification after a later cut counts from one."""
    app = await connect(net, server, "pushsvc", "app")
    resumed = asyncio.get_running_loop().create_future()
    alice = await sm_login(net, server, "alice", "phone")
    alice.add_event_handler(
        "session_resumed", lambda e: resumed.done() or resumed.set_result(e))
    await enable(alice, node="this-device")
    await alice.available()
    bob = await connect(net, server, "bob")
    mark = server.log_mark()
    drop_connection(alice)
    await server.await_log("detached", since=mark)
    for body in ("one", "two"):
        message(bob, ALICE + "/phone", body)
        note = await next_publish(app, "this-device")
        await answered(app, note)
    assert note.count == 2, note.summary
    alice.connect(("127.0.0.1", server.c2s_port))
    await asyncio.wait_for(resumed, IO_TIMEOUT)
    mark = server.log_mark()
    drop_connection(alice)
    await server.await_log("detached", since=mark)
    message(bob, ALICE + "/phone", "three")
    note = await next_publish(app, "this-device")
    assert note.count == 1, (
        "counted from the resumption, not from the first cut: %r"
        % note.summary)
    await answered(app, note)

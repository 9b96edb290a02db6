import asyncio
"""Routing between local sessions (RFC 6120 section 10, RFC 6121 section 8),
'from' stamping, pings (XEP-0199) both ways and idle detection.

Absence of a delivery is shown without waiting for a timeout: the sender
follows the stanza under test with a marker addressed to the same session,
and the session's next stanza must be the marker.  One sender's stanzas
are routed in order, so anything delivered by mistake would come first.
"""

import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from natterlib import (
    NS_CLIENT, NS_PING, q, raw_login, stanza_condition, stanza_error_condition)

ALICE, ALICE_PW = "alice@localhost", "alice-secret"
BOB, BOB_PW = "bob@localhost", "bob-secret"


@pytest.fixture
def accounts(natter):
    natter.add_user(ALICE, ALICE_PW)
    natter.add_user(BOB, BOB_PW)
    return natter


def send(client, to, body, msg_id, mtype="chat"):
    msg = client.make_message(mto=to, mbody=body, mtype=mtype)
    msg["id"] = msg_id
    msg.send()


async def expect_marker(client, marker_id):
    msg = await client.next_message()
    assert msg["id"] == marker_id, (
        "%s got %s (%r) where only the marker was due"
        % (client.boundjid, msg["id"], msg["body"]))


async def test_two_accounts_exchange_messages(accounts, net):
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    await alice.available()
    bob = await net.login(accounts, BOB + "/b", BOB_PW)

    send(alice, BOB + "/b", "hello bob", "m1")
    msg = await bob.next_message()
    assert (msg["id"], msg["body"], msg["type"]) == ("m1", "hello bob",
                                                     "chat")
    assert msg["from"].full == ALICE + "/a"
    assert msg["to"].full == BOB + "/b"

    send(bob, ALICE, "hello alice", "m2")
    msg = await alice.next_message()
    assert (msg["id"], msg["body"]) == ("m2", "hello alice")
    assert msg["from"].full == BOB + "/b"


async def test_idle_sessions_still_served(accounts, net):
    """An idle session gives its XML parser back after two seconds and gets
    a new one, with its stream context, at its next stanza. The wait is the
    behaviour under test (idleness), not synchronisation."""
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    await alice.available()
    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    await asyncio.sleep(3.5)
    assert "parser released" in accounts.log
    send(bob, ALICE + "/a", "after a pause", "m3")
    msg = await alice.next_message()
    assert (msg["id"], msg["body"]) == ("m3", "after a pause")
    send(alice, BOB + "/b", "and back", "m4")
    msg = await bob.next_message()
    assert (msg["id"], msg["body"]) == ("m4", "and back")


async def test_same_full_jid_replaces_old_session(accounts, net):
    first = await net.login(accounts, ALICE + "/same", ALICE_PW)
    second = await net.login(accounts, ALICE + "/same", ALICE_PW)
    assert second.boundjid.full == ALICE + "/same"

    error = await first.next_stream_error()
    assert error["condition"] == "conflict"
    await first.wait_closed()

    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    send(bob, ALICE + "/same", "to the new session", "m1")
    msg = await second.next_message()
    assert msg["id"] == "m1"
    assert not second.closed


async def test_bare_jid_goes_to_highest_priority_resources(accounts, net):
    sessions = {}
    for resource, priority in (("a", 5), ("b", 5), ("c", 1), ("d", -1)):
        client = await net.login(accounts, "%s/%s" % (ALICE, resource),
                                 ALICE_PW)
        await client.available(priority=priority)
        sessions[resource] = client
    bob = await net.login(accounts, BOB + "/b", BOB_PW)

    send(bob, ALICE, "to the bare jid", "bare-1")
    send(bob, ALICE + "/c", "marker", "marker-c")
    send(bob, ALICE + "/d", "marker", "marker-d")

    for resource in ("a", "b"):  # tied highest priority: both get it
        msg = await sessions[resource].next_message()
        assert msg["id"] == "bare-1", resource
        assert msg["from"].full == BOB + "/b"
    await expect_marker(sessions["c"], "marker-c")
    await expect_marker(sessions["d"], "marker-d")


async def test_negative_priority_resource_gets_no_bare_jid_messages(
        accounts, net):
    alice = await net.login(accounts, ALICE + "/shy", ALICE_PW)
    await alice.available(priority=-1)
    bob = await net.login(accounts, BOB + "/b", BOB_PW)

    send(bob, ALICE, "to the bare jid", "bare-1")
    send(bob, ALICE + "/shy", "marker", "marker")
    await expect_marker(alice, "marker")


async def test_priority_change_moves_bare_jid_delivery(accounts, net):
    one = await net.login(accounts, ALICE + "/one", ALICE_PW)
    two = await net.login(accounts, ALICE + "/two", ALICE_PW)
    await one.available(priority=10)
    await two.available(priority=1)
    bob = await net.login(accounts, BOB + "/b", BOB_PW)

    send(bob, ALICE, "first", "bare-1")
    assert (await one.next_message())["id"] == "bare-1"

    await two.available(priority=20)
    send(bob, ALICE, "second", "bare-2")
    send(bob, ALICE + "/one", "marker", "marker-one")
    assert (await two.next_message())["id"] == "bare-2"
    await expect_marker(one, "marker-one")


@pytest.mark.parametrize("mtype", ["chat", "normal"])
async def test_offline_full_jid_falls_back_to_bare_jid(accounts, net,
                                                       mtype):
    alice = await net.login(accounts, ALICE + "/home", ALICE_PW)
    await alice.available(priority=0)
    bob = await net.login(accounts, BOB + "/b", BOB_PW)

    send(bob, ALICE + "/gone", "are you there?", "m1", mtype=mtype)
    msg = await alice.next_message()
    assert (msg["id"], msg["body"]) == ("m1", "are you there?")
    assert msg["from"].full == BOB + "/b"


async def test_iq_to_offline_full_jid_is_service_unavailable(accounts, net):
    await net.login(accounts, ALICE + "/home", ALICE_PW)
    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    with pytest.raises(IqError) as error:
        await bob.ping(ALICE + "/gone")
    assert stanza_condition(error.value.iq) == "service-unavailable"


async def test_message_to_unknown_account_bounces(accounts, net):
    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    send(bob, "nobody@localhost", "anyone?", "lost-1")
    reply = await bob.next_message()
    assert reply["type"] == "error"
    assert reply["id"] == "lost-1"
    assert reply["error"]["condition"] == "service-unavailable"
    assert reply["from"].bare == "nobody@localhost"


async def test_iq_to_unknown_account_is_service_unavailable(accounts, net):
    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    with pytest.raises(IqError) as error:
        await bob.ping("nobody@localhost")
    assert stanza_condition(error.value.iq) == "service-unavailable"


@pytest.mark.parametrize("sender", ["bob", "alice"])
async def test_iq_to_bare_jid_answered_by_server(accounts, net, sender):
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    await alice.available(priority=5)
    asker = alice
    if sender == "bob":
        asker = await net.login(accounts, BOB + "/b", BOB_PW)

    # A ping to the bare JID is answered from the bare JID, not by the
    # resource (which would answer from its full JID).
    reply = await asker.ping(ALICE)
    assert reply["type"] == "result"
    assert reply["from"].full in ("", ALICE)

    # An unknown namespace gets service-unavailable from the server; the
    # resource's own client would have answered feature-not-implemented.
    with pytest.raises(IqError) as error:
        await asker.iq(ALICE, "<query xmlns='urn:example:unknown'/>")
    assert stanza_condition(error.value.iq) == "service-unavailable"
    assert error.value.iq["from"].full in ("", ALICE)
    assert alice.server_pings.empty()


@pytest.mark.parametrize("forged", [
    BOB + "/b", "admin@localhost", "localhost", "mallory@evil.example/x",
    ALICE + "/not-mine"])
async def test_forged_from_is_replaced(accounts, net, forged):
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    alice.send_raw("<message from='%s' to='%s/b' id='forged' type='chat'>"
                   "<body>trust me</body></message>" % (forged, BOB))
    msg = await bob.next_message()
    assert msg["id"] == "forged"
    assert msg["from"].full == ALICE + "/a"


async def test_ping_server(accounts, net):
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    reply = await alice.ping("localhost")
    assert reply["type"] == "result"
    assert reply["from"].full in ("", "localhost")


@pytest.mark.natter_config(limits={"idle_timeout": 1, "ping_timeout": 2})
async def test_server_pings_idle_client_that_answers(accounts, net):
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    first = await alice.next_server_ping()
    assert first["from"].full in ("", "localhost")
    # A second ping means the answer to the first kept the session; a
    # session closed for not answering would not be pinged again.
    await alice.next_server_ping()
    assert not alice.closed
    assert (await alice.ping())["type"] == "result"


@pytest.mark.natter_config(limits={"idle_timeout": 1, "ping_timeout": 1})
async def test_idle_client_that_never_answers_is_closed(accounts, net):
    stream = await net.raw_login(accounts, ALICE, ALICE_PW)
    elements = await stream.read_until_closed(timeout=30)
    pings = [e for e in elements if e.tag == q(NS_CLIENT, "iq") and
             e.find(q(NS_PING, "ping")) is not None]
    assert pings, "closed without pinging first:\n%s" % stream.describe()
    await net.assert_served(accounts)


async def test_whitespace_keepalives_are_accepted(accounts, net):
    stream = await net.raw_login(accounts, ALICE, ALICE_PW)
    for blank in (" ", "\n", "\r\n\t ", " " * 100):
        await stream.send(blank)
    await stream.ping_server("after-blanks")
    # ...also between the halves of a stanza's delivery.
    await stream.send("  <iq type='get' id='split' to='localhost'>")
    await stream.send("<ping xmlns='%s'/></iq>  " % NS_PING)
    reply = await stream.next()
    assert reply is not None and reply.get("id") == "split", \
        stream.describe()
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")


async def test_message_to_own_full_jid(accounts, net):
    stream = await net.raw_login(accounts, ALICE, ALICE_PW, resource="me")
    await stream.send("<message to='%s/me' id='self-1'><body>note</body>"
                      "</message>" % ALICE)
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.get("id") == "self-1"
    assert msg.get("from") == ALICE + "/me"
    assert stanza_error_condition(msg) is None


async def test_responses_are_never_answered(accounts):
    """RFC 6120 8.2.3: an iq of type result or error gets no answer, even
    without an id (natterd used to answer with bad-request, for an error
    one even with two <error/> children); an iq get without an id still
    gets bad-request."""
    alice = await raw_login(accounts.c2s_port, ALICE, ALICE_PW, resource="r")
    for to in ("localhost", ALICE, "conference.localhost"):
        await alice.send("<iq type='error' to='%s'><error type='cancel'>"
                         "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                         "</error></iq>" % to)
        await alice.send("<iq type='result' to='%s'/>" % to)
    await alice.send("<iq type='get' to='localhost'><ping xmlns='%s'/></iq>" % NS_PING)
    reply = await alice.next()
    assert reply.get("type") == "error" and reply.get("id") is None
    assert stanza_error_condition(reply) == "bad-request"
    assert len(reply.findall(q(NS_CLIENT, "error"))) == 1
    pong = await alice.ping_server("after-responses")
    assert pong.get("id") == "after-responses"


async def test_element_in_the_xml_namespace_reaches_the_recipient(accounts, net):
    """An element in the XML namespace (the xml: prefix) inside a message:
    natterd used to write it with that namespace as the default one, which
    no parser accepts, and the recipient's stream broke. It arrives, and
    the recipient's stream carries the next message too."""
    alice = await net.login(accounts, ALICE + "/a", ALICE_PW)
    bob = await net.login(accounts, BOB + "/b", BOB_PW)
    alice.send_raw("<message to='%s/b' id='x1' type='chat'><body>odd</body>"
                   "<xml:note xml:lang='en'><inner/></xml:note></message>" % BOB)
    msg = await bob.next_message()
    assert (msg["id"], msg["body"]) == ("x1", "odd")
    note = msg.xml.find("{http://www.w3.org/XML/1998/namespace}note")
    assert note is not None, ET.tostring(msg.xml)
    assert note.find("{%s}inner" % NS_CLIENT) is not None, ET.tostring(msg.xml)
    send(alice, BOB + "/b", "after", "x2")
    msg = await bob.next_message()
    assert (msg["id"], msg["body"]) == ("x2", "after")

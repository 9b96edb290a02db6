"""natter's users in chat rooms on other servers (issue 11): rooms on
Prosody's muc component and on ejabberd's mod_muc, each on
conference.<peer> (fedlib.MUC_SERVICES), reached over s2s like any remote
domain.  natter has nothing MUC-specific to do here: the join is directed
presence, the chat is messages, and a session that ends sends unavailable
to what it sent directed presence to (RFC 6121 4.6.3).

Raw stanzas throughout, so that what is asserted is XEP-0045's wire
format; the helpers that read it come from test_muc.  Run under
`flock /tmp/natter-fed.lock` like test_interop.py."""


import pytest

import fedlib
from fedlib import NATTER_A, diagnose, fed_connect, unique_name
from imlib import accounts, connect, drop_connection, pres
from natterlib import NS_CLIENT, q
from test_interop import natter, peer  # noqa: F401 (fixtures)
from test_muc import (
    NS_DATA, NS_MUC, NS_MUC_OWNER, body_of, describe, from_room, is_subject,
    item_of, status_codes)

# s2s links to a service are made on first use; a join may wait for one
# (DNS, TCP, TLS, SASL EXTERNAL or dialback) each way.
TIMEOUT = 20


def fresh_room(peer):
    return "%s@%s" % (unique_name("room"), peer.muc_domain)


async def enter(client, room, nick):
    """Joins room as nick (XEP-0045 7.2.2); returns the own presence
    (status 110).  A room the join created (status 201) may be locked
    until its owner accepts the default configuration (10.1.2, Prosody
    locks them): the instant-room form is submitted then.  The join ends
    with the subject message (7.2.15), which is awaited too."""
    client.send_raw("<presence to='%s/%s'><x xmlns='%s'/></presence>"
                    % (room, nick, NS_MUC))
    me = "%s/%s" % (room, nick)
    own = await client.inbox.get(
        lambda s: (pres(frm=me)(s) and 110 in status_codes(s))
        or (from_room(room)(s) and s.xml.get("type") == "error"),
        "own presence with status 110 from %s (XEP-0045 7.2.3)" % me,
        timeout=TIMEOUT)
    assert own.xml.get("type") is None, "join refused:\n" + describe(own)
    if 201 in status_codes(own):
        await client.iq(room, "<query xmlns='%s'><x xmlns='%s' type='submit'/>"
                        "</query>" % (NS_MUC_OWNER, NS_DATA), "set",
                        timeout=TIMEOUT)
    await client.inbox.get(lambda s: from_room(room)(s) and is_subject(s),
                           "subject message ending the join of %s" % me,
                           timeout=TIMEOUT)
    return own


def groupchat(body):
    return lambda s: (s.xml.tag == q(NS_CLIENT, "message")
                      and s.xml.get("type") == "groupchat"
                      and body_of(s) == body)


async def said(client, frm, body):
    """The groupchat message body from frm (room/nick), as client gets it."""
    return await client.inbox.get(
        lambda s: groupchat(body)(s) and s.xml.get("from") == frm,
        "groupchat %r from %s" % (body, frm), timeout=TIMEOUT)


async def test_natter_user_uses_remote_room(natter, peer, net, dns):
    """A natter user creates a room on the peer's service, chats in it
    with one of the peer's users, sets the subject and leaves."""
    name = unique_name("alice")
    accounts(natter, name)
    room = fresh_room(peer)
    async with diagnose(natter, peer, dns=dns):
        alice = await connect(net, natter, name, available=True)
        own = await enter(alice, room, "alice")
        assert 201 in status_codes(own), (
            "the first one in creates the room (XEP-0045 10.1.1):\n"
            + describe(own))
        assert item_of(own) and item_of(own).get("affiliation") == "owner", \
            describe(own)
        alice.send_raw("<message to='%s' type='groupchat' id='a1'>"
                       "<body>hello from natter</body></message>" % room)
        await said(alice, room + "/alice", "hello from natter")

        bob = await fed_connect(net, peer, unique_name("bob"), available=True)
        await enter(bob, room, "bob")
        await alice.inbox.get(pres(frm=room + "/bob", type="available"),
                              "bob's join seen by alice", timeout=TIMEOUT)
        bob.send_raw("<message to='%s' type='groupchat' id='b1'>"
                     "<body>hello from %s</body></message>" % (room, peer.name))
        await said(alice, room + "/bob", "hello from " + peer.name)
        await said(bob, room + "/bob", "hello from " + peer.name)

        # Private messages through the room (XEP-0045 7.5), each way.
        bob.send_raw("<message to='%s/alice' type='chat' id='pm1'>"
                     "<body>psst</body></message>" % room)
        got = await alice.inbox.get(
            lambda s: s.xml.tag == q(NS_CLIENT, "message")
            and s.xml.get("from") == room + "/bob" and body_of(s) == "psst",
            "bob's private message from %s/bob" % room, timeout=TIMEOUT)
        assert got.xml.get("type") == "chat", describe(got)
        alice.send_raw("<message to='%s/bob' type='chat' id='pm2'>"
                       "<body>psst back</body></message>" % room)
        await bob.inbox.get(
            lambda s: s.xml.tag == q(NS_CLIENT, "message")
            and s.xml.get("from") == room + "/alice"
            and body_of(s) == "psst back",
            "alice's private message from %s/alice" % room, timeout=TIMEOUT)

        alice.send_raw("<message to='%s' type='groupchat' id='s1'>"
                       "<subject>natter was here</subject></message>" % room)
        for who in (alice, bob):
            got = await who.inbox.get(
                lambda s: from_room(room)(s) and is_subject(s)
                and s.xml.get("from") == room + "/alice",
                "subject change by alice", timeout=TIMEOUT)
            assert got.xml.findtext(q(NS_CLIENT, "subject")) == \
                "natter was here", describe(got)

        alice.send_raw("<presence to='%s/alice' type='unavailable'/>" % room)
        gone = await alice.inbox.get(
            lambda s: pres(frm=room + "/alice", type="unavailable")(s)
            and 110 in status_codes(s),
            "own unavailable with status 110 (XEP-0045 7.14)",
            timeout=TIMEOUT)
        assert item_of(gone) and item_of(gone).get("role") == "none", \
            describe(gone)
        await bob.inbox.get(pres(frm=room + "/alice", type="unavailable"),
                            "alice's leaving seen by bob", timeout=TIMEOUT)
        # The room spoke over links of its own domain, both ways.
        await natter.await_log("s2s %s -> %s: authenticated with"
                               % (NATTER_A, peer.muc_domain))
        await natter.await_log("%s verified for %s with"
                               % (peer.muc_domain, NATTER_A))
        links = natter.ctl("s2s", check=True).stdout
        print("\nnatterctl s2s:\n" + links)
        rows = [line.split() for line in links.splitlines()
                if line.split() and line.split()[0] == peer.muc_domain]
        assert {row[1] for row in rows} == {"in", "out"}, links


@pytest.mark.parametrize("how", ["dropped", "unavailable"])
async def test_session_end_leaves_remote_room(natter, peer, net, dns, how):
    """A natter session that ends without leaving the room (its
    connection reset), or goes unavailable without addressing the room,
    is taken out of the peer's room: natterd sends the unavailable the
    client did not to the occupant JID it sent directed presence to
    (RFC 6121 4.6.3)."""
    name = unique_name("alice")
    accounts(natter, name)
    room = fresh_room(peer)
    async with diagnose(natter, peer, dns=dns):
        bob = await fed_connect(net, peer, unique_name("bob"), available=True)
        await enter(bob, room, "bob")
        alice = await connect(net, natter, name, available=True)
        own = await enter(alice, room, "alice")
        assert 201 not in status_codes(own), describe(own)
        await bob.inbox.get(pres(frm=room + "/alice", type="available"),
                            "alice's join seen by bob", timeout=TIMEOUT)
        if how == "dropped":
            drop_connection(alice)          # a reset, no goodbye
        else:
            alice.send_raw("<presence type='unavailable'/>")
        seen = await bob.inbox.get(
            pres(frm=room + "/alice", type="unavailable"),
            "alice's unavailable after her session %s" % how,
            timeout=TIMEOUT)
        assert item_of(seen) and item_of(seen).get("role") == "none", \
            describe(seen)


async def test_remote_user_in_natter_room(natter_factory, test_ca, peer, net, dns):
    """A user of the peer joins a room of natter's chat service, chats with
    a natter user there and leaves: conference.natter-a links with a
    certificate that names it, like the peer's service (docs/muc.md)."""
    service = "conference." + NATTER_A
    cert = test_ca.issue(NATTER_A, names=[NATTER_A, service], label="muc-" + NATTER_A)
    natter = natter_factory(
        extra_listeners=[fedlib.s2s_listener(NATTER_A)],
        hosts=[{"domain": NATTER_A, "tls_cert": str(cert.chain), "tls_key": str(cert.key)}],
        s2s={"enabled": True, "ca_file": str(test_ca.ca_file), "connect_timeout": 10},
        dns={"resolver": dns.resolver})
    name = unique_name("alice")
    accounts(natter, name)
    room = "%s@%s" % (unique_name("team"), service)
    with dns.changed():
        dns.add_srv(service, "s2s." + NATTER_A)
        dns.apply()
        async with diagnose(natter, peer, dns=dns):
            alice = await connect(net, natter, name, available=True)
            await enter(alice, room, "alice")
            bob = await fed_connect(net, peer, unique_name("bob"))
            await enter(bob, room, "bob")
            await alice.inbox.get(pres(frm=room + "/bob"), "bob's join, as alice sees it",
                                  timeout=TIMEOUT)
            alice.send_raw("<message to='%s' type='groupchat'><body>hello bob</body>"
                           "</message>" % room)
            await said(bob, room + "/alice", "hello bob")
            bob.send_raw("<message to='%s' type='groupchat'><body>hello alice</body>"
                         "</message>" % room)
            await said(alice, room + "/bob", "hello alice")
            bob.send_raw("<presence to='%s/bob' type='unavailable'/>" % room)
            await alice.inbox.get(pres(frm=room + "/bob", type="unavailable"),
                                  "bob left, as alice sees it", timeout=TIMEOUT)

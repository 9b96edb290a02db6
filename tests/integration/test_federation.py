"""Federation between two natterd (issue 6): SRV lookup through a real DNS
server (dnsmasq), certificates from a test CA (SASL EXTERNAL), dialback
without them, the forged-'from' check, allow/deny lists, bounces, and a
remote server that hangs.  Interop with Prosody and ejabberd is in
test_interop.py.

Each natter has its own loopback address (fedlib.ADDRESSES) with s2s on
port 5269 there; the DNS server publishes _xmpp-server._tcp SRV records
for them (fedlib.standard_records)."""

import asyncio
import socket
import ssl
import base64

import pytest

import fedlib
from fedlib import NATTER_A, NATTER_B, ADDRESSES, diagnose
from imlib import (accounts, connect, error_condition, msg, pres, roster_get,
                   send_available, subscribe)


def natter_config(test_ca, dns, domain, *, certificate=True, **s2s):
    """The overrides for one federating natterd of domain; certificate is
    True (the test CA's, with a DNS-ID), False (self-signed) or a
    fedlib.CertPair."""
    host = {"domain": domain}
    if certificate:
        pair = test_ca.cert_for(domain) if certificate is True else certificate
        host["tls_cert"] = str(pair.chain)
        host["tls_key"] = str(pair.key)
    s2s_section = {"enabled": True, "ca_file": str(test_ca.ca_file),
                   "connect_timeout": 5}
    s2s_section.update(s2s)
    return {"hosts": [host], "s2s": s2s_section, "dns": {"resolver": dns.resolver}}


def start_natter(natter_factory, test_ca, dns, domain, **kwargs):
    return natter_factory(extra_listeners=[fedlib.s2s_listener(domain)],
                          **natter_config(test_ca, dns, domain, **kwargs))


@pytest.fixture
def pair(natter_factory, test_ca, dns):
    a = start_natter(natter_factory, test_ca, dns, NATTER_A)
    b = start_natter(natter_factory, test_ca, dns, NATTER_B)
    accounts(a, "alice")
    accounts(b, "bob")
    return a, b


async def exchange(alice, bob, tag):
    alice.send_raw("<message to='%s' id='%s-ab' type='chat'><body>hi</body></message>"
                   % (bob.boundjid.full, tag))
    await bob.inbox.get(msg(id=tag + "-ab", frm=alice.boundjid.full), "alice -> bob")
    bob.send_raw("<message to='%s' id='%s-ba' type='chat'><body>hi</body></message>"
                 % (alice.boundjid.full, tag))
    await alice.inbox.get(msg(id=tag + "-ba", frm=bob.boundjid.full), "bob -> alice")


async def test_messages_both_ways_with_sasl_external(pair, net, dns):
    a, b = pair
    async with diagnose(a, b, dns=dns):
        alice = await connect(net, a, "alice")
        bob = await connect(net, b, "bob")
        await exchange(alice, bob, "ext")
        await a.await_log("s2s %s -> %s: authenticated with EXTERNAL" % (NATTER_A, NATTER_B))
        await b.await_log("s2s %s -> %s: authenticated with EXTERNAL" % (NATTER_B, NATTER_A))
        await a.await_log("%s verified for %s with EXTERNAL" % (NATTER_B, NATTER_A))
        queries = [q for q in dns.queries()]
        assert ("SRV", "_xmpp-server._tcp." + NATTER_B) in queries, queries


async def test_subscription_and_presence_across_domains(pair, net):
    a, b = pair
    async with diagnose(a, b):
        alice = await connect(net, a, "alice", roster=True, available=True)
        bob = await connect(net, b, "bob", roster=True, available=True)
        await subscribe(alice, bob)
        # Approved: bob's presence reaches alice (RFC 6121 §3.1.6).
        await alice.inbox.get(pres(frm=bob.boundjid.full), "bob's presence after approval")
        _, items = await roster_get(alice)
        assert items[bob.boundjid.bare]["subscription"] == "to", items
        await subscribe(bob, alice)
        await bob.inbox.get(pres(frm=alice.boundjid.full), "alice's presence after approval")
        # A change of presence goes across.
        await send_available(bob, show="away")
        await alice.inbox.get(pres(frm=bob.boundjid.full), "bob away")
        # A new session of alice probes bob's server and hears he is online.
        alice2 = await connect(net, a, "alice", resource="second", available=True)
        await alice2.inbox.get(pres(frm=bob.boundjid.full), "probe answer from bob's server")
        # Unavailable on logout crosses too.
        await bob.close()
        await alice.inbox.get(pres(frm=bob.boundjid.full, type="unavailable"),
                              "bob unavailable")


async def test_dialback_without_certificates(natter_factory, test_ca, dns, net):
    # Self-signed certificates: nothing verifies, so dialback (with a
    # callback to the authoritative server) it is.
    a = start_natter(natter_factory, test_ca, dns, NATTER_A, certificate=False)
    b = start_natter(natter_factory, test_ca, dns, NATTER_B, certificate=False)
    accounts(a, "alice")
    accounts(b, "bob")
    async with diagnose(a, b, dns=dns):
        alice = await connect(net, a, "alice")
        bob = await connect(net, b, "bob")
        await exchange(alice, bob, "db")
        await a.await_log("s2s %s -> %s: authenticated with dialback" % (NATTER_A, NATTER_B))
        await b.await_log("%s verified for %s with dialback" % (NATTER_A, NATTER_B))
        out = a.ctl("s2s", check=True).stdout
        assert NATTER_B in out and "dialback" in out, out


async def test_certificate_policy_refuses_dialback(natter_factory, test_ca, dns, net):
    a = start_natter(natter_factory, test_ca, dns, NATTER_A, certificate=False)
    b = start_natter(natter_factory, test_ca, dns, NATTER_B,
                     remotes=[{"domain": NATTER_A, "auth": "certificate"}])
    accounts(a, "alice")
    accounts(b, "bob")
    async with diagnose(a, b):
        alice = await connect(net, a, "alice")
        alice.send_raw("<message to='bob@%s' id='pol' type='chat'><body>x</body></message>"
                       % NATTER_B)
        err = await alice.inbox.get(msg(id="pol", type="error"), "bounce")
        assert error_condition(err) == "remote-server-not-found", err


async def test_unresolvable_domain_bounces(pair, net):
    a, _ = pair
    alice = await connect(net, a, "alice")
    alice.send_raw("<message to='x@nowhere.fedtest' id='nx' type='chat'><body>x</body></message>")
    err = await alice.inbox.get(msg(id="nx", type="error"), "bounce")
    assert error_condition(err) == "remote-server-not-found", err


async def test_directed_presence_to_unresolvable_domain_gets_error(pair, net):
    """A MUC join is directed presence: to a domain that cannot be reached
    it gets <presence type='error'/> (issue 10, item 11; aioxmpp waited
    18 minutes for an answer that never came)."""
    a, _ = pair
    alice = await connect(net, a, "alice", available=True)
    alice.send_raw("<presence to='room@conference.nowhere.fedtest/alice' id='join'>"
                   "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    err = await alice.inbox.get(pres(type="error"), "presence error")
    assert err.xml.get("from") == "room@conference.nowhere.fedtest/alice", err
    assert error_condition(err) == "remote-server-not-found", err
    await a.await_log("1 stanza(s) bounced with <remote-server-not-found/>, 0 dropped")


async def test_broadcast_to_dead_server_is_silent_directed_bounces(pair, net):
    """With bob's server gone, alice's presence broadcast reaches nobody
    and says nothing; her directed presence to a room there bounces."""
    a, b = pair
    async with diagnose(a, b):
        alice = await connect(net, a, "alice", roster=True, available=True)
        bob = await connect(net, b, "bob", roster=True, available=True)
        await subscribe(alice, bob)
        await subscribe(bob, alice)
        await alice.inbox.get(pres(frm=bob.boundjid.full), "bob's presence")
        assert b.stop() == []
        await alice.inbox.get(pres(frm=bob.boundjid.full, type="unavailable"),
                              "bob unavailable when the link went", timeout=20)
        mark = a.log_mark()
        await send_available(alice, show="away")
        alice.send_raw("<presence to='room@%s/alice' id='join'/>" % NATTER_B)
        err = await alice.inbox.get(pres(type="error"), "presence error",
                                    timeout=20)
        assert err.xml.get("from") == "room@%s/alice" % NATTER_B, err
        assert error_condition(err) in ("remote-server-not-found",
                                        "remote-server-timeout"), err
        await a.await_log("dropped", since=mark, timeout=20)
        assert not alice.inbox.find(pres(type="error", frm_bare=bob.boundjid.bare)), \
            alice.inbox.describe()


async def test_peer_shutdown_is_logged_as_link_closed(pair, net):
    """natterd ends its links with <system-shutdown/> when it stops; the
    other side logs a link that closed, not one it could not make
    (issue 10, item 13)."""
    a, b = pair
    async with diagnose(a, b):
        alice = await connect(net, a, "alice")
        bob = await connect(net, b, "bob")
        await exchange(alice, bob, "sd")
        mark = a.log_mark()
        assert b.stop() == []
        text = await a.await_log("link closed: stream error <system-shutdown/>",
                                 since=mark, timeout=20)
        assert "cannot link: stream error" not in text[mark:], text[mark:]


async def test_deny_list(natter_factory, test_ca, dns, net):
    a = start_natter(natter_factory, test_ca, dns, NATTER_A, deny=NATTER_B)
    b = start_natter(natter_factory, test_ca, dns, NATTER_B)
    accounts(a, "alice")
    accounts(b, "bob")
    async with diagnose(a, b):
        alice = await connect(net, a, "alice")
        bob = await connect(net, b, "bob")
        alice.send_raw("<message to='%s' id='deny-out' type='chat'><body>x</body></message>"
                       % bob.boundjid.full)
        err = await alice.inbox.get(msg(id="deny-out", type="error"), "outgoing refused")
        assert error_condition(err) == "not-allowed", err
        bob.send_raw("<message to='%s' id='deny-in' type='chat'><body>x</body></message>"
                     % alice.boundjid.full)
        err = await bob.inbox.get(msg(id="deny-in", type="error"), "incoming refused")
        assert error_condition(err) == "remote-server-not-found", err
        await a.await_log("%s is not allowed to federate" % NATTER_B)


async def test_srv_priority_and_fallback_to_next_target(pair, net, dns):
    a, b = pair
    with dns.changed():
        # Priority 0: an address where nothing listens; priority 10: B.
        dns.set_host("dead." + NATTER_B, "127.0.0.9")
        dns.set_srv(NATTER_B, "dead." + NATTER_B, priority=0)
        dns.add_srv(NATTER_B, "s2s." + NATTER_B, priority=10)
        dns.apply()
        async with diagnose(a, b, dns=dns):
            alice = await connect(net, a, "alice")
            bob = await connect(net, b, "bob")
            await exchange(alice, bob, "srv")
            await a.await_log("trying s2s.%s" % NATTER_B)
            log = a.log
            first = log.find("trying dead.%s" % NATTER_B)
            second = log.find("trying s2s.%s" % NATTER_B)
            assert 0 <= first < second, log[-3000:]


async def test_no_srv_falls_back_to_the_domain(pair, net, dns):
    a, b = pair
    with dns.changed():
        dns.remove_srv(NATTER_B)
        dns.set_host(NATTER_B, ADDRESSES[NATTER_B])
        dns.apply()
        async with diagnose(a, b, dns=dns):
            alice = await connect(net, a, "alice")
            bob = await connect(net, b, "bob")
            alice.send_raw("<message to='%s' id='fb' type='chat'><body>x</body></message>"
                           % bob.boundjid.full)
            await bob.inbox.get(msg(id="fb"), "message over the fallback")
            await a.await_log("trying %s port 5269" % NATTER_B)


def starttls(sock, server_name, ca, cert_pair):
    """Plain socket -> TLS client socket with a client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    ctx.load_cert_chain(str(cert_pair.chain), str(cert_pair.key))
    return ctx.wrap_socket(sock, server_hostname=server_name)


def read_until(sock, needle, limit=65536):
    data = b""
    sock.settimeout(10)
    while needle not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def header(frm, to):
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
            "xmlns:stream='http://etherx.jabber.org/streams' "
            "xmlns:db='jabber:server:dialback' from='%s' to='%s' version='1.0'>"
            % (frm, to)).encode()


def test_forged_from_domain_is_refused(pair, test_ca):
    """A server that proved evil.fedtest (valid certificate, SASL EXTERNAL)
    sends a stanza claiming to come from natter-b.fedtest: the stream ends
    with <invalid-from/> and nothing is delivered (CVE-2012-3525)."""
    a, _ = pair
    evil = "evil.fedtest"
    sock = socket.create_connection((ADDRESSES[NATTER_A], fedlib.S2S_PORT), timeout=10)
    sock.sendall(header(evil, NATTER_A))
    read_until(sock, b"</stream:features>")
    sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in read_until(sock, b"<proceed")
    tls = starttls(sock, NATTER_A, test_ca, test_ca.cert_for(evil))
    tls.sendall(header(evil, NATTER_A))
    features = read_until(tls, b"</stream:features>")
    assert b"EXTERNAL" in features, features
    tls.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                + base64.b64encode(evil.encode()) + b"</auth>")
    assert b"<success" in read_until(tls, b"<success")
    tls.sendall(header(evil, NATTER_A))
    read_until(tls, b"</stream:features>")
    tls.sendall(("<message from='bob@%s' to='alice@%s' type='chat'><body>forged</body>"
                 "</message>" % (NATTER_B, NATTER_A)).encode())
    answer = read_until(tls, b"</stream:stream>")
    assert b"invalid-from" in answer, answer
    a.wait_for_log("a pair not verified on this link")
    tls.close()


async def test_hanging_remote_never_stalls_local_users(pair, net, dns):
    """A remote server that accepts TCP and then says nothing: the message
    to it bounces with remote-server-timeout after connect_timeout, and
    local users chat meanwhile."""
    a, _ = pair
    hang = "hang.fedtest"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.10", fedlib.S2S_PORT))
    listener.listen(8)
    accounts(a, "carol")
    try:
        with dns.changed():
            dns.set_host("s2s." + hang, "127.0.0.10")
            dns.set_srv(hang, "s2s." + hang)
            dns.apply()
            alice = await connect(net, a, "alice")
            carol = await connect(net, a, "carol")
            alice.send_raw("<message to='x@%s' id='hang' type='chat'><body>x</body></message>"
                           % hang)
            for i in range(5):
                alice.send_raw("<message to='%s' id='local%d' type='chat'><body>x</body>"
                               "</message>" % (carol.boundjid.full, i))
                await asyncio.wait_for(carol.inbox.get(msg(id="local%d" % i), "local"), 2)
            err = await alice.inbox.get(msg(id="hang", type="error"), "timeout bounce",
                                        timeout=15)
            assert error_condition(err) == "remote-server-timeout", err
    finally:
        listener.close()


async def test_idle_link_closes(natter_factory, test_ca, dns, net):
    a = start_natter(natter_factory, test_ca, dns, NATTER_A, idle_timeout=5)
    b = start_natter(natter_factory, test_ca, dns, NATTER_B)
    accounts(a, "alice")
    accounts(b, "bob")
    alice = await connect(net, a, "alice")
    bob = await connect(net, b, "bob")
    alice.send_raw("<message to='%s' id='idle' type='chat'><body>x</body></message>"
                   % bob.boundjid.full)
    await bob.inbox.get(msg(id="idle"), "message")
    await a.await_log("s2s %s -> %s: idle, closing" % (NATTER_A, NATTER_B), timeout=20)


async def test_remote_contacts_unavailable_when_the_link_goes(pair, net):
    a, b = pair
    async with diagnose(a, b):
        alice = await connect(net, a, "alice", roster=True, available=True)
        bob = await connect(net, b, "bob", roster=True, available=True)
        await subscribe(alice, bob)
        await alice.inbox.get(pres(frm=bob.boundjid.full), "bob's presence")
        # bob's server goes away (its sessions end with it, so no
        # unavailable stanza comes from there): the link closing tells.
        assert b.stop() == []
        await alice.inbox.get(pres(frm=bob.boundjid.full, type="unavailable"),
                              "bob unavailable when the link went", timeout=20)


async def test_direct_tls_from_xmpps_srv(natter_factory, test_ca, dns, net):
    """_xmpps-server._tcp only (XEP-0368): TLS from the first byte, ALPN
    xmpp-server, on the s2s_tls listener."""
    a = start_natter(natter_factory, test_ca, dns, NATTER_A)
    b = natter_factory(extra_listeners=[fedlib.s2s_listener(NATTER_B, 5270, direct_tls=True)],
                       **natter_config(test_ca, dns, NATTER_B))
    accounts(a, "alice")
    accounts(b, "bob")
    with dns.changed():
        dns.remove_srv(NATTER_B)
        dns.add_srv(NATTER_B, "s2s." + NATTER_B, port=5270, service="_xmpps-server._tcp")
        dns.apply()
        async with diagnose(a, b, dns=dns):
            alice = await connect(net, a, "alice")
            bob = await connect(net, b, "bob")
            alice.send_raw("<message to='%s' id='dtls' type='chat'><body>x</body></message>"
                           % bob.boundjid.full)
            await bob.inbox.get(msg(id="dtls"), "message over direct TLS")
            await a.await_log("trying s2s.%s port 5270 (direct TLS)" % NATTER_B)


async def test_piggybacked_domains_each_verified(pair, test_ca, net):
    """One incoming link may carry several sending domains (XEP-0220
    piggybacking): each is verified on its own (here by a certificate that
    names both, XEP-0344), and only then accepted as 'from'."""
    a, _ = pair
    one, two = "one.fedtest", "two.fedtest"
    cert = test_ca.issue(one, names=[one, two], label="one-and-two")
    sock = socket.create_connection((ADDRESSES[NATTER_A], fedlib.S2S_PORT), timeout=10)
    sock.sendall(header(one, NATTER_A))
    read_until(sock, b"</stream:features>")
    sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(sock, b"<proceed")
    tls = starttls(sock, NATTER_A, test_ca, cert)
    tls.sendall(header(one, NATTER_A))
    read_until(tls, b"</stream:features>")
    for domain in (one, two):
        tls.sendall(("<db:result from='%s' to='%s'>key</db:result>"
                     % (domain, NATTER_A)).encode())
        answer = read_until(tls, b"/>")
        assert b"type='valid'" in answer and domain.encode() in answer, answer
    tls.sendall(("<message from='x@%s' to='alice@%s' type='chat' id='pb'><body>ok</body>"
                 "</message>" % (two, NATTER_A)).encode())
    tls.sendall(("<message from='x@three.fedtest' to='alice@%s' type='chat'><body>no</body>"
                 "</message>" % NATTER_A).encode())
    assert b"invalid-from" in read_until(tls, b"</stream:stream>")
    tls.close()
    # alice was offline: the message from the second domain was kept.
    alice = await connect(net, a, "alice", available=True)
    got = await alice.inbox.get(msg(id="pb"), "the piggybacked domain's message")
    assert got["from"].bare == "x@" + two


async def test_allow_list(natter_factory, test_ca, dns, net):
    """With an allow list, only the domains on it federate."""
    a = start_natter(natter_factory, test_ca, dns, NATTER_A, allow="prosody.fedtest")
    accounts(a, "alice")
    alice = await connect(net, a, "alice")
    alice.send_raw("<message to='bob@%s' id='allow' type='chat'><body>x</body></message>"
                   % NATTER_B)
    err = await alice.inbox.get(msg(id="allow", type="error"), "not on the allow list")
    assert error_condition(err) == "not-allowed", err


@pytest.mark.parametrize("identity", ["xmpp_addr", "srv_id"])
async def test_xmppaddr_and_srv_id_certificates(natter_factory, test_ca, dns, net, identity):
    """A certificate that names the domain only as an XmppAddr or an SRV-ID
    (_xmpp-server.domain), no DNS-ID: valid too (RFC 6120 §13.7.1.2), so
    SASL EXTERNAL both ways."""
    cert = test_ca.issue(NATTER_B, dns_id=False, label="b-" + identity, **{identity: True})
    a = start_natter(natter_factory, test_ca, dns, NATTER_A)
    b = start_natter(natter_factory, test_ca, dns, NATTER_B, certificate=cert)
    accounts(a, "alice")
    accounts(b, "bob")
    async with diagnose(a, b):
        alice = await connect(net, a, "alice")
        bob = await connect(net, b, "bob")
        await exchange(alice, bob, identity)
        await a.await_log("s2s %s -> %s: authenticated with EXTERNAL" % (NATTER_A, NATTER_B))
        await a.await_log("%s verified for %s with EXTERNAL" % (NATTER_B, NATTER_A))
        assert "remote certificate not valid" not in a.log


async def test_silent_address_is_passed_over(pair, net, dns):
    """The first target accepts no connection and answers nothing (its
    listen queue is full, so the kernel drops our SYN, like a black-holed
    route): the next target is tried well within connect_timeout."""
    a, b = pair
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.11", fedlib.S2S_PORT))
    silent.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; never accepted
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.11", fedlib.S2S_PORT))
            fillers.append(f)
        with dns.changed():
            dns.set_host("silent." + NATTER_B, "127.0.0.11")
            dns.set_srv(NATTER_B, "silent." + NATTER_B, priority=0)
            dns.add_srv(NATTER_B, "s2s." + NATTER_B, priority=10)
            dns.apply()
            async with diagnose(a, b, dns=dns):
                alice = await connect(net, a, "alice")
                bob = await connect(net, b, "bob")
                alice.send_raw("<message to='%s' id='silent' type='chat'><body>x</body>"
                               "</message>" % bob.boundjid.full)
                await bob.inbox.get(msg(id="silent"), "message via the second target")
                await a.await_log("127.0.0.11 does not answer; trying the next address")
    finally:
        for f in fillers:
            f.close()
        silent.close()


def raw_s2s(frm=NATTER_B, to=NATTER_A, default_ns="jabber:server"):
    sock = socket.create_connection((ADDRESSES[to], fedlib.S2S_PORT), timeout=10)
    sock.sendall(("<?xml version='1.0'?><stream:stream xmlns='%s' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  "xmlns:db='jabber:server:dialback' from='%s' to='%s' version='1.0'>"
                  % (default_ns, frm, to)).encode())
    return sock


@pytest.mark.parametrize("payload,condition", [
    (b"<message to='alice@natter-a.fedtest'><body>x</body></message>", b"policy-violation"),
    (b"<db:result from='natter-b.fedtest' to='natter-a.fedtest'>k</db:result>",
     b"policy-violation"),
    (b"<not-xml<<", b"not-well-formed"),
    (b"<!-- a comment -->", b"restricted-xml"),
    (b"<message>" + b"x" * 300000 + b"</message>", b"policy-violation"),
], ids=["stanza-before-tls", "dialback-before-tls", "not-well-formed", "comment",
        "too-large"])
def test_hostile_input_on_s2s(pair, net, payload, condition):
    """Before TLS nothing but STARTTLS is accepted (TLS is required), and
    bad XML gets its stream error; natterd goes on serving."""
    a, _ = pair
    sock = raw_s2s()
    read_until(sock, b"</stream:features>")
    try:
        sock.sendall(payload)
    except OSError:
        pass  # closed while we were still sending the large one
    answer = read_until(sock, b"</stream:stream>")
    assert condition in answer, answer
    sock.close()
    sock = raw_s2s()
    assert b"starttls" in read_until(sock, b"</stream:features>")
    sock.close()


def test_wrong_namespace_and_unknown_host_on_s2s(pair):
    sock = raw_s2s(default_ns="jabber:client")
    assert b"invalid-namespace" in read_until(sock, b"</stream:stream>")
    sock.close()
    s = socket.create_connection((ADDRESSES[NATTER_A], fedlib.S2S_PORT), timeout=10)
    s.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              b"xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.fedtest' "
              b"version='1.0'>")
    assert b"host-unknown" in read_until(s, b"</stream:stream>")
    s.close()


def test_dialback_requests_are_bounded(pair, test_ca):
    """Each unverified db:result makes natter connect out to check it; one
    link may not have more than 8 such checks open."""
    sock = raw_s2s(frm="x0.fedtest")
    read_until(sock, b"</stream:features>")
    sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(sock, b"<proceed")
    ctx = ssl.create_default_context(cafile=str(test_ca.ca_file))
    tls = ctx.wrap_socket(sock, server_hostname=NATTER_A)
    tls.sendall(header("x0.fedtest", NATTER_A))
    read_until(tls, b"</stream:features>")
    tls.sendall(b"".join(b"<db:result from='x%d.fedtest' to='%s'>key</db:result>"
                         % (i, NATTER_A.encode()) for i in range(9)))
    assert b"policy-violation" in read_until(tls, b"</stream:stream>")
    tls.close()


async def test_remote_user_in_a_natter_room(pair, net, dns):
    """bob of natter-b joins a room of natter-a's chat service, talks and
    leaves (issue 11): the service's domain links like natter-a's own,
    with natter-a's certificate and dialback of its own."""
    a, b = pair
    service = "conference." + NATTER_A
    room = "team@" + service
    muc = "<x xmlns='http://jabber.org/protocol/muc'/>"
    with dns.changed():
        dns.add_srv(service, "s2s." + NATTER_A)
        dns.apply()
        async with diagnose(a, b, dns=dns):
            alice = await connect(net, a, "alice")
            bob = await connect(net, b, "bob")
            alice.send_raw("<presence to='%s/alice'>%s</presence>" % (room, muc))
            await alice.inbox.get(msg(frm=room), "alice's join done (the subject)")
            bob.send_raw("<presence to='%s/bob'>%s</presence>" % (room, muc))
            own = await bob.inbox.get(pres(frm=room + "/bob"), "bob's own presence",
                                      timeout=20)
            assert own.xml.get("type") is None, own
            await alice.inbox.get(pres(frm=room + "/bob"), "bob joined, alice sees")
            await bob.inbox.get(msg(frm=room), "the subject, the end of bob's join")
            bob.send_raw("<message to='%s' type='groupchat' id='fed1'><body>hi from b"
                         "</body></message>" % room)
            got = await alice.inbox.get(msg(id="fed1"), "bob's message at alice")
            assert got.xml.get("from") == room + "/bob", got
            await bob.inbox.get(msg(id="fed1"), "bob's message reflected to bob")
            bob.send_raw("<presence to='%s/bob' type='unavailable'/>" % room)
            await alice.inbox.get(pres(frm=room + "/bob", type="unavailable"),
                                  "bob left, alice sees")

"""natter federating with the servers out there: Debian's Prosody 0.12 and
ejabberd 23.01, started by fedlib with their own configs, DNS from
dnsmasq and certificates from the test CA.  Each direction: messages,
subscriptions (RFC 6121 §3) and presence."""

import pytest

import fedlib
from fedlib import NATTER_A, diagnose, fed_connect, unique_name
from imlib import accounts, connect, msg, pres, send_available, send_presence_type


@pytest.fixture
def natter(natter_factory, test_ca, dns):
    pair = test_ca.cert_for(NATTER_A)
    return natter_factory(
        extra_listeners=[fedlib.s2s_listener(NATTER_A)],
        hosts=[{"domain": NATTER_A, "tls_cert": str(pair.chain), "tls_key": str(pair.key)}],
        s2s={"enabled": True, "ca_file": str(test_ca.ca_file), "connect_timeout": 10},
        dns={"resolver": dns.resolver})


@pytest.fixture(params=["prosody", "ejabberd"])
def peer(request):
    return request.getfixturevalue(request.param)


async def test_messages_both_ways(natter, peer, net, dns):
    name = unique_name("alice")
    accounts(natter, name)
    async with diagnose(natter, peer, dns=dns):
        alice = await connect(net, natter, name)
        bob = await fed_connect(net, peer, unique_name("bob"))
        alice.send_raw("<message to='%s' id='n2p' type='chat'><body>from natter</body>"
                       "</message>" % bob.boundjid.full)
        got = await bob.inbox.get(msg(id="n2p", frm=alice.boundjid.full), "natter -> peer",
                                  timeout=20)
        assert got["body"] == "from natter"
        bob.send_raw("<message to='%s' id='p2n' type='chat'><body>from %s</body></message>"
                     % (alice.boundjid.full, peer.domain))
        got = await alice.inbox.get(msg(id="p2n", frm=bob.boundjid.full), "peer -> natter",
                                    timeout=20)
        assert got["body"] == "from " + peer.domain
        await natter.await_log("s2s %s -> %s: authenticated with" % (NATTER_A, peer.domain))
        await natter.await_log("%s verified for %s with" % (peer.domain, NATTER_A))
        links = natter.ctl("s2s", check=True).stdout
        assert peer.domain in links, links


async def answer_subscription(user, contact_bare):
    await user.inbox.get(pres(frm_bare=contact_bare, type="subscribe"),
                         "subscribe from %s" % contact_bare, timeout=20)
    await send_presence_type(user, contact_bare, "subscribed")


async def test_subscriptions_and_presence_both_ways(natter, peer, net, dns):
    name = unique_name("alice")
    accounts(natter, name)
    async with diagnose(natter, peer, dns=dns):
        alice = await connect(net, natter, name, roster=True, available=True)
        bob = await fed_connect(net, peer, unique_name("bob"))
        await send_available(bob)
        # natter's user asks; the peer's user approves; presence follows.
        await send_presence_type(alice, bob.boundjid.bare, "subscribe")
        await answer_subscription(bob, alice.boundjid.bare)
        await alice.inbox.get(pres(frm_bare=bob.boundjid.bare, type="subscribed"),
                              "subscribed from the peer", timeout=20)
        await alice.inbox.get(pres(frm=bob.boundjid.full), "the peer's presence", timeout=20)
        # The other way round.
        await send_presence_type(bob, alice.boundjid.bare, "subscribe")
        await answer_subscription(alice, bob.boundjid.bare)
        await bob.inbox.get(pres(frm_bare=alice.boundjid.bare, type="subscribed"),
                            "subscribed from natter", timeout=20)
        await bob.inbox.get(pres(frm=alice.boundjid.full), "natter's presence", timeout=20)
        # Presence changes cross in both directions.
        await send_available(alice, show="away")
        await bob.inbox.get(pres(frm=alice.boundjid.full), "alice away", timeout=20)
        await send_available(bob, show="dnd")
        await alice.inbox.get(pres(frm=bob.boundjid.full), "bob dnd", timeout=20)
        # A second natter session probes the peer and learns bob is there.
        alice2 = await connect(net, natter, name, resource="two", available=True)
        await alice2.inbox.get(pres(frm=bob.boundjid.full), "probe answer", timeout=20)
        await bob.close()
        await alice.inbox.get(pres(frm=bob.boundjid.full, type="unavailable"),
                              "bob unavailable", timeout=20)


async def test_one_natter_linked_to_both(natter, prosody, ejabberd, net):
    """natterctl s2s lists a link each way with each peer."""
    name = unique_name("alice")
    accounts(natter, name)
    alice = await connect(net, natter, name)
    for peer in (prosody, ejabberd):
        bob = await fed_connect(net, peer, unique_name("bob"))
        alice.send_raw("<message to='%s' id='to-%s' type='chat'><body>x</body></message>"
                       % (bob.boundjid.full, peer.name))
        await bob.inbox.get(msg(id="to-" + peer.name), "to " + peer.name, timeout=20)
        bob.send_raw("<message to='%s' id='from-%s' type='chat'><body>x</body></message>"
                     % (alice.boundjid.full, peer.name))
        await alice.inbox.get(msg(id="from-" + peer.name), "from " + peer.name, timeout=20)
    links = natter.ctl("s2s", check=True).stdout
    print("\nnatterctl s2s:\n" + links)
    for peer in (prosody, ejabberd):
        rows = [line.split() for line in links.splitlines() if line.startswith(peer.domain)]
        assert {row[1] for row in rows} == {"in", "out"}, links


async def test_dialback_with_prosody(natter_factory, test_ca, dns, prosody, net):
    """natter with a self-signed certificate: Prosody (s2s_secure_auth off)
    checks natter's domain by dialback, calling natter back to verify the
    key; natter accepts Prosody's valid certificate for its dialback."""
    server = natter_factory(extra_listeners=[fedlib.s2s_listener(NATTER_A)],
                            hosts=[{"domain": NATTER_A}],
                            s2s={"enabled": True, "ca_file": str(test_ca.ca_file)},
                            dns={"resolver": dns.resolver})
    name = unique_name("alice")
    accounts(server, name)
    with prosody.configured(secure_auth=False):
        async with diagnose(server, prosody, dns=dns):
            alice = await connect(net, server, name)
            bob = await fed_connect(net, prosody, unique_name("bob"))
            alice.send_raw("<message to='%s' id='db' type='chat'><body>x</body></message>"
                           % bob.boundjid.full)
            await bob.inbox.get(msg(id="db"), "natter -> prosody by dialback", timeout=20)
            await server.await_log("s2s %s -> %s: authenticated with dialback"
                                   % (NATTER_A, prosody.domain))
            bob.send_raw("<message to='%s' id='db2' type='chat'><body>x</body></message>"
                         % alice.boundjid.full)
            await alice.inbox.get(msg(id="db2"), "prosody -> natter", timeout=20)

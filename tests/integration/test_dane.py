"""DANE for server-to-server links (RFC 7673, RFC 6698): with a DNSSEC
trust anchor (dns.trust_anchor_file), natter checks a remote server's
certificate against the TLSA records of its SRV target.  The zone is
served by NSD, signed with ldns-signzone (danelib), and natter-b's
certificate is self-signed: only DANE can make it valid."""

import pytest

import fedlib
from danelib import SignedZone, spki_sha256
from fedlib import ADDRESSES, NATTER_A, diagnose
from imlib import accounts, connect, error_condition, msg
from natterlib import self_signed_cert

DOMAIN = "natter-b.danetest"


@pytest.fixture
def self_signed(tmp_path):
    return self_signed_cert(tmp_path, "b", DOMAIN)


def records(tlsa_hex):
    return ["_xmpp-server._tcp.natter-b IN SRV 0 0 5269 s2s.natter-b.danetest.",
            "s2s.natter-b IN A %s" % ADDRESSES[fedlib.NATTER_B],
            "_5269._tcp.s2s.natter-b IN TLSA 3 1 1 %s" % tlsa_hex]


@pytest.fixture
def zone(self_signed):
    z = SignedZone("danetest", records(spki_sha256(self_signed[0])))
    try:
        yield z.start()
    finally:
        z.cleanup()


def servers(natter_factory, test_ca, dns, zone, self_signed, anchor=True):
    """natter-a (test CA certificate) requires a valid certificate from
    natter-b.danetest; natter-b has only its self-signed one."""
    pair = test_ca.cert_for(NATTER_A)
    dns_a = {"resolver": zone.resolver}
    if anchor:
        dns_a["trust_anchor_file"] = str(zone.trust_anchor)
    a = natter_factory(extra_listeners=[fedlib.s2s_listener(NATTER_A)], **{
        "hosts": [{"domain": NATTER_A, "tls_cert": str(pair.chain), "tls_key": str(pair.key)}],
        "s2s": {"enabled": True, "ca_file": str(test_ca.ca_file), "connect_timeout": 5,
                "remotes": [{"domain": DOMAIN, "auth": "certificate"}]},
        "dns": dns_a})
    b = natter_factory(extra_listeners=[fedlib.s2s_listener(fedlib.NATTER_B)], **{
        "hosts": [{"domain": DOMAIN, "tls_cert": str(self_signed[0]),
                   "tls_key": str(self_signed[1])}],
        "s2s": {"enabled": True, "ca_file": str(test_ca.ca_file)},
        "dns": {"resolver": dns.resolver}})
    accounts(a, "alice")
    accounts(b, "bob")
    return a, b


async def test_tlsa_makes_a_self_signed_certificate_valid(natter_factory, test_ca, dns, zone,
                                                          self_signed, net):
    a, b = servers(natter_factory, test_ca, dns, zone, self_signed)
    async with diagnose(a, b):
        alice = await connect(net, a, "alice")
        bob = await connect(net, b, "bob")
        alice.send_raw("<message to='%s' id='dane' type='chat'><body>x</body></message>"
                       % bob.boundjid.full)
        await bob.inbox.get(msg(id="dane"), "message over a DANE-verified link")
        await a.await_log("s2s %s -> %s: certificate matches its TLSA record (DANE)"
                          % (NATTER_A, DOMAIN))


async def test_tlsa_mismatch_refuses_the_link(natter_factory, test_ca, dns, zone, self_signed,
                                             net):
    zone.replace(records("00" * 32))
    a, _ = servers(natter_factory, test_ca, dns, zone, self_signed)
    alice = await connect(net, a, "alice")
    alice.send_raw("<message to='bob@%s' id='bad' type='chat'><body>x</body></message>" % DOMAIN)
    err = await alice.inbox.get(msg(id="bad", type="error"), "bounce", timeout=15)
    assert error_condition(err) == "remote-server-not-found", err
    await a.await_log("does not match its TLSA records")


async def test_without_a_trust_anchor_nothing_is_trusted(natter_factory, test_ca, dns, zone,
                                                         self_signed, net):
    a, _ = servers(natter_factory, test_ca, dns, zone, self_signed, anchor=False)
    alice = await connect(net, a, "alice")
    alice.send_raw("<message to='bob@%s' id='noanchor' type='chat'><body>x</body></message>"
                   % DOMAIN)
    err = await alice.inbox.get(msg(id="noanchor", type="error"), "bounce", timeout=15)
    assert error_condition(err) == "remote-server-not-found", err
    await a.await_log("its certificate is not valid")
    assert "TLSA" not in a.log


async def test_natterctl_dns_prints_the_tlsa_record(natter_factory, test_ca, dns, zone,
                                                   self_signed, net):
    """The TLSA record natterctl dns suggests is the one that works."""
    _, b = servers(natter_factory, test_ca, dns, zone, self_signed)
    out = b.ctl("dns", DOMAIN, "--target", "s2s.natter-b.danetest",
                "--resolver", zone.resolver).stdout
    want = "_5269._tcp.s2s.natter-b.danetest. 3600 IN TLSA 3 1 1 %s" % spki_sha256(self_signed[0])
    assert want in out, out

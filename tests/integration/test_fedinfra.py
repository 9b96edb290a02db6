"""Self-test of the federation infrastructure (fedlib): the DNS server, the
test CA, and Prosody and ejabberd federating with each other through them,
before natter takes part.  If these fail, federation tests of natter
cannot be trusted."""

import subprocess

from fedlib import (
    EJABBERD, NATTER_A, NATTER_B, PROSODY, S2S_PORT, SRV_SERVER, diagnose,
    fed_connect, natter_identity, unique_name)
from imlib import assert_not_delivered, msg, pres, send_presence_type


# ------------------------------------------------------------------ DNS ---

def test_dns_serves_the_fedtest_zone(dns):
    rcode, answers = dns.query("%s.%s" % (SRV_SERVER, PROSODY), "SRV")
    assert (rcode, answers) == ("NOERROR",
                                [(0, 0, S2S_PORT, "s2s." + PROSODY)])
    assert dns.query("s2s." + EJABBERD) == ("NOERROR", ["127.0.0.5"])
    assert dns.query("s2s." + NATTER_A) == ("NOERROR", ["127.0.0.2"])
    # The domains themselves have no address: reaching them takes SRV.
    assert dns.query(PROSODY) == ("NOERROR", [])
    assert dns.query("nowhere.fedtest")[0] == "NXDOMAIN"
    assert dns.query("example.com")[0] in ("REFUSED", "NXDOMAIN")


def test_dns_records_can_change(dns):
    mark = dns.log_mark()
    with dns.changed():
        dns.set_srv(NATTER_A, "elsewhere.fedtest", 5299, priority=5)
        dns.set_host("elsewhere.fedtest", "127.0.0.9")
        dns.add_srv(NATTER_A, "", service="_xmpps-server._tcp")
        dns.apply()
        assert dns.query("%s.%s" % (SRV_SERVER, NATTER_A), "SRV") == (
            "NOERROR", [(5, 0, 5299, "elsewhere.fedtest")])
        assert dns.query("elsewhere.fedtest") == ("NOERROR", ["127.0.0.9"])
        rcode, answers = dns.query("_xmpps-server._tcp." + NATTER_A, "SRV")
        # RFC 2782's "decidedly not available": one SRV with target ".".
        assert rcode == "NOERROR" and [a[3] for a in answers] == [""], \
            answers
    assert dns.query("%s.%s" % (SRV_SERVER, NATTER_A), "SRV") == (
        "NOERROR", [(0, 0, S2S_PORT, "s2s." + NATTER_A)])
    assert dns.query("elsewhere.fedtest")[0] == "NXDOMAIN"
    dns.wait_for_query("SRV", "%s.%s" % (SRV_SERVER, NATTER_A), since=mark)
    assert ("A", "elsewhere.fedtest") in dns.queries(mark)


# ------------------------------------------------------------------ TLS ---

def verify(ca, pair, hostname):
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.ca_file),
         "-verify_hostname", hostname, "-purpose", "sslserver",
         str(pair.cert)], capture_output=True, text=True)


def test_ca_issues_valid_and_invalid_certificates(test_ca):
    good = test_ca.cert_for(NATTER_A)
    assert test_ca.cert_for(NATTER_A) is good
    proc = verify(test_ca, good, NATTER_A)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for bad, why in ((test_ca.self_signed(NATTER_A), "self-signed"),
                     (test_ca.untrusted(NATTER_A), "unable to get local"),
                     (test_ca.wrong_name(NATTER_A), "hostname mismatch"),
                     (test_ca.expired(NATTER_A), "expired")):
        proc = verify(test_ca, bad, NATTER_A)
        assert proc.returncode != 0 and why in proc.stdout + proc.stderr, \
            (why, proc.stdout, proc.stderr)
    ids = test_ca.issue(NATTER_B, xmpp_addr=True, srv_id=True)
    text = subprocess.run(["openssl", "x509", "-noout", "-ext",
                           "subjectAltName", "-in", str(ids.cert)],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:" + NATTER_B in text and "othername" in text.lower(), text
    assert ids.combined.read_text().count("BEGIN") == 2


def test_natter_identity(test_ca, dns):
    ident = natter_identity(test_ca, dns, NATTER_A)
    assert ident["address"] == "127.0.0.2" and ident["s2s_port"] == 5269
    assert ident["resolver"] == "%s@%d" % (dns.address, dns.port)
    assert ident["cert"].endswith("cert.pem")


# ----------------------------------------------------------- federation ---

async def test_prosody_and_ejabberd_federate(dns, prosody, ejabberd, net):
    """alice@prosody.fedtest and bob@ejabberd.fedtest exchange messages and
    a mutual presence subscription, each server finding the other by SRV
    and authenticating it by its certificate from the test CA."""
    mark = dns.log_mark()
    async with diagnose(prosody, ejabberd, dns=dns):
        alice = await fed_connect(net, prosody, unique_name("alice"),
                                  available=True)
        bob = await fed_connect(net, ejabberd, unique_name("bob"),
                                available=True)
        a, b = alice.boundjid.bare, bob.boundjid.bare

        alice.send_message(mto=b, mbody="hello from prosody", mtype="chat")
        got = await bob.inbox.get(msg(frm_bare=a), "alice's message",
                                  timeout=30)
        assert got["body"] == "hello from prosody"
        assert str(got["from"]) == str(alice.boundjid)

        bob.send_message(mto=str(alice.boundjid), mbody="hello from ejabberd",
                         mtype="chat")
        got = await alice.inbox.get(msg(frm_bare=b), "bob's reply",
                                    timeout=30)
        assert got["body"] == "hello from ejabberd"

        # alice subscribes to bob, bob accepts; alice gets bob's presence.
        await send_presence_type(alice, b, "subscribe", barrier=False)
        await bob.inbox.get(pres(frm_bare=a, type="subscribe"),
                            "subscribe from alice")
        await send_presence_type(bob, a, "subscribed", barrier=False)
        await alice.inbox.get(pres(frm_bare=b, type="subscribed"),
                              "subscribed from bob")
        await alice.inbox.get(pres(frm=str(bob.boundjid), type="available"),
                              "bob's available presence")
        # and back: bob subscribes to alice.
        await send_presence_type(bob, a, "subscribe", barrier=False)
        await alice.inbox.get(pres(frm_bare=b, type="subscribe"),
                              "subscribe from bob")
        await send_presence_type(alice, b, "subscribed", barrier=False)
        await bob.inbox.get(pres(frm_bare=a, type="subscribed"),
                            "subscribed from alice")
        await bob.inbox.get(pres(frm=str(alice.boundjid), type="available"),
                            "alice's available presence")
        # A presence change now reaches the subscriber across servers.
        alice.send_presence(pshow="away", pstatus="in a meeting")
        away = await bob.inbox.get(
            lambda s: pres(frm=str(alice.boundjid))(s)
            and s["show"] == "away", "alice's away presence")
        assert away["status"] == "in a meeting"

    # Both links authenticated by certificate (SASL EXTERNAL both ways).
    prosody.wait_for_log("SASL EXTERNAL with %s succeeded" % EJABBERD)
    prosody.wait_for_log("Accepting SASL EXTERNAL identity from %s"
                         % EJABBERD)
    ejabberd.wait_for_log("Accepted inbound s2s EXTERNAL authentication "
                          "%s -> %s" % (PROSODY, EJABBERD))
    # Each server looked the other up by SRV, then the SRV target.
    dns.wait_for_query("SRV", "%s.%s" % (SRV_SERVER, EJABBERD), since=mark)
    dns.wait_for_query("SRV", "%s.%s" % (SRV_SERVER, PROSODY), since=mark)
    dns.wait_for_query("A", "s2s." + EJABBERD, since=mark)
    dns.wait_for_query("A", "s2s." + PROSODY, since=mark)


async def test_untrusted_certificate_is_refused(test_ca, dns, prosody,
                                                ejabberd, net):
    """With a certificate from a CA nobody trusts, Prosody cannot
    authenticate to ejabberd (no dialback there): alice's message bounces;
    with the good certificate back, it gets through."""
    async with diagnose(prosody, ejabberd, dns=dns):
        bob = await fed_connect(net, ejabberd, unique_name("bob"),
                                available=True)
        alice_name = unique_name("alice")
        mark = prosody.log_mark()
        with prosody.configured(cert=test_ca.untrusted(PROSODY)):
            alice = await fed_connect(net, prosody, alice_name,
                                      available=True)
            alice.send_raw("<message to='%s' id='refused-1' type='chat'>"
                           "<body>let me in</body></message>"
                           % bob.boundjid.bare)
            bounce = await alice.inbox.get(
                msg(id="refused-1", type="error"), "the bounce", timeout=30)
            assert bounce["error"]["condition"] in (
                "remote-server-not-found", "remote-server-timeout",
                "not-authorized", "service-unavailable"), bounce
            await prosody.await_log("SASL EXTERNAL with %s failed"
                                    % EJABBERD, since=mark)
            await alice.close()
        alice = await fed_connect(net, prosody, alice_name, "again",
                                  available=True)
        await assert_not_delivered(bob, msg(id="refused-1"),
                                   "the refused message", alice, "marker-1")


async def test_dialback_when_certificates_do_not_verify(test_ca, dns,
                                                        prosody, ejabberd,
                                                        net):
    """The relaxed settings: Prosody with a self-signed certificate and
    s2s_secure_auth off, ejabberd with mod_s2s_dialback.  Prosody's
    certificate cannot be verified, so ejabberd authenticates it by
    dialback (calling back prosody.fedtest found by SRV)."""
    async with diagnose(prosody, ejabberd, dns=dns):
        mark = ejabberd.log_mark()
        with ejabberd.configured(dialback=True), \
                prosody.configured(cert=test_ca.self_signed(PROSODY),
                                   secure_auth=False):
            alice = await fed_connect(net, prosody, unique_name("alice"),
                                      available=True)
            bob = await fed_connect(net, ejabberd, unique_name("bob"),
                                    available=True)
            alice.send_raw("<message to='%s' id='db-1' type='chat'>"
                           "<body>by dialback</body></message>"
                           % bob.boundjid.bare)
            await bob.inbox.get(msg(id="db-1", frm=str(alice.boundjid)),
                                "alice's message", timeout=30)
            bob.send_raw("<message to='%s' id='db-2' type='chat'>"
                         "<body>back</body></message>" % alice.boundjid)
            await alice.inbox.get(msg(id="db-2", frm=str(bob.boundjid)),
                                  "bob's reply", timeout=30)
            await ejabberd.await_log(
                "Accepted inbound s2s dialback authentication %s -> %s"
                % (PROSODY, EJABBERD), since=mark)

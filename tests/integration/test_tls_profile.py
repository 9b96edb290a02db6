"""The TLS profile (issue 10, item G): Mozilla's "intermediate" (TLS 1.2
and 1.3; on TLS 1.2 only ECDHE with AEAD ciphers) on every listener, c2s
and s2s, and on outgoing s2s links (docs/security.md).

Each check is a TLS 1.2 client that offers one cipher suite only, so a
handshake succeeds exactly when natter allows that suite."""

import asyncio
import ssl

import pytest

import fedlib
from imlib import accounts, connect, msg
from natterlib import (IO_TIMEOUT, free_port, insecure_client_context,
                       make_certificate)

# Outside the profile: SHA-1 CBC (the two from the report and their
# kin), SHA-2 CBC, static RSA key exchange (even with GCM), and
# finite-field DHE (Mozilla dropped it from intermediate in 5.8).
REFUSED_ECDSA = ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
                 "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"]
ACCEPTED_ECDSA = ["ECDHE-ECDSA-AES128-GCM-SHA256",
                  "ECDHE-ECDSA-AES256-GCM-SHA384",
                  "ECDHE-ECDSA-CHACHA20-POLY1305"]
REFUSED_RSA = ["AES256-SHA", "AES128-SHA", "AES128-GCM-SHA256",
               "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384",
               "DHE-RSA-AES128-GCM-SHA256"]
ACCEPTED_RSA = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-RSA-CHACHA20-POLY1305"]


def tls12_only(suite, alpn=None):
    ctx = insecure_client_context(maximum=ssl.TLSVersion.TLSv1_2,
                                  alpn=alpn)
    # SECLEVEL 0 so that this client never refuses a suite itself: a
    # failed handshake is natter's choice.
    ctx.set_ciphers(suite + ":@SECLEVEL=0")
    return ctx


async def direct_handshake(port, suite, *, alpn=None, host="127.0.0.1"):
    """The negotiated (suite, version), or None if the handshake failed."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=tls12_only(suite, alpn),
            server_hostname="localhost",
            ssl_handshake_timeout=IO_TIMEOUT), IO_TIMEOUT)
    except (ssl.SSLError, ConnectionError):
        return None
    ssl_object = writer.get_extra_info("ssl_object")
    result = ssl_object.cipher()[0], ssl_object.version()
    writer.close()
    return result


async def starttls_handshake(net, server, suite):
    stream = await net.raw(server)
    await stream.open_stream()
    await stream.features()
    try:
        await stream.starttls(context=tls12_only(suite))
    except (ssl.SSLError, ConnectionError):
        return None
    return stream.ssl_object.cipher()[0], stream.ssl_object.version()


async def check_suites(handshake, refused, accepted):
    for suite in refused:
        assert await handshake(suite) is None, \
            "%s (outside the profile) was accepted" % suite
    for suite in accepted:
        assert await handshake(suite) == (suite, "TLSv1.2"), \
            "%s (in the profile) was refused" % suite


@pytest.mark.parametrize("path", ["starttls", "direct"])
async def test_c2s_tls12_suites_ecdsa(natter, net, path):
    """The default self-signed certificate is ECDSA P-256."""
    if path == "starttls":
        def handshake(suite):
            return starttls_handshake(net, natter, suite)
    else:
        def handshake(suite):
            return direct_handshake(natter.tls_port, suite,
                                    alpn=["xmpp-client"])
    await check_suites(handshake, REFUSED_ECDSA, ACCEPTED_ECDSA)
    await net.assert_served(natter)


@pytest.mark.parametrize("path", ["starttls", "direct"])
async def test_c2s_tls12_suites_rsa(natter_factory, net, tmp_path, path):
    cert, key = make_certificate(tmp_path, "localhost")
    server = natter_factory(hosts=[{"domain": "localhost",
                                    "tls_cert": str(cert),
                                    "tls_key": str(key)}])
    if path == "starttls":
        def handshake(suite):
            return starttls_handshake(net, server, suite)
    else:
        def handshake(suite):
            return direct_handshake(server.tls_port, suite)
    await check_suites(handshake, REFUSED_RSA, ACCEPTED_RSA)


async def test_tls13_still_negotiated(natter, net):
    """Python's default client asks for TLS_AES_256_GCM_SHA384 first
    (OpenSSL's order); natterd's order puts AES-128-GCM first, whose
    SHA-256 key schedule costs both sides less (docs/security.md)."""
    stream = await net.raw(natter, port=natter.tls_port,
                           tls_context=insecure_client_context())
    assert stream.ssl_object.version() == "TLSv1.3"
    assert stream.ssl_object.cipher()[0] == "TLS_AES_128_GCM_SHA256"


async def tls13_suite_chosen(port, suites):
    """The suite natterd picks for `openssl s_client` offering the TLS 1.3
    `suites` in that order (direct TLS), or None without a handshake."""
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
        "-servername", "localhost", "-alpn", "xmpp-client", "-tls1_3",
        "-ciphersuites", suites, "-brief",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), IO_TIMEOUT)
    for line in (out + err).decode(errors="replace").splitlines():
        if line.startswith("Ciphersuite:"):
            return line.split(":", 1)[1].strip()
    return None


@pytest.mark.parametrize("offered, chosen", [
    # OpenSSL's and GnuTLS's clients: AES-256 first.
    ("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
     "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
    # A client without AES hardware puts ChaCha20 first, and gets it.
    ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
     "TLS_CHACHA20_POLY1305_SHA256"),
    # Every suite of the profile is still accepted alone.
    ("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
    ("TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),
])
async def test_tls13_suite_order(natter, net, offered, chosen):
    assert await tls13_suite_chosen(natter.tls_port, offered) == chosen
    await net.assert_served(natter)


async def test_incoming_s2s_tls12_suites(natter_factory, tmp_path):
    """The s2s listeners (STARTTLS and direct TLS share their contexts
    with c2s; the direct one is checked here, with an RSA certificate)."""
    cert, key = make_certificate(tmp_path, "localhost")
    port = free_port()
    natter_factory(
        hosts=[{"domain": "localhost", "tls_cert": str(cert),
                "tls_key": str(key)}],
        s2s={"enabled": True},
        extra_listeners=[{"type": "s2s_tls", "address": "127.0.0.1",
                          "port": port}])

    def handshake(suite):
        return direct_handshake(port, suite, alpn=["xmpp-server"])
    await check_suites(handshake, REFUSED_RSA, ACCEPTED_RSA)


async def test_outgoing_s2s_tls12_suites(natter_factory, test_ca, dns, net,
                                         tmp_path):
    """natter as the TLS client of an s2s link (direct TLS, found by an
    _xmpps-server SRV record): a remote server that speaks only a suite
    outside the profile gets no handshake; one that speaks an
    intermediate suite does."""
    remote = "cipher.fedtest"
    cert, key = make_certificate(tmp_path, "s2s." + remote)
    own = test_ca.cert_for(fedlib.NATTER_A)
    server = natter_factory(
        hosts=[{"domain": fedlib.NATTER_A, "tls_cert": str(own.chain),
                "tls_key": str(own.key)}],
        s2s={"enabled": True, "ca_file": str(test_ca.ca_file),
             "connect_timeout": 3},
        dns={"resolver": dns.resolver})
    accounts(server, "alice")
    alice = await connect(net, server, "alice")

    async def outgoing(suite, tag):
        seen = asyncio.get_running_loop().create_future()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(suite + ":@SECLEVEL=0")
        ctx.set_alpn_protocols(["xmpp-server"])

        async def handle(reader, writer):
            if not seen.done():
                seen.set_result(writer.get_extra_info("ssl_object").cipher()[0])
            writer.close()

        tcp = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx,
                                         ssl_handshake_timeout=IO_TIMEOUT)
        port = tcp.sockets[0].getsockname()[1]
        try:
            with dns.changed():
                dns.set_host("s2s." + remote, "127.0.0.1")
                dns.add_srv(remote, "s2s." + remote, port=port,
                            service="_xmpps-server._tcp")
                dns.apply()
                mark = server.log_mark()
                alice.send_raw("<message to='x@%s' id='%s' type='chat'>"
                               "<body>x</body></message>" % (remote, tag))
                await server.await_log("port %d (direct TLS)" % port,
                                       since=mark)
                await alice.inbox.get(msg(id=tag, type="error"),
                                      "the bounce of %s" % tag, timeout=15)
                return seen.result() if seen.done() else None
        finally:
            tcp.close()
            await tcp.wait_closed()

    for suite in ["ECDHE-RSA-AES128-SHA", "AES256-SHA"]:
        assert await outgoing(suite, suite) is None, \
            "natter spoke %s (outside the profile) to a remote" % suite
    suite = "ECDHE-RSA-AES128-GCM-SHA256"
    assert await outgoing(suite, suite) == suite, \
        "natter did not speak %s (in the profile) to a remote" % suite

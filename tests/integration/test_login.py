"""Logging in: STARTTLS, direct TLS, SASL mechanisms (with and without
channel binding), resource binding and the legacy session request."""

import asyncio
import os
import ssl
import subprocess
import warnings
import xml.etree.ElementTree as ET

import pytest

from natterlib import (
    IO_TIMEOUT, NS_SASL, NS_SASL_CB, NS_SESSION,
    NS_STREAM, NS_TLS, SASL_PLUS_CLIENT, LoginFailed, StreamClosed,
    insecure_client_context, make_certificate, pem_to_der, q,
    require_binary)

ALICE = "alice@localhost"
ALICE_PASSWORD = "alice-secret"


def mechanisms_of(features):
    return [m.text for m in features.iter(q(NS_SASL, "mechanism"))]


# ---------------------------------------------------------------- SASL ----

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256",
                                       "PLAIN"])
async def test_login_with_mechanism(natter, net, mechanism):
    natter.add_user(ALICE, ALICE_PASSWORD)
    client = await net.login(natter, ALICE + "/desk", ALICE_PASSWORD,
                             mechanism=mechanism)
    assert client["feature_mechanisms"].mech.name == mechanism
    assert client.boundjid.full == ALICE + "/desk"
    assert (await client.ping())["type"] == "result"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256",
                                       "PLAIN"])
async def test_wrong_password_is_not_authorized(natter, net, mechanism):
    natter.add_user(ALICE, ALICE_PASSWORD)
    with pytest.raises(LoginFailed) as failed:
        await net.login(natter, ALICE, "not-the-password",
                        mechanism=mechanism)
    assert failed.value.condition == "not-authorized"
    await net.assert_served(natter)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256",
                                       "PLAIN"])
async def test_unknown_user_is_not_authorized(natter, net, mechanism):
    # The same condition as a wrong password: no account enumeration.
    with pytest.raises(LoginFailed) as failed:
        await net.login(natter, "nobody@localhost", "whatever",
                        mechanism=mechanism)
    assert failed.value.condition == "not-authorized"
    await net.assert_served(natter)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
async def test_non_ascii_password(natter, net, mechanism):
    password = "grüße-☃-пароль"
    natter.add_user(ALICE, password)
    client = await net.login(natter, ALICE, password, mechanism=mechanism)
    assert client.boundjid.bare == ALICE


async def test_scram_y_flag_refused_when_plus_is_offered(natter, net):
    """RFC 5802 section 6: a client saying "I support channel binding but
    think you don't" (gs2 flag y) to a server that offers -PLUS has been
    downgraded by someone in the middle; the server must refuse. On TLS 1.2
    natter offers tls-unique, which every channel-binding client knows."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    with pytest.raises(LoginFailed) as failed:
        await net.login(natter, ALICE, ALICE_PASSWORD,
                        mechanism="SCRAM-SHA-256", channel_binding=True,
                        tls_max=ssl.TLSVersion.TLSv1_2)
    assert failed.value.condition == "not-authorized"
    await net.assert_served(natter)


async def test_scram_y_flag_accepted_on_tls13(natter, net):
    """On TLS 1.3 only tls-exporter is offered (RFC 9266); a client that
    knows only tls-unique (slixmpp 1.8) rightly says 'y' (XEP-0440) and
    must still get in."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    client = await net.login(natter, ALICE, ALICE_PASSWORD,
                             mechanism="SCRAM-SHA-256", channel_binding=True)
    assert client.boundjid.bare == ALICE


async def test_mechanisms_and_channel_bindings_after_tls(natter, net):
    _, features = await net.raw_tls(natter)
    offered = mechanisms_of(features)
    for mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                      "SCRAM-SHA-256-PLUS", "PLAIN"):
        assert mechanism in offered, offered
    assert features.find(q(NS_TLS, "starttls")) is None
    bindings = features.find(q(NS_SASL_CB, "sasl-channel-binding"))
    assert bindings is not None, ET.tostring(features, "unicode")
    types = {b.get("type") for b in bindings}
    # The default client context negotiates TLS 1.3, where tls-unique is
    # undefined (RFC 9266).
    assert "tls-exporter" in types
    assert "tls-unique" not in types


async def test_tls12_also_offers_tls_unique(natter, net):
    stream = await net.raw(natter)
    await stream.open_stream()
    await stream.features()
    await stream.starttls(context=insecure_client_context(
        maximum=ssl.TLSVersion.TLSv1_2))
    assert stream.ssl_object.version() == "TLSv1.2"
    await stream.open_stream()
    features = await stream.features()
    bindings = features.find(q(NS_SASL_CB, "sasl-channel-binding"))
    assert bindings is not None, ET.tostring(features, "unicode")
    assert {b.get("type") for b in bindings} >= {"tls-exporter",
                                                 "tls-unique"}


async def test_before_tls_only_starttls_is_offered(natter, net):
    stream = await net.raw(natter)
    await stream.open_stream()
    features = await stream.features()
    assert [child.tag for child in features] == [q(NS_TLS, "starttls")], \
        ET.tostring(features, "unicode")
    starttls = features.find(q(NS_TLS, "starttls"))
    assert starttls.find(q(NS_TLS, "required")) is not None


async def test_auth_before_tls_never_succeeds(natter, net):
    natter.add_user(ALICE, ALICE_PASSWORD)
    stream = await net.raw(natter)
    await stream.open_stream()
    await stream.features()
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>AGFsaWNlAGFsaWNl"
                      "LXNlY3JldA==</auth>" % NS_SASL)
    answer = await stream.next()
    # A SASL failure (encryption-required) or a stream error are both
    # fine; success in the clear is not.
    assert answer is None or answer.tag in (
        q(NS_SASL, "failure"), q(NS_STREAM, "error")), \
        stream.describe()
    await net.assert_served(natter)


async def test_stream_header(natter, net):
    ids = set()
    for _ in range(2):
        stream = await net.raw(natter)
        await stream.open_stream()
        await stream.features()
        header = stream.header
        assert header.get("from") == "localhost"
        assert header.get("version") == "1.0"
        assert header.get("id")
        ids.add(header.get("id"))
    assert len(ids) == 2, "stream ids must be unique"


# -------------------------------------------------------------- binding ---

async def test_server_generated_resource(natter, net):
    natter.add_user(ALICE, ALICE_PASSWORD)
    first = await net.login(natter, ALICE, ALICE_PASSWORD)
    second = await net.login(natter, ALICE, ALICE_PASSWORD)
    assert first.boundjid.bare == second.boundjid.bare == ALICE
    assert first.boundjid.resource and second.boundjid.resource
    assert first.boundjid.resource != second.boundjid.resource
    assert not first.closed


async def test_legacy_session_gets_empty_result(natter, net):
    natter.add_user(ALICE, ALICE_PASSWORD)
    stream = await net.raw_login(natter, ALICE, ALICE_PASSWORD)
    reply = await stream.iq_roundtrip(
        "sess-1", "<session xmlns='%s'/>" % NS_SESSION, type_="set")
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    assert len(reply) == 0, ET.tostring(reply, "unicode")


async def test_bind_result_names_the_account(natter, net):
    natter.add_user(ALICE, ALICE_PASSWORD)
    stream = await net.raw_login(natter, ALICE, ALICE_PASSWORD,
                                 resource="laptop")
    assert stream.jid == ALICE + "/laptop"


# ------------------------------------------------------------------ TLS ---

async def test_direct_tls_with_alpn(natter, net):
    natter.add_user(ALICE, ALICE_PASSWORD)
    stream = await net.raw(
        natter, port=natter.tls_port,
        tls_context=insecure_client_context(alpn=["xmpp-client"]))
    assert stream.ssl_object.selected_alpn_protocol() == "xmpp-client"
    await stream.open_stream()
    features = await stream.features()
    assert features.find(q(NS_TLS, "starttls")) is None
    assert "SCRAM-SHA-256" in mechanisms_of(features)

    client = await net.login(natter, ALICE + "/direct", ALICE_PASSWORD,
                             direct_tls=True)
    assert client.boundjid.full == ALICE + "/direct"
    assert (await client.ping())["type"] == "result"


async def _can_negotiate(version, cert, key):
    """Whether this machine's OpenSSL, as a client, can speak `version` at
    all: a control against a deliberately permissive local server, so a
    refusal by natterd means something."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        server_ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        return False

    async def handle(reader, writer):
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                        ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=old_tls_context(version),
            server_hostname="localhost"), IO_TIMEOUT)
        writer.close()
        return True
    except (ssl.SSLError, OSError, ValueError):
        return False
    finally:
        server.close()
        await server.wait_closed()


def old_tls_context(version):
    ctx = insecure_client_context()
    with warnings.catch_warnings():
        # Deprecated is the point: these are the versions to refuse.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1,
                                     ssl.TLSVersion.TLSv1_1],
                         ids=["TLSv1.0", "TLSv1.1"])
@pytest.mark.parametrize("path", ["starttls", "direct"])
async def test_old_tls_versions_refused(natter, net, tmp_path, version,
                                        path):
    cert, key = make_certificate(tmp_path, "localhost")
    if not await _can_negotiate(version, cert, key):
        pytest.skip("this OpenSSL cannot speak %s even to a permissive "
                    "server" % version.name)
    with pytest.raises((ssl.SSLError, ConnectionError, StreamClosed)):
        if path == "direct":
            await net.raw(natter, port=natter.tls_port,
                          tls_context=old_tls_context(version))
        else:
            stream = await net.raw(natter)
            await stream.open_stream()
            await stream.features()
            await stream.starttls(context=old_tls_context(version))
    await net.assert_served(natter)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2,
                                     ssl.TLSVersion.TLSv1_3],
                         ids=["TLSv1.2", "TLSv1.3"])
async def test_current_tls_versions_accepted(natter, net, version):
    stream = await net.raw(natter)
    await stream.open_stream()
    await stream.features()
    await stream.starttls(context=insecure_client_context(
        minimum=version, maximum=version))
    assert stream.ssl_object.version() == {
        ssl.TLSVersion.TLSv1_2: "TLSv1.2",
        ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    await stream.open_stream()
    assert "SCRAM-SHA-256" in mechanisms_of(await stream.features())


async def test_sni_selects_each_hosts_certificate(natter_factory, net,
                                                  tmp_path):
    certs = {domain: make_certificate(tmp_path / domain, domain)
             for domain in ("localhost", "example.test")}
    server = natter_factory(hosts=[
        {"domain": domain, "tls_cert": str(cert), "tls_key": str(key)}
        for domain, (cert, key) in certs.items()])
    for domain, (cert, _) in certs.items():
        expected = pem_to_der(cert)
        stream = await net.raw(server)
        await stream.open_stream(domain)
        await stream.features()
        await stream.starttls(server_hostname=domain)
        assert stream.ssl_object.getpeercert(binary_form=True) == expected, \
            "STARTTLS with SNI %s got another certificate" % domain

        direct = await net.raw(
            server, port=server.tls_port, server_hostname=domain,
            tls_context=insecure_client_context(alpn=["xmpp-client"]))
        assert direct.ssl_object.getpeercert(binary_form=True) == expected, \
            "direct TLS with SNI %s got another certificate" % domain

    server.add_user("carol@example.test", "carol-secret")
    carol = await net.login(server, "carol@example.test/x", "carol-secret")
    assert carol.boundjid.full == "carol@example.test/x"


async def test_generated_certificate_names_its_host(natter_factory, net,
                                                    tmp_path):
    server = natter_factory(hosts=[{"domain": "localhost"},
                                   {"domain": "example.test"}])
    seen = {}
    for domain in ("localhost", "example.test"):
        stream = await net.raw(server)
        await stream.open_stream(domain)
        await stream.features()
        await stream.starttls(server_hostname=domain)
        der = stream.ssl_object.getpeercert(binary_form=True)
        pem = tmp_path / ("%s.pem" % domain)
        pem.write_text(ssl.DER_cert_to_PEM_cert(der))
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-ext",
             "subjectAltName", "-in", str(pem)],
            capture_output=True, text=True, check=True).stdout
        assert domain in text, text
        seen[domain] = der
    assert seen["localhost"] != seen["example.test"]


# ------------------------------------------- SCRAM-*-PLUS (C test client) --

def run_plus_client(server, mech, *options, user="alice",
                    password=ALICE_PASSWORD, port=None, domain="localhost"):
    """Runs tests/tools/sasl_plus_client; returns (status, stdout lines)."""
    require_binary(SASL_PLUS_CLIENT)
    env = dict(os.environ)
    # Leaks in the test tool are not natterd's; don't let them fail it.
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    proc = subprocess.run(
        [str(SASL_PLUS_CLIENT), "127.0.0.1",
         str(port or server.c2s_port), domain, user, password, mech,
         *options],
        capture_output=True, text=True, env=env, timeout=60)
    lines = proc.stdout.splitlines()
    assert "runtime error:" not in proc.stderr, proc.stderr
    assert "AddressSanitizer" not in proc.stderr, proc.stderr
    return proc.returncode, lines, proc.stderr


def assert_plus_client_served(server):
    """After a refused attempt, a well-behaved client still gets in."""
    status, lines, err = run_plus_client(server, "SCRAM-SHA-256-PLUS")
    assert status == 0 and "success" in lines, "%s\n%s" % (lines, err)


PLUS_VARIANTS = [
    ([], "TLSv1.3", "tls-exporter"),
    (["--tls12"], "TLSv1.2", "tls-exporter"),
    (["--tls12", "--cb", "tls-unique"], "TLSv1.2", "tls-unique"),
    (["--direct"], "TLSv1.3", "tls-exporter"),
]


@pytest.mark.parametrize("options,tls,cb", PLUS_VARIANTS,
                         ids=["tls13-exporter", "tls12-exporter",
                              "tls12-unique", "direct-tls-exporter"])
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_scram_plus_login(natter, mech, options, tls, cb):
    natter.add_user(ALICE, ALICE_PASSWORD)
    port = natter.tls_port if "--direct" in options else None
    status, lines, err = run_plus_client(natter, mech, *options, port=port)
    assert status == 0, "%s\n%s\n%s" % (lines, err, natter.log[-4000:])
    assert "tls: %s" % tls in lines
    assert "success" in lines
    assert "bound: %s/sasl-plus" % ALICE in lines
    offered = {line.split(": ", 1)[1] for line in lines
               if line.startswith("offered-cb: ")}
    assert cb in offered
    if tls == "TLSv1.3":
        assert "tls-unique" not in offered


def test_scram_plus_client_without_binding_still_works(natter):
    # Control for the tool itself: plain SCRAM, gs2 flag "n".
    natter.add_user(ALICE, ALICE_PASSWORD)
    status, lines, err = run_plus_client(natter, "SCRAM-SHA-256")
    assert status == 0, "%s\n%s" % (lines, err)
    assert "success" in lines


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
@pytest.mark.parametrize("options", [[], ["--tls12", "--cb", "tls-unique"]],
                         ids=["tls-exporter", "tls-unique"])
def test_scram_plus_tampered_binding_refused(natter, mech, options):
    natter.add_user(ALICE, ALICE_PASSWORD)
    status, lines, err = run_plus_client(natter, mech, "--tamper-cb",
                                         *options)
    assert status == 1, "%s\n%s" % (lines, err)
    assert "success" not in lines
    assert any(line.startswith("failure: ") for line in lines), lines
    assert_plus_client_served(natter)


def test_scram_plus_wrong_password(natter):
    natter.add_user(ALICE, ALICE_PASSWORD)
    status, lines, err = run_plus_client(natter, "SCRAM-SHA-256-PLUS",
                                         password="wrong")
    assert status == 1, "%s\n%s" % (lines, err)
    assert "failure: not-authorized" in lines
    assert_plus_client_served(natter)

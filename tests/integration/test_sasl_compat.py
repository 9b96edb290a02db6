"""SASL logins as stock clients make them (issue 10, items 1, 2 and 13):

* Debian 12's slixmpp with its default settings: no mechanism pinned, so
  it picks SCRAM-*-PLUS whenever offered, and it always binds with gs2
  "p=tls-unique", also on TLS 1.3 (docs/decisions/0006);
* user names typed with capitals, in PLAIN and SCRAM, and authzids that
  normalise to the same account;
* what the log says about such logins."""

import asyncio
import base64
import ssl
import xml.etree.ElementTree as ET

import pytest

from natterlib import (IO_TIMEOUT, NS_SASL, NS_SASL_CB, LoginFailed,
                       XmppClient, insecure_client_context, q,
                       raw_connect_tls)
from test_login import run_plus_client

MALLORY = "mallory@localhost"
MALLORY_PASSWORD = "mallory-secret"
ALICE = "alice@localhost"
ALICE_PASSWORD = "alice-secret"

TLS_VERSIONS = {"TLSv1.3": None, "TLSv1.2": ssl.TLSVersion.TLSv1_2}


# ------------------------------------------- slixmpp, default settings ----

@pytest.mark.parametrize("tls", ["TLSv1.3", "TLSv1.2"])
@pytest.mark.parametrize("direct_tls", [False, True],
                         ids=["starttls", "direct-tls"])
async def test_stock_slixmpp_logs_in(natter, net, tls, direct_tls):
    """slixmpp 1.8 as a newcomer runs it: it picks SCRAM-SHA-256-PLUS and
    sends "p=tls-unique" whatever the TLS version."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    client = await net.login_stock(natter, ALICE + "/stock", ALICE_PASSWORD,
                                   tls_max=TLS_VERSIONS[tls],
                                   direct_tls=direct_tls)
    mech = client["feature_mechanisms"].mech
    assert mech.name == "SCRAM-SHA-256-PLUS", mech.name
    assert mech.use_channel_binding, "slixmpp did not bind (gs2 'p')"
    assert mech.gs2_header.startswith(b"p=tls-unique,"), mech.gs2_header
    assert client.socket.version() == tls
    assert client.boundjid.full == ALICE + "/stock"
    assert (await client.ping())["type"] == "result"
    await natter.await_log("authenticated as %s with SCRAM-SHA-256-PLUS"
                           % ALICE)


@pytest.mark.parametrize("tls", ["TLSv1.3", "TLSv1.2"])
async def test_stock_slixmpp_wrong_password_is_not_authorized(natter, net,
                                                              tls):
    """The binding is checked, and so is the password."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    with pytest.raises(LoginFailed) as failed:
        await net.login_stock(natter, ALICE, "not-the-password",
                              tls_max=TLS_VERSIONS[tls])
    assert failed.value.condition == "not-authorized"
    await net.assert_served(natter)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_tls_unique_binding_is_checked_on_tls13(natter, mech):
    """tls-unique on TLS 1.3 is a real binding, not a pass: the client's
    Finished, flipped by one bit, is refused."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    status, lines, err = run_plus_client(natter, mech, "--cb", "tls-unique")
    assert status == 0, "%s\n%s\n%s" % (lines, err, natter.log[-3000:])
    assert "tls: TLSv1.3" in lines
    status, lines, err = run_plus_client(natter, mech, "--cb", "tls-unique",
                                         "--tamper-cb")
    assert "tls: TLSv1.3" in lines
    assert status == 1, "%s\n%s" % (lines, err)
    assert "failure: not-authorized" in lines


async def test_tls13_advertises_only_tls_exporter(natter, net):
    """XEP-0440 clients are steered to tls-exporter (RFC 9266): tls-unique
    is accepted on TLS 1.3 but never offered there."""
    _, features = await net.raw_tls(natter)
    bindings = features.find(q(NS_SASL_CB, "sasl-channel-binding"))
    assert bindings is not None, ET.tostring(features, "unicode")
    assert [b.get("type") for b in bindings] == ["tls-exporter"]


async def test_y_flag_in_a_response_is_refused_on_tls12(natter, net):
    """The downgrade check (gs2 "y" where -PLUS and tls-unique are
    offered) also holds when the client-first message comes in a
    <response/> after an empty <auth/>, not only as the initial
    response."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    stream = await net.raw(natter)
    await stream.open_stream()
    await stream.features()
    await stream.starttls(context=insecure_client_context(
        maximum=ssl.TLSVersion.TLSv1_2))
    await stream.open_stream()
    await stream.features()
    mark = natter.log_mark()
    await stream.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>=</auth>"
                      % NS_SASL)
    await stream.expect(q(NS_SASL, "challenge"))
    await stream.send("<response xmlns='%s'>%s</response>"
                      % (NS_SASL, scram_first("y,,", "Alice")))
    answer = await stream.next()
    assert answer is not None and answer.tag == q(NS_SASL, "failure"), \
        stream.describe()
    assert answer[0].tag == q(NS_SASL, "not-authorized"), stream.describe()
    await natter.await_log("SASL SCRAM-SHA-256 for 'alice': refused: the "
                           "client says it saw no -PLUS", since=mark)


# --------------------------------------------------- capitalised names ----

async def plain(natter, authzid, authcid, password):
    """One PLAIN attempt by hand; returns "success" or the failure
    condition."""
    stream, _ = await raw_connect_tls(natter.c2s_port)
    try:
        token = base64.b64encode(
            ("%s\0%s\0%s" % (authzid, authcid, password)).encode()).decode()
        await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                          % (NS_SASL, token))
        answer = await stream.next()
        assert answer is not None, stream.describe()
        if answer.tag == q(NS_SASL, "success"):
            return "success"
        assert answer.tag == q(NS_SASL, "failure"), stream.describe()
        return answer[0].tag.split("}")[1]
    finally:
        await stream.close()


@pytest.mark.parametrize("authzid,authcid", [
    ("", "Mallory"),
    ("", "MALLORY"),
    ("", "\uff2d\uff41\uff4c\uff4c\uff4f\uff52\uff59"),   # fullwidth
    ("Mallory", "mallory"),
    ("MALLORY", "Mallory"),
    ("Mallory@LOCALHOST", "Mallory"),
    ("mallory@localhost", "MALLORY"),
    ("mallory@LocalHost.", "mallory"),
])
async def test_plain_with_capitals_logs_in(natter, authzid, authcid):
    natter.add_user(MALLORY, MALLORY_PASSWORD)
    got = await plain(natter, authzid, authcid, MALLORY_PASSWORD)
    assert got == "success", "%s\n%s" % (got, natter.log[-3000:])
    await natter.await_log("authenticated as %s with PLAIN" % MALLORY)


@pytest.mark.parametrize("authzid", [
    "Alice",
    "ALICE@localhost",
    "mallory@localhost/desk",
    "mallory@example.test",
    "@localhost",
])
async def test_authzid_of_another_identity_is_refused(natter, net, authzid):
    natter.add_user(MALLORY, MALLORY_PASSWORD)
    natter.add_user(ALICE, ALICE_PASSWORD)
    got = await plain(natter, authzid, "Mallory", MALLORY_PASSWORD)
    assert got == "invalid-authzid", got
    assert "authenticated as" not in natter.log
    await net.assert_served(natter)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("username,authzid", [
    ("Mallory", None),
    ("MALLORY", "Mallory@LOCALHOST"),
])
async def test_scram_with_capitals_logs_in(natter, net, mechanism, username,
                                           authzid):
    """slixmpp lower-cases the JID it is given, so the user name and
    authzid go in as its credentials, as a client that sends what was
    typed would."""
    natter.add_user(MALLORY, MALLORY_PASSWORD)
    client = await login_as_typed(net, natter, username, authzid,
                                  mechanism=mechanism)
    assert client.boundjid.bare == MALLORY


async def login_as_typed(net, natter, username, authzid, **kwargs):
    client = XmppClient(MALLORY, MALLORY_PASSWORD, **kwargs)
    client.credentials["username"] = username
    if authzid:
        client.credentials["authzid"] = authzid
    net._open.append(client)
    client.connect(("127.0.0.1", natter.c2s_port))
    kind, detail = await asyncio.wait_for(asyncio.shield(client._outcome),
                                          IO_TIMEOUT)
    assert kind == "ok", "%s %s\n%s" % (kind, detail, natter.log[-3000:])
    return client


@pytest.mark.parametrize("options", [[], ["--tls12", "--cb", "tls-unique"]],
                         ids=["tls-exporter", "tls-unique"])
def test_scram_plus_with_capitals_logs_in(natter, options):
    natter.add_user(MALLORY, MALLORY_PASSWORD)
    status, lines, err = run_plus_client(natter, "SCRAM-SHA-256-PLUS",
                                         *options, user="Mallory",
                                         password=MALLORY_PASSWORD)
    assert status == 0, "%s\n%s\n%s" % (lines, err, natter.log[-3000:])
    assert "bound: %s/sasl-plus" % MALLORY in lines


# ------------------------------------------------------------------ log ----

def scram_first(gs2, user):
    return base64.b64encode(("%sn=%s,r=fyko+d2lbbFgONRv9qkxdawL"
                             % (gs2, user)).encode()).decode()


@pytest.mark.parametrize("gs2", ["n,,", "p=tls-server-end-point,,",
                                 "p=no-such-binding,,"])
async def test_failed_plus_login_logs_the_user_name(natter, net, gs2):
    """A -PLUS attempt refused before the account is read still names the
    user the client gave, not ''."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    stream, _ = await raw_connect_tls(natter.c2s_port)
    mark = natter.log_mark()
    await stream.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256-PLUS'>%s"
                      "</auth>" % (NS_SASL, scram_first(gs2, "Alice")))
    answer = await stream.next()
    assert answer is not None and answer.tag == q(NS_SASL, "failure"), \
        stream.describe()
    await stream.close()
    log = await natter.await_log(
        "authentication failed for 'alice' with SCRAM-SHA-256-PLUS",
        since=mark)
    assert "for ''" not in log[mark:], log[mark:]


async def test_unusable_user_name_is_logged_escaped(natter, net):
    stream, _ = await raw_connect_tls(natter.c2s_port)
    mark = natter.log_mark()
    await stream.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256-PLUS'>%s"
                      "</auth>" % (NS_SASL, scram_first("n,,", "a\nb c")))
    answer = await stream.next()
    assert answer is not None and answer.tag == q(NS_SASL, "failure"), \
        stream.describe()
    await stream.close()
    await natter.await_log("authentication failed for 'a\\x0ab c'",
                           since=mark)


async def test_debug_log_speaks_words(natter, net):
    """At debug level, a login's SASL lines say what happens, not which
    GNU SASL property number was asked for."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        await net.login(natter, ALICE, ALICE_PASSWORD, mechanism=mechanism)
    with pytest.raises(LoginFailed):
        await net.login(natter, "nobody@localhost", "x",
                        mechanism="SCRAM-SHA-1")
    status, lines, _ = run_plus_client(natter, "SCRAM-SHA-256-PLUS")
    assert status == 0, lines
    log = natter.log
    assert "asks for property" not in log
    assert "property" not in log.lower()
    assert ("SASL SCRAM-SHA-256 for 'alice': the account's salt and keys "
            "are read from the store" in log), log
    assert "SASL SCRAM-SHA-1 for 'nobody': no such account" in log, log
    assert ("SASL PLAIN for 'alice': the account store checks the "
            "password" in log), log
    assert ("SASL SCRAM-SHA-256-PLUS for 'alice': channel binding "
            "tls-exporter" in log), log

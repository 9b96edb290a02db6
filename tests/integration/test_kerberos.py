"""Kerberos single sign-on: SASL GSSAPI (RFC 4752) against a real MIT
krb5kdc (the session-scoped `kdc` fixture, see dirlib.Kdc), for a host
with internal accounts and for a host whose accounts are in the directory
(the `slapd` fixture).

The client is slixmpp's own GSSAPI mechanism (python3-kerberos, MIT
libgssapi underneath), run in the test process: the ticket cache and the
krb5.conf are chosen through KRB5CCNAME and KRB5_CONFIG, which MIT reads
when each GSS context is created, so they are set just for the login.
slixmpp asks for a ticket for xmpp@<the domain it connects to>, i.e. the
service principal xmpp/<domain>@NATTER.TEST; the KDC has xmpp/localhost
and xmpp/ldap.test, both in the keytab natterd is given.

natterd gets KRB5_CONFIG too (natter_factory(env=...)).
"""

import asyncio
import os

import pytest

from dirlib import (
    LDAP_DOMAIN, LDAP_PASSWORDS, REALM, kerberos_section, ldap_host,
    mechanisms, sasl_attempt)
from imlib import Inbox
from natterlib import IO_TIMEOUT, LoginFailed, XmppClient

ALICE_INTERNAL = "alice@localhost"


def start_server(natter_factory, kdc, slapd=None, *, internal_kerberos=None,
                 ldap_kerberos=None):
    """natterd with localhost (internal accounts) and, with slapd,
    ldap.test (directory accounts); kerberos sections as given."""
    hosts = [{"domain": "localhost"}]
    if internal_kerberos is not None:
        hosts[0]["kerberos"] = internal_kerberos
    if slapd is not None:
        hosts.append(ldap_host(slapd, LDAP_DOMAIN, kerberos=ldap_kerberos))
    return natter_factory(hosts=hosts, env=kdc.env)


class _Env:
    """Sets variables in os.environ for a block, restores them after."""

    def __init__(self, env):
        self.env = env

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def gssapi_login(net, server, jid, client_env, *, authzid=None,
                       service_host=None):
    """A slixmpp session that logs in with SASL GSSAPI using the ticket
    cache in client_env (from kdc.kinit).  authzid (the identity in the
    final RFC 4752 security-layer message) defaults to the bare JID.
    service_host replaces the domain in the service principal asked for.
    Raises LoginFailed with the SASL condition."""
    client = XmppClient(jid, "", mechanism="GSSAPI")
    client.credentials["username"] = authzid if authzid is not None \
        else client.boundjid.bare
    if service_host is not None:
        client.credentials["service-name"] = service_host
    net._open.append(client)
    with _Env(client_env):
        client.connect(("127.0.0.1", server.c2s_port))
        try:
            kind, detail = await asyncio.wait_for(
                asyncio.shield(client._outcome), IO_TIMEOUT)
        except asyncio.TimeoutError:
            client.abort()
            raise AssertionError("GSSAPI login of %s did not finish:\n%s"
                                 % (jid, server.log[-3000:])) from None
    if kind != "ok":
        client.abort()
        # Shown by pytest when the test fails.
        print("GSSAPI login of %s: %s %s; natterd's log ends:\n%s"
              % (jid, kind, detail, server.log[-3000:]))
        raise LoginFailed(detail if kind == "failed" else kind, str(detail))
    client.inbox = Inbox(client)
    return client


async def expect_gssapi_refused(net, server, jid, client_env, condition):
    with pytest.raises(LoginFailed) as failed:
        await gssapi_login(net, server, jid, client_env)
    assert failed.value.condition == condition, (
        "%s: expected %s, got %s\n%s" % (jid, condition,
                                         failed.value.condition,
                                         server.log[-3000:]))


@pytest.fixture
def internal(natter_factory, kdc):
    """localhost with internal accounts and GSSAPI (xmpp/localhost)."""
    return start_server(natter_factory, kdc,
                        internal_kerberos=kerberos_section(kdc))


async def test_gssapi_offered(internal, net):
    _, features = await net.raw_tls(internal, "localhost")
    mechs = mechanisms(features)
    assert "GSSAPI" in mechs, mechs
    assert any(m.startswith("SCRAM-") for m in mechs), mechs


async def test_gssapi_not_offered_without_keytab(natter, net):
    _, features = await net.raw_tls(natter, "localhost")
    assert "GSSAPI" not in mechanisms(features)


async def test_gssapi_login_internal_account(internal, kdc, net):
    internal.add_user(ALICE_INTERNAL, "unused-password")
    ticket = kdc.kinit("alice@NATTER.TEST")
    client = await gssapi_login(net, internal, ALICE_INTERNAL + "/krb",
                                ticket)
    assert client.boundjid.full == ALICE_INTERNAL + "/krb"
    reply = await client.ping()
    assert reply["type"] == "result"
    assert "GSSAPI" in internal.log


@pytest.mark.parametrize("authzid", ["", "alice"],
                         ids=["empty", "localpart"])
async def test_gssapi_login_other_authzid_forms(internal, kdc, net, authzid):
    # RFC 4752 allows an empty authorization identity; slixmpp by default
    # sends the JID's localpart, which names the same account.
    internal.add_user(ALICE_INTERNAL, "unused-password")
    ticket = kdc.kinit("alice@NATTER.TEST")
    client = await gssapi_login(net, internal, ALICE_INTERNAL + "/krb",
                                ticket, authzid=authzid)
    assert client.boundjid.bare == ALICE_INTERNAL


async def test_gssapi_needs_no_krb5_conf_on_natters_host(natter_factory, kdc, net,
                                                          tmp_path):
    """docs/kerberos.md: the keytab is all natterd needs. KRB5_CONFIG names
    a file that does not exist, so MIT reads no krb5.conf at all (not even
    /etc/krb5.conf); the realm comes from the ticket, checked against
    `realms`."""
    server = natter_factory(
        hosts=[{"domain": "localhost", "kerberos": kerberos_section(kdc)}],
        env={"KRB5_CONFIG": str(tmp_path / "no-krb5.conf")})
    server.add_user(ALICE_INTERNAL, "unused-password")
    ticket = kdc.kinit("alice@NATTER.TEST")
    client = await gssapi_login(net, server, ALICE_INTERNAL + "/krb", ticket)
    assert client.boundjid.full == ALICE_INTERNAL + "/krb"


async def test_gssapi_other_realm_refused(internal, kdc, net):
    # mallory@OTHER.TEST holds a valid cross-realm ticket for
    # xmpp/localhost@NATTER.TEST, but OTHER.TEST is not an accepted realm.
    internal.add_user("mallory@localhost", "unused-password")
    mark = internal.log_mark()
    ticket = kdc.kinit("mallory@OTHER.TEST")
    await expect_gssapi_refused(net, internal, "mallory@localhost/krb",
                                ticket, "not-authorized")
    reasons = [line for line in internal.log[mark:].splitlines()
               if "OTHER.TEST" in line and "realm" in line.lower()]
    assert reasons, ("natterd did not log that realm OTHER.TEST is not "
                     "accepted:\n%s" % internal.log[mark:])


async def test_gssapi_ticket_without_account_refused(internal, kdc, net):
    # carol@NATTER.TEST has a ticket but no account on localhost.
    ticket = kdc.kinit("carol@NATTER.TEST")
    await expect_gssapi_refused(net, internal, "carol@localhost/krb",
                                ticket, "not-authorized")


async def test_gssapi_cannot_claim_another_account(internal, kdc, net):
    # bob's ticket, alice's JID as the authorization identity.
    internal.add_user(ALICE_INTERNAL, "unused-password")
    internal.add_user("bob@localhost", "unused-password")
    ticket = kdc.kinit("bob@NATTER.TEST")
    with pytest.raises(LoginFailed) as failed:
        await gssapi_login(net, internal, "bob@localhost/krb", ticket,
                           authzid=ALICE_INTERNAL)
    assert failed.value.condition in ("invalid-authzid", "not-authorized")


async def test_gssapi_garbage_token_refused(internal, net):
    outcome, condition, _, _ = await sasl_attempt(
        net, internal, "localhost", "GSSAPI", b"\x60\x03not a token")
    assert outcome == "failure", condition
    assert condition in ("not-authorized", "malformed-request",
                         "temporary-auth-failure"), condition
    await net.assert_served(internal)


# --------------------------------------------------- directory accounts ---

@pytest.fixture
def ldap_krb(natter_factory, kdc, slapd):
    """ldap.test with directory accounts and GSSAPI (xmpp/ldap.test: the
    kerberos hostname defaults to the domain)."""
    return start_server(natter_factory, kdc, slapd,
                        ldap_kerberos=kerberos_section(kdc))


async def test_gssapi_offered_on_directory_host(ldap_krb, net):
    _, features = await net.raw_tls(ldap_krb, LDAP_DOMAIN)
    assert sorted(mechanisms(features)) == ["GSSAPI", "PLAIN"]


async def test_gssapi_login_directory_account(ldap_krb, kdc, net):
    ticket = kdc.kinit("alice@NATTER.TEST")
    client = await gssapi_login(net, ldap_krb, "alice@%s/krb" % LDAP_DOMAIN,
                                ticket)
    assert client.boundjid.bare == "alice@" + LDAP_DOMAIN
    await client.ping()
    # The password login still works beside it.
    plain = await net.login(ldap_krb, "bob@%s/pw" % LDAP_DOMAIN,
                            LDAP_PASSWORDS["bob"], mechanism="PLAIN")
    await plain.ping()


@pytest.mark.parametrize("name", ["dave", "zoe"],
                         ids=["locked", "not-in-directory"])
async def test_gssapi_directory_account_required(ldap_krb, kdc, net, name):
    # A good ticket is not enough: dave's entry is locked, zoe has none.
    ticket = kdc.kinit("%s@NATTER.TEST" % name)
    await expect_gssapi_refused(net, ldap_krb,
                                "%s@%s/krb" % (name, LDAP_DOMAIN), ticket,
                                "not-authorized")
    # The directory itself is fine.
    client = await gssapi_login(net, ldap_krb, "alice@%s/krb" % LDAP_DOMAIN,
                                kdc.kinit("alice@NATTER.TEST"))
    await client.ping()


async def test_gssapi_explicit_hostname(natter_factory, kdc, slapd, net):
    # kerberos.hostname: localhost makes ldap.test's principal
    # xmpp/localhost; a client told that service host gets in.
    server = start_server(natter_factory, kdc, slapd,
                          ldap_kerberos=kerberos_section(
                              kdc, hostname="localhost", realms=REALM))
    ticket = kdc.kinit("bob@NATTER.TEST")
    client = await gssapi_login(net, server, "bob@%s/krb" % LDAP_DOMAIN,
                                ticket, service_host="localhost")
    assert client.boundjid.bare == "bob@" + LDAP_DOMAIN


async def test_gssapi_in_sasl2_with_bind2(internal, kdc, net):
    """Kerberos inside SASL2 (XEP-0388) with Bind 2 (XEP-0386), which no
    other server offers: the GSSAPI exchange runs in <authenticate>,
    <challenge> and <response>, and the <success> carries the bound full
    JID; the session then works without a stream restart."""
    import kerberos

    from natterlib import q
    from sasl2lib import (NS_SASL2, answer, authenticate, b64, bind2,
                          connect, fast_login, new_device, sasl2_feature,
                          success_parts, unb64, user_agent)

    internal.add_user(ALICE_INTERNAL, "unused-password")
    ticket = kdc.kinit("alice@NATTER.TEST")
    stream, features = await connect(net, internal)
    offered = [m.text for m in sasl2_feature(features).findall(
        q(NS_SASL2, "mechanism"))]
    assert "GSSAPI" in offered, offered
    with _Env(ticket):
        _, gss = kerberos.authGSSClientInit("xmpp@localhost")
        kerberos.authGSSClientStep(gss, "")
        first = kerberos.authGSSClientResponse(gss)
    device = new_device()
    await stream.send(authenticate(
        "GSSAPI", first, user_agent(device) + bind2("krb")
        + "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>"))
    established = False
    for _ in range(5):
        elem = await answer(stream)
        if elem.tag != q(NS_SASL2, "challenge"):
            break
        challenge = b64(unb64(elem.text))
        with _Env(ticket):
            if not established:
                if kerberos.authGSSClientStep(gss, challenge) != \
                        kerberos.AUTH_GSS_CONTINUE:
                    established = True
            else:
                # RFC 4752 §3.1: the security-layer offer, answered with
                # no layer and the identity (the bare JID's localpart).
                kerberos.authGSSClientUnwrap(gss, challenge)
                offer = kerberos.authGSSClientResponse(gss)
                kerberos.authGSSClientWrap(gss, offer, "alice")
            resp = kerberos.authGSSClientResponse(gss) or ""
        await stream.send("<response xmlns='%s'>%s</response>"
                          % (NS_SASL2, resp))
    authz, bound, token = success_parts(elem)
    assert bound is not None and authz.startswith(ALICE_INTERNAL + "/krb.")
    await stream.features()
    await stream.ping_server()
    assert "Kerberos principal alice@NATTER.TEST" in internal.log
    # The Kerberos login got a FAST token: the next reconnect needs no
    # ticket.
    assert token is not None
    again, _ = await connect(net, internal)
    success = await fast_login(again, "alice", token.get("token"),
                               ua_id=device, inline=bind2("krb"))
    assert success_parts(success)[0] == authz

"""SASL2 (XEP-0388) and Bind 2 (XEP-0386): the same mechanisms and limits
as legacy SASL, no stream restart, a bound session in one round trip past
TLS, inline carbons, and hostile input answered as the XEPs say."""

import asyncio
import xml.etree.ElementTree as ET

import pytest

from imlib import accounts, connect as im_connect, jid_of, password_of
from natterlib import (NS_BIND, NS_CLIENT, NS_SASL,
                       expect_stream_error, q)
NS_CSI = "urn:xmpp:csi:0"
NS_SM = "urn:xmpp:sm:3"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"

from sasl2lib import (NS_BIND2, NS_CARBONS, NS_FAST, NS_SASL2, answer,
                      authenticate, b64, bind2, connect, failure_condition,
                      new_device, sasl2_feature, scram_login, success_parts,
                      user_agent)


def mechanisms(features, ns, parent):
    node = features.find(q(ns, parent))
    return [m.text for m in node.iter(q(ns, "mechanism"))]


async def test_sasl2_advertised_with_the_legacy_mechanisms(natter, net):
    _, features = await connect(net, natter)
    legacy = mechanisms(features, NS_SASL, "mechanisms")
    sasl2 = [m.text for m in sasl2_feature(features).findall(
        q(NS_SASL2, "mechanism"))]
    assert sasl2 == legacy and "SCRAM-SHA-256" in sasl2
    inline = sasl2_feature(features).find(q(NS_SASL2, "inline"))
    bind = inline.find(q(NS_BIND2, "bind"))
    assert bind is not None
    assert [f.get("var") for f in bind.iter(q(NS_BIND2, "feature"))] == \
        [NS_CARBONS, NS_CSI, NS_SM]
    assert inline.find(q(NS_FAST, "fast")) is not None
    assert inline.find(q(NS_SM, "sm")) is not None


async def test_one_round_trip_to_a_bound_session_that_receives(natter, net):
    """<authenticate> with an initial response and <bind/> -> <success>
    with <bound/>: no stream restart, no bind iq, and the session is
    online (it gets a message) as soon as the success arrives."""
    accounts(natter, "alice", "bob")
    stream, _ = await connect(net, natter)
    device = new_device()
    # PLAIN has a one-step exchange, so this is one round trip.
    await stream.send(authenticate(
        "PLAIN", b64("\0alice\0" + password_of("alice")),
        user_agent(device) + bind2("phone")))
    success = await answer(stream)
    authz, bound, token = success_parts(success)
    assert bound is not None and token is None
    assert authz.startswith(jid_of("alice", natter.domain) + "/phone.")
    features = await stream.features()
    assert features.find(q(NS_BIND, "bind")) is None
    bob = await im_connect(net, natter, "bob")
    bob.send_message(mto=authz, mbody="straight in", mtype="chat")
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.findtext(q(NS_CLIENT, "body")) == "straight in"
    # The same device gets the same resource the next time; it replaces
    # the session it left behind.
    again, _ = await connect(net, natter)
    await again.send(authenticate(
        "PLAIN", b64("\0alice\0" + password_of("alice")),
        user_agent(device) + bind2("phone")))
    authz2, _, _ = success_parts(await answer(again))
    assert authz2 == authz
    await expect_stream_error(stream, "conflict")
    await again.ping_server()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1",
                                  "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
async def test_scram_in_sasl2(natter, net, mech, tls12):
    accounts(natter, "alice")
    stream, _ = await connect(net, natter, tls12=tls12)
    success = await scram_login(stream, "alice", password_of("alice"),
                                mech=mech, inline=bind2())
    authz, bound, _ = success_parts(success)
    assert bound is not None and "/" in authz
    await stream.features()
    await stream.ping_server()


async def test_scram_plus_with_a_wrong_binding_fails(natter, net):
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    elem = await scram_login(stream, "alice", password_of("alice"),
                             mech="SCRAM-SHA-256-PLUS", cb_data=b"\0" * 12)
    assert failure_condition(elem) == "not-authorized"
    await net.assert_served(natter)


async def test_sasl2_without_bind_then_legacy_bind(natter, net):
    """No <bind/> inline: the success carries the bare JID, the features
    offer resource binding, and the stream is not restarted."""
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    success = await scram_login(stream, "alice", password_of("alice"))
    authz, bound, _ = success_parts(success)
    assert authz == jid_of("alice", natter.domain) and bound is None
    features = await stream.features()
    assert features.find(q(NS_BIND, "bind")) is not None
    jid = await stream.bind("desk")
    assert jid == jid_of("alice", natter.domain) + "/desk"
    await stream.ping_server()


async def test_wrong_password_fails_with_the_legacy_limits(natter, net):
    """Failures count against the stream as in legacy SASL: the last
    allowed one ends it with <policy-violation/>."""
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    for _ in range(2):
        elem = await scram_login(stream, "alice", "wrong")
        assert failure_condition(elem) == "not-authorized"
    await stream.send(authenticate("PLAIN", b64("\0alice\0wrong")))
    await expect_stream_error(stream, "policy-violation", timeout=20)
    await net.assert_served(natter)


@pytest.mark.natter_config(limits={"auth_failures_per_account": 2})
async def test_account_budget_shared_with_legacy_sasl(natter, net):
    """A budget spent through legacy SASL refuses SASL2 too, unchecked."""
    accounts(natter, "alice")
    for _ in range(2):
        stream, _ = await connect(net, natter)
        await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
            NS_SASL, b64("\0alice\0wrong")))
        elem = await answer(stream)
        assert elem.tag == q(NS_SASL, "failure")
    stream, _ = await connect(net, natter)
    await stream.send(authenticate(
        "PLAIN", b64("\0alice\0" + password_of("alice"))))
    assert failure_condition(await answer(stream)) == \
        "temporary-auth-failure"


async def test_inline_carbons(natter, net):
    accounts(natter, "alice", "bob")
    stream, _ = await connect(net, natter)
    success = await scram_login(stream, "alice", password_of("alice"),
                                inline=user_agent(new_device())
                                + bind2("laptop", carbons=True))
    authz, _, _ = success_parts(success)
    await stream.features()
    other = await im_connect(net, natter, "alice", "other")
    bob = await im_connect(net, natter, "bob")
    # A message to another resource of alice comes as a carbon.
    bob.send_message(mto=jid_of("alice", natter.domain) + "/other",
                     mbody="for the other one", mtype="chat")
    carbon = await stream.expect(q(NS_CLIENT, "message"))
    received = carbon.find(q(NS_CARBONS, "received"))
    assert received is not None, ET.tostring(carbon, "unicode")
    assert "for the other one" in ET.tostring(carbon, "unicode")
    assert other.boundjid.full.endswith("/other")


@pytest.mark.natter_config(workers=1)
async def test_inline_inactive_starts_the_session_inactive(natter, net):
    """XEP-0386 with XEP-0352: <inactive/> in <bind/> makes the new session
    inactive from its first stanza: a chat state from a contact waits (the
    session's own ping is answered first), and <active/> lets it through.
    One event loop: bob's stanza has reached alice's session once bob's
    own round trip to the server is over."""
    accounts(natter, "alice", "bob")
    stream, _ = await connect(net, natter)
    success = await scram_login(
        stream, "alice", password_of("alice"),
        inline=user_agent(new_device())
        + bind2("phone", extra="<inactive xmlns='%s'/>" % NS_CSI))
    authz, bound, _ = success_parts(success)
    assert bound is not None
    await stream.features()
    bob = await im_connect(net, natter, "bob")
    bob.send_raw("<message to='%s' type='chat'><composing xmlns='%s'/>"
                 "</message>" % (authz, NS_CHATSTATES))
    await bob.barrier()
    await stream.send("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/>"
                      "</iq>" % natter.domain)
    first = await stream.next()
    assert first is not None and first.tag == q(NS_CLIENT, "iq"), \
        stream.describe()
    await stream.send("<active xmlns='%s'/>" % NS_CSI)
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.find(q(NS_CHATSTATES, "composing")) is not None


async def test_unknown_inline_elements_are_ignored(natter, net):
    """XEP-0388 extensibility: inline elements and <bind/> children the
    server does not know are ignored; the login and binding go on."""
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    inline = (user_agent(new_device())
              + "<megabind xmlns='urn:example:megabind'><x/></megabind>"
              + bind2("t", extra="<enable xmlns='urn:example:other'/>"))
    success = await scram_login(stream, "alice", password_of("alice"),
                                inline=inline)
    authz, bound, _ = success_parts(success)
    assert bound is not None and len(bound) == 0
    await stream.features()
    await stream.ping_server()


async def test_malformed_base64_is_malformed_request(natter, net):
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    await stream.send(authenticate("PLAIN", "!!not base64!!"))
    assert failure_condition(await answer(stream)) in (
        "malformed-request", "incorrect-encoding")
    # The stream is still usable.
    success = await scram_login(stream, "alice", password_of("alice"),
                                inline=bind2())
    success_parts(success)
    await net.assert_served(natter)


async def test_unknown_mechanism_and_missing_mechanism(natter, net):
    stream, _ = await connect(net, natter)
    await stream.send(authenticate("BLURDYBLOOP", b64("x")))
    assert failure_condition(await answer(stream)) == "invalid-mechanism"
    await stream.send("<authenticate xmlns='%s'/>" % NS_SASL2)
    assert failure_condition(await answer(stream)) == "invalid-mechanism"
    # No upgrade task is offered (XEP-0388 §2.3: fail the authentication).
    await stream.send("<authenticate xmlns='%s' mechanism='SCRAM-SHA-1' "
                      "upgrade='UPGR-SCRAM-SHA-256'/>" % NS_SASL2)
    assert failure_condition(await answer(stream)) == "invalid-mechanism"


async def test_abort(natter, net):
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    await stream.send(authenticate("SCRAM-SHA-256", b64("n,,n=alice,r=abc")))
    assert (await answer(stream)).tag == q(NS_SASL2, "challenge")
    await stream.send("<abort xmlns='%s'/>" % NS_SASL2)
    assert failure_condition(await answer(stream)) == "aborted"
    success_parts(await scram_login(stream, "alice", password_of("alice")))


async def test_authenticate_twice(natter, net):
    """A second <authenticate/> during an exchange, or after success, ends
    the stream (XEP-0388: only <response/> or <abort/> during it, and a
    stream error after success)."""
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    await stream.send(authenticate("SCRAM-SHA-256", b64("n,,n=alice,r=abc")))
    assert (await answer(stream)).tag == q(NS_SASL2, "challenge")
    await stream.send(authenticate("PLAIN", b64("\0alice\0x")))
    await expect_stream_error(stream, "policy-violation")

    stream, _ = await connect(net, natter)
    success_parts(await scram_login(stream, "alice", password_of("alice"),
                                    inline=bind2()))
    await stream.features()
    await stream.send(authenticate(
        "PLAIN", b64("\0alice\0" + password_of("alice"))))
    await expect_stream_error(stream, "policy-violation")
    await net.assert_served(natter)


async def test_bind2_without_sasl2(natter, net):
    """Bind 2 exists only inline in SASL2: sent on its own before
    authentication it is refused like any other element there, and as an
    iq payload after legacy SASL it is no resource binding."""
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    await stream.send(bind2("x"))
    await expect_stream_error(stream, "not-authorized")

    stream, _ = await connect(net, natter)
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
        NS_SASL, b64("\0alice\0" + password_of("alice"))))
    await stream.expect(q(NS_SASL, "success"))
    await stream.open_stream(natter.domain)
    await stream.features()
    await stream.send("<iq type='set' id='b2'>%s</iq>" % bind2("x"))
    await expect_stream_error(stream, "not-authorized")
    await net.assert_served(natter)


async def test_stanza_during_exchange_closes(natter, net):
    stream, _ = await connect(net, natter)
    await stream.send(authenticate("SCRAM-SHA-256", b64("n,,n=alice,r=abc")))
    assert (await answer(stream)).tag == q(NS_SASL2, "challenge")
    await stream.send("<message to='x@localhost'><body>hi</body></message>")
    await expect_stream_error(stream, "policy-violation")


async def test_legacy_stock_slixmpp_still_logs_in(natter, net):
    """slixmpp at its defaults (no SASL2) is unaffected by the new
    feature."""
    accounts(natter, "alice")
    client = await net.login_stock(natter, jid_of("alice", natter.domain)
                                   + "/stock", password_of("alice"))
    reply = await client.ping()
    assert reply["type"] == "result"


async def test_directory_host_plain_in_sasl2(natter_factory, slapd, net):
    """On a host whose accounts are in LDAP, PLAIN in SASL2 waits for the
    directory (as legacy SASL does) and binds; FAST is not offered there
    and a token login is an unknown mechanism."""
    from dirlib import LDAP_DOMAIN, LDAP_PASSWORDS, ldap_host
    server = natter_factory(hosts=[{"domain": "localhost"},
                                   ldap_host(slapd, LDAP_DOMAIN)])
    stream, features = await connect(net, server, domain=LDAP_DOMAIN)
    assert sasl2_feature(features).find(
        "%s/%s" % (q(NS_SASL2, "inline"), q(NS_FAST, "fast"))) is None
    await stream.send(authenticate(
        "PLAIN", b64("\0alice\0" + LDAP_PASSWORDS["alice"]),
        user_agent(new_device()) + bind2("ldap")))
    authz, bound, _ = success_parts(await answer(stream))
    assert bound is not None and authz.startswith("alice@%s/ldap." % LDAP_DOMAIN)
    await stream.features()
    await stream.ping_server(to=LDAP_DOMAIN)

    stream, _ = await connect(net, server, domain=LDAP_DOMAIN)
    await stream.send(authenticate(
        "PLAIN", b64("\0alice\0wrong"), user_agent(new_device())))
    assert failure_condition(await answer(stream)) == "not-authorized"
    await stream.send(authenticate("HT-SHA-256-NONE", b64("alice\0" + "x" * 32),
                                   user_agent(new_device())
                                   + "<fast xmlns='%s'/>" % NS_FAST))
    assert failure_condition(await answer(stream)) == "invalid-mechanism"


async def test_abort_does_not_cut_the_failure_delay(natter, net):
    """As in legacy SASL: the answer to a wrong SCRAM proof is delayed, and
    an <abort/> meanwhile changes nothing; a new <authenticate/> before
    the answer ends the stream."""
    from sasl2lib import Scram
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)

    async def wrong_proof_then(extra):
        scram = Scram("SCRAM-SHA-256", "alice", "wrong")
        await stream.send(authenticate("SCRAM-SHA-256", scram.first()))
        challenge = await answer(stream)
        assert challenge.tag == q(NS_SASL2, "challenge")
        await stream.send("<response xmlns='%s'>%s</response>%s"
                          % (NS_SASL2, scram.final(challenge.text), extra))

    started = asyncio.get_running_loop().time()
    await wrong_proof_then("<abort xmlns='%s'/>" % NS_SASL2)
    assert failure_condition(await answer(stream)) == "not-authorized"
    assert asyncio.get_running_loop().time() - started >= 0.2
    await wrong_proof_then(authenticate("PLAIN", b64("\0alice\0wrong")))
    await expect_stream_error(stream, "policy-violation")


# ---------------------------------------- stream management inline --

def sm_enable_inline(resume=True):
    return "<enable xmlns='%s'%s/>" % (NS_SM, " resume='true'" if resume else "")


def cut(stream):
    """Loses the connection as a phone in a lift does: an RST."""
    import socket
    import struct
    transport = stream.writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
    transport.abort()


async def test_inline_enable_then_inline_resume(natter, net):
    """XEP-0386 + XEP-0198: stream management enabled inside <bind/>
    (<enabled/> in <bound/>); after a cut, one <authenticate/> with an
    inline <resume/> gets a <success/> carrying <resumed/> and the same
    full JID, then what was sent meanwhile, once. No <bound/>: nothing was
    bound anew."""
    accounts(natter, "alice", "bob")
    device = new_device()
    stream, _ = await connect(net, natter)
    success = await scram_login(
        stream, "alice", password_of("alice"),
        inline=user_agent(device) + bind2("phone", extra=sm_enable_inline()))
    authz, bound, _ = success_parts(success)
    enabled = bound.find(q(NS_SM, "enabled"))
    assert enabled is not None and enabled.get("resume") == "true", \
        ET.tostring(success, "unicode")
    previd = enabled.get("id")
    await stream.features()
    bob = await im_connect(net, natter, "bob")
    bob.send_raw("<message to='%s' type='chat' id='before'><body>1</body>"
                 "</message>" % authz)
    first = await stream.expect(q(NS_CLIENT, "message"))
    assert first.get("id") == "before"
    mark = natter.log_mark()
    cut(stream)
    await natter.await_log("detached", since=mark)
    bob.send_raw("<message to='%s' type='chat' id='meanwhile'><body>2</body>"
                 "</message>" % authz)
    await bob.barrier()
    again, _ = await connect(net, natter)
    success = await scram_login(
        again, "alice", password_of("alice"),
        inline=user_agent(device)
        + "<resume xmlns='%s' previd='%s' h='1'/>" % (NS_SM, previd)
        + bind2("phone"))
    authz2, bound2, _ = success_parts(success)
    resumed = success.find(q(NS_SM, "resumed"))
    assert resumed is not None and resumed.get("previd") == previd, \
        ET.tostring(success, "unicode")
    assert bound2 is None and authz2 == authz
    features = await again.features()
    assert features.find(q(NS_BIND, "bind")) is None
    msg = await again.expect(q(NS_CLIENT, "message"))
    assert msg.get("id") == "meanwhile", again.describe()
    # 'before' was acknowledged (h='1'): it does not come again.
    await again.ping_server()
    assert "before" not in again.describe(), again.describe()


async def test_inline_resume_refused_binds_a_new_session(natter, net):
    """An inline <resume/> of an unknown session: the <success/> carries
    <failed><item-not-found/></failed> and, since <bind/> came too, a new
    session with stream management as asked."""
    accounts(natter, "alice")
    stream, _ = await connect(net, natter)
    success = await scram_login(
        stream, "alice", password_of("alice"),
        inline=user_agent(new_device())
        + "<resume xmlns='%s' previd='bm9uZQ' h='0'/>" % NS_SM
        + bind2("phone", extra=sm_enable_inline()))
    authz, bound, _ = success_parts(success)
    failed = success.find(q(NS_SM, "failed"))
    assert failed is not None and \
        failed.find(q("urn:ietf:params:xml:ns:xmpp-stanzas",
                      "item-not-found")) is not None, \
        ET.tostring(success, "unicode")
    assert bound is not None and bound.find(q(NS_SM, "enabled")) is not None
    await stream.features()
    await stream.ping_server()

"""The everyday XEPs: service discovery and what it advertises (XEP-0030),
the server's entity capabilities (XEP-0115), software version (XEP-0092),
entity time (XEP-0202), last activity (XEP-0012), vcard-temp (XEP-0054),
private XML storage (XEP-0049), in-band registration (XEP-0077), and
receipts (XEP-0184) and chat states (XEP-0085) passing through untouched.
Blocking (XEP-0191) is test_blocking.py; offline messages (XEP-0160) are
test_offline.py."""

import re
import time
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from slixmpp.exceptions import IqError

from imlib import (
    send_marker,
    NS_CAPS, NS_CHATSTATES, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_LAST,
    NS_PRIVATE, NS_RECEIPTS, NS_REGISTER, NS_REGISTER_FEATURE, NS_TIME,
    NS_VCARD, NS_VERSION, accounts, caps_ver, connect, error_condition,
    iq_error, msg, now_utc, parse_stamp, password_of, raw_login_features,
    subscribe)
from natterlib import (
    NS_CLIENT, LoginFailed, StreamClosed, q, stanza_error_condition)

ALICE, BOB, DAVE = "alice@localhost", "bob@localhost", "dave@localhost"
REGISTRATION_ON = {"allow_registration": True, "registration_interval": 0}


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "dave")


async def disco_info(client, to="localhost", node=None):
    payload = "<query xmlns='%s'%s/>" % (
        NS_DISCO_INFO, " node='%s'" % node if node else "")
    result = await client.iq(to, payload)
    return result.xml.find(q(NS_DISCO_INFO, "query"))


def features_of(info):
    return {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}


# ---------------------------------------------------- disco (XEP-0030) ---

async def test_server_identity(server, net):
    alice = await connect(net, server, "alice")
    info = await disco_info(alice)
    identities = {(i.get("category"), i.get("type"))
                  for i in info.findall(q(NS_DISCO_INFO, "identity"))}
    assert ("server", "im") in identities, identities


# Every feature a module of issue 3 brings, with the test that proves it.
SERVER_FEATURES = [
    NS_DISCO_INFO,             # test_server_identity
    NS_DISCO_ITEMS,            # test_disco_items
    "urn:xmpp:ping",           # test_routing.py::test_ping_server
    NS_VERSION,                # test_software_version
    NS_TIME,                   # test_entity_time
    NS_LAST,                   # test_last_activity_*
    NS_VCARD,                  # test_vcard_*
    NS_PRIVATE,                # test_private_storage_*
    "urn:xmpp:blocking",       # test_blocking.py
    "msgoffline",              # test_offline.py
]


@pytest.mark.parametrize("feature", SERVER_FEATURES)
async def test_server_advertises_feature(server, net, feature):
    alice = await connect(net, server, "alice")
    info = await disco_info(alice)
    assert feature in features_of(info), sorted(features_of(info))


async def test_disco_items(server, net):
    alice = await connect(net, server, "alice")
    result = await alice.iq("localhost", "<query xmlns='%s'/>"
                            % NS_DISCO_ITEMS)
    query = result.xml.find(q(NS_DISCO_ITEMS, "query"))
    assert query is not None
    for item in query.findall(q(NS_DISCO_ITEMS, "item")):
        assert item.get("jid"), ET.tostring(query, "unicode")


async def test_disco_features_are_unique(server, net):
    alice = await connect(net, server, "alice")
    info = await disco_info(alice)
    listed = [f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))]
    assert len(listed) == len(set(listed)), listed


@pytest.mark.natter_config(**REGISTRATION_ON)
async def test_registration_feature_advertised_when_enabled(server, net):
    alice = await connect(net, server, "alice")
    assert NS_REGISTER in features_of(await disco_info(alice))


# --------------------------------------------------- caps (XEP-0115) -----

async def test_server_caps_hash_matches_disco(server, net):
    stream, features = await raw_login_features(net, server, "alice")
    caps = features.find(q(NS_CAPS, "c"))
    assert caps is not None, "no <c xmlns='%s'/> in stream features:\n%s" \
        % (NS_CAPS, ET.tostring(features, "unicode"))
    assert caps.get("hash") == "sha-1"
    assert caps.get("node")
    ver = caps.get("ver")

    reply = await stream.iq_roundtrip(
        "info-1", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    info = reply.find(q(NS_DISCO_INFO, "query"))
    assert caps_ver(info) == ver, "caps ver %s is not the hash of the " \
        "server's disco#info (%s)" % (ver, caps_ver(info))

    # XEP-0115 6.2: the node#ver query answers with the same information.
    reply = await stream.iq_roundtrip(
        "info-2", "<query xmlns='%s' node='%s#%s'/>"
        % (NS_DISCO_INFO, caps.get("node"), ver), to="localhost")
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    info = reply.find(q(NS_DISCO_INFO, "query"))
    assert caps_ver(info) == ver


# ------------------------------------------------ version (XEP-0092) -----

async def test_software_version(server, net):
    alice = await connect(net, server, "alice")
    result = await alice.iq("localhost", "<query xmlns='%s'/>" % NS_VERSION)
    query = result.xml.find(q(NS_VERSION, "query"))
    assert (query.findtext(q(NS_VERSION, "name")) or "").strip()
    assert (query.findtext(q(NS_VERSION, "version")) or "").strip()


@pytest.mark.natter_config(hide_version=True)
async def test_software_version_can_be_hidden(server, net):
    alice = await connect(net, server, "alice")
    error = await iq_error(alice, "localhost", "<query xmlns='%s'/>"
                           % NS_VERSION)
    assert error_condition(error) == "service-unavailable"
    assert NS_VERSION not in features_of(await disco_info(alice))


@pytest.mark.parametrize("hide_os", [False, True])
async def test_operating_system_can_be_left_out(natter_factory, net,
                                                hide_os):
    server = accounts(natter_factory(hide_os_version=hide_os), "alice")
    alice = await connect(net, server, "alice")
    result = await alice.iq("localhost", "<query xmlns='%s'/>" % NS_VERSION)
    query = result.xml.find(q(NS_VERSION, "query"))
    assert (query.find(q(NS_VERSION, "os")) is None) == hide_os
    assert (query.findtext(q(NS_VERSION, "version")) or "").strip()


async def test_version_set_is_refused(server, net):
    alice = await connect(net, server, "alice")
    error = await iq_error(alice, "localhost", "<query xmlns='%s'><name>x"
                           "</name></query>" % NS_VERSION, "set")
    assert error_condition(error) in ("bad-request", "not-allowed",
                                      "service-unavailable",
                                      "feature-not-implemented")


# --------------------------------------------------- time (XEP-0202) -----

async def test_entity_time(server, net):
    alice = await connect(net, server, "alice")
    result = await alice.iq("localhost", "<time xmlns='%s'/>" % NS_TIME)
    node = result.xml.find(q(NS_TIME, "time"))
    tzo = node.findtext(q(NS_TIME, "tzo"))
    utc = node.findtext(q(NS_TIME, "utc"))
    assert tzo and re.fullmatch(r"Z|[+-]\d\d:\d\d", tzo), tzo
    assert utc and utc.endswith("Z"), utc
    assert abs(parse_stamp(utc) - now_utc()) < timedelta(seconds=30)


# -------------------------------------------------- last (XEP-0012) ------

async def test_last_activity_of_server_is_uptime(natter_factory, net):
    started = time.monotonic()
    server = accounts(natter_factory(), "alice")
    alice = await connect(net, server, "alice")
    result = await alice.iq("localhost", "<query xmlns='%s'/>" % NS_LAST)
    seconds = int(result.xml.find(q(NS_LAST, "query")).get("seconds"))
    assert 0 <= seconds <= time.monotonic() - started + 1


async def test_last_activity_of_subscribed_contact(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    bob = await connect(net, server, "bob", roster=True, available=True)
    await subscribe(alice, bob)
    bob.send_raw("<presence type='unavailable'><status>gone home</status>"
                 "</presence>")
    await bob.close()
    left = time.monotonic()
    await alice.inbox.get(lambda s: s.xml.get("type") == "unavailable"
                          and s.xml.get("from", "").startswith(BOB),
                          "bob's unavailable presence")
    result = await alice.iq(BOB, "<query xmlns='%s'/>" % NS_LAST)
    query = result.xml.find(q(NS_LAST, "query"))
    seconds = int(query.get("seconds"))
    assert 0 <= seconds <= time.monotonic() - left + 2
    assert result.xml.get("from") == BOB


async def test_last_activity_of_unsubscribed_contact_is_forbidden(server,
                                                                  net):
    bob = await connect(net, server, "bob", available=True)
    await bob.close()
    dave = await connect(net, server, "dave", roster=True, available=True)
    error = await iq_error(dave, BOB, "<query xmlns='%s'/>" % NS_LAST)
    assert error_condition(error) == "forbidden"


# ---------------------------------------------- vcard-temp (XEP-0054) ----

VCARD = ("<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN>"
         "<NICKNAME>alice</NICKNAME><EMAIL><USERID>alice@example.org"
         "</USERID></EMAIL></vCard>")


def vcard_fields(iq):
    card = iq.xml.find(q(NS_VCARD, "vCard"))
    assert card is not None, ET.tostring(iq.xml, "unicode")
    return {child.tag.split("}")[1]: (child.text or "").strip()
            for child in card}


async def test_vcard_set_and_get(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq(None, VCARD, "set")
    fields = vcard_fields(await alice.iq(None, "<vCard xmlns='vcard-temp'/>"))
    assert fields["FN"] == "Alice Liddell"
    assert fields["NICKNAME"] == "alice"
    card = (await alice.iq(None, "<vCard xmlns='vcard-temp'/>")).xml.find(
        q(NS_VCARD, "vCard"))
    assert card.findtext("%s/%s" % (q(NS_VCARD, "EMAIL"),
                                    q(NS_VCARD, "USERID"))) == \
        "alice@example.org"

    # Anyone may read it, from the bare JID; it outlives the session.
    await alice.close()
    bob = await connect(net, server, "bob")
    reply = await bob.iq(ALICE, "<vCard xmlns='vcard-temp'/>")
    assert reply.xml.get("from") == ALICE
    assert vcard_fields(reply)["FN"] == "Alice Liddell"


async def test_vcard_replace(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq(None, VCARD, "set")
    await alice.iq(None, "<vCard xmlns='vcard-temp'><FN>Alice L.</FN>"
                   "</vCard>", "set")
    fields = vcard_fields(await alice.iq(None, "<vCard xmlns='vcard-temp'/>"))
    assert fields == {"FN": "Alice L."}


async def test_vcard_of_user_without_one(server, net):
    bob = await connect(net, server, "bob")
    try:
        reply = await bob.iq(DAVE, "<vCard xmlns='vcard-temp'/>")
    except IqError as e:  # item-not-found is allowed as well
        assert error_condition(e.iq) == "item-not-found", e.iq
        return
    assert vcard_fields(reply) == {}


async def test_vcard_of_someone_else_cannot_be_set(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq(None, VCARD, "set")
    bob = await connect(net, server, "bob")
    error = await iq_error(bob, ALICE, "<vCard xmlns='vcard-temp'><FN>"
                           "Mallory</FN></vCard>", "set")
    assert error_condition(error) in ("forbidden", "not-allowed",
                                      "service-unavailable")
    fields = vcard_fields(await bob.iq(ALICE, "<vCard xmlns='vcard-temp'/>"))
    assert fields["FN"] == "Alice Liddell"


# ------------------------------------------ private storage (XEP-0049) ---

PREFS = ("<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'>"
         "<nick>Hamlet</nick><theme dark='yes'/></prefs></query>")


async def test_private_storage_roundtrip(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq(None, PREFS, "set")
    await alice.close()
    alice = await connect(net, server, "alice", "other")
    reply = await alice.iq(None, "<query xmlns='jabber:iq:private'><prefs "
                           "xmlns='urn:example:prefs'/></query>")
    prefs = reply.xml.find("%s/{urn:example:prefs}prefs" % q(NS_PRIVATE,
                                                              "query"))
    assert prefs is not None, ET.tostring(reply.xml, "unicode")
    assert prefs.findtext("{urn:example:prefs}nick") == "Hamlet"
    assert prefs.find("{urn:example:prefs}theme").get("dark") == "yes"


async def test_private_storage_unknown_namespace_is_empty(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq(None, PREFS, "set")
    reply = await alice.iq(None, "<query xmlns='jabber:iq:private'><other "
                           "xmlns='urn:example:other'/></query>")
    other = reply.xml.find("%s/{urn:example:other}other" % q(NS_PRIVATE,
                                                              "query"))
    assert other is not None and len(other) == 0 and not other.text


async def test_private_storage_is_private(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq(None, PREFS, "set")
    bob = await connect(net, server, "bob")
    error = await iq_error(bob, ALICE, "<query xmlns='jabber:iq:private'>"
                           "<prefs xmlns='urn:example:prefs'/></query>")
    assert error_condition(error) in ("forbidden", "service-unavailable")
    assert "Hamlet" not in ET.tostring(error.xml, "unicode")
    error = await iq_error(bob, ALICE, PREFS.replace("Hamlet", "Mallory"),
                           "set")
    assert error_condition(error) in ("forbidden", "service-unavailable")
    reply = await alice.iq(None, "<query xmlns='jabber:iq:private'><prefs "
                           "xmlns='urn:example:prefs'/></query>")
    assert "Hamlet" in ET.tostring(reply.xml, "unicode")


# ------------------------------------- in-band registration (XEP-0077) ---

async def register(net, server, username, password):
    """Registers on an unauthenticated stream (after STARTTLS); returns
    the reply iq element, or None if the server closed the stream."""
    stream, features = await net.raw_tls(server)
    payload = ("<query xmlns='%s'><username>%s</username><password>%s"
               "</password></query>" % (NS_REGISTER, username, password))
    try:
        return await stream.iq_roundtrip("reg-1", payload, type_="set")
    except StreamClosed:
        return None


async def can_login(net, server, jid, password):
    try:
        client = await net.login(server, jid + "/check", password)
    except LoginFailed as e:
        assert e.condition == "not-authorized", e
        return False
    await client.close()
    return True


async def test_registration_is_off_by_default(server, net):
    stream, features = await net.raw_tls(server)
    assert features.find(q(NS_REGISTER_FEATURE, "register")) is None
    reply = await register(net, server, "newbie", "newbie-pass")
    if reply is not None:
        assert reply.get("type") == "error", ET.tostring(reply, "unicode")
    assert not await can_login(net, server, "newbie@localhost",
                               "newbie-pass")


@pytest.mark.natter_config(**REGISTRATION_ON)
async def test_registration_creates_account(server, net):
    stream, features = await net.raw_tls(server)
    assert features.find(q(NS_REGISTER_FEATURE, "register")) is not None, \
        ET.tostring(features, "unicode")
    form = await stream.iq_roundtrip("form-1", "<query xmlns='%s'/>"
                                     % NS_REGISTER)
    assert form.get("type") == "result", ET.tostring(form, "unicode")
    query = form.find(q(NS_REGISTER, "query"))
    assert query.find(q(NS_REGISTER, "username")) is not None
    assert query.find(q(NS_REGISTER, "password")) is not None

    reply = await stream.iq_roundtrip(
        "reg-1", "<query xmlns='%s'><username>newbie</username><password>"
        "newbie-pass</password></query>" % NS_REGISTER, type_="set")
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    assert await can_login(net, server, "newbie@localhost", "newbie-pass")
    assert not await can_login(net, server, "newbie@localhost", "wrong")


@pytest.mark.natter_config(**REGISTRATION_ON)
async def test_registration_of_existing_name_is_conflict(server, net):
    reply = await register(net, server, "alice", "stolen")
    assert reply is not None and reply.get("type") == "error"
    assert stanza_error_condition(reply) == "conflict"
    assert await can_login(net, server, ALICE, password_of("alice"))
    assert not await can_login(net, server, ALICE, "stolen")


@pytest.mark.natter_config(allow_registration=True,
                           registration_interval=3600)
async def test_registration_is_rate_limited_per_address(server, net):
    first = await register(net, server, "first", "first-pass")
    assert first is not None and first.get("type") == "result", \
        first if first is None else ET.tostring(first, "unicode")
    second = await register(net, server, "second", "second-pass")
    if second is not None:
        assert second.get("type") == "error", ET.tostring(second, "unicode")
        assert stanza_error_condition(second) in (
            "resource-constraint", "policy-violation", "not-acceptable",
            "not-allowed")
    assert await can_login(net, server, "first@localhost", "first-pass")
    assert not await can_login(net, server, "second@localhost",
                               "second-pass")


@pytest.mark.natter_config(**REGISTRATION_ON)
async def test_password_change(server, net):
    alice = await connect(net, server, "alice")
    await alice.iq("localhost", "<query xmlns='%s'><username>alice"
                   "</username><password>new-secret</password></query>"
                   % NS_REGISTER, "set")
    await alice.close()
    assert not await can_login(net, server, ALICE, password_of("alice"))
    assert await can_login(net, server, ALICE, "new-secret")


@pytest.mark.natter_config(**REGISTRATION_ON)
async def test_password_change_of_someone_else_is_refused(server, net):
    alice = await connect(net, server, "alice")
    error = await iq_error(alice, "localhost", "<query xmlns='%s'><username>"
                           "bob</username><password>mine-now</password>"
                           "</query>" % NS_REGISTER, "set")
    assert error_condition(error) in ("not-allowed", "forbidden",
                                      "bad-request", "not-authorized")
    assert await can_login(net, server, BOB, password_of("bob"))


@pytest.mark.natter_config(**REGISTRATION_ON)
async def test_account_removal(server, net):
    alice = await connect(net, server, "alice", roster=True, available=True)
    try:
        await alice.iq("localhost", "<query xmlns='%s'><remove/></query>"
                       % NS_REGISTER, "set")
    except AssertionError:
        # XEP-0077 3.2: the server may close the stream before the result
        # is read; the account must be gone either way.
        pass
    await alice.wait_closed()
    assert not await can_login(net, server, ALICE, password_of("alice"))
    bob = await connect(net, server, "bob")
    bob.send_raw("<message to='%s' id='ghost' type='chat'><body>hi</body>"
                 "</message>" % ALICE)
    bounce = await bob.inbox.get(msg(id="ghost", type="error"), "bounce")
    assert stanza_error_condition(bounce.xml) == "service-unavailable"


# ------------------------- receipts (XEP-0184), chat states (XEP-0085) ---

def canonical(elem):
    """Tag, attributes, text and children, recursively (for comparing what
    was sent with what arrived)."""
    return (elem.tag, sorted(elem.attrib.items()), (elem.text or "").strip(),
            [canonical(c) for c in elem])


async def test_receipts_and_chat_states_pass_through(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    extras = ("<active xmlns='%s'/><request xmlns='%s'/>"
              "<custom xmlns='urn:example:x' a='1'><deep b='2'>t</deep>"
              "</custom>" % (NS_CHATSTATES, NS_RECEIPTS))
    alice.send_raw("<message to='%s/r' id='rcpt-1' type='chat'><body>hi"
                   "</body>%s</message>" % (BOB, extras))
    got = await bob.inbox.get(msg(id="rcpt-1"), "the message")
    sent = ET.fromstring("<message xmlns='jabber:client'><body>hi</body>%s"
                         "</message>" % extras)
    # Everything passes untouched; the server adds only its archive's
    # stanza-id (XEP-0359, test_mam.py), at the end.
    children = [canonical(c) for c in got.xml]
    assert children[-1][0] == "{urn:xmpp:sid:0}stanza-id", children
    assert dict(children[-1][1])["by"] == BOB, children
    assert children[:-1] == [canonical(c) for c in sent]

    # The receipt goes back, bodiless, to the full JID.
    bob.send_raw("<message to='%s/r' id='ack-1'><received xmlns='%s' "
                 "id='rcpt-1'/></message>" % (ALICE, NS_RECEIPTS))
    ack = await alice.inbox.get(msg(id="ack-1"), "the receipt")
    received = ack.xml.find(q(NS_RECEIPTS, "received"))
    assert received is not None and received.get("id") == "rcpt-1"
    assert ack.xml.get("from") == BOB + "/r"

    # A standalone chat state to the bare JID reaches the available
    # resource.
    alice.send_raw("<message to='%s' id='cs-1' type='chat'><composing "
                   "xmlns='%s'/></message>" % (BOB, NS_CHATSTATES))
    state = await bob.inbox.get(msg(id="cs-1"), "the chat state")
    assert state.xml.find(q(NS_CHATSTATES, "composing")) is not None
    assert state.xml.find(q(NS_CLIENT, "body")) is None


async def test_receipt_request_survives_offline_storage(server, net):
    alice = await connect(net, server, "alice")
    alice.send_raw("<message to='%s' id='off-rcpt' type='chat'><body>later"
                   "</body><request xmlns='%s'/><active xmlns='%s'/>"
                   "</message>" % (BOB, NS_RECEIPTS, NS_CHATSTATES))
    await alice.barrier()
    bob = await connect(net, server, "bob", available=True)
    got = await bob.inbox.get(msg(id="off-rcpt"), "the stored message")
    assert got.xml.find(q(NS_RECEIPTS, "request")) is not None
    assert got.xml.find(q(NS_CHATSTATES, "active")) is not None


# ------------------------------------------------------ message carbons ---

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"


async def test_server_advertises_carbons(server, net):
    alice = await connect(net, server, "alice")
    assert NS_CARBONS in features_of(await disco_info(alice))


async def test_carbons_copy_received_and_sent(server, net):
    """XEP-0280: with carbons enabled, a resource sees what another resource
    of its account received and sent; without, it sees neither."""
    phone = await connect(net, server, "alice", "phone", available=True)
    desk = await connect(net, server, "alice", "desk", available=True)
    quiet = await connect(net, server, "alice", "quiet", available=True)
    bob = await connect(net, server, "bob", available=True)
    await desk.iq(None, "<enable xmlns='%s'/>" % NS_CARBONS, "set")

    bob.send_raw("<message to='%s/phone' id='c-in' type='chat'><body>to phone"
                 "</body></message>" % ALICE)
    assert (await phone.inbox.get(msg(id="c-in"), "the message")) is not None
    copy = await desk.inbox.get(
        lambda s: s.xml.find(q(NS_CARBONS, "received")) is not None,
        "the received carbon")
    assert copy.xml.get("from") == ALICE
    inner = copy.xml.find("%s/%s/%s" % (q(NS_CARBONS, "received"),
                                        q(NS_FORWARD, "forwarded"),
                                        q("jabber:client", "message")))
    assert inner is not None and inner.get("id") == "c-in"
    assert inner.get("from") == BOB + "/r"

    phone.send_raw("<message to='%s/r' id='c-out' type='chat'><body>from phone"
                   "</body></message>" % BOB)
    assert (await bob.inbox.get(msg(id="c-out"), "the message")) is not None
    copy = await desk.inbox.get(
        lambda s: s.xml.find(q(NS_CARBONS, "sent")) is not None,
        "the sent carbon")
    inner = copy.xml.find("%s/%s/%s" % (q(NS_CARBONS, "sent"),
                                        q(NS_FORWARD, "forwarded"),
                                        q("jabber:client", "message")))
    assert inner is not None and inner.get("id") == "c-out"
    assert inner.get("from") == ALICE + "/phone"

    # A private message is not copied, nor anything after disable; a marker
    # from bob, sent last, shows nothing came before it.
    bob.send_raw("<message to='%s/phone' id='c-priv' type='chat'><body>p</body>"
                 "<private xmlns='%s'/></message>" % (ALICE, NS_CARBONS))
    await phone.inbox.get(msg(id="c-priv"), "the private message")
    await desk.iq(None, "<disable xmlns='%s'/>" % NS_CARBONS, "set")
    bob.send_raw("<message to='%s/phone' id='c-after' type='chat'><body>x"
                 "</body></message>" % ALICE)
    await phone.inbox.get(msg(id="c-after"), "the message")
    for session, resource in ((desk, "desk"), (quiet, "quiet")):
        send_marker(bob, "%s/%s" % (ALICE, resource), "mk-" + resource)
        before = await session.inbox.before_marker("mk-" + resource)
        assert not [s for s in before
                    if s.xml.find(q(NS_CARBONS, "received")) is not None
                    or s.xml.find(q(NS_CARBONS, "sent")) is not None], \
            session.inbox.describe(before)

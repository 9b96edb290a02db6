"""Client state indication (XEP-0352): what an inactive client gets at
once, what waits and is collapsed, the order of what is released, the
bounds, and bad input (docs/mobile.md).

Absence is shown without sleeping: an iq passes CSI, so when the phone's
ping to the server is answered, every stanza routed to it before the ping
was either written before the answer or is being held.  The module runs
natterd with one event loop, so a contact's stanza has reached the phone's
session once the contact's own round trip to the server is over
(imlib: markers)."""

import asyncio
import base64

import pytest

from imlib import (NS_CHATSTATES, NS_RECEIPTS, Inbox, accounts, bare,
                   connect, jid_of, msg, mutual, password_of)
from natterlib import (IO_TIMEOUT, NS_CLIENT, NS_SASL, XmppClient,
                       expect_stream_error, q)
from test_muc import SERVICE, body_of, join, say

NS_CSI = "urn:xmpp:csi:0"
ONE_LOOP = {"workers": 1}

pytestmark = pytest.mark.natter_config(**ONE_LOOP)


def inactive(client):
    client.send_raw("<inactive xmlns='%s'/>" % NS_CSI)


def active(client):
    client.send_raw("<active xmlns='%s'/>" % NS_CSI)


def received_since(client, mark):
    """Messages and presences the client received after mark (an index
    into its inbox's arrival log), in arrival order."""
    kinds = (q(NS_CLIENT, "message"), q(NS_CLIENT, "presence"))
    return [s for s in client.inbox.seen[mark:] if s.xml.tag in kinds]


async def arrived_so_far(client, mark):
    """What arrived after mark, once a round trip to the server is over:
    anything routed to it earlier and not held is in by then."""
    await client.barrier()
    return received_since(client, mark)


def describe(stanzas):
    return "\n".join("  " + str(s) for s in stanzas) or "  (nothing)"


def status_of(stanza):
    return stanza.xml.findtext(q(NS_CLIENT, "status"))


def chat_state_of(stanza):
    for child in stanza.xml:
        if child.tag.startswith("{%s}" % NS_CHATSTATES):
            return child.tag.split("}", 1)[1]
    return None


async def phone_with_contacts(net, server, *names):
    """bob/phone, available, with mutual subscriptions to each contact (all
    available); returns (phone, contacts)."""
    accounts(server, "bob", *names)
    phone = await connect(net, server, "bob", "phone", available=True)
    contacts = []
    for name in names:
        contact = await connect(net, server, name, "desk", available=True)
        await mutual(phone, contact)
        contacts.append(contact)
    return phone, contacts


async def go_inactive(phone):
    """The phone says it is inactive; returns the mark after which what it
    receives counts."""
    inactive(phone)
    await phone.barrier()
    return len(phone.inbox.seen)


async def change_status(contact, text):
    contact.send_raw("<presence><status>%s</status></presence>" % text)
    await contact.barrier()


async def send_chat_state(contact, to, state):
    contact.send_raw("<message to='%s' type='chat'><%s xmlns='%s'/></message>"
                     % (to, state, NS_CHATSTATES))
    await contact.barrier()


# ------------------------------------------------------------ discovery --

async def test_feature_offered_after_authentication_only(natter, net):
    accounts(natter, "bob")
    stream, features = await net.raw_tls(natter)
    assert features.find(q(NS_CSI, "csi")) is None, \
        "csi offered before authentication"
    token = base64.b64encode(b"\0bob\0" + password_of("bob").encode())
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                      % (NS_SASL, token.decode()))
    await stream.expect(q(NS_SASL, "success"))
    await stream.open_stream(natter.domain)
    features = await stream.features()
    assert features.find(q(NS_CSI, "csi")) is not None, \
        "no <csi/> in the features after authentication:\n%s" % stream.describe()
    # Accepted before binding too (the features offer it there).
    await stream.send("<inactive xmlns='%s'/>" % NS_CSI)
    await stream.bind("phone")
    await stream.ping_server()


async def test_slixmpp_defaults_presence_churn_collapsed(natter, net):
    """A stock slixmpp client with its XEP-0352 plugin: presence churn
    from several contacts while inactive reaches it, on <active/>, as the
    last presence of each contact, in the order of those last changes,
    before the answer to what it asks next (XEP-0352 5.1)."""
    accounts(natter, "bob", "alice", "carol", "dave")
    # As Net.login_stock: no mechanism pinned, slixmpp's own channel binding.
    phone = XmppClient(jid_of("bob", natter.domain) + "/phone",
                       password_of("bob"), channel_binding=True)
    phone.register_plugin("xep_0352")
    net._open.append(phone)
    phone.connect(("127.0.0.1", natter.c2s_port))
    kind, detail = await asyncio.wait_for(asyncio.shield(phone._outcome),
                                          IO_TIMEOUT)
    assert kind == "ok", (kind, detail)
    assert phone["xep_0352"].enabled, "slixmpp did not see the csi feature"
    phone.roster.auto_authorize = None
    phone.roster.auto_subscribe = False
    phone.inbox = Inbox(phone)
    await phone.available()
    contacts = []
    for name in ("alice", "carol", "dave"):
        contact = await connect(net, natter, name, "desk", available=True)
        await mutual(phone, contact)
        contacts.append(contact)
    alice, carol, dave = contacts

    phone["xep_0352"].send_inactive()
    await phone.barrier()
    mark = len(phone.inbox.seen)
    for round_no in range(1, 5):
        for contact in contacts:
            await change_status(contact, "%s-%d" % (contact.boundjid.user,
                                                    round_no))
    # The last round, in another order: dave, alice, carol.
    for contact in (dave, alice, carol):
        await change_status(contact, "%s-last" % contact.boundjid.user)
    got = await arrived_so_far(phone, mark)
    assert got == [], "presence reached an inactive client:\n%s" % describe(got)

    phone["xep_0352"].send_active()
    await phone.barrier()
    got = received_since(phone, mark)
    assert [(s.xml.get("from"), status_of(s)) for s in got] == [
        (dave.boundjid.full, "dave-last"),
        (alice.boundjid.full, "alice-last"),
        (carol.boundjid.full, "carol-last"),
    ], describe(got)

    # Active again: presence flows at once.
    mark = len(phone.inbox.seen)
    await change_status(alice, "back")
    got = await arrived_so_far(phone, mark)
    assert [status_of(s) for s in got] == ["back"], describe(got)


async def test_unavailable_and_available_collapse_per_full_jid(natter, net):
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    alice2 = await connect(net, natter, "alice", "laptop", available=True)
    mark = await go_inactive(phone)
    await change_status(alice, "one")
    await change_status(alice2, "laptop-one")
    alice.send_raw("<presence type='unavailable'/>")
    await alice.barrier()
    await change_status(alice2, "laptop-two")
    assert await arrived_so_far(phone, mark) == []
    active(phone)
    await phone.barrier()
    got = received_since(phone, mark)
    assert [(s.xml.get("from"), s.xml.get("type"), status_of(s))
            for s in got] == [
        (alice.boundjid.full, "unavailable", None),
        (alice2.boundjid.full, None, "laptop-two"),
    ], describe(got)


# ------------------------------------------------------ what passes now --

async def test_message_with_body_passes_after_what_was_held(natter, net):
    """A message with a body is written at once; what was held goes out
    first, in order, so it never overtakes the presence before it."""
    phone, (alice, carol) = await phone_with_contacts(
        net, natter, "alice", "carol")
    mark = await go_inactive(phone)
    await change_status(alice, "busy")
    await send_chat_state(carol, phone.boundjid.full, "composing")
    await change_status(carol, "typing")
    assert await arrived_so_far(phone, mark) == []

    alice.send_raw("<message to='%s' id='m1' type='chat'><body>hello</body>"
                   "</message>" % phone.boundjid.bare)
    await phone.inbox.get(msg(id="m1"), "alice's message while inactive")
    got = received_since(phone, mark)
    assert [(s.xml.tag.split("}")[1], bare(s.xml.get("from"))) for s in got] == [
        ("presence", alice.boundjid.bare),
        ("message", carol.boundjid.bare),
        ("presence", carol.boundjid.bare),
        ("message", alice.boundjid.bare),
    ], describe(got)
    assert body_of(got[-1]) == "hello"
    # Nothing is left held: <active/> releases nothing more.
    mark = len(phone.inbox.seen)
    active(phone)
    assert await arrived_so_far(phone, mark) == []


@pytest.mark.parametrize("payload", [
    # OMEMO (XEP-0384, both namespaces in use), without a body
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='7'>"
    "<iv>AAAA</iv></header></encrypted><store xmlns='urn:xmpp:hints'/>",
    "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='7'/></encrypted>",
    # OpenPGP for XMPP (XEP-0373)
    "<openpgp xmlns='urn:xmpp:openpgp:0'>bm90IHJlYWxseQ==</openpgp>",
    # A call (XEP-0353)
    "<propose xmlns='urn:xmpp:jingle-message:0' id='call1'><description "
    "xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>",
    # Something CSI does not know: it passes
    "<x xmlns='jabber:x:conference' jid='room@conference.localhost'/>",
], ids=["omemo", "omemo2", "ox", "call", "unknown"])
async def test_urgent_body_less_messages_pass(natter, net, payload):
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    mark = await go_inactive(phone)
    await change_status(alice, "away")
    alice.send_raw("<message to='%s' id='u1' type='chat'>%s</message>"
                   % (phone.boundjid.full, payload))
    await phone.inbox.get(msg(id="u1"), "the body-less urgent message")
    got = received_since(phone, mark)
    assert [s.xml.tag.split("}")[1] for s in got] == ["presence", "message"], \
        describe(got)


async def test_stored_messages_pass_to_an_inactive_client(natter, net):
    """What offline storage delivers passes even without a body: the
    store's copy is deleted once it is written, so it must not wait."""
    accounts(natter, "bob", "alice")
    alice = await connect(net, natter, "alice", "desk")
    alice.send_raw("<message to='%s' id='stored'><received xmlns='%s' "
                   "id='x'/></message>" % (jid_of("bob", natter.domain),
                                           NS_RECEIPTS))
    await alice.barrier()
    phone = await connect(net, natter, "bob", "phone")
    await go_inactive(phone)
    phone.send_raw("<presence/>")
    await phone.inbox.get(msg(id="stored"), "the stored receipt")


async def test_iq_passes_after_its_senders_held_stanzas_only(natter, net):
    """An iq is written at once.  What its sender had held goes first (in
    order from one sender, RFC 6120 10.1); others' stays held."""
    phone, (alice, carol) = await phone_with_contacts(
        net, natter, "alice", "carol")
    mark = await go_inactive(phone)
    await change_status(carol, "carol-held")
    await change_status(alice, "alice-held")
    alice.send_raw("<iq to='%s' id='v1' type='get'><query xmlns="
                   "'jabber:iq:version'/></iq>" % phone.boundjid.full)
    iq = await phone.inbox.get(
        lambda s: s.xml.tag == q(NS_CLIENT, "iq") and s.xml.get("id") == "v1",
        "alice's iq while inactive")
    index = phone.inbox.seen.index(iq)
    got = received_since(phone, mark)
    before = [s for s in got if phone.inbox.seen.index(s) < index]
    assert [(s.xml.get("from"), status_of(s)) for s in before] == [
        (alice.boundjid.full, "alice-held")], describe(got)
    assert await arrived_so_far(phone, mark) == before, "carol's was released"
    active(phone)
    await phone.barrier()
    assert [status_of(s) for s in received_since(phone, mark)] == [
        "alice-held", "carol-held"]


async def test_chat_states_collapse_per_sender(natter, net):
    phone, (alice, carol) = await phone_with_contacts(
        net, natter, "alice", "carol")
    mark = await go_inactive(phone)
    to = phone.boundjid.full
    await send_chat_state(alice, to, "composing")
    await send_chat_state(alice, to, "paused")
    await send_chat_state(carol, to, "composing")
    await send_chat_state(alice, to, "composing")
    await send_chat_state(alice, to, "active")
    assert await arrived_so_far(phone, mark) == []
    active(phone)
    await phone.barrier()
    got = received_since(phone, mark)
    assert [(bare(s.xml.get("from")), chat_state_of(s)) for s in got] == [
        (carol.boundjid.bare, "composing"),
        (alice.boundjid.bare, "active"),
    ], describe(got)


async def test_pep_notifications_of_one_item_collapse(natter, net):
    """A newer notification of the same item replaces the held one; other
    items wait beside it, in order."""
    from peplib import event_items, event_item_ids, event_payload, \
        pep_connect, publish
    ns_tune = "http://jabber.org/protocol/tune"
    tune = "<tune xmlns='%s'><title>%%s</title></tune>" % ns_tune
    accounts(natter, "bob", "alice")
    phone = await pep_connect(net, natter, "bob", "phone",
                              interests=[ns_tune])
    alice = await pep_connect(net, natter, "alice", interests=[ns_tune])
    await mutual(phone, alice)
    mark = await go_inactive(phone)
    for title in ("one", "two", "three"):
        await publish(alice, ns_tune, tune % title, item_id="current")
    await publish(alice, ns_tune, tune % "other", item_id="second")
    await alice.barrier()
    got = await arrived_so_far(phone, mark)
    assert got == [], "notifications reached an inactive client:\n%s" % \
        describe(got)
    active(phone)
    await phone.barrier()
    got = [s for s in received_since(phone, mark)
           if event_items(ns_tune)(s)]
    assert [(event_item_ids(s), event_payload(s).findtext(
        q(ns_tune, "title"))) for s in got] == [
        (["current"], "three"), (["second"], "other")], describe(got)


# -------------------------------------------------------------- rooms --

async def test_room_mention_passes_other_room_messages_wait(natter, net):
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    await join(phone, "Phonie")
    await join(alice, "alice")
    mark = await go_inactive(phone)
    await say(alice, "hello all")
    await say(alice, "lunch at noon")
    got = await arrived_so_far(phone, mark)
    assert got == [], "room chatter reached an inactive client:\n%s" % \
        describe(got)

    await say(alice, "where is phonie?")
    mention = await phone.inbox.get(
        lambda s: body_of(s) == "where is phonie?",
        "the message naming the phone's nick")
    got = received_since(phone, mark)
    assert [body_of(s) for s in got] == [
        "hello all", "lunch at noon", "where is phonie?"], describe(got)
    assert got[-1] is mention

    # The account's name counts as a mention as well.
    mark = len(phone.inbox.seen)
    await say(alice, "BOB, you there?")
    await phone.inbox.get(lambda s: body_of(s) == "BOB, you there?",
                          "the message naming the account")

    # Joining a room while inactive completes: the own presence and the
    # subject pass.
    second = "other@" + SERVICE
    await join(phone, "Phonie", room=second)


# -------------------------------------------------------------- bounds --

@pytest.mark.natter_config(limits={"csi_max_held_stanzas": 50}, **ONE_LOOP)
async def test_flood_is_bounded_by_count_and_nothing_is_lost(natter, net):
    """Receipts wait (without being collapsed); past the bound everything
    held is written, in order, so the flood costs at most 50 held."""
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    mark = await go_inactive(phone)
    for i in range(120):
        alice.send_raw("<message to='%s' id='r%d'><received xmlns='%s' "
                       "id='m%d'/></message>"
                       % (phone.boundjid.full, i, NS_RECEIPTS, i))
    await alice.barrier()
    got = await arrived_so_far(phone, mark)
    assert [s.xml.get("id") for s in got] == ["r%d" % i for i in range(100)]
    active(phone)
    await phone.barrier()
    got = received_since(phone, mark)
    assert [s.xml.get("id") for s in got] == ["r%d" % i for i in range(120)]


@pytest.mark.natter_config(limits={"csi_max_held_bytes": 4096}, **ONE_LOOP)
async def test_flood_is_bounded_by_bytes(natter, net):
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    mark = await go_inactive(phone)
    pad = "x" * 300
    for i in range(60):
        alice.send_raw("<message to='%s' id='r%d'><received xmlns='%s' "
                       "id='%s-%d'/></message>"
                       % (phone.boundjid.full, i, NS_RECEIPTS, pad, i))
    await alice.barrier()
    got = await arrived_so_far(phone, mark)
    held = 60 - len(got)
    # Each stanza is over 300 bytes: at most 4096 // 300 are held.
    assert 0 < held <= 4096 // 300, "%d of 60 held" % held
    assert [s.xml.get("id") for s in got] == ["r%d" % i for i in range(len(got))]
    active(phone)
    await phone.barrier()
    got = received_since(phone, mark)
    assert [s.xml.get("id") for s in got] == ["r%d" % i for i in range(60)]


@pytest.mark.natter_config(limits={"csi_max_held_stanzas": 0}, **ONE_LOOP)
async def test_zero_bound_holds_nothing(natter, net):
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    mark = await go_inactive(phone)
    await change_status(alice, "seen at once")
    got = await arrived_so_far(phone, mark)
    assert [status_of(s) for s in got] == ["seen at once"]


# ----------------------------------------------------------- bad input --

async def test_inactive_before_authentication_is_not_authorized(natter, net):
    stream, _ = await net.raw_tls(natter)
    await stream.send("<inactive xmlns='%s'/>" % NS_CSI)
    await expect_stream_error(stream, "not-authorized")
    await net.assert_served(natter)


@pytest.mark.parametrize("element", [
    "<dormant xmlns='urn:xmpp:csi:0'/>",
    "<csi xmlns='urn:xmpp:csi:0'/>",
])
async def test_unknown_csi_element_is_unsupported_stanza_type(natter, net,
                                                              element):
    accounts(natter, "bob")
    stream = await net.raw_login(natter, jid_of("bob", natter.domain),
                                 password_of("bob"))
    await stream.send(element)
    await expect_stream_error(stream, "unsupported-stanza-type")
    await net.assert_served(natter)


async def test_held_stanzas_of_a_closed_session_are_freed(natter, net):
    """A session that goes away while holding stanzas frees them (the
    sanitizer build reports a leak otherwise) and the server goes on."""
    phone, (alice,) = await phone_with_contacts(net, natter, "alice")
    await go_inactive(phone)
    for i in range(5):
        await change_status(alice, "s%d" % i)
        await send_chat_state(alice, phone.boundjid.full, "composing")
    await phone.close()
    await net.assert_served(natter)


# -------------------------------------------- with stream management --

async def test_held_stanzas_survive_a_cut_and_come_on_resume(natter, net):
    """Held stanzas are not yet sent for stream management: when the
    connection is cut they join the unacknowledged ones, and the resumed
    stream gets them, in order; it starts active (XEP-0352)."""
    from smlib import sm_login, sm_resume, sm
    accounts(natter, "bob", "alice")
    phone = await sm_login(net, natter, "bob", resource="phone")
    await phone.send("<inactive xmlns='%s'/>" % NS_CSI)
    await phone.request_ack()
    alice = await connect(net, natter, "alice", "desk")
    to = phone.jid
    for state in ("composing", "paused", "composing"):
        await send_chat_state(alice, to, state)
    alice.send_raw("<message to='%s' id='rcpt'><received xmlns='%s' id='x'/>"
                   "</message>" % (to, NS_RECEIPTS))
    await alice.barrier()
    await phone.send("<iq type='get' id='p1' to='localhost'><ping xmlns="
                     "'urn:xmpp:ping'/></iq>")
    first = await phone.next_stanza()
    assert first.tag == q(NS_CLIENT, "iq") and first.get("id") == "p1", \
        "held stanzas were sent: %s" % phone.stream.describe()
    phone.cut()
    resumed, answer = await sm_resume(net, natter, phone)
    assert answer.tag == sm("resumed"), resumed.stream.describe()
    got = [await resumed.next_stanza(), await resumed.next_stanza()]
    assert [(chat_state_of_xml(e), e.get("id")) for e in got] == [
        ("composing", None), (None, "rcpt")], resumed.stream.describe()
    # Active again: a chat state comes at once.
    await send_chat_state(alice, to, "paused")
    got = await resumed.next_stanza()
    assert chat_state_of_xml(got) == "paused", resumed.stream.describe()


async def test_room_nick_still_counts_as_a_mention_after_a_resume(natter, net):
    """The nick a session learnt at its join follows it through a
    resumption (to either loop): inactive again on the resumed stream, a
    message naming it passes at once, after the chatter held before it."""
    from smlib import sm_login, sm_resume, sm
    from test_muc import ROOM, join_stanza
    accounts(natter, "bob", "alice")
    phone = await sm_login(net, natter, "bob", resource="phone")
    await phone.send(join_stanza(ROOM, "Phonie"))
    while True:  # the join ends with the subject message (XEP-0045 7.2.15)
        got = await phone.next_stanza()
        if got.tag == q(NS_CLIENT, "message") and got.find(
                q(NS_CLIENT, "subject")) is not None:
            break
    alice = await connect(net, natter, "alice", "desk")
    await join(alice, "alice")
    phone.cut()
    resumed, answer = await sm_resume(net, natter, phone)
    assert answer.tag == sm("resumed"), resumed.stream.describe()
    await resumed.send("<inactive xmlns='%s'/>" % NS_CSI)
    await resumed.request_ack()
    await say(alice, "hello all")
    await say(alice, "where is phonie?")
    bodies = []
    while "where is phonie?" not in bodies:
        got = await resumed.next_stanza()
        body = got.find(q(NS_CLIENT, "body"))
        if got.tag == q(NS_CLIENT, "message") and body is not None:
            bodies.append(body.text)
    assert bodies == ["hello all", "where is phonie?"], (
        bodies, resumed.stream.describe())


def chat_state_of_xml(elem):
    for child in elem:
        if child.tag.startswith("{%s}" % NS_CHATSTATES):
            return child.tag.split("}", 1)[1]
    return None

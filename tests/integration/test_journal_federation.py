"""The archives across federation (docs/archive.md).  The journal: a
message from a local user to another domain is recorded by the sender's
host when sent, and by the receiving host (another natterd, over s2s) when
delivered; each host's journal verifies on its own.  The message archive
(XEP-0313): a chat with a user of another domain is in the local user's
archive both ways, with that user as `with`, and what came in carries
its archive id as stanza-id; the peer is another natterd (both archives
are checked) or Prosody and ejabberd (test_interop's fixtures).

Uses the fixed federation addresses (fedlib): run it under
flock /tmp/natter-fed.lock."""

import fedlib
from fedlib import NATTER_A, NATTER_B, diagnose, fed_connect, unique_name
from imlib import accounts, connect, msg
from test_interop import natter, peer  # noqa: F401 (fixtures)
from test_journal import assert_verifies, export, stop
from test_mam import NS_SID, describe, mam_query, msg_ids, the_stanza_id

# s2s links are made on first use (DNS, TCP, TLS, SASL EXTERNAL) each way.
TIMEOUT = 20


def fed_natter(natter_factory, test_ca, dns, domain, **host):
    """natterd for one of the natter domains, with s2s; host: more keys
    of its one host (journal:, mam:)."""
    pair = test_ca.cert_for(domain)
    host = dict(host, domain=domain, tls_cert=str(pair.chain),
                tls_key=str(pair.key))
    return natter_factory(
        extra_listeners=[fedlib.s2s_listener(domain)], hosts=[host],
        s2s={"enabled": True, "ca_file": str(test_ca.ca_file),
             "connect_timeout": 5},
        dns={"resolver": dns.resolver})


def journal_natter(natter_factory, test_ca, dns, domain):
    return fed_natter(natter_factory, test_ca, dns, domain,
                      journal={"enabled": True})


async def test_federated_messages_recorded_on_both_sides(
        natter_factory, test_ca, dns, net):
    a = accounts(journal_natter(natter_factory, test_ca, dns, NATTER_A),
                 "alice")
    b = accounts(journal_natter(natter_factory, test_ca, dns, NATTER_B),
                 "bob")
    alice = await connect(net, a, "alice", available=True)
    bob = await connect(net, b, "bob", available=True)
    alice.send_raw("<message to='%s' id='fed-out' type='chat'><body>over "
                   "the wire</body></message>" % bob.boundjid.full)
    await bob.inbox.get(msg(id="fed-out"), "alice's message over s2s")
    bob.send_raw("<message to='%s' id='fed-back' type='chat'><body>and "
                 "back</body></message>" % alice.boundjid.full)
    await alice.inbox.get(msg(id="fed-back"), "bob's answer over s2s")
    stop(a)
    stop(b)
    assert_verifies(a)
    assert_verifies(b)
    on_a = export(a, "--user", "alice@" + NATTER_A)
    on_b = export(b, "--user", "bob@" + NATTER_B)
    assert [(m["id"], m["recorded"], m["from"], m["to"]) for m in on_a] == [
        ("fed-out", "sent", alice.boundjid.full, bob.boundjid.full),
        ("fed-back", "received", bob.boundjid.full, alice.boundjid.full)], on_a
    assert [(m["id"], m["recorded"]) for m in on_b] == [
        ("fed-out", "received"), ("fed-back", "sent")], on_b


# ------------------------------------------------ message archive (MAM) ---

def chat_to(client, to, msg_id, body, extra=""):
    client.send_raw("<message to='%s' id='%s' type='chat'><body>%s</body>%s"
                    "</message>" % (to, msg_id, body, extra))


def forged_sid(by):
    """A stanza-id the sender wrote in the recipient's name (XEP-0359 5:
    the recipient's server removes it)."""
    return "<stanza-id xmlns='%s' by='%s' id='forged'/>" % (NS_SID, by)


async def assert_conversation_archived(local, remote, chat, sid_in):
    """local's archive, queried with the remote user's bare JID, holds
    the chat: (message id, "out" or "in") in the order sent, each from
    and to the right full JIDs; the incoming one's archive id is sid_in,
    the stanza-id local was given."""
    owner, contact = local.boundjid.bare, remote.boundjid.bare
    items, fin = await mam_query(local, with_=contact)
    assert msg_ids(items) == [msg_id for msg_id, _ in chat], (
        "%s's archive with %s holds the chat both ways, in order: %r"
        % (owner, contact, items))
    assert fin.complete, repr(fin)
    for item, (_, way) in zip(items, chat):
        ends = (local, remote) if way == "out" else (remote, local)
        ends = tuple(c.boundjid.full for c in ends)
        assert (item.message.get("from"), item.message.get("to")) == ends, (
            "the archived %s message is from %s to %s:\n%s"
            % ("outgoing" if way == "out" else "incoming", ends[0], ends[1],
               describe(item.outer)))
        assert item.id and item.stamp, describe(item.outer)
    received = items[[way for _, way in chat].index("in")]
    assert received.id == sid_in, (
        "the incoming message's archive id is the stanza-id %s it was "
        "delivered with (XEP-0359): %r" % (sid_in, items))
    everything, _ = await mam_query(local)
    assert msg_ids(everything) == msg_ids(items), (
        "without a filter the archive holds the same: %r" % everything)


async def test_federated_chat_in_both_mam_archives(
        natter_factory, test_ca, dns, net):
    """alice on natter A and bob on natter B chat over s2s: each archive
    holds both messages with the other as `with` and the right direction,
    and each incoming message carries one stanza-id by its recipient, its
    archive id; one that the sender forged in the recipient's name is
    not it."""
    a = accounts(fed_natter(natter_factory, test_ca, dns, NATTER_A), "alice")
    b = accounts(fed_natter(natter_factory, test_ca, dns, NATTER_B), "bob")
    async with diagnose(a, b, dns=dns):
        alice = await connect(net, a, "alice", available=True)
        bob = await connect(net, b, "bob", available=True)
        chat_to(alice, bob.boundjid.full, "fed-out", "over the wire",
                forged_sid(bob.boundjid.bare))
        got = await bob.inbox.get(msg(id="fed-out"), "alice's message over "
                                  "s2s", timeout=TIMEOUT)
        sid_bob = the_stanza_id(got, bob.boundjid.bare)
        assert sid_bob != "forged", describe(got)
        chat_to(bob, alice.boundjid.full, "fed-back", "and back",
                forged_sid(alice.boundjid.bare))
        got = await alice.inbox.get(msg(id="fed-back"), "bob's answer over "
                                    "s2s", timeout=TIMEOUT)
        sid_alice = the_stanza_id(got, alice.boundjid.bare)
        assert sid_alice != "forged", describe(got)
        chat = [("fed-out", "out"), ("fed-back", "in")]
        await assert_conversation_archived(alice, bob, chat, sid_alice)
        chat = [("fed-out", "in"), ("fed-back", "out")]
        await assert_conversation_archived(bob, alice, chat, sid_bob)


async def test_chat_with_third_party_server_is_archived(natter, peer, net,
                                                        dns):
    """The same with Prosody and ejabberd as the peer: natter's user's
    archive holds the chat both ways with the peer's user as `with`."""
    name = unique_name("alice")
    accounts(natter, name)
    async with diagnose(natter, peer, dns=dns):
        alice = await connect(net, natter, name, available=True)
        bob = await fed_connect(net, peer, unique_name("bob"),
                                available=True)
        chat_to(alice, bob.boundjid.full, "n2p", "from natter")
        await bob.inbox.get(msg(id="n2p", frm=alice.boundjid.full),
                            "natter -> peer", timeout=TIMEOUT)
        chat_to(bob, alice.boundjid.full, "p2n", "from " + peer.domain,
                forged_sid(alice.boundjid.bare))
        got = await alice.inbox.get(msg(id="p2n", frm=bob.boundjid.full),
                                    "peer -> natter", timeout=TIMEOUT)
        sid = the_stanza_id(got, alice.boundjid.bare)
        assert sid != "forged", describe(got)
        await assert_conversation_archived(
            alice, bob, [("n2p", "out"), ("p2n", "in")], sid)

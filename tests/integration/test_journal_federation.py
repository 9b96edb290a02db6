"""The archive-all journal across federation (docs/archive.md): a message
from a local user to another domain is recorded by the sender's host when
sent, and by the receiving host (another natterd, over s2s) when
delivered; each host's journal verifies on its own.

Uses the fixed federation addresses (fedlib): run it under
flock /tmp/natter-fed.lock."""

import fedlib
from fedlib import NATTER_A, NATTER_B
from imlib import accounts, connect, msg
from test_journal import assert_verifies, export, stop


def journal_natter(natter_factory, test_ca, dns, domain):
    pair = test_ca.cert_for(domain)
    host = {"domain": domain, "tls_cert": str(pair.chain),
            "tls_key": str(pair.key), "journal": {"enabled": True}}
    return natter_factory(
        extra_listeners=[fedlib.s2s_listener(domain)], hosts=[host],
        s2s={"enabled": True, "ca_file": str(test_ca.ca_file),
             "connect_timeout": 5},
        dns={"resolver": dns.resolver})


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

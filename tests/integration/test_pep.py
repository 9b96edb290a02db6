"""PEP (XEP-0163): every account is a pubsub service at its bare JID."""

import asyncio

import pytest

from imlib import accounts, mutual, assert_not_delivered, msg
from natterlib import q
from peplib import (
    NS_PUBSUB, event_items, event_item_ids, event_payload, expect_error,
    get_items, pep_connect, publish)

NS_TUNE = "http://jabber.org/protocol/tune"
NS_MOOD = "http://jabber.org/protocol/mood"
TUNE = "<tune xmlns='%s'><artist>Yes</artist><title>%s</title></tune>"


@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob", "carol")


async def test_publish_notifies_contact_with_caps(net, server):
    alice = await pep_connect(net, server, "alice", interests=[NS_TUNE])
    bob = await pep_connect(net, server, "bob", interests=[NS_TUNE])
    await mutual(alice, bob)
    item_id = await publish(alice, NS_TUNE, TUNE % (NS_TUNE, "Roundabout"))
    got = await bob.inbox.get(event_items(NS_TUNE, frm="alice@localhost"),
                              "tune notification from alice")
    assert event_item_ids(got) == [item_id]
    assert event_payload(got).find(q(NS_TUNE, "title")).text == "Roundabout"
    # The publisher's own resource wants it too.
    await alice.inbox.get(event_items(NS_TUNE, frm="alice@localhost"))
    items = await get_items(bob, "alice@localhost", NS_TUNE)
    assert [i.get("id") for i in items] == [item_id]

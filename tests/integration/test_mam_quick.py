"""Quick MAM smoke checks (the lead's, while test_mam.py is written)."""
import xml.etree.ElementTree as ET

from imlib import accounts, connect, msg, send_available

NS = "urn:xmpp:mam:2"


async def query(client, xml, to=None):
    reply = await client.iq(to, ET.fromstring(xml), "set")
    qid = ET.fromstring(xml).get("queryid")
    got = [s for s in client.inbox.seen if s.xml.find("{%s}result" % NS) is not None
           and s.xml.find("{%s}result" % NS).get("queryid") == qid]
    return got, reply


async def test_smoke(natter, net):
    accounts(natter, "alice", "bob")
    alice = await connect(net, natter, "alice")
    bob = await connect(net, natter, "bob")
    await send_available(bob)
    for i in range(5):
        alice.send_raw("<message to='bob@localhost' type='chat' id='m%d'><body>hello %d fox</body>"
                       "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>" % (i, i))
    got = await bob.inbox.get(msg(id="m4"), "m4")
    sids = got.xml.findall("{urn:xmpp:sid:0}stanza-id")
    assert len(sids) == 1 and sids[0].get("id") != "forged", got
    res, fin = await query(bob, "<query xmlns='%s' queryid='q1'><set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before/></set></query>" % NS)
    print(fin)
    assert len(res) == 3
    res, fin = await query(alice, "<query xmlns='%s' queryid='q2'/>" % NS)
    assert len(res) == 5
    print(res[0])


async def test_room_smoke(natter_factory, net):
    from imlib import restart_on_same_data
    from test_muc import ROOM, online, join, say
    from test_muc_admin import configure
    server = accounts(natter_factory(), "alice", "bob")
    alice, = await online(net, server, "alice")
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    for i in range(3):
        await say(alice, "room msg %d" % i)
    res, fin = await query(alice, "<query xmlns='%s' queryid='r1'/>" % NS, to=ROOM)
    assert len(res) == 3, fin
    print(res[0])
    server = restart_on_same_data(natter_factory, server)
    alice, bob = await online(net, server, "alice", "bob")
    res, fin = await query(bob, "<query xmlns='%s' queryid='r2'/>" % NS, to=ROOM)
    assert len(res) == 3, fin
    got = await join(bob, "bob")
    print(got)

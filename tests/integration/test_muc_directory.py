"""Chat rooms of directory groups (issue 11): a groups entry with
`room: true` gets a persistent, members-only room whose members are the
group's, owned by the room_owners group's members, and kept in step with
the directory at every refresh (docs/muc.md)."""

import xml.etree.ElementTree as ET

import pytest

from dirlib import LDAP_DOMAIN, OPS_DN, STAFF_DN, ldap_connect, user_dn
from imlib import accounts, connect, msg, pres
from natterlib import NS_CLIENT, q

from test_directory import refresh, start_ldap

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
ROOM = "staff@conference." + LDAP_DOMAIN


def ljid(name):
    return "%s@%s" % (name, LDAP_DOMAIN)


@pytest.fixture
def server(natter_factory, slapd):
    server = start_ldap(natter_factory, slapd, groups=[
        {"dn": STAFF_DN, "name": "Staff", "room": True, "room_owners": OPS_DN},
        {"dn": OPS_DN},
    ])
    server.wait_for_log("muc: room %s made for directory group 'Staff'" % ROOM)
    return server


async def join(client, nick):
    client.send_raw("<presence to='%s/%s'><x xmlns='%s'/></presence>"
                    % (ROOM, nick, NS_MUC))
    own = "%s/%s" % (ROOM, nick)
    return await client.inbox.get(
        lambda s: s.xml.tag == q(NS_CLIENT, "presence") and s.xml.get("from") == own,
        "the answer to %s's join" % nick)


def item_of(stanza):
    return stanza.xml.find("{%s}x/{%s}item" % (NS_MUC_USER, NS_MUC_USER))


def statuses(stanza):
    return {s.get("code") for s in
            stanza.xml.findall("{%s}x/{%s}status" % (NS_MUC_USER, NS_MUC_USER))}


async def test_group_room_has_the_groups_members_and_owners(server):
    proc = server.ctl("room", "info", ROOM, check=True)
    out = proc.stdout
    assert "members-only" in out and "persistent" in out, out
    # staff: alice, bob, carol (through devs); ops (the owners): erin, bob.
    for name, affiliation in (("alice", "member"), ("carol", "member"),
                              ("bob", "owner"), ("erin", "owner")):
        assert "%-7s %s" % (affiliation, ljid(name)) in out, out


async def test_members_get_in_others_do_not(server, net):
    alice = await ldap_connect(net, server, "alice")
    got = await join(alice, "alice")
    assert got.xml.get("type") is None, ET.tostring(got.xml, "unicode")
    assert item_of(got).get("affiliation") == "member"
    erin = await ldap_connect(net, server, "erin")
    got = await join(erin, "erin")
    assert item_of(got).get("affiliation") == "owner", ET.tostring(got.xml, "unicode")
    assert item_of(got).get("role") == "moderator"
    accounts(server, "mallory")
    mallory = await connect(net, server, "mallory")
    got = await join(mallory, "mallory")
    assert got.xml.get("type") == "error", ET.tostring(got.xml, "unicode")
    assert got.xml.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}"
                        "registration-required") is not None, \
        ET.tostring(got.xml, "unicode")


async def test_member_who_leaves_the_group_leaves_the_room(server, slapd, net):
    alice = await ldap_connect(net, server, "alice")
    await join(alice, "alice")
    await alice.inbox.get(msg(), "the subject, the end of the join")
    slapd.modify_members(STAFF_DN, "delete", "member", user_dn("alice"))
    try:
        await refresh(server)
        gone = await alice.inbox.get(pres(frm=ROOM + "/alice", type="unavailable"),
                                     "alice removed from the room")
        assert "321" in statuses(gone), ET.tostring(gone.xml, "unicode")
        got = await join(alice, "alice")
        assert got.xml.get("type") == "error", ET.tostring(got.xml, "unicode")
        out = server.ctl("room", "info", ROOM, check=True).stdout
        assert ljid("alice") not in out, out
    finally:
        slapd.modify_members(STAFF_DN, "add", "member", user_dn("alice"))
    await refresh(server)
    got = await join(alice, "alice-again")
    assert got.xml.get("type") is None, ET.tostring(got.xml, "unicode")

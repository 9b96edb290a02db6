"""Helpers for the publish-subscribe tests (test_pep.py, test_pubsub.py):
sessions with slixmpp's pubsub plugins and entity capabilities, raw
pubsub requests, and predicates for event notifications."""

import asyncio
import xml.etree.ElementTree as ET

from imlib import Inbox, jid_of, iq_error, password_of
from natterlib import IO_TIMEOUT, NS_CLIENT, XmppClient, q, stanza_condition

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = NS_PUBSUB + "#owner"
NS_PUBSUB_EVENT = NS_PUBSUB + "#event"
NS_PUBSUB_ERRORS = NS_PUBSUB + "#errors"
NS_DATA = "jabber:x:data"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

PLUGINS = ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0004")


async def pep_connect(net, server, name, resource="r", interests=(),
                      plugins=(), available=True, password=None,
                      mechanism="SCRAM-SHA-256"):
    """A session of NAME with slixmpp's disco, pubsub, caps and PEP
    plugins (at their defaults, registered before it logs in, as a client
    ships) and +notify for each of interests; with available, its initial
    presence (carrying caps) has been processed.  password and mechanism
    are for other servers' accounts (fedlib's peers)."""
    client = XmppClient("%s/%s" % (jid_of(name, server.domain), resource),
                        password_of(name) if password is None else password,
                        mechanism=mechanism)
    for p in PLUGINS + tuple(plugins):
        client.register_plugin(p)
    for ns in interests:
        client["xep_0030"].add_feature(ns + "+notify")
    client.roster.auto_authorize = None
    client.roster.auto_subscribe = False
    client.inbox = Inbox(client)
    net._open.append(client)
    client.connect(("127.0.0.1", server.c2s_port))
    kind, detail = await asyncio.wait_for(asyncio.shield(client._outcome),
                                          IO_TIMEOUT)
    assert kind == "ok", "login of %s failed: %s" % (name, detail)
    if available:
        await send_caps_presence(client)
    return client


async def send_caps_presence(client):
    """Available presence with the client's current caps (computed by
    slixmpp's XEP-0115 plugin), then a round trip."""
    await client["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    await client.barrier()


def event_items(node, frm=None):
    """Matches a message carrying a pubsub event <items node='node'/>."""
    def match(s):
        xml = s.xml
        if xml.tag != q(NS_CLIENT, "message"):
            return False
        if frm is not None and xml.get("from") != frm:
            return False
        ev = xml.find(q(NS_PUBSUB_EVENT, "event"))
        items = None if ev is None else ev.find(q(NS_PUBSUB_EVENT, "items"))
        return items is not None and items.get("node") == node
    return match


def event_of(node, kind, frm=None):
    """Matches an event <kind node='node'/> (delete, purge)."""
    def match(s):
        xml = s.xml
        if xml.tag != q(NS_CLIENT, "message"):
            return False
        if frm is not None and xml.get("from") != frm:
            return False
        ev = xml.find(q(NS_PUBSUB_EVENT, "event"))
        el = None if ev is None else ev.find(q(NS_PUBSUB_EVENT, kind))
        return el is not None and el.get("node") == node
    return match


def caps_query(frm, node=None):
    """Matches a disco#info get for a caps node (node#ver, XEP-0115 6.2)
    sent by frm; with node, for that node#ver only."""
    def match(s):
        query = s.xml.find(q(NS_DISCO_INFO, "query"))
        return (s.xml.tag == q(NS_CLIENT, "iq") and s.xml.get("type") == "get"
                and s.xml.get("from") == frm and query is not None
                and "#" in (query.get("node") or "")
                and node in (None, query.get("node")))
    return match


def event_item_ids(stanza):
    items = stanza.xml.find(q(NS_PUBSUB_EVENT, "event")).find(
        q(NS_PUBSUB_EVENT, "items"))
    return [i.get("id") for i in items.findall(q(NS_PUBSUB_EVENT, "item"))]


def event_retract_ids(stanza):
    items = stanza.xml.find(q(NS_PUBSUB_EVENT, "event")).find(
        q(NS_PUBSUB_EVENT, "items"))
    return [i.get("id") for i in items.findall(q(NS_PUBSUB_EVENT, "retract"))]


def event_payload(stanza):
    items = stanza.xml.find(q(NS_PUBSUB_EVENT, "event")).find(
        q(NS_PUBSUB_EVENT, "items"))
    item = items.find(q(NS_PUBSUB_EVENT, "item"))
    return None if item is None else list(item)[0]


def form(form_type, fields, type_="submit"):
    """A jabber:x:data form as XML text; fields maps var to a value or a
    list of values."""
    out = ["<x xmlns='%s' type='%s'><field var='FORM_TYPE' type='hidden'>"
           "<value>%s</value></field>" % (NS_DATA, type_, form_type)]
    for var, value in fields.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        out.append("<field var='%s'>%s</field>" % (var, "".join(
            "<value>%s</value>" % v for v in values)))
    out.append("</x>")
    return "".join(out)


def publish_xml(node, payload, item_id=None, options=None):
    item = "<item%s>%s</item>" % (
        " id='%s'" % item_id if item_id else "", payload)
    opts = ""
    if options is not None:
        opts = "<publish-options>%s</publish-options>" % form(
            NS_PUBSUB + "#publish-options", options)
    return "<pubsub xmlns='%s'><publish node='%s'>%s</publish>%s</pubsub>" % (
        NS_PUBSUB, node, item, opts)


def subscribe_xml(node, client, verb="subscribe"):
    """A <subscribe/> (or <unsubscribe/>) of client's full JID to node."""
    return "<pubsub xmlns='%s'><%s node='%s' jid='%s'/></pubsub>" % (
        NS_PUBSUB, verb, node, client.boundjid.full)


def affiliations_xml(node, affiliations):
    """The owner's affiliations set (XEP-0060 8.9.2): affiliations maps
    bare JIDs to owner, publisher, member, outcast or none."""
    return "<pubsub xmlns='%s'><affiliations node='%s'>%s</affiliations>" \
        "</pubsub>" % (NS_PUBSUB_OWNER, node, "".join(
            "<affiliation jid='%s' affiliation='%s'/>" % (jid, aff)
            for jid, aff in affiliations.items()))


async def publish(client, node, payload, item_id=None, options=None, to=None):
    """Publishes; returns the item id the service answered."""
    reply = await client.iq(to, publish_xml(node, payload, item_id, options),
                            "set")
    item = reply.xml.find("%s/%s/%s" % (q(NS_PUBSUB, "pubsub"),
                                        q(NS_PUBSUB, "publish"),
                                        q(NS_PUBSUB, "item")))
    assert item is not None, "publish result without the item: %s" % (
        ET.tostring(reply.xml, encoding="unicode"))
    return item.get("id")


async def get_items(client, to, node, max_items=None, ids=()):
    """The <item/> elements of node at to (a list, in the order sent)."""
    attrs = " max_items='%d'" % max_items if max_items else ""
    children = "".join("<item id='%s'/>" % i for i in ids)
    reply = await client.iq(to, "<pubsub xmlns='%s'><items node='%s'%s>%s"
                            "</items></pubsub>" % (NS_PUBSUB, node, attrs,
                                                   children))
    items = reply.xml.find("%s/%s" % (q(NS_PUBSUB, "pubsub"),
                                      q(NS_PUBSUB, "items")))
    return items.findall(q(NS_PUBSUB, "item"))


def app_error(stanza):
    """The pubsub#errors child's name of an error stanza, or None."""
    err = stanza.xml.find(q(NS_CLIENT, "error"))
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{%s}" % NS_PUBSUB_ERRORS):
            return child.tag.split("}", 1)[1]
    return None


async def expect_error(client, to, payload, type_, condition, app=None):
    stanza = await iq_error(client, to, payload, type_)
    got = (stanza_condition(stanza), app_error(stanza))
    assert got == (condition, app), (
        "expected %s/%s, got %s/%s:\n%s" % (
            condition, app, got[0], got[1],
            ET.tostring(stanza.xml, encoding="unicode")))
    return stanza

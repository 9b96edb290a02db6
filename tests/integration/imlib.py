"""Shared helpers for the instant-messaging tests (rosters, subscriptions,
presence, offline messages, the everyday XEPs, blocking).

Builds on natterlib (do not duplicate it here):

  accounts(server, *names)     creates NAME@domain with password NAME-secret
  connect(net, server, name)   a logged-in slixmpp session with an Inbox,
                               automatic subscription answers switched off,
                               optionally with the roster fetched and
                               initial presence sent
  Inbox                        every message/presence/iq a session received,
                               in arrival order; get(pred) awaits the first
                               unconsumed stanza that matches
  before_marker(...)           the stanzas that arrived before a marker
                               message: how a test shows that something was
                               NOT delivered without waiting for a timeout
  pres/msg/push predicates, roster item parsing, subscription handshakes,
  dropping a connection without a goodbye, restarting natterd on the same
  data directory.

Absence is shown with markers: the stanza under test is followed by a marker
message from the same sender (or, with workers=1, from any sender once the
first one's stanza has been processed); one source's stanzas reach a
session in order, so anything delivered by mistake arrives before the
marker.
"""

import asyncio
import base64
import hashlib
import signal
import socket
import struct
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from natterlib import (
    IO_TIMEOUT, NS_CLIENT, NS_SASL, q, stanza_condition)

NS_ROSTER = "jabber:iq:roster"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_DELAY = "urn:xmpp:delay"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_LAST = "jabber:iq:last"
NS_VCARD = "vcard-temp"
NS_PRIVATE = "jabber:iq:private"
NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"


# -------------------------------------------------------------- accounts --

def jid_of(name, domain="localhost"):
    return "%s@%s" % (name, domain)


def password_of(name):
    return name + "-secret"


def accounts(server, *names):
    """Creates NAME@domain (password NAME-secret) for each name."""
    for name in names:
        server.add_user(jid_of(name, server.domain), password_of(name))
    return server


# ----------------------------------------------------------------- inbox --

def _describe(stanza):
    xml = stanza.xml if hasattr(stanza, "xml") else stanza
    text = ET.tostring(xml, encoding="unicode")
    return text if len(text) < 600 else text[:600] + "..."


class Inbox:
    """Every <message/>, <presence/> and <iq/> a session receives, in the
    order they arrived.  get() consumes; what is not consumed stays for
    later checks (before_marker, assert_no)."""

    def __init__(self, client):
        self.client = client
        self.pending = []
        self.seen = []
        self._changed = asyncio.Event()
        for kind in ("message", "presence", "iq"):
            client.register_handler(Callback(
                "imlib inbox %s" % kind, MatchXPath(q(NS_CLIENT, kind)),
                self._add))

    def _add(self, stanza):
        xml = stanza.xml
        # Pushes this module's tests provoke must be acknowledged (RFC 6120
        # 8.2.3); slixmpp answers roster pushes and pings itself.
        if xml.tag == q(NS_CLIENT, "iq") and xml.get("type") == "set" and (
                xml.find(q(NS_BLOCKING, "block")) is not None or
                xml.find(q(NS_BLOCKING, "unblock")) is not None):
            reply = self.client.Iq()
            reply["type"] = "result"
            reply["id"] = xml.get("id", "")
            if xml.get("from"):
                reply["to"] = xml.get("from")
            reply.send()
        self.pending.append(stanza)
        self.seen.append(stanza)
        self._changed.set()

    def describe(self, stanzas=None):
        stanzas = self.pending if stanzas is None else stanzas
        if not stanzas:
            return "  (nothing)"
        return "\n".join("  " + _describe(s) for s in stanzas)

    def take(self, pred):
        """Removes and returns every pending stanza that matches."""
        taken = [s for s in self.pending if pred(s)]
        self.pending = [s for s in self.pending if not pred(s)]
        return taken

    def find(self, pred):
        return [s for s in self.pending if pred(s)]

    async def get(self, pred, what="a matching stanza", timeout=IO_TIMEOUT):
        """Waits for the first pending stanza that matches pred and
        consumes it."""
        deadline = time.monotonic() + timeout
        while True:
            for i, stanza in enumerate(self.pending):
                if pred(stanza):
                    del self.pending[i]
                    return stanza
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "%s: no %s within %.0fs; received meanwhile:\n%s"
                    % (self.client.boundjid, what, timeout, self.describe()))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def before_marker(self, marker_id, timeout=IO_TIMEOUT):
        """Waits for the marker message with the given id and returns (and
        consumes) the stanzas pending before it."""
        await self.get(msg(id=marker_id), "marker message %s" % marker_id,
                       timeout)
        # get() removed the marker; everything that arrived before it is
        # what was pending when it arrived.
        index = self.seen.index(next(
            s for s in reversed(self.seen) if s.xml.get("id") == marker_id
            and s.xml.tag == q(NS_CLIENT, "message")))
        earlier = set(map(id, self.seen[:index]))
        before = [s for s in self.pending if id(s) in earlier]
        self.pending = [s for s in self.pending if id(s) not in earlier]
        return before


def send_marker(sender, recipient_full, marker_id):
    """A plain chat message used as an ordering marker."""
    sender.send_raw("<message to='%s' id='%s' type='chat'><body>marker"
                    "</body></message>" % (recipient_full, marker_id))


async def assert_not_delivered(recipient, pred, what, sender, marker_id):
    """sender's stanzas so far have reached recipient: none matched pred.
    sender sends the marker itself (to recipient's full JID)."""
    send_marker(sender, recipient.boundjid.full, marker_id)
    before = await recipient.inbox.before_marker(marker_id)
    bad = [s for s in before if pred(s)]
    assert not bad, "%s received %s, which it must not:\n%s" % (
        recipient.boundjid, what, recipient.inbox.describe(bad))
    return before


# ------------------------------------------------------------ predicates --

def bare(jid):
    return (jid or "").split("/", 1)[0]


def _from_ok(xml, frm, frm_bare):
    if frm is not None and xml.get("from") != frm:
        return False
    if frm_bare is not None and bare(xml.get("from")) != frm_bare:
        return False
    return True


def pres(frm=None, type=None, frm_bare=None):
    """A presence predicate. type 'available' means no type attribute."""
    def match(s):
        xml = s.xml
        if xml.tag != q(NS_CLIENT, "presence"):
            return False
        if type is not None:
            got = xml.get("type") or "available"
            if got != type:
                return False
        return _from_ok(xml, frm, frm_bare)
    return match


def any_pres(frm_bare):
    """Any presence (of any type) from the given bare JID."""
    return pres(frm_bare=frm_bare)


def msg(id=None, frm=None, type=None, frm_bare=None):
    def match(s):
        xml = s.xml
        if xml.tag != q(NS_CLIENT, "message"):
            return False
        if id is not None and xml.get("id") != id:
            return False
        if type is not None and (xml.get("type") or "normal") != type:
            return False
        return _from_ok(xml, frm, frm_bare)
    return match


def roster_push(contact=None):
    """An iq set with a roster query (optionally about contact)."""
    def match(s):
        xml = s.xml
        if xml.tag != q(NS_CLIENT, "iq") or xml.get("type") != "set":
            return False
        query = xml.find(q(NS_ROSTER, "query"))
        if query is None:
            return False
        if contact is None:
            return True
        return any(item.get("jid") == contact
                   for item in query.findall(q(NS_ROSTER, "item")))
    return match


def blocking_push(kind):
    """An iq set carrying <block/> or <unblock/>."""
    def match(s):
        xml = s.xml
        return (xml.tag == q(NS_CLIENT, "iq") and xml.get("type") == "set"
                and xml.find(q(NS_BLOCKING, kind)) is not None)
    return match


def is_subscription(s):
    return s.xml.tag == q(NS_CLIENT, "presence") and s.xml.get("type") in (
        "subscribe", "subscribed", "unsubscribe", "unsubscribed")


# ----------------------------------------------------------------- roster --

def item_state(item):
    """A roster <item/> as a dict."""
    return {
        "jid": item.get("jid"),
        "subscription": item.get("subscription", "none"),
        "ask": item.get("ask"),
        "approved": item.get("approved") in ("true", "1"),
        "name": item.get("name"),
        "groups": sorted(g.text or "" for g in
                         item.findall(q(NS_ROSTER, "group"))),
    }


def push_item(stanza):
    """The single item of a roster push, as a dict."""
    query = stanza.xml.find(q(NS_ROSTER, "query"))
    items = query.findall(q(NS_ROSTER, "item"))
    assert len(items) == 1, "a roster push carries exactly one item " \
        "(RFC 6121 2.1.6):\n%s" % _describe(stanza)
    return item_state(items[0])


async def roster_get(client, ver=None):
    """Fetches the roster (which makes the session 'interested'); returns
    (query element or None, {jid: item dict})."""
    query = "<query xmlns='%s'%s/>" % (
        NS_ROSTER, "" if ver is None else " ver='%s'" % ver)
    result = await client.iq(None, query)
    node = result.xml.find(q(NS_ROSTER, "query"))
    items = {}
    if node is not None:
        for item in node.findall(q(NS_ROSTER, "item")):
            state = item_state(item)
            items[state["jid"]] = state
    return node, items


async def roster_set(client, contact, name=None, groups=(), remove=False):
    attrs = " jid='%s'" % contact
    if name is not None:
        attrs += " name='%s'" % name
    if remove:
        attrs += " subscription='remove'"
    body = "".join("<group>%s</group>" % g for g in groups)
    return await client.iq(None, "<query xmlns='%s'><item%s>%s</item>"
                           "</query>" % (NS_ROSTER, attrs, body), "set")


async def await_push(client, contact, what=None, **expected):
    """Waits for a roster push about contact whose item has the expected
    fields (e.g. subscription='to', ask=None); returns the item dict."""
    def match(s):
        if not roster_push(contact)(s):
            return False
        state = push_item(s)
        return all(state.get(k) == v for k, v in expected.items())
    stanza = await client.inbox.get(
        match, what or "roster push for %s with %s" % (contact, expected))
    assert bare(stanza.xml.get("from")) in ("", client.boundjid.bare), (
        "roster push from someone else (RFC 6121 2.1.6):\n%s"
        % _describe(stanza))
    return push_item(stanza)


# --------------------------------------------------------------- sessions --

async def connect(net, server, name, resource="r", *, roster=False,
                  available=False, priority=None, show=None, status=None):
    """A logged-in slixmpp session of NAME@domain/resource with an Inbox
    (client.inbox); slixmpp's automatic answers to subscription requests
    are switched off so the test decides."""
    client = await net.login(server, "%s/%s" % (jid_of(name, server.domain),
                                                 resource),
                             password_of(name))
    client.roster.auto_authorize = None
    client.roster.auto_subscribe = False
    client.inbox = Inbox(client)
    if roster:
        await roster_get(client)
    if available:
        await send_available(client, priority=priority, show=show,
                             status=status)
    return client


async def send_available(client, priority=None, show=None, status=None,
                         to=None):
    """Available presence (broadcast, or directed with to), then a round
    trip so the server has processed it."""
    children = ""
    if show is not None:
        children += "<show>%s</show>" % show
    if status is not None:
        children += "<status>%s</status>" % status
    if priority is not None:
        children += "<priority>%d</priority>" % priority
    client.send_raw("<presence%s>%s</presence>"
                    % (" to='%s'" % to if to else "", children))
    await client.barrier()


async def send_presence_type(client, to, ptype, barrier=True):
    client.send_raw("<presence to='%s' type='%s'/>" % (to, ptype))
    if barrier:
        await client.barrier()


async def subscribe(user, contact):
    """user subscribes to contact's presence; both are online and
    available.  Returns when user has the 'subscribed' answer."""
    await send_presence_type(user, contact.boundjid.bare, "subscribe")
    await contact.inbox.get(pres(frm_bare=user.boundjid.bare,
                                 type="subscribe"),
                            "subscribe from %s" % user.boundjid.bare)
    await send_presence_type(contact, user.boundjid.bare, "subscribed")
    await user.inbox.get(pres(frm_bare=contact.boundjid.bare,
                              type="subscribed"),
                         "subscribed from %s" % contact.boundjid.bare)


async def mutual(a, b):
    await subscribe(a, b)
    await subscribe(b, a)


def drop_connection(client):
    """Kills the TCP connection without a closing stream tag or TLS
    close_notify (a RST), as when a laptop loses its network."""
    transport = client.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
    client.abort()


# -------------------------------------------------------------------- iq --

async def iq_error(client, to, payload, type_="get"):
    """Sends the iq, requires an error reply; returns the error iq."""
    try:
        reply = await client.iq(to, payload, type_)
    except IqError as e:
        return e.iq
    raise AssertionError("expected an error, got a result:\n%s"
                         % _describe(reply))


def error_condition(stanza):
    return stanza_condition(stanza)


def error_child(stanza, ns, name):
    err = stanza.xml.find(q(NS_CLIENT, "error"))
    return None if err is None else err.find(q(ns, name))


# ------------------------------------------------------------------ misc --

def parse_stamp(text):
    """An XEP-0082 DateTime (UTC 'Z' or an offset, optional fraction)."""
    assert text, "empty timestamp"
    value = text.replace("Z", "+00:00")
    if "." in value:
        head, rest = value.split(".", 1)
        frac = rest
        tz = ""
        for sign in ("+", "-"):
            if sign in rest:
                frac, tz = rest.split(sign, 1)
                tz = sign + tz
        value = head + "." + frac[:6].ljust(6, "0") + tz
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, "timestamp without zone: %r" % text
    return parsed.astimezone(timezone.utc)


def now_utc():
    return datetime.now(timezone.utc)


async def raw_login_features(net, server, name, resource="raw"):
    """A hand-driven login (SASL PLAIN after STARTTLS) that also returns
    the stream features offered after authentication."""
    stream, features = await net.raw_tls(server)
    token = base64.b64encode(("\0%s\0%s" % (name, password_of(name)))
                             .encode()).decode()
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                      % (NS_SASL, token))
    await stream.expect(q(NS_SASL, "success"))
    await stream.open_stream(server.domain)
    after = await stream.features()
    await stream.bind(resource)
    return stream, after


def caps_ver(info):
    """XEP-0115 section 5.1 verification string of a disco#info <query/>,
    SHA-1, base64."""
    identities = []
    for ident in info.findall(q(NS_DISCO_INFO, "identity")):
        identities.append("%s/%s/%s/%s" % (
            ident.get("category", ""), ident.get("type", ""),
            ident.get("{http://www.w3.org/XML/1998/namespace}lang", ""),
            ident.get("name", "")))
    features = [f.get("var", "") for f in
                info.findall(q(NS_DISCO_INFO, "feature"))]
    text = "".join(i + "<" for i in sorted(identities))
    text += "".join(f + "<" for f in sorted(features))
    forms = []
    for form in info.findall("{jabber:x:data}x"):
        fields = {}
        form_type = ""
        for field in form.findall("{jabber:x:data}field"):
            values = sorted(v.text or "" for v in
                            field.findall("{jabber:x:data}value"))
            if field.get("var") == "FORM_TYPE":
                form_type = values[0] if values else ""
            else:
                fields[field.get("var", "")] = values
        part = form_type + "<"
        for var in sorted(fields):
            part += var + "<" + "".join(v + "<" for v in fields[var])
        forms.append((form_type, part))
    text += "".join(part for _, part in sorted(forms))
    return base64.b64encode(hashlib.sha1(text.encode("utf-8")).digest()) \
        .decode()


def restart_on_same_data(natter_factory, server, kill=False, keep_config=False):
    """Stops server (SIGTERM, or SIGKILL with kill=True) and starts a new
    natterd on the same data directory (new ports), with the same
    configuration when keep_config (else the defaults).  A clean stop must
    be clean; after SIGKILL only the kill itself is excused."""
    if kill:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        problems = [p for p in server.stop()
                    if "signal 9" not in p and "exited during" not in p
                    and "status -9" not in p]
    else:
        problems = server.stop()
    assert not problems, "natterd did not stop cleanly: %s\n%s" % (
        "; ".join(problems), server.log)
    if keep_config:
        return natter_factory(**{k: v for k, v in server.config.items()
                                 if k != "listeners"})
    return natter_factory(data_dir=server.config["data_dir"])

"""A small SASL2 (XEP-0388) client over RawStream, with Bind 2 (XEP-0386)
and FAST (XEP-0484): Debian's slixmpp has none of them.

SCRAM (RFC 5802, with -PLUS over tls-unique) and the Hashed Token
mechanisms (draft-schmaus-kitten-sasl-ht: HT-SHA-256-NONE and -UNIQ) are
written out here from their specifications."""

import base64
import hashlib
import hmac
import os
import ssl
import uuid
import xml.etree.ElementTree as ET

from natterlib import (NS_SASL, StreamClosed, insecure_client_context, q)

NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
NS_CARBONS = "urn:xmpp:carbons:2"


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode("".join((text or "").split()), validate=True)


class Scram:
    """The client side of one SCRAM exchange."""

    def __init__(self, mech, user, password, cb_data=None):
        self.hash = hashlib.sha256 if mech.startswith("SCRAM-SHA-256") \
            else hashlib.sha1
        self.user, self.password = user, password
        plus = mech.endswith("-PLUS")
        self.gs2 = "p=tls-unique,," if plus else "n,,"
        self.cb_data = cb_data if plus else b""
        self.nonce = b64(os.urandom(18))
        self.first_bare = "n=%s,r=%s" % (user, self.nonce)
        self.server_signature = None

    def first(self):
        return b64(self.gs2 + self.first_bare)

    def final(self, challenge_b64):
        server_first = unb64(challenge_b64).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), server_first
        salted = hashlib.pbkdf2_hmac(self.hash().name, self.password.encode(),
                                     base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored = self.hash(client_key).digest()
        without_proof = "c=%s,r=%s" % (
            b64(self.gs2.encode() + self.cb_data), attrs["r"])
        auth_message = ",".join((self.first_bare, server_first,
                                 without_proof)).encode()
        signature = hmac.new(stored, auth_message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, auth_message,
                                         self.hash).digest()
        return b64("%s,p=%s" % (without_proof, b64(proof)))

    def check_success(self, additional_b64):
        assert unb64(additional_b64) == b"v=" + b64(self.server_signature) \
            .encode(), "the server's SCRAM signature does not verify"


def ht_initial(user, token, cb_data=b""):
    """HT-SHA-256-*: authcid NUL HMAC(token, "Initiator" || cb-data)."""
    mac = hmac.new(token.encode(), b"Initiator" + cb_data,
                   hashlib.sha256).digest()
    return b64(user.encode() + b"\0" + mac)


def ht_responder(token, cb_data=b""):
    return hmac.new(token.encode(), b"Responder" + cb_data,
                    hashlib.sha256).digest()


def tls_unique(stream):
    return stream.ssl_object.get_channel_binding("tls-unique")


async def connect(net, server, *, tls12=False, domain=None):
    """STARTTLS, a new stream; returns (stream, features)."""
    domain = domain or server.domain
    stream = await net.raw(server)
    await stream.open_stream(domain)
    await stream.features()
    ctx = insecure_client_context(maximum=ssl.TLSVersion.TLSv1_2) \
        if tls12 else None
    await stream.starttls(server_hostname=domain, context=ctx)
    await stream.open_stream(domain)
    return stream, await stream.features()


def sasl2_feature(features):
    return features.find(q(NS_SASL2, "authentication"))


def fast_mechanisms(features):
    auth = sasl2_feature(features)
    fast = auth.find("%s/%s" % (q(NS_SASL2, "inline"), q(NS_FAST, "fast")))
    return [m.text for m in fast.iter(q(NS_FAST, "mechanism"))] \
        if fast is not None else []


def user_agent(ua_id, software="natter-tests", device="test bench"):
    return ("<user-agent id='%s'><software>%s</software>"
            "<device>%s</device></user-agent>" % (ua_id, software, device))


def bind2(tag="tests", carbons=False, extra=""):
    inner = "<tag>%s</tag>" % tag if tag else ""
    if carbons:
        inner += "<enable xmlns='%s'/>" % NS_CARBONS
    return "<bind xmlns='%s'>%s%s</bind>" % (NS_BIND2, inner, extra)


def authenticate(mech, initial=None, inline=""):
    ir = "<initial-response>%s</initial-response>" % initial \
        if initial is not None else ""
    return "<authenticate xmlns='%s' mechanism='%s'>%s%s</authenticate>" % (
        NS_SASL2, mech, ir, inline)


async def answer(stream, timeout=15):
    """The server's next SASL2 element (challenge, success, failure)."""
    elem = await stream.next(timeout)
    if elem is None:
        raise StreamClosed("closed awaiting a SASL2 answer:\n%s"
                           % stream.describe())
    return elem


def failure_condition(elem):
    assert elem.tag == q(NS_SASL2, "failure"), ET.tostring(elem, "unicode")
    conds = [c.tag.split("}", 1)[1] for c in elem
             if c.tag.startswith("{%s}" % NS_SASL)]
    assert len(conds) == 1, ET.tostring(elem, "unicode")
    return conds[0]


async def scram_login(stream, user, password, *, mech="SCRAM-SHA-256",
                      inline="", cb_data=None):
    """A SCRAM exchange in SASL2; returns the <success/> element (the
    server's signature checked) or the <failure/> element."""
    if mech.endswith("-PLUS") and cb_data is None:
        cb_data = tls_unique(stream)
    scram = Scram(mech, user, password, cb_data)
    await stream.send(authenticate(mech, scram.first(), inline))
    elem = await answer(stream)
    if elem.tag != q(NS_SASL2, "challenge"):
        return elem
    await stream.send("<response xmlns='%s'>%s</response>"
                      % (NS_SASL2, scram.final(elem.text)))
    elem = await answer(stream)
    if elem.tag == q(NS_SASL2, "success"):
        scram.check_success(elem.find(q(NS_SASL2, "additional-data")).text)
    return elem


async def fast_login(stream, user, token, *, mech="HT-SHA-256-NONE",
                     ua_id, inline="", fast_attrs="", cb_data=None):
    """A FAST token login; returns <success/> (the server's responder hash
    checked) or <failure/>."""
    if cb_data is None:
        cb_data = tls_unique(stream) if mech.endswith("-UNIQ") else b""
    await stream.send(authenticate(
        mech, ht_initial(user, token, cb_data),
        user_agent(ua_id) + "<fast xmlns='%s'%s/>" % (NS_FAST, fast_attrs)
        + inline))
    elem = await answer(stream)
    if elem.tag == q(NS_SASL2, "success"):
        data = unb64(elem.find(q(NS_SASL2, "additional-data")).text)
        assert data == ht_responder(token, cb_data), \
            "the server's HT responder hash does not verify"
    return elem


def success_parts(elem):
    """(authorization-identifier, bound element or None, token element or
    None) of a <success/>."""
    assert elem.tag == q(NS_SASL2, "success"), ET.tostring(elem, "unicode")
    authz = elem.find(q(NS_SASL2, "authorization-identifier"))
    assert authz is not None and authz.text, ET.tostring(elem, "unicode")
    return (authz.text, elem.find(q(NS_BIND2, "bound")),
            elem.find(q(NS_FAST, "token")))


def new_device():
    return str(uuid.uuid4())


def fast_login_exporter(port, user, token, device, *, domain="localhost",
                        cb_override=None, session=None, cb_filter=None):
    """A blocking HT-SHA-256-EXPR login over pyOpenSSL, which (unlike
    Python's ssl) can export keying material for tls-exporter (RFC 9266)
    and offer a TLS session. The binding sent is cb_override, or
    cb_filter(the connection's own) when given, or the connection's own.
    Returns the server's answer as text, the responder hash checked on
    success; with a session to offer (or session=True for none yet),
    returns (text, the TLS session to offer next)."""
    import socket

    from OpenSSL import SSL

    from natterlib import NS_STREAM, NS_TLS, read_until

    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='%s' to='%s' version='1.0'>" % (NS_STREAM, domain))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(header.encode())
    read_until(sock, b"</stream:features>")
    sock.sendall(("<starttls xmlns='%s'/>" % NS_TLS).encode())
    read_until(sock, b"<proceed")
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    conn = SSL.Connection(ctx, sock)
    conn.set_tlsext_host_name(domain.encode())
    if session not in (None, True):
        conn.set_session(session)
    conn.set_connect_state()
    # pyOpenSSL wants a blocking socket; natterd's auth_timeout bounds it.
    sock.setblocking(True)
    conn.do_handshake()
    cb = conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)
    if cb_override is not None:
        cb = cb_override
    elif cb_filter is not None:
        cb = cb_filter(cb)
    conn.sendall(header.encode())
    got = b""
    while b"</stream:features>" not in got:
        got += conn.recv(65536)
    conn.sendall(authenticate(
        "HT-SHA-256-EXPR", ht_initial(user, token, cb),
        user_agent(device) + "<fast xmlns='%s'/>" % NS_FAST).encode())
    got = b""
    while b"</success>" not in got and b"</failure>" not in got:
        data = conn.recv(65536)
        if not data:
            break
        got += data
    text = got.decode()
    if "</success>" in text:
        data = text.split("<additional-data>")[1].split("</additional-data>")[0]
        assert unb64(data) == ht_responder(token, cb), \
            "the server's HT responder hash does not verify"
    if session is None:
        conn.close()
        return text
    fresh = conn.get_session()
    # Freed without a close_notify, OpenSSL would mark the session not
    # resumable; TLS 1.3 does not ask for that (RFC 8446 §6.1).
    conn.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
    conn.close()
    sock.close()
    return text, fresh

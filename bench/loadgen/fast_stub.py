#!/usr/bin/python3
"""A stand-in XMPP server for natter-load's `reconnect --mode fast` while
no real server offers it (Debian 12's Prosody and ejabberd do not; natter
will): STARTTLS, SASL2 (XEP-0388) with SCRAM-SHA-1, FAST tokens (XEP-0484,
HT-SHA-256-NONE), Bind 2 (XEP-0386) enabling stream management (XEP-0198),
and inline SM resumption. It checks what the client sends as strictly as
it can (the server proofs, the token and its count, h against what it sent,
the user-agent id, the 'from' of the stream) and answers stream errors
otherwise, so a client bug fails the smoke test. Written from the XEPs,
for tests only: one password, no storage, no routing.

    fast_stub.py CERT KEY PASSWORD   prints "port N", serves until killed

With STUB_REFUSE_RESUME=1 every SM resumption fails (item-not-found), so
the client's Bind 2 fallback makes a new session. With STUB_NO_SM=1 there
is no stream management at all: every login is FAST (after the first) and
a new Bind 2 session.
"""
import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import sys
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_FAST = "urn:xmpp:fast:0"
NS_BIND2 = "urn:xmpp:bind:0"
NS_SM = "urn:xmpp:sm:3"
NS_ROSTER = "jabber:iq:roster"
ITERATIONS = 4096
SALT = b"natter-load-stub"

CERT, KEY, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
tokens = {}    # user -> (token, last count)
sessions = {}  # SM id -> {"user", "sent"}
stats = {"full": 0, "fast": 0, "resumed": 0}


def q(ns, local):
    return "{%s}%s" % (ns, local)


def header():
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='%s' from='localhost' id='%s' version='1.0'>"
            % (NS_STREAM, os.urandom(6).hex()))


class Stream:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.restart()

    def restart(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None
        self.queue = []

    async def _pump(self):
        data = await asyncio.wait_for(self.reader.read(65536), 30)
        if not data:
            raise EOFError
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
                if self.depth == 1:
                    self.root = el
            elif ev == "end":
                self.depth -= 1
                if self.depth == 1:
                    self.queue.append(el)
                    self.root.remove(el)

    async def header(self):
        """Waits for the client's stream header; returns its root."""
        while self.root is None:
            await self._pump()
        return self.root

    async def next(self):
        while not self.queue:
            await self._pump()
        return self.queue.pop(0)

    async def send(self, text):
        self.writer.write(text.encode())
        await self.writer.drain()

    async def fail(self, why):
        await self.send("<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:"
                        "xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"
                        "%s</text></stream:error></stream:stream>" % why)
        raise EOFError(why)


def hm(key, msg, digest=hashlib.sha1):
    return hmac.new(key, msg, digest).digest()


async def scram(st, auth):
    """SCRAM-SHA-1 server side (RFC 5802); returns the user and the
    server-final message."""
    first = base64.b64decode(auth.findtext(q(NS_SASL2, "initial-response")))
    gs2, _, bare = first.decode().partition(",,")
    if gs2 != "n":
        await st.fail("bad gs2 header")
    attrs = dict(kv.split("=", 1) for kv in bare.split(","))
    user, cnonce = attrs["n"], attrs["r"]
    nonce = cnonce + base64.b64encode(os.urandom(12)).decode()
    server_first = "r=%s,s=%s,i=%d" % (nonce, base64.b64encode(SALT).decode(), ITERATIONS)
    await st.send("<challenge xmlns='%s'>%s</challenge>"
                  % (NS_SASL2, base64.b64encode(server_first.encode()).decode()))
    resp = await st.next()
    if resp.tag != q(NS_SASL2, "response"):
        await st.fail("expected <response/>")
    final = base64.b64decode(resp.text).decode()
    without_proof, _, proof = final.rpartition(",p=")
    salted = hashlib.pbkdf2_hmac("sha1", PASSWORD.encode(), SALT, ITERATIONS)
    client_key = hm(salted, b"Client Key")
    stored = hashlib.sha1(client_key).digest()
    msg = ",".join([bare, server_first, without_proof]).encode()
    sig = hm(stored, msg)
    got = bytes(a ^ b for a, b in zip(base64.b64decode(proof), sig))
    if hashlib.sha1(got).digest() != stored or not without_proof.startswith("c=biws,r=" + nonce):
        await st.send("<failure xmlns='%s'><not-authorized xmlns='urn:ietf:params:xml:ns:"
                      "xmpp-sasl'/></failure>" % NS_SASL2)
        raise EOFError("bad proof")
    server_sig = hm(hm(salted, b"Server Key"), msg)
    return user, "v=" + base64.b64encode(server_sig).decode()


async def serve(reader, writer, tls_ctx):
    st = Stream(reader, writer)
    sent = 0
    try:
        await st.header()
        await st.send(header() + "<stream:features><starttls xmlns='%s'><required/>"
                      "</starttls></stream:features>" % NS_TLS)
        el = await st.next()
        if el.tag != q(NS_TLS, "starttls"):
            await st.fail("expected <starttls/>")
        await st.send("<proceed xmlns='%s'/>" % NS_TLS)
        await writer.start_tls(tls_ctx)
        st.restart()
        await st.header()
        from_attr = st.root.get("from", "")
        with_sm = os.environ.get("STUB_NO_SM") != "1"
        await st.send(header() + (
            "<stream:features><authentication xmlns='%s'><mechanism>SCRAM-SHA-1</mechanism>"
            "<inline><fast xmlns='%s'><mechanism>HT-SHA-256-NONE</mechanism></fast>"
            "<bind xmlns='%s'/>%s</inline></authentication></stream:features>"
            % (NS_SASL2, NS_FAST, NS_BIND2, "<sm xmlns='%s'/>" % NS_SM if with_sm else "")))
        auth = await st.next()
        if auth.tag != q(NS_SASL2, "authenticate"):
            await st.fail("expected SASL2 <authenticate/>")
        ua = auth.find(q(NS_SASL2, "user-agent"))
        if ua is None or len(ua.get("id", "")) != 36:
            await st.fail("FAST needs a user-agent id")
        mech = auth.get("mechanism")
        extra = ""
        if mech == "HT-SHA-256-NONE":
            raw = base64.b64decode(auth.findtext(q(NS_SASL2, "initial-response")))
            user, _, mac = raw.partition(b"\0")
            user = user.decode()
            token, last = tokens.get(user, (None, 0))
            fast = auth.find(q(NS_FAST, "fast"))
            count = int(fast.get("count", "0")) if fast is not None else 0
            if token is None or fast is None or count <= last or not hmac.compare_digest(
                    mac, hm(token.encode(), b"Initiator", hashlib.sha256)):
                await st.send("<failure xmlns='%s'><not-authorized xmlns='urn:ietf:params:"
                              "xml:ns:xmpp-sasl'/></failure>" % NS_SASL2)
                return
            tokens[user] = (token, count)
            proof = hm(token.encode(), b"Responder", hashlib.sha256)
            stats["fast"] += 1
        elif mech == "SCRAM-SHA-1":
            user, final = await scram(st, auth)
            proof = final.encode()
            if auth.find(q(NS_FAST, "request-token")) is None:
                await st.fail("no <request-token/>")
            token = base64.b64encode(os.urandom(24)).decode()
            tokens[user] = (token, 0)
            extra += ("<token xmlns='%s' expiry='2099-01-01T00:00:00Z' token='%s'/>"
                      % (NS_FAST, token))
            stats["full"] += 1
        else:
            await st.fail("unexpected mechanism %s" % mech)
        if from_attr != "%s@localhost" % user:
            await st.fail("FAST clients name themselves in the stream's from")
        jid = "%s@localhost/stub-%s" % (user, os.urandom(3).hex())
        resume = auth.find(q(NS_SM, "resume"))
        sm_id = None
        if resume is not None and not with_sm:
            await st.fail("<resume/> without SM offered")
        if resume is not None:
            sess = sessions.get(resume.get("previd"))
            h = int(resume.get("h", "-1"))
            refuse = os.environ.get("STUB_REFUSE_RESUME") == "1"
            if sess and sess["user"] == user and h == sess["sent"] and not refuse:
                sm_id = resume.get("previd")
                sent = sess["sent"]
                stats["resumed"] += 1
                extra += "<resumed xmlns='%s' h='0' previd='%s'/>" % (NS_SM, sm_id)
            else:
                why = "h %s, sent %s" % (h, sess and sess["sent"])
                extra += ("<failed xmlns='%s' h='0'><item-not-found xmlns='urn:ietf:params:"
                          "xml:ns:xmpp-stanzas'/><text>%s</text></failed>" % (NS_SM, why))
        if sm_id is None and not with_sm:
            bind = auth.find(q(NS_BIND2, "bind"))
            if bind is None or bind.find(q(NS_SM, "enable")) is not None:
                await st.fail("Bind 2 missing, or SM enabled without SM offered")
            sm_id = "none"
            sessions[sm_id] = {"user": user, "sent": 0}
            extra += "<bound xmlns='%s'/>" % NS_BIND2
        elif sm_id is None:
            bind = auth.find(q(NS_BIND2, "bind"))
            enable = bind.find(q(NS_SM, "enable")) if bind is not None else None
            if enable is None or enable.get("resume") not in ("true", "1"):
                await st.fail("Bind 2 without SM enable")
            sm_id = os.urandom(8).hex()
            sessions[sm_id] = {"user": user, "sent": 0}
            sent = 0
            extra += "<bound xmlns='%s'><enabled xmlns='%s' id='%s' resume='true'/></bound>" % (
                NS_BIND2, NS_SM, sm_id)
        await st.send("<success xmlns='%s'><additional-data>%s</additional-data>"
                      "<authorization-identifier>%s</authorization-identifier>%s</success>"
                      % (NS_SASL2, base64.b64encode(proof).decode(), jid, extra))
        while True:
            el = await st.next()
            if el.tag == q("jabber:client", "iq") and el.find(q(NS_ROSTER, "query")) is not None:
                await st.send("<iq type='result' id='%s'><query xmlns='%s'/></iq>"
                              % (el.get("id"), NS_ROSTER))
                sent += 1
                # An ack request: the client must answer with what it got.
                if with_sm:
                    await st.send("<r xmlns='%s'/>" % NS_SM)
            elif el.tag == q(NS_SM, "a"):
                if int(el.get("h")) != sent:
                    await st.fail("client h %s, sent %d" % (el.get("h"), sent))
            sessions[sm_id]["sent"] = sent
    except (EOFError, ConnectionError, asyncio.TimeoutError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(CERT, KEY)
    server = await asyncio.start_server(lambda r, w: serve(r, w, ctx), "127.0.0.1", 0)
    print("port %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

"""Stream management (XEP-0198) by hand: a RawStream client that counts the
stanzas it receives, acknowledges them when told to, and can lose its
connection abruptly (an RST, no closing stream tag, no TLS close_notify)."""

import base64
import socket
import struct
import xml.etree.ElementTree as ET

from natterlib import IO_TIMEOUT, NS_CLIENT, NS_SASL, StreamClosed, q

NS_SM = "urn:xmpp:sm:3"
STANZAS = {q(NS_CLIENT, "message"), q(NS_CLIENT, "presence"),
           q(NS_CLIENT, "iq")}


def sm(local):
    return q(NS_SM, local)


class SmClient:
    """A stream with stream management driven by the test.  h counts the
    stanzas received since <enable/> (or, after a resume, since the
    session began), as XEP-0198 has the client do."""

    def __init__(self, stream, name):
        self.stream = stream
        self.name = name
        self.h = 0
        self.counting = False
        self.sm_id = None
        self.requests = 0       # <r/> the server sent
        self.acks = []          # h of every <a/> the server sent

    async def send(self, data):
        await self.stream.send(data)

    async def next(self, timeout=IO_TIMEOUT, answer=True):
        """The next element; counts stanzas; answers the server's <r/>
        (when answer) and records its <a/>.  SM elements are returned
        too."""
        elem = await self.stream.next(timeout)
        if elem is None:
            raise StreamClosed("stream closed:\n%s" % self.stream.describe())
        if elem.tag in STANZAS and self.counting:
            self.h += 1
        elif elem.tag == sm("r"):
            self.requests += 1
            if answer:
                await self.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h))
        elif elem.tag == sm("a"):
            self.acks.append(int(elem.get("h")))
        return elem

    async def next_stanza(self, timeout=IO_TIMEOUT, answer=True):
        while True:
            elem = await self.next(timeout, answer)
            if elem.tag in STANZAS:
                return elem

    async def expect_sm(self, local, timeout=IO_TIMEOUT):
        """The next SM element, skipping stanzas and <r/>."""
        while True:
            elem = await self.next(timeout)
            if elem.tag == sm(local):
                return elem
            if elem.tag.startswith("{%s}" % NS_SM) and elem.tag != sm("r"):
                raise AssertionError("expected <%s/>, got %s" % (
                    local, ET.tostring(elem, "unicode")))

    async def enable(self, resume=True):
        await self.send("<enable xmlns='%s'%s/>" % (
            NS_SM, " resume='true'" if resume else ""))
        enabled = await self.expect_sm("enabled")
        self.sm_id = enabled.get("id")
        self.counting = True
        self.h = 0
        return enabled

    async def request_ack(self):
        """<r/>; returns the h of the <a/> that answers it."""
        await self.send("<r xmlns='%s'/>" % NS_SM)
        return int((await self.expect_sm("a")).get("h"))

    async def ack(self, h=None):
        await self.send("<a xmlns='%s' h='%d'/>" % (NS_SM,
                                                    self.h if h is None else h))

    def cut(self):
        """Loses the connection as a phone in a lift does: an RST."""
        transport = self.stream.writer.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
        transport.abort()


async def authenticated(net, server, name, source=None):
    """A TLS stream logged in as NAME (PLAIN), restarted; returns
    (stream, features after authentication)."""
    stream, _features = await net.raw_tls(server, source=source)
    token = base64.b64encode(("\0%s\0%s" % (name, name + "-secret")).encode())
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                      % (NS_SASL, token.decode()))
    await stream.expect(q(NS_SASL, "success"))
    await stream.open_stream(server.domain)
    return stream, await stream.features()


async def sm_login(net, server, name, resource="sm", resume=True,
                   source=None):
    """A bound session of NAME with stream management enabled."""
    stream, _ = await authenticated(net, server, name, source)
    await stream.bind(resource)
    client = SmClient(stream, name)
    client.jid = stream.jid
    client.enabled = await client.enable(resume)
    return client


async def sm_resume(net, server, old, source=None, h=None):
    """A new connection that resumes old's session; returns (client,
    answer element: <resumed/> or <failed/>)."""
    stream, _ = await authenticated(net, server, old.name, source)
    client = SmClient(stream, old.name)
    client.sm_id = old.sm_id
    client.h = old.h
    client.jid = getattr(old, "jid", None)
    await client.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (
        NS_SM, old.sm_id, old.h if h is None else h))
    while True:
        answer = await client.next()
        if answer.tag in (sm("resumed"), sm("failed")):
            break
    client.counting = answer.tag == sm("resumed")
    return client, answer


class CuttableProxy:
    """A TCP relay on 127.0.0.1 to a server port, for clients the test
    cannot reach into (Profanity): cut() resets every relayed connection
    at once (RST to both sides), as a network that vanishes does; new
    connections are relayed again after it."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.pairs = []
        self.server = None
        self.port = None
        self.connections = 0

    async def start(self):
        import asyncio
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader, writer):
        import asyncio
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port)
        self.connections += 1
        pair = (writer, up_writer)
        self.pairs.append(pair)

        async def pump(src, dst):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if not dst.transport.is_closing():
                    dst.close()
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self):
        for pair in self.pairs:
            for w in pair:
                sock = w.transport.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    except OSError:
                        pass
                w.transport.abort()
        self.pairs = []

    async def close(self):
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

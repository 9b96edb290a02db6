#!/usr/bin/python3
"""Idle memory per client with and without stream management (issue 13:
"idle memory per client must not grow by more than 1 KiB with SM enabled").

Starts natterd (NATTER_BUILD, a release build), logs in N clients over
STARTTLS + PLAIN, binds, sends initial presence, and (with --sm) enables
stream management with resumption, answering the server's ack requests
like a real client. Once every client is idle (natterd gives back idle
parsers and buffers after 2 s), natterd's RSS is read from /proc. The
difference from the RSS before the logins, divided by N, is the figure.

    NATTER_BUILD=build-rel bench/sm/idle_memory.py -n 2000
"""

import argparse
import asyncio
import base64
import os
import re
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "tests", "integration"))
from natterlib import NatterServer  # noqa: E402

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
          "version='1.0'>")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_until(reader, needle, buf):
    while needle not in buf[0]:
        data = await asyncio.wait_for(reader.read(65536), 30)
        if not data:
            raise RuntimeError("closed while waiting for %r: %r" % (needle, buf[0]))
        buf[0] += data
    i = buf[0].index(needle) + len(needle)
    got, buf[0] = buf[0][:i], buf[0][i:]
    return got


class Client:
    async def login(self, port, n, sm, src):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(src, 0))
        buf = [b""]
        self.writer.write(HEADER.encode())
        await read_until(self.reader, b"</stream:features>", buf)
        self.writer.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await read_until(self.reader, b"/>", buf)
        await self.writer.start_tls(ctx, server_hostname="localhost")
        buf = [b""]
        self.writer.write(HEADER.encode())
        await read_until(self.reader, b"</stream:features>", buf)
        token = base64.b64encode(b"\0u%d\0pw" % n).decode()
        self.writer.write(("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                           "mechanism='PLAIN'>%s</auth>" % token).encode())
        await read_until(self.reader, b"<success", buf)
        await read_until(self.reader, b">", buf)
        buf = [b""]
        self.writer.write(HEADER.encode())
        await read_until(self.reader, b"</stream:features>", buf)
        self.writer.write(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:"
                          b"xml:ns:xmpp-bind'/></iq>")
        await read_until(self.reader, b"</iq>", buf)
        self.writer.write(b"<presence/>")
        if sm:
            self.writer.write(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            await read_until(self.reader, b"<enabled", buf)
        self.buf = buf
        self.sm = sm
        self.task = asyncio.ensure_future(self.answer())

    async def answer(self):
        """Counts stanzas (roughly: top-level elements other than SM ones)
        and answers <r/> with the count, as a client does."""
        h = 0
        data = self.buf[0]
        while True:
            h += len(re.findall(rb"<(message|presence|iq)[ >/]", data))
            for _ in re.findall(rb"<r xmlns='urn:xmpp:sm:3'/>", data):
                self.writer.write(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % h)
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError):
                return
            if not data:
                return


async def measure(n, sm, settle):
    server = NatterServer({"log_level": "info", "workers": 2,
                           "limits": {"max_unauthenticated_per_address": 100000}})
    server.start()
    try:
        server.ctl("user", "add-bulk", "u", str(n), "localhost",
                   "--password-file", "-", input="pw\n", check=True)
        pid = server.proc.pid
        await asyncio.sleep(settle)
        before = rss_kib(pid)
        clients = []
        for i in range(0, n, 100):
            batch = [Client() for _ in range(min(100, n - i))]
            await asyncio.gather(*(c.login(server.c2s_port, i + j + 1, sm,
                                           "127.0.%d.%d" % ((i + j) // 250, (i + j) % 250 + 1))
                                   for j, c in enumerate(batch)))
            clients += batch
        await asyncio.sleep(settle)  # idle: parsers released, acks answered
        after = rss_kib(pid)
        for c in clients:
            c.writer.close()
        return before, after
    finally:
        server.stop()
        server.cleanup()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--settle", type=float, default=6)
    a = p.parse_args()
    results = {}
    for sm in (False, True):
        before, after = asyncio.run(measure(a.n, sm, a.settle))
        per = (after - before) * 1024 / a.n
        results[sm] = per
        print("%-7s %d clients: RSS %d -> %d KiB, %.0f bytes per idle client"
              % ("SM" if sm else "no SM", a.n, before, after, per))
    print("stream management adds %.0f bytes per idle client" %
          (results[True] - results[False]))


if __name__ == "__main__":
    main()

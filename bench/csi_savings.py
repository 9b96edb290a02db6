#!/usr/bin/python3
"""What client state indication (XEP-0352) saves a phone: bytes and writes
over one simulated hour of presence churn from 200 contacts (issue 13).

One natterd (one event loop), 200 contact clients and two sessions of the
same phone account, each with every contact in its roster:

  phone/csi    says <inactive/> at the start and <active/> / <inactive/>
               around its wake-ups (active 5 % of the hour by default);
  phone/plain  never speaks CSI (what a client without it gets).

Both receive exactly the same traffic (presence goes to every available
resource, messages to the bare JID go to both), so the difference is CSI
alone.  The hour is a seeded schedule of events, replayed in order and as
fast as the server answers, each event followed by its sender's round trip
to the server: every event is written in its own loop iteration, as when
they are minutes apart, so compressing time merges no writes.

The schedule (all in simulated time, seeded, --help for the knobs):
  - each contact changes presence (show, status, caps, idle) at random
    times, on average every --presence-every minutes; --offline-share of
    them also go unavailable for a while and come back;
  - --chats contacts write --messages messages each to the phone, every
    one preceded by a <composing/> chat state and followed by <active/>
    (XEP-0085);
  - the phone wakes --wakeups times, evenly spread, each wake-up lasting
    its share of --active-share of the hour.

Measured per phone session:
  writes       natterd's write/writev calls on that session's socket, from
               strace attached to natterd during the hour (ciphertext
               bytes: the sum of what those calls returned);
  bytes        plaintext XML bytes the phone received (client side);
  reads        the phone's reads that returned data (client side; timing
               dependent, for information);
  stanzas      presence and message stanzas received.

Run: NATTER_BUILD=build bench/csi_savings.py [--contacts 200] ...
Prints a Markdown table; --json FILE writes the figures.
"""

import argparse
import asyncio
import bisect
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" /
                       "integration"))

from natterlib import (NS_CLIENT, NatterServer, q, raw_login)  # noqa: E402

PASSWORD = "bench-secret"
NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
SHOWS = ["", "away", "xa", "dnd", "chat"]


class Peer:
    """A logged-in raw stream whose input a task drains all the time;
    barrier() is a ping round trip to the server."""

    def __init__(self, stream, name):
        self.stream = stream
        self.name = name
        self.bytes = 0
        self.reads = 0
        self.stanzas = 0
        self.counting = False
        self.waiting = {}
        self.next_id = 0
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self):
        s = self.stream
        while True:
            data = await s.reader.read(65536)
            if not data:
                return
            if self.counting:
                self.bytes += len(data)
                self.reads += 1
            s._feed(data)
            while s._queue:
                self._handle(s._queue.pop(0))

    def _handle(self, el):
        if el.tag == q(NS_CLIENT, "iq"):
            fut = self.waiting.pop(el.get("id"), None)
            if fut is not None:
                fut.set_result(el)
            elif el.get("type") in ("get", "set"):
                # Server pings and roster pushes want an answer.
                self.send("<iq type='result' id='%s'%s/>" % (
                    el.get("id"), " to='%s'" % el.get("from")
                    if el.get("from") else ""))
        elif el.tag == q(NS_CLIENT, "message") and el.get("id") in self.waiting:
            self.waiting.pop(el.get("id")).set_result(el)
        elif self.counting and el.tag in (q(NS_CLIENT, "presence"),
                                          q(NS_CLIENT, "message")):
            self.stanzas += 1

    async def synced(self, other, data):
        """other sends data; returns once natterd has handled it.  other
        follows it with a message to this peer, which it gets in order;
        nothing comes back to other, which a ping would cost it."""
        self.next_id += 1
        msg_id = "s%d" % self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = fut
        other.send(data + "<message to='%s@localhost/o' id='%s'><body>sync"
                   "</body></message>" % (self.name, msg_id))
        await asyncio.wait_for(fut, 30)

    def send(self, data):
        self.stream.writer.write(data.encode())

    async def barrier(self):
        self.next_id += 1
        iq_id = "b%d" % self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.waiting[iq_id] = fut
        self.send("<iq type='get' id='%s' to='localhost'><ping xmlns="
                  "'urn:xmpp:ping'/></iq>" % iq_id)
        await asyncio.wait_for(fut, 30)


def presence_xml(rng, contact, minute):
    """A presence as a modern client sends it: show, status, caps, idle."""
    show = rng.choice(SHOWS)
    parts = ["<presence>"]
    if show:
        parts.append("<show>%s</show>" % show)
    parts.append("<status>%s since %02d:%02d</status>" % (
        {"": "around", "away": "away", "xa": "gone home", "dnd": "meeting",
         "chat": "free to chat"}[show], minute // 60 + 9, minute % 60))
    parts.append("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                 "node='https://conversations.im' "
                 "ver='%s'/>" % ("q%027d=" % (contact * 7919 % 1000003)))
    if show in ("away", "xa"):
        parts.append("<idle xmlns='urn:xmpp:idle:1' "
                     "since='2026-12-04T%02d:%02d:00Z'/>"
                     % (minute // 60 + 9, minute % 60))
    parts.append("</presence>")
    return "".join(parts)


def schedule(args):
    """The hour as (time in seconds, kind, contact index, xml) events."""
    rng = random.Random(args.seed)
    hour = args.minutes * 60.0
    events = []
    for c in range(args.contacts):
        t = rng.expovariate(1.0 / (args.presence_every * 60))
        while t < hour:
            events.append((t, "presence", c,
                           presence_xml(rng, c, int(t // 60))))
            t += rng.expovariate(1.0 / (args.presence_every * 60))
    for c in rng.sample(range(args.contacts),
                        int(args.contacts * args.offline_share)):
        start = rng.uniform(0, hour * 0.8)
        back = start + rng.uniform(60, 900)
        events.append((start, "presence", c,
                       "<presence type='unavailable'/>"))
        if back < hour:
            events.append((back, "presence", c,
                           presence_xml(rng, c, int(back // 60))))
    for c in rng.sample(range(args.contacts), args.chats):
        for _ in range(args.messages):
            t = rng.uniform(15, hour - 5)
            events.append((t - 12, "chat", c, "composing"))
            events.append((t, "message", c, None))
            events.append((t + 1, "chat", c, "active"))
    window = hour * args.active_share / args.wakeups
    for i in range(args.wakeups):
        start = (i + 0.5) * hour / args.wakeups - window / 2
        events.append((start, "wake", -1, None))
        events.append((start + window, "sleep", -1, None))
    events.sort(key=lambda e: e[0])
    return events


def socket_fd(pid, server_port, client_port):
    """natterd's fd for the TCP connection from client_port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote = f[1], f[2]
            if int(local.split(":")[1], 16) == server_port and \
                    int(remote.split(":")[1], 16) == client_port:
                inodes.add(f[9])
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m and m.group(1) in inodes:
            return int(fd)
    raise RuntimeError("no fd of natterd for client port %d" % client_port)


CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\d+\.\d+)\s+(write|writev|sendmsg|sendto)"
                  r"\((\d+),")
RESULT = re.compile(r"=\s+(-?\d+)")
RESUMED = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+\d+\.\d+\s+<\.\.\. "
                     r"(write|writev|sendmsg|sendto) resumed>")


def count_writes(path, fds):
    """Per fd in an strace -f -ttt log: [write calls, bytes written, the
    wall-clock times of those calls]."""
    counts = {fd: [0, 0, []] for fd in fds}
    pending = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        m = CALL.match(line)
        if m:
            fd, when = int(m.group(4)), float(m.group(2))
            if line.rstrip().endswith("<unfinished ...>"):
                pending[m.group(1)] = (fd, when)
                continue
        else:
            m = RESUMED.match(line)
            if not m or m.group(1) not in pending:
                continue
            fd, when = pending.pop(m.group(1))
        r = RESULT.search(line.rsplit(")", 1)[-1] if ")" in line else line)
        if fd in counts and r and int(r.group(1)) > 0:
            counts[fd][0] += 1
            counts[fd][1] += int(r.group(1))
            counts[fd][2].append(when)
    return counts


def radio(write_times, marks, tail):
    """Seconds of the simulated hour a phone's radio stays in its
    high-power state, and how often it has to enter it, if every write
    keeps it there for tail seconds: each write happens during the event
    replayed last before it (marks: (wall time, simulated time), in
    order)."""
    walls = [w for w, _ in marks]
    sim = sorted(marks[max(0, bisect.bisect_right(walls, t) - 1)][1]
                 for t in write_times)
    on, wakeups, until = 0.0, 0, None
    for t in sim:
        if until is None or t > until:
            wakeups += 1
            on += tail
        else:
            on += t + tail - until
        until = t + tail
    return on, wakeups


async def run(args):
    server = NatterServer({
        "workers": 1,
        "log_level": "info",
        "limits": {"idle_timeout": 3600, "max_unauthenticated_per_address": 100},
    })
    server.start()
    try:
        server.ctl("user", "add-bulk", "c", str(args.contacts), "localhost",
                   "--password-file", "-", input=PASSWORD + "\n", check=True)
        for name in ("phone", "observer"):
            server.ctl("user", "add", name + "@localhost",
                       input=PASSWORD + "\n", check=True)
        port = server.c2s_port
        contacts = []
        for first in range(0, args.contacts, 25):
            streams = await asyncio.gather(*[
                raw_login(port, "c%d@localhost" % (i + 1), PASSWORD,
                          resource="desk")
                for i in range(first, min(first + 25, args.contacts))])
            contacts += [Peer(s, "c%d" % (first + k + 1))
                         for k, s in enumerate(streams)]
        observer = Peer(await raw_login(port, "observer@localhost", PASSWORD,
                                        resource="o"), "observer")
        phones = {}
        for mode in ("csi", "plain"):
            phones[mode] = Peer(await raw_login(port, "phone@localhost",
                                                PASSWORD, resource=mode),
                                "phone/" + mode)
        # Mutual subscriptions, then everyone available.
        first_phone = phones["csi"]
        for c in contacts:
            first_phone.send("<presence to='%s@localhost' type='subscribe'/>"
                             % c.name)
        await first_phone.barrier()
        for c in contacts:
            c.send("<presence to='phone@localhost' type='subscribed'/>"
                   "<presence to='phone@localhost' type='subscribe'/>")
        await asyncio.gather(*[c.barrier() for c in contacts])
        for c in contacts:
            first_phone.send("<presence to='%s@localhost' type='subscribed'/>"
                             % c.name)
        await first_phone.barrier()
        for p in phones.values():
            p.send("<presence/>")
            await p.barrier()
        for c in contacts:
            c.send("<presence/>")
        await asyncio.gather(*[c.barrier() for c in contacts])
        for p in phones.values():
            await p.barrier()

        events = schedule(args)
        pid = server.proc.pid
        fds = {mode: socket_fd(pid, port, p.stream.writer.get_extra_info(
            "sockname")[1]) for mode, p in phones.items()}
        trace = Path(server.root) / "strace.log"
        tracer = None
        if not args.no_strace:
            tracer = subprocess.Popen(
                ["strace", "-f", "-qq", "-ttt", "-s", "0", "-e", "signal=none",
                 "-e", "trace=write,writev,sendmsg,sendto",
                 "-o", str(trace), "-p", str(pid)])
            # Attached once a write to the phone shows in the log.
            deadline = time.monotonic() + 30
            while True:
                await phones["plain"].barrier()
                if trace.exists() and re.search(
                        r"write\w*\(%d," % fds["plain"], trace.read_text()):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("strace did not attach")
        for p in phones.values():
            await p.barrier()
        await observer.synced(phones["csi"], "<inactive xmlns='%s'/>" % NS_CSI)
        mark = trace.read_text().count("\n") if tracer else 0
        for p in phones.values():
            p.counting = True
        started = time.monotonic()
        n_msg = 0
        marks = []
        for t, kind, c, xml in events:
            marks.append((time.time(), t))
            if kind in ("wake", "sleep"):
                await observer.synced(phones["csi"], "<%s xmlns='%s'/>" % (
                    "active" if kind == "wake" else "inactive", NS_CSI))
            elif kind == "presence":
                contacts[c].send(xml)
                await contacts[c].barrier()
            elif kind == "chat":
                contacts[c].send(
                    "<message to='phone@localhost' type='chat'><%s xmlns='%s'"
                    "/></message>" % (xml, NS_CHATSTATES))
                await contacts[c].barrier()
            else:
                n_msg += 1
                contacts[c].send(
                    "<message to='phone@localhost' type='chat' id='m%d'>"
                    "<body>message %d of the hour</body><active xmlns='%s'/>"
                    "<request xmlns='urn:xmpp:receipts'/></message>"
                    % (n_msg, n_msg, NS_CHATSTATES))
                await contacts[c].barrier()
        # The end of the hour: the phone wakes once more and gets the rest.
        marks.append((time.time(), args.minutes * 60.0))
        phones["csi"].send("<active xmlns='%s'/>" % NS_CSI)
        for p in phones.values():
            await p.barrier()
            p.counting = False
        elapsed = time.monotonic() - started
        writes = {}
        if tracer:
            tracer.terminate()
            tracer.wait(10)
            lines = trace.read_text(errors="replace").splitlines()[mark:]
            trace.write_text("\n".join(lines) + "\n")
            counts = count_writes(trace, fds.values())
            writes = {mode: counts[fd][:2] + list(radio(
                counts[fd][2], marks, args.radio_tail)) for mode, fd in fds.items()}
        return events, phones, writes, elapsed
    finally:
        server.stop()
        server.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=60,
                    help="simulated length of the run")
    ap.add_argument("--presence-every", type=float, default=8,
                    help="mean minutes between a contact's presence changes")
    ap.add_argument("--offline-share", type=float, default=0.1,
                    help="share of contacts that go offline once")
    ap.add_argument("--chats", type=int, default=5,
                    help="contacts that write to the phone")
    ap.add_argument("--messages", type=int, default=4,
                    help="messages each of them writes")
    ap.add_argument("--active-share", type=float, default=0.05)
    ap.add_argument("--wakeups", type=int, default=12)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--radio-tail", type=float, default=10,
                    help="seconds a write keeps a phone's radio in its "
                    "high-power state")
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    events, phones, writes, elapsed = asyncio.run(run(args))
    kinds = {}
    for e in events:
        kinds[e[1]] = kinds.get(e[1], 0) + 1
    result = {"parameters": vars(args), "events": kinds,
              "replay_seconds": round(elapsed, 1), "phones": {}}
    for mode, p in phones.items():
        w = writes.get(mode, [None] * 4)
        result["phones"][mode] = {
            "stanzas": p.stanzas, "bytes": p.bytes, "reads": p.reads,
            "writes": w[0], "tls_bytes": w[1],
            "radio_seconds": None if w[2] is None else round(w[2]),
            "radio_wakeups": w[3]}
    print("events: %s; replayed in %.1f s" % (
        ", ".join("%s %d" % kv for kv in sorted(kinds.items())), elapsed))
    print()
    print("| phone | stanzas | XML bytes | natterd writes | TLS bytes "
          "| client reads | radio on (s) | radio wake-ups |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in ("plain", "csi"):
        r = result["phones"][mode]
        print("| %s | %d | %d | %s | %s | %d | %s | %s |" % ((
            "without CSI" if mode == "plain" else "with CSI", r["stanzas"],
            r["bytes"]) + tuple("–" if v is None else v for v in (
                r["writes"], r["tls_bytes"])) + (r["reads"],) + tuple(
                "–" if v is None else v for v in (
                    r["radio_seconds"], r["radio_wakeups"]))))
    a, b = result["phones"]["plain"], result["phones"]["csi"]

    def ratio(x, y):
        return "%.1f×" % (x / y) if x and y else "n/a"
    print("| ratio | %s | %s | %s | %s | %s | %s | %s |" % (
        ratio(a["stanzas"], b["stanzas"]), ratio(a["bytes"], b["bytes"]),
        ratio(a["writes"], b["writes"]), ratio(a["tls_bytes"], b["tls_bytes"]),
        ratio(a["reads"], b["reads"]),
        ratio(a["radio_seconds"], b["radio_seconds"]),
        ratio(a["radio_wakeups"], b["radio_wakeups"])))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

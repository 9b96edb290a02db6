"""A throw-away DNS server for tests: dnsmasq on 127.0.0.1 serving only the
records a test gives it (no upstream, no /etc/hosts).

    dns = Dnsmasq(
        srv=[("_xmpp-server._tcp.fed-a.nattertest", "srv.fed-a.nattertest", 5269),
             ("_xmpps-server._tcp.fed-a.nattertest", "srv.fed-a.nattertest", 5270, 0, 5),
             ("_xmpp-server._tcp.nofed.nattertest", ".", 0)],   # "." = not offered
        hosts={"srv.fed-a.nattertest": ["127.0.0.1", "::1"]})
    dns.start()
    ... dns.resolver ...            # "127.0.0.1@PORT" for dns.resolver / --resolver
    dns.restart(srv=[...], hosts={...})   # same port, new records
    dns.stop()

Names must be under a TLD that libunbound does not answer itself (not
.test, .invalid, .localhost: see docs/dns.md); every name under `domains`
(default: nattertest) that has no record gets NXDOMAIN, not "refused".
"""

import grp
import os
import pwd
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
START_TIMEOUT = 10.0


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port for dnsmasq")


def _query(name, qtype=1):
    """A minimal DNS query packet (id, RD set) for name."""
    qid = random.randrange(1 << 16)
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return qid, header + qname + b"\0" + struct.pack(">HH", qtype, 1)


class Dnsmasq:
    def __init__(self, srv=(), hosts=None, ttl=300, domains=("nattertest",)):
        self.srv = list(srv)
        self.hosts = dict(hosts or {})
        self.ttl = ttl
        self.domains = tuple(domains)
        self.port = None
        self.proc = None
        self._dir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))
        self._log = self._dir / "dnsmasq.log"

    @property
    def resolver(self):
        return "127.0.0.1@%d" % self.port

    def _args(self):
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        args = [DNSMASQ, "--keep-in-foreground", "--log-facility=-",
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--no-poll", "--pid-file=", "--bind-interfaces",
                "--listen-address=127.0.0.1", "--port=%d" % self.port,
                "--user=%s" % user, "--group=%s" % group,
                "--local-ttl=%d" % self.ttl, "--cache-size=0"]
        args += ["--local=/%s/" % d for d in self.domains]
        for rec in self.srv:
            name, target, port = rec[0], rec[1], rec[2]
            priority = rec[3] if len(rec) > 3 else 0
            weight = rec[4] if len(rec) > 4 else 5
            if target in (".", None):
                # No target: dnsmasq answers the single record ".".
                args.append("--srv-host=%s" % name)
            else:
                args.append("--srv-host=%s,%s,%d,%d,%d"
                            % (name, target, port, priority, weight))
        for name, addrs in self.hosts.items():
            args.append("--host-record=%s,%s" % (name, ",".join(addrs)))
        return args

    def start(self):
        if self.port is None:
            self.port = _free_port()
        self._logf = open(self._log, "ab")
        self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self):
        """Waits until dnsmasq answers a query on its port."""
        deadline = time.monotonic() + START_TIMEOUT
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError("dnsmasq exited (%s):\n%s"
                                         % (self.proc.returncode, self.log))
                qid, packet = _query("ready.%s" % self.domains[0])
                s.sendto(packet, ("127.0.0.1", self.port))
                try:
                    data = s.recv(512)
                except OSError:
                    continue
                if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == qid:
                    return
        raise AssertionError("dnsmasq did not answer within %.0fs:\n%s"
                             % (START_TIMEOUT, self.log))

    @property
    def log(self):
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._logf.close()

    def restart(self, srv=None, hosts=None):
        """Serves new records on the same port (dnsmasq reads --srv-host
        and --host-record only when it starts)."""
        self.stop()
        if srv is not None:
            self.srv = list(srv)
        if hosts is not None:
            self.hosts = dict(hosts)
        return self.start()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

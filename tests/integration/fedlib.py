"""Server-to-server federation test infrastructure (issue 6): a DNS server,
a test CA, and two real third-party XMPP servers, Debian's Prosody 0.12 and
ejabberd 23.01, each in a temporary directory of its own, on loopback only,
never the system instances (their files under /etc, /var and /run are not
used; nothing on the machine is changed).

Names and addresses
  Every test domain lives under the TLD `fedtest`, which libunbound
  (Prosody's resolver) does not treat as special-use (.test, .local,
  .example, .invalid, ... are answered locally by unbound and never reach a
  forwarder).  Each server has an address of its own in 127.0.0.0/8 and
  listens for s2s on port 5269 there:

      natter-a.fedtest   127.0.0.2     (NATTER_A)
      natter-b.fedtest   127.0.0.3     (NATTER_B)
      prosody.fedtest    127.0.0.4     (PROSODY)
      ejabberd.fedtest   127.0.0.5     (EJABBERD)

  Each peer also offers chat rooms (XEP-0045) on conference.<its domain>
  (MUC_SERVICES, server.muc_domain): Prosody a "muc" Component, whose new
  rooms stay locked until the owner submits the instant-room form
  (XEP-0045 10.1.2), ejabberd mod_muc.  The service domains have DNS
  records like the servers' own (below), pointing at the peer's address,
  and are named in the peer's certificate (see TestCA), since a service
  links to other servers under its own name.

  c2s listeners are on 127.0.0.1 and a free port (server.c2s_port), which is
  what natterlib.Net.login dials, so `net.login(prosody, jid, password,
  mechanism=prosody.sasl_mechanism)` works as for natterd.

Dnsmasq (fixture `dns`, session)
  dnsmasq on 127.53.0.1 port 53 (UDP and TCP), authoritative for
  `fedtest` only: unknown names are NXDOMAIN, nothing is forwarded
  anywhere.  Port 53 rather than a free port because ejabberd resolves SRV
  targets through libc (see Ejabberd below), which knows no other port;
  Dnsmasq(port=0) takes a free port where that does not matter.  Queries
  are logged (--log-queries) to a file the tests read.  The
  standard records (standard_records()) give every domain D above
      _xmpp-server._tcp.D  SRV 0 0 5269 s2s.D.
      s2s.D                A   <its address>
  and deliberately NO address record for D itself: a server that reaches D
  has used the SRV record.  The peers' chat services get the same pair,
  s2s.conference.<peer> with the peer's address.  Records are changed with set_host()/add_srv()/
  remove_srv()/... followed by apply() (dnsmasq is restarted on the same
  port; apply() returns once the new records are served), and reset()
  goes back to the standard set.  Tests that change records must call
  dns.reset() at the end (or use `with dns.changed(): ...`).  TTL is 0, so
  no resolver caches an answer.
      dns.resolver          "127.53.0.1@53" (unbound's forwarder syntax;
                            what natter's resolver setting will take)
      dns.address/.port
      dns.log_mark()        a position in the query log
      dns.queries(since)    [(qtype, name), ...] asked since the mark
      dns.wait_for_query(qtype, name, since=mark)
      dns.query(name, qtype) our own lookup: (rcode, [answers])

TestCA (fixture `test_ca`, session)
  An openssl-made CA.  ca.cert_for(domain) -> CertPair (cached) with
  .cert, .key, .chain (cert + CA), .combined (cert + key, for ejabberd),
  signed by the CA with subjectAltName DNS:<domain> (xmpp_addr=True adds
  the id-on-xmppAddr otherName, srv_id=True the _xmpp-server SRV-ID).
  Certificates that must NOT be accepted for a domain:
      ca.self_signed(domain)      self-signed, right name
      ca.untrusted(domain)        right name, signed by another CA
      ca.wrong_name(domain)       signed by the test CA for another name
      ca.expired(domain)          signed by the test CA, expired
  ca.ca_file is the PEM every server trusts.  Prosody and ejabberd get
  (server.cert) a certificate naming both their domain and their chat
  service, conference.<domain>: natter, requiring certificates, checks the
  service's name when it links to it, and so does ejabberd when the
  service links to natter without dialback (SASL EXTERNAL only; without
  the name, its conference service cannot reach natter at all).  Prosody
  would fall back to dialback there.

Prosody (fixture `prosody`, session) and Ejabberd (fixture `ejabberd`,
session)
  Started once per session against `dns` and `test_ca`; both require TLS on
  s2s and, by default, authenticate peers by certificate only:
      Prosody(secure_auth=True, dialback=True): s2s_secure_auth = true
          (dialback may still run, but only over a verified certificate);
          secure_auth=False accepts dialback over an unverifiable one.
      Ejabberd(dialback=False): mod_s2s_dialback is not loaded, so a peer
          must present a valid certificate (SASL EXTERNAL); dialback=True
          loads it.
  How they find their peers: Prosody through lua-unbound forwarding to
  dnsmasq (`unbound = { forward = { "127.53.0.1@53" } }`).  ejabberd looks
  up SRV with Erlang's inet_res (ERL_INETRC names dnsmasq) but the SRV
  targets' addresses with libc's getaddrinfo, so it runs in a private mount
  namespace (unshare -m, needs root) where /etc/resolv.conf, /etc/hosts and
  /etc/nsswitch.conf are bind-mounted files of its own naming dnsmasq.
  Per test:
      server.add_user(name, password=None) -> bare JID (password defaults
          to NAME-secret, see password_of); idempotent.  Use fresh names
          per test (unique_name("alice")): rosters persist in a session.
      server.domain, .address, .s2s_port, .c2s_port, .sasl_mechanism
      server.log, .log_mark(), .wait_for_log(needle, since=...),
      server.log_tail(lines)
      with server.configured(**options): ...  restarts with other options
          (secure_auth, dialback, cert=CertPair, extra_modules) and
          restores them after.  extra_modules is Lua list entries for
          Prosody's modules_enabled ('"pep";'), YAML entries under
          ejabberd's modules: (indented two spaces).
  fed_connect(net, server, name) logs a slixmpp session in (with an
  imlib.Inbox, automatic subscription answers off, like imlib.connect).
  diagnose(*servers) wraps a test body so that a failure carries the
  servers' log tails and the DNS query log.

For natter's own s2s configuration (the lead's tests):
      natter_identity(test_ca, dns, NATTER_A) -> dict with domain, address,
          s2s_port, cert, key, ca_file, resolver
  (check_free(address, port) tells whether 5269 is free on the address.)

Debugging: NATTER_KEEP=1 keeps the servers' directories (configs, logs).

Nothing here sleeps to synchronise: readiness and log lines are polled with
a deadline.
"""

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import string
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dirlib import free_port, run
from imlib import Inbox, password_of, roster_get

DATA = Path(__file__).resolve().parent / "data"

START_TIMEOUT = float(os.environ.get("NATTER_FED_START_TIMEOUT", 60))
STOP_TIMEOUT = 20.0
CMD_TIMEOUT = 60

TLD = "fedtest"
NATTER_A = "natter-a.fedtest"
NATTER_B = "natter-b.fedtest"
PROSODY = "prosody.fedtest"
EJABBERD = "ejabberd.fedtest"
ADDRESSES = {
    NATTER_A: "127.0.0.2",
    NATTER_B: "127.0.0.3",
    PROSODY: "127.0.0.4",
    EJABBERD: "127.0.0.5",
}
# The peers' chat services (XEP-0045): Prosody's muc component and
# ejabberd's mod_muc, each on the peer's own address and s2s port.
MUC_SERVICES = {
    PROSODY: "conference." + PROSODY,
    EJABBERD: "conference." + EJABBERD,
}
S2S_PORT = 5269
# dnsmasq's address and port.  Port 53 because ejabberd resolves SRV
# targets with libc's getaddrinfo, and libc talks to port 53 only (see
# Ejabberd); the address is one nothing else on a Linux machine uses
# (systemd-resolved has 127.0.0.53 and 127.0.0.54).
DNS_ADDRESS = "127.53.0.1"
DNS_PORT = 53
SRV_SERVER = "_xmpp-server._tcp"
SRV_CLIENT = "_xmpp-client._tcp"
# The name dnsmasq answers to say which set of records it serves.
GENERATION_NAME = "_generation.fedtest"

DNSMASQ = "/usr/sbin/dnsmasq"
PROSODY_BIN = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
ERL = "/usr/bin/erl"
UNSHARE = "/usr/bin/unshare"
ERL_LIBS = "/usr/lib/x86_64-linux-gnu"


def require(path, package):
    if not Path(path).exists():
        raise AssertionError(
            "%s is missing: install %s (scripts/deps-test.txt)"
            % (path, package))


def check_free(address, port, udp=False):
    """True if a TCP listener (and with udp, a UDP socket) could bind
    address:port right now."""
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def require_free(address, port, who, udp=False):
    if not check_free(address, port, udp):
        raise AssertionError(
            "%s: %s:%d is in use (another server? a leftover test run? "
            "`ss -ltnp` tells)" % (who, address, port))


def can_connect(address, port, timeout=1.0):
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(text, lines=60):
    return "".join(text.splitlines(True)[-lines:])


def read_text(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def unique_name(prefix="user"):
    """A fresh local part (session-scoped servers keep rosters)."""
    return "%s-%s" % (prefix, "".join(
        random.choice(string.ascii_lowercase + string.digits)
        for _ in range(8)))


def _poll(condition, what, timeout, describe=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0fs\n%s"
                                 % (what, timeout, describe()))
        time.sleep(0.05)  # poll interval, not synchronisation


def _stop_process(proc, what):
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the status."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("%s ignored SIGTERM for %.0fs"
                             % (what, STOP_TIMEOUT))


# ------------------------------------------------------------------ DNS ---

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15,
         "TXT": 16, "AAAA": 28, "SRV": 33}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _decode_name(packet, offset):
    labels = []
    end = None
    for _ in range(128):
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            continue
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset:offset + length].decode("ascii"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def dns_query(address, port, name, qtype="A", timeout=2.0):
    """One UDP query; returns (rcode name, [answer]) where an answer is an
    address (A/AAAA), (priority, weight, port, target) (SRV), a text (TXT)
    or a name (CNAME)."""
    qid = random.randrange(1 << 16)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + \
        _encode_name(name) + struct.pack(">HH", TYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        # Connected, so that a closed port is an immediate
        # ConnectionRefusedError rather than a timeout.
        s.connect((address, port))
        s.send(packet)
        while True:
            reply = s.recv(4096)
            if struct.unpack(">H", reply[:2])[0] == qid:
                break
    _, flags, qdcount, ancount, _, _ = struct.unpack(">HHHHHH", reply[:12])
    offset = 12
    for _ in range(qdcount):
        _, offset = _decode_name(reply, offset)
        offset += 4
    answers = []
    for _ in range(ancount):
        _, offset = _decode_name(reply, offset)
        rtype, _, _, rdlen = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        rdata = reply[offset:offset + rdlen]
        if rtype == TYPES["A"]:
            answers.append(socket.inet_ntoa(rdata))
        elif rtype == TYPES["AAAA"]:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        elif rtype == TYPES["SRV"]:
            prio, weight, port_ = struct.unpack(">HHH", rdata[:6])
            target, _ = _decode_name(reply, offset + 6)
            answers.append((prio, weight, port_, target))
        elif rtype == TYPES["TXT"]:
            texts, i = [], 0
            while i < len(rdata):
                texts.append(rdata[i + 1:i + 1 + rdata[i]].decode())
                i += 1 + rdata[i]
            answers.append("".join(texts))
        elif rtype == TYPES["CNAME"]:
            answers.append(_decode_name(reply, offset)[0])
        offset += rdlen
    return RCODES.get(flags & 0xF, str(flags & 0xF)), answers


@dataclass
class Srv:
    name: str            # e.g. _xmpp-server._tcp.prosody.fedtest
    target: str          # "" or "." means "no service here" (RFC 2782)
    port: int = S2S_PORT
    priority: int = 0
    weight: int = 0


def standard_records():
    """(hosts, srvs): SRV -> s2s.D:5269 and s2s.D -> address for every
    test domain, and no address record for the domains themselves."""
    hosts = {}
    srvs = []
    for domain, address in ADDRESSES.items():
        hosts["s2s." + domain] = [address]
        srvs.append(Srv("%s.%s" % (SRV_SERVER, domain), "s2s." + domain))
    # A peer's chat service is published like a domain of its own, served
    # by the peer's address (docs/dns.md asks the same of natter's).
    for domain, service in MUC_SERVICES.items():
        hosts["s2s." + service] = [ADDRESSES[domain]]
        srvs.append(Srv("%s.%s" % (SRV_SERVER, service), "s2s." + service))
    return hosts, srvs


class Dnsmasq:
    """dnsmasq serving the `fedtest` zone; see the module docstring."""

    def __init__(self, address=DNS_ADDRESS, port=DNS_PORT, ttl=0):
        require(DNSMASQ, "dnsmasq-base")
        if port == 0:
            port = free_port(udp_too=True)
        self.root = Path(tempfile.mkdtemp(prefix="natter-dns-"))
        self.address = address
        self.port = port
        self.ttl = ttl
        self.log_path = self.root / "dnsmasq.log"
        self.proc = None
        self.generation = 0
        self.hosts, self.srvs = standard_records()
        self.txts = {}
        self.cnames = {}
        self._out = None

    # -- records ----------------------------------------------------------

    @property
    def resolver(self):
        """unbound's forwarder syntax, "127.0.0.1@PORT"."""
        return "%s@%d" % (self.address, self.port)

    def set_host(self, name, *addresses):
        """A records for name (replacing any); no addresses removes it."""
        if addresses:
            self.hosts[name] = list(addresses)
        else:
            self.hosts.pop(name, None)

    def add_srv(self, domain, target, port=S2S_PORT, priority=0, weight=0,
                service=SRV_SERVER):
        self.srvs.append(Srv("%s.%s" % (service, domain), target, port,
                             priority, weight))

    def remove_srv(self, domain, service=SRV_SERVER):
        name = "%s.%s" % (service, domain)
        self.srvs = [s for s in self.srvs if s.name != name]

    def set_srv(self, domain, target, port=S2S_PORT, priority=0, weight=0,
                service=SRV_SERVER):
        """Replaces domain's SRV records by one record."""
        self.remove_srv(domain, service)
        self.add_srv(domain, target, port, priority, weight, service)

    def set_txt(self, name, text):
        self.txts[name] = text

    def set_cname(self, name, target):
        self.cnames[name] = target

    def reset(self):
        """Back to standard_records() (and restarted)."""
        self.hosts, self.srvs = standard_records()
        self.txts = {}
        self.cnames = {}
        self.apply()

    @contextlib.contextmanager
    def changed(self):
        """with dns.changed(): set records, dns.apply(), test; the standard
        records are back afterwards."""
        try:
            yield self
        finally:
            self.reset()

    def _args(self):
        args = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null",
                "--port=%d" % self.port,
                "--listen-address=%s" % self.address, "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--no-poll",
                "--local=/%s/" % TLD, "--domain-needed",
                "--local-ttl=%d" % self.ttl, "--cache-size=0",
                "--pid-file=%s" % (self.root / "dnsmasq.pid"),
                "--log-queries", "--log-facility=%s" % self.log_path,
                "--txt-record=%s,%d" % (GENERATION_NAME, self.generation)]
        if os.geteuid() == 0:
            # Stay root: dnsmasq would drop to 'nobody', who may not write
            # the log in our 0700 directory.
            args += ["--user=root", "--group=root"]
        for name, addresses in self.hosts.items():
            args.append("--host-record=%s,%s" % (name, ",".join(addresses)))
        for srv in self.srvs:
            if srv.target in ("", "."):
                args.append("--srv-host=%s" % srv.name)
            else:
                args.append("--srv-host=%s,%s,%d,%d,%d" % (
                    srv.name, srv.target, srv.port, srv.priority,
                    srv.weight))
        for name, text in self.txts.items():
            args.append("--txt-record=%s,%s" % (name, text))
        for name, target in self.cnames.items():
            args.append("--cname=%s,%s" % (name, target))
        return args

    # -- lifecycle --------------------------------------------------------

    def start(self):
        assert self.proc is None, "dnsmasq already running"
        if self.generation == 0:
            require_free(self.address, self.port, "dnsmasq", udp=True)
        self.generation += 1
        self._out = open(self.root / "dnsmasq.out", "ab")
        self.proc = subprocess.Popen(
            self._args(), stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=self._out, start_new_session=True)
        want = str(self.generation)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    "dnsmasq exited with status %s:\n%s\n%s"
                    % (self.proc.returncode,
                       read_text(self.root / "dnsmasq.out"), self.log))
            try:
                rcode, answers = self.query(GENERATION_NAME, "TXT",
                                            timeout=0.5)
            except OSError:
                return False
            return rcode == "NOERROR" and answers == [want]
        _poll(ready, "dnsmasq on %s" % self.resolver, START_TIMEOUT,
              lambda: self.log)
        return self

    def stop(self):
        if self.proc is None:
            return
        try:
            _stop_process(self.proc, "dnsmasq")
        finally:
            self.proc = None
            self._out.close()

    def apply(self):
        """Serves the current records (restarts dnsmasq on its port)."""
        self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- queries ----------------------------------------------------------

    def query(self, name, qtype="A", timeout=2.0):
        return dns_query(self.address, self.port, name, qtype, timeout)

    @property
    def log(self):
        return read_text(self.log_path)

    def log_mark(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def queries(self, since=0):
        """[(qtype, name)] that clients asked since the mark (our own
        generation probes left out), in order."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            # "... dnsmasq[PID]: query[SRV] _xmpp-server._tcp.x from 127.0.0.1"
            start = line.find(" query[")
            if start < 0:
                continue
            rest = line[start + 7:]
            qtype, _, rest = rest.partition("] ")
            name = rest.split(" ", 1)[0]
            if name != GENERATION_NAME:
                found.append((qtype, name))
        return found

    def wait_for_query(self, qtype, name, since=0, timeout=10.0):
        return _poll(lambda: (qtype, name) in self.queries(since),
                     "dnsmasq query %s %s" % (qtype, name), timeout,
                     lambda: "queries since the mark: %r"
                     % self.queries(since))


# ------------------------------------------------------------------ TLS ---

@dataclass
class CertPair:
    domain: str
    cert: Path        # the certificate alone
    key: Path
    chain: Path       # certificate then CA certificate
    combined: Path    # certificate then key (ejabberd's certfiles)


OPENSSL_CA_CONF = """\
[ca]
default_ca = test_ca
[test_ca]
dir = {root}
database = {root}/index.txt
new_certs_dir = {root}/issued
serial = {root}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
"""


class TestCA:
    """An openssl-made CA for the fedtest domains; see the module
    docstring."""

    __test__ = False   # not a pytest test class

    def __init__(self, name="Natter Federation Test CA"):
        self.root = Path(tempfile.mkdtemp(prefix="natter-ca-"))
        self.cert, self.key = self._make_ca(self.root / "ca", name)
        self._other = None
        self._issued = {}
        self._count = 0

    @property
    def ca_file(self):
        return self.cert

    @staticmethod
    def _make_ca(directory, name):
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca.pem", directory / "ca.key"
        run(["openssl", "req", "-x509", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "7",
             "-subj", "/O=Natter tests/CN=%s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash"])
        return cert, key

    def _slot(self, label):
        self._count += 1
        directory = self.root / ("%03d-%s" % (self._count, label))
        directory.mkdir()
        return directory

    @staticmethod
    def _san(names, xmpp_addr, srv_id, dns_id=True):
        parts = ["DNS:%s" % n for n in names] if dns_id else []
        for n in names:
            if xmpp_addr:
                parts.append("otherName:1.3.6.1.5.5.7.8.5;UTF8:%s" % n)
            if srv_id:
                parts.append("otherName:1.3.6.1.5.5.7.8.7;IA5STRING:"
                             "_xmpp-server.%s" % n)
        return ",".join(parts)

    def _request(self, directory, cn, san):
        key, csr = directory / "key.pem", directory / "req.csr"
        ext = directory / "ext.cnf"
        ext.write_text("basicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n"
                       "subjectAltName=%s\n" % san)
        run(["openssl", "req", "-new", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=%s" % cn])
        return key, csr, ext

    def _finish(self, domain, directory, cert, key, issuer_cert):
        chain = directory / "chain.pem"
        chain.write_text(cert.read_text() + issuer_cert.read_text())
        combined = directory / "combined.pem"
        combined.write_text(cert.read_text() + key.read_text())
        for path in (key, combined):
            path.chmod(0o600)
        return CertPair(domain, cert, key, chain, combined)

    def issue(self, domain, *, names=None, xmpp_addr=False, srv_id=False,
              ca=None, days=3, label=None, dns_id=True):
        """A new certificate for domain, with subjectAltName DNS: for
        names (default [domain]), signed by this CA (or ca=(cert, key))."""
        names = names or [domain]
        ca_cert, ca_key = ca or (self.cert, self.key)
        directory = self._slot(label or domain)
        key, csr, ext = self._request(directory, names[0],
                                      self._san(names, xmpp_addr, srv_id, dns_id))
        cert = directory / "cert.pem"
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert),
             "-CAkey", str(ca_key), "-CAcreateserial", "-days", str(days),
             "-extfile", str(ext), "-out", str(cert)])
        return self._finish(domain, directory, cert, key, ca_cert)

    def cert_for(self, domain):
        """The valid certificate of domain (made once, then cached)."""
        if domain not in self._issued:
            self._issued[domain] = self.issue(domain)
        return self._issued[domain]

    # -- certificates that must be refused ---------------------------------

    def self_signed(self, domain):
        directory = self._slot("selfsigned-" + domain)
        cert, key = directory / "cert.pem", directory / "key.pem"
        run(["openssl", "req", "-x509", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "3",
             "-subj", "/CN=%s" % domain,
             "-addext", "subjectAltName=DNS:%s" % domain])
        return self._finish(domain, directory, cert, key, cert)

    @property
    def other_ca(self):
        """(cert, key) of a CA nobody trusts."""
        if self._other is None:
            self._other = self._make_ca(self.root / "other-ca",
                                        "Some Other CA")
        return self._other

    def untrusted(self, domain):
        return self.issue(domain, ca=self.other_ca,
                          label="untrusted-" + domain)

    def wrong_name(self, domain, other="wrong-name.fedtest"):
        return self.issue(domain, names=[other], label="wrongname-" + domain)

    def expired(self, domain):
        """Signed by the test CA, valid for a day two years ago."""
        directory = self._slot("expired-" + domain)
        key, csr, ext = self._request(directory, domain,
                                      self._san([domain], False, False))
        (directory / "issued").mkdir()
        (directory / "index.txt").write_text("")
        (directory / "serial").write_text("%016X\n" % random.getrandbits(63))
        conf = directory / "ca.cnf"
        conf.write_text(OPENSSL_CA_CONF.format(root=directory))
        cert = directory / "cert.pem"
        run(["openssl", "ca", "-batch", "-config", str(conf), "-notext",
             "-cert", str(self.cert), "-keyfile", str(self.key),
             "-startdate", time.strftime("%Y%m%d%H%M%SZ",
                                         time.gmtime(time.time()
                                                     - 2 * 365 * 86400)),
             "-enddate", time.strftime("%Y%m%d%H%M%SZ",
                                       time.gmtime(time.time()
                                                   - 729 * 86400)),
             "-extfile", str(ext), "-in", str(csr), "-out", str(cert)])
        return self._finish(domain, directory, cert, key, self.cert)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------- XMPP servers ---

class PeerServer:
    """What Prosody and Ejabberd share: directory, ports, log, accounts,
    reconfiguration."""

    name = "server"
    sasl_mechanism = "SCRAM-SHA-1"

    def __init__(self, dns, ca, domain, address, s2s_port, cert, options):
        self.dns = dns
        self.ca = ca
        self.domain = domain
        self.address = address or ADDRESSES[domain]
        self.s2s_port = s2s_port
        self.c2s_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="natter-%s-" % self.name))
        self.proc = None
        self.options = dict(options)
        self.options["cert"] = cert
        self._users = {}
        self._out = None
        self._cert = None

    # -- log ----------------------------------------------------------------

    @property
    def log_path(self):
        raise NotImplementedError

    @property
    def log(self):
        return read_text(self.log_path) + self._extra_log()

    def _extra_log(self):
        return ""

    def log_tail(self, lines=60):
        return tail(self.log, lines)

    def log_mark(self):
        return len(read_text(self.log_path))

    def wait_for_log(self, needle, since=0, timeout=10.0):
        return _poll(lambda: needle in read_text(self.log_path)[since:],
                     "%s log line %r" % (self.name, needle), timeout,
                     lambda: self.log_tail())

    async def await_log(self, needle, since=0, timeout=10.0):
        return await asyncio.get_running_loop().run_in_executor(
            None, self.wait_for_log, needle, since, timeout)

    # -- lifecycle ----------------------------------------------------------

    @property
    def muc_domain(self):
        """The chat service's domain (conference.DOMAIN)."""
        return "conference." + self.domain

    @property
    def cert(self):
        """The certificate given, or one from the test CA naming both the
        domain and its chat service: the service links to other servers
        under its own name, and natter (like any server requiring
        certificates) checks that name in the SAN."""
        if self.options["cert"]:
            return self.options["cert"]
        if self._cert is None:
            self._cert = self.ca.issue(
                self.domain, names=[self.domain, self.muc_domain],
                label="peer-" + self.domain)
        return self._cert

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self, what):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited (status %s) %s:\n%s"
                                 % (self.name, self.proc.returncode, what,
                                    self.log_tail(80)))

    def _wait_ports(self):
        def ready():
            self._check_alive("while starting")
            return can_connect("127.0.0.1", self.c2s_port) and \
                can_connect(self.address, self.s2s_port)
        _poll(ready, "%s listening on 127.0.0.1:%d and %s:%d"
              % (self.name, self.c2s_port, self.address, self.s2s_port),
              START_TIMEOUT, lambda: self.log_tail(80))

    def stop(self):
        if self.proc is None:
            return
        try:
            _stop_process(self.proc, self.name)
        finally:
            self.proc = None
            if self._out is not None:
                self._out.close()
                self._out = None

    def restart(self):
        self.stop()
        return self.start()

    def reconfigure(self, **options):
        """Restarts with options changed (secure_auth, dialback, cert,
        extra, ...); accounts stay."""
        unknown = set(options) - set(self.options)
        assert not unknown, "%s: unknown options %s" % (self.name, unknown)
        self.options.update(options)
        return self.restart()

    @contextlib.contextmanager
    def configured(self, **options):
        saved = {k: self.options[k] for k in options}
        self.reconfigure(**options)
        try:
            yield self
        finally:
            self.reconfigure(**saved)

    def cleanup(self):
        self.stop()
        if os.environ.get("NATTER_KEEP"):
            print("kept %s" % self.root)
            return
        shutil.rmtree(self.root, ignore_errors=True)

    # -- accounts -----------------------------------------------------------

    def add_user(self, name, password=None):
        """Creates NAME@domain (password NAME-secret by default); returns
        the bare JID."""
        password = password_of(name) if password is None else password
        if self._users.get(name) != password:
            self._register(name, password)
            self._users[name] = password
        return "%s@%s" % (name, self.domain)

    def password(self, name):
        return self._users[name]


class Prosody(PeerServer):
    """Prosody 0.12 in the foreground with its own config (made from
    data/prosody.cfg.lua.in); see the module docstring."""

    name = "prosody"

    def __init__(self, dns, ca, domain=PROSODY, address=None,
                 s2s_port=S2S_PORT, *, secure_auth=True, dialback=True,
                 cert=None, extra="", extra_modules=""):
        require(PROSODY_BIN, "prosody")
        require("/usr/lib/x86_64-linux-gnu/lua/5.4/lunbound.so",
                "lua-unbound")
        super().__init__(dns, ca, domain, address, s2s_port, cert,
                         {"secure_auth": secure_auth, "dialback": dialback,
                          "extra": extra, "extra_modules": extra_modules})
        self.config_path = self.root / "prosody.cfg.lua"
        (self.root / "data").mkdir()
        (self.root / "certs").mkdir()   # where certmanager looks first

    @property
    def log_path(self):
        return self.root / "prosody.log"

    def _extra_log(self):
        out = read_text(self.root / "prosody.out")
        return "\n---- stdout/stderr ----\n" + out if out.strip() else ""

    def write_config(self):
        cert = self.cert
        text = string.Template(
            (DATA / "prosody.cfg.lua.in").read_text()).substitute(
            root=self.root, domain=self.domain, address=self.address,
            muc_domain=self.muc_domain,
            c2s_port=self.c2s_port, s2s_port=self.s2s_port,
            secure_auth="true" if self.options["secure_auth"] else "false",
            dialback_module='"dialback";' if self.options["dialback"]
            else "",
            ca_file=self.ca.ca_file, cert=cert.cert, key=cert.key,
            resolver=self.dns.resolver, extra=self.options["extra"],
            extra_modules=self.options["extra_modules"])
        self.config_path.write_text(text)

    def start(self):
        assert self.proc is None, "prosody already running"
        require_free(self.address, self.s2s_port, "prosody")
        self.write_config()
        self._out = open(self.root / "prosody.out", "ab")
        self.proc = subprocess.Popen(
            [PROSODY_BIN, "--config", str(self.config_path), "-F"],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out,
            cwd=self.root, env=dict(os.environ, HOME=str(self.root)),
            start_new_session=True)
        self._wait_ports()
        return self

    def ctl(self, *args, check=True):
        return run([PROSODYCTL, "--config", str(self.config_path), *args],
                   env=dict(os.environ, HOME=str(self.root)), check=check,
                   timeout=CMD_TIMEOUT)

    def _register(self, name, password):
        if not self.config_path.exists():
            self.write_config()
        self.ctl("register", name, self.domain, password)


class Ejabberd(PeerServer):
    """ejabberd 23.01 started with erl directly (what `ejabberdctl
    foreground` runs, without its su to the ejabberd user or epmd), with
    its own node name, cookie, distribution port, spool, log and
    ejabberd.yml (from data/ejabberd.yml.in); see the module docstring."""

    name = "ejabberd"

    def __init__(self, dns, ca, domain=EJABBERD, address=None,
                 s2s_port=S2S_PORT, *, dialback=False, cert=None, extra="",
                 extra_modules=""):
        require(ERL, "erlang-base (ejabberd)")
        require(Path(ERL_LIBS) / "ejabberd-23.01", "ejabberd")
        super().__init__(dns, ca, domain, address, s2s_port, cert,
                         {"dialback": dialback, "extra": extra,
                          "extra_modules": extra_modules})
        token = "".join(random.choice(string.ascii_lowercase)
                        for _ in range(8))
        self.node = "fedtest-%s@127.0.0.1" % token
        self.cookie = "cookie-%s-%d" % (token, random.getrandbits(48))
        self.dist_port = free_port()
        self.config_path = self.root / "ejabberd.yml"
        self.inetrc = self.root / "inetrc"
        self.spool = self.root / "spool"
        self.logs = self.root / "logs"
        self.spool.mkdir()
        self.logs.mkdir()

    @property
    def log_path(self):
        return self.logs / "ejabberd.log"

    def _extra_log(self):
        parts = []
        for path in (self.logs / "error.log", self.root / "erl.out"):
            text = read_text(path)
            if text.strip():
                parts.append("\n---- %s ----\n%s" % (path.name, tail(text)))
        return "".join(parts)

    def write_config(self):
        cert = self.cert
        text = string.Template(
            (DATA / "ejabberd.yml.in").read_text()).substitute(
            domain=self.domain, address=self.address,
            muc_domain=self.muc_domain,
            c2s_port=self.c2s_port, s2s_port=self.s2s_port,
            certfile=cert.combined, ca_file=self.ca.ca_file,
            dialback_module="  mod_s2s_dialback: {}"
            if self.options["dialback"] else "",
            extra_modules=self.options["extra_modules"],
            extra=self.options["extra"])
        self.config_path.write_text(text)
        # Erlang's resolver (inet_res, which ejabberd's SRV and address
        # lookups use) asks dnsmasq only: no /etc/resolv.conf and no
        # /etc/hosts, "localhost" alone is known locally.  Order matters:
        # {resolv_conf, ""} after {nameserver, ...} clears the nameservers.
        host, port = self.dns.address, self.dns.port
        self.inetrc.write_text(
            "{resolv_conf, \"\"}.\n"
            "{hosts_file, \"\"}.\n"
            "{nameserver, {%s}, %d}.\n"
            "{host, {127,0,0,1}, [\"localhost\"]}.\n"
            "{lookup, [file, dns]}.\n"
            "{timeout, 2000}.\n"
            "{retry, 2}.\n"
            % (",".join(host.split(".")), port))
        # ...but the addresses of SRV targets come from libc's getaddrinfo
        # (p1_xmpp 1.6's xmpp_stream_out calls net:getaddrinfo), which
        # reads /etc/resolv.conf (port 53 only), /etc/hosts and
        # /etc/nsswitch.conf: ejabberd runs in a mount namespace of its
        # own where these three are ours (see start()).
        etc = self.root / "etc"
        etc.mkdir(exist_ok=True)
        assert port == 53, (
            "ejabberd needs dnsmasq on port 53 (libc's resolver knows no "
            "other port); it is on %d" % port)
        (etc / "resolv.conf").write_text(
            "# Made by fedlib.py for ejabberd's mount namespace\n"
            "nameserver %s\noptions timeout:2 attempts:2\n" % host)
        (etc / "hosts").write_text("127.0.0.1 localhost\n")
        (etc / "nsswitch.conf").write_text("hosts: files dns\n")

    def _env(self):
        env = dict(os.environ)
        env.update({
            "HOME": str(self.root),
            "ERL_LIBS": ERL_LIBS,
            "EJABBERD_CONFIG_PATH": str(self.config_path),
            "EJABBERD_LOG_PATH": str(self.log_path),
            "EJABBERD_PID_PATH": str(self.root / "ejabberd.pid"),
            "ERL_CRASH_DUMP": str(self.logs / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "CONTRIB_MODULES_PATH": str(self.root / "contrib"),
            "CONTRIB_MODULES_CONF_DIR": str(self.root / "contrib.d"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def _erl_args(self, node):
        return [ERL, "-name", node, "-setcookie", self.cookie,
                "-erl_epmd_port", str(self.dist_port), "-start_epmd",
                "false", "-kernel", "inet_dist_use_interface", "{127,0,0,1}"]

    def start(self):
        assert self.proc is None, "ejabberd already running"
        require_free(self.address, self.s2s_port, "ejabberd")
        self.write_config()
        env = self._env()
        env["ERL_INETRC"] = str(self.inetrc)
        self._out = open(self.root / "erl.out", "ab")
        etc = self.root / "etc"
        # unshare(1) and sh exec: self.proc is beam.smp itself, and SIGTERM
        # stops ejabberd cleanly.
        namespace = [
            UNSHARE, "--mount", "--propagation", "private", "--",
            "sh", "-c",
            'mount --bind "$0/resolv.conf" /etc/resolv.conf && '
            'mount --bind "$0/hosts" /etc/hosts && '
            'mount --bind "$0/nsswitch.conf" /etc/nsswitch.conf && '
            'exec "$@"', str(etc)]
        self.proc = subprocess.Popen(
            namespace + self._erl_args(self.node) + [
                "+K", "true", "+P", "250000",
                "-mnesia", "dir", '"%s"' % self.spool,
                "-ejabberd", "log_rotate_count", "0",
                "-s", "ejabberd", "-noinput"],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out,
            cwd=self.spool, env=env, start_new_session=True)
        self._wait_ports()

        def started():
            self._check_alive("while starting")
            proc = self.ctl("status", check=False)
            return proc.returncode == 0 and "started" in proc.stdout
        _poll(started, "ejabberdctl status", START_TIMEOUT,
              lambda: self.log_tail(80))
        return self

    def ctl(self, *args, check=True):
        """An ejabberdctl command, run as ejabberdctl runs it (erl -s
        ejabberd_ctl) against our node."""
        node = "ctl%d-%s" % (random.getrandbits(24), self.node)
        return run(self._erl_args(node) + [
            "-dist_listen", "false", "-hidden", "-noinput",
            "-s", "ejabberd_ctl", "-extra", self.node, *args],
            env=self._env(), check=check, timeout=CMD_TIMEOUT)

    def _register(self, name, password):
        proc = self.ctl("register", name, self.domain, password, check=False)
        if proc.returncode != 0 and "already registered" in (
                proc.stdout + proc.stderr):
            # A new password (change_password is mod_admin_extra's).
            self.ctl("unregister", name, self.domain)
            proc = self.ctl("register", name, self.domain, password,
                            check=False)
        if proc.returncode != 0:
            raise AssertionError("ejabberdctl register %s failed (%d): %s%s"
                                 % (name, proc.returncode, proc.stdout,
                                    proc.stderr))


# ------------------------------------------------------------- sessions ---

async def fed_connect(net, server, name, resource="r", password=None, *,
                      roster=True, available=False):
    """A logged-in slixmpp session of NAME@server.domain on server's c2s
    port, with an imlib.Inbox (client.inbox) and automatic subscription
    answers off.  Creates the account if needed.  With roster (the
    default) the roster is fetched, which makes the session "interested"
    (RFC 6121 2.1.6): Prosody delivers subscription answers only to such
    sessions.  With available, initial presence is sent."""
    jid = server.add_user(name, password)
    client = await net.login(server, "%s/%s" % (jid, resource),
                             server.password(name),
                             mechanism=server.sasl_mechanism)
    client.roster.auto_authorize = None
    client.roster.auto_subscribe = False
    client.inbox = Inbox(client)
    if roster:
        await roster_get(client)
    if available:
        await client.available()
    return client


@contextlib.asynccontextmanager
async def diagnose(*servers, dns=None):
    """Adds the servers' log tails (and the DNS query log) to an
    AssertionError raised inside; servers are Prosody, Ejabberd or
    natterlib.NatterServer objects (anything with .log and .alive())."""
    try:
        yield
    except AssertionError as e:
        parts = [str(e)]
        for server in servers:
            # Prosody, Ejabberd or natterlib.NatterServer alike.
            name = getattr(server, "name", None) or "natterd %s" % getattr(
                server, "domain", "")
            parts.append("---- %s (%s) log tail ----\n%s"
                         % (name,
                            "running" if server.alive() else "NOT RUNNING",
                            tail(server.log, 80)))
        if dns is not None:
            parts.append("---- dnsmasq queries ----\n%s"
                         % "\n".join("%s %s" % q for q in dns.queries()))
        raise AssertionError("\n".join(parts)) from None


def s2s_listener(domain, port=S2S_PORT, direct_tls=False):
    """The s2s listener of one of the natter domains on its own address,
    for natter_factory(extra_listeners=[...])."""
    return {"type": "s2s_tls" if direct_tls else "s2s", "address": ADDRESSES[domain],
            "port": port}


def natter_identity(ca, dns, domain=NATTER_A):
    """What natter's s2s configuration needs for one of the natter
    domains: its certificate and key from the test CA, the CA to verify
    peers with, its address and port, and the resolver."""
    pair = ca.cert_for(domain)
    return {
        "domain": domain,
        "address": ADDRESSES[domain],
        "s2s_port": S2S_PORT,
        "cert": str(pair.cert),
        "key": str(pair.key),
        "chain": str(pair.chain),
        "ca_file": str(ca.ca_file),
        "resolver": dns.resolver,
    }

"""Helpers for natter's integration tests.

Everything here drives real processes over loopback: a natterd started from
the build directory with a per-test configuration, natterctl for accounts,
slixmpp as a well-behaved client, and RawStream, a hand-driven XMPP
connection for sending what no well-behaved client would.

Nothing waits by sleeping: every wait is for an event (a log line, a stanza,
a closed socket) with a timeout, so a slow machine makes tests slower, not
flaky, and a broken server makes them fail instead of hang.
"""

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("NATTER_BUILD", REPO / "build")).resolve()
NATTERD = BUILD / "natterd"
# Memory is measured on the optimised build: a sanitizer's allocator keeps
# freed memory in quarantine, so its RSS says nothing about natterd's.
RELEASE_BUILD = Path(os.environ.get("NATTER_RELEASE_BUILD", REPO / "build")).resolve()
NATTERCTL = BUILD / "natterctl"
SASL_PLUS_CLIENT = BUILD / "sasl_plus_client"
LSAN_SUPPRESSIONS = str(Path(__file__).resolve().parent / "lsan.supp")

# Sanitizer builds start and stop slowly; these bound waits, they are not
# delays: a healthy server answers far sooner.
START_TIMEOUT = float(os.environ.get("NATTER_START_TIMEOUT", 30))
STOP_TIMEOUT = 20.0
IO_TIMEOUT = float(os.environ.get("NATTER_IO_TIMEOUT", 10))
CTL_TIMEOUT = 60.0

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
)

NS_CLIENT = "jabber:client"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_PING = "urn:xmpp:ping"


def q(ns, local):
    """ElementTree's {namespace}local name."""
    return "{%s}%s" % (ns, local)


# ---------------------------------------------------------------- config ---

_PORTS_GIVEN = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago, and
    that this test run has not handed out before (the kernel may pick the
    same free port twice in a row, and a server's two listeners would
    then clash)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def _yaml_scalar(value):
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    value = str(value)
    if re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_.:/@+-]*", value) and \
            value.lower() not in _YAML_WORDS:
        return value
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value)


_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _yaml_lines(value, indent):
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append("%s%s:" % (pad, key))
                lines.extend(_yaml_lines(item, indent + 2))
            elif isinstance(item, dict):
                lines.append("%s%s: {}" % (pad, key))
            elif isinstance(item, list):
                lines.append("%s%s: []" % (pad, key))
            else:
                lines.append("%s%s: %s" % (pad, key, _yaml_scalar(item)))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub = _yaml_lines(item, indent + 2)
                lines.append("%s- %s" % (pad, sub[0][indent + 2:]))
                lines.extend(sub[1:])
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        lines.append(pad + _yaml_scalar(value))
    return lines


def to_yaml(config):
    """Block-style YAML for a dict of dicts, lists and scalars (we avoid a
    PyYAML dependency; the server's parser is what is under test)."""
    return "\n".join(_yaml_lines(config, 0)) + "\n"


def deep_merge(base, overrides):
    """base updated by overrides; nested dicts merge, everything else is
    replaced.  A value of DELETE removes the key."""
    result = dict(base)
    for key, value in overrides.items():
        if value is DELETE:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


DELETE = object()


def default_config(root, c2s_port, tls_port):
    return {
        "log_level": "debug",
        "data_dir": str(root / "data"),
        "workers": 2,
        "allow_plain": True,
        "hosts": [{"domain": "localhost"}],
        "listeners": [
            {"type": "c2s", "address": "127.0.0.1", "port": c2s_port},
            {"type": "c2s_tls", "address": "127.0.0.1", "port": tls_port},
        ],
        "limits": {
            "max_stanza_size": 262144,
            "max_depth": 64,
            "max_attributes": 64,
            "auth_timeout": 30,
            "idle_timeout": 300,
            "ping_timeout": 30,
        },
    }


def self_signed_cert(directory, name, domain="localhost"):
    """A self-signed ECDSA certificate for domain (subjectAltName DNS:domain)
    as directory/NAME.crt and directory/NAME.key; returns both paths."""
    cert, key = Path(directory) / (name + ".crt"), Path(directory) / (name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=" + domain,
                    "-addext", "subjectAltName=DNS:" + domain],
                   check=True, capture_output=True)
    return cert, key


def sanitizer_reports(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def require_binary(path):
    if not path.exists():
        raise AssertionError(
            "%s does not exist: build natter (make build-asan) or point "
            "NATTER_BUILD at a build directory" % path)


# ---------------------------------------------------------------- server ---

class NatterServer:
    """One natterd process with its own directory, config and ports.

    The directory is short and under /tmp on purpose: natterd may put its
    UNIX control socket in data_dir, and sun_path holds only 108 bytes.
    """

    def __init__(self, overrides=None, extra_listeners=()):
        """overrides are merged into the default config; extra_listeners
        (e.g. an s2s listener) come after the default c2s ones."""
        self.root = Path(tempfile.mkdtemp(prefix="natter-"))
        (self.root / "data").mkdir()
        self.c2s_port = free_port()
        self.tls_port = free_port()
        config = default_config(self.root, self.c2s_port, self.tls_port)
        self.config = deep_merge(config, overrides or {})
        self.config["listeners"] = self.config["listeners"] + list(extra_listeners)
        self.config_path = self.root / "natter.yaml"
        self.config_path.write_text(to_yaml(self.config))
        self.domain = self.config["hosts"][0]["domain"]
        self.binary = NATTERD
        self.proc = None
        self._lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None
        self._users = {}
        self.problems = []

    # -- log ------------------------------------------------------------

    @property
    def log(self):
        with self._cond:
            return "".join(self._lines)

    def _read_output(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def log_mark(self):
        """A position in the log for wait_for_log(since=...)."""
        return len(self.log)

    def wait_for_log(self, needle, timeout=IO_TIMEOUT, since=0):
        """Blocks until needle appears in the log (after position since);
        raises AssertionError with the log on timeout or process exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = "".join(self._lines)
                if needle in text[since:]:
                    return text
                if self._eof:
                    raise AssertionError(
                        "natterd exited (status %s) before logging %r:\n%s"
                        % (self.proc.poll(), needle, text))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "natterd did not log %r within %.0fs:\n%s"
                        % (needle, timeout, text))
                self._cond.wait(left)

    async def await_log(self, needle, timeout=IO_TIMEOUT, since=0):
        """wait_for_log for coroutines (runs the wait in a thread)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.wait_for_log, needle, timeout, since)

    # -- lifecycle ------------------------------------------------------

    def start(self):
        require_binary(self.binary)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("LSAN_OPTIONS", "suppressions=" + LSAN_SUPPRESSIONS)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen(
            [str(self.binary), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, cwd=self.root,
            start_new_session=True)
        self._reader = threading.Thread(target=self._read_output,
                                        daemon=True)
        self._reader.start()
        self.wait_for_log("natterd ready", timeout=START_TIMEOUT)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Terminates natterd and returns a list of problems: an early
        exit, a crash, an unclean status or a sanitizer report."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is not None:
            problems.append("natterd exited during the test with status %s"
                            % self.proc.returncode)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("natterd ignored SIGTERM for %.0fs"
                                % STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        rc = self.proc.returncode
        if rc not in (0, -signal.SIGTERM) and not problems:
            problems.append("natterd exited with status %s after SIGTERM"
                            % rc)
        if rc is not None and rc < 0 and rc != -signal.SIGTERM:
            problems.append("natterd died of signal %d" % -rc)
        found = sanitizer_reports(self.log)
        if found:
            problems.append("sanitizer report in natterd output: %s"
                            % ", ".join(found))
        self.proc.stdout.close()
        self.proc = None
        return problems

    def cleanup(self):
        # NATTER_KEEP=1 keeps the run's directory (config, log) to look at.
        if os.environ.get("NATTER_KEEP"):
            (self.root / "natterd.log").write_text(self.log)
            print("kept %s" % self.root)
            return
        shutil.rmtree(self.root, ignore_errors=True)

    # -- natterctl ------------------------------------------------------

    def ctl(self, *args, input=None, check=False):
        """Runs natterctl -c CONFIG ARGS..., returns CompletedProcess (text).
        A sanitizer report from natterctl always fails the test."""
        require_binary(NATTERCTL)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("LSAN_OPTIONS", "suppressions=" + LSAN_SUPPRESSIONS)
        proc = subprocess.run(
            [str(NATTERCTL), "-c", str(self.config_path), *args],
            input=input, capture_output=True, encoding="utf-8",
            errors="replace", env=env, cwd=self.root, timeout=CTL_TIMEOUT)
        found = sanitizer_reports(proc.stderr)
        assert not found, "natterctl %s: sanitizer report:\n%s" % (
            " ".join(args), proc.stderr)
        if check:
            assert proc.returncode == 0, (
                "natterctl %s failed (%d):\nstdout: %s\nstderr: %s"
                % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def add_user(self, jid, password):
        """Creates an account through natterctl, password on stdin."""
        self.ctl("user", "add", jid, input=password + "\n", check=True)
        self._users[jid] = password
        return jid

    def probe_account(self):
        """An account kept for 'is the server still serving?' checks."""
        jid = "probe@" + self.domain
        if jid not in self._users:
            self.add_user(jid, "probe-secret")
        return jid, self._users[jid]


# ---------------------------------------------------------------- TLS ------

def proc_status_kib(pid, field):
    """A kB line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for process %d" % (field, pid))


def cpu_seconds(pid):
    """utime + stime of a process and its threads, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def insecure_client_context(minimum=None, maximum=None, alpn=None):
    """A client context that does not verify: test certificates are
    self-signed; tests that care compare certificates explicitly."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def make_certificate(directory, common_name):
    """A self-signed certificate and key for common_name, made by the
    openssl command line; returns (cert_path, key_path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / ("%s.crt.pem" % common_name)
    key = directory / ("%s.key.pem" % common_name)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=%s" % common_name,
         "-addext", "subjectAltName=DNS:%s" % common_name],
        check=True, capture_output=True, timeout=60)
    return cert, key


def pem_to_der(path):
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


# ------------------------------------------------------------- raw stream --

class StreamClosed(AssertionError):
    pass


class RawStream:
    """A hand-driven client connection.

    Received bytes go through an ElementTree pull parser, one per stream
    (the parser restarts after STARTTLS and SASL success, like the
    protocol); complete top-level elements are returned by next().
    Everything received is kept in `transcript` for failure messages.
    """

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.transcript = bytearray()
        self.eof = False
        self.reset = False
        self.header = None       # the server's stream root element
        self.stream_ended = False
        self._queue = []
        self._reset_parser()

    @classmethod
    async def connect(cls, port, *, tls_context=None,
                      server_hostname="localhost", host="127.0.0.1",
                      source=None):
        """source: the local address to connect from (any of
        127.0.0.0/8 works on loopback), to look like another client."""
        kwargs = {}
        if tls_context is not None:
            kwargs = {"ssl": tls_context, "server_hostname": server_hostname,
                      "ssl_handshake_timeout": IO_TIMEOUT}
        if source is not None:
            kwargs["local_addr"] = (source, 0)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 22, **kwargs),
            IO_TIMEOUT)
        return cls(reader, writer)

    def _reset_parser(self):
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.header = None
        self.stream_ended = False
        self._queue = []
        self._after_end = bytearray()

    def describe(self):
        return self.transcript.decode("utf-8", "replace")

    @property
    def ssl_object(self):
        return self.writer.get_extra_info("ssl_object")

    # -- sending ---------------------------------------------------------

    async def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.writer.write(data)
        await self.writer.drain()

    async def open_stream(self, to="localhost", *, xml_declaration=True,
                          stream_ns=NS_STREAM, content_ns=NS_CLIENT,
                          version="1.0"):
        """Sends a stream header (and restarts our parser); does not wait
        for the server's header, which next() and features() do."""
        self._reset_parser()
        header = ("<stream:stream xmlns='%s' xmlns:stream='%s'%s "
                  "version='%s'>" % (content_ns, stream_ns,
                                     " to='%s'" % to if to else "", version))
        if xml_declaration:
            header = "<?xml version='1.0'?>" + header
        await self.send(header)

    # -- receiving -------------------------------------------------------

    def _feed(self, data):
        if self.stream_ended:
            self._after_end.extend(data)
            return
        try:
            self._parser.feed(data)
            events = list(self._parser.read_events())
        except ET.ParseError as e:
            raise AssertionError("server sent malformed XML (%s):\n%s"
                                 % (e, self.describe()))
        for event, elem in events:
            if event == "start":
                if self._depth == 0:
                    if elem.tag != q(NS_STREAM, "stream"):
                        raise AssertionError(
                            "server did not open a stream before sending "
                            "<%s> (RFC 6120 4.9.1.1):\n%s"
                            % (elem.tag, self.describe()))
                    self.header = elem
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    self._queue.append(elem)
                    self.header.remove(elem)
                elif self._depth == 0:
                    self.stream_ended = True

    async def _read_more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError()
        try:
            data = await asyncio.wait_for(self.reader.read(65536), left)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            self.reset = True
            self.reset_reason = repr(e)
            data = b""
        if not data:
            self.eof = True
            return
        self.transcript.extend(data)
        self._feed(data)

    async def next(self, timeout=IO_TIMEOUT):
        """The next complete top-level element from the server, or None if
        the stream ended or the connection closed first."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            if self.stream_ended or self.eof:
                return None
            try:
                await self._read_more(deadline)
            except asyncio.TimeoutError:
                raise AssertionError(
                    "no element from the server within %.0fs; received:\n%s"
                    % (timeout, self.describe())) from None
        return self._queue.pop(0)

    async def expect(self, tag, timeout=IO_TIMEOUT):
        """The next element, which must have the given {ns}tag."""
        elem = await self.next(timeout)
        if elem is None:
            raise StreamClosed("stream closed while waiting for %s:\n%s"
                               % (tag, self.describe()))
        assert elem.tag == tag, "expected %s, got %s:\n%s" % (
            tag, ET.tostring(elem, encoding="unicode"), self.describe())
        return elem

    async def features(self, timeout=IO_TIMEOUT):
        return await self.expect(q(NS_STREAM, "features"), timeout)

    async def read_until_closed(self, timeout=IO_TIMEOUT):
        """Reads until the server closes the TCP connection; returns the
        elements received meanwhile.  Fails if it stays open."""
        deadline = time.monotonic() + timeout
        elements = []
        while not self.eof:
            if self._queue:
                elements.append(self._queue.pop(0))
                continue
            try:
                await self._read_more(deadline)
            except asyncio.TimeoutError:
                raise AssertionError(
                    "server kept the connection open for %.0fs; "
                    "received:\n%s" % (timeout, self.describe())) from None
        elements.extend(self._queue)
        self._queue = []
        return elements

    # -- negotiation -----------------------------------------------------

    async def starttls(self, server_hostname="localhost", context=None):
        """Negotiates STARTTLS on a stream whose features are already read
        and restarts the stream over TLS."""
        await self.send("<starttls xmlns='%s'/>" % NS_TLS)
        await self.expect(q(NS_TLS, "proceed"))
        await self.writer.start_tls(
            context or insecure_client_context(),
            server_hostname=server_hostname,
            ssl_handshake_timeout=IO_TIMEOUT)

    async def bind(self, resource=None):
        payload = "<resource>%s</resource>" % resource if resource else ""
        iq = await self.iq_roundtrip(
            "bind-1", "<bind xmlns='%s'>%s</bind>" % (NS_BIND, payload),
            type_="set")
        assert iq.get("type") == "result", ET.tostring(iq, "unicode")
        jid = iq.find("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid")))
        assert jid is not None and jid.text, ET.tostring(iq, "unicode")
        self.jid = jid.text
        return jid.text

    async def iq_roundtrip(self, iq_id, payload, to=None, type_="get",
                           timeout=IO_TIMEOUT):
        """Sends an iq and returns the reply with the same id, skipping
        anything else (e.g. server pings, messages)."""
        to_attr = " to='%s'" % to if to else ""
        await self.send("<iq type='%s' id='%s'%s>%s</iq>"
                        % (type_, iq_id, to_attr, payload))
        deadline = time.monotonic() + timeout
        while True:
            elem = await self.next(max(0.01, deadline - time.monotonic()))
            if elem is None:
                raise StreamClosed("stream closed awaiting iq %s:\n%s"
                                   % (iq_id, self.describe()))
            if elem.tag == q(NS_CLIENT, "iq") and elem.get("id") == iq_id:
                return elem

    async def ping_server(self, iq_id="raw-ping", to="localhost"):
        reply = await self.iq_roundtrip(iq_id, "<ping xmlns='%s'/>" % NS_PING,
                                        to=to)
        assert reply.get("type") == "result", ET.tostring(reply, "unicode")
        return reply

    async def close(self):
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (asyncio.TimeoutError, OSError, ssl.SSLError):
            pass


async def raw_connect_tls(port, domain="localhost", *, xml_declaration=True):
    """TCP, stream header, STARTTLS, new stream; returns (stream, features
    after TLS)."""
    stream = await RawStream.connect(port)
    await stream.open_stream(domain, xml_declaration=xml_declaration)
    await stream.features()
    await stream.starttls(server_hostname=domain)
    await stream.open_stream(domain, xml_declaration=xml_declaration)
    return stream, await stream.features()


async def raw_login(port, jid, password, *, resource="raw", domain=None):
    """A full login by hand with SASL PLAIN; returns the bound RawStream."""
    local, _, rest = jid.partition("@")
    domain = domain or rest.split("/")[0]
    stream, features = await raw_connect_tls(port, domain)
    mechs = [m.text for m in features.iter(q(NS_SASL, "mechanism"))]
    assert "PLAIN" in mechs, "PLAIN not offered after TLS: %s" % mechs
    token = base64.b64encode(("\0%s\0%s" % (local, password)).encode())
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                      % (NS_SASL, token.decode()))
    await stream.expect(q(NS_SASL, "success"))
    await stream.open_stream(domain)
    await stream.features()
    await stream.bind(resource)
    return stream


# -------------------------------------------------- blocking clients ---
# For clients that must stop reading: asyncio's streams read for us.

def blocking_tcp(port, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the window the server sees is small too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until(sock, needle, timeout=IO_TIMEOUT):
    """Reads (blocking) until needle has arrived; returns all read."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise AssertionError("closed before %r; got %r" % (needle, got))
        got += data
    sock.settimeout(IO_TIMEOUT)
    return got


def blocking_starttls(sock):
    """Stream header, STARTTLS, handshake: an unauthenticated TLS stream
    whose features are read."""
    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='%s' to='localhost' version='1.0'>" % NS_STREAM)
    sock.sendall(header.encode())
    read_until(sock, b"</stream:features>")
    sock.sendall(("<starttls xmlns='%s'/>" % NS_TLS).encode())
    read_until(sock, b"<proceed")
    tls = insecure_client_context().wrap_socket(sock, server_hostname="localhost")
    tls.sendall(header.encode())
    read_until(tls, b"</stream:features>")
    return tls


def blocking_login(server, jid, password, rcvbuf=4096):
    """A logged-in, bound stream on a blocking TLS socket, for a client
    that then stops reading."""
    local = jid.split("@")[0]
    s = blocking_starttls(blocking_tcp(server.c2s_port, rcvbuf=rcvbuf))
    token = base64.b64encode(("\0%s\0%s" % (local, password)).encode()).decode()
    s.sendall(("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
               "mechanism='PLAIN'>%s</auth>" % token).encode())
    answer = b""
    while b"<success" not in answer and b"<failure" not in answer:
        answer += read_until(s, b">")
    assert b"<success" in answer, "login of %s failed: %r" % (jid, answer)
    s.sendall(("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='%s' to='localhost' version='1.0'>"
               % NS_STREAM).encode())
    read_until(s, b"</stream:features>")
    s.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:"
              b"xmpp-bind'/></iq>")
    read_until(s, b"</iq>")
    return s


def stream_error_condition(elem):
    """The defined condition of a <stream:error/>, e.g. 'host-unknown'."""
    for child in elem:
        if child.tag.startswith("{%s}" % NS_STREAM_ERRORS) and \
                child.tag != q(NS_STREAM_ERRORS, "text"):
            return child.tag.split("}", 1)[1]
    return None


def stanza_error_condition(elem):
    err = elem.find(q(NS_CLIENT, "error"))
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{%s}" % NS_STANZA_ERRORS) and \
                child.tag != q(NS_STANZA_ERRORS, "text"):
            return child.tag.split("}", 1)[1]
    return None


async def expect_stream_error(stream, condition, timeout=IO_TIMEOUT):
    """Asserts RFC 6120 4.9: the server sends <stream:error> with the given
    condition (or one of a tuple of them) inside an open stream, then
    </stream:stream>, then closes the TCP connection.  Returns the time it
    took."""
    allowed = condition if isinstance(condition, tuple) else (condition,)
    started = time.monotonic()
    elements = await stream.read_until_closed(timeout)
    elapsed = time.monotonic() - started
    errors = [e for e in elements if e.tag == q(NS_STREAM, "error")]
    assert errors, "no stream error before the connection closed%s:\n%s" % (
        " (connection reset: %s)" % stream.reset_reason if stream.reset
        else "", stream.describe())
    got = stream_error_condition(errors[0])
    assert got in allowed, "expected <%s/>, got <%s/>:\n%s" % (
        "/> or <".join(allowed), got, stream.describe())
    assert elements[-1] is errors[0], (
        "stanzas after the stream error:\n%s" % stream.describe())
    assert stream.stream_ended, (
        "no </stream:stream> after the stream error:\n%s" % stream.describe())
    return elapsed


# ------------------------------------------------------------- slixmpp -----

class LoginFailed(Exception):
    def __init__(self, condition, detail=""):
        super().__init__("login failed: %s %s" % (condition, detail))
        self.condition = condition


class XmppClient(slixmpp.ClientXMPP):
    """slixmpp with what the tests need: loopback connection to a given
    port without DNS, no certificate verification, a chosen SASL
    mechanism, queues of received messages, stream errors and server pings,
    and awaitable helpers with timeouts."""

    def __init__(self, jid, password, *, mechanism=None,
                 channel_binding=False):
        super().__init__(jid, password, sasl_mech=mechanism)
        self.ssl_context = insecure_client_context()
        # SNI and the DNS stand-in use the JID's domain; connect() keeps
        # this because the address it is given is an IP literal.
        self.default_domain = self.boundjid.domain
        self.use_ipv6 = False
        self.use_aiodns = False
        # slixmpp offers a "y" gs2 flag whenever the TLS socket has a
        # binding; natter refuses that on TLS 1.2 (a downgrade), so by
        # default we claim no binding support (gs2 "n").  With
        # channel_binding slixmpp's own credentials are left alone.
        if not channel_binding:
            mechanisms = self["feature_mechanisms"]
            default_credentials = mechanisms.sasl_callback

            def credentials(required, optional):
                values = default_credentials(required, optional)
                if "channel_binding" in values:
                    values["channel_binding"] = None
                return values
            mechanisms.sasl_callback = credentials

        self.answer_pings = True
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.server_pings = asyncio.Queue()
        self.stream_errors = asyncio.Queue()
        self._outcome = asyncio.get_running_loop().create_future()
        self._closed = asyncio.get_running_loop().create_future()
        self.register_handler(Callback(
            "test messages", MatchXPath(q(NS_CLIENT, "message")),
            self.messages.put_nowait))
        self.register_handler(Callback(
            "test presences", MatchXPath(q(NS_CLIENT, "presence")),
            self.presences.put_nowait))
        self.register_handler(Callback(
            "test pings", MatchXPath("%s/%s" % (q(NS_CLIENT, "iq"),
                                                q(NS_PING, "ping"))),
            self._on_ping))
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("connection_failed", self._on_conn_failed)

    # slixmpp resolves the JID's domain even when given an address;
    # the tests always mean the loopback address and port they pass.
    async def get_dns_records(self, domain, port=None):
        return [(domain, self.address[0], self.address[1])]

    def _settle(self, value):
        if not self._outcome.done():
            self._outcome.set_result(value)

    def _on_session_start(self, _event):
        self._settle(("ok", None))

    def _on_failed_auth(self, stanza):
        self._settle(("failed", stanza["condition"]))

    def _on_disconnected(self, reason):
        self._settle(("disconnected", reason))
        if not self._closed.done():
            self._closed.set_result(reason)

    def _on_conn_failed(self, error):
        self._settle(("connection_failed", error))

    def _on_ping(self, iq):
        if iq["type"] != "get":
            return
        self.server_pings.put_nowait(iq)
        if self.answer_pings:
            iq.reply().send()

    def abort(self):
        # slixmpp 1.8 calls transport.close() then transport.abort(); on a
        # TLS transport the peer's close can clear the protocol in between.
        try:
            super().abort()
        except AttributeError:
            pass

    # -- helpers ---------------------------------------------------------

    @property
    def closed(self):
        return self._closed.done()

    async def wait_closed(self, timeout=IO_TIMEOUT):
        return await asyncio.wait_for(asyncio.shield(self._closed), timeout)

    async def next_message(self, timeout=IO_TIMEOUT):
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no message within %.0fs"
                                 % (self.boundjid, timeout)) from None

    async def next_server_ping(self, timeout=IO_TIMEOUT):
        try:
            return await asyncio.wait_for(self.server_pings.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: not pinged within %.0fs"
                                 % (self.boundjid, timeout)) from None

    async def next_stream_error(self, timeout=IO_TIMEOUT):
        try:
            return await asyncio.wait_for(self.stream_errors.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no stream error within %.0fs"
                                 % (self.boundjid, timeout)) from None

    async def iq(self, to, payload, type_="get", timeout=IO_TIMEOUT):
        """Sends an iq with the given child (ET element or XML text) and
        returns the result; raises IqError for an error reply."""
        iq = self.Iq()
        iq["type"] = type_
        if to:
            iq["to"] = to
        if isinstance(payload, str):
            payload = ET.fromstring(payload)
        iq.append(payload)
        try:
            return await iq.send(timeout=timeout)
        except IqTimeout:
            raise AssertionError("%s: no reply to iq to %s within %.0fs"
                                 % (self.boundjid, to, timeout)) from None

    async def ping(self, to=None, timeout=IO_TIMEOUT):
        return await self.iq(to or self.boundjid.domain,
                             "<ping xmlns='%s'/>" % NS_PING, timeout=timeout)

    async def barrier(self):
        """A round trip to the server: everything sent before has been
        processed (the server handles one connection's stanzas in order)."""
        await self.ping(self.boundjid.domain)

    async def available(self, priority=None, show=None):
        """Sends available presence and waits until the server processed
        it."""
        kwargs = {}
        if priority is not None:
            kwargs["ppriority"] = priority
        if show is not None:
            kwargs["pshow"] = show
        self.send_presence(**kwargs)
        await self.barrier()

    async def close(self):
        if self.closed:
            return
        try:
            await asyncio.wait_for(self.disconnect(wait=1), 3)
        except (asyncio.TimeoutError, Exception):
            self.abort()


async def login(port, jid, password, *, mechanism="SCRAM-SHA-256",
                direct_tls=False, channel_binding=False, timeout=IO_TIMEOUT,
                registry=None, tls_max=None):
    """Connects a slixmpp client to 127.0.0.1:port and waits for the
    session to start.  Raises LoginFailed with the SASL condition (or
    'disconnected' / 'connection_failed')."""
    client = XmppClient(jid, password, mechanism=mechanism,
                        channel_binding=channel_binding)
    if direct_tls:
        client.ssl_context.set_alpn_protocols(["xmpp-client"])
    if tls_max is not None:
        client.ssl_context.maximum_version = tls_max
    if registry is not None:
        registry.append(client)
    client.connect(("127.0.0.1", port), use_ssl=direct_tls)
    try:
        kind, detail = await asyncio.wait_for(asyncio.shield(
            client._outcome), timeout)
    except asyncio.TimeoutError:
        client.abort()
        raise AssertionError("login of %s did not finish within %.0fs"
                             % (jid, timeout)) from None
    if kind != "ok":
        client.abort()
        raise LoginFailed(detail if kind == "failed" else kind, str(detail))
    return client


def stanza_condition(stanza):
    """The stanza error condition of a slixmpp stanza (or None), read from
    the XML: slixmpp's list of conditions lacks some of RFC 6120's
    (policy-violation)."""
    if stanza["type"] != "error":
        return None
    err = stanza.xml.find("{jabber:client}error")
    ns = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
    conds = [] if err is None else [
        c.tag[len(ns):] for c in err
        if c.tag.startswith(ns) and c.tag != ns + "text"]
    return conds[0] if conds else stanza["error"]["condition"]


# ------------------------------------------------------------- harness -----

class Net:
    """Connections of one test, closed when it ends (the `net` fixture)."""

    def __init__(self):
        self._open = []

    async def login(self, server, jid, password, *, direct_tls=False,
                    **kwargs):
        """A slixmpp session on server's c2s port (or c2s_tls port)."""
        port = server.tls_port if direct_tls else server.c2s_port
        try:
            return await login(port, jid, password, direct_tls=direct_tls,
                               registry=self._open, **kwargs)
        except AssertionError as e:
            state = "running" if server.alive() else "NOT RUNNING"
            tail = "".join(server.log.splitlines(True)[-40:])
            raise AssertionError("%s\nnatterd is %s; its log ends:\n%s"
                                 % (e, state, tail)) from None

    async def login_stock(self, server, jid, password, **kwargs):
        """A slixmpp session as slixmpp logs in by default: no mechanism
        pinned (it picks SCRAM-*-PLUS whenever offered) and its own
        channel-binding behaviour (always gs2 "p=tls-unique")."""
        return await self.login(server, jid, password, mechanism=None,
                                channel_binding=True, **kwargs)

    async def raw(self, server, *, port=None, tls_context=None,
                  server_hostname=None, source=None):
        """A RawStream to server's c2s port (nothing sent yet), from the
        local address source if given."""
        stream = await RawStream.connect(
            port or server.c2s_port, tls_context=tls_context,
            server_hostname=server_hostname or server.domain, source=source)
        self._open.append(stream)
        return stream

    async def raw_tls(self, server, domain=None, source=None):
        """A RawStream after STARTTLS; returns (stream, features)."""
        domain = domain or server.domain
        stream = await self.raw(server, source=source)
        await stream.open_stream(domain)
        await stream.features()
        await stream.starttls(server_hostname=domain)
        await stream.open_stream(domain)
        return stream, await stream.features()

    async def raw_login(self, server, jid, password, resource="raw"):
        stream = await raw_login(server.c2s_port, jid, password,
                                 resource=resource)
        self._open.append(stream)
        return stream

    async def assert_served(self, server):
        """Another client can still log in and get an answer: run after
        every hostile test."""
        assert server.alive(), "natterd died:\n%s" % server.log
        jid, password = server.probe_account()
        client = await self.login(server, jid + "/probe", password)
        try:
            reply = await client.ping()
            assert reply["type"] == "result"
        finally:
            await client.close()

    async def aclose(self):
        for conn in reversed(self._open):
            try:
                await conn.close()
            except Exception:  # a connection the test broke on purpose
                if isinstance(conn, XmppClient):
                    conn.abort()
        self._open.clear()

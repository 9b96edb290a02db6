"""A DNSSEC-signed zone for DANE tests: NSD (authoritative) serving a zone
signed with ldns-signzone, keys made with ldns-keygen, on a free loopback
port; its key-signing key is the trust anchor natter gets
(dns.trust_anchor_file).  All from Debian (nsd, ldnsutils).

    zone = SignedZone("danetest", records=[...])   # zone-file lines, relative
    zone.start()                                   # names are under the zone
    zone.resolver          # "127.0.0.1@PORT" for natter's dns.resolver
    zone.trust_anchor      # path of the KSK's DNSKEY record
    zone.replace(records)  # re-signed and served, returns when live
    zone.stop()

Readiness is polled (a real query for the SOA), never slept for."""

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from dirlib import free_port
from fedlib import dns_query

NSD = "/usr/sbin/nsd"
KEYGEN = "/usr/bin/ldns-keygen"
SIGNZONE = "/usr/bin/ldns-signzone"
START_TIMEOUT = 15.0


def spki_sha256(cert_path):
    """The hex SHA-256 of a certificate's SubjectPublicKeyInfo (TLSA 3 1 1)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


class SignedZone:
    def __init__(self, origin, records):
        for tool in (NSD, KEYGEN, SIGNZONE):
            if not Path(tool).exists():
                raise AssertionError("%s is missing: install nsd and ldnsutils "
                                     "(scripts/deps-test.txt)" % tool)
        self.origin = origin
        self.records = list(records)
        self.root = Path(tempfile.mkdtemp(prefix="natter-dane-"))
        self.port = free_port(udp_too=True)
        self.proc = None
        self.serial = 1
        self.ksk = self._keygen(ksk=True)
        self.zsk = self._keygen(ksk=False)
        self.trust_anchor = self.root / "anchor.key"
        shutil.copy(self.root / (self.ksk + ".key"), self.trust_anchor)
        (self.root / "nsd.conf").write_text(
            "server:\n"
            "  ip-address: 127.0.0.1\n"
            "  port: %d\n"
            "  username: \"\"\n"
            "  chroot: \"\"\n"
            "  zonesdir: \"%s\"\n"
            "  database: \"\"\n"
            "  zonelistfile: \"%s/zone.list\"\n"
            "  xfrdfile: \"%s/xfrd.state\"\n"
            "  pidfile: \"%s/nsd.pid\"\n"
            "  logfile: \"%s/nsd.log\"\n"
            "remote-control:\n"
            "  control-enable: no\n"
            "zone:\n"
            "  name: %s\n"
            "  zonefile: zone.signed\n"
            % (self.port, self.root, self.root, self.root, self.root, self.root, origin))

    @property
    def resolver(self):
        return "127.0.0.1@%d" % self.port

    def _keygen(self, ksk):
        args = [KEYGEN, "-a", "ECDSAP256SHA256"] + (["-k"] if ksk else []) + [self.origin]
        out = subprocess.run(args, cwd=self.root, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def _sign(self):
        lines = ["$ORIGIN %s." % self.origin, "$TTL 0",
                 "@ IN SOA ns admin %d 3600 600 86400 0" % self.serial,
                 "@ IN NS ns", "ns IN A 127.0.0.1"] + self.records
        (self.root / "zone").write_text("\n".join(lines) + "\n")
        subprocess.run([SIGNZONE, "-n", "-f", str(self.root / "zone.signed"),
                        str(self.root / "zone"), self.ksk, self.zsk],
                       cwd=self.root, check=True, capture_output=True)

    def start(self):
        self._sign()
        self.proc = subprocess.Popen([NSD, "-d", "-c", str(self.root / "nsd.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nsd exited: %s" % self._log())
            try:
                _, answers = dns_query("127.0.0.1", self.port, "ns." + self.origin, "A")
                if answers == ["127.0.0.1"]:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("nsd did not answer within %.0fs: %s" % (START_TIMEOUT,
                                                                       self._log()))

    def _log(self):
        path = self.root / "nsd.log"
        return path.read_text() if path.exists() else "(no log)"

    def replace(self, records):
        self.stop()
        self.records = list(records)
        self.serial += 1
        self.start()

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

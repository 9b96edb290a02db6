"""What natterd and natterctl tell an operator: the start-up hints, account
commands on directory hosts, `natterctl ports`, `--password-file -`,
certificate fingerprints (`natterctl cert` and the start-up log) and
`natterctl dns` on a machine without a fully qualified name."""

import asyncio
import hashlib
import re
import shutil
import signal
import ssl
import subprocess
import time

import pytest

import dirlib
from dnslib import Dnsmasq
from natterlib import NATTERCTL, RELEASE_BUILD, LoginFailed, sanitizer_reports

ALICE, ALICE_PW = "alice@localhost", "alice-secret"
DIR_DOMAIN = "ldap.test"


# ---------------------------------------------------------------- helpers ---

def fingerprints(pem_path):
    """(SHA-256, SHA-1) of the first certificate in a PEM file, as clients
    show them: upper-case hex pairs joined by colons."""
    text = pem_path.read_text()
    first = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                      text, re.S).group(0)
    der = ssl.PEM_cert_to_DER_cert(first)

    def colons(digest):
        return ":".join("%02X" % b for b in digest)
    return colons(hashlib.sha256(der).digest()), colons(hashlib.sha1(der).digest())


def not_after(pem_path):
    """The certificate's notAfter as natter prints it."""
    out = subprocess.run(["openssl", "x509", "-in", str(pem_path), "-noout", "-enddate"],
                         capture_output=True, text=True, check=True).stdout
    when = ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def ca_issued(directory, domain, san):
    """A certificate for domain issued by a fresh test CA: not self-signed."""
    ca_cert, ca_key = dirlib.make_ca(directory / "ca")
    return dirlib.make_server_cert(directory, ca_cert, ca_key, name=domain, san=san)


def directory_host(cert=None, key=None):
    """A host whose accounts come from a directory that is not there: the
    commands under test never reach it."""
    host = {"domain": DIR_DOMAIN, "auth": "ldap",
            "ldap": {"uri": "ldap://127.0.0.1:%d" % dirlib.dead_port(),
                     "base_dn": "ou=people,dc=natter,dc=test", "timeout": 1}}
    if cert:
        host.update(tls_cert=str(cert), tls_key=str(key))
    return host


def hint_lines(server):
    """natterd's log from "natterd ready" on, once the last hint is out."""
    server.wait_for_log("then connect any XMPP client")
    log = server.log
    return log[log.index("natterd ready"):]


# ------------------------------------------------------ hints (item 6) ---

def test_startup_hints_for_an_internal_host_with_the_generated_certificate(natter):
    hints = hint_lines(natter)
    assert "user add alice@localhost" in hints, hints
    sha256, _ = fingerprints(natter.root / "data" / "certs" / "localhost.crt")
    connect = [l for l in hints.splitlines() if "then connect any XMPP client" in l]
    assert connect and all("self-signed" in l and sha256 in l for l in connect), hints


def test_startup_hints_for_a_directory_host_with_a_real_certificate(natter_factory,
                                                                   tmp_path):
    cert, key = ca_issued(tmp_path, DIR_DOMAIN, "DNS:" + DIR_DOMAIN)
    server = natter_factory(hosts=[directory_host(cert, key), {"domain": "localhost"}])
    hints = hint_lines(server)
    assert "user add alice@%s" % DIR_DOMAIN not in hints, hints
    assert "host %s: accounts come from the directory" % DIR_DOMAIN in hints, hints
    # The internal host beside it still gets its natterctl line.
    assert "user add alice@localhost" in hints, hints
    connect = [l for l in hints.splitlines() if "then connect any XMPP client" in l]
    assert connect, hints
    for line in connect:
        assert "@" + DIR_DOMAIN in line and "alice@" not in line, line
        assert "self-signed" not in line and "accept" not in line, line


# ------------------------------------- user commands on directory hosts ---

@pytest.mark.parametrize("args,word", [
    (("user", "add", "bob@" + DIR_DOMAIN), "create the user in the directory"),
    (("user", "passwd", "bob@" + DIR_DOMAIN), "change the password in the directory"),
    (("user", "del", "bob@" + DIR_DOMAIN), "delete or lock the entry in the directory"),
    (("user", "add-bulk", "bench", "3", DIR_DOMAIN), "create the user in the directory"),
], ids=["add", "passwd", "del", "add-bulk"])
def test_user_commands_refused_on_a_directory_host(natter_factory, args, word):
    server = natter_factory(start=False, hosts=[{"domain": "localhost"}, directory_host()])
    proc = server.ctl(*args, input="bob-secret\n")
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "come from its directory" in proc.stderr and word in proc.stderr, proc.stderr
    listed = server.ctl("user", "list", check=True).stdout
    assert DIR_DOMAIN not in listed, listed
    # The internal host beside it is managed as before.
    server.ctl("user", "add", ALICE, input=ALICE_PW + "\n", check=True)


# ------------------------------------------------------- ports (item 7) ---

PORT_CASES = [
    # address, what "OPEN TO" must say
    ("127.0.0.20", "loopback only (127.0.0.0/8)"),
    ("127.255.255.254", "loopback only (127.0.0.0/8)"),
    ("::1", "loopback only (::1)"),
    ("::ffff:127.0.0.5", "loopback only (127.0.0.0/8)"),
    ("169.254.10.1", "link-local 169.254.0.0/16"),
    ("fe80::1", "link-local fe80::/10"),
    ("10.1.2.3", "private network 10.0.0.0/8"),
    ("172.16.0.1", "private network 172.16.0.0/12"),
    ("172.31.255.1", "private network 172.16.0.0/12"),
    ("192.168.7.1", "private network 192.168.0.0/16"),
    ("fd00:1::1", "unique local fc00::/7"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.1", "carrier-grade NAT"),
    # Just outside those ranges: reachable by whoever the port is for.
    ("172.32.0.1", None),
    ("100.128.0.1", None),
    ("128.0.0.1", None),
    ("0.0.0.0", None),
    ("::", None),
]


def test_ports_describes_loopback_link_local_and_private_ranges(natter_factory):
    listeners = [{"type": "c2s", "address": a, "port": 20000 + i}
                 for i, (a, _) in enumerate(PORT_CASES)]
    listeners.append({"type": "s2s", "address": "10.9.9.9", "port": 5269})
    listeners.append({"type": "s2s", "address": "127.0.0.20", "port": 5270})
    server = natter_factory(start=False, s2s={"enabled": True}, listeners=listeners)
    out = server.ctl("ports", check=True).stdout.splitlines()
    rows = {int(line.split()[0]): line for line in out[1:]}
    for i, (address, expected) in enumerate(PORT_CASES):
        row = rows[20000 + i]
        assert address in row, row
        reach = row.split("(RFC 6120)", 1)[1].strip()
        if expected is None:
            assert reach == "your users", row
        else:
            assert expected in reach and reach != "your users", row
        if "loopback" in (expected or ""):
            assert reach.startswith("nobody"), row
    assert "private network 10.0.0.0/8" in rows[5269] and "Internet" not in rows[5269], \
        rows[5269]
    assert "loopback only" in rows[5270] and "Internet" not in rows[5270], rows[5270]


# ------------------------------------------- --password-file - (item 8) ---

async def test_password_file_dash_reads_standard_input(natter, net):
    proc = natter.ctl("user", "add", ALICE, "--password-file", "-",
                      input="from-stdin\n")
    assert proc.returncode == 0, proc.stderr
    assert not (natter.root / "-").exists()
    assert (await net.login(natter, ALICE, "from-stdin")).boundjid.bare == ALICE

    proc = natter.ctl("user", "passwd", ALICE, "--password-file=-", input="changed\n")
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(LoginFailed):
        await net.login(natter, ALICE, "from-stdin")
    assert (await net.login(natter, ALICE, "changed")).boundjid.bare == ALICE


def test_password_file_named_dash_is_reached_by_path(natter_factory):
    """A file really called "-" is still usable, as ./-."""
    server = natter_factory(start=False)
    (server.root / "-").write_text("in-a-file\n")
    proc = server.ctl("user", "add", ALICE, "--password-file", "./-", input="")
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------- certificates (item 9) ---

def cert_block(out, domain):
    """The lines `natterctl cert` printed for domain, as {label: value}."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(domain + ":"))
    block = {"": lines[start].split(":", 1)[1].strip()}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        label, value = re.split(r"\s{2,}", line.strip(), 1)
        block[label] = value
    return block


def test_cert_shows_the_generated_self_signed_certificate(natter):
    path = natter.root / "data" / "certs" / "localhost.crt"
    sha256, sha1 = fingerprints(path)
    out = natter.ctl("cert", check=True).stdout
    b = cert_block(out, "localhost")
    assert b[""] == str(path), out
    assert b["issuer"] == "itself (self-signed)", out
    assert b["subject CN"] == "localhost", out
    assert b["names"] == "DNS:localhost", out
    assert b["expires"].startswith(not_after(path) + " (in "), out
    assert b["SHA-256"] == sha256 and b["SHA-1"] == sha1, out
    # natterd said the same at start.
    line = [l for l in natter.log.splitlines() if "host localhost: certificate" in l]
    assert line and sha256 in line[0] and sha1 in line[0] and "self-signed" in line[0], \
        natter.log


def test_cert_shows_configured_certificates(natter_factory, tmp_path):
    cert, key = ca_issued(tmp_path, "localhost",
                          "DNS:localhost,DNS:chat.localhost,IP:127.0.0.1")
    chain = tmp_path / "chain.pem"   # leaf then CA, as a chain file holds them
    chain.write_text(cert.read_text() + (tmp_path / "ca" / "natter-test-ca.pem").read_text())
    server = natter_factory(hosts=[{"domain": "localhost", "tls_cert": str(chain),
                                    "tls_key": str(key)},
                                   {"domain": "other.localhost"}])
    sha256, sha1 = fingerprints(cert)
    out = server.ctl("cert", check=True).stdout
    b = cert_block(out, "localhost")
    assert b[""] == str(chain), out
    assert b["issuer"] == "Natter Test CA", out
    assert b["names"] == "DNS:localhost, DNS:chat.localhost, IP:127.0.0.1", out
    assert b["expires"].startswith(not_after(cert) + " (in "), out
    assert b["SHA-256"] == sha256 and b["SHA-1"] == sha1, out
    other = cert_block(out, "other.localhost")
    assert other["issuer"] == "itself (self-signed)", out
    only = server.ctl("cert", "other.localhost", check=True).stdout
    assert "localhost:" not in only.replace("other.localhost:", ""), only
    log = [l for l in server.log.splitlines() if "host localhost: certificate" in l]
    assert log and sha256 in log[0] and sha1 in log[0], server.log
    assert "self-signed" not in log[0], log[0]


def test_renewed_certificate_fingerprint_logged_after_sighup(natter_factory, tmp_path):
    cert, key = ca_issued(tmp_path / "old", "localhost", "DNS:localhost")
    server = natter_factory(hosts=[{"domain": "localhost", "tls_cert": str(cert),
                                    "tls_key": str(key)}])
    new_cert, new_key = ca_issued(tmp_path / "new", "localhost", "DNS:localhost")
    shutil.copy(new_cert, cert)   # renewed on disk, as certbot does
    shutil.copy(new_key, key)
    mark = server.log_mark()
    server.proc.send_signal(signal.SIGHUP)
    sha256, sha1 = fingerprints(new_cert)
    server.wait_for_log("host localhost: certificate", since=mark)
    line = [l for l in server.log[mark:].splitlines() if "host localhost: certificate" in l]
    assert sha256 in line[0] and sha1 in line[0], line
    assert server.ctl("cert", check=True).stdout.count(sha256) == 1


def test_cert_before_the_first_start_says_where_it_will_be(natter_factory):
    server = natter_factory(start=False)
    proc = server.ctl("cert")
    assert proc.returncode == 1, proc.stdout
    assert "no certificate yet" in proc.stdout, proc.stdout


# ----------------------------------------------------------- dns (item 10) ---

UNSHARE = shutil.which("unshare")


def natterctl_without_fqdn(server, *args):
    """natterctl in a UTS namespace whose host name is a short one."""
    proc = subprocess.run(
        [UNSHARE, "--uts", "sh", "-c", 'hostname natter-nofqdn && exec "$@"', "sh",
         str(NATTERCTL), "-c", str(server.config_path), *args],
        capture_output=True, text=True, timeout=60, cwd=server.root)
    assert not sanitizer_reports(proc.stderr), proc.stderr
    return proc


def test_dns_works_as_the_readme_shows_on_a_machine_without_fqdn(natter_factory):
    # make test runs as root, where unshare (util-linux) can give natterctl
    # a host name of its own; without it this is a failure, not a skip.
    assert UNSHARE is not None and subprocess.run(
        [UNSHARE, "--uts", "true"], capture_output=True).returncode == 0, (
        "unshare --uts needs root: run the suite as make test does")
    domain = "chat.nattertest"
    server = natter_factory(start=False, hosts=[{"domain": domain}])
    dns = Dnsmasq(srv=[("_xmpp-client._tcp." + domain, domain, server.c2s_port),
                       ("_xmpps-client._tcp." + domain, domain, server.tls_port)],
                  hosts={domain: ["127.0.0.1"]})
    dns.start()
    try:
        proc = natterctl_without_fqdn(server, "dns", domain, "--resolver", dns.resolver)
    finally:
        dns.cleanup()
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "natter-nofqdn" in proc.stdout and "--target" in proc.stdout, proc.stdout
    assert "IN SRV 0 5 %d %s." % (server.c2s_port, domain) in proc.stdout, proc.stdout
    assert "all records ok" in proc.stdout, proc.stdout


# ------------------------------------------------- natterctl memory ---

def heap_figures(server):
    proc = server.ctl("memory")
    assert proc.returncode == 0, proc.stderr
    lines = dict(l.split(" ", 1) for l in proc.stdout.splitlines() if " " in l)
    return lines["allocator"], int(lines["heap_in_use"]), int(lines["heap_held"])


async def test_memory_reports_the_optimised_build_on_jemalloc(natter_factory, net):
    """The optimised natterd allocates with jemalloc (docs/decisions/0011),
    and `natterctl memory` shows what it holds: 40 sessions add to the
    heap in use, and it falls again once they have left. Two of them
    exchange a message on the way, so the build that benchmarks and
    operators run serves real traffic in `make test`."""
    server = natter_factory(start=False)
    server.binary = RELEASE_BUILD / "natterd"
    server.start()
    allocator, base, held = heap_figures(server)
    assert allocator == "jemalloc", allocator
    assert 0 < base <= held, (base, held)
    for i in range(40):
        server.add_user("m%d@localhost" % i, "pw")
    clients = [await net.login(server, "m%d@localhost" % i, "pw") for i in range(40)]
    await clients[1].available()
    clients[0].send_message(mto="m1@localhost", mbody="over jemalloc", mtype="chat")
    assert (await clients[1].next_message())["body"] == "over jemalloc"
    _, busy, _ = heap_figures(server)
    assert busy > base + 40 * 4096, (base, busy)
    for c in clients:
        await c.close()
    deadline = time.monotonic() + 10
    while heap_figures(server)[1] > busy - 40 * 2048:
        assert time.monotonic() < deadline, \
            "the heap stayed at %d B after 40 sessions left (%d B with them, %d before)" \
            % (heap_figures(server)[1], busy, base)
        await asyncio.sleep(0.1)

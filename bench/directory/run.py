#!/usr/bin/python3
"""LDAP login rate against the internal store (issue 5's figure).

Starts Debian's slapd with USERS generated accounts (tests/integration/
dirlib.py's directory, plus userN entries), one natterd with two hosts --
localhost (internal accounts, made with natterctl add-bulk) and ldap.test
(auth: ldap, StartTLS to slapd) -- and runs natter-load's login scenario
with 50 connectors in flight against each:

  internal/SCRAM-SHA-1   the default path of internal accounts
  internal/PLAIN         the same store, PBKDF2 on the loop
  ldap/PLAIN, no cache   every login: search + bind at the directory
  ldap/PLAIN, cache      cache_ttl 60: repeated logins skip the directory

Then the cost of auto-buddy groups: a group of GROUP members (200:
GROUP*(GROUP-1) roster items), applied once at start, again unchanged, and
after one member left -- the "applied N ms" of natterd's refresh line (the
work runs on natterd's service loop, never on a client loop).

Usage:  NATTER_BUILD=build /usr/bin/python3 bench/directory/run.py
Environment: USERS (1000), LOGINS (5000), CONCURRENCY (50), POOL (4: the
directory pool_size), GROUP (200), OUT (bench/results/directory-login.json).
Prints a table; writes the JSON of every run to OUT.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import dirlib  # noqa: E402  (the tests' real slapd)

BUILD = Path(os.environ.get("NATTER_BUILD", ROOT / "build")).resolve()
USERS = int(os.environ.get("USERS", 1000))
LOGINS = int(os.environ.get("LOGINS", 5000))
CONCURRENCY = int(os.environ.get("CONCURRENCY", 50))
POOL = int(os.environ.get("POOL", 4))
GROUP = int(os.environ.get("GROUP", 200))
OUT = Path(os.environ.get("OUT", ROOT / "bench" / "results" / "directory-login.json"))
PASSWORD = "bench-password"


def add_users(slapd, n):
    """userN under ou=people, in one ldapmodify run."""
    entries = []
    for i in range(1, n + 1):
        entries.append(
            "dn: uid=user%d,%s\nchangetype: add\nobjectClass: inetOrgPerson\n"
            "uid: user%d\ncn: User %d\nsn: %d\nuserPassword: %s\n"
            % (i, dirlib.PEOPLE, i, i, i, PASSWORD))
    slapd.ldapmodify("\n".join(entries))


def yaml_of(value, indent=0):
    """The little YAML natterd needs (maps, lists, scalars), quoted."""
    pad = " " * indent
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                out.append("%s%s:\n%s" % (pad, k, yaml_of(v, indent + 2)))
            else:
                out.append("%s%s: %s" % (pad, k, yaml_of(v)))
        return "\n".join(out)
    if isinstance(value, list):
        out = []
        for v in value:
            inner = yaml_of(v, indent + 2).lstrip()
            out.append("%s- %s" % (pad, inner))
        return "\n".join(out)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def start_natterd(tmp, slapd, cache_ttl, port, groups=None, log_level="warn"):
    ldap = dirlib.ldap_section(slapd, cache_ttl=cache_ttl, pool_size=POOL,
                               groups=groups, timeout=5)
    cfg = {
        "log_level": log_level,
        "data_dir": str(tmp / "data"),
        "hosts": [{"domain": "localhost"},
                  {"domain": "ldap.test", "auth": "ldap", "ldap": ldap}],
        "listeners": [{"type": "c2s", "address": "127.0.0.1", "port": port}],
    }
    conf = tmp / "natter.yaml"
    conf.write_text(yaml_of(cfg) + "\n")
    subprocess.run([str(BUILD / "natterctl"), "-c", str(conf), "user", "add-bulk",
                    "user", str(USERS), "localhost"], input=PASSWORD + "\n",
                   text=True, check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([str(BUILD / "natterd"), "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("natterd exited:\n" + proc.stdout.read().decode())
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), 1):
                return proc, conf
        except OSError:
            time.sleep(0.05)
    raise SystemExit("natterd did not listen within 30 s")


def load(port, domain, mech, pid):
    cmd = [str(BUILD / "natter-load"), "login", "--port", str(port), "--domain", domain,
           "--mech", mech, "--password", PASSWORD, "--logins", str(LOGINS),
           "--users", str(USERS), "--concurrency", str(CONCURRENCY),
           "--threads", "1", "--server-pid", str(pid), "--quiet", "--duration", "120"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("natter-load failed:\n" + r.stderr)
    return json.loads(r.stdout)


def refresh_line(proc, lines):
    """Reads natterd's output until its next directory refresh line."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode("utf-8", "replace")
        if not line:
            raise SystemExit("natterd exited:\n" + "".join(lines))
        lines.append(line)
        if "directory refresh" in line and "roster changes" in line:
            return line.split("directory refresh", 1)[1].strip()
    raise SystemExit("no directory refresh line within 600 s")


def measure_groups(slapd):
    dn = "cn=bench,%s" % dirlib.GROUPS
    members = "".join("member: uid=user%d,%s\n" % (i, dirlib.PEOPLE)
                      for i in range(1, GROUP + 1))
    slapd.ldapmodify("dn: %s\nchangetype: add\nobjectClass: groupOfNames\ncn: bench\n%s"
                     % (dn, members))
    tmp = Path(tempfile.mkdtemp(prefix="nbench-", dir="/tmp"))
    port = dirlib.free_port()
    proc, conf = start_natterd(tmp, slapd, 0, port, groups=[{"dn": dn, "name": "Bench"}],
                               log_level="info")
    out = []
    lines = []
    try:
        out.append(("first apply", refresh_line(proc, lines)))
        ctl = [str(BUILD / "natterctl"), "-c", str(conf), "directory", "refresh"]
        subprocess.run(ctl, check=True, capture_output=True)
        out.append(("unchanged", refresh_line(proc, lines)))
        slapd.ldapmodify("dn: %s\nchangetype: modify\ndelete: member\nmember: uid=user1,%s\n"
                         % (dn, dirlib.PEOPLE))
        subprocess.run(ctl, check=True, capture_output=True)
        out.append(("one member left", refresh_line(proc, lines)))
    finally:
        proc.terminate()
        proc.wait(30)
        subprocess.run(["rm", "-rf", str(tmp)])
    return out


def main():
    for tool in ("natterd", "natterctl", "natter-load"):
        if not (BUILD / tool).exists():
            raise SystemExit("%s missing: build natter first (make build)" % (BUILD / tool))
    slapd = dirlib.Slapd()
    results = []
    try:
        slapd.start()
        add_users(slapd, USERS)
        runs = [("internal", "scram", "localhost", 0), ("internal", "plain", "localhost", 0),
                ("ldap", "plain", "ldap.test", 0), ("ldap", "plain", "ldap.test", 60)]
        for source, mech, domain, ttl in runs:
            tmp = Path(tempfile.mkdtemp(prefix="nbench-", dir="/tmp"))
            port = dirlib.free_port()
            proc, _ = start_natterd(tmp, slapd, ttl, port)
            try:
                r = load(port, domain, mech, proc.pid)
            finally:
                proc.terminate()
                proc.wait(30)
                subprocess.run(["rm", "-rf", str(tmp)])
            label = "%s/%s%s" % (source, mech.upper(),
                                 ", cache %ds" % ttl if ttl else
                                 (", no cache" if source == "ldap" else ""))
            r["label"] = label
            results.append(r)
            print("%-28s %8.0f logins/s  p50 %6.1f ms  p99 %6.1f ms  failed %d"
                  % (label, r["logins_per_s"], r["p50_ms"], r["p99_ms"], r["login_failed"]),
                  flush=True)
        groups = measure_groups(slapd)
    finally:
        slapd.stop()
        slapd.cleanup()
    base = next(r for r in results if r["label"] == "internal/SCRAM")
    print("\nratios against internal/SCRAM (the default of internal accounts):")
    for r in results:
        print("  %-28s %.2f" % (r["label"], r["logins_per_s"] / base["logins_per_s"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    print("\nauto-buddy group of %d members (%d roster items):" % (GROUP, GROUP * (GROUP - 1)))
    for phase, summary in groups:
        print("  %-22s %s" % (phase, summary))
    OUT.write_text(json.dumps({"users": USERS, "logins": LOGINS, "concurrency": CONCURRENCY,
                               "pool_size": POOL, "runs": results,
                               "group_members": GROUP,
                               "groups": dict(groups)}, indent=2) + "\n")
    print("written to %s" % OUT)


if __name__ == "__main__":
    main()

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

Usage:  NATTER_BUILD=build /usr/bin/python3 bench/directory/run.py
Environment: USERS (1000), LOGINS (5000), CONCURRENCY (50), POOL (4: the
directory pool_size), OUT (bench/results/directory-login.json).
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


def start_natterd(tmp, slapd, cache_ttl, port):
    ldap = dirlib.ldap_section(slapd, cache_ttl=cache_ttl, pool_size=POOL,
                               groups=None, timeout=5)
    cfg = {
        "log_level": "warn",
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
    finally:
        slapd.stop()
        slapd.cleanup()
    base = next(r for r in results if r["label"] == "internal/SCRAM")
    print("\nratios against internal/SCRAM (the default of internal accounts):")
    for r in results:
        print("  %-28s %.2f" % (r["label"], r["logins_per_s"] / base["logins_per_s"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"users": USERS, "logins": LOGINS, "concurrency": CONCURRENCY,
                               "pool_size": POOL, "runs": results}, indent=2) + "\n")
    print("written to %s" % OUT)


if __name__ == "__main__":
    main()

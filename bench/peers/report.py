#!/usr/bin/python3
"""Results of `make bench` (bench/run.sh): record one run, describe the
machine, and summarise everything into a table with natter/peer ratios.

  report.py record --out FILE --server S --scenario SC --round N
            --load-json RAW --rss-before KIB --rss-after KIB --cpu-s S
            --wall-s S --alive 0|1 --version V
      FILE gets natter-load's JSON object under "load" plus what the driver
      measured from outside (server RSS before/after, CPU seconds).
  report.py machine --out FILE --servers "A B" --fd-limit N --params "K=V ..."
  report.py summarize --results DIR --servers "A B"
      writes DIR/summary.json, DIR/table.txt, DIR/chat-SERVER.dat and
      DIR/muc-SIZE-SERVER.dat (the data of the latency plots) from
      DIR/SERVER-SCENARIO[-rN].json. The muc scenario runs once per room
      size, recorded as scenario muc-SIZE; chat-mam runs chat with the
      message archive off and on, recorded as chat-mam-off and chat-mam-on,
      and their ratio is the pseudo-scenario chat-mam.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys

# The latency bounds of the targets: the chat result is the highest
# delivered rate whose p99 stays under each.
P99_BOUNDS_MS = (100.0, 10.0)
# A step counts only if the server delivered at least this share of the
# offered rate; past saturation the generator skips sends and latency alone
# would flatter the server.
DELIVERED_SHARE = 0.9


def cmd_record(a):
    try:
        with open(a.load_json) as f:
            load = json.load(f)
    except (OSError, ValueError) as e:
        load = {"error": "no JSON from natter-load: %s" % e}
    rec = {
        "server": a.server,
        "version": a.version,
        "scenario": a.scenario,
        "round": a.round,
        "server_alive_after": a.alive == 1,
        "server_rss_before_kib": a.rss_before,
        "server_rss_after_kib": a.rss_after,
        "server_cpu_s": round(a.cpu_s, 3),
        "wall_s": round(a.wall_s, 3),
        "features": a.features,
        "load": load,
    }
    if a.archive_load_s:
        rec["archive_load_s"] = round(float(a.archive_load_s), 1)
    with open(a.out, "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cmd_machine(a):
    cpu = re.search(r"^model name\s*:\s*(.*)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", _read("/proc/meminfo"), re.M)
    osrel = re.search(r'^PRETTY_NAME="?([^"\n]*)', _read("/etc/os-release"), re.M)
    versions = {}
    for s in a.servers.split():
        if s == "natter":
            try:
                v = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True, cwd=os.path.dirname(__file__)).stdout.strip()
            except OSError:
                v = ""
            versions[s] = "git " + (v or "unknown")
        else:
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", s], capture_output=True,
                               text=True).stdout.strip()
            versions[s] = "Debian " + (v or "unknown")
    m = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 1048576, 1) if mem else None,
        "kernel": platform.release(),
        "os": osrel.group(1) if osrel else "",
        "open_file_limit": a.fd_limit,
        "servers": versions,
        "params": dict(kv.split("=", 1) for kv in a.params.split()),
    }
    with open(a.out, "w") as f:
        json.dump(m, f, indent=1)
        f.write("\n")


def _get(d, *paths, default=None):
    """First value found among dotted paths in nested dicts."""
    for p in paths:
        cur = d
        for k in p.split("."):
            if isinstance(cur, dict) and k in cur:
                cur = cur[k]
            else:
                cur = None
                break
        if cur is not None:
            return cur
    return default


def _steps(load):
    """The chat steps as (offered, delivered_per_s, p50_ms, p99_ms,
    server_cores) tuples, whatever the exact key names."""
    out = []
    for st in _get(load, "steps", "rates", default=[]) or []:
        offered = _get(st, "offered_per_s", "offered", "rate", "offered_rate")
        delivered = _get(st, "delivered_per_s", "delivered_rate", "received_per_s")
        p50 = _get(st, "p50_ms", "latency_ms.p50", "latency.p50")
        p99 = _get(st, "p99_ms", "latency_ms.p99", "latency.p99")
        cores = _get(st, "server_cpu_cores", "server.cpu_cores")
        if offered is None or delivered is None or p99 is None:
            continue
        out.append((float(offered), float(delivered), float(p50 or 0), float(p99),
                    None if cores is None else float(cores)))
    return out


def _chat_metrics(load):
    steps = _steps(load)
    m = {"steps": len(steps)}
    if "max_rate_p99_under_100ms" in load:
        # natter-load judges each step itself (chat_step_ok: p99 under the
        # bound, nothing lost, the offered rate actually sent); use that.
        for bound in P99_BOUNDS_MS:
            rate = load.get("max_rate_p99_under_%gms" % bound, 0)
            m["rate_p99_under_%gms" % bound] = round(
                load.get("delivered_per_s_p99_under_%gms" % bound, 0) or 0)
            m["offered_p99_under_%gms" % bound] = rate
            if bound == P99_BOUNDS_MS[0]:
                for offered, delivered, _p50, _p99, cores in steps:
                    if offered == rate and cores is not None and delivered > 0:
                        m["server_cpu_us_per_msg"] = round(cores * 1e6 / delivered, 2)
        return m, steps
    for bound in P99_BOUNDS_MS:
        best = None
        for offered, delivered, _p50, p99, cores in steps:
            if p99 < bound and delivered >= DELIVERED_SHARE * offered:
                if best is None or delivered > best[0]:
                    best = (delivered, cores)
        key = "rate_p99_under_%gms" % bound
        m[key] = round(best[0]) if best else 0
        if bound == P99_BOUNDS_MS[0] and best and best[1] is not None and best[0] > 0:
            m["server_cpu_us_per_msg"] = round(best[1] * 1e6 / best[0], 2)
    return m, steps


# The muc scenario is read at this p99 bound (natter-load judges each step:
# every occupant got every message, the offered rate was sent).
MUC_P99_BOUND_MS = 50
# ... and at a looser one, judged here the same way from the steps: in a room
# of 1000, one message is 1000 writes, and a server that cannot finish them
# within 50 ms has no figure at the first bound at all.
MUC_P99_LOOSE_MS = 200


def _muc_steps(load):
    """The muc steps as (offered deliveries/s, delivered/s, p50, p99)."""
    out = []
    for st in load.get("steps") or []:
        out.append((float(st.get("offered_deliveries_per_s", 0)), float(st.get("delivered_per_s", 0)),
                    float(_get(st, "latency_ms.p50", default=0)),
                    float(_get(st, "latency_ms.p99", default=0))))
    return out


def _muc_metrics(load):
    b = MUC_P99_BOUND_MS
    m = {
        "delivered_p99_under_%dms" % b: round(load.get("delivered_per_s_p99_under_%dms" % b, 0) or 0),
        "offered_msgs_p99_under_%dms" % b: load.get("max_rate_p99_under_%dms" % b, 0),
        "join_s": load.get("join_s"),
        "joined": load.get("joined"),
    }
    cpu = load.get("server_cpu_us_per_delivery_p99_under_%dms" % b)
    if cpu is not None:
        m["server_cpu_us_per_delivery"] = round(cpu, 2)
    best = None
    for st in load.get("steps") or []:
        ok = (st.get("lost", 1) == 0 and st.get("errors", 1) == 0 and
              st.get("sent", 0) >= 0.95 * st.get("offered_per_s", 0) * st.get("seconds", 0) > 0 and
              _get(st, "latency_ms.p99", default=1e9) < MUC_P99_LOOSE_MS)
        if ok and (best is None or st["offered_per_s"] > best["offered_per_s"]):
            best = st
    loose = MUC_P99_LOOSE_MS
    m["delivered_p99_under_%dms" % loose] = round(best["delivered_per_s"]) if best else 0
    if best and best.get("server_cpu_us_per_delivery"):
        m["server_cpu_us_per_delivery_p99_under_%dms" % loose] = round(best["server_cpu_us_per_delivery"], 2)
    return m


def _mam_metrics(rec, load):
    """Archive query latency; a kind of page only where every measured user
    got it (the deep page needs an archive at least --deep long)."""
    m = {}
    if not load.get("supported"):
        return m
    heavy = _get(load, "params.heavy", default=0)
    if load.get("latest_results_avg"):
        m["latest_p50_ms"] = _get(load, "latest_page_ms.p50")
        m["latest_p99_ms"] = _get(load, "latest_page_ms.p99")
    if _get(load, "walk.clients_reached_deep", default=0) >= heavy > 0 and load.get("deep_results_avg"):
        m["deep_p50_ms"] = _get(load, "deep_page_ms.p50")
        m["deep_p99_ms"] = _get(load, "deep_page_ms.p99")
    m["walk_page_p50_ms"] = _get(load, "walk.page_ms.p50")
    m["archive_messages"] = _get(load, "archive.messages")
    m["archive_load_s"] = rec.get("archive_load_s") or _get(load, "archive.fill_s")
    m["short_pages"] = load.get("short_pages")
    return m


def _pep_metrics(load):
    m = {}
    if not load.get("supported") or not load.get("first_publish_notified"):
        return m
    m["notifications_per_s"] = round(load.get("notifications_per_s_p99_under_200ms", 0) or 0)
    m["publishes_per_s"] = load.get("max_rate_p99_under_200ms", 0)
    m["contacts_notified"] = load.get("first_publish_notified")
    steps = load.get("steps") or []
    if steps:
        m["first_step_publishes_per_s"] = steps[0].get("offered_per_s")
        m["publish_to_last_p50_ms"] = _get(steps[0], "publish_to_last_ms.p50")
        m["publish_to_last_p99_ms"] = _get(steps[0], "publish_to_last_ms.p99")
    for st in steps:
        if st.get("offered_per_s") == m["publishes_per_s"] and st.get("server_cpu_us_per_notification"):
            m["server_cpu_us_per_notification"] = round(st["server_cpu_us_per_notification"], 2)
    return m


def _metrics(rec):
    """The numbers of one run that go into the table."""
    load = rec.get("load") or {}
    sc = rec["scenario"]
    m = {}
    if sc in ("idle", "idle-sm"):
        n = _get(load, "logged_in", "connections.logins", default=0) or 0
        before, after = rec.get("server_rss_before_kib"), rec.get("server_rss_after_kib")
        m["clients"] = n
        m["rss_before_mib"] = round(before / 1024, 1) if before else None
        m["rss_after_mib"] = round(after / 1024, 1) if after else None
        m["kib_per_client"] = round((after - before) / n, 2) if n and after and before else None
    elif sc == "login":
        m["logins_per_s"] = round(_get(load, "logins_per_s", default=0) or 0)
        m["p50_ms"] = _get(load, "p50_ms", "login_ms.p50")
        m["p99_ms"] = _get(load, "p99_ms", "login_ms.p99")
        m["failed"] = _get(load, "login_failed", "connections.login_failed", default=0)
    elif sc == "chat" or sc.startswith("chat-mam-"):
        m, _ = _chat_metrics(load)
    elif sc == "mam":
        m = _mam_metrics(rec, load)
    elif sc == "pep":
        m = _pep_metrics(load)
    elif sc.startswith("muc-"):
        m = _muc_metrics(load)
    elif sc.startswith("reconnect-"):
        # Issue 13: all clients cut at once and back; mode is the one that ran.
        m["mode"] = _get(load, "params.mode")
        if m["mode"] == "full" and _get(load, "params.tls_resume"):
            m["mode"] = "full+tls"
        m["supported"] = _get(load, "supported")
        m["clients"] = _get(load, "logged_in")
        m["reconnects_per_s"] = round(_get(load, "reconnects_per_s", default=0) or 0)
        m["all_back_s"] = _get(load, "all_back_s")
        m["p50_ms"] = _get(load, "p50_ms")
        m["p99_ms"] = _get(load, "p99_ms")
        m["server_cpu_us_per_reconnect"] = _get(load, "server_cpu_us_per_reconnect")
        m["tls_resumed"] = _get(load, "tls_resumed")
        m["sm_resumed"] = _get(load, "sm_resumed")
        m["failed"] = _get(load, "reconnect_failed")
    elif sc == "presence":
        m["presence_per_s"] = round(_get(load, "presence_per_s", "received_per_s",
                                         "presences_per_s", default=0) or 0)
    if rec.get("features"):
        m["features"] = rec["features"]
    m["errors"] = _get(load, "connections.failed", default=0)
    m["first_error"] = _get(load, "errors.first", "error")
    return m


# (scenario, metric, label, higher is better)
ROWS = [
    ("idle", "kib_per_client", "idle: server KiB per client", False),
    ("login", "logins_per_s", "login: logins/s", True),
    ("login", "p99_ms", "login: p99 ms", False),
    ("chat", "rate_p99_under_100ms", "chat: msgs/s, p99 < 100 ms", True),
    ("chat", "rate_p99_under_10ms", "chat: msgs/s, p99 < 10 ms", True),
    ("chat", "server_cpu_us_per_msg", "chat: server CPU us/msg", False),
    ("presence", "presence_per_s", "presence: stanzas/s", True),
    # Issue 13: reconnects (full: TLS handshake, SASL, bind; best: the
    # fastest mode each server supports, named in the notes) and SM memory.
    ("reconnect-full", "reconnects_per_s", "reconnect, full: reconnects/s", True),
    ("reconnect-full", "all_back_s", "reconnect, full: s until all back", False),
    ("reconnect-full", "p99_ms", "reconnect, full: p99 ms", False),
    ("reconnect-full", "server_cpu_us_per_reconnect", "reconnect, full: server CPU us/reconnect", False),
    ("reconnect-best", "reconnects_per_s", "reconnect, best mode: reconnects/s", True),
    ("reconnect-best", "all_back_s", "reconnect, best mode: s until all back", False),
    ("reconnect-best", "p99_ms", "reconnect, best mode: p99 ms", False),
    ("reconnect-best", "server_cpu_us_per_reconnect", "reconnect, best mode: server CPU us/reconnect", False),
    ("idle-sm", "kib_per_client", "idle with SM: server KiB per client", False),
    # Issue 12: the archive, MAM queries, PEP.
    ("chat-mam-off", "rate_p99_under_100ms", "chat, archive off: msgs/s, p99 < 100 ms", True),
    ("chat-mam-on", "rate_p99_under_100ms", "chat, archive on (all): msgs/s, p99 < 100 ms", True),
    ("chat-mam", "on_off_100ms", "chat: archive on/off, p99 < 100 ms", True),
    ("chat-mam-off", "rate_p99_under_10ms", "chat, archive off: msgs/s, p99 < 10 ms", True),
    ("chat-mam-on", "rate_p99_under_10ms", "chat, archive on (all): msgs/s, p99 < 10 ms", True),
    ("chat-mam-on", "server_cpu_us_per_msg", "chat, archive on: server CPU us/msg", False),
    ("mam", "latest_p50_ms", "mam: latest page p50 ms", False),
    ("mam", "latest_p99_ms", "mam: latest page p99 ms", False),
    ("mam", "deep_p50_ms", "mam: page 10,000 back p50 ms", False),
    ("mam", "deep_p99_ms", "mam: page 10,000 back p99 ms", False),
    ("pep", "notifications_per_s", "pep: notifications/s, p99 publish-to-last < 200 ms", True),
    ("pep", "publish_to_last_p50_ms", "pep: publish to last notification p50 ms, 1/s", False),
    ("pep", "publish_to_last_p99_ms", "pep: publish to last notification p99 ms, 1/s", False),
    ("pep", "server_cpu_us_per_notification", "pep: server CPU us/notification", False),
]


def cmd_summarize(a):
    servers = a.servers.split()
    runs = {}
    for path in sorted(glob.glob(os.path.join(a.results, "*-*.json"))):
        if os.path.basename(path) in ("summary.json",):
            continue
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if "scenario" not in rec or "server" not in rec:
            continue
        runs.setdefault((rec["server"], rec["scenario"]), []).append(rec)

    summary = {}
    for (server, sc), recs in runs.items():
        ms = [_metrics(r) for r in recs]
        merged = {}
        for k in ms[0]:
            vals = [m.get(k) for m in ms if isinstance(m.get(k), (int, float))]
            merged[k] = statistics.median(vals) if vals else ms[0][k]
        merged["rounds"] = len(recs)
        summary.setdefault(server, {})[sc] = merged
        if sc.startswith("muc-"):
            with open(os.path.join(a.results, "%s-%s.dat" % (sc, server)), "w") as f:
                name = "%s_%s" % (server, sc[4:])
                f.write("offered %s_delivered %s_p50 %s_p99\n" % (name, name, name))
                for row in _muc_steps(recs[-1].get("load") or {}):
                    f.write("%g %g %g %g\n" % row)
        if sc == "chat":
            _, steps = _chat_metrics(recs[-1].get("load") or {})
            with open(os.path.join(a.results, "chat-%s.dat" % server), "w") as f:
                f.write("offered %s_delivered %s_p50 %s_p99\n" % (server, server, server))
                for offered, delivered, p50, p99, _c in steps:
                    f.write("%g %g %g %g\n" % (offered, delivered, p50, p99))

    # Archive on against off, per server, from the two chat-mam runs: with
    # several rounds, the median of each round's own ratio (off and on run
    # back to back, so a round's pair shares the machine's mood of the
    # moment, which moves the rates by a fifth between minutes).
    for server, per in summary.items():
        on_recs, off_recs = runs.get((server, "chat-mam-on")), runs.get((server, "chat-mam-off"))
        if not on_recs or not off_recs:
            continue
        off_by_round = {r.get("round"): _metrics(r) for r in off_recs}
        r = {}
        for bound in ("100ms", "10ms"):
            key = "rate_p99_under_" + bound
            ratios = []
            for rec in on_recs:
                m_on, m_off = _metrics(rec), off_by_round.get(rec.get("round"))
                a_on, a_off = m_on.get(key), (m_off or {}).get(key)
                if isinstance(a_on, (int, float)) and a_off:
                    ratios.append(a_on / a_off)
            if ratios:
                r["on_off_" + bound] = round(statistics.median(ratios), 2)
                if len(ratios) > 1:
                    r["on_off_%s_rounds" % bound] = [round(x, 2) for x in ratios]
        per["chat-mam"] = r

    try:
        with open(os.path.join(a.results, "machine.json")) as f:
            machine = json.load(f)
    except (OSError, ValueError):
        machine = {}
    with open(os.path.join(a.results, "summary.json"), "w") as f:
        json.dump({"machine": machine, "results": summary}, f, indent=1)
        f.write("\n")

    rows_spec = list(ROWS)
    deep = (machine.get("params") or {}).get("MAM_DEEP", "10000")
    if deep != "10000":
        rows_spec = [(sc, k, l.replace("10,000", deep), h) for sc, k, l, h in rows_spec]
    sizes = sorted({int(sc[4:]) for per in summary.values() for sc in per
                    if sc.startswith("muc-") and sc[4:].isdigit()})
    at = next((i for i, r in enumerate(rows_spec) if r[0] == "presence"), len(rows_spec))
    for k in reversed(sizes):
        rows_spec[at:at] = [
            ("muc-%d" % k, "delivered_p99_under_%dms" % MUC_P99_BOUND_MS,
             "muc, rooms of %d: deliveries/s, p99 < %d ms" % (k, MUC_P99_BOUND_MS), True),
            ("muc-%d" % k, "server_cpu_us_per_delivery",
             "muc, rooms of %d: server CPU us/delivery at that step" % k, False),
            ("muc-%d" % k, "delivered_p99_under_%dms" % MUC_P99_LOOSE_MS,
             "muc, rooms of %d: deliveries/s, p99 < %d ms" % (k, MUC_P99_LOOSE_MS), True),
            ("muc-%d" % k, "server_cpu_us_per_delivery_p99_under_%dms" % MUC_P99_LOOSE_MS,
             "muc, rooms of %d: server CPU us/delivery at that step" % k, False),
        ]
    peers = [s for s in servers if s != "natter"]
    head = ["metric"] + servers + ["natter/%s" % p for p in peers if "natter" in servers]
    rows = []
    for sc, key, label, higher in rows_spec:
        vals = [_get(summary, "%s.%s.%s" % (s, sc, key)) for s in servers]
        if all(v is None for v in vals):
            continue
        row = [label + (" (more is better)" if higher else " (less is better)")]
        ratio_row = key.startswith("on_off")
        if ratio_row:
            # Already a ratio (archive on / off per server): two decimals,
            # and no natter/peer ratio of ratios.
            row += ["-" if v is None else "%.2f" % v for v in vals]
            row += ["" for p in peers if "natter" in servers]
            rows.append(row)
            continue
        row += ["-" if v is None else ("%.1f" % v if isinstance(v, float) and v < 100 else "%d" % round(v))
                for v in vals]
        if "natter" in servers:
            nv = _get(summary, "natter.%s.%s" % (sc, key))
            for p in peers:
                pv = _get(summary, "%s.%s.%s" % (p, sc, key))
                row.append("%.2f" % (nv / pv) if isinstance(nv, (int, float)) and pv else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = []
    if machine:
        lines.append("%s, %s cores, %s GiB, %s, kernel %s, open-file limit %s" % (
            machine.get("cpu"), machine.get("cores"), machine.get("memory_gib"),
            machine.get("os"), machine.get("kernel"), machine.get("open_file_limit")))
        lines.append("servers: " + ", ".join("%s %s" % kv for kv in machine.get("servers", {}).items()))
        lines.append("")
    fmt = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                              for i, c in enumerate(r))
    lines.append(fmt(head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(r) for r in rows]
    notes = []
    for server in servers:
        for sc, m in sorted(summary.get(server, {}).items()):
            if sc.startswith("reconnect-") and m.get("mode"):
                notes.append("%s %s: mode %s (TLS resumed %s, SM resumed %s of %s)" % (
                    server, sc, m["mode"], m.get("tls_resumed"), m.get("sm_resumed"),
                    m.get("clients")))
            if sc == "chat-mam" and m.get("on_off_100ms_rounds"):
                notes.append("%s chat-mam: archive on/off per round, p99 < 100 ms %s, < 10 ms %s "
                             "(the table: their medians)" % (
                                 server, " ".join("%.2f" % x for x in m["on_off_100ms_rounds"]),
                                 " ".join("%.2f" % x for x in m.get("on_off_10ms_rounds", []))))
            if m.get("features") and "rejected" in str(m.get("features")):
                notes.append("%s %s: ran with %s" % (server, sc, m["features"]))
            if m.get("first_error"):
                notes.append("%s %s: %s errors, first: %s" % (server, sc, m.get("errors"),
                                                               m["first_error"]))
    if notes:
        lines.append("")
        lines += notes
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.results, "table.txt"), "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--server", required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--round", type=int, default=1)
    r.add_argument("--load-json", required=True)
    r.add_argument("--rss-before", type=int)
    r.add_argument("--rss-after", type=int)
    r.add_argument("--cpu-s", type=float, default=0)
    r.add_argument("--wall-s", type=float, default=0)
    r.add_argument("--alive", type=int, default=1)
    r.add_argument("--version", default="")
    r.add_argument("--features", default="")
    r.add_argument("--archive-load-s", default="")
    m = sub.add_parser("machine")
    m.add_argument("--out", required=True)
    m.add_argument("--servers", required=True)
    m.add_argument("--fd-limit", default="")
    m.add_argument("--params", default="")
    s = sub.add_parser("summarize")
    s.add_argument("--results", required=True)
    s.add_argument("--servers", required=True)
    a = ap.parse_args()
    {"record": cmd_record, "machine": cmd_machine, "summarize": cmd_summarize}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

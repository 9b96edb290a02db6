#!/usr/bin/python3
"""natterd's CPU per login: SCRAM-SHA-256, PLAIN and a FAST token
(HT-SHA-256-NONE), all in SASL2 with Bind 2, one after the other over
fresh STARTTLS connections; and a baseline of the same connections that
stop after TLS and the features, so that the login's own cost shows.

    NATTER_BUILD=build [SCRAM_ITERATIONS=4096] python3 bench/fast_cpu.py [COUNT]

The server's CPU is utime + stime of natterd from /proc/PID/stat, read
before and after each run of COUNT logins (default 200)."""

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent
                       / "tests" / "integration"))

from natterlib import NatterServer, Net  # noqa: E402
from sasl2lib import (NS_FAST, answer, authenticate, b64, bind2, connect, fast_login, new_device,  # noqa: E402
                      scram_login, success_parts, user_agent)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def run(server, count, what):
    net = Net()
    device = new_device()
    stream, _ = await connect(net, server)
    success = await scram_login(
        stream, "bench", "bench-secret",
        inline=user_agent(device) + bind2()
        + "<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>" % NS_FAST)
    token = success_parts(success)[2].get("token")
    await net.aclose()
    before = cpu_seconds(server.proc.pid)
    started = time.monotonic()
    for _ in range(count):
        stream, _ = await connect(net, server)
        if what == "scram":
            success_parts(await scram_login(stream, "bench", "bench-secret",
                                            inline=bind2()))
        elif what == "plain":
            await stream.send(authenticate("PLAIN", b64("\0bench\0bench-secret"),
                                           bind2()))
            success_parts(await answer(stream))
        elif what == "fast":
            success = await fast_login(stream, "bench", token, ua_id=device,
                                       inline=bind2())
            token = success_parts(success)[2].get("token")
        if what != "tls-only":
            await stream.features()
        await net.aclose()
    return cpu_seconds(server.proc.pid) - before, time.monotonic() - started


async def main(count):
    iterations = int(os.environ.get("SCRAM_ITERATIONS", "4096"))
    server = NatterServer({"log_level": "info", "scram_iterations": iterations})
    try:
        server.start()
        server.add_user("bench@" + server.domain, "bench-secret")
        results = {}
        for what in ("tls-only", "scram", "plain", "fast"):
            results[what] = await run(server, count, what)
        base = results["tls-only"][0]
        print("natterd CPU for %d logins (scram_iterations: %s):"
              % (count, iterations))
        for what, (secs, wall) in results.items():
            extra = "" if what == "tls-only" else \
                ", %.2f ms above the TLS connection" % (
                    (secs - base) * 1000 / count)
            print("  %-8s %6.2f s, %.2f ms per login%s; wall %.2f ms per "
                  "connection (client included)"
                  % (what, secs, secs * 1000 / count, extra,
                     wall * 1000 / count))
    finally:
        server.stop()
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))

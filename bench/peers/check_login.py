#!/usr/bin/python3
"""Log in to a benchmark server once, as a real client would, and check it.

usage: check_login.py PORT JID PASSWORD [SCRAM-SHA-1|PLAIN]

Connects to 127.0.0.1:PORT with Debian's slixmpp, requires STARTTLS (the
self-signed certificate is accepted), authenticates with the given SASL
mechanism (default SCRAM-SHA-1), binds, fetches the roster, sends initial
presence, sends itself a message and waits for it to come back. Exits 0 and
prints "ok ..." when all of that worked, 1 otherwise. Bounded: 20 seconds.
"""

import asyncio
import ssl
import sys
import time

import slixmpp

TIMEOUT = 20


class Check(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mech):
        super().__init__(jid, password)
        self.mech = mech
        self['feature_mechanisms'].use_mech = mech
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.result = None
        self.t0 = time.monotonic()
        self.body = "check %f" % self.t0
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", self.on_fail)
        self.add_event_handler("disconnected", self.on_disconnected)

    async def on_start(self, _):
        self.t_login = time.monotonic() - self.t0
        await self.get_roster(timeout=TIMEOUT)
        self.send_presence()
        self.send_message(mto=self.boundjid.full, mbody=self.body, mtype="chat")

    def on_message(self, msg):
        if msg["body"] == self.body:
            self.result = "ok %s logged in (%s) in %.0f ms, message round trip %.0f ms" % (
                self.boundjid.full, self.mech, self.t_login * 1000,
                (time.monotonic() - self.t0 - self.t_login) * 1000)
            self.disconnect()

    def on_fail(self, _):
        self.result = self.result or "authentication failed"
        self.disconnect()

    def on_disconnected(self, _):
        self.done.set_result(True) if not self.done.done() else None


async def main():
    port, jid, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    mech = sys.argv[4] if len(sys.argv) > 4 else "SCRAM-SHA-1"
    c = Check(jid, password, mech)
    c.done = asyncio.get_running_loop().create_future()
    c.connect(("127.0.0.1", port), force_starttls=True, disable_starttls=False)
    try:
        await asyncio.wait_for(c.done, TIMEOUT)
    except asyncio.TimeoutError:
        c.result = c.result or "timed out"
    print(c.result or "disconnected")
    return 0 if c.result and c.result.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

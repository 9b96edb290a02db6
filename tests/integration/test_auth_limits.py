"""Limits on clients that have not logged in: the authentication deadline
holds across failed attempts, failed attempts are capped per stream and
budgeted per address and per account across all streams, unauthenticated
streams are capped per address, and in-band registration is limited
server-wide (docs/security.md, "Password guessing and account creation")."""

import asyncio
import base64
import time
import xml.etree.ElementTree as ET

import pytest

from imlib import NS_REGISTER, accounts, password_of
from natterlib import (
    NS_SASL, StreamClosed, cpu_seconds, expect_stream_error, q,
    stanza_error_condition)

ALICE = "alice@localhost"


async def plain(stream, user, password, timeout=15):
    """One SASL PLAIN attempt on a stream whose features are read; returns
    'success' or the failure condition (e.g. 'not-authorized')."""
    token = base64.b64encode(("\0%s\0%s" % (user, password)).encode())
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                      % (NS_SASL, token.decode()))
    elem = await stream.next(timeout)
    if elem is None:
        raise StreamClosed("closed awaiting the SASL answer:\n%s"
                           % stream.describe())
    if elem.tag == q(NS_SASL, "success"):
        return "success"
    assert elem.tag == q(NS_SASL, "failure"), ET.tostring(elem, "unicode")
    return elem[0].tag.split("}", 1)[1]


# ---------------------------------------- the deadline and the stream cap --

AUTH_TIMEOUT = 3


@pytest.mark.natter_config(limits={"auth_timeout": AUTH_TIMEOUT})
async def test_failed_login_does_not_lift_the_auth_deadline(natter, net):
    """Regression: the failure delay re-armed the stream's only timer, and
    after one wrong password the stream stayed open for ever."""
    count = 30

    async def fail_once(i):
        started = time.monotonic()
        # Each from its own address and for its own name: the answer
        # then comes after the shortest delay, well before the deadline.
        stream, _ = await net.raw_tls(natter, source="127.0.1.%d" % (i + 1))
        assert await plain(stream, "ghost%d" % i, "guess") == "not-authorized"
        await expect_stream_error(stream, "connection-timeout",
                                  timeout=AUTH_TIMEOUT + 10)
        return time.monotonic() - started

    lifetimes = await asyncio.gather(*(fail_once(i) for i in range(count)))
    # Closed at the deadline counted from connect, not from the failure.
    assert max(lifetimes) < AUTH_TIMEOUT + 1.5, lifetimes
    await net.assert_served(natter)


@pytest.mark.natter_config(limits={"auth_timeout": AUTH_TIMEOUT})
async def test_deadline_ends_a_failure_delay_that_outlasts_it(natter, net):
    """Failures from one address make the next answer wait longer than the
    deadline: the stream still ends at the deadline."""
    accounts(natter, "alice")
    started = time.monotonic()
    stream, _ = await net.raw_tls(natter)
    assert await plain(stream, "alice", "one") == "not-authorized"
    assert await plain(stream, "alice", "two") == "not-authorized"
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
        NS_SASL, base64.b64encode(b"\0alice\0three").decode()))
    await expect_stream_error(stream, ("connection-timeout",
                                       "policy-violation"),
                              timeout=AUTH_TIMEOUT + 10)
    assert time.monotonic() - started < AUTH_TIMEOUT + 1.5


async def test_stream_closed_after_max_failures(natter, net):
    """limits.max_auth_failures (default 3) wrong passwords on one stream
    end it with <policy-violation/>."""
    accounts(natter, "alice")
    stream, _ = await net.raw_tls(natter)
    for guess in ("one", "two", "three"):
        assert await plain(stream, "alice", guess) == "not-authorized"
    await expect_stream_error(stream, "policy-violation", timeout=5)
    await net.assert_served(natter)


@pytest.mark.natter_config(limits={"max_auth_failures": 1})
async def test_abort_does_not_cut_the_failure_delay(natter, net):
    """An <abort/> sent while the failure answer waits neither answers at
    once nor lets the stream guess again before it."""
    accounts(natter, "alice")
    stream, _ = await net.raw_tls(natter)
    mark = natter.log_mark()
    await stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
        NS_SASL, base64.b64encode(b"\0alice\0x").decode()))
    await natter.await_log("authentication failed for 'alice'", since=mark)
    # The answer is being held back now.
    await stream.send("<abort xmlns='%s'/>" % NS_SASL)
    assert await plain(stream, "alice", password_of("alice")) \
        == "not-authorized"
    await expect_stream_error(stream, "policy-violation", timeout=5)


# ------------------------------------------ budgets across all streams --

@pytest.mark.natter_config(limits={"auth_failures_per_address": 4,
                                   "auth_failures_per_account": 1000})
async def test_failure_budget_per_address_spans_streams(natter, net):
    """Parallel streams from one address share one budget: beyond it every
    attempt is refused unchecked, even with the right password; another
    address is not affected."""
    accounts(natter, "alice", "bob")
    streams = [(await net.raw_tls(natter))[0] for _ in range(8)]
    answers = await asyncio.gather(*(plain(s, "alice", "guess%d" % i)
                                     for i, s in enumerate(streams)))
    assert answers.count("not-authorized") == 4, answers
    assert answers.count("temporary-auth-failure") == 4, answers

    stream, _ = await net.raw_tls(natter)
    assert await plain(stream, "bob", password_of("bob")) \
        == "temporary-auth-failure"
    other, _ = await net.raw_tls(natter, source="127.0.0.2")
    assert await plain(other, "alice", password_of("alice")) == "success"


@pytest.mark.natter_config(limits={"auth_failures_per_address": 1000,
                                   "auth_failures_per_account": 3})
async def test_failure_budget_per_account_spans_addresses(natter, net):
    accounts(natter, "alice", "bob")
    for i in range(3):
        stream, _ = await net.raw_tls(natter, source="127.0.2.%d" % (i + 1))
        assert await plain(stream, "alice", "guess") == "not-authorized"
    stream, _ = await net.raw_tls(natter, source="127.0.2.9")
    assert await plain(stream, "alice", password_of("alice")) \
        == "temporary-auth-failure"
    stream, _ = await net.raw_tls(natter, source="127.0.2.9")
    assert await plain(stream, "bob", password_of("bob")) == "success"


@pytest.mark.natter_config(limits={"auth_failures_per_address": 3,
                                   "auth_failures_per_account": 1000})
async def test_own_login_does_not_reset_the_address_budget(natter, net):
    """Regression: any successful login from an address cleared its
    count, so an attacker logging in to their own account between
    guesses was never slowed down."""
    accounts(natter, "alice", "mallory")
    for guess in ("one", "two", "three"):
        stream, _ = await net.raw_tls(natter)
        assert await plain(stream, "alice", guess) == "not-authorized"
        if guess != "three":
            stream, _ = await net.raw_tls(natter)
            assert await plain(stream, "mallory",
                               password_of("mallory")) == "success"
    stream, _ = await net.raw_tls(natter)
    assert await plain(stream, "alice", "four") == "temporary-auth-failure"


@pytest.mark.natter_config(limits={"auth_failures_per_address": 1000,
                                   "auth_failures_per_account": 3})
async def test_login_restores_the_account_budget(natter, net):
    accounts(natter, "alice")
    for _ in range(2):
        for guess in ("one", "two"):
            stream, _ = await net.raw_tls(natter)
            assert await plain(stream, "alice", guess) == "not-authorized"
        stream, _ = await net.raw_tls(natter)
        assert await plain(stream, "alice", password_of("alice")) \
            == "success"


async def test_mistyped_password_then_prompt_login(natter, net):
    accounts(natter, "alice")
    stream, _ = await net.raw_tls(natter)
    assert await plain(stream, "alice", "tyop") == "not-authorized"
    started = time.monotonic()
    assert await plain(stream, "alice", password_of("alice")) == "success"
    assert time.monotonic() - started < 1.0
    client = await net.login(natter, ALICE + "/desk", password_of("alice"))
    assert (await client.ping())["type"] == "result"


async def test_long_passwords_cost_no_more(natter, net):
    """SASL PLAIN with a password of 180 KB (under the stanza limit), from
    four streams: each used to cost about 4 s of a worker thread's CPU
    (PBKDF2 re-keyed its HMAC with the whole password at each of its 4,096
    iterations, and SASLprep grows faster than the length), which every
    login shares. Now a password over 1,024 bytes fails at once, one of
    1,024 bytes costs what a short one does (docs/security.md), and a
    correct login from another address is not held up."""
    accounts(natter, "alice", "bob")
    streams = [(await net.raw_tls(natter))[0] for _ in range(4)]
    before = cpu_seconds(natter.proc.pid)
    for stream in streams:
        assert await plain(stream, "alice", "p" * 180000) == "not-authorized"
    used = cpu_seconds(natter.proc.pid) - before
    assert used < 2.0, "four long-password attempts took %.1f s of CPU" % used
    other, _ = await net.raw_tls(natter, source="127.0.0.2")
    assert await plain(other, "bob", password_of("bob")) == "success"
    longest, _ = await net.raw_tls(natter, source="127.0.0.3")
    assert await plain(longest, "bob", "p" * 1024) == "not-authorized"


# ------------------------------------- unauthenticated streams per address --

@pytest.mark.natter_config(limits={"max_unauthenticated_per_address": 5})
async def test_unauthenticated_streams_capped_per_address(natter, net):
    accounts(natter, "alice")
    held = [(await net.raw_tls(natter))[0] for _ in range(5)]
    extra = await net.raw(natter)
    await expect_stream_error(extra, "policy-violation", timeout=5)
    # Another address is not affected.
    other, _ = await net.raw_tls(natter, source="127.0.0.2")
    # A stream that logs in no longer counts: room for one more.
    assert await plain(held[0], "alice", password_of("alice")) == "success"
    again, features = await net.raw_tls(natter)
    assert features.find(q(NS_SASL, "mechanisms")) is not None


@pytest.mark.natter_config(limits={"max_unauthenticated_per_address": 2})
async def test_ended_streams_no_longer_count(natter, net):
    for _ in range(5):
        stream = await net.raw(natter)
        await stream.open_stream("nowhere.example")
        await expect_stream_error(stream, "host-unknown", timeout=5)
    stream, features = await net.raw_tls(natter)
    assert features.find(q(NS_SASL, "mechanisms")) is not None


# --------------------------------------------------- in-band registration --

async def register(net, server, username, source):
    stream, _ = await net.raw_tls(server, source=source)
    payload = ("<query xmlns='%s'><username>%s</username><password>%s"
               "</password></query>" % (NS_REGISTER, username,
                                        password_of(username)))
    return await stream.iq_roundtrip("reg-1", payload, type_="set")


@pytest.mark.natter_config(allow_registration=True,
                           registration_interval=3600,
                           registrations_per_hour=4)
async def test_registration_rate_is_server_wide(natter, net):
    """Regression: registration was limited per address only, so many
    addresses made unlimited accounts."""
    replies = []
    for i in range(8):
        reply = await register(net, natter, "new%d" % i,
                               "127.0.3.%d" % (i + 1))
        replies.append(reply.get("type") if reply.get("type") == "result"
                       else stanza_error_condition(reply))
    assert replies == ["result"] * 4 + ["resource-constraint"] * 4, replies
    stream, _ = await net.raw_tls(natter, source="127.0.3.20")
    assert await plain(stream, "new3", password_of("new3")) == "success"
    stream, _ = await net.raw_tls(natter, source="127.0.3.21")
    assert await plain(stream, "new4", password_of("new4")) \
        == "not-authorized"

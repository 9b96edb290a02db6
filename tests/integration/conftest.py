"""pytest fixtures for natter's integration tests.

Fixtures:
  natter_factory  start(**overrides) -> NatterServer; every server started
                  is stopped at teardown, and the test fails if it crashed,
                  exited early or printed a sanitizer report.
  natter          one server with the default configuration, or with the
                  overrides of @pytest.mark.natter_config(**overrides).
  net             connects clients (slixmpp and raw) to a server and closes
                  them when the test ends; see natterlib.Net.
  slapd           (session) an OpenLDAP slapd with the test directory;
                  see dirlib.Slapd.  Tests that change its content restore
                  it; tests that pause or stop it resume/restart it.
  kdc             (session) an MIT krb5kdc with realms NATTER.TEST and
                  OTHER.TEST; see dirlib.Kdc.
  dns             (session) dnsmasq serving the fedtest zone (SRV and
                  address records for natter-a/natter-b/prosody/ejabberd);
                  see fedlib.Dnsmasq.  Tests that change records reset().
  test_ca         (session) the federation test CA; see fedlib.TestCA.
  prosody         (session) Prosody 0.12 serving prosody.fedtest on
                  127.0.0.4; see fedlib.Prosody.
  ejabberd        (session) ejabberd 23.01 serving ejabberd.fedtest on
                  127.0.0.5; see fedlib.Ejabberd.

natter_factory's start() also takes env={...}: variables added to natterd's
environment (e.g. KRB5_CONFIG for Kerberos), and to natterctl's.

Tests written as `async def` run in a fresh asyncio event loop of their own
(see pytest_pyfunc_call below), bounded by TEST_TIMEOUT.
"""

import asyncio
import inspect
import os

import pytest

import dirlib
import fedlib
from natterlib import NatterServer, Net

TEST_TIMEOUT = float(os.environ.get("NATTER_TEST_TIMEOUT", 120))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "natter_config(**overrides): configuration overrides for the "
        "`natter` fixture (nested dicts merge into the defaults)")


@pytest.fixture
def natter_factory():
    servers = []

    def start(start=True, env=None, extra_listeners=(), **overrides):
        server = NatterServer(overrides, extra_listeners)
        servers.append(server)
        if env:
            _with_env(server, env)
        if start:
            server.start()
        return server

    yield start

    problems = []
    logs = []
    for server in servers:
        found = server.stop()
        if found:
            problems.extend(found)
            logs.append(server.log)
        server.cleanup()
    if problems:
        pytest.fail("natterd: %s\n---- log ----\n%s"
                    % ("; ".join(problems), "\n----\n".join(logs)),
                    pytrace=False)


def _with_env(server, env):
    """Makes server.start() and server.ctl() run with env added to the
    process environment (natterlib copies os.environ when it starts them);
    os.environ is restored right after."""
    def wrap(method):
        def call(*args, **kwargs):
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                return method(*args, **kwargs)
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        return call
    server.start = wrap(server.start)
    server.ctl = wrap(server.ctl)
    server.extra_env = dict(env)


@pytest.fixture
def natter(request, natter_factory):
    marker = request.node.get_closest_marker("natter_config")
    overrides = dict(marker.kwargs) if marker else {}
    return natter_factory(**overrides)


@pytest.fixture(scope="session")
def slapd():
    server = dirlib.Slapd()
    try:
        server.start()
        server.self_test()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def kdc():
    server = dirlib.Kdc()
    try:
        server.start()
        server.self_test()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def dns():
    server = fedlib.Dnsmasq()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def test_ca():
    ca = fedlib.TestCA()
    try:
        yield ca
    finally:
        ca.cleanup()


@pytest.fixture(scope="session")
def prosody(dns, test_ca):
    server = fedlib.Prosody(dns, test_ca)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def ejabberd(dns, test_ca):
    server = fedlib.Ejabberd(dns, test_ca)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def net():
    # Connections are closed inside the test's own event loop, by
    # pytest_pyfunc_call, because they belong to it.
    return Net()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Runs `async def` tests in a new event loop with a timeout."""
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    net = pyfuncitem.funcargs.get("net")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        async def run():
            try:
                await asyncio.wait_for(func(**kwargs), TEST_TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError("test did not finish within %.0fs"
                                     % TEST_TIMEOUT) from None
            finally:
                if net is not None:
                    await net.aclose()
        loop.run_until_complete(run())
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(
                asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
    return True

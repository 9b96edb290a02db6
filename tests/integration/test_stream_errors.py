"""Hostile and broken input: each case must get the RFC 6120 section 4.9
stream error inside the stream, then </stream:stream>, then a closed TCP
connection (expect_stream_error checks all three), and afterwards another
client must still be served (net.assert_served)."""

import time
from xml.sax.saxutils import quoteattr

import pytest

from natterlib import (
    NS_CLIENT, NS_PING, NS_STREAM, NS_TLS, expect_stream_error, q,
    stanza_error_condition)

ALICE, ALICE_PW = "alice@localhost", "alice-secret"

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='%s' to='localhost' version='1.0'>" % NS_STREAM)


async def opened(net, server):
    """A raw connection whose stream is open and features read."""
    stream = await net.raw(server)
    await stream.send(HEADER)
    await stream.features()
    return stream


async def logged_in(net, server):
    server.add_user(ALICE, ALICE_PW)
    return await net.raw_login(server, ALICE, ALICE_PW, resource="raw")


# --------------------------------------------------------- well-formedness --

NOT_WELL_FORMED = {
    "mismatched-tags": "<message><body>hi</message></body>",
    "duplicate-attribute": "<message to='a@localhost' to='b@localhost'/>",
    "unbound-prefix": "<foo:message xmlns='jabber:client'/>",
    "invalid-utf8": b"<message><body>\xff\xfe\xc0\x80</body></message>",
    "bad-name": "<message><1body/></message>",
    "lone-ampersand": "<message><body>fish & chips</body></message>",
    "lt-in-attribute": "<message to='a<b@localhost'/>",
    "nul-byte": b"<message><body>\x00</body></message>",
}


@pytest.mark.parametrize("payload", list(NOT_WELL_FORMED.values()),
                         ids=list(NOT_WELL_FORMED))
async def test_not_well_formed(natter, net, payload):
    stream = await opened(net, natter)
    await stream.send(payload)
    await expect_stream_error(stream, "not-well-formed")
    await net.assert_served(natter)


async def test_not_well_formed_before_any_header(natter, net):
    stream = await net.raw(natter)
    await stream.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await expect_stream_error(stream, "not-well-formed")
    await net.assert_served(natter)


async def test_not_well_formed_after_authentication(natter, net):
    stream = await logged_in(net, natter)
    await stream.send("<message to='%s'><body></message>" % ALICE)
    await expect_stream_error(stream, "not-well-formed")
    await net.assert_served(natter)


# ---------------------------------------------------------- restricted XML --

BILLION_LAUGHS = (
    "<?xml version='1.0'?>\n<!DOCTYPE stream:stream [\n"
    " <!ENTITY lol0 'lol'>\n" +
    "".join(" <!ENTITY lol%d '%s'>\n" % (i, ("&lol%d;" % (i - 1)) * 10)
            for i in range(1, 10)) +
    "]>\n" + HEADER.replace("<?xml version='1.0'?>", "") +
    "<message to='localhost'><body>&lol9;</body></message>")

RESTRICTED_BEFORE_HEADER = {
    "doctype": "<?xml version='1.0'?><!DOCTYPE stream:stream>" +
               HEADER.replace("<?xml version='1.0'?>", ""),
    "external-entity": (
        "<?xml version='1.0'?><!DOCTYPE stream:stream ["
        "<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>" +
        HEADER.replace("<?xml version='1.0'?>", "") +
        "<message to='localhost'><body>&xxe;</body></message>"),
    "comment": "<?xml version='1.0'?><!-- hello -->" +
               HEADER.replace("<?xml version='1.0'?>", ""),
    "processing-instruction": "<?xml version='1.0'?><?foo bar?>" +
                              HEADER.replace("<?xml version='1.0'?>", ""),
}

RESTRICTED_IN_STREAM = {
    "comment": "<!-- a comment between stanzas -->",
    "comment-in-stanza": "<message to='localhost'><!-- x --><body>b</body>"
                         "</message>",
    "processing-instruction": "<?php system('id'); ?>",
    "pi-in-stanza": "<message to='localhost'><?foo bar?></message>",
}


async def test_billion_laughs_is_refused_quickly(natter, net):
    stream = await net.raw(natter)
    started = time.monotonic()
    await stream.send(BILLION_LAUGHS)
    await expect_stream_error(stream, "restricted-xml")
    assert time.monotonic() - started < 5, "took too long: expanding?"
    await net.assert_served(natter)


@pytest.mark.parametrize("document", list(RESTRICTED_BEFORE_HEADER.values()),
                         ids=list(RESTRICTED_BEFORE_HEADER))
async def test_restricted_xml_before_header(natter, net, document):
    stream = await net.raw(natter)
    await stream.send(document)
    await expect_stream_error(stream, "restricted-xml")
    await net.assert_served(natter)


@pytest.mark.parametrize("payload", list(RESTRICTED_IN_STREAM.values()),
                         ids=list(RESTRICTED_IN_STREAM))
async def test_restricted_xml_in_stream(natter, net, payload):
    stream = await opened(net, natter)
    await stream.send(payload)
    await expect_stream_error(stream, "restricted-xml")
    await net.assert_served(natter)


async def test_restricted_xml_after_authentication(natter, net):
    stream = await logged_in(net, natter)
    await stream.send("<!-- authenticated users are no exception -->")
    await expect_stream_error(stream, "restricted-xml")
    await net.assert_served(natter)


async def test_undefined_entity_reference(natter, net):
    stream = await opened(net, natter)
    await stream.send("<message to='localhost'><body>&nbsp;</body>"
                      "</message>")
    await expect_stream_error(stream, ("restricted-xml", "not-well-formed"))
    await net.assert_served(natter)


async def test_predefined_entities_and_cdata_are_fine(natter, net):
    stream = await logged_in(net, natter)
    await stream.send("<message to='%s/raw' id='ent'><body>&lt;&amp;&gt;"
                      "&quot;&apos;&#x263A;&#9731;<![CDATA[<x>]]></body>"
                      "</message>" % ALICE)
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.get("id") == "ent"
    assert msg.findtext(q(NS_CLIENT, "body")) == "<&>\"'\u263a\u2603<x>"


# ------------------------------------------------------------------ limits --

SMALL_LIMITS = {"limits": {"max_stanza_size": 10000, "max_depth": 64,
                           "max_attributes": 64}}


def oversized(shape):
    to = "%s/raw" % ALICE
    if shape == "complete":
        return "<message to='%s' id='big'><body>%s</body></message>" % (
            to, "A" * 12000)
    if shape == "unterminated-text":
        return "<message to='%s' id='big'><body>%s" % (to, "A" * 12000)
    if shape == "unterminated-attribute":
        return "<message to='%s' id='%s" % (to, "A" * 12000)
    raise ValueError(shape)


@pytest.mark.natter_config(**SMALL_LIMITS)
@pytest.mark.parametrize("shape", ["complete", "unterminated-text",
                                   "unterminated-attribute"])
async def test_oversized_stanza(natter, net, shape):
    stream = await logged_in(net, natter)
    await stream.send(oversized(shape))
    await expect_stream_error(stream, "policy-violation")
    await net.assert_served(natter)


@pytest.mark.natter_config(**SMALL_LIMITS)
async def test_oversized_element_before_tls(natter, net):
    # An unfinished start tag: no stanza logic can see it, only the byte
    # count bounds what the server buffers for an unauthenticated peer.
    stream = await opened(net, natter)
    await stream.send("<starttls xmlns='%s' pad='%s" % (NS_TLS, "A" * 12000))
    await expect_stream_error(stream, "policy-violation")
    await net.assert_served(natter)


@pytest.mark.natter_config(**SMALL_LIMITS)
async def test_stanza_under_the_size_limit_is_delivered(natter, net):
    stream = await logged_in(net, natter)
    body = "B" * 8000
    await stream.send("<message to='%s/raw' id='fits'><body>%s</body>"
                      "</message>" % (ALICE, body))
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.get("id") == "fits"
    assert msg.findtext(q(NS_CLIENT, "body")) == body


def nested(depth):
    return ("<message to='%s/raw' id='deep'>" % ALICE + "<x>" * depth +
            "</x>" * depth + "</message>")


def with_attributes(count):
    attrs = " ".join("a%d='%d'" % (i, i) for i in range(count))
    return "<message to='%s/raw' id='attrs' %s/>" % (ALICE, attrs)


@pytest.mark.natter_config(**SMALL_LIMITS)
async def test_too_deep_nesting(natter, net):
    stream = await logged_in(net, natter)
    await stream.send(nested(100))
    await expect_stream_error(stream, "policy-violation")
    await net.assert_served(natter)


@pytest.mark.natter_config(**SMALL_LIMITS)
async def test_unterminated_deep_nesting(natter, net):
    stream = await logged_in(net, natter)
    await stream.send("<message to='%s/raw'>" % ALICE + "<x>" * 100)
    await expect_stream_error(stream, "policy-violation")
    await net.assert_served(natter)


@pytest.mark.natter_config(**SMALL_LIMITS)
async def test_too_many_attributes(natter, net):
    stream = await logged_in(net, natter)
    await stream.send(with_attributes(100))
    await expect_stream_error(stream, "policy-violation")
    await net.assert_served(natter)


@pytest.mark.natter_config(**SMALL_LIMITS)
async def test_moderate_depth_and_attributes_are_fine(natter, net):
    stream = await logged_in(net, natter)
    await stream.send(nested(20))
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.get("id") == "deep"
    await stream.send(with_attributes(20))
    msg = await stream.expect(q(NS_CLIENT, "message"))
    assert msg.get("id") == "attrs"


# ------------------------------------------------------------ stream header --

@pytest.mark.parametrize("which", ["stream", "content"])
async def test_wrong_namespace(natter, net, which):
    stream = await net.raw(natter)
    if which == "stream":
        await stream.open_stream(stream_ns="http://example.com/not-streams")
    else:
        await stream.open_stream(content_ns="urn:example:not-jabber-client")
    await expect_stream_error(stream, "invalid-namespace")
    await net.assert_served(natter)


async def test_unknown_host(natter, net):
    stream = await net.raw(natter)
    await stream.open_stream(to="no-such-host.example")
    await expect_stream_error(stream, "host-unknown")
    await net.assert_served(natter)


async def test_unknown_host_after_starttls(natter, net):
    stream = await net.raw(natter)
    await stream.open_stream()
    await stream.features()
    await stream.starttls()
    await stream.open_stream(to="no-such-host.example")
    await expect_stream_error(stream, "host-unknown")
    await net.assert_served(natter)


@pytest.mark.natter_config(limits={"auth_timeout": 2})
@pytest.mark.parametrize("stage", ["silent", "header", "tls"])
async def test_no_authentication_in_time(natter, net, stage):
    stream = await net.raw(natter)
    if stage != "silent":
        await stream.open_stream()
        await stream.features()
    if stage == "tls":
        await stream.starttls()
        await stream.open_stream()
        await stream.features()
    elapsed = await expect_stream_error(stream, "connection-timeout",
                                        timeout=30)
    assert elapsed >= 1, "closed before auth_timeout"
    await net.assert_served(natter)


# --------------------------------------------------------- stanza errors ---

MALFORMED_JIDS = {
    "two-ats": "a@b@c",
    "empty-local": "@localhost",
    "empty-resource": "alice@localhost/",
    "empty-domain": "alice@",
    "only-resource": "/resource",
    "space-in-local": "al ice@localhost",
    "quote-in-local": 'ali"ce@localhost',
    "long-local": "x" * 1024 + "@localhost",
    "long-domain": "alice@" + "d" * 1024,
    "unclosed-ipv6": "alice@[::1",
}


@pytest.mark.parametrize("jid", list(MALFORMED_JIDS.values()),
                         ids=list(MALFORMED_JIDS))
@pytest.mark.parametrize("kind", ["message", "iq"])
async def test_malformed_to_is_jid_malformed(natter, net, jid, kind):
    stream = await logged_in(net, natter)
    if kind == "message":
        await stream.send("<message to=%s id='bad-to' type='chat'>"
                          "<body>x</body></message>" % quoteattr(jid))
        reply = await stream.expect(q(NS_CLIENT, "message"))
    else:
        reply = await stream.iq_roundtrip(
            "bad-to", "<ping xmlns='%s'/>" % NS_PING, to=quoteattr(jid)[1:-1])
    assert reply.get("id") == "bad-to"
    assert reply.get("type") == "error"
    assert stanza_error_condition(reply) == "jid-malformed"
    # A stanza error, not a stream error: the session goes on.
    await stream.ping_server("still-open")
    await net.assert_served(natter)

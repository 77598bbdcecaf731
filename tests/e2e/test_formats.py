"""Migration formats: cookies written by Envoy's native filter (current and legacy), NGINX
Plus and BIG-IP pin to the server they name, and what the filter writes is that format."""

import base64
import time

import pytest

import persist_codec as codec
from conftest import free_port, plugin_config

pytestmark = pytest.mark.both_builds


def fmt_config(fmt, **over):
    cfg = plugin_config(cookie={"format": fmt}, **over)
    cfg["cookie"].pop("keys")
    return cfg


def assert_pins(envoy, cookie_value, backend, n=20):
    """n requests with the cookie all reach `backend`; returns the responses."""
    out = []
    for i in range(n):
        r = envoy.get(cookie=f"{envoy.cookie_name}={cookie_value}")
        assert r.status == 200 and r.server == backend.name, \
            f"request {i}: cookie naming {backend.name} answered by {r.server}"
        out.append(r)
    return out


def new_cookies_without_cookie(envoy, n=9):
    """n requests without cookie: (answering backend, Set-Cookie) pairs."""
    out = []
    for _ in range(n):
        r = envoy.get()
        assert r.status == 200
        c = r.persist_cookie()
        assert c is not None, r
        out.append((envoy.backends.by_name(r.server), c))
    return out


def test_envoy_format(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", fmt_config("envoy", timeout="20m"))
    now = int(time.time())
    # What the filter writes: quoted base64 protobuf {address, expires = now + timeout}.
    for b, c in new_cookies_without_cookie(envoy, 6):
        assert c.value.startswith('"') and c.value.endswith('"'), c.raw
        assert c.attrs == ["Path=/", "HttpOnly"], c.raw
        addr, expires = codec.envoy_decode(c.unquoted)
        assert addr == b.addr
        assert now + 1200 - 5 <= expires <= int(time.time()) + 1200 + 5, expires - now
    target = backends[1]
    current = codec.envoy_encode(target.addr, now + 600)
    assert_pins(envoy, current, target)                 # unquoted
    assert_pins(envoy, f'"{current}"', target, n=5)     # quoted, as Envoy writes it
    assert_pins(envoy, codec.envoy_encode(target.addr, 12345), target, n=5)  # monotonic expiry
    assert_pins(envoy, codec.envoy_encode(target.addr), target, n=5)         # no expiry
    legacy = codec.envoy_legacy_encode(backends[2].addr)
    for r in assert_pins(envoy, legacy, backends[2], n=10):
        for c in r.set_cookies("persist"):  # whatever it writes is the current format
            assert codec.envoy_decode(c.unquoted)[0] == backends[2].addr
    # Expired (wall clock), or naming no server of ours at all, or garbage: invalid.
    bad = [codec.envoy_encode(target.addr, now - 30), base64.b64encode(b"\x0a\x05abc").decode(),
           "bm90IGFuIGFkZHJlc3M=", "%%%"]
    for v in bad:
        r = envoy.get(cookie=f"persist={v}")
        assert r.status == 200
        c = r.persist_cookie()
        assert c is not None, (v, r)
        assert codec.envoy_decode(c.unquoted)[0] == backends.by_name(r.server).addr
    envoy.wait_counters({"miss": 6, "new": 6 + len(bad), "hit": 20 + 5 + 5 + 5 + 10,
                         "invalid": len(bad), "rebind": 0})


def test_envoy_format_rewrites_legacy_and_monotonic_cookies(envoy_factory, backends):
    """README: legacy and monotonic-expiry cookies are accepted and rewritten in the current
    form with a wall-clock expiry on the response."""
    envoy = envoy_factory("http-cookie.yaml", fmt_config("envoy", timeout="20m"))
    target = backends[0]
    for value in (codec.envoy_legacy_encode(target.addr), codec.envoy_encode(target.addr, 4242)):
        r = envoy.get(cookie=f"persist={value}")
        assert r.server == target.name
        c = r.persist_cookie()
        assert c is not None, f"{value!r} not rewritten: {r}"
        addr, expires = codec.envoy_decode(c.unquoted)
        assert addr == target.addr and abs(expires - (time.time() + 1200)) < 10


def test_nginx_format_after_learning(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", fmt_config("nginx"))
    target = backends[2]
    h = codec.nginx_hash(target.addr)
    # Before `target` answered anything through this Envoy its hash is unknown: a miss.
    r = envoy.get(cookie=f"persist={h}")
    assert r.status == 200
    c = r.persist_cookie()
    assert c is not None and c.value == codec.nginx_hash(backends.by_name(r.server).addr), (r, c)
    misses = 1
    learned = r.server == target.name
    for _ in range(12):  # let round robin bring a request to `target` (bounded)
        if learned:
            break
        r = envoy.get()
        misses += 1
        c = r.persist_cookie()
        assert c is not None and c.value == codec.nginx_hash(backends.by_name(r.server).addr)
        learned = r.server == target.name
    assert learned, "round robin never reached the target server"
    before = envoy.worker_connections()
    assert_pins(envoy, h, target, n=20)  # learned hash honoured on every worker
    after = envoy.worker_connections()
    assert all(after[w] > before.get(w, 0) for w in after), \
        f"the 20 connections did not reach every worker: {before} -> {after}"
    # Well-formed but unknown: miss. Malformed: invalid.
    unknown = codec.nginx_hash("10.99.99.99:1")
    r = envoy.get(cookie=f"persist={unknown}")
    assert r.status == 200 and r.persist_cookie() is not None
    malformed = ["zz" * 16, h[:31], h + "0", "not-a-hash"]
    for v in malformed:
        r = envoy.get(cookie=f"persist={v}")
        assert r.status == 200
        c = r.persist_cookie()
        assert c is not None and c.value == codec.nginx_hash(backends.by_name(r.server).addr)
    envoy.wait_counters({"hit": 20, "miss": misses + 1, "invalid": len(malformed),
                         "new": misses + 1 + len(malformed)})


def test_bigip_format(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", fmt_config("bigip"))
    for b, c in new_cookies_without_cookie(envoy, 6):
        assert c.value == codec.bigip_encode(b.addr), c.raw
        assert codec.bigip_decode(c.value) == b.addr
    target = backends[1]
    value = codec.bigip_encode(target.addr)
    assert_pins(envoy, value, target)
    bad = ["1677787402.36895", "abc.def.0000", codec.bigip_encode(target.addr).replace(".0000", ".0001"),
           "99999999999.1.0000"]
    for v in bad:
        r = envoy.get(cookie=f"persist={v}")
        assert r.status == 200
        c = r.persist_cookie()
        assert c is not None and c.value == codec.bigip_encode(backends.by_name(r.server).addr)
    # A server gone from the cluster: rebound, and the new cookie is BIG-IP again.
    gone = f"127.0.0.1:{free_port()}"
    r = envoy.get(cookie=f"persist={codec.bigip_encode(gone)}")
    assert r.status == 200
    c = r.persist_cookie()
    assert c is not None and c.value == codec.bigip_encode(backends.by_name(r.server).addr), (r, c)
    envoy.wait_counters({"miss": 6, "hit": 20 + 1, "invalid": len(bad), "new": 6 + len(bad) + 1, "rebind": 1})


def test_envoy_format_idle_timeout_is_kept_through_expires(envoy_factory, backends):
    """README: `timeout` is an idle timeout for the envoy format too, enforced through
    `expires`: a cookie in use is re-sent with a later expiry before it lapses (when less
    than half of the timeout is left), and is left alone while it is young."""
    envoy = envoy_factory("http-cookie.yaml", fmt_config("envoy", timeout="20m"))
    target = backends[0]
    now = int(time.time())
    young = envoy.get(cookie=f"persist={codec.envoy_encode(target.addr, now + 1190)}")
    assert young.server == target.name and young.persist_cookie() is None, young
    old = envoy.get(cookie=f"persist={codec.envoy_encode(target.addr, now + 100)}")
    assert old.server == target.name
    c = old.persist_cookie()
    assert c is not None, "a cookie close to its expiry was not refreshed"
    addr, expires = codec.envoy_decode(c.unquoted)
    assert addr == target.addr and abs(expires - (time.time() + 1200)) < 10
    envoy.wait_counters({"hit": 2, "new": 0, "invalid": 0})

"""Sealing keys (rotation, generated key shared by workers), cookie attributes, timeouts,
refresh and always_send."""

import time

import persist_codec as codec
from conftest import KEY1, KEY2, first_cookie, plugin_config


def test_key_rotation(envoy_factory, backends):
    target = backends[1]
    now = int(time.time())
    old = codec.seal(KEY1, "persist", target.addr, now - 60)
    rotated = envoy_factory("http-cookie.yaml",
                            plugin_config(cookie={"keys": [codec.key_b64(KEY2), codec.key_b64(KEY1)]}))
    for _ in range(5):
        r = rotated.get(cookie=f"persist={old}")
        assert r.server == target.name, "a cookie sealed with the second key was not honoured"
    for _ in range(3):
        _, c = first_cookie(rotated)
        opened = codec.open_sealed([KEY2], "persist", c.value)  # sealed with the first key
        try:
            codec.open_sealed([KEY1], "persist", c.value)
            raise AssertionError("a new cookie opens with the old key")
        except ValueError:
            pass
        assert opened.addr in {b.addr for b in backends}
    rotated.wait_counters({"hit": 5, "miss": 3, "new": 3, "invalid": 0})
    rotated.stop()

    only_new = envoy_factory("http-cookie.yaml", plugin_config(cookie={"keys": [codec.key_b64(KEY2)]}))
    r = only_new.get(cookie=f"persist={old}")
    assert r.status == 200
    c = r.persist_cookie()
    assert c is not None
    assert codec.open_sealed([KEY2], "persist", c.value).addr == backends.by_name(r.server).addr
    only_new.wait_counters({"invalid": 1, "hit": 0, "new": 1})


def test_generated_key_is_shared_by_the_workers(envoy_factory, backends):
    cfg = plugin_config()
    cfg["cookie"].pop("keys")
    envoy = envoy_factory("http-cookie.yaml", cfg)
    r, c = first_cookie(envoy)
    before = envoy.worker_connections()
    for i in range(20):
        r2 = envoy.get(cookie=f"persist={c.value}")
        assert r2.server == r.server, f"request {i}: generated key not shared (went to {r2.server})"
        assert r2.persist_cookie() is None
    after = envoy.worker_connections()
    assert len(after) == 2 and all(after[w] > before.get(w, 0) for w in after), (before, after)
    # The test key does not open it: the key really is generated.
    try:
        codec.open_sealed([KEY1, KEY2], "persist", c.value)
        raise AssertionError("generated key equals a test key")
    except ValueError:
        pass
    envoy.wait_counters({"hit": 20, "invalid": 0, "miss": 1, "new": 1})
    # Another Envoy process generates another key: the cookie is invalid there.
    other = envoy_factory("http-cookie.yaml", cfg)
    r3 = other.get(cookie=f"persist={c.value}")
    c3 = r3.persist_cookie()
    assert c3 is not None, "a cookie sealed by another Envoy's generated key was accepted"
    other.wait_counters({"invalid": 1, "hit": 0, "new": 1})


def test_cookie_attributes_all_set(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin_config(cookie={
        "name": "SRVID", "path": "/app", "domain": "example.test", "secure": True,
        "http_only": False, "same_site": "Strict", "max_age": "2h"}))
    r = envoy.get("/app/x")
    assert r.persist_cookie("persist") is None
    c = r.persist_cookie("SRVID")
    assert c is not None, r
    assert c.attrs == ["Path=/app", "Domain=example.test", "Max-Age=7200", "Secure", "SameSite=Strict"], c.raw
    assert envoy.cookie_server(c.value).name == r.server
    for _ in range(5):
        assert envoy.get("/app/y", cookie=f"SRVID={c.value}").server == r.server
    # A cookie under another name is not ours: a miss, not a hit.
    r2 = envoy.get(cookie=f"persist={c.value}")
    assert r2.persist_cookie("SRVID") is not None
    envoy.wait_counters({"hit": 5, "miss": 2, "new": 2, "invalid": 0})


def test_cookie_attributes_lax_httponly(envoy_factory):
    envoy = envoy_factory("http-cookie.yaml", plugin_config(cookie={
        "domain": ".shop.example", "same_site": "Lax", "max_age": 90}))
    _, c = first_cookie(envoy)
    assert c.attrs == ["Path=/", "Domain=.shop.example", "Max-Age=90", "HttpOnly", "SameSite=Lax"], c.raw


def test_idle_timeout_and_refresh(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin_config(timeout="4s"))
    t0 = time.monotonic()
    r, c0 = first_cookie(envoy)
    s0 = envoy.open(c0.value)
    assert s0.issued == s0.refreshed and abs(s0.issued - time.time()) < 3
    r1 = envoy.get(cookie=f"persist={c0.value}")
    assert r1.server == r.server and r1.persist_cookie() is None, "re-sent before timeout/2"
    time.sleep(max(0.0, t0 + 3.2 - time.monotonic()))
    # Older than timeout/2: re-sent, same server, same issue time, later refresh time.
    r2 = envoy.get(cookie=f"persist={c0.value}")
    assert r2.server == r.server
    c1 = r2.persist_cookie()
    assert c1 is not None, "not refreshed after more than timeout/2"
    s1 = envoy.open(c1.value)
    assert (s1.addr, s1.issued) == (s0.addr, s0.issued) and s1.refreshed >= s0.refreshed + 3, (s0, s1)
    time.sleep(max(0.0, t0 + 5.6 - time.monotonic()))
    # The original cookie is now idle for more than the timeout: invalid, new cookie.
    r3 = envoy.get(cookie=f"persist={c0.value}")
    c2 = r3.persist_cookie()
    assert c2 is not None
    s2 = envoy.open(c2.value)
    assert s2.issued > s0.issued and s2.addr == backends.by_name(r3.server).addr
    # The refreshed one is not.
    r4 = envoy.get(cookie=f"persist={c1.value}")
    assert r4.server == r.server
    envoy.wait_counters({"miss": 1, "new": 2, "hit": 3, "invalid": 1, "rebind": 0})


def test_absolute_timeout(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin_config(timeout="20m", absolute_timeout="3s"))
    t0 = time.monotonic()
    r, c = first_cookie(envoy)
    time.sleep(1.0)
    assert envoy.get(cookie=f"persist={c.value}").server == r.server
    time.sleep(max(0.0, t0 + 4.3 - time.monotonic()))
    r2 = envoy.get(cookie=f"persist={c.value}")
    c2 = r2.persist_cookie()
    assert c2 is not None and c2.value != c.value, "cookie past absolute_timeout not replaced"
    # Crafted: an old issue time fails even when just refreshed; a young one passes.
    now = int(time.time())
    old = codec.seal(KEY1, "persist", backends[0].addr, now - 10, now)
    young = codec.seal(KEY1, "persist", backends[0].addr, now - 1, now)
    r3 = envoy.get(cookie=f"persist={old}")
    assert r3.persist_cookie() is not None
    assert envoy.get(cookie=f"persist={young}").server == backends[0].name
    envoy.wait_counters({"miss": 1, "hit": 2, "invalid": 2, "new": 3})


def test_always_send(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin_config(cookie={"always_send": True}))
    r, c = first_cookie(envoy)
    for _ in range(5):
        r2 = envoy.get(cookie=f"persist={c.value}")
        assert r2.server == r.server
        c2 = r2.persist_cookie()
        assert c2 is not None, "always_send: no Set-Cookie"
        assert envoy.cookie_server(c2.value).name == r.server
        assert c2.attrs == ["Path=/", "HttpOnly"]
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 5, "invalid": 0})

"""Core behaviour with both hand-offs: stickiness, load spread, the hand-off header is never
the client's, other cookies and the backend's own cookies pass untouched."""

import re
from collections import Counter
from urllib.parse import quote

import pytest

from conftest import first_cookie, handoff_value, plugin_config

pytestmark = pytest.mark.both_builds

HANDOFFS = [
    ("http-cookie.yaml", "stateful_session"),
    ("http-cookie-override-host.yaml", "override_host"),
]


def start(envoy_factory, example, handoff, **over):
    return envoy_factory(example, plugin_config(handoff, **over))


@pytest.mark.parametrize("example,handoff", HANDOFFS)
def test_sticky_over_fresh_connections(envoy_factory, backends, example, handoff):
    envoy = start(envoy_factory, example, handoff)
    r, c = first_cookie(envoy)
    # No cookie: nothing is named, and no client value either.
    assert envoy.upstream_header not in r.echoed
    # Default attributes, in order.
    assert c.attrs == ["Path=/", "HttpOnly"], c.raw
    sealed = envoy.open(c.value)
    server = backends.by_name(r.server)
    assert sealed.addr == server.addr
    assert sealed.issued == sealed.refreshed
    cookie = f"persist={c.value}"
    for i in range(25):
        r2 = envoy.get(f"/item/{i}", cookie=cookie)
        assert r2.status == 200
        assert r2.server == server.name, f"request {i} went to {r2.server}, cookie names {server.name}"
        # The hand-off header the backend receives names the persisted server.
        assert r2.echoed.get(envoy.upstream_header) == handoff_value(envoy, server)
        # Valid, not due for refresh, same server: no Set-Cookie.
        assert r2.persist_cookie() is None, r2
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 25, "rebind": 0, "invalid": 0, "error": 0})


@pytest.mark.parametrize("example,handoff", HANDOFFS)
def test_load_spreads_without_cookie_and_each_gets_a_new_cookie(envoy_factory, backends, example, handoff):
    envoy = start(envoy_factory, example, handoff)
    n = 30
    seen = Counter()
    values = set()
    nonces = set()
    for _ in range(n):
        r, c = first_cookie(envoy)
        seen[r.server] += 1
        opened = envoy.open(c.value)
        assert opened.addr == backends.by_name(r.server).addr
        values.add(c.value)
        nonces.add(opened.nonce)
    assert set(seen) == {"a", "b", "c"}, seen
    assert min(seen.values()) >= 5, f"not round-robin-like: {seen}"
    assert len(values) == n and len(nonces) == n, "cookie values / nonces repeat"
    envoy.wait_counters({"miss": n, "new": n, "hit": 0, "rebind": 0, "invalid": 0})


@pytest.mark.parametrize("example,handoff", HANDOFFS)
def test_client_handoff_header_never_picks_the_server(envoy_factory, backends, example, handoff):
    envoy = start(envoy_factory, example, handoff)
    a, b = backends[0], backends[1]
    n = 15
    for form in (a.addr, a.b64):
        seen = Counter()
        for _ in range(n):
            r = envoy.get(headers={envoy.upstream_header: form})
            assert r.status == 200
            seen[r.server] += 1
            # The client's copy is removed before anything reads it.
            assert envoy.upstream_header not in r.echoed, r.echoed
        assert set(seen) == {"a", "b", "c"}, f"{form}: {seen}"
        assert seen["a"] <= 9, f"client header {form} steered traffic: {seen}"
    # A valid cookie for A plus a client header naming B: A answers, the backend sees A.
    r, c = first_cookie(envoy)
    pinned = backends.by_name(r.server)
    other = next(x for x in backends if x is not pinned)
    for form in (other.addr, other.b64, f"{other.addr}, {other.b64}"):
        for _ in range(4):
            r2 = envoy.get(cookie=f"persist={c.value}", headers={envoy.upstream_header: form})
            assert r2.server == pinned.name, f"client header {form} overrode the cookie"
            assert r2.echoed.get(envoy.upstream_header) == handoff_value(envoy, pinned)
    envoy.wait_counters({"miss": 2 * n + 1, "new": 2 * n + 1, "hit": 12, "invalid": 0})


@pytest.mark.parametrize("example,handoff", HANDOFFS)
def test_other_cookies_and_backend_cookies_pass_untouched(envoy_factory, backends, example, handoff):
    envoy = start(envoy_factory, example, handoff)
    # Without a persistence cookie the Cookie header reaches the backend byte for byte.
    plain = 'theme=dark; sid=xyz%3D; empty=; q="a b"'
    r = envoy.get(cookie=plain)
    assert r.echoed.get("cookie") == plain
    c = r.persist_cookie()
    assert c is not None
    # With it, the other cookies are all there, unchanged and in order.
    mixed = f"theme=dark; persist={c.value}; sid=xyz%3D; empty="
    r2 = envoy.get(cookie=mixed)
    assert r2.server == r.server
    got = r2.echoed.get("cookie", "")
    pairs = [p for p in got.split("; ") if not p.startswith("persist=")]
    assert pairs == ["theme=dark", "sid=xyz%3D", "empty="], got
    # The backend's own Set-Cookie headers reach the client unchanged, next to ours.
    own = ["sid=abc123; Path=/; HttpOnly", "pref=1; Max-Age=60; SameSite=Strict"]
    path = "/?" + "&".join("set_cookie=" + quote(v, safe="") for v in own)
    r3 = envoy.get(path)  # no cookie: ours is added
    assert [x for x in r3.all("set-cookie") if not x.startswith("persist=")] == own
    assert r3.persist_cookie() is not None
    r4 = envoy.get(path, cookie=f"persist={c.value}; theme=dark")  # hit: only the backend's
    assert r4.server == r.server
    assert r4.all("set-cookie") == own
    # A backend cookie with the same name as ours is not touched either on a hit.
    r5 = envoy.get("/?set_cookie=" + quote("persist=backend-owned; Path=/x", safe=""), cookie=f"persist={c.value}")
    assert r5.server == r.server
    assert r5.all("set-cookie") == ["persist=backend-owned; Path=/x"]


def test_stats_names_at_both_endpoints(envoy_factory):
    envoy = start(envoy_factory, "http-cookie.yaml", "stateful_session", name="shop-1")
    first_cookie(envoy)
    envoy.wait_counters({"miss": 1, "new": 1}, settle=0)
    stats = envoy.stats("^" + re.escape(envoy.stats_prefix + "persist."))
    for c in ("hit", "miss", "new", "rebind", "invalid", "error"):
        assert f"{envoy.stats_prefix}persist.shop-1.{c}" in stats, stats
    # The examples' stats_tags turn the profile into a label (its `-` kept). Envoy puts no
    # `envoy_` prefix on the wasm namespace; natively the metric names keep Envoy's prefix
    # and the namespace (README "Native module").
    metric = "envoy_dynamicmodulescustom_persist_" if envoy.native else "persist_"
    prom = envoy.admin("/stats/prometheus")
    lines = [l for l in prom.splitlines() if l.startswith(metric)]
    assert metric + 'miss{profile="shop-1"} 1' in lines, lines
    assert metric + 'new{profile="shop-1"} 1' in lines, lines


def rename_handoff_header(name):
    """Patch for the Envoy side of a custom upstream_header (both examples)."""
    def patch(cfg):
        for listener in cfg["static_resources"]["listeners"]:
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            for f in hcm["http_filters"]:
                if f["name"] == "envoy.filters.http.header_mutation":
                    for side in ("request_mutations", "response_mutations"):
                        for m in f["typed_config"]["mutations"].get(side, []):
                            if m.get("remove") == "x-persist-upstream":
                                m["remove"] = name
                if f["name"] == "envoy.filters.http.stateful_session":
                    f["typed_config"]["session_state"]["typed_config"]["name"] = name
        for c in cfg["static_resources"]["clusters"]:
            for p in c.get("load_balancing_policy", {}).get("policies", []):
                tc = p["typed_extension_config"]["typed_config"]
                if "override_host_sources" in tc:
                    tc["override_host_sources"] = [{"header": name}]
    return patch


@pytest.mark.parametrize("example,handoff", HANDOFFS)
def test_custom_upstream_header(envoy_factory, backends, example, handoff):
    envoy = envoy_factory(example, plugin_config(handoff, upstream_header="x-sticky"),
                          patch=rename_handoff_header("x-sticky"))
    target = backends[2]
    # The client's copy of the configured header is removed, whatever it names.
    seen = Counter(envoy.get(headers={"x-sticky": v}).server for v in (target.addr, target.b64) for _ in range(6))
    assert set(seen) == {"a", "b", "c"} and seen["c"] <= 8, seen
    r, c = first_cookie(envoy)
    pinned = backends.by_name(r.server)
    for _ in range(8):
        r2 = envoy.get(cookie=f"persist={c.value}", headers={"x-sticky": target.addr})
        assert r2.server == pinned.name
        assert r2.echoed.get("x-sticky") == handoff_value(envoy, pinned)
        assert "x-persist-upstream" not in r2.echoed
    envoy.wait_counters({"hit": 8, "miss": 13, "new": 13, "rebind": 0})

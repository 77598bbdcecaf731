"""custom: the key is the value at custom.source. envoy/custom-lua.yaml as shipped: a Lua filter
before envoy-persist takes the tenant from x-tenant or /t/<tenant>/, lower-cases it and sets
it as dynamic metadata, read through the property path
["metadata", "filter_metadata", "envoy.filters.http.lua", "key"]. Then the header, cookie and
query sources (same example, the Lua filter's metadata unused)."""

import pytest

from conftest import assert_sticks, handoff_value, kill_and_rebind, spread

pytestmark = pytest.mark.both_builds

EXAMPLE = "custom-lua.yaml"


def tenant(envoy, name, form=0):
    """Three spellings of one tenant, all the same key after the Lua filter."""
    if form % 3 == 0:
        return envoy.get(f"/t/{name}/orders")
    if form % 3 == 1:
        return envoy.get("/cart", headers={"x-tenant": name.upper()})
    return envoy.get(f"/t/{name.capitalize()}?x=1")


def test_lua_key_sticky_on_every_worker(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    assert envoy.profile == "tenants"
    assert envoy.plugin["custom"]["source"] == {
        "property": ["metadata", "filter_metadata", "envoy.filters.http.lua", "key"]}
    first = tenant(envoy, "acme")
    assert first.status == 200 and first.server
    assert "x-persist-upstream" not in first.echoed
    server = backends.by_name(first.server)
    r = tenant(envoy, "acme", 1)
    assert r.server == server.name and r.echoed.get("x-persist-upstream") == handoff_value(envoy, server)
    assert r.echoed.get("x-tenant") == "ACME"  # the request itself is untouched
    assert_sticks(envoy, lambda i: tenant(envoy, "acme", i), server.name, n=24)
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 25, "rebind": 0, "invalid": 0})
    envoy.wait_entries(1)


def test_lua_keys_spread_and_each_sticks(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    names = [f"tenant{i}" for i in range(24)]
    bound = spread(envoy, lambda n: tenant(envoy, n), names)
    for n in names:
        for form in (1, 2):
            assert tenant(envoy, n, form).server == bound[n], n
    envoy.wait_counters({"miss": 24, "new": 24, "hit": 48, "rebind": 0}, settle=0)
    envoy.wait_entries(24)


def test_no_metadata_load_balanced(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    tenant(envoy, "acme")
    servers = [envoy.get(p).server for p in ["/", "/x/acme", "/t/", "/T/acme"] * 3]
    assert set(servers) == {"a", "b", "c"}, servers
    envoy.wait_counters({"miss": 1 + 12, "new": 1, "hit": 0}, settle=0)
    envoy.wait_entries(1)


def test_failover_rebinds_the_key(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    first = tenant(envoy, "globex")
    assert_sticks(envoy, lambda i: tenant(envoy, "globex", i), first.server, n=3, every_worker=False)
    new = kill_and_rebind(envoy, backends, lambda: tenant(envoy, "globex", 1), first.server)
    assert new != first.server
    assert tenant(envoy, "globex", 0).server == new
    envoy.wait_counter_at_least("hit", 3 + 1 + 10 + 5)
    envoy.wait_counters({"rebind": 1, "miss": 1})


SOURCES = {
    "header": ({"header": "x-session-key"},
               lambda e, v: e.get("/", headers={"x-session-key": v}),
               lambda e: e.get("/", headers={"x-other": "v"})),
    "cookie": ({"cookie": "cart"},
               lambda e, v: e.get("/", cookie=f"theme=dark; cart={v}; lang=en"),
               lambda e: e.get("/", cookie="theme=dark; cartx=1; lang=en")),
    "query": ({"query": "account"},
              lambda e, v: e.get(f"/list?page=2&account={v}&sort=asc"),
              lambda e: e.get("/list?page=2&accounts=1")),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_header_cookie_query_sources(envoy_factory, backends, source):
    spec, send, send_without = SOURCES[source]
    envoy = envoy_factory(EXAMPLE, {"name": f"by-{source}", "type": "custom", "custom": {"source": spec}})
    # The same value sticks, on every worker.
    first = send(envoy, "k-1")
    assert first.status == 200 and first.server
    assert_sticks(envoy, lambda i: send(envoy, "k-1"), first.server, n=20)
    # Different values spread, each sticks.
    values = [f"v{i}" for i in range(12)]
    bound = spread(envoy, lambda v: send(envoy, v), values)
    for v in values:
        assert send(envoy, v).server == bound[v]
    # Without the value: load balanced, nothing learned.
    servers = {send_without(envoy).server for _ in range(6)}
    assert len(servers) >= 2, servers
    # The Lua metadata is not this profile's source.
    assert len({tenant(envoy, "acme").server for _ in range(6)}) >= 2
    envoy.wait_counters({"miss": 1 + 12 + 6 + 6, "new": 13, "hit": 20 + 12, "rebind": 0}, settle=0)
    envoy.wait_entries(13)

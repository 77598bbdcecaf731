"""http_header: the value of a request header is the key; a static `servers` map of value ->
server always wins, other values are learned into the table. envoy/http-header.yaml as
shipped (header x-user, "qa-bot" pinned to the third endpoint), except where said."""

import pytest

from conftest import assert_sticks, handoff_value, kill_and_rebind, spread

pytestmark = pytest.mark.both_builds

EXAMPLE = "http-header.yaml"


def user(envoy, name, path="/", **headers):
    return envoy.get(path, headers={"x-user": name, **headers})


def test_header_value_sticky_on_every_worker(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    assert envoy.profile == "users"
    first = user(envoy, "bob")
    assert first.status == 200 and first.server
    assert "x-persist-upstream" not in first.echoed
    server = backends.by_name(first.server)
    for i in range(5):
        r = user(envoy, "bob", f"/item/{i}")
        assert r.server == server.name and r.echoed.get("x-persist-upstream") == handoff_value(envoy, server)
        assert r.echoed.get("x-user") == "bob"  # the key header reaches the server
    assert_sticks(envoy, lambda i: user(envoy, "bob"), server.name, n=22)
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 27, "rebind": 0, "invalid": 0})
    envoy.wait_entries(1)


def test_values_spread_and_each_sticks(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    users = [f"user-{i}" for i in range(24)]
    bound = spread(envoy, lambda u: user(envoy, u), users)
    for u in users:
        for _ in range(2):
            assert user(envoy, u).server == bound[u], u
    envoy.wait_counters({"miss": 24, "new": 24, "hit": 48, "rebind": 0}, settle=0)
    envoy.wait_entries(24)


def test_static_servers_map_wins(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    c = backends.by_name("c")
    assert envoy.plugin["header"]["servers"] == {"qa-bot": c.addr}  # the example's address, patched
    # From the very first request, on every worker; no table entry.
    assert_sticks(envoy, lambda i: user(envoy, "qa-bot"), "c", n=20)
    envoy.wait_counters({"hit": 20, "miss": 0, "new": 0, "rebind": 0}, settle=0)
    # Two static values on different servers next to learned ones, and the client's own
    # hand-off header never overrides the map.
    envoy.stop()
    a, b = backends.by_name("a"), backends.by_name("b")
    envoy = envoy_factory(EXAMPLE, {"name": "static", "type": "http_header",
                                    "header": {"name": "X-Tenant",
                                               "servers": {"gold": a.addr, "silver": b.addr}}})
    for _ in range(6):
        for value, backend in (("gold", a), ("silver", b)):
            r = envoy.get(headers={"x-tenant": value, "x-persist-upstream": c.b64})
            assert r.server == backend.name, f"{value}: {r}"
            assert r.echoed.get("x-persist-upstream") == handoff_value(envoy, backend)
    # Values not in the map are learned as usual.
    learned = envoy.get(headers={"x-tenant": "bronze"})
    assert_sticks(envoy, lambda i: envoy.get(headers={"x-tenant": "bronze"}), learned.server, n=5,
                  every_worker=False)
    envoy.wait_counters({"hit": 12 + 5, "new": 1, "miss": 1, "rebind": 0}, settle=0)
    envoy.wait_entries(1)


def test_without_the_header_load_balanced(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    bob = user(envoy, "bob")
    servers = [envoy.get(headers={"x-other": "bob"}).server for _ in range(9)]
    assert set(servers) == {"a", "b", "c"}, servers
    # The client's hand-off header neither picks a server nor reaches it.
    for other in backends:
        r = user(envoy, "bob", **{"x-persist-upstream": other.b64})
        assert r.server == bob.server
        assert r.echoed.get("x-persist-upstream") == handoff_value(envoy, backends.by_name(bob.server))
    envoy.wait_counters({"miss": 1 + 9, "new": 1, "hit": 3})


def test_failover_rebinds_the_value(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    first = user(envoy, "carol")
    assert_sticks(envoy, lambda i: user(envoy, "carol"), first.server, n=3, every_worker=False)
    new = kill_and_rebind(envoy, backends, lambda: user(envoy, "carol"), first.server)
    assert new != first.server
    envoy.wait_counter_at_least("hit", 3 + 1 + 10 + 5)
    envoy.wait_counters({"rebind": 1, "miss": 1})

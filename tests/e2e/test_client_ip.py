"""client_ip: the client address Envoy computed (use_remote_address, xff_num_trusted_hops: 1:
the last X-Forwarded-For entry, else the peer), masked by ipv4_prefix / ipv6_prefix.
envoy/client-ip.yaml as shipped (/24 and /64), except where said. Clients are simulated with
X-Forwarded-For (documentation ranges); every connection is on loopback."""

import pytest

from conftest import assert_sticks, handoff_value, kill_and_rebind, spread

pytestmark = pytest.mark.both_builds

EXAMPLE = "client-ip.yaml"


def from_ip(envoy, xff, path="/"):
    return envoy.get(path, headers={"X-Forwarded-For": xff})


def test_same_client_sticks_on_every_worker(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    assert envoy.profile == "clients"
    first = from_ip(envoy, "198.51.100.7")
    assert first.status == 200 and first.server
    assert "x-persist-upstream" not in first.echoed
    server = backends.by_name(first.server)
    r = from_ip(envoy, "198.51.100.7")
    assert r.echoed.get("x-persist-upstream") == handoff_value(envoy, server)
    assert_sticks(envoy, lambda i: from_ip(envoy, "198.51.100.7", f"/p/{i}"), server.name, n=22)
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 23, "rebind": 0, "invalid": 0})
    envoy.wait_entries(1)


def test_networks_spread_and_the_prefix_groups_neighbours(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)  # ipv4_prefix 24
    nets = [f"10.{i}.{i * 7 % 256}" for i in range(1, 25)]
    bound = spread(envoy, lambda net: from_ip(envoy, f"{net}.5"), nets)
    for net in nets:
        for host in (5, 200, 0, 255):  # every address of the /24 shares the server
            r = from_ip(envoy, f"{net}.{host}")
            assert r.server == bound[net], f"{net}.{host}: {r}, expected {bound[net]}"
    envoy.wait_counters({"miss": 24, "new": 24, "hit": 4 * 24, "rebind": 0}, settle=0)
    envoy.wait_entries(24)


def test_prefix_32_each_address_its_own_key(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE, {"name": "exact", "type": "client_ip"})  # defaults: /32, /128
    addrs = [f"192.0.2.{i}" for i in range(1, 25)]
    bound = spread(envoy, lambda ip: from_ip(envoy, ip), addrs)
    for ip in addrs:
        assert from_ip(envoy, ip).server == bound[ip]
    envoy.wait_counters({"miss": 24, "new": 24, "hit": 24}, settle=0)


def test_only_the_trusted_hop_counts(envoy_factory, backends):
    """xff_num_trusted_hops: 1: the client is the last X-Forwarded-For entry (what the trusted
    proxy appended); entries a client put before it choose nothing. Without the header the
    client is its peer address (127.0.0.1 here)."""
    envoy = envoy_factory(EXAMPLE)
    first = from_ip(envoy, "198.51.100.50")
    for forged in ("203.0.113.9, 198.51.100.50", "10.9.9.9,198.51.100.77", "1.2.3.4, 5.6.7.8, 198.51.100.1"):
        for _ in range(3):
            assert from_ip(envoy, forged).server == first.server, forged
    direct = envoy.get()
    assert_sticks(envoy, lambda i: envoy.get(), direct.server, n=8, every_worker=False)
    envoy.wait_counters({"miss": 2, "new": 2, "hit": 9 + 8})
    envoy.wait_entries(2)


def test_ipv6_prefix(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)  # ipv6_prefix 64
    nets = [f"2001:db8:{i:x}:{i * 3:x}" for i in range(1, 16)]
    bound = spread(envoy, lambda net: from_ip(envoy, f"{net}::1"), nets)
    for net in nets:
        for host in ("::2", ":ffff:ffff:ffff:ffff"):
            assert from_ip(envoy, f"{net}{host}").server == bound[net], f"{net}{host}"
    envoy.wait_counters({"miss": 15, "new": 15, "hit": 30}, settle=0)


def test_failover_rebinds_the_client(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    first = from_ip(envoy, "198.51.100.99")
    assert_sticks(envoy, lambda i: from_ip(envoy, "198.51.100.99"), first.server, n=3, every_worker=False)
    # A neighbour (same /24) follows the rebound entry as well.
    new = kill_and_rebind(envoy, backends, lambda: from_ip(envoy, "198.51.100.99"), first.server)
    assert new != first.server
    assert from_ip(envoy, "198.51.100.1").server == new
    envoy.wait_counter_at_least("hit", 3 + 1 + 10 + 5)
    envoy.wait_counters({"rebind": 1, "miss": 1})

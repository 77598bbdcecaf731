"""The local persistence table of the locally stored types (through http_header, the simplest
key): idle `timeout`, `absolute_timeout`, the background sweep counted `expired`, and
`max_entries` with eviction, the `entries` gauge never above it."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import assert_sticks, deadline_loop

EXAMPLE = "http-header.yaml"


def profile(name, **over):
    return {"name": name, "type": "http_header", "header": {"name": "x-user"}, **over}


def user(envoy, name):
    return envoy.get("/", headers={"x-user": name})


def test_idle_entry_lapses_and_is_swept(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE, profile("ttl", timeout="3s"))
    created = time.monotonic()
    first = {u: user(envoy, u).server for u in ("idle", "gone", "kept")}
    envoy.wait_counters({"miss": 3, "new": 3}, settle=0)
    envoy.wait_entries(3)
    # Used about every 0.8 s for 5.5 s (longer than the timeout): never lapses.
    hits = 0
    while time.monotonic() - created < 5.5:
        r = user(envoy, "kept")
        assert r.server == first["kept"], f"a used entry lapsed: {r}"
        hits += 1
        time.sleep(0.8)
    # "idle" was not used for more than 3 s: a miss, then learned again.
    r = user(envoy, "idle")
    assert r.status == 200
    envoy.wait_counters({"miss": 4, "new": 4, "hit": hits, "rebind": 0}, settle=0)
    # "gone" is never asked for again: the sweep removes it and counts it (within about
    # timeout/2 + 3 s after it lapsed).
    expired = 0
    for _ in deadline_loop(max(1.0, created + 3 + 1.5 + 3 + 2 - time.monotonic()), 0.25):
        expired = envoy.counters().get("expired", 0)
        if expired >= 1:
            break
    assert expired >= 1, f"no lapsed entry swept: {envoy.counters()}"
    # The gauge follows the sweep: "gone" is no longer counted.
    entries = None
    for _ in deadline_loop(3.0, 0.2):
        entries = envoy.entries()
        if entries is not None and entries <= 2:
            break
    assert entries is not None and entries <= 2, f"entries gauge after the sweep: {entries}"


def test_absolute_timeout_lapses_even_when_used(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE, profile("abs", timeout="1m", absolute_timeout="3s"))
    created = time.monotonic()
    user(envoy, "alice")
    while time.monotonic() - created < 2.0:  # within the lifetime: hits only
        user(envoy, "alice")
        time.sleep(0.3)
    envoy.wait_counters({"miss": 1, "new": 1}, settle=0)
    while time.monotonic() - created < 5.0:  # past it: at least one miss although used
        user(envoy, "alice")
        time.sleep(0.3)
    misses = 0
    for _ in deadline_loop(3.0, 0.2):
        misses = envoy.counters().get("miss", 0)
        if misses >= 2:
            break
    assert misses >= 2, f"the entry outlived absolute_timeout: {envoy.counters()}"
    assert envoy.counters().get("new", 0) >= 2


def test_max_entries_evicts_and_never_exceeds(envoy_factory, backends):
    cap, n = 50, 300
    envoy = envoy_factory(EXAMPLE, profile("cap", max_entries=cap))
    samples = []  # (during the traffic?, value)
    running = threading.Event()
    done = threading.Event()

    def sample():
        while not done.is_set():
            v = envoy.entries()
            if v is not None:
                samples.append((running.is_set(), v))
            done.wait(0.1)

    def send(i):
        time.sleep(0.04)  # about 3 s of traffic: the workers flush the gauge during it
        return user(envoy, f"u{i}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        running.set()
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(send, range(n)))
        running.clear()
        time.sleep(1.3)  # one more flush of every worker
    finally:
        done.set()
        sampler.join(timeout=5)
    assert all(r.status == 200 and r.server for r in results), \
        [r for r in results if r.status != 200][:3]
    during = [v for d, v in samples if d]
    assert any(v > 0 for v in during), f"no gauge flush sampled during the traffic: {samples}"
    values = [v for _, v in samples]
    assert max(values) <= cap, f"entries above max_entries={cap}: {max(values)} ({samples})"
    counters = envoy.wait_counters({"miss": n, "new": n}, settle=0)
    assert counters.get("error", 0) == 0
    evicted = 0
    for _ in deadline_loop(4.0, 0.2):
        counters = envoy.counters()
        evicted = counters.get("evicted", 0)
        if evicted >= n - cap:
            break
    assert evicted >= n - cap, f"{n} keys into {cap} entries: evicted {evicted}"
    # Still a working table: a recent key sticks.
    last = user(envoy, f"u{n - 1}").server
    for _ in range(3):
        assert user(envoy, f"u{n - 1}").server == last
    entries = envoy.entries()
    assert 0 < entries <= cap, entries


def test_override_host_handoff_fails_over_at_once_and_suspects(envoy_factory, backends):
    """The table types with the `override_host` hand-off (plain ip:port, the route's retry):
    a dead persisted server costs one retry, the key is rebound at once, and the server is
    suspect, so another key bound to it is moved without a retry."""
    envoy = envoy_factory("http-cookie-override-host.yaml",
                          {"name": "oh", "type": "http_header", "handoff": "override_host",
                           "header": {"name": "x-user"}})
    bound = {}
    for i in range(12):  # bounded: round robin puts two keys on one server
        bound[f"k{i}"] = user(envoy, f"k{i}").server
        same = [k for k, v in bound.items() if v == bound["k0"]]
        if len(same) >= 2:
            break
    first, second = [k for k, v in bound.items() if v == bound["k0"]][:2]
    victim = backends.by_name(bound[first])
    r = user(envoy, first)
    assert r.server == victim.name and r.echoed.get("x-persist-upstream") == victim.addr
    victim.kill()
    try:
        retries = envoy.stat("cluster.backends.upstream_rq_retry") or 0
        r = user(envoy, first)  # at once, before any health check
        assert r.status == 200 and r.server not in (None, victim.name), r
        assert (envoy.stat("cluster.backends.upstream_rq_retry") or 0) > retries, "no retry happened"
        assert_sticks(envoy, lambda i: user(envoy, first), r.server, n=6, every_worker=False)
        # Round robin of new clients must avoid the dead server too before retries are counted.
        envoy.wait_health({victim.addr: False}, timeout=5)
        retries = envoy.stat("cluster.backends.upstream_rq_retry")
        r2 = user(envoy, second)
        assert r2.status == 200 and r2.server != victim.name
        assert envoy.stat("cluster.backends.upstream_rq_retry") == retries, \
            "a suspect server was named again (the request paid a retry)"
        assert_sticks(envoy, lambda i: user(envoy, second), r2.server, n=4, every_worker=False)
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)
    envoy.wait_counter_at_least("rebind", 2)

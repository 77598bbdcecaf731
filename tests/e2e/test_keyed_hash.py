"""The keyed hash of client keys (SPEC 2.2): table slots and etcd key names come from
SipHash-2-4-128 under a profile secret, not from an MD5 anyone can compute.

- A victim's binding survives a burst of keys crafted offline to share its slot under the
  unkeyed MD5 of the version before (http_header, max_entries 160: 10 slots of 16).
- A mirror written by the MD5 version (keys /persist/<profile>/<md5 hex>) is neither loaded
  nor watched nor looked up by the new version; its keys lapse with their leases.

keyed_hash.py is an independent Python model (checked here against the SipHash reference
vector; test_mirror.py checks it against the names the filter writes in etcd).
"""

import base64
import time

import keyed_hash as kh
from conftest import assert_sticks, deadline_loop, example_plugin_json
from etcd_util import etcd, mirror_patch  # noqa: F401 (fixture)

MAX_ENTRIES = 160  # 10 slots of 16 entries
BURST = 48         # three times a slot's capacity, all aimed at the victim's MD5 slot


def user(envoy, name):
    return envoy.get("/", headers={"x-user": name})


def test_python_model_matches_the_siphash_reference_vector():
    key = bytes(range(16))
    assert kh.siphash24_128(key, b"").hex() == "a3817f04ba25a8e66df67214c7550293"
    # A crafted key really shares the target's MD5 slot (what the burst relies on).
    slots = kh.slots_for(MAX_ENTRIES)
    assert slots == 10
    for k in kh.crafted_keys(b"victim", slots, 5):
        assert kh.md5_slot(k.encode(), slots) == kh.md5_slot(b"victim", slots)


def test_victim_binding_survives_a_burst_of_md5_colliding_keys(envoy_factory, backends):
    envoy = envoy_factory("http-header.yaml", {
        "name": "victim", "type": "http_header", "timeout": "30m", "max_entries": MAX_ENTRIES,
        "header": {"name": "x-user"}})
    first = user(envoy, "victim")
    assert first.status == 200 and first.server
    envoy.wait_counters({"miss": 1, "new": 1}, settle=0)
    # The victim's entry is the oldest (last use a second before the burst): the first one a
    # full slot evicts.
    time.sleep(1.1)
    crafted = kh.crafted_keys(b"victim", kh.slots_for(MAX_ENTRIES), BURST)
    for k in crafted:
        r = user(envoy, k)
        assert r.status == 200, r
    envoy.wait_counters({"miss": 1 + BURST, "new": 1 + BURST}, settle=0)
    # Under MD5 all 48 would land in the victim's slot (16 entries): 33 evictions, the
    # victim's among the first, and its next request a miss. Under the keyed hash they
    # spread over the 10 slots: nothing is evicted and the victim still hits.
    assert_sticks(envoy, lambda i: user(envoy, "victim"), first.server, n=10)
    got = envoy.wait_counters({"hit": 10, "miss": 1 + BURST, "evicted": 0})
    print(f"\n{BURST} keys crafted for the victim's MD5 slot: counters {got}")
    envoy.wait_entries(1 + BURST)


def _grant(members, ttl):
    return int(members.call("/v3/lease/grant", {"TTL": ttl})["ID"])


def test_a_mirror_written_by_the_md5_version_is_ignored_and_lapses(etcd, envoy_factory, backends):
    """The version before named a key /persist/users/<md5 hex of the x-user value>. Such keys
    (here all naming backend c, under a 6 s lease as that version's writer would) are outside
    the range the new version loads and watches, and not what its lookups ask for: they are
    never applied, and they lapse in etcd with their leases."""
    c = backends.by_name("c")
    profile = example_plugin_json("mirror.yaml")["name"]
    secret = base64.b64decode(example_plugin_json("mirror.yaml")["mirror"]["secret"])
    now = int(time.time())
    lease = _grant(etcd, 6)
    legacy = [f"legacy-{i}" for i in range(6)]
    for v in legacy[:3]:  # present when the Envoy loads the prefix
        etcd.put(kh.md5_etcd_key(v, profile), f"{c.addr} {now} {now}", lease=lease)
    envoy = envoy_factory("mirror.yaml", patch=mirror_patch(etcd.ports))
    for _ in deadline_loop(10.0, 0.1):
        if envoy.counters().get("mirror_connected") == 1:
            break
    assert envoy.counters().get("mirror_connected") == 1, envoy.counters()
    for v in legacy[3:]:  # written while its watch runs
        etcd.put(kh.md5_etcd_key(v, profile), f"{c.addr} {now} {now}", lease=lease)
    time.sleep(1.5)
    got = envoy.counters()
    assert got.get("mirror_event", 0) == 0 and got.get("entries", 0) == 0, f"an MD5-named key was applied: {got}"
    # Their values are used for nothing: each is a miss, learned and written under its MAC name.
    bound = {}
    for v in legacy:
        r = user(envoy, v)
        assert r.status == 200 and r.server, r
        bound[v] = backends.by_name(r.server).addr
    envoy.wait_counters({"miss": 6, "new": 6, "hit": 0}, settle=0)
    want = {kh.etcd_key(secret, v, profile): v for v in legacy}
    have = {}
    for _ in deadline_loop(5.0, 0.2):
        have = etcd.get_prefix(f"/persist/{profile}/")
        if all(k in have for k in want):
            break
    for k, v in want.items():
        assert k in have and have[k].value.split(" ")[0] == bound[v], f"{v}: {have.get(k)}"
    # The legacy keys were left as they were, and lapse with their lease.
    for v in legacy:
        kv = have.get(kh.md5_etcd_key(v, profile))
        assert kv is not None and kv.value == f"{c.addr} {now} {now}", kv
    gone = False
    for _ in deadline_loop(10.0, 0.25):
        left = [v for v in legacy if etcd.get(kh.md5_etcd_key(v, profile)) is not None]
        if not left:
            gone = True
            break
    assert gone, f"legacy keys still in etcd: {left}"
    assert all(etcd.get(k) is not None for k in want), "the new keys lapsed with the old lease"
    got = envoy.counters()
    assert got.get("mirror_error", 0) == 0 and got.get("error", 0) == 0, got
    # The watch saw the Envoy's own six puts, nothing of the legacy keys (puts or expiry).
    assert got.get("mirror_event", 0) == len(legacy), got

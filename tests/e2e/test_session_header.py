"""session_header (SPEC 2.5): the sealed token in a header the client echoes back, through
envoy/session-header.yaml: sticky over fresh connections, tampered / forged / moved tokens
counted invalid and re-issued, key rotation, failover, strict."""

import time

import pytest

import persist_codec as codec
from conftest import KEY1, KEY2, deep_merge

pytestmark = pytest.mark.both_builds

HEADER = "x-persist-session"


def plugin(**over):
    base = {"name": "e2e", "type": "session_header",
            "session_header": {"name": HEADER, "keys": [codec.key_b64(KEY1)]}}
    return deep_merge(base, over)


def token_of(r):
    vals = r.all(HEADER)
    assert len(vals) <= 1, f"more than one token: {r.headers}"
    return vals[0] if vals else None


def first_token(envoy):
    r = envoy.get()
    assert r.status == 200, r
    t = token_of(r)
    assert t is not None, f"no token on a first response: {r.headers}"
    assert r.set_cookies() == [], "this type sets no cookie"
    return r, t


def server_of(envoy, token, keys=(KEY1,)):
    return envoy.backends.by_addr(codec.open_header_token(list(keys), HEADER, token).addr).name


def test_sticky_over_fresh_connections_and_forgeries_are_invalid(envoy_factory, backends):
    envoy = envoy_factory("session-header.yaml", plugin())
    clients = []
    for _ in range(6):
        r, t = first_token(envoy)
        assert server_of(envoy, t) == r.server, "the token names the server that answered"
        clients.append((t, r.server))
    assert len({s for _, s in clients}) >= 2, f"first requests not load balanced: {clients}"
    before = envoy.worker_connections()
    for i in range(24):
        t, server = clients[i % len(clients)]
        r = envoy.get(headers={HEADER: t})
        assert r.status == 200 and r.server == server, (i, r)
        assert token_of(r) is None, "a fresh valid token is not re-sent"
    after = envoy.worker_connections()
    assert all(after[w] > before.get(w, 0) for w in after), f"one worker only: {before} -> {after}"
    # The token is not read from a cookie, and the hand-off header chooses nothing.
    t0, victim = clients[0]
    other = next(b for b in backends if b.name != victim)
    for _ in range(3):
        r = envoy.get(headers={"x-persist-upstream": other.b64, "Cookie": f"persist={t0}"})
        assert token_of(r) is not None  # no token read: a miss, a new token
    envoy.wait_counters({"hit": 24, "new": 6 + 3, "miss": 6 + 3, "invalid": 0, "rebind": 0}, settle=0)

    now = int(time.time())
    target = backends.by_name("c").addr
    # A token computed here from the definition, with the right key and name, is honoured:
    # the rejections below are about what differs, not about the test's sealing.
    good = codec.seal_header(KEY1, HEADER, target, now)
    for _ in range(4):
        assert envoy.get(headers={HEADER: good}).server == "c"
    last = t0[-1]
    bad = [
        t0[:-1] + ("A" if last != "A" else "B"),                      # tampered
        t0[:10] + t0[11:],                                            # cut
        codec.seal_header(KEY2, HEADER, target, now),                 # unknown key
        codec.seal_header(KEY1, "x-other-session", target, now),      # sealed for another header
        codec.seal(KEY1, HEADER, target, now),                        # a cookie value, same name
        codec.seal_header(KEY1, HEADER, target, now - 3600),          # lapsed (timeout 20m)
        codec.b64url_nopad(target.encode()),                          # plain address
        "",
    ]
    for i, value in enumerate(bad):
        r = envoy.get(headers={HEADER: value})
        assert r.status == 200, (i, r)
        new = token_of(r)
        assert new is not None, f"forgery {i}: no token re-issued"
        assert server_of(envoy, new) == r.server, f"forgery {i}: the new token names who answered"
    envoy.wait_counters({"invalid": len(bad), "hit": 24 + 4, "new": 9 + len(bad), "miss": 9,
                         "rebind": 0})


def test_key_rotation_and_a_token_moved_to_another_header(envoy_factory, backends):
    """A token sealed with KEY1 (as an Envoy configured with KEY1 seals it; the first test
    shows such tokens are honoured) reaches an Envoy configured with [KEY2, KEY1]: honoured,
    while new tokens are sealed with KEY2 only. A profile with the same keys but another
    header name rejects the rotated Envoy's token: a token is bound to its header."""
    pinned = backends.by_name("b")
    t = codec.seal_header(KEY1, HEADER, pinned.addr, int(time.time()))
    other_name = "x-api-session"
    keys = [codec.key_b64(KEY2), codec.key_b64(KEY1)]
    rotated = envoy_factory("session-header.yaml", plugin(session_header={"keys": keys}))
    for _ in range(3):
        r = rotated.get(headers={HEADER: t})
        assert r.server == pinned.name and token_of(r) is None, r
    _, t2 = first_token(rotated)
    codec.open_header_token([KEY2], HEADER, t2)
    try:
        codec.open_header_token([KEY1], HEADER, t2)
        raise AssertionError("a new token opened with the old key")
    except ValueError:
        pass
    rotated.wait_counters({"hit": 3, "new": 1, "invalid": 0}, settle=0)
    rotated.stop()
    t = t2

    moved = envoy_factory("session-header.yaml",
                          plugin(session_header={"name": other_name, "keys": keys}))
    r = moved.get(headers={other_name: t})
    issued = r.header(other_name)
    assert issued is not None and r.header(HEADER) is None, r.headers
    assert codec.open_header_token([KEY2], other_name, issued).addr == backends.by_name(r.server).addr
    r = moved.get(headers={HEADER: t})                   # the other name is not read at all
    assert r.header(other_name) is not None
    r = moved.get(headers={other_name: issued})          # its own token: a hit
    assert r.header(other_name) is None
    moved.wait_counters({"invalid": 1, "miss": 1, "hit": 1, "new": 2}, settle=0)


def _strict(cfg):
    for f in cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]:
        if f["name"] == "envoy.filters.http.stateful_session":
            f["typed_config"]["strict"] = True


def test_failover_rebinds_and_strict_answers_503(envoy_factory, backends):
    """The same key in two Envoys: the default one rebinds a dead server's client, the
    strict one answers 503 (no token issued) until the server is back."""
    envoy = envoy_factory("session-header.yaml", plugin())
    strict = envoy_factory("session-header.yaml", plugin(), patch=_strict)
    r, t = first_token(envoy)
    victim = backends.by_name(r.server)
    assert strict.get(headers={HEADER: t}).server == victim.name
    victim.kill()
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        r = envoy.get(headers={HEADER: t})
        assert r.status == 200 and r.server not in (None, victim.name), r
        moved = token_of(r)
        assert moved is not None and server_of(envoy, moved) == r.server
        for _ in range(5):
            r2 = envoy.get(headers={HEADER: moved})
            assert r2.server == r.server and token_of(r2) is None
        envoy.wait_counters({"rebind": 1, "new": 2, "hit": 1 + 5}, settle=0)
        strict.wait_health({victim.addr: False}, timeout=10)
        for _ in range(3):
            r = strict.get(headers={HEADER: t})
            assert r.status == 503 and token_of(r) is None, r
    finally:
        victim.start()
    strict.wait_health({victim.addr: True}, timeout=10)
    r = strict.get(headers={HEADER: t})
    assert r.status == 200 and r.server == victim.name and token_of(r) is None, r
    strict.wait_counters({"hit": 1 + 3 + 1, "new": 0, "rebind": 0}, settle=0)

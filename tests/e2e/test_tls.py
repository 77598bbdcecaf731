"""Type `tls`: the TLS session ID (TLS 1.2, resumed on fresh TCP connections) or the client
certificate (mTLS) keeps a client on its server; a client-sent x-tls-session-id is never
the key; failover rebinds the session's entry to the server that answered.

Envoy is envoy/tls.yaml (header_mutation -> wasm -> stateful_session -> router), patched
with certificates generated for the session (tls_util.make_pki)."""

from collections import Counter

import pytest

from conftest import EXAMPLES, HANDOFF_HEADER, handoff_value
from tls_util import SESSION_HEADER, Pki, cert_sha256, client_context, make_pki, patch_certs, tls_request

pytestmark = pytest.mark.both_builds

CLIENTS = ("client-1", "client-2", "client-3", "client-4")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), clients=CLIENTS)


def tls_plugin(**tls):
    p = {"name": "e2e", "type": "tls", "handoff": "stateful_session"}
    if tls:
        p["tls"] = tls
    return p


def start(envoy_factory, pki, mtls=False, max_version=None, **tls):
    return envoy_factory("tls.yaml", tls_plugin(**tls), patch=patch_certs(pki, mtls=mtls, max_version=max_version))


def get(envoy, ctx, session=None, headers=None, path="/"):
    r = tls_request(envoy.port, ctx, session=session, headers=headers, path=path)
    for name in {HANDOFF_HEADER, envoy.upstream_header}:
        assert r.header(name) is None, f"{name} leaked to the client: {r.headers}"
    if session is not None:
        assert r.reused, f"the TLS session was not resumed: {r}"
        assert r.session_id == session.id.hex()
    return r


def test_resumed_session_sticks_over_fresh_connections(envoy_factory, backends, pki):
    envoy = start(envoy_factory, pki)
    ctx = client_context(pki)
    r0 = get(envoy, ctx)
    assert r0.status == 200 and r0.version == "TLSv1.2" and not r0.reused
    # disable_stateless_session_resumption: an ID from the first full handshake on.
    assert r0.session_id, "no TLS session ID on the first handshake"
    assert r0.echoed.get(SESSION_HEADER) == r0.session_id
    assert HANDOFF_HEADER not in r0.echoed  # not in the table yet: nothing named
    server = backends.by_name(r0.server)
    before = envoy.worker_connections()
    n = 25
    for i in range(n):
        r = get(envoy, ctx, session=r0.session, path=f"/item/{i}")
        assert r.status == 200
        assert r.server == server.name, f"resumed request {i} went to {r.server}, session is on {server.name}"
        assert r.echoed.get(SESSION_HEADER) == r0.session_id
        assert r.echoed.get(HANDOFF_HEADER) == handoff_value(envoy, server)
    # The table (and Envoy's TLS session cache) is shared: the connections reached every worker.
    after = envoy.worker_connections()
    assert len(after) == envoy.concurrency and all(after[w] > before.get(w, 0) for w in after), \
        f"the {n} connections did not reach every worker: {before} -> {after}"
    envoy.wait_counters({"miss": 1, "new": 1, "hit": n, "rebind": 0, "entries": 1, "error": 0})


def test_new_sessions_spread_and_each_sticks(envoy_factory, backends, pki):
    envoy = start(envoy_factory, pki)
    ctx = client_context(pki)
    n = 30
    firsts = [get(envoy, ctx) for _ in range(n)]
    assert all(not r.reused and r.status == 200 for r in firsts)
    assert len({r.session_id for r in firsts}) == n, "session IDs repeat"
    seen = Counter(r.server for r in firsts)
    assert set(seen) == {"a", "b", "c"} and min(seen.values()) >= 5, f"new sessions not spread: {seen}"
    # Every session, resumed (in another order, on other connections and workers), goes home.
    for r in reversed(firsts):
        again = get(envoy, ctx, session=r.session)
        assert again.server == r.server, f"session {r.session_id[:12]}: {again.server} != {r.server}"
    envoy.wait_counters({"miss": n, "new": n, "hit": n, "rebind": 0, "entries": n})


def test_client_session_header_is_never_the_key(envoy_factory, backends, pki):
    envoy = start(envoy_factory, pki)
    ctx = client_context(pki)
    s = get(envoy, ctx)
    # A second session on another server (round robin: within a few tries).
    others = []
    t = None
    for _ in range(6):
        t = get(envoy, ctx)
        if t.server != s.server:
            break
        others.append(t)
    assert t.server != s.server, "no second server among new sessions"
    misses = 2 + len(others)
    # New sessions claiming S's ID: their own ID is the key, S's server is not chosen.
    n = 15
    seen = Counter()
    for _ in range(n):
        r = get(envoy, ctx, headers={SESSION_HEADER: s.session_id})
        seen[r.server] += 1
        assert r.echoed.get(SESSION_HEADER) == r.session_id != s.session_id, r.echoed
    assert set(seen) == {"a", "b", "c"} and seen[s.server] <= 9, f"a client header steered traffic: {seen}"
    misses += n
    # Resumed sessions claiming each other's ID: each stays on its own server.
    hits = 0
    for _ in range(4):
        r = get(envoy, ctx, session=s.session, headers={SESSION_HEADER: t.session_id})
        assert r.server == s.server and r.echoed.get(SESSION_HEADER) == s.session_id
        r = get(envoy, ctx, session=t.session, headers={SESSION_HEADER: s.session_id})
        assert r.server == t.server and r.echoed.get(SESSION_HEADER) == t.session_id
        hits += 2
    envoy.wait_counters({"miss": misses, "new": misses, "hit": hits, "rebind": 0, "entries": misses})


def test_tls13_has_no_session_id_and_the_client_header_is_removed(envoy_factory, backends, pki):
    """TLS 1.3 (allowed by a patched listener) has no session ID: no key, no persistence,
    counted miss, and the client's own x-tls-session-id never reaches the filter."""
    envoy = start(envoy_factory, pki, max_version="TLSv1_3")
    ctx = client_context(pki, tls12=False)
    n = 12
    seen = Counter()
    for _ in range(n):
        r = get(envoy, ctx, headers={SESSION_HEADER: "00" * 32})
        assert r.status == 200 and r.version == "TLSv1.3"
        assert SESSION_HEADER not in r.echoed, r.echoed
        seen[r.server] += 1
    assert set(seen) == {"a", "b", "c"}, seen
    envoy.wait_counters({"miss": n, "new": 0, "hit": 0, "entries": 0})


def test_failover_rebinds_the_session(envoy_factory, backends, pki):
    envoy = start(envoy_factory, pki)
    ctx = client_context(pki)
    r0 = get(envoy, ctx)
    victim = backends.by_name(r0.server)
    for _ in range(3):
        assert get(envoy, ctx, session=r0.session).server == victim.name
    victim.kill()
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        r = get(envoy, ctx, session=r0.session)
        assert r.status == 200 and r.server not in (None, victim.name), r
        new_home = r.server
        for _ in range(10):
            assert get(envoy, ctx, session=r0.session).server == new_home
        envoy.wait_counters({"miss": 1, "new": 1, "hit": 3 + 1 + 10, "rebind": 1, "entries": 1})
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)
    # The entry was rebound: the session stays on its new server after the old one is back.
    for _ in range(5):
        r = get(envoy, ctx, session=r0.session)
        assert r.server == new_home, f"after {victim.name} came back the session went to {r.server}"
        assert r.echoed.get(HANDOFF_HEADER) == handoff_value(envoy, backends.by_name(new_home))
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 19, "rebind": 1, "entries": 1})


def test_peer_certificate_key_with_mtls(envoy_factory, backends, pki):
    """key peer_certificate: each client certificate sticks, over full handshakes (new
    sessions every time) and over a resumed session alike."""
    envoy = start(envoy_factory, pki, mtls=True, key="peer_certificate")
    home = {}
    rounds = 6
    for client in CLIENTS:
        ctx = client_context(pki, client=client)
        r0 = get(envoy, ctx)
        assert r0.status == 200, r0
        home[client] = r0.server
        ids = {r0.session_id}
        for i in range(rounds):
            r = get(envoy, ctx)
            assert not r.reused
            ids.add(r.session_id)
            assert r.server == home[client], f"{client} request {i}: {r.server} != {home[client]}"
            assert r.echoed.get(HANDOFF_HEADER) == handoff_value(envoy, backends.by_name(home[client]))
        assert len(ids) == rounds + 1, "expected a new TLS session per connection"
        r = get(envoy, ctx, session=r0.session)
        assert r.server == home[client], f"{client} resumed: {r.server} != {home[client]}"
    # Interleaved, a second time round: still each on its own server.
    for client in CLIENTS:
        assert get(envoy, client_context(pki, client=client)).server == home[client]
    k = len(CLIENTS)
    assert len(set(home.values())) >= 2, f"all client certificates on one server: {home}"
    assert len({cert_sha256(pki.clients[c][0]) for c in CLIENTS}) == k
    envoy.wait_counters({"miss": k, "new": k, "hit": k * (rounds + 1) + k, "rebind": 0, "entries": k})


def test_peer_certificate_optional_client_certificate(envoy_factory, backends, pki):
    """Client certificates requested, not required: a client without one has no key (miss,
    load balanced, nothing stored); one with a certificate sticks."""
    envoy = start(envoy_factory, pki, mtls="optional", key="peer_certificate")
    anon = client_context(pki)
    n = 12
    seen = Counter()
    for _ in range(n):
        r = get(envoy, anon)
        assert r.status == 200 and HANDOFF_HEADER not in r.echoed, r.echoed
        seen[r.server] += 1
    assert set(seen) == {"a", "b", "c"}, seen
    ctx = client_context(pki, client=CLIENTS[0])
    home = get(envoy, ctx).server
    for _ in range(6):
        assert get(envoy, ctx).server == home
    envoy.wait_counters({"miss": n + 1, "new": 1, "hit": 6, "entries": 1, "error": 0})


def test_example_as_shipped_with_its_demo_certificates(envoy_factory, backends):
    """envoy/tls.yaml unchanged but for ports and the module path: its own plugin JSON
    (profile `tls`) and the demo PKI under envoy/certs/."""
    demo = Pki(EXAMPLES / "certs", ca_cert=EXAMPLES / "certs" / "ca.crt")
    envoy = envoy_factory("tls.yaml")
    assert envoy.profile == "tls"
    ctx = client_context(demo)
    r0 = get(envoy, ctx)
    assert r0.status == 200
    for _ in range(5):
        assert get(envoy, ctx, session=r0.session).server == r0.server
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 5}, settle=0)

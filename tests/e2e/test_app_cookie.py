"""app_cookie: the application's own session cookie (JSESSIONID), learned from the server's
Set-Cookie, looked up from the request's cookie, a `;jsessionid=` path parameter or the
`jsessionid` query parameter. envoy/app-cookie.yaml as shipped (its own plugin JSON), except
where a test says otherwise."""

from urllib.parse import quote

import pytest

from conftest import assert_sticks, handoff_value, kill_and_rebind

pytestmark = pytest.mark.both_builds

EXAMPLE = "app-cookie.yaml"


def login(envoy, cookie_name="JSESSIONID"):
    """The backend's /login issues `NAME=<server>.<hex>; Path=/; HttpOnly`: returns (response,
    session value). The Set-Cookie reaches the client exactly as the server sent it."""
    r = envoy.get("/login" if cookie_name == "JSESSIONID" else f"/login?cookie={cookie_name}")
    assert r.status == 200 and r.server is not None, r
    session = r.json()["session"]
    assert session.startswith(r.server + ".")
    assert r.all("set-cookie") == [f"{cookie_name}={session}; Path=/; HttpOnly"], r.headers
    return r, session


def with_cookie(envoy, session, path="/", name="JSESSIONID", **kw):
    return envoy.get(path, cookie=f"theme=dark; {name}={session}", **kw)


def test_learned_from_set_cookie_sticky_on_every_worker(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    assert envoy.profile == "app"
    r, session = login(envoy)
    server = backends.by_name(r.server)
    # Nothing named on the login request (no session yet), and no cookie of the filter's own.
    assert "x-persist-upstream" not in r.echoed
    for i in range(24):
        r2 = with_cookie(envoy, session, f"/page/{i}")
        assert r2.status == 200 and r2.server == server.name, f"request {i}: {r2}"
        assert r2.echoed.get("x-persist-upstream") == handoff_value(envoy, server)
        assert r2.echoed.get("cookie") == f"theme=dark; JSESSIONID={session}"  # untouched
        assert r2.all("set-cookie") == []
    assert_sticks(envoy, lambda i: with_cookie(envoy, session), server.name, n=20)
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 44, "rebind": 0, "invalid": 0})
    envoy.wait_entries(1)


def test_sessions_spread_over_the_backends_and_each_sticks(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    sessions = {}
    for _ in range(24):
        r, session = login(envoy)
        sessions[session] = r.server
    counts = {n: list(sessions.values()).count(n) for n in ("a", "b", "c")}
    assert all(v >= 3 for v in counts.values()), f"logins did not spread: {counts}"
    for session, server in sessions.items():
        for _ in range(2):
            r = with_cookie(envoy, session)
            assert r.server == server, f"{session}: {r}"
    envoy.wait_counters({"miss": 24, "new": 24, "hit": 48, "rebind": 0}, settle=0)
    envoy.wait_entries(24)


def test_path_parameter_and_query_parameter_forms(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    r, v = login(envoy)
    server = r.server
    paths = [
        f"/app;jsessionid={v}",
        f"/app;JSESSIONID={v}/page",                   # name case-insensitive, value ends at /
        f"/app/page;jsessionid={v}?x=1",              # ... at ?
        f"/app;foo=1;JSessionId={v};bar=2",           # ... at ;
        f"/?jsessionid={v}",                          # query_parameter of the example
        f"/search?q=x&jsessionid={v}&page=2",
    ]
    for path in paths:
        for _ in range(3):
            r2 = envoy.get(path)
            assert r2.status == 200 and r2.server == server, f"{path}: {r2}"
            assert r2.echoed.get("x-persist-upstream") == handoff_value(envoy, backends.by_name(server))
            assert r2.json()["path"] == path, "the request path must reach the server untouched"
    # Not the parameter: a longer name, a value of another name, the name in the query as a path parameter.
    for path in (f"/app;jsessionidx={v}", f"/app;xjsessionid={v}", f"/?xjsessionid={v}", f"/?jsessionid2={v}"):
        r3 = envoy.get(path)
        assert r3.status == 200
    envoy.wait_counters({"hit": 3 * len(paths), "miss": 1 + 4, "new": 1, "rebind": 0})


def test_cookie_wins_over_path_and_query_parameter(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    r1, v1 = login(envoy)
    r2, v2 = login(envoy)
    for _ in range(6):  # bounded: round robin brings the second login to another backend
        if r2.server != r1.server:
            break
        r2, v2 = login(envoy)
    assert r2.server != r1.server
    for _ in range(5):
        assert with_cookie(envoy, v1, f"/x;jsessionid={v2}?jsessionid={v2}").server == r1.server
        assert envoy.get(f"/x;jsessionid={v1}?jsessionid={v2}").server == r1.server


def test_backend_set_cookie_untouched_every_value_learned(envoy_factory, backends):
    """On a hit the server renews its session (two Set-Cookie of the name, plus another
    cookie and a logout with an empty value): all reach the client byte for byte, both
    new values are bound to that server, the empty one is not."""
    envoy = envoy_factory(EXAMPLE)
    r, v1 = login(envoy)
    own = [f"JSESSIONID={v1}-renewed; Path=/app; Secure; HttpOnly", f"JSESSIONID={v1}-2",
           "other=1; Max-Age=60", "JSESSIONID=; Max-Age=0; Path=/old"]
    path = "/renew?" + "&".join("set_cookie=" + quote(c, safe="") for c in own)
    r2 = with_cookie(envoy, v1, path)
    assert r2.server == r.server
    assert r2.all("set-cookie") == own
    for value in (f"{v1}-renewed", f"{v1}-2"):
        assert_sticks(envoy, lambda i: with_cookie(envoy, value), r.server, n=4, every_worker=False)
    # The empty value was not learned: an empty JSESSIONID is no key.
    envoy.wait_counters({"new": 3, "hit": 1 + 8, "miss": 1})
    servers = {with_cookie(envoy, "").server for _ in range(9)}
    assert len(servers) >= 2, f"an empty session value was bound: {servers}"


def test_learn_from_request(envoy_factory, backends):
    """Default (the example): a value the filter never saw in a Set-Cookie is not bound:
    every request with it is load balanced. With learn_from_request it is bound to the server
    that answered the first request. Also: another cookie name, and no query parameter."""
    envoy = envoy_factory(EXAMPLE)
    servers = [with_cookie(envoy, "pre-existing-session").server for _ in range(9)]
    assert len(set(servers)) >= 2, f"an unknown value was bound without learn_from_request: {servers}"
    envoy.wait_counters({"miss": 9, "new": 0, "hit": 0}, settle=0)
    envoy.stop()

    learn = envoy_factory(EXAMPLE, {"name": "learn", "type": "app_cookie",
                                    "app_cookie": {"name": "SID", "learn_from_request": True}})
    first = with_cookie(learn, "pre-existing-session", name="SID")
    assert first.status == 200 and first.server
    assert_sticks(learn, lambda i: with_cookie(learn, "pre-existing-session", name="SID"), first.server, n=20)
    # JSESSIONID is not this profile's cookie; SID from the server's Set-Cookie is learned.
    r, sid = login(learn, cookie_name="SID")
    assert_sticks(learn, lambda i: with_cookie(learn, sid, name="SID"), r.server, n=5, every_worker=False)
    assert_sticks(learn, lambda i: learn.get(f"/p;sid={sid}"), r.server, n=3, every_worker=False)
    # No query_parameter configured: the query form is not read.
    servers = {learn.get(f"/?jsessionid={sid}&sid={sid}").server for _ in range(9)}
    assert len(servers) >= 2, f"query parameter read although not configured: {servers}"
    learn.wait_counters({"new": 2, "hit": 20 + 5 + 3, "rebind": 0})


def test_failover_rebinds_the_session(envoy_factory, backends):
    envoy = envoy_factory(EXAMPLE)
    r, session = login(envoy)
    assert_sticks(envoy, lambda i: with_cookie(envoy, session), r.server, n=3, every_worker=False)
    new = kill_and_rebind(envoy, backends, lambda: with_cookie(envoy, session), r.server)
    assert new != r.server
    # The new server starts a session of its own (old cookie sent, new one set): both stick.
    r2 = with_cookie(envoy, session, "/login")
    assert r2.server == new
    fresh = r2.json()["session"]
    assert r2.all("set-cookie") == [f"JSESSIONID={fresh}; Path=/; HttpOnly"]
    assert_sticks(envoy, lambda i: with_cookie(envoy, fresh), new, n=4, every_worker=False)
    envoy.wait_counter_at_least("hit", 3 + 1 + 10 + 5)
    envoy.wait_counters({"rebind": 1, "miss": 1})

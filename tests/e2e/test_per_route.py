"""Persistence turned off on one route (README "Persistence off on a route"), with
envoy/http-cookie.yaml (hand-off stateful_session) plus a route /static/ before "/":

- both filters disabled on /static/ (`typed_per_filter_config`, FilterConfig disabled): no
  cookie there, a forged hand-off header (base64 ip:port of a backend) chooses nothing,
  requests spread; persistence intact on "/";
- the hand-off header stripped natively from requests and responses (a header_mutation
  filter before the wasm filter) and only the wasm filter disabled on /static/: the same
  (without the response side, stateful_session would tell the client its server's
  address in x-persist-upstream; the harness fails any response that carries it);
- the trap: only the wasm filter disabled while stateful_session stays on (or with the
  override_host hand-off, whose cluster LB policy reads the header) lets a forged header
  choose the server on /static/.
The same with envoy/http-cookie-override-host.yaml, where only the strip closes the bypass.
"""

import copy

import pytest

from conftest import assert_sticks, first_cookie, handoff_value

EXAMPLE = "http-cookie.yaml"
OFF = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
STRIP = {
    "name": "envoy.filters.http.header_mutation",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [{"remove": "x-persist-upstream"}],
                      "response_mutations": [{"remove": "x-persist-upstream"}]},
    },
}


def _hcm(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def static_route(disabled, strip=False):
    """A patch: route /static/ (same cluster) before "/", with these filters disabled; with
    `strip`, a header_mutation filter removing the client's x-persist-upstream first. The
    examples' own header_mutation (README "Fail open without a bypass") is taken out, so
    that each case shows what its own recipe does."""

    def patch(cfg):
        hcm = _hcm(cfg)
        hcm["http_filters"] = [f for f in hcm["http_filters"]
                               if f["name"] != "envoy.filters.http.header_mutation"]
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        base = copy.deepcopy(routes[-1])
        assert base["match"] == {"prefix": "/"}
        off = dict(copy.deepcopy(base), match={"prefix": "/static/"},
                   typed_per_filter_config={name: OFF for name in disabled})
        routes.insert(0, off)
        names = [f["name"] for f in hcm["http_filters"]]
        assert all(n in names for n in disabled), names
        if strip:
            hcm["http_filters"].insert(0, copy.deepcopy(STRIP))

    return patch


def forged(envoy, backend, path, n=12):
    """`n` requests on `path` with a forged hand-off header naming `backend` (as the hand-off
    writes it: base64 ip:port for stateful_session, ip:port for override_host)."""
    servers = []
    for i in range(n):
        r = envoy.get(f"{path}{i}", headers={"x-persist-upstream": handoff_value(envoy, backend)})
        assert r.status == 200, r
        assert r.persist_cookie(envoy.cookie_name) is None, f"a cookie on {path}: {r}"
        servers.append(r.server)
    return servers


def check_persistence_intact(envoy, backends):
    """On "/": a cookie is issued, pins its server, and a forged header does not move it."""
    r, c = first_cookie(envoy, "/app")
    pinned = r.server
    other = next(b for b in backends if b.name != pinned)
    assert_sticks(envoy, lambda i: envoy.get(f"/app/{i}", cookie=f"{c.name}={c.value}",
                                             headers={"x-persist-upstream": handoff_value(envoy, other)}),
                  pinned, n=8, every_worker=False)


@pytest.mark.parametrize("case,example,disabled,strip", [
    ("both-filters-off", EXAMPLE, ["envoy.filters.http.wasm", "envoy.filters.http.stateful_session"], False),
    ("header-stripped-wasm-off", EXAMPLE, ["envoy.filters.http.wasm"], True),
    # override_host: the cluster's LB policy reads the header, no route can turn it off.
    ("override-host-header-stripped-wasm-off", "http-cookie-override-host.yaml", ["envoy.filters.http.wasm"], True),
])
def test_persistence_off_on_a_route_opens_no_bypass(case, example, disabled, strip, envoy_factory, backends):
    envoy = envoy_factory(example, patch=static_route(disabled, strip))
    c = backends.by_name("c")
    servers = forged(envoy, c, "/static/")
    # Round robin over three servers: a forged header that chose would give 12 times "c".
    assert len(set(servers)) >= 2 and servers.count("c") < len(servers), servers
    # A valid cookie does not pin there either: persistence is off on that route.
    _, cookie = first_cookie(envoy, "/")
    pinned = [envoy.get(f"/static/p{i}", cookie=f"{cookie.name}={cookie.value}").server for i in range(9)]
    assert len(set(pinned)) >= 2, pinned
    check_persistence_intact(envoy, backends)
    # Nothing counted for the /static/ requests: the filter never saw them.
    got = envoy.wait_counters({"new": 2, "invalid": 0}, settle=0)
    print(f"\n{case}: /static/ with a forged header for c answered by {servers}; counters {got}")


@pytest.mark.parametrize("example", [EXAMPLE, "http-cookie-override-host.yaml"])
def test_trap_only_the_wasm_filter_off_lets_a_forged_header_choose(example, envoy_factory, backends):
    """stateful_session (or, with override_host, the cluster's LB policy) still reads the
    hand-off header on the route where nothing strips it."""
    envoy = envoy_factory(example, patch=static_route(["envoy.filters.http.wasm"]))
    for b in backends:
        servers = forged(envoy, b, "/static/", n=6)
        assert servers == [b.name] * 6, f"forged header for {b.name}: {servers}"
    check_persistence_intact(envoy, backends)

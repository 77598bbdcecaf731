"""Sessions through a blue/green shift (README "Weighted clusters", SPEC 2.6), on
envoy/blue-green.yaml as shipped: a weighted route over the clusters `blue` (backends a, b)
and `green` (c, d), a `cluster_header` route the filter names the persisted cluster to.

For cookie, session_header and a table type: with the weights at 100/0 every new session
lands on blue; the weights are then shifted to 0/100 through Envoy's runtime (no reload):
the old sessions stay on their blue server, new ones go to green, and no client can pick a
cluster with the header. Then blue leaves `clusters.allow` (a listener update from a watched
file, so the table survives): its sessions rebind to green on their next request, with a
200 answer, counted `rebind`. Both builds: the native run loads envoy/native-blue-green.yaml,
where the module asks Envoy to choose the route again after writing the cluster header."""

import pytest

from conftest import Backend, Backends, deadline_loop, example_plugin_json, free_port, http_request
from test_reload import reload, to_lds
import persist_codec as codec

pytestmark = pytest.mark.both_builds

CLIENTS = 8
BLUE, GREEN = {"a", "b"}, {"c", "d"}


@pytest.fixture(scope="module")
def fourth(tmp_path_factory):
    d = Backend("d", free_port(), tmp_path_factory.mktemp("backend-d"))
    d.start()
    yield d
    d.kill()


def plugin_for(kind, allow=("blue", "green")):
    example = example_plugin_json("blue-green.yaml")
    clusters = dict(example["clusters"], allow=list(allow))
    if kind == "http_cookie":
        return dict(example, clusters=clusters)
    plugin = {"name": example["name"], "type": kind, "timeout": "20m", "clusters": clusters}
    if kind == "session_header":
        plugin["session_header"] = {"keys": example["cookie"]["keys"]}
    else:
        plugin["header"] = {"name": "x-user"}
    return plugin


class Client:
    """One client of `kind`: what it sends back, from what it was last given."""

    def __init__(self, envoy, kind, n):
        self.envoy, self.kind = envoy, kind
        self.user = f"user-{n}"
        self.token = None
        self.server = None

    def get(self, extra=None):
        headers = dict(extra or {})
        cookie = None
        if self.kind == "http_cookie" and self.token:
            cookie = f"persist={self.token}"
        elif self.kind == "session_header" and self.token:
            headers["x-persist-session"] = self.token
        elif self.kind == "http_header":
            headers["x-user"] = self.user
        r = self.envoy.get(cookie=cookie, headers=headers)
        assert r.status == 200, r
        issued = (r.persist_cookie().value if self.kind == "http_cookie" and r.persist_cookie()
                  else r.header("x-persist-session") if self.kind == "session_header" else None)
        if issued:
            self.token = issued
        return r, issued

    def opened(self):
        keys = self.envoy.keys or [codec.base64.b64decode(k) for k in
                                   self.envoy.plugin["session_header"]["keys"]]
        if self.kind == "http_cookie":
            return codec.open_sealed(keys, "persist", self.token)
        return codec.open_header_token(keys, "x-persist-session", self.token)


def set_weights(envoy, blue, green):
    r = http_request(envoy.admin_port, f"/runtime_modify?routing.bluegreen.blue={blue}"
                     f"&routing.bluegreen.green={green}", method="POST")
    assert r.status == 200, r.body


@pytest.mark.parametrize("kind", ["http_cookie", "session_header", "http_header"])
def test_sessions_keep_their_cluster_through_a_shift_and_rebind_when_it_leaves(
        kind, build, envoy_factory, backends, fourth, tmp_path):
    servers = Backends([*backends, fourth])
    # The native run loads its own shipped example, envoy/native-blue-green.yaml.
    example = "native-blue-green.yaml" if build == "native" else "blue-green.yaml"
    envoy = envoy_factory(example, None if kind == "http_cookie" else plugin_for(kind),
                          servers=servers, start=False)
    to_lds(envoy, tmp_path / "lds")
    envoy.start()

    # 100/0: every new session on blue; the persistence records the cluster.
    old = [Client(envoy, kind, i) for i in range(CLIENTS)]
    for c in old:
        r, issued = c.get()
        c.server = r.server
        assert r.server in BLUE, r
        if kind != "http_header":
            assert issued and c.opened().cluster == codec.cluster_tag("blue"), c.opened()
    assert {c.server for c in old} == BLUE, "new sessions are load balanced within blue"

    # Shift everything to green, without a reload.
    set_weights(envoy, 0, 100)
    probes = (Client(envoy, kind, 1000 + i) for i in range(100))
    for _ in deadline_loop(5, 0.1):
        if next(probes).get()[0].server in GREEN:
            break
    # Old sessions stay on their blue server, with the cluster named to the route; even a
    # client naming green itself is handed back to blue.
    for c in old:
        for extra in (None, {"x-persist-cluster": "green"}):
            r, issued = c.get(extra)
            assert r.server == c.server, f"{c.user} moved from {c.server}: {r}"
            assert r.echoed.get("x-persist-cluster") == "blue", r.echoed
            assert not issued or c.opened().cluster == codec.cluster_tag("blue")
    # New sessions follow the weights, whatever cluster they ask for.
    new = [Client(envoy, kind, 100 + i) for i in range(CLIENTS)]
    for c in new:
        r, _ = c.get({"x-persist-cluster": "blue"})
        c.server = r.server
        assert r.server in GREEN, f"a new session chose its cluster: {r}"
    assert {c.server for c in new} == GREEN
    for c in new:
        assert c.get()[0].server == c.server
    assert envoy.counters()["rebind"] == 0

    # Blue leaves the allow-list and the route (a listener update: the table survives).
    plugin = plugin_for(kind, allow=("green",))
    routes = envoy.lds_listeners[0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    routes[1]["route"]["weighted_clusters"]["clusters"] = [{"name": "green", "weight": 100}]
    reload(envoy, plugin)
    for c in old:
        r, issued = c.get()
        assert r.server in GREEN, f"{c.user} still on blue after blue left: {r}"
        if kind != "http_header":
            assert issued and c.opened().cluster == codec.cluster_tag("green")
        moved_to = r.server
        r, _ = c.get()
        assert r.server == moved_to and r.echoed.get("x-persist-cluster") == "green", r
    for c in new:
        assert c.get()[0].server == c.server, "green sessions never move"
    envoy.wait_counter_at_least("rebind", CLIENTS)
    counters = envoy.counters()
    assert counters["rebind"] == CLIENTS and counters["error"] == 0, counters

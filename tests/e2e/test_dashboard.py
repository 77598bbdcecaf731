"""Observability: the examples' stats_tags make the profile a Prometheus label, and every metric
the Grafana dashboard (deploy/grafana/envoy-persist.json) queries is in a real
/stats/prometheus: captured from envoy/mirror.yaml (a profile with the etcd mirror, so the
mirror_* stats are there too) against a real etcd member."""

import json
import re

from conftest import ROOT
from etcd_util import etcd  # noqa: F401 (fixture)
from test_mirror import EXAMPLE, user, wait_connected
from etcd_util import mirror_patch

DASHBOARD = ROOT / "deploy" / "grafana" / "envoy-persist.json"
METRIC = re.compile(r"\bpersist_[a-z_]+\b")


def _dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def _queries(dash):
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["expr"]


def _samples(prom):
    """{metric name: [label text]} of every sample line of a /stats/prometheus answer."""
    out = {}
    for line in prom.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ", line)
        if m and not line.startswith("#"):
            out.setdefault(m.group(1), []).append(m.group(2) or "")
    return out


def test_dashboard_covers_what_operators_watch():
    dash = _dashboard()
    titles = {p["title"] for p in dash["panels"]}
    assert {"Hit ratio", "Rebinds per second", "Invalid and errors per second", "Table entries vs max_entries",
            "Mirror connected", "Mirror errors per second", "Mirror puts and events per second"} <= titles
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "profile", "max_entries"} <= set(variables)
    exprs = " ".join(e for _, e in _queries(dash))
    assert "$max_entries" in exprs
    used = set(METRIC.findall(exprs))
    assert {"persist_hit", "persist_miss", "persist_rebind", "persist_invalid", "persist_entries",
            "persist_mirror_connected", "persist_mirror_error", "persist_mirror_put", "persist_mirror_event"} <= used
    # every query of a persist metric selects by the profile label
    for title, expr in _queries(dash):
        for name in METRIC.findall(expr):
            assert re.search(rf'{name}\{{profile=~"\$profile"\}}', expr), (title, expr)


def test_every_dashboard_metric_is_in_a_real_prometheus_capture(envoy_factory, backends, etcd):  # noqa: F811
    envoy = envoy_factory(EXAMPLE, patch=mirror_patch(etcd.ports))
    wait_connected([envoy])
    for name in ("ann", "bob", "ann"):
        assert user(envoy, name).status == 200
    envoy.wait_counter_at_least("hit", 1)
    prom = envoy.admin("/stats/prometheus")
    samples = _samples(prom)
    profile = envoy.profile
    used = {name for _, expr in _queries(_dashboard()) for name in METRIC.findall(expr)}
    missing = sorted(n for n in used if n not in samples)
    assert not missing, f"dashboard metrics not in /stats/prometheus: {missing}\n" + \
        "\n".join(l for l in prom.splitlines() if "persist" in l)
    for name in used:
        assert f'{{profile="{profile}"}}' in samples[name], (name, samples[name])
    # and the profile is no longer part of any name
    assert not [n for n in samples if n.startswith(f"persist_{profile}_")]
    assert re.search(rf'^persist_mirror_connected\{{profile="{profile}"\}} 1$', prom, re.M)

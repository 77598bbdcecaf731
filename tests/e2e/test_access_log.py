"""The request's persistence decision and the profile's type in a real Envoy access log
(README "Access logs and dashboards"): the filter sets filter state `wasm.persist.decision`
and `wasm.persist.type`, which `%FILTER_STATE(...:PLAIN)%` prints."""

import json

import pytest

from conftest import _hcm_configs, deadline_loop, plugin_config

pytestmark = pytest.mark.both_builds

FORMAT = ('{"decision":"%FILTER_STATE(wasm.persist.decision:PLAIN)%",'
          '"type":"%FILTER_STATE(wasm.persist.type:PLAIN)%","path":"%REQ(:PATH)%",'
          '"code":"%RESPONSE_CODE%"}\n')


def with_access_log(path):
    def patch(cfg):
        for hcm in _hcm_configs(cfg):
            hcm["access_log"] = [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(path),
                    "log_format": {"text_format_source": {"inline_string": FORMAT}},
                },
            }]
    return patch


def log_lines(path, n):
    """The first `n` access log lines (Envoy flushes its file log within a second)."""
    lines = []
    for _ in deadline_loop(10.0, 0.1):
        if path.exists():
            lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
            if len(lines) >= n:
                return lines
    raise AssertionError(f"{len(lines)} access log lines, wanted {n}")


def test_cookie_decisions_in_the_access_log(envoy_factory, tmp_path):
    log = tmp_path / "access.log"
    e = envoy_factory("http-cookie.yaml", plugin=plugin_config(), patch=with_access_log(log))
    first = e.get("/new")
    cookie = first.persist_cookie(e.cookie_name)
    assert cookie is not None
    e.get("/steady", cookie=f"{e.cookie_name}={cookie.value}")
    e.get("/forged", cookie=f"{e.cookie_name}=not-a-sealed-cookie")
    by_path = {l["path"]: l for l in log_lines(log, 3)}
    assert by_path["/new"]["decision"] == "new"
    assert by_path["/steady"]["decision"] == "hit"
    assert by_path["/forged"]["decision"] == "invalid"
    assert {l["type"] for l in by_path.values()} == {"http_cookie"}


def test_table_decisions_in_the_access_log(envoy_factory, tmp_path):
    log = tmp_path / "access.log"
    e = envoy_factory("http-header.yaml", patch=with_access_log(log))
    header = e.plugin["header"]["name"]
    e.get("/none")
    e.get("/first", headers={header: "user-log-1"})
    e.get("/again", headers={header: "user-log-1"})
    by_path = {l["path"]: l for l in log_lines(log, 3)}
    assert by_path["/none"]["decision"] == "miss"
    assert by_path["/first"]["decision"] == "new"
    assert by_path["/again"]["decision"] == "hit"
    assert {l["type"] for l in by_path.values()} == {"http_header"}


def test_access_log_state_off(envoy_factory, tmp_path):
    """`access_log_state: false` (README "Access logs and dashboards"): the two filter-state
    calls per request are left out; the log shows `-`, the persistence works as before."""
    log = tmp_path / "access.log"
    e = envoy_factory("http-cookie.yaml", plugin=plugin_config(access_log_state=False),
                      patch=with_access_log(log))
    first = e.get("/new")
    cookie = first.persist_cookie(e.cookie_name)
    assert cookie is not None
    again = e.get("/steady", cookie=f"{e.cookie_name}={cookie.value}")
    assert again.server == first.server
    lines = log_lines(log, 2)
    assert [(l["decision"], l["type"]) for l in lines] == [("-", "-"), ("-", "-")], lines
    e.wait_counters({"new": 1, "hit": 1})

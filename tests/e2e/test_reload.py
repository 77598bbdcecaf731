"""Configuration reloads under load: the listeners come from a watched file (Envoy's
path-based LDS, `dynamic_resources.lds_config.path_config_source` with a
`watched_directory`), replaced by an atomic rename while wrk keeps both Envoys busy.

- http_cookie (envoy/http-cookie.yaml's listener): the sealing key is rotated (new key
  first, old one second), then `timeout` is changed;
- http_header (envoy/http-header.yaml's listener, profile "users"): `timeout` changed twice,
  the profile name kept.

Checked: no non-2xx answer during the reloads (wrk, plus a probe on fresh connections),
every reload accepted, no wasm VM failure (the harness checks the log and the VM stats at
teardown), cookies sealed before the reloads still pin their server after them, and table
entries learned before survive (same server, counted `hit`, nothing `new`). The figures are
printed (`pytest -s`) and recorded in RELIABILITY.md.
"""

import copy
import json
import os
import re
import subprocess
import time

import yaml

from conftest import KEY1, KEY2, LOCAL, NATIVE_FILTER, deadline_loop, first_cookie, plugin_config
import persist_codec as codec

LOAD_S = 16
RELOAD_AT = (3.0, 6.0, 9.0, 12.0)  # seconds into the load; alternating cookie / table


def to_lds(envoy, directory):
    """Moves the Envoy's static listeners into `directory`/lds.yaml, read through a
    path_config_source watched on the directory; rewrites its bootstrap."""
    directory.mkdir()
    listeners = envoy.cfg["static_resources"].pop("listeners")
    envoy.lds_path = directory / "lds.yaml"
    envoy.lds_listeners = listeners
    write_lds(envoy)
    envoy.cfg["node"] = {"id": f"reload-{directory.name}", "cluster": "persist-e2e"}  # dynamic config needs both
    envoy.cfg["dynamic_resources"] = {"lds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(envoy.lds_path), "watched_directory": {"path": str(directory)}}}}
    with open(envoy.cfg_path, "w") as f:
        yaml.safe_dump(envoy.cfg, f, sort_keys=False)


def write_lds(envoy):
    """Writes the listeners to a temporary file next to lds.yaml and renames it over it (the
    watched directory sees the move; Envoy never reads a half-written file)."""
    doc = {"resources": [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **l}
                         for l in envoy.lds_listeners]}
    tmp = envoy.lds_path.with_name(".lds.yaml.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, envoy.lds_path)


def set_plugin(envoy, plugin):
    """Puts `plugin` in the listener's persist filter: the wasm filter's configuration, or
    the native module's filter_config."""
    hcm = envoy.lds_listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    f = next(f for f in hcm["http_filters"] if f["name"] in ("envoy.filters.http.wasm", NATIVE_FILTER))
    tc = f["typed_config"]
    value = tc["filter_config"] if f["name"] == NATIVE_FILTER else tc["config"]["configuration"]
    value["value"] = json.dumps(plugin)
    envoy.plugin = copy.deepcopy(plugin)


def lds_stats(envoy):
    s = envoy.stats(r"^listener_manager\.")
    return {k.split(".")[-1]: v for k, v in s.items()
            if k.startswith("listener_manager.lds.") or k.endswith("total_listeners_warming")}


def reload(envoy, plugin, timeout=10.0):
    """Replaces the plugin JSON through the watched file; waits until Envoy accepted the
    update and the new listener is warm. Returns seconds taken."""
    before = lds_stats(envoy).get("update_success", 0)
    set_plugin(envoy, plugin)
    t = time.monotonic()
    write_lds(envoy)
    got = None
    for _ in deadline_loop(timeout, 0.05):
        got = lds_stats(envoy)
        if got.get("update_success", 0) > before and got.get("total_listeners_warming", 0) == 0:
            assert got.get("update_rejected", 0) == 0, got
            return time.monotonic() - t
    raise AssertionError(f"reload not applied within {timeout}s: {got}\n{envoy.log_tail(20)}")


def start_wrk(port, tmp_path, name, headers):
    script = tmp_path / f"{name}.lua"
    script.write_text("".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    return subprocess.Popen(
        ["wrk", "-t", "1", "-c", "4", "-d", f"{LOAD_S}s", "--timeout", "3s", "-s", str(script),
         f"http://{LOCAL}:{port}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc):
    out, _ = proc.communicate(timeout=LOAD_S + 30)
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in m.groups()) if m else 0
    total = int(m.group(1)) if (m := re.search(r"(\d+) requests in", out)) else 0
    assert total > 0, out
    return {"requests": total, "non2xx": non2xx, "socket_errors": socket_errors, "out": out}


def users(envoy, names):
    return {u: envoy.get("/", headers={"x-user": u}) for u in names}


def test_plugin_config_reloaded_under_load(envoy_factory, backends, tmp_path):
    cookie_plugin = plugin_config(name="web", timeout="20m")
    cookie_env = envoy_factory("http-cookie.yaml", cookie_plugin, start=False)
    table_plugin = {"name": "users", "type": "http_header", "timeout": "30m", "max_entries": 1000,
                    "header": {"name": "x-user"}}
    table_env = envoy_factory("http-header.yaml", table_plugin, start=False)
    for env in (cookie_env, table_env):
        # Drained keep-alive connections close on their next response (Connection: close),
        # not when the drain time is over: no request is cut off by a reload.
        env.command = (lambda cmd: lambda: cmd + ["--drain-strategy", "immediate"])(env.command())
    to_lds(cookie_env, tmp_path / "lds-cookie")
    to_lds(table_env, tmp_path / "lds-table")
    cookie_env.start()
    table_env.start()

    # Before: cookies sealed with KEY1, each naming its server; table entries.
    sealed = []
    for _ in range(6):
        r, c = first_cookie(cookie_env)
        assert codec.open_sealed([KEY1], "persist", c.value).addr == backends.by_name(r.server).addr
        sealed.append((f"persist={c.value}", r.server))
    names = [f"user-{i}" for i in range(8)]
    learned = {u: r.server for u, r in users(table_env, names).items()}
    table_env.wait_counters({"new": 8, "miss": 8}, settle=0)
    table_before = table_env.counters()

    wrk = [start_wrk(cookie_env.port, tmp_path, "cookie", {"Cookie": sealed[0][0]}),
           start_wrk(table_env.port, tmp_path, "table", {"x-user": names[0]})]
    t0 = time.monotonic()
    # Probe on fresh connections between the reloads: every answer 200, from the pinned server.
    probes = []
    plans = [
        (cookie_env, dict(cookie_plugin, cookie={**cookie_plugin["cookie"],
                                                 "keys": [codec.key_b64(KEY2), codec.key_b64(KEY1)]})),
        (table_env, dict(table_plugin, timeout="40m")),
        (cookie_env, dict(cookie_plugin, timeout="45m",
                          cookie={**cookie_plugin["cookie"], "keys": [codec.key_b64(KEY2), codec.key_b64(KEY1)]})),
        (table_env, dict(table_plugin, timeout="50m", absolute_timeout="12h")),
    ]
    took = []
    for at, (env, plugin) in zip(RELOAD_AT, plans):
        while time.monotonic() - t0 < at:
            r = cookie_env.get("/", cookie=sealed[1][0])
            probes.append((r.status, r.server == sealed[1][1]))
            r = table_env.get("/", headers={"x-user": names[1]})
            probes.append((r.status, r.server == learned[names[1]]))
            time.sleep(0.05)
        took.append(reload(env, plugin))
    results = [wrk_result(p) for p in wrk]

    # After: old cookies still pin (a re-issued cookie is sealed with the new first key).
    for cookie, server in sealed:
        for _ in range(3):
            r = cookie_env.get("/", cookie=cookie)
            assert r.status == 200 and r.server == server, f"{cookie}: {r}, expected {server}"
            c = r.persist_cookie("persist")
            if c is not None:
                assert codec.open_sealed([KEY2], "persist", c.value).addr == backends.by_name(server).addr
    # Table entries survived the reloads that kept the profile name.
    after = users(table_env, names)
    moved = {u: (learned[u], r.server) for u, r in after.items() if r.server != learned[u]}
    assert not moved, f"table entries lost in a reload: {moved}"
    got = table_env.counters()
    assert got.get("new", 0) == table_before["new"], f"entries learned again: {table_before} -> {got}"

    bad_probes = [p for p in probes if p != (200, True)]
    total = sum(r["requests"] for r in results)
    non2xx = sum(r["non2xx"] for r in results)
    sockerr = sum(r["socket_errors"] for r in results)
    print(f"\nreloads under load: {len(took)} reloads (accepted in "
          f"{', '.join(f'{t * 1000:.0f}' for t in took)} ms), wrk {total} requests "
          f"({' + '.join(str(r['requests']) for r in results)}), {non2xx} non-2xx, {sockerr} socket errors; "
          f"probe {len(probes)} requests on fresh connections, {len(bad_probes)} not 200 from the pinned server")
    assert non2xx == 0, [r["out"] for r in results]
    assert sockerr == 0, [r["out"] for r in results]
    assert not bad_probes, bad_probes
    for env in (cookie_env, table_env):
        s = lds_stats(env)
        assert s.get("update_rejected", 0) == 0 and s.get("update_success", 0) >= 3, s
        env.check_wasm_healthy()

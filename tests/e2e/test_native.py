"""What only the native build (Envoy dynamic module, PERSIST_NATIVE) has, in the real Envoy: it
loads with the ABI version Envoy expects, its own examples (envoy/native-*.yaml) validate and
serve as shipped. The persistence flow itself (every type, format, failover, strict, hostile
traffic, configuration refusals, access-log state, the etcd mirror) runs against both builds in
the test files marked `both_builds`.

    make build && ENVOY_BIN=$(scripts/envoy-bin.sh) .venv/bin/pytest -q tests/e2e/test_native.py
"""

import re
import subprocess

import pytest

from conftest import (EXAMPLES, ROOT, Envoy, envoy_bin, http_request, native_env, native_path)

NATIVE_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("native-*.yaml"))
ABI_MATCHED = re.compile(r"Dynamic module ABI version (\S+) matched")
ABI_WARNING = re.compile(r"ABI version .* (is deprecated|mismatch)|is deprecated\. Please recompile", re.I)


def assert_abi_matched(log):
    """Envoy's own verdict on the module's ABI: the `matched` line, and no deprecation or
    mismatch warning (the module would still load, resolving hooks by name)."""
    warnings = [l for l in log.splitlines() if ABI_WARNING.search(l)]
    assert not warnings, "ABI warning:\n" + "\n".join(warnings)
    m = ABI_MATCHED.search(log)
    assert m, "no 'Dynamic module ABI version ... matched' line:\n" + log[-3000:]
    assert m.group(1) == "v0.2.0", m.group(0)


def test_the_native_examples_exist():
    for name in ("native-http-cookie.yaml", "native-http-cookie-strict.yaml", "native-http-header.yaml",
                 "native-blue-green.yaml", "native-mirror.yaml"):
        assert name in NATIVE_EXAMPLES


@pytest.mark.parametrize("name", NATIVE_EXAMPLES)
def test_native_example_passes_envoy_validate(name):
    """`envoy --mode validate` loads the module and runs its configuration hook, so this also
    checks the example's plugin JSON."""
    assert native_path().is_file(), f"module not built: {native_path()} (run `make build`)"
    cfg = (EXAMPLES / name).read_text()
    assert "envoy.filters.http.dynamic_modules" in cfg and "envoy.filters.http.wasm" not in cfg
    assert "stateful_session" not in cfg.split("http_filters:", 1)[1], "the native module needs no hand-off filter"
    out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(EXAMPLES / name)], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=120, env=native_env())
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "OK" in log
    assert_abi_matched(log)


def test_native_module_loads_and_passes_requests(envoy_factory, backends):
    envoy = envoy_factory("native-http-cookie.yaml")
    assert envoy.native
    assert_abi_matched(envoy.log_text())
    served = set()
    for _ in range(6):
        r = http_request(envoy.port, "/")
        assert r.status == 200, r
        served.add(r.server)
    assert served <= {b.name for b in backends}
    # Every stat of the profile is defined at configuration, under Envoy's namespace for
    # dynamic modules; nothing failed.
    counters = envoy.counters()
    assert set(counters) >= {"hit", "miss", "new", "rebind", "invalid", "expired", "evicted", "error"}, counters
    assert counters["error"] == 0
    envoy.stop()

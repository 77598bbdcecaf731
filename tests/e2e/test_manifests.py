"""Every manifest under deploy/: YAML that parses, the fields each resource kind needs, and every
embedded plugin configuration accepted by the filter's own configuration parser
(crates/config-check: persist_core::config::Config::parse, what on_configure runs). A typo in
a manifest fails here, not in a deployment.

CONFIG_CHECK names the binary (`make config-check` builds target/release/config-check); when
it is unset and missing, it is built with cargo."""

import json
import os
import re
import subprocess
from functools import lru_cache

import pytest
import yaml

from conftest import ROOT

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.y*ml"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Envoy Gateway's EnvoyFilter enum (filterOrder names).
EG_FILTERS = {
    "envoy.filters.http.custom_response", "envoy.filters.http.health_check", "envoy.filters.http.fault",
    "envoy.filters.http.cors", "envoy.filters.http.csrf", "envoy.filters.http.header_mutation",
    "envoy.filters.http.ext_authz", "envoy.filters.http.api_key_auth", "envoy.filters.http.basic_auth",
    "envoy.filters.http.oauth2", "envoy.filters.http.jwt_authn", "envoy.filters.http.stateful_session",
    "envoy.filters.http.buffer", "envoy.filters.http.lua", "envoy.filters.http.ext_proc",
    "envoy.filters.http.wasm", "envoy.filters.http.dynamic_modules", "envoy.filters.http.geoip",
    "envoy.filters.http.rbac", "envoy.filters.http.local_ratelimit", "envoy.filters.http.ratelimit",
    "envoy.filters.http.bandwidth_limit", "envoy.filters.http.grpc_web", "envoy.filters.http.grpc_stats",
    "envoy.filters.http.credential_injector", "envoy.filters.http.compressor",
    "envoy.filters.http.dynamic_forward_proxy"}
HANDOFF = "x-persist-upstream"


@lru_cache(maxsize=None)
def config_check_bin():
    env = os.environ.get("CONFIG_CHECK")
    if env:
        return env
    path = ROOT / "target" / "release" / "config-check"
    if not path.is_file():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "config-check"], cwd=str(ROOT),
                       check=True, timeout=900)
    return str(path)


def config_check(plugin_json: str):
    """(exit code, output) of the filter's parser on one plugin configuration."""
    out = subprocess.run([config_check_bin(), "-"], input=plugin_json, capture_output=True, text=True, timeout=60)
    return out.returncode, (out.stdout + out.stderr).strip()


def docs(rel):
    with open(DEPLOY / rel) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def need(obj, path, where):
    """obj at a dotted path; fails naming the missing field."""
    cur = obj
    for part in path.split("."):
        assert isinstance(cur, dict) and part in cur and cur[part] not in (None, "", [], {}), \
            f"{where}: {path} is required"
        cur = cur[part]
    return cur


# --- per kind: (apiVersion, check(resource, where) -> [plugin JSON texts]) --------------------

def _wasmplugin(r, where):
    spec = need(r, "spec", where)
    url = need(spec, "url", where)
    assert re.match(r"^(oci|https?|file)://", url), f"{where}: spec.url {url!r}"
    assert spec.get("selector") or spec.get("targetRefs") or spec.get("targetRef"), f"{where}: no selector/targetRefs"
    assert spec.get("phase", "UNSPECIFIED_PHASE") in {"UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"}, where
    assert spec.get("failStrategy", "FAIL_CLOSE") in {"FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"}, where
    assert spec.get("type", "HTTP") == "HTTP", f"{where}: envoy-persist is an HTTP plugin"
    assert isinstance(spec.get("priority", 0), int), where
    assert need(spec, "pluginName", where) == "persist", f"{where}: pluginName is the root_id"
    # Istio renders pluginConfig with protojson: compact, sorted keys.
    return [json.dumps(need(spec, "pluginConfig", where), sort_keys=True, separators=(",", ":"))]


def _envoyfilter(r, where):
    patches = need(r, "spec.configPatches", where)
    for i, p in enumerate(patches):
        need(p, "applyTo", f"{where} configPatches[{i}]")
        need(p, "patch.operation", f"{where} configPatches[{i}]")
        value = need(p, "patch.value", f"{where} configPatches[{i}]")
        if value.get("name") == "envoy.filters.http.header_mutation":
            assert p["patch"]["operation"] == "INSERT_FIRST", f"{where}: the header removal must come first"
            muts = need(value, "typed_config.mutations", where)
            assert {"remove": HANDOFF} in muts.get("request_mutations", []), where
    return []


def _service(r, where):
    need(r, "spec.ports", where)
    need(r, "spec.selector", where)
    labels = need(r, "metadata.labels", where)
    assert labels.get("istio.io/persistent-session-header") == HANDOFF, f"{where}: persistent-session label"
    return []


def _destinationrule(r, where):
    need(r, "spec.host", where)
    return []


def _envoyextensionpolicy(r, where):
    spec = need(r, "spec", where)
    assert spec.get("targetRefs") or spec.get("targetRef") or spec.get("targetSelectors"), f"{where}: no target"
    out = []
    for i, w in enumerate(need(spec, "wasm", where)):
        at = f"{where} wasm[{i}]"
        kind = need(w, "code.type", at)
        assert kind in {"HTTP", "Image"}, f"{at}: code.type {kind!r}"
        url = need(w, f"code.{'image' if kind == 'Image' else 'http'}.url", at)
        if kind == "Image":
            assert url.startswith("oci://") or "/" in url, f"{at}: image url {url!r}"
        assert isinstance(w.get("failOpen", False), bool), at
        out.append(json.dumps(need(w, "config", at), separators=(",", ":")))
    return out


def _envoyproxy(r, where):
    order = need(r, "spec.filterOrder", where)
    for i, pos in enumerate(order):
        at = f"{where} filterOrder[{i}]"
        assert need(pos, "name", at) in EG_FILTERS, f"{at}: unknown filter {pos['name']!r}"
        assert ("before" in pos) != ("after" in pos), f"{at}: exactly one of before/after"
        assert pos.get("before", pos.get("after")) in EG_FILTERS, at
    assert {"name": "envoy.filters.http.wasm", "before": "envoy.filters.http.stateful_session"} in order, \
        f"{where}: the wasm filter must come before stateful_session"
    return []


def _gateway(r, where):
    need(r, "spec.gatewayClassName", where)
    for i, listener in enumerate(need(r, "spec.listeners", where)):
        for f in ("name", "protocol", "port"):
            need(listener, f, f"{where} listeners[{i}]")
    return []


def _httproute(r, where):
    need(r, "spec.parentRefs", where)
    for i, rule in enumerate(need(r, "spec.rules", where)):
        at = f"{where} rules[{i}]"
        need(rule, "backendRefs", at)
        sp = need(rule, "sessionPersistence", at)
        assert sp.get("type") == "Header" and sp.get("sessionName") == HANDOFF, f"{at}: sessionPersistence {sp}"
    return []


def _clienttrafficpolicy(r, where):
    spec = need(r, "spec", where)
    assert spec.get("targetRefs") or spec.get("targetRef") or spec.get("targetSelectors"), f"{where}: no target"
    assert HANDOFF in need(spec, "headers.earlyRequestHeaders.remove", where), where
    return []


KINDS = {
    "WasmPlugin": ({"extensions.istio.io/v1alpha1"}, _wasmplugin),
    "EnvoyFilter": ({"networking.istio.io/v1alpha3"}, _envoyfilter),
    "Service": ({"v1"}, _service),
    "DestinationRule": ({"networking.istio.io/v1", "networking.istio.io/v1beta1"}, _destinationrule),
    "EnvoyExtensionPolicy": ({"gateway.envoyproxy.io/v1alpha1"}, _envoyextensionpolicy),
    "EnvoyProxy": ({"gateway.envoyproxy.io/v1alpha1"}, _envoyproxy),
    "ClientTrafficPolicy": ({"gateway.envoyproxy.io/v1alpha1"}, _clienttrafficpolicy),
    "Gateway": ({"gateway.networking.k8s.io/v1"}, _gateway),
    "HTTPRoute": ({"gateway.networking.k8s.io/v1"}, _httproute),
}


def check_resource(r, where):
    """Checks one resource; returns the plugin configurations it embeds (JSON texts)."""
    assert isinstance(r, dict), f"{where}: not a mapping"
    kind = need(r, "kind", where)
    assert kind in KINDS, f"{where}: unexpected kind {kind!r}"
    versions, check = KINDS[kind]
    assert need(r, "apiVersion", where) in versions, f"{where}: apiVersion {r['apiVersion']!r} for {kind}"
    name = need(r, "metadata.name", where)
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, f"{where}: metadata.name {name!r}"
    ns = r["metadata"].get("namespace")
    assert ns is None or DNS_LABEL.match(ns), f"{where}: metadata.namespace {ns!r}"
    return check(r, f"{where} ({kind} {name})")


def test_deploy_has_the_manifests():
    assert {"istio/wasmplugin.yaml", "istio/service.yaml", "istio/envoyfilter-strip-handoff.yaml",
            "envoy-gateway/envoyextensionpolicy.yaml", "envoy-gateway/envoyproxy.yaml",
            "envoy-gateway/httproute.yaml", "envoy-gateway/clienttrafficpolicy.yaml"} <= set(MANIFESTS)


@pytest.mark.parametrize("rel", MANIFESTS)
def test_manifest(rel):
    resources = docs(rel)
    assert resources, f"{rel}: no resource"
    for i, r in enumerate(resources):
        for plugin in check_resource(r, f"{rel}#{i}"):
            rc, out = config_check(plugin)
            assert rc == 0, f"{rel}#{i}: the filter refuses its plugin configuration: {out}"


def test_the_parser_check_catches_a_typo():
    """The same path as test_manifest, on deploy/istio/wasmplugin.yaml with one field name
    misspelt: refused, naming the field."""
    (plugin,) = docs("istio/wasmplugin.yaml")
    plugin["spec"]["pluginConfig"]["cookie"]["formt"] = plugin["spec"]["pluginConfig"]["cookie"].pop("format")
    (text,) = check_resource(plugin, "typo")
    rc, out = config_check(text)
    assert rc == 1 and "cookie.formt" in out, out


def test_the_kind_checks_catch_a_misordered_filter():
    (proxy,) = docs("envoy-gateway/envoyproxy.yaml")
    proxy["spec"]["filterOrder"] = [{"name": "envoy.filters.http.wasm", "after": "envoy.filters.http.stateful_session"}]
    with pytest.raises(AssertionError, match="before stateful_session"):
        check_resource(proxy, "misordered")

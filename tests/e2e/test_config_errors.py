"""Every bad plugin configuration is refused, by both builds: Envoy exits non-zero, and its log
has a line saying `invalid configuration` that names the field (natively exactly one line)."""

import base64
import json
import re

import pytest

from conftest import KEY1, Envoy

pytestmark = pytest.mark.both_builds
MIRROR_IS_WASM_ONLY = pytest.mark.wasm_only(
    "mirror is wasm-only: the native module refuses any `mirror` section (test_native)")

GOOD_KEY = base64.b64encode(KEY1).decode()


def cfg(**over):
    base = {"name": "e2e", "type": "http_cookie", "cookie": {"name": "persist", "keys": [GOOD_KEY]}}
    for k, v in over.items():
        if k == "cookie":
            base["cookie"].update(v)
        else:
            base[k] = v
    return json.dumps(base)


BAD = [
    ("unknown-top-field", cfg(bogus=1), "bogus"),
    ("unknown-cookie-field", cfg(cookie={"nmae": "x"}), "cookie.nmae"),
    ("wrong-type-name", cfg(cookie={"name": 5}), "cookie.name"),
    ("wrong-type-secure", cfg(cookie={"secure": "yes"}), "cookie.secure"),
    ("wrong-type-always-send", cfg(cookie={"always_send": 1}), "cookie.always_send"),
    ("wrong-type-cookie", json.dumps({"type": "http_cookie", "cookie": "persist"}), "cookie"),
    ("bad-duration", cfg(timeout="20x"), "timeout"),
    ("bad-duration-absolute", cfg(absolute_timeout="soon"), "absolute_timeout"),
    ("bad-duration-negative", cfg(suspect_for="-1s"), "suspect_for"),
    ("bad-max-age", cfg(cookie={"max_age": "1y"}), "cookie.max_age"),
    ("key-not-base64", cfg(cookie={"keys": ["not base64!!"]}), "cookie.keys"),
    ("key-16-bytes", cfg(cookie={"keys": [base64.b64encode(b"k" * 16).decode()]}), "cookie.keys"),
    ("keys-not-a-list", cfg(cookie={"keys": GOOD_KEY}), "cookie.keys"),
    ("unknown-type", cfg(type="round_robin"), "type"),
    ("missing-type", json.dumps({"name": "e2e"}), "type"),
    ("unknown-format", cfg(cookie={"format": "base64"}), "cookie.format"),
    ("unknown-handoff", cfg(handoff="header"), "handoff"),
    ("unknown-same-site", cfg(cookie={"same_site": "Sometimes"}), "cookie.same_site"),
    ("same-site-none-insecure", cfg(cookie={"same_site": "None"}), "cookie.same_site"),
    ("strict-not-bool", cfg(strict="yes"), "strict"),
    ("not-json", "type: http_cookie", None),
    ("json-array", "[]", None),
]


def typed(type_, **sections):
    return json.dumps({"name": "e2e", "type": type_, **sections})


# The locally stored types (SPEC 2.2): a section for another type, required and malformed fields.
BAD += [
    ("section-of-another-type", typed("client_ip", cookie={"name": "x"}), "cookie"),
    ("header-section-for-app-cookie", typed("app_cookie", header={"name": "x-user"}), "header"),
    ("app-cookie-section-for-custom", typed("custom", custom={"source": {"header": "x"}},
                                            app_cookie={"name": "SID"}), "app_cookie"),
    ("missing-header-name", typed("http_header", header={}), "header.name"),
    ("missing-header-section", typed("http_header"), ("header", "header.name")),
    ("empty-header-name", typed("http_header", header={"name": ""}), "header.name"),
    ("bad-header-servers-address", typed("http_header", header={"name": "x-user", "servers": {"alice": "not-an-address"}}),
     "header.servers.alice"),
    ("header-servers-without-port", typed("http_header", header={"name": "x-user", "servers": {"alice": "127.0.0.1"}}),
     "header.servers.alice"),
    ("header-servers-not-a-map", typed("http_header", header={"name": "x-user", "servers": ["127.0.0.1:80"]}),
     "header.servers"),
    ("ipv4-prefix-33", typed("client_ip", client_ip={"ipv4_prefix": 33}), "client_ip.ipv4_prefix"),
    ("ipv6-prefix-129", typed("client_ip", client_ip={"ipv6_prefix": 129}), "client_ip.ipv6_prefix"),
    ("ipv4-prefix-negative", typed("client_ip", client_ip={"ipv4_prefix": -1}), "client_ip.ipv4_prefix"),
    ("unknown-client-ip-field", typed("client_ip", client_ip={"prefix": 24}), "client_ip.prefix"),
    ("unknown-tls-key", typed("tls", tls={"key": "session_ticket"}), "tls.key"),
    ("custom-two-source-forms", typed("custom", custom={"source": {"header": "x-a", "cookie": "b"}}), "custom.source"),
    ("custom-empty-source", typed("custom", custom={"source": {}}), "custom.source"),
    ("custom-missing-source", typed("custom", custom={}), "custom.source"),
    ("custom-unknown-source-form", typed("custom", custom={"source": {"body": "x"}}),
     ("custom.source", "custom.source.body")),
    ("custom-property-not-a-list", typed("custom", custom={"source": {"property": "metadata"}}),
     ("custom.source", "custom.source.property")),
    ("app-cookie-unknown-field", typed("app_cookie", app_cookie={"nmae": "SID"}), "app_cookie.nmae"),
    ("app-cookie-learn-not-bool", typed("app_cookie", app_cookie={"learn_from_request": "yes"}),
     "app_cookie.learn_from_request"),
]


def assert_refused(example, text, field, backends, tmp_path, build="wasm"):
    envoy = Envoy(example, text, backends, tmp_path, build=build)
    rc, log = envoy.run_to_exit(timeout=30)
    assert rc != 0, f"Envoy accepted {text!r}"
    lines = [l for l in log.splitlines() if "invalid configuration" in l]
    assert lines, f"no 'invalid configuration' line for {text!r}:\n" + "\n".join(log.splitlines()[-15:])
    if envoy.native:
        assert len(lines) == 1, f"expected one 'invalid configuration' line for {text!r}:\n" + "\n".join(lines)
    if field is not None:
        fields = field if isinstance(field, tuple) else (field,)
        named = [l for l in lines for f in fields
                 if re.search(rf"invalid configuration: {re.escape(f)}\b(?![.\w])", l)]
        assert named, f"the line does not name `{' or '.join(fields)}` first: {lines}"


@pytest.mark.parametrize("case,text,field", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_is_refused(case, text, field, backends, tmp_path, build):
    assert_refused("http-cookie.yaml", text, field, backends, tmp_path, build)


# `strict` is honoured only by a build that names the server itself (the native module): the
# wasm module refuses it, naming the field (its strict mode is the `strict` of the
# stateful_session filter after it); the native module accepts the same JSON.
WASM_ONLY_BAD = [
    ("strict-true-on-wasm", cfg(strict=True), "strict"),
    ("strict-true-on-wasm-table", typed("http_header", header={"name": "x-user"}, strict=True), "strict"),
]


@pytest.mark.parametrize("case,text,field", WASM_ONLY_BAD, ids=[b[0] for b in WASM_ONLY_BAD])
def test_strict_is_refused_by_the_wasm_module_and_accepted_natively(case, text, field, backends, tmp_path, build):
    if build == "wasm":
        assert_refused("http-cookie.yaml", text, field, backends, tmp_path, build)
        return
    rc, out = Envoy("http-cookie.yaml", text, backends, tmp_path, build=build).validate()
    assert rc == 0, out[-3000:]
    assert "invalid configuration" not in out


# `mirror` (SPEC 2.4), in envoy/mirror.yaml, which has the `etcd` cluster the section names:
# only for the locally stored types; `cluster` and `secret` (base64 of 32 bytes) required,
# `timeout` from 1ms to 10s, a non-empty `prefix`, no other field.
SECRET = base64.b64encode(bytes(range(32))).decode()
MIRROR = {"cluster": "etcd", "secret": SECRET}
MIRROR_BAD = [
    ("mirror-on-http-cookie", typed("http_cookie", mirror=MIRROR), "mirror"),
    ("mirror-on-consistent-hash", typed("consistent_hash", hash={"source": {"header": "x-user"}}, mirror=MIRROR),
     "mirror"),
    ("mirror-missing-cluster", typed("http_header", header={"name": "x-user"}, mirror={"prefix": "/persist/"}),
     "mirror.cluster"),
    ("mirror-empty-section", typed("http_header", header={"name": "x-user"}, mirror={}), "mirror.cluster"),
    ("mirror-cluster-not-a-string", typed("http_header", header={"name": "x-user"}, mirror={"cluster": 5}),
     "mirror.cluster"),
    ("mirror-timeout-zero", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "timeout": "0s"}),
     "mirror.timeout"),
    ("mirror-timeout-1h", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "timeout": "1h"}),
     "mirror.timeout"),
    ("mirror-timeout-11s", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "timeout": "11s"}),
     "mirror.timeout"),
    ("mirror-timeout-abc", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "timeout": "abc"}),
     "mirror.timeout"),
    ("mirror-empty-prefix", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "prefix": ""}),
     "mirror.prefix"),
    ("mirror-unknown-field", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "bogus": 1}),
     "mirror.bogus"),
    ("mirror-not-an-object", typed("http_header", header={"name": "x-user"}, mirror="etcd"), "mirror"),
    ("mirror-missing-secret", typed("http_header", header={"name": "x-user"}, mirror={"cluster": "etcd"}),
     "mirror.secret"),
    ("mirror-secret-not-base64", typed("http_header", header={"name": "x-user"},
                                       mirror={**MIRROR, "secret": "not base64!!"}), "mirror.secret"),
    ("mirror-secret-16-bytes", typed("client_ip", mirror={**MIRROR, "secret": base64.b64encode(b"k" * 16).decode()}),
     "mirror.secret"),
    ("mirror-secret-empty", typed("client_ip", mirror={**MIRROR, "secret": ""}), "mirror.secret"),
    ("mirror-secret-not-a-string", typed("client_ip", mirror={**MIRROR, "secret": 32}), "mirror.secret"),
]


@MIRROR_IS_WASM_ONLY
@pytest.mark.parametrize("case,text,field", MIRROR_BAD, ids=[b[0] for b in MIRROR_BAD])
def test_bad_mirror_configuration_is_refused(case, text, field, backends, tmp_path, build):
    assert_refused("mirror.yaml", text, field, backends, tmp_path, build)


GOOD = [
    ("minimal", json.dumps({"type": "http_cookie"})),
    ("durations", cfg(timeout="7d", absolute_timeout="12h", suspect_for="90s", cookie={"max_age": 3600})),
    ("integer-seconds", cfg(timeout=1200, suspect_for=0)),
    ("milliseconds", cfg(suspect_for="500ms")),
    ("strict-false", cfg(strict=False)),
    ("all-cookie-fields", cfg(handoff="override_host", upstream_header="x-sticky", max_entries=10,
                              cookie={"format": "sealed", "path": "/a", "domain": "example.test", "secure": True,
                                      "http_only": False, "same_site": "None", "max_age": "1h",
                                      "always_send": True,
                                      "keys": [GOOD_KEY, base64.b64encode(b"\x01" * 32).decode()]})),
    ("format-envoy", json.dumps({"type": "http_cookie", "cookie": {"format": "envoy", "name": "SESSION"}})),
    ("format-nginx", json.dumps({"type": "http_cookie", "cookie": {"format": "nginx"}})),
    ("format-bigip", json.dumps({"type": "http_cookie", "cookie": {"format": "bigip"}})),
    ("app-cookie-minimal", json.dumps({"type": "app_cookie"})),
    ("app-cookie-all-fields", typed("app_cookie", timeout="30m", absolute_timeout="8h", max_entries=50,
                                    app_cookie={"name": "PHPSESSID", "query_parameter": "sid",
                                                "learn_from_request": True})),
    ("http-header", typed("http_header", header={"name": "x-user"})),
    ("http-header-servers", typed("http_header", header={"name": "X-User", "servers": {
        "alice": "127.0.0.1:8081", "bob": "10.0.0.2:443", "v6": "[::1]:8080"}})),
    ("client-ip-minimal", json.dumps({"type": "client_ip"})),
    ("client-ip-prefixes", typed("client_ip", client_ip={"ipv4_prefix": 16, "ipv6_prefix": 48})),
    ("client-ip-prefix-bounds", typed("client_ip", client_ip={"ipv4_prefix": 32, "ipv6_prefix": 128})),
    ("tls-session-id", typed("tls", tls={"key": "session_id", "session_header": "x-tls-sid"})),
    ("tls-peer-certificate", typed("tls", tls={"key": "peer_certificate"})),
    ("custom-header", typed("custom", custom={"source": {"header": "x-key"}})),
    ("custom-cookie", typed("custom", custom={"source": {"cookie": "cart"}})),
    ("custom-query", typed("custom", custom={"source": {"query": "account"}})),
    ("custom-property", typed("custom", custom={"source": {"property": [
        "metadata", "filter_metadata", "envoy.filters.http.lua", "key"]}})),
]


@pytest.mark.parametrize("case,text", GOOD, ids=[g[0] for g in GOOD])
def test_valid_configuration_is_accepted(case, text, backends, tmp_path, build):
    """Control for the refusals above: the same harness with valid JSON passes validation
    (which runs the plugin's on_configure, or the module's configuration hook)."""
    rc, out = Envoy("http-cookie.yaml", text, backends, tmp_path, build=build).validate()
    assert rc == 0, out[-3000:]
    assert "invalid configuration" not in out


MIRROR_GOOD = [
    ("mirror-http-header", typed("http_header", header={"name": "x-user"}, mirror=MIRROR)),
    ("mirror-all-fields", typed("http_header", header={"name": "x-user"}, timeout="30m",
                                mirror={"cluster": "etcd", "prefix": "/apps/web/persist/", "timeout": "250ms",
                                        "secret": SECRET})),
    ("mirror-timeout-1ms", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "timeout": "1ms"})),
    ("mirror-timeout-10s", typed("http_header", header={"name": "x-user"}, mirror={**MIRROR, "timeout": "10s"})),
    ("mirror-app-cookie", typed("app_cookie", mirror=MIRROR)),
    ("mirror-client-ip", typed("client_ip", mirror=MIRROR)),
    ("mirror-tls", typed("tls", tls={"key": "peer_certificate"}, mirror=MIRROR)),
    ("mirror-custom", typed("custom", custom={"source": {"header": "x-key"}}, mirror=MIRROR)),
]


@MIRROR_IS_WASM_ONLY
@pytest.mark.parametrize("case,text", MIRROR_GOOD, ids=[g[0] for g in MIRROR_GOOD])
def test_valid_mirror_configuration_is_accepted(case, text, backends, tmp_path, build):
    """Control for the mirror refusals: the same JSON shapes, valid, in envoy/mirror.yaml."""
    rc, out = Envoy("mirror.yaml", text, backends, tmp_path, build=build).validate()
    assert rc == 0, out[-3000:]
    assert "invalid configuration" not in out

"""Every bad plugin configuration is refused: Envoy exits non-zero, and its log has one line
saying `invalid configuration` that names the field."""

import base64
import json
import re

import pytest

from conftest import KEY1, Envoy

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
    ("not-json", "type: http_cookie", None),
    ("json-array", "[]", None),
]


@pytest.mark.parametrize("case,text,field", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_is_refused(case, text, field, backends, tmp_path):
    envoy = Envoy("http-cookie.yaml", text, backends, tmp_path)
    rc, log = envoy.run_to_exit(timeout=30)
    assert rc != 0, f"Envoy accepted {text!r}"
    lines = [l for l in log.splitlines() if "invalid configuration" in l]
    assert lines, f"no 'invalid configuration' line for {text!r}:\n" + "\n".join(log.splitlines()[-15:])
    if field is not None:
        named = [l for l in lines if re.search(rf"invalid configuration: {re.escape(field)}\b(?![.\w])", l)]
        assert named, f"the line does not name `{field}` first: {lines}"


GOOD = [
    ("minimal", json.dumps({"type": "http_cookie"})),
    ("durations", cfg(timeout="7d", absolute_timeout="12h", suspect_for="90s", cookie={"max_age": 3600})),
    ("integer-seconds", cfg(timeout=1200, suspect_for=0)),
    ("milliseconds", cfg(suspect_for="500ms")),
    ("all-cookie-fields", cfg(handoff="override_host", upstream_header="x-sticky", max_entries=10,
                              cookie={"format": "sealed", "path": "/a", "domain": "example.test", "secure": True,
                                      "http_only": False, "same_site": "None", "max_age": "1h",
                                      "always_send": True,
                                      "keys": [GOOD_KEY, base64.b64encode(b"\x01" * 32).decode()]})),
    ("format-envoy", json.dumps({"type": "http_cookie", "cookie": {"format": "envoy", "name": "SESSION"}})),
    ("format-nginx", json.dumps({"type": "http_cookie", "cookie": {"format": "nginx"}})),
    ("format-bigip", json.dumps({"type": "http_cookie", "cookie": {"format": "bigip"}})),
]


@pytest.mark.parametrize("case,text", GOOD, ids=[g[0] for g in GOOD])
def test_valid_configuration_is_accepted(case, text, backends, tmp_path):
    """Control for the refusals above: the same harness with valid JSON passes validation
    (which runs the plugin's on_configure)."""
    rc, out = Envoy("http-cookie.yaml", text, backends, tmp_path).validate()
    assert rc == 0, out[-3000:]
    assert "invalid configuration" not in out

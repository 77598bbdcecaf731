"""Hundreds of bad sealed cookies: each is answered 200 by the load balancer's choice with a
fresh, valid cookie, and counted `invalid` exactly once."""

import os
import random
import string
import struct
import time

import pytest

import persist_codec as codec
from conftest import KEY1, KEY2, first_cookie, plugin_config

pytestmark = pytest.mark.both_builds

TIMEOUT_S = 1200          # "20m"
ABSOLUTE_S = 3600         # "1h"
B64URL = string.ascii_letters + string.digits + "-_"
NOT_B64 = "!#$%&'()*.:<>?@[]^`{|}~"


def bad_cookies(rng, addrs, issued_by_filter):
    """(category, value) pairs, every one invalid under plugin_config(timeout 20m, abs 1h)."""
    now = int(time.time())
    out = []

    def sealed(addr=None, issued=None, refreshed=None, key=KEY1, name="persist", version=1, pt=None):
        addr = addr or rng.choice(addrs)
        issued = now - 10 if issued is None else issued
        refreshed = issued if refreshed is None else refreshed
        pt = pt if pt is not None else codec.sealed_plaintext(addr, issued, refreshed)
        return codec.b64url_nopad(codec.seal_raw(key, name, pt, version=version))

    for _ in range(50):  # random garbage in the base64url alphabet
        out.append(("garbage", "".join(rng.choice(B64URL) for _ in range(rng.randint(1, 120)))))
    for _ in range(15):  # random bytes, well-formed base64url
        out.append(("random-bytes", codec.b64url_nopad(os.urandom(rng.randint(1, 80)))))
    for _ in range(30):  # not base64 at all
        n = rng.randint(1, 60)
        v = "".join(rng.choice(NOT_B64 + B64URL) for _ in range(n))
        pos = rng.randrange(n)
        v = v[:pos] + rng.choice(NOT_B64) + v[pos + 1:]
        out.append(("not-base64", v))
    good = [sealed() for _ in range(10)] + issued_by_filter
    for _ in range(45):  # truncated (raw bytes cut, and the text cut)
        raw = codec.b64url_decode(rng.choice(good))
        out.append(("truncated", codec.b64url_nopad(raw[: rng.randrange(len(raw))])))
    for _ in range(15):
        v = rng.choice(good)
        out.append(("truncated-text", v[: rng.randrange(1, len(v))]))
    for _ in range(80):  # one bit flipped anywhere (version, nonce, ciphertext, tag)
        raw = bytearray(codec.b64url_decode(rng.choice(good)))
        bit = rng.randrange(len(raw) * 8)
        raw[bit // 8] ^= 1 << (bit % 8)
        out.append(("bit-flipped", codec.b64url_nopad(bytes(raw))))
    for _ in range(10):  # extended with extra bytes
        out.append(("extended", codec.b64url_nopad(codec.b64url_decode(rng.choice(good)) + os.urandom(rng.randint(1, 8)))))
    for _ in range(25):  # sealed with a key the filter does not have
        out.append(("unknown-key", sealed(key=rng.choice([KEY2, os.urandom(32)]))))
    for _ in range(10):  # sealed for another cookie name (the AAD binds the name)
        out.append(("other-name-aad", sealed(name=rng.choice(["Persist", "persist2", "other", ""]))))
    for _ in range(20):  # idle timeout passed
        refreshed = now - TIMEOUT_S - rng.randint(5, 100000)
        out.append(("idle-expired", sealed(issued=refreshed - rng.randint(0, 100), refreshed=refreshed)))
    for _ in range(20):  # absolute timeout passed, recently refreshed
        out.append(("absolute-expired", sealed(issued=now - ABSOLUTE_S - rng.randint(10, 100000), refreshed=now - 5)))
    for _ in range(10):  # refreshed too far in the future
        out.append(("future", sealed(issued=now - 5, refreshed=now + 300 + rng.randint(60, 100000))))
    for _ in range(15):  # wrong version byte, otherwise perfectly sealed
        out.append(("version", sealed(version=rng.choice([0, 2, 3, 0x41, 0x80, 0xFF]))))
    for _ in range(10):  # authentic but malformed plaintext
        addr = rng.choice(addrs)
        host, port = codec.split_addr(addr)
        pt = rng.choice([
            codec.sealed_plaintext(addr, now, now, family=5),
            codec.sealed_plaintext(addr, now, now, family=6),        # family 6 with 4 bytes
            codec.sealed_plaintext(addr, now, now)[:-1],             # short port
            codec.sealed_plaintext(addr, now, now) + b"\x00",        # trailing byte
            struct.pack(">II", now, now),                            # no address
            b"",
        ])
        out.append(("bad-plaintext", sealed(pt=pt)))
    return out


def test_hundreds_of_bad_cookies_are_invalid_and_replaced(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin_config(timeout="20m", absolute_timeout="1h"))
    addrs = [b.addr for b in backends]
    issued = []
    for _ in range(3):
        _, c = first_cookie(envoy)
        issued.append(c.value)
    rng = random.Random(20240601)
    cases = bad_cookies(rng, addrs, issued)
    assert len(cases) >= 300
    failures = []
    nonces = set()
    for category, value in cases:
        r = envoy.get(cookie=f"persist={value}; other=1")
        c = r.persist_cookie()
        problem = None
        if r.status != 200 or r.server is None:
            problem = f"status {r.status}"
        elif c is None:
            problem = "no new Set-Cookie"
        elif c.value == value:
            problem = "the bad cookie was sent back"
        else:
            try:
                opened = envoy.open(c.value)
                nonces.add(opened.nonce)
                if opened.addr != backends.by_name(r.server).addr:
                    problem = f"new cookie names {opened.addr}, answered by {r.server}"
            except ValueError as e:
                problem = f"new cookie does not open: {e}"
        if problem:
            failures.append((category, value, problem))
    assert not failures, f"{len(failures)} of {len(cases)} bad cookies mishandled, e.g. {failures[:8]}"
    assert len(nonces) == len(cases), "nonce reuse among issued cookies"
    n = len(cases)
    envoy.wait_counters({"invalid": n, "new": n + 3, "miss": 3, "hit": 0, "rebind": 0, "error": 0})


def test_a_valid_cookie_among_edge_cases_still_works(envoy_factory, backends):
    """Control for the above: the same crafting code makes cookies the filter honours."""
    envoy = envoy_factory("http-cookie.yaml", plugin_config(timeout="20m", absolute_timeout="1h"))
    now = int(time.time())
    cases = [
        (backends[0], now - 10, now - 10),
        (backends[1], now - ABSOLUTE_S + 60, now - TIMEOUT_S + 60),  # near both limits
        (backends[2], now - 5, now + 200),                           # clock skew under 300 s
    ]
    for b, issued, refreshed in cases:
        v = codec.seal(KEY1, "persist", b.addr, issued, refreshed)
        for _ in range(3):
            r = envoy.get(cookie=f"persist={v}")
            assert r.server == b.name, (b.name, issued - now, refreshed - now, r)
    envoy.wait_counters({"hit": 9, "invalid": 0, "miss": 0})


def test_odd_cookie_headers_are_load_balanced_not_failed(envoy_factory, backends):
    """Cookie headers no browser sends: never a 5xx, never a VM failure (checked at
    teardown), always a fresh valid cookie since none of them carries a usable one."""
    envoy = envoy_factory("http-cookie.yaml", plugin_config())
    odd = [
        "persist", "persist=", "=persist", ";;;;", "; ;", "persist=a; persist=b",
        "persist===", "persist = AQ", " persist=AQID", "PERSIST=AQID", "persist=\"\"",
        "persist=\"unterminated", "a=" + "x" * 8000, "; ".join(f"c{i}=v{i}" for i in range(300)),
        "persist=\x80\xff\xfe", "persist=" + "A" * 4000, "\t", "persist=AQ%3D%3D",
    ]
    for value in odd:
        r = envoy.get(cookie=value)
        assert r.status == 200 and r.server is not None, (value[:40], r)
        c = r.persist_cookie()
        assert c is not None, (value[:40], r)
        assert envoy.cookie_server(c.value).name == r.server
    envoy.wait_counters({"hit": 0, "error": 0, "new": len(odd)}, settle=0)

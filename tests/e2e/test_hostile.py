"""Hostile traffic through a real Envoy: thousands of generated requests with malformed,
oversized, duplicated and non-UTF-8 cookies, headers, paths and query strings, forged
cookies in every format, and a client-sent hand-off header in both encodings.

Every answer must be the normal path (200 from a backend), no backend may ever receive a
hand-off value the client wrote, and the teardown checks that no wasm VM failed.

Requests go over raw sockets so that any byte Envoy's HTTP/1 codec accepts can be sent.
Bytes the codec itself refuses (NUL, CR, LF, other control characters in header values;
non-ASCII, spaces or a `#` fragment in the request target) never reach the filter and are not generated.
"""

import base64
import hashlib
import json
import os
import random
import socket
import string
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

import persist_codec as codec
from conftest import LOCAL

pytestmark = pytest.mark.both_builds

# A server that is not in the cluster: a client naming it must never get it to the backend.
FAKE = "10.255.255.1:1"
FAKE_FORMS = {FAKE, base64.b64encode(FAKE.encode()).decode()}
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# Request-target bytes: no '#' (a fragment is never sent; Envoy answers 400 itself).
TARGET_TOKEN = TOKEN.replace("#", "")
PATH_SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%"
HIGH = bytes(range(0x80, 0x100))


def rand_bytes(rng, n, alphabet):
    return bytes(rng.choice(alphabet) for _ in range(n))


def value_bytes(rng, n):
    """Header-value bytes Envoy accepts: visible ASCII, space, tab, and obs-text (0x80-0xff)."""
    alphabet = list(range(0x21, 0x7F)) + [0x20, 0x09] + list(HIGH)
    v = bytes(rng.choice(alphabet) for _ in range(n))
    return v.strip(b" \t") or b"x"


def forged_cookie_values(rng, addrs):
    """Cookie values in every format, naming a backend or the fake server."""
    out = []
    for addr in addrs + [FAKE]:
        host, port = addr.rsplit(":", 1)
        out.append(base64.b64encode(addr.encode()).decode())                     # envoy legacy
        out.append(codec.envoy_encode(addr, 2_000_000_000))                      # envoy 1.40
        out.append(hashlib.md5(addr.encode()).hexdigest())                       # nginx
        ip = struct.unpack("<I", socket.inet_aton(host))[0]
        p = struct.unpack("<H", struct.pack(">H", int(port)))[0]
        out.append(f"{ip}.{p}.0000")                                             # bigip
        # "sealed": right shape, wrong key (a client cannot seal)
        out.append(codec.b64url_nopad(codec.seal_raw(os.urandom(32), "persist",
                                                     codec.sealed_plaintext(addr, 1, 1))))
    return out


def cookie_header(rng, names, forged):
    kind = rng.randrange(8)
    if kind == 0:  # many duplicates of our names
        parts = [f"{rng.choice(names)}={rng.choice(forged)}" for _ in range(rng.randint(2, 40))]
        return "; ".join(parts).encode()
    if kind == 1:  # oversized: one huge value (Envoy's default limit is 60 KiB of headers)
        return rng.choice(names).encode() + b"=" + rand_bytes(rng, rng.randint(1000, 30000), TOKEN.encode())
    if kind == 2:  # non-UTF-8 everywhere
        return value_bytes(rng, rng.randint(1, 400))
    if kind == 3:  # broken structure
        return rng.choice([b";;;;", b"=", b"==;==", b"persist", b"persist=", b'persist="',
                           b"; persist=;", b"persist = a = b", b"\tpersist=\t", b"a=1;" * 500])
    if kind == 4:  # a forged value in quotes, with spaces, or bit-flipped
        v = rng.choice(forged)
        v = rng.choice([f'"{v}"', f" {v} ", v[::-1], v[:-1], v + "=", v.upper()])
        return f"{rng.choice(names)}={v}".encode()
    if kind == 5:  # our name with high bytes in the value
        return rng.choice(names).encode() + b"=" + value_bytes(rng, rng.randint(1, 200))
    # a plain forged cookie among other cookies
    other = "; ".join(f"c{i}={rng.randint(0, 10**9)}" for i in range(rng.randint(0, 5)))
    mine = f"{rng.choice(names)}={rng.choice(forged)}"
    return ("; ".join(x for x in [other, mine] if x)).encode()


def request_target(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return "/" + "".join(rng.choice(PATH_SAFE) for _ in range(rng.randint(0, 300)))
    if kind == 1:  # path parameters
        seg = ";".join(f"{rng.choice(['jsessionid', 'JSESSIONID', 'JSessionId', 'x', ''])}="
                       f"{''.join(rng.choice(TARGET_TOKEN) for _ in range(rng.randint(0, 40)))}"
                       for _ in range(rng.randint(1, 6)))
        return f"/app;{seg}/page"
    if kind == 2:  # query strings
        q = "&".join(f"{rng.choice(['sid', 'jsessionid', 'k', '', '='])}={rng.choice(['', '%00', '%ff%fe', 'a' * rng.randint(1, 2000)])}"
                     for _ in range(rng.randint(1, 20)))
        return f"/q?{q}"
    if kind == 3:  # percent-encoded junk, including encoded high bytes and NULs
        return "/" + "".join(f"%{rng.randrange(256):02x}" for _ in range(rng.randint(1, 200)))
    if kind == 4:  # long
        return "/" + "a" * rng.randint(1000, 7000)
    return rng.choice(["/", "/;", "/;;", "/?", "/??", "/;jsessionid=", "/?jsessionid", "//;a=b?c=d"])


def extra_headers(rng):
    h = []
    for form in FAKE_FORMS:
        if rng.random() < 0.5:
            h.append((b"x-persist-upstream", form.encode()))
    if rng.random() < 0.4:  # XFF garbage, several hops, IPv6, junk
        h.append((b"x-forwarded-for", rng.choice([
            b"1.2.3.4", b"::1", b"1.2.3.4, 5.6.7.8", b"999.1.1.1", b"[::1]:80", b"not-an-ip",
            value_bytes(rng, rng.randint(1, 100)), b",,,", b"10.0.0." + str(rng.randint(0, 300)).encode(),
        ])))
    for name in [b"x-user", b"x-key", b"x-tls-session-id", b"x-persist-hash"]:
        if rng.random() < 0.3:
            h.append((name, value_bytes(rng, rng.randint(1, 3000))))
    if rng.random() < 0.2:  # the same header many times
        h.extend([(b"x-user", value_bytes(rng, 10)) for _ in range(rng.randint(2, 30))])
    return h


def send_raw(port, target, headers, timeout=10.0):
    req = [f"GET {target} HTTP/1.1".encode(), b"Host: persist.test", b"Connection: close"]
    req += [n + b": " + v for n, v in headers]
    data = b"\r\n".join(req) + b"\r\n\r\n"
    with socket.create_connection((LOCAL, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        hdrs.setdefault(n.strip().lower().decode(), []).append(v.strip().decode("latin-1"))
    return status, hdrs, body


def generate(rng, n, names, forged):
    out = []
    for _ in range(n):
        headers = extra_headers(rng)
        if rng.random() < 0.85:
            headers.append((b"cookie", cookie_header(rng, names, forged)))
        if rng.random() < 0.1:  # a second Cookie header line
            headers.append((b"cookie", cookie_header(rng, names, forged)))
        out.append((request_target(rng), headers))
    return out


def run_hostile(envoy, requests):
    def one(req):
        target, headers = req
        return req, send_raw(envoy.port, target, headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, requests))
    failures, seen_backends = [], {}
    for (target, headers), (status, hdrs, body) in results:
        backend = (hdrs.get("x-backend") or [None])[0]
        if status != 200 or backend is None:
            failures.append(f"{status} {target[:80]!r} {[(n, v[:60]) for n, v in headers]!r}: {body[:200]!r}")
            continue
        seen_backends[backend] = seen_backends.get(backend, 0) + 1
        echoed = json.loads(body)["headers"]
        got = echoed.get("x-persist-upstream")
        assert got not in FAKE_FORMS, f"client-chosen upstream reached the backend: {got!r} for {target!r}"
        for name in ("x-persist-upstream",):
            assert name not in hdrs, f"{name} leaked to the client"
    assert not failures, f"{len(failures)} of {len(results)} not answered 200 by a backend:\n" + "\n".join(failures[:10])
    return seen_backends


def test_hostile_requests_cookie_profiles(envoy_factory, backends):
    """Sealed cookie profile: ~1000 hostile requests, load balanced, nothing client-chosen."""
    rng = random.Random(20261125)
    e = envoy_factory("http-cookie.yaml")
    forged = forged_cookie_values(rng, [b.addr for b in backends])
    names = [e.cookie_name, e.cookie_name.upper(), "JSESSIONID", "x"]
    seen = run_hostile(e, generate(rng, 1000, names, forged))
    # A forged cookie or header never picks the server: the load spreads over all three.
    assert len(seen) == 3 and min(seen.values()) > 150, seen
    e.wait_counter_at_least("invalid", 201)
    stats = e.wait_counters({"hit": 0})  # settled: a forged cookie was never honoured


def test_hostile_requests_table_profiles(envoy_factory, backends):
    """app_cookie and client_ip profiles: 500 hostile requests each, all answered 200."""
    rng = random.Random(4242)
    forged = forged_cookie_values(rng, [b.addr for b in backends])
    for example, plugin in [
        ("app-cookie.yaml", {"name": "app", "type": "app_cookie",
                             "app_cookie": {"name": "JSESSIONID", "query_parameter": "jsessionid"}}),
        ("client-ip.yaml", {"name": "ip", "type": "client_ip", "max_entries": 100,
                            "client_ip": {"ipv4_prefix": 24, "ipv6_prefix": 64}}),
    ]:
        e = envoy_factory(example, plugin=plugin)
        run_hostile(e, generate(rng, 500, ["JSESSIONID", "jsessionid", "persist"], forged))
        e.wait_counter_at_least("miss", 1)  # the workers flushed
        e.wait_counters({"error": 0})
        e.stop()

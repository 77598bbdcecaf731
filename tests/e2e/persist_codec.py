"""Independent Python implementations of the cookie formats of SPEC 2.1.

The tests compute expected cookie values from these definitions (never from the filter's
output), craft valid / expired / tampered cookies, and decode whatever the filter writes.
"""

import base64
import hashlib
import ipaddress
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_VERSION = 1
NONCE_LEN = 12
TAG_LEN = 16


# --- base64 helpers ---------------------------------------------------------------------

def b64url_nopad(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (raises ValueError on anything else)."""
    if "=" in text or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if not set(text) <= alphabet:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def split_addr(addr: str):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


# --- sealed -------------------------------------------------------------------------------

@dataclass
class Sealed:
    version: int
    nonce: bytes
    issued: int
    refreshed: int
    addr: str
    cluster: int = 0  # the cluster tag (README "Weighted clusters"); 0: none recorded


def cluster_tag(name: str) -> int:
    """The tag a cookie or entry records of a cluster: 32-bit FNV-1a of its name, never 0."""
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return max(h, 1)


def sealed_plaintext(addr: str, issued: int, refreshed: int, family=None, cluster=0) -> bytes:
    host, port = split_addr(addr)
    ip = ipaddress.ip_address(host)
    fam = family if family is not None else (4 if ip.version == 4 else 6)
    tag = struct.pack(">I", cluster) if cluster else b""
    return struct.pack(">II", issued, refreshed) + bytes([fam]) + ip.packed + struct.pack(">H", port) + tag


def aad(cookie_name: str) -> bytes:
    return b"envoy-persist:" + cookie_name.encode()


def header_aad(header_name: str) -> bytes:
    """session_header tokens are bound to the header's (lower-case) name."""
    return b"envoy-persist-header:" + header_name.encode()


def seal_raw(key: bytes, cookie_name: str, plaintext: bytes, version=SEALED_VERSION, nonce=None,
             aad_bytes=None) -> bytes:
    nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    ct = AESGCM(key).encrypt(nonce, plaintext, aad_bytes if aad_bytes is not None else aad(cookie_name))
    return bytes([version]) + nonce + ct


def seal(key: bytes, cookie_name: str, addr: str, issued: int, refreshed=None, **kw) -> str:
    refreshed = issued if refreshed is None else refreshed
    return b64url_nopad(seal_raw(key, cookie_name, sealed_plaintext(addr, issued, refreshed), **kw))


def seal_header(key: bytes, header_name: str, addr: str, issued: int, refreshed=None) -> str:
    """A session_header token for `header_name`."""
    return seal(key, "", addr, issued, refreshed, aad_bytes=header_aad(header_name))


def open_header_token(keys, header_name: str, value: str) -> "Sealed":
    """Opens a session_header token; raises ValueError when it is not valid."""
    return open_sealed(keys, "", value, aad_bytes=header_aad(header_name))


def open_sealed(keys, cookie_name: str, value: str, aad_bytes=None) -> Sealed:
    """Opens a sealed cookie with any of `keys`; raises ValueError when it is not valid."""
    raw = b64url_decode(value)
    if len(raw) < 1 + NONCE_LEN + TAG_LEN:
        raise ValueError("too short")
    version, nonce, ct = raw[0], raw[1 : 1 + NONCE_LEN], raw[1 + NONCE_LEN :]
    if version != SEALED_VERSION:
        raise ValueError(f"version {version}")
    for key in keys:
        try:
            pt = AESGCM(key).decrypt(nonce, ct, aad_bytes if aad_bytes is not None else aad(cookie_name))
        except Exception:  # InvalidTag
            continue
        issued, refreshed = struct.unpack(">II", pt[:8])
        fam = pt[8]
        iplen = {4: 4, 6: 16}.get(fam)
        if iplen is None or len(pt) not in (9 + iplen + 2, 9 + iplen + 2 + 4):
            raise ValueError(f"bad plaintext (family {fam}, {len(pt)} bytes)")
        ip = ipaddress.ip_address(pt[9:9 + iplen])
        port = struct.unpack(">H", pt[9 + iplen:11 + iplen])[0]
        addr = f"{ip}:{port}" if fam == 4 else f"[{ip}]:{port}"
        tail = pt[11 + iplen:]
        cluster = struct.unpack(">I", tail)[0] if tail else 0
        return Sealed(version, nonce, issued, refreshed, addr, cluster)
    raise ValueError("no key opens it")


# --- envoy (native stateful_session cookie) -----------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, i: int):
    shift = 0
    value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def envoy_encode(addr: str, expires: int = 0) -> str:
    a = addr.encode()
    msg = b"\x0a" + _varint(len(a)) + a
    if expires:
        msg += b"\x10" + _varint(expires)
    return base64.b64encode(msg).decode()


def envoy_legacy_encode(addr: str) -> str:
    return base64.b64encode(addr.encode()).decode()


def envoy_decode(value: str):
    """Decodes the current (protobuf) form: returns (address, expires)."""
    value = value.strip('"')
    raw = base64.b64decode(value, validate=True)
    i = 0
    addr, expires = None, 0
    while i < len(raw):
        tag, i = _read_varint(raw, i)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            n, i = _read_varint(raw, i)
            data = raw[i : i + n]
            if len(data) != n:
                raise ValueError("truncated")
            i += n
            if field == 1:
                addr = data.decode()
        elif wire == 0:
            v, i = _read_varint(raw, i)
            if field == 2:
                expires = v
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if addr is None:
        raise ValueError("no address field")
    return addr, expires


# --- nginx ----------------------------------------------------------------------------------

def nginx_hash(addr: str) -> str:
    return hashlib.md5(addr.encode()).hexdigest()


# --- bigip ----------------------------------------------------------------------------------

def bigip_encode(addr: str) -> str:
    host, port = split_addr(addr)
    a, b, c, d = (int(x) for x in host.split("."))
    ip = a + b * 256 + c * 65536 + d * 16777216
    swapped = ((port & 0xFF) << 8) | (port >> 8)
    return f"{ip}.{swapped}.0000"


def bigip_decode(value: str) -> str:
    ip_s, port_s, tail = value.split(".")
    if tail != "0000":
        raise ValueError("bad bigip tail")
    ip, p = int(ip_s), int(port_s)
    octets = [(ip >> s) & 0xFF for s in (0, 8, 16, 24)]
    port = ((p & 0xFF) << 8) | (p >> 8)
    return "{}.{}.{}.{}:{}".format(*octets, port)


def _self_check():
    assert bigip_encode("10.1.1.100:8080") == "1677787402.36895.0000"
    assert bigip_decode("1677787402.36895.0000") == "10.1.1.100:8080"
    k = bytes(range(32))
    v = seal(k, "persist", "127.0.0.1:8081", 1000, 1001)
    s = open_sealed([k], "persist", v)
    assert (s.addr, s.issued, s.refreshed) == ("127.0.0.1:8081", 1000, 1001)
    assert envoy_decode(envoy_encode("127.0.0.1:1", 1234567890)) == ("127.0.0.1:1", 1234567890)
    assert envoy_decode(envoy_encode("127.0.0.1:1")) == ("127.0.0.1:1", 0)


_self_check()


# --- ingress-nginx (its Lua balancer's affinity cookie) ----------------------------------------

def ingress_endpoint(addr: str) -> str:
    """ingress-nginx names an endpoint `address:port` (IPv6 without brackets)."""
    host, port = split_addr(addr)
    return f"{host}:{port}"


def ingress_backend_key(backend: str) -> str:
    """md5hex(md5hex(backend) .. backend), the cookie's second part."""
    inner = hashlib.md5(backend.encode()).hexdigest() + backend
    return hashlib.md5(inner.encode()).hexdigest()


def ingress_persistent(backend: str, addr: str, with_backend_key=True) -> str:
    """`persistent` mode: md5hex(salt .. endpoint), the salt being the backend name."""
    key = hashlib.md5((backend + ingress_endpoint(addr)).encode()).hexdigest()
    return f"{key}|{ingress_backend_key(backend)}" if with_backend_key else key


def ingress_ring(endpoints):
    """`balanced` mode's consistent hash (lua-resty-balancer chash, weight 1 each): 160 points
    per endpoint, each the CRC-32 of the previous point's little-endian bytes (zero first)
    continued from the endpoint's CRC-32 register; returns find(key) -> endpoint addr."""
    import bisect
    import zlib
    points = []
    for addr in endpoints:
        base = zlib.crc32(ingress_endpoint(addr).encode())
        prev = b"\0\0\0\0"
        for _ in range(160):
            h = zlib.crc32(prev, base ^ 0xFFFFFFFF)  # register = base, then the final xor
            points.append((h, addr))
            prev = struct.pack("<I", h)
    points.sort(key=lambda p: p[0])
    hashes = [h for h, _ in points]

    def find(key: str) -> str:
        i = bisect.bisect_right(hashes, zlib.crc32(key.encode())) - 1
        return points[max(i, 0)][1]
    return find

"""Independent Python model of how the filter places a client key (SPEC 2.2): the keyed hash
(SipHash-2-4, 128-bit output) under a profile secret, the table geometry, the mirror's etcd
key names; and the unkeyed MD5 placement of the version before, to craft colliding keys."""

import hashlib

WAYS = 16
_M = (1 << 64) - 1


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & _M


def siphash24_128(key16: bytes, msg: bytes) -> bytes:
    """SipHash-2-4 with its 128-bit output (the reference algorithm), little-endian bytes."""
    assert len(key16) == 16
    k0 = int.from_bytes(key16[:8], "little")
    k1 = int.from_bytes(key16[8:], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D ^ 0xEE,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(n):
        for _ in range(n):
            v[0] = (v[0] + v[1]) & _M; v[1] = _rotl(v[1], 13) ^ v[0]; v[0] = _rotl(v[0], 32)  # noqa: E702
            v[2] = (v[2] + v[3]) & _M; v[3] = _rotl(v[3], 16) ^ v[2]  # noqa: E702
            v[0] = (v[0] + v[3]) & _M; v[3] = _rotl(v[3], 21) ^ v[0]  # noqa: E702
            v[2] = (v[2] + v[1]) & _M; v[1] = _rotl(v[1], 17) ^ v[2]; v[2] = _rotl(v[2], 32)  # noqa: E702

    whole = len(msg) - len(msg) % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(msg[i:i + 8], "little")
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    last = ((len(msg) & 0xFF) << 56) | int.from_bytes(msg[whole:], "little")
    v[3] ^= last
    rounds(2)
    v[0] ^= last
    v[2] ^= 0xEE
    rounds(4)
    h1 = v[0] ^ v[1] ^ v[2] ^ v[3]
    v[1] ^= 0xDD
    rounds(4)
    h2 = v[0] ^ v[1] ^ v[2] ^ v[3]
    return h1.to_bytes(8, "little") + h2.to_bytes(8, "little")


def hash_key(secret: bytes) -> bytes:
    """The SipHash key of a 32-byte secret: its second half hashed under its first half."""
    assert len(secret) == 32
    return siphash24_128(secret[:16], secret[16:])


def mac(secret: bytes, key: bytes) -> bytes:
    """The keyed hash of a client key (domain byte 0, then the key)."""
    return siphash24_128(hash_key(secret), b"\x00" + key)


def secret_id(secret: bytes) -> str:
    """The public name of a secret in etcd key names (8 hex digits)."""
    return siphash24_128(hash_key(secret), b"\x01envoy-persist secret id")[:4].hex()


def etcd_key(secret: bytes, value: str, profile: str, prefix: str = "/persist/") -> str:
    return f"{prefix}{profile}/{secret_id(secret)}/{mac(secret, value.encode()).hex()}"


def md5_etcd_key(value: str, profile: str, prefix: str = "/persist/") -> str:
    """How the version before the keyed hash named a key in etcd."""
    return f"{prefix}{profile}/{hashlib.md5(value.encode()).hexdigest()}"


def slots_for(max_entries: int) -> int:
    return -(-max_entries // WAYS)


def slot_of_digest(digest: bytes, slots: int) -> int:
    """64 bits of the 128-bit hash choose the slot (the other 64 are the fingerprint)."""
    return int.from_bytes(digest[8:16], "little") % slots


def md5_slot(key: bytes, slots: int) -> int:
    """The slot the version before chose: unkeyed MD5, computable by anyone."""
    return slot_of_digest(hashlib.md5(key).digest(), slots)


def crafted_keys(target: bytes, slots: int, n: int, stem: str = "attacker-"):
    """`n` keys an attacker computes offline that MD5 puts into `target`'s slot."""
    want = md5_slot(target, slots)
    out, i = [], 0
    while len(out) < n:
        k = f"{stem}{i}"
        if md5_slot(k.encode(), slots) == want:
            out.append(k)
        i += 1
    return out

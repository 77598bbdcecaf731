//! Where cookies are sealed: AES-256-GCM over the server address and the issue/refresh times.
//!
//! Wire form (base64url, no padding):
//! `0x01 | nonce (12) | AES-256-GCM(key, nonce, plaintext, aad = "envoy-persist:" + cookie name)`
//! with `plaintext = issued (u32 BE) | refreshed (u32 BE) | family (4|6) | ip (4|16) | port (u16 BE)
//! [| cluster tag (u32 BE)]`; the cluster tag is there only when one was recorded (README
//! "Weighted clusters"), so cookies sealed before stay readable.
//! The first key seals; every key is tried to open (rotation).
//!
//! Nonces come from a [`NonceSequence`]: a random 8-byte prefix per VM and a 32-bit counter
//! (the deterministic construction of NIST SP 800-38D), so sealing needs no host call.

use super::gcm::Gcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::net::SocketAddr;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest plaintext: times (8) + family (1) + IPv6 (16) + port (2) + cluster tag (4).
const MAX_PLAIN: usize = 31;
/// Longest cookie value we try to open (base64 of the longest sealed form, with slack).
pub const MAX_ENCODED: usize = 96;

/// What a sealed cookie holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub addr: SocketAddr,
    pub issued: u32,
    pub refreshed: u32,
    /// The tag of the cluster the server was answered from; 0: none recorded.
    pub cluster: u32,
}

/// Produces unique 96-bit nonces: `prefix (8 random bytes) | counter (u32 BE)`.
#[derive(Debug, Clone)]
pub struct NonceSequence {
    prefix: [u8; 8],
    counter: u32,
}

impl NonceSequence {
    pub fn new(prefix: [u8; 8]) -> Self {
        NonceSequence { prefix, counter: 0 }
    }

    /// The next nonce, or `None` once the counter is exhausted (then re-seed with a new prefix).
    pub fn next_nonce(&mut self) -> Option<[u8; NONCE_LEN]> {
        let counter = self.counter;
        self.counter = self.counter.checked_add(1)?;
        let mut nonce = [0u8; NONCE_LEN];
        let (p, c) = nonce.split_at_mut(8);
        p.copy_from_slice(&self.prefix);
        c.copy_from_slice(&counter.to_be_bytes());
        Some(nonce)
    }
}

/// Seals and opens cookies with a list of keys; prepared once at configure time.
pub struct Sealer {
    /// One per key, each with the associated data (`"envoy-persist:" + cookie name`).
    ciphers: Vec<Gcm>,
    /// Recently opened cookie values (a client sends the same one on every request).
    opened: std::cell::RefCell<OpenedCache>,
}

/// Slots of the opened-cookie cache.
const OPENED_SLOTS: usize = 64;

/// A direct-mapped cache of cookie values this worker opened successfully, so the steady
/// path skips base64 and AES-GCM (software AES in wasm costs microseconds). Only values
/// that opened are stored, so garbage cannot evict anything; an entry is the exact value
/// bytes and what they opened to, which never changes for a given key set.
#[derive(Clone)]
struct OpenedCache {
    slots: Vec<Option<([u8; MAX_ENCODED], usize, Sealed)>>,
}

impl OpenedCache {
    fn new() -> Self {
        OpenedCache {
            slots: vec![None; OPENED_SLOTS],
        }
    }

    fn index(value: &[u8]) -> usize {
        // FNV-1a: cheap, and the exact bytes are compared anyway.
        let h = value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        usize::try_from(h % OPENED_SLOTS as u64).unwrap_or(0)
    }

    fn get(&self, value: &[u8]) -> Option<Sealed> {
        match self.slots.get(Self::index(value))? {
            Some((bytes, len, sealed)) if bytes.get(..*len) == Some(value) => Some(*sealed),
            _ => None,
        }
    }

    fn put(&mut self, value: &[u8], sealed: Sealed) {
        let mut bytes = [0u8; MAX_ENCODED];
        let Some(dst) = bytes.get_mut(..value.len()) else {
            return;
        };
        dst.copy_from_slice(value);
        if let Some(slot) = self.slots.get_mut(Self::index(value)) {
            *slot = Some((bytes, value.len(), sealed));
        }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} keys)", self.ciphers.len())
    }
}

fn encode_plain(s: &Sealed, out: &mut Vec<u8>) {
    out.extend_from_slice(&s.issued.to_be_bytes());
    out.extend_from_slice(&s.refreshed.to_be_bytes());
    crate::addr::push_tagged_ip(out, s.addr.ip());
    out.extend_from_slice(&s.addr.port().to_be_bytes());
    if s.cluster != 0 {
        out.extend_from_slice(&s.cluster.to_be_bytes());
    }
}

fn decode_plain(p: &[u8]) -> Option<Sealed> {
    let (issued, rest) = p.split_first_chunk::<4>()?;
    let (refreshed, rest) = rest.split_first_chunk::<4>()?;
    let (ip, rest) = crate::addr::split_tagged_ip(rest)?;
    let (port, rest) = rest.split_first_chunk::<2>()?;
    let cluster = match rest {
        [] => 0,
        tag => u32::from_be_bytes(tag.try_into().ok()?),
    };
    Some(Sealed {
        addr: SocketAddr::new(ip, u16::from_be_bytes(*port)),
        issued: u32::from_be_bytes(*issued),
        refreshed: u32::from_be_bytes(*refreshed),
        cluster,
    })
}

impl Sealer {
    /// `keys` must not be empty; the first one seals.
    pub fn new(keys: &[[u8; 32]], cookie_name: &str) -> Option<Self> {
        Self::with_aad(keys, b"envoy-persist:", cookie_name)
    }

    /// A sealer for the tokens of the `session_header` type, bound to the header name
    /// (`aad = "envoy-persist-header:" + name`: never a cookie's, whose names cannot hold
    /// `:`, so a cookie value is no token and the other way round).
    pub fn for_header(keys: &[[u8; 32]], header_name: &str) -> Option<Self> {
        Self::with_aad(keys, b"envoy-persist-header:", header_name)
    }

    fn with_aad(keys: &[[u8; 32]], label: &[u8], name: &str) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        let mut aad = label.to_vec();
        aad.extend_from_slice(name.as_bytes());
        let ciphers = keys.iter().map(|k| Gcm::new(k, &aad)).collect::<Vec<_>>();
        Some(Sealer {
            ciphers,
            opened: std::cell::RefCell::new(OpenedCache::new()),
        })
    }

    /// Seals `s` into a cookie value. `None` only if encryption failed (never expected).
    pub fn seal(&self, s: &Sealed, nonce: [u8; NONCE_LEN]) -> Option<String> {
        let cipher = self.ciphers.first()?;
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + MAX_PLAIN + TAG_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&nonce);
        encode_plain(s, &mut buf);
        let body = buf.get_mut(1 + NONCE_LEN..)?;
        let tag = cipher.seal(&nonce, body)?;
        buf.extend_from_slice(&tag);
        Some(URL_SAFE_NO_PAD.encode(&buf))
    }

    /// Opens a cookie value; `None` if malformed, tampered or sealed with an unknown key.
    pub fn open(&self, value: &[u8]) -> Option<Sealed> {
        if value.len() > MAX_ENCODED {
            return None;
        }
        if let Some(hit) = self.opened.try_borrow().ok().and_then(|c| c.get(value)) {
            return Some(hit);
        }
        let sealed = self.open_uncached(value)?;
        if let Ok(mut c) = self.opened.try_borrow_mut() {
            c.put(value, sealed);
        }
        Some(sealed)
    }

    fn open_uncached(&self, value: &[u8]) -> Option<Sealed> {
        let mut raw = [0u8; MAX_ENCODED];
        let n = URL_SAFE_NO_PAD.decode_slice(value, &mut raw).ok()?;
        let raw = raw.get(..n)?;
        let (version, rest) = raw.split_first()?;
        if *version != VERSION {
            return None;
        }
        let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>()?;
        let body_len = rest.len().checked_sub(TAG_LEN)?;
        let (body, tag) = rest.split_at_checked(body_len)?;
        let tag: &[u8; TAG_LEN] = tag.try_into().ok()?;
        if body.len() > MAX_PLAIN {
            return None;
        }
        for cipher in &self.ciphers {
            let mut plain = [0u8; MAX_PLAIN];
            let plain = plain.get_mut(..body.len())?;
            plain.copy_from_slice(body);
            if cipher.open(nonce, plain, tag) {
                return decode_plain(plain);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sample() -> Sealed {
        Sealed {
            addr: "10.1.2.3:8080".parse().unwrap(),
            issued: 1_700_000_000,
            refreshed: 1_700_000_500,
            cluster: 0,
        }
    }

    #[test]
    fn opened_cache_never_changes_an_answer() {
        let s = Sealer::new(&[[9u8; 32]], "persist").unwrap();
        let sealed = Sealed {
            addr: "10.0.0.7:8080".parse().unwrap(),
            issued: 100,
            refreshed: 200,
            cluster: 0,
        };
        let v = s.seal(&sealed, [3u8; NONCE_LEN]).unwrap();
        assert_eq!(s.open(v.as_bytes()), Some(sealed));
        assert_eq!(s.open(v.as_bytes()), Some(sealed), "from the cache");
        // A value differing in one character is opened (and refused) on its own.
        let mut t = v.clone().into_bytes();
        let last = t.len() - 1;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(&t), None);
        // Another key set does not share the cache.
        let other = Sealer::new(&[[8u8; 32]], "persist").unwrap();
        assert_eq!(other.open(v.as_bytes()), None);
        // Many values cycling through the cache still open to their own contents.
        for i in 0..500u32 {
            let x = Sealed {
                issued: i,
                refreshed: i,
                ..sealed
            };
            let mut n = [0u8; NONCE_LEN];
            n[..4].copy_from_slice(&i.to_le_bytes());
            let v = s.seal(&x, n).unwrap();
            assert_eq!(s.open(v.as_bytes()), Some(x));
            assert_eq!(s.open(v.as_bytes()), Some(x));
        }
    }

    #[test]
    fn round_trip_v4_v6() {
        let s = Sealer::new(&[[7u8; 32]], "persist").unwrap();
        let mut n = NonceSequence::new([1; 8]);
        let v = s.seal(&sample(), n.next_nonce().unwrap()).unwrap();
        assert_eq!(s.open(v.as_bytes()), Some(sample()));
        let six = Sealed {
            addr: "[2001:db8::1]:443".parse().unwrap(),
            ..sample()
        };
        let v6 = s.seal(&six, n.next_nonce().unwrap()).unwrap();
        assert!(v6.len() <= MAX_ENCODED);
        assert_eq!(s.open(v6.as_bytes()), Some(six));
        // With a cluster tag (README "Weighted clusters"): four more bytes, same opening.
        for tagged in [
            Sealed {
                cluster: 0xdead_beef,
                ..sample()
            },
            Sealed { cluster: 1, ..six },
        ] {
            let v = s.seal(&tagged, n.next_nonce().unwrap()).unwrap();
            assert!(v.len() <= MAX_ENCODED);
            assert_eq!(s.open(v.as_bytes()), Some(tagged));
        }
    }

    #[test]
    fn plaintext_with_and_without_a_cluster() {
        let mut plain = Vec::new();
        encode_plain(&sample(), &mut plain);
        assert_eq!(
            plain.len(),
            4 + 4 + 1 + 4 + 2,
            "no tag when none is recorded"
        );
        let tagged = Sealed {
            cluster: 7,
            ..sample()
        };
        let mut with = Vec::new();
        encode_plain(&tagged, &mut with);
        assert_eq!(with[..plain.len()], plain[..]);
        assert_eq!(with[plain.len()..], 7u32.to_be_bytes());
        assert_eq!(decode_plain(&plain), Some(sample()));
        assert_eq!(decode_plain(&with), Some(tagged));
        for cut in [1, 2, 3] {
            assert_eq!(decode_plain(&with[..with.len() - cut]), None, "{cut}");
        }
        let mut longer = with.clone();
        longer.push(0);
        assert_eq!(decode_plain(&longer), None);
    }

    #[test]
    fn nonces_are_unique_and_exhaust() {
        let mut n = NonceSequence::new([9; 8]);
        let a = n.next_nonce().unwrap();
        let b = n.next_nonce().unwrap();
        assert_ne!(a, b);
        n.counter = u32::MAX;
        assert!(n.next_nonce().is_none());
    }

    #[test]
    fn rotation_and_wrong_key() {
        let old = Sealer::new(&[[1u8; 32]], "persist").unwrap();
        let rotated = Sealer::new(&[[2u8; 32], [1u8; 32]], "persist").unwrap();
        let only_new = Sealer::new(&[[2u8; 32]], "persist").unwrap();
        let v = old.seal(&sample(), [0; 12]).unwrap();
        assert_eq!(rotated.open(v.as_bytes()), Some(sample()));
        assert_eq!(only_new.open(v.as_bytes()), None);
        let v2 = rotated.seal(&sample(), [1; 12]).unwrap();
        assert_eq!(only_new.open(v2.as_bytes()), Some(sample()));
        assert_eq!(old.open(v2.as_bytes()), None);
    }

    #[test]
    fn bound_to_cookie_name() {
        let a = Sealer::new(&[[1u8; 32]], "a").unwrap();
        let b = Sealer::new(&[[1u8; 32]], "b").unwrap();
        let v = a.seal(&sample(), [0; 12]).unwrap();
        assert_eq!(b.open(v.as_bytes()), None);
    }

    #[test]
    fn header_tokens_are_bound_to_the_header_not_a_cookie() {
        let cookie = Sealer::new(&[[1u8; 32]], "x-persist-session").unwrap();
        let header = Sealer::for_header(&[[1u8; 32]], "x-persist-session").unwrap();
        let other = Sealer::for_header(&[[1u8; 32]], "x-other").unwrap();
        let t = header.seal(&sample(), [0; 12]).unwrap();
        assert_eq!(header.open(t.as_bytes()), Some(sample()));
        assert_eq!(cookie.open(t.as_bytes()), None);
        assert_eq!(other.open(t.as_bytes()), None);
        let c = cookie.seal(&sample(), [0; 12]).unwrap();
        assert_eq!(header.open(c.as_bytes()), None);
    }

    #[test]
    fn tampering_is_detected() {
        let s = Sealer::new(&[[3u8; 32]], "persist").unwrap();
        let v = s.seal(&sample(), [5; 12]).unwrap();
        let bytes = v.as_bytes();
        for i in 0..bytes.len() {
            for repl in [b'A', b'_', b'-', b'z'] {
                if bytes[i] == repl {
                    continue;
                }
                let mut t = bytes.to_vec();
                t[i] = repl;
                assert_eq!(s.open(&t), None, "flip at {i}");
            }
        }
        for cut in 0..bytes.len() {
            assert_eq!(s.open(&bytes[..cut]), None);
        }
        assert_eq!(s.open(b""), None);
        assert_eq!(s.open(&[0xff; 40]), None);
        assert_eq!(s.open(&[b'A'; 500]), None);
    }
}

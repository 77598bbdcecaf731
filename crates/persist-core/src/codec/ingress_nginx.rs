//! ingress-nginx's affinity cookie (`affinity: cookie`, README "Cookie formats and
//! migration"), as its Lua balancer defines it, so that sessions survive the switch to Envoy:
//!
//! - the value is `<upstream key>|<backend key>` (releases before the backend key: the
//!   upstream key alone);
//! - the backend key is `md5hex(md5hex(backend) + backend)`, `backend` being ingress-nginx's
//!   name of the Service port (`<namespace>-<service>-<port>`);
//! - `persistent` mode: the upstream key is `md5hex(backend + endpoint)`, with `endpoint` =
//!   `<address>:<port>` (an IPv6 address without brackets): the backend name salts the hash;
//! - `balanced` mode: the upstream key is a random string looked up in a consistent-hash
//!   ring over the backend's endpoints ([`Ring`]): 160 points per endpoint, point `i` the
//!   CRC-32 of the little-endian bytes of point `i-1` (0 for the first) continued from the
//!   CRC-32 of the endpoint; a key goes to the point with the largest hash not above the
//!   key's CRC-32 (the first point when there is none).
//!
//! The filter writes `persistent` cookies.

use super::{Decoded, Times};
use crate::config::IngressNginxConfig;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Points per endpoint on the `balanced` ring (weight 1, as ingress-nginx gives every endpoint).
pub const POINTS: usize = 160;

/// The endpoint as ingress-nginx names it: `address:port`, IPv6 without brackets.
pub fn endpoint(addr: SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", md5::compute(data))
}

/// The backend key of the cookie for backend `backend`.
pub fn backend_key(backend: &str) -> String {
    let mut inner = md5_hex(backend.as_bytes()).into_bytes();
    inner.extend_from_slice(backend.as_bytes());
    md5_hex(&inner)
}

/// The `persistent` upstream key of `addr`, salted with the backend name.
pub fn hash(salt: &[u8], addr: SocketAddr) -> [u8; 16] {
    let mut data = salt.to_vec();
    data.extend_from_slice(endpoint(addr).as_bytes());
    md5::compute(&data).0
}

/// The cookie value naming `addr`: `persistent` key and backend key.
pub fn encode(salt: &[u8], backend_key: &str, addr: SocketAddr) -> String {
    let mut out = String::with_capacity(32 + 1 + backend_key.len());
    for b in hash(salt, addr) {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('|');
    out.push_str(backend_key);
    out
}

/// What a cookie value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream<'a> {
    /// A `persistent` key: the salted MD5 of the endpoint.
    Hash([u8; 16]),
    /// A `balanced` key, for the ring.
    Balanced(&'a [u8]),
}

/// Splits a cookie value; `None` when it is empty or not for `backend_key`.
pub fn decode<'a>(value: &'a [u8], backend_key: &[u8]) -> Option<(Upstream<'a>, bool)> {
    let (key, with_backend) = match value.iter().position(|&c| c == b'|') {
        Some(bar) => {
            let (key, rest) = value.split_at_checked(bar)?;
            if rest.get(1..)? != backend_key {
                return None;
            }
            (key, true)
        }
        None => (value, false),
    };
    if key.is_empty() || key.len() > 128 || !key.iter().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    let upstream = match super::nginx::decode(key) {
        Some(h) => Upstream::Hash(h),
        None => Upstream::Balanced(key),
    };
    Some((upstream, with_backend))
}

/// CRC-32 (IEEE, reflected) register update, without the initial and final inversion.
fn crc_update(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    c
}

/// The standard CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    !crc_update(0xffff_ffff, data)
}

/// ingress-nginx's `balanced` ring over a backend's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// (hash, endpoint index), sorted by hash.
    points: Vec<(u32, usize)>,
    endpoints: Vec<SocketAddr>,
}

impl Ring {
    pub fn new(endpoints: &[SocketAddr]) -> Ring {
        let mut points = Vec::with_capacity(endpoints.len() * POINTS);
        for (i, ep) in endpoints.iter().enumerate() {
            let base = crc32(endpoint(*ep).as_bytes());
            let mut prev = [0u8; 4];
            for _ in 0..POINTS {
                let h = !crc_update(base, &prev);
                points.push((h, i));
                prev = h.to_le_bytes();
            }
        }
        points.sort_by_key(|p| p.0);
        Ring {
            points,
            endpoints: endpoints.to_vec(),
        }
    }

    /// The endpoint a `balanced` key goes to.
    pub fn find(&self, key: &[u8]) -> Option<SocketAddr> {
        let h = crc32(key);
        let above = self.points.partition_point(|p| p.0 <= h);
        let (_, i) = self.points.get(above.saturating_sub(1))?;
        self.endpoints.get(*i).copied()
    }
}

/// What the `ingress_nginx` cookie format of a profile needs, prepared once.
#[derive(Debug)]
pub struct Cookies {
    /// The backend name: salt of the `persistent` keys.
    salt: Vec<u8>,
    backend_key: String,
    /// `balanced` keys, when the endpoints are configured.
    ring: Option<Ring>,
    /// `persistent` keys of the configured endpoints.
    known: HashMap<[u8; 16], SocketAddr>,
}

/// A well-formed cookie whose server cannot be known (a `balanced` key without configured
/// endpoints): no server's hash, so it resolves to nothing (`miss`).
const UNKNOWN_HASH: [u8; 16] = [0; 16];

impl Cookies {
    pub fn new(cfg: &IngressNginxConfig) -> Cookies {
        let salt = cfg.backend.as_bytes().to_vec();
        let known = cfg
            .endpoints
            .iter()
            .map(|a| (hash(&salt, *a), *a))
            .collect();
        Cookies {
            backend_key: backend_key(&cfg.backend),
            ring: (!cfg.endpoints.is_empty()).then(|| Ring::new(&cfg.endpoints)),
            known,
            salt,
        }
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The cookie value naming `addr` (`persistent` form).
    pub fn encode(&self, addr: SocketAddr) -> String {
        encode(&self.salt, &self.backend_key, addr)
    }

    /// A cookie value: a server (known endpoint or ring), a hash to resolve through the
    /// learned hashes, or `None` (not ours: invalid).
    pub fn decode(&self, value: &[u8]) -> Option<Decoded> {
        let (upstream, current) = decode(value, self.backend_key.as_bytes())?;
        let legacy = if current { Times::None } else { Times::Legacy };
        Some(match upstream {
            Upstream::Hash(h) => match self.known.get(&h) {
                Some(addr) => Decoded::Server {
                    addr: *addr,
                    times: legacy,
                    cluster: 0,
                },
                None => Decoded::Hash(h),
            },
            Upstream::Balanced(key) => match &self.ring {
                Some(ring) => Decoded::Server {
                    addr: ring.find(key)?,
                    times: Times::Legacy,
                    cluster: 0,
                },
                None => Decoded::Hash(UNKNOWN_HASH),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn crc32_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn keys_and_values() {
        let bk = backend_key("default-web-80");
        assert_eq!(bk.len(), 32);
        let inner = format!("{:x}default-web-80", md5::compute("default-web-80"));
        assert_eq!(bk, format!("{:x}", md5::compute(inner)));
        let v = encode(b"default-web-80", &bk, a("10.0.0.1:8080"));
        assert_eq!(
            v,
            format!("{:x}|{bk}", md5::compute("default-web-8010.0.0.1:8080"))
        );
        assert_eq!(endpoint(a("[fd00::1]:80")), "fd00::1:80");
        let (up, with) = decode(v.as_bytes(), bk.as_bytes()).unwrap();
        assert!(with);
        assert_eq!(
            up,
            Upstream::Hash(hash(b"default-web-80", a("10.0.0.1:8080")))
        );
        // Legacy: no backend key. Another backend's key: not ours.
        assert!(matches!(
            decode(&v.as_bytes()[..32], bk.as_bytes()),
            Some((Upstream::Hash(_), false))
        ));
        assert_eq!(
            decode(format!("{}|x", &v[..32]).as_bytes(), bk.as_bytes()),
            None
        );
        assert_eq!(
            decode(b"1700000000.123.1234|", bk.as_bytes()),
            None,
            "empty backend key"
        );
        let balanced = format!("1700000000.5.12.345|{bk}");
        assert_eq!(
            decode(balanced.as_bytes(), bk.as_bytes()),
            Some((Upstream::Balanced(b"1700000000.5.12.345"), true))
        );
        assert_eq!(decode(b"", bk.as_bytes()), None);
        assert_eq!(decode(b"a b", bk.as_bytes()), None);
    }

    #[test]
    fn the_ring_spreads_keys_and_is_stable() {
        let eps = [a("10.0.0.1:80"), a("10.0.0.2:80"), a("10.0.0.3:80")];
        let ring = Ring::new(&eps);
        assert_eq!(ring.points.len(), 3 * POINTS);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let k = format!("1700000000.{i}.{}", i * 7919 % 999_999);
            let ep = ring.find(k.as_bytes()).unwrap();
            counts[eps.iter().position(|e| *e == ep).unwrap()] += 1;
            assert_eq!(Ring::new(&eps).find(k.as_bytes()), Some(ep));
        }
        assert!(counts.iter().all(|c| *c > 600), "{counts:?}");
        assert_eq!(Ring::new(&[]).find(b"x"), None);
    }
}

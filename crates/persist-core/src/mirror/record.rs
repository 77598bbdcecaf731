//! How a binding is written in etcd: key `<prefix><profile>/<secret id>/<mac hex>`, value
//! `<ip>:<port> <created> <last_use>[ c<cluster tag, 8 hex digits>]` (ASCII, Unix seconds),
//! readable with `etcdctl get`; the cluster is there only when one was recorded (README
//! "Weighted clusters"), so Envoys of the version before read the others.
//! The key is named by the whole keyed hash of the client key under `mirror.secret`
//! ([`crate::table::secret`]; never the key itself, nor anything that can be reversed
//! without the secret), so that Envoys whose tables differ in size still agree on it.
//!
//! `<secret id>` is a public name of the secret (8 hex digits): Envoys configured with
//! different secrets, and the version before the keyed hash (whose keys were
//! `<prefix><profile>/<md5 hex>`), each keep to their own key range, so no Envoy reads or
//! watches a key it cannot use.

use crate::table::secret::{HashKey, SECRET_LEN};
use std::fmt::Write;
use std::net::SocketAddr;

/// A binding as mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub digest: [u8; 16],
    pub server: SocketAddr,
    pub created: u32,
    pub last_use: u32,
    /// The tag of the cluster the server answered from; 0: none recorded.
    pub cluster: u32,
}

impl Record {
    /// The binding as the local table keeps it, under `fingerprint`.
    pub fn entry(&self, fingerprint: u64) -> crate::table::entry::Entry {
        crate::table::entry::Entry {
            fingerprint,
            server: self.server,
            created: self.created,
            last_use: self.last_use,
            cluster: self.cluster,
        }
    }
}

/// The etcd key space of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    /// `<prefix><profile>/<secret id>/`
    base: Vec<u8>,
}

impl KeySpace {
    /// The key space of a profile mirrored with this `mirror.secret`.
    pub fn new(prefix: &str, profile: &str, secret: &[u8; SECRET_LEN]) -> KeySpace {
        let id = HashKey::new(secret).id();
        KeySpace {
            base: format!("{prefix}{profile}/{id}/").into_bytes(),
        }
    }

    /// The first key of the profile's range (etcd `key`).
    pub fn start(&self) -> &[u8] {
        &self.base
    }

    /// The end of the profile's range (etcd `range_end`, exclusive).
    pub fn end(&self) -> Vec<u8> {
        super::proto::prefix_end(&self.base)
    }

    pub fn key(&self, digest: &[u8; 16]) -> Vec<u8> {
        let mut k = String::with_capacity(self.base.len() + 32);
        k.push_str(&String::from_utf8_lossy(&self.base));
        for b in digest {
            let _ = write!(k, "{b:02x}");
        }
        k.into_bytes()
    }

    /// The digest named by an etcd key of this key space, `None` for any other key.
    pub fn digest(&self, key: &[u8]) -> Option<[u8; 16]> {
        let hex = key.strip_prefix(self.base.as_slice())?;
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let s = std::str::from_utf8(pair).ok()?;
            if !s
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            {
                return None;
            }
            *o = u8::from_str_radix(s, 16).ok()?;
        }
        Some(out)
    }

    /// Decodes one etcd key/value of this key space.
    pub fn record(&self, key: &[u8], value: &[u8]) -> Option<Record> {
        let digest = self.digest(key)?;
        let (server, created, last_use, cluster) = decode_value(value)?;
        Some(Record {
            digest,
            server,
            created,
            last_use,
            cluster,
        })
    }
}

pub fn encode_value(server: SocketAddr, created: u32, last_use: u32, cluster: u32) -> Vec<u8> {
    let mut v = format!("{server} {created} {last_use}");
    if cluster != 0 {
        let _ = write!(v, " c{cluster:08x}");
    }
    v.into_bytes()
}

/// Server, created, last use and cluster tag (0: none) of a value.
pub fn decode_value(value: &[u8]) -> Option<(SocketAddr, u32, u32, u32)> {
    if value.len() > 128 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let server = parts.next()?.parse().ok()?;
    let created = parts.next()?.parse().ok()?;
    let last_use = parts.next()?.parse().ok()?;
    let cluster = match parts.next() {
        None => 0,
        Some(tag) => {
            let hex = tag.strip_prefix('c').filter(|h| h.len() == 8)?;
            u32::from_str_radix(hex, 16).ok()?
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Some((server, created, last_use, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SECRET: [u8; SECRET_LEN] = [1; SECRET_LEN];

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_refused() {
        let ks = KeySpace::new("/persist/", "users", &SECRET);
        let id = HashKey::new(&SECRET).id();
        let d = HashKey::new(&SECRET).mac(b"alice");
        let key = ks.key(&d);
        let base = format!("/persist/users/{id}/");
        assert_eq!(
            String::from_utf8(key.clone()).unwrap(),
            format!("{base}{}", hex(&d))
        );
        assert_eq!(ks.digest(&key), Some(d));
        assert_eq!(ks.start(), base.as_bytes());
        assert_eq!(ks.end(), format!("/persist/users/{id}0").into_bytes());
        for bad in [
            "/persist/other/00000000000000000000000000000000".to_string(),
            format!("/persist/other/{id}/00000000000000000000000000000000"),
            format!("{base}0000"),
            format!("{base}0000000000000000000000000000000g"),
            format!("{base}0000000000000000000000000000000A"),
            format!("{base}+0000000000000000000000000000000"),
        ] {
            assert_eq!(ks.digest(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn key_names_are_a_mac_that_differs_across_secrets() {
        let one = KeySpace::new("/persist/", "users", &SECRET);
        let two = KeySpace::new("/persist/", "users", &[2; SECRET_LEN]);
        let mac1 = HashKey::new(&SECRET).mac(b"203.0.113.7");
        let mac2 = HashKey::new(&[2; SECRET_LEN]).mac(b"203.0.113.7");
        assert_ne!(mac1, mac2);
        let (k1, k2) = (one.key(&mac1), two.key(&mac2));
        assert_ne!(k1, k2);
        // Neither names the key by its plain MD5 (what the version before wrote, and what
        // anyone can compute for every IPv4 address in minutes).
        let md5 = format!("{:x}", md5::compute(b"203.0.113.7"));
        for k in [&k1, &k2] {
            assert!(!String::from_utf8_lossy(k).contains(&md5));
        }
        // Each secret keeps to its own range: the other's keys are outside it.
        assert!(k2.as_slice() < one.start() || k2 >= one.end());
        assert!(k1.as_slice() < two.start() || k1 >= two.end());
        assert_eq!(one.digest(&k2), None);
    }

    #[test]
    fn keys_of_the_md5_version_are_outside_the_range() {
        // The version before the keyed hash wrote `<prefix><profile>/<md5 hex>`: those
        // keys are neither in the range a new Envoy reads and watches nor decoded by it,
        // and they lapse in etcd with their leases.
        let ks = KeySpace::new("/persist/", "users", &SECRET);
        for user in ["alice", "bob", "203.0.113.7", ""] {
            let old = format!("/persist/users/{:x}", md5::compute(user.as_bytes())).into_bytes();
            assert!(
                old.as_slice() < ks.start() || old >= ks.end(),
                "{}",
                String::from_utf8_lossy(&old)
            );
            assert_eq!(ks.record(&old, b"127.0.0.1:8081 1 2"), None);
        }
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        for server in ["127.0.0.1:8081", "[2001:db8::1]:443"] {
            let s: SocketAddr = server.parse().unwrap();
            for cluster in [0, 1, 0xdead_beef] {
                let v = encode_value(s, 1_700_000_000, 1_700_000_050, cluster);
                assert_eq!(
                    decode_value(&v),
                    Some((s, 1_700_000_000, 1_700_000_050, cluster))
                );
            }
        }
        assert_eq!(
            encode_value("10.0.0.1:80".parse().unwrap(), 1, 2, 0),
            b"10.0.0.1:80 1 2"
        );
        assert_eq!(
            encode_value("10.0.0.1:80".parse().unwrap(), 1, 2, 0xab),
            b"10.0.0.1:80 1 2 c000000ab"
        );
        for bad in [
            &b""[..],
            b"10.0.0.1:80",
            b"10.0.0.1:80 1",
            b"10.0.0.1:80 1 2 3",
            b"10.0.0.1:80 1 2 c1",
            b"10.0.0.1:80 1 2 c000000zz",
            b"10.0.0.1:80 1 2 c00000001 x",
            b"10.0.0.1 1 2",
            b"10.0.0.1:80 -1 2",
            b"\xff\xfe 1 2",
        ] {
            assert_eq!(decode_value(bad), None);
        }
    }
}

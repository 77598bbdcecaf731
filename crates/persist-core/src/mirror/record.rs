//! How a binding is written in etcd: key `<prefix><profile>/<md5 hex>`, value
//! `<ip>:<port> <created> <last_use>` (ASCII, Unix seconds), readable with `etcdctl get`.
//! The key is named by the whole MD5 of the client key (never the key itself), so that
//! Envoys whose tables differ in size still agree on it.

use std::fmt::Write;
use std::net::SocketAddr;

/// A binding as mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub digest: [u8; 16],
    pub server: SocketAddr,
    pub created: u32,
    pub last_use: u32,
}

/// The etcd key space of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    /// `<prefix><profile>/`
    base: Vec<u8>,
}

impl KeySpace {
    pub fn new(prefix: &str, profile: &str) -> KeySpace {
        KeySpace {
            base: format!("{prefix}{profile}/").into_bytes(),
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
        let (server, created, last_use) = decode_value(value)?;
        Some(Record {
            digest,
            server,
            created,
            last_use,
        })
    }
}

pub fn encode_value(server: SocketAddr, created: u32, last_use: u32) -> Vec<u8> {
    format!("{server} {created} {last_use}").into_bytes()
}

pub fn decode_value(value: &[u8]) -> Option<(SocketAddr, u32, u32)> {
    if value.len() > 128 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let server = parts.next()?.parse().ok()?;
    let created = parts.next()?.parse().ok()?;
    let last_use = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((server, created, last_use))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_refused() {
        let ks = KeySpace::new("/persist/", "users");
        let d = md5::compute(b"alice").0;
        let key = ks.key(&d);
        assert_eq!(
            String::from_utf8(key.clone()).unwrap(),
            format!("/persist/users/{:x}", md5::compute(b"alice"))
        );
        assert_eq!(ks.digest(&key), Some(d));
        assert_eq!(ks.start(), b"/persist/users/");
        assert_eq!(ks.end(), b"/persist/users0");
        for bad in [
            &b"/persist/other/00000000000000000000000000000000"[..],
            b"/persist/users/0000",
            b"/persist/users/0000000000000000000000000000000g",
            b"/persist/users/0000000000000000000000000000000A",
            b"/persist/users/+0000000000000000000000000000000",
        ] {
            assert_eq!(ks.digest(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        for server in ["127.0.0.1:8081", "[2001:db8::1]:443"] {
            let s: SocketAddr = server.parse().unwrap();
            let v = encode_value(s, 1_700_000_000, 1_700_000_050);
            assert_eq!(decode_value(&v), Some((s, 1_700_000_000, 1_700_000_050)));
        }
        assert_eq!(
            encode_value("10.0.0.1:80".parse().unwrap(), 1, 2),
            b"10.0.0.1:80 1 2"
        );
        for bad in [
            &b""[..],
            b"10.0.0.1:80",
            b"10.0.0.1:80 1",
            b"10.0.0.1:80 1 2 3",
            b"10.0.0.1 1 2",
            b"10.0.0.1:80 -1 2",
            b"\xff\xfe 1 2",
        ] {
            assert_eq!(decode_value(bad), None);
        }
    }
}

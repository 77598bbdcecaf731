//! The keyed hash of client keys (README "Keyed hashing"): where a key lives in the table
//! and how the mirror names it in etcd.
//!
//! A client key is hashed with SipHash-2-4 (128-bit output) under a secret of the profile,
//! so that nobody without the secret can compute which slot a key lands in (no aiming
//! keys at another client's slot to evict it) nor recognise a key from its stored hash (no
//! reversing an etcd key name by enumerating client addresses or user ids).
//!
//! The secret is 32 bytes:
//! - without `mirror`: generated per Envoy and shared by its workers through shared data
//!   (`persist.<profile>.hashkey`, first writer wins, as the generated sealing key): a
//!   reload that keeps the profile name keeps the secret, and so the table's entries;
//! - with `mirror`: `mirror.secret`, configured alike on every Envoy of the profile, since
//!   they must agree on every key's name in etcd.
//!
//! The SipHash key is the SipHash-2-4-128 of the secret's second half under its first
//! half (every bit of the secret counts; no two halves cancel out). Client keys are hashed after a
//! domain byte 0; the secret's public id (which names the secret in etcd key names, see
//! [`crate::mirror::record`]) is the hash of a domain byte 1 and a fixed label, so no
//! client key can produce it.

use crate::config::Config;
use crate::store::{self, SharedStore};
use siphasher::sip128::{Hasher128, SipHasher24};
use std::fmt::Write as _;
use std::hash::Hasher;

/// Bytes of a profile secret (generated, or `mirror.secret`).
pub const SECRET_LEN: usize = 32;

const KEY_DOMAIN: u8 = 0;
const ID_DOMAIN: u8 = 1;
const ID_LABEL: &[u8] = b"envoy-persist secret id";

/// The key of the keyed hash, prepared from a profile secret.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashKey({})", self.id())
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    for (o, i) in a.iter_mut().zip(b) {
        *o = *i;
    }
    u64::from_le_bytes(a)
}

impl HashKey {
    pub fn new(secret: &[u8; SECRET_LEN]) -> HashKey {
        let (lo, hi) = secret.split_at(SECRET_LEN / 2);
        let (a, b) = lo.split_at(8);
        let k = SipHasher24::new_with_keys(le64(a), le64(b))
            .hash(hi)
            .as_bytes();
        let (c, d) = k.split_at(8);
        HashKey {
            k0: le64(c),
            k1: le64(d),
        }
    }

    fn hash(&self, domain: u8, data: &[u8]) -> [u8; 16] {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write(&[domain]);
        h.write(data);
        h.finish128().as_bytes()
    }

    /// The 128-bit MAC of a client key: 64 bits choose its slot, 64 bits are its
    /// fingerprint, and the whole names it in etcd.
    pub fn mac(&self, key: &[u8]) -> [u8; 16] {
        self.hash(KEY_DOMAIN, key)
    }

    /// A public name of the secret (8 hex digits): Envoys with different secrets keep
    /// their etcd keys apart. It reveals nothing of the secret or of any client key.
    pub fn id(&self) -> String {
        let mut out = String::with_capacity(8);
        for b in self.hash(ID_DOMAIN, ID_LABEL).iter().take(4) {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

/// The shared-data key of a profile's generated secret.
pub fn secret_key(profile: &str) -> String {
    format!("persist.{profile}.hashkey")
}

/// The secret of a profile without `mirror`: the one already in shared data, or a fresh
/// one drawn with `random` and stored there — once, even when workers race; all of them
/// end up with the same secret.
pub fn shared_secret(
    store: &dyn SharedStore,
    profile: &str,
    random: impl FnOnce(&mut [u8]) -> bool,
) -> Result<[u8; SECRET_LEN], String> {
    let key = secret_key(profile);
    // A secret already shared is used without drawing a new one.
    if let Ok(Some((v, _))) = store.get(&key) {
        if let Ok(s) = <[u8; SECRET_LEN]>::try_from(v.as_slice()) {
            return Ok(s);
        }
    }
    let mut candidate = [0u8; SECRET_LEN];
    if !random(&mut candidate) {
        return Err("table: no randomness to generate the hash secret".into());
    }
    let stored = store::get_or_insert(store, &key, &candidate, |v| v.len() == SECRET_LEN)
        .map_err(|e| format!("table: could not share the generated hash secret ({e:?})"))?;
    <[u8; SECRET_LEN]>::try_from(stored.as_slice())
        .map_err(|_| "table: the shared hash secret has the wrong size".to_string())
}

/// The hash key of a profile that keeps a table: `mirror.secret` when mirrored, otherwise
/// the generated [`shared_secret`].
pub fn hash_key(
    config: &Config,
    store: &dyn SharedStore,
    random: impl FnOnce(&mut [u8]) -> bool,
) -> Result<HashKey, String> {
    match &config.mirror {
        Some(m) => Ok(HashKey::new(&m.secret)),
        None => shared_secret(store, &config.name, random).map(|s| HashKey::new(&s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn siphash_reference_vector() {
        // The SipHash-2-4 128-bit reference vector for key 00..0f and the empty message,
        // which checks the byte order the mirror's key names (and the e2e tests) rely on.
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let h = SipHasher24::new_with_key(&key).hash(b"").as_bytes();
        assert_eq!(
            h,
            [
                0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55,
                0x02, 0x93
            ]
        );
        // The secret's first half keys the hash of its second half: the SipHash key.
        let mut secret = [0u8; SECRET_LEN];
        secret[..16].copy_from_slice(&key);
        let k = HashKey::new(&secret);
        let mut expect =
            SipHasher24::new_with_key(&SipHasher24::new_with_key(&key).hash(&[0; 16]).as_bytes());
        expect.write(&[0]);
        expect.write(b"alice");
        assert_eq!(k.mac(b"alice"), expect.finish128().as_bytes());
    }

    #[test]
    fn different_secrets_different_macs_and_ids() {
        let a = HashKey::new(&[1; SECRET_LEN]);
        let b = HashKey::new(&[2; SECRET_LEN]);
        assert_ne!(a.mac(b"alice"), b.mac(b"alice"));
        assert_eq!(
            a.mac(b"alice"),
            HashKey::new(&[1; SECRET_LEN]).mac(b"alice")
        );
        assert_ne!(a.mac(b"alice"), a.mac(b"alicf"));
        assert_ne!(a.mac(b""), a.mac(b"\0"));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 8);
        assert!(!format!("{a:?}").contains("0101"), "{a:?}");
    }

    #[test]
    fn generated_secret_shared_by_workers_and_kept() {
        let store = MemoryStore::default();
        let first = shared_secret(&store, "p", |b| {
            b.fill(7);
            true
        })
        .unwrap();
        assert_eq!(first, [7; SECRET_LEN]);
        // Another worker (or a reload keeping the name) draws another candidate: the
        // shared one wins; randomness is not even asked for.
        let second = shared_secret(&store, "p", |_| panic!("no draw needed")).unwrap();
        assert_eq!(second, first);
        // Another profile gets its own.
        let other = shared_secret(&store, "q", |b| {
            b.fill(9);
            true
        })
        .unwrap();
        assert_eq!(other, [9; SECRET_LEN]);
        // A damaged value is replaced; no randomness is an error, not a weak secret.
        store.set(&secret_key("r"), b"short", 0).unwrap();
        assert!(shared_secret(&store, "r", |_| false).is_err());
        let r = shared_secret(&store, "r", |b| {
            b.fill(3);
            true
        })
        .unwrap();
        assert_eq!(r, [3; SECRET_LEN]);
    }

    #[test]
    fn mirrored_profiles_use_the_configured_secret() {
        let store = MemoryStore::default();
        let secret = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let json =
            format!(r#"{{"type":"client_ip","mirror":{{"cluster":"etcd","secret":"{secret}"}}}}"#);
        let config = Config::parse(json.as_bytes()).unwrap();
        let k = hash_key(&config, &store, |_| panic!("not generated")).unwrap();
        assert_eq!(k, HashKey::new(&[1; SECRET_LEN]));
        assert_eq!(store.get(&secret_key(&config.name)).unwrap(), None);
        let local = Config::parse(br#"{"type":"client_ip"}"#).unwrap();
        let g = hash_key(&local, &store, |b| {
            b.fill(5);
            true
        })
        .unwrap();
        assert_eq!(g, HashKey::new(&[5; SECRET_LEN]));
    }
}

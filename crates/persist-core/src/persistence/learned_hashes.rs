//! NGINX-format cookies carry only MD5(`ip:port`). The filter learns hash → server from the
//! servers that answer: each is published once in shared data (`persist.<profile>.nginx.<hex>`)
//! and cached per worker, so only an unknown hash costs a shared-data read.

use crate::codec::{ingress_nginx, nginx};
use crate::store::{SharedStore, StoreError};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Cached hashes per worker; bounded because only answering servers are ever stored.
pub const MAX_CACHED: usize = 4096;

#[derive(Debug, Default)]
pub struct LearnedHashes {
    prefix: String,
    /// ingress-nginx's salt (its backend name); `None`: NGINX Plus's plain MD5.
    salt: Option<Vec<u8>>,
    by_hash: HashMap<[u8; 16], SocketAddr>,
    published: HashSet<SocketAddr>,
}

impl LearnedHashes {
    pub fn new(profile: &str) -> Self {
        LearnedHashes {
            prefix: format!("persist.{profile}.nginx."),
            ..Default::default()
        }
    }

    /// ingress-nginx's `persistent` keys: MD5 of the salt and the endpoint.
    pub fn salted(profile: &str, salt: &[u8]) -> Self {
        LearnedHashes {
            prefix: format!("persist.{profile}.ingress."),
            salt: Some(salt.to_vec()),
            ..Default::default()
        }
    }

    fn hash_of(&self, addr: SocketAddr) -> [u8; 16] {
        match &self.salt {
            Some(salt) => ingress_nginx::hash(salt, addr),
            None => nginx::hash(addr).0,
        }
    }

    fn key(&self, hash: &[u8; 16]) -> String {
        let mut k = self.prefix.clone();
        for b in hash {
            k.push_str(&format!("{b:02x}"));
        }
        k
    }

    /// The server whose hash this is, if one has answered through this Envoy.
    pub fn resolve(
        &mut self,
        store: &dyn SharedStore,
        hash: &[u8; 16],
    ) -> Result<Option<SocketAddr>, StoreError> {
        if let Some(a) = self.by_hash.get(hash) {
            return Ok(Some(*a));
        }
        let Some((raw, _)) = store.get(&self.key(hash))? else {
            return Ok(None);
        };
        let Some(addr) = crate::addr::parse(&raw) else {
            return Ok(None);
        };
        // Only trust an entry whose hash really matches its address.
        if self.hash_of(addr) != *hash {
            return Ok(None);
        }
        self.remember(*hash, addr);
        Ok(Some(addr))
    }

    /// Records that `addr` answered; writes shared data only the first time per worker.
    /// Whether this worker already published `addr` (learning it again writes nothing).
    pub fn published(&self, addr: SocketAddr) -> bool {
        self.published.contains(&addr)
    }

    pub fn learn(&mut self, store: &dyn SharedStore, addr: SocketAddr) -> Result<(), StoreError> {
        if self.published.contains(&addr) {
            return Ok(());
        }
        let hash = self.hash_of(addr);
        let key = self.key(&hash);
        let known =
            matches!(store.get(&key)?, Some((raw, _)) if crate::addr::parse(&raw) == Some(addr));
        if !known {
            store.set(&key, addr.to_string().as_bytes(), 0)?;
        }
        if self.published.len() < MAX_CACHED {
            self.published.insert(addr);
        }
        self.remember(hash, addr);
        Ok(())
    }

    fn remember(&mut self, hash: [u8; 16], addr: SocketAddr) {
        if self.by_hash.len() < MAX_CACHED {
            self.by_hash.insert(hash, addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn learned_by_one_worker_resolved_by_another() {
        let store = MemoryStore::default();
        let a: SocketAddr = "127.0.0.1:8082".parse().unwrap();
        let h = nginx::hash(a).0;
        let mut w1 = LearnedHashes::new("p");
        let mut w2 = LearnedHashes::new("p");
        assert_eq!(w2.resolve(&store, &h), Ok(None));
        w1.learn(&store, a).unwrap();
        assert_eq!(w2.resolve(&store, &h), Ok(Some(a)));
        // A forged entry (hash not matching its address) is ignored.
        let forged = [7u8; 16];
        store.set(&w1.key(&forged), b"10.0.0.9:80", 0).unwrap();
        assert_eq!(w2.resolve(&store, &forged), Ok(None));
        // Other profiles do not see it.
        assert_eq!(LearnedHashes::new("q").resolve(&store, &h), Ok(None));
    }
}

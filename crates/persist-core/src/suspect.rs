//! Suspect servers (README "How it works", `suspect_for`): a persisted server that did not answer is not
//! named again for a while, by any worker. The list lives in one shared-data key as text
//! lines `<until unix ms> <ip:port>`; each worker keeps a copy, re-read on its tick when the
//! CAS token moved, so the request path reads only local memory.

use crate::store::{SharedStore, StoreError};
use std::net::SocketAddr;

/// More than this many simultaneously suspect servers: the ones closest to release go first.
pub const MAX_SUSPECTS: usize = 256;
const MAX_RETRIES: usize = 8;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SuspectList {
    entries: Vec<(SocketAddr, u64)>,
    cas: u32,
}

fn decode(raw: &[u8]) -> Vec<(SocketAddr, u64)> {
    raw.split(|&c| c == b'\n')
        .filter_map(|line| {
            let sp = line.iter().position(|&c| c == b' ')?;
            let (until, addr) = line.split_at_checked(sp)?;
            let until: u64 = std::str::from_utf8(until).ok()?.parse().ok()?;
            Some((crate::addr::parse(addr.get(1..)?)?, until))
        })
        .take(MAX_SUSPECTS)
        .collect()
}

fn encode(entries: &[(SocketAddr, u64)]) -> Vec<u8> {
    let mut out = String::new();
    for (addr, until) in entries {
        out.push_str(&format!("{until} {addr}\n"));
    }
    out.into_bytes()
}

impl SuspectList {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_suspect(&self, addr: SocketAddr, now_ms: u64) -> bool {
        self.entries
            .iter()
            .any(|(a, until)| *a == addr && *until > now_ms)
    }

    /// Drops expired entries from the local copy.
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|(_, until)| *until > now_ms);
    }

    /// Re-reads the shared list if another worker changed it.
    pub fn refresh(
        &mut self,
        store: &dyn SharedStore,
        key: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if let Some((raw, cas)) = store.get(key)? {
            if cas != self.cas {
                self.entries = decode(&raw);
                self.cas = cas;
            }
        }
        self.prune(now_ms);
        Ok(())
    }

    /// Marks `addr` suspect until `until_ms`, locally at once and in the shared list.
    pub fn mark(
        &mut self,
        store: &dyn SharedStore,
        key: &str,
        addr: SocketAddr,
        until_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        upsert(&mut self.entries, addr, until_ms, now_ms);
        for _ in 0..MAX_RETRIES {
            let (mut shared, cas) = match store.get(key)? {
                Some((raw, cas)) => (decode(&raw), cas),
                None => (Vec::new(), 0),
            };
            upsert(&mut shared, addr, until_ms, now_ms);
            let cas_to_use = if cas == 0 {
                crate::store::INSERT_ONLY
            } else {
                cas
            };
            match store.set(key, &encode(&shared), cas_to_use) {
                Ok(()) => {
                    self.entries = shared;
                    // Our own write moved the token; the next refresh re-reads it once.
                    return Ok(());
                }
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }
}

fn upsert(entries: &mut Vec<(SocketAddr, u64)>, addr: SocketAddr, until_ms: u64, now_ms: u64) {
    entries.retain(|(a, until)| *a != addr && *until > now_ms);
    entries.push((addr, until_ms));
    if entries.len() > MAX_SUSPECTS {
        entries.sort_by_key(|(_, until)| std::cmp::Reverse(*until));
        entries.truncate(MAX_SUSPECTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn shared_between_workers() {
        let store = MemoryStore::default();
        let mut w1 = SuspectList::default();
        let mut w2 = SuspectList::default();
        w1.mark(&store, "s", a("10.0.0.1:80"), 10_000, 1_000)
            .unwrap();
        assert!(w1.is_suspect(a("10.0.0.1:80"), 5_000));
        assert!(!w2.is_suspect(a("10.0.0.1:80"), 5_000));
        w2.refresh(&store, "s", 5_000).unwrap();
        assert!(w2.is_suspect(a("10.0.0.1:80"), 5_000));
        assert!(!w2.is_suspect(a("10.0.0.2:80"), 5_000));
        w2.mark(&store, "s", a("[::1]:81"), 12_000, 6_000).unwrap();
        w1.refresh(&store, "s", 6_000).unwrap();
        assert!(w1.is_suspect(a("[::1]:81"), 6_000));
        assert!(w1.is_suspect(a("10.0.0.1:80"), 6_000));
        // Expiry.
        assert!(!w1.is_suspect(a("10.0.0.1:80"), 10_000));
        w1.refresh(&store, "s", 11_000).unwrap();
        assert_eq!(w1.entries.len(), 1);
    }

    #[test]
    fn bounded_and_tolerant() {
        let store = MemoryStore::default();
        let mut w = SuspectList::default();
        for i in 0..(MAX_SUSPECTS as u64 + 50) {
            let addr = SocketAddr::new([10, 0, (i / 256) as u8, (i % 256) as u8].into(), 80);
            w.mark(&store, "s", addr, 100_000 + i, 0).unwrap();
        }
        assert_eq!(w.entries.len(), MAX_SUSPECTS);
        store
            .set("s", b"garbage\n\xff\xfe 1\n5 notanaddr\n", 0)
            .unwrap();
        w.refresh(&store, "s", 0).unwrap();
        assert!(w.is_empty());
    }
}

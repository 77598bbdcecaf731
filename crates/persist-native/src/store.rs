//! The process-wide shared data of the native module: what proxy-wasm shared data is to the
//! wasm module (one map shared by every worker of an Envoy), with exactly its semantics
//! (`persist_core::store`): `cas == 0` writes unconditionally, a non-zero `cas` must match the
//! entry's current token, a missing key is inserted whatever `cas` says; no delete, listing or
//! TTL. Tokens come from one process-wide counter starting at 1 and never take the values 0
//! or [`INSERT_ONLY`], so `set(key, v, INSERT_ONLY)` stays an atomic "insert if absent".
//!
//! The map is sharded by key hash so that workers touching different keys do not contend; a
//! token check and the write it guards happen under one shard lock.

use persist_core::store::{write_with_cas, SharedStore, StoreError, INSERT_ONLY};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

const SHARDS: usize = 16;

/// FNV-1a, for the shard and the map of a key. The keys are the module's own (a table's
/// slot keys — a keyed hash of the client's key picks the slot — secrets, the suspect
/// list): a bounded set no client can grow, so no keyed hash is needed against collisions;
/// SipHash cost twice per lookup (shard, then map) more than the rest of the lookup.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    /// With a final mix: FNV's high bits barely depend on the last bytes (a slot number),
    /// and both the shard and the map's control bytes come from the high bits.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

type Map = HashMap<String, (Vec<u8>, u32), BuildHasherDefault<Fnv>>;
type Shard = Mutex<Map>;

/// Shared data with the host's CAS semantics, safe to use from every worker thread.
#[derive(Debug)]
pub struct NativeStore {
    shards: Vec<Shard>,
    next_cas: AtomicU32,
}

impl Default for NativeStore {
    fn default() -> Self {
        NativeStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            next_cas: AtomicU32::new(0),
        }
    }
}

impl NativeStore {
    /// The one store of this Envoy process.
    pub fn global() -> &'static NativeStore {
        static STORE: OnceLock<NativeStore> = OnceLock::new();
        STORE.get_or_init(NativeStore::default)
    }

    fn shard(&self, key: &str) -> Option<MutexGuard<'_, Map>> {
        let mut h = Fnv::default();
        key.hash(&mut h);
        let i = (h.finish() >> 60) as usize % SHARDS;
        // A panic while a lock was held (caught at the module boundary) leaves the map
        // consistent: every write is a single insert. Keep serving it.
        self.shards
            .get(i)
            .map(|s| s.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn next_cas(&self) -> u32 {
        loop {
            let c = self
                .next_cas
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if c != 0 && c != INSERT_ONLY {
                return c;
            }
        }
    }

    /// Number of keys (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedStore for NativeStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let shard = self.shard(key).ok_or(StoreError::Host)?;
        Ok(shard.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut shard = self.shard(key).ok_or(StoreError::Host)?;
        write_with_cas(&mut shard, key, value, cas, || self.next_cas())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persist_core::store::{get_or_insert, MemoryStore};
    use std::sync::Arc;

    /// The scenario `persist_core::store`'s own test runs on MemoryStore, on any store.
    fn host_semantics(s: &dyn SharedStore) {
        assert_eq!(s.get("k"), Ok(None));
        s.set("k", b"a", 12345).unwrap(); // missing key: inserted whatever the cas
        let (v, cas) = s.get("k").unwrap().unwrap();
        assert_eq!(v, b"a");
        assert_eq!(s.set("k", b"b", cas + 1), Err(StoreError::CasMismatch));
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", INSERT_ONLY), Err(StoreError::CasMismatch));
        s.set("k", b"c", 0).unwrap();
        assert_eq!(s.get("k").unwrap().unwrap().0, b"c");
        // A token is spent once written over.
        let (_, old) = s.get("k").unwrap().unwrap();
        s.set("k", b"d", old).unwrap();
        assert_eq!(s.set("k", b"e", old), Err(StoreError::CasMismatch));
    }

    #[test]
    fn same_semantics_as_memory_store() {
        host_semantics(&MemoryStore::default());
        host_semantics(&NativeStore::default());
    }

    /// A deterministic mixed sequence of gets and sets (stale, current, zero, insert-only
    /// tokens) gives the same outcomes and values on both stores.
    #[test]
    fn differential_against_memory_store() {
        let mem = MemoryStore::default();
        let nat = NativeStore::default();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Per key, the last token each store handed out and one stale token.
        let mut tokens: HashMap<String, [(u32, u32); 2]> = HashMap::new();
        for step in 0..20_000u32 {
            let key = format!("k{}", rnd() % 7);
            let value = step.to_le_bytes();
            let (m, n) = match mem.get(&key).unwrap().zip(nat.get(&key).unwrap()) {
                Some(((mv, mc), (nv, nc))) => {
                    assert_eq!(mv, nv, "values differ at step {step}");
                    let t = tokens.entry(key.clone()).or_insert([(mc, nc); 2]);
                    t[1] = t[0];
                    t[0] = (mc, nc);
                    (mc, nc)
                }
                None => {
                    assert_eq!(mem.get(&key).unwrap(), None);
                    assert_eq!(nat.get(&key).unwrap(), None);
                    (0, 0)
                }
            };
            let (mc, nc) = match rnd() % 4 {
                0 => (0, 0),
                1 => (INSERT_ONLY, INSERT_ONLY),
                2 => tokens.get(&key).map(|t| t[1]).unwrap_or((m, n)),
                _ => (m, n),
            };
            assert_eq!(
                mem.set(&key, &value, mc),
                nat.set(&key, &value, nc),
                "set outcome differs at step {step}"
            );
        }
    }

    /// Workers racing to insert one key all end up with the first value written.
    #[test]
    fn first_writer_wins_across_threads() {
        let s = Arc::new(NativeStore::default());
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    get_or_insert(&*s, "secret", &[i; 32], |v| v.len() == 32).unwrap()
                })
            })
            .collect();
        let got: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(got.iter().all(|v| v == &got[0]), "{got:?}");
        assert_eq!(s.get("secret").unwrap().unwrap().0, got[0]);
    }

    /// Concurrent CAS increments lose no update.
    #[test]
    fn cas_counter_under_contention() {
        let s = Arc::new(NativeStore::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        loop {
                            let (n, cas) = match s.get("n").unwrap() {
                                Some((v, c)) => (u64::from_le_bytes(v.try_into().unwrap()), c),
                                None => (0, INSERT_ONLY),
                            };
                            if s.set("n", &(n + 1).to_le_bytes(), cas).is_ok() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let v = s.get("n").unwrap().unwrap().0;
        assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 8000);
    }

    /// Slot keys that differ only in their last digits spread over every shard.
    #[test]
    fn slot_keys_spread_over_the_shards() {
        let s = NativeStore::default();
        for slot in 0..1600 {
            s.set(&format!("persist.t.users.{slot}"), b"x", 0).unwrap();
        }
        for (i, shard) in s.shards.iter().enumerate() {
            let n = shard.lock().unwrap().len();
            assert!((50..=150).contains(&n), "shard {i}: {n} of 1600 keys");
        }
    }

    #[test]
    fn tokens_skip_zero_and_insert_only() {
        let s = NativeStore::default();
        s.next_cas.store(INSERT_ONLY - 2, Ordering::Relaxed);
        let seen: Vec<u32> = (0..4).map(|_| s.next_cas()).collect();
        assert_eq!(seen, vec![INSERT_ONLY - 1, 1, 2, 3]);
    }
}

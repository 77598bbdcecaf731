//! The shared-data seam. proxy-wasm shared data (one map per `vm_id`, shared by every worker
//! of an Envoy) offers only `get` and `set` with compare-and-swap, with these semantics
//! (proxy-wasm-cpp-host): `cas == 0` writes unconditionally; a non-zero `cas` must match the
//! entry's current one; a missing key is inserted whatever `cas` says; there is no delete,
//! listing, TTL or size limit. [`MemoryStore`] implements exactly that for native tests.

use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the key since it was read.
    CasMismatch,
    /// The host refused the call.
    Host,
}

/// Host shared data, as the logic sees it.
pub trait SharedStore {
    /// The value and its CAS token, or `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if `cas` is 0 or matches (or the key is missing).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// A CAS token no live entry is expected to carry: the host hands tokens out from a global
/// counter starting at 1, so `set(key, v, INSERT_ONLY)` inserts a missing key and fails with
/// [`StoreError::CasMismatch`] on an existing one — an atomic "insert if absent".
pub const INSERT_ONLY: u32 = u32::MAX;

/// Returns the value stored at `key` if it is `valid`, otherwise stores `candidate` — once,
/// even when several workers race: all of them end up with the same value.
pub fn get_or_insert(
    store: &dyn SharedStore,
    key: &str,
    candidate: &[u8],
    valid: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, StoreError> {
    for _ in 0..8 {
        match store.get(key)? {
            Some((v, _)) if valid(&v) => return Ok(v),
            Some((_, cas)) => match store.set(key, candidate, cas) {
                Ok(()) => return Ok(candidate.to_vec()),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            },
            None => match store.set(key, candidate, INSERT_ONLY) {
                Ok(()) => return Ok(candidate.to_vec()),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            },
        }
    }
    Err(StoreError::CasMismatch)
}

/// In-memory shared data with the host's semantics, for native tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl MemoryStore {
    fn next_cas(&self) -> u32 {
        let mut c = self.next_cas.borrow_mut();
        *c = c.wrapping_add(1).max(1);
        *c
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        write_with_cas(&mut self.map.borrow_mut(), key, value, cas, || {
            self.next_cas()
        })
    }
}

/// The write rule of Envoy's shared data on one map of `key -> (value, token)`, for every
/// store that keeps such a map: a missing key is written whatever `cas`; an existing one
/// only when `cas` is 0 or its current token. The value written gets `next_token()`.
pub fn write_with_cas<S: std::hash::BuildHasher>(
    map: &mut HashMap<String, (Vec<u8>, u32), S>,
    key: &str,
    value: &[u8],
    cas: u32,
    next_token: impl FnOnce() -> u32,
) -> Result<(), StoreError> {
    if let Some((_, current)) = map.get(key) {
        if cas != 0 && cas != *current {
            return Err(StoreError::CasMismatch);
        }
    }
    map.insert(key.to_string(), (value.to_vec(), next_token()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn host_semantics() {
        let s = MemoryStore::default();
        assert_eq!(s.get("k"), Ok(None));
        s.set("k", b"a", 12345).unwrap(); // missing key: inserted whatever the cas
        let (v, cas) = s.get("k").unwrap().unwrap();
        assert_eq!(v, b"a");
        assert_eq!(s.set("k", b"b", cas + 1), Err(StoreError::CasMismatch));
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", INSERT_ONLY), Err(StoreError::CasMismatch));
        s.set("k", b"c", 0).unwrap();
        assert_eq!(s.get("k").unwrap().unwrap().0, b"c");
    }

    #[test]
    fn first_writer_wins() {
        let s = MemoryStore::default();
        let a = get_or_insert(&s, "key", &[1; 32], |v| v.len() == 32).unwrap();
        let b = get_or_insert(&s, "key", &[2; 32], |v| v.len() == 32).unwrap();
        assert_eq!(a, vec![1; 32]);
        assert_eq!(b, a);
        // An invalid stored value is replaced.
        s.set("bad", b"short", 0).unwrap();
        assert_eq!(
            get_or_insert(&s, "bad", &[3; 32], |v| v.len() == 32).unwrap(),
            vec![3; 32]
        );
    }
}

//! Background expiry: workers take turns sweeping ranges of slots. The cursor key holds
//! `<next slot> <unix ms of the last claim>`; on its tick a worker claims the next range
//! by CAS when no claim was made in the last second, so one range is swept by exactly one
//! worker and a pass over the whole table takes `clamp(timeout/4, 1 s, 60 s)`.

use super::Table;
use crate::store::{SharedStore, StoreError, INSERT_ONLY};
use std::ops::Range;

/// Time between two claims, whichever worker makes them.
pub const CLAIM_EVERY_MS: u64 = 1_000;

fn parse(raw: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (next, last) = text.split_once(' ')?;
    Some((next.parse().ok()?, last.parse().ok()?))
}

impl Table {
    /// Slots swept per claim, so that a full pass takes `clamp(timeout/4, 1 s, 60 s)`.
    pub fn sweep_batch(&self) -> u32 {
        let pass_s = self.timeouts.refresh_after_s().clamp(1, 60);
        let per = u64::from(self.slots()).div_ceil(pass_s);
        u32::try_from(per).unwrap_or(u32::MAX).max(1)
    }

    /// Claims the next range of slots to sweep, if it is this worker's turn. The range may
    /// wrap: its ends are taken modulo the slot count.
    pub fn claim_sweep(
        &self,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Result<Option<Range<u64>>, StoreError> {
        let key = self.sweep_key();
        let (next, cas) = match store.get(&key)? {
            Some((raw, cas)) => match parse(&raw) {
                Some((_, last)) if now_ms.saturating_sub(last) < CLAIM_EVERY_MS => return Ok(None),
                Some((next, _)) => (next, cas),
                None => (0, cas),
            },
            None => (0, INSERT_ONLY),
        };
        let start = u64::from(next % self.slots().max(1));
        let end = start + u64::from(self.sweep_batch());
        let after = u32::try_from(end % u64::from(self.slots().max(1))).unwrap_or(0);
        match store.set(&key, format!("{after} {now_ms}").as_bytes(), cas) {
            Ok(()) => Ok(Some(start..end)),
            Err(StoreError::CasMismatch) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Claims a range if due and sweeps it: returns the number of lapsed entries dropped.
    pub fn sweep(&self, store: &dyn SharedStore, now_ms: u64) -> Result<u32, StoreError> {
        let Some(range) = self.claim_sweep(store, now_ms)? else {
            return Ok(0);
        };
        let now_s = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
        let slots = u64::from(self.slots().max(1));
        let mut dropped = 0u32;
        for i in range {
            let slot = u32::try_from(i % slots).unwrap_or(0);
            dropped = dropped.saturating_add(self.sweep_slot(store, slot, now_s)?);
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::Timeouts;
    use super::super::slot::Expect;
    use super::*;
    use crate::store::MemoryStore;
    use std::time::Duration;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn one_claim_per_second_and_the_cursor_wraps() {
        let store = MemoryStore::default();
        // 1000 entries → 63 slots; timeout 8 s → a pass in 2 s → 32 slots per claim.
        let t = Table::new(
            "w",
            1000,
            Timeouts::new(Duration::from_secs(8), None),
            crate::table::secret::HashKey::new(&[1; 32]),
        );
        assert_eq!(t.sweep_batch(), 32);
        assert_eq!(t.claim_sweep(&store, 10_000).unwrap(), Some(0..32));
        assert_eq!(t.claim_sweep(&store, 10_500).unwrap(), None, "too soon");
        assert_eq!(t.claim_sweep(&store, 11_000).unwrap(), Some(32..64));
        assert_eq!(t.claim_sweep(&store, 12_000).unwrap(), Some(1..33));
    }

    #[test]
    fn sweep_drops_lapsed_entries_once() {
        let store = MemoryStore::default();
        let t = Table::new(
            "w",
            100,
            Timeouts::new(Duration::from_secs(4), None),
            crate::table::secret::HashKey::new(&[1; 32]),
        );
        for i in 0..30u32 {
            let k = t.hash(&i.to_le_bytes());
            let server = "1.2.3.4:80".parse().unwrap();
            t.bind(&store, k, server, 0, 100, Expect::Any).unwrap();
        }
        // 7 slots, a pass per second: the first claim covers all of them.
        assert_eq!(t.sweep(&store, 103_000).unwrap(), 0);
        assert_eq!(t.sweep(&store, 104_000).unwrap(), 30);
        assert_eq!(t.sweep(&store, 105_000).unwrap(), 0);
        // A corrupt cursor is replaced, not fatal.
        store.set(&t.sweep_key(), b"\xff garbage", 0).unwrap();
        assert!(t.claim_sweep(&store, 200_000).unwrap().is_some());
    }
}

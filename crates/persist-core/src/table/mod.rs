//! The persist table (README "Locally stored types"): key → server bindings of the locally stored types, in
//! proxy-wasm shared data so that every worker of an Envoy sees the same entries.
//!
//! # Why slots
//! Shared data has only get/set with CAS: a key once written can never be deleted (a
//! "remove" leaves an empty value behind), keys cannot be listed, nothing expires by itself
//! and nothing bounds its size. One shared-data key per client key would therefore grow
//! Envoy's memory with every distinct key ever seen. Instead the table is a fixed,
//! set-associative hash table:
//!
//! - `S = ceil(max_entries / WAYS)` slots, shared-data keys `persist.<name>.t<S>.<i>`, each
//!   holding up to `WAYS` (16) entries; slot capacities add up to exactly `max_entries`.
//! - A client key is hashed with a keyed 128-bit hash ([`secret`]: SipHash-2-4 under a
//!   secret of the profile): 64 bits choose the slot, 64 bits are the entry's fingerprint.
//!   The key itself is never stored, and without the secret nobody can tell which slot a
//!   key lands in.
//! - Slot value: a version byte ([`slot::VERSION`]) and the entries ([`entry`]: fingerprint,
//!   server, created, last use). An IPv4 entry is 23 bytes.
//!
//! The number of shared-data keys is bounded by `S` whatever the traffic; a flood of
//! distinct keys only churns entries inside the slots.
//!
//! # Reading and writing
//! A request reads one slot (one host call, a few hundred bytes). A response writes only
//! when something changed: a new binding, a rebinding, or a use that finds `last_use` older
//! than `timeout/4` (so a hot key costs one write per `timeout/4`, not one per request).
//! Writes are read-modify-write with CAS, retried at most [`MAX_RETRIES`] times; giving up
//! is counted as `error`, never a failed request. Racing workers do not undo each other
//! ([`slot::Expect`]): the first binding of a key wins, and a rebinding only moves a key
//! away from the server the request saw.
//!
//! # Capacity and expiry
//! A full slot evicts its entry closest to expiry before inserting (`evicted`). Every write
//! drops the slot's lapsed entries (`expired`), and [`sweep`] walks all slots in the
//! background: on its tick a worker claims the next range of slots with a CAS on the
//! `persist.<name>.t<S>.sweep` cursor (one worker per range, no lease to lose) and rewrites
//! the slots that hold lapsed entries. A full pass takes `clamp(timeout/4, 1 s, 60 s)`.
//! The `entries` gauge is kept from the exact +/- of every successful write.

pub mod entry;
pub mod secret;
pub mod slot;
pub mod sweep;

use crate::store::{SharedStore, StoreError, INSERT_ONLY};
use entry::{Entry, Timeouts};
use secret::HashKey;
use slot::{Effect, Expect, Slot};
use std::net::SocketAddr;

/// Entries per slot at most.
pub const WAYS: u64 = 16;
/// CAS attempts per write before giving up (counted as `error`).
pub const MAX_RETRIES: usize = 8;

/// Where a client key lives in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash {
    pub slot: u32,
    pub fingerprint: u64,
    /// The whole keyed hash of the key ([`HashKey::mac`]): the mirror names the key by it
    /// in etcd, so that Envoys with tables of different sizes agree on it.
    pub digest: [u8; 16],
}

/// The table's geometry and timeouts, prepared once at configure time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    prefix: String,
    slots: u32,
    max_entries: u64,
    pub timeouts: Timeouts,
    hash_key: HashKey,
}

impl Table {
    pub fn new(profile: &str, max_entries: u64, timeouts: Timeouts, hash_key: HashKey) -> Table {
        let max_entries = max_entries.clamp(1, u64::from(u32::MAX));
        let slots = u32::try_from(max_entries.div_ceil(WAYS)).unwrap_or(u32::MAX);
        Table {
            prefix: format!("persist.{profile}.t{slots}."),
            slots,
            max_entries,
            timeouts,
            hash_key,
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Slot `i` holds at most this many entries; the capacities add up to `max_entries`.
    pub fn capacity(&self, slot: u32) -> usize {
        let s = u64::from(self.slots.max(1));
        let base = self.max_entries / s;
        let extra = u64::from(u64::from(slot) < self.max_entries % s);
        usize::try_from(base + extra).unwrap_or(usize::MAX)
    }

    pub fn hash(&self, key: &[u8]) -> KeyHash {
        self.key_of_digest(self.hash_key.mac(key))
    }

    /// Where the key with this keyed hash lives in this table.
    pub fn key_of_digest(&self, digest: [u8; 16]) -> KeyHash {
        let (lo, hi) = digest.split_at(8);
        let fingerprint = u64::from_le_bytes(lo.try_into().unwrap_or_default());
        let h = u64::from_le_bytes(hi.try_into().unwrap_or_default());
        KeyHash {
            slot: u32::try_from(h % u64::from(self.slots.max(1))).unwrap_or(0),
            fingerprint,
            digest,
        }
    }

    pub fn slot_key(&self, slot: u32) -> String {
        format!("{}{slot}", self.prefix)
    }

    /// Runs `f` with [`Self::slot_key`] built on the stack (the lookup of every request):
    /// no heap allocation unless the profile name is very long.
    pub fn with_slot_key<R>(&self, slot: u32, f: impl FnOnce(&str) -> R) -> R {
        let mut buf = [0u8; 96];
        let mut digits = [0u8; 10];
        let mut n = 0;
        let mut v = slot;
        loop {
            if let Some(d) = digits.get_mut(n) {
                *d = b'0' + (v % 10) as u8;
            }
            n += 1;
            v /= 10;
            if v == 0 || n == digits.len() {
                break;
            }
        }
        let p = self.prefix.len();
        let key = buf.get_mut(..p + n).and_then(|key| {
            let (head, tail) = key.split_at_mut(p);
            head.copy_from_slice(self.prefix.as_bytes());
            for (t, d) in tail.iter_mut().zip(digits.iter().take(n).rev()) {
                *t = *d;
            }
            std::str::from_utf8(key).ok()
        });
        match key {
            Some(k) => f(k),
            None => f(&self.slot_key(slot)),
        }
    }

    pub fn sweep_key(&self) -> String {
        format!("{}sweep", self.prefix)
    }

    /// The live entry of `key`, if any. Lapsed entries read as absent.
    pub fn lookup(
        &self,
        store: &dyn SharedStore,
        key: KeyHash,
        now_s: u32,
    ) -> Result<Option<Entry>, StoreError> {
        let found = self.with_slot_key(key.slot, |k| store.get(k))?;
        let Some((raw, _)) = found else {
            return Ok(None);
        };
        Ok(Slot::find_encoded(&raw, key.fingerprint)
            .filter(|e| !e.is_expired(&self.timeouts, now_s)))
    }

    /// Binds `key` to `server`, answered from cluster `cluster` (0: none), new, rebound, or
    /// refreshed when due, under CAS.
    pub fn bind(
        &self,
        store: &dyn SharedStore,
        key: KeyHash,
        server: SocketAddr,
        cluster: u32,
        now_s: u32,
        expect: Expect,
    ) -> Result<Effect, StoreError> {
        let capacity = self.capacity(key.slot);
        self.update(store, key.slot, |slot| {
            slot.bind(
                key.fingerprint,
                server,
                cluster,
                now_s,
                capacity,
                &self.timeouts,
                expect,
            )
        })
    }

    /// Read-modify-write of one slot under CAS, at most [`MAX_RETRIES`] times; nothing is
    /// written when `change` reports no change.
    fn update(
        &self,
        store: &dyn SharedStore,
        slot: u32,
        change: impl Fn(&mut Slot) -> Effect,
    ) -> Result<Effect, StoreError> {
        let slot_key = self.slot_key(slot);
        for _ in 0..MAX_RETRIES {
            let (mut decoded, cas) = match store.get(&slot_key)? {
                Some((raw, cas)) => (Slot::decode(&raw), cas),
                None => (Slot::default(), INSERT_ONLY),
            };
            let effect = change(&mut decoded);
            if !effect.changed {
                return Ok(effect);
            }
            match store.set(&slot_key, &decoded.encode(), cas) {
                Ok(()) => return Ok(effect),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }

    /// Applies a binding another Envoy made (the mirror), under CAS: see [`Slot::merge`].
    pub fn merge(
        &self,
        store: &dyn SharedStore,
        key: KeyHash,
        remote: Entry,
        now_s: u32,
    ) -> Result<Effect, StoreError> {
        let capacity = self.capacity(key.slot);
        let remote = Entry {
            fingerprint: key.fingerprint,
            ..remote
        };
        self.update(store, key.slot, |slot| {
            slot.merge(remote, now_s, capacity, &self.timeouts)
        })
    }

    /// Drops the lapsed entries of one slot; returns how many (0 when another worker
    /// changed the slot meanwhile: the next pass gets them).
    pub fn sweep_slot(
        &self,
        store: &dyn SharedStore,
        slot: u32,
        now_s: u32,
    ) -> Result<u32, StoreError> {
        let slot_key = self.slot_key(slot);
        let Some((raw, cas)) = store.get(&slot_key)? else {
            return Ok(0);
        };
        if raw.is_empty() {
            return Ok(0);
        }
        let mut s = Slot::decode(&raw);
        let expired = s.drop_expired(&self.timeouts, now_s);
        if expired == 0 {
            return Ok(0);
        }
        match store.set(&slot_key, &s.encode(), cas) {
            Ok(()) => Ok(expired),
            Err(StoreError::CasMismatch) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::collections::HashSet;
    use std::time::Duration;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn table(max: u64) -> Table {
        keyed_table(max, &[0x5a; secret::SECRET_LEN])
    }

    fn keyed_table(max: u64, secret: &[u8; secret::SECRET_LEN]) -> Table {
        Table::new(
            "t",
            max,
            Timeouts::new(Duration::from_secs(60), None),
            HashKey::new(secret),
        )
    }

    /// The slot the version before the keyed hash chose: unkeyed MD5, its upper 64 bits
    /// modulo the number of slots.
    fn md5_slot(t: &Table, key: &[u8]) -> u32 {
        let d = md5::compute(key).0;
        let hi = u64::from_le_bytes(d[8..].try_into().unwrap());
        (hi % u64::from(t.slots())) as u32
    }

    /// Keys anyone can compute offline that the unkeyed hash puts into `slot`.
    fn crafted(t: &Table, slot: u32, n: usize) -> Vec<String> {
        (0u64..)
            .map(|i| format!("attacker-{i}"))
            .filter(|k| md5_slot(t, k.as_bytes()) == slot)
            .take(n)
            .collect()
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn capacities_add_up_to_max_entries() {
        for max in [1, 15, 16, 17, 50, 100, 1000, 100_000, 1_000_003] {
            let t = table(max);
            let total: u64 = (0..t.slots()).map(|i| t.capacity(i) as u64).sum();
            assert_eq!(total, max, "max {max}");
            assert!((0..t.slots()).all(|i| t.capacity(i) <= WAYS as usize));
        }
    }

    #[test]
    fn bind_then_lookup_shared_by_workers() {
        let store = MemoryStore::default();
        let t = table(100);
        let k = t.hash(b"JSESSIONID-1");
        assert_eq!(t.lookup(&store, k, 1000).unwrap(), None);
        let e = t
            .bind(&store, k, a("10.0.0.1:80"), 0, 1000, Expect::Any)
            .unwrap();
        assert!(e.new);
        // Another worker: same store, its own Table value.
        let other = table(100);
        let found = other
            .lookup(&store, other.hash(b"JSESSIONID-1"), 1001)
            .unwrap();
        assert_eq!(found.unwrap().server, a("10.0.0.1:80"));
        assert_eq!(t.lookup(&store, k, 1060).unwrap(), None, "lapsed");
    }

    #[test]
    fn never_more_than_max_entries() {
        let store = MemoryStore::default();
        let t = table(50);
        let mut live: i64 = 0;
        let mut evicted = 0;
        for i in 0..300u32 {
            let e = t
                .bind(
                    &store,
                    t.hash(format!("k{i}").as_bytes()),
                    a("1.1.1.1:1"),
                    0,
                    1000,
                    Expect::Absent,
                )
                .unwrap();
            live += e.entries_delta();
            evicted += e.evicted;
        }
        let mut counted = 0;
        for s in 0..t.slots() {
            if let Some((raw, _)) = store.get(&t.slot_key(s)).unwrap() {
                counted += Slot::decode(&raw).entries.len();
            }
        }
        assert_eq!(counted as i64, live);
        assert_eq!(counted, 50);
        assert_eq!(evicted, 250);
    }

    #[test]
    fn sweep_drops_lapsed_entries() {
        let store = MemoryStore::default();
        let t = table(100);
        for i in 0..40u32 {
            t.bind(
                &store,
                t.hash(&i.to_le_bytes()),
                a("1.1.1.1:1"),
                0,
                1000 + i,
                Expect::Absent,
            )
            .unwrap();
        }
        let swept: u32 = (0..t.slots())
            .map(|s| t.sweep_slot(&store, s, 1070).unwrap())
            .sum();
        assert_eq!(swept, 11, "entries last used at 1000..=1010 lapse at 1070");
        let again: u32 = (0..t.slots())
            .map(|s| t.sweep_slot(&store, s, 1070).unwrap())
            .sum();
        assert_eq!(again, 0);
    }

    #[test]
    fn slot_key_on_the_stack_is_the_slot_key() {
        let long = "p".repeat(200);
        for name in ["t", "users", long.as_str()] {
            for max in [1, 16, 100_000, u64::from(u32::MAX) * 16] {
                let t = Table::new(
                    name,
                    max,
                    Timeouts::new(Duration::from_secs(60), None),
                    HashKey::new(&[0x5a; secret::SECRET_LEN]),
                );
                for slot in [0, 1, 9, 10, 99, 12345, t.slots() - 1, u32::MAX] {
                    assert_eq!(t.with_slot_key(slot, str::to_string), t.slot_key(slot));
                }
            }
        }
    }

    #[test]
    fn keys_spread_over_slots() {
        let t = table(100_000);
        let used: HashSet<u32> = (0..10_000u32)
            .map(|i| {
                t.hash(format!("10.0.{}.{}", i / 256, i % 256).as_bytes())
                    .slot
            })
            .collect();
        assert!(used.len() > 4_000, "{} slots of {}", used.len(), t.slots());
    }

    #[test]
    fn keys_crafted_for_one_md5_slot_spread_under_the_keyed_hash() {
        let t = table(100_000);
        let victim_slot = md5_slot(&t, b"victim");
        let keys = crafted(&t, victim_slot, 64);
        assert_eq!(keys.len(), 64);
        assert!(keys
            .iter()
            .all(|k| md5_slot(&t, k.as_bytes()) == victim_slot));
        // Under the keyed hash: 64 keys over 6250 slots. A uniform hash puts two of them
        // in one slot with probability ~0.28 and three with ~0.0007.
        let mut per_slot = std::collections::HashMap::new();
        for k in &keys {
            *per_slot.entry(t.hash(k.as_bytes()).slot).or_insert(0) += 1;
        }
        let most = per_slot.values().copied().max().unwrap();
        assert!(most <= 2, "{most} crafted keys share a slot: {per_slot:?}");
        assert!(per_slot.len() >= 62, "{} slots", per_slot.len());
        let victim = t.hash(b"victim").slot;
        assert!(per_slot.get(&victim).copied().unwrap_or(0) <= 1);
    }

    #[test]
    fn a_victim_survives_a_burst_aimed_at_its_md5_slot() {
        // A small table (max_entries 160: 10 slots of 16): the victim is bound, then 48
        // keys crafted to share its MD5 slot are bound. Under MD5 they would fill that
        // slot three times over; under the keyed hash they spread over the 10 slots.
        let store = MemoryStore::default();
        let t = table(160);
        let victim = t.hash(b"victim");
        t.bind(&store, victim, a("10.0.0.1:80"), 0, 1000, Expect::Absent)
            .unwrap();
        let mut evicted = 0;
        for k in crafted(&t, md5_slot(&t, b"victim"), 48) {
            let e = t
                .bind(
                    &store,
                    t.hash(k.as_bytes()),
                    a("10.0.0.9:80"),
                    0,
                    1001,
                    Expect::Absent,
                )
                .unwrap();
            evicted += e.evicted;
        }
        let found = t.lookup(&store, victim, 1002).unwrap();
        assert_eq!(found.map(|e| e.server), Some(a("10.0.0.1:80")));
        assert_eq!(evicted, 0, "48 keys in 160 entries");
        // The same burst against the unkeyed slot choice evicts the victim: what the
        // crafted keys did to the version before (modelled here with the MD5 digest).
        let old = MemoryStore::default();
        let md5_key = |k: &[u8]| t.key_of_digest(md5::compute(k).0);
        t.bind(
            &old,
            md5_key(b"victim"),
            a("10.0.0.1:80"),
            0,
            1000,
            Expect::Absent,
        )
        .unwrap();
        for k in crafted(&t, md5_slot(&t, b"victim"), 48) {
            t.bind(
                &old,
                md5_key(k.as_bytes()),
                a("10.0.0.9:80"),
                0,
                1001,
                Expect::Absent,
            )
            .unwrap();
        }
        assert_eq!(t.lookup(&old, md5_key(b"victim"), 1002).unwrap(), None);
    }

    #[test]
    fn different_secrets_choose_different_slots() {
        let one = keyed_table(100_000, &[1; secret::SECRET_LEN]);
        let two = keyed_table(100_000, &[2; secret::SECRET_LEN]);
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let same = keys
            .iter()
            .filter(|k| one.hash(k.as_bytes()).slot == two.hash(k.as_bytes()).slot)
            .count();
        assert!(
            same <= 3,
            "{same} of 1000 keys in the same slot under both secrets"
        );
        // The same secret (another worker, or a reload) agrees on every key.
        let again = keyed_table(100_000, &[1; secret::SECRET_LEN]);
        assert!(keys
            .iter()
            .all(|k| one.hash(k.as_bytes()) == again.hash(k.as_bytes())));
    }

    /// ns per hash of the keyed hash and of MD5 on typical keys (run natively, release:
    /// `cargo test --release -p persist-core -- --ignored --nocapture hash_cost`).
    #[test]
    #[ignore]
    fn hash_cost() {
        use siphasher::sip128::{Hasher128, SipHasher13};
        use std::hash::Hasher;
        use std::time::Instant;
        let k = HashKey::new(&[7; secret::SECRET_LEN]);
        for key in [
            &b"203.0.113.7"[..],
            b"4F2A9C1E0B7D46A3B8E5C2D190F7A6B3",
            &[b'x'; 200][..],
        ] {
            let n = 2_000_000u32;
            let mut sink = 0u8;
            let t0 = Instant::now();
            for i in 0..n {
                sink ^= k.mac(key)[(i & 15) as usize];
            }
            let sip24 = t0.elapsed().as_nanos() as f64 / f64::from(n);
            let t0 = Instant::now();
            for i in 0..n {
                let mut h = SipHasher13::new_with_keys(1, 2);
                h.write(&[0]);
                h.write(key);
                sink ^= h.finish128().as_bytes()[(i & 15) as usize];
            }
            let sip13 = t0.elapsed().as_nanos() as f64 / f64::from(n);
            let t0 = Instant::now();
            for i in 0..n {
                sink ^= md5::compute(key).0[(i & 15) as usize];
            }
            let md5 = t0.elapsed().as_nanos() as f64 / f64::from(n);
            println!(
                "key {:>3} bytes: siphash-2-4-128 {sip24:.1} ns, siphash-1-3-128 {sip13:.1} ns, \
                 md5 {md5:.1} ns ({sink})",
                key.len()
            );
        }
    }
}

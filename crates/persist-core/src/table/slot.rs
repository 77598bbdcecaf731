//! A slot: one shared-data value holding up to [`super::WAYS`] entries, prefixed by a format
//! version byte. All changes are computed on a decoded copy and written back with CAS.

use super::entry::{Entry, Timeouts};
use std::net::SocketAddr;

/// The slot format. A slot whose version differs (or that does not decode) reads as empty
/// and is rewritten on the next change.
pub const VERSION: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    pub entries: Vec<Entry>,
}

/// What the writer expects the key to be bound to, so that concurrent writers do not undo
/// each other: the first binding of a key wins, and a rebinding only moves a key away from
/// the server it was seen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Bind whatever is there (the server itself said so, e.g. a new `Set-Cookie`).
    Any,
    /// The key was unbound when the request looked: bind only if it still is.
    Absent,
    /// The key named this server: move it only if it still does.
    Server(SocketAddr),
}

/// What a change did to the slot, for the counters and the `entries` gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    /// The key was not bound (or its binding had lapsed) and now is.
    pub new: bool,
    /// The key was bound to another server and now names the given one.
    pub rebound: bool,
    /// The slot changed and must be written.
    pub changed: bool,
    /// Lapsed entries dropped.
    pub expired: u32,
    /// Live entries dropped to make room.
    pub evicted: u32,
    /// The key's entry as written, when the key's own binding changed (new, rebound,
    /// refreshed or merged): what the mirror sends on.
    pub bound: Option<Entry>,
}

impl Effect {
    /// Change of the number of entries in the table.
    pub fn entries_delta(&self) -> i64 {
        i64::from(self.new) - i64::from(self.expired) - i64::from(self.evicted)
    }
}

impl Slot {
    pub fn decode(raw: &[u8]) -> Slot {
        let Some((&VERSION, mut rest)) = raw.split_first() else {
            return Slot::default();
        };
        let mut entries = Vec::new();
        while !rest.is_empty() {
            match Entry::decode(rest) {
                Some((e, r)) => {
                    entries.push(e);
                    rest = r;
                }
                None => break,
            }
        }
        Slot { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.entries.len() * 23);
        out.push(VERSION);
        for e in &self.entries {
            e.encode_into(&mut out);
        }
        out
    }

    /// The entry of `fingerprint` in the encoded slot `raw`, as `decode(raw).find(..)`
    /// finds it, without decoding the slot into a vector (the lookup of every request).
    pub fn find_encoded(raw: &[u8], fingerprint: u64) -> Option<Entry> {
        let (&VERSION, mut rest) = raw.split_first()? else {
            return None;
        };
        while let Some((e, r)) = Entry::decode(rest) {
            if e.fingerprint == fingerprint {
                return Some(e);
            }
            rest = r;
        }
        None
    }

    pub fn find(&self, fingerprint: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.fingerprint == fingerprint)
    }

    /// Drops lapsed entries; returns how many.
    pub fn drop_expired(&mut self, timeouts: &Timeouts, now_s: u32) -> u32 {
        let before = self.entries.len();
        self.entries.retain(|e| !e.is_expired(timeouts, now_s));
        u32::try_from(before - self.entries.len()).unwrap_or(u32::MAX)
    }

    /// Applies a binding learned from another Envoy (the mirror, README "More than one Envoy"). It replaces
    /// whatever this slot holds for the key (the mirror delivers writes in etcd's order, so
    /// the last one wins everywhere); an equal binding only moves `last_use` forward, and a
    /// remote entry that has already lapsed is ignored. `rebound` and `new` describe the
    /// slot, not a request: the caller does not count them as `rebind`/`new`.
    pub fn merge(
        &mut self,
        remote: Entry,
        now_s: u32,
        capacity: usize,
        timeouts: &Timeouts,
    ) -> Effect {
        let mut effect = Effect {
            expired: self.drop_expired(timeouts, now_s),
            ..Effect::default()
        };
        effect.changed = effect.expired > 0;
        if remote.is_expired(timeouts, now_s) {
            return effect;
        }
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.fingerprint == remote.fingerprint)
        {
            if e.server != remote.server || e.cluster != remote.cluster {
                *e = remote;
                effect.rebound = true;
                effect.changed = true;
                effect.bound = Some(*e);
            } else if remote.last_use > e.last_use {
                e.last_use = remote.last_use;
                effect.changed = true;
                effect.bound = Some(*e);
            }
            return effect;
        }
        effect.evicted = self.make_room(capacity, timeouts);
        self.entries.push(remote);
        effect.bound = Some(remote);
        effect.new = true;
        effect.changed = true;
        effect
    }

    /// Evicts the live entries closest to expiry until one more fits; returns how many.
    fn make_room(&mut self, capacity: usize, timeouts: &Timeouts) -> u32 {
        let mut evicted = 0;
        while self.entries.len() >= capacity.max(1) {
            let closest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.expires_at(timeouts))
                .map(|(i, _)| i);
            match closest {
                Some(i) => {
                    self.entries.swap_remove(i);
                    evicted += 1;
                }
                None => break,
            }
        }
        evicted
    }

    /// Binds `fingerprint` to `server` (answered from cluster `cluster`, 0: none) as used
    /// now, unless `expect` says another writer got there first. An existing binding to the
    /// same server is only refreshed when its last use is `refresh_after_s` old, or when its
    /// cluster changes; lapsed entries go first; when the slot is full the live entry
    /// closest to expiry is evicted.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &mut self,
        fingerprint: u64,
        server: SocketAddr,
        cluster: u32,
        now_s: u32,
        capacity: usize,
        timeouts: &Timeouts,
        expect: Expect,
    ) -> Effect {
        let mut effect = Effect {
            expired: self.drop_expired(timeouts, now_s),
            ..Effect::default()
        };
        effect.changed = effect.expired > 0;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.fingerprint == fingerprint)
        {
            let may_move = match expect {
                Expect::Any => true,
                Expect::Absent => false,
                Expect::Server(seen) => seen == e.server,
            };
            if e.server != server && may_move {
                e.server = server;
                e.cluster = cluster;
                e.created = now_s;
                e.last_use = now_s;
                effect.rebound = true;
                effect.changed = true;
                effect.bound = Some(*e);
            } else if e.server == server
                && (e.cluster != cluster
                    || u64::from(now_s.saturating_sub(e.last_use)) >= timeouts.refresh_after_s())
            {
                e.cluster = cluster;
                e.last_use = now_s;
                effect.changed = true;
                effect.bound = Some(*e);
            }
            return effect;
        }
        effect.evicted = self.make_room(capacity, timeouts);
        let entry = Entry {
            fingerprint,
            server,
            created: now_s,
            last_use: now_s,
            cluster,
        };
        self.entries.push(entry);
        effect.bound = Some(entry);
        effect.new = true;
        effect.changed = true;
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn t() -> Timeouts {
        Timeouts::new(Duration::from_secs(100), None)
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn find_encoded_finds_what_decode_finds() {
        let mut s = Slot::default();
        for fp in 0..16u64 {
            let server = if fp % 3 == 0 {
                a("[2001:db8::1]:443")
            } else {
                a("10.0.0.1:80")
            };
            s.bind(
                fp * 7919,
                server,
                0,
                1000 + fp as u32,
                16,
                &t(),
                Expect::Any,
            );
        }
        let raw = s.encode();
        for fp in 0..20u64 * 7919 {
            assert_eq!(
                Slot::find_encoded(&raw, fp),
                Slot::decode(&raw).find(fp).copied()
            );
        }
        // Truncated, corrupted or other-version slots: the same answer as decoding.
        for cut in 0..raw.len() {
            for fp in [0, 7919, 15 * 7919] {
                assert_eq!(
                    Slot::find_encoded(&raw[..cut], fp),
                    Slot::decode(&raw[..cut]).find(fp).copied()
                );
            }
        }
        let mut bad = raw.clone();
        bad[1 + 23 + 16] = 9; // the second entry's family byte
        for fp in [0, 7919, 2 * 7919] {
            assert_eq!(
                Slot::find_encoded(&bad, fp),
                Slot::decode(&bad).find(fp).copied()
            );
        }
        let mut v2 = raw;
        v2[0] = 2;
        assert_eq!(Slot::find_encoded(&v2, 0), None);
    }

    #[test]
    fn garbage_reads_as_empty() {
        assert_eq!(Slot::decode(b""), Slot::default());
        assert_eq!(Slot::decode(b"\x02abc"), Slot::default());
        assert_eq!(Slot::decode(&[VERSION, 1, 2, 3]), Slot::default());
    }

    #[test]
    fn bind_new_refresh_rebind() {
        let mut s = Slot::default();
        let e = s.bind(7, a("1.1.1.1:1"), 0, 1000, 4, &t(), Expect::Any);
        assert!(e.new && e.changed && !e.rebound);
        assert_eq!(e.entries_delta(), 1);
        // Same server, used again soon: nothing to write (the hot path stays read-only).
        let e = s.bind(7, a("1.1.1.1:1"), 0, 1010, 4, &t(), Expect::Any);
        assert!(!e.changed && e.bound.is_none());
        // ... after timeout/4: refreshed.
        let e = s.bind(7, a("1.1.1.1:1"), 0, 1025, 4, &t(), Expect::Any);
        assert!(e.changed && !e.new);
        assert_eq!(e.bound.map(|b| (b.created, b.last_use)), Some((1000, 1025)));
        assert_eq!(s.find(7).unwrap().last_use, 1025);
        let e = s.bind(7, a("2.2.2.2:2"), 0, 1030, 4, &t(), Expect::Any);
        assert!(e.rebound && e.changed && !e.new);
        assert_eq!(e.entries_delta(), 0);
        let back = Slot::decode(&s.encode());
        assert_eq!(back, s);
    }

    #[test]
    fn racing_writers_do_not_undo_each_other() {
        let (x, y, z) = (a("1.1.1.1:1"), a("2.2.2.2:2"), a("3.3.3.3:3"));
        let mut s = Slot::default();
        // Two workers missed the key at the same time; x answered one, y the other.
        assert!(s.bind(9, x, 0, 1000, 4, &t(), Expect::Absent).new);
        let e = s.bind(9, y, 0, 1000, 4, &t(), Expect::Absent);
        assert!(!e.changed && !e.new && !e.rebound);
        assert_eq!(s.find(9).unwrap().server, x, "the first binding wins");
        // Two workers saw the key on x (down); y answered one, z the other.
        assert!(s.bind(9, y, 0, 1001, 4, &t(), Expect::Server(x)).rebound);
        let e = s.bind(9, z, 0, 1001, 4, &t(), Expect::Server(x));
        assert!(!e.changed);
        assert_eq!(s.find(9).unwrap().server, y, "the first rebinding wins");
        // The server itself re-issued its cookie: that always binds.
        assert!(s.bind(9, z, 0, 1002, 4, &t(), Expect::Any).rebound);
        // A key that lapsed or was evicted meanwhile is bound again.
        let mut empty = Slot::default();
        assert!(empty.bind(9, z, 0, 1003, 4, &t(), Expect::Server(x)).new);
    }

    #[test]
    fn full_slot_evicts_closest_to_expiry() {
        let mut s = Slot::default();
        for (fp, now) in [(1, 1000), (2, 990), (3, 1005)] {
            s.bind(fp, a("1.1.1.1:1"), 0, now, 3, &t(), Expect::Any);
        }
        let e = s.bind(4, a("1.1.1.1:1"), 0, 1010, 3, &t(), Expect::Any);
        assert_eq!(e.evicted, 1);
        assert!(e.new);
        assert_eq!(e.entries_delta(), 0);
        assert!(s.find(2).is_none(), "2 was used longest ago");
        assert_eq!(s.entries.len(), 3);
    }

    #[test]
    fn lapsed_entries_go_first_and_are_counted() {
        let mut s = Slot::default();
        s.bind(1, a("1.1.1.1:1"), 0, 1000, 2, &t(), Expect::Any);
        s.bind(2, a("1.1.1.1:1"), 0, 1050, 2, &t(), Expect::Any);
        let e = s.bind(3, a("1.1.1.1:1"), 0, 1100, 2, &t(), Expect::Any);
        assert_eq!((e.expired, e.evicted), (1, 0));
        assert_eq!(e.entries_delta(), 0);
        // A lapsed binding of the same key is a new one.
        let e = s.bind(2, a("1.1.1.1:1"), 0, 1200, 2, &t(), Expect::Any);
        assert!(e.new);
    }

    #[test]
    fn merge_applies_remote_bindings_in_order() {
        let (x, y) = (a("1.1.1.1:1"), a("2.2.2.2:2"));
        let remote = |server, created, last_use| Entry {
            fingerprint: 5,
            server,
            created,
            last_use,
            cluster: 0,
        };
        let mut s = Slot::default();
        let e = s.merge(remote(x, 1000, 1000), 1001, 4, &t());
        assert!(e.new && e.changed);
        // The same binding again (e.g. this Envoy's own write coming back): nothing to write.
        assert!(!s.merge(remote(x, 1000, 1000), 1002, 4, &t()).changed);
        // A later use elsewhere moves last_use forward, never back.
        assert!(s.merge(remote(x, 1000, 1010), 1011, 4, &t()).changed);
        assert!(!s.merge(remote(x, 1000, 1005), 1011, 4, &t()).changed);
        assert_eq!(s.find(5).unwrap().last_use, 1010);
        // Another server: the remote one wins (etcd order is the order of application).
        let e = s.merge(remote(y, 1012, 1012), 1012, 4, &t());
        assert!(e.rebound && e.changed && !e.new);
        assert_eq!(s.find(5).unwrap().server, y);
        // A remote entry that already lapsed is not applied.
        let mut empty = Slot::default();
        assert!(!empty.merge(remote(x, 900, 900), 1000, 4, &t()).changed);
        assert!(empty.entries.is_empty());
    }

    #[test]
    fn merge_into_a_full_slot_evicts() {
        let mut s = Slot::default();
        for fp in 1..=3 {
            s.bind(
                fp,
                a("1.1.1.1:1"),
                0,
                1000 + fp as u32,
                3,
                &t(),
                Expect::Any,
            );
        }
        let r = Entry {
            fingerprint: 9,
            server: a("2.2.2.2:2"),
            created: 1010,
            last_use: 1010,
            cluster: 0,
        };
        let e = s.merge(r, 1010, 3, &t());
        assert_eq!((e.new, e.evicted), (true, 1));
        assert!(s.find(1).is_none());
        assert_eq!(e.entries_delta(), 0);
    }

    #[test]
    fn the_cluster_is_bound_with_the_server() {
        let x = a("1.1.1.1:1");
        let mut s = Slot::default();
        assert!(s.bind(3, x, 0, 1000, 4, &t(), Expect::Absent).new);
        // The same server, now known to answer from cluster 7: written at once, no rebind.
        let e = s.bind(3, x, 7, 1001, 4, &t(), Expect::Server(x));
        assert!(e.changed && !e.rebound && !e.new);
        assert_eq!(s.find(3).map(|e| (e.cluster, e.created)), Some((7, 1000)));
        // Unchanged: nothing to write.
        assert!(!s.bind(3, x, 7, 1002, 4, &t(), Expect::Server(x)).changed);
        // Another server in another cluster: a rebinding that takes both.
        let y = a("2.2.2.2:2");
        assert!(s.bind(3, y, 9, 1003, 4, &t(), Expect::Server(x)).rebound);
        assert_eq!(s.find(3).map(|e| (e.server, e.cluster)), Some((y, 9)));
        // A remote binding to the same server in another cluster replaces it.
        let remote = Entry {
            cluster: 11,
            ..*s.find(3).unwrap()
        };
        assert!(s.merge(remote, 1004, 4, &t()).changed);
        assert_eq!(s.find(3).unwrap().cluster, 11);
        let raw = s.encode();
        assert_eq!(Slot::decode(&raw), s);
        assert_eq!(Slot::find_encoded(&raw, 3), s.find(3).copied());
    }
}

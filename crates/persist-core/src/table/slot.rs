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

    pub fn find(&self, fingerprint: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.fingerprint == fingerprint)
    }

    /// Drops lapsed entries; returns how many.
    pub fn drop_expired(&mut self, timeouts: &Timeouts, now_s: u32) -> u32 {
        let before = self.entries.len();
        self.entries.retain(|e| !e.is_expired(timeouts, now_s));
        u32::try_from(before - self.entries.len()).unwrap_or(u32::MAX)
    }

    /// Binds `fingerprint` to `server` as used now, unless `expect` says another writer got
    /// there first. An existing binding to the same server is only refreshed when its last
    /// use is `refresh_after_s` old; lapsed entries go first; when the slot is full the
    /// live entry closest to expiry is evicted.
    pub fn bind(
        &mut self,
        fingerprint: u64,
        server: SocketAddr,
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
                e.created = now_s;
                e.last_use = now_s;
                effect.rebound = true;
                effect.changed = true;
            } else if e.server == server
                && u64::from(now_s.saturating_sub(e.last_use)) >= timeouts.refresh_after_s()
            {
                e.last_use = now_s;
                effect.changed = true;
            }
            return effect;
        }
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
                    effect.evicted += 1;
                }
                None => break,
            }
        }
        self.entries.push(Entry {
            fingerprint,
            server,
            created: now_s,
            last_use: now_s,
        });
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
    fn garbage_reads_as_empty() {
        assert_eq!(Slot::decode(b""), Slot::default());
        assert_eq!(Slot::decode(b"\x02abc"), Slot::default());
        assert_eq!(Slot::decode(&[VERSION, 1, 2, 3]), Slot::default());
    }

    #[test]
    fn bind_new_refresh_rebind() {
        let mut s = Slot::default();
        let e = s.bind(7, a("1.1.1.1:1"), 1000, 4, &t(), Expect::Any);
        assert!(e.new && e.changed && !e.rebound);
        assert_eq!(e.entries_delta(), 1);
        // Same server, used again soon: nothing to write (the hot path stays read-only).
        let e = s.bind(7, a("1.1.1.1:1"), 1010, 4, &t(), Expect::Any);
        assert!(!e.changed);
        // ... after timeout/4: refreshed.
        let e = s.bind(7, a("1.1.1.1:1"), 1025, 4, &t(), Expect::Any);
        assert!(e.changed && !e.new);
        assert_eq!(s.find(7).unwrap().last_use, 1025);
        let e = s.bind(7, a("2.2.2.2:2"), 1030, 4, &t(), Expect::Any);
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
        assert!(s.bind(9, x, 1000, 4, &t(), Expect::Absent).new);
        let e = s.bind(9, y, 1000, 4, &t(), Expect::Absent);
        assert!(!e.changed && !e.new && !e.rebound);
        assert_eq!(s.find(9).unwrap().server, x, "the first binding wins");
        // Two workers saw the key on x (down); y answered one, z the other.
        assert!(s.bind(9, y, 1001, 4, &t(), Expect::Server(x)).rebound);
        let e = s.bind(9, z, 1001, 4, &t(), Expect::Server(x));
        assert!(!e.changed);
        assert_eq!(s.find(9).unwrap().server, y, "the first rebinding wins");
        // The server itself re-issued its cookie: that always binds.
        assert!(s.bind(9, z, 1002, 4, &t(), Expect::Any).rebound);
        // A key that lapsed or was evicted meanwhile is bound again.
        let mut empty = Slot::default();
        assert!(empty.bind(9, z, 1003, 4, &t(), Expect::Server(x)).new);
    }

    #[test]
    fn full_slot_evicts_closest_to_expiry() {
        let mut s = Slot::default();
        for (fp, now) in [(1, 1000), (2, 990), (3, 1005)] {
            s.bind(fp, a("1.1.1.1:1"), now, 3, &t(), Expect::Any);
        }
        let e = s.bind(4, a("1.1.1.1:1"), 1010, 3, &t(), Expect::Any);
        assert_eq!(e.evicted, 1);
        assert!(e.new);
        assert_eq!(e.entries_delta(), 0);
        assert!(s.find(2).is_none(), "2 was used longest ago");
        assert_eq!(s.entries.len(), 3);
    }

    #[test]
    fn lapsed_entries_go_first_and_are_counted() {
        let mut s = Slot::default();
        s.bind(1, a("1.1.1.1:1"), 1000, 2, &t(), Expect::Any);
        s.bind(2, a("1.1.1.1:1"), 1050, 2, &t(), Expect::Any);
        let e = s.bind(3, a("1.1.1.1:1"), 1100, 2, &t(), Expect::Any);
        assert_eq!((e.expired, e.evicted), (1, 0));
        assert_eq!(e.entries_delta(), 0);
        // A lapsed binding of the same key is a new one.
        let e = s.bind(2, a("1.1.1.1:1"), 1200, 2, &t(), Expect::Any);
        assert!(e.new);
    }
}

//! Stats (README "Stats"): counters per profile, named `persist.<profile>.<counter>`.
//! Workers count locally ([`LocalCounts`]) and flush on their tick, so the request path
//! makes no stats host call.

use crate::table::slot::Effect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Hit,
    Miss,
    New,
    Rebind,
    Invalid,
    Expired,
    Evicted,
    Error,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Counter::Hit,
        Counter::Miss,
        Counter::New,
        Counter::Rebind,
        Counter::Invalid,
        Counter::Expired,
        Counter::Evicted,
        Counter::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Hit => "hit",
            Counter::Miss => "miss",
            Counter::New => "new",
            Counter::Rebind => "rebind",
            Counter::Invalid => "invalid",
            Counter::Expired => "expired",
            Counter::Evicted => "evicted",
            Counter::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The metric name of `counter` in profile `profile`.
pub fn metric_name(profile: &str, counter: Counter) -> String {
    named(profile, counter.name())
}

/// The gauge of live table entries (locally stored types), named like the counters.
pub const ENTRIES: &str = "entries";

/// The metric name of the `entries` gauge in profile `profile`.
pub fn gauge_name(profile: &str) -> String {
    named(profile, ENTRIES)
}

/// The mirror's stats (README "More than one Envoy"), named like the counters: counters of keys acknowledged
/// by etcd, watch events received and failed etcd calls, and a gauge that is 1 while this
/// Envoy's watch is established.
pub const MIRROR_PUT: &str = "mirror_put";
pub const MIRROR_EVENT: &str = "mirror_event";
pub const MIRROR_ERROR: &str = "mirror_error";
pub const MIRROR_CONNECTED: &str = "mirror_connected";

/// Requests that named a server through the hand-off header while Envoy chose another one
/// without saying so: the stateful_session filter is missing or placed before this one.
pub const HANDOFF_IGNORED: &str = "handoff_ignored";

/// The metric name of any stat `stat` of profile `profile`: `persist.<profile>.<stat>`.
pub fn named(profile: &str, stat: &str) -> String {
    format!("persist.{profile}.{stat}")
}

/// Counts a worker has not yet handed to the host.
#[derive(Debug, Default, Clone)]
pub struct LocalCounts {
    counts: [u64; Counter::ALL.len()],
    /// Net change of the `entries` gauge.
    pub entries: i64,
    /// Failed etcd lookups of the request path (`mirror_error`).
    pub mirror_errors: u64,
    /// `handoff_ignored`.
    pub handoff_ignored: u64,
}

impl LocalCounts {
    /// What one table write of a request did: `new`, `rebind`, `expired`, `evicted` and
    /// the `entries` gauge.
    pub fn table_write(&mut self, e: &Effect) {
        if e.new {
            self.add(Counter::New);
        }
        if e.rebound {
            self.add(Counter::Rebind);
        }
        self.table_merge(e);
    }

    /// A merge from the mirror changes the table, not a request's outcome: `expired`,
    /// `evicted` and the `entries` gauge only.
    pub fn table_merge(&mut self, e: &Effect) {
        self.add_n(Counter::Expired, u64::from(e.expired));
        self.add_n(Counter::Evicted, u64::from(e.evicted));
        self.entries = self.entries.saturating_add(e.entries_delta());
    }

    /// `n` lapsed entries swept in the background.
    pub fn table_sweep(&mut self, n: u32) {
        self.add_n(Counter::Expired, u64::from(n));
        self.entries = self.entries.saturating_sub(i64::from(n));
    }

    pub fn add(&mut self, c: Counter) {
        self.add_n(c, 1);
    }

    pub fn add_n(&mut self, c: Counter, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(v) = self.counts.get_mut(c.index()) {
            *v = v.saturating_add(n);
        }
    }

    /// Takes every non-zero count, leaving zeros.
    pub fn drain(&mut self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL
            .into_iter()
            .zip(self.counts.iter_mut())
            .filter_map(|(c, v)| {
                let n = std::mem::take(v);
                (n > 0).then_some((c, n))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn pending_drains() {
        let mut p = LocalCounts::default();
        p.add(Counter::Hit);
        p.add(Counter::Hit);
        p.add(Counter::Error);
        let got: Vec<_> = p.drain().collect();
        assert_eq!(got, vec![(Counter::Hit, 2), (Counter::Error, 1)]);
        assert_eq!(p.drain().count(), 0);
        assert_eq!(metric_name("web", Counter::Rebind), "persist.web.rebind");
    }
}

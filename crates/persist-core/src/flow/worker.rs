//! A worker's mutable state (one per Envoy worker thread): counts not yet flushed to the
//! host, its copy of the suspect list, its cookie nonces, the NGINX hashes it learned and,
//! with a mirror, its outbox. The background tick lives here too.

use super::handoff_values::HandoffValues;
use super::Profile;
use crate::codec::sealed::NonceSequence;
use crate::host::Host;
use crate::mirror::lease::Buckets;
use crate::mirror::record::Record;
use crate::mirror::writer::Writer;
use crate::persistence::learned_hashes::LearnedHashes;
use crate::stats::{Counter, LocalCounts};
use crate::suspect::SuspectList;

/// A handoff that Envoy ignored is logged at most once per this (README "Stats").
pub const HANDOFF_WARNING_EVERY_MS: u64 = 60_000;

#[derive(Debug)]
pub struct Worker {
    pub counts: LocalCounts,
    pub suspects: SuspectList,
    pub(crate) nonces: NonceSequence,
    pub(crate) hashes: LearnedHashes,
    /// With `mirror`: bindings this worker changed, on their way to etcd.
    pub(crate) outbox: Option<Writer>,
    /// Named requests answered without the stateful_session response header: every
    /// [`super::handoff::CHECK_EVERY`]th checks who really answered.
    pub(crate) unchecked_answers: u32,
    /// The hand-off header value of each server named lately.
    pub(crate) handoff_values: HandoffValues,
    last_handoff_warning_ms: Option<u64>,
}

fn random_prefix(host: &dyn Host) -> Option<[u8; 8]> {
    let mut p = [0u8; 8];
    host.random(&mut p).then_some(p)
}

impl Worker {
    pub fn new(profile: &Profile, host: &dyn Host) -> Result<Worker, String> {
        let prefix = random_prefix(host).ok_or("no randomness for cookie nonces")?;
        let outbox = match (&profile.mirror, profile.persistence.table()) {
            (Some(m), Some(t)) => Some(Writer::new(
                m.keys.clone(),
                t.timeouts,
                Buckets::for_timeout(profile.config.timeout),
            )),
            _ => None,
        };
        Ok(Worker {
            counts: LocalCounts::default(),
            suspects: SuspectList::default(),
            nonces: NonceSequence::new(prefix),
            hashes: profile.persistence.learned_hashes(&profile.config.name),
            outbox,
            unchecked_answers: 0,
            handoff_values: HandoffValues::default(),
            last_handoff_warning_ms: None,
        })
    }

    /// With `mirror`: the bindings this worker changed since the last call, taken out of its
    /// outbox for another writer ([`Worker::queue_for_mirror`]). The native module sends
    /// every worker thread's changes from its main thread (README "Native module").
    pub fn take_mirror_queue(&mut self) -> Vec<Record> {
        self.outbox
            .as_mut()
            .map(Writer::take_queued)
            .unwrap_or_default()
    }

    /// Queues bindings another worker changed into this worker's outbox (a full outbox
    /// drops them, counted as `mirror_error`).
    pub fn queue_for_mirror(&mut self, records: impl IntoIterator<Item = Record>) {
        let Some(outbox) = self.outbox.as_mut() else {
            return;
        };
        for r in records {
            if !outbox.queue(r) {
                self.counts.mirror_errors += 1;
            }
        }
    }

    pub fn count(&mut self, c: Counter) {
        self.counts.add(c);
    }

    /// A fresh nonce; re-seeds the prefix from the host's randomness when exhausted.
    pub(crate) fn next_nonce(&mut self, host: &dyn Host) -> Option<[u8; 12]> {
        if let Some(n) = self.nonces.next_nonce() {
            return Some(n);
        }
        self.nonces = NonceSequence::new(random_prefix(host)?);
        self.nonces.next_nonce()
    }

    /// The background work of every [`super::TICK`]: sweep this worker's share of lapsed
    /// table entries, hand the counts and the `entries` delta to the host, and re-read the
    /// suspect list when another worker changed it.
    pub fn tick(&mut self, profile: &Profile, host: &dyn Host) {
        let now = host.now_ms();
        if let (Some(table), Some(now)) = (profile.persistence.table(), now) {
            match table.sweep(host, now) {
                Ok(n) => self.counts.table_sweep(n),
                Err(_) => self.count(Counter::Error),
            }
        }
        self.flush_stats(profile, host, now);
        if !profile.config.suspect_for.is_zero() {
            if let Some(now) = now {
                if self
                    .suspects
                    .refresh(host, &profile.suspect_key, now)
                    .is_err()
                {
                    self.count(Counter::Error);
                }
            }
        }
    }

    /// Hands the counts and the `entries` delta to the host (part of [`Worker::tick`]; a host
    /// without a per-worker timer calls it after each request so that counts never wait for
    /// the next request of an idle worker).
    pub fn flush_stats(&mut self, profile: &Profile, host: &dyn Host, now: Option<u64>) {
        if let Some(gauge) = profile.entries_gauge {
            let delta = std::mem::take(&mut self.counts.entries);
            if delta != 0 && host.add_to_gauge(gauge, delta).is_err() {
                self.count(Counter::Error);
            }
        }
        let lookup_errors = std::mem::take(&mut self.counts.mirror_errors);
        if let (Some(m), true) = (&profile.mirror, lookup_errors > 0) {
            let _ = host.increment_counter(m.error, lookup_errors);
        }
        let ignored = std::mem::take(&mut self.counts.handoff_ignored);
        if ignored > 0 {
            let _ = host.increment_counter(profile.handoff_ignored, ignored);
            let now = now.unwrap_or(0);
            let due = self
                .last_handoff_warning_ms
                .is_none_or(|t| now.saturating_sub(t) >= HANDOFF_WARNING_EVERY_MS);
            if due {
                self.last_handoff_warning_ms = Some(now);
                log::warn!(
                    "envoy-persist: profile {}: {ignored} request(s) named a server through \
                     `{}` that Envoy ignored (is envoy.filters.http.stateful_session with \
                     the header session state placed right after this filter?)",
                    profile.config.name,
                    profile.config.upstream_header
                );
            }
        }
        for (counter, n) in self.counts.drain() {
            if let Some(id) = profile.counter_id(counter) {
                // A failed increment loses counts, nothing else.
                let _ = host.increment_counter(id, n);
            }
        }
    }
}

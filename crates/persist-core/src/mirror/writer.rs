//! The write side of the mirror, one per worker: bindings this worker changed wait in an
//! outbox (one pending write per key: a newer change of the same key replaces it), and are
//! sent as one etcd `Txn` of up to [`MAX_OPS`] puts at a time, each under its time
//! bucket's lease ([`super::lease`]). At most one call is in flight; a failure puts the
//! batch back (unless the key changed meanwhile) and backs off.

use super::backoff::Backoff;
use super::lease::{Buckets, Leases, MIN_TTL_S};
use super::proto::{LeaseGrantRequest, LeaseGrantResponse, PutRequest, RequestOp, TxnRequest};
use super::record::{encode_value, KeySpace, Record};
use crate::table::entry::Timeouts;
use prost::Message;
use std::collections::HashMap;

/// etcd's default `--max-txn-ops`.
pub const MAX_OPS: usize = 128;
/// Keys waiting at most, per worker; beyond that new ones are dropped (and counted).
pub const OUTBOX_CAP: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Queued {
    record: Record,
    expires_at_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    Nothing,
    Grant { bucket: u64 },
    Put { batch: Vec<Queued> },
}

/// The next etcd call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `Lease/LeaseGrant` with this request.
    Grant(Vec<u8>),
    /// `KV/Txn` with this request, putting this many keys.
    Put(Vec<u8>, usize),
}

#[derive(Debug, Clone)]
pub struct Writer {
    keys: KeySpace,
    buckets: Buckets,
    timeouts: Timeouts,
    outbox: HashMap<[u8; 16], Queued>,
    leases: Leases,
    in_flight: InFlight,
    backoff: Backoff,
}

impl Writer {
    pub fn new(keys: KeySpace, timeouts: Timeouts, buckets: Buckets) -> Writer {
        Writer {
            keys,
            buckets,
            timeouts,
            outbox: HashMap::new(),
            leases: Leases::default(),
            in_flight: InFlight::Nothing,
            backoff: Backoff::default(),
        }
    }

    /// Queues a changed binding; `false` when the outbox is full and it was dropped.
    pub fn queue(&mut self, record: Record) -> bool {
        let pending = Queued {
            record,
            expires_at_s: self.timeouts.expires_at(record.created, record.last_use),
        };
        if self.outbox.len() >= OUTBOX_CAP && !self.outbox.contains_key(&record.digest) {
            return false;
        }
        self.outbox.insert(record.digest, pending);
        true
    }

    /// Takes every queued binding out (the native module hands them from its worker threads
    /// to the one writer that sends them: README "Native module").
    pub fn take_queued(&mut self) -> Vec<Record> {
        self.outbox.drain().map(|(_, q)| q.record).collect()
    }

    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    pub fn busy(&self) -> bool {
        self.in_flight != InFlight::Nothing
    }

    /// The next call, if nothing is in flight, the backoff allows and there is work.
    pub fn next_call(&mut self, now_ms: u64) -> Option<Call> {
        if self.busy() || !self.backoff.ready(now_ms) {
            return None;
        }
        let now_s = now_ms / 1000;
        self.leases.prune(&self.buckets, now_s);
        let soon = now_s.saturating_add(MIN_TTL_S);
        self.outbox.retain(|_, p| p.expires_at_s > soon);
        let mut ready = Vec::new();
        let mut missing = None;
        for (digest, p) in &self.outbox {
            let bucket = self.buckets.of(p.expires_at_s);
            if self.leases.get(bucket).is_some() {
                ready.push(*digest);
                if ready.len() >= MAX_OPS {
                    break;
                }
            } else if missing.is_none() {
                missing = Some(bucket);
            }
        }
        if ready.is_empty() {
            let bucket = missing?;
            self.in_flight = InFlight::Grant { bucket };
            let req = LeaseGrantRequest {
                ttl: self.buckets.ttl_s(bucket, now_s),
                id: 0,
            };
            return Some(Call::Grant(req.encode_to_vec()));
        }
        let mut batch = Vec::with_capacity(ready.len());
        let mut txn = TxnRequest::default();
        for digest in ready {
            let Some(p) = self.outbox.remove(&digest) else {
                continue;
            };
            let lease = self
                .leases
                .get(self.buckets.of(p.expires_at_s))
                .unwrap_or_default();
            txn.success.push(RequestOp {
                request_put: Some(PutRequest {
                    key: self.keys.key(&p.record.digest),
                    value: encode_value(
                        p.record.server,
                        p.record.created,
                        p.record.last_use,
                        p.record.cluster,
                    ),
                    lease,
                }),
            });
            batch.push(p);
        }
        let n = batch.len();
        self.in_flight = InFlight::Put { batch };
        Some(Call::Put(txn.encode_to_vec(), n))
    }

    /// The answer to a `Grant` (`None`: the call failed).
    pub fn granted(&mut self, body: Option<&[u8]>, now_ms: u64) -> bool {
        let InFlight::Grant { bucket } = std::mem::replace(&mut self.in_flight, InFlight::Nothing)
        else {
            return false;
        };
        let resp = body.and_then(super::proto::decode::<LeaseGrantResponse>);
        match resp {
            Some(r) if r.id != 0 && r.error.is_empty() => {
                self.leases.insert(bucket, r.id);
                self.backoff.succeed();
                true
            }
            _ => {
                self.backoff.fail(now_ms);
                false
            }
        }
    }

    /// The answer to a `Put`: returns the number of keys written (0 on failure, when the
    /// batch goes back to the outbox, except keys changed meanwhile).
    pub fn put_done(&mut self, ok: bool, now_ms: u64) -> usize {
        let InFlight::Put { batch } = std::mem::replace(&mut self.in_flight, InFlight::Nothing)
        else {
            return 0;
        };
        if ok {
            self.backoff.succeed();
            return batch.len();
        }
        // A lease etcd no longer knows fails the whole Txn: grant afresh.
        self.leases.clear();
        self.backoff.fail(now_ms);
        for p in batch {
            if self.outbox.len() < OUTBOX_CAP {
                self.outbox.entry(p.record.digest).or_insert(p);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::decode;
    use super::*;
    use std::time::Duration;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW_S: u32 = 1_700_000_000;

    fn writer() -> Writer {
        let t = Duration::from_secs(100);
        Writer::new(
            KeySpace::new("/p/", "x", &[1; 32]),
            Timeouts::new(t, None),
            Buckets::for_timeout(t),
        )
    }

    fn rec(n: u8, server: &str, at: u32) -> Record {
        Record {
            digest: [n; 16],
            server: server.parse().unwrap(),
            created: at,
            last_use: at,
            cluster: 0,
        }
    }

    fn grant_answer(id: i64) -> Vec<u8> {
        LeaseGrantResponse {
            id,
            ttl: 100,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn grants_a_lease_then_puts_a_coalesced_batch() {
        let mut w = writer();
        assert_eq!(w.next_call(NOW_MS), None, "nothing to do");
        assert!(w.queue(rec(1, "10.0.0.1:80", NOW_S)));
        assert!(w.queue(rec(2, "10.0.0.2:80", NOW_S)));
        // Key 1 changed again before it was sent: one write, the newer one.
        assert!(w.queue(rec(1, "10.0.0.3:80", NOW_S)));
        assert_eq!(w.queued(), 2);
        let Some(Call::Grant(req)) = w.next_call(NOW_MS) else {
            panic!("a lease first")
        };
        let req: LeaseGrantRequest = decode(&req).unwrap();
        // Expiry NOW+100 s lies in the bucket ending at the next multiple of 10 s.
        assert!((100..=110).contains(&req.ttl), "{}", req.ttl);
        assert_eq!(w.next_call(NOW_MS), None, "one call in flight at a time");
        assert!(w.granted(Some(&grant_answer(77)), NOW_MS));
        let Some(Call::Put(txn, 2)) = w.next_call(NOW_MS) else {
            panic!("a put of both keys")
        };
        let txn: TxnRequest = decode(&txn).unwrap();
        let mut puts: Vec<_> = txn
            .success
            .into_iter()
            .map(|op| op.request_put.unwrap())
            .collect();
        puts.sort_by(|a, b| a.key.cmp(&b.key));
        let id = crate::table::secret::HashKey::new(&[1; 32]).id();
        assert_eq!(
            puts[0].key,
            format!("/p/x/{id}/01010101010101010101010101010101").into_bytes()
        );
        assert_eq!(
            puts[0].value,
            format!("10.0.0.3:80 {NOW_S} {NOW_S}").into_bytes()
        );
        assert!(puts.iter().all(|p| p.lease == 77));
        assert_eq!(w.put_done(true, NOW_MS), 2);
        assert_eq!(w.queued(), 0);
        // The lease is reused for the next key of the same bucket: no second grant.
        w.queue(rec(3, "10.0.0.1:80", NOW_S));
        assert!(matches!(w.next_call(NOW_MS), Some(Call::Put(_, 1))));
    }

    #[test]
    fn a_failed_put_goes_back_keeps_newer_changes_and_backs_off() {
        let mut w = writer();
        w.queue(rec(1, "10.0.0.1:80", NOW_S));
        w.next_call(NOW_MS);
        w.granted(Some(&grant_answer(5)), NOW_MS);
        assert!(matches!(w.next_call(NOW_MS), Some(Call::Put(_, 1))));
        // Meanwhile the key was rebound.
        w.queue(rec(1, "10.0.0.9:80", NOW_S + 1));
        assert_eq!(w.put_done(false, NOW_MS), 0);
        assert_eq!(w.queued(), 1);
        assert_eq!(w.next_call(NOW_MS + 100), None, "backing off");
        // Leases were forgotten: grant again, then the newer binding is written.
        assert!(matches!(w.next_call(NOW_MS + 250), Some(Call::Grant(_))));
        assert!(w.granted(Some(&grant_answer(6)), NOW_MS + 260));
        let Some(Call::Put(txn, 1)) = w.next_call(NOW_MS + 260) else {
            panic!()
        };
        let txn: TxnRequest = decode(&txn).unwrap();
        let put = txn.success[0].request_put.clone().unwrap();
        assert!(put.value.starts_with(b"10.0.0.9:80 "));
        assert_eq!(put.lease, 6);
    }

    #[test]
    fn failed_grants_back_off_and_lapsed_keys_are_dropped() {
        let mut w = writer();
        w.queue(rec(1, "10.0.0.1:80", NOW_S));
        assert!(matches!(w.next_call(NOW_MS), Some(Call::Grant(_))));
        assert!(!w.granted(None, NOW_MS));
        assert!(!w.granted(Some(b"\xff"), NOW_MS), "nothing in flight");
        assert_eq!(w.next_call(NOW_MS + 10), None);
        // 100 s later the binding lapsed: nothing left to mirror.
        assert_eq!(w.next_call(NOW_MS + 100_000), None);
        assert_eq!(w.queued(), 0);
    }

    #[test]
    fn batches_are_bounded_and_the_outbox_too() {
        let mut w = writer();
        w.leases.insert(w.buckets.of(u64::from(NOW_S) + 100), 1);
        for i in 0..200u32 {
            let mut r = rec(0, "10.0.0.1:80", NOW_S);
            r.digest[..4].copy_from_slice(&i.to_le_bytes());
            w.queue(r);
        }
        assert!(matches!(w.next_call(NOW_MS), Some(Call::Put(_, MAX_OPS))));
        assert_eq!(w.put_done(true, NOW_MS), MAX_OPS);
        assert!(matches!(w.next_call(NOW_MS), Some(Call::Put(_, 72))));
        let mut full = writer();
        for i in 0..OUTBOX_CAP as u32 {
            let mut r = rec(0, "10.0.0.1:80", NOW_S);
            r.digest[..4].copy_from_slice(&i.to_le_bytes());
            assert!(full.queue(r));
        }
        assert!(!full.queue(rec(0xee, "10.0.0.1:80", NOW_S)));
    }

    #[test]
    fn queued_bindings_can_be_taken_out_whole() {
        let mut w = writer();
        w.queue(rec(1, "10.0.0.1:80", NOW_S));
        w.queue(rec(2, "10.0.0.2:80", NOW_S));
        w.queue(rec(1, "10.0.0.3:80", NOW_S + 1));
        let mut taken = w.take_queued();
        taken.sort_by_key(|r| r.digest);
        assert_eq!(
            taken,
            vec![
                rec(1, "10.0.0.3:80", NOW_S + 1),
                rec(2, "10.0.0.2:80", NOW_S)
            ]
        );
        assert_eq!(w.queued(), 0);
        assert_eq!(w.next_call(NOW_MS), None, "nothing left to send here");
    }
}

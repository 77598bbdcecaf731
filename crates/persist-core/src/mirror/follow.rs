//! The read side of the mirror, run by one worker per Envoy ([`super::role`]): load the
//! profile's whole key range (paginated `Range` at one snapshot revision), then `Watch` it
//! from the next revision, so that no write is missed between the two. Every failure, a
//! closed stream, or a watch etcd cancels (e.g. its start revision was compacted) starts
//! over with a fresh load after a backoff.

use super::backoff::Backoff;
use super::proto::{
    decode, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest, WatchResponse,
    EVENT_PUT, FILTER_NODELETE,
};
use super::record::{KeySpace, Record};
use prost::Message;

/// Keys per `Range` page while loading.
pub const PAGE: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing open; a load starts when the backoff allows.
    Idle,
    /// Loading pages at this snapshot revision (0 until the first page answered).
    Loading { revision: i64 },
    /// The watch stream is open (`connected` once etcd confirmed it).
    Watching { connected: bool },
}

/// What to do after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// `KV/Range` with this request.
    Range(Vec<u8>),
    /// Open the `Watch` stream and send this request on it.
    Watch(Vec<u8>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchUpdate {
    /// PUT events of this profile, in etcd's order.
    pub records: Vec<Record>,
    /// Events received (PUTs, including ones that did not decode).
    pub events: u64,
    /// The watch was just confirmed.
    pub connected: bool,
    /// etcd ended the watch: start over (the stream should be closed).
    pub lost: bool,
}

#[derive(Debug, Clone)]
pub struct Follower {
    keys: KeySpace,
    phase: Phase,
    backoff: Backoff,
}

impl Follower {
    pub fn new(keys: KeySpace) -> Follower {
        Follower {
            keys,
            phase: Phase::Idle,
            backoff: Backoff::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn connected(&self) -> bool {
        self.phase == Phase::Watching { connected: true }
    }

    fn page(&self, from: Vec<u8>, revision: i64) -> Vec<u8> {
        RangeRequest {
            key: from,
            range_end: self.keys.end(),
            limit: PAGE,
            revision,
            serializable: false,
        }
        .encode_to_vec()
    }

    /// The first `Range` of a load, when idle and the backoff allows.
    pub fn start(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.phase != Phase::Idle || !self.backoff.ready(now_ms) {
            return None;
        }
        self.phase = Phase::Loading { revision: 0 };
        Some(self.page(self.keys.start().to_vec(), 0))
    }

    /// A `Range` page answered: its records, and the next page or the watch.
    pub fn on_range(&mut self, body: &[u8], now_ms: u64) -> (Vec<Record>, Next) {
        let Phase::Loading { revision } = self.phase else {
            return (Vec::new(), Next::Nothing);
        };
        let Some(resp) = decode::<RangeResponse>(body) else {
            self.failed(now_ms);
            return (Vec::new(), Next::Nothing);
        };
        let revision = if revision == 0 {
            resp.header.as_ref().map_or(0, |h| h.revision)
        } else {
            revision
        };
        let records = resp
            .kvs
            .iter()
            .filter_map(|kv| self.keys.record(&kv.key, &kv.value))
            .collect();
        let last = resp.kvs.last().map(|kv| kv.key.clone());
        match (resp.more, last) {
            (true, Some(mut after)) => {
                after.push(0);
                self.phase = Phase::Loading { revision };
                (records, Next::Range(self.page(after, revision)))
            }
            _ => {
                self.phase = Phase::Watching { connected: false };
                let req = WatchRequest {
                    create_request: Some(WatchCreateRequest {
                        key: self.keys.start().to_vec(),
                        range_end: self.keys.end(),
                        start_revision: revision.saturating_add(1),
                        filters: vec![FILTER_NODELETE],
                    }),
                };
                (records, Next::Watch(req.encode_to_vec()))
            }
        }
    }

    /// A message on the watch stream.
    pub fn on_watch(&mut self, body: &[u8], now_ms: u64) -> WatchUpdate {
        let mut update = WatchUpdate::default();
        let Phase::Watching { connected } = self.phase else {
            return update;
        };
        let Some(resp) = decode::<WatchResponse>(body) else {
            self.failed(now_ms);
            update.lost = true;
            return update;
        };
        if resp.canceled || resp.compact_revision != 0 {
            self.failed(now_ms);
            update.lost = true;
            return update;
        }
        if resp.created && !connected {
            self.phase = Phase::Watching { connected: true };
            self.backoff.succeed();
            update.connected = true;
        }
        for ev in resp.events.iter().filter(|e| e.r#type == EVENT_PUT) {
            update.events += 1;
            if let Some(kv) = &ev.kv {
                if let Some(r) = self.keys.record(&kv.key, &kv.value) {
                    update.records.push(r);
                }
            }
        }
        update
    }

    /// A call failed or the stream closed: idle, and back off before loading again.
    pub fn failed(&mut self, now_ms: u64) {
        self.phase = Phase::Idle;
        self.backoff.fail(now_ms);
    }
}

/// The `Range` a request makes for its own key on a local miss: one key, from the member
/// that answers (serializable: no quorum round, the watch keeps members close anyway).
pub fn lookup_request(keys: &KeySpace, digest: &[u8; 16]) -> Vec<u8> {
    RangeRequest {
        key: keys.key(digest),
        range_end: Vec::new(),
        limit: 1,
        revision: 0,
        serializable: true,
    }
    .encode_to_vec()
}

/// The binding in a lookup's answer, if any.
pub fn lookup_answer(keys: &KeySpace, body: &[u8]) -> Option<Record> {
    let resp = decode::<RangeResponse>(body)?;
    let kv = resp.kvs.first()?;
    keys.record(&kv.key, &kv.value)
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Event, KeyValue, ResponseHeader};
    use super::super::record::encode_value;
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ks() -> KeySpace {
        KeySpace::new("/p/", "x", &[1; 32])
    }

    fn kv(n: u8, server: &str) -> KeyValue {
        KeyValue {
            key: ks().key(&[n; 16]),
            mod_revision: 1,
            value: encode_value(server.parse().unwrap(), 10, 20, 0),
            lease: 1,
        }
    }

    fn range(revision: i64, kvs: Vec<KeyValue>, more: bool) -> Vec<u8> {
        RangeResponse {
            header: Some(ResponseHeader {
                revision,
                ..Default::default()
            }),
            kvs,
            more,
        }
        .encode_to_vec()
    }

    #[test]
    fn loads_every_page_at_one_revision_then_watches_from_the_next() {
        let mut f = Follower::new(ks());
        let first: RangeRequest = decode(&f.start(0).unwrap()).unwrap();
        let id = crate::table::secret::HashKey::new(&[1; 32]).id();
        assert_eq!(
            (first.key, first.range_end),
            (
                format!("/p/x/{id}/").into_bytes(),
                format!("/p/x/{id}0").into_bytes()
            )
        );
        assert_eq!((first.revision, first.limit), (0, PAGE));
        assert_eq!(f.start(0), None, "already loading");
        let (recs, next) = f.on_range(
            &range(42, vec![kv(1, "1.1.1.1:1"), kv(2, "2.2.2.2:2")], true),
            0,
        );
        assert_eq!(recs.len(), 2);
        let Next::Range(req) = next else { panic!() };
        let second: RangeRequest = decode(&req).unwrap();
        let mut after = ks().key(&[2; 16]);
        after.push(0);
        assert_eq!((second.key, second.revision), (after, 42));
        // A later page reports a newer header revision: the snapshot stays at 42.
        let (recs, next) = f.on_range(&range(50, vec![kv(3, "3.3.3.3:3")], false), 0);
        assert_eq!(recs[0].server, "3.3.3.3:3".parse().unwrap());
        let Next::Watch(req) = next else { panic!() };
        let w: WatchRequest = decode(&req).unwrap();
        let c = w.create_request.unwrap();
        assert_eq!((c.start_revision, c.filters), (43, vec![FILTER_NODELETE]));
        assert!(!f.connected());
        let created = WatchResponse {
            created: true,
            ..Default::default()
        };
        let u = f.on_watch(&created.encode_to_vec(), 0);
        assert!(u.connected && f.connected());
        let events = WatchResponse {
            events: vec![
                Event {
                    r#type: EVENT_PUT,
                    kv: Some(kv(4, "4.4.4.4:4")),
                },
                Event {
                    r#type: EVENT_PUT,
                    kv: Some(KeyValue {
                        key: b"/p/x/zz".to_vec(),
                        ..kv(5, "5.5.5.5:5")
                    }),
                },
                Event {
                    r#type: 1,
                    kv: Some(kv(6, "6.6.6.6:6")),
                },
            ],
            ..Default::default()
        };
        let u = f.on_watch(&events.encode_to_vec(), 0);
        assert_eq!((u.events, u.records.len(), u.connected), (2, 1, false));
    }

    #[test]
    fn failures_and_cancelled_watches_start_over_after_a_backoff() {
        let mut f = Follower::new(ks());
        f.start(0);
        let (_, next) = f.on_range(b"\xff\xff", 0);
        assert_eq!(next, Next::Nothing);
        assert_eq!(f.phase(), Phase::Idle);
        assert_eq!(f.start(100), None, "backing off");
        assert!(f.start(250).is_some());
        f.on_range(&range(7, vec![], false), 250);
        let cancelled = WatchResponse {
            canceled: true,
            compact_revision: 5,
            ..Default::default()
        };
        assert!(f.on_watch(&cancelled.encode_to_vec(), 300).lost);
        assert_eq!(f.phase(), Phase::Idle);
        assert_eq!(f.start(400), None);
        assert!(f.start(800).is_some());
    }

    #[test]
    fn lookups() {
        let req: RangeRequest = decode(&lookup_request(&ks(), &[9; 16])).unwrap();
        assert_eq!(req.key, ks().key(&[9; 16]));
        assert!(req.serializable && req.range_end.is_empty());
        let found = lookup_answer(&ks(), &range(3, vec![kv(9, "9.9.9.9:9")], false)).unwrap();
        assert_eq!(
            (found.digest, found.created, found.last_use),
            ([9; 16], 10, 20)
        );
        assert_eq!(lookup_answer(&ks(), &range(3, vec![], false)), None);
        assert_eq!(lookup_answer(&ks(), b"garbage"), None);
    }
}

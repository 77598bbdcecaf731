//! The mirror's host side (SPEC 2.4; the logic is in `persist_core::mirror`): the gRPC calls
//! to etcd and their answers, driven from the root context of each worker. Every worker
//! writes its own outbox; the one holding the watcher role loads and watches the prefix.
//! Nothing here runs on a request: the request path only queues ([`queue`]) and looks up
//! a missing key ([`crate::http`]).

use crate::host::{self, HostStore};
use crate::root::{Profile, Worker};
use persist_core::mirror::follow::{Follower, Next};
use persist_core::mirror::proto::{KV, LEASE, WATCH};
use persist_core::mirror::record::{KeySpace, Record};
use persist_core::mirror::role;
use persist_core::mirror::writer::Call;
use persist_core::stats::Counter;
use persist_core::table::slot::Effect;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Unary calls of the background (puts, lease grants, load pages) give up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared once from the `mirror` section.
pub struct Setup {
    pub keys: KeySpace,
    /// Serialized `GrpcService` naming the etcd cluster.
    pub service: String,
    pub timeout: Duration,
    pub role_key: String,
    pub put: u32,
    pub event: u32,
    pub error: u32,
    pub connected: u32,
}

/// What a pending unary call of the root was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Grant,
    Put,
    Range,
}

/// One per worker VM, only with `mirror`.
pub struct Driver {
    profile: Rc<Profile>,
    setup: Rc<Setup>,
    worker: Rc<RefCell<Worker>>,
    me: u64,
    follower: Follower,
    holding: bool,
    calls: Vec<(u32, Pending)>,
    stream: Option<u32>,
}

fn bump(metric: u32, n: u64) {
    if n > 0 {
        let _ = host::increment(metric, n);
    }
}

impl Driver {
    pub fn new(
        profile: Rc<Profile>,
        setup: Rc<Setup>,
        worker: Rc<RefCell<Worker>>,
        me: u64,
    ) -> Driver {
        Driver {
            follower: Follower::new(setup.keys.clone()),
            profile,
            setup,
            worker,
            me,
            holding: false,
            calls: Vec::new(),
            stream: None,
        }
    }

    fn error(&self) {
        bump(self.setup.error, 1);
    }

    fn set_connected(&self, up: bool) {
        let _ = host::set_gauge(self.setup.connected, u64::from(up));
    }

    /// The worker's tick: hold (or try to take) the watcher role, start a load when due,
    /// and send the outbox.
    pub fn tick(&mut self, now_ms: u64) {
        match role::hold(&HostStore, &self.setup.role_key, self.me, now_ms) {
            Ok(true) => {
                self.holding = true;
                if let Some(req) = self.follower.start(now_ms) {
                    self.call(Pending::Range, KV, "Range", &req, now_ms);
                }
            }
            Ok(false) | Err(_) => {
                if self.holding {
                    // Another worker took over (this one stalled): let go of the watch.
                    self.holding = false;
                    if let Some(t) = self.stream.take() {
                        host::grpc_cancel_stream(t);
                    }
                    self.follower = Follower::new(self.setup.keys.clone());
                }
            }
        }
        self.write(now_ms);
    }

    fn call(&mut self, what: Pending, service: &str, method: &str, req: &[u8], now_ms: u64) {
        match host::grpc_call(&self.setup.service, service, method, req, CALL_TIMEOUT) {
            Ok(token) => self.calls.push((token, what)),
            Err(_) => {
                self.error();
                self.answered(what, None, now_ms);
            }
        }
    }

    /// Sends the next outbox batch (or the lease it needs), if nothing is in flight.
    fn write(&mut self, now_ms: u64) {
        let call = match self.worker.try_borrow_mut() {
            Ok(mut w) => w.writer.as_mut().and_then(|wr| wr.next_call(now_ms)),
            Err(_) => None,
        };
        match call {
            Some(Call::Grant(req)) => self.call(Pending::Grant, LEASE, "LeaseGrant", &req, now_ms),
            Some(Call::Put(req, _)) => self.call(Pending::Put, KV, "Txn", &req, now_ms),
            None => {}
        }
    }

    /// A unary call answered (`status` 0) or failed; `false` if the token is not ours.
    pub fn on_call_response(&mut self, token: u32, status: u32, size: usize, now_ms: u64) -> bool {
        let Some(i) = self.calls.iter().position(|(t, _)| *t == token) else {
            return false;
        };
        let (_, what) = self.calls.swap_remove(i);
        let body = if status == 0 {
            host::grpc_body(size).or(Some(Vec::new()))
        } else {
            self.error();
            None
        };
        self.answered(what, body, now_ms);
        true
    }

    fn answered(&mut self, what: Pending, body: Option<Vec<u8>>, now_ms: u64) {
        match what {
            Pending::Grant => {
                let ok = match self.worker.try_borrow_mut() {
                    Ok(mut w) => w
                        .writer
                        .as_mut()
                        .is_some_and(|wr| wr.granted(body.as_deref(), now_ms)),
                    Err(_) => false,
                };
                if ok {
                    self.write(now_ms);
                }
            }
            Pending::Put => {
                let n = match self.worker.try_borrow_mut() {
                    Ok(mut w) => w
                        .writer
                        .as_mut()
                        .map_or(0, |wr| wr.put_done(body.is_some(), now_ms)),
                    Err(_) => 0,
                };
                bump(self.setup.put, n as u64);
                if n > 0 {
                    self.write(now_ms);
                }
            }
            Pending::Range => {
                let Some(body) = body else {
                    self.follower.failed(now_ms);
                    self.set_connected(false);
                    return;
                };
                let (records, next) = self.follower.on_range(&body, now_ms);
                // Ask for the next page (or open the watch) first: etcd prepares it while
                // this page is merged.
                match next {
                    Next::Range(req) => self.call(Pending::Range, KV, "Range", &req, now_ms),
                    Next::Watch(req) => self.open_watch(&req, now_ms),
                    Next::Nothing => {}
                }
                self.apply(&records, now_ms);
            }
        }
    }

    fn open_watch(&mut self, req: &[u8], now_ms: u64) {
        match host::grpc_stream(&self.setup.service, WATCH, "Watch", req) {
            Ok(token) => self.stream = Some(token),
            Err(_) => {
                self.error();
                self.follower.failed(now_ms);
            }
        }
    }

    /// A message on the watch stream; `false` if the token is not ours.
    pub fn on_stream_message(&mut self, token: u32, size: usize, now_ms: u64) -> bool {
        if self.stream != Some(token) {
            return false;
        }
        let body = host::grpc_body(size).unwrap_or_default();
        let update = self.follower.on_watch(&body, now_ms);
        if update.connected {
            self.set_connected(true);
        }
        bump(self.setup.event, update.events);
        self.apply(&update.records, now_ms);
        if update.lost {
            if let Some(t) = self.stream.take() {
                host::grpc_cancel_stream(t);
            }
            self.set_connected(false);
        }
        true
    }

    /// The watch stream closed; `false` if the token is not ours.
    pub fn on_stream_close(&mut self, token: u32, now_ms: u64) -> bool {
        if self.stream != Some(token) {
            return false;
        }
        self.stream = None;
        self.error();
        self.follower.failed(now_ms);
        self.set_connected(false);
        true
    }

    /// Merges bindings learned from etcd into the local table.
    fn apply(&self, records: &[Record], now_ms: u64) {
        if records.is_empty() {
            return;
        }
        let Some(table) = &self.profile.table else {
            return;
        };
        let now_s = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            return;
        };
        for r in records {
            let key = table.key_of_digest(r.digest);
            match table.merge(&HostStore, key, r.server, r.created, r.last_use, now_s) {
                Ok(e) => account_merge(&mut w, &e),
                Err(_) => w.count(Counter::Error),
            }
        }
    }
}

/// A merge changes the table, not a request's outcome: `entries`, `expired`, `evicted`
/// only.
pub fn account_merge(w: &mut Worker, e: &Effect) {
    w.pending.add_n(Counter::Expired, u64::from(e.expired));
    w.pending.add_n(Counter::Evicted, u64::from(e.evicted));
    w.pending.entries = w.pending.entries.saturating_add(e.entries_delta());
}

/// Queues a binding this worker changed for etcd (no-op without `mirror`).
pub fn queue(w: &mut Worker, digest: [u8; 16], e: &Effect) {
    let (Some(writer), Some(bound)) = (w.writer.as_mut(), e.bound) else {
        return;
    };
    let record = Record {
        digest,
        server: bound.server,
        created: bound.created,
        last_use: bound.last_use,
    };
    if !writer.queue(record) {
        w.pending.mirror_errors += 1;
    }
}

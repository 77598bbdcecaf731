//! The mirror's calls to etcd, driven from each worker's background context (README "More
//! than one Envoy"); the native module runs one driver per configuration on Envoy's main
//! thread instead (persist-native's `background`, README "Native module"), whose outbox
//! gathers every worker thread's changes. Every worker sends its own outbox; the one holding the watcher role
//! ([`super::role`]) loads and watches the profile's prefix and merges what it receives
//! into the local table. Nothing here runs on a request: the request path only queues and
//! looks up a missing key ([`crate::persistence::table`]). The host carries the calls
//! ([`crate::host::GrpcHost`]) and hands their answers back by token.

use super::follow::{Follower, Next};
use super::proto::{grpc_service, KV, LEASE, WATCH};
use super::record::{KeySpace, Record};
use super::role;
use super::writer::Call;
use crate::config::MirrorConfig;
use crate::flow::{Profile, Worker};
use crate::host::{GrpcTarget, Host, MetricId, MetricKind};
use crate::stats::{self, Counter};
use std::time::Duration;

/// Unary calls of the background (puts, lease grants, load pages) give up after this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared once from the `mirror` section.
#[derive(Debug)]
pub struct MirrorSetup {
    pub keys: KeySpace,
    /// The etcd cluster.
    pub service: GrpcTarget,
    pub timeout: Duration,
    pub role_key: String,
    pub put: MetricId,
    pub event: MetricId,
    pub error: MetricId,
    pub connected: MetricId,
}

impl MirrorSetup {
    pub fn new(m: &MirrorConfig, profile: &str, host: &dyn Host) -> Result<MirrorSetup, String> {
        if host.grpc().is_none() {
            return Err(
                "mirror: this build of the filter cannot reach etcd (no gRPC client)".into(),
            );
        }
        let define = |stat, kind| crate::flow::define_stat(host, kind, profile, stat);
        Ok(MirrorSetup {
            keys: KeySpace::new(&m.prefix, profile, &m.secret),
            service: GrpcTarget {
                cluster: m.cluster.clone(),
                grpc_service: String::from_utf8(grpc_service(&m.cluster))
                    .map_err(|_| "mirror.cluster: name too long".to_string())?,
            },
            timeout: m.timeout,
            role_key: format!("persist.{profile}.mirror.watcher"),
            put: define(stats::MIRROR_PUT, MetricKind::Counter)?,
            event: define(stats::MIRROR_EVENT, MetricKind::Counter)?,
            error: define(stats::MIRROR_ERROR, MetricKind::Counter)?,
            connected: define(stats::MIRROR_CONNECTED, MetricKind::Gauge)?,
        })
    }
}

/// What a unary call of the driver was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPurpose {
    Grant,
    Put,
    Range,
}

/// One per worker, only with `mirror`.
#[derive(Debug)]
pub struct Driver {
    me: u64,
    follower: Follower,
    holding: bool,
    calls: Vec<(u32, CallPurpose)>,
    stream: Option<u32>,
}

fn bump(host: &dyn Host, metric: MetricId, n: u64) {
    if n > 0 {
        let _ = host.increment_counter(metric, n);
    }
}

/// The driver's view of one callback: the profile's mirror, the worker, the host.
struct Scope<'a> {
    setup: &'a MirrorSetup,
    profile: &'a Profile,
    worker: &'a mut Worker,
    host: &'a dyn Host,
}

impl Scope<'_> {
    fn error(&self) {
        bump(self.host, self.setup.error, 1);
    }

    fn set_connected(&self, up: bool) {
        let _ = self.host.set_gauge(self.setup.connected, u64::from(up));
    }
}

impl Driver {
    /// `me`: this worker's random id, for the watcher role.
    pub fn new(profile: &Profile, me: u64) -> Option<Driver> {
        let setup = profile.mirror.as_ref()?;
        Some(Driver {
            follower: Follower::new(setup.keys.clone()),
            me,
            holding: false,
            calls: Vec::new(),
            stream: None,
        })
    }

    fn scope<'a>(
        profile: &'a Profile,
        worker: &'a mut Worker,
        host: &'a dyn Host,
    ) -> Option<Scope<'a>> {
        Some(Scope {
            setup: profile.mirror.as_ref()?,
            profile,
            worker,
            host,
        })
    }

    /// The worker's mirror tick: hold (or try to take) the watcher role, start a load when
    /// due, and send the outbox.
    pub fn tick(&mut self, profile: &Profile, worker: &mut Worker, host: &dyn Host) {
        let Some(mut s) = Self::scope(profile, worker, host) else {
            return;
        };
        let now_ms = host.now_ms().unwrap_or(0);
        match role::hold(host, &s.setup.role_key, self.me, now_ms) {
            Ok(true) => {
                self.holding = true;
                if let Some(req) = self.follower.start(now_ms) {
                    self.call(&mut s, CallPurpose::Range, KV, "Range", &req, now_ms);
                }
            }
            Ok(false) | Err(_) => {
                if self.holding {
                    // Another worker took over (this one stalled): let go of the watch.
                    self.holding = false;
                    if let (Some(t), Some(grpc)) = (self.stream.take(), host.grpc()) {
                        grpc.cancel_stream(t);
                    }
                    self.follower = Follower::new(s.setup.keys.clone());
                }
            }
        }
        self.write(&mut s, now_ms);
    }

    fn call(
        &mut self,
        s: &mut Scope<'_>,
        what: CallPurpose,
        service: &str,
        method: &str,
        req: &[u8],
        now_ms: u64,
    ) {
        let started = match s.host.grpc() {
            Some(grpc) => grpc.call(&s.setup.service, service, method, req, CALL_TIMEOUT),
            None => Err(crate::host::HostError),
        };
        match started {
            Ok(token) => self.calls.push((token, what)),
            Err(_) => {
                s.error();
                self.answered(s, what, None, now_ms);
            }
        }
    }

    /// Sends the next outbox batch (or the lease it needs), if nothing is in flight.
    fn write(&mut self, s: &mut Scope<'_>, now_ms: u64) {
        let call = s.worker.outbox.as_mut().and_then(|o| o.next_call(now_ms));
        match call {
            Some(Call::Grant(req)) => {
                self.call(s, CallPurpose::Grant, LEASE, "LeaseGrant", &req, now_ms)
            }
            Some(Call::Put(req, _)) => self.call(s, CallPurpose::Put, KV, "Txn", &req, now_ms),
            None => {}
        }
    }

    /// A unary call answered (`body`; `None` when it failed); `false` if the token is not
    /// one of this driver's calls.
    pub fn on_call_response(
        &mut self,
        token: u32,
        body: Option<&[u8]>,
        profile: &Profile,
        worker: &mut Worker,
        host: &dyn Host,
    ) -> bool {
        let Some(i) = self.calls.iter().position(|(t, _)| *t == token) else {
            return false;
        };
        let (_, what) = self.calls.swap_remove(i);
        let Some(mut s) = Self::scope(profile, worker, host) else {
            return true;
        };
        if body.is_none() {
            s.error();
        }
        let now_ms = host.now_ms().unwrap_or(0);
        self.answered(&mut s, what, body, now_ms);
        true
    }

    fn answered(&mut self, s: &mut Scope<'_>, what: CallPurpose, body: Option<&[u8]>, now_ms: u64) {
        match what {
            CallPurpose::Grant => {
                let ok = s
                    .worker
                    .outbox
                    .as_mut()
                    .is_some_and(|o| o.granted(body, now_ms));
                if ok {
                    self.write(s, now_ms);
                }
            }
            CallPurpose::Put => {
                let n = s
                    .worker
                    .outbox
                    .as_mut()
                    .map_or(0, |o| o.put_done(body.is_some(), now_ms));
                bump(s.host, s.setup.put, n as u64);
                if n > 0 {
                    self.write(s, now_ms);
                }
            }
            CallPurpose::Range => {
                let Some(body) = body else {
                    self.follower.failed(now_ms);
                    s.set_connected(false);
                    return;
                };
                let (records, next) = self.follower.on_range(body, now_ms);
                // Ask for the next page (or open the watch) first: etcd prepares it while
                // this page is merged.
                match next {
                    Next::Range(req) => self.call(s, CallPurpose::Range, KV, "Range", &req, now_ms),
                    Next::Watch(req) => self.open_watch(s, &req, now_ms),
                    Next::Nothing => {}
                }
                apply(s, &records, now_ms);
            }
        }
    }

    fn open_watch(&mut self, s: &mut Scope<'_>, req: &[u8], now_ms: u64) {
        let opened = match s.host.grpc() {
            Some(grpc) => grpc.open_stream(&s.setup.service, WATCH, "Watch", req),
            None => Err(crate::host::HostError),
        };
        match opened {
            Ok(token) => self.stream = Some(token),
            Err(_) => {
                s.error();
                self.follower.failed(now_ms);
            }
        }
    }

    /// A message on the watch stream; `false` if the token is not the driver's stream.
    pub fn on_stream_message(
        &mut self,
        token: u32,
        body: &[u8],
        profile: &Profile,
        worker: &mut Worker,
        host: &dyn Host,
    ) -> bool {
        if self.stream != Some(token) {
            return false;
        }
        let Some(mut s) = Self::scope(profile, worker, host) else {
            return true;
        };
        let now_ms = host.now_ms().unwrap_or(0);
        let update = self.follower.on_watch(body, now_ms);
        if update.connected {
            s.set_connected(true);
        }
        bump(host, s.setup.event, update.events);
        apply(&mut s, &update.records, now_ms);
        if update.lost {
            if let (Some(t), Some(grpc)) = (self.stream.take(), host.grpc()) {
                grpc.cancel_stream(t);
            }
            s.set_connected(false);
        }
        true
    }

    /// The watch stream closed; `false` if the token is not the driver's stream.
    pub fn on_stream_close(
        &mut self,
        token: u32,
        profile: &Profile,
        worker: &mut Worker,
        host: &dyn Host,
    ) -> bool {
        if self.stream != Some(token) {
            return false;
        }
        self.stream = None;
        let Some(s) = Self::scope(profile, worker, host) else {
            return true;
        };
        s.error();
        self.follower.failed(host.now_ms().unwrap_or(0));
        s.set_connected(false);
        true
    }
}

/// Merges bindings learned from etcd into the local table.
fn apply(s: &mut Scope<'_>, records: &[Record], now_ms: u64) {
    if records.is_empty() {
        return;
    }
    let Some(table) = s.profile.persistence.table() else {
        return;
    };
    let now_s = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
    for r in records {
        let key = table.key_of_digest(r.digest);
        match table.merge(s.host, key, r.entry(key.fingerprint), now_s) {
            Ok(e) => s.worker.counts.table_merge(&e),
            Err(_) => s.worker.count(Counter::Error),
        }
    }
}

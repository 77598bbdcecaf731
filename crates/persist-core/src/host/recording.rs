//! An in-memory [`Host`] for unit tests: request and response headers, properties, a
//! settable clock, deterministic randomness, shared data with the host's CAS semantics
//! ([`MemoryStore`]), stats, and a log of every call that changed something, so that a
//! test can assert which host calls a path made (and that a steady path made no write).

use super::{GrpcHost, GrpcTarget, Host, HostError, MetricId, MetricKind};
use crate::store::{MemoryStore, SharedStore, StoreError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One host call that changed state (reads are counted in [`RecordingHost::reads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    SetRequestHeader(String, Vec<u8>),
    RemoveRequestHeader(String),
    AddResponseHeader(String, Vec<u8>),
    RemoveResponseHeader(String),
    OverrideUpstream(SocketAddr, bool),
    /// [`Host::rechoose_route`] on the native-like host.
    RechooseRoute,
    StoreSet(String),
    GrpcCall(String, String),
    GrpcStream(String, String),
    GrpcCancel(u32),
}

#[derive(Debug, Default)]
pub struct RecordingHost {
    pub request: RefCell<Vec<(String, Vec<u8>)>>,
    pub response: RefCell<Vec<(String, Vec<u8>)>>,
    pub properties: RefCell<HashMap<Vec<String>, Vec<u8>>>,
    pub clock_ms: Cell<u64>,
    pub store: MemoryStore,
    /// Whether [`Host::override_upstream`] is available (the native module's host).
    pub native_override: bool,
    /// Whether [`Host::grpc`] is available.
    pub with_grpc: bool,
    /// Fail every write of shared data (a host that refuses the call).
    pub store_broken: Cell<bool>,
    pub calls: RefCell<Vec<Call>>,
    /// Filter state the request set (kept apart from [`Call`]s: it is per request).
    pub filter_state: RefCell<HashMap<String, Vec<u8>>>,
    pub reads: Cell<u32>,
    pub metrics: RefCell<Vec<(MetricKind, String, i64)>>,
    random_state: Cell<u64>,
    next_token: Cell<u32>,
}

impl RecordingHost {
    pub fn new(now_ms: u64) -> RecordingHost {
        let h = RecordingHost::default();
        h.clock_ms.set(now_ms);
        h
    }

    /// A new request on the same host (same store, clock, stats): headers and the call
    /// log are cleared.
    pub fn next_request(&self) {
        self.request.borrow_mut().clear();
        self.response.borrow_mut().clear();
        self.properties.borrow_mut().clear();
        self.calls.borrow_mut().clear();
        self.filter_state.borrow_mut().clear();
        self.reads.set(0);
    }

    /// Filter state `name` as text, if set.
    pub fn state(&self, name: &str) -> Option<String> {
        self.filter_state
            .borrow()
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn with_request_header(&self, name: &str, value: &[u8]) -> &Self {
        self.request
            .borrow_mut()
            .push((name.to_string(), value.to_vec()));
        self
    }

    pub fn with_response_header(&self, name: &str, value: &[u8]) -> &Self {
        self.response
            .borrow_mut()
            .push((name.to_string(), value.to_vec()));
        self
    }

    pub fn with_property(&self, path: &[&str], value: &[u8]) -> &Self {
        self.properties
            .borrow_mut()
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
        self
    }

    pub fn advance_ms(&self, ms: u64) {
        self.clock_ms.set(self.clock_ms.get() + ms);
    }

    pub fn request_value(&self, name: &str) -> Option<Vec<u8>> {
        first(&self.request.borrow(), name)
    }

    pub fn response_values(&self, name: &str) -> Vec<Vec<u8>> {
        all(&self.response.borrow(), name)
    }

    /// The value of stat `name` (counters summed, gauges as last set or added).
    pub fn metric(&self, name: &str) -> i64 {
        self.metrics
            .borrow()
            .iter()
            .find(|(_, n, _)| n == name)
            .map_or(0, |(_, _, v)| *v)
    }

    /// The calls that changed state, in order.
    pub fn writes(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn record(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }

    fn metric_mut(&self, id: MetricId, f: impl FnOnce(&mut i64)) -> Result<(), HostError> {
        let mut m = self.metrics.borrow_mut();
        let slot = m.get_mut(id as usize).ok_or(HostError)?;
        f(&mut slot.2);
        Ok(())
    }
}

fn first(map: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    map.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn all(map: &[(String, Vec<u8>)], name: &str) -> Vec<Vec<u8>> {
    map.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

impl SharedStore for RecordingHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.reads.set(self.reads.get() + 1);
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.store_broken.get() {
            return Err(StoreError::Host);
        }
        let r = self.store.set(key, value, cas);
        if r.is_ok() {
            self.record(Call::StoreSet(key.to_string()));
        }
        r
    }
}

impl Host for RecordingHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        first(&self.request.borrow(), name)
    }

    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        let mut r = self.request.borrow_mut();
        r.retain(|(k, _)| k != name);
        r.push((name.to_string(), value.to_vec()));
        self.record(Call::SetRequestHeader(name.to_string(), value.to_vec()));
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.request.borrow_mut().retain(|(k, _)| k != name);
        self.record(Call::RemoveRequestHeader(name.to_string()));
        Ok(())
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        first(&self.response.borrow(), name)
    }

    fn response_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        all(&self.response.borrow(), name)
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.response
            .borrow_mut()
            .push((name.to_string(), value.to_vec()));
        self.record(Call::AddResponseHeader(name.to_string(), value.to_vec()));
        Ok(())
    }

    fn remove_response_header(&self, name: &str) -> Result<(), HostError> {
        self.response.borrow_mut().retain(|(k, _)| k != name);
        self.record(Call::RemoveResponseHeader(name.to_string()));
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.borrow().get(&key).cloned()
    }

    fn now_ms(&self) -> Option<u64> {
        Some(self.clock_ms.get())
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        // Deterministic xorshift, so failures reproduce.
        let mut s = self.random_state.get() | 0x9e37_79b9_7f4a_7c15;
        for b in buf.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s as u8;
        }
        self.random_state.set(s);
        true
    }

    fn override_upstream(&self, server: SocketAddr, strict: bool) -> Option<Result<(), HostError>> {
        if !self.native_override {
            return None;
        }
        self.record(Call::OverrideUpstream(server, strict));
        Some(Ok(()))
    }

    fn set_filter_state(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.filter_state
            .borrow_mut()
            .insert(name.to_string(), value.to_vec());
        Ok(())
    }

    fn has_upstream_override(&self) -> bool {
        self.native_override
    }

    /// As the native host, which must ask for it; proxy-wasm re-chooses by itself.
    fn rechoose_route(&self) -> Result<(), HostError> {
        if self.native_override {
            self.record(Call::RechooseRoute);
        }
        Ok(())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        let mut m = self.metrics.borrow_mut();
        if let Some(i) = m.iter().position(|(_, n, _)| n == name) {
            return MetricId::try_from(i).map_err(|_| HostError);
        }
        m.push((kind, name.to_string(), 0));
        MetricId::try_from(m.len() - 1).map_err(|_| HostError)
    }

    fn increment_counter(&self, id: MetricId, by: u64) -> Result<(), HostError> {
        self.metric_mut(id, |v| *v += by as i64)
    }

    fn add_to_gauge(&self, id: MetricId, delta: i64) -> Result<(), HostError> {
        self.metric_mut(id, |v| *v += delta)
    }

    fn set_gauge(&self, id: MetricId, value: u64) -> Result<(), HostError> {
        self.metric_mut(id, |v| *v = value as i64)
    }

    fn grpc(&self) -> Option<&dyn GrpcHost> {
        self.with_grpc.then_some(self as &dyn GrpcHost)
    }
}

impl GrpcHost for RecordingHost {
    fn call(
        &self,
        _target: &GrpcTarget,
        service_name: &str,
        method: &str,
        _message: &[u8],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        self.record(Call::GrpcCall(service_name.to_string(), method.to_string()));
        let t = self.next_token.get() + 1;
        self.next_token.set(t);
        Ok(t)
    }

    fn open_stream(
        &self,
        _target: &GrpcTarget,
        service_name: &str,
        method: &str,
        _first: &[u8],
    ) -> Result<u32, HostError> {
        self.record(Call::GrpcStream(
            service_name.to_string(),
            method.to_string(),
        ));
        let t = self.next_token.get() + 1;
        self.next_token.set(t);
        Ok(t)
    }

    fn cancel_stream(&self, token: u32) {
        self.record(Call::GrpcCancel(token));
    }
}

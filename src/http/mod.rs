//! The per-request filter. Every type does the same three things: on the request, drop any
//! client copy of the hand-off header and name the persisted server if there is one; on the
//! response, find out which server answered and record or re-issue the persistence; remember
//! servers that failed to answer. The type-specific halves are in [`cookie`] (client
//! stored), [`table`] (locally stored types) and [`hash`] (`consistent_hash`).

mod cookie;
mod hash;
mod table;

use crate::host::{self, HostStore};
use crate::root::{Profile, Worker};
use persist_core::addr;
use persist_core::config::{Handoff, Kind};
use persist_core::persistence::cookie::Persisted;
use persist_core::stats::Counter;
use persist_core::table::entry::Entry;
use persist_core::table::KeyHash;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

/// Used when the plugin has no valid configuration: does nothing.
pub struct PassThrough;
impl Context for PassThrough {}
impl HttpContext for PassThrough {}

pub struct PersistHttp {
    profile: Rc<Profile>,
    worker: Rc<RefCell<Worker>>,
    /// `http_cookie`: the request's valid persistence, if any.
    persisted: Option<Persisted>,
    /// Locally stored types: the request's key and its live entry, if any.
    key: Option<KeyHash>,
    entry: Option<Entry>,
    /// `http_header`: the value was in the static `servers` map.
    static_server: bool,
    /// The server handed to Envoy (the persisted one, unless it is suspect).
    named: Option<SocketAddr>,
    /// Wall-clock milliseconds, read at most once per request.
    now_ms: Option<u64>,
    /// With `mirror`: the etcd lookup the request waits for.
    lookup: Option<u32>,
}

impl PersistHttp {
    pub fn new(profile: Rc<Profile>, worker: Rc<RefCell<Worker>>) -> Self {
        PersistHttp {
            profile,
            worker,
            persisted: None,
            key: None,
            entry: None,
            static_server: false,
            named: None,
            now_ms: None,
            lookup: None,
        }
    }

    fn now_ms(&mut self) -> u64 {
        if let Some(t) = self.now_ms {
            return t;
        }
        let t = host::now_ms().unwrap_or(0);
        self.now_ms = Some(t);
        t
    }

    fn now_s(&mut self) -> u32 {
        u32::try_from(self.now_ms() / 1000).unwrap_or(u32::MAX)
    }

    fn count(&self, c: Counter) {
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            w.count(c);
        }
    }

    /// Names `candidate` to Envoy unless it is suspect; counts `hit` when it is named.
    fn name_server(&mut self, candidate: SocketAddr) {
        if !self.is_suspect(candidate) {
            self.named = Some(candidate);
            self.count(Counter::Hit);
        }
    }

    /// Writes the hand-off header for the named server, or removes any client copy.
    fn hand_off(&self) {
        let config = &self.profile.config;
        let result = match self.named {
            Some(a) => host::set_request_header(
                &config.upstream_header,
                Some(&addr::handoff_value(config.handoff, a)),
            ),
            // Always drop a client copy: no client chooses a server. Removing makes Envoy
            // recompute the route, so look first (an absent header costs no copy).
            None if host::request_header(&config.upstream_header).is_some() => {
                host::set_request_header(&config.upstream_header, None)
            }
            None => Ok(()),
        };
        if result.is_err() {
            self.count(Counter::Error);
        }
    }

    fn is_suspect(&mut self, a: SocketAddr) -> bool {
        let empty = self
            .worker
            .try_borrow()
            .map(|w| w.suspects.is_empty())
            .unwrap_or(true);
        if empty {
            return false;
        }
        let now = self.now_ms();
        self.worker
            .try_borrow()
            .map(|w| w.suspects.is_suspect(a, now))
            .unwrap_or(false)
    }

    /// The server that answered, after retries; `None` for a local reply without upstream.
    fn answered(&self) -> Option<SocketAddr> {
        let config = &self.profile.config;
        match config.handoff {
            Handoff::StatefulSession => match host::response_header(&config.upstream_header) {
                // Envoy's stateful_session filter writes this header exactly when the host
                // differs from the requested one; it must not reach the client.
                Some(raw) => {
                    if host::remove_response_header(&config.upstream_header).is_err() {
                        self.count(Counter::Error);
                    }
                    addr::parse_session_header(&raw).or_else(upstream_address)
                }
                None => self.named.or_else(upstream_address),
            },
            Handoff::OverrideHost => upstream_address(),
        }
    }

    /// The named server did not answer: no worker names it again for `suspect_for`.
    ///
    /// Only under `override_host`, whose LB policy ignores health, so that naming a dead
    /// server costs each request a failed attempt and a retry. Under `stateful_session`
    /// Envoy skips a host its health checking took out at no cost, and a mismatch can be
    /// transient (right after Envoy starts, a worker may not have the first health check
    /// results yet): marking the server suspect there would only move more sessions.
    fn mark_suspect_unless(&mut self, answered: SocketAddr) {
        if self.profile.config.handoff != Handoff::OverrideHost {
            return;
        }
        let Some(named) = self.named.filter(|n| *n != answered) else {
            return;
        };
        let suspect_for = self.profile.config.suspect_for;
        if suspect_for.is_zero() {
            return;
        }
        let now_ms = self.now_ms();
        let until =
            now_ms.saturating_add(u64::try_from(suspect_for.as_millis()).unwrap_or(u64::MAX));
        let profile = self.profile.clone();
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            return;
        };
        if w.suspects
            .mark(&HostStore, &profile.suspect_key, named, until, now_ms)
            .is_err()
        {
            w.count(Counter::Error);
        }
    }
}

fn upstream_address() -> Option<SocketAddr> {
    host::property(&["upstream", "address"]).and_then(|raw| addr::parse(&raw))
}

impl Context for PersistHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.lookup != Some(token_id) {
            return;
        }
        self.lookup = None;
        self.finish_lookup(status_code, response_size);
        self.hand_off();
        if host::resume_request().is_err() {
            self.count(Counter::Error);
        }
    }
}

impl HttpContext for PersistHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &self.profile.config.kind {
            Kind::HttpCookie(_) => self.cookie_request(),
            Kind::ConsistentHash(_) => self.hash_request(),
            _ => self.table_request(),
        }
        if self.lookup.is_some() {
            // Resumed in `on_grpc_call_response`, within `mirror.timeout`.
            return Action::Pause;
        }
        self.hand_off();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if matches!(self.profile.config.kind, Kind::ConsistentHash(_)) {
            // Nothing is stored; only Envoy's own response header must not leak.
            if self.profile.config.handoff == Handoff::StatefulSession {
                let _ = host::remove_response_header(&self.profile.config.upstream_header);
            }
            return Action::Continue;
        }
        let Some(answered) = self.answered() else {
            return Action::Continue;
        };
        match &self.profile.config.kind {
            Kind::HttpCookie(_) => self.cookie_response(answered),
            _ => self.table_response(answered),
        }
        self.mark_suspect_unless(answered);
        Action::Continue
    }
}

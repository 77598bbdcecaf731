//! The per-request filter. Request: drop any client copy of the hand-off header, read the
//! cookie, name the persisted server. Response: find out who answered, send `Set-Cookie` when
//! needed, remember servers that failed. Host calls per request on the steady path
//! (valid cookie, same server): cookie read, hand-off header write, one response-header read.

use crate::host::{self, HostStore};
use crate::root::{Profile, Worker};
use persist_core::addr;
use persist_core::config::{CookieFormat, Handoff};
use persist_core::persistence::cookie::{Found, Persisted};
use persist_core::stats::Counter;
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
    /// The request's valid persistence, if any.
    persisted: Option<Persisted>,
    /// The server handed to Envoy (the persisted one, unless it is suspect).
    named: Option<SocketAddr>,
    /// Wall-clock milliseconds, read at most once per request.
    now_ms: Option<u64>,
}

impl PersistHttp {
    pub fn new(profile: Rc<Profile>, worker: Rc<RefCell<Worker>>) -> Self {
        PersistHttp {
            profile,
            worker,
            persisted: None,
            named: None,
            now_ms: None,
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

    fn count(&self, c: Counter) {
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            w.count(c);
        }
    }

    fn request(&mut self) {
        let profile = self.profile.clone();
        let header = host::request_header("cookie");
        let now_s = if profile.cookie.needs_clock() && header.is_some() {
            self.now_ms() / 1000
        } else {
            0
        };
        let mut found = profile.cookie.read(header.as_deref(), now_s);
        if let Found::Hash(hash) = found {
            let resolved = match self.worker.try_borrow_mut() {
                Ok(mut w) => w.hashes.resolve(&HostStore, &hash),
                Err(_) => Err(persist_core::store::StoreError::Host),
            };
            found = match resolved {
                Ok(Some(addr)) => Found::Server(Persisted {
                    addr,
                    times: Default::default(),
                }),
                Ok(None) => Found::Nothing,
                Err(_) => {
                    self.count(Counter::Error);
                    Found::Nothing
                }
            };
        }
        match found {
            Found::Nothing | Found::Hash(_) => self.count(Counter::Miss),
            Found::Invalid => self.count(Counter::Invalid),
            Found::Server(p) => {
                self.persisted = Some(p);
                if !self.is_suspect(p.addr) {
                    self.named = Some(p.addr);
                    self.count(Counter::Hit);
                }
            }
        }
        let header_name = &profile.config.upstream_header;
        let result = match self.named {
            Some(a) => host::set_request_header(
                header_name,
                Some(&addr::handoff_value(profile.config.handoff, a)),
            ),
            // Always drop a client copy: no client chooses a server.
            None => host::set_request_header(header_name, None),
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
                None => self.named,
            },
            Handoff::OverrideHost => upstream_address(),
        }
    }

    fn response(&mut self) {
        let Some(answered) = self.answered() else {
            return;
        };
        let profile = self.profile.clone();
        if profile.cookie.format() == CookieFormat::Nginx {
            let learned = match self.worker.try_borrow_mut() {
                Ok(mut w) => w.hashes.learn(&HostStore, answered).is_ok(),
                Err(_) => false,
            };
            if !learned {
                self.count(Counter::Error);
            }
        }
        let now_ms = if profile.cookie.needs_clock() || self.named.is_some_and(|n| n != answered) {
            self.now_ms()
        } else {
            0
        };
        let worker = self.worker.clone();
        let Ok(mut w) = worker.try_borrow_mut() else {
            return;
        };
        let reply = profile
            .cookie
            .reply(self.persisted, answered, now_ms / 1000, || w.next_nonce());
        for c in &reply.counters {
            w.count(*c);
        }
        if let Some(named) = self.named.filter(|n| *n != answered) {
            let suspect_for = profile.config.suspect_for;
            if !suspect_for.is_zero() {
                let until = now_ms
                    .saturating_add(u64::try_from(suspect_for.as_millis()).unwrap_or(u64::MAX));
                if w.suspects
                    .mark(&HostStore, &profile.suspect_key, named, until, now_ms)
                    .is_err()
                {
                    w.count(Counter::Error);
                }
            }
        }
        if let Some(sc) = reply.set_cookie {
            if host::add_response_header("set-cookie", &sc).is_err() {
                w.count(Counter::Error);
            }
        }
    }
}

fn upstream_address() -> Option<SocketAddr> {
    host::property(&["upstream", "address"]).and_then(|raw| addr::parse(&raw))
}

impl Context for PersistHttp {}

impl HttpContext for PersistHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.request();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response();
        Action::Continue
    }
}

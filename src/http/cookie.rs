//! `http_cookie` (SPEC 2.1): the cookie names the server; nothing is stored in the proxy
//! (except NGINX hash → address learning). Host calls on the steady path (valid cookie,
//! same server): cookie read, hand-off header write, one response-header read.

use super::PersistHttp;
use crate::host::{self, HostStore};
use persist_core::config::CookieFormat;
use persist_core::persistence::cookie::{Found, Persisted};
use persist_core::stats::Counter;
use persist_core::store::StoreError;
use std::net::SocketAddr;

impl PersistHttp {
    pub(super) fn cookie_request(&mut self) {
        let profile = self.profile.clone();
        let Some(cookie) = &profile.cookie else {
            return;
        };
        let header = host::request_header("cookie");
        let now_s = if cookie.needs_clock() && header.is_some() {
            self.now_ms() / 1000
        } else {
            0
        };
        let mut found = cookie.read(header.as_deref(), now_s);
        if let Found::Hash(hash) = found {
            let resolved = match self.worker.try_borrow_mut() {
                Ok(mut w) => w.hashes.resolve(&HostStore, &hash),
                Err(_) => Err(StoreError::Host),
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
                self.name_server(p.addr);
            }
        }
    }

    pub(super) fn cookie_response(&mut self, answered: SocketAddr) {
        let profile = self.profile.clone();
        let Some(cookie) = &profile.cookie else {
            return;
        };
        if cookie.format() == CookieFormat::Nginx {
            let learned = match self.worker.try_borrow_mut() {
                Ok(mut w) => w.hashes.learn(&HostStore, answered).is_ok(),
                Err(_) => false,
            };
            if !learned {
                self.count(Counter::Error);
            }
        }
        let now_ms = if cookie.needs_clock() || self.named.is_some_and(|n| n != answered) {
            self.now_ms()
        } else {
            0
        };
        let worker = self.worker.clone();
        let Ok(mut w) = worker.try_borrow_mut() else {
            return;
        };
        let reply = cookie.reply(self.persisted, answered, now_ms / 1000, || w.next_nonce());
        for c in &reply.counters {
            w.count(*c);
        }
        if let Some(sc) = reply.set_cookie {
            if host::add_response_header("set-cookie", &sc).is_err() {
                w.count(Counter::Error);
            }
        }
    }
}

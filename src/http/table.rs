//! The locally stored types (SPEC 2.2): the request's key is looked up in the persist
//! table (one shared-data read); the response binds the key to the server that answered
//! only when something changed, or when the entry is due for its `timeout/4` refresh.

use super::PersistHttp;
use crate::host::{self, HostStore};
use crate::keys;
use persist_core::config::Kind;
use persist_core::keys::set_cookie;
use persist_core::stats::Counter;
use persist_core::table::slot::{Effect, Expect};
use persist_core::table::KeyHash;
use std::net::SocketAddr;

impl PersistHttp {
    pub(super) fn table_request(&mut self) {
        let profile = self.profile.clone();
        let Some(table) = &profile.table else {
            return;
        };
        let Some(key) = keys::request_key(&profile.config.kind) else {
            self.count(Counter::Miss);
            return;
        };
        if let Kind::HttpHeader(h) = &profile.config.kind {
            if let Some(server) = h.servers.get(&key) {
                self.static_server = true;
                self.name_server(*server);
                return;
            }
        }
        let hash = table.hash(&key);
        self.key = Some(hash);
        let now_s = self.now_s();
        match table.lookup(&HostStore, hash, now_s) {
            Ok(Some(entry)) => {
                self.entry = Some(entry);
                self.name_server(entry.server);
            }
            Ok(None) => self.count(Counter::Miss),
            Err(_) => self.count(Counter::Error),
        }
    }

    /// Binds `key` to `server` (unless a racing worker got there first, see [`Expect`]) and
    /// accounts for what the write did.
    fn bind(&mut self, key: KeyHash, server: SocketAddr, expect: Expect) {
        let profile = self.profile.clone();
        let Some(table) = &profile.table else {
            return;
        };
        let now_s = self.now_s();
        let result = table.bind(&HostStore, key, server, now_s, expect);
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            return;
        };
        match result {
            Ok(e) => account(&mut w.pending, &e),
            Err(_) => w.count(Counter::Error),
        }
    }

    pub(super) fn table_response(&mut self, answered: SocketAddr) {
        let profile = self.profile.clone();
        let Some(table) = &profile.table else {
            return;
        };
        let mut learned_request_key = false;
        if let Kind::AppCookie(app) = &profile.config.kind {
            // Only responses that set a cookie pay for reading the whole header map.
            if host::response_header("set-cookie").is_some() {
                for header in host::response_header_values("set-cookie") {
                    if let Some(value) = set_cookie::value(&header, &app.name) {
                        let k = table.hash(value);
                        learned_request_key |= Some(k) == self.key;
                        self.bind(k, answered, Expect::Any);
                    }
                }
            }
        }
        let Some(key) = self.key.filter(|_| !learned_request_key) else {
            if self.static_server && self.named.is_some_and(|n| n != answered) {
                self.count(Counter::Rebind);
            }
            return;
        };
        let bindable = match &profile.config.kind {
            Kind::AppCookie(app) => self.entry.is_some() || app.learn_from_request,
            _ => true,
        };
        if !bindable {
            return;
        }
        let due = match self.entry {
            None => true,
            Some(e) => {
                let now_s = self.now_s();
                e.server != answered
                    || u64::from(now_s.saturating_sub(e.last_use))
                        >= table.timeouts.refresh_after_s()
            }
        };
        if due {
            let expect = match self.entry {
                None => Expect::Absent,
                Some(e) => Expect::Server(e.server),
            };
            self.bind(key, answered, expect);
        }
    }
}

/// Counters and the `entries` gauge from the effect of one table write.
fn account(pending: &mut persist_core::stats::Pending, e: &Effect) {
    if e.new {
        pending.add(Counter::New);
    }
    if e.rebound {
        pending.add(Counter::Rebind);
    }
    pending.add_n(Counter::Expired, u64::from(e.expired));
    pending.add_n(Counter::Evicted, u64::from(e.evicted));
    pending.entries = pending.entries.saturating_add(e.entries_delta());
}

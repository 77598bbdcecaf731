//! The locally stored types (SPEC 2.2): the request's key is looked up in the persist
//! table (one shared-data read); the response binds the key to the server that answered
//! only when something changed, or when the entry is due for its `timeout/4` refresh.
//! With `mirror`, a key missing locally is looked up in etcd (the request waits at most
//! `mirror.timeout`), and every change of the table is queued for etcd.

use super::PersistHttp;
use crate::host::{self, HostStore};
use crate::keys;
use crate::mirror;
use persist_core::config::Kind;
use persist_core::keys::set_cookie;
use persist_core::mirror::follow::{lookup_answer, lookup_request};
use persist_core::mirror::proto::KV;
use persist_core::stats::Counter;
use persist_core::table::entry::Entry;
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
            Ok(None) => {
                if !self.start_lookup(hash) {
                    self.count(Counter::Miss);
                }
            }
            Err(_) => self.count(Counter::Error),
        }
    }

    /// With `mirror`: asks etcd for a key the local table misses. `true` when the call is
    /// under way (the request waits for it, at most `mirror.timeout`).
    fn start_lookup(&mut self, key: KeyHash) -> bool {
        let profile = self.profile.clone();
        let Some(m) = &profile.mirror else {
            return false;
        };
        let req = lookup_request(&m.keys, &key.digest);
        match host::grpc_call(&m.service, KV, "Range", &req, m.timeout) {
            Ok(token) => {
                self.lookup = Some(token);
                true
            }
            Err(_) => {
                if let Ok(mut w) = self.worker.try_borrow_mut() {
                    w.pending.mirror_errors += 1;
                }
                false
            }
        }
    }

    /// The lookup answered (`status` 0) or failed or timed out: name the server etcd
    /// knows (and keep it in the local table), or go on as a miss.
    pub(super) fn finish_lookup(&mut self, status: u32, size: usize) {
        let profile = self.profile.clone();
        let (Some(m), Some(table), Some(key)) = (&profile.mirror, &profile.table, self.key) else {
            return;
        };
        let found = if status == 0 {
            host::grpc_body(size)
                .and_then(|body| lookup_answer(&m.keys, &body))
                .filter(|r| r.digest == key.digest)
        } else {
            if let Ok(mut w) = self.worker.try_borrow_mut() {
                w.pending.mirror_errors += 1;
            }
            None
        };
        let now_s = self.now_s();
        let entry = found
            .map(|r| Entry {
                fingerprint: key.fingerprint,
                server: r.server,
                created: r.created,
                last_use: r.last_use,
            })
            .filter(|e| !e.is_expired(&table.timeouts, now_s));
        let Some(entry) = entry else {
            self.count(Counter::Miss);
            return;
        };
        let merged = table.merge(
            &HostStore,
            key,
            entry.server,
            entry.created,
            entry.last_use,
            now_s,
        );
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            match merged {
                Ok(e) => mirror::account_merge(&mut w, &e),
                Err(_) => w.count(Counter::Error),
            }
        }
        self.entry = Some(entry);
        self.name_server(entry.server);
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
            Ok(e) => {
                account(&mut w.pending, &e);
                mirror::queue(&mut w, key.digest, &e);
            }
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

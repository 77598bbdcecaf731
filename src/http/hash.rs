//! `consistent_hash` (SPEC 2.3): the key goes into `hash.header` for the route's
//! `hash_policy` (ring_hash / maglev); no state. A client copy of that header is replaced
//! or removed, so a client cannot pick its point on the ring.

use super::PersistHttp;
use crate::host;
use crate::keys;
use persist_core::config::Kind;
use persist_core::keys::header_safe;
use persist_core::stats::Counter;

impl PersistHttp {
    pub(super) fn hash_request(&mut self) {
        let Kind::ConsistentHash(cfg) = &self.profile.config.kind else {
            return;
        };
        let value = keys::source(&cfg.source).map(|k| header_safe(&k));
        self.count(if value.is_some() {
            Counter::Hit
        } else {
            Counter::Miss
        });
        if host::set_request_header_bytes(&cfg.header, value.as_deref()).is_err() {
            self.count(Counter::Error);
        }
    }
}

//! `consistent_hash` (README "consistent_hash"): the key goes into `hash.header` for the
//! route's `hash_policy` (ring_hash / maglev); no state. A client copy of that header is
//! replaced or removed, so a client cannot pick its point on the ring.

use crate::client_key::{header_safe, source};
use crate::config::HashConfig;
use crate::flow::Ctx;
use crate::stats::Counter;

#[derive(Debug)]
pub struct HashPersistence(HashConfig);

impl HashPersistence {
    pub fn new(cfg: &HashConfig) -> HashPersistence {
        HashPersistence(cfg.clone())
    }

    pub(crate) fn on_request(&self, ctx: &mut Ctx<'_>) {
        let cfg = &self.0;
        let value = source(ctx.host, &cfg.source).map(|k| header_safe(&k));
        ctx.count(if value.is_some() {
            Counter::Hit
        } else {
            Counter::Miss
        });
        let result = match value {
            Some(v) => ctx.host.set_request_header(&cfg.header, &v),
            None => ctx.host.remove_request_header(&cfg.header),
        };
        if result.is_err() {
            ctx.count(Counter::Error);
        }
    }
}

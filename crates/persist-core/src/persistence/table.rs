//! The locally stored kinds (README "Locally stored types"): the request's key is looked up
//! in the persist table (one shared-data read); the response binds the key to the server
//! that answered only when something changed, or when the entry is due for its
//! `timeout/4` refresh. With `mirror`, a key missing locally is looked up in etcd (the
//! request waits at most `mirror.timeout`), and every change of the table is queued for
//! etcd. The kinds differ only in their [`ClientKey`].

use crate::client_key::ClientKey;
use crate::config::Config;
use crate::flow::Ctx;
use crate::host::Host;
use crate::mirror::follow::{lookup_answer, lookup_request};
use crate::mirror::proto::KV;
use crate::mirror::record::Record;
use crate::stats::Counter;
use crate::table::entry::{Entry, Timeouts};
use crate::table::slot::{Effect, Expect};
use crate::table::{secret, KeyHash, Table};
use std::net::SocketAddr;

#[derive(Debug)]
pub struct TablePersistence {
    pub table: Table,
    key: Box<dyn ClientKey>,
}

/// What the request half found.
#[derive(Debug, Default)]
pub struct TableSession {
    /// The request's key, when it has one and it is not statically mapped.
    key: Option<KeyHash>,
    /// Its live entry, if any.
    entry: Option<Entry>,
    /// The key's server came from the static map (`http_header`'s `servers`).
    fixed: bool,
}

impl TablePersistence {
    /// The table's hash key is `mirror.secret`, or a secret generated per Envoy and shared
    /// by its workers (README "Keyed hashing").
    pub fn new(
        config: &Config,
        key: Box<dyn ClientKey>,
        host: &dyn Host,
    ) -> Result<TablePersistence, String> {
        let hash_key = secret::hash_key(config, host, |buf| host.random(buf))?;
        Ok(TablePersistence {
            table: Table::new(
                &config.name,
                config.max_entries,
                Timeouts::new(config.timeout, config.absolute_timeout),
                hash_key,
            ),
            key,
        })
    }

    pub(crate) fn on_request(&self, ctx: &mut Ctx<'_>) -> TableSession {
        let mut session = TableSession::default();
        let Some(key) = self.key.read(ctx.host) else {
            ctx.count(Counter::Miss);
            return session;
        };
        if let Some(server) = self.key.fixed_server(&key) {
            session.fixed = true;
            ctx.prefer(server, 0);
            return session;
        }
        let hash = self.table.hash(&key);
        session.key = Some(hash);
        let now_s = ctx.now_s();
        match self.table.lookup(ctx.host, hash, now_s) {
            Ok(Some(entry)) => {
                session.entry = Some(entry);
                ctx.prefer(entry.server, entry.cluster);
            }
            Ok(None) => {
                if !start_lookup(ctx, hash) {
                    ctx.count(Counter::Miss);
                }
            }
            Err(_) => ctx.count(Counter::Error),
        }
        session
    }

    /// The mirror lookup answered (`body`) or failed or timed out (`None`): name the
    /// server etcd knows (and keep it in the local table), or go on as a miss.
    pub(crate) fn on_lookup_answer(
        &self,
        session: &mut TableSession,
        ctx: &mut Ctx<'_>,
        body: Option<&[u8]>,
    ) {
        let (Some(m), Some(key)) = (&ctx.profile.mirror, session.key) else {
            return;
        };
        let found = match body {
            Some(body) => lookup_answer(&m.keys, body).filter(|r| r.digest == key.digest),
            None => {
                ctx.worker.counts.mirror_errors += 1;
                None
            }
        };
        let now_s = ctx.now_s();
        let entry = found
            .map(|r| r.entry(key.fingerprint))
            .filter(|e| !e.is_expired(&self.table.timeouts, now_s));
        let Some(entry) = entry else {
            ctx.count(Counter::Miss);
            return;
        };
        let merged = self.table.merge(ctx.host, key, entry, now_s);
        match merged {
            Ok(e) => ctx.worker.counts.table_merge(&e),
            Err(_) => ctx.count(Counter::Error),
        }
        session.entry = Some(entry);
        ctx.prefer(entry.server, entry.cluster);
    }

    pub(crate) fn on_response(
        &self,
        session: &mut TableSession,
        ctx: &mut Ctx<'_>,
        answered: SocketAddr,
    ) {
        let mut learned_request_key = false;
        let taught = self.key.taught_by_response(ctx.host);
        if !taught.is_empty() && ctx.response_from_upstream() {
            for value in taught {
                let k = self.table.hash(&value);
                learned_request_key |= Some(k) == session.key;
                self.bind(ctx, k, answered, Expect::Any);
            }
        }
        let Some(key) = session.key.filter(|_| !learned_request_key) else {
            if session.fixed && ctx.named().is_some_and(|n| n != answered) {
                ctx.count(Counter::Rebind);
            }
            return;
        };
        if session.entry.is_none() && !self.key.binds_unknown_keys() {
            return;
        }
        let due = match session.entry {
            None => true,
            Some(e) => {
                let now_s = ctx.now_s();
                // With `clusters`, a binding records the cluster too (README "Weighted
                // clusters").
                e.server != answered
                    || ctx
                        .answered_cluster(answered)
                        .is_some_and(|c| c != e.cluster)
                    || u64::from(now_s.saturating_sub(e.last_use))
                        >= self.table.timeouts.refresh_after_s()
            }
        };
        if due && ctx.response_from_upstream() {
            let expect = match session.entry {
                None => Expect::Absent,
                Some(e) => Expect::Server(e.server),
            };
            self.bind(ctx, key, answered, expect);
        }
    }

    /// Binds `key` to `server` (unless a racing worker got there first, see [`Expect`]),
    /// accounts for what the write did and queues the change for the mirror.
    fn bind(&self, ctx: &mut Ctx<'_>, key: KeyHash, server: SocketAddr, expect: Expect) {
        let now_s = ctx.now_s();
        let cluster = ctx.answered_cluster(server).unwrap_or(0);
        match self
            .table
            .bind(ctx.host, key, server, cluster, now_s, expect)
        {
            Ok(e) => {
                ctx.worker.counts.table_write(&e);
                if e.new {
                    ctx.note(Counter::New);
                }
                if e.rebound {
                    ctx.note(Counter::Rebind);
                }
                queue_for_mirror(ctx, key.digest, &e);
            }
            Err(_) => ctx.count(Counter::Error),
        }
    }
}

/// With `mirror`: asks etcd for a key the local table misses. `true` when the call is under
/// way (the request waits for it, at most `mirror.timeout`).
fn start_lookup(ctx: &mut Ctx<'_>, key: KeyHash) -> bool {
    let Some(m) = &ctx.profile.mirror else {
        return false;
    };
    let Some(grpc) = ctx.host.grpc() else {
        return false;
    };
    let req = lookup_request(&m.keys, &key.digest);
    match grpc.call(&m.service, KV, "Range", &req, m.timeout) {
        Ok(token) => {
            ctx.wait_for_lookup(token);
            true
        }
        Err(_) => {
            ctx.worker.counts.mirror_errors += 1;
            false
        }
    }
}

/// Queues a binding this worker changed for etcd (nothing without `mirror`).
fn queue_for_mirror(ctx: &mut Ctx<'_>, digest: [u8; 16], e: &Effect) {
    let (Some(outbox), Some(bound)) = (ctx.worker.outbox.as_mut(), e.bound) else {
        return;
    };
    let record = Record {
        digest,
        server: bound.server,
        created: bound.created,
        last_use: bound.last_use,
        cluster: bound.cluster,
    };
    if !outbox.queue(record) {
        ctx.worker.counts.mirror_errors += 1;
    }
}

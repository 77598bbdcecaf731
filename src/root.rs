//! The root context: one per VM (Envoy runs one VM per worker thread, plus one on the main
//! thread). It validates the configuration before touching anything, prepares the profile
//! once, and on its tick flushes the worker's counters and gauge delta, re-reads the
//! suspect list and takes its turn sweeping lapsed table entries. With `mirror` it also
//! drives the etcd calls ([`crate::mirror`]), on a faster tick.

use crate::host::{self, HostStore};
use crate::http::{PassThrough, PersistHttp};
use crate::mirror::{self, Driver};
use persist_core::codec::sealed::NonceSequence;
use persist_core::config::{Config, CookieFormat, Kind};
use persist_core::mirror::lease::Buckets;
use persist_core::mirror::proto::grpc_service;
use persist_core::mirror::record::KeySpace;
use persist_core::mirror::writer::Writer;
use persist_core::persistence::cookie::CookiePersistence;
use persist_core::persistence::learned_hashes::LearnedHashes;
use persist_core::stats::{self, Counter, Pending};
use persist_core::store;
use persist_core::suspect::SuspectList;
use persist_core::table::entry::Timeouts;
use persist_core::table::secret;
use persist_core::table::Table;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub const TICK: Duration = Duration::from_secs(1);
/// With `mirror`: the outbox goes to etcd within this, so a binding reaches the other
/// Envoys well within a second. Everything else still runs once per [`TICK`].
pub const MIRROR_TICK: Duration = Duration::from_millis(100);

/// Everything prepared from a valid configuration; immutable afterwards.
pub struct Profile {
    pub config: Config,
    /// `http_cookie` only.
    pub cookie: Option<CookiePersistence>,
    /// Locally stored types only.
    pub table: Option<Table>,
    pub suspect_key: String,
    metrics: Vec<(Counter, u32)>,
    /// The `entries` gauge (locally stored types).
    entries_gauge: Option<u32>,
    /// SPEC 2.4, when configured.
    pub mirror: Option<Rc<mirror::Setup>>,
}

/// Mutable per-worker state shared by the root and the HTTP contexts of one VM.
pub struct Worker {
    pub pending: Pending,
    pub suspects: SuspectList,
    pub nonces: NonceSequence,
    pub hashes: LearnedHashes,
    /// With `mirror`: bindings this worker changed, on their way to etcd.
    pub writer: Option<Writer>,
}

impl Worker {
    pub fn count(&mut self, c: Counter) {
        self.pending.add(c);
    }

    /// A fresh nonce; re-seeds the prefix from the host's randomness when exhausted.
    pub fn next_nonce(&mut self) -> Option<[u8; 12]> {
        if let Some(n) = self.nonces.next_nonce() {
            return Some(n);
        }
        self.nonces = NonceSequence::new(random_prefix()?);
        self.nonces.next_nonce()
    }
}

fn random_prefix() -> Option<[u8; 8]> {
    let mut p = [0u8; 8];
    host::random(&mut p).then_some(p)
}

#[derive(Default)]
pub struct PersistRoot {
    active: Option<(Rc<Profile>, Rc<RefCell<Worker>>)>,
    driver: Option<Driver>,
    last_flush_ms: u64,
}

fn fail(message: impl std::fmt::Display) -> bool {
    log::error!("envoy-persist: {message}");
    false
}

/// Sealing keys in effect: the configured ones, or one generated per Envoy process and
/// shared by all its workers through shared data.
fn sealing_keys(config: &Config) -> Result<Vec<[u8; 32]>, String> {
    let Kind::HttpCookie(cookie) = &config.kind else {
        return Ok(Vec::new());
    };
    if cookie.format != CookieFormat::Sealed || !cookie.keys.is_empty() {
        return Ok(cookie.keys.clone());
    }
    let mut candidate = [0u8; 32];
    if !host::random(&mut candidate) {
        return Err("cookie.keys: no randomness to generate a key; configure one".into());
    }
    let key_name = format!("persist.{}.sealkey", config.name);
    let stored = store::get_or_insert(&HostStore, &key_name, &candidate, |v| v.len() == 32)
        .map_err(|e| {
            format!("cookie.keys: could not share a generated key ({e:?}); configure one")
        })?;
    let key: [u8; 32] = stored
        .as_slice()
        .try_into()
        .map_err(|_| "cookie.keys: shared key has the wrong size".to_string())?;
    Ok(vec![key])
}

fn prepare(json: &[u8]) -> Result<(Profile, Worker), String> {
    // Validation first: nothing is written anywhere unless the configuration is valid.
    let config = Config::parse(json).map_err(|e| e.to_string())?;
    let cookie = match &config.kind {
        Kind::HttpCookie(cookie_cfg) => {
            let keys = sealing_keys(&config)?;
            Some(
                CookiePersistence::new(cookie_cfg, &keys, config.timeout, config.absolute_timeout)
                    .ok_or_else(|| "cookie.keys: the sealed format needs a key".to_string())?,
            )
        }
        _ => None,
    };
    let table = match config.kind.uses_table() {
        true => Some(Table::new(
            &config.name,
            config.max_entries,
            Timeouts::new(config.timeout, config.absolute_timeout),
            secret::hash_key(&config, &HostStore, host::random)?,
        )),
        false => None,
    };
    let define = |name: String, gauge: bool| {
        let r = if gauge {
            host::define_gauge(&name)
        } else {
            host::define_counter(&name)
        };
        r.map_err(|s| format!("name: cannot define stat {name}: {s:?}"))
    };
    let mut metrics = Vec::new();
    for c in Counter::ALL {
        metrics.push((c, define(stats::metric_name(&config.name, c), false)?));
    }
    let entries_gauge = match table {
        Some(_) => Some(define(stats::gauge_name(&config.name), true)?),
        None => None,
    };
    let mirror = match &config.mirror {
        Some(m) => Some(Rc::new(mirror::Setup {
            keys: KeySpace::new(&m.prefix, &config.name, &m.secret),
            service: String::from_utf8(grpc_service(&m.cluster))
                .map_err(|_| "mirror.cluster: name too long".to_string())?,
            timeout: m.timeout,
            role_key: format!("persist.{}.mirror.watcher", config.name),
            put: define(stats::named(&config.name, stats::MIRROR_PUT), false)?,
            event: define(stats::named(&config.name, stats::MIRROR_EVENT), false)?,
            error: define(stats::named(&config.name, stats::MIRROR_ERROR), false)?,
            connected: define(stats::named(&config.name, stats::MIRROR_CONNECTED), true)?,
        })),
        None => None,
    };
    let writer = match (&mirror, &table) {
        (Some(m), Some(t)) => Some(Writer::new(
            m.keys.clone(),
            t.timeouts,
            Buckets::for_timeout(config.timeout),
        )),
        _ => None,
    };
    let prefix = random_prefix().ok_or("no randomness for cookie nonces")?;
    let worker = Worker {
        pending: Pending::default(),
        suspects: SuspectList::default(),
        nonces: NonceSequence::new(prefix),
        hashes: LearnedHashes::new(&config.name),
        writer,
    };
    let profile = Profile {
        suspect_key: format!("persist.{}.suspect", config.name),
        config,
        cookie,
        table,
        metrics,
        entries_gauge,
        mirror,
    };
    Ok((profile, worker))
}

impl PersistRoot {
    fn flush(&self) {
        let Some((profile, worker)) = &self.active else {
            return;
        };
        let Ok(mut w) = worker.try_borrow_mut() else {
            return;
        };
        let now = host::now_ms();
        if let (Some(table), Some(now)) = (&profile.table, now) {
            match table.sweep(&HostStore, now) {
                Ok(n) => {
                    w.pending.add_n(Counter::Expired, u64::from(n));
                    w.pending.entries = w.pending.entries.saturating_sub(i64::from(n));
                }
                Err(_) => w.count(Counter::Error),
            }
        }
        if let Some(gauge) = profile.entries_gauge {
            let delta = std::mem::take(&mut w.pending.entries);
            if delta != 0 && host::add_to_gauge(gauge, delta).is_err() {
                w.count(Counter::Error);
            }
        }
        let lookup_errors = std::mem::take(&mut w.pending.mirror_errors);
        if let (Some(m), true) = (&profile.mirror, lookup_errors > 0) {
            let _ = host::increment(m.error, lookup_errors);
        }
        for (counter, n) in w.pending.drain() {
            if let Some((_, id)) = profile.metrics.iter().find(|(c, _)| *c == counter) {
                // A failed increment loses counts, nothing else.
                let _ = host::increment(*id, n);
            }
        }
        if !profile.config.suspect_for.is_zero() {
            if let Some(now) = now {
                if w.suspects
                    .refresh(&HostStore, &profile.suspect_key, now)
                    .is_err()
                {
                    w.count(Counter::Error);
                }
            }
        }
    }
}

impl Context for PersistRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let now = host::now_ms().unwrap_or(0);
        if let Some(d) = &mut self.driver {
            d.on_call_response(token_id, status_code, response_size, now);
        }
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        let now = host::now_ms().unwrap_or(0);
        if let Some(d) = &mut self.driver {
            d.on_stream_message(token_id, message_size, now);
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, _status_code: u32) {
        let now = host::now_ms().unwrap_or(0);
        if let Some(d) = &mut self.driver {
            d.on_stream_close(token_id, now);
        }
    }
}

impl RootContext for PersistRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let json = host::plugin_configuration(plugin_configuration_size).unwrap_or_default();
        match prepare(&json) {
            Ok((profile, worker)) => {
                self.flush();
                let tick = if profile.mirror.is_some() {
                    MIRROR_TICK
                } else {
                    TICK
                };
                let profile = Rc::new(profile);
                let worker = Rc::new(RefCell::new(worker));
                self.driver = match &profile.mirror {
                    Some(setup) => {
                        let mut id = [0u8; 8];
                        if !host::random(&mut id) {
                            return fail("mirror: no randomness for a worker id");
                        }
                        Some(Driver::new(
                            profile.clone(),
                            setup.clone(),
                            worker.clone(),
                            u64::from_le_bytes(id),
                        ))
                    }
                    None => None,
                };
                self.active = Some((profile, worker));
                if host::set_tick_period(tick).is_err() {
                    return fail("cannot set the tick period");
                }
                true
            }
            Err(message) => fail(message),
        }
    }

    fn on_tick(&mut self) {
        let now = host::now_ms().unwrap_or(0);
        if let Some(d) = &mut self.driver {
            d.tick(now);
        }
        if now.saturating_sub(self.last_flush_ms) >= TICK.as_millis() as u64 - 50 {
            self.last_flush_ms = now;
            self.flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Unconfigured means pass-through.
        Some(match &self.active {
            Some((profile, worker)) => Box::new(PersistHttp::new(profile.clone(), worker.clone())),
            None => Box::new(PassThrough),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

//! The root context: one per VM (Envoy runs one VM per worker thread, plus one on the main
//! thread). It validates the configuration before touching anything, prepares the profile
//! once, and on its tick flushes the worker's counters and gauge delta, re-reads the
//! suspect list and takes its turn sweeping lapsed table entries.

use crate::host::{self, HostStore};
use crate::http::{PassThrough, PersistHttp};
use persist_core::codec::sealed::NonceSequence;
use persist_core::config::{Config, CookieFormat, Kind};
use persist_core::persistence::cookie::CookiePersistence;
use persist_core::persistence::learned_hashes::LearnedHashes;
use persist_core::stats::{self, Counter, Pending};
use persist_core::store;
use persist_core::suspect::SuspectList;
use persist_core::table::entry::Timeouts;
use persist_core::table::Table;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub const TICK: Duration = Duration::from_secs(1);

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
}

/// Mutable per-worker state shared by the root and the HTTP contexts of one VM.
pub struct Worker {
    pub pending: Pending,
    pub suspects: SuspectList,
    pub nonces: NonceSequence,
    pub hashes: LearnedHashes,
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
    let table = config.kind.uses_table().then(|| {
        Table::new(
            &config.name,
            config.max_entries,
            Timeouts::new(config.timeout, config.absolute_timeout),
        )
    });
    let mut metrics = Vec::new();
    for c in Counter::ALL {
        let name = stats::metric_name(&config.name, c);
        let id = host::define_counter(&name)
            .map_err(|s| format!("name: cannot define stat {name}: {s:?}"))?;
        metrics.push((c, id));
    }
    let entries_gauge = match table {
        Some(_) => {
            let name = stats::gauge_name(&config.name);
            Some(
                host::define_gauge(&name)
                    .map_err(|s| format!("name: cannot define stat {name}: {s:?}"))?,
            )
        }
        None => None,
    };
    let prefix = random_prefix().ok_or("no randomness for cookie nonces")?;
    let worker = Worker {
        pending: Pending::default(),
        suspects: SuspectList::default(),
        nonces: NonceSequence::new(prefix),
        hashes: LearnedHashes::new(&config.name),
    };
    let profile = Profile {
        suspect_key: format!("persist.{}.suspect", config.name),
        config,
        cookie,
        table,
        metrics,
        entries_gauge,
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

impl Context for PersistRoot {}

impl RootContext for PersistRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let json = host::plugin_configuration(plugin_configuration_size).unwrap_or_default();
        match prepare(&json) {
            Ok((profile, worker)) => {
                self.flush();
                self.active = Some((Rc::new(profile), Rc::new(RefCell::new(worker))));
                if host::set_tick_period(TICK).is_err() {
                    return fail("cannot set the tick period");
                }
                true
            }
            Err(message) => fail(message),
        }
    }

    fn on_tick(&mut self) {
        self.flush();
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

//! Each Envoy worker thread's profile and [`Worker`], per filter configuration.
//!
//! The wasm module gets this shape from Envoy for free (one VM per worker, each compiling
//! its profile). Natively every worker thread calls the same module, so each thread keeps,
//! per configuration it has served, its own compiled [`Profile`] (the profile holds
//! per-worker caches, e.g. the opened-cookie cache) and its own [`Worker`]. They are created
//! on the thread's first request of that configuration, from the configuration's JSON, with
//! the stat ids Envoy gave at configuration ([`NativeHost::for_worker`]).
//!
//! Background work: the ABI has no per-worker timer, so [`Worker::tick`] (table sweep,
//! suspect-list refresh) runs from the request path, at most once per [`TICK`] per thread;
//! the counts are handed to Envoy after every request ([`Worker::flush_stats`]), so they
//! never wait for an idle worker's next request.

use crate::ffi::FilterEnvoyPtr;
use crate::host::{Defined, NativeHost};
use persist_core::flow::{Profile, Worker, TICK};
use persist_core::host::Host;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// What a filter configuration gives its workers. Lives as long as Envoy keeps the
/// configuration (from `config_new` to `config_destroy`).
#[derive(Debug)]
pub struct Shared {
    /// Unique in the process (a configuration's address can be reused after destroy).
    pub id: u64,
    /// The plugin JSON, valid (compiled once at configuration).
    pub json: Vec<u8>,
    /// The profile's name, for log lines.
    pub name: String,
    /// Every stat defined at configuration.
    pub defined: Vec<Defined>,
    /// Dropped with the configuration: a thread's slot of a destroyed configuration is
    /// recognised (and pruned) through its `Weak`.
    pub alive: Arc<()>,
}

impl Shared {
    pub fn new(json: Vec<u8>, name: String, defined: Vec<Defined>) -> Shared {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Shared {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            json,
            name,
            defined,
            alive: Arc::new(()),
        }
    }
}

struct Slot {
    id: u64,
    alive: Weak<()>,
    profile: Profile,
    worker: Worker,
    next_tick_ms: u64,
}

thread_local! {
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Why a request went on without persistence.
#[derive(Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The worker's profile could not be compiled (its message), or no randomness.
    Compile(String),
    /// This thread's slots are in use (re-entered; not expected).
    Busy,
}

fn new_slot(shared: &Shared, filter: FilterEnvoyPtr, now_ms: u64) -> Result<Slot, String> {
    let host = NativeHost::for_worker(filter, &shared.defined);
    let profile = Profile::compile(&shared.json, &host)?;
    let worker = Worker::new(&profile, &host)?;
    Ok(Slot {
        id: shared.id,
        alive: Arc::downgrade(&shared.alive),
        profile,
        worker,
        next_tick_ms: now_ms.saturating_add(tick_ms()),
    })
}

fn tick_ms() -> u64 {
    u64::try_from(TICK.as_millis()).unwrap_or(1000)
}

/// Runs `f` with this thread's profile and worker of `shared` (created on first use), then
/// the worker's tick when one is due.
pub fn with_worker<R>(
    shared: &Shared,
    host: &NativeHost<'_>,
    filter: FilterEnvoyPtr,
    f: impl FnOnce(&Profile, &mut Worker) -> R,
) -> Result<R, Unavailable> {
    SLOTS.with(|slots| {
        let mut slots = slots.try_borrow_mut().map_err(|_| Unavailable::Busy)?;
        let now = host.now_ms().unwrap_or(0);
        let i = match slots.iter().position(|s| s.id == shared.id) {
            Some(i) => i,
            None => {
                // Configurations come and go with Envoy's config updates: forget the dead.
                slots.retain(|s| s.alive.strong_count() > 0);
                slots.push(new_slot(shared, filter, now).map_err(Unavailable::Compile)?);
                slots.len() - 1
            }
        };
        let slot = slots.get_mut(i).ok_or(Unavailable::Busy)?;
        let r = f(&slot.profile, &mut slot.worker);
        if now >= slot.next_tick_ms {
            slot.next_tick_ms = now.saturating_add(tick_ms());
            slot.worker.tick(&slot.profile, host);
        }
        Ok(r)
    })
}

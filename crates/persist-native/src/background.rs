//! The mirror's background work (README "Native module", "More than one Envoy"), one per
//! filter configuration with `mirror`, on Envoy's main thread.
//!
//! The wasm module runs the mirror driver from each worker VM's 100 ms timer. The
//! dynamic-module ABI has no per-worker timer, but a configuration can call out, open
//! streams and be called back on the main thread. So here one driver per configuration
//! ([`persist_core::mirror::driver::Driver`]) sends every worker thread's changes, loads and
//! watches the profile's keys, and merges them into the process-wide table:
//!
//! - a small thread commits a tick to the configuration's scheduler every
//!   [`MIRROR_TICK`]; Envoy runs it on the main thread (`config_scheduled`);
//! - worker threads hand the bindings they changed over through [`Background::hand_over`]
//!   (their own outbox is only a queue: [`Worker::take_mirror_queue`]);
//! - answers and the watch stream arrive in the configuration's callout and stream hooks.
//!
//! Envoy may call a hook back from inside a call this module makes (a callout that fails at
//! once): such an event waits in `pending` and is handled as soon as the current one is done.

use crate::ffi::{self, ConfigEnvoyPtr, ConfigSchedulerPtr};
use crate::host::NativeHost;
use persist_core::flow::{Profile, Worker, MIRROR_TICK};
use persist_core::host::{GrpcHost, Host};
use persist_core::mirror::driver::Driver;
use persist_core::mirror::grpc_frame::FrameReader;
use persist_core::mirror::record::Record;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

/// What reaches the driver.
pub enum Event {
    Tick,
    /// A unary call's answer (`None`: failed).
    Answer(u64, Option<Vec<u8>>),
    /// The watch stream's response headers were not a gRPC answer.
    StreamRefused(u64),
    StreamData(u64, Vec<u8>),
    StreamClosed(u64),
}

struct State {
    profile: Profile,
    worker: Worker,
    driver: Driver,
    /// The messages of each open stream, reassembled from its chunks.
    streams: HashMap<u64, FrameReader>,
}

pub struct Background {
    state: Mutex<State>,
    pending: Mutex<Vec<Event>>,
    /// Bindings the worker threads changed, on their way to the driver's outbox.
    inbox: Mutex<Vec<Record>>,
    _ticker: Ticker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Background {
    /// Starts the mirror of `profile` (compiled at configuration); `None` when it has none.
    pub fn start(
        config: ConfigEnvoyPtr,
        profile: Profile,
        host: &dyn Host,
    ) -> Result<Option<Background>, String> {
        if profile.mirror.is_none() {
            return Ok(None);
        }
        let mut id = [0u8; 8];
        if !host.random(&mut id) {
            return Err("mirror: no randomness for a worker id".into());
        }
        let Some(driver) = Driver::new(&profile, u64::from_le_bytes(id)) else {
            return Ok(None);
        };
        let worker = Worker::new(&profile, host)?;
        let ticker = Ticker::start(ffi::config_scheduler_new(config))?;
        Ok(Some(Background {
            state: Mutex::new(State {
                profile,
                worker,
                driver,
                streams: HashMap::new(),
            }),
            pending: Mutex::new(Vec::new()),
            inbox: Mutex::new(Vec::new()),
            _ticker: ticker,
        }))
    }

    /// A worker thread's changed bindings, for the next tick.
    pub fn hand_over(&self, records: Vec<Record>) {
        if !records.is_empty() {
            lock(&self.inbox).extend(records);
        }
    }

    /// Handles `event` on the main thread, then whatever arrived meanwhile.
    pub fn deliver(&self, config: ConfigEnvoyPtr, event: Event) {
        let mut state = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Called back from inside a call of the event being handled.
                lock(&self.pending).push(event);
                return;
            }
        };
        let host = NativeHost::for_background(config);
        state.handle(event, &host, self);
        loop {
            let more = std::mem::take(&mut *lock(&self.pending));
            if more.is_empty() {
                break;
            }
            for e in more {
                state.handle(e, &host, self);
            }
        }
        let State {
            profile, worker, ..
        } = &mut *state;
        worker.flush_stats(profile, &host, host.now_ms());
    }
}

impl State {
    fn handle(&mut self, event: Event, host: &NativeHost<'_>, bg: &Background) {
        let State {
            profile,
            worker,
            driver,
            streams,
        } = self;
        match event {
            Event::Tick => {
                let records = std::mem::take(&mut *lock(&bg.inbox));
                worker.queue_for_mirror(records);
                driver.tick(profile, worker, host);
            }
            Event::Answer(id, body) => {
                if let Ok(token) = u32::try_from(id) {
                    driver.on_call_response(token, body.as_deref(), profile, worker, host);
                }
            }
            Event::StreamData(id, chunk) => {
                let Ok(token) = u32::try_from(id) else {
                    return;
                };
                let reader = streams.entry(id).or_default();
                reader.push(&chunk);
                loop {
                    match reader.next_message() {
                        Ok(Some(message)) => {
                            if !driver.on_stream_message(token, &message, profile, worker, host) {
                                // Not (or no longer) the driver's stream.
                                streams.remove(&id);
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => {
                            streams.remove(&id);
                            host.cancel_stream(token);
                            driver.on_stream_close(token, profile, worker, host);
                            return;
                        }
                    }
                }
            }
            Event::StreamRefused(id) | Event::StreamClosed(id) => {
                streams.remove(&id);
                if let Ok(token) = u32::try_from(id) {
                    driver.on_stream_close(token, profile, worker, host);
                }
            }
        }
    }
}

/// The configuration's scheduler pointer, moved to the ticker thread (Envoy's scheduler may
/// be committed to from any thread).
struct SchedulerPtr(ConfigSchedulerPtr);
// SAFETY: the scheduler is used by the ticker thread alone, then deleted by it.
unsafe impl Send for SchedulerPtr {}

/// The thread that commits a tick every [`MIRROR_TICK`]; stopped when dropped (with the
/// configuration). It deletes the scheduler itself when it stops.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Ticker {
    fn start(scheduler: ConfigSchedulerPtr) -> Result<Ticker, String> {
        if scheduler.is_null() {
            return Err("mirror: Envoy gave no scheduler for the configuration".into());
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let theirs = Arc::clone(&stop);
        let scheduler = SchedulerPtr(scheduler);
        let spawned = std::thread::Builder::new()
            .name("persist-mirror".into())
            .spawn(move || {
                let scheduler = scheduler;
                let (flag, wake) = &*theirs;
                let period = MIRROR_TICK.max(Duration::from_millis(10));
                loop {
                    let guard = lock(flag);
                    let (stopped, _) = wake
                        .wait_timeout_while(guard, period, |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    // SAFETY: the scheduler is alive until the delete below.
                    unsafe { ffi::config_scheduler_commit(scheduler.0, 0) };
                }
                // SAFETY: created for this thread, not used again.
                unsafe { ffi::config_scheduler_delete(scheduler.0) };
            });
        match spawned {
            Ok(_) => Ok(Ticker { stop }),
            Err(e) => Err(format!("mirror: cannot start its timer thread: {e}")),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *lock(flag) = true;
        wake.notify_all();
    }
}

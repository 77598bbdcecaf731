//! The root context: one per VM (Envoy runs one VM per worker thread, plus one on the main
//! thread). It compiles the profile once per configuration, keeps the worker's state that
//! its HTTP contexts share, runs the worker's tick, and carries the mirror's gRPC answers to
//! the mirror driver.

use crate::host::{self, WasmHost};
use crate::http::{PassThrough, PersistHttp, Shared};
use persist_core::flow::{Profile, Worker, MIRROR_TICK, TICK};
use persist_core::mirror::driver::Driver;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
pub struct PersistRoot {
    shared: Option<Rc<Shared>>,
    driver: Option<Driver>,
    last_tick_ms: u64,
}

fn fail(message: impl std::fmt::Display) -> bool {
    log::error!("envoy-persist: {message}");
    false
}

impl PersistRoot {
    fn tick(&self) {
        if let Some(s) = &self.shared {
            if let Ok(mut w) = s.worker.try_borrow_mut() {
                w.tick(&s.profile, &WasmHost);
            }
        }
    }

    /// Runs `f` with the mirror driver, the profile and the worker, when all are there.
    fn with_driver(&mut self, f: impl FnOnce(&mut Driver, &Profile, &mut Worker)) {
        let (Some(d), Some(s)) = (&mut self.driver, &self.shared) else {
            return;
        };
        if let Ok(mut w) = s.worker.try_borrow_mut() {
            f(d, &s.profile, &mut w);
        }
    }
}

impl Context for PersistRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let body = (status_code == 0).then(|| host::grpc_body(response_size).unwrap_or_default());
        self.with_driver(|d, p, w| {
            d.on_call_response(token_id, body.as_deref(), p, w, &WasmHost);
        });
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        let body = host::grpc_body(message_size).unwrap_or_default();
        self.with_driver(|d, p, w| {
            d.on_stream_message(token_id, &body, p, w, &WasmHost);
        });
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, _status_code: u32) {
        self.with_driver(|d, p, w| {
            d.on_stream_close(token_id, p, w, &WasmHost);
        });
    }
}

impl RootContext for PersistRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let json = host::plugin_configuration(plugin_configuration_size).unwrap_or_default();
        let compiled = Profile::compile(&json, &WasmHost)
            .and_then(|p| Worker::new(&p, &WasmHost).map(|w| (p, w)));
        let (profile, worker) = match compiled {
            Ok(c) => c,
            Err(message) => return fail(message),
        };
        // The counts of the previous configuration go out first.
        self.tick();
        self.driver = match &profile.mirror {
            Some(_) => {
                let mut id = [0u8; 8];
                if !host::random(&mut id) {
                    return fail("mirror: no randomness for a worker id");
                }
                Driver::new(&profile, u64::from_le_bytes(id))
            }
            None => None,
        };
        let tick = if profile.mirror.is_some() {
            MIRROR_TICK
        } else {
            TICK
        };
        self.shared = Some(Rc::new(Shared {
            profile,
            worker: RefCell::new(worker),
        }));
        if host::set_tick_period(tick).is_err() {
            return fail("cannot set the tick period");
        }
        true
    }

    fn on_tick(&mut self) {
        let now = host::now_ms().unwrap_or(0);
        self.with_driver(|d, p, w| d.tick(p, w, &WasmHost));
        if now.saturating_sub(self.last_tick_ms) >= TICK.as_millis() as u64 - 50 {
            self.last_tick_ms = now;
            self.tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Unconfigured means pass-through.
        Some(match &self.shared {
            Some(shared) => Box::new(PersistHttp::new(shared.clone())),
            None => Box::new(PassThrough),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

//! The event hooks Envoy resolves by name in the module (every one it requires for an HTTP
//! filter, ABI v0.2.0). Each body runs under [`guarded`]: a panic never reaches Envoy; the
//! request goes on (status `Continue`) and `error` is counted.
//!
//! Pointers: the configuration object is a `Box<NativeConfig>` handed to Envoy in
//! `config_new` and taken back in `config_destroy`; Envoy keeps it alive while any filter made
//! from it lives. Each stream's filter is a `Box<NativeFilter>` likewise.

use crate::background::{Background, Event};
use crate::ffi::{
    self, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, LogLevel, STATUS_CONTINUE,
    STATUS_STOP_ITERATION,
};
use crate::grpc;
use crate::guard::guarded;
use crate::host::{find_defined, NativeHost};
use crate::store::NativeStore;
use crate::workers::{self, Shared, Unavailable};
use persist_core::flow::{Profile, Request, RequestAction};
use persist_core::host::{Host, MetricKind};
use persist_core::stats::{self, Counter};
use std::cell::RefCell;
use std::os::raw::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The ABI version this module was written against; Envoy 1.40 logs
/// "Dynamic module ABI version v0.2.0 matched." for it.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

/// One filter configuration (one `envoy.filters.http.dynamic_modules` filter in a listener).
pub struct NativeConfig {
    shared: Shared,
    /// `persist.<profile>.error`, counted when a hook panics or a worker cannot compile.
    error_counter: Option<u32>,
    /// With `mirror`: its work on the main thread, where the workers hand their changes.
    background: Option<Arc<Background>>,
}

/// The mirrors of the live configurations, by the configuration pointer Envoy hands the
/// configuration hooks: a hook finds its mirror here, never through a pointer Envoy may
/// call back with after the configuration is destroyed.
static MIRRORS: Mutex<Vec<(usize, Arc<Background>)>> = Mutex::new(Vec::new());

fn mirror_of(config_module: *const c_void) -> Option<Arc<Background>> {
    let mirrors = MIRRORS.lock().unwrap_or_else(PoisonError::into_inner);
    mirrors
        .iter()
        .find(|(ptr, _)| *ptr == config_module as usize)
        .map(|(_, bg)| Arc::clone(bg))
}

/// Runs a configuration hook's event on its mirror, under the panic barrier.
fn config_hook(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    event: impl FnOnce() -> Option<Event>,
) {
    guarded(
        (),
        || log_throttled(|| "envoy-persist: internal error in the mirror's background work".into()),
        || {
            if let (Some(bg), Some(event)) = (mirror_of(config_module), event()) {
                bg.deliver(config_envoy, event);
            }
        },
    )
}

/// One stream: its configuration and the flow's per-request state.
pub struct NativeFilter {
    config: *const NativeConfig,
    request: Request,
}

impl NativeFilter {
    fn config<'a>(&self) -> Option<&'a NativeConfig> {
        // SAFETY: Envoy destroys every filter before the configuration it was made from.
        unsafe { self.config.as_ref() }
    }
}

fn filter_of<'a>(module_ptr: *const c_void) -> Option<&'a mut NativeFilter> {
    // SAFETY: `module_ptr` is the Box<NativeFilter> this module returned from filter_new,
    // alive until filter_destroy; Envoy calls a stream's hooks one at a time on its worker.
    unsafe { (module_ptr as *mut NativeFilter).as_mut() }
}

/// At most one log line per 10 s for what made a request go on without persistence.
fn log_throttled(message: impl FnOnce() -> String) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Ordering::Relaxed);
    if now >= last.saturating_add(10)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        ffi::log(LogLevel::Error, &message());
    }
}

fn count_error(filter: FilterEnvoyPtr, config: Option<&NativeConfig>) {
    if let (false, Some(id)) = (filter.is_null(), config.and_then(|c| c.error_counter)) {
        let _ = NativeHost::for_filter(filter).increment_counter(id, 1);
    }
}

/// A panic caught at the boundary: `error` counted, one line at most every 10 s.
fn report_panic(filter: FilterEnvoyPtr, config: Option<&NativeConfig>, hook: &str) {
    count_error(filter, config);
    let profile = config.map_or("?", |c| c.shared.name.as_str());
    log_throttled(|| {
        format!(
            "envoy-persist: internal error in {hook} (profile {profile}); request passed without persistence"
        )
    });
}

/// Runs the flow with this worker's profile; a worker that cannot have one lets the
/// request go on without persistence (`error` counted, logged at most every 10 s).
fn with_flow(
    f: &mut NativeFilter,
    filter_envoy: FilterEnvoyPtr,
    host: &NativeHost<'_>,
    body: impl FnOnce(&mut Request, &Profile, &mut persist_core::flow::Worker),
) {
    let Some(config) = f.config() else {
        return;
    };
    let request = &mut f.request;
    let background = config.background.as_deref();
    match workers::with_worker(&config.shared, host, filter_envoy, |p, w| {
        body(request, p, w);
        if let Some(bg) = background {
            bg.hand_over(w.take_mirror_queue());
        }
    }) {
        Ok(()) => {}
        Err(Unavailable::Busy) => count_error(filter_envoy, Some(config)),
        Err(Unavailable::Compile(message)) => {
            count_error(filter_envoy, Some(config));
            let name = &config.shared.name;
            log_throttled(|| {
                format!("envoy-persist: profile {name}: worker not ready ({message}); request passed without persistence")
            });
        }
    }
}

/// Drops, under the panic barrier, the Box this module handed Envoy as `ptr` (a config or
/// a filter): Envoy's destroy hooks.
///
/// # Safety
/// `ptr` is null or came from `Box::<T>::into_raw` in this module, and is not used again.
unsafe fn drop_boxed<T>(ptr: *const c_void) {
    guarded(
        (),
        || {},
        || {
            if !ptr.is_null() {
                // SAFETY: as the caller guarantees.
                drop(unsafe { Box::from_raw(ptr as *mut T) });
            }
        },
    )
}

/// Runs a stream hook's body under the panic barrier; `Continue` whatever happens.
fn stream_hook(
    filter_envoy: FilterEnvoyPtr,
    filter_module: *const c_void,
    hook: &str,
    body: impl FnOnce(&mut NativeFilter, &NativeHost),
) -> u32 {
    guarded(
        STATUS_CONTINUE,
        || {
            let config = filter_of(filter_module).and_then(|f| f.config());
            report_panic(filter_envoy, config, hook)
        },
        || {
            if let Some(f) = filter_of(filter_module) {
                body(f, &NativeHost::for_filter(filter_envoy));
            }
            STATUS_CONTINUE
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guarded(
        std::ptr::null(),
        || {},
        || {
            crate::logger::install();
            // The shared store is created before any worker can race for it.
            let _ = NativeStore::global();
            ABI_VERSION.as_ptr().cast::<c_char>()
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(
        std::ptr::null(),
        || report_panic(std::ptr::null_mut(), None, "configuration"),
        || {
            // SAFETY: Envoy hands the filter_config bytes, valid during this hook.
            let json = unsafe { config.to_vec() };
            // Compiled here to validate the JSON completely and define the stats (Envoy
            // allows that only now); each worker compiles its own copy on first use.
            let defined = RefCell::new(Vec::new());
            let compiled = Profile::compile(&json, &NativeHost::for_config(config_envoy, &defined));
            let started = compiled.and_then(|profile| {
                let defined = defined.into_inner();
                let error_counter = find_defined(
                    &defined,
                    MetricKind::Counter,
                    &stats::metric_name(&profile.config.name, Counter::Error),
                );
                let shared = Shared::new(json, profile.config.name.clone(), defined);
                let host = NativeHost::for_background(config_envoy);
                let background = Background::start(config_envoy, profile, &host)?.map(Arc::new);
                Ok(NativeConfig {
                    shared,
                    error_counter,
                    background,
                })
            });
            match started {
                Ok(config) => {
                    let background = config.background.clone();
                    let ptr = Box::into_raw(Box::new(config)) as *const c_void;
                    if let Some(bg) = background {
                        MIRRORS
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((ptr as usize, bg));
                    }
                    ptr
                }
                Err(message) => {
                    // One line naming the field; Envoy then refuses the filter configuration.
                    ffi::log(LogLevel::Error, &format!("envoy-persist: {message}"));
                    std::ptr::null()
                }
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded(
        (),
        || {},
        || {
            MIRRORS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(ptr, _)| *ptr != config as usize);
        },
    );
    // SAFETY: the pointer config_new returned (a Box of NativeConfig), destroyed once.
    unsafe { drop_boxed::<NativeConfig>(config) }
}

/// Per-route configuration is not supported: refused (null), so Envoy rejects it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    guarded(
        std::ptr::null(),
        || {},
        || {
            ffi::log(
                LogLevel::Error,
                "envoy-persist: per-route configuration is not supported",
            );
            std::ptr::null()
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: FilterEnvoyPtr,
) -> *const c_void {
    guarded(
        std::ptr::null(),
        || {},
        || {
            let filter = Box::new(NativeFilter {
                config: config as *const NativeConfig,
                request: Request::new(),
            });
            Box::into_raw(filter) as *const c_void
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module: *const c_void) {
    // SAFETY: the pointer filter_new returned (a Box of NativeFilter), destroyed once.
    unsafe { drop_boxed::<NativeFilter>(filter_module) }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoyPtr,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    let mut wait = false;
    let status = stream_hook(filter_envoy, filter_module, "request headers", |f, host| {
        with_flow(f, filter_envoy, host, |r, p, w| {
            // With `mirror`, a key the table misses is asked of etcd: the request waits for
            // the answer (at most `mirror.timeout`), in `http_callout_done`.
            wait = r.on_request_headers(p, w, host) == RequestAction::WaitForLookup;
        });
    });
    if wait {
        STATUS_STOP_ITERATION
    } else {
        status
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterEnvoyPtr,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    stream_hook(
        filter_envoy,
        filter_module,
        "response headers",
        |f, host| {
            with_flow(f, filter_envoy, host, |r, p, w| {
                r.on_response_headers(p, w, host);
                // No per-worker timer: the counts go out now (README "Native module").
                w.flush_stats(p, host, host.now_ms());
            });
        },
    )
}

// --- hooks Envoy requires but this filter does not use: they continue at once -------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
) {
}

/// The mirror lookup of a request answered (or failed, or timed out): finish its request
/// half, then let it go on, whatever happened.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: FilterEnvoyPtr,
    filter_module: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    if grpc::starting_request_call() {
        // Answered from inside the call that started it: Envoy reports it as not started.
        return;
    }
    let waiting = guarded(
        false,
        || {},
        || {
            filter_of(filter_module).is_some_and(|f| {
                f.request
                    .lookup()
                    .is_some_and(|t| u64::from(t) == callout_id)
            })
        },
    );
    if !waiting {
        return;
    }
    stream_hook(filter_envoy, filter_module, "mirror lookup", |f, host| {
        // SAFETY: Envoy's arrays, valid during this hook.
        let body = unsafe {
            grpc::unary_answer(
                result,
                grpc::slice(headers, headers_size),
                grpc::slice(body_chunks, body_chunks_size),
            )
        };
        with_flow(f, filter_envoy, host, |r, p, w| {
            r.on_lookup_answer(body.as_deref(), p, w, host);
        });
    });
    ffi::continue_decoding(filter_envoy);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _headers: *const c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _data: *const c_void,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _trailers: *const c_void,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _event_id: u64,
) {
}

// --- the configuration's hooks: the mirror's background work on the main thread -----------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    _event_id: u64,
) {
    config_hook(config_envoy, config_module, || Some(Event::Tick));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    config_hook(config_envoy, config_module, || {
        // SAFETY: Envoy's arrays, valid during this hook.
        let body = unsafe {
            grpc::unary_answer(
                result,
                grpc::slice(headers, headers_size),
                grpc::slice(body_chunks, body_chunks_size),
            )
        };
        Some(Event::Answer(callout_id, body))
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    _end_stream: bool,
) {
    config_hook(config_envoy, config_module, || {
        // SAFETY: Envoy's array, valid during this hook.
        let ok = unsafe { grpc::headers_ok(grpc::slice(headers, headers_size)) };
        (!ok).then_some(Event::StreamRefused(stream_id))
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    _end_stream: bool,
) {
    config_hook(config_envoy, config_module, || {
        // SAFETY: Envoy's array, valid during this hook.
        let chunk = unsafe { grpc::concat(grpc::slice(data, data_count)) };
        Some(Event::StreamData(stream_id, chunk))
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _config_envoy: ConfigEnvoyPtr,
    _config_module: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _trailers_size: usize,
) {
    // The stream's end follows (complete or reset): handled there.
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
) {
    config_hook(config_envoy, config_module, || {
        Some(Event::StreamClosed(stream_id))
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    config_envoy: ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    _reason: u32,
) {
    // A reset ends the stream as its completion does.
    envoy_dynamic_module_on_http_filter_config_http_stream_complete(
        config_envoy,
        config_module,
        stream_id,
    );
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
) {
}

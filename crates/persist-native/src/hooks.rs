//! The event hooks Envoy resolves by name in the module (every one it requires for an HTTP
//! filter, ABI v0.2.0). Each body runs under [`guarded`]: a panic never reaches Envoy; the
//! request goes on (status `Continue`) and `error` is counted.
//!
//! Pointers: the configuration object is a `Box<NativeConfig>` handed to Envoy in
//! `config_new` and taken back in `config_destroy`; Envoy keeps it alive while any filter made
//! from it lives. Each stream's filter is a `Box<NativeFilter>` likewise.

use crate::ffi::{self, ConfigEnvoyPtr, EnvoyBuffer, FilterEnvoyPtr, LogLevel, STATUS_CONTINUE};
use crate::guard::guarded;
use crate::host::{find_defined, NativeHost};
use crate::store::NativeStore;
use crate::workers::{self, Shared, Unavailable};
use persist_core::flow::{Profile, Request};
use persist_core::host::{Host, MetricKind};
use persist_core::stats::{self, Counter};
use std::cell::RefCell;
use std::os::raw::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

/// The ABI version this module was written against; Envoy 1.40 logs
/// "Dynamic module ABI version v0.2.0 matched." for it.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

/// One filter configuration (one `envoy.filters.http.dynamic_modules` filter in a listener).
pub struct NativeConfig {
    shared: Shared,
    /// `persist.<profile>.error`, counted when a hook panics or a worker cannot compile.
    error_counter: Option<u32>,
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
    match workers::with_worker(&config.shared, host, filter_envoy, |p, w| {
        body(request, p, w)
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
            match compiled {
                Ok(profile) => {
                    let defined = defined.into_inner();
                    let error_counter = find_defined(
                        &defined,
                        MetricKind::Counter,
                        &stats::metric_name(&profile.config.name, Counter::Error),
                    );
                    let shared = Shared::new(json, profile.config.name.clone(), defined);
                    let boxed = Box::new(NativeConfig {
                        shared,
                        error_counter,
                    });
                    Box::into_raw(boxed) as *const c_void
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
    stream_hook(filter_envoy, filter_module, "request headers", |f, host| {
        // The native host names the server through the upstream override and has no
        // mirror: the flow never waits for a lookup here.
        with_flow(f, filter_envoy, host, |r, p, w| {
            let _ = r.on_request_headers(p, w, host);
        });
    })
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

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: FilterEnvoyPtr,
    _filter_module: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_size: usize,
    _body_chunks: *const c_void,
    _body_chunks_size: usize,
) {
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

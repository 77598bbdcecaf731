//! The part of Envoy's dynamic-module ABI this module uses, declared by hand from the public
//! ABI header (`source/extensions/dynamic_modules/abi/abi.h` of envoyproxy/envoy, ABI version
//! `v0.2.0` as Envoy 1.40 reports it; see the README, "Native module"). Every callback declared
//! here is exported by the Envoy 1.40 binary (`scripts/native-abi-check.sh` checks that with
//! `nm -D`), and the event hooks the module exports are in `lib.rs`.
//!
//! Only plain C types cross the boundary: pointers, `usize`, `u64`, `bool`, `u32` enums
//! (C enums without fixed values are `int`-sized) and two-word buffer structs passed by value.
//! The safe wrappers at the bottom are the only callers of the `extern` functions.

use std::os::raw::{c_char, c_void};

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`: Envoy's filter configuration.
pub type ConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`: Envoy's filter of one stream.
pub type FilterEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    pub fn new(ptr: *const c_char, length: usize) -> EnvoyBuffer {
        EnvoyBuffer { ptr, length }
    }

    /// A copy of the bytes (empty for a null buffer).
    ///
    /// # Safety
    /// `ptr` must point at `length` readable bytes, or be null.
    pub unsafe fn to_vec(self) -> Vec<u8> {
        // SAFETY: as the caller guarantees.
        unsafe { self.as_slice() }.to_vec()
    }

    /// The bytes, borrowed (empty for a null buffer).
    ///
    /// # Safety
    /// `ptr` must point at `length` readable bytes, or be null, and stay valid while the
    /// slice is used.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `length` readable bytes at `ptr`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
    }
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, valid for the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast::<c_char>(),
            length: bytes.len(),
        }
    }
    /// The null buffer: `set_header` with it removes the header.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_envoy_http_header`: one header of a map, bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    const NULL: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

/// `envoy_dynamic_module_type_module_http_header`: one header of a request the module sends,
/// bytes owned by the module.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl ModuleHttpHeader {
    pub fn of(key: &str, value: &[u8]) -> ModuleHttpHeader {
        ModuleHttpHeader {
            key_ptr: key.as_ptr().cast::<c_char>(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast::<c_char>(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_callout_init_result`: 0 is success.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result`: 0 is success.
pub const CALLOUT_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`.
pub type ConfigSchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_header_type`.
#[repr(u32)]
#[derive(Clone, Copy)]
pub enum HeaderType {
    RequestHeader = 0,
    ResponseHeader = 2,
}

/// `envoy_dynamic_module_type_log_level`.
#[repr(u32)]
#[derive(Clone, Copy)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// `envoy_dynamic_module_type_metrics_result`: 0 is success.
pub type MetricsResult = u32;
pub const METRICS_SUCCESS: MetricsResult = 0;

/// `envoy_dynamic_module_type_metadata_source`: 0 is the stream's dynamic metadata.
pub const METADATA_DYNAMIC: u32 = 0;

/// `envoy_dynamic_module_type_attribute_id`, the values this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Attribute {
    RequestPath = 0,
    RequestUrlPath = 1,
    RequestHost = 2,
    RequestScheme = 3,
    RequestMethod = 4,
    RequestReferer = 6,
    RequestUserAgent = 7,
    RequestId = 9,
    RequestProtocol = 10,
    RequestQuery = 11,
    ResponseCodeDetails = 16,
    SourceAddress = 24,
    DestinationAddress = 26,
    ConnectionRequestedServerName = 30,
    ConnectionTlsVersion = 31,
    ConnectionSubjectPeerCertificate = 33,
    ConnectionSha256PeerCertificateDigest = 38,
    UpstreamAddress = 41,
}

/// Status values of the header/body/trailer hooks: 0 is `Continue` for all of them.
pub const STATUS_CONTINUE: u32 = 0;
/// `envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration`: the
/// request waits until `continue_decoding`.
pub const STATUS_STOP_ITERATION: u32 = 1;

extern "C" {
    fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        id: Attribute,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: FilterEnvoyPtr,
        source: u32,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_metadata_number(
        filter: FilterEnvoyPtr,
        source: u32,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut f64,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_upstream_override_host(
        filter: FilterEnvoyPtr,
        host: ModuleBuffer,
        strict: bool,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);
    fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter: FilterEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);

    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_start_http_stream(
        config: ConfigEnvoyPtr,
        stream_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        end_stream: bool,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_reset_http_stream(
        config: ConfigEnvoyPtr,
        stream_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoyPtr,
    ) -> ConfigSchedulerPtr;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: ConfigSchedulerPtr,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: ConfigSchedulerPtr,
    );
}

// --- safe wrappers ---------------------------------------------------------------------------
//
// Each takes the Envoy pointer it was handed by the current event hook; Envoy guarantees the
// pointer for the duration of that hook (the filter's until its destroy hook). Module buffers
// point into borrowed Rust slices that outlive the call; Envoy copies what it keeps.

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the buffer points into `message`, valid for the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

pub fn log_enabled(level: LogLevel) -> bool {
    // SAFETY: plain value argument.
    unsafe { envoy_dynamic_module_callback_log_enabled(level) }
}

/// Every header of a map, in order, as Envoy holds them (`(key, value)` buffers valid until
/// the current hook returns or the map is changed); `None` when Envoy has no such map.
///
/// One walk over the map: reading headers by name instead (`get_header`) makes Envoy build
/// its lazy by-name index of the map (a hash map over every header, with its allocations)
/// on the first lookup of a name that is not one of its O(1) headers, on every request.
pub fn get_headers(filter: FilterEnvoyPtr, kind: HeaderType) -> Option<Vec<EnvoyHttpHeader>> {
    // SAFETY: plain arguments; `filter` comes from the current hook.
    let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(filter, kind) };
    let mut out = vec![EnvoyHttpHeader::NULL; n];
    if n == 0 {
        return Some(out);
    }
    // SAFETY: `out` has room for the `n` entries Envoy writes (the map cannot change between
    // the two calls: this thread is in the hook).
    let ok =
        unsafe { envoy_dynamic_module_callback_http_get_headers(filter, kind, out.as_mut_ptr()) };
    ok.then_some(out)
}

pub fn set_header(filter: FilterEnvoyPtr, kind: HeaderType, key: &str, value: &[u8]) -> bool {
    // SAFETY: buffers point into borrowed slices valid for the call.
    unsafe {
        envoy_dynamic_module_callback_http_set_header(
            filter,
            kind,
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value),
        )
    }
}

pub fn remove_header(filter: FilterEnvoyPtr, kind: HeaderType, key: &str) -> bool {
    // SAFETY: a null value buffer asks Envoy to remove the header.
    unsafe {
        envoy_dynamic_module_callback_http_set_header(
            filter,
            kind,
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::NULL,
        )
    }
}

pub fn add_header(filter: FilterEnvoyPtr, kind: HeaderType, key: &str, value: &[u8]) -> bool {
    // SAFETY: buffers point into borrowed slices valid for the call.
    unsafe {
        envoy_dynamic_module_callback_http_add_header(
            filter,
            kind,
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value),
        )
    }
}

pub fn attribute_string(filter: FilterEnvoyPtr, id: Attribute) -> Option<Vec<u8>> {
    with_attribute(filter, id, |v| v.map(<[u8]>::to_vec))
}

/// Runs `f` on the buffer a callback of Envoy's fills (`fill` passes it the out-pointer and
/// returns the callback's answer), as Envoy holds it (no copy); `None` when the callback
/// failed or left it empty.
fn with_envoy_buffer<R>(
    fill: impl FnOnce(&mut EnvoyBuffer) -> bool,
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> R {
    let mut out = EnvoyBuffer::NULL;
    if !fill(&mut out) || out.ptr.is_null() {
        return f(None);
    }
    // SAFETY: Envoy filled `out` with a buffer of the stream it keeps alive during this
    // hook; it is read here, before any other call into Envoy.
    f(Some(unsafe { out.as_slice() }))
}

/// Runs `f` on attribute `id` as Envoy holds it (no copy), `None` when absent.
pub fn with_attribute<R>(
    filter: FilterEnvoyPtr,
    id: Attribute,
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> R {
    with_envoy_buffer(
        // SAFETY: the out-pointer is a valid local of with_envoy_buffer.
        |out| unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(filter, id, out)
        },
        f,
    )
}

/// Makes Envoy choose the stream's route again from its request headers (a no-op outside
/// the request-header phase, Envoy says).
pub fn clear_route_cache(filter: FilterEnvoyPtr) {
    // SAFETY: the filter pointer of the current hook.
    unsafe { envoy_dynamic_module_callback_http_clear_route_cache(filter) }
}

/// The name of the cluster the stream's route chose, `None` when it has none.
pub fn cluster_name(filter: FilterEnvoyPtr) -> Option<Vec<u8>> {
    with_envoy_buffer(
        // SAFETY: the out-pointer is a valid local of with_envoy_buffer.
        |out| unsafe { envoy_dynamic_module_callback_http_get_cluster_name(filter, out) },
        |name| name.map(<[u8]>::to_vec),
    )
}

/// A string (or number, formatted) of the stream's dynamic metadata.
pub fn dynamic_metadata(filter: FilterEnvoyPtr, ns: &str, key: &str) -> Option<Vec<u8>> {
    let text = with_envoy_buffer(
        // SAFETY: buffers point into borrowed strs; the out-pointer is a valid local.
        |out| unsafe {
            envoy_dynamic_module_callback_http_get_metadata_string(
                filter,
                METADATA_DYNAMIC,
                ModuleBuffer::of(ns.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                out,
            )
        },
        |text| text.map(<[u8]>::to_vec),
    );
    if text.is_some() {
        return text;
    }
    let mut n: f64 = 0.0;
    // SAFETY: buffers point into borrowed strs; out-pointer is a valid local.
    let ok = unsafe {
        envoy_dynamic_module_callback_http_get_metadata_number(
            filter,
            METADATA_DYNAMIC,
            ModuleBuffer::of(ns.as_bytes()),
            ModuleBuffer::of(key.as_bytes()),
            &mut n,
        )
    };
    ok.then(|| n.to_string().into_bytes())
}

pub fn set_upstream_override_host(filter: FilterEnvoyPtr, host: &[u8], strict: bool) -> bool {
    // SAFETY: the buffer points into `host`, valid for the call.
    unsafe {
        envoy_dynamic_module_callback_http_set_upstream_override_host(
            filter,
            ModuleBuffer::of(host),
            strict,
        )
    }
}

/// Sets the stream's filter state `key` to the string `value` (Envoy stores it under `key`
/// exactly, as a string object: `%FILTER_STATE(<key>:PLAIN)%` prints it).
pub fn set_filter_state(filter: FilterEnvoyPtr, key: &[u8], value: &[u8]) -> bool {
    // SAFETY: buffers point into borrowed slices valid for the call; Envoy copies them.
    unsafe {
        envoy_dynamic_module_callback_http_set_filter_state_bytes(
            filter,
            ModuleBuffer::of(key),
            ModuleBuffer::of(value),
        )
    }
}

/// Defines a counter (`gauge == false`) or gauge without labels; Envoy allows this only while
/// the configuration is being created.
pub fn define_metric(config: ConfigEnvoyPtr, gauge: bool, name: &str) -> Option<usize> {
    let mut id: usize = 0;
    let name = ModuleBuffer::of(name.as_bytes());
    // SAFETY: no labels (null, 0); the id out-pointer is a valid local.
    let r = unsafe {
        if gauge {
            envoy_dynamic_module_callback_http_filter_config_define_gauge(
                config,
                name,
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        } else {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                name,
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        }
    };
    (r == METRICS_SUCCESS).then_some(id)
}

/// How a metric changes.
#[derive(Clone, Copy)]
pub enum MetricOp {
    Increment,
    GaugeUp,
    GaugeDown,
    GaugeSet,
}

/// The signature the four metric-update callbacks share, of a filter (`P` =
/// [`FilterEnvoyPtr`]) and of a configuration ([`ConfigEnvoyPtr`]).
type UpdateMetric<P> = unsafe extern "C" fn(
    envoy: P,
    id: usize,
    label_values: *mut ModuleBuffer,
    label_values_length: usize,
    value: u64,
) -> MetricsResult;

/// Who makes a call: a request's filter (a callout is answered on its worker thread and
/// dropped with the request) or the configuration (answered on Envoy's main thread).
#[derive(Clone, Copy)]
pub enum Caller {
    Filter(FilterEnvoyPtr),
    Config(ConfigEnvoyPtr),
}

/// Updates a stat through a stream's filter, or outside any stream through the configuration
/// (the mirror's background work on Envoy's main thread).
pub fn update_metric(caller: Caller, op: MetricOp, id: usize, value: u64) -> bool {
    let r = match caller {
        Caller::Filter(filter) => {
            let update: UpdateMetric<FilterEnvoyPtr> = match op {
                MetricOp::Increment => envoy_dynamic_module_callback_http_filter_increment_counter,
                MetricOp::GaugeUp => envoy_dynamic_module_callback_http_filter_increment_gauge,
                MetricOp::GaugeDown => envoy_dynamic_module_callback_http_filter_decrement_gauge,
                MetricOp::GaugeSet => envoy_dynamic_module_callback_http_filter_set_gauge,
            };
            // SAFETY: no labels (null, 0), as defined.
            unsafe { update(filter, id, std::ptr::null_mut(), 0, value) }
        }
        Caller::Config(config) => {
            let update: UpdateMetric<ConfigEnvoyPtr> = match op {
                MetricOp::Increment => {
                    envoy_dynamic_module_callback_http_filter_config_increment_counter
                }
                MetricOp::GaugeUp => {
                    envoy_dynamic_module_callback_http_filter_config_increment_gauge
                }
                MetricOp::GaugeDown => {
                    envoy_dynamic_module_callback_http_filter_config_decrement_gauge
                }
                MetricOp::GaugeSet => envoy_dynamic_module_callback_http_filter_config_set_gauge,
            };
            // SAFETY: no labels (null, 0), as defined.
            unsafe { update(config, id, std::ptr::null_mut(), 0, value) }
        }
    };
    r == METRICS_SUCCESS
}

/// Sends one HTTP request through `cluster` (`headers` must include `:method`, `:path` and
/// `host`); its id, answered in the caller's `http_callout_done` hook within `timeout_ms`.
pub fn http_callout(
    caller: Caller,
    cluster: &str,
    headers: &mut [ModuleHttpHeader],
    body: &[u8],
    timeout_ms: u64,
) -> Option<u64> {
    let mut id = 0u64;
    let cluster = ModuleBuffer::of(cluster.as_bytes());
    let body = ModuleBuffer::of(body);
    // SAFETY: the header array, the cluster name and the body are borrowed for the call (Envoy
    // copies them); the id out-pointer is a valid local.
    let r = unsafe {
        match caller {
            Caller::Filter(f) => envoy_dynamic_module_callback_http_filter_http_callout(
                f,
                &mut id,
                cluster,
                headers.as_mut_ptr(),
                headers.len(),
                body,
                timeout_ms,
            ),
            Caller::Config(c) => envoy_dynamic_module_callback_http_filter_config_http_callout(
                c,
                &mut id,
                cluster,
                headers.as_mut_ptr(),
                headers.len(),
                body,
                timeout_ms,
            ),
        }
    };
    (r == CALLOUT_INIT_SUCCESS).then_some(id)
}

/// Opens an HTTP stream through `cluster` from the configuration, sending `body` and leaving
/// the request open; its id. What arrives comes to the configuration's `http_stream_*` hooks.
pub fn config_start_stream(
    config: ConfigEnvoyPtr,
    cluster: &str,
    headers: &mut [ModuleHttpHeader],
    body: &[u8],
) -> Option<u64> {
    let mut id = 0u64;
    // SAFETY: as in `http_callout`. Timeout 0: the stream stays open until either side ends it.
    let r = unsafe {
        envoy_dynamic_module_callback_http_filter_config_start_http_stream(
            config,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(body),
            false,
            0,
        )
    };
    (r == CALLOUT_INIT_SUCCESS).then_some(id)
}

pub fn config_reset_stream(config: ConfigEnvoyPtr, stream_id: u64) {
    // SAFETY: plain arguments; Envoy ignores an id it does not know.
    unsafe { envoy_dynamic_module_callback_http_filter_config_reset_http_stream(config, stream_id) }
}

/// Lets a request that `StopIteration` held go on.
pub fn continue_decoding(filter: FilterEnvoyPtr) {
    // SAFETY: `filter` comes from the current hook.
    unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(filter) }
}

pub fn config_scheduler_new(config: ConfigEnvoyPtr) -> ConfigSchedulerPtr {
    // SAFETY: `config` comes from the current hook (config_new).
    unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) }
}

/// Posts `event_id` to the configuration's `scheduled` hook on Envoy's main thread (callable
/// from any thread; dropped by Envoy once the configuration is gone).
///
/// # Safety
/// `scheduler` came from [`config_scheduler_new`] and was not deleted.
pub unsafe fn config_scheduler_commit(scheduler: ConfigSchedulerPtr, event_id: u64) {
    // SAFETY: as the caller guarantees.
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler, event_id)
    }
}

/// # Safety
/// `scheduler` came from [`config_scheduler_new`], is not used again.
pub unsafe fn config_scheduler_delete(scheduler: ConfigSchedulerPtr) {
    // SAFETY: as the caller guarantees.
    unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler) }
}

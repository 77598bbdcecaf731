//! The host calls the filter makes, each one wrapped so that a host error becomes `None` or
//! `Err` instead of a panic. Header values are read as bytes: the SDK's string getters
//! unwrap UTF-8 and would panic on a hostile header.

use persist_core::store::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

pub fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

/// Replaces (or, with `None`, removes) a request header.
pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), Status> {
    match value {
        Some(v) => hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(v)),
        None => hostcalls::remove_map_value(MapType::HttpRequestHeaders, name),
    }
}

pub fn response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

pub fn remove_response_header(name: &str) -> Result<(), Status> {
    hostcalls::remove_map_value(MapType::HttpResponseHeaders, name)
}

pub fn add_response_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value)
}

/// Replaces (or, with `None`, removes) a request header, with a value of raw bytes.
pub fn set_request_header_bytes(name: &str, value: Option<&[u8]>) -> Result<(), Status> {
    match value {
        Some(v) => hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(v)),
        None => hostcalls::remove_map_value(MapType::HttpRequestHeaders, name),
    }
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// proxy-wasm `StreamType::HttpRequest`.
const STREAM_TYPE_REQUEST: u32 = 0;

mod abi {
    extern "C" {
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
    }
}

/// Every value of response header `name` (lower-case). The SDK's map getter unwraps UTF-8
/// on header names; this reads the host's serialization and parses it defensively.
pub fn response_header_values(name: &str) -> Vec<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it allocated through the SDK's exported
    // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes) and its size; we
    // take ownership of that allocation once, as the SDK itself does.
    let bytes = unsafe {
        let status = abi::proxy_get_header_map_pairs(
            MapType::HttpResponseHeaders as u32,
            &mut data,
            &mut size,
        );
        if status != Status::Ok as u32 || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    };
    persist_core::header_pairs::values(&bytes, name.as_bytes())
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> Option<u64> {
    let t = hostcalls::get_current_time().ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_millis()).ok()
}

pub fn plugin_configuration(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
        .ok()
        .flatten()
}

pub fn define_counter(name: &str) -> Result<u32, Status> {
    hostcalls::define_metric(MetricType::Counter, name)
}

pub fn define_gauge(name: &str) -> Result<u32, Status> {
    hostcalls::define_metric(MetricType::Gauge, name)
}

/// Adds `delta` (possibly negative) to a gauge shared by all workers.
pub fn add_to_gauge(metric: u32, delta: i64) -> Result<(), Status> {
    hostcalls::increment_metric(metric, delta)
}

pub fn increment(metric: u32, by: u64) -> Result<(), Status> {
    hostcalls::increment_metric(metric, i64::try_from(by).unwrap_or(i64::MAX))
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    hostcalls::set_tick_period(period)
}

/// Fills `buf` from the host's random source (WASI `random_get`).
pub fn random(buf: &mut [u8]) -> bool {
    getrandom::getrandom(buf).is_ok()
}

/// proxy-wasm shared data (one map per `vm_id`, shared by all workers of an Envoy).
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), cas)) => Ok(Some((v, cas.unwrap_or(0)))),
            Ok((None, Some(cas))) => Ok(Some((Vec::new(), cas))),
            Ok((None, None)) => Ok(None),
            Err(_) => Err(StoreError::Host),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let cas = (cas != 0).then_some(cas);
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Host),
        }
    }
}

/// A unary gRPC call through the Envoy cluster `service` (serialized `GrpcService`):
/// its token, answered in `on_grpc_call_response` of the calling context.
pub fn grpc_call(
    service: &str,
    service_name: &str,
    method: &str,
    message: &[u8],
    timeout: Duration,
) -> Result<u32, Status> {
    hostcalls::dispatch_grpc_call(
        service,
        service_name,
        method,
        Vec::new(),
        Some(message),
        timeout,
    )
}

/// Opens a gRPC stream and sends its first message.
pub fn grpc_stream(
    service: &str,
    service_name: &str,
    method: &str,
    first: &[u8],
) -> Result<u32, Status> {
    let token = hostcalls::open_grpc_stream(service, service_name, method, Vec::new())?;
    if let Err(s) = hostcalls::send_grpc_stream_message(token, Some(first), false) {
        let _ = hostcalls::cancel_grpc_stream(token);
        return Err(s);
    }
    Ok(token)
}

pub fn grpc_cancel_stream(token: u32) {
    let _ = hostcalls::cancel_grpc_stream(token);
}

/// The message just received by a gRPC call or stream.
pub fn grpc_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
}

/// Sets a gauge to `value`.
pub fn set_gauge(metric: u32, value: u64) -> Result<(), Status> {
    hostcalls::record_metric(metric, value)
}

/// Lets a request paused in `on_http_request_headers` go on. Called through the ABI: the
/// SDK's wrapper panics on any status but `Ok`.
pub fn resume_request() -> Result<(), u32> {
    // SAFETY: plain integer arguments; the host only reads the stream type.
    let status = unsafe { abi::proxy_continue_stream(STREAM_TYPE_REQUEST) };
    if status == Status::Ok as u32 {
        Ok(())
    } else {
        Err(status)
    }
}

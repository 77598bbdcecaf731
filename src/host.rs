//! The proxy-wasm [`Host`]: the only place that calls the SDK. Every call is wrapped so that
//! a host error becomes `None` or `Err` instead of a panic. Header values are read as
//! bytes: the SDK's string getters unwrap UTF-8 and would panic on a hostile header.

use persist_core::host::{GrpcHost, GrpcTarget, Host, HostError, MetricId, MetricKind};
use persist_core::store::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// proxy-wasm host calls, as the flow sees them. Zero-sized: the calls address the
/// context Envoy is currently running.
pub struct WasmHost;

fn ok<T>(r: Result<T, Status>) -> Result<T, HostError> {
    r.map_err(|_| HostError)
}

/// A value the host allocated through the SDK's `proxy_on_memory_allocate` and handed
/// back by pointer and size, or `None` when the call did not return `Ok` with data.
///
/// # Safety
/// `status`, `data` and `size` come from one host call that returns its value this way.
unsafe fn host_value(status: u32, data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if status != Status::Ok as u32 {
        return None;
    }
    if data.is_null() {
        return Some(Vec::new());
    }
    // SAFETY: the host wrote a pointer it allocated through the SDK's exported allocator
    // (a boxed slice of exactly `size` bytes); ownership is taken once, as the SDK does.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Header `name` of `map`. Through the ABI rather than the SDK's getter, which panics on a
/// status other than `Ok`/`NotFound` (e.g. a capability restriction refusing the call):
/// here any failure is an absent header.
fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `name` outlives the call; the host writes the two out-parameters.
    unsafe {
        let status = abi::proxy_get_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        );
        host_value(status, data, size)
    }
}

/// Property `path`, its parts joined by NUL as the ABI wants them, on the stack (the SDK's
/// getter builds two vectors per call, and panics on an unexpected status).
fn property(path: &[&str]) -> Option<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = 0;
    for (i, part) in path.iter().enumerate() {
        let sep = usize::from(i > 0);
        let dst = buf.get_mut(len..len + sep + part.len());
        let Some(dst) = dst else {
            return hostcalls::get_property(path.to_vec()).ok().flatten();
        };
        let (nul, text) = dst.split_at_mut(sep);
        nul.fill(0);
        text.copy_from_slice(part.as_bytes());
        len += sep + part.len();
    }
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `buf` outlives the call; the host writes the two out-parameters.
    unsafe {
        let status = abi::proxy_get_property(buf.as_ptr(), len, &mut data, &mut size);
        host_value(status, data, size).filter(|_| !data.is_null())
    }
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        header(MapType::HttpRequestHeaders, name)
    }

    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        ok(hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            name,
            Some(value),
        ))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        ok(hostcalls::remove_map_value(
            MapType::HttpRequestHeaders,
            name,
        ))
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        header(MapType::HttpResponseHeaders, name)
    }

    fn response_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        response_header_values(name)
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        ok(hostcalls::add_map_value_bytes(
            MapType::HttpResponseHeaders,
            name,
            value,
        ))
    }

    fn remove_response_header(&self, name: &str) -> Result<(), HostError> {
        ok(hostcalls::remove_map_value(
            MapType::HttpResponseHeaders,
            name,
        ))
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        property(path)
    }

    fn now_ms(&self) -> Option<u64> {
        now_ms()
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        random(buf)
    }

    /// Envoy keeps it as filter state `wasm.<name>`. Through the ABI: the SDK's wrapper
    /// allocates the path and panics on any status but `Ok`; a one-segment path is its
    /// bytes.
    fn set_filter_state(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: both pointers come from live slices with their lengths; the host copies
        // them before returning.
        let status = unsafe {
            abi::proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
        };
        if status == Status::Ok as u32 {
            Ok(())
        } else {
            Err(HostError)
        }
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        ok(hostcalls::define_metric(kind, name))
    }

    fn increment_counter(&self, id: MetricId, by: u64) -> Result<(), HostError> {
        ok(hostcalls::increment_metric(
            id,
            i64::try_from(by).unwrap_or(i64::MAX),
        ))
    }

    fn add_to_gauge(&self, id: MetricId, delta: i64) -> Result<(), HostError> {
        ok(hostcalls::increment_metric(id, delta))
    }

    fn set_gauge(&self, id: MetricId, value: u64) -> Result<(), HostError> {
        ok(hostcalls::record_metric(id, value))
    }

    fn grpc(&self) -> Option<&dyn GrpcHost> {
        Some(self)
    }
}

/// proxy-wasm shared data (one map per `vm_id`, shared by all workers of an Envoy).
impl SharedStore for WasmHost {
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

/// gRPC through the Envoy cluster of `target` (its serialized `GrpcService`); answers arrive
/// in the calling context's `on_grpc_*` callbacks.
impl GrpcHost for WasmHost {
    fn call(
        &self,
        target: &GrpcTarget,
        service_name: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        ok(hostcalls::dispatch_grpc_call(
            &target.grpc_service,
            service_name,
            method,
            Vec::new(),
            Some(message),
            timeout,
        ))
    }

    fn open_stream(
        &self,
        target: &GrpcTarget,
        service_name: &str,
        method: &str,
        first: &[u8],
    ) -> Result<u32, HostError> {
        let token = ok(hostcalls::open_grpc_stream(
            &target.grpc_service,
            service_name,
            method,
            Vec::new(),
        ))?;
        if hostcalls::send_grpc_stream_message(token, Some(first), false).is_err() {
            let _ = hostcalls::cancel_grpc_stream(token);
            return Err(HostError);
        }
        Ok(token)
    }

    fn cancel_stream(&self, token: u32) {
        let _ = hostcalls::cancel_grpc_stream(token);
    }
}

/// proxy-wasm `StreamType::HttpRequest`.
const STREAM_TYPE_REQUEST: u32 = 0;

mod abi {
    extern "C" {
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
    }
}

/// Every value of response header `name` (lower-case). The SDK's map getter unwraps UTF-8
/// on header names; this reads the host's serialization and parses it defensively.
fn response_header_values(name: &str) -> Vec<Vec<u8>> {
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

/// Fills `buf` from the host's random source (WASI `random_get`).
pub fn random(buf: &mut [u8]) -> bool {
    getrandom::getrandom(buf).is_ok()
}

pub fn plugin_configuration(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
        .ok()
        .flatten()
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    hostcalls::set_tick_period(period)
}

/// The message just received by a gRPC call or stream.
pub fn grpc_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
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

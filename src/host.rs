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

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
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
